//! # iovirt-iommu
//!
//! An IOMMU that behaves like Intel VT-d, for device models that reach
//! memory through [`iovirt_core::DmaPort`].
//!
//! ## What it models
//!
//! - **Contexts and domains**: a requester id (bus:device.function) selects
//!   a [`ContextEntry`] through a per-bus root table, as VT-d's root and
//!   context tables do: blocked (no entry, every DMA faults), pass-through,
//!   or translated by a domain's second-stage tables (3, 4 or 5 levels, 2 MiB
//!   and 1 GiB leaves) walked with `iovirt-paging`.
//! - **Nested PASID translation**: a request carrying a PASID goes through
//!   that process's first-stage tables (VA → GPA, in the domain's
//!   guest-physical memory) nested over the second stage; every first-stage
//!   table read is itself translated by the second stage, through the IOTLB.
//! - **The IOTLB** ([`IotlbConfig`]): entries and associativity from direct
//!   mapped to fully associative, LRU or FIFO, tags of domain, PASID, page
//!   number and page size (a huge page is one entry); faults are never
//!   cached. A second-stage walk (PDE) cache can be switched on.
//! - **Prefetch** (seed 000): [`Iommu::prefetch`] and the port's
//!   [`DmaPort::prefetch`] walk and fill the IOTLB without moving data;
//!   prefetches used before eviction and wasted are counted.
//! - **Invalidation** ([`Invalidation`]): global, domain, page-selective with
//!   an address-mask order, PASID, PASID page, context, GVMI; a queue of
//!   descriptors with a wait descriptor that writes a status word. Changing a
//!   table without invalidating leaves the old translation cached, as on
//!   hardware.
//! - **Faults**: a fixed number of recording registers with an overflow flag
//!   ([`FaultLog`]), reasons named after VT-d's, and a fault event
//!   (interrupt) when a fault is recorded into an empty log.
//! - **GVMI tables** (seed 001): a GVM identifier table (GVMI → PA2MA tables)
//!   and an uplink-attribute table, so an HCA's internal IOMMU shares this
//!   walker and IOTLB; GVMI 0, the host, is not translated.
//!
//! ## What it does not model
//!
//! The register interface and the in-memory root/context/PASID table
//! formats (the tables are set through methods, as a hypervisor's driver
//! would program them); a context or PASID cache (changes take effect at
//! once); ATS/device IOTLBs and page requests; interrupt remapping;
//! first-stage A/D updates.
//!
//! With the `vm-memory` feature, [`vm_memory_adapter`] lets a rust-vmm VMM
//! use this IOMMU as a `vm_memory::iommu::Iommu`, or back it with any
//! `vm_memory::GuestMemory`.
//!
//! ## Example
//!
//! See [`Iommu`] for a domain, a port, a miss, a hit and a recorded fault.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod fault;
mod gvmi_port;
mod ids;
mod iommu;
mod iotlb;
mod port;
mod queue;
mod stats;
mod translate;
#[cfg(feature = "vm-memory")]
pub mod vm_memory_adapter;
mod walk_cache;

pub use fault::{FaultLog, FaultRecord, Stage};
pub use gvmi_port::GvmiPort;
pub use ids::{DomainId, Pasid, RequesterId};
pub use iommu::{
    ContextEntry, DmaRequest, GvmEntry, Invalidation, Iommu, IommuConfig, PasidEntry,
    UplinkAttribute,
};
pub use iotlb::{BadIotlbConfig, Iotlb, IotlbConfig, IotlbStats, Replacement};
pub use iovirt_core::Gvmi;
pub use port::IommuPort;
pub use queue::{QueueError, QueuedInvalidation};
pub use stats::{FaultCounts, InvalidationCounts, IommuStats};
pub use translate::{GvmiTranslation, Translated};
pub use walk_cache::{WalkCache, WalkCacheStats};

#[doc(no_inline)]
pub use iovirt_core::DmaPort;

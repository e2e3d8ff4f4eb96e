//! # iovirt-drivers
//!
//! Guest software for iovirt's devices. A driver sees its device only as
//! registers ([`iovirt_core::RegisterAccess`]) and guest-physical memory
//! ([`iovirt_core::PhysMemory`]`<Gpa>`), as a guest kernel does.
//!
//! ## What it models
//!
//! - [`GuestPageAllocator`]: where the guest puts DMA buffers, packed
//!   (lowest page first) or scattered at random from a seed: seed 000 is
//!   about what placement does to the IOTLB.
//! - [`E1000Driver`]: bring-up (reset, MAC from the EEPROM, rings and
//!   buffers, registers), transmit through copy buffers fixed in the TX
//!   descriptors (seed 000), reclaim on DD, receive on DD with refill through
//!   RDT, and seed 000's receive address prefetcher: after each received
//!   frame, NOP transmit commands that make the NIC warm the translations
//!   of the next RX descriptor and buffer.
//!
//! - [`HcaDriver`]: verbs over one function of an `iovirt-hca` HCA
//!   (`alloc_pd`, `reg_mr` pinned / on demand / implicit, `advise_mr`,
//!   `create_cq`, `create_qp`, `modify_qp`, `create_ah`, `post_send`,
//!   `post_recv`, `poll_cq`), the application's page table, and the
//!   guest-stage page-fault handler of seed 001 (fill the MTT entry, fault
//!   the page into the application if it has none, resume).
//!
//! ## Not modelled (yet)
//!
//! Interrupt-driven operation beyond reading ICR (the NIC driver polls;
//! the HCA driver's events are taken by its platform).
//!
//! ## Example
//!
//! See the end-to-end tests in `tests/tests/nic.rs` of the workspace, which
//! run two drivers over two NICs behind IOMMUs, and `tests/tests/rdma.rs`,
//! which run two HCA drivers on two hosts.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod e1000;
mod hca;
mod page_alloc;

pub use e1000::{DriverError, DriverStats, E1000Config, E1000Driver, NicBus, TxError};
pub use hca::{
    Advice, HcaBus, HcaDriver, HcaDriverStats, QpInit, SendWr, VerbsError, WorkCompletion,
};
pub use page_alloc::{GuestPageAllocator, Placement};

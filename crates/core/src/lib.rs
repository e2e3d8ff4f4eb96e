//! # iovirt-core
//!
//! The shared vocabulary of the iovirt device models. Every other iovirt
//! crate stands on this one, and an emulator that takes a single device model
//! only has to implement the narrow traits defined here.
//!
//! ## What it models
//!
//! - **Address spaces** as newtypes: [`Gva`] (guest-virtual), [`Iova`]
//!   (I/O-virtual), [`Gpa`] (guest-physical) and [`Hpa`] (host-physical), with
//!   checked page arithmetic: an overflowing guest value is an [`AddrError`].
//! - **Pages and accesses**: [`PageSize`] (4 KiB / 2 MiB / 1 GiB), [`Access`]
//!   (read / write / execute, user / supervisor), effective [`Perms`].
//! - **Host memory**: [`HostMemory`], sparse RAM allocated per 4 KiB frame on
//!   first write; [`FlatMemory`], dense RAM in one buffer for small hosts
//!   and for measuring the device models without the sparse lookup; and
//!   [`BitmapFrameAllocator`], a deterministic frame allocator with single
//!   frames and aligned contiguous runs.
//! - **The narrow traits** between components: [`PhysMemory`] (byte access to
//!   a physical space), [`FrameAllocator`], [`DmaPort`] (device DMA at
//!   I/O-virtual addresses, returning a [`Cost`] or a [`DmaFault`]),
//!   [`InterruptSink`], [`MmioDevice`] and [`RegisterAccess`] (the two sides
//!   of a register block), [`Timers`] and [`NetworkPort`].
//! - **Virtual time and cost**: [`SimTime`], [`SimDuration`], the
//!   [`EventQueue`] of a discrete-event scheduler, and the
//!   [`CostModel`] that turns a [`Cost`] into time. Nothing here reads a wall
//!   clock.
//! - **Frame storage**: [`FrameBuf`], a reusable buffer that a frame is
//!   gathered into without zeroing it first, and [`FrameQueue`], frames in
//!   order in one reusable buffer.
//! - **Statistics**: [`Counter`] and the [`Stats`] trait, serialisable with serde.
//!
//! ## What it does not model
//!
//! Caches, NUMA, memory bandwidth contention, and memory-mapped I/O regions
//! inside [`HostMemory`] (a DMA aimed at a device's registers is the
//! platform's business). Time is charged only where a component returns a
//! [`Cost`].
//!
//! With the `mocks` feature, mockall mocks of the traits (`MockPhysMemory`,
//! `MockDmaPort`, `MockInterruptSink`, `MockRegisterAccess`, `MockTimers`,
//! `MockNetworkPort`, `MockFrameAllocator`, `MockGvmiDma`) are exported for other crates'
//! tests.
//!
//! ## Example
//!
//! A device writes a frame through a DMA port with no IOMMU; the platform
//! charges the cost in virtual time.
//!
//! ```
//! use iovirt_core::{CostModel, DmaPort, HostMemory, Hpa, Iova, PassthroughDma, PhysMemory};
//!
//! let mut ram = HostMemory::new(16 << 20)?;
//! let cost = PassthroughDma::new(&mut ram).dma_write(Iova::new(0x4000), &[0xab; 1500])?;
//! let time = CostModel::default().time(&cost);
//! assert_eq!(time.as_nanos(), 150); // 1500 B at 10 GB/s
//! assert_eq!(ram.read_u16(Hpa::new(0x4000 + 1498))?, 0xabab);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod addr;
mod cost;
mod dma;
mod event;
mod flat_memory;
mod frame_alloc;
mod frame_buf;
mod gvmi;
mod host_memory;
mod irq;
mod mem;
mod mmio;
mod net;
mod page;
mod stats;
mod time;
mod timer;

pub use addr::{AddrError, Address, Gpa, Gva, Hpa, Iova, PhysAddress};
pub use cost::{Cost, CostModel, ETHERNET_WIRE_OVERHEAD};
pub use dma::{DmaFault, DmaPort, FaultReason, PassthroughDma};
pub use event::EventQueue;
pub use flat_memory::{FlatMemory, MAX_FLAT_MEMORY};
pub use frame_alloc::{BitmapFrameAllocator, FrameAllocator, FrameError};
pub use frame_buf::{FrameBuf, FrameQueue};
pub use gvmi::{FlatGvmiDma, Gvmi, GvmiDma};
pub use host_memory::{BadMemorySize, HostMemory, MAX_HOST_MEMORY};
pub use irq::{InterruptSink, Irq};
pub use mem::{MemError, PhysMemory, check_range};
pub use mmio::{MmioDevice, RegisterAccess, Width};
pub use net::NetworkPort;
pub use page::{Access, AccessKind, FRAME_SIZE, PageSize, Perms, Privilege};
pub use stats::{Counter, Stats};
pub use time::{SimDuration, SimTime};
pub use timer::{TimerQueue, TimerToken, Timers};

#[cfg(any(test, feature = "mocks"))]
pub use {
    dma::MockDmaPort, frame_alloc::MockFrameAllocator, gvmi::MockGvmiDma, irq::MockInterruptSink,
    mem::MockPhysMemory, mmio::MockRegisterAccess, net::MockNetworkPort, timer::MockTimers,
};

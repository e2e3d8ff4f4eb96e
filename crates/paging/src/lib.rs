//! # iovirt-paging
//!
//! x86-64 page tables as the hardware reads them, for every translator in
//! iovirt: the guest CPU's MMU, the IOMMU's first and second stages, and the
//! HCA's per-VM tables.
//!
//! ## What it models
//!
//! - **The format**: 4-level (48-bit) and 5-level (57-bit) long-mode tables,
//!   plus the 3-level (39-bit) form of Intel VT-d's second stage; 4 KiB,
//!   2 MiB and 1 GiB pages; the P, R/W, U/S, PWT, PCD, A, D, PS, G and NX bits
//!   ([`PteFlags`]); MAXPHYADDR and reserved-bit checks as the SDM lists them
//!   ([`PagingConfig`]).
//! - **The walker** ([`PageTable::walk`]): input address and [`Access`] →
//!   [`Translation`] (physical address, page size, effective permissions), or
//!   a [`WalkFault`] naming the level and reason: not present, write to
//!   read-only, user to supervisor, execute on NX, reserved bit, non-canonical
//!   or beyond-width input, table outside memory. Every entry read is in the
//!   [`WalkTrace`] (no allocation), so callers can charge the cost model. A/D
//!   update is optional ([`PageTable::walk_mut`]). Tables are read through
//!   [`PhysMemory`], so a guest's tables in guest-physical memory and the
//!   host's in host-physical memory are walked by the same code.
//! - **The mapper** ([`PageTable::map`], [`unmap`](PageTable::unmap),
//!   [`protect`](PageTable::protect)): huge pages where aligned and allowed,
//!   table frames from a [`FrameAllocator`], tables freed when they become
//!   empty, huge pages split when partly edited, and
//!   [`table_pages`](PageTable::table_pages), the distinct table pages a
//!   range's walks touch.
//!
//! ## What it does not model
//!
//! 32-bit and PAE paging, protection keys, SMEP/SMAP, PAT/MTRR memory types
//! (the bits are kept, not interpreted), and TLBs: caching translations is
//! the IOTLB's job, in `iovirt-iommu`.
//!
//! ## Hostile tables
//!
//! A walk reads at most one entry per level whatever the tables hold: an
//! entry pointing back at its own table, or at another level's, only yields
//! whatever that memory holds at the next level down, and an entry pointing
//! outside memory is a [`WalkFault::TableOutsideMemory`]. Nothing panics.
//!
//! ## Example
//!
//! Build a 4-level table, map 2 MiB with one huge page, and walk it.
//!
//! ```
//! use iovirt_core::{Access, BitmapFrameAllocator, Gva, HostMemory, Hpa, PageSize, Perms};
//! use iovirt_paging::{Level, Mapping, PageTable, PagingConfig, PteFlags, WalkFault};
//!
//! let mut mem = HostMemory::new(64 << 20)?;
//! let mut frames = BitmapFrameAllocator::new(Hpa::new(0x10_0000), 256);
//! let mut pt = PageTable::<Gva, Hpa>::new(&mut mem, &mut frames, PagingConfig::default())?;
//!
//! let m = Mapping::new(Gva::new(0x4000_0000), Hpa::new(0x20_0000), 2 << 20, PteFlags::RW)
//!     .with_largest(PageSize::Size2M);
//! let report = pt.map(&mut mem, &mut frames, m)?;
//! assert_eq!(report.leaves, [0, 1, 0]); // one 2 MiB leaf
//!
//! let walk = pt.walk(&mem, Gva::new(0x4012_3456), Access::WRITE);
//! let t = walk.result?;
//! assert_eq!(t.addr, Hpa::new(0x32_3456));
//! assert_eq!(t.size, PageSize::Size2M);
//! assert_eq!(t.perms, Perms::READ | Perms::WRITE | Perms::EXECUTE);
//! assert_eq!(walk.trace.len(), 3); // PML4E, PDPTE, PDE
//!
//! assert_eq!(
//!     pt.translate(&mem, Gva::new(0x4012_3456), Access::WRITE.user()),
//!     Err(WalkFault::UserToSupervisor { level: Level::Pd })
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod entry;
mod mapper;
mod table;
mod walk;

pub use config::{InputCheck, Level, Levels, PagingConfig};
pub use entry::{ADDR_MASK, HUGE_PAT, PTE_PAT, PageTableEntry, PteFlags};
pub use mapper::{EditReport, FreeReport, MapError, Mapping};
pub use table::{MapperStats, PageTable};
pub use walk::{MAX_LEVELS, TableRead, Translation, Walk, WalkFault, WalkStart, WalkTrace};

#[doc(no_inline)]
pub use iovirt_core::{Access, FrameAllocator, PhysMemory};

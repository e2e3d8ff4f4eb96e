//! Adapter between this IOMMU and rust-vmm's `vm-memory` 0.18 (feature
//! `vm-memory`).
//!
//! ## Two IOMMUs with different jobs
//!
//! `vm-memory`'s [`vm_memory::iommu::Iommu`] trait and its [`Iotlb`] are
//! shaped for a vhost-user back-end. The back-end owns no page tables: its
//! IOTLB is a range map of IOVA → address mappings that the front-end (the
//! VMM, which owns the real IOMMU) pushes in update messages, and a miss means
//! asking the front-end and waiting for the answer. Nothing in it walks a
//! table.
//!
//! iovirt's [`Iommu`] is the other half: it owns context entries, domains and
//! page tables in memory, walks them, caches what it found in an IOTLB of
//! hardware shape, and records faults.
//!
//! This module connects the two in both directions:
//!
//! - [`VmIommu`] implements `vm_memory::iommu::Iommu` on top of an iovirt
//!   [`Iommu`]. A rust-vmm user who needs an IOMMU that translates (rather than
//!   one that is told) plugs it into [`vm_memory::IommuMemory`] instead of
//!   writing a second one. A `vm-memory` [`Iotlb`] stays in front as a cache;
//!   its misses are resolved by iovirt's translation (its IOTLB, walk cache and
//!   table walk), and the results are pushed into it, as a front-end would.
//! - [`GuestMemoryPhys`] makes any `vm-memory` backend (a
//!   [`GuestMemoryBackend`], such as `GuestMemoryMmap`) a [`PhysMemory<Hpa>`],
//!   so iovirt's IOMMU can keep its tables in, and walk, the VM's RAM.
//!
//! ## Where it behaves differently from `vm-memory`
//!
//! - **Bad ranges are errors.** A zero-length range, or one whose end does not
//!   fit in 64 bits, is refused with [`Error::CannotResolve`].
//!   `Iotlb::set_mapping` panics on such a range (its range map refuses empty
//!   ranges, and the end is computed unchecked), so this adapter validates
//!   every range before it reaches the `Iotlb` and never inserts an empty or
//!   wrapping one. One visible consequence: an empty access through
//!   `IommuMemory` (`write_slice(&[], iova)`) is an error, where plain backend
//!   memory treats it as a no-op.
//! - **Faults are iovirt's.** A range the iovirt IOMMU refuses becomes
//!   [`Error::CannotResolve`] whose reason is the iovirt fault (address,
//!   access, VT-d reason). The fault is recorded in iovirt's fault log; the
//!   fault event is left pending, for the owner to take with
//!   `with_inner(|iommu, _| iommu.take_fault_event())`.
//! - **Invalidation is explicit**, as on hardware: after editing the tables
//!   (through [`VmIommu::with_inner`]), call [`VmIommu::invalidate`], which
//!   applies the invalidation to the iovirt IOMMU and then empties the front
//!   `Iotlb`.
//! - **Granularity**: each filled entry runs from the 4 KiB frame holding the
//!   missing address to the end of the iovirt page that translated it, so a
//!   2 MiB page costs one walk per entry, not 512.
//! - **A poisoned lock** (a thread panicked while holding it) is
//!   [`Error::IommuMisconfigured`], never a panic.
//!
//! ## Locking
//!
//! The iovirt IOMMU and its memory sit behind one [`Mutex`]; the front
//! `Iotlb` behind an [`RwLock`]. A hit takes only the read lock. A miss takes
//! the mutex, then the write lock, and holds both while it translates and
//! fills; [`VmIommu::invalidate`] takes them in the same order. So a
//! translation made before an invalidation can never be inserted after it.
//! The iterator a translation returns holds the read lock: a thread that keeps
//! one alive and then misses on the same `VmIommu` would wait for itself, as
//! with any `RwLock`-based `vm-memory` IOMMU.
//!
//! ## Example
//!
//! ```
//! use iovirt_core::{BitmapFrameAllocator, Hpa, Iova};
//! use iovirt_iommu::vm_memory_adapter::{GuestMemoryPhys, VmIommu};
//! use iovirt_iommu::{
//!     ContextEntry, DmaRequest, DomainId, Invalidation, Iommu, IommuConfig, RequesterId,
//! };
//! use iovirt_paging::{Levels, Mapping, PageTable, PagingConfig, PteFlags};
//! use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap, IommuMemory};
//!
//! // 8 MiB of VM RAM; the IOMMU's tables live in it too.
//! let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 8 << 20)])?;
//! let mut phys = GuestMemoryPhys::new(ram.clone());
//! let mut frames = BitmapFrameAllocator::new(Hpa::new(0x10_0000), 256);
//! let config = PagingConfig::second_stage(Levels::Four);
//! let mut stage2 = PageTable::<Iova, Hpa>::new(&mut phys, &mut frames, config)?;
//! let page = Mapping::new(Iova::new(0x1_0000), Hpa::new(0x40_0000), 0x1000, PteFlags::RW);
//! stage2.map(&mut phys, &mut frames, page)?;
//!
//! let mut iommu = Iommu::new(IommuConfig::default())?;
//! iommu.set_domain(DomainId(1), stage2.root(), Levels::Four);
//! let dev = RequesterId::new(0, 4, 0).ok_or("bad requester id")?;
//! let context = ContextEntry::Translate { domain: DomainId(1), pasid_enabled: false };
//! iommu.set_context(dev, context);
//!
//! let vm_iommu = VmIommu::new(iommu, phys, DmaRequest::new(dev));
//! let mem = IommuMemory::new(ram.clone(), vm_iommu, true, ());
//! // A miss: iovirt walks its tables and the front Iotlb is filled.
//! mem.write_slice(b"hello", GuestAddress(0x1_0020))?;
//! let mut back = [0u8; 5];
//! ram.read_slice(&mut back, GuestAddress(0x40_0020))?;
//! assert_eq!(&back, b"hello");
//!
//! // Unmap the page and invalidate: the IOVA no longer translates.
//! mem.iommu()
//!     .with_inner(|_, phys| stage2.unmap(phys, &mut frames, Iova::new(0x1_0000), 0x1000))
//!     .ok_or("IOMMU lock poisoned")??;
//! mem.iommu().invalidate(Invalidation::Domain(DomainId(1)))?;
//! assert!(mem.write_slice(b"again", GuestAddress(0x1_0020)).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard};

use iovirt_core::{AccessKind, Address, FRAME_SIZE, Hpa, MemError, Perms, PhysMemory, check_range};
use vm_memory::iommu::{Error, IotlbFails, IotlbIterator, IovaRange};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError, Iotlb, Permissions};

use crate::iommu::{DmaRequest, Invalidation, Iommu};
use crate::translate::Translated;

/// A `vm-memory` backend (e.g. `GuestMemoryMmap`) as iovirt host-physical
/// memory: guest address `a` of the backend is [`Hpa`] `a`.
///
/// Valid addresses are `0..size()`, where the size is the end of the highest
/// region; an access beyond it is [`MemError::OutOfRange`], one that meets a
/// hole between regions is [`MemError::Unmapped`] naming the first byte that
/// could not be reached (bytes before it may have been transferred).
///
/// `vm-memory` 0.18 splits the old `GuestMemory` in two: [`GuestMemoryBackend`]
/// is the region collection (with `last_addr`), which this wraps;
/// `vm_memory::GuestMemory` is the IOVA view every backend also implements.
#[derive(Debug, Clone)]
pub struct GuestMemoryPhys<M> {
    mem: M,
    /// `last_addr() + 1`, saturating, or 0 without regions. A backend's
    /// region map is immutable, so it is computed once.
    size: u64,
}

impl<M: GuestMemoryBackend> GuestMemoryPhys<M> {
    /// Wraps `mem`.
    pub fn new(mem: M) -> Self {
        let size = if mem.num_regions() == 0 {
            0
        } else {
            mem.last_addr().0.saturating_add(1)
        };
        GuestMemoryPhys { mem, size }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &M {
        &self.mem
    }

    /// Unwraps the backend.
    pub fn into_inner(self) -> M {
        self.mem
    }
}

/// The error for a backend access that failed inside `0..size()`.
fn unmapped(addr: Hpa, err: &GuestMemoryError) -> MemError {
    let at = match err {
        GuestMemoryError::InvalidGuestAddress(a) => a.0,
        GuestMemoryError::PartialBuffer { completed, .. } => addr
            .raw()
            .saturating_add(u64::try_from(*completed).unwrap_or(u64::MAX)),
        _ => addr.raw(),
    };
    log::debug!("vm-memory access at {addr} failed at {at:#x}: {err}");
    MemError::Unmapped {
        space: Hpa::SPACE,
        addr: at,
    }
}

impl<M: GuestMemoryBackend> PhysMemory<Hpa> for GuestMemoryPhys<M> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read(&self, addr: Hpa, buf: &mut [u8]) -> Result<(), MemError> {
        check_range(addr, buf.len() as u64, self.size)?;
        self.mem
            .read_slice(buf, GuestAddress(addr.raw()))
            .map_err(|e| unmapped(addr, &e))
    }

    fn write(&mut self, addr: Hpa, data: &[u8]) -> Result<(), MemError> {
        check_range(addr, data.len() as u64, self.size)?;
        self.mem
            .write_slice(data, GuestAddress(addr.raw()))
            .map_err(|e| unmapped(addr, &e))
    }
}

/// Lookups a translation tries before giving up: the first, then one after
/// each fill. A second fill is only needed when entries were invalidated
/// between a fill and the lookup after it.
const LOOKUP_ROUNDS: usize = 3;

/// An iovirt [`Iommu`] as a `vm-memory` IOMMU, for one request identity
/// (requester, PASID).
///
/// Translations are served from a `vm-memory` [`Iotlb`] in front; a miss or
/// an access the cached entry does not allow is resolved page by page by
/// [`Iommu::translate`] over the memory `M` (e.g. a [`GuestMemoryPhys`] of the
/// VM's `GuestMemoryMmap`, or a `HostMemory`), and the front `Iotlb` filled.
/// See the [module documentation](self) for the differences from `vm-memory`
/// and the locking rules.
pub struct VmIommu<M> {
    /// The translating state: the iovirt IOMMU and the memory its tables are in.
    inner: Mutex<(Iommu, M)>,
    /// The front cache.
    front: RwLock<Iotlb>,
    /// Whose translations these are.
    req: DmaRequest,
}

impl<M> fmt::Debug for VmIommu<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VmIommu")
            .field("request", &self.req)
            .field("front", &self.front)
            .finish_non_exhaustive()
    }
}

/// What one resolved page puts in the front `Iotlb`.
struct Fill {
    /// First IOVA of the entry (4 KiB aligned).
    iova: u64,
    /// Where `iova` translates to.
    hpa: u64,
    /// Length of the entry in bytes (never 0).
    len: usize,
    /// Rights of the entry.
    perms: Permissions,
    /// The IOVA after the entry.
    next: u64,
}

/// The iovirt accesses that must succeed for `access`, strongest first.
fn kinds(access: Permissions) -> &'static [AccessKind] {
    match access {
        // `No` only asks whether the range is mapped: a read is the weakest check.
        Permissions::No | Permissions::Read => &[AccessKind::Read],
        Permissions::Write => &[AccessKind::Write],
        Permissions::ReadWrite => &[AccessKind::Write, AccessKind::Read],
    }
}

/// `vm-memory` rights of an iovirt translation.
fn permissions(perms: Perms) -> Permissions {
    match (perms.contains(Perms::READ), perms.contains(Perms::WRITE)) {
        (true, true) => Permissions::ReadWrite,
        (true, false) => Permissions::Read,
        (false, true) => Permissions::Write,
        (false, false) => Permissions::No,
    }
}

/// Whether iovirt rights `perms` allow `kind`.
fn allows(perms: Perms, kind: AccessKind) -> bool {
    perms.contains(match kind {
        AccessKind::Read => Perms::READ,
        AccessKind::Write => Perms::WRITE,
        AccessKind::Execute => Perms::EXECUTE,
    })
}

fn cannot(range: &IovaRange, reason: impl Into<String>) -> Error {
    Error::CannotResolve {
        iova_range: range.clone(),
        reason: reason.into(),
    }
}

fn poisoned(what: &str) -> Error {
    Error::IommuMisconfigured {
        reason: format!("the {what} lock is poisoned: a thread panicked while holding it"),
    }
}

/// The exclusive end of `range`, or `None` when it is empty or its end does
/// not fit in 64 bits.
fn range_end(range: &IovaRange) -> Option<u64> {
    let len = u64::try_from(range.length).ok().filter(|&l| l != 0)?;
    range.base.0.checked_add(len)
}

impl<M: PhysMemory<Hpa>> VmIommu<M> {
    /// Translates for `req` through `iommu`, whose tables are in `mem`. The
    /// front `Iotlb` starts empty.
    pub fn new(iommu: Iommu, mem: M, req: DmaRequest) -> Self {
        VmIommu {
            inner: Mutex::new((iommu, mem)),
            front: RwLock::new(Iotlb::new()),
            req,
        }
    }

    /// The request identity translations are made for.
    pub fn request(&self) -> DmaRequest {
        self.req
    }

    /// Applies `inv` to the iovirt IOMMU, then empties the front `Iotlb`;
    /// returns how many iovirt IOTLB entries went.
    ///
    /// The front cache is emptied whole, whatever `inv` names: it holds one
    /// request identity's translations by IOVA, while iovirt invalidations
    /// are keyed by domain, PASID or GVMI, and a page-selective one also drops
    /// every nested translation of the domain. Working out which front
    /// entries one covers would repeat that logic for no gain in correctness
    /// (dropping too much only costs refills from iovirt's own IOTLB), and
    /// dropping too little would leave a stale translation usable.
    ///
    /// The front cache is emptied even when the IOMMU lock is poisoned (so no
    /// stale translation outlives the call); the error then says so.
    pub fn invalidate(&self, inv: Invalidation) -> Result<u64, Error> {
        match self.inner.lock() {
            Ok(mut state) => {
                let removed = state.0.invalidate(inv);
                self.clear_front();
                Ok(removed)
            }
            Err(poison) => {
                // Still hold the lock while clearing, as a fill would.
                let _state = poison.into_inner();
                self.clear_front();
                Err(poisoned("IOMMU state"))
            }
        }
    }

    /// Empties the front `Iotlb`, even if a panic poisoned its lock: an empty
    /// cache is consistent whatever the panic interrupted, so the poison is
    /// cleared too.
    fn clear_front(&self) {
        self.front
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .invalidate_all();
        self.front.clear_poison();
    }

    /// Runs `f` on the iovirt IOMMU and its memory (to edit tables, set
    /// contexts, read the fault log or the counters); `None` when the lock is
    /// poisoned. Edits take effect once [`invalidate`](Self::invalidate)d, as
    /// on hardware. `f` must not translate through this `VmIommu`: the lock is
    /// held while it runs.
    pub fn with_inner<R>(&self, f: impl FnOnce(&mut Iommu, &mut M) -> R) -> Option<R> {
        let mut state = self.inner.lock().ok()?;
        let (iommu, mem) = &mut *state;
        Some(f(iommu, mem))
    }

    /// Translates the page holding `pos` through iovirt for `access`.
    fn resolve_page(
        &self,
        iommu: &mut Iommu,
        mem: &M,
        pos: u64,
        access: Permissions,
    ) -> Result<Fill, String> {
        let mut found: Option<Translated> = None;
        for &kind in kinds(access) {
            if let Some(t) = &found
                && allows(t.perms, kind)
            {
                continue;
            }
            let t = iommu.translate(mem, self.req, pos, kind).map_err(|fault| {
                format!(
                    "iovirt IOMMU refused requester {}: {fault}",
                    self.req.requester
                )
            })?;
            found = Some(t);
        }
        let t = found.ok_or_else(|| "no access to translate".to_owned())?;
        let offset = pos & (FRAME_SIZE - 1);
        let iova = pos - offset;
        let hpa = t
            .hpa
            .raw()
            .checked_sub(offset)
            .ok_or_else(|| format!("{pos:#x} translated to {} below its frame", t.hpa))?;
        // From the frame start to the end of the page, kept below 2^64.
        let len = t.room.saturating_add(offset).min(u64::MAX - iova);
        if t.room == 0 || len <= offset {
            return Err(format!("translation of {pos:#x} covers no byte"));
        }
        Ok(Fill {
            iova,
            hpa,
            len: usize::try_from(len).map_err(|_| format!("page length {len:#x} too long"))?,
            perms: permissions(t.perms),
            next: iova + len,
        })
    }

    /// Resolves every range of `fails` through iovirt and fills the front
    /// `Iotlb`; `range` is the request, for errors.
    fn resolve(
        &self,
        range: &IovaRange,
        fails: &IotlbFails,
        access: Permissions,
    ) -> Result<(), Error> {
        let mut state = self.inner.lock().map_err(|_| poisoned("IOMMU state"))?;
        let (iommu, mem) = &mut *state;
        let mut front = self.front.write().map_err(|_| poisoned("front IOTLB"))?;
        for gap in fails.misses.iter().chain(&fails.access_fails) {
            let end = range_end(gap)
                .ok_or_else(|| cannot(range, "the IOTLB reported an empty or overflowing gap"))?;
            let mut pos = gap.base.0;
            while pos < end {
                let fill = self
                    .resolve_page(iommu, mem, pos, access)
                    .map_err(|reason| cannot(range, reason))?;
                front.set_mapping(
                    GuestAddress(fill.iova),
                    GuestAddress(fill.hpa),
                    fill.len,
                    fill.perms,
                )?;
                pos = fill.next;
            }
        }
        Ok(())
    }
}

impl<M: PhysMemory<Hpa> + Send> vm_memory::iommu::Iommu for VmIommu<M> {
    type IotlbGuard<'a>
        = RwLockReadGuard<'a, Iotlb>
    where
        Self: 'a;

    fn translate(
        &self,
        iova: GuestAddress,
        length: usize,
        access: Permissions,
    ) -> Result<IotlbIterator<Self::IotlbGuard<'_>>, Error> {
        let range = IovaRange { base: iova, length };
        if length == 0 {
            return Err(cannot(&range, "empty range"));
        }
        if range_end(&range).is_none() {
            return Err(cannot(
                &range,
                "the range runs past the end of the 64-bit space",
            ));
        }
        for _ in 1..LOOKUP_ROUNDS {
            let front = self.front.read().map_err(|_| poisoned("front IOTLB"))?;
            // The guard moves into the lookup, and is dropped with the failure.
            let fails = match Iotlb::lookup(front, iova, length, access) {
                Ok(found) => return Ok(found),
                Err(fails) => fails,
            };
            self.resolve(&range, &fails, access)?;
        }
        let front = self.front.read().map_err(|_| poisoned("front IOTLB"))?;
        Iotlb::lookup(front, iova, length, access).map_err(|_| {
            cannot(
                &range,
                format!(
                    "entries were invalidated before they could be used, {} fills in a row",
                    LOOKUP_ROUNDS - 1
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests;

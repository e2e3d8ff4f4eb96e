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
mod tests {
    // Test set-up: a failure is a broken test, not a guest input.
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use iovirt_core::{BitmapFrameAllocator, HostMemory, Iova, PageSize};
    use iovirt_paging::{Levels, Mapping, PageTable, PagingConfig, PteFlags};
    use vm_memory::iommu::Iommu as _;
    use vm_memory::iommu::MappedRange;
    use vm_memory::{GuestMemoryMmap, IommuMemory};

    use super::*;
    use crate::{ContextEntry, DomainId, IommuConfig, RequesterId};

    type Ram = GuestMemoryMmap<()>;

    const DOMAIN: DomainId = DomainId(1);
    /// IOVA 0x1_0000..0x1_4000 -> HPA 0x40_0000, read-write.
    const RW_IOVA: u64 = 0x1_0000;
    const RW_HPA: u64 = 0x40_0000;
    /// IOVA 0x2_0000 -> HPA 0x50_0000, read-only.
    const RO_IOVA: u64 = 0x2_0000;
    const RO_HPA: u64 = 0x50_0000;
    /// IOVA 0x20_0000 -> HPA 0x60_0000, one 2 MiB page.
    const HUGE_IOVA: u64 = 0x20_0000;
    const HUGE_HPA: u64 = 0x60_0000;

    fn requester() -> RequesterId {
        RequesterId::new(0, 4, 0).unwrap()
    }

    struct Setup<M> {
        vm: VmIommu<M>,
        stage2: PageTable<Iova, Hpa>,
        frames: BitmapFrameAllocator<Hpa>,
    }

    /// A domain with the mappings above, its tables in `mem` at 1 MiB.
    fn setup<M: PhysMemory<Hpa>>(mut mem: M) -> Setup<M> {
        let mut frames = BitmapFrameAllocator::new(Hpa::new(0x10_0000), 256);
        let config = PagingConfig::second_stage(Levels::Four);
        let mut stage2 = PageTable::<Iova, Hpa>::new(&mut mem, &mut frames, config).unwrap();
        for m in [
            Mapping::new(Iova::new(RW_IOVA), Hpa::new(RW_HPA), 0x4000, PteFlags::RW),
            Mapping::new(
                Iova::new(RO_IOVA),
                Hpa::new(RO_HPA),
                0x1000,
                PteFlags::empty(),
            ),
            Mapping::new(
                Iova::new(HUGE_IOVA),
                Hpa::new(HUGE_HPA),
                2 << 20,
                PteFlags::RW,
            )
            .with_largest(PageSize::Size2M),
        ] {
            stage2.map(&mut mem, &mut frames, m).unwrap();
        }
        let mut iommu = Iommu::new(IommuConfig::default()).unwrap();
        iommu.set_domain(DOMAIN, stage2.root(), Levels::Four);
        iommu.set_context(
            requester(),
            ContextEntry::Translate {
                domain: DOMAIN,
                pasid_enabled: false,
            },
        );
        Setup {
            vm: VmIommu::new(iommu, mem, DmaRequest::new(requester())),
            stage2,
            frames,
        }
    }

    fn ram(size: usize) -> Ram {
        Ram::from_ranges(&[(GuestAddress(0), size)]).unwrap()
    }

    fn translate<M: PhysMemory<Hpa> + Send>(
        vm: &VmIommu<M>,
        iova: u64,
        len: usize,
        access: Permissions,
    ) -> Result<Vec<MappedRange>, Error> {
        vm.translate(GuestAddress(iova), len, access)
            .map(Iterator::collect)
    }

    fn translations<M: PhysMemory<Hpa>>(vm: &VmIommu<M>) -> u64 {
        vm.with_inner(|iommu, _| iommu.stats().translations.get())
            .unwrap()
    }

    #[test]
    fn guest_memory_phys_round_trip_and_errors() {
        let mut phys = GuestMemoryPhys::new(ram(1 << 20));
        assert_eq!(phys.size(), 1 << 20);
        phys.write_u64(Hpa::new(0x1000), 0x1122_3344_5566_7788)
            .unwrap();
        assert_eq!(
            phys.read_u64(Hpa::new(0x1000)).unwrap(),
            0x1122_3344_5566_7788
        );
        let data: Vec<u8> = (0..=255).cycle().take(9000).collect();
        phys.write(Hpa::new(0x2ff0), &data).unwrap();
        let mut back = vec![0u8; 9000];
        phys.read(Hpa::new(0x2ff0), &mut back).unwrap();
        assert_eq!(back, data);
        // The bytes are in the backend, at the same address.
        let mut direct = [0u8; 4];
        phys.inner()
            .read_slice(&mut direct, GuestAddress(0x2ff0))
            .unwrap();
        assert_eq!(direct, [0, 1, 2, 3]);

        let err = phys
            .read(Hpa::new((1 << 20) - 2), &mut [0u8; 4])
            .unwrap_err();
        assert_eq!(
            err,
            MemError::OutOfRange {
                space: "host-physical",
                addr: (1 << 20) - 2,
                len: 4,
                size: 1 << 20
            }
        );
        // Overflowing ranges are errors, not panics.
        assert!(phys.read(Hpa::new(u64::MAX), &mut [0u8; 2]).is_err());
        assert!(phys.write(Hpa::new(u64::MAX - 1), &[1, 2, 3]).is_err());
        assert!(phys.write_u64(Hpa::new(1 << 20), 1).is_err());
        // An empty access inside memory is fine.
        phys.read(Hpa::new(0x10), &mut []).unwrap();
    }

    #[test]
    fn guest_memory_phys_holes_are_unmapped() {
        let regions = Ram::from_ranges(&[
            (GuestAddress(0), 0x1_0000),
            (GuestAddress(0x2_0000), 0x1_0000),
        ])
        .unwrap();
        let mut phys = GuestMemoryPhys::new(regions);
        assert_eq!(phys.size(), 0x3_0000);
        assert_eq!(
            phys.read_u32(Hpa::new(0x1_8000)),
            Err(MemError::Unmapped {
                space: "host-physical",
                addr: 0x1_8000
            })
        );
        // A write running into the hole names its first byte.
        assert_eq!(
            phys.write(Hpa::new(0xfff0), &[7u8; 0x20]),
            Err(MemError::Unmapped {
                space: "host-physical",
                addr: 0x1_0000
            })
        );
        phys.write_u32(Hpa::new(0x2_0000), 5).unwrap();
        assert_eq!(phys.read_u32(Hpa::new(0x2_0000)).unwrap(), 5);
    }

    #[test]
    fn miss_then_hit_in_the_front_iotlb() {
        let s = setup(HostMemory::new(16 << 20).unwrap());
        let vm = &s.vm;
        let got = translate(vm, RW_IOVA + 0x10, 100, Permissions::Write).unwrap();
        assert_eq!(
            got,
            [MappedRange {
                base: GuestAddress(RW_HPA + 0x10),
                length: 100
            }]
        );
        let stats = vm.with_inner(|iommu, _| iommu.stats()).unwrap();
        assert_eq!(stats.translations.get(), 1);
        assert_eq!(stats.walks.get(), 1);
        // Anywhere else in the same frame, read or write: the front cache
        // answers and iovirt is not asked.
        let got = translate(vm, RW_IOVA + 0x800, 0x800, Permissions::ReadWrite).unwrap();
        assert_eq!(got[0].base, GuestAddress(RW_HPA + 0x800));
        assert_eq!(translations(vm), 1);
        // A range over four pages resolves the three missing ones.
        let got = translate(vm, RW_IOVA + 0xff0, 0x3000, Permissions::Read).unwrap();
        let total: usize = got.iter().map(|r| r.length).sum();
        assert_eq!(total, 0x3000);
        assert_eq!(got[0].base, GuestAddress(RW_HPA + 0xff0));
        assert_eq!(translations(vm), 4);
    }

    #[test]
    fn a_huge_page_is_one_entry_from_the_missing_frame_on() {
        let s = setup(HostMemory::new(16 << 20).unwrap());
        let vm = &s.vm;
        let at = HUGE_IOVA + 0x10_3008;
        let got = translate(vm, at, 8, Permissions::Read).unwrap();
        assert_eq!(got[0].base, GuestAddress(HUGE_HPA + 0x10_3008));
        assert_eq!(translations(vm), 1);
        // The rest of the 2 MiB page is cached from the frame at 0x10_3000...
        let got = translate(vm, HUGE_IOVA + 0x10_3000, 0xf_d000, Permissions::Write).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].base, GuestAddress(HUGE_HPA + 0x10_3000));
        assert_eq!(translations(vm), 1);
        // ...but not the part below it.
        translate(vm, HUGE_IOVA, 8, Permissions::Read).unwrap();
        assert_eq!(translations(vm), 2);
    }

    #[test]
    fn faults_are_errors_naming_the_iovirt_fault() {
        let s = setup(HostMemory::new(16 << 20).unwrap());
        let vm = &s.vm;
        let err = translate(vm, 0x9_0000, 4, Permissions::Read).unwrap_err();
        let Error::CannotResolve { iova_range, reason } = &err else {
            panic!("unexpected {err:?}");
        };
        assert_eq!(iova_range.base, GuestAddress(0x9_0000));
        assert!(reason.contains("not present"), "{reason}");
        assert!(reason.contains("0x90000"), "{reason}");
        // Recorded in iovirt's log, with the fault event left for the owner.
        let (faults, event) = vm
            .with_inner(|iommu, _| (iommu.faults().len(), iommu.take_fault_event()))
            .unwrap();
        assert_eq!(faults, 1);
        assert!(event.is_some());

        // A read-only page reads, but neither writes nor read-writes.
        translate(vm, RO_IOVA, 8, Permissions::Read).unwrap();
        for access in [Permissions::Write, Permissions::ReadWrite] {
            let err = translate(vm, RO_IOVA, 8, access).unwrap_err();
            assert!(err.to_string().contains("read-only"), "{err}");
        }
        // A range whose tail faults fails as a whole.
        assert!(translate(vm, RW_IOVA + 0x3ff0, 0x20, Permissions::Read).is_err());

        // No context: blocked.
        let other = VmIommu::new(
            Iommu::new(IommuConfig::default()).unwrap(),
            HostMemory::new(1 << 20).unwrap(),
            DmaRequest::new(RequesterId::new(1, 0, 0).unwrap()),
        );
        let err = translate(&other, 0, 4, Permissions::Read).unwrap_err();
        assert!(err.to_string().contains("context not present"), "{err}");
    }

    #[test]
    fn empty_and_overflowing_ranges_are_errors_not_panics() {
        let s = setup(HostMemory::new(16 << 20).unwrap());
        let vm = &s.vm;
        for (iova, len) in [
            (RW_IOVA, 0),
            (u64::MAX, 2),
            (u64::MAX - 3, 4), // ends exactly at 2^64
            (u64::MAX - 0xfff, usize::MAX),
        ] {
            let err = translate(vm, iova, len, Permissions::Read).unwrap_err();
            assert!(
                matches!(err, Error::CannotResolve { .. }),
                "{iova:#x}+{len:#x}: {err:?}"
            );
        }
        // Nothing reached iovirt.
        assert_eq!(translations(vm), 0);
        // The last byte below 2^64 is a fault (beyond the 48-bit width), not a panic.
        assert!(translate(vm, u64::MAX - 1, 1, Permissions::Read).is_err());
    }

    #[test]
    fn pass_through_near_the_top_of_memory() {
        let mut iommu = Iommu::new(IommuConfig::default()).unwrap();
        iommu.set_context(requester(), ContextEntry::PassThrough);
        let vm = VmIommu::new(
            iommu,
            GuestMemoryPhys::new(ram(1 << 20)),
            DmaRequest::new(requester()),
        );
        let got = translate(&vm, 0xf_f000, 0x1000, Permissions::ReadWrite).unwrap();
        let total: usize = got.iter().map(|r| r.length).sum();
        assert_eq!(total, 0x1000);
        assert_eq!(got[0].base, GuestAddress(0xf_f000));
        assert!(translate(&vm, 0xf_f000, 0x1001, Permissions::Read).is_err());
    }

    #[test]
    fn poisoned_locks_are_errors() {
        let s = setup(HostMemory::new(16 << 20).unwrap());
        let vm = &s.vm;
        translate(vm, RW_IOVA, 8, Permissions::Read).unwrap();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            vm.with_inner(|_, _| panic!("a table edit went wrong"))
        }));
        assert!(panicked.is_err());
        assert!(vm.with_inner(|_, _| ()).is_none());
        // A cached translation is still served...
        translate(vm, RW_IOVA, 8, Permissions::Read).unwrap();
        // ...a miss is not...
        let err = translate(vm, RW_IOVA + 0x1000, 8, Permissions::Read).unwrap_err();
        assert!(matches!(err, Error::IommuMisconfigured { .. }), "{err:?}");
        // ...and an invalidation still empties the front cache, and says why it failed.
        let err = vm.invalidate(Invalidation::Global).unwrap_err();
        assert!(matches!(err, Error::IommuMisconfigured { .. }), "{err:?}");
        assert!(translate(vm, RW_IOVA, 8, Permissions::Read).is_err());
    }

    #[test]
    fn iommu_memory_end_to_end_on_guest_memory_mmap() {
        let ram = ram(16 << 20);
        let Setup {
            vm,
            mut stage2,
            mut frames,
        } = setup(GuestMemoryPhys::new(ram.clone()));
        let mem: IommuMemory<Ram, VmIommu<GuestMemoryPhys<Ram>>> =
            IommuMemory::new(ram.clone(), vm, true, ());

        // Through the IOVA, across a page boundary; then at the physical address.
        let data: Vec<u8> = (1..=200).collect();
        mem.write_slice(&data, GuestAddress(RW_IOVA + 0xfa0))
            .unwrap();
        let mut back = vec![0u8; 200];
        ram.read_slice(&mut back, GuestAddress(RW_HPA + 0xfa0))
            .unwrap();
        assert_eq!(back, data);
        let mut again = vec![0u8; 200];
        mem.read_slice(&mut again, GuestAddress(RW_IOVA + 0xfa0))
            .unwrap();
        assert_eq!(again, data);
        // Read-only and unmapped IOVAs refuse writes.
        assert!(mem.write_slice(b"x", GuestAddress(RO_IOVA)).is_err());
        assert!(mem.write_slice(b"x", GuestAddress(0x9_0000)).is_err());
        // An empty access is a refused range (see the module documentation).
        assert!(mem.write_slice(&[], GuestAddress(RW_IOVA)).is_err());

        // Unmap the first page in iovirt's tables. Until it is invalidated, the
        // cached translation still works, as on hardware.
        let iommu = mem.iommu();
        iommu
            .with_inner(|_, phys| stage2.unmap(phys, &mut frames, Iova::new(RW_IOVA), 0x1000))
            .unwrap()
            .unwrap();
        mem.write_slice(b"stale", GuestAddress(RW_IOVA)).unwrap();
        let removed = iommu
            .invalidate(Invalidation::Page {
                domain: DOMAIN,
                addr: Iova::new(RW_IOVA),
                order: 0,
            })
            .unwrap();
        assert_eq!(removed, 1);
        assert!(mem.write_slice(b"gone", GuestAddress(RW_IOVA)).is_err());
        assert!(
            mem.read_slice(&mut [0u8; 4], GuestAddress(RW_IOVA + 8))
                .is_err()
        );
        // The next page is still mapped.
        mem.write_slice(b"kept", GuestAddress(RW_IOVA + 0x1000))
            .unwrap();
        let mut kept = [0u8; 4];
        ram.read_slice(&mut kept, GuestAddress(RW_HPA + 0x1000))
            .unwrap();
        assert_eq!(&kept, b"kept");
    }
}

//! Translation: IOTLB lookup, second-stage and nested walks, fault recording.

use core::cell::{Cell, RefCell};

use iovirt_core::{
    Access, AccessKind, Cost, DmaFault, FaultReason, Gpa, Gva, Hpa, Iova, MemError, PageSize,
    Perms, PhysMemory, Privilege,
};
use iovirt_paging::{InputCheck, Level, PageTable, PagingConfig, Translation, WalkFault};

use crate::fault::{FaultRecord, Stage};
use crate::iommu::{ContextEntry, DmaRequest, Iommu, UplinkAttribute};
use crate::iotlb::{GVMI_SPACE, Hit, Iotlb, NO_PASID, PackedTag, Tag};
use crate::stats::IommuStats;
use crate::walk_cache::WalkCache;
use iovirt_core::Gvmi;

/// A successful translation of one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translated {
    /// The host-physical address of the byte.
    pub hpa: Hpa,
    /// Bytes from `hpa` to the end of its page: how far the translation holds.
    pub room: u64,
    /// Effective permissions of the translation.
    pub perms: Perms,
    /// What the translation cost.
    pub cost: Cost,
}

/// A successful PA2MA translation of a GVMI (seed 001).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GvmiTranslation {
    /// The machine address.
    pub ma: Hpa,
    /// Bytes from `ma` to the end of its page.
    pub room: u64,
    /// The GVMI's uplink attribute, to go with the memory request.
    pub uplink: UplinkAttribute,
    /// What the translation cost.
    pub cost: Cost,
}

/// Why a translation failed, before it is recorded.
pub(crate) struct Failure {
    pub(crate) reason: FaultReason,
    pub(crate) stage: Option<Stage>,
    pub(crate) walk: Option<WalkFault>,
    pub(crate) cost: Cost,
}

fn allows(perms: Perms, kind: AccessKind) -> bool {
    perms.contains(match kind {
        AccessKind::Read => Perms::READ,
        AccessKind::Write => Perms::WRITE,
        AccessKind::Execute => Perms::EXECUTE,
    })
}

/// Second-stage translation through the IOTLB and the walk cache.
struct Stage2<'a, I, M: ?Sized> {
    mem: &'a M,
    table: &'a PageTable<I, Hpa>,
    space: u32,
    iotlb: &'a mut Iotlb,
    walk_cache: &'a mut WalkCache,
    stats: &'a mut IommuStats,
    cost: Cost,
}

impl<I, M: PhysMemory<Hpa> + ?Sized> Stage2<'_, I, M> {
    /// Translates `addr`; the flag says whether the IOTLB already had it.
    fn translate(
        &mut self,
        addr: u64,
        kind: AccessKind,
        prefetch: bool,
    ) -> Result<(Hit, bool), WalkFault> {
        let tag = Tag {
            space: self.space,
            pasid: NO_PASID,
        };
        if let Some(hit) = self.iotlb.lookup(tag, addr, !prefetch)
            && allows(hit.perms, kind)
        {
            self.stats.iotlb_hits.inc();
            self.cost.iotlb_hits += 1;
            return Ok((hit, true));
        }
        self.stats.iotlb_misses.inc();
        self.cost.iotlb_misses += 1;
        let t = self.walk(addr, kind)?;
        self.iotlb
            .insert(tag, addr, t.size, t.page.raw(), t.perms, prefetch);
        Ok((
            Hit {
                out: t.addr.raw(),
                size: t.size,
                perms: t.perms,
            },
            false,
        ))
    }

    /// Walks the second-stage tables, resuming from the walk cache.
    fn walk(&mut self, addr: u64, kind: AccessKind) -> Result<Translation<Hpa>, WalkFault> {
        let cached = self.walk_cache.lookup(self.space, addr);
        let start = cached.unwrap_or_else(|| self.table.start());
        let access = Access {
            kind,
            privilege: Privilege::Supervisor,
        };
        let walk = self.table.walk_raw_from(self.mem, addr, access, start);
        let reads = walk.trace.len() as u32;
        self.stats.walks.inc();
        self.stats.table_reads.add(u64::from(reads));
        self.cost.table_reads += reads;
        if cached.is_none()
            && let Some(resume) = walk.resume_below(Level::Pd, self.table.config().phys_mask())
        {
            self.walk_cache.insert(self.space, addr, resume);
        }
        walk.result
    }
}

/// Guest-physical memory as a first-stage walk sees it: every table read is
/// translated by the second stage (through the IOTLB, as hardware does).
struct NestedView<'s, 'a, I, M: ?Sized> {
    stage2: RefCell<&'s mut Stage2<'a, I, M>>,
    /// The second-stage fault met while reading a first-stage table.
    fault: Cell<Option<WalkFault>>,
}

impl<I, M: PhysMemory<Hpa> + ?Sized> PhysMemory<Gpa> for NestedView<'_, '_, I, M> {
    fn size(&self) -> u64 {
        // Whatever the second stage maps; it decides, not a size.
        u64::MAX
    }

    fn read(&self, addr: Gpa, buf: &mut [u8]) -> Result<(), MemError> {
        let unmapped = |a: u64| MemError::Unmapped {
            space: "guest-physical",
            addr: a,
        };
        let mut s2 = self
            .stage2
            .try_borrow_mut()
            .map_err(|_| unmapped(addr.raw()))?;
        let mut done = 0usize;
        while done < buf.len() {
            let gpa = addr
                .raw()
                .checked_add(done as u64)
                .ok_or(unmapped(addr.raw()))?;
            let (hit, _) = s2.translate(gpa, AccessKind::Read, false).map_err(|f| {
                self.fault.set(Some(f));
                unmapped(gpa)
            })?;
            let room = (hit.size.bytes() - (gpa & hit.size.mask())) as usize;
            let n = room.min(buf.len() - done);
            let piece = buf.get_mut(done..done + n).ok_or(unmapped(gpa))?;
            s2.mem.read(Hpa::new(hit.out), piece)?;
            done += n;
        }
        Ok(())
    }

    /// First-stage walks here never write (no A/D update in nested walks).
    fn write(&mut self, addr: Gpa, _data: &[u8]) -> Result<(), MemError> {
        Err(MemError::Unmapped {
            space: "guest-physical",
            addr: addr.raw(),
        })
    }
}

impl Iommu {
    /// Translates one address of a request, recording any fault. Callers
    /// moving data raise [`Iommu::take_fault_event`]; ports do it for them.
    #[inline(always)]
    pub fn translate<M: PhysMemory<Hpa> + ?Sized>(
        &mut self,
        mem: &M,
        req: DmaRequest,
        addr: u64,
        kind: AccessKind,
    ) -> Result<Translated, DmaFault> {
        if let Some((hpa, room, perms)) = self.cached(req, addr, kind) {
            self.count_cached_hit(0);
            return Ok(Translated {
                hpa,
                room,
                perms,
                cost: Cost {
                    iotlb_hits: 1,
                    ..Cost::ZERO
                },
            });
        }
        self.lookup(mem, req, addr, kind, false)
    }

    /// The IOTLB-hit path alone: the cached translation of `addr` for a
    /// translated (non-pass-through) context, as the host address, the bytes
    /// left in its page and the permissions. The lookup updates the entry as
    /// any hit does (LRU, prefetch use); the counters are left to
    /// [`Iommu::count_cached_hit`], once the caller commits to the hit.
    /// `None` (a miss, or a hit without the permission) sends the caller to
    /// the full lookup.
    #[inline(always)]
    pub(crate) fn cached(
        &mut self,
        req: DmaRequest,
        addr: u64,
        kind: AccessKind,
    ) -> Option<(Hpa, u64, Perms)> {
        let tag = self.cached_tag(req)?;
        self.cached_in(tag, addr, kind)
    }

    /// The IOTLB tag, packed, that [`Iommu::cached`] looks `req`'s addresses up under:
    /// `None` unless its context translates. A port keeps it for its life,
    /// during which nothing can change the context table.
    #[inline(always)]
    pub(crate) fn cached_tag(&self, req: DmaRequest) -> Option<PackedTag> {
        let Some(ContextEntry::Translate { domain, .. }) = self.context(req.requester) else {
            return None;
        };
        let tag = Tag {
            space: u32::from(domain.0),
            pasid: req.pasid.map_or(NO_PASID, |p| p.raw()),
        };
        Some(tag.pack())
    }

    /// [`Iommu::cached`] with the tag already resolved.
    #[inline(always)]
    pub(crate) fn cached_in(
        &mut self,
        tag: PackedTag,
        addr: u64,
        kind: AccessKind,
    ) -> Option<(Hpa, u64, Perms)> {
        let (out, room, perms) = self.iotlb.lookup_room(tag, addr)?;
        allows(perms, kind).then_some((Hpa::new(out), room, perms))
    }

    /// Counts a translation served by [`Iommu::cached`] that moved `bytes`.
    #[inline(always)]
    pub(crate) fn count_cached_hit(&mut self, bytes: u64) {
        self.stats.translations.inc();
        self.stats.iotlb_hits.inc();
        self.stats.dma_bytes.add(bytes);
    }

    /// Seed 000's dummy DMA: translates `addr` and fills the IOTLB without
    /// moving data. A translation already cached is counted as a redundant
    /// prefetch. Faults are recorded like any DMA's.
    pub fn prefetch<M: PhysMemory<Hpa> + ?Sized>(
        &mut self,
        mem: &M,
        req: DmaRequest,
        addr: u64,
        kind: AccessKind,
    ) -> Result<Cost, DmaFault> {
        self.stats.prefetches.inc();
        self.lookup(mem, req, addr, kind, true).map(|t| t.cost)
    }

    #[inline(always)]
    pub(crate) fn lookup<M: PhysMemory<Hpa> + ?Sized>(
        &mut self,
        mem: &M,
        req: DmaRequest,
        addr: u64,
        kind: AccessKind,
        prefetch: bool,
    ) -> Result<Translated, DmaFault> {
        self.stats.translations.inc();
        let result = match self.context(req.requester) {
            None => Err(Failure {
                reason: FaultReason::ContextNotPresent,
                stage: None,
                walk: None,
                cost: Cost::ZERO,
            }),
            Some(ContextEntry::PassThrough) => {
                return if addr < mem.size() {
                    Ok(Translated {
                        hpa: Hpa::new(addr),
                        room: 4096 - (addr & 0xfff),
                        perms: Perms::READ | Perms::WRITE,
                        cost: Cost::ZERO,
                    })
                } else {
                    // Beyond memory is a master abort, not a translation fault.
                    self.stats.faults.count(FaultReason::OutsideMemory);
                    Err(DmaFault {
                        addr: Iova::new(addr),
                        access: kind,
                        reason: FaultReason::OutsideMemory,
                        cost: Cost::ZERO,
                    })
                };
            }
            Some(ContextEntry::Translate {
                domain,
                pasid_enabled,
            }) => self.translated(mem, req, domain.0, pasid_enabled, addr, kind, prefetch),
        };
        result.map_err(|f| self.record(req, addr, kind, f))
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn translated<M: PhysMemory<Hpa> + ?Sized>(
        &mut self,
        mem: &M,
        req: DmaRequest,
        domain: u16,
        pasid_enabled: bool,
        addr: u64,
        kind: AccessKind,
        prefetch: bool,
    ) -> Result<Translated, Failure> {
        // Demand accesses reach here after `cached` declined; prefetches come
        // straight here, so a cached page counts as a redundant prefetch.
        let space = u32::from(domain);
        let tag = Tag {
            space,
            pasid: req.pasid.map_or(NO_PASID, |p| p.raw()),
        };
        if let Some(hit) = self.iotlb.lookup(tag, addr, !prefetch)
            && allows(hit.perms, kind)
        {
            self.stats.iotlb_hits.inc();
            if prefetch {
                self.stats.prefetch_redundant.inc();
            }
            return Ok(Translated {
                hpa: Hpa::new(hit.out),
                room: hit.size.bytes() - (addr & hit.size.mask()),
                perms: hit.perms,
                cost: Cost {
                    iotlb_hits: 1,
                    ..Cost::ZERO
                },
            });
        }
        self.translate_miss(mem, req, tag, pasid_enabled, addr, kind, prefetch)
    }

    /// The IOTLB missed (or lacked the permission): walk and fill. Kept out
    /// of line so the hit path above stays small enough to inline.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn translate_miss<M: PhysMemory<Hpa> + ?Sized>(
        &mut self,
        mem: &M,
        req: DmaRequest,
        tag: Tag,
        pasid_enabled: bool,
        addr: u64,
        kind: AccessKind,
        prefetch: bool,
    ) -> Result<Translated, Failure> {
        let missing = |reason| Failure {
            reason,
            stage: None,
            walk: None,
            cost: Cost::ZERO,
        };
        let Iommu {
            domains,
            pasids,
            iotlb,
            walk_cache,
            stats,
            config,
            ..
        } = self;
        let space = tag.space;
        let domain = tag.space as u16;
        stats.iotlb_misses.inc();

        let Some(table) = domains.get(&crate::DomainId(domain)) else {
            return Err(missing(FaultReason::ContextNotPresent));
        };
        let mut s2 = Stage2 {
            mem,
            table,
            space,
            iotlb,
            walk_cache,
            stats,
            cost: Cost {
                iotlb_misses: 1,
                ..Cost::ZERO
            },
        };
        let Some(pasid) = req.pasid else {
            return match s2.walk(addr, kind) {
                Ok(t) => {
                    s2.iotlb
                        .insert(tag, addr, t.size, t.page.raw(), t.perms, prefetch);
                    Ok(Translated {
                        hpa: t.addr,
                        room: t.size.bytes() - (addr & t.size.mask()),
                        perms: t.perms,
                        cost: s2.cost,
                    })
                }
                Err(w) => Err(Failure {
                    reason: w.reason(),
                    stage: Some(Stage::Second),
                    walk: Some(w),
                    cost: s2.cost,
                }),
            };
        };
        if !pasid_enabled {
            return Err(missing(FaultReason::InvalidPasid));
        }
        let Some(entry) = pasids.get(&(req.requester, pasid)) else {
            return Err(missing(FaultReason::InvalidPasid));
        };

        // The combined (nested) translation will be cached under the PASID.
        let first = PageTable::<Gva, Gpa>::from_root(
            entry.first_stage_root,
            PagingConfig {
                levels: entry.levels,
                max_phys_bits: config.max_phys_bits,
                page_1g: config.page_1g,
                input: InputCheck::Canonical,
                ..PagingConfig::default()
            },
        );
        let privilege = if req.privileged {
            Privilege::Supervisor
        } else {
            Privilege::User
        };
        let (walk, stage2_fault) = {
            let view = NestedView {
                stage2: RefCell::new(&mut s2),
                fault: Cell::new(None),
            };
            let walk = first.walk_raw(&view, addr, Access { kind, privilege });
            (walk, view.fault.get())
        };
        let reads = walk.trace.len() as u32;
        s2.stats.walks.inc();
        s2.stats.table_reads.add(u64::from(reads));
        s2.cost.table_reads += reads;
        let t = match (walk.result, stage2_fault) {
            (Ok(t), _) => t,
            // A first-stage table the second stage does not map.
            (Err(WalkFault::TableOutsideMemory { .. }), Some(w)) => {
                return Err(Failure {
                    reason: w.reason(),
                    stage: Some(Stage::Second),
                    walk: Some(w),
                    cost: s2.cost,
                });
            }
            (Err(w), _) => {
                return Err(Failure {
                    reason: FaultReason::FirstStage,
                    stage: Some(Stage::First),
                    walk: Some(w),
                    cost: s2.cost,
                });
            }
        };
        let (hit, _) = s2
            .translate(t.addr.raw(), kind, false)
            .map_err(|w| Failure {
                reason: w.reason(),
                stage: Some(Stage::Second),
                walk: Some(w),
                cost: s2.cost,
            })?;
        let size = t.size.min(hit.size);
        let perms = (t.perms & hit.perms) | (t.perms & Perms::USER);
        s2.iotlb
            .insert(tag, addr, size, hit.out & !size.mask(), perms, prefetch);
        Ok(Translated {
            hpa: Hpa::new(hit.out),
            room: size.bytes() - (addr & size.mask()),
            perms,
            cost: s2.cost,
        })
    }

    /// Records a fault and counts it; returns what the device sees.
    pub(crate) fn record(
        &mut self,
        req: DmaRequest,
        addr: u64,
        kind: AccessKind,
        f: Failure,
    ) -> DmaFault {
        self.stats.faults.count(f.reason);
        let record = FaultRecord {
            requester: req.requester,
            pasid: req.pasid,
            addr,
            access: kind,
            reason: f.reason,
            stage: f.stage,
            walk: f.walk,
        };
        log::debug!(
            "IOMMU fault: {} {kind} at {addr:#x}: {}",
            req.requester,
            f.reason
        );
        if self.faults.record(record) {
            self.fault_event = true;
        }
        DmaFault {
            addr: Iova::new(addr),
            access: kind,
            reason: f.reason,
            cost: f.cost,
        }
    }

    /// Seed 001's second stage inside a device: translates a VM's "physical"
    /// address `pa` to a machine address through the PA2MA tables of `gvmi`,
    /// cached in the same IOTLB under the GVMI. GVMI 0 (the host) is not
    /// translated. Faults are counted but not recorded: the device reports
    /// them to the host driver as events of its own.
    pub fn translate_gvmi<M: PhysMemory<Hpa> + ?Sized>(
        &mut self,
        mem: &M,
        gvmi: Gvmi,
        pa: Gpa,
        kind: AccessKind,
    ) -> Result<GvmiTranslation, DmaFault> {
        self.gvmi_lookup(mem, gvmi, pa, kind, false)
    }

    /// Fills the IOTLB with the PA2MA translation of `pa`, moving no data.
    pub fn prefetch_gvmi<M: PhysMemory<Hpa> + ?Sized>(
        &mut self,
        mem: &M,
        gvmi: Gvmi,
        pa: Gpa,
        kind: AccessKind,
    ) -> Result<Cost, DmaFault> {
        self.stats.prefetches.inc();
        self.gvmi_lookup(mem, gvmi, pa, kind, true).map(|t| t.cost)
    }

    fn gvmi_lookup<M: PhysMemory<Hpa> + ?Sized>(
        &mut self,
        mem: &M,
        gvmi: Gvmi,
        pa: Gpa,
        kind: AccessKind,
        prefetch: bool,
    ) -> Result<GvmiTranslation, DmaFault> {
        self.stats.translations.inc();
        let uplink = self.uplink(gvmi);
        let fail = |reason, cost| DmaFault {
            addr: Iova::new(pa.raw()),
            access: kind,
            reason,
            cost,
        };
        if gvmi == Gvmi::HOST {
            if pa.raw() < mem.size() {
                let room = PageSize::Size4K.bytes() - (pa.raw() & PageSize::Size4K.mask());
                return Ok(GvmiTranslation {
                    ma: Hpa::new(pa.raw()),
                    room,
                    uplink,
                    cost: Cost::ZERO,
                });
            }
            self.stats.faults.count(FaultReason::OutsideMemory);
            return Err(fail(FaultReason::OutsideMemory, Cost::ZERO));
        }
        let Iommu {
            gvms,
            iotlb,
            walk_cache,
            stats,
            ..
        } = self;
        let Some(table) = gvms.get(&gvmi) else {
            stats.faults.count(FaultReason::ContextNotPresent);
            return Err(fail(FaultReason::ContextNotPresent, Cost::ZERO));
        };
        let space = GVMI_SPACE | u32::from(gvmi.0);
        let mut s2 = Stage2 {
            mem,
            table,
            space,
            iotlb,
            walk_cache,
            stats,
            cost: Cost::ZERO,
        };
        match s2.translate(pa.raw(), kind, prefetch) {
            Ok((hit, cached)) => {
                if prefetch && cached {
                    s2.stats.prefetch_redundant.inc();
                }
                Ok(GvmiTranslation {
                    ma: Hpa::new(hit.out),
                    room: hit.size.bytes() - (pa.raw() & hit.size.mask()),
                    uplink,
                    cost: s2.cost,
                })
            }
            Err(w) => {
                log::debug!("PA2MA fault: {gvmi} {kind} at {pa}: {w}");
                s2.stats.faults.count(w.reason());
                let cost = s2.cost;
                Err(fail(w.reason(), cost))
            }
        }
    }
}

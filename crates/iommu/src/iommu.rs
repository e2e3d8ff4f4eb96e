//! The IOMMU: its tables (contexts, domains, PASID entries, GVMI entries),
//! its caches, invalidation and the fault log.

use std::collections::BTreeMap;

use iovirt_core::{Gpa, Hpa, Iova, Irq, Stats};
use iovirt_paging::{Levels, PageTable, PagingConfig};
use serde::{Deserialize, Serialize};

use crate::fault::FaultLog;
use crate::ids::{DomainId, Pasid, RequesterId};
use crate::iotlb::{BadIotlbConfig, GVMI_SPACE, Iotlb, IotlbConfig, NO_PASID};
use crate::stats::IommuStats;
use crate::walk_cache::WalkCache;
use iovirt_core::Gvmi;

/// How a requester's DMA is translated (a context entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContextEntry {
    /// Untranslated: the I/O-virtual address is the host-physical address.
    PassThrough,
    /// Requests without a PASID go through `domain`'s second stage; requests
    /// with one through that PASID's first stage nested over it, when
    /// `pasid_enabled`.
    Translate {
        /// The domain (second-stage tables, IOTLB tag).
        domain: DomainId,
        /// Whether requests may carry a PASID.
        pasid_enabled: bool,
    },
}

/// A PASID-table entry: a process's first-stage tables (VA → GPA), in the
/// guest-physical memory of the requester's domain, nested over its second
/// stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasidEntry {
    /// Guest-physical address of the first-stage root table.
    pub first_stage_root: Gpa,
    /// 4- or 5-level first-stage paging.
    pub levels: Levels,
}

/// An uplink attribute (seed 001): what the attribute-translation section
/// emits with each memory request of a GVMI, for an IOMMU further out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UplinkAttribute(pub u32);

/// An entry of the GVM identifier table (seed 001): the base of one VM's
/// physical-to-machine (PA2MA) tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GvmEntry {
    /// Host-physical address of the PA2MA root table.
    pub pa2ma_root: Hpa,
    /// Depth of the PA2MA tables.
    pub levels: Levels,
}

/// A request's identity: who asks, for which address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DmaRequest {
    /// The requester (bus:device.function).
    pub requester: RequesterId,
    /// The PASID prefix, if any.
    pub pasid: Option<Pasid>,
    /// The privileged-mode bit of a PASID request (supervisor access in the
    /// first stage); ignored without a PASID.
    pub privileged: bool,
}

impl DmaRequest {
    /// A request without PASID from `requester`.
    pub const fn new(requester: RequesterId) -> DmaRequest {
        DmaRequest {
            requester,
            pasid: None,
            privileged: false,
        }
    }

    /// The same request carrying `pasid` (user-mode).
    pub const fn with_pasid(self, pasid: Pasid) -> DmaRequest {
        DmaRequest {
            pasid: Some(pasid),
            ..self
        }
    }
}

/// Geometry and behaviour of an IOMMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IommuConfig {
    /// The IOTLB.
    pub iotlb: IotlbConfig,
    /// Entries of the second-stage walk (PDE) cache; 0 turns it off.
    pub walk_cache_entries: usize,
    /// Fault-recording registers (1 to 256).
    pub fault_records: usize,
    /// The fault event's interrupt; `None` masks it.
    pub fault_irq: Option<Irq>,
    /// MAXPHYADDR of every table walked.
    pub max_phys_bits: u8,
    /// Whether 1 GiB leaves are supported (VT-d SLLPS bit 1).
    pub page_1g: bool,
    /// Descriptors the invalidation queue holds.
    pub invalidation_queue: usize,
}

impl Default for IommuConfig {
    fn default() -> Self {
        IommuConfig {
            iotlb: IotlbConfig::default(),
            walk_cache_entries: 16,
            fault_records: 8,
            fault_irq: Some(Irq(0)),
            max_phys_bits: 52,
            page_1g: true,
            invalidation_queue: 256,
        }
    }
}

/// What to invalidate in the IOTLB and walk cache. Changing a table without
/// the matching invalidation leaves the old translation cached, as on hardware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Invalidation {
    /// Everything.
    Global,
    /// Every translation of a domain, PASID-tagged ones included.
    Domain(DomainId),
    /// Second-stage translations of `2^order` 4 KiB pages at `addr` (aligned
    /// down to the range), and every nested translation of the domain, whose
    /// guest-physical pages are not tagged.
    Page {
        /// The domain.
        domain: DomainId,
        /// An address in the range.
        addr: Iova,
        /// log2 of the number of 4 KiB pages.
        order: u8,
    },
    /// Every translation of one PASID.
    Pasid {
        /// The domain.
        domain: DomainId,
        /// The PASID.
        pasid: Pasid,
    },
    /// First-stage translations of `2^order` pages of one PASID.
    PasidPage {
        /// The domain.
        domain: DomainId,
        /// The PASID.
        pasid: Pasid,
        /// A process virtual address in the range.
        addr: u64,
        /// log2 of the number of 4 KiB pages.
        order: u8,
    },
    /// A requester's context changed: every translation of the domain it
    /// was attached to.
    Context(RequesterId),
    /// Every PA2MA translation of a GVMI.
    Gvmi(Gvmi),
    /// PA2MA translations of `2^order` pages of a GVMI.
    GvmiPage {
        /// The GVMI.
        gvmi: Gvmi,
        /// A guest-physical address in the range.
        addr: Gpa,
        /// log2 of the number of 4 KiB pages.
        order: u8,
    },
}

/// The IOMMU.
///
/// ```
/// use iovirt_core::{BitmapFrameAllocator, DmaPort, HostMemory, Hpa, Iova, Irq, PhysMemory};
/// use iovirt_iommu::{ContextEntry, DomainId, DmaRequest, Iommu, IommuConfig, RequesterId};
/// use iovirt_paging::{Levels, Mapping, PageTable, PagingConfig, PteFlags};
///
/// let mut mem = HostMemory::new(64 << 20)?;
/// let mut frames = BitmapFrameAllocator::new(Hpa::new(0), 1024);
/// // The host builds the domain's second-stage table: IOVA 0x10000 -> HPA 0x200000.
/// let mut stage2 = PageTable::<Iova, Hpa>::new(&mut mem, &mut frames, PagingConfig::second_stage(Levels::Four))?;
/// stage2.map(&mut mem, &mut frames, Mapping::new(Iova::new(0x1_0000), Hpa::new(0x20_0000), 0x1000, PteFlags::RW))?;
///
/// let mut iommu = Iommu::new(IommuConfig::default())?;
/// iommu.set_domain(DomainId(1), stage2.root(), Levels::Four);
/// let nic = RequesterId::new(0, 3, 0).unwrap();
/// iommu.set_context(nic, ContextEntry::Translate { domain: DomainId(1), pasid_enabled: false });
///
/// let mut irqs: Vec<Irq> = Vec::new();
/// let mut port = iommu.port(&mut mem, &mut irqs, DmaRequest::new(nic));
/// let miss = port.dma_write(Iova::new(0x1_0040), b"packet")?;
/// let hit = port.dma_write(Iova::new(0x1_0080), b"packet")?;
/// assert_eq!((miss.iotlb_misses, miss.table_reads), (1, 4));
/// assert_eq!((hit.iotlb_hits, hit.table_reads), (1, 0));
/// // An unmapped IOVA faults, is recorded, and raises the fault event.
/// assert!(port.dma_read(Iova::new(0x9_0000), &mut [0u8; 4]).is_err());
/// assert_eq!(irqs, [Irq(0)]);
/// assert_eq!(iommu.faults().len(), 1);
/// assert_eq!(mem.read_u32(Hpa::new(0x20_0040))?, u32::from_le_bytes(*b"pack"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Iommu {
    pub(crate) config: IommuConfig,
    /// Root table: one context table per bus, allocated on first use.
    contexts: Vec<Option<Box<[Option<ContextEntry>; 256]>>>,
    pub(crate) domains: BTreeMap<DomainId, PageTable<Iova, Hpa>>,
    pub(crate) pasids: BTreeMap<(RequesterId, Pasid), PasidEntry>,
    pub(crate) gvms: BTreeMap<Gvmi, PageTable<Gpa, Hpa>>,
    uplinks: BTreeMap<Gvmi, UplinkAttribute>,
    pub(crate) iotlb: Iotlb,
    pub(crate) walk_cache: WalkCache,
    pub(crate) faults: FaultLog,
    pub(crate) fault_event: bool,
    pub(crate) stats: IommuStats,
    pub(crate) queue: crate::queue::InvalidationQueue,
}

impl Iommu {
    /// An IOMMU with no context (every requester blocked) and empty caches.
    pub fn new(config: IommuConfig) -> Result<Iommu, BadIotlbConfig> {
        Ok(Iommu {
            config,
            contexts: Vec::new(),
            domains: BTreeMap::new(),
            pasids: BTreeMap::new(),
            gvms: BTreeMap::new(),
            uplinks: BTreeMap::new(),
            iotlb: Iotlb::new(config.iotlb)?,
            walk_cache: WalkCache::new(config.walk_cache_entries),
            faults: FaultLog::new(config.fault_records),
            fault_event: false,
            stats: IommuStats::default(),
            queue: crate::queue::InvalidationQueue::new(config.invalidation_queue),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &IommuConfig {
        &self.config
    }

    pub(crate) fn paging(&self, levels: Levels) -> PagingConfig {
        PagingConfig {
            max_phys_bits: self.config.max_phys_bits,
            page_1g: self.config.page_1g,
            ..PagingConfig::second_stage(levels)
        }
    }

    /// Sets `requester`'s context entry. Software invalidates the caches
    /// ([`Invalidation::Context`]) when it changes a live entry.
    pub fn set_context(&mut self, requester: RequesterId, entry: ContextEntry) {
        let bus = usize::from(requester.bus());
        if self.contexts.len() <= bus {
            self.contexts.resize_with(bus + 1, || None);
        }
        if let Some(table) = self.contexts.get_mut(bus) {
            let table = table.get_or_insert_with(|| Box::new([None; 256]));
            if let Some(slot) = table.get_mut(usize::from(requester.devfn())) {
                *slot = Some(entry);
            }
        }
    }

    /// Clears `requester`'s context entry: its DMA is blocked from now on.
    pub fn clear_context(&mut self, requester: RequesterId) {
        if let Some(Some(table)) = self.contexts.get_mut(usize::from(requester.bus()))
            && let Some(slot) = table.get_mut(usize::from(requester.devfn()))
        {
            *slot = None;
        }
    }

    /// `requester`'s context entry.
    #[inline]
    pub fn context(&self, requester: RequesterId) -> Option<ContextEntry> {
        let table = self.contexts.get(usize::from(requester.bus()))?.as_ref()?;
        *table.get(usize::from(requester.devfn()))?
    }

    /// Sets `domain`'s second-stage tables: root and depth.
    pub fn set_domain(&mut self, domain: DomainId, root: Hpa, levels: Levels) {
        let table = PageTable::from_root(root, self.paging(levels));
        self.domains.insert(domain, table);
    }

    /// Removes a domain; requesters still attached to it fault.
    pub fn remove_domain(&mut self, domain: DomainId) {
        self.domains.remove(&domain);
    }

    /// Sets a PASID-table entry of `requester`.
    pub fn set_pasid(&mut self, requester: RequesterId, pasid: Pasid, entry: PasidEntry) {
        self.pasids.insert((requester, pasid), entry);
    }

    /// Clears a PASID-table entry.
    pub fn clear_pasid(&mut self, requester: RequesterId, pasid: Pasid) {
        self.pasids.remove(&(requester, pasid));
    }

    /// Sets a GVM identifier table entry (seed 001). GVMI 0, the host, is
    /// never translated, so an entry for it is ignored.
    pub fn set_gvm(&mut self, gvmi: Gvmi, entry: GvmEntry) {
        if gvmi != Gvmi::HOST {
            let table = PageTable::from_root(entry.pa2ma_root, self.paging(entry.levels));
            self.gvms.insert(gvmi, table);
        }
    }

    /// Removes a GVM identifier table entry.
    pub fn clear_gvm(&mut self, gvmi: Gvmi) {
        self.gvms.remove(&gvmi);
    }

    /// Sets the uplink-table entry of a GVMI.
    pub fn set_uplink(&mut self, gvmi: Gvmi, attribute: UplinkAttribute) {
        self.uplinks.insert(gvmi, attribute);
    }

    /// The uplink attribute of a GVMI (zero when none was set).
    pub fn uplink(&self, gvmi: Gvmi) -> UplinkAttribute {
        self.uplinks.get(&gvmi).copied().unwrap_or_default()
    }

    /// Applies an invalidation now; returns how many IOTLB entries it removed.
    pub fn invalidate(&mut self, inv: Invalidation) -> u64 {
        let counts = &mut self.stats.invalidations;
        let (removed, walk_space) = match inv {
            Invalidation::Global => {
                counts.global.inc();
                (self.iotlb.invalidate(|_, _, _| true), None)
            }
            Invalidation::Domain(d) => {
                counts.domain.inc();
                let space = u32::from(d.0);
                (
                    self.iotlb.invalidate(|t, _, _| t.space == space),
                    Some(space),
                )
            }
            Invalidation::Page {
                domain,
                addr,
                order,
            } => {
                counts.page.inc();
                let space = u32::from(domain.0);
                let (start, len) = page_range(addr.raw(), order);
                let removed = self.iotlb.invalidate(|t, base, size| {
                    t.space == space
                        && (t.pasid != NO_PASID || overlaps(base, size.bytes(), start, len))
                });
                (removed, Some(space))
            }
            Invalidation::Pasid { domain, pasid } => {
                counts.pasid.inc();
                let space = u32::from(domain.0);
                (
                    self.iotlb
                        .invalidate(|t, _, _| t.space == space && t.pasid == pasid.raw()),
                    None,
                )
            }
            Invalidation::PasidPage {
                domain,
                pasid,
                addr,
                order,
            } => {
                counts.pasid_page.inc();
                let space = u32::from(domain.0);
                let (start, len) = page_range(addr, order);
                let removed = self.iotlb.invalidate(|t, base, size| {
                    t.space == space
                        && t.pasid == pasid.raw()
                        && overlaps(base, size.bytes(), start, len)
                });
                (removed, None)
            }
            Invalidation::Context(requester) => {
                counts.context.inc();
                match self.context(requester) {
                    Some(ContextEntry::Translate { domain, .. }) => {
                        let space = u32::from(domain.0);
                        (
                            self.iotlb.invalidate(|t, _, _| t.space == space),
                            Some(space),
                        )
                    }
                    // Pass-through and absent contexts cache nothing.
                    _ => (0, None),
                }
            }
            Invalidation::Gvmi(g) => {
                counts.gvmi.inc();
                let space = GVMI_SPACE | u32::from(g.0);
                (
                    self.iotlb.invalidate(|t, _, _| t.space == space),
                    Some(space),
                )
            }
            Invalidation::GvmiPage { gvmi, addr, order } => {
                counts.gvmi.inc();
                let space = GVMI_SPACE | u32::from(gvmi.0);
                let (start, len) = page_range(addr.raw(), order);
                let removed = self.iotlb.invalidate(|t, base, size| {
                    t.space == space && overlaps(base, size.bytes(), start, len)
                });
                (removed, Some(space))
            }
        };
        // Paging-structure caches go with any second-stage invalidation.
        match (inv, walk_space) {
            (Invalidation::Global, _) => self.walk_cache.invalidate(None),
            (_, Some(space)) => self.walk_cache.invalidate(Some(space)),
            _ => {}
        }
        removed
    }

    /// The fault log.
    pub fn faults(&self) -> &FaultLog {
        &self.faults
    }

    /// The fault log, to service records and clear the overflow flag.
    pub fn faults_mut(&mut self) -> &mut FaultLog {
        &mut self.faults
    }

    /// Takes the pending fault event: the interrupt to raise, if a fault was
    /// recorded into an empty log since the last call and the event is not
    /// masked. Ports raise it themselves; a caller of [`Iommu::translate`]
    /// raises it.
    pub fn take_fault_event(&mut self) -> Option<Irq> {
        if core::mem::take(&mut self.fault_event) {
            self.config.fault_irq
        } else {
            None
        }
    }

    /// A snapshot of every counter.
    pub fn stats(&self) -> IommuStats {
        IommuStats {
            iotlb: *self.iotlb.stats(),
            walk_cache: *self.walk_cache.stats(),
            ..self.stats
        }
    }

    /// Sets every counter to zero.
    pub fn reset_stats(&mut self) {
        self.stats.reset();
        self.iotlb.reset_stats();
        self.walk_cache.reset_stats();
    }

    /// Valid IOTLB entries.
    pub fn iotlb_occupancy(&self) -> usize {
        self.iotlb.occupancy()
    }
}

/// The byte range of `2^order` 4 KiB pages containing `addr`.
fn page_range(addr: u64, order: u8) -> (u64, u64) {
    let shift = 12 + u32::from(order);
    if shift >= 64 {
        // A mask wider than the address space covers all of it.
        return (0, u64::MAX);
    }
    let len = 1u64 << shift;
    (addr & !(len - 1), len)
}

fn overlaps(base: u64, len: u64, start: u64, range_len: u64) -> bool {
    base < start.saturating_add(range_len) && start < base.saturating_add(len)
}

//! Pieces shared by the IOMMU's integration tests: a host (memory, the
//! frames its I/O page tables come from, those tables by domain, an IOMMU
//! and its fault events) built and driven the same way everywhere; and, for
//! the property tests on random platforms (`isolation.rs` and
//! `transparency.rs`), page sizes, IOTLB and walk-cache geometries,
//! requesters, and what a device sees of faults.

// Each test binary includes this module and uses a part of it (`stale.rs`
// and `behaviour.rs` no strategies): the rest is unused there.
#![allow(dead_code)]

use std::collections::BTreeMap;

use iovirt_core::{
    AccessKind, BitmapFrameAllocator, DmaFault, FaultReason, HostMemory, Hpa, Iova, Irq,
};
use iovirt_iommu::{
    BadIotlbConfig, ContextEntry, DmaRequest, DomainId, FaultRecord, Iommu, IommuConfig, IommuPort,
    IotlbConfig, Replacement, RequesterId,
};
use iovirt_paging::{EditReport, Levels, MapError, Mapping, PageTable, PagingConfig, PteFlags};
use proptest::prelude::*;

/// A simulated host: its memory, the frames its I/O page tables are built
/// from, those tables by domain, an IOMMU, and the fault events it raised.
pub(crate) struct Host {
    pub(crate) mem: HostMemory,
    pub(crate) frames: BitmapFrameAllocator<Hpa>,
    pub(crate) tables: BTreeMap<DomainId, PageTable<Iova, Hpa>>,
    pub(crate) iommu: Iommu,
    pub(crate) irqs: Vec<Irq>,
}

impl Host {
    /// `mem` bytes of zeroed host memory whose first `table_frames` frames
    /// hold the page tables, no domain yet, and an IOMMU configured by
    /// `config` (its error when it refuses the configuration).
    pub(crate) fn new(
        mem: u64,
        table_frames: u64,
        config: IommuConfig,
    ) -> Result<Host, BadIotlbConfig> {
        let iommu = Iommu::new(config)?;
        Ok(Host {
            mem: HostMemory::new(mem).unwrap(),
            frames: BitmapFrameAllocator::new(Hpa::new(0), table_frames),
            tables: BTreeMap::new(),
            iommu,
            irqs: Vec::new(),
        })
    }

    /// Domain `id`: a new, empty second-stage table of `levels` levels,
    /// its frames from the table frames, given to the IOMMU.
    pub(crate) fn add_domain(&mut self, id: DomainId, levels: Levels) {
        let pt = PageTable::new(
            &mut self.mem,
            &mut self.frames,
            PagingConfig::second_stage(levels),
        )
        .unwrap();
        self.iommu.set_domain(id, pt.root(), levels);
        self.tables.insert(id, pt);
    }

    /// Requester `rid` translated through domain `domain`, with or without
    /// PASIDs.
    pub(crate) fn attach(&mut self, rid: RequesterId, domain: DomainId, pasid_enabled: bool) {
        self.iommu.set_context(
            rid,
            ContextEntry::Translate {
                domain,
                pasid_enabled,
            },
        );
    }

    /// The second-stage table of domain `domain`.
    pub(crate) fn table(&self, domain: DomainId) -> &PageTable<Iova, Hpa> {
        &self.tables[&domain]
    }

    /// Maps `m` in domain `domain`'s table (no invalidation).
    pub(crate) fn map(
        &mut self,
        domain: DomainId,
        m: Mapping<Iova, Hpa>,
    ) -> Result<EditReport, MapError> {
        let pt = self.tables.get_mut(&domain).unwrap();
        pt.map(&mut self.mem, &mut self.frames, m)
    }

    /// Unmaps `len` bytes at `iova` in domain `domain`'s table (no
    /// invalidation).
    pub(crate) fn unmap(
        &mut self,
        domain: DomainId,
        iova: Iova,
        len: u64,
    ) -> Result<EditReport, MapError> {
        let pt = self.tables.get_mut(&domain).unwrap();
        pt.unmap(&mut self.mem, &mut self.frames, iova, len)
    }

    /// Gives the `len` bytes at `iova` in domain `domain`'s table the leaf
    /// flags `flags` (no invalidation).
    pub(crate) fn protect(
        &mut self,
        domain: DomainId,
        iova: Iova,
        len: u64,
        flags: PteFlags,
    ) -> Result<EditReport, MapError> {
        let pt = self.tables.get_mut(&domain).unwrap();
        pt.protect(&mut self.mem, &mut self.frames, iova, len, flags)
    }

    /// The DMA port of `req`, its fault events going to [`Host::irqs`].
    pub(crate) fn port(&mut self, req: DmaRequest) -> IommuPort<'_, HostMemory, Vec<Irq>> {
        self.iommu.port(&mut self.mem, &mut self.irqs, req)
    }
}

pub(crate) const PAGE: u64 = 4096;
pub(crate) const HUGE: u64 = 2 << 20;
/// Pages of a 2 MiB page.
pub(crate) const HUGE_PAGES: u64 = HUGE / PAGE;

/// An IOTLB geometry and walk-cache size.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub(crate) entries: usize,
    pub(crate) ways: usize,
    pub(crate) replacement: Replacement,
    pub(crate) walk_cache: usize,
}

impl Geometry {
    pub(crate) fn config(self) -> IommuConfig {
        IommuConfig {
            iotlb: IotlbConfig {
                entries: self.entries,
                ways: self.ways,
                replacement: self.replacement,
            },
            walk_cache_entries: self.walk_cache,
            ..IommuConfig::default()
        }
    }
}

/// Whether a geometry is one hardware could have: the IOTLB is off, or fully
/// associative, or `entries / ways` is a whole power of two.
pub(crate) fn valid_geometry(g: &Geometry) -> bool {
    g.entries == 0
        || g.ways == 0
        || (g.entries.is_multiple_of(g.ways) && (g.entries / g.ways).is_power_of_two())
}

pub(crate) fn geometry() -> impl Strategy<Value = Geometry> {
    (
        prop::sample::select(vec![0usize, 1, 2, 4, 16, 64]),
        prop::sample::select(vec![0usize, 1, 2, 4]),
        prop_oneof![Just(Replacement::Lru), Just(Replacement::Fifo)],
        prop::sample::select(vec![0usize, 1, 4, 16]),
    )
        .prop_map(|(entries, ways, replacement, walk_cache)| Geometry {
            entries,
            ways,
            replacement,
            walk_cache,
        })
        .prop_filter(
            "the IOTLB needs a power-of-two number of sets",
            valid_geometry,
        )
}

pub(crate) fn levels() -> impl Strategy<Value = Levels> {
    prop_oneof![Just(Levels::Three), Just(Levels::Four), Just(Levels::Five)]
}

/// The `i`-th requester of a platform: distinct for `i < 8`, spread over
/// buses, devices and functions.
pub(crate) fn requester(i: usize) -> RequesterId {
    RequesterId::new((i % 3 * 17) as u8, ((i * 7 + 1) % 32) as u8, (i % 8) as u8).unwrap()
}

pub(crate) fn leaf_flags(writable: bool) -> PteFlags {
    if writable {
        PteFlags::RW
    } else {
        PteFlags::empty()
    }
}

/// What a device sees of a fault (its cost is left out: caches change it).
pub(crate) fn seen(f: DmaFault) -> (u64, AccessKind, FaultReason) {
    (f.addr.raw(), f.access, f.reason)
}

/// Empties the fault log, returning what it held.
pub(crate) fn drain_faults(iommu: &mut Iommu) -> Vec<FaultRecord> {
    std::iter::from_fn(|| iommu.faults_mut().pop()).collect()
}

//! Pieces shared by the IOMMU's property tests on random platforms
//! (`isolation.rs` and `transparency.rs`): page sizes, IOTLB and walk-cache
//! geometries, requesters, and what a device sees of faults.

use iovirt_core::{AccessKind, DmaFault, FaultReason};
use iovirt_iommu::{FaultRecord, Iommu, IommuConfig, IotlbConfig, Replacement, RequesterId};
use iovirt_paging::{Levels, PteFlags};
use proptest::prelude::*;

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

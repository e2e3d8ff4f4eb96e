//! What the IOMMU counts.

use iovirt_core::{Counter, FaultReason, Stats};
use serde::Serialize;

use crate::iotlb::IotlbStats;
use crate::walk_cache::WalkCacheStats;

/// Faults by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FaultCounts {
    /// No context for the requester, or its domain does not exist.
    pub context_not_present: Counter,
    /// Input address beyond the translated width (or non-canonical).
    pub address_beyond_width: Counter,
    /// A table entry not present.
    pub not_present: Counter,
    /// A write to a read-only page.
    pub write_denied: Counter,
    /// A read without read permission.
    pub read_denied: Counter,
    /// A user request to a supervisor page (first stage).
    pub privilege_denied: Counter,
    /// An execute request to a no-execute page.
    pub execute_denied: Counter,
    /// A reserved bit set in a table entry.
    pub reserved_bit: Counter,
    /// A table outside memory.
    pub table_outside_memory: Counter,
    /// A translated (or pass-through) address outside memory.
    pub outside_memory: Counter,
    /// A PASID the requester may not use.
    pub invalid_pasid: Counter,
    /// A first-stage fault (the detail is in the fault record).
    pub first_stage: Counter,
}

impl FaultCounts {
    pub(crate) fn count(&mut self, reason: FaultReason) {
        let c = match reason {
            FaultReason::ContextNotPresent => &mut self.context_not_present,
            FaultReason::AddressBeyondWidth => &mut self.address_beyond_width,
            FaultReason::NotPresent => &mut self.not_present,
            FaultReason::WriteDenied => &mut self.write_denied,
            FaultReason::ReadDenied => &mut self.read_denied,
            FaultReason::PrivilegeDenied => &mut self.privilege_denied,
            FaultReason::ExecuteDenied => &mut self.execute_denied,
            FaultReason::ReservedBit => &mut self.reserved_bit,
            FaultReason::TableOutsideMemory => &mut self.table_outside_memory,
            FaultReason::InvalidPasid => &mut self.invalid_pasid,
            FaultReason::FirstStage => &mut self.first_stage,
            _ => &mut self.outside_memory,
        };
        c.inc();
    }

    /// Faults of every reason.
    pub fn total(&self) -> u64 {
        [
            self.context_not_present,
            self.address_beyond_width,
            self.not_present,
            self.write_denied,
            self.read_denied,
            self.privilege_denied,
            self.execute_denied,
            self.reserved_bit,
            self.table_outside_memory,
            self.outside_memory,
            self.invalid_pasid,
            self.first_stage,
        ]
        .iter()
        .map(|c| c.get())
        .sum()
    }
}

/// Invalidations by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct InvalidationCounts {
    /// Global.
    pub global: Counter,
    /// Domain-selective.
    pub domain: Counter,
    /// Page-selective within a domain.
    pub page: Counter,
    /// PASID-selective.
    pub pasid: Counter,
    /// Page-selective within a PASID.
    pub pasid_page: Counter,
    /// Context (per requester).
    pub context: Counter,
    /// GVMI-selective and GVMI page-selective.
    pub gvmi: Counter,
    /// Wait descriptors completed by the invalidation queue.
    pub wait: Counter,
}

/// Every IOMMU counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IommuStats {
    /// Translations asked for (one per page a DMA touches, one per prefetch).
    pub translations: Counter,
    /// IOTLB lookups that hit with sufficient permissions.
    pub iotlb_hits: Counter,
    /// IOTLB lookups that missed (or hit without the permission needed).
    pub iotlb_misses: Counter,
    /// Page walks.
    pub walks: Counter,
    /// Table entries read by walks.
    pub table_reads: Counter,
    /// Prefetches asked for.
    pub prefetches: Counter,
    /// Prefetches whose translation was already cached.
    pub prefetch_redundant: Counter,
    /// Bytes moved by DMA.
    pub dma_bytes: Counter,
    /// Faults by reason.
    pub faults: FaultCounts,
    /// Invalidations by kind.
    pub invalidations: InvalidationCounts,
    /// The IOTLB's own counters (fills, evictions, prefetch used/wasted).
    pub iotlb: IotlbStats,
    /// The walk cache's counters.
    pub walk_cache: WalkCacheStats,
}

impl Stats for IommuStats {}

//! The cost model: what an operation costs in virtual time.
//!
//! Devices do not compute time themselves. Each operation returns a [`Cost`]
//! (IOTLB hits and misses, page-table reads, bytes moved) and the platform
//! turns it into a [`SimDuration`] with a [`CostModel`]. The seeds' claims (a
//! prefetch takes the walk off the critical path, page flipping removes the
//! copy) are claims about these counts, so they hold whatever the constants.

use core::ops::{Add, AddAssign};

use serde::{Deserialize, Serialize};

use crate::time::SimDuration;

/// Bytes of Ethernet framing on the wire that are not in the frame: preamble
/// and start delimiter (8) plus the minimum inter-frame gap (12).
pub const ETHERNET_WIRE_OVERHEAD: u64 = 20;

/// Latencies and bandwidths of the simulated machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CostModel {
    /// One DRAM access, ns. Default 90: load-to-use latency of a current x86
    /// server is 80-100 ns; the midpoint.
    pub memory_access_ns: u64,
    /// One IOTLB lookup, hit or miss, ns. Default 2: a well-known architecture
    /// simulator's SMMU model charges its main TLB 3 cycles, about 2 ns at 1.5 GHz.
    pub iotlb_lookup_ns: u64,
    /// Fixed work per page-table level on top of the memory access, ns.
    /// Default 1: the same SMMU model charges each table read memory latency
    /// plus 1 cycle.
    pub walk_level_ns: u64,
    /// Copy cost, picoseconds per byte. Default 100 (10 GB/s): one core's
    /// `memcpy` bandwidth out of cache on a DDR4 server.
    pub copy_ps_per_byte: u64,
    /// One-way wire latency of a link, ns. Default 500: 100 m of cable at
    /// 5 ns/m.
    pub wire_latency_ns: u64,
    /// Link bandwidth, bits per second. Default 10 Gb/s (10GBASE-R).
    pub wire_bits_per_sec: u64,
    /// Service time of a minor page fault (page present elsewhere in memory),
    /// ns. Default 4 000: software fault handling for NICs without ODP costs
    /// 3.5-5.7 us per minor fault.
    pub minor_fault_ns: u64,
    /// Service time of a major page fault (page swapped out), ns. Default
    /// 60 000: the same measurement gives about 60 us per major fault.
    pub major_fault_ns: u64,
    /// One synchronous page-selective IOTLB invalidation (descriptor, wait
    /// descriptor, completion), ns. Default 1 000: an estimate, not a
    /// measurement; published figures for VT-d's queued invalidation are
    /// on the order of a few thousand cycles, about 1 us.
    pub iotlb_invalidation_ns: u64,
}

impl Default for CostModel {
    fn default() -> Self {
        CostModel {
            memory_access_ns: 90,
            iotlb_lookup_ns: 2,
            walk_level_ns: 1,
            copy_ps_per_byte: 100,
            wire_latency_ns: 500,
            wire_bits_per_sec: 10_000_000_000,
            minor_fault_ns: 4_000,
            major_fault_ns: 60_000,
            iotlb_invalidation_ns: 1_000,
        }
    }
}

impl CostModel {
    /// Virtual time of `cost`.
    pub fn time(&self, cost: &Cost) -> SimDuration {
        let lookups = u64::from(cost.iotlb_hits) + u64::from(cost.iotlb_misses);
        let walk = u64::from(cost.table_reads)
            .saturating_mul(self.memory_access_ns.saturating_add(self.walk_level_ns));
        let copy_ps = u128::from(cost.bytes) * u128::from(self.copy_ps_per_byte);
        let copy_ns = u64::try_from(copy_ps.div_ceil(1_000)).unwrap_or(u64::MAX);
        SimDuration::from_nanos(
            lookups
                .saturating_mul(self.iotlb_lookup_ns)
                .saturating_add(walk)
                .saturating_add(copy_ns),
        )
    }

    /// Time from the first bit of an Ethernet frame of `frame_bytes` (FCS
    /// included) leaving the sender to its last bit arriving: serialisation
    /// with preamble and inter-frame gap, plus the wire latency.
    pub fn wire_time(&self, frame_bytes: u64) -> SimDuration {
        let bits = u128::from(frame_bytes.saturating_add(ETHERNET_WIRE_OVERHEAD)) * 8;
        let ns = (bits * 1_000_000_000).div_ceil(u128::from(self.wire_bits_per_sec.max(1)));
        SimDuration::from_nanos(
            u64::try_from(ns)
                .unwrap_or(u64::MAX)
                .saturating_add(self.wire_latency_ns),
        )
    }

    /// Time to copy (or clear) `bytes` bytes.
    pub fn copy_time(&self, bytes: u64) -> SimDuration {
        self.time(&Cost {
            bytes,
            ..Cost::ZERO
        })
    }

    /// Service time of a page fault.
    pub fn fault_time(&self, major: bool) -> SimDuration {
        SimDuration::from_nanos(if major {
            self.major_fault_ns
        } else {
            self.minor_fault_ns
        })
    }
}

/// What one operation cost, in countable events. Devices return it from
/// every DMA; callers add costs up and convert them with [`CostModel::time`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cost {
    /// IOTLB lookups that hit.
    pub iotlb_hits: u32,
    /// IOTLB lookups that missed (each followed by a walk).
    pub iotlb_misses: u32,
    /// Page-table entries read from memory by walks.
    pub table_reads: u32,
    /// Data bytes moved.
    pub bytes: u64,
}

impl Cost {
    /// Nothing at all.
    pub const ZERO: Cost = Cost {
        iotlb_hits: 0,
        iotlb_misses: 0,
        table_reads: 0,
        bytes: 0,
    };

    /// A transfer of `bytes` with no translation (IOMMU off).
    pub const fn bytes(bytes: u64) -> Cost {
        Cost {
            iotlb_hits: 0,
            iotlb_misses: 0,
            table_reads: 0,
            bytes,
        }
    }
}

impl Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost {
            iotlb_hits: self.iotlb_hits.saturating_add(o.iotlb_hits),
            iotlb_misses: self.iotlb_misses.saturating_add(o.iotlb_misses),
            table_reads: self.table_reads.saturating_add(o.table_reads),
            bytes: self.bytes.saturating_add(o.bytes),
        }
    }
}

impl AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        *self = *self + o;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_of_a_miss_with_a_four_level_walk() {
        let m = CostModel::default();
        let hit = Cost {
            iotlb_hits: 1,
            bytes: 64,
            ..Cost::ZERO
        };
        // 2 ns lookup + 64 B * 0.1 ns = 6.4 -> 7 ns (rounded up).
        assert_eq!(m.time(&hit).as_nanos(), 2 + 7);
        let miss = Cost {
            iotlb_misses: 1,
            table_reads: 4,
            bytes: 64,
            ..Cost::ZERO
        };
        assert_eq!(m.time(&miss).as_nanos(), 2 + 4 * 91 + 7);
        assert_eq!((hit + miss).iotlb_hits, 1);
        let mut sum = Cost::bytes(10);
        sum += Cost::bytes(5);
        assert_eq!(sum.bytes, 15);
    }

    #[test]
    fn wire_time_of_a_minimum_frame_at_10g() {
        let m = CostModel::default();
        // 64 + 20 bytes = 672 bits = 67.2 ns -> 68 ns, plus 500 ns.
        assert_eq!(m.wire_time(64).as_nanos(), 568);
        let zero_bw = CostModel {
            wire_bits_per_sec: 0,
            ..m
        };
        assert!(zero_bw.wire_time(u64::MAX).as_nanos() > 0); // no division by zero, no panic
    }

    #[test]
    fn extreme_values_saturate() {
        let m = CostModel {
            copy_ps_per_byte: u64::MAX,
            ..CostModel::default()
        };
        assert_eq!(m.time(&Cost::bytes(u64::MAX)).as_nanos(), u64::MAX);
        assert_eq!(m.fault_time(true).as_nanos(), 60_000);
        assert_eq!(m.fault_time(false).as_nanos(), 4_000);
    }

    #[test]
    fn partial_config_keeps_defaults() {
        let m: CostModel = serde_json::from_str(r#"{"memory_access_ns": 120}"#).unwrap();
        assert_eq!(m.memory_access_ns, 120);
        assert_eq!(m.iotlb_lookup_ns, 2);
        assert!(serde_json::from_str::<CostModel>(r#"{"memroy_access_ns": 1}"#).is_err());
    }
}

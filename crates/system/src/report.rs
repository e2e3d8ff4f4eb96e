//! The report: a table a person can read, the headline figure first, and
//! the same data as JSON for machines.

use core::fmt::Write as _;

use iovirt_core::CostModel;
use serde::Serialize;

use crate::iotlb_prefetch::{Params, Row};

/// Everything one `iotlb-prefetch` run produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrefetchReport {
    /// The scenario's name.
    pub scenario: &'static str,
    /// The seed of the random choices.
    pub seed: u64,
    /// What was run.
    pub params: Params,
    /// The cost model that turned counts into time.
    pub cost_model: CostModel,
    /// One row per configuration.
    pub rows: Vec<Row>,
}

impl PrefetchReport {
    /// The table: one line per configuration, grouped by IOTLB size and
    /// placement, baseline first.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "iotlb-prefetch: seed 000's prefetchers, {} frames of {} B from VM A to VM B",
            self.params.frames, self.params.frame_len
        );
        let _ = writeln!(
            out,
            "headline: IOTLB misses on VM B's receive critical path per frame\n"
        );
        let _ = writeln!(
            out,
            "{:>6}  {:<10}  {:<8}  {:>15}  {:>16}  {:>18}  {:>16}",
            "iotlb",
            "placement",
            "prefetch",
            "misses/frame",
            "table reads/frm",
            "translation ns/frm",
            "prefetches/frame"
        );
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{:>6}  {:<10}  {:<8}  {:>15.3}  {:>16.3}  {:>18.1}  {:>16.2}",
                r.iotlb_entries,
                format!("{:?}", r.placement).to_lowercase(),
                format!("{:?}", r.prefetch).to_lowercase(),
                r.critical_misses_per_frame,
                r.table_reads_per_frame,
                r.translation_ns_per_frame,
                r.prefetches_per_frame
            );
        }
        out
    }
}

//! The report: a table a person can read, the headline figure first, and
//! the same data as JSON for machines.

use core::fmt::Write as _;

use iovirt_core::CostModel;
use serde::Serialize;

use crate::{crossover, custom, demux, iotlb_prefetch, rdma_odp};

/// Everything one scenario's run produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report<P, R> {
    /// The scenario's name.
    pub scenario: &'static str,
    /// The seed of the random choices.
    pub seed: u64,
    /// What was run.
    pub params: P,
    /// The cost model that turned counts into time.
    pub cost_model: CostModel,
    /// One row per configuration.
    pub rows: Vec<R>,
}

/// The `iotlb-prefetch` report.
pub type PrefetchReport = Report<iotlb_prefetch::Params, iotlb_prefetch::Row>;

/// The `demux` report.
pub type DemuxReport = Report<demux::Params, demux::Row>;

/// The `crossover` report.
pub type CrossoverReport = Report<crossover::Params, crossover::Row>;

/// The `rdma-odp` report.
pub type RdmaOdpReport = Report<rdma_odp::Params, rdma_odp::Row>;

impl RdmaOdpReport {
    /// The table: one line per mode, the pinned baseline first.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let p = &self.params;
        let _ = writeln!(
            out,
            "rdma-odp: seed 001, two hosts, {} VMs each x {} RC QPs, {} RDMA WRITEs of {} B per QP; \
             VM 0's memory faults, the others' never",
            p.vms, p.qps_per_vm, p.messages, p.message_len
        );
        let _ = writeln!(
            out,
            "headline: the other QPs' throughput vs the pinned baseline (goal >= 0.95); fatal errors must be 0\n"
        );
        let _ = writeln!(
            out,
            "{:<15}  {:>9}  {:>9}  {:>9}  {:>7}  {:>7}  {:>7}  {:>8}  {:>8}  {:>6}  {:>6}  {:>9}  {:>9}",
            "mode",
            "others/bl",
            "others Gb",
            "fault Gb",
            "g-flt",
            "h-flt",
            "RNR",
            "dropped",
            "resent",
            "held",
            "fatal",
            "flt->res",
            "elapsed"
        );
        for r in &self.rows {
            let mode = serde_json::to_value(r.mode)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{:<15}  {:>9.3}  {:>9.2}  {:>9.2}  {:>7}  {:>7}  {:>7}  {:>8}  {:>8}  {:>6}  {:>6}  {:>7.0}ns  {:>7.2}ms",
                mode,
                r.others_vs_baseline,
                r.others_gbps,
                r.faulting_gbps,
                r.guest_faults,
                r.host_faults,
                r.rnr_naks,
                r.dropped_packets,
                r.retransmitted_packets,
                r.held_packets,
                r.fatal_errors + r.corrupted_messages,
                r.fault_to_resume_ns,
                r.elapsed_ns as f64 / 1e6
            );
        }
        out
    }
}

/// The `custom` report: the flows, then what the host did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomReport {
    /// The scenario's name.
    pub scenario: &'static str,
    /// What was run.
    pub params: custom::Params,
    /// Per flow and for the host.
    pub outcome: custom::Outcome,
}

impl CustomReport {
    /// The table: one line per flow, then each host's main counters.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let p = &self.params;
        match &p.hosts {
            None => {
                let _ = writeln!(
                    out,
                    "custom: {} VMs, {} flows, demux {:?}, VM-to-VM {:?}, {} host frames",
                    p.vms.len(),
                    p.flows.len(),
                    p.demux,
                    p.vm_to_vm,
                    p.data_frames
                );
            }
            Some(hosts) => {
                let _ = writeln!(
                    out,
                    "custom: {} hosts joined by a cable, {} flows, {}",
                    hosts.len(),
                    p.flows.len(),
                    match p.pacing {
                        crate::platform::Pacing::Lockstep => "lock-step",
                        crate::platform::Pacing::LineRate => "line rate",
                    }
                );
                for (h, host) in hosts.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "  h{h}: {} VMs, demux {:?}, VM-to-VM {:?}, {} host frames",
                        host.vms.len(),
                        host.demux,
                        host.vm_to_vm,
                        host.data_frames
                    );
                }
            }
        }
        let _ = writeln!(out, "headline: frames delivered byte-exact per flow\n");
        let flows = self.outcome.flows();
        // Latency is measured on the multi-host form's event loop only.
        let timed = flows.iter().any(|r| r.latency_ns_mean.is_some());
        let width = flows.iter().map(|r| r.flow.len()).fold(16, usize::max);
        let _ = write!(
            out,
            "{:<width$}  {:>8}  {:>10}  {:>9}  {:>6}",
            "flow", "sent", "delivered", "corrupted", "lost"
        );
        if timed {
            let _ = write!(out, "  {:>9}  {:>9}", "lat ns", "max ns");
        }
        out.push('\n');
        for r in flows {
            let _ = write!(
                out,
                "{:<width$}  {:>8}  {:>10}  {:>9}  {:>6}",
                r.flow, r.sent, r.delivered, r.corrupted, r.lost
            );
            if let (Some(mean), Some(max)) = (r.latency_ns_mean, r.latency_ns_max) {
                let _ = write!(out, "  {mean:>9.0}  {max:>9}");
            }
            out.push('\n');
        }
        match &self.outcome {
            custom::Outcome::Host(o) => {
                let (n, h) = (&o.network, &o.host);
                let _ = writeln!(
                    out,
                    "\nhost: {} B copied, {} flips, {} crossovers, {} physical-NIC frames out, {} in; \
                     {} swap-outs, {} invalidations, {} unexpected frames",
                    n.bytes_copied.get(),
                    n.flips.get(),
                    n.crossovers.get(),
                    n.uplink_tx_frames.get(),
                    n.uplink_rx_frames.get(),
                    h.swap_outs.get(),
                    h.invalidations.get(),
                    o.unexpected
                );
            }
            custom::Outcome::Hosts(o) => {
                out.push('\n');
                for (i, c) in o.hosts.iter().enumerate() {
                    let (n, h) = (&c.network, &c.host);
                    let _ = writeln!(
                        out,
                        "h{i}: {} B copied, {} flips, {} crossovers, {} switched locally, \
                         {} physical-NIC frames out, {} in, {} on its cable out; \
                         {} swap-outs, {} invalidations",
                        n.bytes_copied.get(),
                        n.flips.get(),
                        n.crossovers.get(),
                        n.local_frames.get(),
                        n.uplink_tx_frames.get(),
                        n.uplink_rx_frames.get(),
                        c.cable_out.frames.get(),
                        h.swap_outs.get(),
                        h.invalidations.get()
                    );
                }
                let _ = writeln!(out, "{} unexpected frames", o.unexpected);
            }
        }
        out
    }
}

impl CrossoverReport {
    /// The table: one line per run, grouped by frame length, the baseline
    /// (loopback through the physical NIC) first.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "crossover: seed 003, two VMs exchange {} frames each way per run",
            self.params.frames
        );
        let _ = writeln!(
            out,
            "headline: frames on the physical NIC per VM-to-VM frame\n"
        );
        let _ = writeln!(
            out,
            "{:>5}  {:<9}  {:>8}  {:>6}  {:>12}  {:>10}  {:>9}  {:>9}  {:>12}  {:>9}  {:>9}",
            "len",
            "vm-to-vm",
            "frames",
            "lost",
            "NIC frm/frm",
            "copies/fr",
            "remaps/fr",
            "invals/fr",
            "path ns/fr",
            "corrupted",
            "lat ns"
        );
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{:>5}  {:<9}  {:>8}  {:>6}  {:>12.3}  {:>10.3}  {:>9.3}  {:>9.3}  {:>12.1}  {:>9}  {:>9.0}",
                r.frame_len,
                format!("{:?}", r.vm_to_vm).to_lowercase(),
                r.delivery.frames,
                r.delivery.lost,
                r.nic_frames_per_frame,
                r.copies_per_frame,
                r.remaps_per_frame,
                r.invalidations_per_frame,
                r.path_ns_per_frame,
                r.delivery.corrupted,
                r.delivery.latency_ns_mean
            );
        }
        out
    }
}

impl DemuxReport {
    /// The table: one line per run, grouped by VM count and frame length,
    /// the baseline (copy) first.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "demux: seed 002's demultiplexers, {} frames from the wire per run",
            self.params.frames
        );
        let _ = writeln!(out, "headline: bytes the host copies per frame\n");
        let _ = writeln!(
            out,
            "{:>3}  {:>5}  {:<5}  {:>8}  {:>6}  {:>11}  {:>8}  {:>9}  {:>8}  {:>11}  {:>12}  {:>9}  {:>9}",
            "vms",
            "len",
            "demux",
            "frames",
            "lost",
            "copied B/fr",
            "remaps/fr",
            "invals/fr",
            "zeroed/fr",
            "host ns/fr",
            "Mframes/vsec",
            "corrupted",
            "lat ns"
        );
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{:>3}  {:>5}  {:<5}  {:>8}  {:>6}  {:>11.1}  {:>8.3}  {:>9.3}  {:>8.3}  {:>11.1}  {:>12.3}  {:>9}  {:>9.0}",
                r.vms,
                r.frame_len,
                format!("{:?}", r.demux).to_lowercase(),
                r.delivery.frames,
                r.delivery.lost,
                r.bytes_copied_per_frame,
                r.remaps_per_frame,
                r.invalidations_per_frame,
                r.pages_zeroed_per_frame,
                r.host_ns_per_frame,
                r.frames_per_virtual_sec / 1e6,
                r.delivery.corrupted,
                r.delivery.latency_ns_mean
            );
        }
        out
    }
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

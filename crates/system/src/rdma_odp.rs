//! The `rdma-odp` scenario (seed 001, with seed 004's first abstract): two
//! hosts joined by a cable; RC QPs from several VMs on host 0 RDMA WRITE
//! into VMs on host 1. The destination memory of the first VM on host 1 is
//! pinned (the baseline) or on demand, with page faults in the guest stage
//! (MTT), the host stage (PA2MA, pages swapped out by the host), or both;
//! the other VMs' memory is always pinned. Same traffic in every row.
//!
//! The headline: the throughput of the QPs that did not fault, next to the
//! same QPs in the pinned baseline (seed 001: "service on other QPs by the
//! HCA is substantially unaffected"; the goal is 95% or more), with zero
//! fatal errors and no data lost.

use iovirt_core::{CostModel, SimTime};
use iovirt_drivers::{Placement, SendWr};
use iovirt_hca::HcaConfig;
use iovirt_hca::cqe::CqeStatus;
use iovirt_hca::mr::{Access, MrMode};
use iovirt_hca::qp::{PathMtu, QpType};
use iovirt_hca::wqe::{Remote, Sge, WqeFlags, WqeOpcode};
use serde::{Deserialize, Serialize};

use crate::link::LinkConfig;
use crate::platform::PlatformError;
use crate::rdma_sim::{
    AppPages, ConnectAttrs, QpEnd, RdmaFabric, RdmaHost, RdmaHostConfig, hca_err,
};

/// Frames a link holds (on the wire or waiting): the HCA sends only as the
/// cable takes them, as a real port's transmit scheduler does.
const LINK_QUEUE: usize = 8;

/// How the faulting VM's destination memory is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Pinned and resident: no faults (the baseline).
    Pinned,
    /// On demand: every page faults once in the guest stage (its MTT entry
    /// is filled by the VM's driver).
    OdpGuest,
    /// Pinned at stage 1, but the host swapped the pages out: every page
    /// faults once in the host stage (the VMM swaps it in).
    OdpHost,
    /// On demand and swapped out: every page faults in both stages.
    OdpBoth,
    /// Seed 004: as `odp-guest`, but the HCA holds the packet through a
    /// fault the host estimates as short instead of RNR NAKing.
    OdpGuestHold,
}

/// The scenario's parameters (the `[rdma_odp]` table of a config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// VMs on each host; VM 0 of host 1 is the one whose memory faults.
    pub vms: usize,
    /// RC QPs between each pair of VMs.
    pub qps_per_vm: usize,
    /// RDMA WRITEs each QP posts.
    pub messages: u32,
    /// Bytes per WRITE.
    pub message_len: u32,
    /// Path MTU in bytes (256, 512, 1024, 2048 or 4096).
    pub path_mtu: u32,
    /// The responders' RNR NAK timer code (seed 001's suspension time when
    /// the host gives no estimate; a floor otherwise).
    pub min_rnr_timer: u8,
    /// Seed 004's hold mode: faults estimated at or below this are held.
    pub hold_threshold_ns: u64,
    /// Seed 004's hold buffer, packets.
    pub hold_buffer_packets: usize,
    /// The rows to run.
    pub modes: Vec<Mode>,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            vms: 3,
            qps_per_vm: 2,
            messages: 32,
            message_len: 16_384,
            path_mtu: 4096,
            min_rnr_timer: 1,
            hold_threshold_ns: 5_000,
            hold_buffer_packets: 64,
            modes: vec![
                Mode::Pinned,
                Mode::OdpGuest,
                Mode::OdpHost,
                Mode::OdpBoth,
                Mode::OdpGuestHold,
            ],
        }
    }
}

impl Params {
    /// Checks the parameters, naming the field at fault.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(2..=16).contains(&self.vms) {
            return Err((
                "vms",
                format!(
                    "{} is not in 2..=16 (VM 0 faults, the others are the control)",
                    self.vms
                ),
            ));
        }
        if !(1..=8).contains(&self.qps_per_vm) {
            return Err(("qps_per_vm", format!("{} is not in 1..=8", self.qps_per_vm)));
        }
        if !(1..=64).contains(&self.messages) {
            return Err((
                "messages",
                format!(
                    "{} is not in 1..=64 (one send queue's worth)",
                    self.messages
                ),
            ));
        }
        if !(1..=(1 << 20)).contains(&self.message_len) {
            return Err((
                "message_len",
                format!("{} is not in 1..=1048576", self.message_len),
            ));
        }
        if mtu(self.path_mtu).is_none() {
            return Err((
                "path_mtu",
                format!("{} is not one of 256, 512, 1024, 2048, 4096", self.path_mtu),
            ));
        }
        if self.min_rnr_timer > 31 {
            return Err((
                "min_rnr_timer",
                format!("{} is not a 5-bit timer code", self.min_rnr_timer),
            ));
        }
        let region =
            u64::from(self.messages) * u64::from(self.message_len) * self.qps_per_vm as u64;
        if region > 64 << 20 {
            return Err((
                "message_len",
                "messages x message_len x qps_per_vm over 64 MiB per VM".into(),
            ));
        }
        if self.modes.is_empty() {
            return Err(("modes", "no mode to run".into()));
        }
        Ok(())
    }
}

fn mtu(bytes: u32) -> Option<PathMtu> {
    Some(match bytes {
        256 => PathMtu::Mtu256,
        512 => PathMtu::Mtu512,
        1024 => PathMtu::Mtu1024,
        2048 => PathMtu::Mtu2048,
        4096 => PathMtu::Mtu4096,
        _ => return None,
    })
}

/// One row: one mode on the scenario's traffic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The faulting VM's memory.
    pub mode: Mode,
    /// Headline: the QPs that did not fault, their throughput as a share
    /// of the same QPs' in the pinned baseline.
    pub others_vs_baseline: f64,
    /// Their throughput, Gb/s.
    pub others_gbps: f64,
    /// The faulting VM's QPs' throughput, Gb/s.
    pub faulting_gbps: f64,
    /// Page faults raised, guest stage.
    pub guest_faults: u64,
    /// Page faults raised, host stage.
    pub host_faults: u64,
    /// RNR NAKs the responders sent.
    pub rnr_naks: u64,
    /// Packets the responders dropped.
    pub dropped_packets: u64,
    /// Packets the requesters sent again.
    pub retransmitted_packets: u64,
    /// Packets held through short faults (seed 004).
    pub held_packets: u64,
    /// QPs in error plus completions in error: must be 0.
    pub fatal_errors: u64,
    /// Messages whose bytes did not arrive intact: must be 0.
    pub corrupted_messages: u64,
    /// Mean time from a fault to its resume, ns.
    pub fault_to_resume_ns: f64,
    /// Virtual time until the last completion, ns.
    pub elapsed_ns: u64,
}

/// What one run measured before the baseline comparison.
struct Run {
    row: Row,
    others_bytes: u64,
    others_ns: u64,
}

/// Runs every mode of `params`, handing every frame on the cable to `tap`.
pub fn run_tapped(
    params: &Params,
    cost: &CostModel,
    tap: &mut dyn FnMut(SimTime, &[u8]),
) -> Result<Vec<Row>, PlatformError> {
    params
        .validate()
        .map_err(|(field, reason)| PlatformError::Invalid {
            field: format!("rdma_odp.{field}"),
            reason,
        })?;
    let mut runs = Vec::new();
    for &mode in &params.modes {
        runs.push(run_mode(params, cost, mode, tap)?);
    }
    // The baseline is the pinned row, run if it was not asked for.
    let baseline = match runs.iter().find(|r| r.row.mode == Mode::Pinned) {
        Some(b) => (b.others_bytes, b.others_ns),
        None => {
            let b = run_mode(params, cost, Mode::Pinned, &mut |_, _| {})?;
            (b.others_bytes, b.others_ns)
        }
    };
    let base_rate = baseline.0 as f64 / baseline.1.max(1) as f64;
    Ok(runs
        .into_iter()
        .map(|mut r| {
            let rate = r.others_bytes as f64 / r.others_ns.max(1) as f64;
            r.row.others_vs_baseline = rate / base_rate;
            r.row
        })
        .collect())
}

/// Runs every mode without a capture.
pub fn run(params: &Params, cost: &CostModel) -> Result<Vec<Row>, PlatformError> {
    run_tapped(params, cost, &mut |_, _| {})
}

/// The byte at offset `i` of QP `q`'s message `m`: every message differs.
fn fill(q: usize, m: u32, i: usize) -> u8 {
    (i as u32)
        .wrapping_mul(13)
        .wrapping_add(m * 7)
        .wrapping_add(q as u32 * 101) as u8
}

fn run_mode(
    params: &Params,
    cost: &CostModel,
    mode: Mode,
    tap: &mut dyn FnMut(SimTime, &[u8]),
) -> Result<Run, PlatformError> {
    let hca = match mode {
        Mode::OdpGuestHold => HcaConfig {
            hold_threshold_ns: params.hold_threshold_ns,
            hold_buffer_packets: params.hold_buffer_packets,
            ..HcaConfig::default()
        },
        _ => HcaConfig::default(),
    };
    let per_qp_bytes = u64::from(params.messages) * u64::from(params.message_len);
    let vm_bytes = (per_qp_bytes * params.qps_per_vm as u64 + (8 << 20)).next_multiple_of(1 << 20);
    let config = RdmaHostConfig {
        data_frames: (vm_bytes / 4096) * params.vms as u64 * 2 + 1024,
        hca,
        ..RdmaHostConfig::default()
    };
    let mut built = Vec::with_capacity(2);
    for i in 0..2u8 {
        let mut h = RdmaHost::new(i, config, *cost)?;
        for _ in 0..params.vms {
            h.add_vm(vm_bytes, Placement::Contiguous)?;
        }
        built.push(h);
    }
    let [h0, h1]: [RdmaHost; 2] = built
        .try_into()
        .map_err(|_| PlatformError::Hca("two hosts".into()))?;
    let mut f = RdmaFabric::new([h0, h1], LinkConfig::from_cost(cost, LINK_QUEUE));
    let attrs = ConnectAttrs {
        mtu: mtu(params.path_mtu).unwrap_or(PathMtu::Mtu4096),
        min_rnr_timer: params.min_rnr_timer,
        timeout: 14,
        ..ConnectAttrs::default()
    };
    // Connections, buffers and the posts.
    let mut qps: Vec<(usize, QpEnd, QpEnd, u64, u64)> = Vec::new();
    for vm in 0..params.vms {
        let faulting = vm == 0;
        let dst_mode = match (faulting, mode) {
            (true, Mode::OdpGuest | Mode::OdpBoth | Mode::OdpGuestHold) => MrMode::OnDemand,
            _ => MrMode::Pinned,
        };
        for _ in 0..params.qps_per_vm {
            let (a, b) = f.connect_pair(vm, vm, QpType::Rc, 6, attrs)?;
            let idx = qps.len();
            let [h0, h1] = &mut f.hosts;
            let data: Vec<u8> = (0..per_qp_bytes as usize)
                .map(|i| {
                    fill(
                        idx,
                        (i / params.message_len as usize) as u32,
                        i % params.message_len as usize,
                    )
                })
                .collect();
            let src = h0.app_region(
                vm,
                a.pd,
                per_qp_bytes,
                Access::empty(),
                MrMode::Pinned,
                AppPages::Filled(&data),
            )?;
            let dst = h1.app_region(
                vm,
                b.pd,
                per_qp_bytes,
                Access::LOCAL_WRITE | Access::REMOTE_WRITE,
                dst_mode,
                AppPages::Touched,
            )?;
            if faulting && matches!(mode, Mode::OdpHost | Mode::OdpBoth) {
                // The host swaps the destination pages out before the run.
                let mut page = dst.0;
                while page < dst.0 + per_qp_bytes {
                    let gpa = h1.guests.get(vm).and_then(|g| g.driver.app_translate(page));
                    if let Some(gpa) = gpa {
                        h1.swap_out(vm, gpa)?;
                    }
                    page += 4096;
                }
            }
            for m in 0..params.messages {
                let off = u64::from(m) * u64::from(params.message_len);
                let wr = SendWr {
                    wr_id: u64::from(m),
                    opcode: WqeOpcode::RdmaWrite,
                    flags: WqeFlags::SIGNALED,
                    imm: 0,
                    remote: Remote::Rdma {
                        va: dst.0 + off,
                        rkey: dst.1,
                    },
                    sges: [
                        Some(Sge {
                            addr: src.0 + off,
                            length: params.message_len,
                            lkey: src.1,
                        }),
                        None,
                    ],
                };
                h0.with_guest(vm, |d, bus| d.post_send(bus, a.qpn, &wr))
                    .ok_or_else(|| PlatformError::Hca("no guest".into()))?
                    .map_err(hca_err("post_send"))?;
            }
            qps.push((vm, a, b, dst.0, 0));
        }
    }
    let start = f.now;
    f.run_until(SimTime::from_nanos(10_000_000_000), tap);
    // Per QP: its successful completions and the last one's time.
    let [h0, h1] = &mut f.hosts;
    let mut fatal = h0.stats.qp_fatal + h1.stats.qp_fatal;
    let mut tally: Vec<(u32, SimTime)> = vec![(0, start); qps.len()];
    for &(t, _, wc) in &h0.completions {
        let slot = qps
            .iter()
            .position(|x| x.1.qpn == wc.qpn)
            .and_then(|i| tally.get_mut(i));
        match slot {
            Some(s) if wc.status == CqeStatus::Success => *s = (s.0 + 1, s.1.max(t)),
            Some(_) => fatal += 1,
            None => {}
        }
    }
    // Every byte where it belongs, every message completed.
    let mut corrupted = 0u64;
    let mut got = vec![0u8; params.message_len as usize];
    for (i, (&(vm, _, _, dst, _), &(done, _))) in qps.iter().zip(&tally).enumerate() {
        for m in 0..params.messages {
            let at = dst + u64::from(m) * u64::from(params.message_len);
            h1.with_guest(vm, |d, bus| d.app_read(bus, at, &mut got));
            let ok = got.iter().enumerate().all(|(k, &b)| b == fill(i, m, k));
            corrupted += u64::from(!ok);
        }
        corrupted += u64::from(params.messages - done.min(params.messages));
    }
    let span = |faulting: bool| -> (u64, u64) {
        let mine = qps
            .iter()
            .zip(&tally)
            .filter(|(q, _)| (q.0 == 0) == faulting);
        let (n, end) = mine.fold((0u64, start), |(n, e), (_, &(_, t))| (n + 1, e.max(t)));
        (n * per_qp_bytes, end.saturating_since(start).as_nanos())
    };
    let (others_bytes, others_ns) = span(false);
    let (f_bytes, f_ns) = span(true);
    let gbps = |b: u64, ns: u64| {
        if ns == 0 {
            0.0
        } else {
            b as f64 * 8.0 / ns as f64
        }
    };
    let s1 = h1.hca.stats().clone();
    let s0 = h0.hca.stats().clone();
    let (mut waits, mut faults) = (0u64, 0u64);
    for &(_, _, b, _, _) in &qps {
        if let Some(q) = h1.hca.qp_stats(b.qpn) {
            waits += q.fault_wait_ns.get();
            faults += q.page_faults.get();
        }
    }
    let elapsed = tally
        .iter()
        .map(|&(_, t)| t)
        .max()
        .unwrap_or(start)
        .saturating_since(start)
        .as_nanos();
    Ok(Run {
        row: Row {
            mode,
            others_vs_baseline: 1.0,
            others_gbps: gbps(others_bytes, others_ns),
            faulting_gbps: gbps(f_bytes, f_ns),
            guest_faults: s1.guest_page_faults.get(),
            host_faults: s1.host_page_faults.get(),
            rnr_naks: s1.rnr_naks_sent.get(),
            dropped_packets: s1.rx_dropped.get(),
            retransmitted_packets: s0.retransmitted_packets.get(),
            held_packets: s1.held_packets.get(),
            fatal_errors: fatal + s0.qp_errors.get() + s1.qp_errors.get(),
            corrupted_messages: corrupted,
            fault_to_resume_ns: if faults == 0 {
                0.0
            } else {
                waits as f64 / faults as f64
            },
            elapsed_ns: elapsed,
        },
        others_bytes,
        others_ns,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn small() -> Params {
        Params {
            vms: 2,
            qps_per_vm: 2,
            messages: 8,
            message_len: 8192,
            ..Params::default()
        }
    }

    #[test]
    fn seed_001_claims_hold_on_the_same_traffic() {
        let rows = run(&small(), &CostModel::default()).unwrap();
        assert_eq!(rows.len(), 5);
        let by = |m: Mode| rows.iter().find(|r| r.mode == m).unwrap();
        for r in &rows {
            assert_eq!((r.fatal_errors, r.corrupted_messages), (0, 0), "{r:?}");
            assert!(r.others_vs_baseline >= 0.95, "{r:?}");
        }
        let pinned = by(Mode::Pinned);
        assert_eq!(
            (pinned.guest_faults, pinned.host_faults, pinned.rnr_naks),
            (0, 0, 0)
        );
        // 2 QPs x 8 messages x 2 pages of the faulting VM.
        let guest = by(Mode::OdpGuest);
        assert_eq!((guest.guest_faults, guest.host_faults), (32, 0));
        assert!(guest.rnr_naks >= 32);
        let host = by(Mode::OdpHost);
        assert_eq!((host.guest_faults, host.host_faults), (0, 32));
        assert_eq!(
            host.fault_to_resume_ns,
            CostModel::default().major_fault_ns as f64
        );
        let both = by(Mode::OdpBoth);
        assert_eq!((both.guest_faults, both.host_faults), (32, 32));
        // Seed 004: short faults held, nothing NAKed or resent.
        let hold = by(Mode::OdpGuestHold);
        assert_eq!(
            (hold.guest_faults, hold.rnr_naks, hold.retransmitted_packets),
            (32, 0, 0)
        );
        assert!(hold.faulting_gbps > guest.faulting_gbps);
    }

    #[test]
    fn parameters_are_checked_by_name() {
        let bad = Params {
            path_mtu: 3000,
            ..Params::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "path_mtu");
        let bad = Params {
            vms: 1,
            ..Params::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "vms");
        let err = run(
            &Params {
                modes: vec![],
                ..Params::default()
            },
            &CostModel::default(),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "`rdma_odp.modes`: no mode to run");
    }
}

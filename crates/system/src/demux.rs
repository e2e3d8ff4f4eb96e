//! The `demux` scenario (seed 002): frames from the wire reach N VMs
//! through the host's physical NIC, demultiplexed by copy (the baseline) or
//! by page flipping (the seed's enhanced demultiplexer), on the same
//! traffic. The headline is the bytes the host copies per frame; the seed's
//! technique should bring it to 0, and the report shows what it pays
//! instead: remaps, invalidations and cleared pages.

use std::collections::VecDeque;

use iovirt_core::{CostModel, RegisterAccess, SimDuration, SimTime};
use iovirt_iommu::RequesterId;
use iovirt_nic::regs;
use iovirt_vmm::{DemuxMode, NetworkConfig, VmToVm};
use serde::{Deserialize, Serialize};

use crate::config::{check_frame_lens, check_frames, check_interrupts};
use crate::host_sim::{HostSim, VmShape, build_host, host_work_ns};
use crate::link::{Link, LinkConfig};
use crate::platform::{Delivery, Pacing, PlatformError, Tally, frame};

/// The scenario's parameters (the `[demux]` table of a config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// Frames from the wire per run.
    pub frames: u32,
    /// Frame lengths to try, in bytes.
    pub frame_lens: Vec<usize>,
    /// VM counts to try.
    pub vms: Vec<u16>,
    /// Every n-th frame is a broadcast (to every VM); 0 for none.
    pub broadcast_every: u32,
    /// Frames between two receive passes of the guests' drivers (as
    /// interrupt moderation would batch them); lock-step pacing only.
    pub batch: u32,
    /// Lock-step, or line rate with the guests receiving in their
    /// interrupt handlers.
    pub pacing: Pacing,
    /// Line rate: from an interrupt's injection to the guest's handler, ns.
    pub irq_latency_ns: u64,
    /// Line rate: the host's work (copies, clears, page-table writes,
    /// invalidations) takes CPU time under the cost model, and the guests'
    /// interrupts wait for it.
    pub charge_host_work: bool,
    /// Line rate: every vNIC's ITR (interrupts at least `itr` x 256 ns
    /// apart; 0 for none).
    pub itr: u32,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            frames: 2000,
            frame_lens: vec![64, 1514],
            vms: vec![2, 4],
            broadcast_every: 0,
            batch: 8,
            pacing: Pacing::Lockstep,
            irq_latency_ns: 2_000,
            charge_host_work: true,
            itr: 0,
        }
    }
}

/// One run's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Copy (baseline) or page flipping (seed 002).
    pub demux: DemuxMode,
    /// VMs on the host.
    pub vms: u16,
    /// Frame length.
    pub frame_len: usize,
    /// Frames received, corrupted and lost, and their latency.
    #[serde(flatten)]
    pub delivery: Delivery,
    /// Headline: bytes the host copied per frame received.
    pub bytes_copied_per_frame: f64,
    /// Pages remapped into a VM per frame.
    pub remaps_per_frame: f64,
    /// IOTLB invalidations per frame.
    pub invalidations_per_frame: f64,
    /// 4 KiB frames cleared per frame.
    pub pages_zeroed_per_frame: f64,
    /// The host's demultiplexing work per frame in virtual time (copies,
    /// clears, page-table writes, invalidations), ns.
    pub host_ns_per_frame: f64,
    /// Frames one host core can demultiplex per second of virtual time.
    pub frames_per_virtual_sec: f64,
}

/// Runs both demultiplexers for every VM count and frame length.
pub fn run(params: &Params, cost: &CostModel, seed: u64) -> Result<Vec<Row>, PlatformError> {
    run_tapped(params, cost, seed, &mut |_, _| {})
}

/// Like [`run`], showing every frame that arrives from the wire to `tap`.
pub fn run_tapped(
    params: &Params,
    cost: &CostModel,
    seed: u64,
    tap: &mut dyn FnMut(SimTime, &[u8]),
) -> Result<Vec<Row>, PlatformError> {
    let mut rows = Vec::new();
    for &vms in &params.vms {
        for &len in &params.frame_lens {
            for demux in [DemuxMode::Copy, DemuxMode::Flip] {
                rows.push(run_one(params, cost, seed, demux, vms, len, tap)?);
            }
        }
    }
    Ok(rows)
}

/// The MAC address of VM `i`.
fn vm_mac(i: u16) -> [u8; 6] {
    let [hi, lo] = i.to_be_bytes();
    [0x52, 0x54, 0, 1, hi, lo]
}

/// The sender on the other end of the wire.
const PEER_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0xfe];
const UPLINK_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x01];
const VM_MEMORY: u64 = 4 << 20;
const RX_DESCRIPTORS: u16 = 64;

/// A small deterministic generator (SplitMix64) for the destinations.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn run_one(
    params: &Params,
    cost: &CostModel,
    seed: u64,
    demux: DemuxMode,
    vms: u16,
    len: usize,
    tap: &mut dyn FnMut(SimTime, &[u8]),
) -> Result<Row, PlatformError> {
    let shape = VmShape {
        memory: VM_MEMORY,
        rx_descriptors: RX_DESCRIPTORS,
        tx_descriptors: 64,
    };
    let (mut host, mut net, mut guests) = build_host(
        64 + 16 * u64::from(vms),
        u64::from(vms) * (VM_MEMORY / 4096) + 1024,
        NetworkConfig {
            uplink_mac: UPLINK_MAC,
            uplink_requester: RequesterId::from_raw(0x100),
            uplink_rx_descriptors: 256,
            uplink_tx_descriptors: 64,
            demux,
            vm_to_vm: VmToVm::Bridge,
            crossover_patience: 64,
            crossover_timeout_ns: 0,
        },
        &vec![shape; usize::from(vms)],
        &|i| vm_mac(i as u16),
    )?;
    // Frames sent to each VM and not yet received, in order.
    let mut expected: Vec<VecDeque<Vec<u8>>> = vec![VecDeque::new(); guests.len()];
    let mut rng = SplitMix(seed ^ (u64::from(vms) << 32) ^ len as u64);
    let mut dests = |n: u32| {
        let broadcast =
            params.broadcast_every != 0 && (n + 1).is_multiple_of(params.broadcast_every);
        let to = (rng.next() % u64::from(vms)) as u16;
        let dst = if broadcast { [0xff; 6] } else { vm_mac(to) };
        (frame(dst, PEER_MAC, n, len), broadcast, usize::from(to))
    };
    let mut tally = Tally::default();
    let (host, net) = match params.pacing {
        Pacing::Lockstep => {
            // The peer's cable into the physical NIC.
            let mut cable = Link::new(LinkConfig::from_cost(cost, 1));
            let mut now = SimTime::ZERO;
            for n in 0..params.frames {
                let (f, broadcast, to) = dests(n);
                // The peer sends when the host has taken the last frame in.
                if let Some(arrival) = cable.send(now, &f) {
                    now = arrival;
                }
                cable.deliver_until(now, |t, f| tap(t, f));
                for (i, q) in expected.iter_mut().enumerate() {
                    if broadcast || i == to {
                        q.push_back(f.clone());
                    }
                }
                net.receive_from_wire(&mut host, &f)?;
                if (n + 1).is_multiple_of(params.batch) || n + 1 == params.frames {
                    tally.poll(&mut host, &mut net, &mut guests, &mut expected)?;
                }
            }
            tally.settle(&mut expected);
            (host, net)
        }
        Pacing::LineRate => {
            let link = LinkConfig::from_cost(cost, 1024);
            for g in &guests {
                net.guest(&mut host, g.vm).write32(regs::ITR, params.itr);
            }
            let mut sim = HostSim::new(
                host,
                net,
                core::mem::take(&mut guests),
                (Link::new(link), Link::new(link)),
                SimDuration::from_nanos(params.irq_latency_ns),
            );
            if params.charge_host_work {
                sim.charge_host_work(*cost);
            }
            let gap = link.serialization(len);
            for n in 0..params.frames {
                let (f, broadcast, to) = dests(n);
                for (i, q) in expected.iter_mut().enumerate() {
                    if broadcast || i == to {
                        q.push_back(f.clone());
                    }
                }
                if sim.send_from_wire(&f) {
                    tally.sent(sim.now, &f);
                }
                let next = sim.now + gap;
                tally.run(&mut sim, next, &mut expected, tap)?;
            }
            tally.finish(&mut sim, &mut expected, tap)?;
            (sim.host, sim.net)
        }
    };
    let delivery = tally.delivery();
    let frames = delivery.frames;
    let (s, h) = (net.stats(), host.stats());
    let per = |x: u64| x as f64 / frames.max(1) as f64;
    let host_ns = host_work_ns(cost, &s, &h);
    let host_ns_per_frame = per(host_ns);
    Ok(Row {
        demux,
        vms,
        frame_len: len,
        delivery,
        bytes_copied_per_frame: per(s.bytes_copied.get()),
        remaps_per_frame: per(h.frames_adopted.get()),
        invalidations_per_frame: per(h.invalidations.get()),
        pages_zeroed_per_frame: per(h.frames_zeroed.get()),
        host_ns_per_frame,
        frames_per_virtual_sec: if host_ns_per_frame > 0.0 {
            1e9 / host_ns_per_frame
        } else {
            0.0
        },
    })
}

impl Params {
    /// Checks the values, naming the first bad field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        check_frames(self.frames)?;
        check_frame_lens(&self.frame_lens)?;
        if self.vms.is_empty() || self.vms.len() > 8 {
            return Err(("vms", "give 1 to 8 VM counts".to_owned()));
        }
        if let Some(bad) = self.vms.iter().find(|&&v| !(1..=15).contains(&v)) {
            return Err((
                "vms",
                format!("{bad} VMs: the physical NIC filters for 1 to 15"),
            ));
        }
        check_interrupts(self.irq_latency_ns, self.itr)?;
        if self.batch == 0 || self.batch >= u32::from(RX_DESCRIPTORS) {
            return Err((
                "batch",
                format!(
                    "{} is not in 1..{RX_DESCRIPTORS} (the guests' receive rings)",
                    self.batch
                ),
            ));
        }
        Ok(())
    }
}

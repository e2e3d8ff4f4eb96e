//! The `crossover` scenario (seed 003): two VMs on one host exchange frames
//! in both directions, through the physical NIC's loopback (the seed's
//! baseline), through the VMM's software bridge, or by crossover (the
//! sender's transmit buffer page mapped under the receiver's next receive
//! buffer). The headline is the VM-to-VM frames the physical NIC carries;
//! crossover should bring it to 0, with no copy.

use std::collections::VecDeque;

use iovirt_core::{CostModel, SimDuration, SimTime};
use iovirt_iommu::RequesterId;
use iovirt_vmm::{DemuxMode, NetworkConfig, VmToVm};
use serde::{Deserialize, Serialize};

use crate::config::{check_frame_lens, check_frames, check_interrupts};
use crate::host_sim::{HostSim, VmShape, build_host, host_work_ns};
use crate::link::{Link, LinkConfig};
use crate::platform::{Delivery, Pacing, PlatformError, Tally, frame};

/// The scenario's parameters (the `[crossover]` table of a config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// Frames each VM sends the other per run.
    pub frames: u32,
    /// Frame lengths to try, in bytes.
    pub frame_lens: Vec<usize>,
    /// Frames each VM sends before the other's driver receives (lock-step
    /// pacing).
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
    /// Line rate: how long a receiver may hold a crossed frame before it
    /// is given a copy, ns (0: no limit).
    pub crossover_timeout_ns: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            frames: 2000,
            frame_lens: vec![64, 1514],
            batch: 8,
            pacing: Pacing::Lockstep,
            irq_latency_ns: 2_000,
            charge_host_work: true,
            crossover_timeout_ns: 100_000,
        }
    }
}

/// One run's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// How frames went between the VMs.
    pub vm_to_vm: VmToVm,
    /// Frame length.
    pub frame_len: usize,
    /// Frames received, corrupted and lost, and their latency.
    #[serde(flatten)]
    pub delivery: Delivery,
    /// Headline: frames the physical NIC carried (sent plus received) per
    /// VM-to-VM frame.
    pub nic_frames_per_frame: f64,
    /// Times each frame's bytes were copied by the host's CPU.
    pub copies_per_frame: f64,
    /// Pages mapped from one VM into the other per frame.
    pub remaps_per_frame: f64,
    /// IOTLB invalidations per frame.
    pub invalidations_per_frame: f64,
    /// Virtual time the path adds per frame: copies, page clears, DMA by
    /// the physical NIC, page-table writes and invalidations (ns).
    pub path_ns_per_frame: f64,
}

const UPLINK_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x01];
const MACS: [[u8; 6]; 2] = [[0x52, 0x54, 0, 2, 0, 0], [0x52, 0x54, 0, 2, 0, 1]];
const RING: u16 = 64;
/// The modes compared, baseline first.
pub const MODES: [VmToVm; 3] = [VmToVm::Loopback, VmToVm::Bridge, VmToVm::Crossover];

/// Runs every mode for every frame length.
pub fn run(params: &Params, cost: &CostModel) -> Result<Vec<Row>, PlatformError> {
    run_tapped(params, cost, &mut |_, _| {})
}

/// Like [`run`], showing every frame the physical NIC carries to `tap`.
pub fn run_tapped(
    params: &Params,
    cost: &CostModel,
    tap: &mut dyn FnMut(SimTime, &[u8]),
) -> Result<Vec<Row>, PlatformError> {
    let mut rows = Vec::new();
    for &len in &params.frame_lens {
        for mode in MODES {
            rows.push(run_one(params, cost, mode, len, tap)?);
        }
    }
    Ok(rows)
}

fn run_one(
    params: &Params,
    cost: &CostModel,
    mode: VmToVm,
    len: usize,
    tap: &mut dyn FnMut(SimTime, &[u8]),
) -> Result<Row, PlatformError> {
    let shape = VmShape {
        memory: 4 << 20,
        rx_descriptors: RING,
        tx_descriptors: RING,
    };
    let (mut host, mut net, mut sides) = build_host(
        128,
        4096,
        NetworkConfig {
            uplink_mac: UPLINK_MAC,
            uplink_requester: RequesterId::from_raw(0x100),
            uplink_rx_descriptors: 256,
            uplink_tx_descriptors: 256,
            demux: DemuxMode::Copy,
            vm_to_vm: mode,
            crossover_patience: u32::from(RING),
            crossover_timeout_ns: params.crossover_timeout_ns,
        },
        &[shape; 2],
        &|i| MACS.get(i).copied().unwrap_or_default(),
    )?;
    // Frames sent to each VM and not yet received, in order.
    let mut expected: Vec<VecDeque<Vec<u8>>> = vec![VecDeque::new(); 2];
    let mut tally = Tally::default();
    let pairs = [(MACS[0], MACS[1]), (MACS[1], MACS[0])];
    let (host, net) = match params.pacing {
        Pacing::Lockstep => {
            // The physical NIC's cable out, for the capture.
            let mut cable = Link::new(LinkConfig::from_cost(cost, usize::MAX));
            for n in 0..params.frames {
                for (from, (src, dst)) in pairs.into_iter().enumerate() {
                    let f = frame(dst, src, n, len);
                    let side = sides.get_mut(from).ok_or(PlatformError::Stalled)?;
                    side.driver
                        .transmit(&mut net.guest(&mut host, side.vm), &f)
                        .map_err(|_| PlatformError::Stalled)?;
                    if let Some(q) = expected.get_mut(1 - from) {
                        q.push_back(f);
                    }
                }
                net.drain_outgoing(|f| {
                    let _ = cable.send(SimTime::ZERO, f);
                });
                cable.deliver_until(SimTime::from_nanos(u64::MAX), |t, f| tap(t, f));
                if (n + 1).is_multiple_of(params.batch) || n + 1 == params.frames {
                    tally.poll(&mut host, &mut net, &mut sides, &mut expected)?;
                }
            }
            tally.settle(&mut expected);
            (host, net)
        }
        Pacing::LineRate => {
            let link = LinkConfig::from_cost(cost, 1024);
            let mut sim = HostSim::new(
                host,
                net,
                core::mem::take(&mut sides),
                (Link::new(link), Link::new(link)),
                SimDuration::from_nanos(params.irq_latency_ns),
            );
            if params.charge_host_work {
                sim.charge_host_work(*cost);
            }
            let gap = link.serialization(len);
            for n in 0..params.frames {
                for (from, (src, dst)) in pairs.into_iter().enumerate() {
                    let f = frame(dst, src, n, len);
                    if sim.transmit(from, &f) {
                        tally.sent(sim.now, &f);
                        if let Some(q) = expected.get_mut(1 - from) {
                            q.push_back(f);
                        }
                    } else {
                        tally.lost += 1;
                    }
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
    let (s, h, up) = (net.stats(), host.stats(), *net.uplink().stats());
    let per = |x: u64| x as f64 / frames.max(1) as f64;
    let nic_frames = up.tx_frames.get() + up.rx_frames.get();
    // The host's work, plus the physical NIC's DMA of the looped frames.
    let dma = up.tx_bytes.get() + up.rx_bytes.get();
    let path_ns = host_work_ns(cost, &s, &h) + cost.copy_time(dma).as_nanos();
    Ok(Row {
        vm_to_vm: mode,
        frame_len: len,
        delivery,
        nic_frames_per_frame: per(nic_frames),
        copies_per_frame: per(s.bytes_copied.get()) / len as f64,
        remaps_per_frame: per(h.pages_shared.get()),
        invalidations_per_frame: per(h.invalidations.get()),
        path_ns_per_frame: per(path_ns),
    })
}

impl Params {
    /// Checks the values, naming the first bad field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        check_frames(self.frames)?;
        check_frame_lens(&self.frame_lens)?;
        check_interrupts(self.irq_latency_ns, 0)?;
        // Each side may have a batch of frames in flight in each ring.
        if self.batch == 0 || self.batch >= u32::from(RING) {
            return Err((
                "batch",
                format!("{} is not in 1..{RING} (the guests' rings)", self.batch),
            ));
        }
        Ok(())
    }
}

//! The `custom` scenario: a host a user describes in the configuration
//! (its VMs, its memory budget, its demultiplexer and VM-to-VM mode) and
//! the flows of frames between the VMs and the wire. Every frame is checked
//! at its destination; the report gives each flow's figures and what the
//! host did for them.

use std::collections::VecDeque;

use iovirt_core::{SimDuration, SimTime};
use iovirt_drivers::E1000Driver;
use iovirt_iommu::RequesterId;
use iovirt_vmm::{DemuxMode, Host, NetStats, Network, NetworkConfig, VmId, VmToVm, VmmStats};
use serde::{Deserialize, Serialize};

use crate::config::check_interrupts;
use crate::host_sim::{HostSim, SimGuest, VmShape, build_host};
use crate::link::{Link, LinkConfig};
use crate::platform::{Pacing, PlatformError, frame};

/// One VM of the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VmSpec {
    /// Guest memory, MiB (2 to 64).
    pub memory_mib: u64,
    /// Receive descriptors of its driver's ring (8 to 256, a multiple of 8).
    pub rx_descriptors: u16,
}

impl Default for VmSpec {
    fn default() -> Self {
        VmSpec {
            memory_mib: 4,
            rx_descriptors: 64,
        }
    }
}

/// A stream of frames from one endpoint to another: `"wire"` (a peer
/// behind the physical NIC) or `"vmN"` (the N-th VM, from 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    /// Where the frames come from.
    pub from: String,
    /// Where they go.
    pub to: String,
    /// How many.
    pub frames: u32,
    /// Their length in bytes (60 to 1514).
    pub len: usize,
}

/// The scenario's parameters (the `[custom]` table of a config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// How the physical NIC's frames reach the VMs.
    pub demux: DemuxMode,
    /// How frames between the VMs travel.
    pub vm_to_vm: VmToVm,
    /// 4 KiB host frames for guest pages and the host's buffers: below the
    /// VMs' total memory, the host swaps.
    pub data_frames: u64,
    /// The VMs.
    pub vms: Vec<VmSpec>,
    /// The flows, run side by side, one frame of each in turn.
    pub flows: Vec<Flow>,
    /// Frames sent between two receive passes of every VM's driver
    /// (lock-step pacing).
    pub batch: u32,
    /// Lock-step, or line rate with the guests receiving in their
    /// interrupt handlers (the discrete-event loop).
    pub pacing: Pacing,
    /// Line rate: from an interrupt's injection to the guest's handler, ns.
    pub irq_latency_ns: u64,
}

impl Default for Params {
    fn default() -> Self {
        let flow = |from: &str, to: &str, len| Flow {
            from: from.to_owned(),
            to: to.to_owned(),
            frames: 500,
            len,
        };
        Params {
            demux: DemuxMode::Flip,
            vm_to_vm: VmToVm::Crossover,
            data_frames: 4096,
            vms: vec![VmSpec::default(); 3],
            flows: vec![
                flow("wire", "vm0", 1514),
                flow("vm1", "vm2", 512),
                flow("vm2", "wire", 128),
            ],
            batch: 8,
            pacing: Pacing::Lockstep,
            irq_latency_ns: 2_000,
        }
    }
}

/// One flow's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowRow {
    /// `from -> to`.
    pub flow: String,
    /// Frames sent.
    pub sent: u64,
    /// Frames that arrived byte-exact, in order.
    pub delivered: u64,
    /// Frames that arrived with other bytes, or out of order.
    pub corrupted: u64,
    /// Frames the sender's ring refused (full) or nobody received.
    pub lost: u64,
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// Per flow.
    pub flows: Vec<FlowRow>,
    /// Frames that arrived where no flow sent any (must be 0).
    pub unexpected: u64,
    /// The network's counters.
    pub network: NetStats,
    /// The host MMU's counters.
    pub host: VmmStats,
}

const PEER: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0xfe];
const UPLINK_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x01];

fn vm_mac(i: usize) -> [u8; 6] {
    [0x52, 0x54, 0, 3, 0, i as u8]
}

/// An endpoint: `None` for the wire.
fn endpoint(s: &str) -> Option<Option<usize>> {
    if s == "wire" {
        return Some(None);
    }
    s.strip_prefix("vm")?.parse().ok().map(Some)
}

/// Runs the flows.
pub fn run(params: &Params, tap: &mut dyn FnMut(SimTime, &[u8])) -> Result<Outcome, PlatformError> {
    let shapes: Vec<VmShape> = params
        .vms
        .iter()
        .map(|spec| VmShape {
            memory: spec.memory_mib << 20,
            rx_descriptors: spec.rx_descriptors,
            tx_descriptors: 64,
        })
        .collect();
    let (mut host, mut net, guests) = build_host(
        64 + 16 * params.vms.len() as u64,
        params.data_frames,
        NetworkConfig {
            uplink_mac: UPLINK_MAC,
            uplink_requester: RequesterId::from_raw(0x100),
            uplink_rx_descriptors: 128,
            uplink_tx_descriptors: 128,
            demux: params.demux,
            vm_to_vm: params.vm_to_vm,
            crossover_patience: 64,
            crossover_timeout_ns: 100_000,
        },
        &shapes,
        &vm_mac,
    )?;
    let mut vms: Vec<(VmId, E1000Driver)> = guests.into_iter().map(|g| (g.vm, g.driver)).collect();
    let ends: Vec<(Option<usize>, Option<usize>)> = params
        .flows
        .iter()
        .map(|f| (endpoint(&f.from).flatten(), endpoint(&f.to).flatten()))
        .collect();
    let mut rows: Vec<FlowRow> = params
        .flows
        .iter()
        .map(|f| FlowRow {
            flow: format!("{} -> {}", f.from, f.to),
            sent: 0,
            delivered: 0,
            corrupted: 0,
            lost: 0,
        })
        .collect();
    if params.pacing == Pacing::LineRate {
        return line_rate(params, host, net, vms, &ends, rows, tap);
    }
    // Frames expected at each VM (index) and on the wire (last), in order,
    // with the flow they belong to.
    let mut expected: Vec<VecDeque<(usize, Vec<u8>)>> = vec![VecDeque::new(); vms.len() + 1];
    let mut cable = Link::new(LinkConfig::from_cost(&Default::default(), 1));
    let mut now = SimTime::ZERO;
    let rounds = params.flows.iter().map(|f| f.frames).max().unwrap_or(0);
    let mut unexpected = 0u64;
    for n in 0..rounds {
        for (k, (flow, &(from, to))) in params.flows.iter().zip(&ends).enumerate() {
            if n >= flow.frames {
                continue;
            }
            let src = from.map_or(PEER, vm_mac);
            let dst = to.map_or(PEER, vm_mac);
            let f = frame(dst, src, n, flow.len);
            let at = to.unwrap_or(vms.len());
            let row = rows.get_mut(k).ok_or(PlatformError::Stalled)?;
            row.sent += 1;
            let sent = match from {
                None => {
                    if let Some(t) = cable.send(now, &f) {
                        now = t;
                    }
                    cable.deliver_until(now, |t, f| tap(t, f));
                    net.receive_from_wire(&mut host, &f)?;
                    true
                }
                Some(v) => {
                    let (vm, driver) = vms.get_mut(v).ok_or(PlatformError::Stalled)?;
                    driver.transmit(&mut net.guest(&mut host, *vm), &f).is_ok()
                }
            };
            if sent {
                if let Some(q) = expected.get_mut(at) {
                    q.push_back((k, f));
                }
            } else {
                row.lost += 1;
            }
        }
        if (n + 1) % params.batch == 0 || n + 1 == rounds {
            receive_all(
                &mut host,
                &mut net,
                &mut vms,
                &mut expected,
                &mut rows,
                &mut unexpected,
            )?;
            // The physical NIC's cable out, for the capture.
            let mut out = Link::new(LinkConfig::from_cost(&Default::default(), usize::MAX));
            net.drain_outgoing(|f| {
                let _ = out.send(now, f);
            });
            out.deliver_until(SimTime::from_nanos(u64::MAX), |t, f| tap(t, f));
        }
    }
    for q in &expected {
        for &(k, _) in q {
            if let Some(row) = rows.get_mut(k) {
                row.lost += 1;
            }
        }
    }
    Ok(Outcome {
        flows: rows,
        unexpected,
        network: net.stats(),
        host: host.stats(),
    })
}

/// Frames one sender owes one destination, in order, each with its flow.
type Queue = VecDeque<(usize, Vec<u8>)>;

/// Frames owed to each destination (the VMs, then the wire), a queue per
/// sender (the VMs, then the peer).
struct Owed {
    queues: Vec<Vec<Queue>>,
    unexpected: u64,
}

impl Owed {
    fn new(vms: usize) -> Owed {
        Owed {
            queues: vec![vec![VecDeque::new(); vms + 1]; vms + 1],
            unexpected: 0,
        }
    }

    /// The sender of `f`, by its source address (the peer if no VM's).
    fn sender(&self, f: &[u8]) -> usize {
        let vms = self.queues.len() - 1;
        (0..vms)
            .find(|&v| f.get(6..12) == Some(&vm_mac(v)[..]))
            .unwrap_or(vms)
    }

    fn owe(&mut self, dest: usize, from: usize, flow: usize, f: Vec<u8>) -> bool {
        match self.queues.get_mut(dest).and_then(|d| d.get_mut(from)) {
            Some(q) => {
                q.push_back((flow, f));
                true
            }
            None => false,
        }
    }

    /// `got` reached `dest`: it is delivered for its flow, and the frames
    /// its sender sent there before it were lost.
    fn arrived(&mut self, dest: usize, got: &[u8], rows: &mut [FlowRow]) {
        let from = self.sender(got);
        let Some(q) = self.queues.get_mut(dest).and_then(|d| d.get_mut(from)) else {
            self.unexpected += 1;
            return;
        };
        let Some(i) = q.iter().position(|(_, f)| f == got) else {
            self.unexpected += 1;
            return;
        };
        for (n, (k, _)) in q.drain(..=i).enumerate() {
            if let Some(row) = rows.get_mut(k) {
                if n == i {
                    row.delivered += 1;
                } else {
                    row.lost += 1;
                }
            }
        }
    }

    /// Whatever is still owed was lost.
    fn settle(&mut self, rows: &mut [FlowRow]) {
        for q in self.queues.iter_mut().flatten() {
            for (k, _) in q.drain(..) {
                if let Some(row) = rows.get_mut(k) {
                    row.lost += 1;
                }
            }
        }
    }
}

/// The flows at line rate on the discrete-event loop: each round sends one
/// frame of every flow still running and lasts as long as the peer's cable
/// takes to carry them; the guests receive in their interrupt handlers.
fn line_rate(
    params: &Params,
    host: Host,
    net: Network,
    vms: Vec<(VmId, E1000Driver)>,
    ends: &[(Option<usize>, Option<usize>)],
    mut rows: Vec<FlowRow>,
    tap: &mut dyn FnMut(SimTime, &[u8]),
) -> Result<Outcome, PlatformError> {
    let wire = vms.len();
    let link = LinkConfig::from_cost(&Default::default(), 1024);
    let guests = vms
        .into_iter()
        .map(|(vm, driver)| SimGuest { vm, driver })
        .collect();
    let mut sim = HostSim::new(
        host,
        net,
        guests,
        (Link::new(link), Link::new(link)),
        SimDuration::from_nanos(params.irq_latency_ns),
    );
    sim.charge_host_work(Default::default());
    let mut owed = Owed::new(wire);
    let round = params
        .flows
        .iter()
        .map(|f| link.serialization(f.len))
        .fold(SimDuration::ZERO, |a, b| a + b);
    let rounds = params.flows.iter().map(|f| f.frames).max().unwrap_or(0);
    let end = |n: u32| n + 1 == rounds;
    for n in 0..rounds {
        for (k, (flow, &(from, to))) in params.flows.iter().zip(ends).enumerate() {
            if n >= flow.frames {
                continue;
            }
            let f = frame(
                to.map_or(PEER, vm_mac),
                from.map_or(PEER, vm_mac),
                n,
                flow.len,
            );
            let row = rows.get_mut(k).ok_or(PlatformError::Stalled)?;
            row.sent += 1;
            let sent = match from {
                None => sim.send_from_wire(&f),
                Some(v) => sim.transmit(v, &f),
            };
            if !(sent && owed.owe(to.unwrap_or(wire), from.unwrap_or(wire), k, f)) {
                row.lost += 1;
            }
        }
        let until = sim.now
            + if end(n) {
                SimDuration::from_micros(1_000)
            } else {
                round
            };
        let (owed_, rows_) = (&mut owed, &mut rows);
        let mut taps = |t: SimTime, f: &[u8]| {
            // A frame for the peer is one leaving the physical NIC.
            if f.get(..6) == Some(&PEER[..]) {
                owed_.arrived(wire, f, rows_);
            }
            tap(t, f);
        };
        let mut delivered: Vec<(usize, Vec<u8>)> = Vec::new();
        sim.run_until(
            until,
            &mut |g, _, got| delivered.push((g, got.to_vec())),
            &mut taps,
        )?;
        for (g, got) in delivered {
            owed.arrived(g, &got, &mut rows);
        }
    }
    owed.settle(&mut rows);
    Ok(Outcome {
        flows: rows,
        unexpected: owed.unexpected,
        network: sim.net.stats(),
        host: sim.host.stats(),
    })
}

/// Every VM's driver receives; the wire's frames are taken; each frame is
/// checked against the front of its destination's queue.
fn receive_all(
    host: &mut Host,
    net: &mut Network,
    vms: &mut [(VmId, E1000Driver)],
    expected: &mut [VecDeque<(usize, Vec<u8>)>],
    rows: &mut [FlowRow],
    unexpected: &mut u64,
) -> Result<(), PlatformError> {
    let mut check = |q: &mut VecDeque<(usize, Vec<u8>)>, got: &[u8]| match q.pop_front() {
        Some((k, want)) => {
            if let Some(row) = rows.get_mut(k) {
                if want == got {
                    row.delivered += 1;
                } else {
                    row.corrupted += 1;
                }
            }
        }
        None => *unexpected += 1,
    };
    for (v, (vm, driver)) in vms.iter_mut().enumerate() {
        let Some(q) = expected.get_mut(v) else {
            continue;
        };
        driver
            .receive(&mut net.guest(host, *vm), |got| check(q, got))
            .map_err(PlatformError::Guest)?;
    }
    if let Some(q) = expected.last_mut() {
        net.with_outgoing(|got| check(q, got));
    }
    Ok(())
}

impl Params {
    /// Checks the values, naming the first bad field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.vms.is_empty() || self.vms.len() > 15 {
            return Err(("vms", "give 1 to 15 VMs".to_owned()));
        }
        for (i, vm) in self.vms.iter().enumerate() {
            if !(2..=64).contains(&vm.memory_mib) {
                return Err((
                    "vms",
                    format!("vm{i}: memory_mib {} is not in 2..=64", vm.memory_mib),
                ));
            }
            let n = vm.rx_descriptors;
            if !(8..=256).contains(&n) || n % 8 != 0 {
                return Err((
                    "vms",
                    format!("vm{i}: rx_descriptors {n} is not a multiple of 8 in 8..=256"),
                ));
            }
            if self.batch >= u32::from(n) {
                return Err((
                    "batch",
                    format!(
                        "{} does not fit vm{i}'s {n} receive descriptors",
                        self.batch
                    ),
                ));
            }
        }
        check_interrupts(self.irq_latency_ns, 0)?;
        if self.batch == 0 {
            return Err(("batch", "0 frames between receive passes".to_owned()));
        }
        if !(1024..=1 << 20).contains(&self.data_frames) {
            return Err((
                "data_frames",
                format!("{} is not in 1024..=1048576", self.data_frames),
            ));
        }
        if self.flows.is_empty() || self.flows.len() > 32 {
            return Err(("flows", "give 1 to 32 flows".to_owned()));
        }
        for (i, f) in self.flows.iter().enumerate() {
            for end in [&f.from, &f.to] {
                match endpoint(end) {
                    Some(Some(v)) if v >= self.vms.len() => {
                        return Err((
                            "flows",
                            format!("flow {i}: `{end}`: there are {} VMs", self.vms.len()),
                        ));
                    }
                    None => {
                        return Err(("flows", format!("flow {i}: `{end}` is not `wire` or `vmN`")));
                    }
                    _ => {}
                }
            }
            if f.from == f.to {
                return Err((
                    "flows",
                    format!("flow {i}: from and to are both `{}`", f.from),
                ));
            }
            if !(60..=1514).contains(&f.len) {
                return Err((
                    "flows",
                    format!("flow {i}: len {} is not in 60..=1514", f.len),
                ));
            }
            if f.frames == 0 || f.frames > 1_000_000 {
                return Err((
                    "flows",
                    format!("flow {i}: frames {} is not in 1..=1000000", f.frames),
                ));
            }
        }
        Ok(())
    }
}

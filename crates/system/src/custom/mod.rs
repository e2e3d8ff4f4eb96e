//! The `custom` scenario: a host a user describes in the configuration
//! (its VMs, its memory budget, its demultiplexer and VM-to-VM mode) and
//! the flows of frames between the VMs and the wire; or, in the multi-host
//! form, two such hosts whose physical NICs are joined by a cable and the
//! flows between their VMs. Every frame is checked at its destination; the
//! report gives each flow's figures and what the hosts did for them.

use std::collections::VecDeque;

use iovirt_core::{CostModel, SimDuration, SimTime};
use iovirt_drivers::E1000Driver;
use iovirt_iommu::RequesterId;
use iovirt_vmm::{DemuxMode, Host, NetStats, Network, NetworkConfig, VmId, VmToVm, VmmStats};
use serde::{Deserialize, Serialize};

use crate::host_sim::{HostSim, SimGuest, VmShape, build_host};
use crate::link::{Link, LinkConfig, LinkStats};
use crate::platform::{Pacing, PlatformError, frame};

mod check;
mod hosts;
mod owed;

pub use hosts::host_vm_mac;

use owed::Owed;

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

/// One host of the multi-host form (a `[[custom.hosts]]` table), with the
/// `[custom]` table's `demux`, `vm_to_vm` and `data_frames` for what it
/// leaves out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostSpec {
    /// How its physical NIC's frames reach its VMs.
    pub demux: DemuxMode,
    /// How frames between its own VMs travel.
    pub vm_to_vm: VmToVm,
    /// Its 4 KiB host frames for guest pages and its buffers.
    pub data_frames: u64,
    /// Its VMs (1 to 15), named `hN.vm0`, `hN.vm1`, ... in flows.
    pub vms: Vec<VmSpec>,
}

/// The scenario's parameters (the `[custom]` table of a config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "RawParams")]
pub struct Params {
    /// How the physical NIC's frames reach the VMs (with `hosts`: the
    /// hosts' default).
    pub demux: DemuxMode,
    /// How frames between the VMs travel (with `hosts`: the hosts'
    /// default).
    pub vm_to_vm: VmToVm,
    /// 4 KiB host frames for guest pages and the host's buffers: below the
    /// VMs' total memory, the host swaps (with `hosts`: the hosts'
    /// default).
    pub data_frames: u64,
    /// The VMs of the single-host form; empty with `hosts`.
    pub vms: Vec<VmSpec>,
    /// The multi-host form: two hosts whose physical NICs are joined by a
    /// cable, each with its own VMs (`None`: the single-host form).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<HostSpec>>,
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
            hosts: None,
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

/// `[custom]` as written: whether `vms` and `hosts` were given at all, and
/// which settings each host left to the table's.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawParams {
    demux: DemuxMode,
    vm_to_vm: VmToVm,
    data_frames: u64,
    vms: Option<Vec<VmSpec>>,
    hosts: Option<Vec<RawHost>>,
    flows: Vec<Flow>,
    batch: u32,
    pacing: Pacing,
    irq_latency_ns: u64,
}

impl Default for RawParams {
    fn default() -> Self {
        let p = Params::default();
        RawParams {
            demux: p.demux,
            vm_to_vm: p.vm_to_vm,
            data_frames: p.data_frames,
            vms: None,
            hosts: None,
            flows: p.flows,
            batch: p.batch,
            pacing: p.pacing,
            irq_latency_ns: p.irq_latency_ns,
        }
    }
}

/// A `[[custom.hosts]]` table as written.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawHost {
    demux: Option<DemuxMode>,
    vm_to_vm: Option<VmToVm>,
    data_frames: Option<u64>,
    vms: Vec<VmSpec>,
}

impl From<RawParams> for Params {
    fn from(raw: RawParams) -> Params {
        let hosts: Option<Vec<HostSpec>> = raw.hosts.map(|hosts| {
            hosts
                .into_iter()
                .map(|h| HostSpec {
                    demux: h.demux.unwrap_or(raw.demux),
                    vm_to_vm: h.vm_to_vm.unwrap_or(raw.vm_to_vm),
                    data_frames: h.data_frames.unwrap_or(raw.data_frames),
                    vms: h.vms,
                })
                .collect()
        });
        // The default VMs belong to the single-host form; with hosts, VMs
        // given here as well are kept, for `validate` to refuse.
        let vms = raw.vms.unwrap_or_else(|| match hosts {
            Some(_) => Vec::new(),
            None => Params::default().vms,
        });
        Params {
            demux: raw.demux,
            vm_to_vm: raw.vm_to_vm,
            data_frames: raw.data_frames,
            vms,
            hosts,
            flows: raw.flows,
            batch: raw.batch,
            pacing: raw.pacing,
            irq_latency_ns: raw.irq_latency_ns,
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
    /// Multi-host form: mean time from a frame's send to the receiving
    /// guest's handler taking it, ns (0 if none arrived).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ns_mean: Option<f64>,
    /// Multi-host form: the longest such time, ns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ns_max: Option<u64>,
}

/// The whole run: its JSON is the form's own, with no tag.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Outcome {
    /// The single-host form.
    Host(Box<HostOutcome>),
    /// The multi-host form.
    Hosts(HostsOutcome),
}

impl Outcome {
    /// Per flow, in the configuration's order.
    pub fn flows(&self) -> &[FlowRow] {
        match self {
            Outcome::Host(o) => &o.flows,
            Outcome::Hosts(o) => &o.flows,
        }
    }

    /// Frames that arrived where no flow sent any (must be 0).
    pub fn unexpected(&self) -> u64 {
        match self {
            Outcome::Host(o) => o.unexpected,
            Outcome::Hosts(o) => o.unexpected,
        }
    }
}

/// The single-host form's run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostOutcome {
    /// Per flow.
    pub flows: Vec<FlowRow>,
    /// Frames that arrived where no flow sent any (must be 0).
    pub unexpected: u64,
    /// The network's counters.
    pub network: NetStats,
    /// The host MMU's counters.
    pub host: VmmStats,
}

/// The multi-host form's run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostsOutcome {
    /// Per flow.
    pub flows: Vec<FlowRow>,
    /// Frames that arrived where no flow sent any (must be 0).
    pub unexpected: u64,
    /// Per host, in the configuration's order.
    pub hosts: Vec<HostCounters>,
}

/// What one host of the multi-host form did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostCounters {
    /// Its network's counters.
    pub network: NetStats,
    /// Its host MMU's counters.
    pub host: VmmStats,
    /// What its physical NIC's cable to the other host carried.
    pub cable_out: LinkStats,
}

const PEER: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0xfe];
const UPLINK_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x01];

fn vm_mac(i: usize) -> [u8; 6] {
    [0x52, 0x54, 0, 3, 0, i as u8]
}

/// An endpoint of the single-host form: `None` for the wire.
fn endpoint(s: &str) -> Option<Option<usize>> {
    if s == "wire" {
        return Some(None);
    }
    s.strip_prefix("vm")?.parse().ok().map(Some)
}

/// Each flow's row, nothing counted yet.
fn rows(params: &Params) -> Vec<FlowRow> {
    params
        .flows
        .iter()
        .map(|f| FlowRow {
            flow: format!("{} -> {}", f.from, f.to),
            sent: 0,
            delivered: 0,
            corrupted: 0,
            lost: 0,
            latency_ns_mean: None,
            latency_ns_max: None,
        })
        .collect()
}

/// Checks `params` and runs the flows, under `cost` (the cables' latency
/// and bandwidth, and at line rate the host's work as CPU time), handing
/// every frame on a cable to `tap` as it arrives.
pub fn run(
    params: &Params,
    cost: &CostModel,
    tap: &mut dyn FnMut(SimTime, &[u8]),
) -> Result<Outcome, PlatformError> {
    params
        .validate()
        .map_err(|(field, reason)| PlatformError::Invalid {
            field: format!("custom.{field}"),
            reason,
        })?;
    match &params.hosts {
        Some(hosts) => hosts::run(params, hosts, cost, tap).map(Outcome::Hosts),
        None => run_host(params, cost, tap).map(|o| Outcome::Host(Box::new(o))),
    }
}

/// Builds a host as `spec` describes it: its VMs (with their drivers) and
/// its network, with the scenario's fixed ring sizes and crossover
/// settings; both forms build their hosts here.
fn build_spec_host(
    spec: &HostSpec,
    uplink_mac: [u8; 6],
    vm_mac: &dyn Fn(usize) -> [u8; 6],
) -> Result<(Host, Network, Vec<SimGuest>), PlatformError> {
    let shapes: Vec<VmShape> = spec
        .vms
        .iter()
        .map(|vm| VmShape {
            memory: vm.memory_mib << 20,
            rx_descriptors: vm.rx_descriptors,
            tx_descriptors: 64,
        })
        .collect();
    build_host(
        64 + 16 * spec.vms.len() as u64,
        spec.data_frames,
        NetworkConfig {
            uplink_mac,
            uplink_requester: RequesterId::from_raw(0x100),
            uplink_rx_descriptors: 128,
            uplink_tx_descriptors: 128,
            demux: spec.demux,
            vm_to_vm: spec.vm_to_vm,
            crossover_patience: 64,
            crossover_timeout_ns: 100_000,
        },
        &shapes,
        vm_mac,
    )
}

/// The single-host form.
fn run_host(
    params: &Params,
    cost: &CostModel,
    tap: &mut dyn FnMut(SimTime, &[u8]),
) -> Result<HostOutcome, PlatformError> {
    let spec = HostSpec {
        demux: params.demux,
        vm_to_vm: params.vm_to_vm,
        data_frames: params.data_frames,
        vms: params.vms.clone(),
    };
    let (mut host, mut net, guests) = build_spec_host(&spec, UPLINK_MAC, &vm_mac)?;
    let mut vms: Vec<(VmId, E1000Driver)> = guests.into_iter().map(|g| (g.vm, g.driver)).collect();
    let ends: Vec<(Option<usize>, Option<usize>)> = params
        .flows
        .iter()
        .map(|f| (endpoint(&f.from).flatten(), endpoint(&f.to).flatten()))
        .collect();
    let mut rows = rows(params);
    if params.pacing == Pacing::LineRate {
        return line_rate(params, cost, host, net, vms, &ends, rows, tap);
    }
    // Frames expected at each VM (index) and on the wire (last), in order,
    // with the flow they belong to.
    let mut expected: Vec<VecDeque<(usize, Vec<u8>)>> = vec![VecDeque::new(); vms.len() + 1];
    let mut cable = Link::new(LinkConfig::from_cost(cost, 1));
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
            let mut out = Link::new(LinkConfig::from_cost(cost, usize::MAX));
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
    Ok(HostOutcome {
        flows: rows,
        unexpected,
        network: net.stats(),
        host: host.stats(),
    })
}

/// The flows at line rate on the discrete-event loop: each round sends one
/// frame of every flow still running and lasts as long as the peer's cable
/// takes to carry them; the guests receive in their interrupt handlers.
#[allow(clippy::too_many_arguments)] // The single-host run's state, handed over whole.
fn line_rate(
    params: &Params,
    cost: &CostModel,
    host: Host,
    net: Network,
    vms: Vec<(VmId, E1000Driver)>,
    ends: &[(Option<usize>, Option<usize>)],
    mut rows: Vec<FlowRow>,
    tap: &mut dyn FnMut(SimTime, &[u8]),
) -> Result<HostOutcome, PlatformError> {
    let wire = vms.len();
    let link = LinkConfig::from_cost(cost, 1024);
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
    sim.charge_host_work(*cost);
    let mut owed = Owed::new((0..wire).map(vm_mac).collect(), params.flows.len());
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
            let at = sim.now;
            if !(sent && owed.owe(to.unwrap_or(wire), from.unwrap_or(wire), k, f, at)) {
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
                owed_.arrived(wire, f, t, rows_);
            }
            tap(t, f);
        };
        let mut delivered: Vec<(usize, SimTime, Vec<u8>)> = Vec::new();
        sim.run_until(
            until,
            &mut |g, t, got| delivered.push((g, t, got.to_vec())),
            &mut taps,
        )?;
        for (g, t, got) in delivered {
            owed.arrived(g, &got, t, &mut rows);
        }
    }
    owed.settle(&mut rows);
    Ok(HostOutcome {
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

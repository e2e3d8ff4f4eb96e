//! The multi-host form: two hosts, each with its VMs, network and settings,
//! their physical NICs joined by a cable (a [`Link`] each way, the cost
//! model's latency and bandwidth), on one event loop ([`Fabric`]). A frame
//! between VMs of different hosts goes through its sender's vNIC, that
//! host's switch and physical NIC, the cable, the other host's physical NIC
//! and demultiplexer, and reaches the receiving guest's interrupt handler;
//! a frame between VMs of one host takes that host's `vm_to_vm` path.

use iovirt_core::{CostModel, SimDuration, SimTime};

use super::check::host_endpoint;
use super::{FlowRow, HostCounters, HostSpec, HostsOutcome, Owed, Params, build_spec_host, rows};
use crate::host_sim::{Fabric, HostSim};
use crate::link::{Link, LinkConfig};
use crate::platform::{Pacing, PlatformError, frame};

/// The MAC address of host `h`'s VM `v` in the multi-host form. Host 0's
/// are the single-host form's; the last byte differs across hosts too, as
/// it is the frames' IPv4 host number.
pub fn host_vm_mac(h: usize, v: usize) -> [u8; 6] {
    [0x52, 0x54, 0, 3, h as u8, ((h << 4) | v) as u8]
}

/// Lock-step: virtual time a batch may take to settle before the next one
/// goes regardless.
const SETTLE: SimDuration = SimDuration::from_millis(10);

/// Runs the flows between the hosts' VMs.
pub(super) fn run(
    params: &Params,
    specs: &[HostSpec],
    cost: &CostModel,
    tap: &mut dyn FnMut(SimTime, &[u8]),
) -> Result<HostsOutcome, PlatformError> {
    let link = LinkConfig::from_cost(cost, 1024);
    // Index of each host's first VM among all the hosts' VMs, and every
    // VM's MAC address in that order.
    let mut first = Vec::with_capacity(specs.len());
    let mut macs = Vec::new();
    let mut sims = Vec::with_capacity(specs.len());
    for (h, spec) in specs.iter().enumerate() {
        first.push(macs.len());
        macs.extend((0..spec.vms.len()).map(|v| host_vm_mac(h, v)));
        let (host, net, guests) = build_spec_host(spec, [0x52, 0x54, 0, 0, h as u8, 0x01], &|v| {
            host_vm_mac(h, v)
        })?;
        let mut sim = HostSim::new(
            host,
            net,
            guests,
            (Link::new(link), Link::new(link)),
            SimDuration::from_nanos(params.irq_latency_ns),
        );
        sim.charge_host_work(*cost);
        sims.push(sim);
    }
    let mut fabric = Fabric {
        hosts: <[HostSim; 2]>::try_from(sims).map_err(|s| PlatformError::Invalid {
            field: "custom.hosts".to_owned(),
            reason: format!("{} hosts: a cable joins two", s.len()),
        })?,
    };
    // Each flow's ends: (host, VM) and the VM's index among all.
    let end = |s: &str| {
        let (h, v) = host_endpoint(s)?;
        Some(((h, v), first.get(h)? + v))
    };
    let ends = params
        .flows
        .iter()
        .map(|f| Some((end(&f.from)?, end(&f.to)?)))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| PlatformError::Invalid {
            field: "custom.flows".to_owned(),
            reason: "an endpoint is not a VM of a host".to_owned(),
        })?;
    let mut rows = rows(params);
    let mut owed = Owed::new(macs, params.flows.len());
    // Line rate: a round lasts as long as a cable takes to carry one frame
    // of every flow.
    let round = params
        .flows
        .iter()
        .map(|f| link.serialization(f.len))
        .fold(SimDuration::ZERO, |a, b| a + b);
    let rounds = params.flows.iter().map(|f| f.frames).max().unwrap_or(0);
    let mut loop_ = Loop {
        fabric: &mut fabric,
        owed: &mut owed,
        rows: &mut rows,
        first: &first,
        tap,
    };
    for n in 0..rounds {
        for (k, (flow, &((from, g_from), (to, g_to)))) in params.flows.iter().zip(&ends).enumerate()
        {
            if n >= flow.frames {
                continue;
            }
            let f = frame(
                host_vm_mac(to.0, to.1),
                host_vm_mac(from.0, from.1),
                n,
                flow.len,
            );
            let sim = loop_
                .fabric
                .hosts
                .get_mut(from.0)
                .ok_or(PlatformError::Stalled)?;
            let at = sim.now;
            let sent = sim.transmit(from.1, &f);
            let row = loop_.rows.get_mut(k).ok_or(PlatformError::Stalled)?;
            row.sent += 1;
            if !(sent && loop_.owed.owe(g_to, g_from, k, f, at)) {
                row.lost += 1;
            }
        }
        let last = n + 1 == rounds;
        match params.pacing {
            Pacing::LineRate => {
                let span = if last {
                    // Time for the last frames to arrive and be handled.
                    SimDuration::from_micros(1_000)
                } else {
                    round
                };
                let until = loop_.now() + span;
                loop_.run_until(until)?;
            }
            Pacing::Lockstep if (n + 1) % params.batch == 0 || last => loop_.settle()?,
            Pacing::Lockstep => {}
        }
    }
    owed.settle(&mut rows);
    owed.time(&mut rows);
    Ok(HostsOutcome {
        flows: rows,
        unexpected: owed.unexpected,
        hosts: fabric
            .hosts
            .iter()
            .map(|sim| HostCounters {
                network: sim.net.stats(),
                host: sim.host.stats(),
                cable_out: sim.cable_out_stats(),
            })
            .collect(),
    })
}

/// The fabric and where its deliveries are checked.
struct Loop<'a> {
    fabric: &'a mut Fabric,
    owed: &'a mut Owed,
    rows: &'a mut [FlowRow],
    /// Index of each host's first VM among all the hosts' VMs.
    first: &'a [usize],
    tap: &'a mut dyn FnMut(SimTime, &[u8]),
}

impl Loop<'_> {
    /// The fabric's time (both hosts agree after every run).
    fn now(&self) -> SimTime {
        self.fabric.hosts[0].now
    }

    /// Runs both hosts until `until`, each frame a guest receives checked
    /// against what its sender owes it.
    fn run_until(&mut self, until: SimTime) -> Result<(), PlatformError> {
        let Loop {
            fabric,
            owed,
            rows,
            first,
            tap,
        } = self;
        fabric.run_until(
            until,
            &mut |h, g, t, got| {
                if let Some(d) = first.get(h) {
                    owed.arrived(d + g, got, t, rows);
                }
            },
            &mut **tap,
        )
    }

    /// Lock-step: runs until nothing is left to happen (the cable empty,
    /// every interrupt handled, no timer armed), so that the next batch
    /// goes once this one has been taken in; at most [`SETTLE`].
    fn settle(&mut self) -> Result<(), PlatformError> {
        // Running to now first puts what the guests sent on the cables.
        let now = self.now();
        self.run_until(now)?;
        let limit = now + SETTLE;
        while let Some(t) = self
            .fabric
            .hosts
            .iter()
            .filter_map(HostSim::next_event)
            .min()
            .filter(|&t| t <= limit)
        {
            self.run_until(t)?;
        }
        Ok(())
    }
}

//! A host with its network on the discrete-event loop: frames from a peer
//! arrive over a cable at their arrival times, the vNICs' moderation
//! timers fire in virtual time, and each interrupt injected into a VM's
//! local APIC reaches the guest's driver an interrupt latency later (the
//! guest acknowledges the vector, runs its handler, and signals EOI).

use iovirt_core::{CostModel, EventQueue, Gpa, Irq, SimDuration, SimTime};
use iovirt_drivers::{E1000Config, E1000Driver, GuestPageAllocator, Placement};
use iovirt_iommu::{IommuConfig, RequesterId};
use iovirt_vmm::{Host, HostConfig, NetStats, Network, NetworkConfig, VmConfig, VmId, VmmStats};

use crate::link::{Link, LinkStats};
use crate::platform::PlatformError;

/// Where the frames reaching the far end of a host's cable go: the other
/// host's physical NIC.
pub type FarEnd<'a> = &'a mut dyn FnMut(SimTime, &[u8]) -> Result<(), PlatformError>;

/// Where each frame a guest of a fabric receives goes: (host, guest, time,
/// frame).
pub type FabricDelivery<'a> = &'a mut dyn FnMut(usize, usize, SimTime, &[u8]);

/// A guest on the host: its VM and its e1000 driver.
#[derive(Debug)]
pub struct SimGuest {
    /// The VM.
    pub vm: VmId,
    /// Its driver.
    pub driver: E1000Driver,
}

/// The host CPU's work behind these counters, under `cost`, ns: bytes it
/// copied or cleared (frames zeroed, crossed pages' tails) at the copy
/// rate, one memory access per page-table write (pages adopted, shared,
/// unmapped), one IOTLB invalidation per invalidation. The NICs' own DMA is
/// not the CPU's and is left out.
pub fn host_work_ns(cost: &CostModel, net: &NetStats, host: &VmmStats) -> u64 {
    let bytes = net.bytes_copied.get()
        + net.crossover_bytes_cleared.get()
        + host.frames_zeroed.get() * 4096;
    let pte_writes = host.frames_adopted.get() + host.pages_shared.get() + host.invalidations.get();
    cost.copy_time(bytes).as_nanos()
        + pte_writes * cost.memory_access_ns
        + host.invalidations.get() * cost.iotlb_invalidation_ns
}

/// One VM of a host to build: its memory and its driver's rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmShape {
    /// Guest memory in bytes (at least 2 MiB: the driver allocates from
    /// 1 MiB up).
    pub memory: u64,
    /// The driver's receive descriptors.
    pub rx_descriptors: u16,
    /// The driver's transmit descriptors.
    pub tx_descriptors: u16,
}

/// Builds a host: `table_frames` and `data_frames` of memory, `network`,
/// and one VM per shape, each with a vNIC (MAC address `mac(i)`, MSI
/// vector 0x40; its requester 01:00.0 + i + 1) and its e1000 driver
/// brought up from contiguous pages above 1 MiB.
pub fn build_host(
    table_frames: u64,
    data_frames: u64,
    network: NetworkConfig,
    vms: &[VmShape],
    mac: &dyn Fn(usize) -> [u8; 6],
) -> Result<(Host, Network, Vec<SimGuest>), PlatformError> {
    let mut host = Host::new(HostConfig {
        table_frames,
        data_frames,
        iommu: IommuConfig::default(),
    })?;
    let mut net = Network::new(&mut host, network)?;
    let mut guests = Vec::new();
    for (i, shape) in vms.iter().enumerate() {
        let vm = host.add_vm(VmConfig {
            memory: shape.memory,
            requester: RequesterId::from_raw(0x101 + i as u16),
        })?;
        net.add_vnic(&mut host, vm, mac(i), Irq(0x40))?;
        let pages = ((shape.memory >> 12).saturating_sub(256)).min(512);
        let mut pages = GuestPageAllocator::new(Gpa::new(1 << 20), pages, Placement::Contiguous);
        let config = E1000Config {
            rx_descriptors: shape.rx_descriptors,
            tx_descriptors: shape.tx_descriptors,
            ..E1000Config::default()
        };
        let driver = E1000Driver::bring_up(&mut net.guest(&mut host, vm), &mut pages, config)
            .map_err(PlatformError::Driver)?;
        guests.push(SimGuest { vm, driver });
    }
    Ok((host, net, guests))
}

/// The host, its network and its guests, in virtual time.
#[derive(Debug)]
pub struct HostSim {
    /// The host.
    pub host: Host,
    /// Its network.
    pub net: Network,
    /// The guests, by index.
    pub guests: Vec<SimGuest>,
    /// Virtual time.
    pub now: SimTime,
    /// The peer's cable into the physical NIC.
    cable_in: Link,
    /// The physical NIC's cable to the peer.
    cable_out: Link,
    /// Interrupts on their way to a guest's handler.
    irqs: EventQueue<usize>,
    /// Each guest's injected-interrupt count when last looked at.
    seen: Vec<u64>,
    irq_latency: SimDuration,
    /// With a cost model, the host's work takes CPU time: an event's
    /// effects reach the guests once the CPU has done it.
    cpu: Option<CostModel>,
    /// When the host's CPU is free again.
    busy_until: SimTime,
}

impl HostSim {
    /// The simulation of `host` and `net` with `guests`, whose cables to the
    /// peer are `cable_in` and `cable_out`; interrupts reach handlers
    /// `irq_latency` after their injection.
    pub fn new(
        host: Host,
        net: Network,
        guests: Vec<SimGuest>,
        cables: (Link, Link),
        irq_latency: SimDuration,
    ) -> HostSim {
        let seen = vec![0; guests.len()];
        let mut sim = HostSim {
            host,
            net,
            guests,
            now: SimTime::ZERO,
            cable_in: cables.0,
            cable_out: cables.1,
            irqs: EventQueue::new(),
            seen,
            irq_latency,
            cpu: None,
            busy_until: SimTime::ZERO,
        };
        sim.look_for_interrupts();
        sim
    }

    /// Guest `g`'s driver sends `frame` now; `false` if its ring is full.
    pub fn transmit(&mut self, g: usize, frame: &[u8]) -> bool {
        let Some(guest) = self.guests.get_mut(g) else {
            return false;
        };
        let before = self.cpu.map_or(0, |cost| {
            host_work_ns(&cost, &self.net.stats(), &self.host.stats())
        });
        self.net.run_timers(&mut self.host, self.now);
        let sent = guest
            .driver
            .transmit(&mut self.net.guest(&mut self.host, guest.vm), frame)
            .is_ok();
        self.charge(before);
        self.look_for_interrupts();
        sent
    }

    /// Charges the host's work (copies, clears, page-table writes,
    /// invalidations, under `cost`) as CPU time: interrupts that an event
    /// raises reach the guests only after the work the event made, done by
    /// one CPU in event order.
    pub fn charge_host_work(&mut self, cost: CostModel) {
        self.cpu = Some(cost);
    }

    /// The peer sends `frame` now; `false` if its cable's queue is full.
    pub fn send_from_wire(&mut self, frame: &[u8]) -> bool {
        self.cable_in.send(self.now, frame).is_some()
    }

    /// Runs every event due by `until` in time order (timers, then
    /// arrivals, then interrupts on ties), handing each frame a guest's
    /// driver receives to `deliver(guest, time, frame)` and each frame on a
    /// cable to `tap` as it arrives. Time ends at `until`.
    pub fn run_until(
        &mut self,
        until: SimTime,
        deliver: &mut dyn FnMut(usize, SimTime, &[u8]),
        tap: &mut dyn FnMut(SimTime, &[u8]),
    ) -> Result<(), PlatformError> {
        self.flush_out();
        while let Some(at) = self.next_event().filter(|&t| t <= until) {
            // A frame reaching the peer is only captured.
            self.step(at, deliver, tap, None)?;
        }
        self.now = self.now.max(until);
        Ok(())
    }

    /// What the physical NIC's cable out has carried.
    pub fn cable_out_stats(&self) -> LinkStats {
        self.cable_out.stats()
    }

    /// When this host's next event is due: a timer, a frame arriving on the
    /// cable in or reaching the far end of the cable out, or an interrupt
    /// reaching a guest.
    pub fn next_event(&self) -> Option<SimTime> {
        [
            self.net.next_timer(),
            self.cable_in.next_arrival(),
            self.cable_out.next_arrival(),
            self.irqs.next_time(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs the event due at `at` (timers first, then the cable in, then
    /// the cable out, whose frames go to `far`, or to `tap` if there is no
    /// far host, then interrupts).
    pub fn step(
        &mut self,
        at: SimTime,
        deliver: &mut dyn FnMut(usize, SimTime, &[u8]),
        tap: &mut dyn FnMut(SimTime, &[u8]),
        mut far: Option<FarEnd<'_>>,
    ) -> Result<(), PlatformError> {
        self.now = self.now.max(at);
        let before = self.work_ns();
        let timer = self.net.next_timer();
        // Timers due now fire first; the network's clocks move to now, so
        // whatever this event arms counts from it.
        self.net.run_timers(&mut self.host, at);
        if timer == Some(at) {
            // Fired above.
        } else if self.cable_in.next_arrival() == Some(at) {
            let HostSim {
                host,
                net,
                cable_in,
                ..
            } = self;
            let mut result = Ok(());
            cable_in.deliver_until(at, |t, f| {
                tap(t, f);
                if result.is_ok() {
                    result = net.receive_from_wire(host, f);
                }
            });
            result?;
        } else if self.cable_out.next_arrival() == Some(at) {
            let mut result = Ok(());
            self.cable_out.deliver_until(at, |t, f| match far.as_mut() {
                Some(far) if result.is_ok() => result = far(t, f),
                Some(_) => {}
                None => tap(t, f),
            });
            result?;
        } else if let Some((_, g)) = self.irqs.pop_until(at) {
            self.handle_interrupt(g, deliver)?;
        }
        self.charge(before);
        self.look_for_interrupts();
        self.flush_out();
        Ok(())
    }

    /// The host's work so far, ns (0 without a cost model).
    fn work_ns(&self) -> u64 {
        self.cpu.map_or(0, |cost| {
            host_work_ns(&cost, &self.net.stats(), &self.host.stats())
        })
    }

    /// The CPU did the work since `before` (ns of work) after whatever it
    /// was busy with.
    fn charge(&mut self, before: u64) {
        let work = self.work_ns().saturating_sub(before);
        if work != 0 {
            self.busy_until = self.now.max(self.busy_until) + SimDuration::from_nanos(work);
        }
    }

    /// A frame from another host's cable reaches this host's physical NIC
    /// at `at`.
    pub fn arrive(&mut self, at: SimTime, frame: &[u8]) -> Result<(), PlatformError> {
        self.now = self.now.max(at);
        let before = self.work_ns();
        self.net.run_timers(&mut self.host, at);
        self.net.receive_from_wire(&mut self.host, frame)?;
        self.charge(before);
        self.look_for_interrupts();
        self.flush_out();
        Ok(())
    }

    /// Guest `g` takes its interrupt: acknowledge, handler, EOI.
    fn handle_interrupt(
        &mut self,
        g: usize,
        deliver: &mut dyn FnMut(usize, SimTime, &[u8]),
    ) -> Result<(), PlatformError> {
        let Some(guest) = self.guests.get_mut(g) else {
            return Ok(());
        };
        let lapic = self.host.lapic_mut(guest.vm)?;
        if lapic.acknowledge().is_none() {
            return Ok(());
        }
        let now = self.now;
        guest
            .driver
            .handle_interrupt(&mut self.net.guest(&mut self.host, guest.vm), |f| {
                deliver(g, now, f);
            })
            .map_err(PlatformError::Guest)?;
        self.host.lapic_mut(guest.vm)?.eoi();
        Ok(())
    }

    /// Schedules a handler run for every guest injected since last time.
    fn look_for_interrupts(&mut self) {
        for (g, guest) in self.guests.iter().enumerate() {
            let Ok(lapic) = self.host.lapic(guest.vm) else {
                continue;
            };
            let injected = lapic.stats().injected.get();
            if let Some(seen) = self.seen.get_mut(g)
                && injected > *seen
            {
                *seen = injected;
                // The interrupt goes once the host's CPU has done the work
                // that raised it.
                let ready = self.now.max(self.busy_until);
                self.irqs.schedule_at(ready + self.irq_latency, g);
            }
        }
    }

    /// Puts what the physical NIC sent on the cable out; the frames reach
    /// its far end at their arrival times.
    fn flush_out(&mut self) {
        let HostSim {
            net,
            cable_out,
            now,
            ..
        } = self;
        net.drain_outgoing(|f| {
            let _ = cable_out.send(*now, f);
        });
    }
}

/// Two hosts whose physical NICs are joined by a cable: each host's cable
/// out carries its frames to the other host's physical NIC, in virtual
/// time, on one event loop.
#[derive(Debug)]
pub struct Fabric {
    /// The hosts, 0 and 1.
    pub hosts: [HostSim; 2],
}

impl Fabric {
    /// Runs both hosts' events due by `until` in time order (host 0 first
    /// on ties), handing each frame a guest receives to
    /// `deliver(host, guest, time, frame)` and each frame on the cable to
    /// `tap` as it arrives.
    pub fn run_until(
        &mut self,
        until: SimTime,
        deliver: FabricDelivery<'_>,
        tap: &mut dyn FnMut(SimTime, &[u8]),
    ) -> Result<(), PlatformError> {
        for h in &mut self.hosts {
            h.flush_out();
        }
        loop {
            let [a, b] = &mut self.hosts;
            let next = [a.next_event(), b.next_event()];
            let Some((at, i)) = next
                .iter()
                .enumerate()
                .filter_map(|(i, t)| Some(((*t)?, i)))
                .min()
                .filter(|&(t, _)| t <= until)
            else {
                break;
            };
            let (this, other) = if i == 0 { (a, b) } else { (b, a) };
            let mut far = |t: SimTime, f: &[u8]| {
                tap(t, f);
                other.arrive(t, f)
            };
            let mut into = |g: usize, t: SimTime, f: &[u8]| deliver(i, g, t, f);
            this.step(at, &mut into, &mut |_, _| {}, Some(&mut far))?;
        }
        for h in &mut self.hosts {
            h.now = h.now.max(until);
        }
        Ok(())
    }
}

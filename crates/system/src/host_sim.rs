//! A host with its network on the discrete-event loop: frames from a peer
//! arrive over a cable at their arrival times, the vNICs' moderation
//! timers fire in virtual time, and each interrupt injected into a VM's
//! local APIC reaches the guest's driver an interrupt latency later (the
//! guest acknowledges the vector, runs its handler, and signals EOI).

use iovirt_core::{EventQueue, SimDuration, SimTime};
use iovirt_drivers::E1000Driver;
use iovirt_vmm::{Host, Network, VmId};

use crate::link::Link;
use crate::platform::PlatformError;

/// A guest on the host: its VM and its e1000 driver.
#[derive(Debug)]
pub struct SimGuest {
    /// The VM.
    pub vm: VmId,
    /// Its driver.
    pub driver: E1000Driver,
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
        };
        sim.look_for_interrupts();
        sim
    }

    /// Guest `g`'s driver sends `frame` now; `false` if its ring is full.
    pub fn transmit(&mut self, g: usize, frame: &[u8]) -> bool {
        let Some(guest) = self.guests.get_mut(g) else {
            return false;
        };
        self.net.run_timers(&mut self.host, self.now);
        let sent = guest
            .driver
            .transmit(&mut self.net.guest(&mut self.host, guest.vm), frame)
            .is_ok();
        self.look_for_interrupts();
        sent
    }

    /// The peer sends `frame` now; `false` if its cable's queue is full.
    pub fn send_from_wire(&mut self, frame: &[u8]) -> bool {
        self.cable_in.send(self.now, frame).is_some()
    }

    /// Runs every event due by `until` in time order (timers, then
    /// arrivals, then interrupts on ties), handing each frame a guest's
    /// driver receives to `deliver(guest, time, frame)` and each frame on a
    /// cable to `tap`. Time ends at `until`.
    pub fn run_until(
        &mut self,
        until: SimTime,
        deliver: &mut dyn FnMut(usize, SimTime, &[u8]),
        tap: &mut dyn FnMut(SimTime, &[u8]),
    ) -> Result<(), PlatformError> {
        // What the guests sent since the last run leaves first.
        self.flush_out(tap);
        loop {
            let timer = self.net.next_timer();
            let arrival = self.cable_in.next_arrival();
            let irq = self.irqs.next_time();
            let Some(at) = [timer, arrival, irq]
                .into_iter()
                .flatten()
                .min()
                .filter(|&t| t <= until)
            else {
                break;
            };
            self.now = self.now.max(at);
            // Timers due now fire first; the network's clocks move to now,
            // so whatever this event arms counts from it.
            self.net.run_timers(&mut self.host, at);
            if timer == Some(at) {
                // Fired above.
            } else if arrival == Some(at) {
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
            } else if let Some((_, g)) = self.irqs.pop_until(at) {
                self.handle_interrupt(g, deliver)?;
            }
            self.look_for_interrupts();
            self.flush_out(tap);
        }
        self.now = self.now.max(until);
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
                self.irqs.schedule_at(self.now + self.irq_latency, g);
            }
        }
    }

    /// Puts what the physical NIC sent on the cable out, for the tap.
    fn flush_out(&mut self, tap: &mut dyn FnMut(SimTime, &[u8])) {
        let HostSim {
            net,
            cable_out,
            now,
            ..
        } = self;
        net.drain_outgoing(|f| {
            let _ = cable_out.send(*now, f);
        });
        cable_out.deliver_until(SimTime::from_nanos(u64::MAX), tap);
    }
}

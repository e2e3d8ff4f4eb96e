//! Seed 003's crossover: a frame one VM sends to another on the same host
//! never touches the physical NIC nor is copied. The cross-talk detector
//! sees the destination MAC belong to a local vNIC when the sender moves
//! TDT; the dynamic remapper maps the sender's transmit buffer page into
//! the receiver under its next receive buffer; the VMM completes the
//! receive descriptor (length, DD, EOP), moves the receiver's RDH and
//! injects its receive interrupt. When the receiver moves RDT past that
//! descriptor, the share ends and the sender's transmit completes (DD,
//! TDH, TXDW).
//!
//! Transmit descriptors complete in ring order, so a crossed frame holds
//! up the sender's ring until the receiver gives the buffer back: the
//! crossover cable's flow control. A receiver that does not give it back
//! within `crossover_patience` doorbells of the sender, or within
//! `crossover_timeout_ns` of virtual time when a scheduler drives the
//! network's clock ([`Network::run_timers`]), is given a private
//! copy of the page instead and marked unresponsive: frames to it are
//! copied from then on (it holds no crossed buffer it could give back, so
//! it stays so), and the sender goes on. Without virtual time the patience
//! counts the sender's doorbells; the timeout counts nanoseconds.

use iovirt_core::{Gpa, SimDuration, TimerToken, Timers};
use iovirt_nic::{RxOutcome, TxSlot, regs};

use super::Network;
use crate::VmmError;
use crate::host::Host;

const PAGE: u64 = 4096;
const ZEROS: [u8; PAGE as usize] = [0; PAGE as usize];
/// Shortest frame with an Ethernet header.
const HEADER: u16 = 14;

/// A frame vNIC `from` sent whose buffer page other VMs map, waiting for
/// them to give their receive buffers back.
#[derive(Debug, Clone, Copy)]
pub(super) struct Crossing {
    tx: TxSlot,
    /// The vNICs still holding the page, one bit each.
    targets: u64,
}

/// A receive descriptor of this vNIC that maps another VM's page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Held {
    from: usize,
    rx_index: u32,
    gpa: Gpa,
}

/// Crossover state of one vNIC, as sender and as receiver.
#[derive(Debug, Default)]
pub(super) struct CrossState {
    /// The frame this vNIC sent that is still held (at most one: TDH).
    crossing: Option<Crossing>,
    /// Doorbells rung while `crossing` held the ring up.
    blocked_kicks: u32,
    /// Descriptors of this vNIC mapping senders' pages.
    held: Vec<Held>,
    /// It kept a sender waiting too long: frames to it are copied.
    unresponsive: bool,
}

impl Network {
    /// Runs vNIC `i`'s transmit ring as the crossover VMM: frames for local
    /// VMs are crossed over, the rest go through the NIC's own engine and
    /// the switch, until the ring is empty or a crossed frame holds it up.
    pub(super) fn drive_tx(&mut self, host: &mut Host, i: usize) -> Result<(), VmmError> {
        // One lap of the largest ring at most.
        for _ in 0..4096 {
            if self.cross(i).is_none_or(|c| c.crossing.is_some()) {
                break;
            }
            let Ok(slot) = self.with_vnic(host, i, |nic, env| nic.tx_peek(env))? else {
                break;
            };
            if let Some((dst, targets)) = self.crossover_targets(host, i, &slot) {
                self.cross_over(host, i, slot, dst, targets)?;
            } else {
                let stepped = self.with_vnic(host, i, |nic, env| nic.tx_step(env))?;
                self.switch_pending(host, i);
                if !stepped {
                    break;
                }
            }
        }
        Ok(())
    }

    /// The cross-talk detector: the local vNICs a frame goes to, if it can
    /// be crossed over (one descriptor, a whole page to itself, a local
    /// destination).
    fn crossover_targets(&self, host: &Host, i: usize, slot: &TxSlot) -> Option<([u8; 6], u64)> {
        let eligible = slot.eop
            && !slot.nop
            && !slot.dext
            && slot.addr.raw().is_multiple_of(PAGE)
            && (HEADER..=PAGE as u16).contains(&slot.length);
        if !eligible {
            return None;
        }
        let vm = self.vnics.get(i)?.vm;
        let mut dst = [0u8; 6];
        host.peek(vm, Gpa::new(slot.addr.raw()), &mut dst).ok()?;
        // Statically wired (seed 003's static embodiment): everything goes
        // to the partner, whose receive filter has the last word.
        if let Some(j) = self.vnics.get(i)?.wired {
            return Some((dst, 1 << j));
        }
        let group = dst[0] & 1 != 0;
        let mut targets = 0u64;
        for (j, v) in self.vnics.iter().enumerate() {
            if j != i && (group || v.mac == dst) {
                targets |= 1 << j;
            }
        }
        (targets != 0).then_some((dst, targets))
    }

    /// The dynamic remapper and the register flow for one frame.
    fn cross_over(
        &mut self,
        host: &mut Host,
        i: usize,
        tx: TxSlot,
        dst: [u8; 6],
        targets: u64,
    ) -> Result<(), VmmError> {
        let from_vm = self
            .vnics
            .get(i)
            .map(|v| v.vm)
            .ok_or(VmmError::BadVm("no vNIC"))?;
        let len = usize::from(tx.length);
        let page = Gpa::new(tx.addr.raw());
        // The receivers see the whole page: clear what the sender left
        // beyond the frame, so they see this frame and nothing older.
        host.write(
            from_vm,
            Gpa::new(page.raw() + len as u64),
            ZEROS.get(len..).unwrap_or_default(),
        )?;
        self.stats.crossover_bytes_cleared.add(PAGE - len as u64);
        let mut held = 0u64;
        for j in (0..self.vnics.len()).filter(|j| targets >> j & 1 != 0) {
            let Some(to) = self.vnics.get(j) else {
                continue;
            };
            let (to_vm, unresponsive) = (to.vm, to.cross.unresponsive);
            if !unresponsive {
                let claim = self.with_vnic(host, j, |nic, env| nic.rx_claim(dst, len, env))?;
                let Ok(rx) = claim else {
                    // Refused (receiver off, filter, no descriptor, a bad
                    // ring), and counted, by the vNIC: a copy would be
                    // refused the same way.
                    self.stats.vnic_refused.inc();
                    continue;
                };
                let gpa = Gpa::new(rx.buffer.raw());
                if gpa.raw().is_multiple_of(PAGE)
                    && host.share_page(from_vm, page, to_vm, gpa).is_ok()
                {
                    let done = self.with_vnic(host, j, |nic, env| nic.rx_commit(&rx, len, env))?;
                    if matches!(done, RxOutcome::Stored { .. }) {
                        held |= 1 << j;
                        self.stats.crossovers.inc();
                        if let Some(v) = self.vnics.get_mut(j) {
                            v.cross.held.push(Held {
                                from: i,
                                rx_index: rx.index,
                                gpa,
                            });
                        }
                        continue;
                    }
                    host.unshare_page(to_vm, gpa)?;
                }
            }
            // Not crossable into this VM (a buffer not a whole page, a
            // pinned page, a slow receiver): its receive engine gets a copy.
            self.stats.crossover_fallbacks.inc();
            self.with_frame_at(host, from_vm, page, len, |net, host, f| {
                net.copy_into(host, j, f)
            })?;
        }
        let wired = self.vnics.get(i).is_some_and(|v| v.wired.is_some());
        if dst[0] & 1 != 0 && !wired {
            // Group frames also leave the host.
            self.with_frame_at(host, from_vm, page, len, |net, host, f| {
                net.uplink_transmit(host, f);
            })?;
        }
        if held == 0 {
            self.complete_tx(host, i, &tx)?;
        } else if let Some(v) = self.vnics.get_mut(i) {
            v.cross.crossing = Some(Crossing { tx, targets: held });
            v.cross.blocked_kicks = 0;
            let timeout = self.config.crossover_timeout_ns;
            if timeout != 0 {
                self.clock
                    .schedule(SimDuration::from_nanos(timeout), TimerToken(i as u64));
            }
        }
        Ok(())
    }

    /// Completes the sender's transmit descriptor.
    fn complete_tx(&mut self, host: &mut Host, i: usize, tx: &TxSlot) -> Result<(), VmmError> {
        if !self.with_vnic(host, i, |nic, env| nic.tx_complete(tx, env))? {
            // The guest reset or reprogrammed its ring meanwhile.
            self.stats.crossover_orphans.inc();
            log::debug!("vNIC {i}: crossed frame's descriptor is gone");
        }
        Ok(())
    }

    /// vNIC `j`'s guest moved RDT from `before` to `after`: every held
    /// descriptor in `(before, after]` has been read and refilled by the
    /// guest, so its share ends; senders whose last holder that was
    /// complete their transmit and go on.
    pub(super) fn rx_returned(
        &mut self,
        host: &mut Host,
        j: usize,
        before: u32,
    ) -> Result<(), VmmError> {
        let after = self.rx_tail(host, j);
        let count = self.rx_reg(host, j, regs::RDLEN) / 16;
        if count == 0 || before >= count || after >= count || before == after {
            return Ok(());
        }
        let returned = |x: u32| {
            (x + count - before) % count <= (after + count - before) % count && x != before
        };
        let mut k = 0;
        while let Some(h) = self.vnics.get(j).and_then(|v| v.cross.held.get(k)).copied() {
            if returned(h.rx_index) {
                if let Some(v) = self.vnics.get_mut(j) {
                    v.cross.held.swap_remove(k);
                    // It gives crossed buffers back: trust it again.
                    v.cross.unresponsive = false;
                }
                let vm = self
                    .vnics
                    .get(j)
                    .map(|v| v.vm)
                    .ok_or(VmmError::BadVm("no vNIC"))?;
                unshare(host, vm, h.gpa)?;
                self.release_target(host, h.from, j)?;
            } else {
                k += 1;
            }
        }
        Ok(())
    }

    /// The sender `i` rang its doorbell while a crossed frame held its ring
    /// up. Past the patience, each receiver still holding the page gets a
    /// private copy of it instead and is marked unresponsive.
    pub(super) fn sender_kicked(&mut self, host: &mut Host, i: usize) -> Result<(), VmmError> {
        let patience = self.config.crossover_patience;
        let Some(v) = self.vnics.get_mut(i) else {
            return Ok(());
        };
        let Some(c) = v.cross.crossing else {
            return Ok(());
        };
        v.cross.blocked_kicks += 1;
        if v.cross.blocked_kicks <= patience {
            return Ok(());
        }
        self.give_up_crossing(host, i, c.targets)
    }

    /// Sender `i`'s crossed frame has waited too long (doorbells or time):
    /// each receiver still holding it gets a copy and is marked
    /// unresponsive, and the sender goes on.
    pub(super) fn give_up_crossing(
        &mut self,
        host: &mut Host,
        i: usize,
        targets: u64,
    ) -> Result<(), VmmError> {
        for j in (0..self.vnics.len()).filter(|j| targets >> j & 1 != 0) {
            self.release_by_copy(host, j, |h| h.from == i)?;
        }
        Ok(())
    }

    /// The crossover's timeout expired for sender `i` (token `i` of the
    /// network's clock).
    pub(super) fn crossing_timed_out(&mut self, host: &mut Host, i: usize) -> Result<(), VmmError> {
        match self.vnics.get(i).and_then(|v| v.cross.crossing) {
            Some(c) => self.give_up_crossing(host, i, c.targets),
            None => Ok(()),
        }
    }

    /// Ends the shares of `j`'s held descriptors that `which` picks, giving
    /// `j` a private copy of each page so its frame stays intact.
    pub(super) fn release_by_copy(
        &mut self,
        host: &mut Host,
        j: usize,
        which: impl Fn(&Held) -> bool,
    ) -> Result<(), VmmError> {
        let Some(vm) = self.vnics.get(j).map(|v| v.vm) else {
            return Ok(());
        };
        let mut k = 0;
        while let Some(h) = self.vnics.get(j).and_then(|v| v.cross.held.get(k)).copied() {
            if !which(&h) {
                k += 1;
                continue;
            }
            if let Some(v) = self.vnics.get_mut(j) {
                v.cross.held.swap_remove(k);
                v.cross.unresponsive = true;
            }
            // The receiver keeps the frame in a private copy of the page
            // (unless it already wrote to it, which made one).
            if host.copy_shared_page(vm, h.gpa)? {
                self.stats.bytes_copied.add(PAGE);
            }
            self.stats.crossover_forced.inc();
            log::debug!("vNIC {j} kept vNIC {} waiting: given a copy", h.from);
            self.release_target(host, h.from, j)?;
        }
        Ok(())
    }

    /// Receiver `j` no longer holds sender `i`'s crossed page; the last one
    /// to let go completes the transmit and restarts the sender's ring.
    fn release_target(&mut self, host: &mut Host, i: usize, j: usize) -> Result<(), VmmError> {
        let Some(v) = self.vnics.get_mut(i) else {
            return Ok(());
        };
        let Some(c) = v.cross.crossing.as_mut() else {
            return Ok(());
        };
        c.targets &= !(1 << j);
        if c.targets != 0 {
            return Ok(());
        }
        let tx = c.tx;
        v.cross.crossing = None;
        self.clock.cancel(TimerToken(i as u64));
        self.complete_tx(host, i, &tx)?;
        self.drive_tx(host, i)
    }

    /// Reads the `len`-byte frame at `page` of `vm` into the scratch buffer
    /// and hands it to `then` (a copy into a vNIC, or out of the uplink).
    fn with_frame_at(
        &mut self,
        host: &mut Host,
        vm: crate::VmId,
        page: Gpa,
        len: usize,
        then: impl FnOnce(&mut Network, &mut Host, &[u8]),
    ) -> Result<(), VmmError> {
        let mut frame = core::mem::take(&mut self.scratch);
        frame.clear();
        if let Some(bytes) = frame.append(len) {
            host.peek(vm, page, bytes)?;
        }
        then(self, host, frame.as_slice());
        self.scratch = frame;
        Ok(())
    }

    fn cross(&self, i: usize) -> Option<&CrossState> {
        self.vnics.get(i).map(|v| &v.cross)
    }
}

impl CrossState {
    /// Whether this vNIC holds a page for another (it must let go before
    /// its ring changes under it).
    pub(super) fn holds(&self) -> bool {
        !self.held.is_empty()
    }
}

/// Ends a share that the receiver may already have ended by writing to the
/// page (copy on write).
fn unshare(host: &mut Host, vm: crate::VmId, gpa: Gpa) -> Result<(), VmmError> {
    match host.unshare_page(vm, gpa) {
        Err(VmmError::NotShared { .. }) => Ok(()),
        other => other,
    }
}

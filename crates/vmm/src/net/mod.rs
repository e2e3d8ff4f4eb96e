//! The host's network: a vNIC per VM, a switch by MAC address, and the
//! physical NIC (the uplink) with the demultiplexer that hands its received
//! frames to the vNICs, by copy or by page flipping (seed 002).
//!
//! Each vNIC is an emulated [`Nic`]: the guest's driver programs its
//! registers through [`Network::mmio_write`] and its DMA reaches the VM's
//! memory through the host MMU ([`GuestDma`]). A frame a vNIC transmits is
//! switched by destination MAC: to another vNIC (a copy into that VM's
//! receive buffer), or out of the uplink; broadcast and multicast go to
//! every other port. A frame the uplink receives is demultiplexed to the
//! vNIC owning its destination MAC.

mod bus;
mod crossover;
mod demux;
mod guest_dma;
mod uplink;

use iovirt_core::{Counter, FrameBuf, FrameQueue, Irq, MmioDevice, TimerQueue, TimerToken, Width};
use iovirt_iommu::RequesterId;
use iovirt_nic::{Nic, NicConfig, NicEnv, regs};
use serde::{Deserialize, Serialize};

use crate::VmmError;
use crate::host::{Host, VmId};

pub use bus::GuestBus;
pub use guest_dma::GuestDma;
use uplink::Uplink;

/// How the uplink's received frames reach the VMs (seed 002).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DemuxMode {
    /// Baseline: the physical NIC receives into host buffers and the VMM
    /// copies each frame into the destination VM's receive buffer.
    Copy,
    /// Enhanced: guests' receive pages are lent to a pool the physical NIC
    /// receives into, and the page holding a frame is remapped under the
    /// destination VM's next receive buffer. No copy.
    Flip,
}

/// How a frame from one VM reaches another VM on the same host (seed 003).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmToVm {
    /// The VMM's switch copies it from the sender's vNIC into the
    /// receiver's, as a software bridge does.
    Bridge,
    /// Seed 003's baseline (FIG. 1): out of the physical NIC and back in
    /// through its loopback, then demultiplexed like a frame from the wire.
    /// (Group frames are bridged.)
    Loopback,
    /// Seed 003: the sender's transmit buffer page is mapped into the
    /// receiver under its next receive buffer; no copy, no physical NIC.
    Crossover,
}

/// The host's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// The physical NIC's MAC address.
    pub uplink_mac: [u8; 6],
    /// The physical NIC's requester ID (its DMA is untranslated).
    pub uplink_requester: RequesterId,
    /// Receive descriptors of the physical NIC's ring (8 to 256, a multiple
    /// of 8): the ring and its buffers are host frames.
    pub uplink_rx_descriptors: u16,
    /// Transmit descriptors of the physical NIC's ring (8 to 256, a
    /// multiple of 8).
    pub uplink_tx_descriptors: u16,
    /// Copy or page-flip demultiplexing.
    pub demux: DemuxMode,
    /// How frames between local VMs travel.
    pub vm_to_vm: VmToVm,
    /// Crossover: doorbells a sender may ring while a receiver holds its
    /// crossed frame before the receiver is given a copy instead.
    pub crossover_patience: u32,
    /// Crossover: virtual time a receiver may hold a crossed frame before
    /// it is given a copy instead, ns (0: no limit). Needs a scheduler to
    /// run the network's timers.
    pub crossover_timeout_ns: u64,
}

/// What the network did, for a researcher's report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NetStats {
    /// Frames the physical NIC took off the wire and handed to the host.
    pub uplink_rx_frames: Counter,
    /// Frames the physical NIC put on the wire.
    pub uplink_tx_frames: Counter,
    /// Frames from one vNIC to another on this host (switched locally).
    pub local_frames: Counter,
    /// Frames placed in a VM's receive buffer by a copy.
    pub copies: Counter,
    /// Bytes so copied.
    pub bytes_copied: Counter,
    /// Frames placed in a VM by remapping the page holding them.
    pub flips: Counter,
    /// Frames the page-flip demultiplexer had to copy: to several VMs
    /// (broadcast), into a buffer not a whole page, or into a pinned page.
    pub flip_fallbacks: Counter,
    /// Guest receive pages lent to the buffer pool.
    pub pages_lent: Counter,
    /// Pool frames that held a frame no VM took, zeroed and reused.
    pub pool_recycled: Counter,
    /// Times the physical NIC's ring could not be refilled: the pool was
    /// empty (guests posted no receive buffers).
    pub pool_empty: Counter,
    /// Frames for no vNIC on this host, dropped.
    pub no_destination: Counter,
    /// Frames a vNIC refused (receiver off, filter, no descriptor, fault).
    pub vnic_refused: Counter,
    /// Frames a vNIC sent to its own MAC address, not sent back.
    pub hairpin_drops: Counter,
    /// Frames for the wire dropped because the physical NIC's transmit ring
    /// was full.
    pub uplink_tx_full: Counter,
    /// Interrupts injected into guests by their vNICs.
    pub interrupts_injected: Counter,
    /// Frames crossed over into a local VM's receive buffer (seed 003),
    /// one per receiver.
    pub crossovers: Counter,
    /// Frames for a local VM that could not be crossed over and were
    /// copied (or refused) instead.
    pub crossover_fallbacks: Counter,
    /// Crossed pages a slow receiver was given a copy of.
    pub crossover_forced: Counter,
    /// Crossed frames whose transmit descriptor the sender reset away.
    pub crossover_orphans: Counter,
    /// Crossed frames a receiver held past `crossover_timeout_ns`.
    pub crossover_timeouts: Counter,
    /// Bytes cleared beyond crossed frames in their pages.
    pub crossover_bytes_cleared: Counter,
    /// Frames between local VMs that went out of the physical NIC and back
    /// through its loopback.
    pub loopback_frames: Counter,
}

/// One VM's emulated NIC.
#[derive(Debug)]
struct Vnic {
    vm: VmId,
    mac: [u8; 6],
    nic: Nic,
    timers: TimerQueue,
    /// Interrupts raised during one call, injected after it.
    irqs: Vec<Irq>,
    /// Crossover state, as sender and as receiver.
    cross: crossover::CrossState,
    /// The vNIC this one is wired to (a private cable), if any.
    wired: Option<usize>,
}

/// The host's network: vNICs, switch, uplink and demultiplexer.
#[derive(Debug)]
pub struct Network {
    config: NetworkConfig,
    vnics: Vec<Vnic>,
    uplink: Uplink,
    /// Zeroed host frames the physical NIC may receive into (flip mode).
    pool: Vec<iovirt_core::Hpa>,
    /// Frames a vNIC transmitted during one call, switched after it.
    pending: FrameQueue,
    /// Frames the physical NIC transmitted, for the platform's wire.
    outgoing: FrameQueue,
    /// One frame read out of a host buffer.
    scratch: FrameBuf,
    /// Frames the physical NIC looped back (seed 003's baseline).
    loopback: FrameQueue,
    /// The crossover's timeouts, one token per sending vNIC.
    clock: TimerQueue,
    stats: NetStats,
}

/// The most vNICs a network has (the crossover keeps one bit per vNIC).
const MAX_VNICS: usize = 64;
/// CTRL.RST: device reset.
const CTRL_RST: u64 = 1 << 26;

/// A vNIC's environment for one call.
type VnicEnv<'a> = NicEnv<'a, GuestDma<'a>, Vec<Irq>, FrameQueue, TimerQueue>;

impl Network {
    /// The network of `host`: attaches the physical NIC, gives it its rings
    /// and (in copy mode) its host buffers, and enables it.
    pub fn new(host: &mut Host, config: NetworkConfig) -> Result<Network, VmmError> {
        let uplink = Uplink::new(host, &config)?;
        let mut net = Network {
            config,
            vnics: Vec::new(),
            uplink,
            pool: Vec::new(),
            pending: FrameQueue::default(),
            outgoing: FrameQueue::default(),
            scratch: FrameBuf::with_capacity(iovirt_nic::MAX_FRAME),
            loopback: FrameQueue::default(),
            clock: TimerQueue::new(),
            stats: NetStats::default(),
        };
        net.refill_uplink(host)?;
        Ok(net)
    }

    /// Gives `vm` an emulated NIC with MAC address `mac` raising `irq`
    /// (the MSI data; its low byte is the vector).
    pub fn add_vnic(
        &mut self,
        host: &mut Host,
        vm: VmId,
        mac: [u8; 6],
        irq: Irq,
    ) -> Result<(), VmmError> {
        host.lapic(vm)?;
        if self.vnics.iter().any(|v| v.vm == vm) {
            return Err(VmmError::BadVm("the VM has a vNIC already"));
        }
        if mac == self.config.uplink_mac || self.vnics.iter().any(|v| v.mac == mac) {
            return Err(VmmError::BadVm("MAC address already in use"));
        }
        if mac[0] & 1 != 0 {
            return Err(VmmError::BadVm("a multicast MAC address"));
        }
        if self.vnics.len() >= MAX_VNICS {
            return Err(VmmError::BadHost("64 vNICs at most"));
        }
        let mut nic = Nic::new(NicConfig { mac, irq });
        // The crossover VMM runs the transmit rings itself.
        nic.set_tx_backend(self.config.vm_to_vm == VmToVm::Crossover);
        self.vnics.push(Vnic {
            vm,
            mac,
            nic,
            timers: TimerQueue::new(),
            irqs: Vec::new(),
            cross: crossover::CrossState::default(),
            wired: None,
        });
        let index = self.vnics.len();
        self.uplink.accept_mac(host, index, mac, &mut self.outgoing);
        Ok(())
    }

    /// Wires the vNICs of `a` and `b` together, as with a crossover cable
    /// (seed 003's static embodiment: a private network of the two): from
    /// now on every frame either sends goes to the other alone, crossed
    /// over where it can be (with [`VmToVm::Crossover`]) and copied
    /// otherwise, and neither reaches the switch or the physical NIC.
    pub fn wire_vms(&mut self, a: VmId, b: VmId) -> Result<(), VmmError> {
        let (Some(i), Some(j)) = (self.vnic_index(a), self.vnic_index(b)) else {
            return Err(VmmError::BadVm("no vNIC to wire"));
        };
        if i == j {
            return Err(VmmError::BadVm("a vNIC wired to itself"));
        }
        if self
            .vnics
            .iter()
            .any(|v| v.wired.is_some() && (v.vm == a || v.vm == b))
        {
            return Err(VmmError::BadVm("a vNIC is wired already"));
        }
        for (x, y) in [(i, j), (j, i)] {
            if let Some(v) = self.vnics.get_mut(x) {
                v.wired = Some(y);
            }
        }
        Ok(())
    }

    /// The guest of `vm` reads a register of its vNIC; 0 if it has none.
    pub fn mmio_read(&mut self, host: &mut Host, vm: VmId, offset: u64, width: Width) -> u64 {
        let Some(i) = self.vnic_index(vm) else {
            return 0;
        };
        self.with_vnic(host, i, |nic, env| nic.mmio_read(offset, width, env))
            .unwrap_or(0)
    }

    /// The guest of `vm` writes a register of its vNIC. Frames the write
    /// makes it transmit are switched before this returns; in flip mode, a
    /// receive tail (RDT) that moves lends the newly posted pages; with
    /// crossover, the VMM runs the transmit ring on TDT and TCTL, and a
    /// receive tail that moves ends the shares of the descriptors returned.
    pub fn mmio_write(&mut self, host: &mut Host, vm: VmId, offset: u64, width: Width, value: u64) {
        let Some(i) = self.vnic_index(vm) else {
            return;
        };
        if let Err(err) = self.trap_write(host, i, offset, width, value) {
            log::warn!("vNIC {i}: write of {offset:#x}: {err}");
        }
    }

    fn trap_write(
        &mut self,
        host: &mut Host,
        i: usize,
        offset: u64,
        width: Width,
        value: u64,
    ) -> Result<(), VmmError> {
        let crossover = self.config.vm_to_vm == VmToVm::Crossover;
        let rdt = offset == regs::RDT;
        let before = if rdt { self.rx_tail(host, i) } else { 0 };
        // A receiver about to reset or move its ring lets go of the pages
        // it maps, keeping copies of them.
        let ring_change = matches!(offset, regs::RDBAL | regs::RDBAH | regs::RDLEN | regs::RDH)
            || (offset == regs::CTRL && value & CTRL_RST != 0);
        if crossover && ring_change && self.vnics.get(i).is_some_and(|v| v.cross.holds()) {
            self.release_by_copy(host, i, |_| true)?;
        }
        self.with_vnic(host, i, |nic, env| {
            nic.mmio_write(offset, width, value, env);
        })?;
        if rdt && self.config.demux == DemuxMode::Flip {
            self.lend_posted(host, i, before);
        }
        if rdt && crossover {
            self.rx_returned(host, i, before)?;
        }
        if crossover && (offset == regs::TDT || offset == regs::TCTL) {
            self.sender_kicked(host, i)?;
            self.drive_tx(host, i)?;
        }
        self.switch_pending(host, i);
        Ok(())
    }

    /// `vm`'s view of its vNIC and its memory, for its driver.
    pub fn guest<'a>(&'a mut self, host: &'a mut Host, vm: VmId) -> GuestBus<'a> {
        GuestBus::new(self, host, vm)
    }

    /// A frame arrives from the wire at the physical NIC: it is received
    /// into a host buffer (or pool frame) and demultiplexed to its VM.
    pub fn receive_from_wire(&mut self, host: &mut Host, frame: &[u8]) -> Result<(), VmmError> {
        self.uplink.receive(host, frame, &mut self.outgoing);
        self.demux_uplink(host)?;
        self.refill_uplink(host)
    }

    /// When the next timer is due, if any: a vNIC's interrupt moderation or
    /// a crossover timeout. The platform's scheduler calls
    /// [`Network::run_timers`] then.
    pub fn next_timer(&self) -> Option<iovirt_core::SimTime> {
        self.vnics
            .iter()
            .filter_map(|v| v.timers.next_expiry())
            .chain(self.clock.next_expiry())
            .min()
    }

    /// Fires every timer due by `until`, in time order (vNICs in order,
    /// then the crossover's clock, on ties), injecting the interrupts they
    /// release; every clock then reads `until`. A scheduler calls it at
    /// each event's time so that timers armed then count from it. Returns
    /// the timers fired.
    pub fn run_timers(&mut self, host: &mut Host, until: iovirt_core::SimTime) -> u64 {
        let mut fired = 0;
        // Each round fires the earliest due timer; a fired timer may arm
        // another, which is then looked at too.
        loop {
            let vnic = self
                .vnics
                .iter()
                .enumerate()
                .filter_map(|(i, v)| Some((v.timers.next_expiry()?, i)))
                .min();
            let cross = self.clock.next_expiry();
            let take_vnic = match (vnic, cross) {
                (Some((t, _)), Some(c)) => t <= c,
                (Some(_), None) => true,
                _ => false,
            };
            if take_vnic {
                let Some((at, i)) = vnic.filter(|&(at, _)| at <= until) else {
                    break;
                };
                let token = self.vnics.get_mut(i).and_then(|v| v.timers.pop_until(at));
                if let Some(token) = token
                    && self
                        .with_vnic(host, i, |nic, env| nic.on_timer(token, env))
                        .is_ok()
                {
                    fired += 1;
                }
            } else {
                let Some(at) = cross.filter(|&at| at <= until) else {
                    break;
                };
                if let Some(TimerToken(i)) = self.clock.pop_until(at) {
                    fired += 1;
                    self.stats.crossover_timeouts.inc();
                    if let Err(err) = self.crossing_timed_out(host, i as usize) {
                        log::warn!("crossover timeout of vNIC {i}: {err}");
                    }
                }
            }
        }
        for v in &mut self.vnics {
            // Everything due by `until` fired above: this moves the clock.
            let none = v.timers.pop_until(until);
            debug_assert!(none.is_none());
        }
        let none = self.clock.pop_until(until);
        debug_assert!(none.is_none());
        fired
    }

    /// Hands every frame the physical NIC transmitted to `wire`, oldest
    /// first, and forgets them.
    pub fn drain_outgoing(&mut self, mut wire: impl FnMut(&[u8])) {
        for frame in self.outgoing.frames() {
            wire(frame);
        }
        self.outgoing.clear();
    }

    /// Shows every frame the physical NIC transmitted and not yet drained
    /// to `look`, oldest first, keeping them.
    pub fn with_outgoing(&self, mut look: impl FnMut(&[u8])) {
        for frame in self.outgoing.frames() {
            look(frame);
        }
    }

    /// The counters.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// The vNIC of `vm` (its registers' state and counters).
    pub fn vnic(&self, vm: VmId) -> Option<&Nic> {
        self.vnics.iter().find(|v| v.vm == vm).map(|v| &v.nic)
    }

    /// The physical NIC.
    pub fn uplink(&self) -> &Nic {
        &self.uplink.nic
    }

    /// Frames waiting in the buffer pool (flip mode).
    pub fn pool_frames(&self) -> usize {
        self.pool.len()
    }

    fn vnic_index(&self, vm: VmId) -> Option<usize> {
        self.vnics.iter().position(|v| v.vm == vm)
    }

    /// Runs `f` on vNIC `i` with its environment, then injects what it
    /// raised into its VM.
    fn with_vnic<R>(
        &mut self,
        host: &mut Host,
        i: usize,
        f: impl FnOnce(&mut Nic, &mut VnicEnv<'_>) -> R,
    ) -> Result<R, VmmError> {
        let Network {
            vnics,
            pending,
            stats,
            ..
        } = self;
        let v = vnics.get_mut(i).ok_or(VmmError::BadVm("no such vNIC"))?;
        let vm = v.vm;
        let mut dma = GuestDma::new(host, vm);
        let mut env = NicEnv {
            dma: &mut dma,
            irq: &mut v.irqs,
            net: pending,
            timers: &mut v.timers,
        };
        let r = f(&mut v.nic, &mut env);
        for irq in v.irqs.drain(..) {
            host.inject(vm, irq)?;
            stats.interrupts_injected.inc();
        }
        Ok(r)
    }

    /// Switches the frames vNIC `from` transmitted.
    fn switch_pending(&mut self, host: &mut Host, from: usize) {
        if self.pending.is_empty() {
            return;
        }
        let pending = core::mem::take(&mut self.pending);
        let wired = self.vnics.get(from).and_then(|v| v.wired);
        for frame in pending.frames() {
            if let Some(to) = wired {
                // A private cable: the partner's receive engine decides.
                self.stats.local_frames.inc();
                self.copy_into(host, to, frame);
                continue;
            }
            let Some(dst) = frame.first_chunk::<6>().copied() else {
                continue;
            };
            let group = dst[0] & 1 != 0;
            let mut local = false;
            for to in 0..self.vnics.len() {
                let mac = self.vnics.get(to).map(|v| v.mac);
                if !(group || mac == Some(dst)) {
                    continue;
                }
                if to == from {
                    if !group {
                        self.stats.hairpin_drops.inc();
                        log::debug!("vNIC {from} sent a frame to its own MAC: dropped");
                        local = true;
                    }
                    continue;
                }
                local = true;
                self.stats.local_frames.inc();
                if self.config.vm_to_vm == VmToVm::Loopback && !group {
                    self.loop_back(host, frame);
                } else {
                    self.copy_into(host, to, frame);
                }
            }
            if group || !local {
                self.uplink_transmit(host, frame);
            }
        }
        self.pending = pending;
        self.pending.clear();
    }

    /// The baseline placement: vNIC `to`'s receive engine copies `frame`
    /// into the VM's next receive buffer.
    fn copy_into(&mut self, host: &mut Host, to: usize, frame: &[u8]) {
        let outcome = self.with_vnic(host, to, |nic, env| nic.receive(frame, env));
        match outcome {
            Ok(iovirt_nic::RxOutcome::Stored { .. }) => {
                self.stats.copies.inc();
                self.stats.bytes_copied.add(frame.len() as u64);
            }
            Ok(other) => {
                self.stats.vnic_refused.inc();
                log::debug!("vNIC {to} refused a frame: {other:?}");
            }
            Err(err) => log::warn!("vNIC {to}: {err}"),
        }
    }

    /// Seed 003's baseline: `frame` goes out of the physical NIC (a copy
    /// into a host transmit buffer, the NIC's DMA read) and comes straight
    /// back in through its loopback (the NIC's DMA write, the demultiplexer).
    fn loop_back(&mut self, host: &mut Host, frame: &[u8]) {
        let mut looped = core::mem::take(&mut self.loopback);
        looped.clear();
        if self.uplink.transmit(host, frame, &mut looped) {
            self.stats.copies.inc();
            self.stats.bytes_copied.add(frame.len() as u64);
        } else {
            self.stats.uplink_tx_full.inc();
        }
        for f in looped.frames() {
            self.stats.uplink_tx_frames.inc();
            self.stats.loopback_frames.inc();
            if let Err(err) = self.receive_from_wire(host, f) {
                log::warn!("uplink loopback: {err}");
            }
        }
        self.loopback = looped;
    }

    /// Sends `frame` out of the physical NIC.
    fn uplink_transmit(&mut self, host: &mut Host, frame: &[u8]) {
        let before = self.outgoing.len();
        if !self.uplink.transmit(host, frame, &mut self.outgoing) {
            self.stats.uplink_tx_full.inc();
        }
        let sent = self.outgoing.len().saturating_sub(before);
        self.stats.uplink_tx_frames.add(sent as u64);
        if sent != 0 {
            // The host copied it into its transmit buffer.
            self.stats.copies.inc();
            self.stats.bytes_copied.add(frame.len() as u64);
        }
    }
}

//! The device: register file, interrupts, EEPROM, statistics registers,
//! and the MMIO entry points. The rings are in `tx.rs` and `rx.rs`.

use iovirt_core::{
    Counter, DmaPort, FrameBuf, InterruptSink, Irq, MmioDevice, NetworkPort, SimTime, Stats,
    Timers, Width,
};
use serde::Serialize;

use crate::filter::ReceiveFilter;
use crate::regs::*;

/// Largest frame either engine handles (with RCTL.LPE, or gathered on TX):
/// 16 KiB, the 8254x's jumbo limit.
pub const MAX_FRAME: usize = 16 * 1024;
/// Largest frame without long-packet enable: 1518 bytes plus a VLAN tag.
pub const MAX_STANDARD_FRAME: usize = 1522;

/// What a device is given on each call: its DMA port, its interrupt sink,
/// its network port and its timers (context passing: the device stores
/// none of them). The platform calls [`Nic::on_timer`] when a timer the NIC
/// armed expires.
pub struct NicEnv<'a, D: ?Sized, I: ?Sized, N: ?Sized, T: ?Sized> {
    /// Memory as the device sees it.
    pub dma: &'a mut D,
    /// Where the device's interrupt goes.
    pub irq: &'a mut I,
    /// Where transmitted frames go.
    pub net: &'a mut N,
    /// The clock and the interrupt-moderation timers.
    pub timers: &'a mut T,
}

/// Fixed properties of one NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NicConfig {
    /// The MAC address in the EEPROM (words 0-2), loaded into RAL0/RAH0 at reset.
    pub mac: [u8; 6],
    /// The interrupt the device raises.
    pub irq: Irq,
}

/// The researcher's counters (never cleared by the guest).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NicStats {
    /// Frames transmitted.
    pub tx_frames: Counter,
    /// Bytes transmitted.
    pub tx_bytes: Counter,
    /// TX descriptors processed.
    pub tx_descriptors: Counter,
    /// Frames received into the rings.
    pub rx_frames: Counter,
    /// Bytes received into the rings.
    pub rx_bytes: Counter,
    /// RX descriptors used.
    pub rx_descriptors: Counter,
    /// Frames dropped: no free RX descriptor (RDH == RDT), or not enough.
    pub rx_no_descriptor: Counter,
    /// Frames dropped by the receive filter.
    pub rx_filtered: Counter,
    /// Frames dropped: receiver disabled.
    pub rx_disabled: Counter,
    /// Frames dropped: longer than allowed (LPE off, or beyond 16 KiB).
    pub rx_oversize: Counter,
    /// Frames dropped on TX: gathered beyond 16 KiB.
    pub tx_oversize: Counter,
    /// RX descriptors with buffer address 0, skipped.
    pub rx_null_buffers: Counter,
    /// Frames a paravirtual backend placed in a guest buffer itself and
    /// committed with [`Nic::rx_commit`].
    pub rx_backend_placed: Counter,
    /// Frames [`Nic::rx_claim`] refused because they do not fit one
    /// receive buffer (a backend places a frame in a single buffer).
    pub rx_backend_too_long: Counter,
    /// TX descriptors whose frame a transmit backend delivered itself and
    /// completed with [`Nic::tx_complete`] (each also counts in
    /// `tx_descriptors`, and its frame in `tx_frames` and `tx_bytes`).
    pub tx_backend_completed: Counter,
    /// Descriptor or buffer DMAs that faulted.
    pub dma_faults: Counter,
    /// Ring operations stopped by a bad ring (length 0, head or tail beyond it).
    pub ring_errors: Counter,
    /// Extended descriptors this model does not implement, skipped.
    pub tx_unsupported: Counter,
    /// NOP transmit commands (seed 000) executed.
    pub nop_commands: Counter,
    /// Interrupts raised.
    pub interrupts: Counter,
    /// Accesses to registers this model does not implement.
    pub unknown_register_accesses: Counter,
    /// Interrupts held back by the ITR throttle (sent when it allows).
    pub interrupts_throttled: Counter,
    /// Interrupt causes delayed by RDTR/RADV or TIDV/TADV.
    pub interrupts_delayed: Counter,
    /// IOTLB hits of the DMAs that handle frames (the critical path).
    pub critical_iotlb_hits: Counter,
    /// IOTLB misses of the DMAs that handle frames: what seed 000's
    /// prefetchers aim to bring to zero.
    pub critical_iotlb_misses: Counter,
    /// Page-table entries read by those misses.
    pub critical_table_reads: Counter,
    /// The receive path's share of `critical_iotlb_misses`.
    pub rx_critical_iotlb_misses: Counter,
    /// The receive path's share of `critical_iotlb_hits`.
    pub rx_critical_iotlb_hits: Counter,
    /// The receive path's share of `critical_table_reads`.
    pub rx_critical_table_reads: Counter,
    /// The transmit path's share of `critical_iotlb_misses` (NOP commands'
    /// descriptor fetches included).
    pub tx_critical_iotlb_misses: Counter,
    /// Prefetch DMAs issued by the device-side prefetchers.
    pub prefetches: Counter,
    /// Prefetch DMAs that faulted (ignored, as the seed's dummy DMAs are).
    pub prefetch_faults: Counter,
    /// IOTLB misses taken by prefetches, off the critical path.
    pub prefetch_iotlb_misses: Counter,
    /// Page-table entries read by prefetches.
    pub prefetch_table_reads: Counter,
}

impl Stats for NicStats {}

/// The 8254x statistics registers (clear on read).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StatRegs {
    pub(crate) mpc: u32,
    pub(crate) gprc: u32,
    pub(crate) gptc: u32,
    pub(crate) gorc: u64,
    pub(crate) gotc: u64,
    pub(crate) tpr: u32,
    pub(crate) tpt: u32,
}

/// One descriptor ring's registers.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Ring {
    pub(crate) bal: u32,
    pub(crate) bah: u32,
    pub(crate) len: u32,
    pub(crate) head: u32,
    pub(crate) tail: u32,
}

impl Ring {
    pub(crate) fn base(&self) -> u64 {
        (u64::from(self.bah) << 32) | u64::from(self.bal & !0xf)
    }

    /// Descriptors in the ring: the length's low 7 bits are ignored, as the
    /// hardware requires a multiple of 128 bytes.
    pub(crate) fn count(&self) -> u32 {
        (self.len & !0x7f) / 16
    }

    /// Whether head and tail index the ring; processing a bad ring stops
    /// rather than wrapping forever (CVE-2016-1981 in another emulator).
    pub(crate) fn valid(&self) -> bool {
        let n = self.count();
        n != 0 && self.head < n && self.tail < n
    }

    /// The index after `i`: `(i + 1) % count`, 0 for a ring of no
    /// descriptors. Compares rather than divides unless `i + 1` is past
    /// the end (only a wrap, on a valid ring).
    #[inline]
    pub(crate) fn after(&self, i: u32) -> u32 {
        let next = i + 1;
        let count = self.count();
        if next < count {
            next
        } else {
            next.checked_rem(count).unwrap_or(0)
        }
    }

    /// The address of the descriptor at the head (meaningful when valid).
    pub(crate) fn head_address(&self) -> u64 {
        self.base()
            .wrapping_add(u64::from(self.head) * crate::desc::DESC_SIZE)
    }
}

/// An e1000-style NIC.
///
/// ```
/// use iovirt_core::{DmaPort, HostMemory, Hpa, Iova, Irq, MmioDevice, PassthroughDma, PhysMemory, TimerQueue, Width};
/// use iovirt_nic::{regs, Nic, NicConfig, NicEnv};
///
/// let mut mem = HostMemory::new(1 << 20)?;
/// let mut nic = Nic::new(NicConfig { mac: [2, 0, 0, 0, 0, 1], irq: Irq(5) });
/// let (mut irqs, mut wire): (Vec<Irq>, Vec<Vec<u8>>) = (Vec::new(), Vec::new());
/// let mut net = |f: &[u8]| wire.push(f.to_vec());
/// // A one-descriptor frame at 0x2000, ring at 0x1000 with 8 descriptors.
/// mem.write(Hpa::new(0x2000), &[0xab; 60])?;
/// mem.write_u64(Hpa::new(0x1000), 0x2000)?;
/// mem.write_u32(Hpa::new(0x1008), 60 | (0x09 << 24))?; // length 60, EOP | RS
/// let mut dma = PassthroughDma::new(&mut mem);
/// let mut timers = TimerQueue::new();
/// let mut env = NicEnv { dma: &mut dma, irq: &mut irqs, net: &mut net, timers: &mut timers };
/// for (reg, value) in [(regs::TDBAL, 0x1000), (regs::TDLEN, 128), (regs::TCTL, 2), (regs::IMS, 1), (regs::TDT, 1)] {
///     nic.mmio_write(reg, Width::U32, value, &mut env);
/// }
/// assert_eq!(nic.mmio_read(regs::TDH, Width::U32, &mut env), 1);
/// drop(env);
/// assert_eq!(wire.len(), 1);
/// assert_eq!(irqs, [Irq(5)]); // TXDW
/// assert_eq!(mem.read_u32(Hpa::new(0x100c))? & 1, 1); // DD written back
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Nic {
    pub(crate) config: NicConfig,
    pub(crate) ctrl: u32,
    pub(crate) eerd: u32,
    pub(crate) icr: u32,
    pub(crate) ims: u32,
    pub(crate) itr: u32,
    pub(crate) rctl: u32,
    pub(crate) tctl: u32,
    pub(crate) rx: Ring,
    pub(crate) tx: Ring,
    pub(crate) delays: [u32; 4],
    pub(crate) filter: ReceiveFilter,
    pub(crate) regs_stats: StatRegs,
    pub(crate) stats: NicStats,
    /// The frame being gathered from TX descriptors (allocated once).
    pub(crate) tx_frame: FrameBuf,
    /// Whether the frame being gathered overflowed and is being discarded.
    pub(crate) tx_discard: bool,
    /// Seed 000's device-side prefetchers.
    pub(crate) prefetchers: crate::prefetch::Prefetchers,
    /// Interrupt moderation state (ITR, RDTR/RADV, TIDV/TADV).
    pub(crate) moderation: crate::moderation::Moderation,
    /// Bumped whenever the guest writes RDBAL, RDBAH, RDLEN or RDH, or the
    /// device resets: a backend's claimed RX slot is stale once it moves.
    /// Kept across resets so a reset can never bring an old value back.
    pub(crate) rx_epoch: u64,
    /// The same for the TX ring (TDBAL, TDBAH, TDLEN, TDH, reset): a
    /// backend's peeked TX slot is stale once it moves.
    pub(crate) tx_epoch: u64,
    /// Whether a transmit backend drives the TX ring ([`Nic::set_tx_backend`]):
    /// then TDT and TCTL writes do not run the transmit engine. The
    /// hypervisor's choice, not the guest's: kept across resets.
    pub(crate) tx_backend: bool,
}

impl Nic {
    /// A NIC after power-on reset.
    pub fn new(config: NicConfig) -> Nic {
        let frame = FrameBuf::with_capacity(MAX_FRAME);
        Nic::after_reset(
            config,
            NicStats::default(),
            crate::prefetch::Prefetchers::default(),
            frame,
        )
    }

    /// Device reset (power-on, or CTRL.RST): registers to their defaults, the
    /// EEPROM's MAC address in RAL0/RAH0. Counters, the prefetcher choice
    /// and the transmit backend setting are kept.
    pub fn reset(&mut self) {
        let frame = core::mem::take(&mut self.tx_frame);
        let rx_epoch = self.rx_epoch.wrapping_add(1);
        let tx_epoch = self.tx_epoch.wrapping_add(1);
        let tx_backend = self.tx_backend;
        *self = Nic::after_reset(self.config, self.stats, self.prefetchers, frame);
        self.rx_epoch = rx_epoch;
        self.tx_epoch = tx_epoch;
        self.tx_backend = tx_backend;
    }

    /// The state reset leaves, keeping what survives it.
    fn after_reset(
        config: NicConfig,
        stats: NicStats,
        prefetchers: crate::prefetch::Prefetchers,
        mut tx_frame: FrameBuf,
    ) -> Nic {
        tx_frame.clear();
        let mut filter = ReceiveFilter::default();
        filter.set_address(0, config.mac);
        Nic {
            config,
            ctrl: 0,
            eerd: 0,
            icr: 0,
            ims: 0,
            itr: 0,
            rctl: 0,
            tctl: 0,
            rx: Ring::default(),
            tx: Ring::default(),
            delays: [0; 4],
            filter,
            regs_stats: StatRegs::default(),
            stats,
            tx_frame,
            tx_discard: false,
            prefetchers,
            moderation: crate::moderation::Moderation::default(),
            rx_epoch: 0,
            tx_epoch: 0,
            tx_backend: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &NicConfig {
        &self.config
    }

    /// The counters.
    pub fn stats(&self) -> &NicStats {
        &self.stats
    }

    /// The receive filter (RAL/RAH/MTA), for inspection.
    pub fn filter(&self) -> &ReceiveFilter {
        &self.filter
    }

    /// The EEPROM word at `addr`: the MAC address in words 0-2, then the
    /// 8254x's checksum word 0x3f making the sum of words 0x00-0x3f 0xBABA.
    pub fn eeprom_word(&self, addr: u8) -> u16 {
        let m = self.config.mac;
        match addr {
            0 => u16::from_le_bytes([m[0], m[1]]),
            1 => u16::from_le_bytes([m[2], m[3]]),
            2 => u16::from_le_bytes([m[4], m[5]]),
            0x3f => {
                let sum = (0..3u8).fold(0u16, |s, a| s.wrapping_add(self.eeprom_word(a)));
                0xbaba_u16.wrapping_sub(sum)
            }
            _ => 0,
        }
    }

    /// Counts the cost of a DMA that handles a frame on the receive
    /// (`rx`) or transmit path.
    pub(crate) fn count_critical(&mut self, cost: iovirt_core::Cost, rx: bool) {
        // An IOTLB hit (nearly every DMA) misses nothing and reads no
        // table: skip the saturating adds of zero.
        if cost.iotlb_misses == 0 && cost.table_reads == 0 {
            let hits = u64::from(cost.iotlb_hits);
            if rx {
                self.stats.rx_critical_iotlb_hits.add(hits);
            }
            self.stats.critical_iotlb_hits.add(hits);
            return;
        }
        if rx {
            self.stats
                .rx_critical_iotlb_misses
                .add(u64::from(cost.iotlb_misses));
            self.stats
                .rx_critical_iotlb_hits
                .add(u64::from(cost.iotlb_hits));
            self.stats
                .rx_critical_table_reads
                .add(u64::from(cost.table_reads));
        } else {
            self.stats
                .tx_critical_iotlb_misses
                .add(u64::from(cost.iotlb_misses));
        }
        self.stats
            .critical_iotlb_hits
            .add(u64::from(cost.iotlb_hits));
        self.stats
            .critical_iotlb_misses
            .add(u64::from(cost.iotlb_misses));
        self.stats
            .critical_table_reads
            .add(u64::from(cost.table_reads));
    }

    /// Counts the cost of a prefetch DMA.
    pub(crate) fn count_prefetch(&mut self, cost: iovirt_core::Cost) {
        self.stats
            .prefetch_iotlb_misses
            .add(u64::from(cost.iotlb_misses));
        self.stats
            .prefetch_table_reads
            .add(u64::from(cost.table_reads));
    }

    /// Sets interrupt causes; asserts the interrupt when an unmasked cause
    /// becomes pending, subject to the ITR throttle.
    pub(crate) fn set_causes<D, I, N, T>(&mut self, causes: Cause, env: &mut NicEnv<'_, D, I, N, T>)
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        let before = self.icr & self.ims;
        self.icr |= causes.bits();
        self.update_line(before, env);
    }

    /// Asserts the interrupt on a deasserted-to-asserted transition.
    pub(crate) fn update_line<D, I, N, T>(&mut self, before: u32, env: &mut NicEnv<'_, D, I, N, T>)
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        if before == 0 && self.icr & self.ims != 0 {
            self.assert_interrupt(env);
        }
    }

    /// Sends the interrupt now, unless ITR's minimum interval since the last
    /// one has not passed: then once it has.
    pub(crate) fn assert_interrupt<D, I, N, T>(&mut self, env: &mut NicEnv<'_, D, I, N, T>)
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        let now = env.timers.now();
        match self.moderation.throttle_wait(self.itr, now) {
            None => {
                self.moderation.last_interrupt = Some(now);
                self.stats.interrupts.inc();
                env.irq.raise(self.config.irq);
            }
            Some(wait) => {
                if !self.moderation.throttled {
                    self.moderation.throttled = true;
                    self.stats.interrupts_throttled.inc();
                    env.timers.schedule(wait, crate::moderation::ITR_TIMER);
                }
            }
        }
    }

    /// When the last interrupt was sent.
    pub fn last_interrupt(&self) -> Option<SimTime> {
        self.moderation.last_interrupt
    }

    fn read_reg(&mut self, offset: u64) -> u32 {
        let ra = |off: u64| off.checked_sub(RAL0).map(|d| ((d / 8) as usize, d % 8));
        match offset {
            CTRL => self.ctrl,
            STATUS => (Status::FD | Status::LU | Status::SPEED_1000).bits(),
            EECD => 0,
            EERD => self.eerd,
            ICR => core::mem::take(&mut self.icr),
            ITR => self.itr,
            IMS => self.ims,
            RCTL => self.rctl,
            TCTL => self.tctl,
            RDBAL => self.rx.bal,
            RDBAH => self.rx.bah,
            RDLEN => self.rx.len,
            RDH => self.rx.head,
            RDT => self.rx.tail,
            TDBAL => self.tx.bal,
            TDBAH => self.tx.bah,
            TDLEN => self.tx.len,
            TDH => self.tx.head,
            TDT => self.tx.tail,
            RDTR => self.delays[0],
            RADV => self.delays[1],
            TIDV => self.delays[2],
            TADV => self.delays[3],
            MPC => core::mem::take(&mut self.regs_stats.mpc),
            GPRC => core::mem::take(&mut self.regs_stats.gprc),
            GPTC => core::mem::take(&mut self.regs_stats.gptc),
            // The 64-bit octet counters clear when their high half is read.
            GORCL => self.regs_stats.gorc as u32,
            GORCH => (core::mem::take(&mut self.regs_stats.gorc) >> 32) as u32,
            GOTCL => self.regs_stats.gotc as u32,
            GOTCH => (core::mem::take(&mut self.regs_stats.gotc) >> 32) as u32,
            TPR => core::mem::take(&mut self.regs_stats.tpr),
            TPT => core::mem::take(&mut self.regs_stats.tpt),
            o if (MTA..MTA + 4 * MTA_ENTRIES as u64).contains(&o) => self
                .filter
                .mta
                .get(((o - MTA) / 4) as usize)
                .copied()
                .unwrap_or(0),
            o if (RAL0..RAL0 + 8 * RA_ENTRIES as u64).contains(&o) => match ra(o) {
                Some((i, 0)) => self.filter.ral.get(i).copied().unwrap_or(0),
                Some((i, 4)) => self.filter.rah.get(i).copied().unwrap_or(0),
                _ => self.unknown(offset),
            },
            _ => self.unknown(offset),
        }
    }

    fn unknown(&mut self, offset: u64) -> u32 {
        self.stats.unknown_register_accesses.inc();
        log::trace!("e1000: access to unimplemented register {offset:#x}");
        0
    }

    fn write_reg<D, I, N, T>(&mut self, offset: u64, value: u32, env: &mut NicEnv<'_, D, I, N, T>)
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        if matches!(offset, RDBAL | RDBAH | RDLEN | RDH) {
            // The guest (re)programs its RX ring: slots claimed before are stale.
            self.rx_epoch = self.rx_epoch.wrapping_add(1);
        }
        if matches!(offset, TDBAL | TDBAH | TDLEN | TDH) {
            // The same for the TX ring: slots peeked before are stale.
            self.tx_epoch = self.tx_epoch.wrapping_add(1);
        }
        match offset {
            CTRL => {
                if value & Ctrl::RST.bits() != 0 {
                    self.reset();
                } else {
                    let rising = !self.ctrl & value & Ctrl::SLU.bits() != 0;
                    self.ctrl = value;
                    // The driver brings the link up: the link-status-change
                    // cause, as after auto-negotiation on the 8254x.
                    if rising {
                        self.set_causes(Cause::LSC, env);
                    }
                }
            }
            EERD => {
                self.eerd = if value & EERD_START != 0 {
                    let addr = (value >> 8) as u8;
                    (u32::from(self.eeprom_word(addr)) << 16) | (u32::from(addr) << 8) | EERD_DONE
                } else {
                    value & !EERD_DONE
                };
            }
            ICR => {
                // Writing 1s clears those causes.
                self.icr &= !value;
            }
            ICS => self.set_causes(Cause::from_bits_retain(value), env),
            IMS => {
                let before = self.icr & self.ims;
                self.ims |= value;
                self.update_line(before, env);
            }
            IMC => self.ims &= !value,
            ITR => self.itr = value & 0xffff,
            RCTL => self.rctl = value,
            TCTL => {
                self.tctl = value;
                self.doorbell_tx(env);
            }
            RDBAL => self.rx.bal = value,
            RDBAH => self.rx.bah = value,
            RDLEN => self.rx.len = value & 0xf_ff80,
            RDH => self.rx.head = value & 0xffff,
            RDT => self.rx.tail = value & 0xffff,
            TDBAL => self.tx.bal = value,
            TDBAH => self.tx.bah = value,
            TDLEN => self.tx.len = value & 0xf_ff80,
            TDH => self.tx.head = value & 0xffff,
            TDT => {
                self.tx.tail = value & 0xffff;
                self.doorbell_tx(env);
            }
            RDTR => {
                self.delays[0] = value & 0xffff;
                // FPD: flush the pending receive interrupt now.
                if value & (1 << 31) != 0 {
                    self.rx_delay_expired(env);
                }
            }
            RADV => self.delays[1] = value & 0xffff,
            TIDV => self.delays[2] = value & 0xffff,
            TADV => self.delays[3] = value & 0xffff,
            o if (MTA..MTA + 4 * MTA_ENTRIES as u64).contains(&o) => {
                if let Some(w) = self.filter.mta.get_mut(((o - MTA) / 4) as usize) {
                    *w = value;
                }
            }
            o if (RAL0..RAL0 + 8 * RA_ENTRIES as u64).contains(&o) => {
                let i = ((o - RAL0) / 8) as usize;
                match (o - RAL0) % 8 {
                    0 => {
                        if let Some(r) = self.filter.ral.get_mut(i) {
                            *r = value;
                        }
                    }
                    4 => {
                        if let Some(r) = self.filter.rah.get_mut(i) {
                            *r = value & (RAH_AV | 0x3_ffff);
                        }
                    }
                    _ => {
                        self.unknown(offset);
                    }
                }
            }
            // Read-only and statistics registers ignore writes.
            STATUS | MPC | GPRC | GPTC | GORCL | GORCH | GOTCL | GOTCH | TPR | TPT => {}
            _ => {
                self.unknown(offset);
            }
        }
    }
}

impl<D, I, N, T> MmioDevice<NicEnv<'_, D, I, N, T>> for Nic
where
    D: DmaPort + ?Sized,
    I: InterruptSink + ?Sized,
    N: NetworkPort + ?Sized,
    T: Timers + ?Sized,
{
    fn mmio_size(&self) -> u64 {
        BAR_SIZE
    }

    /// Registers are 32-bit: an aligned 32-bit read returns one; a narrower
    /// read returns its bytes of the enclosing register (with the side
    /// effects of reading it); misaligned and 64-bit reads return 0.
    fn mmio_read(&mut self, offset: u64, width: Width, _env: &mut NicEnv<'_, D, I, N, T>) -> u64 {
        let reg = offset & !3;
        let shift = (offset & 3) * 8;
        if width == Width::U64 || (offset & 3) + width.bytes() > 4 {
            self.stats.unknown_register_accesses.inc();
            return 0;
        }
        (u64::from(self.read_reg(reg)) >> shift) & width.mask()
    }

    /// Only aligned 32-bit writes reach a register; other widths are ignored
    /// and counted, as the 8254x requires dword accesses.
    fn mmio_write(
        &mut self,
        offset: u64,
        width: Width,
        value: u64,
        env: &mut NicEnv<'_, D, I, N, T>,
    ) {
        if width != Width::U32 || offset & 3 != 0 {
            self.stats.unknown_register_accesses.inc();
            return;
        }
        self.write_reg(offset, value as u32, env);
    }
}

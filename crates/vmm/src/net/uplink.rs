//! The host's driver of the physical NIC: its rings live in host frames,
//! its DMA is untranslated, and the host polls it (its interrupts are
//! counted, not delivered).

use iovirt_core::{
    FrameQueue, HostMemory, Hpa, InterruptSink, Irq, MmioDevice, PhysMemory, TimerQueue, Width,
};
use iovirt_iommu::{IommuPort, RequesterId};
use iovirt_nic::desc::{RxSta, TxCmd, TxSta};
use iovirt_nic::regs::{self, Rctl, Tctl};
use iovirt_nic::{Nic, NicConfig, NicEnv};

use super::{DemuxMode, NetworkConfig};
use crate::VmmError;
use crate::host::Host;

const DESC: u64 = 16;
const PAGE: u64 = 4096;
/// The receive control the host runs its NIC with: on, broadcasts
/// accepted, the FCS stripped.
const RCTL: Rctl = Rctl::EN.union(Rctl::BAM).union(Rctl::SECRC);
/// TX command of every frame: end of packet, insert FCS, report status.
const TX_CMD: TxCmd = TxCmd::EOP.union(TxCmd::IFCS).union(TxCmd::RS);

/// Counts the physical NIC's interrupts (the host polls).
#[derive(Debug, Default)]
struct IrqCount(u64);

impl InterruptSink for IrqCount {
    fn raise(&mut self, _irq: Irq) {
        self.0 += 1;
    }
}

/// The physical NIC's environment for one call.
type UplinkEnv<'a> =
    NicEnv<'a, IommuPort<'a, HostMemory, IrqCount>, IrqCount, FrameQueue, TimerQueue>;

/// A received frame the host has taken off the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Received {
    /// The buffer holding it.
    pub(super) buffer: Hpa,
    /// Its length.
    pub(super) len: usize,
    /// Whether it ended in this descriptor (frames longer than a buffer
    /// are not expected with long packets off, and are dropped).
    pub(super) whole: bool,
}

/// The physical NIC and the host's driver state for it.
#[derive(Debug)]
pub(super) struct Uplink {
    pub(super) nic: Nic,
    requester: RequesterId,
    mode: DemuxMode,
    timers: TimerQueue,
    irqs: IrqCount,
    rx_ring: Hpa,
    /// The buffer each RX descriptor holds, if any.
    rx_bufs: Vec<Option<Hpa>>,
    /// Next descriptor to look at for DD.
    rx_next: u16,
    /// Next descriptor to fill; the NIC owns `rx_next..rx_fill` (RDT).
    rx_fill: u16,
    tx_ring: Hpa,
    tx_bufs: Vec<Hpa>,
    tx_tail: u16,
    tx_clean: u16,
}

fn ring_ok(n: u16) -> bool {
    (8..=256).contains(&n) && n.is_multiple_of(8)
}

impl Uplink {
    /// Attaches the NIC, gives it a ring of each kind in one host frame,
    /// host buffers (TX always; RX in copy mode) and enables it.
    pub(super) fn new(host: &mut Host, config: &NetworkConfig) -> Result<Uplink, VmmError> {
        let (rx_n, tx_n) = (config.uplink_rx_descriptors, config.uplink_tx_descriptors);
        if !ring_ok(rx_n) || !ring_ok(tx_n) {
            return Err(VmmError::BadHost(
                "uplink rings need 8 to 256 descriptors, a multiple of 8",
            ));
        }
        host.attach_host_device(config.uplink_requester)?;
        let rx_ring = host.alloc_pool_frame()?;
        let tx_ring = host.alloc_pool_frame()?;
        let rx_bufs = match config.demux {
            DemuxMode::Copy => (0..rx_n)
                .map(|_| host.alloc_pool_frame().map(Some))
                .collect::<Result<Vec<_>, _>>()?,
            DemuxMode::Flip => vec![None; usize::from(rx_n)],
        };
        let tx_bufs = (0..tx_n)
            .map(|_| host.alloc_pool_frame())
            .collect::<Result<Vec<_>, _>>()?;
        let mut up = Uplink {
            nic: Nic::new(NicConfig {
                mac: config.uplink_mac,
                irq: Irq(0),
            }),
            requester: config.uplink_requester,
            mode: config.demux,
            timers: TimerQueue::new(),
            irqs: IrqCount::default(),
            rx_ring,
            rx_bufs,
            rx_next: 0,
            rx_fill: 0,
            tx_ring,
            tx_bufs,
            tx_tail: 0,
            tx_clean: 0,
        };
        let mut none = FrameQueue::default();
        let lo = |a: Hpa| u64::from(a.raw() as u32);
        let hi = |a: Hpa| a.raw() >> 32;
        for (reg, value) in [
            (regs::RDBAL, lo(rx_ring)),
            (regs::RDBAH, hi(rx_ring)),
            (regs::RDLEN, u64::from(rx_n) * DESC),
            (regs::TDBAL, lo(tx_ring)),
            (regs::TDBAH, hi(tx_ring)),
            (regs::TDLEN, u64::from(tx_n) * DESC),
            (regs::RCTL, u64::from(RCTL.bits())),
            (regs::TCTL, u64::from((Tctl::EN | Tctl::PSP).bits())),
        ] {
            up.write(host, reg, value, &mut none);
        }
        Ok(up)
    }

    /// Lets the NIC receive for a vNIC's MAC address: receive-address entry
    /// `index` (1 to 15); past those, promiscuous mode.
    pub(super) fn accept_mac(
        &mut self,
        host: &mut Host,
        index: usize,
        mac: [u8; 6],
        out: &mut FrameQueue,
    ) {
        if index < regs::RA_ENTRIES {
            let [a, b, c, d, e, f] = mac;
            let low = u32::from_le_bytes([a, b, c, d]);
            let high = u32::from(u16::from_le_bytes([e, f])) | regs::RAH_AV;
            let at = regs::RAL0 + 8 * index as u64;
            self.write(host, at, u64::from(low), out);
            self.write(host, at + 4, u64::from(high), out);
        } else {
            let rctl = RCTL | Rctl::UPE;
            self.write(host, regs::RCTL, u64::from(rctl.bits()), out);
        }
    }

    /// The NIC takes `frame` off the wire.
    pub(super) fn receive(&mut self, host: &mut Host, frame: &[u8], out: &mut FrameQueue) {
        self.with_env(host, out, |nic, env| {
            nic.receive(frame, env);
        });
    }

    /// Takes the next received frame off the ring, if the NIC is done with
    /// one; its descriptor is free for [`Uplink::refill`] afterwards.
    pub(super) fn next_received(&mut self, host: &mut Host) -> Result<Option<Received>, VmmError> {
        if self.rx_next == self.rx_fill {
            return Ok(None);
        }
        let at = Hpa::new(self.rx_ring.raw() + u64::from(self.rx_next) * DESC + 8);
        let mut wb = [0u8; 8];
        host.memory().read(at, &mut wb)?;
        let [len_lo, len_hi, _, _, status, _, _, _] = wb;
        if status & RxSta::DD.bits() == 0 {
            return Ok(None);
        }
        let slot = usize::from(self.rx_next);
        let buffer = match self.mode {
            DemuxMode::Copy => self.rx_bufs.get(slot).copied().flatten(),
            DemuxMode::Flip => self.rx_bufs.get_mut(slot).and_then(Option::take),
        };
        self.rx_next = (self.rx_next + 1) % self.rx_count();
        Ok(buffer.map(|buffer| Received {
            buffer,
            len: usize::from(u16::from_le_bytes([len_lo, len_hi])),
            whole: status & RxSta::EOP.bits() != 0,
        }))
    }

    /// Gives the NIC every free descriptor it can fill (in flip mode, with
    /// frames from `pool`) and moves RDT. Returns whether the pool ran dry
    /// before the ring was full.
    pub(super) fn refill(
        &mut self,
        host: &mut Host,
        pool: &mut Vec<Hpa>,
        out: &mut FrameQueue,
    ) -> Result<bool, VmmError> {
        let n = self.rx_count();
        let before = self.rx_fill;
        let mut dry = false;
        while (self.rx_fill + 1) % n != self.rx_next {
            let slot = usize::from(self.rx_fill);
            let buffer = match self.mode {
                DemuxMode::Copy => self.rx_bufs.get(slot).copied().flatten(),
                DemuxMode::Flip => {
                    let Some(frame) = pool.pop() else {
                        dry = true;
                        break;
                    };
                    if let Some(b) = self.rx_bufs.get_mut(slot) {
                        *b = Some(frame);
                    }
                    Some(frame)
                }
            };
            let Some(buffer) = buffer else { break };
            let at = Hpa::new(self.rx_ring.raw() + u64::from(self.rx_fill) * DESC);
            let mem = host.mem_mut();
            mem.write(at, &buffer.raw().to_le_bytes())?;
            mem.write(Hpa::new(at.raw() + 8), &[0; 8])?;
            self.rx_fill = (self.rx_fill + 1) % n;
        }
        if self.rx_fill != before {
            self.write(host, regs::RDT, u64::from(self.rx_fill), out);
        }
        Ok(dry)
    }

    /// Copies `frame` into the next transmit buffer and rings TDT; `false`
    /// (frame dropped) if the ring is full or the frame is longer than a
    /// buffer.
    pub(super) fn transmit(&mut self, host: &mut Host, frame: &[u8], out: &mut FrameQueue) -> bool {
        let n = self.tx_count();
        self.reclaim(host);
        if (self.tx_tail + 1) % n == self.tx_clean || frame.len() as u64 > PAGE {
            return false;
        }
        let Some(&buffer) = self.tx_bufs.get(usize::from(self.tx_tail)) else {
            return false;
        };
        let at = Hpa::new(self.tx_ring.raw() + u64::from(self.tx_tail) * DESC);
        let word = frame.len() as u64 | u64::from(TX_CMD.bits()) << 24;
        let mem = host.mem_mut();
        let written = mem
            .write(buffer, frame)
            .and_then(|()| mem.write(at, &buffer.raw().to_le_bytes()))
            .and_then(|()| mem.write(Hpa::new(at.raw() + 8), &word.to_le_bytes()));
        if written.is_err() {
            return false;
        }
        self.tx_tail = (self.tx_tail + 1) % n;
        self.write(host, regs::TDT, u64::from(self.tx_tail), out);
        true
    }

    /// Frees the transmit descriptors the NIC reported done.
    fn reclaim(&mut self, host: &mut Host) {
        let n = self.tx_count();
        while self.tx_clean != self.tx_tail {
            let at = Hpa::new(self.tx_ring.raw() + u64::from(self.tx_clean) * DESC + 12);
            let mut status = [0u8; 1];
            if host.memory().read(at, &mut status).is_err() || status[0] & TxSta::DD.bits() == 0 {
                break;
            }
            self.tx_clean = (self.tx_clean + 1) % n;
        }
    }

    fn rx_count(&self) -> u16 {
        self.rx_bufs.len() as u16
    }

    fn tx_count(&self) -> u16 {
        self.tx_bufs.len() as u16
    }

    fn write(&mut self, host: &mut Host, reg: u64, value: u64, out: &mut FrameQueue) {
        self.with_env(host, out, |nic, env| {
            nic.mmio_write(reg, Width::U32, value, env);
        });
    }

    fn with_env(
        &mut self,
        host: &mut Host,
        out: &mut FrameQueue,
        f: impl FnOnce(&mut Nic, &mut UplinkEnv<'_>),
    ) {
        let mut iommu_irqs = IrqCount::default();
        let mut port = host.device_port(self.requester, &mut iommu_irqs);
        let mut env = NicEnv {
            dma: &mut port,
            irq: &mut self.irqs,
            net: out,
            timers: &mut self.timers,
        };
        f(&mut self.nic, &mut env);
    }
}

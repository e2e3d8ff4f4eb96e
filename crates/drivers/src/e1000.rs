//! A guest driver for an e1000-style NIC, with seed 000's driver-side DMA
//! enhancer: transmit copy buffers fixed in the descriptors, and the receive
//! address prefetcher (NOP transmit commands that warm the IOMMU's
//! translations of the next RX descriptor and buffer).
//!
//! The driver knows the device only through its registers
//! ([`RegisterAccess`]) and guest-physical memory ([`PhysMemory<Gpa>`]);
//! the register offsets below are the 8254x's, as a driver's header has them.

use iovirt_core::{
    Counter, FRAME_SIZE, FrameAllocator, FrameBuf, Gpa, MemError, PhysMemory, RegisterAccess, Stats,
};
use serde::{Deserialize, Serialize};

use crate::page_alloc::GuestPageAllocator;

/// 8254x register offsets the driver uses.
mod reg {
    pub(super) const CTRL: u64 = 0x0000;
    pub(super) const EERD: u64 = 0x0014;
    pub(super) const ICR: u64 = 0x00c0;
    pub(super) const IMS: u64 = 0x00d0;
    pub(super) const RCTL: u64 = 0x0100;
    pub(super) const TCTL: u64 = 0x0400;
    pub(super) const RDBAL: u64 = 0x2800;
    pub(super) const RDBAH: u64 = 0x2804;
    pub(super) const RDLEN: u64 = 0x2808;
    pub(super) const RDH: u64 = 0x2810;
    pub(super) const RDT: u64 = 0x2818;
    pub(super) const TDBAL: u64 = 0x3800;
    pub(super) const TDBAH: u64 = 0x3804;
    pub(super) const TDLEN: u64 = 0x3808;
    pub(super) const TDH: u64 = 0x3810;
    pub(super) const TDT: u64 = 0x3818;
}

const CTRL_RST: u32 = 1 << 26;
const EERD_START: u32 = 1 << 0;
const EERD_DONE: u32 = 1 << 4;
const RCTL_EN: u32 = 1 << 1;
const RCTL_BAM: u32 = 1 << 15;
const RCTL_SECRC: u32 = 1 << 26;
const TCTL_EN: u32 = 1 << 1;
const TCTL_PSP: u32 = 1 << 3;
/// Interrupt causes: TXDW | LSC | RXO | RXT0.
const IMS_DEFAULT: u32 = 0x01 | 0x04 | 0x40 | 0x80;
const TX_EOP: u8 = 0x01;
const TX_IFCS: u8 = 0x02;
const TX_RS: u8 = 0x08;
const TX_DEXT: u8 = 0x20;
/// NOP transmit command: descriptor type 0xF in the high nibble of byte 10.
const TX_NOP_TYPE: u8 = 0xf0;
const STA_DD: u8 = 0x01;
const RX_EOP: u8 = 0x02;
const DESC: u64 = 16;
/// RX buffer size programmed in RCTL (BSIZE 00, BSEX 0).
const RX_BUFFER: u64 = 2048;

/// Driver settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct E1000Config {
    /// RX descriptors (a multiple of 8, at least 8).
    pub rx_descriptors: u16,
    /// TX descriptors (a multiple of 8, at least 8).
    pub tx_descriptors: u16,
    /// Seed 000's receive address prefetcher: after each received frame,
    /// NOP transmit commands for the next RX descriptor and its buffer.
    pub rx_prefetch: bool,
    /// Seed 000's transmit buffer initializer (FIG. 9): place the TX copy
    /// buffers in one contiguous region, so their translations share
    /// page-table pages; otherwise each comes from the page allocator.
    pub contiguous_tx_buffers: bool,
    /// Page-sized transmit buffers reserved in a contiguous region for
    /// applications ([`E1000Driver::alloc_app_buffer`]), 0 for none.
    pub app_tx_buffers: u16,
}

impl Default for E1000Config {
    fn default() -> Self {
        E1000Config {
            rx_descriptors: 64,
            tx_descriptors: 64,
            rx_prefetch: false,
            contiguous_tx_buffers: false,
            app_tx_buffers: 0,
        }
    }
}

/// The driver's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DriverStats {
    /// Frames handed to the NIC.
    pub tx_frames: Counter,
    /// Transmits refused because the TX ring was full.
    pub tx_ring_full: Counter,
    /// Frames received.
    pub rx_frames: Counter,
    /// Bytes received.
    pub rx_bytes: Counter,
    /// NOP transmit commands issued by the receive address prefetcher.
    pub nop_prefetches: Counter,
    /// Prefetches skipped for want of a free TX descriptor.
    pub prefetch_skipped: Counter,
}

impl Stats for DriverStats {}

/// Why the driver could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// The page allocator ran out.
    #[error("out of guest pages")]
    OutOfMemory,
    /// The EEPROM did not complete a read.
    #[error("EEPROM read of word {word} did not complete")]
    Eeprom {
        /// The word asked for.
        word: u8,
    },
    /// A ring size that is not a multiple of 8 in 8..=4096.
    #[error("ring of {descriptors} descriptors: must be a multiple of 8 in 8..=4096")]
    BadRing {
        /// The size asked for.
        descriptors: u16,
    },
    /// Guest memory refused an access.
    #[error("guest memory: {0}")]
    Memory(#[from] MemError),
}

/// Why a frame was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// Every TX descriptor is in use; try after the NIC catches up.
    #[error("TX ring full")]
    RingFull,
    /// Longer than a copy buffer (one page).
    #[error("frame of {len} bytes is longer than a copy buffer")]
    TooLong {
        /// The frame's length.
        len: usize,
    },
    /// Guest memory refused an access.
    #[error("guest memory: {0}")]
    Memory(#[from] MemError),
}

/// A running e1000 driver.
#[derive(Debug, Clone)]
pub struct E1000Driver {
    config: E1000Config,
    mac: [u8; 6],
    rx_ring: Gpa,
    tx_ring: Gpa,
    rx_buffers: Vec<Gpa>,
    /// One copy buffer per TX descriptor, fixed in it (seed 000).
    tx_buffers: Vec<Gpa>,
    /// Application transmit buffers not handed out (FIG. 9's allocator).
    app_free: Vec<Gpa>,
    /// Every application buffer, to refuse freeing anything else.
    app_all: Vec<Gpa>,
    rx_next: u16,
    tx_tail: u16,
    tx_clean: u16,
    /// Scratch for one received frame, reused.
    frame: FrameBuf,
    stats: DriverStats,
}

/// Registers and guest memory of one device, as the driver sees them.
pub trait NicBus: RegisterAccess + PhysMemory<Gpa> {}
impl<T: RegisterAccess + PhysMemory<Gpa> + ?Sized> NicBus for T {}

fn ring_ok(n: u16) -> bool {
    n >= 8 && n.is_multiple_of(8) && n <= 4096
}

/// `v % n` for a ring of `n` descriptors, dividing only when `v` is past
/// the end: ring arithmetic stays below `2n`, so a compare replaces a
/// division per frame.
#[inline]
fn ring_mod(v: u16, n: u16) -> u16 {
    if v < n { v } else { v % n }
}

impl E1000Driver {
    /// Resets the NIC, reads its MAC address from the EEPROM, allocates and
    /// fills both rings and their buffers from `pages` (so placement follows
    /// the allocator's), programs the registers and enables RX and TX.
    pub fn bring_up<B: NicBus + ?Sized>(
        bus: &mut B,
        pages: &mut GuestPageAllocator,
        config: E1000Config,
    ) -> Result<E1000Driver, DriverError> {
        for n in [config.rx_descriptors, config.tx_descriptors] {
            if !ring_ok(n) {
                return Err(DriverError::BadRing { descriptors: n });
            }
        }
        bus.write32(reg::CTRL, CTRL_RST);
        let mut mac = [0u8; 6];
        for word in 0..3u8 {
            bus.write32(reg::EERD, EERD_START | (u32::from(word) << 8));
            let v = bus.read32(reg::EERD);
            if v & EERD_DONE == 0 {
                return Err(DriverError::Eeprom { word });
            }
            let [lo, hi] = ((v >> 16) as u16).to_le_bytes();
            if let Some(pair) = mac.get_mut(usize::from(word) * 2..usize::from(word) * 2 + 2) {
                pair.copy_from_slice(&[lo, hi]);
            }
        }
        let ring_pages = |n: u16| (u64::from(n) * DESC).div_ceil(FRAME_SIZE);
        let rx_ring = pages
            .alloc_contiguous(ring_pages(config.rx_descriptors))
            .ok_or(DriverError::OutOfMemory)?;
        let tx_ring = pages
            .alloc_contiguous(ring_pages(config.tx_descriptors))
            .ok_or(DriverError::OutOfMemory)?;
        let region = |pages: &mut GuestPageAllocator, n: u16| -> Result<Vec<Gpa>, DriverError> {
            let first = pages
                .alloc_contiguous(u64::from(n))
                .ok_or(DriverError::OutOfMemory)?;
            Ok((0..u64::from(n))
                .map(|i| Gpa::new(first.raw() + i * FRAME_SIZE))
                .collect())
        };
        let scattered = |pages: &mut GuestPageAllocator, n: u16| -> Result<Vec<Gpa>, DriverError> {
            (0..n)
                .map(|_| pages.alloc_frame().ok_or(DriverError::OutOfMemory))
                .collect()
        };
        let rx_buffers = scattered(pages, config.rx_descriptors)?;
        let tx_buffers = if config.contiguous_tx_buffers {
            region(pages, config.tx_descriptors)?
        } else {
            scattered(pages, config.tx_descriptors)?
        };
        let app_all = if config.app_tx_buffers == 0 {
            Vec::new()
        } else {
            region(pages, config.app_tx_buffers)?
        };

        for (i, &buf) in rx_buffers.iter().enumerate() {
            let at = Gpa::new(rx_ring.raw() + i as u64 * DESC);
            bus.write_u64(at, buf.raw())?;
            bus.write_u64(Gpa::new(at.raw() + 8), 0)?;
        }
        for (i, &buf) in tx_buffers.iter().enumerate() {
            let at = Gpa::new(tx_ring.raw() + i as u64 * DESC);
            bus.write_u64(at, buf.raw())?;
            // Status DD: free for the driver.
            bus.write_u64(Gpa::new(at.raw() + 8), u64::from(STA_DD) << 32)?;
        }
        let lo = |a: Gpa| a.raw() as u32;
        let hi = |a: Gpa| (a.raw() >> 32) as u32;
        bus.write32(reg::RDBAL, lo(rx_ring));
        bus.write32(reg::RDBAH, hi(rx_ring));
        bus.write32(reg::RDLEN, u32::from(config.rx_descriptors) * DESC as u32);
        bus.write32(reg::RDH, 0);
        bus.write32(reg::RDT, u32::from(config.rx_descriptors) - 1);
        bus.write32(reg::TDBAL, lo(tx_ring));
        bus.write32(reg::TDBAH, hi(tx_ring));
        bus.write32(reg::TDLEN, u32::from(config.tx_descriptors) * DESC as u32);
        bus.write32(reg::TDH, 0);
        bus.write32(reg::TDT, 0);
        bus.write32(reg::RCTL, RCTL_EN | RCTL_BAM | RCTL_SECRC);
        bus.write32(reg::TCTL, TCTL_EN | TCTL_PSP);
        bus.write32(reg::IMS, IMS_DEFAULT);
        Ok(E1000Driver {
            config,
            mac,
            rx_ring,
            tx_ring,
            rx_buffers,
            tx_buffers,
            app_free: app_all.iter().rev().copied().collect(),
            app_all,
            rx_next: 0,
            tx_tail: 0,
            tx_clean: 0,
            frame: FrameBuf::with_capacity(16 * 1024),
            stats: DriverStats::default(),
        })
    }

    /// The MAC address read from the EEPROM.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The counters.
    pub fn stats(&self) -> &DriverStats {
        &self.stats
    }

    /// The TX copy buffers, one per descriptor (to see where they landed).
    pub fn tx_buffers(&self) -> &[Gpa] {
        &self.tx_buffers
    }

    /// The RX buffers, one per descriptor.
    pub fn rx_buffers(&self) -> &[Gpa] {
        &self.rx_buffers
    }

    /// FIG. 9's allocator API: a page-sized transmit buffer from the
    /// driver's contiguous region, for an application to fill and send with
    /// [`E1000Driver::transmit_from`] without a copy.
    pub fn alloc_app_buffer(&mut self) -> Option<Gpa> {
        self.app_free.pop()
    }

    /// Gives an application buffer back; `false` if it is not one, or is free.
    pub fn free_app_buffer(&mut self, buffer: Gpa) -> bool {
        if self.app_all.contains(&buffer) && !self.app_free.contains(&buffer) {
            self.app_free.push(buffer);
            true
        } else {
            false
        }
    }

    /// Sends `len` bytes an application wrote in its buffer `buffer`
    /// (zero copy: the descriptor points at the buffer).
    pub fn transmit_from<B: NicBus + ?Sized>(
        &mut self,
        bus: &mut B,
        buffer: Gpa,
        len: u16,
    ) -> Result<(), TxError> {
        if !self.app_all.contains(&buffer) || u64::from(len) > FRAME_SIZE {
            return Err(TxError::TooLong {
                len: usize::from(len),
            });
        }
        self.reclaim(bus)?;
        if self.tx_free() == 0 {
            self.stats.tx_ring_full.inc();
            return Err(TxError::RingFull);
        }
        self.post_tx(bus, buffer.raw(), len, 0, TX_EOP | TX_IFCS | TX_RS)?;
        bus.write32(reg::TDT, u32::from(self.tx_tail));
        self.stats.tx_frames.inc();
        Ok(())
    }

    /// The interrupt handler: reads (and so acknowledges) ICR, receives on
    /// RXT0 or RXO, reclaims on TXDW. Returns the causes and the frames
    /// delivered.
    pub fn handle_interrupt<B: NicBus + ?Sized>(
        &mut self,
        bus: &mut B,
        deliver: impl FnMut(&[u8]),
    ) -> Result<(u32, u32), MemError> {
        const RX_CAUSES: u32 = 0x80 | 0x40;
        const TXDW: u32 = 0x01;
        let causes = self.acknowledge(bus);
        let frames = if causes & RX_CAUSES != 0 {
            self.receive(bus, deliver)?
        } else {
            0
        };
        if causes & TXDW != 0 {
            self.reclaim(bus)?;
        }
        Ok((causes, frames))
    }

    /// Reads and so acknowledges the interrupt causes (ICR is clear on read).
    pub fn acknowledge<B: NicBus + ?Sized>(&mut self, bus: &mut B) -> u32 {
        bus.read32(reg::ICR)
    }

    fn tx_count(&self) -> u16 {
        self.config.tx_descriptors
    }

    /// Gives back the TX descriptors the NIC has written DD into.
    /// Inlined: every transmit runs it, usually for one descriptor.
    #[inline]
    pub fn reclaim<B: NicBus + ?Sized>(&mut self, bus: &mut B) -> Result<u16, MemError> {
        let mut done = 0;
        while self.tx_clean != self.tx_tail {
            let sta = Gpa::new(self.tx_ring.raw() + u64::from(self.tx_clean) * DESC + 12);
            let mut b = [0u8];
            PhysMemory::read(bus, sta, &mut b)?;
            if b[0] & STA_DD == 0 {
                break;
            }
            self.tx_clean = ring_mod(self.tx_clean + 1, self.tx_count());
            done += 1;
        }
        Ok(done)
    }

    /// Free TX descriptors (one is always kept empty, so full != empty).
    fn tx_free(&self) -> u16 {
        let n = self.tx_count();
        ring_mod(self.tx_clean + n - self.tx_tail - 1, n)
    }

    /// Writes descriptor `tx_tail` and advances the tail shadow.
    fn post_tx<B: NicBus + ?Sized>(
        &mut self,
        bus: &mut B,
        addr: u64,
        len: u16,
        type_nibble: u8,
        cmd: u8,
    ) -> Result<(), MemError> {
        let at = Gpa::new(self.tx_ring.raw() + u64::from(self.tx_tail) * DESC);
        let word = u64::from(len) | (u64::from(type_nibble) << 16) | (u64::from(cmd) << 24);
        // The whole descriptor in one write (address, then the length and
        // command word): one memory access instead of two, same bytes.
        let desc = ((u128::from(word) << 64) | u128::from(addr)).to_le_bytes();
        PhysMemory::write(bus, at, &desc)?;
        self.tx_tail = ring_mod(self.tx_tail + 1, self.tx_count());
        Ok(())
    }

    /// Copies `frame` into the next descriptor's copy buffer and rings TDT.
    pub fn transmit<B: NicBus + ?Sized>(
        &mut self,
        bus: &mut B,
        frame: &[u8],
    ) -> Result<(), TxError> {
        if frame.len() as u64 > FRAME_SIZE {
            return Err(TxError::TooLong { len: frame.len() });
        }
        self.reclaim(bus)?;
        if self.tx_free() == 0 {
            self.stats.tx_ring_full.inc();
            return Err(TxError::RingFull);
        }
        let i = usize::from(self.tx_tail);
        let Some(&buf) = self.tx_buffers.get(i) else {
            return Err(TxError::RingFull);
        };
        PhysMemory::write(bus, buf, frame)?;
        self.post_tx(
            bus,
            buf.raw(),
            frame.len() as u16,
            0,
            TX_EOP | TX_IFCS | TX_RS,
        )?;
        bus.write32(reg::TDT, u32::from(self.tx_tail));
        self.stats.tx_frames.inc();
        Ok(())
    }

    /// Hands every received frame to `deliver`, gives the descriptors back
    /// (RDT), and, with the receive address prefetcher on, issues NOP
    /// transmit commands for the next RX descriptor and buffer. Returns the
    /// number of frames.
    pub fn receive<B: NicBus + ?Sized>(
        &mut self,
        bus: &mut B,
        mut deliver: impl FnMut(&[u8]),
    ) -> Result<u32, MemError> {
        let n = self.config.rx_descriptors;
        let mut frames = 0;
        self.frame.clear();
        for _ in 0..n {
            let i = self.rx_next;
            let at = Gpa::new(self.rx_ring.raw() + u64::from(i) * DESC);
            let mut wb = [0u8; 8];
            PhysMemory::read(bus, Gpa::new(at.raw() + 8), &mut wb)?;
            let [len_lo, len_hi, _, _, status, _, _, _] = wb;
            if status & STA_DD == 0 {
                break;
            }
            let len = u64::from(u16::from_le_bytes([len_lo, len_hi])).min(RX_BUFFER) as usize;
            // A failed read leaves the frame half filled; the next receive
            // starts it afresh.
            if let Some(&buf) = self.rx_buffers.get(usize::from(i))
                && let Some(piece) = self.frame.append(len)
            {
                PhysMemory::read(bus, buf, piece)?;
            }
            // Clear the write-back and give the descriptor back.
            bus.write_u64(Gpa::new(at.raw() + 8), 0)?;
            bus.write32(reg::RDT, u32::from(i));
            self.rx_next = ring_mod(i + 1, n);
            if status & RX_EOP != 0 {
                frames += 1;
                self.stats.rx_frames.inc();
                self.stats.rx_bytes.add(self.frame.len() as u64);
                deliver(self.frame.as_slice());
                self.frame.clear();
                if self.config.rx_prefetch {
                    self.prefetch_next_rx(bus)?;
                }
            }
        }
        Ok(frames)
    }

    /// Seed 000, FIG. 6: NOP transmit commands whose addresses are the next
    /// RX descriptor and the buffer it names, so the NIC's DMA warms the
    /// IOMMU's translations before the next frame arrives.
    fn prefetch_next_rx<B: NicBus + ?Sized>(&mut self, bus: &mut B) -> Result<(), MemError> {
        self.reclaim(bus)?;
        if self.tx_free() < 2 {
            self.stats.prefetch_skipped.inc();
            return Ok(());
        }
        let next = self.rx_next;
        let desc = self.rx_ring.raw() + u64::from(next) * DESC;
        let buffer = self
            .rx_buffers
            .get(usize::from(next))
            .map_or(0, |b| b.raw());
        for addr in [desc, buffer] {
            self.post_tx(bus, addr, 0, TX_NOP_TYPE, TX_DEXT | TX_RS)?;
            self.stats.nop_prefetches.inc();
        }
        bus.write32(reg::TDT, u32::from(self.tx_tail));
        Ok(())
    }
}

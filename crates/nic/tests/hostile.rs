//! A hostile guest against the NIC: one regression test for each e1000 bug
//! other emulators had (the CVE table of `FACTS.md`), adapted to this model,
//! then bad ring registers, disabled engines, faulting DMA, huge lengths and
//! frames, and a property test of random register writes and frames that
//! must never panic, loop, or reach outside memory.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::iommu::{IommuRig, requester};
use common::rings::{BSIZE_256, RX_BUFS, RX_RING, RX_STRIDE, SENTINEL, TX_BUFS, TX_RING, eop_rs};
use common::{IRQ, MEM, Platform, Rig};
use iovirt_core::{
    AccessKind, Cost, DmaFault, DmaPort, HostMemory, Hpa, Iova, Irq, MmioDevice, PassthroughDma,
    PhysMemory, Width,
};
use iovirt_nic::desc::{RxDesc, RxSta, TxCmd, TxDesc, TxSta};
use iovirt_nic::regs::{self, Cause, Ctrl, Rctl, Tctl};
use iovirt_nic::{Accept, MAX_FRAME, Nic, NicConfig, NicEnv, NicStats, RxOutcome};
use iovirt_paging::{Mapping, PteFlags};
use proptest::prelude::*;
use zerocopy::byteorder::little_endian::{U16, U64};
use zerocopy::{FromBytes, IntoBytes};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x00, 0x00, 0x0a];
const PEER: [u8; 6] = [0x52, 0x54, 0x00, 0x00, 0x00, 0x0b];

/// What only the hostile-guest tests ask of the shared [`Rig`].
impl Rig {
    /// The whole stride of RX buffer `slot`.
    fn rx_buf_whole(&self, slot: u64) -> Vec<u8> {
        self.rx_buf(slot, RX_STRIDE as usize)
    }
}

/// A frame to `dst` of `len` bytes, its payload a pattern seeded by `seed`
/// (odd bytes only, so never [`SENTINEL`] nor zero).
fn frame(dst: [u8; 6], len: usize, seed: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed) | 1)
        .collect();
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&PEER);
    f
}

/// A rig with an enabled 8-descriptor TX ring whose every slot holds the
/// same 60-byte frame to [`PEER`] (RS set), none sent yet.
fn eight_frames() -> Rig {
    let mut r = Rig::new(MAC);
    r.tx_ring(8, Tctl::EN);
    for slot in 0..8 {
        r.put_tx(slot, TX_BUFS, &frame(PEER, 60, 0), eop_rs());
    }
    r
}

/// CVE-2012-6075: a guest with long packets off (RCTL.LPE clear) and small
/// receive buffers is sent a frame larger than one buffer; an emulator
/// copied the whole frame into the first buffer. Here the frame is split
/// over as many descriptors as it needs (each piece at most BSIZE bytes),
/// refused whole when there are not enough free descriptors, and dropped
/// beyond 1522 bytes; the bytes right after every buffer stay untouched.
#[test]
fn cve_2012_6075_large_frame_never_writes_past_rx_buffers() {
    let mut r = Rig::new(MAC);
    // Four free 256-byte descriptors: 1024 bytes for a 1522-byte frame.
    r.rx_ring(8, 4, Rctl::EN.bits() | BSIZE_256);
    let big = frame(MAC, 1522, 1);
    assert_eq!(r.receive(&big), RxOutcome::NoDescriptor);
    assert_eq!(r.read(regs::RDH), 0);
    for slot in 0..8 {
        assert_eq!(r.rx_desc(slot).status, 0);
        assert!(
            r.rx_buf_whole(slot).iter().all(|&b| b == SENTINEL),
            "slot {slot}"
        );
    }

    // Beyond 1522 bytes without LPE: dropped, whatever the descriptors.
    r.write(regs::RDT, 7);
    for len in [1523, 2048, 9000] {
        assert_eq!(r.receive(&frame(MAC, len, 2)), RxOutcome::Oversize);
    }
    assert_eq!(r.stats().rx_oversize.get(), 3);
    assert_eq!(r.read(regs::RDH), 0);
    for slot in 0..8 {
        assert!(
            r.rx_buf_whole(slot).iter().all(|&b| b == SENTINEL),
            "slot {slot}"
        );
    }

    // Seven free: the frame is split over six, each within its buffer.
    match r.receive(&big) {
        RxOutcome::Stored { descriptors, .. } => assert_eq!(descriptors, 6),
        other => panic!("{other:?}"),
    }
    for slot in 0..6u64 {
        let want = if slot < 5 { 256 } else { 1522 - 5 * 256 };
        assert_eq!(usize::from(r.rx_desc(slot).length.get()), want);
        let buf = r.rx_buf_whole(slot);
        let start = 256 * slot as usize;
        assert_eq!(buf[..want], big[start..start + want]);
        assert!(
            buf[want..].iter().all(|&b| b == SENTINEL),
            "slot {slot}: bytes after the piece untouched"
        );
    }
    assert!(r.rx_buf_whole(6).iter().all(|&b| b == SENTINEL));
}

/// CVE-2015-6815: an emulator's TX loop computed a chunk size of 0 from a
/// descriptor and never advanced. Here the guest fills the ring with
/// zero-length descriptors (with and without EOP and RS): the engine
/// consumes each one, sends nothing, and TDH reaches TDT.
#[test]
fn cve_2015_6815_zero_length_tx_descriptors_terminate() {
    let mut r = Rig::new(MAC);
    r.tx_ring(8, Tctl::EN | Tctl::PSP);
    let cmds = [
        TxCmd::empty(),
        TxCmd::EOP,
        TxCmd::RS,
        eop_rs(),
        TxCmd::EOP | TxCmd::IFCS,
        TxCmd::empty(),
        eop_rs(),
        TxCmd::EOP,
    ];
    for (slot, cmd) in cmds.into_iter().enumerate() {
        r.put_tx_desc(slot as u64, 0, 0, cmd);
    }
    r.write(regs::TDH, 5);
    r.write(regs::TDT, 4);
    assert_eq!(r.read(regs::TDH), 4, "one full lap: 5, 6, 7, 0 .. 3");
    assert!(
        r.wire.is_empty(),
        "an empty frame is not sent, even with PSP"
    );
    assert_eq!(r.stats().tx_descriptors.get(), 7);
    for (slot, cmd) in cmds.into_iter().enumerate() {
        let dd = if slot != 4 && cmd.contains(TxCmd::RS) {
            TxSta::DD.bits()
        } else {
            0
        };
        assert_eq!(r.tx_desc(slot as u64).sta, dd, "slot {slot}");
    }
    // Zero-length pieces inside a frame add nothing to it.
    let f = frame(PEER, 100, 3);
    r.put_tx(4, TX_BUFS, &f[..40], TxCmd::empty());
    r.put_tx_desc(5, TX_BUFS + 0x100, 0, TxCmd::empty());
    r.put_tx(6, TX_BUFS + 0x200, &f[40..], TxCmd::empty());
    r.put_tx_desc(7, 0, 0, TxCmd::EOP);
    r.write(regs::TDT, 0);
    assert_eq!(r.read(regs::TDH), 0);
    assert_eq!(r.wire, [f]);
}

/// CVE-2016-1981: a small TDLEN/RDLEN with TDH/RDH set beyond the ring made
/// an emulator's head never meet its tail (it wrapped at the ring's end,
/// which the head was already past). Here a head or tail beyond the ring
/// stops processing at once: nothing is sent or stored, the heads stay, and
/// `ring_errors` counts each refusal.
#[test]
fn cve_2016_1981_heads_beyond_a_small_ring_stop_at_once() {
    let mut r = eight_frames();
    r.write(regs::TDH, 100);
    r.write(regs::TDT, 3);
    assert_eq!(r.read(regs::TDH), 100);
    assert_eq!(r.stats().ring_errors.get(), 1);
    r.write(regs::TCTL, Tctl::EN.bits());
    assert_eq!(r.stats().ring_errors.get(), 2);
    // A tail beyond the ring is refused as well.
    r.write(regs::TDH, 0);
    r.write(regs::TDT, 0xffff);
    assert_eq!(r.read(regs::TDH), 0);
    assert_eq!(r.stats().ring_errors.get(), 3);
    assert!(r.wire.is_empty());
    assert_eq!(r.stats().tx_descriptors.get(), 0);

    r.rx_ring(8, 7, Rctl::EN.bits());
    r.write(regs::RDH, 50);
    assert_eq!(r.receive(&frame(MAC, 64, 0)), RxOutcome::BadRing);
    assert_eq!(r.read(regs::RDH), 50);
    r.write(regs::RDH, 0);
    r.write(regs::RDT, 8);
    assert_eq!(r.receive(&frame(MAC, 64, 0)), RxOutcome::BadRing);
    assert_eq!(r.stats().ring_errors.get(), 5);
    assert_eq!(r.read(regs::MPC), 2, "counted as missed");
    for slot in 0..8 {
        assert_eq!(r.rx_desc(slot).status, 0);
    }
    // Fixing the registers brings the rings back.
    r.write(regs::RDT, 7);
    assert!(matches!(
        r.receive(&frame(MAC, 64, 0)),
        RxOutcome::Stored { .. }
    ));
    r.write(regs::TDT, 2);
    assert_eq!(r.wire.len(), 2);
}

/// CVE-2020-28916: an RX descriptor with buffer address 0 made an emulator
/// loop forever. Here such a descriptor is skipped: DD is written back with
/// length 0 and no EOP, RDH moves on, `rx_null_buffers` counts it; a ring
/// of nothing but null buffers ends the frame after one pass.
#[test]
fn cve_2020_28916_null_rx_buffers_are_skipped() {
    let mut r = Rig::new(MAC);
    r.rx_ring(8, 7, Rctl::EN.bits());
    for slot in 0..8u64 {
        r.mem.write_u64(Hpa::new(RX_RING + 16 * slot), 0).unwrap();
    }
    let f = frame(MAC, 64, 4);
    assert_eq!(r.receive(&f), RxOutcome::NoDescriptor);
    assert_eq!(r.read(regs::RDH), 7);
    assert_eq!(r.stats().rx_null_buffers.get(), 7);
    for slot in 0..7 {
        let d = r.rx_desc(slot);
        assert_eq!(d.status, RxSta::DD.bits(), "slot {slot}");
        assert_eq!(d.length.get(), 0);
    }
    assert_eq!(r.rx_desc(7).status, 0, "RDT's descriptor is not the NIC's");

    // A null buffer in front of a real one: skipped, the frame goes on.
    r.write(regs::RDT, 2);
    r.mem.write_u64(Hpa::new(RX_RING + 16 * 7), 0).unwrap();
    r.mem.write_u64(Hpa::new(RX_RING), RX_BUFS).unwrap();
    match r.receive(&f) {
        RxOutcome::Stored { descriptors, .. } => assert_eq!(descriptors, 2),
        other => panic!("{other:?}"),
    }
    assert_eq!(r.rx_desc(7).status, RxSta::DD.bits());
    assert_eq!(r.rx_desc(0).status, (RxSta::DD | RxSta::EOP).bits());
    assert_eq!(r.rx_buf_whole(0)[..64], f[..]);
    assert_eq!(r.read(regs::RDH), 1);
}

/// CVE-2021-20257: (a) an emulator's TX segmentation let a descriptor chain
/// grow a frame past its buffer and looped. Here a chain of descriptors
/// whose lengths add up to more than 16 KiB is dropped whole (counted in
/// `tx_oversize`), every descriptor is still consumed, and the next frame
/// goes out intact; 16 KiB exactly is allowed. (b), the loopback DMA into
/// the NIC's own TDT, is covered by the CVE-2023-3019 test.
#[test]
fn cve_2021_20257_tx_chain_beyond_16k_is_dropped() {
    let mut r = Rig::new(MAC);
    r.tx_ring(16, Tctl::EN);
    let data = vec![0x42u8; 4000];
    for slot in 0..5u64 {
        let cmd = if slot == 4 { eop_rs() } else { TxCmd::RS };
        r.put_tx(slot, TX_BUFS + 0x1000 * slot, &data, cmd);
    }
    let next = frame(PEER, 80, 5);
    r.put_tx(5, 0x6_0000, &next, eop_rs());
    r.write(regs::TDT, 6);
    assert_eq!(r.read(regs::TDH), 6);
    assert_eq!(r.stats().tx_oversize.get(), 1);
    assert_eq!(
        r.wire,
        std::slice::from_ref(&next),
        "only the next frame went out"
    );
    for slot in 0..6 {
        assert_eq!(r.tx_desc(slot).sta, TxSta::DD.bits());
    }
    // Exactly 16 KiB over four descriptors is a legal (jumbo) frame.
    let jumbo = frame(PEER, MAX_FRAME, 6);
    for (i, piece) in jumbo.chunks(4096).enumerate() {
        let cmd = if i == 3 { TxCmd::EOP } else { TxCmd::empty() };
        r.put_tx(6 + i as u64, TX_BUFS + 0x1000 * i as u64, piece, cmd);
    }
    r.write(regs::TDT, 10);
    assert_eq!(r.wire.len(), 2);
    assert_eq!(r.wire[1], jumbo);
    assert_eq!(r.stats().tx_oversize.get(), 1);
}

/// CVE-2021-3416: an emulator in loopback mode received its own frame from
/// inside its transmit path, re-entering the device. Here a frame reaches
/// the network only through the `NetworkPort` given to the call, which
/// cannot hold the NIC (the NIC is mutably borrowed for the call), so
/// feeding a transmitted frame back is a separate `receive` call by the
/// platform. A frame sent to the NIC's own address is received once, and
/// receiving it transmits nothing.
#[test]
fn cve_2021_3416_own_frame_looped_back_is_received_once() {
    let mut r = Rig::new(MAC);
    r.tx_ring(8, Tctl::EN);
    r.rx_ring(8, 7, Rctl::EN.bits());
    let own = frame(MAC, 200, 7);
    r.put_tx(0, TX_BUFS, &own, eop_rs());
    r.write(regs::TDT, 1);
    assert_eq!(r.wire, std::slice::from_ref(&own));
    assert_eq!(r.stats().rx_frames.get(), 0, "transmit received nothing");

    let looped = std::mem::take(&mut r.wire);
    for f in &looped {
        assert!(matches!(
            r.receive(f),
            RxOutcome::Stored {
                accept: Accept::Exact,
                descriptors: 1
            }
        ));
    }
    assert_eq!(r.stats().rx_frames.get(), 1);
    assert_eq!(r.stats().tx_frames.get(), 1, "receive transmitted nothing");
    assert!(r.wire.is_empty());
    assert_eq!(r.rx_buf_whole(0)[..200], own[..]);
    assert_eq!(r.read(regs::RDH), 1);
    assert_eq!(r.read(regs::TDH), 1);
}

/// CVE-2023-3019 (and CVE-2021-20257's loopback half): a guest aimed the
/// NIC's DMA at the NIC's own MMIO registers, and the emulator's DMA
/// re-entered the device (writing TDT from inside a transmit, freeing what
/// it was using). Here the device reaches memory only through its
/// `DmaPort`: a buffer or ring placed where the platform maps the NIC's
/// BAR is plain memory to the port. The test pretends the BAR sits at
/// `BAR` and points an RX buffer at its TDT, a TX buffer at its CTRL and
/// the TX ring over its TDBAL: the bytes land in (or come from) memory, and
/// no register changes.
#[test]
fn cve_2023_3019_dma_at_the_nic_s_own_registers_only_reaches_memory() {
    const BAR: u64 = 0xc_0000;
    let mut r = Rig::new(MAC);
    r.rx_ring(8, 7, Rctl::EN.bits());
    r.mem.write_u64(Hpa::new(RX_RING), BAR + regs::TDT).unwrap();
    // The frame lands where TDT would be; it starts 0x52 0x54 0x00 0x00.
    let poison = frame(MAC, 64, 8);
    assert!(matches!(r.receive(&poison), RxOutcome::Stored { .. }));
    let mut landed = vec![0u8; 64];
    r.mem.read(Hpa::new(BAR + regs::TDT), &mut landed).unwrap();
    assert_eq!(landed, poison, "the frame is in memory at the BAR's TDT");
    assert_eq!(r.read(regs::TDT), 0);
    assert_eq!(r.read(regs::TDH), 0);
    assert!(r.wire.is_empty(), "no transmit was started");

    // The TX ring over the BAR's TDBAL, its buffer at the BAR's CTRL, with
    // a reset's bit pattern there: the frame carries those memory bytes.
    let tx_ring = BAR + regs::TDBAL;
    let mut payload = frame(PEER, 60, 9);
    payload[12..16].copy_from_slice(&Ctrl::RST.bits().to_le_bytes());
    r.mem.write(Hpa::new(BAR + regs::CTRL), &payload).unwrap();
    let d = TxDesc {
        addr: U64::new(BAR + regs::CTRL),
        length: U16::new(60),
        cmd: eop_rs().bits(),
        ..TxDesc::default()
    };
    r.mem.write(Hpa::new(tx_ring), d.as_bytes()).unwrap();
    r.write(regs::IMS, Cause::TXDW.bits());
    r.write(regs::TDBAL, tx_ring as u32);
    r.write(regs::TDLEN, 128);
    r.write(regs::TCTL, Tctl::EN.bits());
    r.write(regs::TDT, 1);
    assert_eq!(r.wire, [payload]);
    assert_eq!(r.read(regs::TDH), 1);
    // DD went to memory; the registers kept what the guest wrote.
    let mut sta = [0u8; 1];
    r.mem.read(Hpa::new(tx_ring + 12), &mut sta).unwrap();
    assert_eq!(sta, [TxSta::DD.bits()]);
    assert_eq!(r.read(regs::TDBAL), tx_ring as u32);
    assert_eq!(r.read(regs::TCTL), Tctl::EN.bits());
    assert_eq!(r.read(regs::RCTL), Rctl::EN.bits(), "no reset happened");
    assert_eq!(r.read(regs::RDH), 1);
    assert_eq!(r.irqs, [IRQ]);
}

#[test]
fn ring_lengths_of_zero_or_not_a_multiple_of_128() {
    let mut r = eight_frames();
    r.write(regs::TDLEN, 0);
    r.write(regs::TDT, 1);
    assert_eq!(r.stats().ring_errors.get(), 1);
    // The low 7 bits are ignored: 100 bytes is no ring at all...
    r.write(regs::TDLEN, 100);
    assert_eq!(r.read(regs::TDLEN), 0);
    r.write(regs::TDT, 2);
    assert_eq!(r.stats().ring_errors.get(), 2);
    assert!(r.wire.is_empty());
    assert_eq!(r.read(regs::TDH), 0);
    // ...and 200 bytes is 128: eight descriptors.
    r.write(regs::TDLEN, 200);
    assert_eq!(r.read(regs::TDLEN), 128);
    r.write(regs::TDT, 9);
    assert_eq!(r.stats().ring_errors.get(), 3, "9 is beyond 8");
    r.write(regs::TDT, 7);
    assert_eq!(r.read(regs::TDH), 7);
    assert_eq!(r.wire.len(), 7);

    r.rx_ring(8, 7, Rctl::EN.bits());
    for (len, reads) in [(0u32, 0u32), (0x7f, 0), (130, 128)] {
        r.write(regs::RDLEN, len);
        assert_eq!(r.read(regs::RDLEN), reads);
    }
    r.write(regs::RDLEN, 0x7f);
    assert_eq!(r.receive(&frame(MAC, 64, 0)), RxOutcome::BadRing);
    assert_eq!(r.read(regs::RDH), 0);
    r.write(regs::RDLEN, 130);
    assert!(matches!(
        r.receive(&frame(MAC, 64, 0)),
        RxOutcome::Stored { .. }
    ));
    assert_eq!(r.stats().ring_errors.get(), 4);
}

#[test]
fn tail_writes_while_disabled_do_nothing_until_enabled() {
    let mut r = Rig::new(MAC);
    r.tx_ring(8, Tctl::PSP);
    for slot in 0..3 {
        r.put_tx(slot, TX_BUFS, &frame(PEER, 60, slot as u8), eop_rs());
    }
    r.write(regs::TDT, 3);
    assert!(r.wire.is_empty());
    assert_eq!(r.read(regs::TDH), 0);
    assert_eq!(r.tx_desc(0).sta, 0, "nothing written back");
    r.write(regs::TCTL, (Tctl::EN | Tctl::PSP).bits());
    assert_eq!(r.wire.len(), 3);
    assert_eq!(r.read(regs::TDH), 3);

    r.rx_ring(8, 7, Rctl::BAM.bits());
    let f = frame(MAC, 64, 1);
    assert_eq!(r.receive(&f), RxOutcome::Disabled);
    assert_eq!(r.stats().rx_disabled.get(), 1);
    assert_eq!(r.read(regs::RDH), 0);
    assert!(r.rx_buf_whole(0).iter().all(|&b| b == SENTINEL));
    assert_eq!(r.read(regs::MPC), 0, "a disabled receiver misses nothing");
    r.write(regs::RCTL, (Rctl::EN | Rctl::BAM).bits());
    assert!(matches!(r.receive(&f), RxOutcome::Stored { .. }));
    assert_eq!(r.read(regs::RDH), 1);
    // Disabling again stops it again.
    r.write(regs::RCTL, 0);
    assert_eq!(r.receive(&f), RxOutcome::Disabled);
    assert_eq!(r.read(regs::RDH), 1);
}

impl IommuRig {
    /// A NIC behind an IOMMU; `map` says which IOVA pages exist (identity
    /// mapped), none at all for a domain with nothing mapped.
    fn new(map: &[u64]) -> IommuRig {
        let pages: Vec<_> = map
            .iter()
            .map(|&page| Mapping::new(Iova::new(page), Hpa::new(page), 0x1000, PteFlags::RW))
            .collect();
        // Tables from 2 MiB up, out of the way of the identity-mapped pages.
        IommuRig::with_mappings(MAC, Hpa::new(2 * MEM), &pages)
    }

    /// Rings at [`TX_RING`] and [`RX_RING`] (8 descriptors each) whose
    /// descriptors name buffers at [`TX_BUFS`] and [`RX_BUFS`].
    fn rings(&mut self) {
        let f = frame(PEER, 60, 0);
        self.mem.write(Hpa::new(TX_BUFS), &f).unwrap();
        for slot in 0..8u64 {
            let t = TxDesc {
                addr: U64::new(TX_BUFS),
                length: U16::new(60),
                cmd: eop_rs().bits(),
                ..TxDesc::default()
            };
            self.mem
                .write(Hpa::new(TX_RING + 16 * slot), t.as_bytes())
                .unwrap();
            self.mem
                .write_u64(Hpa::new(RX_RING + 16 * slot), RX_BUFS + 0x800 * slot)
                .unwrap();
        }
        for (reg, value) in [
            (regs::TDBAL, TX_RING as u32),
            (regs::TDLEN, 128),
            (regs::TCTL, Tctl::EN.bits()),
            (regs::RDBAL, RX_RING as u32),
            (regs::RDLEN, 128),
            (regs::RDT, 7),
            (regs::RCTL, Rctl::EN.bits()),
        ] {
            self.write(reg, value);
        }
    }
}

#[test]
fn descriptor_addresses_that_fault_in_the_iommu() {
    // A domain with nothing mapped: every descriptor fetch faults.
    let mut r = IommuRig::new(&[]);
    r.rings();
    r.write(regs::TDT, 2);
    assert_eq!(r.read(regs::TDH), 0, "the engine stops at the descriptor");
    assert_eq!(r.nic.stats().dma_faults.get(), 1);
    r.write(regs::TDT, 5);
    assert_eq!(r.read(regs::TDH), 0);
    assert_eq!(r.nic.stats().dma_faults.get(), 2);
    assert!(r.wire.is_empty());
    assert_eq!(r.receive(&frame(MAC, 64, 0)), RxOutcome::DmaFault);
    assert_eq!(r.read(regs::RDH), 0);
    assert_eq!(r.nic.stats().dma_faults.get(), 3);
    assert_eq!(r.nic.stats().rx_frames.get(), 0);
    assert_eq!(r.iommu.stats().faults.not_present.get(), 3);
    assert_eq!(r.faults.len(), 1, "one fault event: the log was empty once");
    assert!(r.irqs.is_empty(), "no TX or RX cause for the guest");

    // Rings mapped, buffers not: the frames are lost, the rings move on.
    let mut r = IommuRig::new(&[TX_RING, RX_RING]);
    r.rings();
    r.write(regs::TDT, 2);
    assert_eq!(r.read(regs::TDH), 2, "buffer faults do not stop TX");
    assert!(r.wire.is_empty());
    assert_eq!(r.nic.stats().dma_faults.get(), 2);
    let mut sta = [0u8; 1];
    r.mem.read(Hpa::new(TX_RING + 12), &mut sta).unwrap();
    assert_eq!(sta, [TxSta::DD.bits()], "the descriptor is still done");
    assert_eq!(r.receive(&frame(MAC, 64, 0)), RxOutcome::DmaFault);
    assert_eq!(r.read(regs::RDH), 0, "RX stops at the descriptor");
    assert_eq!(r.nic.stats().dma_faults.get(), 3);
    let mut raw = [0u8; 16];
    r.mem.read(Hpa::new(RX_RING), &mut raw).unwrap();
    assert_eq!(RxDesc::read_from_bytes(&raw).unwrap().status, 0);

    // No context at all: blocked, the same outcome.
    let mut r = IommuRig::new(&[TX_RING, RX_RING, TX_BUFS, RX_BUFS]);
    r.iommu.clear_context(requester());
    r.rings();
    r.write(regs::TDT, 1);
    assert_eq!(r.read(regs::TDH), 0);
    assert_eq!(r.iommu.stats().faults.context_not_present.get(), 1);
}

#[test]
fn huge_descriptor_lengths() {
    let mut r = Rig::new(MAC);
    r.tx_ring(8, Tctl::EN);
    // 0xFFFF bytes from near the end of memory: beyond 16 KiB, so dropped
    // before anything is read.
    r.put_tx_desc(0, MEM - 16, 0xffff, eop_rs());
    r.put_tx_desc(1, u64::MAX - 0x100, 0xffff, TxCmd::RS);
    r.put_tx_desc(2, 0, 0xffff, eop_rs());
    let next = frame(PEER, 64, 1);
    r.put_tx(3, TX_BUFS, &next, eop_rs());
    r.write(regs::TDT, 4);
    assert_eq!(r.read(regs::TDH), 4);
    assert_eq!(r.wire, [next]);
    assert_eq!(r.stats().tx_oversize.get(), 2);
    assert_eq!(r.stats().dma_faults.get(), 0, "nothing was read");
    for slot in 0..4 {
        assert_eq!(r.tx_desc(slot).sta, TxSta::DD.bits());
    }
    // A fitting length whose buffer runs off the end of memory faults.
    r.put_tx_desc(4, MEM - 16, 64, eop_rs());
    r.write(regs::TDT, 5);
    assert_eq!(r.wire.len(), 1);
    assert_eq!(r.stats().dma_faults.get(), 1);
    assert_eq!(r.read(regs::TDH), 5);
}

#[test]
fn frames_beyond_16k() {
    let mut r = Rig::new(MAC);
    // BSEX with BSIZE 01: 16 KiB buffers, long packets on.
    let bsex_16k = Rctl::BSEX.bits() | (1 << 16);
    r.rx_ring(8, 7, (Rctl::EN | Rctl::LPE).bits() | bsex_16k);
    for base in 0..8u64 {
        // Each 16 KiB buffer needs its own room: re-point the descriptors.
        r.mem
            .write_u64(Hpa::new(RX_RING + 16 * base), 0x4_0000 + 0x8000 * base)
            .unwrap();
    }
    for len in [MAX_FRAME + 1, 20 * 1024, 65535, 1 << 20] {
        assert_eq!(r.receive(&frame(MAC, len, 0)), RxOutcome::Oversize);
    }
    assert_eq!(r.read(regs::RDH), 0);
    assert_eq!(r.stats().rx_oversize.get(), 4);
    let jumbo = frame(MAC, MAX_FRAME, 2);
    match r.receive(&jumbo) {
        RxOutcome::Stored { descriptors, .. } => assert_eq!(descriptors, 1),
        other => panic!("{other:?}"),
    }
    assert_eq!(usize::from(r.rx_desc(0).length.get()), MAX_FRAME);
    let mut got = vec![0u8; MAX_FRAME + 16];
    r.mem.read(Hpa::new(0x4_0000), &mut got).unwrap();
    assert_eq!(got[..MAX_FRAME], jumbo[..]);
    assert!(got[MAX_FRAME..].iter().all(|&b| b == 0), "nothing past it");

    // Without LPE the limit is 1522 bytes (1518 and a VLAN tag).
    r.write(regs::RCTL, Rctl::EN.bits());
    assert!(matches!(
        r.receive(&frame(MAC, 1522, 3)),
        RxOutcome::Stored { .. }
    ));
    assert_eq!(r.receive(&frame(MAC, 1523, 3)), RxOutcome::Oversize);
    assert_eq!(r.read(regs::RDH), 2);
}

/// A DMA port over 1 MiB that checks the port's promise: an access that
/// does not fit in memory fails, and one that succeeds fits.
struct CheckedDma<'m> {
    inner: PassthroughDma<'m, HostMemory>,
}

fn fits(addr: Iova, len: usize) -> bool {
    addr.raw()
        .checked_add(len as u64)
        .is_some_and(|end| end <= MEM)
}

impl DmaPort for CheckedDma<'_> {
    fn dma_read(&mut self, addr: Iova, buf: &mut [u8]) -> Result<Cost, DmaFault> {
        let r = self.inner.dma_read(addr, buf);
        self.check(addr, buf.len(), r.is_ok());
        r
    }

    fn dma_write(&mut self, addr: Iova, data: &[u8]) -> Result<Cost, DmaFault> {
        let r = self.inner.dma_write(addr, data);
        self.check(addr, data.len(), r.is_ok());
        r
    }

    fn prefetch(&mut self, addr: Iova, access: AccessKind) -> Result<Cost, DmaFault> {
        let r = self.inner.prefetch(addr, access);
        self.check(addr, 1, r.is_ok());
        r
    }
}

impl CheckedDma<'_> {
    fn check(&self, addr: Iova, len: usize, ok: bool) {
        if len != 0 {
            assert_eq!(ok, fits(addr, len), "DMA of {len} bytes at {addr}");
        }
    }
}

/// Every register the model implements, more entries of its arrays, and a
/// few offsets it does not implement.
fn offsets() -> Vec<u64> {
    let more = [
        regs::MTA + 4 * 127,
        regs::RAL0 + 8,
        regs::RAH0 + 8,
        0x0018,
        0x5800,
    ];
    regs::IMPLEMENTED.iter().chain(&more).copied().collect()
}

#[derive(Debug, Clone)]
enum Op {
    Write(u64, Width, u32),
    Read(u64, Width),
    Receive { dst: [u8; 6], len: usize, seed: u8 },
}

fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => proptest::sample::select(offsets()),
        1 => 0u64..regs::BAR_SIZE,
        1 => any::<u64>(),
    ]
}

fn width() -> impl Strategy<Value = Width> {
    prop_oneof![
        8 => Just(Width::U32),
        1 => Just(Width::U8),
        1 => Just(Width::U16),
        1 => Just(Width::U64),
    ]
}

fn value() -> impl Strategy<Value = u32> {
    prop_oneof![
        3 => any::<u32>(),
        2 => 0u32..64,
        2 => proptest::sample::select(VALUES),
    ]
}

/// Values that mean something to some register.
const VALUES: &[u32] = &[
    0,
    2,
    0x1_0000,
    0x2_0000,
    0xf_ff00,
    128,
    256,
    1024,
    0xf_ff80,
    0xffff,
    (1 << 1) | (1 << 3) | (1 << 4) | (1 << 15) | BSIZE_256,
    (1 << 1) | (1 << 5) | (1 << 25) | (1 << 16),
    (1 << 1) | (1 << 3),
    1 << 26,
];

fn op() -> impl Strategy<Value = Op> {
    let dst = prop_oneof![
        Just(MAC),
        Just([0xff; 6]),
        Just([0x01, 0x00, 0x5e, 0, 0, 1]),
        any::<[u8; 6]>(),
    ];
    let len = prop_oneof![0usize..80, 0usize..2000, 0usize..(20 << 10)];
    let doorbell = proptest::sample::select(&[regs::TDT, regs::RDT, regs::TDH, regs::RDH][..]);
    prop_oneof![
        5 => (offset(), width(), value()).prop_map(|(o, w, v)| Op::Write(o, w, v)),
        3 => (doorbell, 0u32..72).prop_map(|(o, v)| Op::Write(o, Width::U32, v)),
        2 => (offset(), width()).prop_map(|(o, w)| Op::Read(o, w)),
        3 => (dst, len, any::<u8>()).prop_map(|(dst, len, seed)| Op::Receive { dst, len, seed }),
    ]
}

/// A descriptor's buffer address: in memory, at its very end, or anywhere.
fn buffer_addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..MEM,
        1 => (0u64..64).prop_map(|d| MEM - d),
        1 => Just(0u64),
        1 => any::<u64>(),
    ]
}

fn descriptor() -> impl Strategy<Value = [u8; 16]> {
    (buffer_addr(), any::<u16>(), 0u16..2048, any::<[u8; 6]>()).prop_map(
        |(addr, raw_len, small_len, tail)| {
            let mut d = [0u8; 16];
            d[..8].copy_from_slice(&addr.to_le_bytes());
            let len = if raw_len % 4 == 0 { raw_len } else { small_len };
            d[8..10].copy_from_slice(&len.to_le_bytes());
            d[10..].copy_from_slice(&tail);
            d
        },
    )
}

/// Every counter of [`NicStats`], in a fixed order (read from its `Debug`
/// form, every `Counter(n)`, so counters added later are covered too).
fn counters(s: &NicStats) -> Vec<u64> {
    let text = format!("{s:?}");
    text.split("Counter(")
        .skip(1)
        .map(|piece| piece.split(')').next().unwrap().parse().unwrap())
        .collect()
}

/// Runs one MMIO access or frame against the NIC through a checked port.
fn apply(nic: &mut Nic, mem: &mut HostMemory, op: &Op, sent: &mut u64) {
    let mut dma = CheckedDma {
        inner: PassthroughDma::new(mem),
    };
    let mut irqs: Vec<Irq> = Vec::new();
    let mut net = |f: &[u8]| {
        assert!(f.len() <= MAX_FRAME, "sent {} bytes", f.len());
        *sent += 1;
    };
    {
        let mut timers = iovirt_core::TimerQueue::new();
        let mut env = NicEnv {
            timers: &mut timers,
            dma: &mut dma,
            irq: &mut irqs,
            net: &mut net,
        };
        match *op {
            Op::Write(off, w, v) => nic.mmio_write(off, w, u64::from(v), &mut env),
            Op::Read(off, w) => {
                let v = nic.mmio_read(off, w, &mut env);
                assert!(v <= w.mask());
            }
            Op::Receive { dst, len, seed } => {
                let mut f = vec![seed; len];
                for (b, d) in f.iter_mut().zip(dst) {
                    *b = d;
                }
                nic.receive(&f, &mut env);
            }
        }
    }
    assert!(irqs.iter().all(|&i| i == IRQ));
}

/// (head, count) of a ring, read through MMIO (no side effects).
fn ring(nic: &mut Nic, mem: &mut HostMemory, head: u64, len: u64) -> (u64, u64) {
    let mut dma = PassthroughDma::new(mem);
    let mut irqs: Vec<Irq> = Vec::new();
    let mut net = |_: &[u8]| {};
    let mut timers = iovirt_core::TimerQueue::new();
    let mut env = NicEnv {
        timers: &mut timers,
        dma: &mut dma,
        irq: &mut irqs,
        net: &mut net,
    };
    let h = nic.mmio_read(head, Width::U32, &mut env);
    let l = nic.mmio_read(len, Width::U32, &mut env);
    (h, (l & !0x7f) / 16)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random register writes and reads (real offsets and random ones,
    /// random widths and values) interleaved with random frames, over rings
    /// of random descriptors: nothing panics, every call returns, no DMA
    /// reaches outside the 1 MiB of memory, no frame sent exceeds 16 KiB,
    /// the counters never go down, and a head the device moves stays inside
    /// its ring.
    #[test]
    fn random_registers_and_frames_never_panic_or_escape_memory(
        tx_descs in proptest::collection::vec(descriptor(), 64),
        rx_descs in proptest::collection::vec(descriptor(), 64),
        ops in proptest::collection::vec(op(), 1..48),
    ) {
        let mut mem = HostMemory::new(MEM).unwrap();
        for (i, d) in tx_descs.iter().enumerate() {
            mem.write(Hpa::new(TX_RING + 16 * i as u64), d).unwrap();
        }
        for (i, d) in rx_descs.iter().enumerate() {
            mem.write(Hpa::new(RX_RING + 16 * i as u64), d).unwrap();
        }
        let mut nic = Nic::new(NicConfig { mac: MAC, irq: IRQ });
        let mut sent = 0u64;
        // A sane start the random operations then perturb.
        let setup = [
            (regs::TDBAL, TX_RING as u32),
            (regs::TDLEN, 1024),
            (regs::RDBAL, RX_RING as u32),
            (regs::RDLEN, 1024),
            (regs::RDT, 40),
            (regs::IMS, u32::MAX),
            (regs::RCTL, (Rctl::EN | Rctl::BAM | Rctl::MPE).bits()),
            (regs::TCTL, (Tctl::EN | Tctl::PSP).bits()),
        ];
        let ops: Vec<Op> = setup
            .iter()
            .map(|&(o, v)| Op::Write(o, Width::U32, v))
            .chain(ops)
            .collect();
        let mut before = counters(nic.stats());
        for op in &ops {
            let (tdh0, _) = ring(&mut nic, &mut mem, regs::TDH, regs::TDLEN);
            let (rdh0, _) = ring(&mut nic, &mut mem, regs::RDH, regs::RDLEN);
            apply(&mut nic, &mut mem, op, &mut sent);
            let after = counters(nic.stats());
            prop_assert_eq!(after.len(), before.len());
            for (i, (a, b)) in after.iter().zip(&before).enumerate() {
                prop_assert!(a >= b, "counter {} went down after {:?}", i, op);
            }
            before = after;
            // Heads the device moved (not the guest's own writes, nor a reset).
            let guest_moved = |head: u64| matches!(
                *op,
                Op::Write(o, Width::U32, _) if o == head || o == regs::CTRL
            );
            let (tdh, tcount) = ring(&mut nic, &mut mem, regs::TDH, regs::TDLEN);
            if tdh != tdh0 && !guest_moved(regs::TDH) {
                prop_assert!(tdh < tcount, "TDH {} of {} after {:?}", tdh, tcount, op);
            }
            let (rdh, rcount) = ring(&mut nic, &mut mem, regs::RDH, regs::RDLEN);
            if rdh != rdh0 && !guest_moved(regs::RDH) {
                prop_assert!(rdh < rcount, "RDH {} of {} after {:?}", rdh, rcount, op);
            }
        }
        prop_assert_eq!(nic.stats().tx_frames.get(), sent);
    }
}

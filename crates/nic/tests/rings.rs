//! The TX and RX rings end to end, on host memory without an IOMMU
//! (`PassthroughDma`) and then through the IOMMU: two NICs wired back to
//! back, gather and scatter over several descriptors, write-back, the
//! interrupt causes of the rings, missed frames, the receive filter, short
//! frame padding, and the NOP transmit command filling the IOTLB.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::iommu::IommuRig;
use common::rings::{BSIZE_256, SENTINEL, TX_BUFS, TX_RING, eop_rs, nop};
use common::{IRQ, Platform, Rig};
use iovirt_core::{Hpa, Iova, PhysMemory};
use iovirt_nic::desc::{RxDesc, RxSta, TxCmd, TxDesc, TxSta};
use iovirt_nic::regs::{self, Cause, RAH_AV, Rctl, Tctl};
use iovirt_nic::{Accept, RxOutcome};
use iovirt_paging::{Mapping, PteFlags};
use zerocopy::byteorder::little_endian::{U16, U64};
use zerocopy::{FromBytes, IntoBytes};

const MAC_A: [u8; 6] = [0x52, 0x54, 0x00, 0x00, 0x00, 0x0a];
const MAC_B: [u8; 6] = [0x52, 0x54, 0x00, 0x00, 0x00, 0x0b];

/// A frame to `dst` from `src` of `len` bytes, its payload a pattern
/// seeded by `seed`.
fn frame(dst: [u8; 6], src: [u8; 6], len: usize, seed: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f
}

fn stored(outcome: RxOutcome) -> (Accept, u32) {
    match outcome {
        RxOutcome::Stored {
            accept,
            descriptors,
        } => (accept, descriptors),
        other => panic!("frame not stored: {other:?}"),
    }
}

#[test]
fn two_nics_back_to_back_deliver_byte_exact_frames() {
    let mut a = Rig::new(MAC_A);
    let mut b = Rig::new(MAC_B);
    a.tx_ring(16, Tctl::EN | Tctl::PSP);
    b.rx_ring(16, 15, (Rctl::EN | Rctl::BAM).bits());

    let small = frame(MAC_B, MAC_A, 60, 1);
    let full = frame(MAC_B, MAC_A, 1514, 2);
    let bcast = frame([0xff; 6], MAC_A, 300, 3);
    let stranger = frame([0x02, 1, 2, 3, 4, 5], MAC_A, 100, 4);
    a.put_tx(0, TX_BUFS, &small, eop_rs());
    // The full-size frame is gathered from two buffers in different pages.
    a.put_tx(1, TX_BUFS + 0x1000, &full[..1000], TxCmd::RS);
    a.put_tx(2, TX_BUFS + 0x3000, &full[1000..], eop_rs());
    a.put_tx(3, TX_BUFS + 0x5000, &bcast, eop_rs());
    a.put_tx(4, TX_BUFS + 0x6000, &stranger, eop_rs());
    a.write(regs::TDT, 5);
    assert_eq!(a.read(regs::TDH), 5);
    assert_eq!(
        a.wire,
        [small.clone(), full.clone(), bcast.clone(), stranger]
    );

    let outcomes: Vec<RxOutcome> = a.wire.iter().map(|f| b.receive(f)).collect();
    assert_eq!(stored(outcomes[0]), (Accept::Exact, 1));
    assert_eq!(stored(outcomes[1]), (Accept::Exact, 1));
    assert_eq!(stored(outcomes[2]), (Accept::Broadcast, 1));
    assert_eq!(outcomes[3], RxOutcome::Filtered);

    for (slot, sent) in [&small, &full, &bcast].into_iter().enumerate() {
        let slot = slot as u64;
        let d = b.rx_desc(slot);
        assert_eq!(usize::from(d.length.get()), sent.len());
        assert_eq!(d.status, (RxSta::DD | RxSta::EOP).bits());
        assert_eq!(d.errors, 0);
        assert_eq!(&b.rx_buf(slot, sent.len()), sent, "slot {slot}");
        assert_eq!(
            b.rx_buf(slot, sent.len() + 1)[sent.len()],
            SENTINEL,
            "nothing written past the frame"
        );
    }
    assert_eq!(b.rx_desc(3).status, 0, "the filtered frame used nothing");
    assert_eq!(b.read(regs::RDH), 3);
    assert_eq!(a.nic.stats().tx_frames.get(), 4);
    assert_eq!(b.nic.stats().rx_frames.get(), 3);
    assert_eq!(b.nic.stats().rx_filtered.get(), 1);
    assert_eq!(
        b.nic.stats().rx_bytes.get(),
        (small.len() + full.len() + bcast.len()) as u64
    );
}

#[test]
fn tx_gathers_descriptors_until_eop_even_across_doorbells() {
    let mut r = Rig::new(MAC_A);
    r.tx_ring(8, Tctl::EN);
    let f = frame(MAC_B, MAC_A, 350, 9);
    r.put_tx(0, TX_BUFS, &f[..100], TxCmd::empty());
    r.put_tx(1, TX_BUFS + 0x800, &f[100..300], TxCmd::empty());
    r.write(regs::TDT, 2);
    assert!(r.wire.is_empty(), "no EOP yet: nothing sent");
    assert_eq!(r.read(regs::TDH), 2);
    r.put_tx(2, TX_BUFS + 0x2000, &f[300..], TxCmd::EOP);
    r.write(regs::TDT, 3);
    assert_eq!(r.wire, [f]);
    assert_eq!(r.nic.stats().tx_descriptors.get(), 3);
    assert_eq!(r.nic.stats().tx_frames.get(), 1);
    assert_eq!(r.nic.stats().tx_bytes.get(), 350);
}

#[test]
fn tx_ring_wraps() {
    let mut r = Rig::new(MAC_A);
    r.tx_ring(8, Tctl::EN);
    r.write(regs::TDH, 6);
    r.write(regs::TDT, 6);
    let frames: Vec<Vec<u8>> = (0..4)
        .map(|i| frame(MAC_B, MAC_A, 64 + i, i as u8))
        .collect();
    for (i, f) in frames.iter().enumerate() {
        let slot = (6 + i as u64) % 8;
        r.put_tx(slot, TX_BUFS + 0x1000 * i as u64, f, eop_rs());
    }
    r.write(regs::TDT, 2);
    assert_eq!(r.read(regs::TDH), 2);
    assert_eq!(r.wire, frames);
    for slot in [6, 7, 0, 1] {
        assert_eq!(r.tx_desc(slot).sta, TxSta::DD.bits());
    }
}

#[test]
fn rx_scatters_a_large_frame_over_descriptors() {
    let mut r = Rig::new(MAC_B);
    r.rx_ring(8, 7, Rctl::EN.bits() | BSIZE_256);
    r.write(regs::IMS, Cause::RXT0.bits());
    let f = frame(MAC_B, MAC_A, 1500, 5);
    assert_eq!(stored(r.receive(&f)), (Accept::Exact, 6));
    assert_eq!(r.read(regs::RDH), 6);
    for slot in 0..6u64 {
        let d = r.rx_desc(slot);
        let want = if slot < 5 { 256 } else { 1500 - 5 * 256 };
        assert_eq!(d.length.get(), want, "slot {slot}");
        let eop = if slot == 5 { RxSta::EOP.bits() } else { 0 };
        assert_eq!(d.status, RxSta::DD.bits() | eop, "slot {slot}");
        let start = 256 * slot as usize;
        let buf = r.rx_buf(slot, 257);
        assert_eq!(
            buf[..usize::from(want)],
            f[start..start + usize::from(want)]
        );
        assert!(
            buf[usize::from(want)..].iter().all(|&b| b == SENTINEL),
            "slot {slot}: nothing past the piece"
        );
    }
    assert_eq!(r.rx_desc(6).status, 0);
    assert_eq!(r.nic.stats().rx_descriptors.get(), 6);
    assert_eq!(r.irqs, [IRQ]);
    assert_eq!(r.read(regs::ICR), Cause::RXT0.bits());
}

#[test]
fn rx_ring_wraps() {
    let mut r = Rig::new(MAC_B);
    r.rx_ring(8, 7, Rctl::EN.bits() | BSIZE_256);
    r.write(regs::RDH, 6);
    r.write(regs::RDT, 3);
    let f = frame(MAC_B, MAC_A, 700, 8);
    assert_eq!(stored(r.receive(&f)), (Accept::Exact, 3));
    assert_eq!(r.read(regs::RDH), 1);
    let mut got = Vec::new();
    for slot in [6u64, 7, 0] {
        let d = r.rx_desc(slot);
        got.extend(r.rx_buf(slot, d.length.get().into()));
    }
    assert_eq!(got, f);
    assert_eq!(r.rx_desc(0).status, (RxSta::DD | RxSta::EOP).bits());
}

#[test]
fn dd_is_written_back_only_where_rs_asks() {
    let mut r = Rig::new(MAC_A);
    r.tx_ring(8, Tctl::EN);
    r.write(regs::IMS, (Cause::TXDW | Cause::TXQE).bits());
    let f = frame(MAC_B, MAC_A, 80, 0);
    r.put_tx(0, TX_BUFS, &f, TxCmd::EOP);
    r.put_tx(1, TX_BUFS, &f, TxCmd::EOP);
    r.write(regs::TDT, 2);
    assert_eq!(r.wire.len(), 2);
    assert_eq!(r.tx_desc(0).sta, 0);
    assert_eq!(r.tx_desc(1).sta, 0);
    assert_eq!(
        r.read(regs::ICR),
        Cause::TXQE.bits(),
        "no write-back: TXQE alone"
    );
    assert_eq!(r.irqs.len(), 1);

    r.put_tx(2, TX_BUFS, &f, TxCmd::EOP);
    r.put_tx(3, TX_BUFS, &f, eop_rs());
    r.write(regs::TDT, 4);
    assert_eq!(r.tx_desc(2).sta, 0);
    assert_eq!(r.tx_desc(3).sta, TxSta::DD.bits());
    // The rest of the descriptor is left as the driver wrote it.
    assert_eq!(r.tx_desc(3).addr.get(), TX_BUFS);
    assert_eq!(r.tx_desc(3).length.get(), 80);
    assert_eq!(r.read(regs::ICR), (Cause::TXDW | Cause::TXQE).bits());
    assert_eq!(r.irqs.len(), 2);
}

#[test]
fn txqe_only_when_the_queue_drains() {
    let mut r = Rig::new(MAC_A);
    r.tx_ring(8, Tctl::EN);
    let f = frame(MAC_B, MAC_A, 64, 0);
    for slot in 0..3 {
        r.put_tx(slot, TX_BUFS, &f, eop_rs());
    }
    // Disabled while the tail moves, then enabled: the queue drains.
    r.write(regs::TCTL, 0);
    r.write(regs::TDT, 3);
    assert_eq!(r.read(regs::ICR), 0);
    r.write(regs::TCTL, Tctl::EN.bits());
    assert_eq!(r.read(regs::ICR), (Cause::TXDW | Cause::TXQE).bits());
    assert_eq!(r.wire.len(), 3);
}

#[test]
fn rdh_equal_to_rdt_drops_with_mpc_and_rxo() {
    let mut r = Rig::new(MAC_B);
    r.rx_ring(8, 7, Rctl::EN.bits());
    r.write(regs::IMS, (Cause::RXO | Cause::RXT0).bits());
    r.write(regs::RDT, 0);
    let f = frame(MAC_B, MAC_A, 64, 0);
    assert_eq!(r.receive(&f), RxOutcome::NoDescriptor);
    assert_eq!(r.read(regs::RDH), 0);
    assert_eq!(r.rx_desc(0).status, 0);
    assert_eq!(r.rx_buf(0, 64), vec![SENTINEL; 64]);
    assert_eq!(r.irqs, [IRQ]);
    assert_eq!(r.read(regs::ICR), Cause::RXO.bits());
    assert_eq!(r.nic.stats().rx_no_descriptor.get(), 1);
    assert_eq!(r.read(regs::MPC), 1);
    // Giving descriptors back lets the next frame in.
    r.write(regs::RDT, 2);
    stored(r.receive(&f));
    stored(r.receive(&f));
    assert_eq!(r.receive(&f), RxOutcome::NoDescriptor);
    assert_eq!(r.read(regs::ICR), (Cause::RXT0 | Cause::RXO).bits());
    assert_eq!(r.read(regs::MPC), 1);
    assert_eq!(r.read(regs::GPRC), 2);
}

#[test]
fn rx_needs_enough_descriptors_for_the_whole_frame() {
    let mut r = Rig::new(MAC_B);
    r.rx_ring(8, 7, Rctl::EN.bits() | BSIZE_256);
    r.write(regs::RDT, 3);
    let f = frame(MAC_B, MAC_A, 1000, 0);
    assert_eq!(r.receive(&f), RxOutcome::NoDescriptor, "4 needed, 3 free");
    assert_eq!(r.read(regs::RDH), 0);
    for slot in 0..3 {
        assert_eq!(r.rx_desc(slot).status, 0);
    }
    assert_eq!(stored(r.receive(&f[..768])), (Accept::Exact, 3));
}

/// The 12-bit MTA hash of `dst` for RCTL.MO = 0: address bits 47:36.
fn mta_hash_mo0(dst: [u8; 6]) -> u32 {
    (u32::from(dst[5]) << 4) | (u32::from(dst[4]) >> 4)
}

/// ... and for MO = 3: address bits 43:32.
fn mta_hash_mo3(dst: [u8; 6]) -> u32 {
    (u32::from(dst[5] & 0xf) << 8) | u32::from(dst[4])
}

#[test]
fn receive_filter_cases() {
    let mut r = Rig::new(MAC_B);
    r.rx_ring(32, 31, Rctl::EN.bits());
    let send = |r: &mut Rig, dst: [u8; 6]| r.receive(&frame(dst, MAC_A, 64, 0));
    let stranger = [0x02, 0x99, 0x88, 0x77, 0x66, 0x55];
    let group = [0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb];
    let other_group = [0x01, 0x00, 0x5e, 0x00, 0x01, 0x01];

    assert_eq!(stored(send(&mut r, MAC_B)).0, Accept::Exact);
    assert_eq!(send(&mut r, stranger), RxOutcome::Filtered);
    assert_eq!(send(&mut r, [0xff; 6]), RxOutcome::Filtered, "no BAM");
    assert_eq!(send(&mut r, group), RxOutcome::Filtered, "MTA empty");

    // A second exact address, valid only with AV.
    r.write(regs::RAL0 + 8, u32::from_le_bytes([0x02, 0x99, 0x88, 0x77]));
    r.write(regs::RAH0 + 8, 0x5566);
    assert_eq!(send(&mut r, stranger), RxOutcome::Filtered, "AV clear");
    r.write(regs::RAH0 + 8, 0x5566 | RAH_AV);
    assert_eq!(stored(send(&mut r, stranger)).0, Accept::Exact);

    // The multicast hash table, MO = 0.
    let h = mta_hash_mo0(group);
    assert_eq!(h, 0xfb0);
    r.write(regs::MTA + 4 * u64::from(h >> 5), 1 << (h & 31));
    assert_eq!(stored(send(&mut r, group)).0, Accept::MulticastHash);
    assert_ne!(mta_hash_mo0(other_group) >> 5, h >> 5);
    assert_eq!(send(&mut r, other_group), RxOutcome::Filtered);
    // MO = 3 hashes other bits: the same table entry no longer matches.
    r.write(regs::RCTL, Rctl::EN.bits() | (3 << 12));
    assert_ne!(mta_hash_mo3(group), h);
    assert_eq!(send(&mut r, group), RxOutcome::Filtered);
    let h3 = mta_hash_mo3(group);
    r.write(regs::MTA + 4 * u64::from(h3 >> 5), 1 << (h3 & 31));
    assert_eq!(stored(send(&mut r, group)).0, Accept::MulticastHash);

    // Broadcast with BAM.
    r.write(regs::RCTL, (Rctl::EN | Rctl::BAM).bits());
    assert_eq!(stored(send(&mut r, [0xff; 6])).0, Accept::Broadcast);

    // Unicast promiscuous takes any unicast, not multicast.
    r.write(regs::RCTL, (Rctl::EN | Rctl::UPE).bits());
    let nobody = [0x02, 0, 0, 0, 0, 0x42];
    assert_eq!(stored(send(&mut r, nobody)).0, Accept::Promiscuous);
    assert_eq!(send(&mut r, other_group), RxOutcome::Filtered);
    assert_eq!(stored(send(&mut r, MAC_B)).0, Accept::Exact);

    // Multicast promiscuous takes any multicast, not unicast.
    r.write(regs::RCTL, (Rctl::EN | Rctl::MPE).bits());
    assert_eq!(stored(send(&mut r, other_group)).0, Accept::Promiscuous);
    assert_eq!(send(&mut r, nobody), RxOutcome::Filtered);

    // A frame too short to hold a destination address.
    assert_eq!(r.receive(&[0xff; 5]), RxOutcome::Filtered);
    assert_eq!(r.nic.stats().rx_filtered.get(), 9);
    assert_eq!(r.nic.stats().rx_frames.get(), 8);
}

#[test]
fn psp_pads_short_frames_to_60_bytes() {
    let arp = frame([0xff; 6], MAC_A, 42, 7);
    for (tctl, len) in [(Tctl::EN | Tctl::PSP, 60), (Tctl::EN, 42)] {
        let mut r = Rig::new(MAC_A);
        r.tx_ring(8, tctl);
        r.put_tx(0, TX_BUFS, &arp, eop_rs());
        r.write(regs::TDT, 1);
        assert_eq!(r.wire.len(), 1);
        let sent = &r.wire[0];
        assert_eq!(sent.len(), len, "{tctl:?}");
        assert_eq!(sent[..42], arp[..]);
        assert!(sent[42..].iter().all(|&b| b == 0), "padding is zeros");
        assert_eq!(r.nic.stats().tx_bytes.get(), len as u64);
        assert_eq!(r.read(regs::GOTCL), len as u32);
    }
    // Frames of 60 bytes or more are not touched.
    let mut r = Rig::new(MAC_A);
    r.tx_ring(8, Tctl::EN | Tctl::PSP);
    let long = frame([0xff; 6], MAC_A, 61, 7);
    r.put_tx(0, TX_BUFS, &long, eop_rs());
    r.write(regs::TDT, 1);
    assert_eq!(r.wire, [long]);
}

/// The TX engine reuses its frame buffer without zeroing it: a short frame
/// sent after a long one must still be padded with zeros, not with the
/// long frame's bytes.
#[test]
fn padding_never_carries_an_earlier_frames_bytes() {
    let mut r = Rig::new(MAC_A);
    r.tx_ring(8, Tctl::EN | Tctl::PSP);
    let long = frame([0xff; 6], MAC_A, 1500, 0xab);
    let short = frame([0xff; 6], MAC_A, 42, 0xcd);
    r.put_tx(0, TX_BUFS, &long, eop_rs());
    r.put_tx(1, TX_BUFS + 0x1000, &short, eop_rs());
    r.write(regs::TDT, 2);
    assert_eq!(r.wire.len(), 2);
    assert_eq!(r.wire[0], long);
    assert_eq!(r.wire[1].len(), 60);
    assert_eq!(r.wire[1][..42], short[..]);
    assert_eq!(r.wire[1][42..], [0; 18], "padding is zeros");
}

#[test]
fn nop_command_sends_nothing_and_writes_dd_with_rs() {
    let mut r = Rig::new(MAC_A);
    r.tx_ring(8, Tctl::EN);
    r.write(regs::IMS, Cause::TXDW.bits());
    for (slot, cmd) in [
        (0u64, TxCmd::RS),
        (1, TxCmd::empty()),
        (2, TxCmd::RS | TxCmd::EOP),
    ] {
        r.mem
            .write(Hpa::new(TX_RING + 16 * slot), nop(TX_BUFS, cmd).as_bytes())
            .unwrap();
    }
    r.write(regs::TDT, 3);
    assert!(r.wire.is_empty());
    assert_eq!(r.read(regs::TDH), 3);
    assert_eq!(r.nic.stats().nop_commands.get(), 3);
    assert_eq!(r.nic.stats().tx_frames.get(), 0);
    assert_eq!(r.tx_desc(0).sta, TxSta::DD.bits());
    assert_eq!(r.tx_desc(1).sta, 0);
    assert_eq!(r.tx_desc(2).sta, TxSta::DD.bits());
    assert_eq!(r.irqs, [IRQ]);
    assert_eq!(r.read(regs::GPTC), 0);
    // A NOP in the middle of a frame's gather leaves the frame alone.
    let f = frame(MAC_B, MAC_A, 200, 1);
    r.put_tx(3, TX_BUFS, &f[..120], TxCmd::empty());
    r.mem
        .write(
            Hpa::new(TX_RING + 16 * 4),
            nop(TX_BUFS, TxCmd::RS).as_bytes(),
        )
        .unwrap();
    r.put_tx(5, TX_BUFS + 0x1000, &f[120..], eop_rs());
    r.write(regs::TDT, 6);
    assert_eq!(r.wire, [f]);
    assert_eq!(r.nic.stats().nop_commands.get(), 4);
}

const IOVA_BASE: u64 = 0x4000_0000;
const HPA_BASE: u64 = 0x20_0000;
const WINDOW: u64 = 0x4_0000;

fn hpa(iova: u64) -> Hpa {
    assert!((IOVA_BASE..IOVA_BASE + WINDOW).contains(&iova));
    Hpa::new(iova - IOVA_BASE + HPA_BASE)
}

impl IommuRig {
    /// A NIC behind the IOMMU: IOVA [`IOVA_BASE`].. maps to HPA [`HPA_BASE`]..
    fn new() -> IommuRig {
        let window = Mapping::new(
            Iova::new(IOVA_BASE),
            Hpa::new(HPA_BASE),
            WINDOW,
            PteFlags::RW,
        );
        IommuRig::with_mappings(MAC_A, Hpa::new(0), &[window])
    }

    fn put(&mut self, iova: u64, data: &[u8]) {
        self.mem.write(hpa(iova), data).unwrap();
    }

    fn get(&self, iova: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        self.mem.read(hpa(iova), &mut buf).unwrap();
        buf
    }
}

#[test]
fn tx_and_rx_through_the_iommu() {
    let mut r = IommuRig::new();
    let tx_ring = IOVA_BASE;
    let rx_ring = IOVA_BASE + 0x1000;
    // The TX buffer straddles a page boundary, and so do the RX buffers.
    let tx_buf = IOVA_BASE + 0x2c00;
    let rx_buf = IOVA_BASE + 0x8e00;
    let f = frame(MAC_B, MAC_A, 1514, 3);
    r.put(tx_buf, &f);
    let d0 = TxDesc {
        addr: U64::new(tx_buf),
        length: U16::new(1000),
        cmd: TxCmd::RS.bits(),
        ..TxDesc::default()
    };
    let d1 = TxDesc {
        addr: U64::new(tx_buf + 1000),
        length: U16::new(514),
        cmd: eop_rs().bits(),
        ..TxDesc::default()
    };
    r.put(tx_ring, d0.as_bytes());
    r.put(tx_ring + 16, d1.as_bytes());
    for (reg, value) in [
        (regs::TDBAL, tx_ring as u32),
        (regs::TDBAH, (tx_ring >> 32) as u32),
        (regs::TDLEN, 128),
        (regs::TCTL, Tctl::EN.bits()),
        (regs::TDT, 2),
    ] {
        r.write(reg, value);
    }
    assert_eq!(r.wire, std::slice::from_ref(&f));
    assert_eq!(r.get(tx_ring + 12, 1), [TxSta::DD.bits()]);
    assert_eq!(r.get(tx_ring + 16 + 12, 1), [TxSta::DD.bits()]);

    // Receive it back (as if looped by a switch) into a buffer split in 256 B.
    let mut own = f.clone();
    own[..6].copy_from_slice(&MAC_A);
    for i in 0..8u64 {
        let d = RxDesc {
            addr: U64::new(rx_buf + 0x100 * i),
            ..RxDesc::default()
        };
        r.put(rx_ring + 16 * i, d.as_bytes());
    }
    for (reg, value) in [
        (regs::RDBAL, rx_ring as u32),
        (regs::RDLEN, 128),
        (regs::RDT, 7),
        (regs::RCTL, Rctl::EN.bits() | BSIZE_256),
    ] {
        r.write(reg, value);
    }
    assert_eq!(stored(r.receive(&own)), (Accept::Exact, 6));
    assert_eq!(r.get(rx_buf, own.len()), own, "contiguous buffers");
    let last: RxDesc = RxDesc::read_from_bytes(&r.get(rx_ring + 16 * 5, 16)).unwrap();
    assert_eq!(last.length.get(), 1514 - 5 * 256);
    assert_eq!(last.status, (RxSta::DD | RxSta::EOP).bits());
    assert_eq!(r.nic.stats().dma_faults.get(), 0);
    assert!(r.faults.is_empty());
    let s = r.iommu.stats();
    assert_eq!(s.faults.total(), 0);
    assert!(s.iotlb_hits.get() > 0);
    // Every page touched was walked once: two ring pages, the TX buffer's
    // two pages, the RX buffers' two pages.
    assert_eq!(s.walks.get(), 6);
}

#[test]
fn nop_through_the_iommu_fills_the_iotlb_for_the_next_dma() {
    let mut r = IommuRig::new();
    let tx_ring = IOVA_BASE;
    let page = IOVA_BASE + 0x5000;
    let f = frame(MAC_B, MAC_A, 200, 6);
    r.put(page + 0x40, &f);
    r.put(tx_ring, nop(page, TxCmd::RS).as_bytes());
    for (reg, value) in [
        (regs::TDBAL, tx_ring as u32),
        (regs::TDLEN, 128),
        (regs::TCTL, Tctl::EN.bits()),
        (regs::TDT, 1),
    ] {
        r.write(reg, value);
    }
    assert!(r.wire.is_empty());
    assert_eq!(r.nic.stats().nop_commands.get(), 1);
    assert_eq!(r.get(tx_ring + 12, 1), [TxSta::DD.bits()]);
    let after_nop = r.iommu.stats();
    assert_eq!(after_nop.prefetches.get(), 1);
    assert_eq!(after_nop.prefetch_redundant.get(), 0);
    assert_eq!(after_nop.iotlb.prefetch_fills.get(), 1);
    assert_eq!(after_nop.dma_bytes.get(), 16 + 1, "descriptor and DD only");
    assert_eq!(after_nop.walks.get(), 2, "the ring page and the NOP's page");

    // The real DMA to that page finds its translation cached.
    let d = TxDesc {
        addr: U64::new(page + 0x40),
        length: U16::new(200),
        cmd: eop_rs().bits(),
        ..TxDesc::default()
    };
    r.put(tx_ring + 16, d.as_bytes());
    r.write(regs::TDT, 2);
    assert_eq!(r.wire, [f]);
    let after = r.iommu.stats();
    assert_eq!(after.walks.get(), after_nop.walks.get(), "no walk");
    assert_eq!(after.iotlb_misses.get(), after_nop.iotlb_misses.get());
    assert_eq!(after.iotlb.prefetch_used.get(), 1);
    // Descriptor fetch, buffer read and DD write-back: three hits.
    assert_eq!(after.iotlb_hits.get() - after_nop.iotlb_hits.get(), 3);

    // A NOP for an unmapped address faults in the IOMMU; the NIC counts it
    // as a prefetch fault and goes on (DD is still written back).
    r.put(tx_ring + 32, nop(0x7000_0000, TxCmd::RS).as_bytes());
    r.write(regs::TDT, 3);
    assert_eq!(r.nic.stats().nop_commands.get(), 2);
    assert_eq!(r.nic.stats().prefetch_faults.get(), 1);
    assert_eq!(r.get(tx_ring + 32 + 12, 1), [TxSta::DD.bits()]);
    assert_eq!(r.iommu.stats().faults.not_present.get(), 1);
    assert_eq!(r.faults.len(), 1, "the IOMMU's fault event");
    assert_eq!(r.wire.len(), 1, "nothing more sent");
}

//! A paravirtual backend's receive: `Nic::rx_claim` names the buffer at RDH
//! after the checks `Nic::receive` makes, the backend (here the test) puts
//! the frame there itself, and `Nic::rx_commit` completes the descriptor.
//! Each refusal, the skipped null buffers, commits the guest made stale,
//! faults, and a property: claim, place and commit leave the guest exactly
//! what `receive` of the same frame leaves it.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::iommu::IommuRig;
use common::rings::{BSIZE_256, RX_BUFS, RX_RING, RX_STRIDE, SENTINEL, geometry};
use common::{IRQ, MEM, Platform, Rig};
use iovirt_core::{Hpa, Iova, PhysMemory};
use iovirt_nic::desc::RxSta;
use iovirt_nic::regs::{self, Cause, Ctrl, Rctl};
use iovirt_nic::{Accept, Prefetchers, RxOutcome, RxSlot};
use proptest::prelude::*;

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x00, 0x00, 0x0a];
const PEER: [u8; 6] = [0x52, 0x54, 0x00, 0x00, 0x00, 0x0b];
const STRANGER: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
/// RCTL's BSEX with BSIZE 01: 16 KiB buffers.
const BSEX_16K: u32 = Rctl::BSEX.bits() | (1 << 16);

/// A frame to `dst` of `len` bytes (cut short below an address), its
/// payload a pattern seeded by `seed` (odd bytes, never [`SENTINEL`]).
fn frame(dst: [u8; 6], len: usize, seed: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed) | 1)
        .collect();
    for (b, s) in f.iter_mut().zip(dst.iter().chain(&PEER)) {
        *b = *s;
    }
    f
}

/// The backend's side of the shared [`Rig`].
impl Rig {
    fn claim(&mut self, dst: [u8; 6], len: usize) -> Result<RxSlot, RxOutcome> {
        self.with_env(|nic, env| nic.rx_claim(dst, len, env))
    }

    fn commit(&mut self, slot: &RxSlot, len: usize) -> RxOutcome {
        self.with_env(|nic, env| nic.rx_commit(slot, len, env))
    }

    /// The backend's placement: `bytes` straight into the slot's buffer.
    fn place(&mut self, slot: &RxSlot, bytes: &[u8]) {
        self.mem
            .write(Hpa::new(slot.buffer.raw()), bytes)
            .expect("the test's buffers are in memory");
    }

    /// Claims, places `f`, commits.
    fn backend_receive(&mut self, f: &[u8]) -> RxOutcome {
        let dst = f.first_chunk::<6>().copied().unwrap_or_default();
        match self.claim(dst, f.len()) {
            Ok(slot) => {
                self.place(&slot, f);
                self.commit(&slot, f.len())
            }
            Err(refused) => refused,
        }
    }

    /// The ring's `count` descriptors and their buffers, byte for byte.
    fn guest_memory(&self, count: u64) -> Vec<u8> {
        let mut ring = vec![0u8; 16 * count as usize];
        self.mem.read(Hpa::new(RX_RING), &mut ring).unwrap();
        let mut bufs = vec![0u8; (RX_STRIDE * count) as usize + (16 << 10)];
        self.mem.read(Hpa::new(RX_BUFS), &mut bufs).unwrap();
        ring.extend(bufs);
        ring
    }

    /// What the guest reads in the receive registers (reading clears ICR
    /// and the statistics registers, as it would for the guest).
    fn guest_registers(&mut self) -> [u32; 9] {
        [
            regs::RDH,
            regs::RDT,
            regs::ICR,
            regs::GPRC,
            regs::GORCL,
            regs::GORCH,
            regs::TPR,
            regs::MPC,
            regs::RCTL,
        ]
        .map(|reg| self.read(reg))
    }
}

/// A rig with an 8-descriptor ring giving the NIC all but one descriptor,
/// RCTL `rctl`, RXT0 and RXO unmasked.
fn rig(rctl: u32) -> Rig {
    let mut r = Rig::new(MAC);
    r.rx_ring(8, 7, rctl);
    r.write(regs::IMS, (Cause::RXT0 | Cause::RXO).bits());
    r
}

#[test]
fn claim_place_commit_completes_the_descriptor_as_receive_would() {
    let mut r = rig((Rctl::EN | Rctl::BAM).bits());
    let f = frame(MAC, 100, 3);
    let slot = r.claim(MAC, f.len()).unwrap();
    assert_eq!(slot.index, 0);
    assert_eq!(slot.buffer, Iova::new(RX_BUFS));
    assert_eq!(slot.buffer_size, 2048);
    assert_eq!(slot.accept, Accept::Exact);
    assert!(r.irqs.is_empty(), "nothing is signalled before the commit");

    r.place(&slot, &f);
    assert_eq!(
        r.commit(&slot, f.len()),
        RxOutcome::Stored {
            accept: Accept::Exact,
            descriptors: 1
        }
    );

    let d = r.rx_desc(0);
    assert_eq!(d.addr.get(), RX_BUFS, "the driver's half is left alone");
    assert_eq!(d.length.get(), 100);
    assert_eq!(d.status, (RxSta::DD | RxSta::EOP).bits());
    assert_eq!((d.errors, d.checksum.get(), d.special.get()), (0, 0, 0));
    assert_eq!(r.rx_buf(0, 100), f);
    assert_eq!(r.rx_buf(0, 101)[100], SENTINEL);
    assert_eq!(r.rx_desc(1).status, 0, "the next descriptor is untouched");
    assert_eq!(r.irqs, [IRQ]);
    assert_eq!(r.read(regs::RDH), 1);
    assert_eq!(r.read(regs::ICR), Cause::RXT0.bits());
    assert_eq!(r.read(regs::GPRC), 1);
    assert_eq!(r.read(regs::TPR), 1);
    assert_eq!(r.read(regs::GORCL), 100);
    assert_eq!(r.read(regs::GORCH), 0);
    assert_eq!(r.read(regs::MPC), 0);
    let s = r.stats();
    assert_eq!(s.rx_backend_placed.get(), 1);
    assert_eq!(s.rx_frames.get(), 1);
    assert_eq!(s.rx_bytes.get(), 100);
    assert_eq!(s.rx_descriptors.get(), 1);

    // The next claim is the next descriptor; a broadcast is accepted as one.
    let slot = r.claim([0xff; 6], 60).unwrap();
    assert_eq!((slot.index, slot.accept), (1, Accept::Broadcast));
    assert_eq!(slot.buffer, Iova::new(RX_BUFS + RX_STRIDE));
}

#[test]
fn claiming_twice_gives_the_same_slot_and_moves_nothing() {
    let mut r = rig(Rctl::EN.bits());
    let before = r.guest_memory(8);
    let first = r.claim(MAC, 64).unwrap();
    let second = r.claim(MAC, 1000).unwrap();
    assert_eq!(first, second);
    assert_eq!(r.guest_memory(8), before, "a claim writes nothing");
    assert_eq!(r.read(regs::RDH), 0);
    assert_eq!(r.read(regs::ICR), 0);
    assert_eq!(r.read(regs::TPR), 0);
    assert!(r.irqs.is_empty());
    assert_eq!(r.stats().rx_frames.get(), 0);
    assert_eq!(r.stats().rx_descriptors.get(), 0);
    // Either claim can be committed, once.
    assert!(matches!(r.commit(&second, 64), RxOutcome::Stored { .. }));
    assert_eq!(r.commit(&first, 64), RxOutcome::NoDescriptor);
    assert_eq!(r.read(regs::RDH), 1);
}

#[test]
fn a_disabled_receiver_refuses_a_claim() {
    let mut r = rig(0);
    assert_eq!(r.claim(MAC, 64), Err(RxOutcome::Disabled));
    assert_eq!(r.stats().rx_disabled.get(), 1);
    assert_eq!(r.read(regs::MPC), 0);
    assert_eq!(r.read(regs::ICR), 0);
}

#[test]
fn the_filter_refuses_a_claim() {
    let mut r = rig(Rctl::EN.bits());
    assert_eq!(r.claim(STRANGER, 64), Err(RxOutcome::Filtered));
    // Broadcast without BAM is refused too.
    assert_eq!(r.claim([0xff; 6], 64), Err(RxOutcome::Filtered));
    // Shorter than an address: refused as `receive` refuses it.
    assert_eq!(r.claim(MAC, 5), Err(RxOutcome::Filtered));
    assert_eq!(r.stats().rx_filtered.get(), 3);
    assert_eq!(r.read(regs::RDH), 0);
    assert_eq!(
        r.read(regs::TPR),
        0,
        "filtered frames are not missed frames"
    );
    // Promiscuous: the stranger is let in.
    r.write(regs::RCTL, (Rctl::EN | Rctl::UPE).bits());
    assert_eq!(r.claim(STRANGER, 64).unwrap().accept, Accept::Promiscuous);
}

#[test]
fn oversize_claims_are_refused_by_the_limit_and_by_the_buffer() {
    // LPE off: the 1522-byte limit, even with 16 KiB buffers.
    let mut r = rig(Rctl::EN.bits() | BSEX_16K);
    assert_eq!(r.claim(MAC, 1523), Err(RxOutcome::Oversize));
    assert_eq!(r.stats().rx_oversize.get(), 1);
    assert_eq!(r.stats().rx_backend_too_long.get(), 0);
    assert!(r.claim(MAC, 1522).is_ok());

    // Within the limit but longer than one 256-byte buffer: `receive` would
    // scatter it, a backend cannot.
    let mut r = rig(Rctl::EN.bits() | BSIZE_256);
    assert_eq!(r.claim(MAC, 257), Err(RxOutcome::Oversize));
    assert_eq!(r.stats().rx_backend_too_long.get(), 1);
    assert_eq!(r.stats().rx_oversize.get(), 0);
    let slot = r.claim(MAC, 256).unwrap();
    assert_eq!(slot.buffer_size, 256);
    assert_eq!(r.read(regs::RDH), 0);
    assert_eq!(r.read(regs::MPC), 0);

    // LPE with 16 KiB buffers: a whole jumbo frame fits one.
    let mut r = rig((Rctl::EN | Rctl::LPE).bits() | BSEX_16K);
    assert_eq!(r.claim(MAC, 16 * 1024).unwrap().buffer_size, 16 * 1024);
    assert_eq!(r.claim(MAC, 16 * 1024 + 1), Err(RxOutcome::Oversize));
    assert_eq!(r.stats().rx_oversize.get(), 1);
}

#[test]
fn a_claim_with_no_free_descriptor_is_a_missed_frame() {
    // RDH == RDT: the NIC owns nothing.
    let mut r = Rig::new(MAC);
    r.rx_ring(8, 0, Rctl::EN.bits());
    r.write(regs::IMS, Cause::RXO.bits());
    assert_eq!(r.claim(MAC, 64), Err(RxOutcome::NoDescriptor));
    assert_eq!(r.stats().rx_no_descriptor.get(), 1);
    assert_eq!(r.read(regs::MPC), 1);
    assert_eq!(r.read(regs::TPR), 1);
    assert_eq!(r.read(regs::ICR), Cause::RXO.bits());
    assert_eq!(r.irqs, [IRQ]);
    assert_eq!(r.read(regs::RDH), 0);
    assert_eq!(r.rx_desc(0).status, 0);
}

#[test]
fn a_claim_on_a_bad_ring_is_counted_and_missed() {
    let mut r = rig(Rctl::EN.bits());
    r.write(regs::RDT, 9); // beyond the 8-descriptor ring
    assert_eq!(r.claim(MAC, 64), Err(RxOutcome::BadRing));
    r.write(regs::RDT, 7);
    r.write(regs::RDLEN, 0);
    assert_eq!(r.claim(MAC, 64), Err(RxOutcome::BadRing));
    assert_eq!(r.stats().ring_errors.get(), 2);
    assert_eq!(r.read(regs::MPC), 2);
    assert_eq!(r.read(regs::ICR), Cause::RXO.bits());
}

#[test]
fn null_buffers_are_skipped_with_dd_written_back() {
    let mut r = rig(Rctl::EN.bits());
    for slot in [0u64, 1] {
        r.mem.write_u64(Hpa::new(RX_RING + 16 * slot), 0).unwrap();
    }
    let slot = r.claim(MAC, 64).unwrap();
    assert_eq!(slot.index, 2);
    assert_eq!(slot.buffer, Iova::new(RX_BUFS + 2 * RX_STRIDE));
    for i in [0u64, 1] {
        let d = r.rx_desc(i);
        assert_eq!(d.status, RxSta::DD.bits(), "slot {i}: done, no EOP");
        assert_eq!(d.length.get(), 0);
    }
    assert_eq!(
        r.rx_desc(2).status,
        0,
        "the claimed one waits for the commit"
    );
    assert_eq!(r.read(regs::RDH), 2);
    assert_eq!(r.stats().rx_null_buffers.get(), 2);
    assert_eq!(r.stats().rx_descriptors.get(), 2);
    // Claiming again skips nothing more.
    assert_eq!(r.claim(MAC, 64), Ok(slot));
    assert_eq!(r.stats().rx_null_buffers.get(), 2);
    assert!(matches!(r.commit(&slot, 64), RxOutcome::Stored { .. }));
    assert_eq!(r.read(regs::RDH), 3);

    // A ring of nothing but null buffers: one pass, then no descriptor.
    let mut r = rig(Rctl::EN.bits());
    for slot in 0..8u64 {
        r.mem.write_u64(Hpa::new(RX_RING + 16 * slot), 0).unwrap();
    }
    assert_eq!(r.claim(MAC, 64), Err(RxOutcome::NoDescriptor));
    assert_eq!(r.read(regs::RDH), 7);
    assert_eq!(r.stats().rx_null_buffers.get(), 7);
    assert_eq!(r.read(regs::MPC), 1);
    assert_eq!(r.rx_desc(7).status, 0, "RDT's descriptor is not the NIC's");
}

/// Claims a slot for a 64-byte frame and places it, for a commit the
/// guest then makes stale.
fn claimed(r: &mut Rig) -> RxSlot {
    let slot = r.claim(MAC, 64).unwrap();
    r.place(&slot, &frame(MAC, 64, 1));
    slot
}

/// The commit of `slot` is refused with `want` and changes nothing: no
/// byte of the ring or buffers, no register, no counter, no interrupt.
fn refused(r: &mut Rig, slot: &RxSlot, len: usize, want: RxOutcome) {
    let memory = r.guest_memory(8);
    let stats = r.stats();
    let (rdh, rdt) = (r.read(regs::RDH), r.read(regs::RDT));
    let irqs = r.irqs.len();
    assert_eq!(r.commit(slot, len), want);
    assert_eq!(r.guest_memory(8), memory);
    assert_eq!(r.stats(), stats);
    assert_eq!((r.read(regs::RDH), r.read(regs::RDT)), (rdh, rdt));
    assert_eq!(r.read(regs::ICR), 0);
    assert_eq!(r.read(regs::GPRC), 0);
    assert_eq!(r.irqs.len(), irqs);
}

#[test]
fn a_commit_after_the_guest_moved_rdh_is_refused() {
    let mut r = rig(Rctl::EN.bits());
    let slot = claimed(&mut r);
    r.write(regs::RDH, 1);
    refused(&mut r, &slot, 64, RxOutcome::NoDescriptor);
    // Moving it back does not revive the claim: the guest rewrote RDH.
    r.write(regs::RDH, 0);
    refused(&mut r, &slot, 64, RxOutcome::NoDescriptor);
    // A fresh claim is good.
    let slot = r.claim(MAC, 64).unwrap();
    assert!(matches!(r.commit(&slot, 64), RxOutcome::Stored { .. }));
}

/// What the guest does between a claim and its commit, and the refusal it
/// earns the commit.
type GuestMeddling = (&'static str, fn(&mut Rig), RxOutcome);

#[test]
fn a_commit_after_the_guest_rewrote_the_ring_is_refused() {
    let guests: [GuestMeddling; 7] = [
        (
            "a new ring base, RDH still 0",
            |r| r.write(regs::RDBAL, (RX_RING + 0x1000) as u32),
            RxOutcome::NoDescriptor,
        ),
        (
            "the base moved away and back",
            |r| {
                r.write(regs::RDBAL, (RX_RING + 0x1000) as u32);
                r.write(regs::RDBAL, RX_RING as u32);
            },
            RxOutcome::NoDescriptor,
        ),
        (
            "the length rewritten with the same value",
            |r| r.write(regs::RDLEN, 8 * 16),
            RxOutcome::NoDescriptor,
        ),
        (
            "RDT beyond the ring",
            |r| r.write(regs::RDT, 100),
            RxOutcome::BadRing,
        ),
        (
            "the descriptor given back (RDT onto RDH)",
            |r| r.write(regs::RDT, 0),
            RxOutcome::NoDescriptor,
        ),
        (
            "the receiver disabled",
            |r| r.write(regs::RCTL, 0),
            RxOutcome::Disabled,
        ),
        (
            "a device reset, then the very same ring",
            |r| {
                r.write(regs::CTRL, Ctrl::RST.bits());
                r.rx_ring(8, 7, Rctl::EN.bits());
            },
            RxOutcome::NoDescriptor,
        ),
    ];
    for (what, guest, want) in guests {
        let mut r = rig(Rctl::EN.bits());
        let slot = claimed(&mut r);
        guest(&mut r);
        // Captured, shown only when an assertion below fails.
        eprintln!("after {what}:");
        refused(&mut r, &slot, 64, want);
    }

    // The wire's own frame took the descriptor first.
    let mut r = rig(Rctl::EN.bits());
    let slot = claimed(&mut r);
    assert!(matches!(
        r.receive(&frame(MAC, 80, 2)),
        RxOutcome::Stored { .. }
    ));
    let d = r.rx_desc(0);
    assert_eq!(r.commit(&slot, 64), RxOutcome::NoDescriptor);
    assert_eq!(r.rx_desc(0), d, "the wire's frame stays as written");
    assert_eq!(r.read(regs::RDH), 1);
}

#[test]
fn a_commit_longer_than_the_buffer_or_shorter_than_an_address_is_refused() {
    let mut r = rig(Rctl::EN.bits() | BSIZE_256);
    let slot = claimed(&mut r);
    refused(&mut r, &slot, 257, RxOutcome::Oversize);
    refused(&mut r, &slot, usize::MAX, RxOutcome::Oversize);
    refused(&mut r, &slot, 5, RxOutcome::Filtered);
    // The guest shrinks its buffers after the claim: the smaller size holds.
    r.write(regs::RCTL, Rctl::EN.bits() | (2 << 16)); // 512
    let slot = r.claim(MAC, 200).unwrap();
    r.write(regs::RCTL, Rctl::EN.bits() | BSIZE_256);
    refused(&mut r, &slot, 300, RxOutcome::Oversize);
    assert!(matches!(r.commit(&slot, 256), RxOutcome::Stored { .. }));
    assert_eq!(r.rx_desc(0).length.get(), 256);
}

#[test]
fn a_hostile_descriptor_address_faults() {
    // A ring beyond memory: the descriptor fetch faults, RDH stays.
    let mut r = rig(Rctl::EN.bits());
    r.write(regs::RDBAL, 0xfff0_0000);
    assert_eq!(r.claim(MAC, 64), Err(RxOutcome::DmaFault));
    assert_eq!(r.stats().dma_faults.get(), 1);
    assert_eq!(r.read(regs::RDH), 0);
    assert_eq!(r.read(regs::ICR), 0);
    assert_eq!(r.read(regs::MPC), 0);

    // A descriptor naming a buffer beyond memory is still claimed: the
    // placement is the backend's, and its own write is what faults.
    let mut r = rig(Rctl::EN.bits());
    let hostile = 4 * MEM;
    r.mem
        .write_u64(Hpa::new(RX_RING), hostile)
        .expect("ring in memory");
    let slot = r.claim(MAC, 64).unwrap();
    assert_eq!(slot.buffer, Iova::new(hostile));
    assert!(r.mem.write(Hpa::new(slot.buffer.raw()), &[0; 64]).is_err());
}

#[test]
fn a_write_back_that_faults_in_the_iommu_leaves_the_slot_claimed() {
    // The ring readable but not writable, the buffers writable.
    let mut r = IommuRig::with_read_only_ring(MAC, RX_RING, RX_BUFS);
    for slot in 0..8u64 {
        let at = Hpa::new(RX_RING + 16 * slot);
        r.mem.write_u64(at, RX_BUFS + RX_STRIDE * slot).unwrap();
    }
    for (reg, value) in [
        (regs::RDBAL, RX_RING as u32),
        (regs::RDLEN, 128),
        (regs::RDT, 7),
        (regs::RCTL, Rctl::EN.bits()),
    ] {
        r.write(reg, value);
    }
    let slot = r
        .with_env(|nic, env| nic.rx_claim(MAC, 64, env))
        .expect("the descriptor is readable");
    let outcome = r.with_env(|nic, env| nic.rx_commit(&slot, 64, env));
    assert_eq!(outcome, RxOutcome::DmaFault);
    assert_eq!(r.nic.stats().dma_faults.get(), 1);
    assert_eq!(r.nic.stats().rx_frames.get(), 0);
    assert_eq!(r.nic.stats().rx_backend_placed.get(), 0);
    assert_eq!(r.read(regs::RDH), 0, "RDH stays on the descriptor");
    assert_eq!(r.read(regs::GPRC), 0);
    assert!(r.irqs.is_empty());
    assert_eq!(r.iommu.stats().faults.write_denied.get(), 1);
    // The slot is still the one to fill: claiming again gives it back.
    let again = r.with_env(|nic, env| nic.rx_claim(MAC, 64, env));
    assert_eq!(again, Ok(slot));
}

/// One case of the property: a ring and a frame.
#[derive(Debug, Clone)]
struct Case {
    /// Ring length in descriptors (a multiple of 8).
    count: u32,
    head: u32,
    /// Up to 2 beyond the ring: a bad ring.
    tail: u32,
    /// Descriptors whose buffer address is null.
    nulls: Vec<bool>,
    /// The ring's base beyond memory: every descriptor fetch faults.
    faulting_ring: bool,
    /// RCTL: EN, BAM, LPE and a buffer size.
    rctl: u32,
    dst: [u8; 6],
    len: usize,
    seed: u8,
    prefetch: bool,
}

fn case() -> impl Strategy<Value = Case> {
    let sizes = prop::sample::select(vec![0u32, 1 << 16, 2 << 16, 3 << 16, BSEX_16K]);
    // Mostly the NIC's own address, so that most frames get to the ring.
    let dst = prop_oneof![
        5 => Just(MAC),
        1 => Just([0xff; 6]),
        1 => Just(PEER),
        1 => Just([0x01, 0, 0x5e, 0, 0, 1]),
    ];
    (
        geometry(),
        (
            prop::collection::vec(prop::bool::weighted(0.2), 32),
            prop::bool::weighted(0.03),
        ),
        (
            prop::bool::weighted(0.95),
            any::<bool>(),
            any::<bool>(),
            sizes,
        ),
        dst,
        // Mostly a frame that fits one buffer; else up to 1.5 KiB more.
        (prop::bool::weighted(0.2), any::<u32>()),
        (any::<u8>(), any::<bool>()),
    )
        .prop_map(
            |(
                (count, head, tail),
                (nulls, faulting_ring),
                (en, bam, lpe, bsize),
                dst,
                (over, n),
                (seed, prefetch),
            )| {
                let mut rctl = bsize;
                for (on, bit) in [(en, Rctl::EN), (bam, Rctl::BAM), (lpe, Rctl::LPE)] {
                    if on {
                        rctl |= bit.bits();
                    }
                }
                let buffer = Rctl::from_bits_retain(rctl).buffer_size();
                let n = n as usize;
                let len = if over {
                    buffer + 1 + n % 1536
                } else {
                    n % (buffer + 1)
                };
                Case {
                    count,
                    head,
                    tail,
                    nulls,
                    faulting_ring,
                    rctl,
                    dst,
                    len,
                    seed,
                    prefetch,
                }
            },
        )
}

impl Case {
    fn rig(&self) -> Rig {
        let mut r = Rig::new(MAC);
        if self.prefetch {
            r.nic.set_prefetchers(Prefetchers::ALL);
        }
        r.rx_ring(self.count, self.tail, self.rctl);
        r.write(regs::RDH, self.head);
        if self.faulting_ring {
            r.write(regs::RDBAH, 1);
        }
        r.write(regs::IMS, (Cause::RXT0 | Cause::RXO).bits());
        for (slot, _) in self.nulls.iter().enumerate().filter(|(_, null)| **null) {
            if slot < self.count as usize {
                r.mem
                    .write_u64(Hpa::new(RX_RING + 16 * slot as u64), 0)
                    .unwrap();
            }
        }
        r
    }

    fn buffer_size(&self) -> usize {
        Rctl::from_bits_retain(self.rctl).buffer_size()
    }
}

/// The outcome with the descriptor count left out: a backend's commit
/// counts one, `receive` counts the null buffers it skipped as well.
fn without_count(outcome: RxOutcome) -> RxOutcome {
    match outcome {
        RxOutcome::Stored { accept, .. } => RxOutcome::Stored {
            accept,
            descriptors: 0,
        },
        other => other,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// For a frame that fits one buffer, claim + place + commit leaves the
    /// guest the same ring, buffers and registers as `receive`, whatever
    /// the ring's size, head, tail and null buffers; a longer one is
    /// refused at claim time and leaves the guest nothing new.
    #[test]
    fn claim_and_commit_match_receive(c in case()) {
        let f = frame(c.dst, c.len, c.seed);
        let mut wire = c.rig();
        let mut backend = c.rig();
        let count = u64::from(c.count);
        let pristine = (backend.guest_memory(count), backend.stats());
        let by_wire = wire.receive(&f);
        let by_backend = backend.backend_receive(&f);
        if c.len <= c.buffer_size() {
            prop_assert_eq!(without_count(by_backend), without_count(by_wire));
            if let RxOutcome::Stored { descriptors, .. } = by_backend {
                prop_assert_eq!(descriptors, 1);
            }
            prop_assert_eq!(backend.guest_memory(count), wire.guest_memory(count));
            prop_assert_eq!(backend.guest_registers(), wire.guest_registers());
            prop_assert_eq!(&backend.irqs, &wire.irqs);
            let (b, w) = (backend.stats(), wire.stats());
            for (name, b, w) in [
                ("rx_frames", b.rx_frames, w.rx_frames),
                ("rx_bytes", b.rx_bytes, w.rx_bytes),
                ("rx_descriptors", b.rx_descriptors, w.rx_descriptors),
                ("rx_null_buffers", b.rx_null_buffers, w.rx_null_buffers),
                ("rx_no_descriptor", b.rx_no_descriptor, w.rx_no_descriptor),
                ("rx_filtered", b.rx_filtered, w.rx_filtered),
                ("rx_disabled", b.rx_disabled, w.rx_disabled),
                ("rx_oversize", b.rx_oversize, w.rx_oversize),
                ("ring_errors", b.ring_errors, w.ring_errors),
                ("dma_faults", b.dma_faults, w.dma_faults),
            ] {
                prop_assert_eq!(b, w, "{}", name);
            }
            let placed = u64::from(matches!(by_backend, RxOutcome::Stored { .. }));
            prop_assert_eq!(b.rx_backend_placed.get(), placed);
        } else {
            // Refused before the ring: as `receive` when it refuses the
            // frame itself, else for want of one big enough buffer.
            match by_wire {
                RxOutcome::Disabled | RxOutcome::Filtered => {
                    prop_assert_eq!(by_backend, by_wire);
                }
                RxOutcome::Oversize => {
                    prop_assert_eq!(by_backend, RxOutcome::Oversize);
                    prop_assert_eq!(backend.stats().rx_backend_too_long.get(), 0);
                }
                _ => {
                    prop_assert_eq!(by_backend, RxOutcome::Oversize);
                    prop_assert_eq!(backend.stats().rx_backend_too_long.get(), 1);
                }
            }
            prop_assert_eq!(backend.guest_memory(count), pristine.0);
            let [rdh, _, icr, gprc, _, _, tpr, mpc, _] = backend.guest_registers();
            prop_assert_eq!((rdh, icr, gprc, tpr, mpc), (c.head, 0, 0, 0, 0));
            prop_assert!(backend.irqs.is_empty());
            prop_assert_eq!(backend.stats().rx_frames, pristine.1.rx_frames);
        }
    }
}

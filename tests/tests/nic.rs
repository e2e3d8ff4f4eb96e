//! End to end: two guests, each with an e1000 driver, each NIC behind the
//! IOMMU in its VM's domain; frames sent by one arrive byte-exact at the
//! other. And seed 000's driver-side claim: with RX buffers scattered and a
//! small IOTLB, the receive address prefetcher (NOP transmit commands) takes
//! the IOTLB misses off the receive path.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use iovirt::platform::{MIB, TwoGuests, frame};
use iovirt_core::{Gpa, Iova, PhysMemory};
use iovirt_drivers::{E1000Config, E1000Driver, GuestPageAllocator, Placement};
use iovirt_iommu::{IotlbConfig, Replacement};
use iovirt_nic::{BufferTouch, Prefetchers, RxOutcome};

/// Delivers VM `from`'s frames and returns the outcomes.
fn deliver(h: &mut TwoGuests, from: usize) -> Vec<RxOutcome> {
    let mut out = Vec::new();
    h.deliver(from, |o| out.push(o));
    out
}

fn host(iotlb: IotlbConfig) -> TwoGuests {
    TwoGuests::new(iotlb).unwrap()
}

#[test]
fn frames_cross_from_one_guest_to_the_other_byte_exact() {
    let mut h = host(IotlbConfig::default());
    let pages = |seed| GuestPageAllocator::new(Gpa::new(MIB), 2048, Placement::Random { seed });
    let (mut pa, mut pb) = (pages(1), pages(2));
    let mut da = E1000Driver::bring_up(&mut h.guest(0), &mut pa, E1000Config::default()).unwrap();
    let mut db = E1000Driver::bring_up(&mut h.guest(1), &mut pb, E1000Config::default()).unwrap();
    assert_eq!(da.mac(), [0x52, 0x54, 0, 0, 0, 1], "MAC read through EERD");
    let mut received: Vec<Vec<u8>> = Vec::new();
    let mut sent: Vec<Vec<u8>> = Vec::new();
    for n in 0..300u32 {
        let len = 60 + (n as usize * 37) % 1455;
        let f = frame(db.mac(), da.mac(), n, len);
        da.transmit(&mut h.guest(0), &f).unwrap();
        sent.push(f);
        let outcomes = deliver(&mut h, 0);
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, RxOutcome::Stored { .. })),
            "{outcomes:?}"
        );
        db.receive(&mut h.guest(1), |bytes| received.push(bytes.to_vec()))
            .unwrap();
    }
    assert_eq!(
        received, sent,
        "every frame arrived, in order, byte for byte"
    );
    assert_eq!(da.stats().tx_frames.get(), 300);
    assert_eq!(db.stats().rx_frames.get(), 300);
    assert_eq!(h.nics[0].stats().tx_frames.get(), 300);
    assert_eq!(h.nics[1].stats().rx_frames.get(), 300);
    assert_eq!(
        h.nics[1].stats().rx_bytes.get(),
        sent.iter().map(|f| f.len() as u64).sum::<u64>()
    );
    assert_eq!(h.iommu.faults().len(), 0, "no DMA faulted");
    // A frame to another address is filtered by B's NIC.
    da.transmit(
        &mut h.guest(0),
        &frame([0x52, 0x54, 0, 0, 0, 9], da.mac(), 0, 64),
    )
    .unwrap();
    assert_eq!(deliver(&mut h, 0), [RxOutcome::Filtered]);
}

/// Critical-path IOTLB misses per received frame at VM B, with its RX
/// buffers scattered and an 8-entry IOTLB.
fn rx_misses_per_frame(rx_prefetch: bool, device: Prefetchers) -> f64 {
    let mut h = host(IotlbConfig {
        entries: 8,
        ways: 0,
        replacement: Replacement::Lru,
    });
    let mut pa = GuestPageAllocator::new(Gpa::new(MIB), 2048, Placement::Contiguous);
    let mut pb = GuestPageAllocator::new(Gpa::new(MIB), 3000, Placement::Random { seed: 99 });
    let mut da = E1000Driver::bring_up(&mut h.guest(0), &mut pa, E1000Config::default()).unwrap();
    let config = E1000Config {
        rx_prefetch,
        ..E1000Config::default()
    };
    let mut db = E1000Driver::bring_up(&mut h.guest(1), &mut pb, config).unwrap();
    h.nics[1].set_prefetchers(device);
    let frames = 200u32;
    let mut got = 0;
    for n in 0..frames {
        da.transmit(&mut h.guest(0), &frame(db.mac(), da.mac(), n, 512))
            .unwrap();
        deliver(&mut h, 0);
        got += db.receive(&mut h.guest(1), |_| {}).unwrap();
    }
    assert_eq!(got, frames);
    if rx_prefetch {
        assert_eq!(db.stats().nop_prefetches.get(), 2 * u64::from(frames));
        assert_eq!(h.nics[1].stats().nop_commands.get(), 2 * u64::from(frames));
        assert_eq!(h.links[1].in_flight(), 0, "NOP commands send nothing");
    }
    h.nics[1].stats().rx_critical_iotlb_misses.get() as f64 / f64::from(frames)
}

#[test]
fn driver_side_prefetch_takes_misses_off_the_receive_path() {
    let without = rx_misses_per_frame(false, Prefetchers::default());
    let with = rx_misses_per_frame(true, Prefetchers::default());
    assert!(
        without >= 1.0,
        "without prefetch: {without} misses per frame"
    );
    assert!(with <= 0.05, "with prefetch: {with} misses per frame");
}

#[test]
fn device_and_driver_prefetchers_together() {
    let device = Prefetchers {
        rx_descriptor: true,
        rx_buffer: Some(BufferTouch::NullWrite),
        ..Prefetchers::default()
    };
    let device_only = rx_misses_per_frame(false, device);
    let both = rx_misses_per_frame(true, device);
    assert!(device_only <= 0.05, "device side alone: {device_only}");
    assert!(both <= 0.05, "both: {both}");
}

/// Distinct page-table pages the IOMMU walks to translate every TX copy
/// buffer of a driver whose pages are scattered at random.
fn tx_buffer_table_pages(contiguous: bool) -> usize {
    let mut h = host(IotlbConfig::default());
    let mut pages = GuestPageAllocator::new(Gpa::new(MIB), 3000, Placement::Random { seed: 5 });
    let config = E1000Config {
        contiguous_tx_buffers: contiguous,
        ..E1000Config::default()
    };
    let d = E1000Driver::bring_up(&mut h.guest(0), &mut pages, config).unwrap();
    let mut tables = std::collections::BTreeSet::new();
    for &b in d.tx_buffers() {
        tables.extend(
            h.stage2[0]
                .table_pages(&h.mem, Iova::new(b.raw()), 4096)
                .unwrap(),
        );
    }
    tables.len()
}

#[test]
fn contiguous_tx_buffers_need_fewer_table_pages() {
    let scattered = tx_buffer_table_pages(false);
    let packed = tx_buffer_table_pages(true);
    // 64 pages packed: the PML4, PDPT and PD pages plus one or two page tables.
    assert!(packed <= 5, "packed: {packed} table pages");
    // Scattered over 12 MiB: a page table for each 2 MiB they touch.
    assert!(
        scattered >= packed + 3,
        "scattered: {scattered}, packed: {packed}"
    );
}

#[test]
fn applications_send_from_driver_buffers_without_a_copy() {
    let mut h = host(IotlbConfig::default());
    let pages = |seed| GuestPageAllocator::new(Gpa::new(MIB), 2048, Placement::Random { seed });
    let (mut pa, mut pb) = (pages(3), pages(4));
    let config = E1000Config {
        app_tx_buffers: 4,
        ..E1000Config::default()
    };
    let mut da = E1000Driver::bring_up(&mut h.guest(0), &mut pa, config).unwrap();
    let mut db = E1000Driver::bring_up(&mut h.guest(1), &mut pb, E1000Config::default()).unwrap();
    let bufs: Vec<Gpa> = std::iter::from_fn(|| da.alloc_app_buffer()).collect();
    assert_eq!(bufs.len(), 4);
    assert!(
        bufs.windows(2).all(|w| w[1].raw() == w[0].raw() + 4096),
        "one contiguous region"
    );
    let mut sent = Vec::new();
    for (n, &b) in bufs.iter().enumerate() {
        let f = frame(db.mac(), da.mac(), n as u32, 200 + n * 100);
        PhysMemory::write(&mut h.guest(0), b, &f).unwrap();
        da.transmit_from(&mut h.guest(0), b, f.len() as u16)
            .unwrap();
        sent.push(f);
    }
    deliver(&mut h, 0);
    let mut got = Vec::new();
    db.receive(&mut h.guest(1), |f| got.push(f.to_vec()))
        .unwrap();
    assert_eq!(got, sent);
    assert!(da.free_app_buffer(bufs[0]));
    assert!(!da.free_app_buffer(bufs[0]), "double free refused");
    assert!(
        !da.free_app_buffer(Gpa::new(0x1000)),
        "not an application buffer"
    );
    assert!(
        da.transmit_from(&mut h.guest(0), Gpa::new(0x1000), 64)
            .is_err()
    );
}

#[test]
fn the_interrupt_handler_receives_and_reclaims() {
    let mut h = host(IotlbConfig::default());
    let pages = |seed| GuestPageAllocator::new(Gpa::new(MIB), 2048, Placement::Random { seed });
    let (mut pa, mut pb) = (pages(5), pages(6));
    let mut da = E1000Driver::bring_up(&mut h.guest(0), &mut pa, E1000Config::default()).unwrap();
    let mut db = E1000Driver::bring_up(&mut h.guest(1), &mut pb, E1000Config::default()).unwrap();
    let f = frame(db.mac(), da.mac(), 1, 128);
    da.transmit(&mut h.guest(0), &f).unwrap();
    deliver(&mut h, 0);
    let mut got = Vec::new();
    let (causes, frames) = db
        .handle_interrupt(&mut h.guest(1), |b| got.push(b.to_vec()))
        .unwrap();
    assert_eq!(causes & 0x80, 0x80, "RXT0");
    assert_eq!((frames, got), (1, vec![f]));
    // ICR was cleared by the handler's read: nothing pending now.
    assert_eq!(
        db.handle_interrupt(&mut h.guest(1), |_| {}).unwrap(),
        (0, 0)
    );
    let (tx_causes, _) = da.handle_interrupt(&mut h.guest(0), |_| {}).unwrap();
    assert_eq!(tx_causes & 0x03, 0x03, "TXDW and TXQE");
}

/// A guest that programs its NIC with garbage (rings and buffers pointing
/// anywhere, including where the other VM's memory sits in host memory)
/// reaches nothing outside its own domain: the other VM's memory is
/// unchanged, every IOMMU fault is the hostile NIC's, and after a reset the
/// hostile VM's traffic to the other VM flows byte-exact again.
#[test]
fn a_hostile_guest_cannot_reach_the_other_vm() {
    use iovirt_core::{Hpa, RegisterAccess};
    use iovirt_nic::regs;

    let mut h = host(IotlbConfig::default());
    let pages = |seed| GuestPageAllocator::new(Gpa::new(MIB), 2048, Placement::Random { seed });
    let (mut pa, mut pb) = (pages(8), pages(9));
    let _ = E1000Driver::bring_up(&mut h.guest(0), &mut pa, E1000Config::default()).unwrap();
    let mut db = E1000Driver::bring_up(&mut h.guest(1), &mut pb, E1000Config::default()).unwrap();
    let b_memory = |h: &TwoGuests| {
        let mut bytes = vec![0u8; 16 << 20];
        iovirt_core::PhysMemory::read(&h.mem, Hpa::new(32 << 20), &mut bytes).unwrap();
        bytes
    };
    // B stops receiving, so nothing legitimate changes its memory while A
    // misbehaves; whatever A's NIC sends reaches B's port and is dropped.
    let rctl_b = h.guest(1).read32(regs::RCTL);
    h.guest(1).write32(regs::RCTL, 0);
    let before = b_memory(&h);

    // VM A writes garbage descriptors into its own memory and points its
    // rings at its memory, at unmapped I/O-virtual space, and at where VM B
    // lives in host memory; then rings the doorbells many times.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..200u64 {
        let mut a = h.guest(0);
        let ring = [
            0x10_0000,
            0x200_0000,
            0x100_0000 + (round << 12),
            next() & 0xffff_f000,
        ][(round % 4) as usize];
        let gpa = Gpa::new((next() % (15 << 20)) & !0xf);
        let _ = PhysMemory::write(&mut a, gpa, &next().to_le_bytes());
        for (reg, value) in [
            (regs::TDBAL, ring as u32),
            (regs::TDBAH, (ring >> 32) as u32),
            (regs::TDLEN, (next() % 4096) as u32),
            (regs::TDH, (next() % 64) as u32),
            (regs::TCTL, regs::Tctl::EN.bits()),
            (regs::TDT, (next() % 64) as u32),
            (regs::RDBAL, (next() & 0x1ff_fff0) as u32),
            (regs::RCTL, (regs::Rctl::EN | regs::Rctl::UPE).bits()),
            (regs::RDT, (next() % 64) as u32),
        ] {
            a.write32(reg, value);
        }
        // Traffic from the wire lands (or not) in A's broken rings.
        let f = frame(h.nics[0].config().mac, db.mac(), round as u32, 200);
        let _ = h.guest(0).with_nic(|nic, env| nic.receive(&f, env));
        h.deliver(0, |_| {});
    }
    assert_eq!(b_memory(&h), before, "VM B's memory is untouched");
    let faults: Vec<_> = h.iommu.faults().records().map(|r| r.requester).collect();
    assert!(!faults.is_empty(), "the hostile DMA was refused");
    let a = h.nics[0].stats();
    assert!(
        a.tx_descriptors.get() > 1000,
        "A's NIC did walk its garbage rings"
    );
    assert!(
        a.dma_faults.get() > 100,
        "and was refused, {}",
        a.dma_faults.get()
    );
    assert!(
        faults.iter().all(|&r| r == iovirt::platform::requester(0)),
        "only A faulted"
    );

    // A resets its NIC and runs a driver again: A to B traffic is byte-exact.
    let mut pa = GuestPageAllocator::new(Gpa::new(MIB), 2048, Placement::Random { seed: 10 });
    let mut da = E1000Driver::bring_up(&mut h.guest(0), &mut pa, E1000Config::default()).unwrap();
    h.guest(1).write32(regs::RCTL, rctl_b);
    let mut got = Vec::new();
    db.receive(&mut h.guest(1), |_| {}).unwrap();
    let sent: Vec<Vec<u8>> = (0..20).map(|n| frame(db.mac(), da.mac(), n, 300)).collect();
    for f in &sent {
        da.transmit(&mut h.guest(0), f).unwrap();
        h.deliver(0, |_| {});
        db.receive(&mut h.guest(1), |b| got.push(b.to_vec()))
            .unwrap();
    }
    assert_eq!(got, sent);
}

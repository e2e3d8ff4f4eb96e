//! Seed 000's claim, device side: with buffers scattered over memory and a
//! small IOTLB, every frame takes IOTLB misses on its critical path (the
//! DMAs that move it); the device-side prefetchers move those misses into
//! the idle time after the previous frame, so the critical path hits.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::Platform;
use common::iommu::IommuRig;
use iovirt_core::{Hpa, Iova, PhysMemory, Width};
use iovirt_iommu::{IommuConfig, IotlbConfig, Replacement};
use iovirt_nic::{BufferTouch, Prefetchers, RxOutcome, regs};
use iovirt_paging::{Mapping, PteFlags};

const MIB: u64 = 1 << 20;
/// Descriptors per ring.
const RING: u64 = 32;
/// Frames per run.
const FRAMES: u64 = 200;
/// IOVA of the RX ring, the TX ring, and the first buffer page.
const RX_RING: u64 = 0x10_0000;
const TX_RING: u64 = 0x10_1000;
const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

/// The host address every IOVA of the rig is mapped to.
fn hpa(iova: u64) -> Hpa {
    Hpa::new(iova + 32 * MIB)
}

/// IOVA of each descriptor's buffer, one page each, scattered: page i of
/// 16384 (64 MiB), in an order no cache line or IOTLB set likes.
fn buffers() -> Vec<u64> {
    (0..RING)
        .map(|i| 0x100_0000 + ((i * 7919) % 16384) * 4096)
        .collect()
}

/// A NIC behind an IOMMU with an 8-entry IOTLB; the rings and the
/// [`buffers`], each in its own page, spread over 64 MiB of I/O-virtual
/// space in a scrambled order (the seed's "substantially random
/// arrangement"). The tests look at counters, not at interrupts or timers.
fn rig(prefetchers: Prefetchers) -> IommuRig {
    let pages: Vec<_> = [RX_RING, TX_RING]
        .into_iter()
        .chain(buffers())
        .map(|iova| Mapping::new(Iova::new(iova), hpa(iova), 4096, PteFlags::RW))
        .collect();
    let config = IommuConfig {
        iotlb: IotlbConfig {
            entries: 8,
            ways: 0,
            replacement: Replacement::Lru,
        },
        ..IommuConfig::default()
    };
    let mut r = IommuRig::with_config(MAC, 128 * MIB, config, Hpa::new(0), 4 * MIB / 4096, &pages);
    r.nic.set_prefetchers(prefetchers);
    r
}

/// Critical-path IOTLB misses per frame, and the misses the prefetchers took.
fn misses(r: &IommuRig) -> (f64, u64) {
    let s = r.nic.stats();
    (
        s.critical_iotlb_misses.get() as f64 / FRAMES as f64,
        s.prefetch_iotlb_misses.get(),
    )
}

/// Receives `FRAMES` frames, the driver handing each descriptor back right
/// after the frame: returns critical-path IOTLB misses per frame.
fn rx_misses(prefetchers: Prefetchers) -> (f64, u64) {
    let mut r = rig(prefetchers);
    for (i, &b) in buffers().iter().enumerate() {
        r.mem.write_u64(hpa(RX_RING + i as u64 * 16), b).unwrap();
    }
    for (reg, value) in [
        (regs::RDBAL, RX_RING as u32),
        (regs::RDLEN, (RING * 16) as u32),
        (regs::RDH, 0),
        (regs::RDT, (RING - 1) as u32),
        (regs::RCTL, (regs::Rctl::EN | regs::Rctl::BAM).bits()),
    ] {
        r.write(reg, value);
    }
    let frame = [0xffu8; 1000];
    let mut tail = RING - 1;
    for _ in 0..FRAMES {
        let outcome = r.receive(&frame);
        assert!(matches!(outcome, RxOutcome::Stored { .. }), "{outcome:?}");
        // The driver consumes the frame and gives the descriptor back.
        tail = (tail + 1) % RING;
        r.write(regs::RDT, tail as u32);
    }
    assert_eq!(r.nic.stats().rx_frames.get(), FRAMES);
    misses(&r)
}

/// Transmits `FRAMES` frames from the driver's fixed copy buffers (one per
/// descriptor): returns critical-path IOTLB misses per frame.
fn tx_misses(prefetchers: Prefetchers) -> (f64, u64) {
    let mut r = rig(prefetchers);
    for (i, &b) in buffers().iter().enumerate() {
        r.mem.write_u64(hpa(TX_RING + i as u64 * 16), b).unwrap();
        // Length 1000, EOP | RS.
        r.mem
            .write_u32(hpa(TX_RING + i as u64 * 16 + 8), 1000 | (0x09 << 24))
            .unwrap();
    }
    for (reg, value) in [
        (regs::TDBAL, TX_RING as u32),
        (regs::TDLEN, (RING * 16) as u32),
        (regs::TCTL, regs::Tctl::EN.bits()),
    ] {
        r.write(reg, value);
    }
    for i in 1..=FRAMES {
        r.write_w(regs::TDT, Width::U32, i % RING);
    }
    assert!(r.wire.iter().all(|f| f.len() == 1000));
    assert_eq!(r.wire.len() as u64, FRAMES);
    misses(&r)
}

#[test]
fn rx_prefetchers_take_the_misses_off_the_critical_path() {
    let (baseline, _) = rx_misses(Prefetchers::default());
    let (descriptor_only, _) = rx_misses(Prefetchers {
        rx_descriptor: true,
        ..Prefetchers::default()
    });
    let (both, moved) = rx_misses(Prefetchers {
        rx_buffer: Some(BufferTouch::Read),
        ..Prefetchers::default()
    });
    let (null_write, _) = rx_misses(Prefetchers {
        rx_buffer: Some(BufferTouch::NullWrite),
        ..Prefetchers::default()
    });
    // Without prefetching each frame misses on its buffer's page.
    assert!(baseline >= 1.0, "baseline {baseline}");
    assert!(descriptor_only <= baseline);
    // With the buffer prefetcher the critical path all but never misses:
    // only the very first frame's buffer is cold.
    assert!(both <= 0.02, "with prefetch {both}");
    assert!(null_write <= 0.02, "null-write prefetch {null_write}");
    assert!(
        moved as f64 >= (baseline - both) * FRAMES as f64 * 0.9,
        "the misses moved to prefetches"
    );
}

#[test]
fn tx_prefetchers_take_the_misses_off_the_critical_path() {
    let (baseline, _) = tx_misses(Prefetchers::default());
    let (both, moved) = tx_misses(Prefetchers {
        tx_descriptor: true,
        tx_buffer: true,
        ..Prefetchers::default()
    });
    assert!(baseline >= 1.0, "baseline {baseline}");
    assert!(both <= 0.02, "with prefetch {both}");
    assert!(moved > 0);
}

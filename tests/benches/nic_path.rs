//! Frames per second through the whole path: driver A's transmit (copy
//! into its copy buffer, TDT), NIC A's TX engine (descriptor and buffer DMA
//! through the IOMMU, DD write-back), the wire, NIC B's RX engine (descriptor
//! read, buffer write, write-back), driver B's receive (copy out, RDT). The
//! IOTLB is large enough to stay warm. `reference` is one `memcpy` of the
//! same frame; `five_copies` is the five copies the path cannot avoid
//! (copy-in, TX DMA, wire, RX DMA, copy-out), each into its own buffer, so
//! the gap between its ratio and `iovirt`'s is the model's per-frame work
//! beyond moving bytes. `cargo xtask bench` prints the ratios.

// Set-up code: a failure here is a broken benchmark, not a guest input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use iovirt::platform::{MIB, TwoGuests, frame};
use iovirt_core::Gpa;
use iovirt_drivers::{E1000Config, E1000Driver, GuestPageAllocator, Placement};
use iovirt_iommu::{IotlbConfig, Replacement};

fn path(c: &mut Criterion, group: &str, len: usize) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    let f = frame([0x52, 0x54, 0, 0, 0, 2], [0x52, 0x54, 0, 0, 0, 1], 7, len);

    let mut buf = vec![0u8; len];
    g.bench_function("reference", |b| {
        b.iter(|| black_box(&mut buf[..]).copy_from_slice(black_box(&f)))
    });

    let mut stages = vec![vec![0u8; len]; 5];
    g.bench_function("five_copies", |b| {
        b.iter(|| {
            let mut from: &[u8] = black_box(&f);
            for stage in stages.iter_mut() {
                stage.copy_from_slice(from);
                from = black_box(stage);
            }
        })
    });

    let mut h = TwoGuests::new(IotlbConfig {
        entries: 1024,
        ways: 8,
        replacement: Replacement::Lru,
    })
    .unwrap();
    let mut pa = GuestPageAllocator::new(Gpa::new(MIB), 2048, Placement::Contiguous);
    let mut pb = GuestPageAllocator::new(Gpa::new(MIB), 2048, Placement::Contiguous);
    let mut da = E1000Driver::bring_up(&mut h.guest(0), &mut pa, E1000Config::default()).unwrap();
    let mut db = E1000Driver::bring_up(&mut h.guest(1), &mut pb, E1000Config::default()).unwrap();
    let mut received = 0u64;
    let mut one_frame = |h: &mut TwoGuests| {
        da.transmit(&mut h.guest(0), black_box(&f)).unwrap();
        h.deliver(0, |_| {});
        db.receive(&mut h.guest(1), |bytes| received += bytes.len() as u64)
            .unwrap();
    };
    // Warm the IOTLB and every buffer.
    for _ in 0..256 {
        one_frame(&mut h);
    }
    g.bench_function("iovirt", |b| b.iter(|| one_frame(&mut h)));
    g.finish();
    assert!(received > 0);
}

fn paths(c: &mut Criterion) {
    path(c, "nic_path_64", 64);
    path(c, "nic_path_1500", 1500);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = paths
}
criterion_main!(benches);

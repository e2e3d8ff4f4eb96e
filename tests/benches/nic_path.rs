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
use iovirt::platform::frame;

// The harness, shared with `tests/no_alloc.rs`.
#[path = "support/nic_pair.rs"]
mod nic_pair;
use nic_pair::NicPair;

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

    let mut pair = NicPair::new();
    let mut received = 0usize;
    // Warm the IOTLB and every buffer.
    for _ in 0..256 {
        received += pair.one(&f).0;
    }
    g.bench_function("iovirt", |b| b.iter(|| black_box(pair.one(black_box(&f)))));
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

//! What the host MMU costs on the machine running the model: one page
//! swapped out and brought back by the next touch.
//!
//! - `swap_cycle/reference`: the bytes a swap must move, with nothing else:
//!   a 4 KiB copy out to a buffer and a 4 KiB copy back.
//! - `swap_cycle/iovirt`: `Host::swap_out` of a resident page, then a 1-byte
//!   `Host::read` of it (a major fault): the copy out, the stage-2 unmap,
//!   the IOTLB invalidation, zeroing and freeing the frame, then a frame
//!   taken, filled from the store and mapped again.
//!
//! The VM has a second page resident so that its page tables stay in place
//! between iterations: the figure is the swap itself, not table building.
//! `cargo xtask bench` prints the ratio of each to `reference`.

// Set-up code: a failure here is a broken benchmark, not a guest input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use iovirt_core::Gpa;
use iovirt_iommu::{IommuConfig, RequesterId};
use iovirt_vmm::{Host, HostConfig, SwapOut, VmConfig};

const PAGE: usize = 4096;

fn swap_cycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("swap_cycle");
    group.throughput(Throughput::Bytes(2 * PAGE as u64));

    let page = vec![0x5au8; PAGE];
    let mut store = vec![0u8; PAGE];
    let mut frame = vec![0u8; PAGE];
    group.bench_function("reference", |b| {
        b.iter(|| {
            store.copy_from_slice(black_box(&page));
            frame.copy_from_slice(black_box(&store));
            black_box(&frame);
        })
    });

    let mut host = Host::new(HostConfig {
        table_frames: 16,
        data_frames: 16,
        iommu: IommuConfig::default(),
    })
    .unwrap();
    let vm = host
        .add_vm(VmConfig {
            memory: 16 * PAGE as u64,
            requester: RequesterId::new(0, 2, 0).unwrap(),
        })
        .unwrap();
    host.write(vm, Gpa::new(0), &page).unwrap();
    host.write(vm, Gpa::new(PAGE as u64), &page).unwrap();
    let mut byte = [0u8; 1];
    group.bench_function("iovirt", |b| {
        b.iter(|| {
            let out = host.swap_out(vm, Gpa::new(0)).unwrap();
            debug_assert_eq!(out, SwapOut::Done);
            host.read(vm, Gpa::new(0), &mut byte).unwrap();
            black_box(byte);
        })
    });
    // Under a criterion filter that skips this benchmark the closure never
    // ran: check the round trip once here instead of trusting it did.
    host.swap_out(vm, Gpa::new(0)).unwrap();
    host.read(vm, Gpa::new(0), &mut byte).unwrap();
    assert_eq!(byte, [0x5a], "the page came back");
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = swap_cycle
}
criterion_main!(benches);

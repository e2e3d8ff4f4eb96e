//! RDMA WRITE messages per second through both translation stages.
//!
//! Two hosts, each with one VM whose GVMI is assigned, so every DMA goes
//! through the HCA's first stage (MKey → MPT → MTT) and the IOMMU's second
//! stage (GVMI → PA2MA, IOTLB warm). Guest A's driver posts one signaled RC
//! RDMA WRITE of `size` bytes from a pinned region into guest B's pinned
//! region (path MTU 4096) and rings the doorbell; one iteration then runs
//! HCA A's requester (WQE fetch, gather, segmentation, ICRC), the wire
//! (each frame handed straight to HCA B), HCA B's responder (parse, ICRC
//! check, placement), HCA B's ACK, HCA A's ACK handling and CQE write, and
//! driver A's poll of the completion, which frees the WQE slot for the next
//! iteration. `reference` is one `memcpy` of the same `size` bytes, so
//! `cargo xtask bench` prints the path's time over a memcpy's as `ratio`
//! (the bandwidth ratio is its inverse). `four_passes` is the work on the
//! bytes the path cannot avoid (gather into the frame, the sender's ICRC,
//! the receiver's ICRC check, placement), so the gap between its ratio and
//! `iovirt`'s is the model's per-packet work beyond the bytes.
//!
//! The timed loop bypasses `RdmaFabric`'s event loop (links, per-frame
//! copies, fault-service bookkeeping) and drives the two `Hca`s directly;
//! no fault can happen with pinned regions and a warm IOTLB, and the
//! transport timer never fires because virtual time stands still.

// Set-up code: a failure here is a broken benchmark, not a guest input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use iovirt_hca::cqe::CqeStatus;

// The harness, shared with `tests/no_alloc.rs`.
#[path = "support/rdma_pair.rs"]
mod rdma_pair;
use rdma_pair::{Bench, MAX, pattern};

const SIZES: [usize; 3] = [64, 4096, 1 << 20];

fn rdma_path(c: &mut Criterion) {
    let mut bench = Bench::new();
    // Warm-up, and a check (outside timing) that every size's bytes land.
    let data = pattern(MAX, 7);
    for size in SIZES {
        for _ in 0..4 {
            let wc = bench.write(size);
            assert_eq!(
                (wc.status, wc.byte_len as usize),
                (CqeStatus::Success, size)
            );
        }
        assert_eq!(bench.landed(size), data[..size], "{size} B did not land");
    }
    let stats = bench.hosts[0].hca.stats();
    assert_eq!(stats.retransmitted_packets.get(), 0);
    // The IOTLBs are warm: one more write of each size walks no table.
    let misses = |b: &Bench| {
        b.hosts
            .each_ref()
            .map(|h| h.host.iommu().stats().iotlb_misses.get())
    };
    let before = misses(&bench);
    for size in SIZES {
        bench.write(size);
    }
    assert_eq!(misses(&bench), before, "the IOTLB is not warm");

    let mut g = c.benchmark_group("rdma_path");
    let src = data;
    let mut dst = vec![0u8; MAX];
    let mut wire = vec![0u8; MAX];
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("reference", size), &size, |b, &n| {
            b.iter(|| black_box(&mut dst[..n]).copy_from_slice(black_box(&src[..n])))
        });
        // The passes over the bytes the path cannot avoid: gather into the
        // frame, the sender's ICRC, the receiver's ICRC check, placement.
        g.bench_with_input(BenchmarkId::new("four_passes", size), &size, |b, &n| {
            b.iter(|| {
                let frame = &mut wire[..n];
                frame.copy_from_slice(black_box(&src[..n]));
                let sent = crc32fast::hash(black_box(&*frame));
                let checked = crc32fast::hash(black_box(&*frame));
                black_box(&mut dst[..n]).copy_from_slice(frame);
                black_box((sent, checked))
            })
        });
        g.bench_with_input(BenchmarkId::new("iovirt", size), &size, |b, &n| {
            b.iter(|| black_box(bench.write(n)))
        });
    }
    g.finish();
    let s = bench.hosts[0].hca.stats();
    assert_eq!(s.retransmitted_packets.get(), 0);
    assert_eq!(bench.hosts[1].hca.stats().rx_dropped.get(), 0);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = rdma_path
}
criterion_main!(benches);

//! The hot paths allocate nothing per frame or per packet once warm: the
//! NIC path (driver transmit → NIC → link → NIC → driver receive) and the
//! RDMA path (post → requester → responder → ACK → completion → poll),
//! the same paths the benchmarks time, and the `rdma-odp` scenario's event
//! loop (`RdmaFabric`: links, timers, completions). A counting global allocator sees
//! every allocation of the process, so this file holds a single test: no
//! other test thread runs beside it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::alloc::System;

use iovirt::platform::frame;
use iovirt::rdma_sim::{RdmaFabric, RdmaHostConfig};
use iovirt_hca::cqe::CqeStatus;
use iovirt_hca::mr::{Access, MrMode};
use iovirt_hca::qp::{PathMtu, QpType};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[path = "../benches/support/nic_pair.rs"]
mod nic_pair;
mod rdma_common;
#[path = "../benches/support/rdma_pair.rs"]
mod rdma_pair;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Allocations and reallocations while `work` runs.
fn allocations(work: impl FnOnce()) -> usize {
    let region = Region::new(GLOBAL);
    work();
    let change = region.change();
    change.allocations + change.reallocations
}

fn nic_path_allocates_nothing_per_frame() {
    let mut pair = nic_pair::NicPair::new();
    let frames = [64, 600, 1500]
        .map(|len| frame([0x52, 0x54, 0, 0, 0, 2], [0x52, 0x54, 0, 0, 0, 1], 7, len));
    // Warm: every ring slot and buffer used once, the IOTLB filled.
    for _ in 0..600 {
        for f in &frames {
            pair.one(f);
        }
    }
    let (mut received, mut bytes) = (0usize, 0usize);
    let n = allocations(|| {
        for _ in 0..1000 {
            for f in &frames {
                let (got, len) = pair.one(f);
                received += got;
                bytes += len;
            }
        }
    });
    assert_eq!(received, 3000, "every frame arrived");
    assert_eq!(bytes, 1000 * (64 + 600 + 1500));
    assert_eq!(n, 0, "allocations in 3,000 warm frames");
}

fn rdma_path_allocates_nothing_per_packet() {
    let mut bench = rdma_pair::Bench::new();
    // 64 B and 4 KiB are one packet each, 64 KiB sixteen and 1 MiB 256.
    let sizes = [64, 4096, 64 << 10, rdma_pair::MAX];
    for size in sizes {
        for _ in 0..4 {
            bench.write(size);
        }
    }
    let sent_before = bench.hosts[0].hca.stats().tx_packets.get();
    let mut ok = 0;
    let n = allocations(|| {
        for _ in 0..8 {
            for size in sizes {
                let wc = bench.write(size);
                if wc.status == CqeStatus::Success && wc.byte_len as usize == size {
                    ok += 1;
                }
            }
        }
    });
    assert_eq!(ok, 32, "every write completed");
    let packets = bench.hosts[0].hca.stats().tx_packets.get() - sent_before;
    assert_eq!(packets, 8 * (1 + 1 + 16 + 256));
    assert_eq!(
        bench.landed(rdma_pair::MAX),
        rdma_pair::pattern(rdma_pair::MAX, 7)
    );
    assert_eq!(n, 0, "allocations in {packets} warm packets");
}

fn rdma_fabric_allocates_nothing_per_packet() {
    let mut f = rdma_common::fabric(1, RdmaHostConfig::default());
    let (a, b) = rdma_common::pair(&mut f, 0, 0, QpType::Rc, PathMtu::Mtu4096);
    let len = 64 << 10;
    let data = rdma_common::pattern(len, 3);
    let rw = Access::LOCAL_WRITE | Access::REMOTE_WRITE;
    let src = rdma_common::buffer(
        &mut f,
        a,
        len as u64,
        Access::empty(),
        MrMode::Pinned,
        Some(&data),
    );
    let dst = rdma_common::buffer(&mut f, b, len as u64, rw, MrMode::Pinned, None);
    // Eight 64 KiB WRITEs (128 packets) posted by the driver and run on
    // the event loop to their completions.
    let round = |fab: &mut RdmaFabric| {
        for i in 0..8 {
            rdma_common::post_send(fab, a, rdma_common::write_wr(i, src, len as u32, dst));
        }
        rdma_common::settle(fab, 10_000_000);
    };
    // The first rounds size the queues and the completion list.
    for _ in 0..2 {
        round(&mut f);
        f.hosts[0].completions.clear();
    }
    let before = f.hosts[0].hca.stats().tx_packets.get();
    let n = allocations(|| {
        for _ in 0..4 {
            round(&mut f);
            assert_eq!(f.hosts[0].completions.len(), 8);
            f.hosts[0].completions.clear();
        }
    });
    assert_eq!(f.hosts[0].hca.stats().tx_packets.get() - before, 4 * 128);
    assert_eq!(rdma_common::read_app(&mut f, b, dst.0, len), data);
    assert_eq!(n, 0, "allocations in 512 warm packets on the event loop");
}

#[test]
fn hot_paths_allocate_nothing_once_warm() {
    // The counter sees allocations at all.
    assert_eq!(allocations(|| drop(std::hint::black_box(vec![0u8; 64]))), 1);
    nic_path_allocates_nothing_per_frame();
    rdma_path_allocates_nothing_per_packet();
    rdma_fabric_allocates_nothing_per_packet();
}

//! RDMA end to end: two hosts, each VM driving its own HCA function,
//! RoCEv2 on the cable between them, through both translation stages.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod rdma_common;

use iovirt::rdma_sim::RdmaHostConfig;
use iovirt_hca::cqe::{CqeOpcode, CqeStatus};
use iovirt_hca::mr::{Access, MrMode};
use iovirt_hca::qp::{PathMtu, QpType};
use rdma_common::*;

#[test]
fn rc_rdma_write_lands_byte_exact_through_both_stages() {
    let mut f = fabric(1, RdmaHostConfig::default());
    let (a, b) = pair(&mut f, 0, 0, QpType::Rc, PathMtu::Mtu1024);
    let data = pattern(10_000, 7);
    let src = buffer(&mut f, a, 10_000, Access::empty(), MrMode::Pinned, Some(&data));
    let dst = buffer(&mut f, b, 10_000, Access::LOCAL_WRITE | Access::REMOTE_WRITE, MrMode::Pinned, None);
    post_send(&mut f, a, write_wr(42, src, 10_000, dst));
    settle(&mut f, 10_000_000);
    assert_eq!(read_app(&mut f, b, dst.0, 10_000), data);
    let done = completions(&mut f, 0, 0);
    assert_eq!(done.len(), 1, "{done:?}");
    let wc = done[0].1;
    assert_eq!((wc.wr_id, wc.status, wc.opcode, wc.byte_len), (42, CqeStatus::Success, CqeOpcode::RdmaWrite, 10_000));
    // 10 packets of 1024 B (the last 784 B) went one way, at least one ACK back.
    let s0 = f.hosts[0].hca.stats();
    assert_eq!(s0.tx_payload_bytes.get(), 10_000);
    assert_eq!(s0.retransmitted_packets.get(), 0);
    let s1 = f.hosts[1].hca.stats();
    assert_eq!(s1.rx_payload_bytes.get(), 10_000);
    assert_eq!(f.links[0].stats().frames.get(), 10);
    assert!(f.links[1].stats().frames.get() >= 1);
}

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
    let src = source(&mut f, a, 10_000, 7);
    let dst = sink(&mut f, b, 10_000);
    post_send(&mut f, a, write_wr(42, src, 10_000, dst));
    settle(&mut f, 10_000_000);
    assert_bytes(&read_app(&mut f, b, dst.0, 10_000), &data);
    let done = completions(&mut f, 0, 0);
    assert_eq!(done.len(), 1, "{done:?}");
    let wc = done[0].1;
    assert_eq!(
        (wc.wr_id, wc.status, wc.opcode, wc.byte_len),
        (42, CqeStatus::Success, CqeOpcode::RdmaWrite, 10_000)
    );
    // 10 packets of 1024 B (the last 784 B) went one way, at least one ACK back.
    let s0 = f.hosts[0].hca.stats();
    assert_eq!(s0.tx_payload_bytes.get(), 10_000);
    assert_eq!(s0.retransmitted_packets.get(), 0);
    let s1 = f.hosts[1].hca.stats();
    assert_eq!(s1.rx_payload_bytes.get(), 10_000);
    assert_eq!(f.links[0].stats().frames.get(), 10);
    assert!(f.links[1].stats().frames.get() >= 1);
}

use iovirt_drivers::SendWr;
use iovirt_hca::wqe::{Remote, Sge, WqeFlags, WqeOpcode};

#[test]
fn rc_send_with_immediate_spans_packets_into_one_receive() {
    let mut f = fabric(1, RdmaHostConfig::default());
    let (a, b) = pair(&mut f, 0, 0, QpType::Rc, PathMtu::Mtu1024);
    let data = pattern(5000, 3);
    let src = source(&mut f, a, 5000, 3);
    let dst = buffer(&mut f, b, 8192, Access::LOCAL_WRITE, MrMode::Pinned, None);
    post_recv(&mut f, b, 7, sge(dst, 8192));
    post_send(
        &mut f,
        a,
        SendWr {
            wr_id: 9,
            opcode: WqeOpcode::SendImm,
            flags: WqeFlags::SIGNALED | WqeFlags::SOLICITED,
            imm: 0xfeed_f00d,
            remote: Remote::None,
            sges: [Some(sge(src, 3000)), Some(sge((src.0 + 3000, src.1), 2000))],
        },
    );
    settle(&mut f, 10_000_000);
    assert_bytes(&read_app(&mut f, b, dst.0, 5000), &data);
    let rx = completions(&mut f, 1, 0);
    assert_eq!(rx.len(), 1);
    let wc = rx[0].1;
    assert_eq!(
        (wc.wr_id, wc.opcode, wc.status, wc.byte_len, wc.imm, wc.qpn),
        (
            7,
            CqeOpcode::Recv,
            CqeStatus::Success,
            5000,
            Some(0xfeed_f00d),
            b.qpn
        )
    );
    let tx = completions(&mut f, 0, 0);
    assert_eq!((tx[0].1.wr_id, tx[0].1.status), (9, CqeStatus::Success));
    // The receive completion comes before the sender's (it waits for the ACK).
    assert!(rx[0].0 <= tx[0].0);
}

#[test]
fn rc_rdma_read_fetches_remote_bytes() {
    let mut f = fabric(1, RdmaHostConfig::default());
    let (a, b) = pair(&mut f, 0, 0, QpType::Rc, PathMtu::Mtu2048);
    let data = pattern(6000, 11);
    let remote = buffer(
        &mut f,
        b,
        6000,
        Access::REMOTE_READ,
        MrMode::Pinned,
        Some(&data),
    );
    let local = buffer(&mut f, a, 6000, Access::LOCAL_WRITE, MrMode::Pinned, None);
    post_send(
        &mut f,
        a,
        send_wr(
            1,
            WqeOpcode::RdmaRead,
            WqeFlags::SIGNALED,
            0,
            Remote::Rdma {
                va: remote.0,
                rkey: remote.1,
            },
            Some(sge(local, 6000)),
        ),
    );
    settle(&mut f, 10_000_000);
    assert_bytes(&read_app(&mut f, a, local.0, 6000), &data);
    let tx = completions(&mut f, 0, 0);
    assert_eq!(
        (tx.len(), tx[0].1.opcode, tx[0].1.status, tx[0].1.byte_len),
        (1, CqeOpcode::RdmaRead, CqeStatus::Success, 6000)
    );
    // One request out; three responses (2048, 2048, 1904) back.
    assert_eq!(f.links[0].stats().frames.get(), 1);
    assert_eq!(f.links[1].stats().frames.get(), 3);
}

#[test]
fn rdma_write_with_immediate_consumes_a_receive() {
    let mut f = fabric(1, RdmaHostConfig::default());
    let (a, b) = pair(&mut f, 0, 0, QpType::Rc, PathMtu::Mtu1024);
    let data = pattern(100, 5);
    let src = source(&mut f, a, 100, 5);
    let dst = sink(&mut f, b, 4096);
    post_recv(&mut f, b, 55, sge(dst, 0x10));
    let mut wr = write_wr(3, src, 100, (dst.0 + 64, dst.1));
    wr.opcode = WqeOpcode::RdmaWriteImm;
    wr.imm = 0x1234;
    post_send(&mut f, a, wr);
    settle(&mut f, 10_000_000);
    assert_bytes(&read_app(&mut f, b, dst.0 + 64, 100), &data);
    let rx = completions(&mut f, 1, 0);
    assert_eq!(
        (rx[0].1.wr_id, rx[0].1.opcode, rx[0].1.imm, rx[0].1.byte_len),
        (55, CqeOpcode::RecvRdmaWithImm, Some(0x1234), 100)
    );
}

/// A write that the responder must refuse: it NAKs with remote access
/// error, writes nothing, and the requester's WQE fails.
fn refused_write(remote_access: Access, rkey_offset: u32, va_offset: u64, len: u32) {
    let mut f = fabric(1, RdmaHostConfig::default());
    let (a, b) = pair(&mut f, 0, 0, QpType::Rc, PathMtu::Mtu1024);
    let data = pattern(len as usize, 1);
    let src = buffer(
        &mut f,
        a,
        u64::from(len),
        Access::empty(),
        MrMode::Pinned,
        Some(&data),
    );
    let dst = buffer(
        &mut f,
        b,
        4096,
        remote_access,
        MrMode::Pinned,
        Some(&[0u8; 4096]),
    );
    let rkey = iovirt_hca::Mkey(dst.1.0 + rkey_offset);
    post_send(&mut f, a, write_wr(1, src, len, (dst.0 + va_offset, rkey)));
    settle(&mut f, 10_000_000);
    assert_bytes(&read_app(&mut f, b, dst.0, 4096), &vec![0u8; 4096]);
    let tx = completions(&mut f, 0, 0);
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].1.status, CqeStatus::RemoteAccessError);
    assert_eq!(f.hosts[1].hca.stats().naks_sent.get(), 1);
    assert_eq!(f.hosts[1].hca.stats().rx_payload_bytes.get(), 0);
    assert_eq!(
        f.hosts[0].hca.qp(a.qpn).unwrap().state,
        iovirt_hca::qp::QpState::Err
    );
    let _ = b;
}

#[test]
fn bad_rkey_is_nakked_and_writes_nothing() {
    refused_write(Access::LOCAL_WRITE | Access::REMOTE_WRITE, 1, 0, 64);
}

#[test]
fn out_of_bounds_va_is_nakked_and_writes_nothing() {
    // 64 bytes from 4064: the last 32 fall outside the 4 KiB region.
    refused_write(Access::LOCAL_WRITE | Access::REMOTE_WRITE, 0, 4064, 64);
}

#[test]
fn missing_remote_write_right_is_nakked_and_writes_nothing() {
    refused_write(Access::LOCAL_WRITE, 0, 0, 64);
}

#[test]
fn send_without_a_receive_is_rnr_nakked_then_delivered_once_one_is_posted() {
    let mut f = fabric(1, RdmaHostConfig::default());
    let (a, b) = pair(&mut f, 0, 0, QpType::Rc, PathMtu::Mtu1024);
    let data = pattern(700, 9);
    let src = source(&mut f, a, 700, 9);
    let dst = buffer(&mut f, b, 1024, Access::LOCAL_WRITE, MrMode::Pinned, None);
    post_send(
        &mut f,
        a,
        send_wr(
            1,
            WqeOpcode::Send,
            WqeFlags::SIGNALED,
            0,
            Remote::None,
            Some(sge(src, 700)),
        ),
    );
    // min_rnr_timer 1 = 10 us: let a few RNR rounds pass.
    settle(&mut f, 35_000);
    let naks = f.hosts[1].hca.stats().rnr_naks_sent.get();
    assert!(naks >= 2, "{naks} RNR NAKs");
    assert_eq!(f.hosts[0].hca.stats().rnr_naks_received.get(), naks);
    assert!(completions(&mut f, 0, 0).is_empty());
    post_recv(&mut f, b, 2, sge(dst, 1024));
    settle(&mut f, 1_000_000);
    assert_bytes(&read_app(&mut f, b, dst.0, 700), &data);
    assert_eq!(completions(&mut f, 0, 0)[0].1.status, CqeStatus::Success);
    assert_eq!(completions(&mut f, 1, 0)[0].1.byte_len, 700);
}

#[test]
fn a_lost_packet_is_nakked_and_resent() {
    let mut f = fabric(1, RdmaHostConfig::default());
    let (a, b) = pair(&mut f, 0, 0, QpType::Rc, PathMtu::Mtu1024);
    let data = pattern(8192, 2);
    let src = source(&mut f, a, 8192, 2);
    let dst = sink(&mut f, b, 8192);
    // Drop the third data packet once.
    f.set_loss(drop_once(0, 3));
    post_send(&mut f, a, write_wr(1, src, 8192, dst));
    settle(&mut f, 10_000_000);
    assert_bytes(&read_app(&mut f, b, dst.0, 8192), &data);
    assert_eq!(f.lost, 1);
    let s1 = f.hosts[1].hca.stats();
    assert_eq!(s1.seq_naks_sent.get(), 1, "one NAK for the gap");
    assert!(f.hosts[0].hca.stats().retransmitted_packets.get() >= 6);
    assert_eq!(completions(&mut f, 0, 0)[0].1.status, CqeStatus::Success);
}

#[test]
fn a_lost_ack_times_out_and_the_duplicate_is_re_acked() {
    let mut f = fabric(1, RdmaHostConfig::default());
    let (a, b) = pair(&mut f, 0, 0, QpType::Rc, PathMtu::Mtu1024);
    let data = pattern(512, 4);
    let src = source(&mut f, a, 512, 4);
    let dst = sink(&mut f, b, 512);
    f.set_loss(drop_once(1, 1));
    post_send(&mut f, a, write_wr(1, src, 512, dst));
    settle(&mut f, 100_000_000);
    assert_bytes(&read_app(&mut f, b, dst.0, 512), &data);
    assert_eq!(f.hosts[0].hca.stats().timeouts.get(), 1);
    assert_eq!(f.hosts[1].hca.stats().duplicates.get(), 1);
    let tx = completions(&mut f, 0, 0);
    assert_eq!((tx.len(), tx[0].1.status), (1, CqeStatus::Success));
    // The timeout (timeout 10: 4.096 us x 1024) passed before the completion.
    assert!(tx[0].0.as_nanos() >= 4_194_304);
}

#[test]
fn retries_run_out_when_the_peer_is_gone() {
    let mut f = fabric(1, RdmaHostConfig::default());
    let (a, b) = pair(&mut f, 0, 0, QpType::Rc, PathMtu::Mtu1024);
    let src = buffer(
        &mut f,
        a,
        64,
        Access::empty(),
        MrMode::Pinned,
        Some(&[1; 64]),
    );
    let dst = sink(&mut f, b, 64);
    f.set_loss(Box::new(|dir, _| dir == 0));
    post_send(&mut f, a, write_wr(1, src, 64, dst));
    settle(&mut f, 1_000_000_000);
    let tx = completions(&mut f, 0, 0);
    assert_eq!(tx[0].1.status, CqeStatus::RetryExceeded);
    // retry_cnt 7: the first send and seven retries.
    assert_eq!(f.lost, 8);
    assert_eq!(f.hosts[0].hca.stats().timeouts.get(), 8);
}

#[test]
fn ud_sends_check_the_qkey() {
    let mut f = fabric(1, RdmaHostConfig::default());
    let a = endpoint(&mut f, 0, 0, QpType::Ud);
    let b = endpoint(&mut f, 1, 0, QpType::Ud);
    for (e, qkey) in [(a, 0x1111), (b, 0x2222)] {
        f.hosts[e.host]
            .with_guest(e.guest, |d, bus| {
                use iovirt_hca::qp::{QpAttr, QpState};
                d.modify_qp(
                    bus,
                    e.qpn,
                    QpState::Init,
                    QpAttr {
                        qkey: Some(qkey),
                        ..QpAttr::default()
                    },
                )
                .unwrap();
                d.modify_qp(bus, e.qpn, QpState::Rtr, QpAttr::default())
                    .unwrap();
                d.modify_qp(
                    bus,
                    e.qpn,
                    QpState::Rts,
                    QpAttr {
                        sq_psn: Some(0),
                        ..QpAttr::default()
                    },
                )
                .unwrap();
            })
            .unwrap();
    }
    let peer = &f.hosts[1].guests[0];
    let av = iovirt_hca::qp::AddressVector {
        dmac: peer.mac,
        dip: peer.ip,
    };
    let ah = f.hosts[0]
        .with_guest(0, |d, bus| d.create_ah(bus, av).unwrap())
        .unwrap();
    let src = source(&mut f, a, 256, 8);
    let dst = buffer(&mut f, b, 1024, Access::LOCAL_WRITE, MrMode::Pinned, None);
    post_recv(&mut f, b, 1, sge(dst, 512));
    post_recv(&mut f, b, 2, sge((dst.0 + 512, dst.1), 512));
    for (id, qkey) in [(10, 0x9999), (11, 0x2222)] {
        post_send(
            &mut f,
            a,
            send_wr(
                id,
                WqeOpcode::Send,
                WqeFlags::SIGNALED,
                0,
                Remote::Ud {
                    ah,
                    dest_qpn: b.qpn,
                    qkey,
                },
                Some(sge(src, 256)),
            ),
        );
    }
    settle(&mut f, 1_000_000);
    let rx = completions(&mut f, 1, 0);
    assert_eq!(rx.len(), 1, "the wrong Q_Key is dropped");
    assert_eq!(
        (rx[0].1.wr_id, rx[0].1.byte_len, rx[0].1.src_qp),
        (1, 256, a.qpn.raw())
    );
    assert_bytes(&read_app(&mut f, b, dst.0, 256), &pattern(256, 8));
    assert_eq!(f.hosts[1].hca.stats().rx_dropped.get(), 1);
    // UD sends complete once sent.
    assert_eq!(completions(&mut f, 0, 0).len(), 2);
}

#[test]
fn uc_drops_a_message_with_a_lost_packet_and_carries_on() {
    let mut f = fabric(1, RdmaHostConfig::default());
    let (a, b) = pair(&mut f, 0, 0, QpType::Uc, PathMtu::Mtu1024);
    let src = source(&mut f, a, 8192, 6);
    let dst = buffer(
        &mut f,
        b,
        8192,
        Access::LOCAL_WRITE | Access::REMOTE_WRITE,
        MrMode::Pinned,
        Some(&[0; 8192]),
    );
    post_recv(&mut f, b, 1, sge(dst, 4096));
    post_recv(&mut f, b, 2, sge((dst.0 + 4096, dst.1), 4096));
    let mut n = 0;
    f.set_loss(Box::new(move |dir, _| {
        n += 1;
        dir == 0 && n == 2
    }));
    for id in [1, 2] {
        post_send(
            &mut f,
            a,
            send_wr(
                id,
                WqeOpcode::Send,
                WqeFlags::SIGNALED,
                0,
                Remote::None,
                Some(sge(src, 3000)),
            ),
        );
    }
    settle(&mut f, 1_000_000);
    let rx = completions(&mut f, 1, 0);
    assert_eq!(rx.len(), 1, "{rx:?}");
    // The first message lost its second packet; the second went into the
    // first receive WQE, which the abandoned message gave back.
    assert_eq!((rx[0].1.wr_id, rx[0].1.byte_len), (1, 3000));
    assert_bytes(&read_app(&mut f, b, dst.0, 3000), &pattern(3000, 6));
    assert_eq!(
        f.hosts[0].hca.qp(a.qpn).unwrap().state,
        iovirt_hca::qp::QpState::Rts
    );
}

/// A SEND the responder cannot place: the receiver's WQE completes in
/// error, the NAK names why, the sender's WQE completes with the remote
/// status, and both QPs stop.
fn unplaceable_send(recv_len: u32, bad_lkey: bool) -> (CqeStatus, CqeStatus) {
    let mut f = fabric(1, RdmaHostConfig::default());
    let (a, b) = pair(&mut f, 0, 0, QpType::Rc, PathMtu::Mtu1024);
    let src = source(&mut f, a, 2000, 1);
    let dst = buffer(
        &mut f,
        b,
        4096,
        Access::LOCAL_WRITE,
        MrMode::Pinned,
        Some(&[0; 4096]),
    );
    let lkey = if bad_lkey {
        iovirt_hca::Mkey(dst.1.0 ^ 0xff)
    } else {
        dst.1
    };
    post_recv(
        &mut f,
        b,
        1,
        Sge {
            addr: dst.0,
            length: recv_len,
            lkey,
        },
    );
    post_send(
        &mut f,
        a,
        send_wr(
            2,
            WqeOpcode::Send,
            WqeFlags::SIGNALED,
            0,
            Remote::None,
            Some(sge(src, 2000)),
        ),
    );
    settle(&mut f, 10_000_000);
    let rx = completions(&mut f, 1, 0);
    let tx = completions(&mut f, 0, 0);
    assert_eq!((rx.len(), tx.len()), (1, 1), "{rx:?} {tx:?}");
    assert_eq!(f.hosts[1].hca.stats().naks_sent.get(), 1);
    assert_eq!(
        f.hosts[0].hca.qp(a.qpn).unwrap().state,
        iovirt_hca::qp::QpState::Err
    );
    assert_eq!(
        f.hosts[1].hca.qp(b.qpn).unwrap().state,
        iovirt_hca::qp::QpState::Err
    );
    (rx[0].1.status, tx[0].1.status)
}

#[test]
fn a_send_longer_than_the_receive_is_an_invalid_request() {
    assert_eq!(
        unplaceable_send(1000, false),
        (CqeStatus::LocalLengthError, CqeStatus::RemoteInvalidRequest)
    );
}

#[test]
fn a_receive_with_a_bad_key_is_a_remote_operational_error() {
    assert_eq!(
        unplaceable_send(4096, true),
        (
            CqeStatus::LocalProtectionError,
            CqeStatus::RemoteOperationalError
        )
    );
}

#[test]
fn an_armed_cq_raises_one_event_for_a_solicited_completion() {
    let mut f = fabric(1, RdmaHostConfig::default());
    let (a, b) = pair(&mut f, 0, 0, QpType::Rc, PathMtu::Mtu1024);
    let src = buffer(
        &mut f,
        a,
        64,
        Access::empty(),
        MrMode::Pinned,
        Some(&[7; 64]),
    );
    let dst = buffer(&mut f, b, 4096, Access::LOCAL_WRITE, MrMode::Pinned, None);
    for id in 0..3 {
        post_recv(&mut f, b, id, sge((dst.0 + id * 64, dst.1), 64));
    }
    // Armed for solicited completions only.
    f.hosts[1]
        .with_guest(0, |d, bus| d.arm_cq(bus, b.cq, true))
        .unwrap();
    let send = |solicited: bool| SendWr {
        wr_id: 1,
        opcode: WqeOpcode::Send,
        flags: if solicited {
            WqeFlags::SIGNALED | WqeFlags::SOLICITED
        } else {
            WqeFlags::SIGNALED
        },
        imm: 0,
        remote: Remote::None,
        sges: [Some(sge(src, 64)), None],
    };
    post_send(&mut f, a, send(false));
    settle(&mut f, 1_000_000);
    assert_eq!(f.hosts[1].stats.completion_events, 0, "not solicited");
    post_send(&mut f, a, send(true));
    post_send(&mut f, a, send(true));
    settle(&mut f, 1_000_000);
    // The arm is spent by the first solicited completion.
    assert_eq!(f.hosts[1].stats.completion_events, 1);
    assert_eq!(completions(&mut f, 1, 0).len(), 3);
}

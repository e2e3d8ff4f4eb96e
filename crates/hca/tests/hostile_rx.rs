//! Hostile packets from the network: malformed frames, frames for the wrong
//! QP, function or transport, PSNs far off, broken opcode sequences, RETH
//! lengths that disagree with the payload, forged duplicate READs, and
//! keys of another function. Each is answered the way hardware answers it
//! (drop, NAK, QP to error) and counted; no byte lands where it must not.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::*;
use iovirt_core::Gpa;
use iovirt_hca::mr::{Access, MrMode};
use iovirt_hca::qp::{QpState, QpType};
use iovirt_hca::wire::{AethSyndrome, Deth, NakCode, Opcode, RocePacket};
use iovirt_hca::{Command, Event, HcaConfig, Qpn};

const RW: Access = Access::LOCAL_WRITE
    .union(Access::REMOTE_WRITE)
    .union(Access::REMOTE_READ);

fn nak(code: NakCode) -> AethSyndrome {
    AethSyndrome::Nak(code)
}

fn fix_ip_checksum(f: &mut [u8]) {
    f[24] = 0;
    f[25] = 0;
    let mut sum: u32 = f[14..34]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    f[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

#[test]
fn malformed_frames_are_dropped_and_counted_by_cause() {
    let mut rig = Rig::new();
    let e = rig.endpoint(F1, QpType::Rc, RW);
    let good = write_pkt(
        F1,
        Opcode::RC_RDMA_WRITE_ONLY,
        e.qpn,
        0,
        reth(e.key, VA, 4),
        b"evil",
    );
    assert!(RocePacket::parse(&good).is_ok());

    rig.rx(&good[..30]);
    let mut bad_icrc = good.clone();
    *bad_icrc.last_mut().unwrap() ^= 0x5a;
    rig.rx(&bad_icrc);
    let mut bad_sum = good.clone();
    bad_sum[24] ^= 0x01;
    rig.rx(&bad_sum);
    let mut tcp = good.clone();
    tcp[23] = 6;
    fix_ip_checksum(&mut tcp);
    rig.rx(&tcp);
    let mut other_port = good.clone();
    other_port[36..38].copy_from_slice(&4792u16.to_be_bytes());
    rig.rx(&other_port);

    let s = rig.hca.stats();
    assert_eq!((s.rx_packets.get(), s.rx_malformed.get()), (5, 5));
    for cause in [
        "truncated",
        "bad_icrc",
        "bad_ip_checksum",
        "not_udp",
        "not_roce",
    ] {
        assert_eq!(rig.malformed(cause), 1, "{cause}");
    }
    assert_eq!(rig.process(), 0, "no NAK for a frame that did not parse");
    assert!(rig.mem.writes.is_empty());
    assert_eq!(rig.hca.qp_stats(e.qpn).unwrap().rx_packets.get(), 0);
}

#[test]
fn frames_for_unknown_qps_other_transports_or_other_functions_are_dropped() {
    let mut rig = Rig::new();
    let e1 = rig.endpoint(F1, QpType::Rc, RW);
    let e2 = rig.endpoint(F2, QpType::Rc, RW);
    let w = |f, op, qpn| write_pkt(f, op, qpn, 0, reth(e1.key, VA, 4), b"evil");

    rig.rx(&w(
        F1,
        Opcode::RC_RDMA_WRITE_ONLY,
        Qpn::new(0x5_0000).unwrap(),
    ));
    assert_eq!(rig.hca.stats().rx_unknown_qp.get(), 1);
    // A UC opcode to an RC QP.
    rig.rx(&w(F1, Opcode::UC_RDMA_WRITE_ONLY, e1.qpn));
    assert_eq!(rig.hca.stats().rx_unknown_qp.get(), 2);
    // Addressed to function 2's IP but naming function 1's QP.
    rig.rx(&w(F2, Opcode::RC_RDMA_WRITE_ONLY, e1.qpn));
    assert_eq!(rig.hca.stats().rx_unknown_qp.get(), 3);
    // Function 2's QP over function 1's IP.
    rig.rx(&w(F1, Opcode::RC_RDMA_WRITE_ONLY, e2.qpn));
    assert_eq!(rig.hca.stats().rx_unknown_qp.get(), 4);

    assert_eq!(rig.process(), 0);
    assert!(rig.mem.writes.is_empty());
    assert_eq!(rig.hca.qp(e1.qpn).unwrap().state, QpState::Rts);
    assert_eq!(rig.hca.qp(e2.qpn).unwrap().state, QpState::Rts);
}

#[test]
fn psn_far_ahead_gets_one_sequence_nak_then_silence() {
    let mut rig = Rig::new();
    let e = rig.endpoint(F1, QpType::Rc, RW);
    for psn in [5, 6, 0x7f_0000] {
        rig.rx(&write_pkt(
            F1,
            Opcode::RC_RDMA_WRITE_ONLY,
            e.qpn,
            psn,
            reth(e.key, VA, 4),
            b"evil",
        ));
    }
    rig.process();
    assert_eq!(rig.acks(), vec![(nak(NakCode::PsnSequenceError), 0)]);
    assert_eq!(rig.hca.stats().seq_naks_sent.get(), 1);
    assert_eq!(rig.hca.stats().rx_dropped.get(), 3);
    assert!(rig.mem.writes.is_empty());
    // The expected PSN still works.
    rig.rx(&write_pkt(
        F1,
        Opcode::RC_RDMA_WRITE_ONLY,
        e.qpn,
        0,
        reth(e.key, VA, 4),
        b"good",
    ));
    rig.process();
    assert_eq!(&rig.region_bytes(F1)[..4], b"good");
    assert!(matches!(rig.acks()[1], (AethSyndrome::Ack { .. }, 0)));
}

#[test]
fn psn_behind_is_a_duplicate_acked_again_and_not_placed_again() {
    let mut rig = Rig::new();
    let e = rig.endpoint(F1, QpType::Rc, RW);
    let pkt = |payload: &[u8]| {
        write_pkt(
            F1,
            Opcode::RC_RDMA_WRITE_ONLY,
            e.qpn,
            0,
            reth(e.key, VA, 4),
            payload,
        )
    };
    rig.rx(&pkt(b"AAAA"));
    rig.process();
    let writes = rig.mem.writes.len();
    rig.rx(&pkt(b"BBBB"));
    // Far behind (half the PSN space back) is a duplicate too.
    rig.rx(&write_pkt(
        F1,
        Opcode::RC_RDMA_WRITE_ONLY,
        e.qpn,
        0x80_0002,
        reth(e.key, VA, 4),
        b"CCCC",
    ));
    rig.process();
    assert_eq!(rig.hca.stats().duplicates.get(), 2);
    assert_eq!(&rig.region_bytes(F1)[..4], b"AAAA");
    assert_eq!(rig.mem.writes.len(), writes);
    let acks = rig.acks();
    assert_eq!(acks.len(), 2, "duplicate ACKs are coalesced: {acks:?}");
    assert!(
        acks.iter()
            .all(|a| matches!(a, (AethSyndrome::Ack { .. }, 0)))
    );
}

fn assert_invalid_request_and_err(rig: &mut Rig, qpn: Qpn) {
    rig.process();
    let naks: Vec<_> = rig
        .acks()
        .into_iter()
        .filter(|a| a.0 == nak(NakCode::InvalidRequest))
        .collect();
    assert_eq!(naks.len(), 1, "{:?}", rig.acks());
    assert_eq!(rig.hca.stats().naks_sent.get(), 1);
    assert_eq!(rig.hca.qp(qpn).unwrap().state, QpState::Err);
    assert_eq!(rig.hca.stats().qp_errors.get(), 1);
    let mut events = Vec::new();
    while let Some(ev) = rig.hca.poll_event(F1) {
        events.push(ev);
    }
    assert!(events.contains(&Event::QpFatal(qpn)), "{events:?}");
}

#[test]
fn middle_without_first_naks_invalid_request_and_writes_nothing() {
    let mut rig = Rig::new();
    let e = rig.endpoint(F1, QpType::Rc, RW);
    rig.rx(&write_pkt(
        F1,
        Opcode::RC_RDMA_WRITE_MIDDLE,
        e.qpn,
        0,
        None,
        &[0xee; 1024],
    ));
    assert_invalid_request_and_err(&mut rig, e.qpn);
    assert!(rig.mem.writes.is_empty());
    assert!(rig.region_bytes(F1).iter().all(|b| *b == 0));
}

#[test]
fn first_while_a_message_is_in_progress_naks_and_stops_placing() {
    let mut rig = Rig::new();
    let e = rig.endpoint(F1, QpType::Rc, RW);
    rig.rx(&write_pkt(
        F1,
        Opcode::RC_RDMA_WRITE_FIRST,
        e.qpn,
        0,
        reth(e.key, VA, 3072),
        &[0x11; 1024],
    ));
    rig.rx(&write_pkt(
        F1,
        Opcode::RC_RDMA_WRITE_FIRST,
        e.qpn,
        1,
        reth(e.key, VA + 1024, 2048),
        &[0x22; 1024],
    ));
    assert_invalid_request_and_err(&mut rig, e.qpn);
    // A SEND FIRST in the middle of the WRITE would be refused the same way;
    // the QP is in error now, so nothing more lands either.
    rig.rx(&write_pkt(
        F1,
        Opcode::RC_RDMA_WRITE_LAST,
        e.qpn,
        2,
        None,
        &[0x33; 1024],
    ));
    let bytes = rig.region_bytes(F1);
    assert!(bytes[..1024].iter().all(|b| *b == 0x11));
    assert!(bytes[1024..].iter().all(|b| *b == 0));
}

#[test]
fn send_first_inside_an_rdma_write_is_an_invalid_request() {
    let mut rig = Rig::new();
    let e = rig.endpoint(F1, QpType::Rc, RW);
    rig.rx(&write_pkt(
        F1,
        Opcode::RC_RDMA_WRITE_FIRST,
        e.qpn,
        0,
        reth(e.key, VA, 2048),
        &[0x11; 1024],
    ));
    rig.rx(&write_pkt(
        F1,
        Opcode::RC_SEND_FIRST,
        e.qpn,
        1,
        None,
        &[0x22; 1024],
    ));
    assert_invalid_request_and_err(&mut rig, e.qpn);
    assert_eq!(rig.mem.writes.len(), 1, "only the first WRITE packet");
}

#[test]
fn rdma_write_whose_last_packet_is_short_or_long_naks_invalid_request() {
    for (last_len, only) in [(512usize, false), (1500, false), (3, true), (5, true)] {
        let mut rig = Rig::new();
        let e = rig.endpoint(F1, QpType::Rc, RW);
        if only {
            rig.rx(&write_pkt(
                F1,
                Opcode::RC_RDMA_WRITE_ONLY,
                e.qpn,
                0,
                reth(e.key, VA, 4),
                &vec![0x44; last_len],
            ));
        } else {
            rig.rx(&write_pkt(
                F1,
                Opcode::RC_RDMA_WRITE_FIRST,
                e.qpn,
                0,
                reth(e.key, VA, 2048),
                &[0x11; 1024],
            ));
            rig.rx(&write_pkt(
                F1,
                Opcode::RC_RDMA_WRITE_LAST,
                e.qpn,
                1,
                None,
                &vec![0x44; last_len],
            ));
        }
        assert_invalid_request_and_err(&mut rig, e.qpn);
        assert!(
            !rig.region_bytes(F1).contains(&0x44),
            "{last_len}: nothing of the bad packet lands"
        );
    }
}

#[test]
fn duplicate_read_with_a_forged_rkey_reads_nothing() {
    let mut rig = Rig::new();
    let e = rig.endpoint(F1, QpType::Rc, RW);
    let e2 = rig.endpoint(F2, QpType::Rc, RW);
    rig.mem.poke(gvmi(F1), DATA_GPA, b"mine");
    rig.mem.poke(gvmi(F2), DATA_GPA, b"SECRET");
    let read = |key, va, len, psn| {
        write_pkt(
            F1,
            Opcode::RC_RDMA_READ_REQUEST,
            e.qpn,
            psn,
            reth(key, va, len),
            &[],
        )
    };
    rig.rx(&read(e.key, VA, 4, 0));
    rig.process();
    let first = rig.sent.len();
    let resp = RocePacket::parse(&rig.sent[0]).unwrap();
    assert_eq!(resp.payload, b"mine");
    // Duplicates (PSN 0 again) with function 2's key, a bogus key, a range
    // past the region, and a length that overflows the address space.
    rig.rx(&read(e2.key, VA, 6, 0));
    rig.rx(&read(iovirt_hca::Mkey(0xdead_be00), VA, 6, 0));
    rig.rx(&read(e.key, VA + REGION_PAGES * PAGE - 2, 6, 0));
    rig.rx(&read(e.key, u64::MAX - 1, 6, 0));
    rig.process();
    assert_eq!(rig.hca.stats().duplicates.get(), 4);
    assert_eq!(rig.hca.stats().rx_dropped.get(), 4);
    assert_eq!(rig.sent.len(), first, "no response to a forged duplicate");
    assert!(
        rig.sent
            .iter()
            .all(|f| !f.windows(6).any(|w| w == b"SECRET"))
    );
    // An honest duplicate is answered from memory again.
    rig.rx(&read(e.key, VA, 4, 0));
    rig.process();
    assert_eq!(rig.sent.len(), first + 1);
    assert_eq!(
        RocePacket::parse(&rig.sent[first]).unwrap().payload,
        b"mine"
    );
}

#[test]
fn another_functions_rkey_is_a_remote_access_error_and_writes_nothing() {
    let mut rig = Rig::new();
    let e1 = rig.endpoint(F1, QpType::Rc, RW);
    let e2 = rig.endpoint(F2, QpType::Rc, RW);
    rig.rx(&write_pkt(
        F1,
        Opcode::RC_RDMA_WRITE_ONLY,
        e1.qpn,
        0,
        reth(e2.key, VA, 4),
        b"evil",
    ));
    rig.process();
    assert_eq!(rig.acks(), vec![(nak(NakCode::RemoteAccessError), 0)]);
    assert_eq!(rig.hca.stats().naks_sent.get(), 1);
    assert_eq!(rig.hca.qp(e1.qpn).unwrap().state, QpState::Err);
    assert!(rig.mem.writes.is_empty());
    assert!(!rig.region_bytes(F2).contains(&b'e'));
    // A READ of function 2's region through function 1's QP: refused too.
    let mut rig = Rig::new();
    let e1 = rig.endpoint(F1, QpType::Rc, RW);
    let e2 = rig.endpoint(F2, QpType::Rc, RW);
    rig.mem.poke(gvmi(F2), DATA_GPA, b"SECRET");
    rig.rx(&write_pkt(
        F1,
        Opcode::RC_RDMA_READ_REQUEST,
        e1.qpn,
        0,
        reth(e2.key, VA, 6),
        &[],
    ));
    rig.process();
    assert_eq!(rig.acks(), vec![(nak(NakCode::RemoteAccessError), 0)]);
    assert!(
        rig.sent
            .iter()
            .all(|f| !f.windows(6).any(|w| w == b"SECRET"))
    );
}

#[test]
fn implicit_region_write_across_the_top_page_does_not_overflow() {
    // Regression: the page walk of a multi-page access computed the next
    // page as (page + 1) * 4096, which overflowed on the last page of the
    // address space (panic in debug, endless loop in release).
    let mut rig = Rig::new();
    let pd = rig.pd(F1);
    let cq = rig.cq(F1, 4);
    let key = rig.mkey(F1, pd, 0, u64::MAX, RW, MrMode::Implicit);
    let top = u64::MAX - (2 * PAGE - 1);
    rig.exec(
        F1,
        Command::WriteMtt {
            mkey: key,
            va: top,
            pages: vec![Some(Gpa::new(DATA_GPA)), Some(Gpa::new(DATA_GPA + PAGE))],
            prefetch: false,
        },
    )
    .unwrap();
    let qpn = rig.qp(F1, QpType::Rc, pd, cq);
    rig.connect(F1, qpn, QpType::Rc, RW);
    let va = u64::MAX - PAGE - 511;
    rig.rx(&write_pkt(
        F1,
        Opcode::RC_RDMA_WRITE_ONLY,
        qpn,
        0,
        reth(key, va, 1024),
        &[0x7e; 1024],
    ));
    rig.process();
    assert!(matches!(rig.acks()[..], [(AethSyndrome::Ack { .. }, 0)]));
    let bytes = rig.region_bytes(F1);
    let at = (PAGE - 512) as usize;
    assert!(bytes[at..at + 1024].iter().all(|b| *b == 0x7e));
    assert_eq!(bytes.iter().filter(|b| **b == 0x7e).count(), 1024);
}

#[test]
fn ud_packets_with_a_wrong_qkey_or_on_a_busy_queue_are_dropped() {
    let mut rig = Rig::new();
    let e = rig.endpoint(F1, QpType::Ud, Access::LOCAL_WRITE);
    rig.post_recv(
        F1,
        0,
        &[iovirt_hca::wqe::Sge {
            addr: VA,
            length: 64,
            lkey: e.key,
        }],
    );
    rig.ring_rq(F1, e.qpn, 1);
    let ud = |qkey| {
        let mut h = hdr(F1, Opcode::UD_SEND_ONLY, e.qpn, 0);
        h.deth = Some(Deth {
            qkey,
            src_qp: PEER_QPN,
        });
        frame(&h, b"datagram")
    };
    rig.rx(&ud(0x2222));
    assert_eq!(rig.hca.stats().rx_dropped.get(), 1);
    assert!(rig.mem.writes.is_empty());
    rig.rx(&ud(0x1111));
    assert_eq!(&rig.region_bytes(F1)[..8], b"datagram");
    // No receive WQE left: dropped, no RNR NAK on UD.
    rig.rx(&ud(0x1111));
    assert_eq!(rig.hca.stats().rx_dropped.get(), 2);
    rig.process();
    assert!(rig.acks().is_empty());
}

#[test]
fn the_hold_buffer_stays_bounded_under_a_flood() {
    let mut rig = Rig::with_config(HcaConfig {
        hold_threshold_ns: 1_000_000,
        hold_buffer_packets: 4,
        ..Rig::new().hca.config().to_owned()
    });
    rig.oracle_ns = Some(10);
    let mut qps = Vec::new();
    for _ in 0..3 {
        let pd = rig.pd(F1);
        let cq = rig.cq(F1, 4);
        // On demand with no page present: every WRITE faults.
        let key = rig.mkey(F1, pd, VA, PAGE, RW, MrMode::OnDemand);
        let qpn = rig.qp(F1, QpType::Rc, pd, cq);
        rig.connect(F1, qpn, QpType::Rc, RW);
        qps.push((qpn, key));
    }
    for round in 0..200u32 {
        for &(qpn, key) in &qps {
            rig.rx(&write_pkt(
                F1,
                Opcode::RC_RDMA_WRITE_ONLY,
                qpn,
                round % 3,
                reth(key, VA, 64),
                &[0x99; 64],
            ));
        }
    }
    let s = rig.hca.stats();
    assert_eq!(s.held_packets.get(), 4, "never more than the buffer holds");
    assert_eq!(s.rx_packets.get(), 600);
    assert!(s.rx_dropped.get() >= 590, "{}", s.rx_dropped.get());
    assert!(rig.hca.pending_events(F1) <= rig.hca.config().event_queue_depth);
    assert!(rig.mem.writes.is_empty());
}

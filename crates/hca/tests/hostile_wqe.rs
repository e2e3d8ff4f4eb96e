//! Hostile work in guest memory: malformed send WQEs, keys of another PD
//! or function, rings the HCA cannot reach, a CQ driven past its size and
//! an event queue driven past its depth.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::*;
use iovirt_core::Gpa;
use iovirt_hca::cqe::{CqeOpcode, CqeStatus};
use iovirt_hca::mr::{Access, MrMode};
use iovirt_hca::qp::{AddressVector, QpState, QpType, Ring};
use iovirt_hca::wire::{Deth, Opcode};
use iovirt_hca::wqe::{Remote, SendWqe, SendWqeLayout, Sge, WqeFlags, WqeOpcode};
use iovirt_hca::{Command, Event, HcaConfig, Mkey, Qpn};
use zerocopy::byteorder::little_endian::U32;

const RW: Access = Access::LOCAL_WRITE.union(Access::REMOTE_WRITE);

fn send(key: Mkey, len: u32) -> SendWqe {
    SendWqe {
        opcode: WqeOpcode::Send,
        flags: WqeFlags::SIGNALED,
        imm: 0,
        remote: Remote::None,
        sge: [Sge {
            addr: VA,
            length: len,
            lkey: key,
        }; 2],
        num_sge: 1,
    }
}

/// Posts `bad` at index 0 and a good signaled SEND at 1, rings, processes;
/// checks the error completion, the flush of the second WQE, the state and
/// that nothing went on the wire.
fn run_bad_wqe(
    t: QpType,
    bad: impl FnOnce(&mut Rig, &Endpoint) -> SendWqeLayout,
    status: CqeStatus,
) {
    let mut rig = Rig::new();
    let e = rig.endpoint(F1, t, RW);
    let mut good = send(e.key, 8);
    if t == QpType::Ud {
        good.remote = Remote::Ud {
            ah: 0,
            dest_qpn: iovirt_hca::Qpn::new(PEER_QPN).unwrap(),
            qkey: 0x1111,
        };
    }
    let bad = bad(&mut rig, &e);
    rig.post_send_raw(F1, 0, &bad);
    rig.post_send_raw(F1, 1, &good.layout());
    rig.ring_sq(F1, e.qpn, 2);
    rig.process();
    assert!(rig.sent.is_empty(), "{t:?}: nothing sent");
    let want_state = if t == QpType::Ud {
        QpState::Sqe
    } else {
        QpState::Err
    };
    assert_eq!(rig.hca.qp(e.qpn).unwrap().state, want_state);
    let cqes = rig.cqes(F1, 2);
    assert_eq!((cqes[0].wqe_index, cqes[0].status), (0, status), "{t:?}");
    assert_eq!(
        (cqes[1].wqe_index, cqes[1].status),
        (1, CqeStatus::WrFlushError),
        "{t:?}"
    );
    assert_eq!(rig.hca.cq(e.cq).unwrap().pi, 2, "one completion each");
    // Work posted while the QP is in error is flushed too.
    rig.post_send_raw(F1, 2, &good.layout());
    rig.ring_sq(F1, e.qpn, 3);
    rig.process();
    assert_eq!(rig.cqes(F1, 3)[2].status, CqeStatus::WrFlushError);
    assert!(rig.sent.is_empty());
    assert!(
        rig.mem
            .writes_outside(&[(gvmi(F1), CQ_BASE..CQ_BASE + 96)])
            .is_empty()
    );
}

#[test]
fn send_wqe_with_a_bad_opcode_fails_and_flushes_the_rest() {
    run_bad_wqe(
        QpType::Rc,
        |_, e| SendWqeLayout {
            opcode: 0x42,
            ..send(e.key, 8).layout()
        },
        CqeStatus::LocalQpOperationError,
    );
}

#[test]
fn send_wqe_with_too_many_sges_fails() {
    run_bad_wqe(
        QpType::Uc,
        |_, e| SendWqeLayout {
            num_sge: 3,
            ..send(e.key, 8).layout()
        },
        CqeStatus::LocalQpOperationError,
    );
}

#[test]
fn send_wqe_longer_than_4_gib_fails() {
    run_bad_wqe(
        QpType::Rc,
        |_, e| {
            let mut l = SendWqeLayout {
                num_sge: 2,
                ..send(e.key, 8).layout()
            };
            l.sge[0].length = U32::new(u32::MAX);
            l.sge[1].length = U32::new(1);
            l
        },
        CqeStatus::LocalQpOperationError,
    );
}

#[test]
fn rdma_read_on_uc_fails() {
    run_bad_wqe(
        QpType::Uc,
        |_, e| {
            SendWqe {
                opcode: WqeOpcode::RdmaRead,
                remote: Remote::Rdma {
                    va: VA,
                    rkey: e.key,
                },
                ..send(e.key, 8)
            }
            .layout()
        },
        CqeStatus::LocalQpOperationError,
    );
}

#[test]
fn ud_send_over_the_mtu_fails_with_a_length_error_and_sqe() {
    run_bad_wqe(
        QpType::Ud,
        |_, e| {
            SendWqe {
                remote: Remote::Ud {
                    ah: 0,
                    dest_qpn: iovirt_hca::Qpn::new(PEER_QPN).unwrap(),
                    qkey: 0x1111,
                },
                ..send(e.key, 1025)
            }
            .layout()
        },
        CqeStatus::LocalLengthError,
    );
}

#[test]
fn ud_send_with_an_unknown_address_handle_fails() {
    run_bad_wqe(
        QpType::Ud,
        |_, e| {
            SendWqe {
                remote: Remote::Ud {
                    ah: 3,
                    dest_qpn: iovirt_hca::Qpn::new(PEER_QPN).unwrap(),
                    qkey: 0x1111,
                },
                ..send(e.key, 8)
            }
            .layout()
        },
        CqeStatus::LocalQpOperationError,
    );
}

#[test]
fn sge_with_a_key_of_another_pd_or_function_is_a_protection_error() {
    // Another PD of the same function.
    run_bad_wqe(
        QpType::Rc,
        |rig, _| {
            let other_pd = rig.pd(F1);
            let other = rig.mkey(F1, other_pd, VA, PAGE, RW, MrMode::OnDemand);
            send(other, 8).layout()
        },
        CqeStatus::LocalProtectionError,
    );
    // Function 2's key (same MPT, other owner).
    let mut rig = Rig::new();
    let e2 = rig.endpoint(F2, QpType::Rc, RW);
    rig.mem.poke(gvmi(F2), DATA_GPA, b"SECRET!!");
    let e1 = rig.endpoint(F1, QpType::Rc, RW);
    rig.post_send_raw(F1, 0, &send(e2.key, 8).layout());
    rig.ring_sq(F1, e1.qpn, 1);
    rig.process();
    assert!(rig.sent.is_empty());
    assert_eq!(rig.cqes(F1, 1)[0].status, CqeStatus::LocalProtectionError);
    assert_eq!(rig.hca.qp(e1.qpn).unwrap().state, QpState::Err);
    // And an SGE past the end of its own region.
    let mut rig = Rig::new();
    let e = rig.endpoint(F1, QpType::Uc, RW);
    let mut w = send(e.key, 16);
    w.sge[0].addr = VA + REGION_PAGES * PAGE - 8;
    rig.post_send_raw(F1, 0, &w.layout());
    rig.ring_sq(F1, e.qpn, 1);
    rig.process();
    assert!(rig.sent.is_empty());
    assert_eq!(rig.cqes(F1, 1)[0].status, CqeStatus::LocalProtectionError);
}

fn qp_with_rings(rig: &mut Rig, t: QpType, sq: u64, rq: u64, cq_base: u64) -> Endpoint {
    let pd = rig.pd(F1);
    let key = rig.mr(F1, pd, RW);
    let ring = |b, log_size| Ring {
        base: Gpa::new(b),
        log_size,
    };
    let cq = match rig.exec(F1, Command::CreateCq(ring(cq_base, 4))).unwrap() {
        iovirt_hca::Reply::Cq(c) => c,
        r => panic!("{r:?}"),
    };
    let cmd = Command::CreateQp {
        qp_type: t,
        pd,
        send_cq: cq,
        recv_cq: cq,
        sq: ring(sq, 4),
        rq: ring(rq, 4),
    };
    let qpn = match rig.exec(F1, cmd).unwrap() {
        iovirt_hca::Reply::Qp(q) => q,
        r => panic!("{r:?}"),
    };
    rig.connect(F1, qpn, t, RW);
    Endpoint {
        f: F1,
        pd,
        cq,
        key,
        qpn,
    }
}

fn events(rig: &mut Rig) -> Vec<Event> {
    std::iter::from_fn(|| rig.hca.poll_event(F1)).collect()
}

const UNMAPPED: u64 = 0x7_0000_0000;

#[test]
fn unreachable_send_queue_makes_the_qp_fatal() {
    let mut rig = Rig::new();
    let e = qp_with_rings(&mut rig, QpType::Rc, UNMAPPED, RQ_BASE, CQ_BASE);
    rig.ring_sq(F1, e.qpn, 3);
    rig.process();
    assert_eq!(rig.hca.qp(e.qpn).unwrap().state, QpState::Err);
    assert_eq!(events(&mut rig), vec![Event::QpFatal(e.qpn)]);
    assert!(rig.sent.is_empty());
    // The three posted WQEs are flushed to the CQ.
    let cqes = rig.cqes(F1, 3);
    assert!(cqes.iter().all(|c| c.status == CqeStatus::WrFlushError));
    assert_eq!(rig.hca.stats().qp_errors.get(), 1);
}

#[test]
fn unreachable_receive_queue_makes_the_qp_fatal() {
    let mut rig = Rig::new();
    let e = qp_with_rings(&mut rig, QpType::Rc, SQ_BASE, UNMAPPED, CQ_BASE);
    rig.ring_rq(F1, e.qpn, 1);
    rig.rx(&write_pkt(
        F1,
        Opcode::RC_SEND_ONLY,
        e.qpn,
        0,
        None,
        b"hello",
    ));
    rig.process();
    assert_eq!(rig.hca.qp(e.qpn).unwrap().state, QpState::Err);
    assert_eq!(events(&mut rig), vec![Event::QpFatal(e.qpn)]);
    assert!(rig.region_bytes(F1).iter().all(|b| *b == 0));
    assert_eq!(rig.cqes(F1, 1)[0].status, CqeStatus::WrFlushError);
}

#[test]
fn unreachable_cq_ring_is_a_cq_error_and_makes_the_qp_fatal() {
    let mut rig = Rig::new();
    let e = qp_with_rings(&mut rig, QpType::Rc, SQ_BASE, RQ_BASE, UNMAPPED);
    rig.post_recv(
        F1,
        0,
        &[Sge {
            addr: VA,
            length: 64,
            lkey: e.key,
        }],
    );
    rig.ring_rq(F1, e.qpn, 1);
    rig.rx(&write_pkt(
        F1,
        Opcode::RC_SEND_ONLY,
        e.qpn,
        0,
        None,
        b"hello",
    ));
    rig.process();
    // IBTA C11-37 (a CQ protection error) and C9-218 (the QP whose
    // completion is lost goes to the error state).
    assert_eq!(rig.hca.qp(e.qpn).unwrap().state, QpState::Err);
    assert_eq!(
        events(&mut rig),
        vec![Event::CqError(e.cq), Event::QpFatal(e.qpn)]
    );
    let cq = rig.hca.cq(e.cq).unwrap();
    assert_eq!(cq.pi, 0, "no completion written");
    assert!(cq.error);
    let s = rig.hca.stats();
    assert_eq!(s.cq_access_errors.get(), 1);
    assert_eq!(s.cq_overflows.get(), 0);
    assert_eq!(s.completions_lost.get(), 1);
    assert!(rig.mem.writes_outside(&rig.allowed()).is_empty());
}

fn ud_dgram(rig: &mut Rig, qpn: Qpn) {
    let mut h = hdr(F1, Opcode::UD_SEND_ONLY, qpn, 0);
    h.deth = Some(Deth {
        qkey: 0x1111,
        src_qp: PEER_QPN,
    });
    rig.rx(&frame(&h, b"dgram"));
}

#[test]
fn cq_overrun_is_a_cq_error_and_every_qp_completing_to_it_goes_to_error() {
    let mut rig = Rig::new();
    let pd = rig.pd(F1);
    let key = rig.mr(F1, pd, RW);
    let cq = rig.cq(F1, 1); // two entries
    let a = rig.qp(F1, QpType::Ud, pd, cq);
    let b = rig.qp(F1, QpType::Ud, pd, cq);
    for q in [a, b] {
        rig.connect(F1, q, QpType::Ud, RW);
    }
    // Both QPs' receive rings sit at RQ_BASE: four receive WQEs serve both.
    for i in 0..4u16 {
        rig.post_recv(
            F1,
            i,
            &[Sge {
                addr: VA + u64::from(i) * 64,
                length: 64,
                lkey: key,
            }],
        );
    }
    rig.ring_rq(F1, a, 4);
    rig.ring_rq(F1, b, 4);
    for _ in 0..4 {
        ud_dgram(&mut rig, a);
    }
    // Two completions fit; the third overruns the CQ (C11-37) and moves
    // QP a to the error state (C9-218); the fourth datagram finds a in error.
    assert_eq!(rig.hca.qp(a).unwrap().state, QpState::Err);
    assert_eq!(rig.hca.qp(b).unwrap().state, QpState::Rts);
    // QP b's first completion meets the CQ in error: b goes to error too,
    // without a second CQ error.
    ud_dgram(&mut rig, b);
    rig.process();
    assert_eq!(rig.hca.qp(b).unwrap().state, QpState::Err);
    assert_eq!(
        events(&mut rig),
        vec![Event::CqError(cq), Event::QpFatal(a), Event::QpFatal(b)]
    );
    let s = rig.hca.stats();
    assert_eq!(s.cq_overflows.get(), 1);
    assert_eq!(s.cq_access_errors.get(), 0);
    assert_eq!(s.qp_errors.get(), 2);
    // Lost: a's third completion, its one flushed WQE, b's completion and
    // b's three flushed WQEs.
    assert_eq!(s.completions_lost.get(), 6);
    assert!(rig.hca.cq(cq).unwrap().error);
    let cqes = rig.cqes(F1, 2);
    assert!(
        cqes.iter()
            .all(|c| c.opcode == CqeOpcode::Recv && c.status == CqeStatus::Success)
    );
    // The CQ ring was not written past its two entries.
    assert!(
        rig.mem
            .writes_outside(&[
                (gvmi(F1), CQ_BASE..CQ_BASE + 64),
                (gvmi(F1), DATA_GPA..DATA_GPA + 256)
            ])
            .is_empty()
    );
}

#[test]
fn event_queue_overflow_drops_and_counts() {
    let mut rig = Rig::with_config(HcaConfig {
        event_queue_depth: 4,
        ..Rig::new().hca.config().to_owned()
    });
    let pd = rig.pd(F1);
    let key = rig.mr(F1, pd, RW);
    let cq = rig.cq(F1, 4);
    let mut qps = Vec::new();
    for _ in 0..7 {
        let qpn = rig.qp(F1, QpType::Rc, pd, cq);
        rig.connect(F1, qpn, QpType::Rc, RW);
        qps.push(qpn);
    }
    // Seven QPs each get a bad WQE: seven QpFatal events for four slots.
    for &q in &qps {
        rig.post_send_raw(
            F1,
            0,
            &SendWqeLayout {
                opcode: 0xff,
                ..send(key, 8).layout()
            },
        );
        rig.ring_sq(F1, q, 1);
        rig.process();
    }
    assert_eq!(rig.hca.stats().qp_errors.get(), 7);
    assert_eq!(rig.hca.pending_events(F1), 4);
    assert_eq!(rig.hca.stats().events_dropped.get(), 3);
    assert_eq!(rig.irqs.len(), 4, "no interrupt for a dropped event");
    assert_eq!(
        events(&mut rig),
        qps[..4]
            .iter()
            .map(|q| Event::QpFatal(*q))
            .collect::<Vec<_>>()
    );
    // The address handle path of an honest UD send still works afterwards.
    let ud = rig.endpoint(F2, QpType::Ud, RW);
    rig.exec(
        F2,
        Command::CreateAh(AddressVector {
            dmac: PEER_MAC,
            dip: PEER_IP,
        }),
    )
    .unwrap();
    let w = SendWqe {
        remote: Remote::Ud {
            ah: 0,
            dest_qpn: iovirt_hca::Qpn::new(PEER_QPN).unwrap(),
            qkey: 0x1111,
        },
        ..send(ud.key, 8)
    };
    rig.post_send_raw(F2, 0, &w.layout());
    rig.ring_sq(F2, ud.qpn, 1);
    assert_eq!(rig.process(), 1);
}

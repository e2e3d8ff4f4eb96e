//! Hostile commands and doorbells: out-of-range fields, overflowing
//! lengths, objects of another function, tables driven to their limits,
//! objects destroyed while in use, and doorbells that name what the
//! function does not own or claim more than a ring holds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::*;
use iovirt_core::{Gpa, RegisterAccess, Width};
use iovirt_hca::mr::{Access, MrMode};
use iovirt_hca::qp::{QpAttr, QpState, QpType, Ring};
use iovirt_hca::wqe::{SendWqe, Sge, WqeFlags, WqeOpcode};
use iovirt_hca::{CmdError, Command, FunctionPort, MkeySpec, doorbell};

const RW: Access = Access::LOCAL_WRITE.union(Access::REMOTE_WRITE);

fn spec(pd: iovirt_hca::Pdn, start: u64, length: u64, access: Access, mode: MrMode) -> Command {
    Command::CreateMkey(MkeySpec {
        pd,
        start,
        length,
        access,
        mode,
        variant: 1,
    })
}

#[test]
fn commands_with_out_of_range_fields_are_refused() {
    let mut rig = Rig::new();
    let pd = rig.pd(F1);
    let cq = rig.cq(F1, 4);
    let big = Ring {
        base: Gpa::new(CQ_BASE),
        log_size: 7,
    };
    assert_eq!(
        rig.exec(F1, Command::CreateCq(big)),
        Err(CmdError::BadParam("log_size"))
    );
    let ok = Ring { log_size: 4, ..big };
    for (sq, rq) in [
        (big, ok),
        (
            ok,
            Ring {
                log_size: 255,
                ..big
            },
        ),
    ] {
        let cmd = Command::CreateQp {
            qp_type: QpType::Rc,
            pd,
            send_cq: cq,
            recv_cq: cq,
            sq,
            rq,
        };
        assert_eq!(rig.exec(F1, cmd), Err(CmdError::BadParam("log_size")));
    }
    let cases = [
        // Length overflowing the address space, or zero.
        (
            spec(pd, VA, u64::MAX, RW, MrMode::Pinned),
            CmdError::BadParam("length"),
        ),
        (
            spec(pd, u64::MAX - 10, 100, RW, MrMode::OnDemand),
            CmdError::BadParam("length"),
        ),
        (
            spec(pd, VA, 0, RW, MrMode::Pinned),
            CmdError::BadParam("length"),
        ),
        // More pages than 32 bits count, then more than the MTT holds.
        (
            spec(pd, 0, 1 << 60, RW, MrMode::OnDemand),
            CmdError::BadParam("length"),
        ),
        (
            spec(pd, 0, 1 << 40, RW, MrMode::Pinned),
            CmdError::Exhausted,
        ),
        // An implicit region is the whole address space or nothing.
        (
            spec(pd, VA, u64::MAX, RW, MrMode::Implicit),
            CmdError::BadParam("length"),
        ),
        (
            spec(pd, 0, 1 << 20, RW, MrMode::Implicit),
            CmdError::BadParam("length"),
        ),
        // Remote write without local write.
        (
            spec(pd, VA, PAGE, Access::REMOTE_WRITE, MrMode::Pinned),
            CmdError::BadParam("access"),
        ),
    ];
    let n = cases.len();
    for (cmd, want) in cases {
        assert_eq!(rig.exec(F1, cmd.clone()), Err(want), "{cmd:?}");
    }
    assert_eq!(rig.hca.stats().cmd_errors.get(), 3 + n as u64);
    assert!(
        rig.hca.mkey(iovirt_hca::Mkey::new(1, 1)).is_none(),
        "no region was made"
    );
    // A refused QP attribute changes nothing.
    let qpn = rig.qp(F1, QpType::Uc, pd, cq);
    let bad = QpAttr {
        access: Some(Access::REMOTE_READ),
        ..QpAttr::default()
    };
    assert!(matches!(
        rig.exec(
            F1,
            Command::ModifyQp {
                qpn,
                state: QpState::Init,
                attr: bad
            }
        ),
        Err(CmdError::BadState(_))
    ));
    assert_eq!(rig.hca.qp(qpn).unwrap().state, QpState::Reset);
}

#[test]
fn write_mtt_beyond_the_region_is_refused_and_changes_nothing() {
    let mut rig = Rig::new();
    let pd = rig.pd(F1);
    let key = rig.mkey(F1, pd, VA, REGION_PAGES * PAGE, RW, MrMode::OnDemand);
    let pages = |n: u64| {
        (0..n)
            .map(|i| Some(Gpa::new(DATA_GPA + i * PAGE)))
            .collect()
    };
    let cmd = |va, pages| Command::WriteMtt {
        mkey: key,
        va,
        pages,
        prefetch: true,
    };
    assert_eq!(
        rig.exec(F1, cmd(VA, pages(REGION_PAGES + 1))),
        Err(CmdError::BadParam("pages"))
    );
    assert_eq!(
        rig.exec(F1, cmd(VA + 2 * PAGE, pages(3))),
        Err(CmdError::BadParam("pages"))
    );
    assert_eq!(
        rig.exec(F1, cmd(VA - 1, pages(1))),
        Err(CmdError::BadParam("va"))
    );
    assert_eq!(
        rig.exec(F1, cmd(u64::MAX, pages(1))),
        Err(CmdError::BadParam("va"))
    );
    // Nothing was filled by the refused commands: the region's counters
    // count no prefetched page.
    assert_eq!(rig.hca.mkey(key).unwrap().counters.page_prefetch.get(), 0);
    assert_eq!(
        rig.exec(F1, cmd(VA, pages(REGION_PAGES))).ok(),
        Some(iovirt_hca::Reply::Done)
    );
    assert_eq!(
        rig.hca.mkey(key).unwrap().counters.page_prefetch.get(),
        REGION_PAGES
    );

    // An implicit region: a list running past the top of the address
    // space is refused (it used to overflow the page arithmetic).
    let imp = rig.mkey(F1, pd, 0, u64::MAX, RW, MrMode::Implicit);
    let top = Command::WriteMtt {
        mkey: imp,
        va: u64::MAX - PAGE + 1,
        pages: pages(3),
        prefetch: true,
    };
    assert_eq!(rig.exec(F1, top), Err(CmdError::BadParam("pages")));
    assert_eq!(rig.hca.mkey(imp).unwrap().counters.page_prefetch.get(), 0);
    // ...and more implicit entries than the function may hold: Exhausted.
    let many = Command::WriteMtt {
        mkey: imp,
        va: 0,
        pages: vec![Some(Gpa::new(DATA_GPA)); 65],
        prefetch: false,
    };
    assert_eq!(rig.exec(F1, many), Err(CmdError::Exhausted));
    // The refused list set nothing: the whole table is still free for 64
    // other pages (it used to keep the 64 entries written before the
    // 65th failed).
    let fits = Command::WriteMtt {
        mkey: imp,
        va: 100 * PAGE,
        pages: vec![Some(Gpa::new(DATA_GPA)); 64],
        prefetch: true,
    };
    assert_eq!(rig.exec(F1, fits), Ok(iovirt_hca::Reply::Done));
    assert_eq!(rig.hca.mkey(imp).unwrap().counters.page_prefetch.get(), 64);
}

#[test]
fn another_functions_objects_are_bad_resources() {
    let mut rig = Rig::new();
    let e2 = rig.endpoint(F2, QpType::Rc, RW);
    let pd1 = rig.pd(F1);
    let cq1 = rig.cq(F1, 4);
    let ring = Ring {
        base: Gpa::new(SQ_BASE),
        log_size: 4,
    };
    let qp = |pd, cq| Command::CreateQp {
        qp_type: QpType::Rc,
        pd,
        send_cq: cq,
        recv_cq: cq,
        sq: ring,
        rq: ring,
    };
    let cmds = [
        qp(e2.pd, cq1),
        qp(pd1, e2.cq),
        spec(e2.pd, VA, PAGE, RW, MrMode::Pinned),
        Command::DeallocPd(e2.pd),
        Command::DestroyCq(e2.cq),
        Command::DestroyQp(e2.qpn),
        Command::DestroyMkey(e2.key),
        Command::WriteMtt {
            mkey: e2.key,
            va: VA,
            pages: vec![Some(Gpa::new(FORBIDDEN_GPA))],
            prefetch: false,
        },
        Command::ModifyQp {
            qpn: e2.qpn,
            state: QpState::Err,
            attr: QpAttr::default(),
        },
        Command::ResumePageFault(1),
    ];
    for cmd in cmds {
        assert_eq!(
            rig.exec(F1, cmd.clone()),
            Err(CmdError::BadResource),
            "{cmd:?}"
        );
    }
    // Unknown function: nothing at all.
    assert_eq!(
        rig.exec(iovirt_hca::FunctionId(9), Command::AllocPd),
        Err(CmdError::BadResource)
    );
    // Function 2's objects are intact and still work.
    assert_eq!(rig.hca.qp(e2.qpn).unwrap().state, QpState::Rts);
    assert!(rig.hca.mkey(e2.key).is_some());
    assert!(rig.hca.cq(e2.cq).is_some());
    rig.rx(&write_pkt(
        F2,
        iovirt_hca::wire::Opcode::RC_RDMA_WRITE_ONLY,
        e2.qpn,
        0,
        reth(e2.key, VA, 2),
        b"ok",
    ));
    assert_eq!(&rig.region_bytes(F2)[..2], b"ok");
    assert!(rig.region_bytes(F1).iter().all(|b| *b == 0));
}

#[test]
fn tables_run_out_with_exhausted_and_in_use_objects_are_busy() {
    let mut rig = Rig::new();
    let pds: Vec<_> = (0..8).map(|_| rig.pd(F1)).collect();
    assert_eq!(rig.exec(F2, Command::AllocPd), Err(CmdError::Exhausted));
    let cqs: Vec<_> = (0..16).map(|_| rig.cq(F1, 1)).collect();
    assert_eq!(
        rig.exec(
            F1,
            Command::CreateCq(Ring {
                base: Gpa::new(CQ_BASE),
                log_size: 1
            })
        ),
        Err(CmdError::Exhausted)
    );
    // 64 MTT entries: 16 regions of 4 pages, then none.
    for _ in 0..16 {
        rig.mkey(F1, pds[0], VA, 4 * PAGE, RW, MrMode::OnDemand);
    }
    assert_eq!(
        rig.exec(F1, spec(pds[0], VA, PAGE, RW, MrMode::OnDemand)),
        Err(CmdError::Exhausted)
    );
    let qps: Vec<_> = (0..16)
        .map(|_| rig.qp(F1, QpType::Ud, pds[1], cqs[0]))
        .collect();
    let ring = Ring {
        base: Gpa::new(SQ_BASE),
        log_size: 1,
    };
    assert_eq!(
        rig.exec(
            F1,
            Command::CreateQp {
                qp_type: QpType::Ud,
                pd: pds[1],
                send_cq: cqs[0],
                recv_cq: cqs[0],
                sq: ring,
                rq: ring
            }
        ),
        Err(CmdError::Exhausted)
    );
    for av in 0..4 {
        assert_eq!(
            rig.exec(
                F1,
                Command::CreateAh(iovirt_hca::qp::AddressVector {
                    dmac: [av; 6],
                    dip: [av; 4]
                })
            )
            .ok(),
            Some(iovirt_hca::Reply::Ah(u32::from(av)))
        );
    }
    assert_eq!(
        rig.exec(
            F1,
            Command::CreateAh(iovirt_hca::qp::AddressVector {
                dmac: [9; 6],
                dip: [9; 4]
            })
        ),
        Err(CmdError::Exhausted)
    );
    // In use: a PD with regions or QPs, a CQ with QPs.
    assert_eq!(
        rig.exec(F1, Command::DeallocPd(pds[0])),
        Err(CmdError::Busy)
    );
    assert_eq!(
        rig.exec(F1, Command::DeallocPd(pds[1])),
        Err(CmdError::Busy)
    );
    assert_eq!(
        rig.exec(F1, Command::DestroyCq(cqs[0])),
        Err(CmdError::Busy)
    );
    // Free the QPs: the CQ and PD become free.
    for q in qps {
        rig.exec(F1, Command::DestroyQp(q)).unwrap();
    }
    rig.exec(F1, Command::DestroyCq(cqs[0])).unwrap();
    rig.exec(F1, Command::DeallocPd(pds[1])).unwrap();
    assert_eq!(
        rig.exec(F1, Command::DestroyCq(cqs[0])),
        Err(CmdError::BadResource)
    );
}

#[test]
fn hostile_doorbells_are_counted_and_process_nothing() {
    let mut rig = Rig::new();
    let e1 = rig.endpoint(F1, QpType::Rc, RW);
    let e2 = rig.endpoint(F2, QpType::Rc, RW);
    // A valid WQE sits in each send queue, so that a doorbell that got
    // through would send a packet.
    let wqe = SendWqe {
        opcode: WqeOpcode::Send,
        flags: WqeFlags::SIGNALED,
        imm: 0,
        remote: iovirt_hca::wqe::Remote::None,
        sge: [Sge {
            addr: VA,
            length: 8,
            lkey: e1.key,
        }; 2],
        num_sge: 1,
    };
    for i in 0..16 {
        rig.post_send_raw(F1, i, &wqe.layout());
        rig.post_send_raw(F2, i, &wqe.layout());
    }
    let db = |q: iovirt_hca::Qpn, pi: u64| (u64::from(q.raw()) << 32) | pi;
    let cases = [
        (doorbell::SQ, db(e1.qpn, 17)),     // beyond the 16-entry ring
        (doorbell::SQ, db(e1.qpn, 0xffff)), // behind the consumer
        (doorbell::RQ, db(e1.qpn, 40)),
        (doorbell::SQ, db(e2.qpn, 1)), // function 2's QP
        (doorbell::SQ, (0x7777u64 << 32) | 1),
        (doorbell::SQ, (u64::from(u32::MAX) << 32) | 1), // not a 24-bit QPN
        (doorbell::CQ_CI, u64::from(e2.cq.0) << 32),
        (doorbell::CQ_ARM, (99u64 << 32) | 1),
        (doorbell::CQ_CI, (u64::from(e1.cq.0) << 32) | 5), // more than produced
        (0x20, db(e1.qpn, 1)),
        (0xff8, db(e1.qpn, 1)),
    ];
    for (reg, value) in cases {
        rig.hca.doorbell(F1, reg, value);
    }
    let mut port = FunctionPort {
        hca: &mut rig.hca,
        function: F1,
    };
    port.write(doorbell::SQ, Width::U32, db(e1.qpn, 1));
    port.write(doorbell::SQ, Width::U16, 1);
    assert_eq!(rig.hca.stats().bad_doorbells.get(), cases.len() as u64 + 2);
    assert_eq!(rig.process(), 0, "no doorbell got through");
    assert!(rig.sent.is_empty());
    assert!(rig.mem.writes.is_empty());
    assert_eq!(rig.hca.cq(e2.cq).unwrap().ci, 0);
    assert_eq!(rig.hca.cq(e2.cq).unwrap().armed, None);
    // The honest doorbell works.
    rig.ring_sq(F1, e1.qpn, 1);
    assert_eq!(rig.process(), 1);
    assert_eq!(rig.hca.stats().bad_doorbells.get(), cases.len() as u64 + 2);
}

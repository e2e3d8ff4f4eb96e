//! Property tests: arbitrary sequences of hostile frames (raw bytes and
//! frames built from arbitrary header fields that pass the parser),
//! doorbells, WQE bytes, commands, processing and timers never panic,
//! never write memory outside the registered regions and the CQ rings, and
//! keep every queue bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::*;
use iovirt_core::Gpa;
use iovirt_hca::mr::{Access, MrMode};
use iovirt_hca::qp::{AddressVector, PathMtu, QpAttr, QpState, QpType, Ring};
use iovirt_hca::wire::{Aeth, AethSyndrome, Deth, Opcode, Reth};
use iovirt_hca::{Command, FunctionId, HcaConfig, Mkey, MkeySpec, Pdn, Qpn, Reply};
use proptest::prelude::*;

const UNMAPPED: u64 = 0x7_0000_0000;
/// Opcodes that get far into the transport when the rest fits.
const USEFUL: [Opcode; 8] = [
    Opcode::RC_SEND_ONLY,
    Opcode::RC_RDMA_WRITE_ONLY,
    Opcode::RC_RDMA_READ_REQUEST,
    Opcode::UC_RDMA_WRITE_ONLY,
    Opcode::UD_SEND_ONLY,
    Opcode::RC_ACKNOWLEDGE,
    Opcode::RC_RDMA_READ_RESPONSE_ONLY,
    Opcode::RC_RDMA_WRITE_FIRST,
];
const RWR: Access = Access::LOCAL_WRITE
    .union(Access::REMOTE_WRITE)
    .union(Access::REMOTE_READ);

/// What the sequence knows of the objects it made.
#[derive(Default)]
struct Known {
    keys: Vec<Mkey>,
    qps: Vec<Qpn>,
    cqs: Vec<iovirt_hca::Cqn>,
    pds: Vec<Pdn>,
}

fn pick<T: Copy>(v: &[T], sel: u8, fallback: T) -> T {
    if v.is_empty() || sel >= 200 {
        fallback
    } else {
        v[usize::from(sel) % v.len()]
    }
}

#[derive(Debug, Clone)]
enum Op {
    Raw(Vec<u8>),
    Frame {
        to_f2: bool,
        opcode: u8,
        qp: u8,
        psn: u32,
        key: u8,
        va: u64,
        len: u32,
        payload: u16,
        syndrome: u8,
        qkey: bool,
    },
    Loopback,
    Doorbell {
        f2: bool,
        reg: u64,
        qp: u8,
        low: u64,
    },
    Wqe {
        f2: bool,
        send: bool,
        index: u8,
        bytes: Vec<u8>,
        key: u8,
        off: u64,
    },
    Cmd {
        f2: bool,
        kind: u8,
        a: u8,
        b: u8,
        x: u64,
        y: u64,
    },
    Process,
    Timers(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(Op::Raw),
        (
            any::<bool>(),
            any::<u8>(),
            any::<u8>(),
            prop_oneof![3 => 0u32..3, 1 => any::<u32>()],
            any::<u8>(),
            prop_oneof![0u64..0x5000, any::<u64>()],
            prop_oneof![0u32..0x3000, any::<u32>()],
            prop_oneof![0u16..64, Just(1024u16), 0u16..1400],
            any::<u8>(),
            any::<bool>(),
        )
            .prop_map(
                |(to_f2, opcode, qp, psn, key, va, len, payload, syndrome, qkey)| Op::Frame {
                    to_f2,
                    opcode,
                    qp,
                    psn,
                    key,
                    va,
                    len,
                    payload,
                    syndrome,
                    qkey,
                }
            ),
        Just(Op::Loopback),
        (
            any::<bool>(),
            prop_oneof![Just(0u64), Just(8), Just(0x10), Just(0x18), any::<u64>()],
            any::<u8>(),
            prop_oneof![0u64..20, any::<u64>()],
        )
            .prop_map(|(f2, reg, qp, low)| Op::Doorbell { f2, reg, qp, low }),
        (
            any::<bool>(),
            any::<bool>(),
            any::<u8>(),
            proptest::collection::vec(any::<u8>(), 64),
            any::<u8>(),
            0u64..0x5000,
        )
            .prop_map(|(f2, send, index, bytes, key, off)| Op::Wqe {
                f2,
                send,
                index,
                bytes,
                key,
                off,
            }),
        (
            any::<bool>(),
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(f2, kind, a, b, x, y)| Op::Cmd {
                f2,
                kind,
                a,
                b,
                x,
                y
            }),
        Just(Op::Process),
        (0u32..5_000_000).prop_map(Op::Timers),
    ]
}

fn setup() -> (Rig, [Known; 2]) {
    let mut rig = Rig::with_config(HcaConfig {
        hold_threshold_ns: 50_000,
        hold_buffer_packets: 3,
        event_queue_depth: 6,
        ..Rig::new().hca.config().to_owned()
    });
    rig.oracle_ns = Some(20_000);
    let mut known = [Known::default(), Known::default()];
    let mut rc = [Qpn::from_wire(0); 2];
    for (i, f) in [F1, F2].into_iter().enumerate() {
        let k = &mut known[i];
        let pd = rig.pd(f);
        let cq = rig.cq(f, 5);
        k.keys.push(rig.mr(f, pd, RWR));
        // On demand, half present; and implicit with one page.
        let odp = rig.mkey(f, pd, VA, 2 * PAGE, RWR, MrMode::OnDemand);
        rig.exec(
            f,
            Command::WriteMtt {
                mkey: odp,
                va: VA,
                pages: vec![Some(Gpa::new(DATA_GPA + 2 * PAGE))],
                prefetch: false,
            },
        )
        .unwrap();
        let imp = rig.mkey(f, pd, 0, u64::MAX, RWR, MrMode::Implicit);
        rig.exec(
            f,
            Command::WriteMtt {
                mkey: imp,
                va: VA,
                pages: vec![Some(Gpa::new(DATA_GPA + 3 * PAGE))],
                prefetch: false,
            },
        )
        .unwrap();
        k.keys.extend([odp, imp]);
        for t in [QpType::Rc, QpType::Uc, QpType::Ud] {
            let q = rig.qp(f, t, pd, cq);
            k.qps.push(q);
            if t == QpType::Rc {
                rc[i] = q;
            }
        }
        rig.exec(
            f,
            Command::CreateAh(AddressVector {
                dmac: PEER_MAC,
                dip: ip(if i == 0 { F2 } else { F1 }),
            }),
        )
        .unwrap();
        k.pds.push(pd);
        k.cqs.push(cq);
    }
    // RC and UC of each function talk to the other's; UD is open.
    for (i, f) in [F1, F2].into_iter().enumerate() {
        let other = 1 - i;
        let dip = ip(if i == 0 { F2 } else { F1 });
        let (rc_q, uc_q, ud_q) = (known[i].qps[0], known[i].qps[1], known[i].qps[2]);
        rig.connect_to(f, rc_q, QpType::Rc, RWR, rc[other], dip);
        rig.connect_to(
            f,
            uc_q,
            QpType::Uc,
            RWR - Access::REMOTE_READ,
            known[other].qps[1],
            dip,
        );
        rig.connect(f, ud_q, QpType::Ud, RWR);
    }
    (rig, known)
}

fn apply(rig: &mut Rig, known: &mut [Known; 2], op: Op) {
    match op {
        Op::Raw(bytes) => rig.rx(&bytes),
        Op::Frame {
            to_f2,
            opcode,
            qp,
            psn,
            key,
            va,
            len,
            payload,
            syndrome,
            qkey,
        } => {
            let (f, k) = if to_f2 {
                (F2, &known[1])
            } else {
                (F1, &known[0])
            };
            let op = if opcode < 128 {
                Opcode::ALL[usize::from(opcode) % Opcode::ALL.len()]
            } else {
                USEFUL[usize::from(opcode) % USEFUL.len()]
            };
            let n = if op.has_payload() {
                usize::from(payload)
            } else {
                0
            };
            // Often the length the payload really has, so that data lands.
            let len = if len.is_multiple_of(4) { n as u32 } else { len };
            // Mostly the function's QP of the opcode's transport (the
            // first three QPs are its RC, UC and UD ones).
            let t = match op.transport() {
                Some(iovirt_hca::wire::Transport::Uc) => 1,
                Some(iovirt_hca::wire::Transport::Ud) => 2,
                _ => 0,
            };
            let qpn = if qp < 160 {
                k.qps[t]
            } else {
                pick(&k.qps, qp, Qpn::from_wire(u32::from(qp) << 4))
            };
            let mut h = hdr(f, op, qpn, psn & 0xff_ffff);
            let key = pick(&k.keys, key, Mkey(u32::from(key)));
            let va = if va < 0x5000 { VA + va - 0x800 } else { va };
            if op.has_reth() {
                h.reth = Some(Reth {
                    va,
                    rkey: key.0,
                    dma_len: len,
                });
            }
            if op.has_aeth() {
                h.aeth = Some(Aeth {
                    syndrome: AethSyndrome::from_raw(syndrome),
                    msn: 0,
                });
            }
            if op.has_deth() {
                h.deth = Some(Deth {
                    qkey: if qkey { 0x1111 } else { len },
                    src_qp: 9,
                });
            }
            if op.has_immdt() {
                h.immediate = Some(len);
            }
            if op.has_atomic_ack_eth() {
                h.atomic_ack = Some(va);
            }
            let mut out = Vec::new();
            if h.emit(&vec![0xa5; n], &mut out).is_ok() {
                rig.rx(&out);
            }
        }
        Op::Loopback => {
            let frames = std::mem::take(&mut rig.sent);
            for f in frames.iter().take(64) {
                rig.rx(f);
            }
        }
        Op::Doorbell { f2, reg, qp, low } => {
            let (f, k) = if f2 { (F2, &known[1]) } else { (F1, &known[0]) };
            let id = match reg {
                0x10 | 0x18 => pick(&k.cqs, qp, iovirt_hca::Cqn(u32::from(qp))).0,
                _ => pick(&k.qps, qp, Qpn::from_wire(u32::from(qp))).raw(),
            };
            rig.hca
                .doorbell(f, reg, (u64::from(id) << 32) | (low & 0xffff_ffff));
        }
        Op::Wqe {
            f2,
            send,
            index,
            mut bytes,
            key,
            off,
        } => {
            let (f, k) = if f2 { (F2, &known[1]) } else { (F1, &known[0]) };
            // Make the scatter/gather entries semi-valid: a known key, an
            // address near the regions; the rest stays arbitrary.
            let key = pick(&k.keys, key, Mkey(u32::from(key)));
            let first = if send { 32 } else { 0 };
            let sges = if send { 2 } else { 4 };
            for s in 0..sges {
                let at = first + s * 16;
                if bytes[at] & 1 == 0 {
                    bytes[at..at + 8].copy_from_slice(&(VA + off).to_le_bytes());
                    let len = u32::from(bytes[at + 9]) * 17;
                    bytes[at + 8..at + 12].copy_from_slice(&len.to_le_bytes());
                    bytes[at + 12..at + 16].copy_from_slice(&key.0.to_le_bytes());
                }
            }
            if send {
                bytes[0] %= 6;
                bytes[2] %= 4;
                bytes[24..28].copy_from_slice(&key.0.to_le_bytes());
            }
            let base = if send { SQ_BASE } else { RQ_BASE };
            let at = base + u64::from(index % 16) * 64;
            rig.mem.poke(gvmi(f), at, &bytes);
        }
        Op::Cmd {
            f2,
            kind,
            a,
            b,
            x,
            y,
        } => {
            let (f, i) = if f2 { (F2, 1) } else { (F1, 0) };
            let cmd = command(&known[i], kind, a, b, x, y);
            let reply = rig.exec(f, cmd);
            let k = &mut known[i];
            match reply {
                Ok(Reply::Mkey(m)) => k.keys.push(m),
                Ok(Reply::Qp(q)) => k.qps.push(q),
                Ok(Reply::Cq(c)) => k.cqs.push(c),
                Ok(Reply::Pd(p)) => k.pds.push(p),
                _ => {}
            }
        }
        Op::Process => {
            let before = rig.sent.len();
            let n = rig.with_env(|h, env| h.process(env, 64));
            assert!(n <= 64);
            assert_eq!(rig.sent.len() - before, n, "process counts what it sends");
        }
        Op::Timers(dt) => {
            let t = rig.now + u64::from(dt);
            rig.timers_at(t);
        }
    }
    // The wire is the platform's: keep the test's copy short.
    if rig.sent.len() > 256 {
        rig.sent.drain(..128);
    }
}

fn command(k: &Known, kind: u8, a: u8, b: u8, x: u64, y: u64) -> Command {
    let pd = pick(&k.pds, a, Pdn(u32::from(a)));
    let cq = pick(&k.cqs, b, iovirt_hca::Cqn(u32::from(b)));
    let qpn = pick(&k.qps, a, Qpn::from_wire(u32::from(a)));
    let key = pick(&k.keys, b, Mkey(u32::from(b) << 8));
    let base = |sel: u64| {
        Gpa::new(match sel % 4 {
            0 => SQ_BASE,
            1 => RQ_BASE,
            2 => UNMAPPED,
            _ => FORBIDDEN_GPA,
        })
    };
    match kind % 14 {
        0 => Command::AllocPd,
        1 => Command::DeallocPd(pd),
        2 => Command::CreateMkey(MkeySpec {
            pd,
            start: if x.is_multiple_of(3) { VA } else { x },
            length: if y.is_multiple_of(3) { y % 0x9000 } else { y },
            access: Access::from_bits_truncate(b.into()),
            mode: [MrMode::Pinned, MrMode::OnDemand, MrMode::Implicit][usize::from(a % 3)],
            variant: a,
        }),
        3 => Command::DestroyMkey(key),
        4 => Command::WriteMtt {
            mkey: key,
            va: if x.is_multiple_of(2) {
                VA + x % 0x6000
            } else {
                x
            },
            pages: (0..(y % 7))
                .map(|i| !(i + y).is_multiple_of(5))
                .map(|on| on.then(|| Gpa::new(DATA_GPA + (x >> 8) % REGION_PAGES * PAGE)))
                .collect(),
            prefetch: a & 1 == 0,
        },
        5 => Command::CreateCq(Ring {
            base: Gpa::new(if x.is_multiple_of(3) {
                UNMAPPED
            } else {
                CQ_BASE
            }),
            log_size: b % 9,
        }),
        6 => Command::DestroyCq(cq),
        7 => Command::CreateQp {
            qp_type: [QpType::Rc, QpType::Uc, QpType::Ud][usize::from(a % 3)],
            pd,
            send_cq: cq,
            recv_cq: pick(&k.cqs, b / 2, cq),
            sq: Ring {
                base: base(x),
                log_size: (y % 9) as u8,
            },
            rq: Ring {
                base: base(x >> 8),
                log_size: (y >> 8) as u8 % 9,
            },
        },
        8 => Command::ModifyQp {
            qpn,
            state: [
                QpState::Reset,
                QpState::Init,
                QpState::Rtr,
                QpState::Rts,
                QpState::Sqe,
                QpState::Err,
            ][usize::from(b % 6)],
            attr: attr(x, y),
        },
        9 => Command::DestroyQp(qpn),
        10 => Command::ResumePageFault((x % 40) as u32),
        11 => Command::PollEvent,
        12 => Command::CreateAh(AddressVector {
            dmac: PEER_MAC,
            dip: [PEER_IP, ip(F1), ip(F2)][(x % 3) as usize],
        }),
        _ => Command::ResumePageFault(x as u32),
    }
}

fn attr(x: u64, y: u64) -> QpAttr {
    let on = |bit: u64| x >> bit & 1 == 1;
    let byte = |i: u32| (y >> (i * 8)) as u8;
    QpAttr {
        access: on(0).then(|| Access::from_bits_truncate(u32::from(byte(0)))),
        qkey: on(1).then_some(0x1111),
        dest_qpn: on(2).then(|| Qpn::from_wire(u32::from(byte(1)))),
        av: on(3).then_some(AddressVector {
            dmac: PEER_MAC,
            dip: [PEER_IP, ip(F1), ip(F2)][usize::from(byte(2) % 3)],
        }),
        path_mtu: on(4).then(|| {
            [
                PathMtu::Mtu256,
                PathMtu::Mtu512,
                PathMtu::Mtu1024,
                PathMtu::Mtu2048,
                PathMtu::Mtu4096,
            ][usize::from(byte(3) % 5)]
        }),
        rq_psn: on(5).then_some((y >> 32) as u32 & 0x1ff_ffff),
        sq_psn: on(6).then_some((y >> 40) as u32 & 0x1ff_ffff),
        timeout: on(7).then(|| byte(4) % 40),
        retry_cnt: on(8).then(|| byte(5) % 9),
        rnr_retry: on(9).then(|| byte(6) % 9),
        min_rnr_timer: on(10).then(|| byte(7) % 40),
        max_rd_atomic: on(11).then(|| byte(7)),
    }
}

fn check_invariants(rig: &Rig) {
    let outside = rig.mem.writes_outside(&rig.allowed());
    assert!(
        outside.is_empty(),
        "writes outside regions and rings: {outside:?}"
    );
    let depth = rig.hca.config().event_queue_depth;
    for f in [F1, F2, FunctionId::PF] {
        assert!(rig.hca.pending_events(f) <= depth);
    }
    let s = rig.hca.stats();
    assert!(s.rx_malformed.get() + s.rx_unknown_qp.get() <= s.rx_packets.get());
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn hostile_sequences_never_panic_write_outside_or_grow(ops in proptest::collection::vec(op(), 1..120)) {
        let (mut rig, mut known) = setup();
        for op in ops {
            apply(&mut rig, &mut known, op);
            check_invariants(&rig);
        }
        // Drain: a bounded number of rounds settles everything.
        for _ in 0..4 {
            let t = rig.now + 10_000_000;
            rig.timers_at(t);
            rig.process();
            let frames = std::mem::take(&mut rig.sent);
            for f in &frames {
                rig.rx(f);
            }
            check_invariants(&rig);
        }
    }
}

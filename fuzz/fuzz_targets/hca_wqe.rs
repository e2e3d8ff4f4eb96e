//! The HCA under hostile guest work: arbitrary bytes written into the send
//! and receive queues of RC, UC and UD QPs, arbitrary doorbells, commands
//! with arbitrary fields, processing, timers and the two functions' traffic
//! looped back. Nothing may panic, write outside the regions and CQ rings,
//! or grow without bound.

#![no_main]

#[allow(dead_code)]
#[path = "hca_rig.rs"]
mod hca_rig;

use arbitrary::{Arbitrary, Unstructured};
use hca_rig::{CQ_BASE, DATA, FUNCS, PAGE, RQ_BASE, Rig, SQ_BASE, VA, gvmi};
use iovirt_core::Gpa;
use iovirt_hca::mr::{Access, MrMode};
use iovirt_hca::qp::{AddressVector, QpAttr, QpState, QpType, Ring};
use iovirt_hca::{Command, Cqn, Mkey, MkeySpec, Pdn, Qpn};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Step {
    /// 64 bytes into slot `slot` of QP `qp`'s send (or receive) queue;
    /// `key` (when given) patches the SGE keys to one of the function's.
    Wqe {
        f2: bool,
        send: bool,
        qp: u8,
        slot: u8,
        bytes: [u8; 64],
        key: Option<u8>,
    },
    Doorbell {
        f2: bool,
        reg: u16,
        id: u8,
        raw_id: Option<u32>,
        low: u32,
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
    Loopback,
}

fn pick<T: Copy>(v: &[T], sel: u8, or: T) -> T {
    if v.is_empty() || sel >= 200 {
        or
    } else {
        v[usize::from(sel) % v.len()]
    }
}

fn command(rig: &Rig, i: usize, kind: u8, a: u8, b: u8, x: u64, y: u64) -> Command {
    let pd = Pdn(u32::from(a % 10));
    let cq = pick(&rig.cqs[i], b, Cqn(u32::from(b)));
    let qpn = pick(&rig.qps[i], a, Qpn::from_wire(u32::from(a)));
    let key = pick(&rig.keys[i], b, Mkey(u32::from(b) << 8 | 7));
    let base = |s: u64| {
        Gpa::new([SQ_BASE, RQ_BASE, 0x7_0000_0000, hca_rig::FORBIDDEN, x][(s % 5) as usize])
    };
    let states = [
        QpState::Reset,
        QpState::Init,
        QpState::Rtr,
        QpState::Rts,
        QpState::Sqe,
        QpState::Err,
    ];
    match kind % 13 {
        0 => Command::AllocPd,
        1 => Command::DeallocPd(pd),
        2 => Command::CreateMkey(MkeySpec {
            pd,
            start: if x & 1 == 0 { VA } else { x },
            length: if y & 1 == 0 { y % 0x9000 } else { y },
            access: Access::from_bits_truncate(b.into()),
            mode: [MrMode::Pinned, MrMode::OnDemand, MrMode::Implicit][usize::from(a % 3)],
            variant: a,
        }),
        3 => Command::DestroyMkey(key),
        4 => Command::WriteMtt {
            mkey: key,
            va: if x & 1 == 0 { VA + x % 0x6000 } else { x },
            pages: (0..y % 9)
                .map(|j| ((y >> j) & 1 == 1).then(|| Gpa::new(DATA + (x >> 4) % 4 * PAGE)))
                .collect(),
            prefetch: a & 1 == 0,
        },
        5 => Command::CreateCq(Ring {
            base: Gpa::new(if x & 1 == 0 { CQ_BASE } else { 0x7_0000_0000 }),
            log_size: b,
        }),
        6 => Command::DestroyCq(cq),
        7 => Command::CreateQp {
            qp_type: [QpType::Rc, QpType::Uc, QpType::Ud][usize::from(a % 3)],
            pd,
            send_cq: cq,
            recv_cq: cq,
            sq: Ring {
                base: base(x),
                log_size: y as u8,
            },
            rq: Ring {
                base: base(x >> 3),
                log_size: (y >> 8) as u8,
            },
        },
        8 => Command::ModifyQp {
            qpn,
            state: states[usize::from(b) % states.len()],
            attr: QpAttr {
                access: (x & 1 == 1).then(|| Access::from_bits_truncate(y as u32)),
                qkey: (x & 2 == 2).then_some(y as u32),
                dest_qpn: (x & 4 == 4).then(|| Qpn::from_wire((y >> 8) as u32)),
                av: (x & 8 == 8).then_some(AddressVector {
                    dmac: [2; 6],
                    dip: [10, 0, 0, (y >> 16) as u8],
                }),
                rq_psn: (x & 16 == 16).then_some((y >> 24) as u32),
                sq_psn: (x & 32 == 32).then_some((y >> 32) as u32),
                timeout: (x & 64 == 64).then_some((y >> 40) as u8),
                retry_cnt: (x & 128 == 128).then_some((y >> 48) as u8),
                rnr_retry: (x & 256 == 256).then_some((y >> 56) as u8),
                min_rnr_timer: (x & 512 == 512).then_some((x >> 16) as u8),
                max_rd_atomic: (x & 1024 == 1024).then_some((x >> 24) as u8),
                path_mtu: None,
            },
        },
        9 => Command::DestroyQp(qpn),
        10 => Command::ResumePageFault(x as u32 % 64),
        11 => Command::PollEvent,
        _ => Command::CreateAh(AddressVector {
            dmac: [2; 6],
            dip: [10, 0, 0, a % 4],
        }),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut rig = Rig::new();
    let mut steps = 0;
    while !u.is_empty() && steps < 200 {
        steps += 1;
        let Ok(step) = Step::arbitrary(&mut u) else {
            break;
        };
        match step {
            Step::Wqe {
                f2,
                send,
                qp,
                slot,
                mut bytes,
                key,
            } => {
                let i = usize::from(f2);
                let j = usize::from(qp % 3);
                if let Some(k) = key {
                    let k = pick(&rig.keys[i], k, Mkey(u32::from(k))).0.to_le_bytes();
                    let (first, n) = if send { (32, 2) } else { (0, 4) };
                    for s in 0..n {
                        bytes[first + s * 16 + 12..first + s * 16 + 16].copy_from_slice(&k);
                    }
                    if send {
                        bytes[24..28].copy_from_slice(&k);
                    }
                }
                let base = if send { SQ_BASE } else { RQ_BASE };
                let at = base + 0x400 * j as u64 + u64::from(slot % 16) * 64;
                rig.mem.poke(gvmi(FUNCS[i]), at, &bytes);
            }
            Step::Doorbell {
                f2,
                reg,
                id,
                raw_id,
                low,
            } => {
                let i = usize::from(f2);
                let id = raw_id.unwrap_or(match reg & 0x18 {
                    0x10 | 0x18 => pick(&rig.cqs[i], id, Cqn(u32::from(id))).0,
                    _ => pick(&rig.qps[i], id, Qpn::from_wire(u32::from(id))).raw(),
                });
                let reg = if reg & 0x8000 == 0 {
                    u64::from(reg & 0x18)
                } else {
                    u64::from(reg)
                };
                rig.hca
                    .doorbell(FUNCS[i], reg, (u64::from(id) << 32) | u64::from(low));
            }
            Step::Cmd {
                f2,
                kind,
                a,
                b,
                x,
                y,
            } => {
                let i = usize::from(f2);
                let cmd = command(&rig, i, kind, a, b, x, y);
                match rig.hca.execute(FUNCS[i], cmd) {
                    Ok(iovirt_hca::Reply::Mkey(k)) => rig.keys[i].push(k),
                    Ok(iovirt_hca::Reply::Qp(q)) => rig.qps[i].push(q),
                    Ok(iovirt_hca::Reply::Cq(c)) => rig.cqs[i].push(c),
                    _ => {}
                }
            }
            Step::Process => rig.process(),
            Step::Timers(dt) => rig.timers(u64::from(dt)),
            Step::Loopback => rig.loopback(),
        }
        rig.check();
    }
});

//! The HCA under hostile frames from the wire: arbitrary bytes, and frames
//! built from arbitrary header fields (with a valid ICRC, so they get past
//! the parser) into RC, UC and UD QPs with registered regions, between
//! processing, timers and the HCA's own traffic looped back. Nothing may
//! panic, write outside the regions and CQ rings, or grow without bound.

#![no_main]

#[allow(dead_code)]
#[path = "hca_rig.rs"]
mod hca_rig;

use arbitrary::{Arbitrary, Unstructured};
use hca_rig::{FUNCS, Rig, VA, ip};
use iovirt_hca::Mkey;
use iovirt_hca::wire::{Aeth, AethSyndrome, BthRepr, Deth, Opcode, Psn, Reth, RoceHeaders};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Fields {
    to_f2: bool,
    opcode: u8,
    qp: u8,
    psn: u32,
    ack_req: bool,
    solicited: bool,
    key: u8,
    va: u16,
    far_va: Option<u64>,
    dma_len: Option<u32>,
    syndrome: u8,
    msn: u32,
    qkey_ok: bool,
    imm: u32,
    payload: u16,
    fill: u8,
}

#[derive(Arbitrary, Debug)]
enum Step {
    Raw(Vec<u8>),
    Built(Fields),
    Process,
    Timers(u32),
    Loopback,
    Resume(u8),
}

fn build(rig: &Rig, x: &Fields) -> Option<Vec<u8>> {
    let i = usize::from(x.to_f2);
    let op = Opcode::ALL[usize::from(x.opcode) % Opcode::ALL.len()];
    let qps = &rig.qps[i];
    let qpn = if x.qp < 200 {
        qps[usize::from(x.qp) % qps.len()].raw()
    } else {
        u32::from(x.qp)
    };
    let mut bth = BthRepr::new(op, qpn, Psn::new(x.psn & 0xff_ffff));
    bth.ack_req = x.ack_req;
    bth.solicited = x.solicited;
    let mut h = RoceHeaders::new(bth);
    h.src_ip = ip(FUNCS[1 - i]).into();
    h.dst_ip = ip(FUNCS[i]).into();
    let keys = &rig.keys[i];
    let key = if x.key < 200 {
        keys[usize::from(x.key) % keys.len()]
    } else {
        Mkey(u32::from(x.key))
    };
    let n = if op.has_payload() {
        usize::from(x.payload % 2100)
    } else {
        0
    };
    if op.has_reth() {
        h.reth = Some(Reth {
            va: x.far_va.unwrap_or(VA + u64::from(x.va)),
            rkey: key.0,
            dma_len: x.dma_len.unwrap_or(n as u32),
        });
    }
    if op.has_aeth() {
        h.aeth = Some(Aeth {
            syndrome: AethSyndrome::from_raw(x.syndrome),
            msn: x.msn & 0xff_ffff,
        });
    }
    if op.has_deth() {
        h.deth = Some(Deth {
            qkey: if x.qkey_ok { 0x1111 } else { x.imm },
            src_qp: x.msn & 0xff_ffff,
        });
    }
    if op.has_immdt() {
        h.immediate = Some(x.imm);
    }
    if op.has_atomic_ack_eth() {
        h.atomic_ack = Some(u64::from(x.imm));
    }
    let mut out = Vec::new();
    h.emit(&vec![x.fill; n], &mut out).ok()?;
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut rig = Rig::new();
    // Receive WQEs and send work posted honestly, so that data can land.
    for i in 0..2 {
        for (j, q) in rig.qps[i].clone().into_iter().enumerate() {
            let mut wqe = [0u8; 64];
            wqe[..8].copy_from_slice(&(VA + 0x800 * j as u64).to_le_bytes());
            wqe[8..12].copy_from_slice(&0x800u32.to_le_bytes());
            wqe[12..16].copy_from_slice(&rig.keys[i][0].0.to_le_bytes());
            for slot in 0..4u64 {
                let at = hca_rig::RQ_BASE + 0x400 * j as u64 + slot * 64;
                rig.mem.poke(hca_rig::gvmi(FUNCS[i]), at, &wqe);
            }
            rig.hca.doorbell(
                FUNCS[i],
                iovirt_hca::doorbell::RQ,
                (u64::from(q.raw()) << 32) | 4,
            );
        }
    }
    let mut steps = 0;
    while !u.is_empty() && steps < 200 {
        steps += 1;
        let Ok(step) = Step::arbitrary(&mut u) else {
            break;
        };
        match step {
            Step::Raw(bytes) => rig.rx(&bytes),
            Step::Built(fields) => {
                if let Some(frame) = build(&rig, &fields) {
                    rig.rx(&frame);
                }
            }
            Step::Process => rig.process(),
            Step::Timers(dt) => rig.timers(u64::from(dt)),
            Step::Loopback => rig.loopback(),
            Step::Resume(token) => {
                let _ = rig.hca.execute(
                    FUNCS[usize::from(token & 1)],
                    iovirt_hca::Command::ResumePageFault(u32::from(token >> 1)),
                );
                let _ = rig.hca.execute(
                    iovirt_hca::FunctionId::PF,
                    iovirt_hca::Command::ResumePageFault(u32::from(token >> 1)),
                );
            }
        }
        rig.check();
    }
});

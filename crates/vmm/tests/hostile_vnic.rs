//! A hostile guest on its vNIC does not disturb the other VM's traffic:
//! VM A writes garbage into its vNIC's registers and its own rings while
//! frames for both VMs arrive from the wire and VM B sends to A and to the
//! outside, under every demultiplexer and VM-to-VM mode. Every frame for B
//! arrives byte-exact and in order, and every frame B sends outside leaves.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::{OUTSIDE, PAGE, Rig, frame, mac};
use iovirt_core::{Gpa, RegisterAccess, Width};
use iovirt_nic::regs;
use iovirt_vmm::{DemuxMode, VmToVm};

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// One hostile act of VM A: a register write (often a ring register, with
/// values around its own rings and beyond its memory) or garbage in its
/// memory where its rings and buffers are.
fn hostile_step(r: &mut Rig, rng: &mut Rng) {
    let a = r.vms[0];
    let pick = rng.next();
    match pick % 4 {
        0 | 1 => {
            let offset = regs::IMPLEMENTED[(rng.next() % regs::IMPLEMENTED.len() as u64) as usize];
            let value = match rng.next() % 5 {
                0 => rng.next() & 0xffff_ffff,
                1 => rng.next() % 64,
                2 => PAGE * (1 + rng.next() % 40),
                3 => (2 << 20) - 16,
                _ => 0xffff_f000,
            };
            // Never a reset here: A stays hostile, not rebooting.
            if offset != regs::CTRL {
                r.net.guest(&mut r.host, a).write(offset, Width::U32, value);
            }
        }
        _ => {
            let at = PAGE * (1 + rng.next() % 48) + (rng.next() % 256) * 16;
            let words = [rng.next(), rng.next() & 0xffff_ffff_0000_ffff];
            for (i, w) in words.iter().enumerate() {
                let _ = r
                    .host
                    .write(a, Gpa::new(at + 8 * i as u64), &w.to_le_bytes());
            }
        }
    }
}

#[test]
fn a_hostile_vnic_guest_does_not_disturb_the_other_vm() {
    for demux in [DemuxMode::Copy, DemuxMode::Flip] {
        for vm_to_vm in [VmToVm::Bridge, VmToVm::Loopback, VmToVm::Crossover] {
            let mut r = Rig::new(2, demux, vm_to_vm);
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            let (mut got, mut want, mut out) = (Vec::new(), Vec::new(), Vec::new());
            for round in 0..300u32 {
                hostile_step(&mut r, &mut rng);
                let n = round as u8;
                match round % 4 {
                    0 => {
                        let f = frame(mac(1), OUTSIDE, 60 + (round as usize * 37) % 1400, n);
                        r.arrive(&f);
                        want.push(f);
                    }
                    1 => r.arrive(&frame(mac(0), OUTSIDE, 200, n)),
                    2 => r.transmit(1, &frame(mac(0), mac(1), 300, n)),
                    _ => {
                        let f = frame(OUTSIDE, mac(1), 120, n);
                        r.transmit(1, &f);
                        out.push(f);
                    }
                }
                got.extend(r.receive(1));
            }
            // A finally resets its vNIC: whatever it held is let go.
            r.net
                .guest(&mut r.host, r.vms[0])
                .write32(regs::CTRL, 1 << 26);
            r.transmit(1, &frame(OUTSIDE, mac(1), 64, 0xee));
            out.push(frame(OUTSIDE, mac(1), 64, 0xee));
            got.extend(r.receive(1));
            let label = format!("{demux:?} {vm_to_vm:?}");
            assert_eq!(got.len(), want.len(), "{label}: B's frames all arrive");
            assert!(got == want, "{label}: byte-exact, in order");
            let wire: Vec<_> = r
                .wire()
                .into_iter()
                .filter(|f| f[6..12] == mac(1))
                .collect();
            assert!(
                wire == out,
                "{label}: B's outside frames all leave, in order"
            );
            let a_faults = r.net.vnic(r.vms[0]).unwrap().stats().dma_faults.get();
            let b_faults = r.net.vnic(r.vms[1]).unwrap().stats().dma_faults.get();
            assert_eq!(b_faults, 0, "{label}");
            assert!(a_faults > 0, "{label}: A's garbage did reach its vNIC");
        }
    }
}

//! Interrupt moderation in virtual time: RDTR/RADV delay the receive
//! interrupt, FPD flushes it, TIDV delays the transmit interrupt of IDE
//! descriptors, ITR spaces interrupts out.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::{IRQ, Platform, Rig};
use iovirt_core::{Hpa, PhysMemory, SimTime, Timers};
use iovirt_nic::{RxOutcome, regs};

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 7];

/// A NIC on the shared [`Rig`], its clock kept from call to call: an RX
/// ring of 8 descriptors at 0x1000 (buffers from 0x2000), a TX ring of 8 at
/// 0x1800 (buffers from 0x8000), both enabled, causes unmasked.
fn bench() -> Rig {
    let mut b = Rig::new(MAC);
    for i in 0..8u64 {
        b.mem
            .write_u64(Hpa::new(0x1000 + i * 16), 0x2000 + i * 0x800)
            .unwrap();
        b.mem
            .write_u64(Hpa::new(0x1800 + i * 16), 0x8000 + i * 0x800)
            .unwrap();
    }
    for (reg, value) in [
        (regs::RDBAL, 0x1000),
        (regs::RDLEN, 128),
        (regs::RDT, 7),
        (regs::RCTL, (regs::Rctl::EN | regs::Rctl::BAM).bits()),
        (regs::TDBAL, 0x1800),
        (regs::TDLEN, 128),
        (regs::TCTL, regs::Tctl::EN.bits()),
        (regs::IMS, (regs::Cause::RXT0 | regs::Cause::TXDW).bits()),
    ] {
        b.write(reg, value);
    }
    b
}

/// What only the moderation tests ask of the shared [`Rig`].
impl Rig {
    /// Receives a 64-byte broadcast frame, which the NIC must store.
    fn receive_frame(&mut self) {
        let outcome = self.receive(&[0xff; 64]);
        assert!(matches!(outcome, RxOutcome::Stored { .. }), "{outcome:?}");
    }

    /// Runs the clock to `ns`, delivering every timer that expires on the way.
    fn run_to(&mut self, ns: u64) {
        while let Some(token) = self.timers.pop_until(SimTime::from_nanos(ns)) {
            self.with_env(|nic, env| nic.on_timer(token, env));
        }
    }
}

#[test]
fn without_delays_the_interrupt_is_immediate() {
    let mut b = bench();
    b.receive_frame();
    assert_eq!(b.irqs, [IRQ]);
    assert!(b.timers.is_empty());
}

#[test]
fn rdtr_delays_rxt0_until_the_line_is_quiet() {
    let mut b = bench();
    b.write(regs::RDTR, 10); // 10.24 us
    b.receive_frame();
    assert!(b.irqs.is_empty(), "delayed");
    b.run_to(5_000);
    b.receive_frame(); // restarts the packet timer: now due at 15.24 us
    b.run_to(15_000);
    assert!(b.irqs.is_empty());
    b.run_to(15_300);
    assert_eq!(b.irqs, [IRQ]);
    assert_eq!(b.nic.last_interrupt(), Some(SimTime::from_nanos(15_240)));
    assert_eq!(
        b.read(regs::ICR) & regs::Cause::RXT0.bits(),
        regs::Cause::RXT0.bits()
    );
    assert_eq!(b.nic.stats().interrupts_delayed.get(), 2);
}

#[test]
fn radv_caps_the_delay() {
    let mut b = bench();
    b.write(regs::RDTR, 10);
    b.write(regs::RADV, 20); // 20.48 us after the first frame
    for t in [0u64, 5_000, 10_000, 15_000, 20_000] {
        b.run_to(t);
        b.receive_frame();
    }
    b.run_to(20_400);
    assert!(b.irqs.is_empty());
    b.run_to(20_500);
    assert_eq!(
        b.irqs,
        [IRQ],
        "the absolute timer fired although frames kept coming"
    );
    // Both timers are disarmed: nothing more fires.
    b.read(regs::ICR);
    b.run_to(100_000);
    assert_eq!(b.irqs.len(), 1);
}

#[test]
fn fpd_flushes_the_pending_receive_interrupt() {
    let mut b = bench();
    b.write(regs::RDTR, 1000);
    b.receive_frame();
    assert!(b.irqs.is_empty());
    b.write(regs::RDTR, 1000 | (1 << 31));
    assert_eq!(b.irqs, [IRQ]);
    assert!(b.timers.is_empty());
    assert_eq!(b.read(regs::RDTR), 1000);
}

#[test]
fn tidv_delays_txdw_only_for_ide_descriptors() {
    let mut b = bench();
    b.write(regs::TIDV, 5); // 5.12 us
    let eop_rs = 0x01 | 0x08;
    // Descriptor 0 without IDE: immediate; descriptor 1 with IDE: delayed.
    b.mem
        .write_u32(Hpa::new(0x1808), 60 | (eop_rs << 24))
        .unwrap();
    b.mem
        .write_u32(Hpa::new(0x1818), 60 | ((eop_rs | 0x80) << 24))
        .unwrap();
    b.write(regs::TDT, 1);
    assert_eq!(b.irqs.len(), 1);
    b.read(regs::ICR);
    b.write(regs::TDT, 2);
    assert_eq!(b.irqs.len(), 1, "IDE: delayed");
    b.run_to(5_100);
    assert_eq!(b.irqs.len(), 1);
    b.run_to(5_200);
    assert_eq!(b.irqs.len(), 2);
    assert_eq!(
        b.read(regs::ICR) & regs::Cause::TXDW.bits(),
        regs::Cause::TXDW.bits()
    );
}

#[test]
fn itr_spaces_interrupts() {
    let mut b = bench();
    b.write(regs::ITR, 1000); // 256 us between interrupts
    b.receive_frame();
    assert_eq!(b.irqs.len(), 1);
    b.read(regs::ICR);
    b.run_to(10_000);
    b.receive_frame();
    assert_eq!(b.irqs.len(), 1, "within the interval: held back");
    assert_eq!(b.nic.stats().interrupts_throttled.get(), 1);
    b.run_to(255_000);
    assert_eq!(b.irqs.len(), 1);
    b.run_to(256_000);
    assert_eq!(b.irqs.len(), 2, "sent when the interval ended");
    assert_eq!(b.nic.last_interrupt(), Some(SimTime::from_nanos(256_000)));
    // A cause acknowledged before the interval ends sends nothing then.
    b.read(regs::ICR);
    b.run_to(300_000);
    b.receive_frame();
    b.read(regs::ICR);
    b.run_to(1_000_000);
    assert_eq!(b.irqs.len(), 2);
    assert_eq!(b.timers.now(), SimTime::from_nanos(1_000_000));
}

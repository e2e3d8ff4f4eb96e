//! The link-status-change cause: raised when the driver sets CTRL.SLU
//! (the link comes up), once per rising edge, and again after a reset.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::{IRQ, Platform, Rig};
use iovirt_nic::regs::{self, Cause, Ctrl};

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 3];

#[test]
fn setting_slu_raises_lsc_once_per_edge() {
    let mut r = Rig::new(MAC);
    r.write(regs::IMS, Cause::LSC.bits());
    r.write(regs::CTRL, Ctrl::SLU.bits());
    assert_eq!(r.read(regs::ICR), Cause::LSC.bits());
    // Writing SLU again is no change of link status.
    r.write(regs::CTRL, Ctrl::SLU.bits());
    assert_eq!(r.read(regs::ICR), 0);
    // After a reset the link comes up again.
    r.write(regs::CTRL, Ctrl::RST.bits());
    r.write(regs::IMS, Cause::LSC.bits());
    r.write(regs::CTRL, Ctrl::SLU.bits());
    assert_eq!(r.read(regs::ICR), Cause::LSC.bits());
    assert_eq!(r.irqs, [IRQ, IRQ]);
}

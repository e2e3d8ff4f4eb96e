//! The link-status-change cause: raised when the driver sets CTRL.SLU
//! (the link comes up), once per rising edge, and again after a reset.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use iovirt_core::{HostMemory, Irq, MmioDevice, PassthroughDma, TimerQueue, Width};
use iovirt_nic::{Nic, NicConfig, NicEnv, regs};

#[test]
fn setting_slu_raises_lsc_once_per_edge() {
    let mut mem = HostMemory::new(1 << 20).unwrap();
    let mut nic = Nic::new(NicConfig {
        mac: [2, 0, 0, 0, 0, 3],
        irq: Irq(4),
    });
    let (mut irqs, mut timers): (Vec<Irq>, TimerQueue) = (Vec::new(), TimerQueue::new());
    let mut net = |_: &[u8]| {};
    let mut dma = PassthroughDma::new(&mut mem);
    let mut env = NicEnv {
        dma: &mut dma,
        irq: &mut irqs,
        net: &mut net,
        timers: &mut timers,
    };
    let slu = regs::Ctrl::SLU.bits() as u64;
    nic.mmio_write(
        regs::IMS,
        Width::U32,
        regs::Cause::LSC.bits() as u64,
        &mut env,
    );
    nic.mmio_write(regs::CTRL, Width::U32, slu, &mut env);
    assert_eq!(
        nic.mmio_read(regs::ICR, Width::U32, &mut env),
        regs::Cause::LSC.bits() as u64
    );
    // Writing SLU again is no change of link status.
    nic.mmio_write(regs::CTRL, Width::U32, slu, &mut env);
    assert_eq!(nic.mmio_read(regs::ICR, Width::U32, &mut env), 0);
    // After a reset the link comes up again.
    nic.mmio_write(
        regs::CTRL,
        Width::U32,
        regs::Ctrl::RST.bits() as u64,
        &mut env,
    );
    nic.mmio_write(
        regs::IMS,
        Width::U32,
        regs::Cause::LSC.bits() as u64,
        &mut env,
    );
    nic.mmio_write(regs::CTRL, Width::U32, slu, &mut env);
    assert_eq!(
        nic.mmio_read(regs::ICR, Width::U32, &mut env),
        regs::Cause::LSC.bits() as u64
    );
    assert_eq!(irqs, [Irq(4), Irq(4)]);
}

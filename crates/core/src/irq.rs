//! Interrupt delivery.

use serde::{Deserialize, Serialize};

/// An interrupt vector (an MSI data value, or a legacy line number): what a
/// device asks to be delivered and what a hypervisor injects into a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Irq(pub u32);

/// Where a device's interrupts go.
///
/// Implemented by the platform (which records the interrupt and schedules
/// the driver's handler), by a hypervisor injecting into a guest, and by the
/// IOMMU's fault-event path; called by devices when a cause is pending and
/// unmasked. Delivery is edge-like (message-signalled): one call, one
/// interrupt; a device that coalesces does so before calling.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait InterruptSink {
    /// Delivers `irq`.
    fn raise(&mut self, irq: Irq);
}

/// Collects every interrupt raised, in order: a sink for tests and simple
/// platforms that poll (it grows by one per interrupt; drain it).
impl InterruptSink for Vec<Irq> {
    fn raise(&mut self, irq: Irq) {
        self.push(irq);
    }
}

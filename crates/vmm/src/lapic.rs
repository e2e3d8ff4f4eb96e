//! Interrupt injection: the part of a guest's local APIC that fixed-mode
//! interrupts go through. It has 256 vectors, an interrupt request register
//! (IRR), an in-service register (ISR), and the processor-priority rule that
//! decides which pending vector the guest takes next.
//!
//! A device's MSI arrives as [`Irq`]. Its vector is the low 8 bits of the
//! MSI data, as on x86. Vectors 0 to 15 are illegal for fixed delivery: the
//! APIC drops them and sets "receive illegal vector" (bit 6) in its error
//! status register.

use iovirt_core::{Counter, InterruptSink, Irq};
use serde::Serialize;

/// "Receive illegal vector" in the error status register.
pub const ESR_RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;

/// What the APIC did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LapicStats {
    /// Interrupts that set an IRR bit.
    pub injected: Counter,
    /// Interrupts whose vector was already pending: they merge into it, as
    /// on hardware (the IRR holds one bit per vector).
    pub coalesced: Counter,
    /// Interrupts with a vector below 16, dropped.
    pub illegal_vectors: Counter,
    /// Vectors the guest took (moved from IRR to ISR).
    pub delivered: Counter,
    /// End-of-interrupt writes that retired a vector.
    pub eois: Counter,
    /// End-of-interrupt writes with nothing in service (ignored).
    pub spurious_eois: Counter,
}

/// A 256-bit vector set, one bit per vector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct VectorSet([u64; 4]);

impl VectorSet {
    fn set(&mut self, v: u8) -> bool {
        let (word, bit) = (usize::from(v >> 6), v & 63);
        let Some(w) = self.0.get_mut(word) else {
            return false;
        };
        let was = *w >> bit & 1 == 1;
        *w |= 1 << bit;
        was
    }

    fn contains(&self, v: u8) -> bool {
        self.0
            .get(usize::from(v >> 6))
            .is_some_and(|w| w >> (v & 63) & 1 == 1)
    }

    fn clear(&mut self, v: u8) {
        if let Some(w) = self.0.get_mut(usize::from(v >> 6)) {
            *w &= !(1u64 << (v & 63));
        }
    }

    /// The highest vector in the set.
    fn highest(&self) -> Option<u8> {
        self.0
            .iter()
            .enumerate()
            .rev()
            .find(|(_, w)| **w != 0)
            .map(|(i, w)| (i as u8) << 6 | (63 - w.leading_zeros() as u8))
    }
}

/// One guest CPU's local APIC, reduced to fixed-mode delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lapic {
    irr: VectorSet,
    isr: VectorSet,
    esr: u32,
    stats: LapicStats,
}

impl Lapic {
    /// An APIC with nothing pending or in service.
    pub fn new() -> Lapic {
        Lapic::default()
    }

    /// Delivers a device's interrupt: sets the IRR bit of its vector.
    pub fn inject(&mut self, irq: Irq) {
        let vector = (irq.0 & 0xff) as u8;
        if vector < 16 {
            self.esr |= ESR_RECEIVE_ILLEGAL_VECTOR;
            self.stats.illegal_vectors.inc();
            log::debug!("illegal vector {vector} (MSI data {:#x}) dropped", irq.0);
            return;
        }
        if self.irr.set(vector) {
            self.stats.coalesced.inc();
        } else {
            self.stats.injected.inc();
        }
    }

    /// The vector the guest would take now, if any: the highest pending
    /// vector whose priority class (vector / 16) is above the class of the
    /// highest vector in service.
    pub fn deliverable(&self) -> Option<u8> {
        let pending = self.irr.highest()?;
        match self.isr.highest() {
            Some(busy) if pending >> 4 <= busy >> 4 => None,
            _ => Some(pending),
        }
    }

    /// The guest takes the interrupt: the deliverable vector moves from IRR
    /// to ISR and is returned.
    pub fn acknowledge(&mut self) -> Option<u8> {
        let vector = self.deliverable()?;
        self.irr.clear(vector);
        self.isr.set(vector);
        self.stats.delivered.inc();
        Some(vector)
    }

    /// The guest's end-of-interrupt write: retires the highest vector in
    /// service and returns it.
    pub fn eoi(&mut self) -> Option<u8> {
        let Some(vector) = self.isr.highest() else {
            self.stats.spurious_eois.inc();
            return None;
        };
        self.isr.clear(vector);
        self.stats.eois.inc();
        Some(vector)
    }

    /// Whether `vector` is pending (its IRR bit).
    pub fn is_pending(&self, vector: u8) -> bool {
        self.irr.contains(vector)
    }

    /// The error status register, and clears it (as the guest's write to
    /// ESR does before reading).
    pub fn take_esr(&mut self) -> u32 {
        core::mem::take(&mut self.esr)
    }

    /// The counters.
    pub fn stats(&self) -> LapicStats {
        self.stats
    }
}

impl InterruptSink for Lapic {
    fn raise(&mut self, irq: Irq) {
        self.inject(irq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_sets_find_the_highest_across_words() {
        let mut s = VectorSet::default();
        assert_eq!(s.highest(), None);
        for v in [16, 63, 64, 200, 255] {
            assert!(!s.set(v));
            assert_eq!(s.highest(), Some(v));
        }
        assert!(s.set(64), "already set");
        assert!(s.contains(64) && !s.contains(65));
        s.clear(255);
        s.clear(200);
        assert_eq!(s.highest(), Some(64));
        s.clear(64);
        assert_eq!(s.highest(), Some(63));
    }
}

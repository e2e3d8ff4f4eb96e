//! Completion queues: a ring of CQEs in the owning function's memory, an
//! owner bit per pass, the consumer index the driver reports by doorbell,
//! and overflow detection.

use iovirt_core::{Gpa, Gvmi, GvmiDma};
use zerocopy::IntoBytes;

use crate::cqe::{CQE_SIZE, Cqe, owner_bit};
use crate::ids::{Cqn, FunctionId};
use crate::qp::Ring;

/// A completion queue's device-side state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cq {
    /// The CQ number.
    pub cqn: Cqn,
    /// The owning function.
    pub function: FunctionId,
    /// The ring in the function's memory.
    pub ring: Ring,
    /// Next entry the HCA writes (free-running).
    pub pi: u32,
    /// Entries the driver has consumed (its doorbell, free-running).
    pub ci: u32,
    /// Armed for a completion event (and solicited-only).
    pub armed: Option<bool>,
    /// In error (an overrun, or a CQE write that faulted): no further
    /// completions are written (IBTA C11-37).
    pub error: bool,
    /// QPs using this CQ (it cannot be destroyed while any do).
    pub users: u32,
}

/// What writing a completion did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CqWrite {
    /// Written; `notify` when the CQ was armed and the completion fires it.
    Written {
        /// Raise a completion event.
        notify: bool,
    },
    /// The ring was full: this completion is lost and the CQ is now in
    /// error (a CQ overrun).
    Overflow,
    /// The DMA of the CQE faulted (the driver unmapped its ring): this
    /// completion is lost and the CQ is now in error (a CQ protection error).
    DmaFault,
    /// The CQ was already in error: the completion is lost.
    InError,
}

impl Cq {
    /// A CQ over `ring`.
    pub fn new(cqn: Cqn, function: FunctionId, ring: Ring) -> Cq {
        Cq {
            cqn,
            function,
            ring,
            pi: 0,
            ci: 0,
            armed: None,
            error: false,
            users: 0,
        }
    }

    /// Completions written and not yet consumed.
    pub fn occupancy(&self) -> u32 {
        self.pi.wrapping_sub(self.ci)
    }

    /// Sets the consumer index from the driver's doorbell; a value that
    /// claims more than was produced is ignored.
    pub fn set_ci(&mut self, ci: u32) -> bool {
        if self.pi.wrapping_sub(ci) <= self.ring.entries() {
            self.ci = ci;
            true
        } else {
            false
        }
    }

    /// Writes `cqe` at the producer index through `mem` as `gvmi`.
    pub fn push(&mut self, cqe: &Cqe, gvmi: Gvmi, mem: &mut dyn GvmiDma) -> CqWrite {
        if self.error {
            return CqWrite::InError;
        }
        if self.occupancy() >= self.ring.entries() {
            self.error = true;
            return CqWrite::Overflow;
        }
        let slot = u64::from(self.pi & (self.ring.entries() - 1));
        let addr = Gpa::new(self.ring.base.raw().wrapping_add(slot * CQE_SIZE));
        let raw = cqe.layout(owner_bit(self.pi, self.ring.log_size));
        if mem.dma_write(gvmi, addr, raw.as_bytes()).is_err() {
            self.error = true;
            return CqWrite::DmaFault;
        }
        self.pi = self.pi.wrapping_add(1);
        let notify = match self.armed {
            Some(solicited_only) if !solicited_only || cqe.solicited => {
                self.armed = None;
                true
            }
            _ => false,
        };
        CqWrite::Written { notify }
    }
}

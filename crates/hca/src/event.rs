//! Asynchronous events: what the HCA reports to a function's driver
//! through its event queue (page faults, errors, completion notifications).

use iovirt_core::{AccessKind, Gpa, Gvmi};
use serde::{Deserialize, Serialize};

use crate::ids::{Cqn, Mkey, Qpn};

/// Which translation stage missed (seed 001, FIG. 4 steps 116 and 120).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FaultStage {
    /// The region's MTT has no entry: the owning VM's driver fills it.
    Guest,
    /// The GVMI's PA2MA table has no entry: the host driver (the VMM)
    /// makes the VM page present.
    Host,
}

/// A page fault the HCA hit while moving a QP's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PageFault {
    /// Names the fault in the resume command.
    pub token: u32,
    /// The QP that stopped on it.
    pub qpn: Qpn,
    /// The region.
    pub mkey: Mkey,
    /// The virtual address that missed (stage 1) or whose "physical"
    /// address missed (stage 2).
    pub va: u64,
    /// The VM-physical address that missed (stage 2 only).
    pub pa: Option<Gpa>,
    /// The GVMI of the region.
    pub gvmi: Gvmi,
    /// Read (the HCA gathers) or write (it places data).
    pub access: AccessKind,
    /// Which stage missed.
    pub stage: FaultStage,
    /// Seed 004: the host's estimate of how long the page will take, in
    /// nanoseconds, when one was given.
    pub estimate_ns: Option<u64>,
}

/// An event queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Event {
    /// A page fault to service, then resume with its token.
    PageFault(PageFault),
    /// An armed CQ received a completion.
    Completion(Cqn),
    /// A CQ went to error (an overrun, or a CQE write that faulted): the
    /// completion was lost, and no further ones are written.
    CqError(Cqn),
    /// A QP moved to the error state on its own (retries exhausted, a
    /// protection error on its queue memory, a completion its CQ could not
    /// take).
    QpFatal(Qpn),
}

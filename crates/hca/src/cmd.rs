//! The per-function command interface as a driver sees it: commands and
//! their replies as values, a [`CommandChannel`] to send them, and a
//! [`FunctionPort`] that binds one function of an [`Hca`] as both its
//! command channel and its doorbell page.

use iovirt_core::{Gpa, RegisterAccess, Width};
use serde::{Deserialize, Serialize};

use crate::device::{CmdError, Hca, MkeySpec};
use crate::event::Event;
use crate::ids::{Cqn, FunctionId, Mkey, Pdn, Qpn};
use crate::qp::{AddressVector, QpAttr, QpState, QpType, Ring};

/// A command a function's driver issues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Allocate a protection domain.
    AllocPd,
    /// Free a protection domain.
    DeallocPd(Pdn),
    /// Register a memory region.
    CreateMkey(MkeySpec),
    /// Deregister a memory region.
    DestroyMkey(Mkey),
    /// Write (or, with `None`, invalidate) translation entries of a region
    /// from the page of `va` on.
    WriteMtt {
        /// The region.
        mkey: Mkey,
        /// A virtual address in its first page.
        va: u64,
        /// One entry per page.
        pages: Vec<Option<Gpa>>,
        /// Count the filled pages as prefetched (advice).
        prefetch: bool,
    },
    /// Create a completion queue.
    CreateCq(Ring),
    /// Destroy a completion queue.
    DestroyCq(Cqn),
    /// Create an address handle.
    CreateAh(AddressVector),
    /// Create a queue pair.
    CreateQp {
        /// Transport service.
        qp_type: QpType,
        /// Protection domain.
        pd: Pdn,
        /// Send completion queue.
        send_cq: Cqn,
        /// Receive completion queue.
        recv_cq: Cqn,
        /// Send queue ring.
        sq: Ring,
        /// Receive queue ring.
        rq: Ring,
    },
    /// Modify a queue pair.
    ModifyQp {
        /// The QP.
        qpn: Qpn,
        /// The state to move to.
        state: QpState,
        /// Attributes.
        attr: QpAttr,
    },
    /// Destroy a queue pair.
    DestroyQp(Qpn),
    /// Resume after servicing a page fault.
    ResumePageFault(u32),
    /// Take the oldest event of the function's event queue.
    PollEvent,
}

/// A command's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Done, nothing to return.
    Done,
    /// A new protection domain.
    Pd(Pdn),
    /// A new memory key.
    Mkey(Mkey),
    /// A new completion queue.
    Cq(Cqn),
    /// A new address handle.
    Ah(u32),
    /// A new queue pair.
    Qp(Qpn),
    /// An event, or none pending.
    Event(Option<Event>),
}

/// How a driver reaches its function's command interface.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait CommandChannel {
    /// Executes `cmd`.
    fn command(&mut self, cmd: Command) -> Result<Reply, CmdError>;
}

impl Hca {
    /// Executes a command of function `f`.
    pub fn execute(&mut self, f: FunctionId, cmd: Command) -> Result<Reply, CmdError> {
        Ok(match cmd {
            Command::AllocPd => Reply::Pd(self.alloc_pd(f)?),
            Command::DeallocPd(pd) => {
                self.dealloc_pd(f, pd)?;
                Reply::Done
            }
            Command::CreateMkey(spec) => Reply::Mkey(self.create_mkey(f, spec)?),
            Command::DestroyMkey(k) => {
                self.destroy_mkey(f, k)?;
                Reply::Done
            }
            Command::WriteMtt {
                mkey,
                va,
                pages,
                prefetch,
            } => {
                self.write_mtt(f, mkey, va, &pages, prefetch)?;
                Reply::Done
            }
            Command::CreateCq(ring) => Reply::Cq(self.create_cq(f, ring)?),
            Command::DestroyCq(c) => {
                self.destroy_cq(f, c)?;
                Reply::Done
            }
            Command::CreateAh(av) => Reply::Ah(self.create_ah(f, av)?),
            Command::CreateQp {
                qp_type,
                pd,
                send_cq,
                recv_cq,
                sq,
                rq,
            } => Reply::Qp(self.create_qp(f, qp_type, pd, send_cq, recv_cq, sq, rq)?),
            Command::ModifyQp { qpn, state, attr } => {
                self.modify_qp(f, qpn, state, &attr)?;
                Reply::Done
            }
            Command::DestroyQp(q) => {
                self.destroy_qp(f, q)?;
                Reply::Done
            }
            Command::ResumePageFault(token) => {
                if !self.resume_page_fault(f, token) {
                    return Err(CmdError::BadResource);
                }
                Reply::Done
            }
            Command::PollEvent => Reply::Event(self.poll_event(f)),
        })
    }
}

/// One function of an HCA bound as its driver's command channel and
/// doorbell page (offsets within the page; 64-bit writes only).
pub struct FunctionPort<'a> {
    /// The HCA.
    pub hca: &'a mut Hca,
    /// The function.
    pub function: FunctionId,
}

impl CommandChannel for FunctionPort<'_> {
    fn command(&mut self, cmd: Command) -> Result<Reply, CmdError> {
        self.hca.execute(self.function, cmd)
    }
}

impl RegisterAccess for FunctionPort<'_> {
    fn read(&mut self, _offset: u64, _width: Width) -> u64 {
        0
    }

    fn write(&mut self, offset: u64, width: Width, value: u64) {
        if width == Width::U64 {
            self.hca.doorbell(self.function, offset, value);
        } else {
            self.hca.count_bad_doorbell();
        }
    }
}

//! Seed 001's two-stage access to a memory region: MKey → MPT context →
//! MTT gives the VM-physical page and the GVMI (stage 1, here); GVMI →
//! PA2MA gives the machine address (stage 2, behind [`GvmiDma`]).
//!
//! Bounds and rights are checked before any translation, and every page of
//! an access translates in both stages before a byte moves: a fault or a
//! protection error leaves memory untouched.

use iovirt_core::{AccessKind, Cost, FaultReason, Gpa, Gvmi, GvmiDma};

use crate::event::FaultStage;
use crate::ids::{FunctionId, Mkey, Pdn};
use crate::mr::{Access, MR_PAGE_SIZE, Mpt, Mtt, ProtectionError, Stage1Miss};

/// Why a region access did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Miss {
    /// Not allowed: a NAK or an error completion, never a fault.
    Protection(ProtectionError),
    /// A page is missing in one stage: a page-fault event.
    Fault {
        stage: FaultStage,
        mkey: Mkey,
        gvmi: Gvmi,
        va: u64,
        pa: Option<Gpa>,
    },
    /// Stage 2 refused for a reason other than a missing page (no GVM
    /// entry, a read-only page written, memory out of range): the VM's
    /// memory is not there to use, a protection error.
    Stage2(FaultReason),
}

/// The memory a QP's function may reach.
pub(crate) struct RegionAccess<'a> {
    pub(crate) mpt: &'a Mpt,
    pub(crate) mtt: &'a Mtt,
    pub(crate) function: FunctionId,
    pub(crate) pd: Pdn,
}

/// A copy between a region and a buffer.
pub(crate) enum Dir<'b> {
    /// Region → buffer (gather).
    Read(&'b mut [u8]),
    /// Buffer → region (scatter).
    Write(&'b [u8]),
}

impl RegionAccess<'_> {
    /// Copies between `[va, va + len)` of region `key` and the buffer,
    /// which gives the length. `need` is the right the access uses.
    pub(crate) fn copy(
        &self,
        mem: &mut dyn GvmiDma,
        key: Mkey,
        va: u64,
        need: Access,
        dir: Dir<'_>,
    ) -> Result<Cost, Miss> {
        let (len, kind) = match &dir {
            Dir::Read(b) => (b.len(), AccessKind::Read),
            Dir::Write(b) => (b.len(), AccessKind::Write),
        };
        let ctx = self
            .mpt
            .check(key, self.function, self.pd, va, len as u64, need)
            .map_err(Miss::Protection)?;
        if len == 0 {
            return Ok(Cost::ZERO);
        }
        let gvmi = ctx.gvmi;
        let stage1 = |a: u64| {
            self.mtt.translate(ctx, a).map_err(|m| match m {
                Stage1Miss::Protection(p) => Miss::Protection(p),
                Stage1Miss::NotPresent { va } => Miss::Fault {
                    stage: FaultStage::Guest,
                    mkey: key,
                    gvmi,
                    va,
                    pa: None,
                },
            })
        };
        let stage2 = |e: iovirt_core::DmaFault, a: u64| match e.reason {
            FaultReason::NotPresent => Miss::Fault {
                stage: FaultStage::Host,
                mkey: key,
                gvmi,
                // The fault names the VM-physical byte that missed, in the
                // page of `a`: the same offset in the virtual page.
                va: a - a % MR_PAGE_SIZE + e.addr.raw() % MR_PAGE_SIZE,
                pa: Some(Gpa::new(e.addr.raw())),
            },
            r => Miss::Stage2(r),
        };
        let end = va + len as u64;
        let first_room = MR_PAGE_SIZE - va % MR_PAGE_SIZE;
        let mut cost = Cost::ZERO;
        if len as u64 > first_room {
            // Several pages: both stages of every page first, then the bytes.
            let mut a = va;
            while a < end {
                let pa = stage1(a)?;
                cost += mem.probe(gvmi, pa, kind).map_err(|e| stage2(e, a))?;
                // The top page of the address space (an implicit region)
                // has no next page: stop there instead of overflowing
                // (a panic, or in release a wrap to 0 and an endless loop).
                match (a / MR_PAGE_SIZE + 1).checked_mul(MR_PAGE_SIZE) {
                    Some(next) => a = next,
                    None => break,
                }
            }
        }
        let mut a = va;
        let mut done = 0usize;
        let mut dir = dir;
        while a < end {
            let n = ((MR_PAGE_SIZE - a % MR_PAGE_SIZE).min(end - a)) as usize;
            let pa = stage1(a)?;
            let r = match &mut dir {
                Dir::Read(b) => match b.get_mut(done..done + n) {
                    Some(piece) => mem.dma_read(gvmi, pa, piece),
                    None => break,
                },
                Dir::Write(b) => match b.get(done..done + n) {
                    Some(piece) => mem.dma_write(gvmi, pa, piece),
                    None => break,
                },
            };
            cost += r.map_err(|e| stage2(e, a))?;
            a += n as u64;
            done += n;
        }
        Ok(cost)
    }
}

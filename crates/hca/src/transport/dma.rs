//! Seed 001's two-stage access to a memory region: MKey → MPT context →
//! MTT gives the VM-physical page and the GVMI (stage 1, here); GVMI →
//! PA2MA gives the machine address (stage 2, behind [`GvmiDma`]).
//!
//! Bounds and rights are checked before any translation. A write into a
//! region translates every page in both stages before a byte moves, so a
//! fault or a protection error leaves the VM's memory untouched; a read
//! (gather) goes page by page, since a failure part-way only leaves bytes
//! in the HCA's own buffer, which the caller discards. Each page is
//! charged one translation either way.

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
        let checked = kind == AccessKind::Write && len as u64 > first_room;
        if checked {
            // Several pages written: both stages of every page first, then
            // the bytes. The checks are the translations charged.
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
            let moved = r.map_err(|e| stage2(e, a))?;
            if checked {
                // Translated (and charged) by the check: only the bytes count.
                cost.bytes += moved.bytes;
            } else {
                cost += moved;
            }
            a += n as u64;
            done += n;
        }
        Ok(cost)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use iovirt_core::MockGvmiDma;

    use super::*;
    use crate::mr::{MkeyContext, MrMode, MttEntry, OdpCounters};

    const START: u64 = 0x7000_0000;

    /// A pinned two-page region whose pages sit at VM-physical 0x5000 and
    /// 0x9000 (not adjacent, so a straddling access needs two translations).
    fn tables() -> (Mpt, Mtt) {
        let mut mpt = Mpt::new(4);
        mpt.insert(MkeyContext {
            key: Mkey::new(1, 7),
            function: FunctionId(1),
            pd: Pdn(1),
            gvmi: Gvmi(3),
            start: START,
            length: 2 * MR_PAGE_SIZE,
            access: Access::LOCAL_WRITE | Access::REMOTE_WRITE | Access::REMOTE_READ,
            mode: MrMode::Pinned,
            mtt_base: 0,
            mtt_pages: 2,
            counters: OdpCounters::default(),
        });
        let mut mtt = Mtt::new(2, 0);
        mtt.set(0, MttEntry::present(Gpa::new(0x5000)));
        mtt.set(1, MttEntry::present(Gpa::new(0x9000)));
        (mpt, mtt)
    }

    fn access<'a>(mpt: &'a Mpt, mtt: &'a Mtt) -> RegionAccess<'a> {
        RegionAccess {
            mpt,
            mtt,
            function: FunctionId(1),
            pd: Pdn(1),
        }
    }

    fn hit(bytes: usize) -> Cost {
        Cost {
            iotlb_hits: 1,
            bytes: bytes as u64,
            ..Cost::ZERO
        }
    }

    /// 96 bytes from 32 below the page boundary: 32 on page 0, 64 on page 1.
    const VA: u64 = START + MR_PAGE_SIZE - 32;

    #[test]
    fn a_straddling_write_checks_both_pages_first_and_is_charged_once_per_page() {
        let (mpt, mtt) = tables();
        let access = access(&mpt, &mtt);
        let mut mem = MockGvmiDma::new();
        let mut seq = mockall::Sequence::new();
        for pa in [0x5000 + MR_PAGE_SIZE - 32, 0x9000] {
            mem.expect_probe()
                .withf(move |g, p, k| *g == Gvmi(3) && p.raw() == pa && *k == AccessKind::Write)
                .times(1)
                .in_sequence(&mut seq)
                .returning(|_, _, _| Ok(hit(0)));
        }
        for (pa, n) in [(0x5000 + MR_PAGE_SIZE - 32, 32), (0x9000, 64)] {
            mem.expect_dma_write()
                .withf(move |_, p, d| p.raw() == pa && d.len() == n)
                .times(1)
                .in_sequence(&mut seq)
                .returning(|_, _, d| Ok(hit(d.len())));
        }
        let cost = access
            .copy(
                &mut mem,
                Mkey::new(1, 7),
                VA,
                Access::REMOTE_WRITE,
                Dir::Write(&[0xAB; 96]),
            )
            .unwrap();
        assert_eq!(cost.iotlb_hits, 2, "one translation per page, not two");
        assert_eq!(cost.bytes, 96);
    }

    #[test]
    fn a_straddling_read_goes_page_by_page_without_a_check_pass() {
        let (mpt, mtt) = tables();
        let access = access(&mpt, &mtt);
        let mut mem = MockGvmiDma::new();
        mem.expect_probe().never();
        mem.expect_dma_read()
            .withf(|_, p, b| p.raw() == 0x5000 + MR_PAGE_SIZE - 32 && b.len() == 32)
            .times(1)
            .returning(|_, _, b| {
                b.fill(1);
                Ok(hit(b.len()))
            });
        // The second page is gone from stage 2: the miss names it, and the
        // bytes of the first page only reached the caller's buffer.
        mem.expect_dma_read()
            .withf(|_, p, b| p.raw() == 0x9000 && b.len() == 64)
            .times(1)
            .returning(|_, p, _| {
                Err(iovirt_core::DmaFault {
                    addr: iovirt_core::Iova::new(p.raw()),
                    access: AccessKind::Read,
                    reason: FaultReason::NotPresent,
                    cost: Cost::ZERO,
                })
            });
        let mut buf = [0u8; 96];
        let miss = access
            .copy(
                &mut mem,
                Mkey::new(1, 7),
                VA,
                Access::REMOTE_READ,
                Dir::Read(&mut buf),
            )
            .unwrap_err();
        assert_eq!(
            miss,
            Miss::Fault {
                stage: FaultStage::Host,
                mkey: Mkey::new(1, 7),
                gvmi: Gvmi(3),
                va: START + MR_PAGE_SIZE,
                pa: Some(Gpa::new(0x9000)),
            }
        );
    }
}

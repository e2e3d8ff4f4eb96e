//! Seed 001's second stage as a device sees it: a [`GvmiDma`] port over the
//! GVMI-keyed PA2MA tables and the shared IOTLB.

use iovirt_core::{
    AccessKind, Cost, DmaFault, FaultReason, Gpa, Gvmi, GvmiDma, Hpa, Iova, MemError, PhysMemory,
};

use crate::iommu::Iommu;

/// GVMI-tagged DMA through [`Iommu::translate_gvmi`], page by page.
///
/// Built per call with [`Iommu::gvmi_port`]. Faults are not recorded in the
/// fault log: seed 001's device reports them to the host driver as events
/// of its own, so the port only returns them (the IOMMU still counts them).
/// A transfer spanning pages is translated and checked for every page
/// before any byte moves, so a fault leaves memory untouched.
pub struct GvmiPort<'a, M: ?Sized> {
    iommu: &'a mut Iommu,
    mem: &'a mut M,
}

impl Iommu {
    /// A GVMI-tagged DMA port over `mem`.
    pub fn gvmi_port<'a, M: PhysMemory<Hpa> + ?Sized>(
        &'a mut self,
        mem: &'a mut M,
    ) -> GvmiPort<'a, M> {
        GvmiPort { iommu: self, mem }
    }
}

impl<M: PhysMemory<Hpa> + ?Sized> GvmiPort<'_, M> {
    /// Translates every page of `len` bytes at `pa` (so that a fault moves
    /// nothing), then runs `step(ma, offset, n)` over the pieces.
    fn transfer(
        &mut self,
        gvmi: Gvmi,
        pa: Gpa,
        len: usize,
        kind: AccessKind,
        mut step: impl FnMut(&mut M, Hpa, usize, usize) -> Result<(), MemError>,
    ) -> Result<Cost, DmaFault> {
        if len == 0 {
            return Ok(Cost::ZERO);
        }
        // The common case, one page: one translation, then the bytes.
        let first = self.iommu.translate_gvmi(&*self.mem, gvmi, pa, kind)?;
        let mut cost = first.cost;
        if first.room < len as u64 {
            // Several pages: all of them must translate before a byte moves.
            let next = pa.raw() + first.room;
            cost += self
                .check(gvmi, Gpa::new(next), len - first.room as usize, kind)
                .map_err(|mut f| {
                    f.cost += cost;
                    f
                })?;
        }
        let mut done = 0usize;
        let mut ma = first.ma;
        let mut room = first.room;
        loop {
            let a = pa.raw() + done as u64;
            let n = usize::try_from(room).unwrap_or(usize::MAX).min(len - done);
            if let Err(e) = step(self.mem, ma, done, n) {
                log::debug!("{gvmi} DMA {kind} at {a:#x} -> {ma}: {e}");
                return Err(DmaFault {
                    addr: Iova::new(a),
                    access: kind,
                    reason: FaultReason::OutsideMemory,
                    cost,
                });
            }
            done += n;
            if done >= len {
                break;
            }
            let t = self.iommu.translate_gvmi(
                &*self.mem,
                gvmi,
                Gpa::new(pa.raw() + done as u64),
                kind,
            )?;
            ma = t.ma;
            room = t.room;
        }
        cost.bytes += len as u64;
        Ok(cost)
    }

    /// Translates each page of the range once; the first fault ends it.
    fn check(
        &mut self,
        gvmi: Gvmi,
        pa: Gpa,
        len: usize,
        kind: AccessKind,
    ) -> Result<Cost, DmaFault> {
        let mut cost = Cost::ZERO;
        let Some(last) = pa.raw().checked_add(len.saturating_sub(1) as u64) else {
            return Err(DmaFault {
                addr: Iova::new(pa.raw()),
                access: kind,
                reason: FaultReason::AddressBeyondWidth,
                cost,
            });
        };
        if len == 0 {
            return Ok(cost);
        }
        let mut a = pa.raw();
        loop {
            let t = self
                .iommu
                .translate_gvmi(&*self.mem, gvmi, Gpa::new(a), kind)
                .map_err(|mut f| {
                    f.cost += cost;
                    f
                })?;
            cost += t.cost;
            match a.checked_add(t.room) {
                Some(next) if next <= last => a = next,
                _ => break,
            }
        }
        Ok(cost)
    }
}

impl<M: PhysMemory<Hpa> + ?Sized> GvmiDma for GvmiPort<'_, M> {
    fn dma_read(&mut self, gvmi: Gvmi, pa: Gpa, buf: &mut [u8]) -> Result<Cost, DmaFault> {
        let len = buf.len();
        self.transfer(gvmi, pa, len, AccessKind::Read, |mem, ma, off, n| match buf
            .get_mut(off..off + n)
        {
            Some(piece) => mem.read(ma, piece),
            None => Ok(()),
        })
    }

    fn dma_write(&mut self, gvmi: Gvmi, pa: Gpa, data: &[u8]) -> Result<Cost, DmaFault> {
        self.transfer(
            gvmi,
            pa,
            data.len(),
            AccessKind::Write,
            |mem, ma, off, n| match data.get(off..off + n) {
                Some(piece) => mem.write(ma, piece),
                None => Ok(()),
            },
        )
    }

    fn probe(&mut self, gvmi: Gvmi, pa: Gpa, access: AccessKind) -> Result<Cost, DmaFault> {
        // A check before a transfer, not seed 000's prefetch: it must not
        // count as one in the IOTLB's prefetch figures.
        self.iommu
            .translate_gvmi(&*self.mem, gvmi, pa, access)
            .map(|t| t.cost)
    }
}

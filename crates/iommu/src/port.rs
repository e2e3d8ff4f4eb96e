//! The IOMMU as a device sees it: a [`DmaPort`] bound to one requester.

use iovirt_core::{
    AccessKind, Cost, DmaFault, DmaPort, FaultReason, Hpa, InterruptSink, Iova, PhysMemory,
};

use crate::iommu::{DmaRequest, Iommu};
use crate::iotlb::PackedTag;
use crate::translate::Failure;

/// A [`DmaPort`] for one request identity: every access is translated page
/// by page, faults are recorded and raise the fault event through `irq`.
///
/// Built per call with [`Iommu::port`], so the IOMMU, the memory and the
/// interrupt sink stay owned by the platform (context passing).
///
/// A DMA spanning pages is translated page by page, as the TLPs of a real
/// device are: when a later page faults, the bytes of the earlier pages have
/// been transferred, and the fault names the first faulting byte.
pub struct IommuPort<'a, M: ?Sized, S: ?Sized> {
    iommu: &'a mut Iommu,
    mem: &'a mut M,
    irq: &'a mut S,
    req: DmaRequest,
    /// The IOTLB tag of `req`'s cached translations, looked up and packed
    /// at the first DMA (`None` inside: the context does not translate).
    tag: Option<Option<PackedTag>>,
}

impl Iommu {
    /// A DMA port for `req`, over `mem`, raising fault events into `irq`.
    pub fn port<'a, M, S>(
        &'a mut self,
        mem: &'a mut M,
        irq: &'a mut S,
        req: DmaRequest,
    ) -> IommuPort<'a, M, S>
    where
        M: PhysMemory<Hpa> + ?Sized,
        S: InterruptSink + ?Sized,
    {
        IommuPort {
            iommu: self,
            mem,
            irq,
            req,
            tag: None,
        }
    }
}

impl<M: PhysMemory<Hpa> + ?Sized, S: InterruptSink + ?Sized> IommuPort<'_, M, S> {
    /// The request identity of this port.
    pub fn request(&self) -> DmaRequest {
        self.req
    }

    fn raise_pending(&mut self) {
        if let Some(irq) = self.iommu.take_fault_event() {
            self.irq.raise(irq);
        }
    }

    /// Runs `len` bytes from `addr` page by page: `step(hpa, offset, n)`
    /// moves `n` bytes at `offset` of the transfer.
    #[inline(always)]
    fn transfer(
        &mut self,
        addr: Iova,
        len: usize,
        kind: AccessKind,
        mut step: impl FnMut(&mut M, Hpa, usize, usize) -> Result<(), iovirt_core::MemError>,
    ) -> Result<Cost, DmaFault> {
        // The common case: the whole transfer sits in one page whose
        // translation is cached. No fault is possible past this lookup.
        let tag = match self.tag {
            Some(tag) => tag,
            None => {
                let tag = self.iommu.cached_tag(self.req);
                self.tag = Some(tag);
                tag
            }
        };
        if len != 0
            && let Some(tag) = tag
            && let Some((hpa, room, _)) = self.iommu.cached_in(tag, addr.raw(), kind)
            && room >= len as u64
            && step(self.mem, hpa, 0, len).is_ok()
        {
            self.iommu.count_cached_hit(len as u64);
            return Ok(Cost {
                iotlb_hits: 1,
                bytes: len as u64,
                ..Cost::ZERO
            });
        }
        self.transfer_slow(addr, len, kind, step)
    }

    /// [`IommuPort::transfer`] past the fast path: page by page through the
    /// full translation. Out of line so the fast path inlines into devices.
    #[inline(never)]
    fn transfer_slow(
        &mut self,
        addr: Iova,
        len: usize,
        kind: AccessKind,
        mut step: impl FnMut(&mut M, Hpa, usize, usize) -> Result<(), iovirt_core::MemError>,
    ) -> Result<Cost, DmaFault> {
        let mut cost = Cost::ZERO;
        let mut done = 0usize;
        while done < len {
            let Some(a) = addr.raw().checked_add(done as u64) else {
                let f = Failure {
                    reason: FaultReason::AddressBeyondWidth,
                    stage: None,
                    walk: None,
                    cost,
                };
                let fault = self.iommu.record(self.req, addr.raw(), kind, f);
                self.raise_pending();
                return Err(fault);
            };
            let t = match self.iommu.translate(&*self.mem, self.req, a, kind) {
                Ok(t) => t,
                Err(mut fault) => {
                    fault.cost += cost;
                    self.raise_pending();
                    return Err(fault);
                }
            };
            cost += t.cost;
            let n = usize::try_from(t.room)
                .unwrap_or(usize::MAX)
                .min(len - done);
            if let Err(e) = step(self.mem, t.hpa, done, n) {
                // Translated to an address with no memory behind it: a master abort.
                log::debug!(
                    "{} DMA {kind} at {a:#x} -> {}: {e}",
                    self.req.requester,
                    t.hpa
                );
                self.iommu.stats.faults.count(FaultReason::OutsideMemory);
                return Err(DmaFault {
                    addr: Iova::new(a),
                    access: kind,
                    reason: FaultReason::OutsideMemory,
                    cost,
                });
            }
            cost.bytes += n as u64;
            done += n;
        }
        self.iommu.stats.dma_bytes.add(len as u64);
        Ok(cost)
    }
}

impl<M: PhysMemory<Hpa> + ?Sized, S: InterruptSink + ?Sized> DmaPort for IommuPort<'_, M, S> {
    // Always inlined: the device then sees the fast path's constant Cost
    // and skips the call, the spills and the Result in memory.
    #[inline(always)]
    fn dma_read(&mut self, addr: Iova, buf: &mut [u8]) -> Result<Cost, DmaFault> {
        let len = buf.len();
        self.transfer(addr, len, AccessKind::Read, |mem, hpa, off, n| {
            match buf.get_mut(off..off + n) {
                Some(piece) => mem.read(hpa, piece),
                None => Ok(()),
            }
        })
    }

    #[inline(always)]
    fn dma_write(&mut self, addr: Iova, data: &[u8]) -> Result<Cost, DmaFault> {
        self.transfer(
            addr,
            data.len(),
            AccessKind::Write,
            |mem, hpa, off, n| match data.get(off..off + n) {
                Some(piece) => mem.write(hpa, piece),
                None => Ok(()),
            },
        )
    }

    fn prefetch(&mut self, addr: Iova, access: AccessKind) -> Result<Cost, DmaFault> {
        let result = self
            .iommu
            .prefetch(&*self.mem, self.req, addr.raw(), access);
        if result.is_err() {
            self.raise_pending();
        }
        result
    }
}

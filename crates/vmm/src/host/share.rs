//! Shared pages (seed 003): one VM's page mapped into another VM, so a
//! frame one VM transmits is in the other's receive buffer without a copy,
//! as if the two were joined by a crossover cable.
//!
//! The frame stays the source VM's. While it is shared, neither side can
//! make it change hands: the source page is never swapped out, lent or
//! replaced, and the destination page (`Page::Shared`) is never any of
//! those either. Unsharing unmaps the destination, with its translation
//! invalidated, before anything else can happen to the frame.

use iovirt_core::{Gpa, PhysMemory};

use iovirt_paging::PteFlags;

use super::{Host, PAGE, Page, VmId, VmmError};

impl Host {
    /// Seed 003 (the dynamic remapper): maps the page holding `dst` in
    /// `dst_vm` to the frame of the page holding `src` in `src_vm`. The
    /// source page is brought in if need be; whatever backed the
    /// destination page is dropped (a frame is unmapped, invalidated,
    /// zeroed and freed; a swapped copy is discarded). The two pages stay
    /// joined until [`Host::unshare_page`].
    ///
    /// Refused: the same VM on both sides, a pinned destination, a source
    /// that is itself a shared mapping, or a destination already shared.
    pub fn share_page(
        &mut self,
        src_vm: VmId,
        src: Gpa,
        dst_vm: VmId,
        dst: Gpa,
    ) -> Result<(), VmmError> {
        if src_vm == dst_vm {
            return Err(VmmError::BadVm("a page shared with its own VM"));
        }
        let sg = self.gfn(src_vm, src.raw(), 1)?;
        let dg = self.gfn(dst_vm, dst.raw(), 1)?;
        let refuse_src = VmmError::Pinned {
            vm: src_vm,
            gpa: src.raw(),
        };
        if matches!(self.page_mut(src_vm, sg), Some(Page::Shared { .. })) {
            return Err(refuse_src);
        }
        let refuse_dst = VmmError::Pinned {
            vm: dst_vm,
            gpa: dst.raw(),
        };
        // Bring the source in first: that may evict a page, and the
        // destination's state must be read after it.
        let frame = self.resident(src_vm, sg)?;
        let before = *self.page_mut(dst_vm, dg).ok_or(VmmError::NoVm(dst_vm))?;
        if matches!(
            before,
            Page::Resident { pinned: true, .. } | Page::Shared { .. }
        ) || self.is_shared_source(dst_vm, dg)
        {
            return Err(refuse_dst);
        }
        match before {
            Page::Resident { frame: old, .. } => {
                self.unmap_page(dst_vm, dg)?;
                if let Some(p) = self.page_mut(dst_vm, dg) {
                    *p = Page::Untouched;
                }
                self.release_frame(old)?;
            }
            Page::Swapped(slot) => {
                self.store.free(slot);
                if let Some(p) = self.page_mut(dst_vm, dg) {
                    *p = Page::Untouched;
                }
            }
            Page::Untouched | Page::Lent | Page::Shared { .. } => {}
        }
        // Read-only: the destination's writes, by its CPU or its device,
        // must not reach the source's page (see `copy_shared_on_write`).
        self.map_gfn(dst_vm, dg, frame, PteFlags::empty())?;
        if let Some(p) = self.page_mut(dst_vm, dg) {
            *p = Page::Shared { frame };
        }
        self.shares.push(((src_vm, sg), (dst_vm, dg)));
        self.stats.pages_shared.inc();
        log::trace!("{dst_vm:?} page {dg:#x} shares {src_vm:?} page {sg:#x} ({frame})");
        Ok(())
    }

    /// Ends a share: the destination page at `dst` of `dst_vm` is unmapped,
    /// the IOTLB told, and the page reads as zeros (a new frame on its next
    /// touch). The source page is free to move again once no other VM
    /// shares it. A page that is not shared is refused.
    pub fn unshare_page(&mut self, dst_vm: VmId, dst: Gpa) -> Result<(), VmmError> {
        let dg = self.gfn(dst_vm, dst.raw(), 1)?;
        if !matches!(self.page_mut(dst_vm, dg), Some(Page::Shared { .. })) {
            return Err(VmmError::NotShared {
                vm: dst_vm,
                gpa: dst.raw(),
            });
        }
        self.unmap_page(dst_vm, dg)?;
        if let Some(p) = self.page_mut(dst_vm, dg) {
            *p = Page::Untouched;
        }
        self.shares.retain(|&(_, d)| d != (dst_vm, dg));
        Ok(())
    }

    /// Ends the share of the page holding `gpa` in `vm` by giving the page a
    /// private copy of the frame it maps (what copy on write does before a
    /// write). `false` if the page was not shared.
    pub fn copy_shared_page(&mut self, vm: VmId, gpa: Gpa) -> Result<bool, VmmError> {
        let copies = self.stats.shares_copied_on_write.get();
        self.copy_shared_on_write(vm, gpa, 1)?;
        Ok(self.stats.shares_copied_on_write.get() > copies)
    }

    /// Copy on write: the pages of `gpa..gpa + len` of `vm` that map
    /// another VM's frame get a private copy first, so the writer changes
    /// only its own memory. The share ends there (the source is told
    /// nothing: its page is no longer held by this one).
    pub(super) fn copy_shared_on_write(
        &mut self,
        vm: VmId,
        gpa: Gpa,
        len: u64,
    ) -> Result<(), VmmError> {
        if len == 0 || self.shares.is_empty() {
            return Ok(());
        }
        let first = self.gfn(vm, gpa.raw(), len)?;
        let last = self.gfn(vm, gpa.raw() + len - 1, 1)?;
        for gfn in first..=last {
            let Some(Page::Shared { frame: shared }) = self.page_mut(vm, gfn).copied() else {
                continue;
            };
            let own = self.take_frame()?;
            let mem = &mut self.mem;
            let mut copy = [0u8; PAGE as usize];
            mem.read(shared, &mut copy)?;
            mem.write(own, &copy)?;
            self.unmap_page(vm, gfn)?;
            if let Some(p) = self.page_mut(vm, gfn) {
                *p = Page::Untouched;
            }
            self.shares.retain(|&(_, d)| d != (vm, gfn));
            if let Err(err) = self.install(vm, gfn, own) {
                self.release_frame(own)?;
                return Err(err);
            }
            self.stats.shares_copied_on_write.inc();
        }
        Ok(())
    }

    /// Whether another VM maps page `gfn` of `vm`.
    pub(super) fn is_shared_source(&self, vm: VmId, gfn: u32) -> bool {
        self.shares.iter().any(|&(s, _)| s == (vm, gfn))
    }
}

//! Page flipping (seed 002): guest pages lent to a pool of DMA buffers and
//! pool frames adopted as guest pages, so a received frame reaches its VM
//! without a copy.
//!
//! A frame changes hands only through these calls, and each one keeps two
//! rules. No frame is mapped in two places: a page is unmapped, and the
//! IOTLB told, before its frame goes anywhere. No frame carries data
//! across: a frame entering the pool is zeroed first, so what a VM finds in
//! a flipped-in page is the frame the NIC wrote and zeros after it, never
//! another VM's old bytes.

use iovirt_core::{Gpa, Hpa};

use super::{Host, PAGE, Page, VmId, VmmError};

impl Host {
    /// Seed 002 steps 302-303: takes the page holding `gpa` from `vm` for the
    /// demultiplexer's DMA buffer pool. The page's stage-2 entry is cleared,
    /// the IOTLB forgets it, and its frame is zeroed and returned: it now
    /// belongs to the caller's pool, not to the VM. A page not in a frame
    /// (untouched, or swapped out, whose contents the guest gave up by
    /// posting the page as a receive buffer) is lent as a fresh frame.
    ///
    /// `None` if the page is already lent (a guest that posts one page in
    /// two descriptors lends it once). A pinned page is refused.
    pub fn lend_page(&mut self, vm: VmId, gpa: Gpa) -> Result<Option<Hpa>, VmmError> {
        let gfn = self.gfn(vm, gpa.raw(), 1)?;
        if self.is_shared_source(vm, gfn) {
            return Err(VmmError::Pinned { vm, gpa: gpa.raw() });
        }
        let frame = match *self.page_mut(vm, gfn).ok_or(VmmError::NoVm(vm))? {
            Page::Lent => return Ok(None),
            Page::Resident { pinned: true, .. } | Page::Shared { .. } => {
                return Err(VmmError::Pinned { vm, gpa: gpa.raw() });
            }
            Page::Resident { frame, .. } => {
                self.unmap_page(vm, gfn)?;
                self.zero_frame(frame)?;
                if let Some((_, o)) = self.owner_mut(frame) {
                    *o = None;
                }
                frame
            }
            Page::Untouched => self.take_frame()?,
            Page::Swapped(slot) => {
                let frame = self.take_frame()?;
                self.store.free(slot);
                frame
            }
        };
        if let Some(p) = self.page_mut(vm, gfn) {
            *p = Page::Lent;
        }
        self.stats.pages_lent.inc();
        log::trace!("{vm:?}: page {gfn:#x} lent to the pool as {frame}");
        Ok(Some(frame))
    }

    /// Seed 002 step 306: makes the pool frame `frame` (holding a received
    /// frame) the page at `gpa` of `vm`, the buffer of the VM's next receive
    /// descriptor. Whatever backed the page before is dropped: a frame the
    /// guest's CPU faulted in after lending the page is unmapped, the IOTLB
    /// told, zeroed and returned for the pool; a swapped copy is
    /// discarded. A pinned page is refused, and `frame` stays the caller's.
    pub fn adopt_frame(&mut self, vm: VmId, gpa: Gpa, frame: Hpa) -> Result<Option<Hpa>, VmmError> {
        if !self.is_pool_frame(frame) {
            return Err(VmmError::NotPoolFrame(frame));
        }
        let gfn = self.gfn(vm, gpa.raw(), 1)?;
        let page = *self.page_mut(vm, gfn).ok_or(VmmError::NoVm(vm))?;
        if self.is_shared_source(vm, gfn) {
            return Err(VmmError::Pinned { vm, gpa: gpa.raw() });
        }
        let displaced = match page {
            Page::Resident { pinned: true, .. } | Page::Shared { .. } => {
                return Err(VmmError::Pinned { vm, gpa: gpa.raw() });
            }
            Page::Resident { frame: old, .. } => {
                self.unmap_page(vm, gfn)?;
                self.zero_frame(old)?;
                if let Some((_, o)) = self.owner_mut(old) {
                    *o = None;
                }
                if let Some(p) = self.page_mut(vm, gfn) {
                    *p = Page::Lent;
                }
                Some(old)
            }
            Page::Untouched | Page::Lent | Page::Swapped(_) => None,
        };
        if let Err(err) = self.install(vm, gfn, frame) {
            // Out of table frames. The page reads as zeros (lent); a frame
            // displaced above goes back to the host rather than astray.
            if let Some(old) = displaced {
                self.release_frame(old)?;
            }
            return Err(err);
        }
        if let Page::Swapped(slot) = page {
            self.store.free(slot);
        }
        self.stats.frames_adopted.inc();
        log::trace!("{vm:?}: page {gfn:#x} is now {frame}");
        Ok(displaced)
    }

    /// A zeroed data frame for the pool, from the host's budget (swapping a
    /// page out if frames are short).
    pub fn alloc_pool_frame(&mut self) -> Result<Hpa, VmmError> {
        self.take_frame()
    }

    /// Gives a pool frame back to the host, zeroed.
    pub fn free_pool_frame(&mut self, frame: Hpa) -> Result<(), VmmError> {
        if !self.is_pool_frame(frame) {
            return Err(VmmError::NotPoolFrame(frame));
        }
        self.release_frame(frame)
    }

    /// Zeroes a pool frame before it is reused: a NIC overwrites only the
    /// bytes of the next packet, and the rest must not show the last one.
    pub fn zero_pool_frame(&mut self, frame: Hpa) -> Result<(), VmmError> {
        if !self.is_pool_frame(frame) {
            return Err(VmmError::NotPoolFrame(frame));
        }
        self.zero_frame(frame)?;
        Ok(())
    }

    /// Host memory for the host's own drivers (rings and buffers in pool
    /// frames); guest pages are reached through [`Host::read`] and
    /// [`Host::write`].
    pub(crate) fn mem_mut(&mut self) -> &mut iovirt_core::HostMemory {
        &mut self.mem
    }

    /// Whether `frame` is a data frame in use that backs no guest page.
    fn is_pool_frame(&mut self, frame: Hpa) -> bool {
        frame.raw().is_multiple_of(PAGE)
            && self.frames.is_allocated(frame)
            && matches!(self.owner_mut(frame), Some((_, None)))
    }
}

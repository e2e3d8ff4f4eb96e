//! Frame allocation: the trait page-table mappers take their table frames
//! from, and a deterministic bitmap allocator implementing it.

use crate::addr::Address;
use crate::page::FRAME_SIZE;

/// A frame could not be freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The address is not the start of a frame this allocator manages.
    #[error("{space} address {addr:#x} is not a frame of this allocator")]
    NotOwned {
        /// Address space.
        space: &'static str,
        /// The address given.
        addr: u64,
    },
    /// The frame is already free (a double free).
    #[error("{space} frame {addr:#x} is already free")]
    AlreadyFree {
        /// Address space.
        space: &'static str,
        /// The frame given.
        addr: u64,
    },
}

/// A source of 4 KiB frames in address space `A`.
///
/// Implemented by [`BitmapFrameAllocator`] (host frames, guest frames) and by
/// hypervisors and guest page allocators with policies of their own; called by
/// page-table mappers for table frames.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait FrameAllocator<A: Address> {
    /// One frame, or `None` when none is free. Its contents are unspecified:
    /// a caller that needs zeros writes them.
    fn alloc_frame(&mut self) -> Option<A>;

    /// Gives back a frame returned by [`alloc_frame`](Self::alloc_frame).
    fn free_frame(&mut self, frame: A) -> Result<(), FrameError>;
}

/// Allocates the frames of one contiguous physical range, lowest address
/// first, so that the same sequence of calls always yields the same frames.
///
/// ```
/// use iovirt_core::{BitmapFrameAllocator, FrameAllocator, Hpa};
///
/// let mut frames = BitmapFrameAllocator::new(Hpa::new(0x10_0000), 16);
/// let a = frames.alloc_frame().unwrap();
/// assert_eq!(a, Hpa::new(0x10_0000));
/// let run = frames.alloc_contiguous(4, 4).unwrap(); // 4 frames, 16 KiB aligned
/// assert_eq!(run, Hpa::new(0x10_4000));
/// assert_eq!(frames.free_frames(), 11);
/// frames.free_frame(a).unwrap();
/// assert!(frames.free_frame(a).is_err()); // double free is refused
/// ```
#[derive(Debug, Clone)]
pub struct BitmapFrameAllocator<A> {
    base: A,
    frames: u64,
    /// One bit per frame, set = allocated.
    bitmap: Vec<u64>,
    free: u64,
    /// No free frame lies below word `hint` of the bitmap.
    hint: usize,
}

impl<A: Address> BitmapFrameAllocator<A> {
    /// Manages `frames` frames starting at `base`, which is rounded up to a
    /// frame boundary (a base that cannot be rounded manages nothing).
    pub fn new(base: A, frames: u64) -> Self {
        let aligned = base.raw().checked_next_multiple_of(FRAME_SIZE);
        // Frames that would run past the end of the address space do not exist.
        let max_frames = aligned.map_or(0, |b| (u64::MAX - b) / FRAME_SIZE + 1);
        let frames = frames.min(max_frames);
        let words = frames.div_ceil(64) as usize;
        let mut bitmap = vec![0u64; words];
        // Mark the bits past the last frame as allocated so they are never handed out.
        let tail = frames % 64;
        if tail != 0
            && let Some(last) = bitmap.last_mut()
        {
            *last = !0u64 << tail;
        }
        BitmapFrameAllocator {
            base: A::new(aligned.unwrap_or(0)),
            frames,
            bitmap,
            free: frames,
            hint: 0,
        }
    }

    /// Frames managed in total.
    pub fn total_frames(&self) -> u64 {
        self.frames
    }

    /// Frames currently free.
    pub fn free_frames(&self) -> u64 {
        self.free
    }

    /// Frames currently allocated.
    pub fn used_frames(&self) -> u64 {
        self.frames - self.free
    }

    /// Whether `frame` is currently allocated.
    pub fn is_allocated(&self, frame: A) -> bool {
        self.index_of(frame).is_some_and(|i| self.bit(i))
    }

    /// Allocates `frame` itself, if this allocator owns it and it is free.
    pub fn alloc_exact(&mut self, frame: A) -> bool {
        match self.index_of(frame) {
            Some(i) if !self.bit(i) => {
                self.set_bit(i, true);
                self.free -= 1;
                true
            }
            _ => false,
        }
    }

    /// `count` contiguous frames whose first frame number is a multiple of
    /// `align_frames` (1 for no alignment, 512 for a 2 MiB-aligned run),
    /// lowest address first; `None` when no such run is free.
    pub fn alloc_contiguous(&mut self, count: u64, align_frames: u64) -> Option<A> {
        if count == 0 || count > self.free {
            return None;
        }
        let align = align_frames.max(1);
        let base_fno = self.base.raw() / FRAME_SIZE;
        // The first index at or after `i` whose absolute frame number is aligned.
        let next_aligned = |i: u64| i.checked_add((align - (base_fno + i) % align) % align);
        let mut start = next_aligned(0)?;
        while start.checked_add(count)? <= self.frames {
            // Scan from the top so a busy frame lets us skip the whole window below it.
            match (start..start + count).rev().find(|&i| self.bit(i)) {
                Some(busy) => start = next_aligned(busy + 1)?,
                None => {
                    for i in start..start + count {
                        self.set_bit(i, true);
                    }
                    self.free -= count;
                    return Some(self.addr_of(start));
                }
            }
        }
        None
    }

    /// Frees `count` frames starting at `first`, as allocated by
    /// [`alloc_contiguous`](Self::alloc_contiguous). Checks every frame before
    /// freeing any, so an error leaves the allocator unchanged.
    pub fn free_contiguous(&mut self, first: A, count: u64) -> Result<(), FrameError> {
        let start = self.index_of(first).ok_or(FrameError::NotOwned {
            space: A::SPACE,
            addr: first.raw(),
        })?;
        let end = start
            .checked_add(count)
            .filter(|&e| e <= self.frames)
            .ok_or(FrameError::NotOwned {
                space: A::SPACE,
                addr: first.raw(),
            })?;
        if let Some(i) = (start..end).find(|&i| !self.bit(i)) {
            return Err(FrameError::AlreadyFree {
                space: A::SPACE,
                addr: self.addr_of(i).raw(),
            });
        }
        for i in start..end {
            self.set_bit(i, false);
        }
        self.free += count;
        self.hint = self.hint.min((start / 64) as usize);
        Ok(())
    }

    fn index_of(&self, frame: A) -> Option<u64> {
        let off = frame.raw().checked_sub(self.base.raw())?;
        (off % FRAME_SIZE == 0 && off / FRAME_SIZE < self.frames).then_some(off / FRAME_SIZE)
    }

    fn addr_of(&self, index: u64) -> A {
        A::new(self.base.raw() + index * FRAME_SIZE)
    }

    fn bit(&self, i: u64) -> bool {
        self.bitmap
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn set_bit(&mut self, i: u64, value: bool) {
        if let Some(w) = self.bitmap.get_mut((i / 64) as usize) {
            if value {
                *w |= 1 << (i % 64);
            } else {
                *w &= !(1 << (i % 64));
            }
        }
    }
}

impl<A: Address> FrameAllocator<A> for BitmapFrameAllocator<A> {
    fn alloc_frame(&mut self) -> Option<A> {
        let (word_index, word) = self
            .bitmap
            .iter_mut()
            .enumerate()
            .skip(self.hint)
            .find(|(_, w)| **w != u64::MAX)?;
        let bit = word.trailing_ones() as u64;
        *word |= 1 << bit;
        self.hint = word_index;
        self.free -= 1;
        Some(self.addr_of(word_index as u64 * 64 + bit))
    }

    fn free_frame(&mut self, frame: A) -> Result<(), FrameError> {
        self.free_contiguous(frame, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::{Gpa, Hpa};

    #[test]
    fn lowest_first_and_counts() {
        let mut fa = BitmapFrameAllocator::new(Gpa::new(0x1234), 130);
        assert_eq!(fa.total_frames(), 130);
        let first = fa.alloc_frame().unwrap();
        assert_eq!(first, Gpa::new(0x2000)); // base rounded up to a frame
        let all: Vec<_> = std::iter::from_fn(|| fa.alloc_frame()).collect();
        assert_eq!(all.len(), 129);
        assert_eq!(*all.last().unwrap(), Gpa::new(0x2000 + 129 * 4096));
        assert_eq!(fa.free_frames(), 0);
        assert_eq!(fa.alloc_frame(), None);
        fa.free_frame(Gpa::new(0x2000 + 70 * 4096)).unwrap();
        fa.free_frame(Gpa::new(0x2000 + 3 * 4096)).unwrap();
        assert_eq!(fa.used_frames(), 128);
        // The lowest free frame comes back first.
        assert_eq!(fa.alloc_frame(), Some(Gpa::new(0x2000 + 3 * 4096)));
        assert_eq!(fa.alloc_frame(), Some(Gpa::new(0x2000 + 70 * 4096)));
    }

    #[test]
    fn free_errors() {
        let mut fa = BitmapFrameAllocator::new(Hpa::new(0), 8);
        let f = fa.alloc_frame().unwrap();
        assert_eq!(
            fa.free_frame(Hpa::new(0x800)),
            Err(FrameError::NotOwned {
                space: "host-physical",
                addr: 0x800
            })
        );
        assert!(fa.free_frame(Hpa::new(8 * 4096)).is_err());
        fa.free_frame(f).unwrap();
        assert_eq!(
            fa.free_frame(f),
            Err(FrameError::AlreadyFree {
                space: "host-physical",
                addr: 0
            })
        );
        assert_eq!(fa.free_frames(), 8);
    }

    #[test]
    fn contiguous_runs_respect_alignment_and_holes() {
        let mut fa = BitmapFrameAllocator::new(Hpa::new(0x1000), 2048);
        // base frame 1: the first 512-aligned frame number is 512 = index 511.
        let run = fa.alloc_contiguous(512, 512).unwrap();
        assert_eq!(run, Hpa::new(0x20_0000));
        assert!(run.is_aligned(crate::PageSize::Size2M));
        let small = fa.alloc_contiguous(3, 1).unwrap();
        assert_eq!(small, Hpa::new(0x1000));
        // Punch a hole and ask for a run that does not fit in it.
        fa.free_contiguous(small, 3).unwrap();
        let single = fa.alloc_frame().unwrap();
        assert_eq!(single, Hpa::new(0x1000));
        let five = fa.alloc_contiguous(5, 1).unwrap();
        assert_eq!(five, Hpa::new(0x2000));
        assert!(fa.alloc_contiguous(4096, 1).is_none());
        assert!(fa.alloc_contiguous(0, 1).is_none());
        assert_eq!(fa.used_frames(), 518);
        assert!(fa.is_allocated(Hpa::new(0x20_0000)));
        assert!(!fa.alloc_exact(Hpa::new(0x20_0000)), "already taken");
        assert!(!fa.alloc_exact(Hpa::new(0x1234)), "not a frame boundary");
        assert!(fa.alloc_exact(Hpa::new(0x40_0000)));
        fa.free_frame(Hpa::new(0x40_0000)).unwrap();
        assert!(!fa.is_allocated(Hpa::new(0x40_0000)));
        // Freeing a run with a free frame inside changes nothing.
        fa.free_frame(Hpa::new(0x4000)).unwrap();
        assert!(fa.free_contiguous(Hpa::new(0x2000), 5).is_err());
        assert_eq!(fa.used_frames(), 517);
    }

    #[test]
    fn top_of_address_space_does_not_overflow() {
        let mut fa = BitmapFrameAllocator::new(Hpa::new(u64::MAX - 0x1fff), 100);
        assert_eq!(fa.total_frames(), 2);
        assert_eq!(fa.alloc_frame(), Some(Hpa::new(u64::MAX - 0x1fff)));
        assert_eq!(fa.alloc_frame(), Some(Hpa::new(u64::MAX - 0xfff)));
        assert_eq!(fa.alloc_frame(), None);
        let none = BitmapFrameAllocator::new(Hpa::new(u64::MAX - 5), 100);
        assert_eq!(none.total_frames(), 0);
    }
}

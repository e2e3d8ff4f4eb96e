//! The guest's page allocator: where a guest kernel puts its DMA buffers.
//! Seed 000 is about what placement does to the IOTLB, so placement is a
//! choice: lowest address first (packed) or scattered at random, from a
//! seed, reproducibly.

use iovirt_core::{BitmapFrameAllocator, FRAME_SIZE, FrameAllocator, FrameError, Gpa};
use serde::{Deserialize, Serialize};

/// Where new pages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Placement {
    /// Lowest free page first: consecutive allocations are adjacent.
    Contiguous,
    /// A free page chosen at random (xorshift from `seed`): consecutive
    /// allocations scatter over the whole range.
    Random {
        /// The generator's seed; the same seed gives the same pages.
        seed: u64,
    },
}

/// A guest-physical page allocator over one range.
///
/// ```
/// use iovirt_core::{FrameAllocator, Gpa};
/// use iovirt_drivers::{GuestPageAllocator, Placement};
///
/// let mut packed = GuestPageAllocator::new(Gpa::new(0x10_0000), 1024, Placement::Contiguous);
/// assert_eq!(packed.alloc_frame(), Some(Gpa::new(0x10_0000)));
/// assert_eq!(packed.alloc_frame(), Some(Gpa::new(0x10_1000)));
/// let mut scattered = GuestPageAllocator::new(Gpa::new(0x10_0000), 1024, Placement::Random { seed: 7 });
/// let a = scattered.alloc_frame().unwrap();
/// let b = scattered.alloc_frame().unwrap();
/// assert_ne!(b.raw(), a.raw() + 0x1000);
/// ```
#[derive(Debug, Clone)]
pub struct GuestPageAllocator {
    inner: BitmapFrameAllocator<Gpa>,
    base: Gpa,
    pages: u64,
    placement: Placement,
    rng: u64,
}

impl GuestPageAllocator {
    /// `pages` pages from `base` (rounded up to a page), placed by `placement`.
    pub fn new(base: Gpa, pages: u64, placement: Placement) -> Self {
        let rng = match placement {
            Placement::Random { seed } => seed | 1,
            Placement::Contiguous => 1,
        };
        let inner = BitmapFrameAllocator::new(base, pages);
        let base = Gpa::new(base.raw().next_multiple_of(FRAME_SIZE));
        GuestPageAllocator {
            pages: inner.total_frames(),
            inner,
            base,
            placement,
            rng,
        }
    }

    /// Pages still free.
    pub fn free_pages(&self) -> u64 {
        self.inner.free_frames()
    }

    /// `count` physically contiguous pages, lowest address first whatever the
    /// placement (rings and the seed's contiguous transmit-buffer region).
    pub fn alloc_contiguous(&mut self, count: u64) -> Option<Gpa> {
        self.inner.alloc_contiguous(count, 1)
    }

    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

impl FrameAllocator<Gpa> for GuestPageAllocator {
    fn alloc_frame(&mut self) -> Option<Gpa> {
        match self.placement {
            Placement::Contiguous => self.inner.alloc_frame(),
            Placement::Random { .. } => {
                if self.inner.free_frames() == 0 || self.pages == 0 {
                    return None;
                }
                // Probe from a random page to the first free one above it.
                let start = self.next_random() % self.pages;
                (0..self.pages)
                    .map(|i| (start + i) % self.pages)
                    .map(|p| Gpa::new(self.base.raw() + p * FRAME_SIZE))
                    .find(|&page| !self.inner.is_allocated(page))
                    .and_then(|page| self.inner.alloc_exact(page).then_some(page))
            }
        }
    }

    fn free_frame(&mut self, frame: Gpa) -> Result<(), FrameError> {
        self.inner.free_frame(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_placement_is_reproducible_and_exhaustive() {
        let mut a = GuestPageAllocator::new(Gpa::new(0), 64, Placement::Random { seed: 42 });
        let mut b = GuestPageAllocator::new(Gpa::new(0), 64, Placement::Random { seed: 42 });
        let pa: Vec<Gpa> = std::iter::from_fn(|| a.alloc_frame()).collect();
        let pb: Vec<Gpa> = std::iter::from_fn(|| b.alloc_frame()).collect();
        assert_eq!(pa, pb);
        assert_eq!(pa.len(), 64);
        let mut sorted = pa.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 64, "every page exactly once");
        assert_ne!(pa, sorted, "not in address order");
        a.free_frame(pa[3]).unwrap();
        assert_eq!(a.alloc_frame(), Some(pa[3]));
        assert_eq!(a.alloc_contiguous(1), None);
    }
}

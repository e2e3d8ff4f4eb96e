//! Dense host-physical memory: one contiguous buffer.
//!
//! Where [`HostMemory`](crate::HostMemory) allocates per frame and models
//! terabytes of mostly untouched RAM, `FlatMemory` is a single zeroed
//! buffer: an access is one bounds check and a copy, with no frame lookup.
//! It suits hosts of a few GiB that a run touches densely, and measurements
//! of the device models themselves (the memory's own cost drops out). The
//! buffer is allocated zeroed, so the operating system backs it lazily.

use crate::addr::Hpa;
use crate::host_memory::BadMemorySize;
use crate::mem::{MemError, PhysMemory, check_range};
use crate::page::FRAME_SIZE;

/// Largest [`FlatMemory`]: 16 GiB, so a mistaken size cannot ask the
/// allocator for the sparse model's terabyte.
pub const MAX_FLAT_MEMORY: u64 = 16 << 30;

/// Dense host-physical memory of a fixed size.
///
/// ```
/// use iovirt_core::{FlatMemory, Hpa, PhysMemory};
///
/// let mut mem = FlatMemory::new(64 << 20)?;
/// mem.write(Hpa::new(0x1ffe), b"abcd")?; // crossing a frame boundary is just a copy
/// assert_eq!(mem.read_u32(Hpa::new(0x1ffe))?, u32::from_le_bytes(*b"abcd"));
/// assert!(mem.read_u64(Hpa::new((64 << 20) - 4)).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct FlatMemory {
    bytes: Vec<u8>,
}

impl core::fmt::Debug for FlatMemory {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FlatMemory")
            .field("size", &format_args!("{:#x}", self.bytes.len()))
            .finish()
    }
}

impl FlatMemory {
    /// Zeroed memory of `size` bytes: a non-zero multiple of 4 KiB, at most
    /// [`MAX_FLAT_MEMORY`].
    pub fn new(size: u64) -> Result<FlatMemory, BadMemorySize> {
        if size == 0 || !size.is_multiple_of(FRAME_SIZE) || size > MAX_FLAT_MEMORY {
            return Err(BadMemorySize { size });
        }
        let len = usize::try_from(size).map_err(|_| BadMemorySize { size })?;
        Ok(FlatMemory {
            bytes: vec![0; len],
        })
    }

    /// The bytes of `addr..addr + len`, after the range check.
    #[inline]
    fn range(&self, addr: Hpa, len: usize) -> Result<core::ops::Range<usize>, MemError> {
        check_range(addr, len as u64, self.bytes.len() as u64)?;
        // In range of a buffer whose length is a usize, so both ends fit.
        let start = addr.raw() as usize;
        Ok(start..start + len)
    }
}

impl PhysMemory<Hpa> for FlatMemory {
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    #[inline]
    fn read(&self, addr: Hpa, buf: &mut [u8]) -> Result<(), MemError> {
        let range = self.range(addr, buf.len())?;
        let src = self.bytes.get(range).ok_or(MemError::OutOfRange {
            space: "host-physical",
            addr: addr.raw(),
            len: buf.len() as u64,
            size: self.size(),
        })?;
        buf.copy_from_slice(src);
        Ok(())
    }

    #[inline]
    fn write(&mut self, addr: Hpa, data: &[u8]) -> Result<(), MemError> {
        let size = self.size();
        let range = self.range(addr, data.len())?;
        let dst = self.bytes.get_mut(range).ok_or(MemError::OutOfRange {
            space: "host-physical",
            addr: addr.raw(),
            len: data.len() as u64,
            size,
        })?;
        dst.copy_from_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HostMemory;
    use proptest::prelude::*;

    #[test]
    fn sizes_and_bounds() {
        assert!(FlatMemory::new(0).is_err());
        assert!(FlatMemory::new(4097).is_err());
        assert!(FlatMemory::new(MAX_FLAT_MEMORY + FRAME_SIZE).is_err());
        let mut m = FlatMemory::new(8192).unwrap();
        assert_eq!(
            m.write(Hpa::new(8190), &[1, 2, 3]),
            Err(MemError::OutOfRange {
                space: "host-physical",
                addr: 8190,
                len: 3,
                size: 8192
            })
        );
        assert!(m.read(Hpa::new(u64::MAX), &mut [0u8; 2]).is_err());
        m.write(Hpa::new(8190), &[7, 8]).unwrap();
        assert_eq!(m.read_u16(Hpa::new(8190)).unwrap(), 0x0807);
    }

    proptest! {
        /// Flat and sparse memory are interchangeable: the same writes give
        /// the same reads.
        #[test]
        fn agrees_with_host_memory(ops in proptest::collection::vec((0u64..20_000, proptest::collection::vec(any::<u8>(), 0..5000)), 1..16)) {
            let mut flat = FlatMemory::new(24 * 1024).unwrap();
            let mut sparse = HostMemory::new(24 * 1024).unwrap();
            for (addr, data) in &ops {
                prop_assert_eq!(flat.write(Hpa::new(*addr), data), sparse.write(Hpa::new(*addr), data));
            }
            let (mut a, mut b) = (vec![0u8; 24 * 1024], vec![0u8; 24 * 1024]);
            flat.read(Hpa::new(0), &mut a).unwrap();
            sparse.read(Hpa::new(0), &mut b).unwrap();
            prop_assert_eq!(a, b);
        }
    }
}

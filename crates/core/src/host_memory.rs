//! Sparse host-physical memory.
//!
//! A simulated host may have gigabytes of "RAM" of which a test touches a few
//! pages, so storage is allocated per 4 KiB frame on the first write of a
//! non-zero byte. Untouched frames read as zeros. The frame index is a
//! two-level radix (a directory of 512-frame chunks), so a lookup is two
//! dependent loads and no hashing.

use crate::addr::Hpa;
use crate::mem::{MemError, PhysMemory, check_range};
use crate::page::FRAME_SIZE;

const FRAME_BYTES: usize = FRAME_SIZE as usize;
const FRAME_SHIFT: u32 = FRAME_SIZE.trailing_zeros();
const CHUNK_SHIFT: u32 = 9;
const FRAMES_PER_CHUNK: usize = 1 << CHUNK_SHIFT;

/// Largest memory a [`HostMemory`] can model: 1 TiB (the directory of chunk
/// pointers then takes 4 MiB).
pub const MAX_HOST_MEMORY: u64 = 1 << 40;

type Frame = [u8; FRAME_BYTES];

struct Chunk {
    frames: [Option<Box<Frame>>; FRAMES_PER_CHUNK],
}

impl Chunk {
    fn new() -> Box<Chunk> {
        Box::new(Chunk {
            frames: core::array::from_fn(|_| None),
        })
    }

    fn is_empty(&self) -> bool {
        self.frames.iter().all(Option::is_none)
    }
}

/// A [`HostMemory`] could not be created with the requested size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "host memory size {size:#x} must be a non-zero multiple of 4 KiB no larger than {max:#x}",
    max = MAX_HOST_MEMORY
)]
pub struct BadMemorySize {
    /// The size asked for.
    pub size: u64,
}

/// Sparse host-physical memory of a fixed size.
///
/// ```
/// use iovirt_core::{HostMemory, Hpa, PhysMemory};
///
/// let mut mem = HostMemory::new(1 << 30)?; // 1 GiB, nothing allocated yet
/// mem.write_u64(Hpa::new(0x1000), 0xdead_beef)?;
/// assert_eq!(mem.read_u64(Hpa::new(0x1000))?, 0xdead_beef);
/// assert_eq!(mem.read_u32(Hpa::new(0x2000_0000))?, 0); // untouched: zeros
/// assert_eq!(mem.resident_frames(), 1);
/// assert!(mem.read_u64(Hpa::new(1 << 30)).is_err()); // beyond the end
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct HostMemory {
    size: u64,
    chunks: Vec<Option<Box<Chunk>>>,
    resident: u64,
}

impl core::fmt::Debug for HostMemory {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HostMemory")
            .field("size", &format_args!("{:#x}", self.size))
            .field("resident_frames", &self.resident)
            .finish()
    }
}

impl HostMemory {
    /// Memory of `size` bytes, all zero, none of it allocated.
    pub fn new(size: u64) -> Result<HostMemory, BadMemorySize> {
        if size == 0 || !size.is_multiple_of(FRAME_SIZE) || size > MAX_HOST_MEMORY {
            return Err(BadMemorySize { size });
        }
        let frames = size / FRAME_SIZE;
        let chunks = frames.div_ceil(FRAMES_PER_CHUNK as u64) as usize;
        let mut dir = Vec::with_capacity(chunks);
        dir.resize_with(chunks, || None);
        Ok(HostMemory {
            size,
            chunks: dir,
            resident: 0,
        })
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Frames that have storage (were written with non-zero data and not
    /// discarded since).
    pub fn resident_frames(&self) -> u64 {
        self.resident
    }

    /// Drops the storage of every frame overlapping `addr..addr + len`, so
    /// they read as zeros again and cost nothing (what a hypervisor does when
    /// it clears a page or swaps it out). Partial frames at either end are
    /// zeroed in place rather than dropped.
    pub fn discard(&mut self, addr: Hpa, len: u64) -> Result<(), MemError> {
        check_range(addr, len, self.size)?;
        let mut pos = addr.raw();
        let end = pos + len;
        while pos < end {
            let off = pos % FRAME_SIZE;
            let n = (FRAME_SIZE - off).min(end - pos);
            let fno = pos / FRAME_SIZE;
            if n == FRAME_SIZE {
                self.drop_frame(fno);
            } else if let Some(frame) = self.frame_mut_if_present(fno)
                && let Some(bytes) = frame.get_mut(off as usize..(off + n) as usize)
            {
                bytes.fill(0);
            }
            pos += n;
        }
        Ok(())
    }

    #[inline]
    fn frame(&self, fno: u64) -> Option<&Frame> {
        let chunk = self.chunks.get((fno >> CHUNK_SHIFT) as usize)?.as_deref()?;
        chunk
            .frames
            .get((fno as usize) & (FRAMES_PER_CHUNK - 1))?
            .as_deref()
    }

    fn frame_mut_if_present(&mut self, fno: u64) -> Option<&mut Frame> {
        let chunk = self
            .chunks
            .get_mut((fno >> CHUNK_SHIFT) as usize)?
            .as_deref_mut()?;
        chunk
            .frames
            .get_mut((fno as usize) & (FRAMES_PER_CHUNK - 1))?
            .as_deref_mut()
    }

    /// The frame's storage, allocated (zeroed) if it has none. `None` only for
    /// a frame number beyond the directory, which callers rule out by checking
    /// the range first.
    fn frame_mut(&mut self, fno: u64) -> Option<&mut Frame> {
        let chunk = self
            .chunks
            .get_mut((fno >> CHUNK_SHIFT) as usize)?
            .get_or_insert_with(Chunk::new);
        let slot = chunk
            .frames
            .get_mut((fno as usize) & (FRAMES_PER_CHUNK - 1))?;
        if slot.is_none() {
            self.resident += 1;
        }
        Some(slot.get_or_insert_with(|| Box::new([0u8; FRAME_BYTES])))
    }

    fn drop_frame(&mut self, fno: u64) {
        let Some(entry) = self.chunks.get_mut((fno >> CHUNK_SHIFT) as usize) else {
            return;
        };
        let Some(chunk) = entry.as_deref_mut() else {
            return;
        };
        if let Some(slot) = chunk
            .frames
            .get_mut((fno as usize) & (FRAMES_PER_CHUNK - 1))
            && slot.take().is_some()
        {
            self.resident -= 1;
        }
        if chunk.is_empty() {
            *entry = None;
        }
    }

    /// The `len` bytes at `addr` when they lie in one resident frame. A
    /// resident frame is always inside memory, so no range check is needed.
    #[inline(always)]
    fn resident_bytes(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let off = (addr % FRAME_SIZE) as usize;
        let chunk = self
            .chunks
            .get(usize::try_from(addr >> (FRAME_SHIFT + CHUNK_SHIFT)).ok()?)?
            .as_deref()?;
        let frame = chunk
            .frames
            .get(((addr >> FRAME_SHIFT) as usize) & (FRAMES_PER_CHUNK - 1))?
            .as_deref()?;
        frame.get(off..off.checked_add(len)?)
    }

    /// [`HostMemory::resident_bytes`], writable.
    #[inline(always)]
    fn resident_bytes_mut(&mut self, addr: u64, len: usize) -> Option<&mut [u8]> {
        let off = (addr % FRAME_SIZE) as usize;
        let chunk = self
            .chunks
            .get_mut(usize::try_from(addr >> (FRAME_SHIFT + CHUNK_SHIFT)).ok()?)?
            .as_deref_mut()?;
        let frame = chunk
            .frames
            .get_mut(((addr >> FRAME_SHIFT) as usize) & (FRAMES_PER_CHUNK - 1))?
            .as_deref_mut()?;
        frame.get_mut(off..off.checked_add(len)?)
    }

    /// A read the fast path declined: out of range, across frames, or
    /// touching frames without storage. Out of line so `read` inlines small.
    #[cold]
    #[inline(never)]
    fn read_slow(&self, addr: Hpa, buf: &mut [u8]) -> Result<(), MemError> {
        check_range(addr, buf.len() as u64, self.size)?;
        let mut pos = addr.raw();
        for piece in split_at_frames(pos, buf) {
            let off = (pos % FRAME_SIZE) as usize;
            match self
                .frame(pos / FRAME_SIZE)
                .and_then(|f| f.get(off..off + piece.len()))
            {
                Some(src) => piece.copy_from_slice(src),
                None => piece.fill(0),
            }
            pos += piece.len() as u64;
        }
        Ok(())
    }

    /// A write the fast path declined, as [`HostMemory::read_slow`].
    #[cold]
    #[inline(never)]
    fn write_slow(&mut self, addr: Hpa, data: &[u8]) -> Result<(), MemError> {
        check_range(addr, data.len() as u64, self.size)?;
        let mut pos = addr.raw();
        let mut rest = data;
        while !rest.is_empty() {
            let off = (pos % FRAME_SIZE) as usize;
            let n = rest.len().min(FRAME_BYTES - off);
            let (piece, tail) = rest.split_at(n);
            let fno = pos / FRAME_SIZE;
            // Writing zeros into a frame that has no storage changes nothing:
            // clearing memory must not make it resident.
            let dst = if is_zero(piece) {
                self.frame_mut_if_present(fno)
            } else {
                self.frame_mut(fno)
            };
            if let Some(dst) = dst.and_then(|f| f.get_mut(off..off + n)) {
                dst.copy_from_slice(piece);
            }
            pos += n as u64;
            rest = tail;
        }
        Ok(())
    }
}

impl PhysMemory<Hpa> for HostMemory {
    fn size(&self) -> u64 {
        self.size
    }

    #[inline]
    fn read(&self, addr: Hpa, buf: &mut [u8]) -> Result<(), MemError> {
        // Fast path for DMA and drivers: the whole read lies in one resident
        // frame (and so in range: only in-range frames ever get storage).
        if let Some(src) = self.resident_bytes(addr.raw(), buf.len()) {
            buf.copy_from_slice(src);
            return Ok(());
        }
        self.read_slow(addr, buf)
    }

    #[inline]
    fn write(&mut self, addr: Hpa, data: &[u8]) -> Result<(), MemError> {
        // Fast path for DMA and drivers, as in `read`.
        if let Some(dst) = self.resident_bytes_mut(addr.raw(), data.len()) {
            dst.copy_from_slice(data);
            return Ok(());
        }
        self.write_slow(addr, data)
    }

    #[inline]
    fn read_u64(&self, addr: Hpa) -> Result<u64, MemError> {
        let a = addr.raw();
        let off = (a % FRAME_SIZE) as usize;
        // Fast path for the walker: an in-frame, in-range word.
        if off <= FRAME_BYTES - 8 && a < self.size {
            let Some(frame) = self.frame(a / FRAME_SIZE) else {
                return Ok(0);
            };
            if let Some(bytes) = frame
                .get(off..off + 8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
            {
                return Ok(u64::from_le_bytes(bytes));
            }
        }
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

/// Whether every byte is zero. Folds 64-byte blocks with OR so the compiler
/// vectorises it: the mapper zeroes a whole table frame on every allocation.
fn is_zero(bytes: &[u8]) -> bool {
    bytes
        .chunks(64)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// Splits `buf` (which starts at physical address `start`) at 4 KiB frame boundaries.
fn split_at_frames(start: u64, buf: &mut [u8]) -> impl Iterator<Item = &mut [u8]> {
    let first = ((FRAME_SIZE - start % FRAME_SIZE) as usize).min(buf.len());
    let (head, tail) = buf.split_at_mut(first);
    core::iter::once(head)
        .filter(|h| !h.is_empty())
        .chain(tail.chunks_mut(FRAME_BYTES))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_bad_sizes() {
        assert_eq!(HostMemory::new(0).unwrap_err(), BadMemorySize { size: 0 });
        assert!(HostMemory::new(4095).is_err());
        assert!(HostMemory::new(MAX_HOST_MEMORY + FRAME_SIZE).is_err());
        assert!(HostMemory::new(MAX_HOST_MEMORY).is_ok());
    }

    #[test]
    fn cross_frame_access_and_little_endian_helpers() {
        let mut mem = HostMemory::new(64 * 1024).unwrap();
        let data: Vec<u8> = (0..=255).cycle().take(9000).collect();
        mem.write(Hpa::new(4000), &data).unwrap();
        assert_eq!(mem.resident_frames(), 4); // 4000..13000 spans frames 0..=3
        let mut back = vec![0u8; 9000];
        mem.read(Hpa::new(4000), &mut back).unwrap();
        assert_eq!(back, data);
        // A u64 straddling a frame boundary takes the slow path and still works.
        mem.write_u64(Hpa::new(8188), 0x1122_3344_5566_7788)
            .unwrap();
        assert_eq!(mem.read_u64(Hpa::new(8188)).unwrap(), 0x1122_3344_5566_7788);
        let mut raw = [0u8; 8];
        mem.read(Hpa::new(8188), &mut raw).unwrap();
        assert_eq!(raw, [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
        mem.write_u16(Hpa::new(20), 0xabcd).unwrap();
        assert_eq!(mem.read_u16(Hpa::new(20)).unwrap(), 0xabcd);
        assert_eq!(mem.read_u32(Hpa::new(20)).unwrap(), 0xabcd);
        mem.write_u32(Hpa::new(24), 0xfeed_f00d).unwrap();
        assert_eq!(mem.read_u64(Hpa::new(20)).unwrap(), 0xfeed_f00d_0000_abcd);
    }

    #[test]
    fn out_of_range_names_the_address() {
        let mut mem = HostMemory::new(8192).unwrap();
        let err = mem.write(Hpa::new(8190), &[1, 2, 3]).unwrap_err();
        assert_eq!(
            err,
            MemError::OutOfRange {
                space: "host-physical",
                addr: 8190,
                len: 3,
                size: 8192
            }
        );
        assert!(err.to_string().contains("0x1ffe"));
        assert!(mem.read_u64(Hpa::new(u64::MAX - 3)).is_err());
        assert!(mem.read_u64(Hpa::new(8192)).is_err());
        assert!(mem.read(Hpa::new(u64::MAX), &mut [0u8; 2]).is_err());
        // A failed write changed nothing.
        assert_eq!(mem.resident_frames(), 0);
        assert_eq!(mem.read_u16(Hpa::new(8190)).unwrap(), 0);
    }

    #[test]
    fn zero_writes_and_discard_release_storage() {
        let mut mem = HostMemory::new(1 << 20).unwrap();
        mem.write(Hpa::new(0x3000), &[0u8; 4096]).unwrap();
        assert_eq!(mem.resident_frames(), 0);
        mem.write(Hpa::new(0x3000), &[7u8; 8192]).unwrap();
        assert_eq!(mem.resident_frames(), 2);
        mem.discard(Hpa::new(0x3000), 4096 + 16).unwrap();
        assert_eq!(mem.resident_frames(), 1);
        assert_eq!(mem.read_u64(Hpa::new(0x3ff8)).unwrap(), 0);
        assert_eq!(mem.read_u64(Hpa::new(0x4008)).unwrap(), 0); // partial frame zeroed
        assert_eq!(
            mem.read_u64(Hpa::new(0x4010)).unwrap(),
            0x0707_0707_0707_0707
        );
        assert!(mem.discard(Hpa::new(0xff000), 0x2000).is_err());
    }

    proptest! {
        /// Random writes and reads agree with a flat byte array.
        #[test]
        fn matches_flat_model(ops in proptest::collection::vec((0u64..40_000, proptest::collection::vec(any::<u8>(), 0..6000)), 1..20)) {
            const SIZE: u64 = 48 * 1024;
            let mut mem = HostMemory::new(SIZE).unwrap();
            let mut model = vec![0u8; SIZE as usize];
            for (addr, data) in &ops {
                let res = mem.write(Hpa::new(*addr), data);
                let end = *addr as usize + data.len();
                if end <= SIZE as usize {
                    prop_assert!(res.is_ok());
                    model[*addr as usize..end].copy_from_slice(data);
                } else {
                    prop_assert!(res.is_err());
                }
            }
            let mut all = vec![0u8; SIZE as usize];
            mem.read(Hpa::ZERO, &mut all).unwrap();
            prop_assert_eq!(all, model);
        }
    }
}

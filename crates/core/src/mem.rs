//! Physical-memory access: the trait page-table walkers, IOMMUs and DMA ports
//! read and write memory through.

use crate::addr::PhysAddress;

/// A physical-memory access failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MemError {
    /// Part of the range lies beyond the end of memory.
    #[error("{space} range {addr:#x}+{len:#x} is outside memory of {size:#x} bytes")]
    OutOfRange {
        /// Address space of the access.
        space: &'static str,
        /// First byte of the access.
        addr: u64,
        /// Length of the access in bytes.
        len: u64,
        /// Size of the memory.
        size: u64,
    },
    /// A view in front of the memory (a second-stage translation, a guest
    /// mapping) could not translate the address.
    #[error("{space} address {addr:#x} is not mapped")]
    Unmapped {
        /// Address space of the access.
        space: &'static str,
        /// The address that missed.
        addr: u64,
    },
}

/// Byte access to a physical address space `A` (host-physical for the host's
/// RAM; guest-physical for a view of one VM's memory).
///
/// Implemented by [`HostMemory`](crate::HostMemory) and by views that translate
/// in front of it; called by the page-table walker (table reads, A/D updates),
/// by DMA ports and by drivers. Accesses never partially succeed silently: an
/// error means no byte past the failing one was transferred, and the caller
/// must treat the whole access as failed.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait PhysMemory<A: PhysAddress> {
    /// Size of the space in bytes: valid addresses are `0..size()`.
    fn size(&self) -> u64;

    /// Fills `buf` from `addr..addr + buf.len()`.
    fn read(&self, addr: A, buf: &mut [u8]) -> Result<(), MemError>;

    /// Stores `data` at `addr..addr + data.len()`.
    fn write(&mut self, addr: A, data: &[u8]) -> Result<(), MemError>;

    /// Reads a little-endian `u64` (a page-table entry, a descriptor word).
    fn read_u64(&self, addr: A) -> Result<u64, MemError> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes a little-endian `u64`.
    fn write_u64(&mut self, addr: A, value: u64) -> Result<(), MemError> {
        self.write(addr, &value.to_le_bytes())
    }

    /// Reads a little-endian `u32`.
    fn read_u32(&self, addr: A) -> Result<u32, MemError> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Writes a little-endian `u32`.
    fn write_u32(&mut self, addr: A, value: u32) -> Result<(), MemError> {
        self.write(addr, &value.to_le_bytes())
    }

    /// Reads a little-endian `u16`.
    fn read_u16(&self, addr: A) -> Result<u16, MemError> {
        let mut b = [0u8; 2];
        self.read(addr, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// Writes a little-endian `u16`.
    fn write_u16(&mut self, addr: A, value: u16) -> Result<(), MemError> {
        self.write(addr, &value.to_le_bytes())
    }
}

/// Checks that `addr..addr + len` lies inside `0..size` without overflowing,
/// and names the range when it does not.
pub fn check_range<A: PhysAddress>(addr: A, len: u64, size: u64) -> Result<(), MemError> {
    match addr.raw().checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(MemError::OutOfRange {
            space: A::SPACE,
            addr: addr.raw(),
            len,
            size,
        }),
    }
}

//! Memory-mapped register access: the device side and the driver side.

use serde::{Deserialize, Serialize};

/// The width of one register access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Width {
    /// 1 byte.
    U8,
    /// 2 bytes.
    U16,
    /// 4 bytes.
    U32,
    /// 8 bytes.
    U64,
}

impl Width {
    /// Bytes accessed.
    pub const fn bytes(self) -> u64 {
        match self {
            Width::U8 => 1,
            Width::U16 => 2,
            Width::U32 => 4,
            Width::U64 => 8,
        }
    }

    /// The value bits an access of this width carries.
    pub const fn mask(self) -> u64 {
        match self {
            Width::U64 => u64::MAX,
            w => (1 << (w.bytes() * 8)) - 1,
        }
    }

    /// The width of an access of `bytes` bytes, if it is one of 1, 2, 4, 8.
    pub const fn from_bytes(bytes: u64) -> Option<Width> {
        match bytes {
            1 => Some(Width::U8),
            2 => Some(Width::U16),
            4 => Some(Width::U32),
            8 => Some(Width::U64),
            _ => None,
        }
    }
}

/// A device's register block (a PCI BAR), as the device model implements it.
///
/// `E` is the device's environment (its DMA port, interrupt sink, timers,
/// network port), passed in on each call rather than stored, so the device
/// owns only its own state. Implemented by device models; called by the
/// platform when a driver touches the BAR. Every offset and value is guest
/// input: an access the hardware would ignore is ignored (reads return 0),
/// never a panic.
pub trait MmioDevice<E: ?Sized> {
    /// Size of the register block in bytes.
    fn mmio_size(&self) -> u64;

    /// A read of `width` at `offset`; the value is in the low bits.
    fn mmio_read(&mut self, offset: u64, width: Width, env: &mut E) -> u64;

    /// A write of the low `width` bits of `value` at `offset`.
    fn mmio_write(&mut self, offset: u64, width: Width, value: u64, env: &mut E);
}

/// A device's registers as a driver sees them: offsets into its BAR.
///
/// Implemented by the platform (binding a device and its environment), and by
/// mocks in driver tests; called by guest drivers, which see devices through
/// nothing else.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait RegisterAccess {
    /// Reads `width` at `offset`.
    fn read(&mut self, offset: u64, width: Width) -> u64;

    /// Writes the low `width` bits of `value` at `offset`.
    fn write(&mut self, offset: u64, width: Width, value: u64);

    /// Reads a 32-bit register (most of an e1000's).
    fn read32(&mut self, offset: u64) -> u32 {
        (self.read(offset, Width::U32) & Width::U32.mask()) as u32
    }

    /// Writes a 32-bit register.
    fn write32(&mut self, offset: u64, value: u32) {
        self.write(offset, Width::U32, u64::from(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths() {
        assert_eq!(Width::U16.mask(), 0xffff);
        assert_eq!(Width::U64.mask(), u64::MAX);
        assert_eq!(Width::from_bytes(4), Some(Width::U32));
        assert_eq!(Width::from_bytes(3), None);
        assert_eq!(Width::U8.bytes(), 1);
    }

    /// A register file that records the last write, to exercise the
    /// provided methods (mockall mocks those too, so a mock cannot).
    struct LastWrite(Option<(u64, Width, u64)>);

    impl RegisterAccess for LastWrite {
        fn read(&mut self, _offset: u64, _width: Width) -> u64 {
            0x1_2345_6789
        }
        fn write(&mut self, offset: u64, width: Width, value: u64) {
            self.0 = Some((offset, width, value));
        }
    }

    #[test]
    fn read32_truncates_and_write32_widens() {
        let mut regs = LastWrite(None);
        assert_eq!(regs.read32(0x8), 0x2345_6789);
        regs.write32(0x3818, u32::MAX);
        assert_eq!(regs.0, Some((0x3818, Width::U32, 0xffff_ffff)));
    }
}

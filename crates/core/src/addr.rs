//! Address newtypes, one per address space.
//!
//! A value that crosses from one space to another only does so through a
//! translation (a page walk, an IOTLB lookup), never through an accidental
//! `u64` assignment. All arithmetic that a guest value can reach is checked: an
//! overflow is an [`AddrError`], never a panic or a silent wrap.

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::page::PageSize;

/// An address computation left the 64-bit space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{space} address {base:#x} + {offset:#x} overflows 64 bits")]
pub struct AddrError {
    /// The address space of the operand, e.g. `"host-physical"`.
    pub space: &'static str,
    /// The address the computation started from.
    pub base: u64,
    /// The amount added (or, for an alignment, the amount needed to reach the boundary).
    pub offset: u64,
}

/// What every address newtype offers, for code generic over the address space
/// (the page-table walker, the frame allocator, memory views).
pub trait Address:
    Copy + Eq + Ord + core::hash::Hash + fmt::Debug + fmt::Display + Send + Sync + 'static
{
    /// Human name of the space, used in error messages (`"guest-physical"`).
    const SPACE: &'static str;

    /// Wraps a raw value.
    fn new(raw: u64) -> Self;

    /// The raw value.
    fn raw(self) -> u64;

    /// `self + offset`, or an error naming the space and both operands.
    fn checked_add(self, offset: u64) -> Result<Self, AddrError> {
        self.raw()
            .checked_add(offset)
            .map(Self::new)
            .ok_or(AddrError {
                space: Self::SPACE,
                base: self.raw(),
                offset,
            })
    }

    /// Byte offset of the address inside a page of `size`.
    fn page_offset(self, size: PageSize) -> u64 {
        self.raw() & size.mask()
    }

    /// The start of the page of `size` containing the address.
    fn align_down(self, size: PageSize) -> Self {
        Self::new(self.raw() & !size.mask())
    }

    /// The first page boundary of `size` at or above the address.
    fn align_up(self, size: PageSize) -> Result<Self, AddrError> {
        if self.is_aligned(size) {
            return Ok(self);
        }
        self.align_down(size)
            .checked_add(size.bytes())
            .map_err(|_| AddrError {
                space: Self::SPACE,
                base: self.raw(),
                offset: size.bytes() - self.page_offset(size),
            })
    }

    /// Whether the address is a multiple of `size`.
    fn is_aligned(self, size: PageSize) -> bool {
        self.page_offset(size) == 0
    }

    /// The page number of the address for pages of `size`.
    fn page_number(self, size: PageSize) -> u64 {
        self.raw() >> size.shift()
    }
}

/// Marker for the address spaces that hold memory (and so can hold page
/// tables): guest-physical and host-physical.
pub trait PhysAddress: Address {}

macro_rules! address_type {
    ($(#[$doc:meta])* $name:ident, $space:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(u64);

        impl $name {
            /// The zero address.
            pub const ZERO: Self = Self(0);

            /// Wraps a raw value.
            #[inline]
            pub const fn new(raw: u64) -> Self {
                Self(raw)
            }

            /// The raw value.
            #[inline]
            pub const fn raw(self) -> u64 {
                self.0
            }
        }

        impl Address for $name {
            const SPACE: &'static str = $space;

            #[inline]
            fn new(raw: u64) -> Self {
                Self(raw)
            }

            #[inline]
            fn raw(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }

        impl fmt::LowerHex for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }
    };
}

address_type!(
    /// Guest-virtual address: what a guest process or kernel dereferences,
    /// translated by the guest's own page tables.
    Gva,
    "guest-virtual"
);
address_type!(
    /// I/O-virtual address: what a device puts on the bus for DMA, translated
    /// by the IOMMU (or used as-is when there is none).
    Iova,
    "I/O-virtual"
);
address_type!(
    /// Guest-physical address: what a guest believes is physical memory,
    /// translated to host-physical by the hypervisor's second-stage tables.
    Gpa,
    "guest-physical"
);
address_type!(
    /// Host-physical (machine) address: a byte of the host's memory.
    Hpa,
    "host-physical"
);

impl PhysAddress for Gpa {}
impl PhysAddress for Hpa {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_arithmetic() {
        let a = Hpa::new(0x20_1234);
        assert_eq!(a.page_offset(PageSize::Size4K), 0x234);
        assert_eq!(a.align_down(PageSize::Size4K), Hpa::new(0x20_1000));
        assert_eq!(a.align_down(PageSize::Size2M), Hpa::new(0x20_0000));
        assert_eq!(a.align_up(PageSize::Size4K), Ok(Hpa::new(0x20_2000)));
        assert_eq!(a.align_up(PageSize::Size2M), Ok(Hpa::new(0x40_0000)));
        assert_eq!(a.page_number(PageSize::Size4K), 0x201);
        assert!(Hpa::new(0x4000_0000).is_aligned(PageSize::Size1G));
        assert!(!a.is_aligned(PageSize::Size4K));
        assert_eq!(
            Hpa::new(0x3000).align_up(PageSize::Size4K),
            Ok(Hpa::new(0x3000))
        );
    }

    #[test]
    fn overflow_is_an_error_naming_the_space() {
        let top = Iova::new(u64::MAX - 0x10);
        let err = top.checked_add(0x20).unwrap_err();
        assert_eq!(
            err,
            AddrError {
                space: "I/O-virtual",
                base: u64::MAX - 0x10,
                offset: 0x20
            }
        );
        assert_eq!(
            err.to_string(),
            "I/O-virtual address 0xffffffffffffffef + 0x20 overflows 64 bits"
        );
        let err = Gpa::new(u64::MAX - 5)
            .align_up(PageSize::Size4K)
            .unwrap_err();
        assert_eq!(err.space, "guest-physical");
        assert_eq!(err.offset, 6);
        assert_eq!(Gva::new(7).checked_add(1), Ok(Gva::new(8)));
    }

    #[test]
    fn display_is_hex() {
        assert_eq!(Gpa::new(0xdead_b000).to_string(), "0xdeadb000");
        assert_eq!(format!("{:?}", Hpa::new(0x1000)), "Hpa(0x1000)");
        assert_eq!(format!("{:x}", Gva::new(255)), "ff");
    }

    #[test]
    fn serde_is_transparent() {
        let json = serde_json::to_string(&Hpa::new(4096)).unwrap();
        assert_eq!(json, "4096");
        let back: Hpa = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Hpa::new(4096));
    }
}

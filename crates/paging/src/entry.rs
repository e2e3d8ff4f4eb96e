//! Page-table entries and their flags, with the hardware's names.

use core::fmt;

use iovirt_core::PageSize;
use serde::{Deserialize, Serialize};

bitflags::bitflags! {
    /// The flag bits of an x86-64 paging-structure entry (Intel SDM vol. 3,
    /// section 4.5). Bit 7 is PS in a PDPTE or PDE and PAT in a PTE.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    pub struct PteFlags: u64 {
        /// P: present. When clear, every other bit is ignored by hardware.
        const P = 1 << 0;
        /// R/W: writes allowed (accumulated with AND across levels).
        const RW = 1 << 1;
        /// U/S: user-mode accesses allowed (accumulated with AND across levels).
        const US = 1 << 2;
        /// PWT: page-level write-through.
        const PWT = 1 << 3;
        /// PCD: page-level cache disable.
        const PCD = 1 << 4;
        /// A: accessed, set by hardware when the entry is used.
        const A = 1 << 5;
        /// D: dirty, set by hardware on a write through a leaf.
        const D = 1 << 6;
        /// PS: page size; in a PDPTE maps a 1 GiB page, in a PDE a 2 MiB page.
        const PS = 1 << 7;
        /// G: global (survives a CR3 switch).
        const G = 1 << 8;
        /// XD/NX: no instruction fetch (accumulated with OR across levels).
        const NX = 1 << 63;
    }
}

impl PteFlags {
    /// The flags a caller may give a leaf mapping; the mapper sets P and PS.
    pub const LEAF_ATTRIBUTES: PteFlags = PteFlags::RW
        .union(PteFlags::US)
        .union(PteFlags::PWT)
        .union(PteFlags::PCD)
        .union(PteFlags::A)
        .union(PteFlags::D)
        .union(PteFlags::G)
        .union(PteFlags::NX);
}

/// PAT bit of a 4 KiB PTE (bit 7, where PS sits at the upper levels).
pub const PTE_PAT: u64 = 1 << 7;
/// PAT bit of a 2 MiB or 1 GiB leaf.
pub const HUGE_PAT: u64 = 1 << 12;
/// Bits 51:12, the widest physical-address field of an entry.
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// One 64-bit paging-structure entry.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PageTableEntry(u64);

impl PageTableEntry {
    /// A not-present entry (all zero).
    pub const EMPTY: PageTableEntry = PageTableEntry(0);

    /// An entry from its raw bits.
    #[inline]
    pub const fn from_raw(raw: u64) -> Self {
        PageTableEntry(raw)
    }

    /// An entry pointing at `frame` (its low 12 bits ignored) with `flags`.
    #[inline]
    pub const fn new(frame: u64, flags: PteFlags) -> Self {
        PageTableEntry((frame & ADDR_MASK) | flags.bits())
    }

    /// The raw bits.
    #[inline]
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The flag bits (bits outside [`PteFlags`] dropped).
    #[inline]
    pub const fn flags(self) -> PteFlags {
        PteFlags::from_bits_truncate(self.0)
    }

    /// Whether P is set.
    #[inline]
    pub const fn is_present(self) -> bool {
        self.0 & PteFlags::P.bits() != 0
    }

    /// The table or 4 KiB frame address (bits 51:12).
    #[inline]
    pub const fn addr(self) -> u64 {
        self.0 & ADDR_MASK
    }

    /// The page address of a leaf of `size` (bits 51:shift; for a huge page
    /// the PAT bit and the reserved bits below the page boundary are dropped).
    #[inline]
    pub const fn page_addr(self, size: PageSize) -> u64 {
        self.0 & ADDR_MASK & !size.mask()
    }
}

impl fmt::Debug for PageTableEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PageTableEntry({:#x}, {:?})", self.addr(), self.flags())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        let e = PageTableEntry::new(0x1234_5678_9abc, PteFlags::P | PteFlags::RW | PteFlags::NX);
        assert_eq!(e.addr(), 0x1234_5678_9000);
        assert!(e.is_present());
        assert_eq!(e.flags(), PteFlags::P | PteFlags::RW | PteFlags::NX);
        assert_eq!(e.raw(), 0x8000_1234_5678_9003);
        let huge = PageTableEntry::from_raw(0x4000_0000 | HUGE_PAT | 0x83);
        assert_eq!(huge.page_addr(PageSize::Size2M), 0x4000_0000);
        assert_eq!(huge.page_addr(PageSize::Size4K), 0x4000_1000);
        assert!(!PageTableEntry::EMPTY.is_present());
        assert!(!PteFlags::LEAF_ATTRIBUTES.contains(PteFlags::P));
        assert!(!PteFlags::LEAF_ATTRIBUTES.contains(PteFlags::PS));
    }
}

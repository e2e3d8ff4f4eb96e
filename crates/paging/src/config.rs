//! Paging modes: how many levels, which address bits are valid, and the
//! control bits that change what a walk checks.

use core::fmt;

use iovirt_core::PageSize;
use serde::{Deserialize, Serialize};

use crate::entry::{ADDR_MASK, PteFlags};

/// A paging-structure level, named after the table it indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Level {
    /// Page table: entries map 4 KiB pages.
    Pt = 1,
    /// Page directory: entries map 2 MiB pages or point at page tables.
    Pd = 2,
    /// Page-directory-pointer table: entries map 1 GiB pages or point at page directories.
    Pdpt = 3,
    /// PML4 table (4- and 5-level paging).
    Pml4 = 4,
    /// PML5 table (5-level paging).
    Pml5 = 5,
}

impl Level {
    /// The level's number, 1 (page table) to 5 (PML5).
    #[inline]
    pub const fn number(self) -> u8 {
        self as u8
    }

    /// The level numbered `n` (1 = page table, 5 = PML5).
    #[inline]
    pub const fn from_number(n: u8) -> Option<Level> {
        match n {
            1 => Some(Level::Pt),
            2 => Some(Level::Pd),
            3 => Some(Level::Pdpt),
            4 => Some(Level::Pml4),
            5 => Some(Level::Pml5),
            _ => None,
        }
    }

    /// The address bit where this level's 9-bit index starts.
    #[inline]
    pub const fn shift(self) -> u32 {
        12 + 9 * (self as u32 - 1)
    }

    /// Bytes of address space one entry of this level covers.
    #[inline]
    pub const fn span(self) -> u64 {
        1 << self.shift()
    }

    /// The entry index of `addr` in a table of this level.
    #[inline]
    pub const fn index(self, addr: u64) -> u64 {
        (addr >> self.shift()) & 0x1ff
    }

    /// The level below, `None` for the page table.
    #[inline]
    pub const fn below(self) -> Option<Level> {
        match self {
            Level::Pt => None,
            Level::Pd => Some(Level::Pt),
            Level::Pdpt => Some(Level::Pd),
            Level::Pml4 => Some(Level::Pdpt),
            Level::Pml5 => Some(Level::Pml4),
        }
    }

    /// The page size a leaf at this level maps, if a leaf may sit here.
    #[inline]
    pub const fn leaf_size(self) -> Option<PageSize> {
        match self {
            Level::Pt => Some(PageSize::Size4K),
            Level::Pd => Some(PageSize::Size2M),
            Level::Pdpt => Some(PageSize::Size1G),
            Level::Pml4 | Level::Pml5 => None,
        }
    }

    /// The level whose leaves map pages of `size`.
    #[inline]
    pub const fn of_leaf(size: PageSize) -> Level {
        match size {
            PageSize::Size4K => Level::Pt,
            PageSize::Size2M => Level::Pd,
            PageSize::Size1G => Level::Pdpt,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Pt => "PTE",
            Level::Pd => "PDE",
            Level::Pdpt => "PDPTE",
            Level::Pml4 => "PML4E",
            Level::Pml5 => "PML5E",
        })
    }
}

/// The depth of a table hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Levels {
    /// 3 levels, 39-bit input: Intel VT-d's smallest second-stage format.
    Three,
    /// 4 levels, 48-bit input: x86-64 4-level paging.
    Four,
    /// 5 levels, 57-bit input: x86-64 5-level paging (LA57).
    Five,
}

impl Levels {
    /// The top table's level.
    #[inline]
    pub const fn top(self) -> Level {
        match self {
            Levels::Three => Level::Pdpt,
            Levels::Four => Level::Pml4,
            Levels::Five => Level::Pml5,
        }
    }

    /// Number of input-address bits translated.
    #[inline]
    pub const fn width(self) -> u32 {
        self.top().shift() + 9
    }

    /// How many tables a walk to a 4 KiB page reads.
    #[inline]
    pub const fn count(self) -> u8 {
        self.top().number()
    }
}

/// Which input addresses a walk accepts before reading any table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InputCheck {
    /// Canonical form: the bits above the width are copies of the top bit
    /// (x86-64 linear addresses, IOMMU first stage). Otherwise a
    /// [`WalkFault::NonCanonical`](crate::WalkFault::NonCanonical).
    Canonical,
    /// Zero-extended: the bits above the width must be zero (IOMMU second
    /// stage, guest-physical input). Otherwise a
    /// [`WalkFault::BeyondWidth`](crate::WalkFault::BeyondWidth).
    ZeroExtended,
}

/// Everything that changes what a walk checks. The defaults are a current
/// x86-64 CPU in long mode: 4 levels, 52-bit physical addresses, EFER.NXE = 1,
/// CR0.WP = 1, 1 GiB pages supported, canonical input, no A/D update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PagingConfig {
    /// Table depth.
    pub levels: Levels,
    /// MAXPHYADDR, 32..=52: entry address bits at or above it are reserved.
    pub max_phys_bits: u8,
    /// EFER.NXE: the NX bit is honoured; when false, bit 63 is reserved.
    pub nxe: bool,
    /// CR0.WP: supervisor writes honour R/W; when false they ignore it.
    pub wp: bool,
    /// 1 GiB pages supported (CPUID Page1GB; VT-d SLLPS bit 1); when false, PS
    /// in a PDPTE is reserved.
    pub page_1g: bool,
    /// Which input addresses are valid.
    pub input: InputCheck,
    /// Set A on every entry a successful walk used and D on the leaf of a
    /// write (only in [`PageTable::walk_mut`](crate::PageTable::walk_mut)).
    pub update_ad: bool,
}

impl Default for PagingConfig {
    fn default() -> Self {
        PagingConfig {
            levels: Levels::Four,
            max_phys_bits: 52,
            nxe: true,
            wp: true,
            page_1g: true,
            input: InputCheck::Canonical,
            update_ad: false,
        }
    }
}

impl PagingConfig {
    /// x86-64 CPU paging with `levels` (4 or 5).
    pub fn cpu(levels: Levels) -> Self {
        PagingConfig {
            levels,
            ..PagingConfig::default()
        }
    }

    /// An IOMMU second stage of `levels` (3, 4 or 5): zero-extended input.
    pub fn second_stage(levels: Levels) -> Self {
        PagingConfig {
            levels,
            input: InputCheck::ZeroExtended,
            ..PagingConfig::default()
        }
    }

    /// The physical-address bits of an entry under this MAXPHYADDR.
    #[inline]
    pub const fn phys_mask(&self) -> u64 {
        let bits = if self.max_phys_bits > 52 {
            52
        } else {
            self.max_phys_bits
        };
        ADDR_MASK & ((1u64 << bits) - 1)
    }

    /// The bits that must be zero in a present entry at `level` whose PS bit is `ps`.
    #[inline]
    pub(crate) const fn reserved_bits(&self, level: Level, ps: bool) -> u64 {
        let mut mask = ADDR_MASK & !self.phys_mask();
        if !self.nxe {
            mask |= PteFlags::NX.bits();
        }
        match level {
            Level::Pml5 | Level::Pml4 => mask |= PteFlags::PS.bits(),
            Level::Pdpt if ps => {
                mask |= if self.page_1g {
                    0x3fff_e000
                } else {
                    PteFlags::PS.bits()
                };
            }
            Level::Pd if ps => mask |= 0x1f_e000,
            Level::Pdpt | Level::Pd | Level::Pt => {}
        }
        mask
    }

    /// Whether `addr` is a valid input address.
    #[inline]
    pub(crate) const fn input_ok(&self, addr: u64) -> bool {
        let width = self.levels.width();
        match self.input {
            InputCheck::ZeroExtended => addr >> width == 0,
            InputCheck::Canonical => {
                let high = (addr as i64) >> (width - 1);
                high == 0 || high == -1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_geometry() {
        assert_eq!(Level::Pt.span(), 4096);
        assert_eq!(Level::Pd.span(), 2 << 20);
        assert_eq!(Level::Pml4.span(), 1 << 39);
        assert_eq!(Level::Pml4.index(0x0000_7fff_ffff_f000), 255);
        assert_eq!(Level::Pt.index(0x1000), 1);
        assert_eq!(Levels::Three.width(), 39);
        assert_eq!(Levels::Four.width(), 48);
        assert_eq!(Levels::Five.width(), 57);
        assert_eq!(Level::Pml5.below(), Some(Level::Pml4));
        assert_eq!(Level::of_leaf(PageSize::Size1G), Level::Pdpt);
        assert_eq!(Level::Pml4.leaf_size(), None);
        assert_eq!(Level::Pdpt.to_string(), "PDPTE");
        assert_eq!(Level::from_number(4), Some(Level::Pml4));
        assert_eq!(Level::from_number(0), None);
        assert_eq!(Level::from_number(6), None);
    }

    #[test]
    fn input_checks() {
        let cpu = PagingConfig::cpu(Levels::Four);
        assert!(cpu.input_ok(0x0000_7fff_ffff_ffff));
        assert!(cpu.input_ok(0xffff_8000_0000_0000));
        assert!(!cpu.input_ok(0x0000_8000_0000_0000));
        assert!(!cpu.input_ok(0xfff0_0000_0000_0000));
        let la57 = PagingConfig::cpu(Levels::Five);
        assert!(la57.input_ok(0x00ff_ffff_ffff_ffff));
        assert!(!la57.input_ok(0x0100_0000_0000_0000));
        let ss = PagingConfig::second_stage(Levels::Three);
        assert!(ss.input_ok((1 << 39) - 1));
        assert!(!ss.input_ok(1 << 39));
        assert!(!ss.input_ok(u64::MAX));
    }

    #[test]
    fn reserved_bits_follow_the_sdm() {
        let c = PagingConfig {
            max_phys_bits: 46,
            nxe: false,
            ..PagingConfig::default()
        };
        let r = c.reserved_bits(Level::Pt, false);
        assert_eq!(r & (1 << 46), 1 << 46);
        assert_eq!(r & (1 << 45), 0);
        assert_eq!(r & (1 << 63), 1 << 63);
        assert_eq!(r & (1 << 52), 0); // bits 62:52 are ignored, not reserved
        assert_ne!(c.reserved_bits(Level::Pml4, false) & PteFlags::PS.bits(), 0);
        assert_ne!(c.reserved_bits(Level::Pd, true) & (1 << 13), 0);
        assert_eq!(c.reserved_bits(Level::Pd, false) & (1 << 13), 0);
        assert_ne!(c.reserved_bits(Level::Pdpt, true) & (1 << 29), 0);
        let no1g = PagingConfig {
            page_1g: false,
            ..PagingConfig::default()
        };
        assert_eq!(no1g.reserved_bits(Level::Pdpt, true), PteFlags::PS.bits());
        let wide = PagingConfig {
            max_phys_bits: 60,
            ..PagingConfig::default()
        };
        assert_eq!(wide.phys_mask(), ADDR_MASK);
    }
}

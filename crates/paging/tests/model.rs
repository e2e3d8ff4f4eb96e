//! Property test: random sequences of map / unmap / protect, checked against
//! a plain map of 4 KiB pages at many probe addresses, for 4- and 5-level
//! paging. After every operation the tables must translate exactly as the
//! model says, and when everything is unmapped only the root may remain.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;

use iovirt_core::{Access, BitmapFrameAllocator, Gva, HostMemory, Hpa, PageSize, Perms};
use iovirt_paging::{Levels, MapError, Mapping, PageTable, PagingConfig, PteFlags, WalkFault};
use proptest::prelude::*;

const PAGE: u64 = 4096;
/// Pages in the window the operations work in (16 MiB: eight 2 MiB slots).
const WINDOW_PAGES: u64 = 4096;

#[derive(Debug, Clone)]
enum Op {
    /// Map `pages` pages at window page `first` to physical page `phys`.
    Map {
        first: u64,
        pages: u64,
        phys: u64,
        flags: u8,
        huge: bool,
    },
    Unmap {
        first: u64,
        pages: u64,
    },
    Protect {
        first: u64,
        pages: u64,
        flags: u8,
    },
}

fn leaf_flags(bits: u8) -> PteFlags {
    let mut f = PteFlags::empty();
    f.set(PteFlags::RW, bits & 1 != 0);
    f.set(PteFlags::US, bits & 2 != 0);
    f.set(PteFlags::NX, bits & 4 != 0);
    f
}

fn expected_perms(bits: u8) -> Perms {
    let mut p = Perms::READ;
    p.set(Perms::WRITE, bits & 1 != 0);
    p.set(Perms::USER, bits & 2 != 0);
    p.set(Perms::EXECUTE, bits & 4 == 0);
    p
}

/// Page numbers that favour 2 MiB boundaries so huge pages get exercised.
fn page_index() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..WINDOW_PAGES,
        (0..WINDOW_PAGES / 512).prop_map(|s| s * 512)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (page_index(), 1u64..1100, 0u64..(1 << 20), 0u8..8, any::<bool>()).prop_map(
            |(first, pages, phys, flags, huge)| {
                // Align the physical side like the input side half the time.
                let phys = if huge { (phys & !511) | (first & 511) } else { phys };
                Op::Map { first, pages, phys, flags, huge }
            }
        ),
        2 => (page_index(), 1u64..1100).prop_map(|(first, pages)| Op::Unmap { first, pages }),
        1 => (page_index(), 1u64..1100, 0u8..8)
            .prop_map(|(first, pages, flags)| Op::Protect { first, pages, flags }),
    ]
}

struct Harness {
    base: u64,
    mem: HostMemory,
    frames: BitmapFrameAllocator<Hpa>,
    pt: PageTable<Gva, Hpa>,
    /// Window page → (physical page, flag bits).
    model: BTreeMap<u64, (u64, u8)>,
}

impl Harness {
    fn new(levels: Levels, base: u64) -> Harness {
        let mut mem = HostMemory::new(32 << 20).unwrap();
        let mut frames = BitmapFrameAllocator::new(Hpa::new(0), (32 << 20) / PAGE);
        let pt = PageTable::new(&mut mem, &mut frames, PagingConfig::cpu(levels)).unwrap();
        Harness {
            base,
            mem,
            frames,
            pt,
            model: BTreeMap::new(),
        }
    }

    fn clip(first: u64, pages: u64) -> u64 {
        pages.min(WINDOW_PAGES - first)
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Map {
                first,
                pages,
                phys,
                flags,
                huge,
            } => {
                let pages = Self::clip(first, pages);
                let m = Mapping::new(
                    Gva::new(self.base + first * PAGE),
                    Hpa::new(phys * PAGE),
                    pages * PAGE,
                    leaf_flags(flags),
                )
                .with_largest(if huge {
                    PageSize::Size2M
                } else {
                    PageSize::Size4K
                });
                let free_before = self.frames.free_frames();
                let overlap = (first..first + pages).find(|p| self.model.contains_key(p));
                let res = self.pt.map(&mut self.mem, &mut self.frames, m);
                match overlap {
                    Some(p) => {
                        prop_assert_eq!(
                            res,
                            Err(MapError::AlreadyMapped {
                                addr: self.base + p * PAGE
                            })
                        );
                        prop_assert_eq!(self.frames.free_frames(), free_before);
                    }
                    None => {
                        let report = res.map_err(|e| TestCaseError::fail(e.to_string()))?;
                        let covered = report.leaves[0] + 512 * report.leaves[1];
                        prop_assert_eq!(covered, pages);
                        for i in 0..pages {
                            self.model.insert(first + i, (phys + i, flags));
                        }
                    }
                }
            }
            Op::Unmap { first, pages } => {
                let pages = Self::clip(first, pages);
                self.pt
                    .unmap(
                        &mut self.mem,
                        &mut self.frames,
                        Gva::new(self.base + first * PAGE),
                        pages * PAGE,
                    )
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                for p in first..first + pages {
                    self.model.remove(&p);
                }
            }
            Op::Protect {
                first,
                pages,
                flags,
            } => {
                let pages = Self::clip(first, pages);
                self.pt
                    .protect(
                        &mut self.mem,
                        &mut self.frames,
                        Gva::new(self.base + first * PAGE),
                        pages * PAGE,
                        leaf_flags(flags),
                    )
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                for p in first..first + pages {
                    if let Some(entry) = self.model.get_mut(&p) {
                        entry.1 = flags;
                    }
                }
            }
        }
        Ok(())
    }

    fn check(&self, probes: &[(u64, u64)]) -> Result<(), TestCaseError> {
        for &(page, offset) in probes {
            let va = self.base + page * PAGE + offset;
            let t = self.pt.translate(&self.mem, Gva::new(va), Access::READ);
            match self.model.get(&page) {
                None => prop_assert!(
                    matches!(t, Err(WalkFault::NotPresent { .. })),
                    "page {} should be unmapped: {:?}",
                    page,
                    t
                ),
                Some(&(phys, flags)) => {
                    let t = t.map_err(|e| TestCaseError::fail(format!("page {page}: {e}")))?;
                    prop_assert_eq!(t.addr, Hpa::new(phys * PAGE + offset), "page {}", page);
                    prop_assert_eq!(t.perms, expected_perms(flags), "page {}", page);
                }
            }
        }
        Ok(())
    }
}

fn run(levels: Levels, base: u64, ops: &[Op], probes: &[(u64, u64)]) -> Result<(), TestCaseError> {
    let mut h = Harness::new(levels, base);
    let total = h.frames.free_frames() + 1;
    for op in ops {
        h.apply(op)?;
        h.check(probes)?;
        // Every page of every op's edges, where bugs in splitting hide.
        let edges: Vec<(u64, u64)> = match *op {
            Op::Map { first, pages, .. }
            | Op::Unmap { first, pages }
            | Op::Protect { first, pages, .. } => {
                let last = first + Harness::clip(first, pages) - 1;
                [
                    first.saturating_sub(1),
                    first,
                    last,
                    (last + 1).min(WINDOW_PAGES - 1),
                ]
                .into_iter()
                .map(|p| (p, 8))
                .collect()
            }
        };
        h.check(&edges)?;
    }
    // Unmapping the whole window leaves only the root.
    h.pt.unmap(
        &mut h.mem,
        &mut h.frames,
        Gva::new(base),
        WINDOW_PAGES * PAGE,
    )
    .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(h.pt.tables_in_use(), 1);
    prop_assert_eq!(h.frames.free_frames() + 1, total);
    Ok(())
}

fn probes() -> impl Strategy<Value = Vec<(u64, u64)>> {
    proptest::collection::vec((0..WINDOW_PAGES, (0..PAGE / 8).prop_map(|w| w * 8)), 48)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// 4-level, window straddling a 1 GiB boundary (two PDPT entries).
    #[test]
    fn four_level_matches_model(ops in proptest::collection::vec(op(), 1..24), probes in probes()) {
        run(Levels::Four, (1 << 30) - (8 << 20), &ops, &probes)?;
    }

    /// 5-level, window straddling a PML5 entry boundary (at 2^48).
    #[test]
    fn five_level_matches_model(ops in proptest::collection::vec(op(), 1..24), probes in probes()) {
        run(Levels::Five, (1 << 48) - (8 << 20), &ops, &probes)?;
    }

    /// 4-level in the upper canonical half.
    #[test]
    fn upper_half_matches_model(ops in proptest::collection::vec(op(), 1..12), probes in probes()) {
        run(Levels::Four, 0xffff_8000_0000_0000, &ops, &probes)?;
    }
}

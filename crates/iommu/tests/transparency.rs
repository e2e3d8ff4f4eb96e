//! Transparency, a property of the whole IOMMU on random platforms, through
//! its DMA port: the IOTLB and the walk cache, whatever their geometry and
//! replacement policy, never change what a DMA does as long as software
//! invalidates after every unmap and protect. A platform with caches and one
//! without agree on every result, every byte read, every fault record and, at
//! the end, every byte of memory.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::{
    Geometry, HUGE_PAGES, Host, PAGE, drain_faults, geometry, leaf_flags, levels, requester, seen,
};
use iovirt_core::{AccessKind, DmaPort, FaultReason, Hpa, Iova, PageSize, PhysMemory};
use iovirt_iommu::{DmaRequest, DomainId, FaultRecord, Invalidation, Replacement};
use iovirt_paging::{EditReport, Levels, MapError, Mapping};
use proptest::prelude::*;

impl Geometry {
    /// No caching at all: every access walks from the root.
    const NONE: Geometry = Geometry {
        entries: 0,
        ways: 0,
        replacement: Replacement::Lru,
        walk_cache: 0,
    };
}

/// The smallest invalidation order whose aligned block of `2^order` pages
/// holds every page of `first..first + pages`.
fn covering_order(first: u64, pages: u64) -> u8 {
    let last = first + pages - 1;
    let mut order = 0u8;
    while first >> order != last >> order {
        order += 1;
    }
    order
}

/// Host memory of a transparency platform: tables in `[0, 1 MiB)`, data
/// frames in `[2 MiB, 8 MiB)`.
const T_MEM: u64 = 8 << 20;
const T_TABLE_FRAMES: u64 = 256;
const T_DATA_BASE: u64 = 2 << 20;
const T_DATA_PAGES: u64 = 1536;
/// IOVA pages the operations work in: 8 MiB, four 2 MiB slots.
const T_WINDOW: u64 = 2048;
/// Domains and requesters of a transparency platform.
const T_DOMAINS: usize = 2;
const T_REQUESTERS: usize = 3;

#[derive(Debug, Clone)]
enum TOp {
    /// Map `pages` pages at `first` onto data page `phys` (aligned like
    /// `first` when `huge`, which allows 2 MiB leaves).
    Map {
        dom: usize,
        first: u64,
        pages: u64,
        phys: u64,
        writable: bool,
        huge: bool,
    },
    /// Unmap, then invalidate the range (or the whole domain).
    Unmap {
        dom: usize,
        first: u64,
        pages: u64,
        whole_domain: bool,
    },
    /// Protect, then invalidate the range (or the whole domain).
    Protect {
        dom: usize,
        first: u64,
        pages: u64,
        writable: bool,
        whole_domain: bool,
    },
    /// A burst of `burst` DMAs, each [`BURST_STRIDE`] bytes after the last;
    /// DMA `k` is a write when bit `k` of `writes` is set, else a read (so a
    /// write often follows a read of the same page, and finds its
    /// translation cached with the read's permissions).
    Dma {
        req: usize,
        at: At,
        len: usize,
        burst: u64,
        writes: u8,
        seed: u8,
    },
    Prefetch {
        req: usize,
        at: At,
        write: bool,
    },
}

/// Distance between the DMAs of a burst: most stay in the page and hit.
const BURST_STRIDE: u64 = 384;

/// Where a DMA or prefetch goes.
#[derive(Debug, Clone, Copy)]
enum At {
    /// A byte of one of the hot pages.
    Hot { page: u64, offset: u64 },
    /// A byte of one of the earlier mappings of the requester's domain
    /// (`back` counts from the latest), mapped still or not.
    Mapped { back: usize, page: u64, offset: u64 },
    /// A byte of the range of one of the earlier unmaps or protects of the
    /// requester's domain: where a stale translation would show.
    Edited { back: usize, page: u64, offset: u64 },
    /// Any byte of the window.
    Any(u64),
}

/// Page numbers that favour the hot pages and 2 MiB boundaries, where huge
/// pages and splits are.
fn t_page() -> impl Strategy<Value = u64> {
    prop_oneof![
        2 => 0..T_WINDOW,
        2 => prop::sample::select(&T_HOT[..]),
        1 => (0..T_WINDOW / HUGE_PAGES).prop_map(|s| s * HUGE_PAGES),
        1 => (1..T_WINDOW / HUGE_PAGES).prop_map(|s| s * HUGE_PAGES - 1),
    ]
}

/// The pages most DMAs go to, so that translations are used again (and hit
/// or miss in the caches) and huge-page edges are crossed.
const T_HOT: [u64; 14] = [
    0, 1, 2, 7, 100, 511, 512, 513, 600, 1023, 1024, 1025, 1500, 2047,
];

fn t_at() -> impl Strategy<Value = At> {
    prop_oneof![
        2 => (prop::sample::select(&T_HOT[..]), 0..PAGE)
            .prop_map(|(page, offset)| At::Hot { page, offset }),
        4 => (
            prop_oneof![2 => Just(0usize), 1 => 0usize..4],
            prop_oneof![3 => 0u64..2, 1 => 0u64..700],
            0..PAGE,
        )
            .prop_map(|(back, page, offset)| At::Mapped { back, page, offset }),
        2 => (0usize..2, 0u64..700, 0..PAGE)
            .prop_map(|(back, page, offset)| At::Edited { back, page, offset }),
        1 => (0..T_WINDOW * PAGE).prop_map(At::Any),
    ]
}

/// DMA lengths: mostly within a page or two, sometimes up to three pages.
fn t_len() -> impl Strategy<Value = usize> {
    prop_oneof![3 => 1usize..=512, 1 => 1usize..=9000]
}

fn t_map() -> impl Strategy<Value = TOp> {
    let any_map = (
        0..T_DOMAINS,
        t_page(),
        1u64..700,
        0..T_DATA_PAGES,
        prop::bool::weighted(0.8),
        any::<bool>(),
    );
    // At least one whole 2 MiB page, on a 2 MiB boundary or just below one.
    let huge_map = (
        0..T_DOMAINS,
        0..T_WINDOW / HUGE_PAGES,
        prop_oneof![Just(0u64), 1u64..8],
        HUGE_PAGES..2 * HUGE_PAGES,
        0..T_DATA_PAGES,
        prop::bool::weighted(0.8),
    )
        .prop_map(|(dom, slot, below, pages, phys, writable)| {
            let first = (slot * HUGE_PAGES).saturating_sub(below);
            (dom, first, pages, phys, writable, true)
        });
    prop_oneof![3 => any_map, 1 => huge_map].prop_map(
        |(dom, first, pages, phys, writable, huge)| TOp::Map {
            dom,
            first,
            pages,
            phys,
            writable,
            huge,
        },
    )
}

fn t_op() -> impl Strategy<Value = TOp> {
    prop_oneof![
        3 => t_map(),
        1 => (0..T_DOMAINS, t_page(), 1u64..700, prop::bool::weighted(0.25))
            .prop_map(|(dom, first, pages, whole_domain)| TOp::Unmap { dom, first, pages, whole_domain }),
        1 => (0..T_DOMAINS, t_page(), 1u64..700, any::<bool>(), prop::bool::weighted(0.25))
            .prop_map(|(dom, first, pages, writable, whole_domain)| TOp::Protect { dom, first, pages, writable, whole_domain }),
        10 => (0..T_REQUESTERS, t_at(), t_len(), 1u64..=4, any::<u8>(), any::<u8>())
            .prop_map(|(req, at, len, burst, writes, seed)| TOp::Dma { req, at, len, burst, writes, seed }),
        2 => (0..T_REQUESTERS, t_at(), any::<bool>())
            .prop_map(|(req, at, write)| TOp::Prefetch { req, at, write }),
    ]
}

#[derive(Debug, Clone)]
struct TransparencyCase {
    geometry: Geometry,
    levels: [Levels; T_DOMAINS],
    /// Domain of each requester.
    attach: [usize; T_REQUESTERS],
    ops: Vec<TOp>,
}

fn transparency_case() -> impl Strategy<Value = TransparencyCase> {
    (
        geometry(),
        [levels(), levels()],
        [0..T_DOMAINS, 0..T_DOMAINS, 0..T_DOMAINS],
        prop::collection::vec(t_map(), 2..6),
        prop::collection::vec(t_op(), 1..48),
    )
        .prop_map(|(geometry, levels, attach, mut ops, more)| {
            // A few mappings first, so most DMAs have something to hit.
            ops.extend(more);
            TransparencyCase {
                geometry,
                levels,
                attach,
                ops,
            }
        })
}

/// What a device sees of one access: success, or the fault (address, access, reason).
type Seen = Result<(), (u64, AccessKind, FaultReason)>;

/// What an operation did, as far as a device or the software can tell.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The operation was clipped to nothing.
    Skipped,
    /// A table edit: its result, and the table frames in use after it.
    Edit(Result<(), MapError>, u64),
    /// Each DMA of a burst: result, and for a read the buffer.
    Dma(Vec<(Seen, Vec<u8>)>),
    Prefetch(Seen),
}

/// The data frames' contents before any DMA (built once: debug builds are
/// slow at per-byte loops over megabytes).
fn t_initial_data() -> &'static [u8] {
    static DATA: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    DATA.get_or_init(|| {
        (0..T_DATA_PAGES * PAGE)
            .map(|i| (i / PAGE) as u8 ^ (i as u8).wrapping_mul(31))
            .collect()
    })
}

fn t_domain(d: usize) -> DomainId {
    DomainId(d as u16 + 1)
}

/// One simulated machine: memory, tables, IOMMU, with the case's domains
/// and requesters; `None` when the IOMMU refuses `geometry`.
fn t_platform(case: &TransparencyCase, geometry: Geometry) -> Option<Host> {
    let mut p = Host::new(T_MEM, T_TABLE_FRAMES, geometry.config()).ok()?;
    // Data frames hold something recognisable before any DMA.
    p.mem
        .write(Hpa::new(T_DATA_BASE), t_initial_data())
        .unwrap();
    for (d, &levels) in case.levels.iter().enumerate() {
        p.add_domain(t_domain(d), levels);
    }
    for (r, &d) in case.attach.iter().enumerate() {
        p.attach(requester(r), t_domain(d), false);
    }
    Some(p)
}

/// What only the transparency test asks of the shared [`Host`].
impl Host {
    /// Invalidates after an edit of `pages` pages at `first` in domain `dom`.
    fn invalidate(&mut self, dom: usize, first: u64, pages: u64, whole_domain: bool) {
        let inv = if whole_domain {
            Invalidation::Domain(t_domain(dom))
        } else {
            Invalidation::Page {
                domain: t_domain(dom),
                addr: Iova::new(first * PAGE),
                order: covering_order(first, pages),
            }
        };
        self.iommu.invalidate(inv);
    }

    /// Clips an edit of `pages` pages at `first` in domain `dom` to the
    /// window, makes it (`edit` of the domain, the first address and the
    /// length), then invalidates: what it did, and the table frames in use
    /// after it.
    fn edit_and_invalidate(
        &mut self,
        dom: usize,
        first: u64,
        pages: u64,
        whole_domain: bool,
        edit: impl FnOnce(&mut Host, DomainId, Iova, u64) -> Result<EditReport, MapError>,
    ) -> Outcome {
        let pages = pages.min(T_WINDOW - first);
        let r = edit(self, t_domain(dom), Iova::new(first * PAGE), pages * PAGE);
        self.invalidate(dom, first, pages, whole_domain);
        Outcome::Edit(r.map(|_| ()), self.frames.used_frames())
    }

    /// Applies `op`; a DMA or prefetch goes to `iova`.
    fn apply(&mut self, op: &TOp, iova: u64) -> (Outcome, Vec<FaultRecord>, usize) {
        let outcome = match *op {
            TOp::Map {
                dom,
                first,
                pages,
                phys,
                writable,
                huge,
            } => {
                let Some((pages, phys)) = map_extent(first, pages, phys, huge) else {
                    return (Outcome::Skipped, Vec::new(), 0);
                };
                let m = Mapping::new(
                    Iova::new(first * PAGE),
                    Hpa::new(T_DATA_BASE + phys * PAGE),
                    pages * PAGE,
                    leaf_flags(writable),
                )
                .with_largest(if huge {
                    PageSize::Size2M
                } else {
                    PageSize::Size4K
                });
                let r = self.map(t_domain(dom), m);
                Outcome::Edit(r.map(|_| ()), self.frames.used_frames())
            }
            TOp::Unmap {
                dom,
                first,
                pages,
                whole_domain,
            } => self.edit_and_invalidate(dom, first, pages, whole_domain, |p, id, at, len| {
                p.unmap(id, at, len)
            }),
            TOp::Protect {
                dom,
                first,
                pages,
                writable,
                whole_domain,
            } => self.edit_and_invalidate(dom, first, pages, whole_domain, |p, id, at, len| {
                p.protect(id, at, len, leaf_flags(writable))
            }),
            TOp::Dma {
                req,
                len,
                burst,
                writes,
                seed,
                ..
            } => {
                let data: Vec<u8> = (0..len)
                    .map(|i| (i as u8).wrapping_mul(seed | 1).wrapping_add(seed))
                    .collect();
                let mut port = self.port(DmaRequest::new(requester(req)));
                let dmas = (0..burst)
                    .map(|k| {
                        let at = Iova::new(iova + k * BURST_STRIDE);
                        if writes & (1 << k) != 0 {
                            (
                                port.dma_write(at, &data).map(|_| ()).map_err(seen),
                                Vec::new(),
                            )
                        } else {
                            let mut buf = vec![0u8; len];
                            let r = port.dma_read(at, &mut buf);
                            (r.map(|_| ()).map_err(seen), buf)
                        }
                    })
                    .collect();
                Outcome::Dma(dmas)
            }
            TOp::Prefetch { req, write, .. } => {
                let kind = if write {
                    AccessKind::Write
                } else {
                    AccessKind::Read
                };
                let mut port = self.port(DmaRequest::new(requester(req)));
                let r = port.prefetch(Iova::new(iova), kind);
                Outcome::Prefetch(r.map(|_| ()).map_err(seen))
            }
        };
        let records = drain_faults(&mut self.iommu);
        let irqs = std::mem::take(&mut self.irqs).len();
        (outcome, records, irqs)
    }
}

/// The pages and host page of a map operation once clipped to the window and
/// the data frames; `None` when nothing is left.
fn map_extent(first: u64, pages: u64, phys: u64, huge: bool) -> Option<(u64, u64)> {
    // For huge pages, place the host pages so that 2 MiB leaves fit.
    let phys = if huge {
        (phys & !(HUGE_PAGES - 1)) | (first & (HUGE_PAGES - 1))
    } else {
        phys
    };
    let pages = pages
        .min(T_WINDOW - first)
        .min(T_DATA_PAGES.saturating_sub(phys));
    (pages > 0).then_some((pages, phys))
}

/// Ranges of earlier operations: (domain, first page, pages).
type History = [(usize, u64, u64)];

/// The address `at` names for a requester of domain `dom`, given the ranges
/// mapped and edited so far.
fn resolve(at: At, dom: usize, maps: &History, edits: &History) -> u64 {
    let pick = |history: &History, back: usize, page: u64, offset: u64| {
        let mine: Vec<_> = history.iter().filter(|m| m.0 == dom).collect();
        match mine.len().checked_sub(1 + back % mine.len().max(1)) {
            Some(i) => (mine[i].1 + page % mine[i].2) * PAGE + offset,
            None => offset,
        }
    };
    match at {
        At::Hot { page, offset } => page * PAGE + offset,
        At::Any(iova) => iova,
        At::Mapped { back, page, offset } => pick(maps, back, page, offset),
        At::Edited { back, page, offset } => pick(edits, back, page, offset),
    }
}

fn run_transparency(case: &TransparencyCase) -> Result<(), TestCaseError> {
    let cached = t_platform(case, case.geometry);
    let plain = t_platform(case, Geometry::NONE);
    let (Some(mut cached), Some(mut plain)) = (cached, plain) else {
        return Err(TestCaseError::fail(format!(
            "a valid geometry was refused: {:?}",
            case.geometry
        )));
    };
    let mut maps = Vec::new();
    let mut edits = Vec::new();
    for (n, op) in case.ops.iter().enumerate() {
        let iova = match *op {
            TOp::Map {
                dom,
                first,
                pages,
                phys,
                huge,
                ..
            } => {
                if let Some((pages, _)) = map_extent(first, pages, phys, huge) {
                    maps.push((dom, first, pages));
                }
                0
            }
            TOp::Dma { req, at, .. } | TOp::Prefetch { req, at, .. } => {
                resolve(at, case.attach[req], &maps, &edits)
            }
            TOp::Unmap {
                dom, first, pages, ..
            }
            | TOp::Protect {
                dom, first, pages, ..
            } => {
                edits.push((dom, first, pages.min(T_WINDOW - first)));
                0
            }
        };
        let got = cached.apply(op, iova);
        let want = plain.apply(op, iova);
        prop_assert_eq!(got, want, "op {} at {:#x}: {:?}", n, iova, op);
    }
    let mut a = vec![0u8; T_MEM as usize];
    let mut b = vec![0u8; T_MEM as usize];
    cached.mem.read(Hpa::ZERO, &mut a).unwrap();
    plain.mem.read(Hpa::ZERO, &mut b).unwrap();
    if a != b {
        let i = a.iter().zip(&b).position(|(x, y)| x != y).unwrap();
        return Err(TestCaseError::fail(format!(
            "memory differs at {i:#x}: {:#04x} with caches, {:#04x} without",
            a[i], b[i]
        )));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// With correct invalidation, caching changes costs and nothing else.
    #[test]
    fn caches_are_transparent(case in transparency_case()) {
        run_transparency(&case)?;
    }
}

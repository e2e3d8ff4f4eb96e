//! Properties of the whole IOMMU on random platforms, through its DMA port.
//!
//! - **Isolation**: a requester attached to one domain only ever reads and
//!   changes the host frames that domain maps; every access the domain does
//!   not allow faults with the reason a plain model of the mappings predicts,
//!   and a requester with no context reaches nothing at all.
//! - **Transparency**: the IOTLB and the walk cache, whatever their geometry
//!   and replacement policy, never change what a DMA does as long as software
//!   invalidates after every unmap and protect. A platform with caches and
//!   one without agree on every result, every byte read, every fault record
//!   and, at the end, every byte of memory.
//! - **Stale translations**: without an invalidation a cached translation
//!   outlives an unmap or a protect, as on hardware; the invalidation ends it.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;

use iovirt_core::{
    AccessKind, BitmapFrameAllocator, DmaFault, DmaPort, FaultReason, HostMemory, Hpa, Iova, Irq,
    PageSize, PhysMemory,
};
use iovirt_iommu::{
    ContextEntry, DmaRequest, DomainId, FaultRecord, Invalidation, Iommu, IommuConfig, IotlbConfig,
    Replacement, RequesterId,
};
use iovirt_paging::{Levels, MapError, Mapping, PageTable, PagingConfig, PteFlags};
use proptest::prelude::*;

const PAGE: u64 = 4096;
const HUGE: u64 = 2 << 20;
/// Pages of a 2 MiB page.
const HUGE_PAGES: u64 = HUGE / PAGE;

// ---------------------------------------------------------------------------
// Shared pieces
// ---------------------------------------------------------------------------

/// An IOTLB geometry and walk-cache size.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    entries: usize,
    ways: usize,
    replacement: Replacement,
    walk_cache: usize,
}

impl Geometry {
    /// No caching at all: every access walks from the root.
    const NONE: Geometry = Geometry {
        entries: 0,
        ways: 0,
        replacement: Replacement::Lru,
        walk_cache: 0,
    };

    fn config(self) -> IommuConfig {
        IommuConfig {
            iotlb: IotlbConfig {
                entries: self.entries,
                ways: self.ways,
                replacement: self.replacement,
            },
            walk_cache_entries: self.walk_cache,
            ..IommuConfig::default()
        }
    }
}

/// Whether a geometry is one hardware could have: the IOTLB is off, or fully
/// associative, or `entries / ways` is a whole power of two.
fn valid_geometry(g: &Geometry) -> bool {
    g.entries == 0
        || g.ways == 0
        || (g.entries.is_multiple_of(g.ways) && (g.entries / g.ways).is_power_of_two())
}

fn geometry() -> impl Strategy<Value = Geometry> {
    (
        prop::sample::select(vec![0usize, 1, 2, 4, 16, 64]),
        prop::sample::select(vec![0usize, 1, 2, 4]),
        prop_oneof![Just(Replacement::Lru), Just(Replacement::Fifo)],
        prop::sample::select(vec![0usize, 1, 4, 16]),
    )
        .prop_map(|(entries, ways, replacement, walk_cache)| Geometry {
            entries,
            ways,
            replacement,
            walk_cache,
        })
        .prop_filter(
            "the IOTLB needs a power-of-two number of sets",
            valid_geometry,
        )
}

fn levels() -> impl Strategy<Value = Levels> {
    prop_oneof![Just(Levels::Three), Just(Levels::Four), Just(Levels::Five)]
}

/// The `i`-th requester of a platform: distinct for `i < 8`, spread over
/// buses, devices and functions.
fn requester(i: usize) -> RequesterId {
    RequesterId::new((i % 3 * 17) as u8, ((i * 7 + 1) % 32) as u8, (i % 8) as u8).unwrap()
}

fn leaf_flags(writable: bool) -> PteFlags {
    if writable {
        PteFlags::RW
    } else {
        PteFlags::empty()
    }
}

/// What a device sees of a fault (its cost is left out: caches change it).
fn seen(f: DmaFault) -> (u64, AccessKind, FaultReason) {
    (f.addr.raw(), f.access, f.reason)
}

/// Empties the fault log, returning what it held.
fn drain_faults(iommu: &mut Iommu) -> Vec<FaultRecord> {
    std::iter::from_fn(|| iommu.faults_mut().pop()).collect()
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

// ---------------------------------------------------------------------------
// Isolation
// ---------------------------------------------------------------------------

/// Host memory of the isolation platform: tables, then each domain's 4 KiB
/// frames, then each domain's 2 MiB page.
const ISO_MEM: u64 = 10 << 20;
/// Table frames of every domain: `[0, 1 MiB)`.
const ISO_TABLE_FRAMES: u64 = 256;
/// Domain `d`'s 4 KiB frames: `[1 MiB + d * 256 KiB, +256 KiB)`.
const ISO_SMALL_BASE: u64 = 1 << 20;
const ISO_SMALL_FRAMES: u64 = 64;
/// Domain `d`'s 2 MiB page: `[2 MiB + d * 2 MiB, +2 MiB)`.
const ISO_HUGE_BASE: u64 = 2 << 20;
/// Where every domain maps its 2 MiB page (the same IOVA in every domain:
/// only the domain tells them apart).
const ISO_HUGE_IOVA: u64 = 4 << 20;
/// 4 KiB pages are mapped in two bands of 32 pages, just below and just
/// above the 2 MiB page, so that DMA runs from one into the other.
const ISO_BAND_PAGES: u64 = 32;
const ISO_SMALL_SLOTS: u64 = 2 * ISO_BAND_PAGES;

/// The IOVA page number of 4 KiB slot `slot` (`0..ISO_SMALL_SLOTS`).
fn iso_small_iova_page(slot: u64) -> u64 {
    let huge_page = ISO_HUGE_IOVA / PAGE;
    if slot < ISO_BAND_PAGES {
        huge_page - ISO_BAND_PAGES + slot
    } else {
        huge_page + HUGE_PAGES + (slot - ISO_BAND_PAGES)
    }
}

/// Every data byte of domain `d` carries the tag in its top three bits.
fn domain_tag(d: usize) -> u8 {
    ((d as u8) + 1) << 5
}

fn has_tag(byte: u8, tag: u8) -> bool {
    byte & 0xe0 == tag
}

#[derive(Debug, Clone)]
struct DomainSpec {
    levels: Levels,
    /// Runs of 4 KiB slots: first slot, length, writable.
    runs: Vec<(u64, u64, bool)>,
    /// The 2 MiB page, if mapped: writable.
    huge: Option<bool>,
}

fn domain_spec() -> impl Strategy<Value = DomainSpec> {
    (
        levels(),
        prop::collection::vec(
            (0..ISO_SMALL_SLOTS, 1u64..=4, prop::bool::weighted(0.8)),
            1..10,
        ),
        prop::option::weighted(0.5, prop::bool::weighted(0.8)),
    )
        .prop_map(|(levels, runs, huge)| DomainSpec { levels, runs, huge })
}

/// Where a DMA starts.
#[derive(Debug, Clone)]
enum Target {
    /// In one of the domain's 4 KiB pages (picked modulo their number).
    Small { pick: usize, offset: u64 },
    /// In 4 KiB slot `slot`, whichever domain maps it (the same IOVA in every
    /// domain, so a translation cached for one domain would be found).
    Slot { slot: u64, offset: u64 },
    /// From two pages below the 2 MiB page to one page above it.
    Huge { offset: u64 },
    /// Anywhere in the bands and the 2 MiB page, mapped or not.
    Band { offset: u64 },
    /// Anywhere at all below 2^63: far-away holes and beyond-width inputs.
    Far { addr: u64 },
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        3 => (prop_oneof![2 => 0usize..3, 1 => any::<usize>()], 0..PAGE)
            .prop_map(|(pick, offset)| Target::Small { pick, offset }),
        2 => (ISO_BAND_PAGES - 4..ISO_BAND_PAGES + 4, 0..PAGE)
            .prop_map(|(slot, offset)| Target::Slot { slot, offset }),
        2 => (0..HUGE + 3 * PAGE).prop_map(|offset| Target::Huge { offset }),
        1 => (0..HUGE + 2 * ISO_BAND_PAGES * PAGE).prop_map(|offset| Target::Band { offset }),
        1 => prop_oneof![
            0..1u64 << 39,
            (1u64 << 39)..(1 << 48),
            (1u64 << 48)..(1 << 57),
            (1u64 << 57)..(1 << 63),
        ]
        .prop_map(|addr| Target::Far { addr }),
    ]
}

#[derive(Debug, Clone)]
struct DmaSpec {
    /// Attached requester (modulo their number), or `None` for the one
    /// without a context.
    req: Option<usize>,
    write: bool,
    target: Target,
    len: usize,
    seed: u8,
}

fn dma_spec() -> impl Strategy<Value = DmaSpec> {
    (
        prop::option::weighted(0.85, any::<usize>()),
        any::<bool>(),
        target(),
        1usize..=9000,
        any::<u8>(),
    )
        .prop_map(|(req, write, target, len, seed)| DmaSpec {
            req,
            write,
            target,
            len,
            seed,
        })
}

#[derive(Debug, Clone)]
struct IsolationCase {
    domains: Vec<DomainSpec>,
    /// Domain (modulo their number) of each attached requester.
    attach: Vec<usize>,
    geometry: Geometry,
    dmas: Vec<DmaSpec>,
}

fn isolation_case() -> impl Strategy<Value = IsolationCase> {
    (
        prop::collection::vec(domain_spec(), 2..=4),
        prop::collection::vec(any::<usize>(), 1..=5),
        geometry(),
        prop::collection::vec(dma_spec(), 1..32),
    )
        .prop_map(|(domains, attach, geometry, dmas)| IsolationCase {
            domains,
            attach,
            geometry,
            dmas,
        })
}

/// What one domain maps, as a plain map of 4 KiB pages.
struct DomainModel {
    id: DomainId,
    levels: Levels,
    tag: u8,
    /// IOVA page number → (host address of the page, writable).
    pages: BTreeMap<u64, (u64, bool)>,
    /// IOVA page numbers of the 4 KiB mappings, ascending.
    small: Vec<u64>,
}

impl DomainModel {
    /// The host address of IOVA `a`, if mapped.
    fn hpa(&self, a: u64) -> Option<u64> {
        self.pages.get(&(a / PAGE)).map(|&(hpa, _)| hpa + a % PAGE)
    }
}

/// The first byte of `addr..addr + len` a requester of `dom` (none: not
/// attached) may not access, and why; `None` when the whole range is allowed.
fn first_denied(
    dom: Option<&DomainModel>,
    addr: u64,
    len: usize,
    write: bool,
) -> Option<(u64, FaultReason)> {
    let Some(dom) = dom else {
        return Some((addr, FaultReason::ContextNotPresent));
    };
    let end = addr + len as u64;
    let mut a = addr;
    while a < end {
        if a >> dom.levels.width() != 0 {
            return Some((a, FaultReason::AddressBeyondWidth));
        }
        match dom.pages.get(&(a / PAGE)) {
            None => return Some((a, FaultReason::NotPresent)),
            Some(&(_, writable)) if write && !writable => {
                return Some((a, FaultReason::WriteDenied));
            }
            Some(_) => a = (a | (PAGE - 1)) + 1,
        }
    }
    None
}

/// A tagged byte pattern for the frame at `hpa`.
fn frame_pattern(tag: u8, hpa: u64) -> Vec<u8> {
    let salt = (hpa / PAGE) as u8;
    (0..PAGE as usize)
        .map(|i| tag | ((i as u8).wrapping_mul(7) ^ salt) & 0x1f)
        .collect()
}

/// Which part of the isolation platform's memory `hpa` is in, for messages.
fn iso_owner(hpa: u64) -> String {
    if hpa < ISO_TABLE_FRAMES * PAGE {
        "a page table".to_owned()
    } else if hpa < ISO_HUGE_BASE {
        format!(
            "domain {}'s 4 KiB frames",
            (hpa - ISO_SMALL_BASE) / (ISO_SMALL_FRAMES * PAGE)
        )
    } else {
        format!("domain {}'s 2 MiB page", (hpa - ISO_HUGE_BASE) / HUGE)
    }
}

fn run_isolation(case: &IsolationCase) -> Result<(), TestCaseError> {
    let mut mem = HostMemory::new(ISO_MEM).unwrap();
    let mut table_frames = BitmapFrameAllocator::new(Hpa::new(0), ISO_TABLE_FRAMES);
    let mut iommu = Iommu::new(case.geometry.config()).unwrap();

    // Build every domain's tables from the shared table pool, onto frames of
    // the domain's own pools, and fill those frames with the domain's tag.
    let mut doms = Vec::new();
    for (d, spec) in case.domains.iter().enumerate() {
        let mut pt = PageTable::<Iova, Hpa>::new(
            &mut mem,
            &mut table_frames,
            PagingConfig::second_stage(spec.levels),
        )
        .unwrap();
        let mut pages = BTreeMap::new();
        let small_base = ISO_SMALL_BASE + d as u64 * ISO_SMALL_FRAMES * PAGE;
        let mut used = 0;
        for &(first, len, writable) in &spec.runs {
            for slot in first..(first + len).min(ISO_SMALL_SLOTS) {
                let iova = iso_small_iova_page(slot);
                if pages.contains_key(&iova) {
                    continue;
                }
                // Downwards, so IOVA-contiguous pages are not host-contiguous.
                let hpa = small_base + (ISO_SMALL_FRAMES - 1 - used) * PAGE;
                used += 1;
                let m = Mapping::new(
                    Iova::new(iova * PAGE),
                    Hpa::new(hpa),
                    PAGE,
                    leaf_flags(writable),
                );
                pt.map(&mut mem, &mut table_frames, m).unwrap();
                pages.insert(iova, (hpa, writable));
            }
        }
        let small: Vec<u64> = pages.keys().copied().collect();
        if let Some(writable) = spec.huge {
            let hpa = ISO_HUGE_BASE + d as u64 * HUGE;
            let m = Mapping::new(
                Iova::new(ISO_HUGE_IOVA),
                Hpa::new(hpa),
                HUGE,
                leaf_flags(writable),
            )
            .with_largest(PageSize::Size2M);
            let report = pt.map(&mut mem, &mut table_frames, m).unwrap();
            prop_assert_eq!(report.leaves, [0, 1, 0]);
            for i in 0..HUGE_PAGES {
                pages.insert(ISO_HUGE_IOVA / PAGE + i, (hpa + i * PAGE, writable));
            }
        }
        let tag = domain_tag(d);
        for &(hpa, _) in pages.values() {
            mem.write(Hpa::new(hpa), &frame_pattern(tag, hpa)).unwrap();
        }
        let id = DomainId(d as u16 * 37 + 1);
        iommu.set_domain(id, pt.root(), spec.levels);
        doms.push(DomainModel {
            id,
            levels: spec.levels,
            tag,
            pages,
            small,
        });
    }
    let attached: Vec<usize> = case.attach.iter().map(|a| a % doms.len()).collect();
    for (i, &d) in attached.iter().enumerate() {
        iommu.set_context(
            requester(i),
            ContextEntry::Translate {
                domain: doms[d].id,
                pasid_enabled: false,
            },
        );
    }
    // Requester `attached.len()` is never given a context.

    // Everything the DMAs may change is tracked here; the rest must not move.
    let mut shadow = vec![0u8; ISO_MEM as usize];
    mem.read(Hpa::ZERO, &mut shadow).unwrap();
    let mut now = vec![0u8; ISO_MEM as usize];
    let mut irqs: Vec<Irq> = Vec::new();

    for (n, dma) in case.dmas.iter().enumerate() {
        let r = dma.req.map_or(attached.len(), |r| r % attached.len());
        let dom = attached.get(r).map(|&d| &doms[d]);
        // The unattached requester aims at domain 0's mappings.
        let aim = dom.unwrap_or(&doms[0]);
        let addr = match dma.target {
            Target::Small { pick, offset } => aim.small[pick % aim.small.len()] * PAGE + offset,
            Target::Huge { offset } => ISO_HUGE_IOVA - 2 * PAGE + offset,
            Target::Slot { slot, offset } => iso_small_iova_page(slot) * PAGE + offset,
            Target::Band { offset } => ISO_HUGE_IOVA - ISO_BAND_PAGES * PAGE + offset,
            Target::Far { addr } => addr,
        };
        let expected = first_denied(dom, addr, dma.len, dma.write);
        let moved = expected.map_or(dma.len, |(at, _)| (at - addr) as usize);
        let what = format!(
            "DMA {n}: requester {r} ({}) {} {:#x}+{:#x}",
            dom.map_or("unattached".to_owned(), |d| d.id.to_string()),
            if dma.write { "write" } else { "read" },
            addr,
            dma.len
        );

        let mut port = iommu.port(&mut mem, &mut irqs, DmaRequest::new(requester(r)));
        let (result, data) = if dma.write {
            let data: Vec<u8> = (0..dma.len)
                .map(|i| aim.tag | ((i as u8).wrapping_mul(13).wrapping_add(dma.seed) & 0x1f))
                .collect();
            (port.dma_write(Iova::new(addr), &data), data)
        } else {
            let mut buf = vec![0u8; dma.len];
            (port.dma_read(Iova::new(addr), &mut buf), buf)
        };

        // The result is the one the model predicts.
        let kind = if dma.write {
            AccessKind::Write
        } else {
            AccessKind::Read
        };
        match (result, expected) {
            (Ok(cost), None) => prop_assert_eq!(cost.bytes, dma.len as u64, "{}", what),
            (Err(fault), Some((at, reason))) => {
                prop_assert_eq!(seen(fault), (at, kind, reason), "{}", what);
            }
            (got, want) => {
                return Err(TestCaseError::fail(format!(
                    "{what}: got {got:?}, the model says {want:?}"
                )));
            }
        }
        // A fault is recorded (the log is drained after every DMA, so it has
        // room) and raises the fault event.
        let records = drain_faults(&mut iommu);
        match expected {
            None => {
                prop_assert!(records.is_empty(), "{}: {:?}", what, records);
                prop_assert!(irqs.is_empty(), "{}", what);
            }
            Some((at, reason)) => {
                prop_assert_eq!(records.len(), 1, "{}", what);
                prop_assert_eq!(records[0].requester, requester(r), "{}", what);
                prop_assert_eq!(
                    (records[0].addr, records[0].reason),
                    (at, reason),
                    "{}",
                    what
                );
                prop_assert_eq!(&irqs, &[Irq(0)], "{}", what);
            }
        }
        irqs.clear();

        let dom_hpa = |a: u64| dom.and_then(|d| d.hpa(a)).unwrap();
        if dma.write {
            // The bytes before the first denied one landed where the domain
            // maps them: in the domain's own frames.
            for (i, &b) in data.iter().enumerate().take(moved) {
                shadow[dom_hpa(addr + i as u64) as usize] = b;
            }
        } else {
            // Every byte read came from the domain's own frames.
            let tag = aim.tag;
            for (i, &b) in data.iter().enumerate().take(moved) {
                prop_assert!(
                    has_tag(b, tag),
                    "{}: byte {} is {:#04x}, not domain data",
                    what,
                    i,
                    b
                );
                prop_assert_eq!(
                    b,
                    shadow[dom_hpa(addr + i as u64) as usize],
                    "{}: byte {}",
                    what,
                    i
                );
            }
        }
        // Nothing else in memory changed: other domains' frames, the tables,
        // the unassigned frames, and the domain's own frames outside the DMA.
        mem.read(Hpa::ZERO, &mut now).unwrap();
        if now != shadow {
            let i = now.iter().zip(&shadow).position(|(a, b)| a != b).unwrap();
            return Err(TestCaseError::fail(format!(
                "{what}: host byte {i:#x} in {} changed from {:#04x} to {:#04x}",
                iso_owner(i as u64),
                shadow[i],
                now[i]
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Transparency
// ---------------------------------------------------------------------------

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

/// One simulated machine: memory, tables, IOMMU.
struct Platform {
    mem: HostMemory,
    frames: BitmapFrameAllocator<Hpa>,
    tables: Vec<PageTable<Iova, Hpa>>,
    iommu: Iommu,
    irqs: Vec<Irq>,
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

impl Platform {
    fn new(case: &TransparencyCase, geometry: Geometry) -> Option<Platform> {
        let iommu = Iommu::new(geometry.config()).ok()?;
        let mut p = Platform {
            mem: HostMemory::new(T_MEM).unwrap(),
            frames: BitmapFrameAllocator::new(Hpa::new(0), T_TABLE_FRAMES),
            tables: Vec::new(),
            iommu,
            irqs: Vec::new(),
        };
        // Data frames hold something recognisable before any DMA.
        p.mem
            .write(Hpa::new(T_DATA_BASE), t_initial_data())
            .unwrap();
        for (d, &levels) in case.levels.iter().enumerate() {
            let pt = PageTable::new(
                &mut p.mem,
                &mut p.frames,
                PagingConfig::second_stage(levels),
            )
            .unwrap();
            p.iommu.set_domain(t_domain(d), pt.root(), levels);
            p.tables.push(pt);
        }
        for (r, &d) in case.attach.iter().enumerate() {
            p.iommu.set_context(
                requester(r),
                ContextEntry::Translate {
                    domain: t_domain(d),
                    pasid_enabled: false,
                },
            );
        }
        Some(p)
    }

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

    /// Applies `op`; a DMA or prefetch goes to `iova`.
    fn apply(&mut self, op: &TOp, iova: u64) -> (Outcome, Vec<FaultRecord>, usize) {
        let edit = |r: Result<iovirt_paging::EditReport, MapError>| r.map(|_| ());
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
                let r = self.tables[dom].map(&mut self.mem, &mut self.frames, m);
                Outcome::Edit(edit(r), self.frames.used_frames())
            }
            TOp::Unmap {
                dom,
                first,
                pages,
                whole_domain,
            } => {
                let pages = pages.min(T_WINDOW - first);
                let r = self.tables[dom].unmap(
                    &mut self.mem,
                    &mut self.frames,
                    Iova::new(first * PAGE),
                    pages * PAGE,
                );
                self.invalidate(dom, first, pages, whole_domain);
                Outcome::Edit(edit(r), self.frames.used_frames())
            }
            TOp::Protect {
                dom,
                first,
                pages,
                writable,
                whole_domain,
            } => {
                let pages = pages.min(T_WINDOW - first);
                let r = self.tables[dom].protect(
                    &mut self.mem,
                    &mut self.frames,
                    Iova::new(first * PAGE),
                    pages * PAGE,
                    leaf_flags(writable),
                );
                self.invalidate(dom, first, pages, whole_domain);
                Outcome::Edit(edit(r), self.frames.used_frames())
            }
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
                let mut port = self.iommu.port(
                    &mut self.mem,
                    &mut self.irqs,
                    DmaRequest::new(requester(req)),
                );
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
                let mut port = self.iommu.port(
                    &mut self.mem,
                    &mut self.irqs,
                    DmaRequest::new(requester(req)),
                );
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
    let cached = Platform::new(case, case.geometry);
    let plain = Platform::new(case, Geometry::NONE);
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
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// DMA by any requester touches only its own domain's frames, reads only
    /// its own domain's data, and faults exactly where the model says.
    #[test]
    fn dma_is_confined_to_the_requesters_domain(case in isolation_case()) {
        run_isolation(&case)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// With correct invalidation, caching changes costs and nothing else.
    #[test]
    fn caches_are_transparent(case in transparency_case()) {
        run_transparency(&case)?;
    }
}

// ---------------------------------------------------------------------------
// Stale translations
// ---------------------------------------------------------------------------

/// A platform with one domain mapping IOVA 0x10000 to host 0x20_0000,
/// writable, and one requester attached to it.
struct Small {
    mem: HostMemory,
    frames: BitmapFrameAllocator<Hpa>,
    pt: PageTable<Iova, Hpa>,
    iommu: Iommu,
    irqs: Vec<Irq>,
    nic: RequesterId,
}

const STALE_IOVA: u64 = 0x1_0000;
const STALE_HPA: u64 = 0x20_0000;

impl Small {
    fn new() -> Small {
        let mut mem = HostMemory::new(4 << 20).unwrap();
        let mut frames = BitmapFrameAllocator::new(Hpa::new(0), 64);
        let mut pt = PageTable::<Iova, Hpa>::new(
            &mut mem,
            &mut frames,
            PagingConfig::second_stage(Levels::Four),
        )
        .unwrap();
        let m = Mapping::new(
            Iova::new(STALE_IOVA),
            Hpa::new(STALE_HPA),
            PAGE,
            PteFlags::RW,
        );
        pt.map(&mut mem, &mut frames, m).unwrap();
        let mut iommu = Iommu::new(IommuConfig::default()).unwrap();
        iommu.set_domain(DomainId(1), pt.root(), Levels::Four);
        let nic = requester(0);
        iommu.set_context(
            nic,
            ContextEntry::Translate {
                domain: DomainId(1),
                pasid_enabled: false,
            },
        );
        Small {
            mem,
            frames,
            pt,
            iommu,
            irqs: Vec::new(),
            nic,
        }
    }

    fn write(&mut self, data: &[u8]) -> Result<iovirt_core::Cost, DmaFault> {
        let req = DmaRequest::new(self.nic);
        self.iommu
            .port(&mut self.mem, &mut self.irqs, req)
            .dma_write(Iova::new(STALE_IOVA + 0x40), data)
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<iovirt_core::Cost, DmaFault> {
        let req = DmaRequest::new(self.nic);
        self.iommu
            .port(&mut self.mem, &mut self.irqs, req)
            .dma_read(Iova::new(STALE_IOVA + 0x40), buf)
    }

    fn invalidate_page(&mut self) {
        self.iommu.invalidate(Invalidation::Page {
            domain: DomainId(1),
            addr: Iova::new(STALE_IOVA),
            order: 0,
        });
    }

    fn host_bytes(&self) -> [u8; 4] {
        let mut b = [0u8; 4];
        self.mem.read(Hpa::new(STALE_HPA + 0x40), &mut b).unwrap();
        b
    }
}

/// Unmapping without invalidating leaves the IOTLB's translation in use, as
/// on hardware; the page invalidation ends it.
#[test]
fn unmap_without_invalidation_keeps_the_stale_translation() {
    let mut p = Small::new();
    let first = p.write(b"one!").unwrap();
    assert_eq!(first.iotlb_misses, 1);
    p.pt.unmap(&mut p.mem, &mut p.frames, Iova::new(STALE_IOVA), PAGE)
        .unwrap();

    // The tables no longer map the page, but the IOTLB still does.
    let stale = p.write(b"two!").unwrap();
    assert_eq!((stale.iotlb_hits, stale.table_reads), (1, 0));
    assert_eq!(&p.host_bytes(), b"two!");
    assert!(p.iommu.faults().is_empty());

    p.invalidate_page();
    let fault = p.write(b"tri!").unwrap_err();
    assert_eq!(fault.reason, FaultReason::NotPresent);
    assert_eq!(fault.addr, Iova::new(STALE_IOVA + 0x40));
    assert_eq!(&p.host_bytes(), b"two!");
    let fault = p.read(&mut [0u8; 4]).unwrap_err();
    assert_eq!(fault.reason, FaultReason::NotPresent);
    assert_eq!(p.iommu.faults().len(), 2);
}

/// Write-protecting without invalidating leaves the writable translation in
/// the IOTLB; once invalidated, writes fault and reads still work.
#[test]
fn protect_without_invalidation_keeps_the_stale_write_permission() {
    let mut p = Small::new();
    p.write(b"one!").unwrap();
    p.pt.protect(
        &mut p.mem,
        &mut p.frames,
        Iova::new(STALE_IOVA),
        PAGE,
        PteFlags::empty(),
    )
    .unwrap();

    let stale = p.write(b"two!").unwrap();
    assert_eq!((stale.iotlb_hits, stale.table_reads), (1, 0));
    assert_eq!(&p.host_bytes(), b"two!");

    p.invalidate_page();
    let fault = p.write(b"tri!").unwrap_err();
    assert_eq!(fault.reason, FaultReason::WriteDenied);
    assert_eq!(&p.host_bytes(), b"two!");
    let mut buf = [0u8; 4];
    p.read(&mut buf).unwrap();
    assert_eq!(&buf, b"two!");
}

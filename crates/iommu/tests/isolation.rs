//! Isolation, a property of the whole IOMMU on random platforms, through its
//! DMA port: a requester attached to one domain only ever reads and changes
//! the host frames that domain maps; every access the domain does not allow
//! faults with the reason a plain model of the mappings predicts, and a
//! requester with no context reaches nothing at all.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::collections::BTreeMap;

use common::{
    Geometry, HUGE, HUGE_PAGES, Host, PAGE, drain_faults, geometry, leaf_flags, levels, requester,
    seen,
};
use iovirt_core::{AccessKind, DmaPort, FaultReason, Hpa, Iova, Irq, PageSize, PhysMemory};
use iovirt_iommu::{DmaRequest, DomainId};
use iovirt_paging::{Levels, Mapping};
use proptest::prelude::*;

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
    let mut host = Host::new(ISO_MEM, ISO_TABLE_FRAMES, case.geometry.config()).unwrap();

    // Build every domain's tables from the shared table pool, onto frames of
    // the domain's own pools, and fill those frames with the domain's tag.
    let mut doms = Vec::new();
    for (d, spec) in case.domains.iter().enumerate() {
        let id = DomainId(d as u16 * 37 + 1);
        host.add_domain(id, spec.levels);
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
                host.map(id, m).unwrap();
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
            let report = host.map(id, m).unwrap();
            prop_assert_eq!(report.leaves, [0, 1, 0]);
            for i in 0..HUGE_PAGES {
                pages.insert(ISO_HUGE_IOVA / PAGE + i, (hpa + i * PAGE, writable));
            }
        }
        let tag = domain_tag(d);
        for &(hpa, _) in pages.values() {
            host.mem
                .write(Hpa::new(hpa), &frame_pattern(tag, hpa))
                .unwrap();
        }
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
        host.attach(requester(i), doms[d].id, false);
    }
    // Requester `attached.len()` is never given a context.

    // Everything the DMAs may change is tracked here; the rest must not move.
    let mut shadow = vec![0u8; ISO_MEM as usize];
    host.mem.read(Hpa::ZERO, &mut shadow).unwrap();
    let mut now = vec![0u8; ISO_MEM as usize];

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

        let mut port = host.port(DmaRequest::new(requester(r)));
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
        let records = drain_faults(&mut host.iommu);
        match expected {
            None => {
                prop_assert!(records.is_empty(), "{}: {:?}", what, records);
                prop_assert!(host.irqs.is_empty(), "{}", what);
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
                prop_assert_eq!(&host.irqs, &[Irq(0)], "{}", what);
            }
        }
        host.irqs.clear();

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
        host.mem.read(Hpa::ZERO, &mut now).unwrap();
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// DMA by any requester touches only its own domain's frames, reads only
    /// its own domain's data, and faults exactly where the model says.
    #[test]
    fn dma_is_confined_to_the_requesters_domain(case in isolation_case()) {
        run_isolation(&case)?;
    }
}

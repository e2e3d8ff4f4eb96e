//! The IOMMU's behaviour through its public API: every fault reason, nested
//! PASID translation, GVMI tables, caches and their counters, invalidation
//! and the invalidation queue, the fault log and its event.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::Host;
use iovirt_core::{
    AccessKind, BitmapFrameAllocator, DmaPort, FaultReason, Gpa, Gva, GvmiDma, HostMemory, Hpa,
    Iova, Irq, MockInterruptSink, PageSize, PhysMemory,
};
use iovirt_iommu::{
    ContextEntry, DmaRequest, DomainId, GvmEntry, Gvmi, Invalidation, IommuConfig, IotlbConfig,
    Pasid, PasidEntry, QueueError, QueuedInvalidation, Replacement, RequesterId, Stage,
    UplinkAttribute,
};
use iovirt_paging::{Level, Levels, Mapping, PageTable, PagingConfig, PteFlags, WalkFault};

const MIB: u64 = 1 << 20;

fn rid(dev: u8) -> RequesterId {
    RequesterId::new(0, dev, 0).unwrap()
}

const D1: DomainId = DomainId(1);

/// 64 MiB of host memory, table frames from the first 16 MiB, one domain
/// (4-level second stage) with requester 00:01.0 attached.
fn platform(config: IommuConfig) -> Host {
    let mut p = Host::new(64 * MIB, 16 * MIB / 4096, config).unwrap();
    p.add_domain(D1, Levels::Four);
    p.attach(rid(1), D1, true);
    p
}

/// A fully associative LRU IOTLB of `entries` entries.
fn lru_iotlb(entries: usize) -> IommuConfig {
    IommuConfig {
        iotlb: IotlbConfig {
            entries,
            ways: 0,
            replacement: Replacement::Lru,
        },
        ..IommuConfig::default()
    }
}

/// What only the behaviour tests ask of the shared [`Host`].
impl Host {
    /// Maps `len` bytes at `iova` onto `hpa` in domain [`D1`], in pages of
    /// at most `largest`.
    fn map_d1(&mut self, iova: u64, hpa: u64, len: u64, flags: PteFlags, largest: PageSize) {
        let m = Mapping::new(Iova::new(iova), Hpa::new(hpa), len, flags).with_largest(largest);
        self.map(D1, m).unwrap();
    }

    /// Maps IOVA page `i` of domain [`D1`] onto the page `i` pages above
    /// 40 MiB, writable.
    fn map_page(&mut self, i: u64) {
        self.map_d1(
            i * 4096,
            40 * MIB + i * 4096,
            4096,
            PteFlags::RW,
            PageSize::Size4K,
        );
    }

    fn write(
        &mut self,
        dev: u8,
        iova: u64,
        data: &[u8],
    ) -> Result<iovirt_core::Cost, iovirt_core::DmaFault> {
        self.port(DmaRequest::new(rid(dev)))
            .dma_write(Iova::new(iova), data)
    }

    fn read(
        &mut self,
        req: DmaRequest,
        iova: u64,
        len: usize,
    ) -> Result<Vec<u8>, iovirt_core::DmaFault> {
        let mut buf = vec![0u8; len];
        self.port(req).dma_read(Iova::new(iova), &mut buf)?;
        Ok(buf)
    }

    fn last_fault(&self) -> iovirt_iommu::FaultRecord {
        *self.iommu.faults().records().last().unwrap()
    }
}

#[test]
fn miss_then_hit_and_bytes_land_in_the_mapped_frame() {
    let mut p = platform(IommuConfig::default());
    p.map_d1(
        0x4000_0000,
        32 * MIB,
        2 * 4096,
        PteFlags::RW,
        PageSize::Size4K,
    );
    let payload: Vec<u8> = (0..6000u32).map(|i| (i % 251) as u8).collect();
    // 6000 bytes from 0x100 into the first page: two pages, two translations.
    let cost = p.write(1, 0x4000_0100, &payload).unwrap();
    assert_eq!(
        (cost.iotlb_misses, cost.table_reads, cost.bytes),
        (2, 4 + 1, 6000)
    );
    let mut back = vec![0u8; 6000];
    p.mem.read(Hpa::new(32 * MIB + 0x100), &mut back).unwrap();
    assert_eq!(back, payload);
    let cost = p.write(1, 0x4000_0100, &payload).unwrap();
    assert_eq!(
        (cost.iotlb_hits, cost.iotlb_misses, cost.table_reads),
        (2, 0, 0)
    );
    let s = p.iommu.stats();
    assert_eq!(
        (
            s.iotlb_hits.get(),
            s.iotlb_misses.get(),
            s.walks.get(),
            s.table_reads.get()
        ),
        (2, 2, 2, 5)
    );
    assert_eq!(
        s.walk_cache.hits.get(),
        1,
        "the second page resumed from the cached PDE"
    );
    assert_eq!(s.dma_bytes.get(), 12_000);
}

#[test]
fn huge_pages_take_one_entry() {
    let mut p = platform(IommuConfig::default());
    p.map_d1(
        0x4000_0000,
        32 * MIB,
        2 * MIB,
        PteFlags::RW,
        PageSize::Size2M,
    );
    for off in (0..2 * MIB).step_by(64 * 1024) {
        p.write(1, 0x4000_0000 + off, &[1, 2, 3]).unwrap();
    }
    let s = p.iommu.stats();
    assert_eq!((s.iotlb_misses.get(), s.iotlb_hits.get()), (1, 31));
    assert_eq!(p.iommu.iotlb_occupancy(), 1);
    assert_eq!(p.mem.read_u16(Hpa::new(32 * MIB + MIB)).unwrap(), 0x0201);
}

#[test]
fn every_fault_reason() {
    let mut p = platform(IommuConfig {
        fault_records: 32,
        ..IommuConfig::default()
    });
    p.map_d1(0x1000, 40 * MIB, 4096, PteFlags::empty(), PageSize::Size4K); // read-only
    let cases: Vec<(Result<Vec<u8>, iovirt_core::DmaFault>, FaultReason)> = vec![
        // No context for 00:02.0.
        (
            p.read(DmaRequest::new(rid(2)), 0x1000, 4),
            FaultReason::ContextNotPresent,
        ),
        // Beyond the 48-bit input width of a 4-level second stage.
        (
            p.read(DmaRequest::new(rid(1)), 1 << 48, 4),
            FaultReason::AddressBeyondWidth,
        ),
        // Second stage not present.
        (
            p.read(DmaRequest::new(rid(1)), 0x9000, 4),
            FaultReason::NotPresent,
        ),
        // PASID not in the requester's PASID table.
        (
            p.read(
                DmaRequest::new(rid(1)).with_pasid(Pasid::new(5).unwrap()),
                0x1000,
                4,
            ),
            FaultReason::InvalidPasid,
        ),
    ];
    for (result, reason) in &cases {
        assert_eq!(result.as_ref().map_err(|f| f.reason), Err(*reason));
    }
    // Write to a read-only page.
    assert_eq!(
        p.write(1, 0x1000, &[1]).unwrap_err().reason,
        FaultReason::WriteDenied
    );
    assert_eq!(
        p.last_fault().walk,
        Some(WalkFault::WriteToReadOnly { level: Level::Pt })
    );
    // A context pointing at a domain that does not exist.
    p.attach(rid(3), DomainId(9), false);
    assert_eq!(
        p.write(3, 0x1000, &[1]).unwrap_err().reason,
        FaultReason::ContextNotPresent
    );
    // PASID on a context without PASID support.
    p.attach(rid(4), D1, false);
    p.iommu.set_pasid(
        rid(4),
        Pasid::new(1).unwrap(),
        PasidEntry {
            first_stage_root: Gpa::new(0),
            levels: Levels::Four,
        },
    );
    let req = DmaRequest::new(rid(4)).with_pasid(Pasid::new(1).unwrap());
    assert_eq!(
        p.read(req, 0x1000, 4).unwrap_err().reason,
        FaultReason::InvalidPasid
    );
    // A reserved bit in a second-stage entry (bit 51 with MAXPHYADDR 46).
    let mut narrow = platform(IommuConfig {
        max_phys_bits: 46,
        ..IommuConfig::default()
    });
    narrow.map_d1(0x1000, 40 * MIB, 4096, PteFlags::RW, PageSize::Size4K);
    let pte = narrow
        .table(D1)
        .walk(&narrow.mem, Iova::new(0x1000), iovirt_core::Access::READ)
        .trace
        .last()
        .unwrap();
    narrow
        .mem
        .write_u64(pte.addr, pte.entry.raw() | (1 << 51))
        .unwrap();
    assert_eq!(
        narrow.write(1, 0x1000, &[1]).unwrap_err().reason,
        FaultReason::ReservedBit
    );
    // A second-stage root outside memory.
    p.iommu
        .set_domain(DomainId(7), Hpa::new(1 << 40), Levels::Four);
    p.attach(rid(5), DomainId(7), false);
    assert_eq!(
        p.write(5, 0x1000, &[1]).unwrap_err().reason,
        FaultReason::TableOutsideMemory
    );
    // A mapping onto host-physical space with no memory behind it: a master abort, not recorded.
    p.map_d1(0x2000, 1 << 40, 4096, PteFlags::RW, PageSize::Size4K);
    let recorded = p.iommu.faults().len();
    assert_eq!(
        p.write(1, 0x2000, &[1]).unwrap_err().reason,
        FaultReason::OutsideMemory
    );
    assert_eq!(p.iommu.faults().len(), recorded);
    // Pass-through beyond memory.
    p.iommu.set_context(rid(6), ContextEntry::PassThrough);
    assert_eq!(
        p.write(6, 64 * MIB, &[1]).unwrap_err().reason,
        FaultReason::OutsideMemory
    );
    assert!(p.write(6, 64 * MIB - 1, &[9]).is_ok());
    assert_eq!(p.mem.read_u16(Hpa::new(64 * MIB - 2)).unwrap(), 0x0900);

    let s = p.iommu.stats();
    assert_eq!(s.faults.context_not_present.get(), 2);
    assert_eq!(s.faults.invalid_pasid.get(), 2);
    assert_eq!(s.faults.write_denied.get(), 1);
    assert_eq!(s.faults.outside_memory.get(), 2);
    assert_eq!(s.faults.total(), 10);
    assert_eq!(
        p.iommu.faults().len(),
        8,
        "master aborts are not translation faults"
    );
    let first = p.iommu.faults().records().next().unwrap();
    assert_eq!(
        (first.requester, first.addr, first.access),
        (rid(2), 0x1000, AccessKind::Read)
    );
}

#[test]
fn fault_event_once_per_batch_and_overflow() {
    let mut p = platform(IommuConfig {
        fault_records: 2,
        fault_irq: Some(Irq(33)),
        ..IommuConfig::default()
    });
    let mut sink = MockInterruptSink::new();
    sink.expect_raise()
        .withf(|irq| *irq == Irq(33))
        .times(2)
        .return_const(());
    for iova in [0x1000u64, 0x2000, 0x3000] {
        let mut port = p.iommu.port(&mut p.mem, &mut sink, DmaRequest::new(rid(1)));
        assert!(port.dma_write(Iova::new(iova), &[0]).is_err());
    }
    assert!(p.iommu.faults().overflow());
    assert_eq!(p.iommu.faults().dropped(), 1);
    // Software services both records; the next fault raises a new event.
    p.iommu.faults_mut().pop();
    p.iommu.faults_mut().pop();
    p.iommu.faults_mut().clear_overflow();
    let mut port = p.iommu.port(&mut p.mem, &mut sink, DmaRequest::new(rid(1)));
    assert!(port.prefetch(Iova::new(0x5000), AccessKind::Read).is_err());
    // A masked event raises nothing.
    let mut masked = platform(IommuConfig {
        fault_irq: None,
        ..IommuConfig::default()
    });
    assert!(masked.write(1, 0x1000, &[0]).is_err());
    assert!(masked.irqs.is_empty());
}

#[test]
fn stale_translation_until_invalidated() {
    let mut p = platform(IommuConfig::default());
    p.map_d1(0x1000, 40 * MIB, 4096, PteFlags::RW, PageSize::Size4K);
    p.write(1, 0x1000, b"old").unwrap();
    p.unmap(D1, Iova::new(0x1000), 4096).unwrap();
    // The IOTLB still holds the translation: the DMA goes through, as on hardware.
    assert!(p.write(1, 0x1000, b"new").is_ok());
    assert_eq!(
        &p.mem.read_u32(Hpa::new(40 * MIB)).unwrap().to_le_bytes()[..3],
        b"new"
    );
    let removed = p.iommu.invalidate(Invalidation::Page {
        domain: D1,
        addr: Iova::new(0x1000),
        order: 0,
    });
    assert_eq!(removed, 1);
    assert_eq!(
        p.write(1, 0x1000, b"x").unwrap_err().reason,
        FaultReason::NotPresent
    );
    assert_eq!(p.iommu.stats().invalidations.page.get(), 1);
}

#[test]
fn invalidation_scopes() {
    let mut p = platform(lru_iotlb(64));
    for i in 0..8u64 {
        p.map_page(i);
        p.write(1, i * 4096, &[0]).unwrap();
    }
    // Order 2 covers four pages, aligned down: pages 4..8 for an address in page 5.
    assert_eq!(
        p.iommu.invalidate(Invalidation::Page {
            domain: D1,
            addr: Iova::new(5 * 4096 + 12),
            order: 2
        }),
        4
    );
    assert_eq!(p.iommu.invalidate(Invalidation::Domain(DomainId(2))), 0);
    assert_eq!(p.iommu.invalidate(Invalidation::Context(rid(1))), 4);
    assert_eq!(p.iommu.iotlb_occupancy(), 0);
    p.write(1, 0, &[0]).unwrap();
    // A huge order does not overflow: it covers everything.
    assert_eq!(
        p.iommu.invalidate(Invalidation::Page {
            domain: D1,
            addr: Iova::new(0),
            order: 255
        }),
        1
    );
    p.write(1, 0, &[0]).unwrap();
    assert_eq!(p.iommu.invalidate(Invalidation::Global), 1);
    let inv = p.iommu.stats().invalidations;
    assert_eq!(
        (
            inv.page.get(),
            inv.domain.get(),
            inv.context.get(),
            inv.global.get()
        ),
        (2, 1, 1, 1)
    );
}

#[test]
fn prefetch_fills_without_moving_data_and_is_counted() {
    let mut p = platform(lru_iotlb(2));
    for i in 0..4u64 {
        p.map_page(i);
    }
    let req = DmaRequest::new(rid(1));
    let cost = p
        .iommu
        .prefetch(&p.mem, req, 0x0, AccessKind::Write)
        .unwrap();
    assert_eq!((cost.iotlb_misses, cost.bytes), (1, 0));
    assert_eq!(
        p.mem.resident_frames(),
        p.frames.used_frames(),
        "only the tables are resident: no data moved"
    );
    // The demand access hits the prefetched entry.
    let cost = p.write(1, 0x10, &[1]).unwrap();
    assert_eq!((cost.iotlb_hits, cost.table_reads), (1, 0));
    // Prefetch twice more; the second prefetch evicts nothing used yet... then two demand misses push both out.
    p.iommu
        .prefetch(&p.mem, req, 0x1000, AccessKind::Read)
        .unwrap();
    p.iommu
        .prefetch(&p.mem, req, 0x1000, AccessKind::Read)
        .unwrap(); // already cached: redundant
    p.write(1, 0x2000, &[1]).unwrap();
    p.write(1, 0x3000, &[1]).unwrap();
    let s = p.iommu.stats();
    assert_eq!(s.prefetches.get(), 3);
    assert_eq!(s.prefetch_redundant.get(), 1);
    assert_eq!(s.iotlb.prefetch_fills.get(), 2);
    assert_eq!(s.iotlb.prefetch_used.get(), 1);
    assert_eq!(s.iotlb.prefetch_wasted.get(), 1);
}

#[test]
fn walk_cache_shortens_walks_and_can_be_off() {
    for (walk_cache_entries, reads) in [(16usize, 4 + 7), (0, 4 * 8)] {
        let mut p = platform(IommuConfig {
            walk_cache_entries,
            iotlb: IotlbConfig {
                entries: 0,
                ..IotlbConfig::default()
            },
            ..IommuConfig::default()
        });
        p.map_d1(0, 40 * MIB, 8 * 4096, PteFlags::RW, PageSize::Size4K);
        let mut total = 0;
        for i in 0..8u64 {
            total += p.write(1, i * 4096, &[1]).unwrap().table_reads;
        }
        assert_eq!(total, reads, "walk cache entries {walk_cache_entries}");
    }
}

/// A VM's process tables (first stage, in guest-physical memory) nested over
/// the VM's second stage.
fn nested_platform() -> (Host, Pasid) {
    let mut p = platform(IommuConfig::default());
    // Guest-physical 0..8 MiB is backed by host 32..40 MiB.
    p.map_d1(0, 32 * MIB, 8 * MIB, PteFlags::RW, PageSize::Size4K);
    // The guest builds its process tables in its own memory: write them
    // through a host-side view of guest frames (GPA + 32 MiB).
    let mut guest_frames = BitmapFrameAllocator::new(Gpa::new(MIB), 64);
    let mut gpt = PageTable::<Gva, Gpa>::new(
        &mut GuestView(&mut p.mem),
        &mut guest_frames,
        PagingConfig::default(),
    )
    .unwrap();
    let m = Mapping::new(
        Gva::new(0x7f00_0000_0000),
        Gpa::new(4 * MIB),
        2 * 4096,
        PteFlags::RW | PteFlags::US,
    );
    gpt.map(&mut GuestView(&mut p.mem), &mut guest_frames, m)
        .unwrap();
    let pasid = Pasid::new(0x42).unwrap();
    p.iommu.set_pasid(
        rid(1),
        pasid,
        PasidEntry {
            first_stage_root: gpt.root(),
            levels: Levels::Four,
        },
    );
    (p, pasid)
}

/// Guest-physical memory seen from the host: GPA x lives at HPA x + 32 MiB.
struct GuestView<'a>(&'a mut HostMemory);

impl PhysMemory<Gpa> for GuestView<'_> {
    fn size(&self) -> u64 {
        8 * MIB
    }
    fn read(&self, addr: Gpa, buf: &mut [u8]) -> Result<(), iovirt_core::MemError> {
        iovirt_core::check_range(addr, buf.len() as u64, 8 * MIB)?;
        self.0.read(Hpa::new(addr.raw() + 32 * MIB), buf)
    }
    fn write(&mut self, addr: Gpa, data: &[u8]) -> Result<(), iovirt_core::MemError> {
        iovirt_core::check_range(addr, data.len() as u64, 8 * MIB)?;
        self.0.write(Hpa::new(addr.raw() + 32 * MIB), data)
    }
}

#[test]
fn nested_pasid_translation_walks_both_stages() {
    let (mut p, pasid) = nested_platform();
    let req = DmaRequest::new(rid(1)).with_pasid(pasid);
    let t = p
        .iommu
        .translate(&p.mem, req, 0x7f00_0000_1234, AccessKind::Write)
        .unwrap();
    assert_eq!(t.hpa, Hpa::new(32 * MIB + 4 * MIB + 0x1234));
    // 4 first-stage reads, each translated by the second stage (4 reads for
    // the first, 1 with the walk cache for the other three, all in the same
    // 2 MiB of guest-physical space), then the final GPA, in another 2 MiB
    // region: a full second-stage walk.
    assert_eq!(t.cost.table_reads, 4 + (4 + 1 + 1 + 1) + 4);
    assert_eq!((t.cost.iotlb_misses, t.cost.iotlb_hits), (1 + 4 + 1, 0));
    // The combined translation is cached under the PASID: the next access hits.
    let t2 = p
        .iommu
        .translate(&p.mem, req, 0x7f00_0000_1000, AccessKind::Read)
        .unwrap();
    assert_eq!((t2.cost.iotlb_hits, t2.cost.table_reads), (1, 0));
    // The neighbouring page misses the combined entry but hits the cached
    // second-stage entries of the first-stage tables: only the first-stage
    // reads and the final GPA's walk remain.
    let t3 = p
        .iommu
        .translate(&p.mem, req, 0x7f00_0000_0000, AccessKind::Read)
        .unwrap();
    assert_eq!(t3.cost.table_reads, 4 + 1);
    // Without the PASID the same address is an IOVA: nothing is mapped there.
    assert_eq!(
        p.iommu
            .translate(
                &p.mem,
                DmaRequest::new(rid(1)),
                0x7f00_0000_1234,
                AccessKind::Read
            )
            .unwrap_err()
            .reason,
        FaultReason::NotPresent
    );
}

#[test]
fn nested_faults_name_their_stage() {
    let (mut p, pasid) = nested_platform();
    let req = DmaRequest::new(rid(1)).with_pasid(pasid);
    // First stage: the VA is not mapped in the process's tables.
    let f = p
        .iommu
        .translate(&p.mem, req, 0x7f00_0001_0000, AccessKind::Read)
        .unwrap_err();
    assert_eq!(f.reason, FaultReason::FirstStage);
    let rec = p.last_fault();
    assert_eq!(
        (rec.stage, rec.pasid, rec.walk),
        (
            Some(Stage::First),
            Some(pasid),
            Some(WalkFault::NotPresent { level: Level::Pt })
        )
    );
    // User request to a page the process mapped supervisor-only: a first-stage permission fault.
    let sup = Pasid::new(0x43).unwrap();
    p.iommu.set_pasid(
        rid(1),
        sup,
        PasidEntry {
            first_stage_root: Gpa::new(MIB),
            levels: Levels::Four,
        },
    );
    let mut pml4 = p.mem.read_u64(Hpa::new(32 * MIB + MIB + 8 * 254)).unwrap();
    pml4 &= !PteFlags::US.bits();
    p.mem
        .write_u64(Hpa::new(32 * MIB + MIB + 8 * 254), pml4)
        .unwrap();
    let f = p
        .iommu
        .translate(
            &p.mem,
            DmaRequest::new(rid(1)).with_pasid(sup),
            0x7f00_0000_1000,
            AccessKind::Read,
        )
        .unwrap_err();
    assert_eq!(f.reason, FaultReason::FirstStage);
    assert_eq!(
        p.last_fault().walk,
        Some(WalkFault::UserToSupervisor { level: Level::Pt })
    );
    let privileged = DmaRequest {
        privileged: true,
        ..DmaRequest::new(rid(1)).with_pasid(sup)
    };
    assert!(
        p.iommu
            .translate(&p.mem, privileged, 0x7f00_0000_1000, AccessKind::Read)
            .is_ok()
    );
    // Second stage: the guest's tables live in a guest page the VMM unmapped.
    p.unmap(D1, Iova::new(MIB), 4096).unwrap();
    p.iommu.invalidate(Invalidation::Domain(D1));
    let f = p
        .iommu
        .translate(&p.mem, req, 0x7f00_0000_1000, AccessKind::Read)
        .unwrap_err();
    assert_eq!(f.reason, FaultReason::NotPresent);
    assert_eq!(p.last_fault().stage, Some(Stage::Second));
    assert_eq!(p.iommu.stats().faults.first_stage.get(), 2);
}

#[test]
fn gvmi_tables_translate_device_internal_addresses() {
    let mut p = platform(IommuConfig::default());
    let mut pa2ma = PageTable::<Gpa, Hpa>::new(
        &mut p.mem,
        &mut p.frames,
        PagingConfig::second_stage(Levels::Four),
    )
    .unwrap();
    let m = Mapping::new(Gpa::new(0x10_0000), Hpa::new(48 * MIB), 4096, PteFlags::RW);
    pa2ma.map(&mut p.mem, &mut p.frames, m).unwrap();
    let vm = Gvmi(3);
    p.iommu.set_gvm(
        vm,
        GvmEntry {
            pa2ma_root: pa2ma.root(),
            levels: Levels::Four,
        },
    );
    p.iommu.set_uplink(vm, UplinkAttribute(0xab));
    let t = p
        .iommu
        .translate_gvmi(&p.mem, vm, Gpa::new(0x10_0123), AccessKind::Write)
        .unwrap();
    assert_eq!(
        (t.ma, t.uplink, t.room),
        (
            Hpa::new(48 * MIB + 0x123),
            UplinkAttribute(0xab),
            4096 - 0x123
        )
    );
    assert_eq!(t.cost.table_reads, 4);
    let again = p
        .iommu
        .translate_gvmi(&p.mem, vm, Gpa::new(0x10_0000), AccessKind::Read)
        .unwrap();
    assert_eq!(
        again.cost.iotlb_hits, 1,
        "PA2MA translations share the IOTLB, tagged by GVMI"
    );
    // The host's GVMI is not translated.
    let host = p
        .iommu
        .translate_gvmi(&p.mem, Gvmi::HOST, Gpa::new(0x10_0123), AccessKind::Read)
        .unwrap();
    assert_eq!((host.ma, host.cost.table_reads), (Hpa::new(0x10_0123), 0));
    // Faults: an unknown GVMI, an unmapped PA; neither is recorded in the VT-d log.
    assert_eq!(
        p.iommu
            .translate_gvmi(&p.mem, Gvmi(4), Gpa::new(0), AccessKind::Read)
            .unwrap_err()
            .reason,
        FaultReason::ContextNotPresent
    );
    assert_eq!(
        p.iommu
            .translate_gvmi(&p.mem, vm, Gpa::new(0x20_0000), AccessKind::Read)
            .unwrap_err()
            .reason,
        FaultReason::NotPresent
    );
    assert!(p.iommu.faults().is_empty());
    // Swap-out of the page: PA2MA entry cleared, then the GVMI invalidation drops the cached one.
    pa2ma
        .unmap(&mut p.mem, &mut p.frames, Gpa::new(0x10_0000), 4096)
        .unwrap();
    assert!(
        p.iommu
            .translate_gvmi(&p.mem, vm, Gpa::new(0x10_0000), AccessKind::Read)
            .is_ok(),
        "stale until invalidated"
    );
    p.iommu.invalidate(Invalidation::GvmiPage {
        gvmi: vm,
        addr: Gpa::new(0x10_0000),
        order: 0,
    });
    assert!(
        p.iommu
            .translate_gvmi(&p.mem, vm, Gpa::new(0x10_0000), AccessKind::Read)
            .is_err()
    );
    // Prefetch for a GVMI fills without data.
    pa2ma.map(&mut p.mem, &mut p.frames, m).unwrap();
    assert_eq!(
        p.iommu
            .prefetch_gvmi(&p.mem, vm, Gpa::new(0x10_0000), AccessKind::Write)
            .unwrap()
            .table_reads,
        4
    );
    assert_eq!(
        p.iommu
            .translate_gvmi(&p.mem, vm, Gpa::new(0x10_0000), AccessKind::Write)
            .unwrap()
            .cost
            .iotlb_hits,
        1
    );
}

#[test]
fn gvmi_port_moves_bytes_only_when_every_page_translates() {
    let mut p = platform(IommuConfig::default());
    let mut pa2ma = PageTable::<Gpa, Hpa>::new(
        &mut p.mem,
        &mut p.frames,
        PagingConfig::second_stage(Levels::Four),
    )
    .unwrap();
    // VM pages 0x10_0000 and 0x10_1000 map to scattered machine frames; 0x10_2000 is absent.
    for (pa, ma) in [(0x10_0000, 48 * MIB), (0x10_1000, 40 * MIB)] {
        let m = Mapping::new(Gpa::new(pa), Hpa::new(ma), 4096, PteFlags::RW);
        pa2ma.map(&mut p.mem, &mut p.frames, m).unwrap();
    }
    let vm = Gvmi(7);
    p.iommu.set_gvm(
        vm,
        GvmEntry {
            pa2ma_root: pa2ma.root(),
            levels: Levels::Four,
        },
    );
    let data: Vec<u8> = (0..200u8).collect();
    let mut port = p.iommu.gvmi_port(&mut p.mem);
    let cost = port.dma_write(vm, Gpa::new(0x10_0fa0), &data).unwrap();
    assert_eq!(cost.bytes, 200);
    let mut back = vec![0u8; 200];
    port.dma_read(vm, Gpa::new(0x10_0fa0), &mut back).unwrap();
    assert_eq!(back, data);
    // The bytes sit at the two machine frames, split at the page boundary.
    let mut head = [0u8; 0x60];
    p.mem.read(Hpa::new(48 * MIB + 0xfa0), &mut head).unwrap();
    assert_eq!(&head[..], &data[..0x60]);
    let mut tail = [0u8; 4];
    p.mem.read(Hpa::new(40 * MIB), &mut tail).unwrap();
    assert_eq!(&tail[..], &data[0x60..0x64]);
    // A write running into the absent page faults there and moves nothing.
    let mut port = p.iommu.gvmi_port(&mut p.mem);
    let f = port
        .dma_write(vm, Gpa::new(0x10_1ff0), &[0xee; 32])
        .unwrap_err();
    assert_eq!(
        (f.addr, f.reason),
        (Iova::new(0x10_2000), FaultReason::NotPresent)
    );
    let mut last = [0u8; 16];
    p.mem.read(Hpa::new(40 * MIB + 0xff0), &mut last).unwrap();
    assert_eq!(last, [0; 16], "no byte of the faulting write landed");
    // The probe reports the same fault without data, and none goes to the VT-d log.
    let mut port = p.iommu.gvmi_port(&mut p.mem);
    assert_eq!(
        port.probe(vm, Gpa::new(0x10_2000), AccessKind::Read)
            .unwrap_err()
            .reason,
        FaultReason::NotPresent
    );
    assert!(
        port.probe(vm, Gpa::new(0x10_1000), AccessKind::Write)
            .is_ok()
    );
    assert!(p.iommu.faults().is_empty());
    assert_eq!(
        p.iommu.stats().prefetches.get(),
        0,
        "a probe is not a prefetch"
    );
}

#[test]
fn invalidation_queue_with_wait_descriptor() {
    let mut p = platform(IommuConfig {
        invalidation_queue: 3,
        ..IommuConfig::default()
    });
    p.map_d1(0x1000, 40 * MIB, 4096, PteFlags::RW, PageSize::Size4K);
    p.write(1, 0x1000, &[1]).unwrap();
    let status = Hpa::new(60 * MIB);
    p.iommu
        .submit(QueuedInvalidation::Invalidate(Invalidation::Domain(D1)))
        .unwrap();
    p.iommu
        .submit(QueuedInvalidation::Wait {
            status_addr: status,
            status: 0x600d,
        })
        .unwrap();
    p.iommu
        .submit(QueuedInvalidation::Wait {
            status_addr: Hpa::new(1 << 40),
            status: 1,
        })
        .unwrap();
    assert_eq!(
        p.iommu
            .submit(QueuedInvalidation::Invalidate(Invalidation::Global)),
        Err(QueueError::Full { capacity: 3 })
    );
    // Nothing happens until the queue is processed.
    assert_eq!(p.iommu.iotlb_occupancy(), 1);
    assert_eq!(p.mem.read_u32(status).unwrap(), 0);
    let err = p.iommu.process_queue(&mut p.mem).unwrap_err();
    assert_eq!(
        err,
        QueueError::WaitWriteFailed {
            addr: Hpa::new(1 << 40)
        }
    );
    assert_eq!(p.iommu.iotlb_occupancy(), 0);
    assert_eq!(p.mem.read_u32(status).unwrap(), 0x600d);
    // Halted at the bad descriptor until software clears the error.
    assert_eq!(p.iommu.queued(), 1);
    assert_eq!(p.iommu.process_queue(&mut p.mem), Err(err));
    p.iommu.clear_queue_error();
    assert_eq!(p.iommu.process_queue(&mut p.mem), Ok(0));
    assert_eq!(p.iommu.stats().invalidations.wait.get(), 1);
}

#[test]
fn stats_serialise_and_reset() {
    let mut p = platform(IommuConfig::default());
    p.map_d1(0, 40 * MIB, 4096, PteFlags::RW, PageSize::Size4K);
    p.write(1, 0, &[1]).unwrap();
    let json = serde_json::to_value(p.iommu.stats()).unwrap();
    assert_eq!(json["iotlb_misses"], 1);
    assert_eq!(json["iotlb"]["fills"], 1);
    assert_eq!(json["faults"]["not_present"], 0);
    p.iommu.reset_stats();
    assert_eq!(p.iommu.stats().iotlb_misses.get(), 0);
    assert_eq!(p.iommu.stats().iotlb.fills.get(), 0);
}

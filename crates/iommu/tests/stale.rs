//! Stale translations in the IOMMU, through its DMA port: without an
//! invalidation a cached translation outlives an unmap or a protect, as on
//! hardware; the invalidation ends it.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use iovirt_core::{
    BitmapFrameAllocator, DmaFault, DmaPort, FaultReason, HostMemory, Hpa, Iova, Irq, PhysMemory,
};
use iovirt_iommu::{
    ContextEntry, DmaRequest, DomainId, Invalidation, Iommu, IommuConfig, RequesterId,
};
use iovirt_paging::{Levels, Mapping, PageTable, PagingConfig, PteFlags};

const PAGE: u64 = 4096;

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
        // 00:01.0, the first requester of the property tests' platforms.
        let nic = RequesterId::new(0, 1, 0).unwrap();
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

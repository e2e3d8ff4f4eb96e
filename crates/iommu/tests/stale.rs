//! Stale translations in the IOMMU, through its DMA port: without an
//! invalidation a cached translation outlives an unmap or a protect, as on
//! hardware; the invalidation ends it.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::{Host, PAGE, requester};
use iovirt_core::{DmaFault, DmaPort, FaultReason, Hpa, Iova, PhysMemory};
use iovirt_iommu::{DmaRequest, DomainId, Invalidation, IommuConfig};
use iovirt_paging::{Levels, Mapping, PteFlags};

const STALE_IOVA: u64 = 0x1_0000;
const STALE_HPA: u64 = 0x20_0000;
const DOMAIN: DomainId = DomainId(1);

/// A platform with one domain mapping IOVA 0x10000 to host 0x20_0000,
/// writable, and one requester attached to it: 00:01.0, the first
/// requester of the property tests' platforms.
fn small() -> Host {
    let mut p = Host::new(4 << 20, 64, IommuConfig::default()).unwrap();
    p.add_domain(DOMAIN, Levels::Four);
    let m = Mapping::new(
        Iova::new(STALE_IOVA),
        Hpa::new(STALE_HPA),
        PAGE,
        PteFlags::RW,
    );
    p.map(DOMAIN, m).unwrap();
    p.attach(requester(0), DOMAIN, false);
    p
}

/// What only the stale-translation tests ask of the shared [`Host`]: DMA
/// by the requester 0x40 into the mapped page.
impl Host {
    fn write(&mut self, data: &[u8]) -> Result<iovirt_core::Cost, DmaFault> {
        self.port(DmaRequest::new(requester(0)))
            .dma_write(Iova::new(STALE_IOVA + 0x40), data)
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<iovirt_core::Cost, DmaFault> {
        self.port(DmaRequest::new(requester(0)))
            .dma_read(Iova::new(STALE_IOVA + 0x40), buf)
    }

    fn invalidate_page(&mut self) {
        self.iommu.invalidate(Invalidation::Page {
            domain: DOMAIN,
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
    let mut p = small();
    let first = p.write(b"one!").unwrap();
    assert_eq!(first.iotlb_misses, 1);
    p.unmap(DOMAIN, Iova::new(STALE_IOVA), PAGE).unwrap();

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
    let mut p = small();
    p.write(b"one!").unwrap();
    p.protect(DOMAIN, Iova::new(STALE_IOVA), PAGE, PteFlags::empty())
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

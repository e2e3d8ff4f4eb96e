// Test set-up: a failure is a broken test, not a guest input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use iovirt_core::{BitmapFrameAllocator, HostMemory, Iova, PageSize};
use iovirt_paging::{Levels, Mapping, PageTable, PagingConfig, PteFlags};
use vm_memory::iommu::Iommu as _;
use vm_memory::iommu::MappedRange;
use vm_memory::{GuestMemoryMmap, IommuMemory};

use super::*;
use crate::{ContextEntry, DomainId, IommuConfig, RequesterId};

type Ram = GuestMemoryMmap<()>;

const DOMAIN: DomainId = DomainId(1);
/// IOVA 0x1_0000..0x1_4000 -> HPA 0x40_0000, read-write.
const RW_IOVA: u64 = 0x1_0000;
const RW_HPA: u64 = 0x40_0000;
/// IOVA 0x2_0000 -> HPA 0x50_0000, read-only.
const RO_IOVA: u64 = 0x2_0000;
const RO_HPA: u64 = 0x50_0000;
/// IOVA 0x20_0000 -> HPA 0x60_0000, one 2 MiB page.
const HUGE_IOVA: u64 = 0x20_0000;
const HUGE_HPA: u64 = 0x60_0000;

fn requester() -> RequesterId {
    RequesterId::new(0, 4, 0).unwrap()
}

struct Setup<M> {
    vm: VmIommu<M>,
    stage2: PageTable<Iova, Hpa>,
    frames: BitmapFrameAllocator<Hpa>,
}

/// A domain with the mappings above, its tables in `mem` at 1 MiB.
fn setup<M: PhysMemory<Hpa>>(mut mem: M) -> Setup<M> {
    let mut frames = BitmapFrameAllocator::new(Hpa::new(0x10_0000), 256);
    let config = PagingConfig::second_stage(Levels::Four);
    let mut stage2 = PageTable::<Iova, Hpa>::new(&mut mem, &mut frames, config).unwrap();
    for m in [
        Mapping::new(Iova::new(RW_IOVA), Hpa::new(RW_HPA), 0x4000, PteFlags::RW),
        Mapping::new(
            Iova::new(RO_IOVA),
            Hpa::new(RO_HPA),
            0x1000,
            PteFlags::empty(),
        ),
        Mapping::new(
            Iova::new(HUGE_IOVA),
            Hpa::new(HUGE_HPA),
            2 << 20,
            PteFlags::RW,
        )
        .with_largest(PageSize::Size2M),
    ] {
        stage2.map(&mut mem, &mut frames, m).unwrap();
    }
    let mut iommu = Iommu::new(IommuConfig::default()).unwrap();
    iommu.set_domain(DOMAIN, stage2.root(), Levels::Four);
    iommu.set_context(
        requester(),
        ContextEntry::Translate {
            domain: DOMAIN,
            pasid_enabled: false,
        },
    );
    Setup {
        vm: VmIommu::new(iommu, mem, DmaRequest::new(requester())),
        stage2,
        frames,
    }
}

fn ram(size: usize) -> Ram {
    Ram::from_ranges(&[(GuestAddress(0), size)]).unwrap()
}

fn translate<M: PhysMemory<Hpa> + Send>(
    vm: &VmIommu<M>,
    iova: u64,
    len: usize,
    access: Permissions,
) -> Result<Vec<MappedRange>, Error> {
    vm.translate(GuestAddress(iova), len, access)
        .map(Iterator::collect)
}

fn translations<M: PhysMemory<Hpa>>(vm: &VmIommu<M>) -> u64 {
    vm.with_inner(|iommu, _| iommu.stats().translations.get())
        .unwrap()
}

#[test]
fn guest_memory_phys_round_trip_and_errors() {
    let mut phys = GuestMemoryPhys::new(ram(1 << 20));
    assert_eq!(phys.size(), 1 << 20);
    phys.write_u64(Hpa::new(0x1000), 0x1122_3344_5566_7788)
        .unwrap();
    assert_eq!(
        phys.read_u64(Hpa::new(0x1000)).unwrap(),
        0x1122_3344_5566_7788
    );
    let data: Vec<u8> = (0..=255).cycle().take(9000).collect();
    phys.write(Hpa::new(0x2ff0), &data).unwrap();
    let mut back = vec![0u8; 9000];
    phys.read(Hpa::new(0x2ff0), &mut back).unwrap();
    assert_eq!(back, data);
    // The bytes are in the backend, at the same address.
    let mut direct = [0u8; 4];
    phys.inner()
        .read_slice(&mut direct, GuestAddress(0x2ff0))
        .unwrap();
    assert_eq!(direct, [0, 1, 2, 3]);

    let err = phys
        .read(Hpa::new((1 << 20) - 2), &mut [0u8; 4])
        .unwrap_err();
    assert_eq!(
        err,
        MemError::OutOfRange {
            space: "host-physical",
            addr: (1 << 20) - 2,
            len: 4,
            size: 1 << 20
        }
    );
    // Overflowing ranges are errors, not panics.
    assert!(phys.read(Hpa::new(u64::MAX), &mut [0u8; 2]).is_err());
    assert!(phys.write(Hpa::new(u64::MAX - 1), &[1, 2, 3]).is_err());
    assert!(phys.write_u64(Hpa::new(1 << 20), 1).is_err());
    // An empty access inside memory is fine.
    phys.read(Hpa::new(0x10), &mut []).unwrap();
}

#[test]
fn guest_memory_phys_holes_are_unmapped() {
    let regions = Ram::from_ranges(&[
        (GuestAddress(0), 0x1_0000),
        (GuestAddress(0x2_0000), 0x1_0000),
    ])
    .unwrap();
    let mut phys = GuestMemoryPhys::new(regions);
    assert_eq!(phys.size(), 0x3_0000);
    assert_eq!(
        phys.read_u32(Hpa::new(0x1_8000)),
        Err(MemError::Unmapped {
            space: "host-physical",
            addr: 0x1_8000
        })
    );
    // A write running into the hole names its first byte.
    assert_eq!(
        phys.write(Hpa::new(0xfff0), &[7u8; 0x20]),
        Err(MemError::Unmapped {
            space: "host-physical",
            addr: 0x1_0000
        })
    );
    phys.write_u32(Hpa::new(0x2_0000), 5).unwrap();
    assert_eq!(phys.read_u32(Hpa::new(0x2_0000)).unwrap(), 5);
}

#[test]
fn miss_then_hit_in_the_front_iotlb() {
    let s = setup(HostMemory::new(16 << 20).unwrap());
    let vm = &s.vm;
    let got = translate(vm, RW_IOVA + 0x10, 100, Permissions::Write).unwrap();
    assert_eq!(
        got,
        [MappedRange {
            base: GuestAddress(RW_HPA + 0x10),
            length: 100
        }]
    );
    let stats = vm.with_inner(|iommu, _| iommu.stats()).unwrap();
    assert_eq!(stats.translations.get(), 1);
    assert_eq!(stats.walks.get(), 1);
    // Anywhere else in the same frame, read or write: the front cache
    // answers and iovirt is not asked.
    let got = translate(vm, RW_IOVA + 0x800, 0x800, Permissions::ReadWrite).unwrap();
    assert_eq!(got[0].base, GuestAddress(RW_HPA + 0x800));
    assert_eq!(translations(vm), 1);
    // A range over four pages resolves the three missing ones.
    let got = translate(vm, RW_IOVA + 0xff0, 0x3000, Permissions::Read).unwrap();
    let total: usize = got.iter().map(|r| r.length).sum();
    assert_eq!(total, 0x3000);
    assert_eq!(got[0].base, GuestAddress(RW_HPA + 0xff0));
    assert_eq!(translations(vm), 4);
}

#[test]
fn a_huge_page_is_one_entry_from_the_missing_frame_on() {
    let s = setup(HostMemory::new(16 << 20).unwrap());
    let vm = &s.vm;
    let at = HUGE_IOVA + 0x10_3008;
    let got = translate(vm, at, 8, Permissions::Read).unwrap();
    assert_eq!(got[0].base, GuestAddress(HUGE_HPA + 0x10_3008));
    assert_eq!(translations(vm), 1);
    // The rest of the 2 MiB page is cached from the frame at 0x10_3000...
    let got = translate(vm, HUGE_IOVA + 0x10_3000, 0xf_d000, Permissions::Write).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].base, GuestAddress(HUGE_HPA + 0x10_3000));
    assert_eq!(translations(vm), 1);
    // ...but not the part below it.
    translate(vm, HUGE_IOVA, 8, Permissions::Read).unwrap();
    assert_eq!(translations(vm), 2);
}

#[test]
fn faults_are_errors_naming_the_iovirt_fault() {
    let s = setup(HostMemory::new(16 << 20).unwrap());
    let vm = &s.vm;
    let err = translate(vm, 0x9_0000, 4, Permissions::Read).unwrap_err();
    let Error::CannotResolve { iova_range, reason } = &err else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(iova_range.base, GuestAddress(0x9_0000));
    assert!(reason.contains("not present"), "{reason}");
    assert!(reason.contains("0x90000"), "{reason}");
    // Recorded in iovirt's log, with the fault event left for the owner.
    let (faults, event) = vm
        .with_inner(|iommu, _| (iommu.faults().len(), iommu.take_fault_event()))
        .unwrap();
    assert_eq!(faults, 1);
    assert!(event.is_some());

    // A read-only page reads, but neither writes nor read-writes.
    translate(vm, RO_IOVA, 8, Permissions::Read).unwrap();
    for access in [Permissions::Write, Permissions::ReadWrite] {
        let err = translate(vm, RO_IOVA, 8, access).unwrap_err();
        assert!(err.to_string().contains("read-only"), "{err}");
    }
    // A range whose tail faults fails as a whole.
    assert!(translate(vm, RW_IOVA + 0x3ff0, 0x20, Permissions::Read).is_err());

    // No context: blocked.
    let other = VmIommu::new(
        Iommu::new(IommuConfig::default()).unwrap(),
        HostMemory::new(1 << 20).unwrap(),
        DmaRequest::new(RequesterId::new(1, 0, 0).unwrap()),
    );
    let err = translate(&other, 0, 4, Permissions::Read).unwrap_err();
    assert!(err.to_string().contains("context not present"), "{err}");
}

#[test]
fn empty_and_overflowing_ranges_are_errors_not_panics() {
    let s = setup(HostMemory::new(16 << 20).unwrap());
    let vm = &s.vm;
    for (iova, len) in [
        (RW_IOVA, 0),
        (u64::MAX, 2),
        (u64::MAX - 3, 4), // ends exactly at 2^64
        (u64::MAX - 0xfff, usize::MAX),
    ] {
        let err = translate(vm, iova, len, Permissions::Read).unwrap_err();
        assert!(
            matches!(err, Error::CannotResolve { .. }),
            "{iova:#x}+{len:#x}: {err:?}"
        );
    }
    // Nothing reached iovirt.
    assert_eq!(translations(vm), 0);
    // The last byte below 2^64 is a fault (beyond the 48-bit width), not a panic.
    assert!(translate(vm, u64::MAX - 1, 1, Permissions::Read).is_err());
}

#[test]
fn pass_through_near_the_top_of_memory() {
    let mut iommu = Iommu::new(IommuConfig::default()).unwrap();
    iommu.set_context(requester(), ContextEntry::PassThrough);
    let vm = VmIommu::new(
        iommu,
        GuestMemoryPhys::new(ram(1 << 20)),
        DmaRequest::new(requester()),
    );
    let got = translate(&vm, 0xf_f000, 0x1000, Permissions::ReadWrite).unwrap();
    let total: usize = got.iter().map(|r| r.length).sum();
    assert_eq!(total, 0x1000);
    assert_eq!(got[0].base, GuestAddress(0xf_f000));
    assert!(translate(&vm, 0xf_f000, 0x1001, Permissions::Read).is_err());
}

#[test]
fn poisoned_locks_are_errors() {
    let s = setup(HostMemory::new(16 << 20).unwrap());
    let vm = &s.vm;
    translate(vm, RW_IOVA, 8, Permissions::Read).unwrap();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        vm.with_inner(|_, _| panic!("a table edit went wrong"))
    }));
    assert!(panicked.is_err());
    assert!(vm.with_inner(|_, _| ()).is_none());
    // A cached translation is still served...
    translate(vm, RW_IOVA, 8, Permissions::Read).unwrap();
    // ...a miss is not...
    let err = translate(vm, RW_IOVA + 0x1000, 8, Permissions::Read).unwrap_err();
    assert!(matches!(err, Error::IommuMisconfigured { .. }), "{err:?}");
    // ...and an invalidation still empties the front cache, and says why it failed.
    let err = vm.invalidate(Invalidation::Global).unwrap_err();
    assert!(matches!(err, Error::IommuMisconfigured { .. }), "{err:?}");
    assert!(translate(vm, RW_IOVA, 8, Permissions::Read).is_err());
}

#[test]
fn iommu_memory_end_to_end_on_guest_memory_mmap() {
    let ram = ram(16 << 20);
    let Setup {
        vm,
        mut stage2,
        mut frames,
    } = setup(GuestMemoryPhys::new(ram.clone()));
    let mem: IommuMemory<Ram, VmIommu<GuestMemoryPhys<Ram>>> =
        IommuMemory::new(ram.clone(), vm, true, ());

    // Through the IOVA, across a page boundary; then at the physical address.
    let data: Vec<u8> = (1..=200).collect();
    mem.write_slice(&data, GuestAddress(RW_IOVA + 0xfa0))
        .unwrap();
    let mut back = vec![0u8; 200];
    ram.read_slice(&mut back, GuestAddress(RW_HPA + 0xfa0))
        .unwrap();
    assert_eq!(back, data);
    let mut again = vec![0u8; 200];
    mem.read_slice(&mut again, GuestAddress(RW_IOVA + 0xfa0))
        .unwrap();
    assert_eq!(again, data);
    // Read-only and unmapped IOVAs refuse writes.
    assert!(mem.write_slice(b"x", GuestAddress(RO_IOVA)).is_err());
    assert!(mem.write_slice(b"x", GuestAddress(0x9_0000)).is_err());
    // An empty access is a refused range (see the module documentation).
    assert!(mem.write_slice(&[], GuestAddress(RW_IOVA)).is_err());

    // Unmap the first page in iovirt's tables. Until it is invalidated, the
    // cached translation still works, as on hardware.
    let iommu = mem.iommu();
    iommu
        .with_inner(|_, phys| stage2.unmap(phys, &mut frames, Iova::new(RW_IOVA), 0x1000))
        .unwrap()
        .unwrap();
    mem.write_slice(b"stale", GuestAddress(RW_IOVA)).unwrap();
    let removed = iommu
        .invalidate(Invalidation::Page {
            domain: DOMAIN,
            addr: Iova::new(RW_IOVA),
            order: 0,
        })
        .unwrap();
    assert_eq!(removed, 1);
    assert!(mem.write_slice(b"gone", GuestAddress(RW_IOVA)).is_err());
    assert!(
        mem.read_slice(&mut [0u8; 4], GuestAddress(RW_IOVA + 8))
            .is_err()
    );
    // The next page is still mapped.
    mem.write_slice(b"kept", GuestAddress(RW_IOVA + 0x1000))
        .unwrap();
    let mut kept = [0u8; 4];
    ram.read_slice(&mut kept, GuestAddress(RW_HPA + 0x1000))
        .unwrap();
    assert_eq!(&kept, b"kept");
}

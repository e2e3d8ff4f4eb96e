//! Mapper tests: every edit, every error, and what the tables look like after.

use iovirt_core::{
    Access, BitmapFrameAllocator, FrameAllocator, Gva, HostMemory, Hpa, Iova, MockFrameAllocator,
    PageSize, Perms, PhysMemory,
};

use crate::{
    HUGE_PAT, Level, Levels, MapError, Mapping, PTE_PAT, PageTable, PagingConfig, PteFlags,
    WalkFault,
};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

struct Env {
    mem: HostMemory,
    frames: BitmapFrameAllocator<Hpa>,
    pt: PageTable<Gva, Hpa>,
}

impl Env {
    fn new(config: PagingConfig) -> Env {
        let mut mem = HostMemory::new(64 * MIB).unwrap();
        let mut frames = BitmapFrameAllocator::new(Hpa::new(16 * MIB), 1024);
        let pt = PageTable::new(&mut mem, &mut frames, config).unwrap();
        Env { mem, frames, pt }
    }

    fn map(
        &mut self,
        va: u64,
        pa: u64,
        len: u64,
        flags: PteFlags,
        largest: PageSize,
    ) -> Result<crate::EditReport, MapError> {
        let m = Mapping::new(Gva::new(va), Hpa::new(pa), len, flags).with_largest(largest);
        self.pt.map(&mut self.mem, &mut self.frames, m)
    }

    fn unmap(&mut self, va: u64, len: u64) -> Result<crate::EditReport, MapError> {
        self.pt
            .unmap(&mut self.mem, &mut self.frames, Gva::new(va), len)
    }

    fn protect(
        &mut self,
        va: u64,
        len: u64,
        flags: PteFlags,
    ) -> Result<crate::EditReport, MapError> {
        self.pt
            .protect(&mut self.mem, &mut self.frames, Gva::new(va), len, flags)
    }

    fn tr(&self, va: u64) -> Result<crate::Translation<Hpa>, WalkFault> {
        self.pt.translate(&self.mem, Gva::new(va), Access::READ)
    }

    fn pa(&self, va: u64) -> Option<u64> {
        self.tr(va).ok().map(|t| t.addr.raw())
    }
}

#[test]
fn new_table_is_one_zeroed_frame() {
    let mut mem = HostMemory::new(MIB).unwrap();
    mem.write(Hpa::new(0x1000), &[0xffu8; 4096]).unwrap(); // garbage in the frame
    let mut frames = BitmapFrameAllocator::new(Hpa::new(0x1000), 4);
    let pt = PageTable::<Gva, Hpa>::new(&mut mem, &mut frames, PagingConfig::default()).unwrap();
    assert_eq!(pt.root(), Hpa::new(0x1000));
    assert_eq!(pt.tables_in_use(), 1);
    assert_eq!(
        pt.translate(&mem, Gva::new(0), Access::READ),
        Err(WalkFault::NotPresent { level: Level::Pml4 })
    );
}

#[test]
fn four_kib_mappings_build_one_table_per_level() {
    let mut e = Env::new(PagingConfig::default());
    let r = e
        .map(
            0x40_0000,
            0x80_0000,
            16 * 4096,
            PteFlags::RW,
            PageSize::Size2M,
        )
        .unwrap();
    assert_eq!(r.leaves, [16, 0, 0]); // 4 KiB-aligned physical side: no huge page
    assert_eq!(r.tables_allocated, 3);
    assert_eq!(e.pt.tables_in_use(), 4);
    for i in 0..16 {
        assert_eq!(
            e.pa(0x40_0000 + i * 4096 + 7),
            Some(0x80_0000 + i * 4096 + 7)
        );
    }
    assert!(e.tr(0x40_0000 + 16 * 4096).is_err());
    assert_eq!(e.pt.stats().leaves_mapped.get(), 16);
}

#[test]
fn huge_pages_where_aligned_and_allowed() {
    let mut e = Env::new(PagingConfig::default());
    // 4 KiB below the 2 MiB boundary, one 2 MiB page, 4 KiB after it.
    let r = e
        .map(
            0x1f_f000,
            0x3f_f000,
            2 * MIB + 0x2000,
            PteFlags::RW,
            PageSize::Size2M,
        )
        .unwrap();
    assert_eq!(r.leaves, [2, 1, 0]);
    assert_eq!(e.tr(0x20_0000).unwrap().size, PageSize::Size2M);
    assert_eq!(e.pa(0x30_0123), Some(0x50_0123));
    assert_eq!(e.tr(0x40_0000).unwrap().size, PageSize::Size4K);
    // Not allowed: the same shape in 4 KiB pages only.
    let r = e
        .map(
            GIB + 0x1f_f000,
            0x3f_f000,
            2 * MIB + 0x2000,
            PteFlags::RW,
            PageSize::Size4K,
        )
        .unwrap();
    assert_eq!(r.leaves, [514, 0, 0]);

    let mut g = Env::new(PagingConfig::default());
    let r = g
        .map(GIB, 2 * GIB, GIB + 2 * MIB, PteFlags::RW, PageSize::Size1G)
        .unwrap();
    assert_eq!(r.leaves, [0, 1, 1]);
    assert_eq!(g.tr(GIB + 5).unwrap().size, PageSize::Size1G);
    assert_eq!(g.pa(2 * GIB + 0x1234), Some(3 * GIB + 0x1234));
    // Without 1 GiB support the same request uses 2 MiB pages.
    let mut h = Env::new(PagingConfig {
        page_1g: false,
        ..PagingConfig::default()
    });
    let r = h
        .map(GIB, 2 * GIB, GIB, PteFlags::RW, PageSize::Size1G)
        .unwrap();
    assert_eq!(r.leaves, [0, 512, 0]);
}

#[test]
fn huge_page_falls_back_where_a_table_already_is() {
    let mut e = Env::new(PagingConfig::default());
    e.map(
        0x20_0000,
        0x1000,
        0x1000,
        PteFlags::empty(),
        PageSize::Size4K,
    )
    .unwrap();
    // The PD slot for 0x20_0000 holds a table: the 2 MiB request becomes 4 KiB pages and stops at the mapped one.
    assert_eq!(
        e.map(
            0x20_0000,
            0x40_0000,
            2 * MIB,
            PteFlags::RW,
            PageSize::Size2M
        ),
        Err(MapError::AlreadyMapped { addr: 0x20_0000 })
    );
    let r = e
        .map(
            0x20_1000,
            0x40_1000,
            2 * MIB - 0x1000,
            PteFlags::RW,
            PageSize::Size2M,
        )
        .unwrap();
    assert_eq!(r.leaves, [511, 0, 0]);
}

#[test]
fn overlapping_map_is_refused_and_undone() {
    let mut e = Env::new(PagingConfig::default());
    e.map(0x10_0000, 0x10_0000, 0x4000, PteFlags::RW, PageSize::Size4K)
        .unwrap();
    let before = (e.frames.free_frames(), e.pt.tables_in_use());
    // Starts in fresh tables (another 1 GiB slot), runs into the existing mapping.
    let err = e.map(
        0x10_0000 - 0x3000,
        0x90_0000,
        0x4000,
        PteFlags::RW,
        PageSize::Size4K,
    );
    assert_eq!(err, Err(MapError::AlreadyMapped { addr: 0x10_0000 }));
    assert!(
        e.tr(0x10_0000 - 0x3000).is_err(),
        "pages mapped before the conflict were undone"
    );
    assert_eq!(
        e.pa(0x10_0000),
        Some(0x10_0000),
        "the existing mapping is untouched"
    );
    assert_eq!((e.frames.free_frames(), e.pt.tables_in_use()), before);
    // Across a huge leaf.
    e.map(
        0x4000_0000,
        0x4000_0000,
        2 * MIB,
        PteFlags::RW,
        PageSize::Size2M,
    )
    .unwrap();
    assert_eq!(
        e.map(0x4010_0000, 0, 0x1000, PteFlags::RW, PageSize::Size4K),
        Err(MapError::AlreadyMapped { addr: 0x4010_0000 })
    );
}

#[test]
fn unmap_frees_empty_tables() {
    let mut e = Env::new(PagingConfig::default());
    let free0 = e.frames.free_frames();
    e.map(
        0x7f00_0000_0000,
        0x100_0000,
        8 * MIB,
        PteFlags::RW,
        PageSize::Size2M,
    )
    .unwrap();
    e.map(0x1000, 0x100_0000, 0x1000, PteFlags::RW, PageSize::Size4K)
        .unwrap();
    assert!(e.frames.free_frames() < free0);
    let r = e.unmap(0x7f00_0000_0000, 8 * MIB).unwrap();
    assert_eq!(r.leaves, [0, 4, 0]);
    assert_eq!(r.tables_freed, 2); // its PD and PDPT; the PML4 stays
    assert!(e.tr(0x7f00_0000_0000).is_err());
    assert_eq!(e.pa(0x1000), Some(0x100_0000));
    e.unmap(0, 0x10_0000).unwrap();
    assert_eq!(e.pt.tables_in_use(), 1);
    assert_eq!(e.frames.free_frames(), free0);
    // Unmapping nothing is fine and frees nothing.
    assert_eq!(e.unmap(0x1234_0000_0000, GIB).unwrap().total_leaves(), 0);
}

#[test]
fn partial_unmap_splits_a_huge_page() {
    let mut e = Env::new(PagingConfig::default());
    e.map(
        0x20_0000,
        0x60_0000,
        2 * MIB,
        PteFlags::RW | PteFlags::G,
        PageSize::Size2M,
    )
    .unwrap();
    let r = e.unmap(0x20_3000, 0x1000).unwrap();
    assert_eq!((r.splits, r.leaves, r.tables_allocated), (1, [1, 0, 0], 1));
    assert_eq!(
        e.tr(0x20_3000),
        Err(WalkFault::NotPresent { level: Level::Pt })
    );
    for off in [0u64, 0x2fff, 0x4000, 0x1f_ffff] {
        let t = e.tr(0x20_0000 + off).unwrap();
        assert_eq!((t.addr.raw(), t.size), (0x60_0000 + off, PageSize::Size4K));
        assert!(t.leaf.flags().contains(PteFlags::G | PteFlags::RW));
    }
    // A 1 GiB page split twice: into 2 MiB pages, then one of those into 4 KiB.
    let mut g = Env::new(PagingConfig::default());
    g.map(GIB, GIB, GIB, PteFlags::RW, PageSize::Size1G)
        .unwrap();
    let r = g.unmap(GIB + 4 * MIB + 0x1000, 0x1000).unwrap();
    assert_eq!(r.splits, 2);
    assert_eq!(g.tr(GIB + 6 * MIB).unwrap().size, PageSize::Size2M);
    assert_eq!(g.tr(GIB + 4 * MIB).unwrap().size, PageSize::Size4K);
    assert!(g.tr(GIB + 4 * MIB + 0x1000).is_err());
    assert_eq!(g.pa(2 * GIB - 1), Some(2 * GIB - 1));
}

#[test]
fn protect_rewrites_attributes_and_keeps_the_rest() {
    let mut e = Env::new(PagingConfig {
        update_ad: true,
        ..PagingConfig::default()
    });
    e.map(
        0x20_0000,
        0x60_0000,
        4 * MIB,
        PteFlags::RW | PteFlags::US,
        PageSize::Size2M,
    )
    .unwrap();
    // Touch the first page so its leaf has A and D.
    e.pt.walk_mut(&mut e.mem, Gva::new(0x20_0000), Access::WRITE)
        .result
        .unwrap();
    let r = e.protect(0x20_0000, 2 * MIB, PteFlags::NX).unwrap();
    assert_eq!((r.leaves, r.splits), ([0, 1, 0], 0));
    let t = e.tr(0x20_0000).unwrap();
    assert_eq!(t.perms, Perms::READ);
    assert!(
        t.leaf
            .flags()
            .contains(PteFlags::A | PteFlags::D | PteFlags::PS)
    );
    assert_eq!(t.addr.raw(), 0x60_0000);
    assert!(
        e.tr(0x40_0000)
            .unwrap()
            .perms
            .contains(Perms::WRITE | Perms::USER | Perms::EXECUTE)
    );
    // Part of a huge page: split, only that part changes.
    let r = e.protect(0x40_0000, 0x1000, PteFlags::US).unwrap();
    assert_eq!(r.splits, 1);
    assert_eq!(
        e.tr(0x40_0000).unwrap().perms,
        Perms::READ | Perms::USER | Perms::EXECUTE
    );
    assert!(e.tr(0x40_1000).unwrap().perms.contains(Perms::WRITE));
    assert_eq!(
        e.pt.translate(&e.mem, Gva::new(0x40_0000), Access::WRITE),
        Err(WalkFault::WriteToReadOnly { level: Level::Pt })
    );
    assert_eq!(e.pt.stats().leaves_protected.get(), 2);
}

#[test]
fn split_moves_the_pat_bit() {
    let mut e = Env::new(PagingConfig::default());
    e.map(
        0x20_0000,
        0x60_0000,
        2 * MIB,
        PteFlags::RW,
        PageSize::Size2M,
    )
    .unwrap();
    // Set PAT on the 2 MiB leaf by hand (the mapper leaves memory types to the caller).
    let pde =
        e.pt.walk(&e.mem, Gva::new(0x20_0000), Access::READ)
            .trace
            .last()
            .unwrap();
    e.mem
        .write_u64(pde.addr, pde.entry.raw() | HUGE_PAT)
        .unwrap();
    assert_eq!(e.pa(0x20_0000), Some(0x60_0000));
    e.unmap(0x3f_f000, 0x1000).unwrap();
    let t = e.tr(0x20_0000).unwrap();
    assert_eq!(t.leaf.raw() & PTE_PAT, PTE_PAT);
    assert_eq!(t.addr.raw(), 0x60_0000);
}

#[test]
fn argument_errors() {
    let mut e = Env::new(PagingConfig::default());
    let rw = PteFlags::RW;
    let k4 = PageSize::Size4K;
    assert_eq!(
        e.map(0x1001, 0, 0x1000, rw, k4),
        Err(MapError::Unaligned {
            what: "input address",
            value: 0x1001
        })
    );
    assert_eq!(
        e.map(0x1000, 0x10, 0x1000, rw, k4),
        Err(MapError::Unaligned {
            what: "physical address",
            value: 0x10
        })
    );
    assert_eq!(
        e.map(0x1000, 0, 0x800, rw, k4),
        Err(MapError::Unaligned {
            what: "length",
            value: 0x800
        })
    );
    assert_eq!(
        e.map(0x1000, 0, 0, rw, k4),
        Err(MapError::BadRange {
            start: 0x1000,
            len: 0
        })
    );
    assert!(matches!(
        e.map(0xffff_ffff_ffff_f000, 0, 0x2000, rw, k4),
        Err(MapError::BadRange { .. })
    ));
    assert!(matches!(
        e.map(0x8000_0000_0000, 0, 0x1000, rw, k4),
        Err(MapError::InputOutOfRange { .. })
    ));
    // Running off the top of the lower half into the hole.
    assert!(matches!(
        e.map(0x7fff_ffff_f000, 0, 0x2000, rw, k4),
        Err(MapError::InputOutOfRange { .. })
    ));
    assert_eq!(
        e.map(0, 1 << 52, 0x1000, rw, k4),
        Err(MapError::PhysOutOfRange {
            last: (1 << 52) + 0xfff,
            max_phys_bits: 52
        })
    );
    assert_eq!(
        e.map(0, 0, 0x1000, PteFlags::P | rw, k4),
        Err(MapError::BadFlags(PteFlags::P))
    );
    assert_eq!(
        e.protect(0, 0x1000, PteFlags::PS),
        Err(MapError::BadFlags(PteFlags::PS))
    );
    let mut no_nx = Env::new(PagingConfig {
        nxe: false,
        ..PagingConfig::default()
    });
    assert_eq!(
        no_nx.map(0, 0, 0x1000, PteFlags::NX, k4),
        Err(MapError::BadFlags(PteFlags::NX))
    );
    assert_eq!(
        no_nx.protect(0, 0x1000, PteFlags::NX),
        Err(MapError::BadFlags(PteFlags::NX))
    );
    assert_eq!(e.pt.tables_in_use(), 1, "no error allocated anything");
    // The upper half is mappable.
    e.map(0xffff_8000_0000_0000, 0x5000, 0x1000, rw, k4)
        .unwrap();
    assert_eq!(e.pa(0xffff_8000_0000_0abc), Some(0x5abc));
    // A second-stage table takes zero-extended input only.
    let mut mem = HostMemory::new(MIB).unwrap();
    let mut frames = BitmapFrameAllocator::new(Hpa::new(0), 64);
    let mut ss = PageTable::<Iova, Hpa>::new(
        &mut mem,
        &mut frames,
        PagingConfig::second_stage(Levels::Three),
    )
    .unwrap();
    let beyond = Mapping::new(Iova::new((1 << 39) - 0x1000), Hpa::new(0), 0x2000, rw);
    assert!(matches!(
        ss.map(&mut mem, &mut frames, beyond),
        Err(MapError::InputOutOfRange { .. })
    ));
    let ok = Mapping::new(Iova::new((1 << 39) - 0x1000), Hpa::new(0x3000), 0x1000, rw);
    ss.map(&mut mem, &mut frames, ok).unwrap();
    assert_eq!(ss.tables_in_use(), 3);
}

#[test]
fn out_of_frames_is_undone() {
    let mut mem = HostMemory::new(MIB).unwrap();
    let mut frames = BitmapFrameAllocator::new(Hpa::new(0x1000), 3);
    let mut pt =
        PageTable::<Gva, Hpa>::new(&mut mem, &mut frames, PagingConfig::default()).unwrap();
    let m = Mapping::new(Gva::new(0), Hpa::new(0x10_0000), 0x1000, PteFlags::RW);
    assert_eq!(pt.map(&mut mem, &mut frames, m), Err(MapError::OutOfFrames));
    // The PDPT and PD it allocated before running out went back.
    assert_eq!(frames.free_frames(), 2);
    assert_eq!(pt.tables_in_use(), 1);
    assert_eq!(pt.stats().tables_freed.get(), 2);
    // Failing after some pages were mapped: those are unmapped and their tables freed too.
    let m = Mapping::new(
        Gva::new(0x1ff000),
        Hpa::new(0x10_0000),
        0x2000,
        PteFlags::RW,
    );
    assert_eq!(pt.map(&mut mem, &mut frames, m), Err(MapError::OutOfFrames));
    assert_eq!(frames.free_frames(), 2);
    assert!(
        pt.translate(&mem, Gva::new(0x1ff000), Access::READ)
            .is_err()
    );
}

#[test]
fn table_frames_come_from_the_allocator_given() {
    let mut mem = HostMemory::new(MIB).unwrap();
    let mut frames = MockFrameAllocator::<Hpa>::new();
    let mut next = 0x1000u64;
    frames.expect_alloc_frame().times(4).returning(move || {
        next += 0x1000;
        Some(Hpa::new(next))
    });
    frames.expect_free_frame().times(3).returning(|_| Ok(()));
    let mut pt =
        PageTable::<Gva, Hpa>::new(&mut mem, &mut frames, PagingConfig::default()).unwrap();
    assert_eq!(pt.root(), Hpa::new(0x2000));
    pt.map(
        &mut mem,
        &mut frames,
        Mapping::new(Gva::new(0x5000), Hpa::new(0x9000), 0x1000, PteFlags::RW),
    )
    .unwrap();
    let pages = pt.table_pages(&mem, Gva::new(0x5000), 0x1000).unwrap();
    assert_eq!(
        pages.into_iter().map(|p| p.raw()).collect::<Vec<_>>(),
        [0x2000, 0x3000, 0x4000, 0x5000]
    );
    pt.unmap(&mut mem, &mut frames, Gva::new(0x5000), 0x1000)
        .unwrap();
    assert_eq!(pt.tables_in_use(), 1);
}

#[test]
fn table_pages_of_packed_and_scattered_buffers() {
    let mut e = Env::new(PagingConfig::default());
    // 8 buffers of one page each: packed in one 32 KiB run, or 1 GiB apart.
    for i in 0..8 {
        e.map(
            0x100_0000 + i * 0x1000,
            0x10_0000 + i * 0x1000,
            0x1000,
            PteFlags::RW,
            PageSize::Size4K,
        )
        .unwrap();
        e.map(
            (i + 1) * GIB,
            0x10_0000,
            0x1000,
            PteFlags::RW,
            PageSize::Size4K,
        )
        .unwrap();
    }
    let packed =
        e.pt.table_pages(&e.mem, Gva::new(0x100_0000), 8 * 0x1000)
            .unwrap();
    assert_eq!(packed.len(), 4); // PML4, PDPT, PD, PT
    let mut scattered = std::collections::BTreeSet::new();
    for i in 0..8 {
        scattered.extend(
            e.pt.table_pages(&e.mem, Gva::new((i + 1) * GIB), 0x1000)
                .unwrap(),
        );
    }
    assert_eq!(scattered.len(), 1 + 1 + 8 + 8); // shared PML4 and PDPT, one PD and PT each
    // An unmapped range reports the tables its walks read before the hole, skipping by level.
    let hole =
        e.pt.table_pages(&e.mem, Gva::new(0x7000_0000_0000), 512 * GIB)
            .unwrap();
    assert_eq!(hole.len(), 1);
}

#[test]
fn free_all_returns_every_table() {
    let mut e = Env::new(PagingConfig::default());
    let free0 = e.frames.free_frames() + 1; // the root too
    let root = e.pt.root();
    e.map(0, 0, 6 * MIB, PteFlags::RW, PageSize::Size2M)
        .unwrap();
    e.map(5 * GIB, 0, 0x3000, PteFlags::RW, PageSize::Size4K)
        .unwrap();
    e.map(
        0xffff_f000_0000_0000,
        0,
        0x3000,
        PteFlags::RW,
        PageSize::Size4K,
    )
    .unwrap();
    let done = e.pt.free_all(&mut e.mem, &mut e.frames).unwrap();
    assert_eq!(done.tables_freed, 1 + 2 + 2 + 3); // root; PDPT+PD; PD+PT; PDPT+PD+PT
    assert_eq!(e.frames.free_frames(), free0);
    let mut table = [0xffu8; 4096];
    e.mem.read(root, &mut table).unwrap();
    assert!(
        table.iter().all(|&b| b == 0),
        "tables are cleared before they are freed"
    );
}

#[test]
fn free_all_on_a_shared_and_cyclic_hierarchy_terminates() {
    let mut mem = HostMemory::new(MIB).unwrap();
    let mut frames = BitmapFrameAllocator::new(Hpa::new(0x1000), 8);
    let pt = PageTable::<Gva, Hpa>::new(&mut mem, &mut frames, PagingConfig::default()).unwrap();
    let child = frames.alloc_frame().unwrap();
    // Every PML4 entry points at one child table, whose every entry points back at the root.
    for i in 0..512 {
        mem.write_u64(Hpa::new(0x1000 + i * 8), child.raw() | 0x7)
            .unwrap();
        mem.write_u64(Hpa::new(child.raw() + i * 8), 0x1000 | 0x7)
            .unwrap();
    }
    let done = pt.free_all(&mut mem, &mut frames).unwrap();
    assert_eq!(done.tables_freed, 2);
    assert_eq!(frames.free_frames(), 8);
}

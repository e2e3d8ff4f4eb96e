//! Walker tests on tables written entry by entry, independent of the mapper.

use iovirt_core::{
    Access, AccessKind, FaultReason, Gpa, Gva, HostMemory, Hpa, Iova, MockPhysMemory, PageSize,
    Perms, PhysMemory,
};
use mockall::Sequence;

use crate::{InputCheck, Level, Levels, PageTable, PagingConfig, PteFlags, TableRead, WalkFault};

const P: u64 = PteFlags::P.bits();
const RW: u64 = PteFlags::RW.bits();
const US: u64 = PteFlags::US.bits();
const PS: u64 = PteFlags::PS.bits();
const NX: u64 = PteFlags::NX.bits();
const A: u64 = PteFlags::A.bits();
const D: u64 = PteFlags::D.bits();
const TABLE: u64 = P | RW | US;

/// Hand-built tables: root at 0x1000, PDPT 0x2000, PD 0x3000, PT 0x4000
/// (PML5 at 0x5000 for 5-level), mapping input page 0x1000 of each level's
/// slot 0 unless a test changes an entry.
struct Fixture {
    mem: HostMemory,
}

impl Fixture {
    fn new() -> Self {
        let mut mem = HostMemory::new(16 << 20).unwrap();
        mem.write_u64(Hpa::new(0x1000), 0x2000 | TABLE).unwrap(); // PML4[0]
        mem.write_u64(Hpa::new(0x2000), 0x3000 | TABLE).unwrap(); // PDPT[0]
        mem.write_u64(Hpa::new(0x3000), 0x4000 | TABLE).unwrap(); // PD[0]
        mem.write_u64(Hpa::new(0x4008), 0x12_3456_7000 | P | RW | US)
            .unwrap(); // PT[1]
        mem.write_u64(Hpa::new(0x5000), 0x1000 | TABLE).unwrap(); // PML5[0]
        Fixture { mem }
    }

    fn set(&mut self, addr: u64, value: u64) {
        self.mem.write_u64(Hpa::new(addr), value).unwrap();
    }

    fn get(&self, addr: u64) -> u64 {
        self.mem.read_u64(Hpa::new(addr)).unwrap()
    }

    fn pt(&self, config: PagingConfig) -> PageTable<Gva, Hpa> {
        let root = if config.levels == Levels::Five {
            0x5000
        } else {
            0x1000
        };
        PageTable::from_root(Hpa::new(root), config)
    }

    fn walk(&self, input: u64, access: Access) -> Result<crate::Translation<Hpa>, WalkFault> {
        self.pt(PagingConfig::default())
            .translate(&self.mem, Gva::new(input), access)
    }
}

#[test]
fn four_kib_page_four_levels_with_exact_trace() {
    let f = Fixture::new();
    let walk = f
        .pt(PagingConfig::default())
        .walk(&f.mem, Gva::new(0x1abc), Access::READ.user());
    let t = walk.result.unwrap();
    assert_eq!(t.addr, Hpa::new(0x12_3456_7abc));
    assert_eq!(t.page, Hpa::new(0x12_3456_7000));
    assert_eq!(t.size, PageSize::Size4K);
    assert_eq!(t.perms, Perms::all());
    let reads: Vec<(Level, u64)> = walk.trace.iter().map(|r| (r.level, r.addr.raw())).collect();
    assert_eq!(
        reads,
        [
            (Level::Pml4, 0x1000),
            (Level::Pdpt, 0x2000),
            (Level::Pd, 0x3000),
            (Level::Pt, 0x4008)
        ]
    );
    let tables: Vec<u64> = walk.trace.iter().map(|r| r.table().raw()).collect();
    assert_eq!(tables, [0x1000, 0x2000, 0x3000, 0x4000]);
}

#[test]
fn five_level_walk_reads_five_entries() {
    let mut f = Fixture::new();
    // PML5[1] covers 1 << 48; point it at the same PML4.
    f.set(0x5008, 0x1000 | TABLE);
    let pt = f.pt(PagingConfig::cpu(Levels::Five));
    let walk = pt.walk(&f.mem, Gva::new((1 << 48) | 0x1010), Access::WRITE);
    assert_eq!(walk.result.unwrap().addr, Hpa::new(0x12_3456_7010));
    assert_eq!(walk.trace.len(), 5);
    assert_eq!(
        walk.trace.iter().next().map(|r| r.addr),
        Some(Hpa::new(0x5008))
    );
    // The same address is non-canonical under 4-level paging.
    assert_eq!(
        f.walk((1 << 48) | 0x1010, Access::READ),
        Err(WalkFault::NonCanonical {
            addr: (1 << 48) | 0x1010,
            width: 48
        })
    );
}

#[test]
fn two_mib_and_one_gib_leaves() {
    let mut f = Fixture::new();
    f.set(0x3008, 0x8000_0000 | P | RW | PS); // PD[1]: 2 MiB at 2 GiB
    let t = f.walk(0x20_1234, Access::WRITE).unwrap();
    assert_eq!((t.addr, t.size), (Hpa::new(0x8000_1234), PageSize::Size2M));
    assert_eq!(t.perms, Perms::READ | Perms::WRITE | Perms::EXECUTE); // U/S clear in the leaf

    f.set(0x2008, 0xc000_0000 | P | PS | NX); // PDPT[1]: 1 GiB at 3 GiB
    let walk = f
        .pt(PagingConfig::default())
        .walk(&f.mem, Gva::new(0x7654_3210), Access::READ);
    let t = walk.result.unwrap();
    assert_eq!((t.addr, t.size), (Hpa::new(0xf654_3210), PageSize::Size1G));
    assert_eq!(t.perms, Perms::READ);
    assert_eq!(walk.trace.len(), 2);

    // A 2 MiB leaf's PAT bit (12) is not part of the address.
    f.set(0x3008, 0x8000_0000 | (1 << 12) | P | PS);
    assert_eq!(
        f.walk(0x20_0000, Access::READ).unwrap().addr,
        Hpa::new(0x8000_0000)
    );
}

#[test]
fn not_present_at_every_level() {
    for (entry, level) in [
        (0x1000, Level::Pml4),
        (0x2000, Level::Pdpt),
        (0x3000, Level::Pd),
        (0x4008, Level::Pt),
    ] {
        let mut f = Fixture::new();
        // Other bits of a non-present entry are ignored, reserved ones included.
        f.set(entry, 0xffff_ffff_ffff_fffe);
        let walk = f
            .pt(PagingConfig::default())
            .walk(&f.mem, Gva::new(0x1000), Access::READ);
        assert_eq!(walk.result, Err(WalkFault::NotPresent { level }));
        assert_eq!(walk.trace.len(), 5 - level.number() as usize);
        assert_eq!(walk.result.unwrap_err().reason(), FaultReason::NotPresent);
    }
}

#[test]
fn write_to_read_only_accumulates_over_levels() {
    let mut f = Fixture::new();
    f.set(0x2000, 0x3000 | P | US); // R/W clear in the PDPTE only
    assert_eq!(
        f.walk(0x1000, Access::WRITE),
        Err(WalkFault::WriteToReadOnly { level: Level::Pt })
    );
    assert_eq!(
        f.walk(0x1000, Access::READ).unwrap().perms,
        Perms::READ | Perms::USER | Perms::EXECUTE
    );
    // CR0.WP = 0: supervisor writes ignore R/W, user writes do not.
    let no_wp = f.pt(PagingConfig {
        wp: false,
        ..PagingConfig::default()
    });
    assert!(
        no_wp
            .translate(&f.mem, Gva::new(0x1000), Access::WRITE)
            .is_ok()
    );
    assert_eq!(
        no_wp.translate(&f.mem, Gva::new(0x1000), Access::WRITE.user()),
        Err(WalkFault::WriteToReadOnly { level: Level::Pt })
    );
    assert_eq!(
        WalkFault::WriteToReadOnly { level: Level::Pt }.reason(),
        FaultReason::WriteDenied
    );
}

#[test]
fn user_to_supervisor() {
    let mut f = Fixture::new();
    f.set(0x1000, 0x2000 | P | RW); // U/S clear in the PML4E
    assert_eq!(
        f.walk(0x1000, Access::READ.user()),
        Err(WalkFault::UserToSupervisor { level: Level::Pt })
    );
    assert!(f.walk(0x1000, Access::READ).is_ok());
    let fault = f.walk(0x1000, Access::WRITE.user()).unwrap_err();
    assert_eq!(fault.reason(), FaultReason::PrivilegeDenied);
    assert_eq!(fault.level(), Some(Level::Pt));
}

#[test]
fn execute_on_nx_and_nx_reserved_without_nxe() {
    let mut f = Fixture::new();
    f.set(0x2000, 0x3000 | TABLE | NX); // NX in the PDPTE only
    assert_eq!(
        f.walk(0x1000, Access::EXECUTE),
        Err(WalkFault::ExecuteNx { level: Level::Pt })
    );
    assert!(f.walk(0x1000, Access::READ).is_ok());
    let no_nxe = f.pt(PagingConfig {
        nxe: false,
        ..PagingConfig::default()
    });
    let fault = no_nxe
        .translate(&f.mem, Gva::new(0x1000), Access::READ)
        .unwrap_err();
    assert_eq!(
        fault,
        WalkFault::ReservedBit {
            level: Level::Pdpt,
            entry: crate::PageTableEntry::from_raw(0x3000 | TABLE | NX)
        }
    );
    assert_eq!(fault.reason(), FaultReason::ReservedBit);
    assert_eq!(
        WalkFault::ExecuteNx { level: Level::Pt }.reason(),
        FaultReason::ExecuteDenied
    );
}

#[test]
fn reserved_bits() {
    let check = |entry_addr: u64, value: u64, config: PagingConfig, level: Level| {
        let mut f = Fixture::new();
        f.set(entry_addr, value);
        let res = f
            .pt(config)
            .translate(&f.mem, Gva::new(0x1000), Access::READ);
        assert_eq!(
            res,
            Err(WalkFault::ReservedBit {
                level,
                entry: crate::PageTableEntry::from_raw(value)
            }),
            "entry {value:#x} at {entry_addr:#x}"
        );
    };
    let cfg = PagingConfig::default();
    check(0x1000, 0x2000 | TABLE | PS, cfg, Level::Pml4); // PS in a PML4E
    check(0x3000, (1 << 13) | P | PS, cfg, Level::Pd); // 2 MiB leaf, bit 13
    check(0x2000, (1 << 21) | P | PS, cfg, Level::Pdpt); // 1 GiB leaf, bit 21
    let no1g = PagingConfig {
        page_1g: false,
        ..cfg
    };
    check(0x2000, P | PS, no1g, Level::Pdpt); // PS in a PDPTE without 1 GiB pages
    let narrow = PagingConfig {
        max_phys_bits: 40,
        ..cfg
    };
    check(0x4008, (1 << 40) | P, narrow, Level::Pt); // beyond MAXPHYADDR
    check(0x1000, (1 << 45) | 0x2000 | TABLE, narrow, Level::Pml4);
    // Bit 7 of a PTE is PAT, and bits 62:52 are ignored: neither is reserved.
    let mut f = Fixture::new();
    f.set(0x4008, 0x12_3456_7000 | P | PS | (0x7ff << 52));
    assert_eq!(
        f.walk(0x1000, Access::READ).unwrap().addr,
        Hpa::new(0x12_3456_7000)
    );
}

#[test]
fn input_address_checks() {
    let f = Fixture::new();
    assert_eq!(
        f.walk(0x8000_0000_0000, Access::READ),
        Err(WalkFault::NonCanonical {
            addr: 0x8000_0000_0000,
            width: 48
        })
    );
    // A canonical upper-half address walks PML4[511], which is not present.
    assert_eq!(
        f.walk(0xffff_8000_0000_0000, Access::READ),
        Err(WalkFault::NotPresent { level: Level::Pml4 })
    );
    let ss = PageTable::<Iova, Hpa>::from_root(
        Hpa::new(0x2000),
        PagingConfig::second_stage(Levels::Three),
    );
    let walk = ss.walk(&f.mem, Iova::new(1 << 39), Access::READ);
    assert_eq!(
        walk.result,
        Err(WalkFault::BeyondWidth {
            addr: 1 << 39,
            width: 39
        })
    );
    assert!(walk.trace.is_empty());
    assert_eq!(
        walk.result.unwrap_err().reason(),
        FaultReason::AddressBeyondWidth
    );
    // 3-level second stage: PDPT at the top, same leaf.
    assert_eq!(
        ss.translate(&f.mem, Iova::new(0x1234), Access::WRITE)
            .unwrap()
            .addr,
        Hpa::new(0x12_3456_7234)
    );
    assert_eq!(ss.config().input, InputCheck::ZeroExtended);
}

#[test]
fn tables_outside_memory() {
    let mut f = Fixture::new();
    f.set(0x3000, (32 << 20) | TABLE); // PD[0] -> a page table beyond 16 MiB
    assert_eq!(
        f.walk(0x1000, Access::READ),
        Err(WalkFault::TableOutsideMemory {
            level: Level::Pt,
            entry_addr: (32 << 20) | 8
        })
    );
    let far = PageTable::<Gva, Hpa>::from_root(Hpa::new(1 << 40), PagingConfig::default());
    let walk = far.walk(&f.mem, Gva::new(0), Access::READ);
    assert_eq!(
        walk.result,
        Err(WalkFault::TableOutsideMemory {
            level: Level::Pml4,
            entry_addr: 1 << 40
        })
    );
    assert!(walk.trace.is_empty());
}

#[test]
fn self_referencing_tables_terminate_within_the_levels() {
    let mut f = Fixture::new();
    // PML4[0] points at the PML4 itself: the walk reuses the root at every level.
    f.set(0x1000, 0x1000 | TABLE);
    let walk = f
        .pt(PagingConfig::default())
        .walk(&f.mem, Gva::new(0), Access::READ);
    assert_eq!(walk.trace.len(), 4);
    assert!(walk.trace.iter().all(|r| r.addr == Hpa::new(0x1000)));
    // ... and the "leaf" is the root entry, mapping the root's own frame.
    assert_eq!(walk.result.unwrap().addr, Hpa::new(0x1000));
    // Every entry of every table pointing at the root: still 4 reads for any address.
    for i in 0..512 {
        f.set(0x1000 + i * 8, 0x1000 | TABLE);
    }
    for addr in [
        0u64,
        0x7fff_ffff_f000,
        0x1234_5678_9000,
        0xffff_ffff_ffff_f000,
    ] {
        let walk = f
            .pt(PagingConfig::default())
            .walk(&f.mem, Gva::new(addr), Access::WRITE);
        assert_eq!(walk.trace.len(), 4);
        assert_eq!(walk.result.unwrap().page, Hpa::new(0x1000));
    }
}

#[test]
fn accessed_and_dirty_update() {
    let mut f = Fixture::new();
    let cfg = PagingConfig {
        update_ad: true,
        ..PagingConfig::default()
    };
    // walk() never writes, even when configured to update.
    let _ = f.pt(cfg).walk(&f.mem, Gva::new(0x1000), Access::WRITE);
    assert_eq!(f.get(0x1000) & A, 0);
    let t = f
        .pt(cfg)
        .walk_mut(&mut f.mem, Gva::new(0x1000), Access::READ)
        .result
        .unwrap();
    assert_eq!(t.leaf.flags() & (PteFlags::A | PteFlags::D), PteFlags::A);
    for addr in [0x1000, 0x2000, 0x3000, 0x4008] {
        assert_eq!(f.get(addr) & (A | D), A, "entry {addr:#x}");
    }
    let t = f
        .pt(cfg)
        .walk_mut(&mut f.mem, Gva::new(0x1000), Access::WRITE)
        .result
        .unwrap();
    assert!(t.leaf.flags().contains(PteFlags::D));
    assert_eq!(f.get(0x4008) & (A | D), A | D);
    assert_eq!(f.get(0x3000) & D, 0); // D only in the leaf

    // No update without the configuration, and none after a fault.
    let mut g = Fixture::new();
    let _ = g
        .pt(PagingConfig::default())
        .walk_mut(&mut g.mem, Gva::new(0x1000), Access::WRITE);
    assert_eq!(g.get(0x1000) & A, 0);
    g.set(0x4008, 0x12_3456_7000 | P | US); // read-only
    let walk = g
        .pt(cfg)
        .walk_mut(&mut g.mem, Gva::new(0x1000), Access::WRITE);
    assert!(walk.result.is_err());
    assert_eq!(g.get(0x1000) & A, 0);
}

#[test]
fn guest_tables_in_guest_physical_memory() {
    // The walker is generic over the physical space: a Gva -> Gpa table read
    // through a PhysMemory<Gpa> view (here a mock standing in for a VM's
    // memory) touches exactly the expected guest-physical entries, in order.
    let mut mem = MockPhysMemory::<Gpa>::new();
    let mut seq = Sequence::new();
    for (addr, value) in [
        (0x10_0000u64 + 8 * 3, 0x10_1000 | TABLE),
        (0x10_1000, 0x10_2000 | TABLE),
        (0x10_2000 + 8 * 5, 0x4_0000_0000 | P | PS | RW),
    ] {
        mem.expect_read_u64()
            .withf(move |a| *a == Gpa::new(addr))
            .times(1)
            .in_sequence(&mut seq)
            .returning(move |_| Ok(value));
    }
    let input = (3u64 << 39) | (5 << 21) | 0x1_2345;
    let pt = PageTable::<Gva, Gpa>::from_root(Gpa::new(0x10_0000), PagingConfig::default());
    let t = pt.translate(&mem, Gva::new(input), Access::WRITE).unwrap();
    assert_eq!(t.addr, Gpa::new(0x4_0001_2345));
    assert_eq!(t.size, PageSize::Size2M);
}

#[test]
fn memory_errors_become_table_outside_memory() {
    let mut mem = MockPhysMemory::<Hpa>::new();
    mem.expect_read_u64().returning(|a| {
        Err(iovirt_core::MemError::Unmapped {
            space: "host-physical",
            addr: a.raw(),
        })
    });
    let pt = PageTable::<Iova, Hpa>::from_root(
        Hpa::new(0x7000),
        PagingConfig::second_stage(Levels::Four),
    );
    let walk = pt.walk(&mem, Iova::new(0x8000), Access::READ);
    assert_eq!(
        walk.result,
        Err(WalkFault::TableOutsideMemory {
            level: Level::Pml4,
            entry_addr: 0x7000
        })
    );
    let reason = walk.result.unwrap_err().reason();
    assert_eq!(reason, FaultReason::TableOutsideMemory);
    assert_eq!(AccessKind::Read, Access::READ.kind);
}

#[test]
fn trace_records_entry_values() {
    let f = Fixture::new();
    let walk = f
        .pt(PagingConfig::default())
        .walk(&f.mem, Gva::new(0x1000), Access::READ);
    let last: Vec<TableRead<Hpa>> = walk.trace.iter().skip(3).collect();
    assert_eq!(last.len(), 1);
    assert_eq!(last.first().map(|r| r.entry.addr()), Some(0x12_3456_7000));
    assert_eq!(walk.trace.last(), last.first().copied());
    assert_eq!(
        walk.trace.get(0).map(|r| (r.level, r.addr)),
        Some((Level::Pml4, Hpa::new(0x1000)))
    );
    assert_eq!(walk.trace.get(4), None);
    assert!(format!("{:?}", walk.trace).contains("Pml4"));
}

#[test]
fn resumed_walk_skips_the_upper_levels() {
    let mut f = Fixture::new();
    f.set(0x2000, 0x3000 | P | US); // R/W clear in the PDPTE: must survive the resume
    let pt = f.pt(PagingConfig::default());
    let full = pt.walk(&f.mem, Gva::new(0x1000), Access::READ);
    let start = full
        .resume_below(Level::Pd, pt.config().phys_mask())
        .unwrap();
    assert_eq!((start.table, start.level), (0x4000, Level::Pt));
    let resumed = pt.walk_raw_from(&f.mem, 0x1000, Access::READ, start);
    assert_eq!(resumed.result, full.result);
    assert_eq!(resumed.trace.len(), 1);
    assert_eq!(
        resumed.trace.get(0).map(|r| (r.level, r.addr.raw())),
        Some((Level::Pt, 0x4008))
    );
    // The rights accumulated above the resume point still apply.
    assert_eq!(
        pt.walk_raw_from(&f.mem, 0x1000, Access::WRITE, start)
            .result,
        Err(WalkFault::WriteToReadOnly { level: Level::Pt })
    );
    // No resume point below a leaf, or at a level the walk did not reach.
    f.set(0x3008, 0x8000_0000 | P | RW | PS);
    let huge = pt.walk(&f.mem, Gva::new(0x20_0000), Access::READ);
    assert_eq!(huge.resume_below(Level::Pd, pt.config().phys_mask()), None);
    assert_eq!(huge.resume_below(Level::Pt, pt.config().phys_mask()), None);
    assert!(
        huge.resume_below(Level::Pdpt, pt.config().phys_mask())
            .is_some()
    );
    // A start above the mode's top level is clamped to the top.
    let mut odd = pt.start();
    odd.level = Level::Pml5;
    assert_eq!(
        pt.walk_raw_from(&f.mem, 0x1000, Access::READ, odd)
            .trace
            .len(),
        4
    );
}

//! The walker on arbitrary table memory, root, address, access and mode.
//!
//! Whatever the bytes, a walk must return (no panic, no hang), read at most
//! one entry per level, and any translation it returns must be internally
//! consistent. A/D updates may only touch entries the walk read.

#![no_main]

use arbitrary::Arbitrary;
use iovirt_core::{Access, AccessKind, Gva, HostMemory, Hpa, PhysMemory, Privilege};
use iovirt_paging::{InputCheck, Levels, PageTable, PagingConfig};
use libfuzzer_sys::fuzz_target;

/// Memory the tables live in: 8 frames, so entries often point outside it.
const MEM: u64 = 32 * 1024;

#[derive(Debug, Arbitrary)]
struct Input {
    levels: u8,
    max_phys_bits: u8,
    flags: u8,
    root: u64,
    addr: u64,
    access: u8,
    /// Table contents, written from address 0.
    tables: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let levels = match input.levels % 3 {
        0 => Levels::Three,
        1 => Levels::Four,
        _ => Levels::Five,
    };
    let config = PagingConfig {
        levels,
        max_phys_bits: 32 + input.max_phys_bits % 21,
        nxe: input.flags & 1 != 0,
        wp: input.flags & 2 != 0,
        page_1g: input.flags & 4 != 0,
        input: if input.flags & 8 != 0 {
            InputCheck::Canonical
        } else {
            InputCheck::ZeroExtended
        },
        update_ad: input.flags & 16 != 0,
    };
    let access = Access {
        kind: match input.access % 3 {
            0 => AccessKind::Read,
            1 => AccessKind::Write,
            _ => AccessKind::Execute,
        },
        privilege: if input.access & 4 != 0 {
            Privilege::User
        } else {
            Privilege::Supervisor
        },
    };
    let mut mem = HostMemory::new(MEM).expect("fixed size is valid");
    let len = input.tables.len().min(MEM as usize);
    mem.write(Hpa::new(0), &input.tables[..len])
        .expect("in range");
    // Roots inside memory most of the time, anywhere sometimes.
    let root = if input.flags & 32 != 0 {
        input.root
    } else {
        input.root % MEM
    };
    let pt = PageTable::<Gva, Hpa>::from_root(Hpa::new(root), config);

    let walk = pt.walk(&mem, Gva::new(input.addr), access);
    assert!(walk.trace.len() <= usize::from(levels.count()));
    // Read-only walks are repeatable.
    let again = pt.walk(&mem, Gva::new(input.addr), access);
    assert_eq!(walk.result, again.result);
    if let Ok(t) = walk.result {
        assert_eq!(t.page.raw() & t.size.mask(), 0, "page aligned to its size");
        assert_eq!(t.addr.raw() - t.page.raw(), input.addr & t.size.mask());
        assert!(t.addr.raw() < 1 << config.max_phys_bits.min(52));
        assert!(t.perms.contains(iovirt_core::Perms::READ));
        if config.wp {
            assert!(t.perms.allows(access), "{:?} vs {:?}", t.perms, access);
        }
    }

    // A/D update: only entries the walk read may change, and only by A/D.
    let mut before = vec![0u8; MEM as usize];
    mem.read(Hpa::new(0), &mut before).expect("in range");
    let walk_mut = pt.walk_mut(&mut mem, Gva::new(input.addr), access);
    assert_eq!(walk_mut.result.is_ok(), walk.result.is_ok());
    let mut after = vec![0u8; MEM as usize];
    mem.read(Hpa::new(0), &mut after).expect("in range");
    for (i, (b, a)) in before.chunks(8).zip(after.chunks(8)).enumerate() {
        if b != a {
            let addr = i as u64 * 8;
            assert!(config.update_ad && walk.trace.iter().any(|r| r.addr.raw() == addr));
            let old = u64::from_le_bytes(b.try_into().expect("8 bytes"));
            let new = u64::from_le_bytes(a.try_into().expect("8 bytes"));
            assert_eq!(
                (old ^ new) & !0x60,
                0,
                "only A (bit 5) and D (bit 6) change"
            );
        }
    }
});

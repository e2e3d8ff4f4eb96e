//! The mapper under random map / unmap / protect sequences, on tables that
//! may also have been scribbled on (as a guest that can write its own tables
//! would). Nothing may panic; on clean tables every successful map must
//! translate as requested, and unmapping everything must free every table.

#![no_main]

use arbitrary::Arbitrary;
use iovirt_core::{Access, BitmapFrameAllocator, Gva, HostMemory, Hpa, PageSize, PhysMemory};
use iovirt_paging::{Levels, Mapping, PageTable, PagingConfig, PteFlags};
use libfuzzer_sys::fuzz_target;

const MEM: u64 = 4 << 20;
const WINDOW: u64 = 1 << 32;

#[derive(Debug, Arbitrary)]
enum Op {
    Map {
        page: u32,
        pages: u16,
        phys: u32,
        flags: u8,
        huge: u8,
    },
    Unmap {
        page: u32,
        pages: u16,
    },
    Protect {
        page: u32,
        pages: u16,
        flags: u8,
    },
    /// Overwrite one u64 of memory (a table entry, perhaps).
    Scribble {
        addr: u32,
        value: u64,
    },
}

#[derive(Debug, Arbitrary)]
struct Input {
    five_level: bool,
    ops: Vec<Op>,
}

fn flags(bits: u8) -> PteFlags {
    PteFlags::from_bits_truncate(u64::from(bits) & 0x1e)
        | if bits & 1 != 0 {
            PteFlags::NX
        } else {
            PteFlags::empty()
        }
}

fuzz_target!(|input: Input| {
    let levels = if input.five_level {
        Levels::Five
    } else {
        Levels::Four
    };
    let mut mem = HostMemory::new(MEM).expect("fixed size is valid");
    let mut frames = BitmapFrameAllocator::new(Hpa::new(0), MEM / 4096);
    let mut pt = PageTable::<Gva, Hpa>::new(&mut mem, &mut frames, PagingConfig::cpu(levels))
        .expect("fresh allocator has frames");
    let mut scribbled = false;
    for op in input.ops.iter().take(64) {
        match *op {
            Op::Map {
                page,
                pages,
                phys,
                flags: f,
                huge,
            } => {
                let va = (u64::from(page) * 4096) % WINDOW;
                let len = (u64::from(pages % 2048) + 1) * 4096;
                let largest = match huge % 3 {
                    0 => PageSize::Size4K,
                    1 => PageSize::Size2M,
                    _ => PageSize::Size1G,
                };
                let m = Mapping::new(
                    Gva::new(va),
                    Hpa::new(u64::from(phys) * 4096),
                    len,
                    flags(f),
                )
                .with_largest(largest);
                if pt.map(&mut mem, &mut frames, m).is_ok() && !scribbled {
                    for probe in [0, len / 2, len - 1] {
                        let t = pt
                            .translate(&mem, Gva::new(va + probe), Access::READ)
                            .expect("just mapped");
                        assert_eq!(t.addr.raw(), u64::from(phys) * 4096 + probe);
                    }
                }
            }
            Op::Unmap { page, pages } => {
                let va = (u64::from(page) * 4096) % WINDOW;
                let len = (u64::from(pages) + 1) * 4096;
                if pt.unmap(&mut mem, &mut frames, Gva::new(va), len).is_ok() && !scribbled {
                    assert!(pt.translate(&mem, Gva::new(va), Access::READ).is_err());
                }
            }
            Op::Protect {
                page,
                pages,
                flags: f,
            } => {
                let va = (u64::from(page) * 4096) % WINDOW;
                let len = (u64::from(pages) + 1) * 4096;
                let _ = pt.protect(&mut mem, &mut frames, Gva::new(va), len, flags(f));
            }
            Op::Scribble { addr, value } => {
                let addr = u64::from(addr) % MEM & !7;
                mem.write_u64(Hpa::new(addr), value).expect("in range");
                scribbled = true;
            }
        }
    }
    if !scribbled {
        // Ranges start in the window and may run up to 8 MiB past it.
        pt.unmap(&mut mem, &mut frames, Gva::new(0), WINDOW + (16 << 20))
            .expect("clean tables unmap");
        assert_eq!(pt.tables_in_use(), 1);
        assert_eq!(frames.used_frames(), 1);
    }
    let _ = pt.free_all(&mut mem, &mut frames);
});

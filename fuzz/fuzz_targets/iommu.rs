//! The whole IOMMU under random sequences of what software and devices do:
//! table edits, every kind of invalidation (queued or not), context, PASID
//! and GVMI changes with arbitrary roots, DMA through the port, prefetch,
//! fault servicing, and raw scribbles over the memory holding the tables.
//!
//! Nothing may panic, and a few invariants hold whatever the input: the
//! fault log never holds more records than it has registers, IOTLB lookups
//! (hits plus misses) and counted faults never go down, the invalidation
//! queue never holds more than its capacity nor the IOTLB more valid entries
//! than it has, a successful DMA moved exactly its length and a prefetch
//! moved nothing.

#![no_main]

use arbitrary::Arbitrary;
use iovirt_core::{
    AccessKind, BitmapFrameAllocator, DmaPort, Gpa, Gva, HostMemory, Hpa, Iova, Irq, PageSize,
    PhysMemory,
};
use iovirt_iommu::{
    ContextEntry, DmaRequest, DomainId, GvmEntry, Gvmi, Invalidation, Iommu, IommuConfig,
    IotlbConfig, Pasid, PasidEntry, QueuedInvalidation, Replacement, RequesterId, UplinkAttribute,
};
use iovirt_paging::{Levels, Mapping, PageTable, PagingConfig, PteFlags};
use libfuzzer_sys::fuzz_target;

/// Host memory: tables in the first MiB, data above.
const MEM: u64 = 4 << 20;
const TABLE_FRAMES: u64 = 256;
/// IOVA pages map and DMA work in: 16 MiB.
const WINDOW_PAGES: u64 = 4096;
/// Host pages a mapping may point at: 8 MiB, half of it beyond memory.
const PHYS_PAGES: u64 = 2048;
/// Longest DMA: 16 KiB.
const MAX_DMA: usize = 16 << 10;
/// Operations per input.
const MAX_OPS: usize = 64;
/// A process address space of requester 0 (PASID 1), nested over domain 1.
const VA_BASE: u64 = 0x1000_0000;
const VA_DATA: u64 = 0x30_0000;
const VA_PAGES: u64 = 16;

#[derive(Debug, Arbitrary)]
struct Geometry {
    entries: u8,
    ways: u8,
    fifo: bool,
    walk_cache: u8,
    fault_records: u16,
    fault_irq: Option<u32>,
    max_phys_bits: u8,
    page_1g: bool,
    queue: u8,
}

#[derive(Debug, Arbitrary)]
struct Input {
    geometry: Geometry,
    /// Table depth of domains 1 to 3.
    levels: [u8; 3],
    ops: Vec<Op>,
}

#[derive(Debug, Arbitrary)]
enum Addr {
    /// Inside the window the mappings are made in.
    Near(u32),
    /// Around the process address space of requester 0's PASID 1.
    Process(u32),
    /// Anywhere.
    Raw(u64),
}

impl Addr {
    fn get(&self) -> u64 {
        match *self {
            Addr::Near(a) => u64::from(a) % (WINDOW_PAGES * 4096),
            Addr::Process(a) => VA_BASE + u64::from(a) % (2 * VA_PAGES * 4096),
            Addr::Raw(a) => a,
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Req {
    requester: u8,
    pasid: Option<u8>,
    privileged: bool,
}

impl Req {
    fn get(&self) -> DmaRequest {
        let mut r = DmaRequest::new(requester(self.requester));
        if let Some(p) = self.pasid {
            r = r.with_pasid(pasid(p));
        }
        r.privileged = self.privileged;
        r
    }
}

#[derive(Debug, Arbitrary)]
enum Inv {
    Global,
    Domain(u16),
    Page {
        domain: u16,
        addr: u64,
        order: u8,
    },
    Pasid {
        domain: u16,
        pasid: u8,
    },
    PasidPage {
        domain: u16,
        pasid: u8,
        addr: u64,
        order: u8,
    },
    Context(u8),
    Gvmi(u16),
    GvmiPage {
        gvmi: u16,
        addr: u64,
        order: u8,
    },
}

impl Inv {
    fn get(&self) -> Invalidation {
        match *self {
            Inv::Global => Invalidation::Global,
            Inv::Domain(d) => Invalidation::Domain(domain(d)),
            Inv::Page {
                domain: d,
                addr,
                order,
            } => Invalidation::Page {
                domain: domain(d),
                addr: Iova::new(addr),
                order,
            },
            Inv::Pasid {
                domain: d,
                pasid: p,
            } => Invalidation::Pasid {
                domain: domain(d),
                pasid: pasid(p),
            },
            Inv::PasidPage {
                domain: d,
                pasid: p,
                addr,
                order,
            } => Invalidation::PasidPage {
                domain: domain(d),
                pasid: pasid(p),
                addr,
                order,
            },
            Inv::Context(r) => Invalidation::Context(requester(r)),
            Inv::Gvmi(g) => Invalidation::Gvmi(gvmi(g)),
            Inv::GvmiPage {
                gvmi: g,
                addr,
                order,
            } => Invalidation::GvmiPage {
                gvmi: gvmi(g),
                addr: Gpa::new(addr),
                order,
            },
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Op {
    Map {
        domain: u8,
        page: u32,
        pages: u16,
        phys: u32,
        flags: u8,
        huge: u8,
    },
    Unmap {
        domain: u8,
        page: u32,
        pages: u16,
    },
    Protect {
        domain: u8,
        page: u32,
        pages: u16,
        flags: u8,
    },
    Invalidate(Inv),
    Read {
        req: Req,
        addr: Addr,
        len: u16,
    },
    Write {
        req: Req,
        addr: Addr,
        len: u16,
        fill: u8,
    },
    Prefetch {
        req: Req,
        addr: Addr,
        kind: u8,
    },
    /// One translation through `Iommu::translate`, as a platform would.
    Translate {
        req: Req,
        addr: Addr,
        kind: u8,
    },
    SetContext {
        requester: u8,
        pass_through: bool,
        domain: u16,
        pasid_enabled: bool,
    },
    ClearContext(u8),
    SetDomain {
        domain: u16,
        root: u64,
        levels: u8,
    },
    RemoveDomain(u16),
    SetPasid {
        requester: u8,
        pasid: u8,
        root: u64,
        five_level: bool,
    },
    ClearPasid {
        requester: u8,
        pasid: u8,
    },
    SetGvm {
        gvmi: u16,
        root: u64,
        levels: u8,
    },
    ClearGvm(u16),
    SetUplink {
        gvmi: u16,
        attribute: u32,
    },
    TranslateGvmi {
        gvmi: u16,
        addr: Addr,
        kind: u8,
        prefetch: bool,
    },
    /// Overwrite one u64 of memory: of the tables, or anywhere.
    Scribble {
        addr: u32,
        value: u64,
        tables_only: bool,
    },
    Submit(Inv),
    SubmitWait {
        addr: u64,
        status: u32,
    },
    ProcessQueue,
    ClearQueueError,
    PopFault,
    ClearOverflow,
}

fn requester(r: u8) -> RequesterId {
    RequesterId::from_raw(match r % 6 {
        0 => 0x0008,
        1 => 0x0010,
        2 => 0x0118,
        3 => 0xfff8,
        4 => 0x0000,
        _ => u16::from(r) * 0x101,
    })
}

fn pasid(p: u8) -> Pasid {
    Pasid::new(u32::from(p % 4) * 0x4_0001).expect("below 2^20")
}

fn domain(d: u16) -> DomainId {
    DomainId(d % 5)
}

fn gvmi(g: u16) -> Gvmi {
    Gvmi(g % 4)
}

fn levels(l: u8) -> Levels {
    match l % 3 {
        0 => Levels::Three,
        1 => Levels::Four,
        _ => Levels::Five,
    }
}

fn kind(k: u8) -> AccessKind {
    match k % 3 {
        0 => AccessKind::Read,
        1 => AccessKind::Write,
        _ => AccessKind::Execute,
    }
}

fn leaf_flags(bits: u8) -> PteFlags {
    PteFlags::from_bits_truncate(u64::from(bits) & 0x1e)
        | if bits & 1 != 0 {
            PteFlags::NX
        } else {
            PteFlags::empty()
        }
}

/// What must never go down.
fn monotonic(iommu: &Iommu) -> (u64, u64) {
    let s = iommu.stats();
    (s.iotlb_hits.get() + s.iotlb_misses.get(), s.faults.total())
}

fuzz_target!(|input: Input| {
    let g = &input.geometry;
    let config = IommuConfig {
        iotlb: IotlbConfig {
            entries: usize::from(g.entries % 65),
            ways: usize::from(g.ways % 9),
            replacement: if g.fifo {
                Replacement::Fifo
            } else {
                Replacement::Lru
            },
        },
        walk_cache_entries: usize::from(g.walk_cache % 17),
        fault_records: usize::from(g.fault_records % 300),
        fault_irq: g.fault_irq.map(Irq),
        max_phys_bits: 32 + g.max_phys_bits % 21,
        page_1g: g.page_1g,
        invalidation_queue: usize::from(g.queue % 9),
    };
    // An impossible IOTLB is refused up front; nothing to run.
    let Ok(mut iommu) = Iommu::new(config) else {
        return;
    };
    let fault_capacity = config.fault_records.clamp(1, 256);
    let queue_capacity = config.invalidation_queue.max(1);

    let mut mem = HostMemory::new(MEM).expect("fixed size is valid");
    let mut frames = BitmapFrameAllocator::new(Hpa::new(0), TABLE_FRAMES);
    let paging = |l: Levels| PagingConfig {
        max_phys_bits: config.max_phys_bits,
        page_1g: config.page_1g,
        ..PagingConfig::second_stage(l)
    };
    let mut tables: Vec<PageTable<Iova, Hpa>> = Vec::new();
    for (i, &l) in input.levels.iter().enumerate() {
        let l = levels(l);
        let pt = PageTable::new(&mut mem, &mut frames, paging(l)).expect("fresh frames");
        iommu.set_domain(DomainId(i as u16 + 1), pt.root(), l);
        tables.push(pt);
    }

    // A working nested translation to start from: requester 0's PASID 1
    // maps VA_BASE.. to guest-physical VA_DATA.., and domain 1 maps the
    // guest-physical first MiBs onto the same host addresses.
    if let Some(d1) = tables.first_mut() {
        let identity = Mapping::new(Iova::new(0), Hpa::new(0), MEM, PteFlags::RW)
            .with_largest(PageSize::Size2M);
        let _ = d1.map(&mut mem, &mut frames, identity);
    }
    if let Ok(mut first) =
        PageTable::<Gva, Hpa>::new(&mut mem, &mut frames, PagingConfig::cpu(Levels::Four))
    {
        let m = Mapping::new(
            Gva::new(VA_BASE),
            Hpa::new(VA_DATA),
            VA_PAGES * 4096,
            PteFlags::RW | PteFlags::US,
        );
        let _ = first.map(&mut mem, &mut frames, m);
        iommu.set_pasid(
            requester(0),
            pasid(1),
            PasidEntry {
                first_stage_root: Gpa::new(first.root().raw()),
                levels: Levels::Four,
            },
        );
    }
    iommu.set_context(
        requester(0),
        ContextEntry::Translate {
            domain: DomainId(1),
            pasid_enabled: true,
        },
    );
    iommu.set_context(
        requester(1),
        ContextEntry::Translate {
            domain: DomainId(2),
            pasid_enabled: false,
        },
    );
    iommu.set_context(requester(2), ContextEntry::PassThrough);
    // GVMI 1's PA2MA tables are domain 2's tables.
    if let Some(d2) = tables.get(1) {
        iommu.set_gvm(
            Gvmi(1),
            GvmEntry {
                pa2ma_root: d2.root(),
                levels: d2.config().levels,
            },
        );
    }

    let mut irqs: Vec<Irq> = Vec::new();
    let mut before = monotonic(&iommu);
    for op in input.ops.iter().take(MAX_OPS) {
        match op {
            Op::Map {
                domain: d,
                page,
                pages,
                phys,
                flags,
                huge,
            } => {
                let m = Mapping::new(
                    Iova::new(u64::from(*page) % WINDOW_PAGES * 4096),
                    Hpa::new(u64::from(*phys) % PHYS_PAGES * 4096),
                    (u64::from(pages % 1024) + 1) * 4096,
                    leaf_flags(*flags),
                )
                .with_largest(match huge % 3 {
                    0 => PageSize::Size4K,
                    1 => PageSize::Size2M,
                    _ => PageSize::Size1G,
                });
                if let Some(pt) = tables.get_mut(usize::from(d % 3)) {
                    let _ = pt.map(&mut mem, &mut frames, m);
                }
            }
            Op::Unmap {
                domain: d,
                page,
                pages,
            } => {
                if let Some(pt) = tables.get_mut(usize::from(d % 3)) {
                    let _ = pt.unmap(
                        &mut mem,
                        &mut frames,
                        Iova::new(u64::from(*page) % WINDOW_PAGES * 4096),
                        (u64::from(*pages) + 1) * 4096,
                    );
                }
            }
            Op::Protect {
                domain: d,
                page,
                pages,
                flags,
            } => {
                if let Some(pt) = tables.get_mut(usize::from(d % 3)) {
                    let _ = pt.protect(
                        &mut mem,
                        &mut frames,
                        Iova::new(u64::from(*page) % WINDOW_PAGES * 4096),
                        (u64::from(*pages) + 1) * 4096,
                        leaf_flags(*flags),
                    );
                }
            }
            Op::Invalidate(inv) => {
                iommu.invalidate(inv.get());
            }
            Op::Read { req, addr, len } => {
                let mut buf = vec![0u8; usize::from(*len) % (MAX_DMA + 1)];
                let mut port = iommu.port(&mut mem, &mut irqs, req.get());
                if let Ok(cost) = port.dma_read(Iova::new(addr.get()), &mut buf) {
                    assert_eq!(cost.bytes, buf.len() as u64, "read moved its length");
                }
            }
            Op::Write {
                req,
                addr,
                len,
                fill,
            } => {
                let data = vec![*fill; usize::from(*len) % (MAX_DMA + 1)];
                let mut port = iommu.port(&mut mem, &mut irqs, req.get());
                if let Ok(cost) = port.dma_write(Iova::new(addr.get()), &data) {
                    assert_eq!(cost.bytes, data.len() as u64, "write moved its length");
                }
            }
            Op::Prefetch { req, addr, kind: k } => {
                let mut port = iommu.port(&mut mem, &mut irqs, req.get());
                if let Ok(cost) = port.prefetch(Iova::new(addr.get()), kind(*k)) {
                    assert_eq!(cost.bytes, 0, "a prefetch moves no data");
                }
            }
            Op::Translate { req, addr, kind: k } => {
                if let Ok(t) = iommu.translate(&mem, req.get(), addr.get(), kind(*k)) {
                    assert!(
                        (1..=1 << 30).contains(&t.room),
                        "room {:#x} is not within one page",
                        t.room
                    );
                }
                if let Some(irq) = iommu.take_fault_event() {
                    irqs.push(irq);
                }
            }
            Op::SetContext {
                requester: r,
                pass_through,
                domain: d,
                pasid_enabled,
            } => {
                let entry = if *pass_through {
                    ContextEntry::PassThrough
                } else {
                    ContextEntry::Translate {
                        domain: domain(*d),
                        pasid_enabled: *pasid_enabled,
                    }
                };
                iommu.set_context(requester(*r), entry);
            }
            Op::ClearContext(r) => iommu.clear_context(requester(*r)),
            Op::SetDomain {
                domain: d,
                root,
                levels: l,
            } => iommu.set_domain(domain(*d), Hpa::new(*root), levels(*l)),
            Op::RemoveDomain(d) => iommu.remove_domain(domain(*d)),
            Op::SetPasid {
                requester: r,
                pasid: p,
                root,
                five_level,
            } => iommu.set_pasid(
                requester(*r),
                pasid(*p),
                PasidEntry {
                    first_stage_root: Gpa::new(*root),
                    levels: if *five_level {
                        Levels::Five
                    } else {
                        Levels::Four
                    },
                },
            ),
            Op::ClearPasid {
                requester: r,
                pasid: p,
            } => iommu.clear_pasid(requester(*r), pasid(*p)),
            Op::SetGvm {
                gvmi: g,
                root,
                levels: l,
            } => iommu.set_gvm(
                gvmi(*g),
                GvmEntry {
                    pa2ma_root: Hpa::new(*root),
                    levels: levels(*l),
                },
            ),
            Op::ClearGvm(g) => iommu.clear_gvm(gvmi(*g)),
            Op::SetUplink { gvmi: g, attribute } => {
                iommu.set_uplink(gvmi(*g), UplinkAttribute(*attribute));
            }
            Op::TranslateGvmi {
                gvmi: g,
                addr,
                kind: k,
                prefetch,
            } => {
                let pa = Gpa::new(addr.get());
                if *prefetch {
                    if let Ok(cost) = iommu.prefetch_gvmi(&mem, gvmi(*g), pa, kind(*k)) {
                        assert_eq!(cost.bytes, 0, "a prefetch moves no data");
                    }
                } else if let Ok(t) = iommu.translate_gvmi(&mem, gvmi(*g), pa, kind(*k)) {
                    assert!((1..=1 << 30).contains(&t.room), "room {:#x}", t.room);
                    assert_eq!(t.uplink, iommu.uplink(gvmi(*g)));
                }
            }
            Op::Scribble {
                addr,
                value,
                tables_only,
            } => {
                let span = if *tables_only {
                    TABLE_FRAMES * 4096
                } else {
                    MEM
                };
                let at = u64::from(*addr) % span & !7;
                mem.write_u64(Hpa::new(at), *value).expect("in range");
            }
            Op::Submit(inv) => {
                let full = iommu.queued() >= queue_capacity;
                let r = iommu.submit(QueuedInvalidation::Invalidate(inv.get()));
                assert_eq!(r.is_err(), full, "submit fails exactly when full");
            }
            Op::SubmitWait { addr, status } => {
                let full = iommu.queued() >= queue_capacity;
                let r = iommu.submit(QueuedInvalidation::Wait {
                    status_addr: Hpa::new(*addr),
                    status: *status,
                });
                assert_eq!(r.is_err(), full, "submit fails exactly when full");
            }
            Op::ProcessQueue => {
                let queued = iommu.queued();
                match iommu.process_queue(&mut mem) {
                    Ok(done) => {
                        assert_eq!(done, queued, "processing drains the queue");
                        assert_eq!(iommu.queued(), 0);
                    }
                    Err(_) => assert!(iommu.queue_error().is_some(), "a failure halts the queue"),
                }
            }
            Op::ClearQueueError => iommu.clear_queue_error(),
            Op::PopFault => {
                let _ = iommu.faults_mut().pop();
            }
            Op::ClearOverflow => iommu.faults_mut().clear_overflow(),
        }
        assert!(
            iommu.faults().len() <= fault_capacity,
            "fault log holds {} records in {} registers",
            iommu.faults().len(),
            fault_capacity
        );
        assert!(iommu.queued() <= queue_capacity, "queue over capacity");
        assert!(
            iommu.iotlb_occupancy() <= config.iotlb.entries,
            "{} valid IOTLB entries in {}",
            iommu.iotlb_occupancy(),
            config.iotlb.entries
        );
        let now = monotonic(&iommu);
        assert!(
            now.0 >= before.0 && now.1 >= before.1,
            "counters went down: {before:?} -> {now:?}"
        );
        before = now;
        irqs.clear();
    }
});

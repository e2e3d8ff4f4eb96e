//! What translation costs on the host running the model: IOTLB hits, walks,
//! and small DMA writes next to the copy they carry.
//!
//! Every set-up is done once, outside the timed loop: a 256 MiB `HostMemory`
//! (or, for the `vm_memory` benches, a 256 MiB `GuestMemoryMmap`) holding a
//! 4-level second-stage domain that maps 4 MiB of IOVA with 4 KiB pages.
//!
//! - `iotlb_hit`: `Iommu::translate` of addresses whose translation is cached
//!   (1024 translations per iteration over 16 cached pages); `vm_memory` is
//!   the same through `VmIommu`'s front `vm_memory::Iotlb`.
//! - `iotlb_miss`: a 4-level walk on every translation; `walk_cache` with the
//!   paging-structure cache on.
//! - `dma_write_64`, `dma_write_1500`: `reference` is `copy_from_slice` of the
//!   same bytes into a preallocated buffer (the memcpy floor); `iovirt` an
//!   `IommuPort::dma_write` on an IOTLB hit; `vm_memory` the same write through
//!   `vm_memory::IommuMemory` over `VmIommu` (its `Iotlb` warm); `hostmemory`
//!   a plain `HostMemory::write` with no translation; `iovirt_flat` the same
//!   port over dense `FlatMemory`, so only the IOMMU's own cost is added to
//!   the copy. `cargo xtask bench`
//!   prints each one's ratio to `reference`.
//!
//! The `vm_memory` benches need the crate's `vm-memory` feature (`cargo bench
//! -p iovirt-iommu --features vm-memory --bench iommu`); without it they are
//! left out and the rest still runs, so a workspace-wide `cargo bench` works.

// Set-up code: a failure here is a broken benchmark, not a guest input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use iovirt_core::{
    AccessKind, BitmapFrameAllocator, DmaPort, FlatMemory, HostMemory, Hpa, Iova, PhysMemory,
};
#[cfg(feature = "vm-memory")]
use iovirt_iommu::vm_memory_adapter::{GuestMemoryPhys, VmIommu};
use iovirt_iommu::{
    ContextEntry, DmaRequest, DomainId, Iommu, IommuConfig, IotlbConfig, RequesterId,
};
use iovirt_paging::{Levels, Mapping, PageTable, PagingConfig, PteFlags};
#[cfg(feature = "vm-memory")]
use vm_memory::iommu::Iommu as _;
#[cfg(feature = "vm-memory")]
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap, IommuMemory, Permissions};

/// Memory of every set-up.
const MEMORY: u64 = 256 << 20;
/// First IOVA of the domain's mapping.
const IOVA: u64 = 0x1000_0000;
/// Where it maps to.
const HPA: u64 = 0x400_0000;
/// Bytes mapped.
const MAPPED: u64 = 4 << 20;
/// Translations per iteration in the translation groups.
const BATCH: usize = 1024;
/// Pages the hit benchmark cycles over (all fit the default 64-entry IOTLB).
const HOT_PAGES: u64 = 16;

fn requester() -> RequesterId {
    RequesterId::new(0, 3, 0).unwrap()
}

/// An IOMMU of `config` whose domain maps `MAPPED` bytes at `IOVA`, with its
/// tables in `mem`.
fn domain<M: PhysMemory<Hpa>>(mem: &mut M, config: IommuConfig) -> Iommu {
    let mut frames = BitmapFrameAllocator::new(Hpa::new(0x10_0000), 1024);
    let paging = PagingConfig::second_stage(Levels::Four);
    let mut stage2 = PageTable::<Iova, Hpa>::new(mem, &mut frames, paging).unwrap();
    let m = Mapping::new(Iova::new(IOVA), Hpa::new(HPA), MAPPED, PteFlags::RW);
    stage2.map(mem, &mut frames, m).unwrap();
    let mut iommu = Iommu::new(config).unwrap();
    iommu.set_domain(DomainId(1), stage2.root(), Levels::Four);
    iommu.set_context(
        requester(),
        ContextEntry::Translate {
            domain: DomainId(1),
            pasid_enabled: false,
        },
    );
    iommu
}

/// A benchmark group measured in wall time.
#[cfg(feature = "vm-memory")]
type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;
#[cfg(feature = "vm-memory")]
type Ram = GuestMemoryMmap<()>;
#[cfg(feature = "vm-memory")]
type VmMemory = IommuMemory<Ram, VmIommu<GuestMemoryPhys<Ram>>>;

/// The same domain in a `GuestMemoryMmap`, behind `vm_memory::IommuMemory`.
#[cfg(feature = "vm-memory")]
fn vm_memory() -> VmMemory {
    let ram = Ram::from_ranges(&[(GuestAddress(0), MEMORY as usize)]).unwrap();
    let mut phys = GuestMemoryPhys::new(ram.clone());
    let iommu = domain(&mut phys, IommuConfig::default());
    let vm = VmIommu::new(iommu, phys, DmaRequest::new(requester()));
    IommuMemory::new(ram, vm, true, ())
}

/// `BATCH` addresses: page `i % pages` of the mapping, at a varying offset.
fn addresses(pages: u64) -> Vec<u64> {
    (0..BATCH as u64)
        .map(|i| IOVA + (i % pages) * 4096 + (i * 72) % 4096)
        .collect()
}

fn iotlb_hit(c: &mut Criterion) {
    let mut mem = HostMemory::new(MEMORY).unwrap();
    let mut iommu = domain(&mut mem, IommuConfig::default());
    let req = DmaRequest::new(requester());
    let addrs = addresses(HOT_PAGES);
    for &a in &addrs {
        iommu.translate(&mem, req, a, AccessKind::Write).unwrap();
    }
    let walks = iommu.stats().walks.get();

    let mut g = c.benchmark_group("iotlb_hit");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("iovirt", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for &a in &addrs {
                let t = iommu.translate(&mem, req, black_box(a), AccessKind::Write);
                sum = sum.wrapping_add(t.map_or(0, |t| t.hpa.raw()));
            }
            black_box(sum)
        })
    });
    assert_eq!(iommu.stats().walks.get(), walks, "a hit benchmark walked");

    #[cfg(feature = "vm-memory")]
    vm_memory_hits(&mut g, &addrs);
    g.finish();
}

fn iotlb_miss(c: &mut Criterion) {
    // No IOTLB entries: every translation misses and walks. With the walk
    // cache off too, each walk reads all four levels.
    let no_iotlb = IotlbConfig {
        entries: 0,
        ..IotlbConfig::default()
    };
    let addrs = addresses(MAPPED / 4096);
    let mut g = c.benchmark_group("iotlb_miss");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (name, walk_cache_entries, reads) in [("walk", 0, 4), ("walk_cache", 16, 1)] {
        let mut mem = HostMemory::new(MEMORY).unwrap();
        let config = IommuConfig {
            iotlb: no_iotlb,
            walk_cache_entries,
            ..IommuConfig::default()
        };
        let mut iommu = domain(&mut mem, config);
        let req = DmaRequest::new(requester());
        // Warm the walk cache (when there is one) and check the walk length.
        for &a in &addrs {
            iommu.translate(&mem, req, a, AccessKind::Write).unwrap();
        }
        let t = iommu.translate(&mem, req, IOVA, AccessKind::Write).unwrap();
        assert_eq!((t.cost.iotlb_misses, t.cost.table_reads), (1, reads));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut sum = 0u64;
                for &a in &addrs {
                    let t = iommu.translate(&mem, req, black_box(a), AccessKind::Write);
                    sum = sum.wrapping_add(t.map_or(0, |t| t.hpa.raw()));
                }
                black_box(sum)
            })
        });
    }
    g.finish();
}

fn dma_write(c: &mut Criterion, group: &str, len: usize) {
    // One page, so every write is a single translation: 0x100 + 1500 < 4096.
    let offset = 0x100;
    let iova = IOVA + 0x5000 + offset;
    let hpa = HPA + 0x5000 + offset;
    let data = vec![0xa5u8; len];
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes(len as u64));

    let mut buf = vec![0u8; 4096];
    let at = offset as usize;
    g.bench_function("reference", |b| {
        b.iter(|| {
            black_box(&mut buf[at..at + len]).copy_from_slice(black_box(&data));
        })
    });

    let mut mem = HostMemory::new(MEMORY).unwrap();
    let mut iommu = domain(&mut mem, IommuConfig::default());
    let mut irqs: Vec<iovirt_core::Irq> = Vec::new();
    {
        let mut port = iommu.port(&mut mem, &mut irqs, DmaRequest::new(requester()));
        let warm = port.dma_write(Iova::new(iova), &data).unwrap();
        assert_eq!(warm.iotlb_misses, 1);
        g.bench_function("iovirt", |b| {
            b.iter(|| port.dma_write(Iova::new(black_box(iova)), black_box(&data)))
        });
        let hit = port.dma_write(Iova::new(iova), &data).unwrap();
        assert_eq!((hit.iotlb_hits, hit.iotlb_misses), (1, 0));
    }

    // The same port over dense memory: the sparse frame lookup drops out,
    // leaving what the IOMMU itself adds to the copy.
    let mut flat = FlatMemory::new(MEMORY).unwrap();
    let mut flat_iommu = domain(&mut flat, IommuConfig::default());
    {
        let mut port = flat_iommu.port(&mut flat, &mut irqs, DmaRequest::new(requester()));
        port.dma_write(Iova::new(iova), &data).unwrap();
        g.bench_function("iovirt_flat", |b| {
            b.iter(|| port.dma_write(Iova::new(black_box(iova)), black_box(&data)))
        });
        let hit = port.dma_write(Iova::new(iova), &data).unwrap();
        assert_eq!((hit.iotlb_hits, hit.iotlb_misses), (1, 0));
    }
    let mut check = vec![0u8; data.len()];
    flat.read(Hpa::new(hpa), &mut check).unwrap();
    assert_eq!(check, data);

    #[cfg(feature = "vm-memory")]
    vm_memory_writes(&mut g, iova, hpa, &data);

    g.bench_function("hostmemory", |b| {
        b.iter(|| mem.write(Hpa::new(black_box(hpa)), black_box(&data)))
    });
    g.finish();
}

/// `iotlb_hit/vm_memory`: the same translations through `VmIommu`'s front
/// `Iotlb`, warm.
#[cfg(feature = "vm-memory")]
fn vm_memory_hits(g: &mut Group<'_>, addrs: &[u64]) {
    let vm = vm_memory();
    let front = vm.iommu();
    for &a in addrs {
        front
            .translate(GuestAddress(a), 8, Permissions::Write)
            .unwrap();
    }
    g.bench_function("vm_memory", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for &a in addrs {
                let t = front.translate(GuestAddress(black_box(a)), 8, Permissions::Write);
                sum = sum.wrapping_add(t.ok().and_then(|mut it| it.next()).map_or(0, |r| r.base.0));
            }
            black_box(sum)
        })
    });
}

/// `dma_write_*/vm_memory`: the same write through `IommuMemory`, its
/// `Iotlb` warm.
#[cfg(feature = "vm-memory")]
fn vm_memory_writes(g: &mut Group<'_>, iova: u64, hpa: u64, data: &[u8]) {
    let vm = vm_memory();
    vm.write_slice(data, GuestAddress(iova)).unwrap();
    g.bench_function("vm_memory", |b| {
        b.iter(|| vm.write_slice(black_box(data), GuestAddress(black_box(iova))))
    });
    let mut check = vec![0u8; data.len()];
    vm.get_backend()
        .read_slice(&mut check, GuestAddress(hpa))
        .unwrap();
    assert_eq!(check, data);
}

fn dma_writes(c: &mut Criterion) {
    dma_write(c, "dma_write_64", 64);
    dma_write(c, "dma_write_1500", 1500);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = iotlb_hit, iotlb_miss, dma_writes
}
criterion_main!(benches);

//! Page walks per second, next to the floor: the same number of dependent
//! `u64` reads from the same `HostMemory`, at the same entry addresses.
//!
//! Groups `walk_4k` (4-level walks to 4 KiB pages: 4 reads each) and
//! `walk_2m` (to 2 MiB pages: 3 reads each); in each, `reference` is the
//! floor and `walker` the walk. `cargo xtask bench` prints the ratio.

// Set-up code: a failure here is a broken benchmark, not a guest input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use iovirt_core::{Access, BitmapFrameAllocator, Gva, HostMemory, Hpa, PageSize, PhysMemory};
use iovirt_paging::{Mapping, PageTable, PagingConfig, PteFlags};

/// Walks per criterion iteration.
const BATCH: usize = 1024;

/// A deterministic xorshift, so every run maps the same addresses.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

struct Setup {
    mem: HostMemory,
    pt: PageTable<Gva, Hpa>,
    /// Input addresses to walk, one per mapped page.
    inputs: Vec<u64>,
    /// For each input, the entry addresses its walk reads.
    chains: Vec<Vec<u64>>,
}

fn setup(size: PageSize, pages: usize) -> Setup {
    let mut mem = HostMemory::new(1 << 30).unwrap();
    let mut frames = BitmapFrameAllocator::new(Hpa::new(0), (1 << 30) / 4096);
    let mut pt =
        PageTable::<Gva, Hpa>::new(&mut mem, &mut frames, PagingConfig::default()).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut inputs = Vec::with_capacity(pages);
    while inputs.len() < pages {
        // Anywhere in the lower 128 TiB; physical pages anywhere in 4 PiB.
        let va = (rng.next() % (1 << 47)) & !size.mask();
        let pa = (rng.next() % (1 << 52)) & !size.mask();
        let m =
            Mapping::new(Gva::new(va), Hpa::new(pa), size.bytes(), PteFlags::RW).with_largest(size);
        if pt.map(&mut mem, &mut frames, m).is_ok() {
            inputs.push(va | (rng.next() & size.mask() & !7));
        }
    }
    let chains = inputs
        .iter()
        .map(|&va| {
            let walk = pt.walk(&mem, Gva::new(va), Access::READ);
            assert!(walk.result.is_ok());
            walk.trace.iter().map(|r| r.addr.raw()).collect()
        })
        .collect();
    Setup {
        mem,
        pt,
        inputs,
        chains,
    }
}

fn bench_size(c: &mut Criterion, group: &str, size: PageSize, pages: usize) {
    let s = setup(size, pages);
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut start = 0usize;
    g.bench_function("walker", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for i in 0..BATCH {
                let va = s.inputs[(start + i) % s.inputs.len()];
                let t = s.pt.walk(&s.mem, Gva::new(black_box(va)), Access::READ);
                sum = sum.wrapping_add(t.result.map_or(0, |t| t.addr.raw()));
            }
            start = start.wrapping_add(BATCH);
            black_box(sum)
        })
    });
    let mut start = 0usize;
    let zero = black_box(0u64);
    g.bench_function("reference", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for i in 0..BATCH {
                let chain = &s.chains[(start + i) % s.chains.len()];
                // Each read's address depends on the value before it, as in a walk.
                let mut v = 0u64;
                for &addr in chain {
                    v = s.mem.read_u64(Hpa::new(addr | (v & zero))).unwrap_or(0);
                }
                sum = sum.wrapping_add(v);
            }
            start = start.wrapping_add(BATCH);
            black_box(sum)
        })
    });
    g.finish();
}

fn walks(c: &mut Criterion) {
    bench_size(c, "walk_4k", PageSize::Size4K, 4096);
    bench_size(c, "walk_2m", PageSize::Size2M, 4096);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = walks
}
criterion_main!(benches);

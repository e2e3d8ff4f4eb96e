//! What the host's network costs on the machine running the model, per
//! 1514-byte frame, with e1000 drivers in the guests:
//!
//! - `net_1514/reference`: one `memcpy` of the frame.
//! - `net_1514/demux_copy`, `net_1514/demux_flip`: a frame arrives from the
//!   wire at the physical NIC and the destination VM's driver receives it
//!   (and reposts its buffer), through seed 002's copy or page-flip
//!   demultiplexer.
//! - `net_1514/bridge`, `net_1514/crossover`: VM A's driver sends a frame to
//!   VM B and B's driver receives it, through the VMM's bridge or seed
//!   003's crossover.
//!
//! `cargo xtask bench` prints each figure's ratio to `reference`.

// Set-up code: a failure here is a broken benchmark, not a guest input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use iovirt_core::{Gpa, Irq};
use iovirt_drivers::{E1000Config, E1000Driver, GuestPageAllocator, Placement};
use iovirt_iommu::{IommuConfig, RequesterId};
use iovirt_vmm::{DemuxMode, Host, HostConfig, Network, NetworkConfig, VmConfig, VmId, VmToVm};

const LEN: usize = 1514;
const MACS: [[u8; 6]; 2] = [[0x52, 0x54, 0, 0, 0, 0xa], [0x52, 0x54, 0, 0, 0, 0xb]];

struct Bed {
    host: Host,
    net: Network,
    vms: Vec<VmId>,
    drivers: Vec<E1000Driver>,
}

fn bed(demux: DemuxMode, vm_to_vm: VmToVm) -> Bed {
    let mut host = Host::new(HostConfig {
        table_frames: 64,
        data_frames: 4096,
        iommu: IommuConfig::default(),
    })
    .unwrap();
    let mut net = Network::new(
        &mut host,
        NetworkConfig {
            uplink_mac: [0x52, 0x54, 0, 0, 0, 1],
            uplink_requester: RequesterId::new(0, 1, 0).unwrap(),
            uplink_rx_descriptors: 64,
            uplink_tx_descriptors: 64,
            demux,
            vm_to_vm,
            crossover_patience: 64,
            crossover_timeout_ns: 0,
        },
    )
    .unwrap();
    let mut vms = Vec::new();
    let mut drivers = Vec::new();
    for (i, mac) in MACS.iter().enumerate() {
        let vm = host
            .add_vm(VmConfig {
                memory: 4 << 20,
                requester: RequesterId::new(0, 2 + i as u8, 0).unwrap(),
            })
            .unwrap();
        net.add_vnic(&mut host, vm, *mac, Irq(0x40)).unwrap();
        let mut pages = GuestPageAllocator::new(Gpa::new(1 << 20), 512, Placement::Contiguous);
        let d = E1000Driver::bring_up(
            &mut net.guest(&mut host, vm),
            &mut pages,
            E1000Config::default(),
        )
        .unwrap();
        vms.push(vm);
        drivers.push(d);
    }
    Bed {
        host,
        net,
        vms,
        drivers,
    }
}

/// A frame of `LEN` bytes to `dst` from `src`.
fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::with_capacity(LEN);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.resize(LEN, 0x5a);
    f
}

impl Bed {
    /// B's driver receives everything waiting; returns the bytes.
    fn receive(&mut self) -> usize {
        let mut bytes = 0;
        let mut bus = self.net.guest(&mut self.host, self.vms[1]);
        self.drivers[1]
            .receive(&mut bus, |f| bytes += f.len())
            .unwrap();
        bytes
    }
}

fn net(c: &mut Criterion) {
    let mut g = c.benchmark_group("net_1514");
    g.throughput(Throughput::Bytes(LEN as u64));
    let f = frame(MACS[1], MACS[0]);

    let mut buf = vec![0u8; LEN];
    g.bench_function("reference", |b| {
        b.iter(|| black_box(&mut buf[..]).copy_from_slice(black_box(&f)))
    });

    for (name, demux) in [
        ("demux_copy", DemuxMode::Copy),
        ("demux_flip", DemuxMode::Flip),
    ] {
        let mut t = bed(demux, VmToVm::Bridge);
        for _ in 0..256 {
            t.net.receive_from_wire(&mut t.host, &f).unwrap();
            assert_eq!(t.receive(), LEN);
        }
        g.bench_function(name, |b| {
            b.iter(|| {
                t.net.receive_from_wire(&mut t.host, black_box(&f)).unwrap();
                black_box(t.receive())
            })
        });
    }

    for (name, mode) in [("bridge", VmToVm::Bridge), ("crossover", VmToVm::Crossover)] {
        let mut t = bed(DemuxMode::Copy, mode);
        let one = |t: &mut Bed| {
            let mut bus = t.net.guest(&mut t.host, t.vms[0]);
            t.drivers[0].transmit(&mut bus, black_box(&f)).unwrap();
            t.receive()
        };
        for _ in 0..256 {
            assert_eq!(one(&mut t), LEN);
        }
        g.bench_function(name, |b| b.iter(|| black_box(one(&mut t))));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = net
}
criterion_main!(benches);

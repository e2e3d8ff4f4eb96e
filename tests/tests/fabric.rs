//! Two hosts joined by a cable, on one event loop: a VM on each host sends
//! to a VM on the other, through its vNIC, its host's switch and physical
//! NIC, the cable, the other host's physical NIC and demultiplexer, and the
//! receiving guest's interrupt handler. Frames arrive byte-exact, in order,
//! no earlier than the cable allows, and not long after.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use iovirt::host_sim::{Fabric, HostSim, SimGuest};
use iovirt::link::{Link, LinkConfig};
use iovirt::platform::frame;
use iovirt_core::{CostModel, Gpa, Irq, SimDuration, SimTime};
use iovirt_drivers::{E1000Config, E1000Driver, GuestPageAllocator, Placement};
use iovirt_iommu::{IommuConfig, RequesterId};
use iovirt_vmm::{DemuxMode, Host, HostConfig, Network, NetworkConfig, VmConfig, VmToVm};

const IRQ_LATENCY: SimDuration = SimDuration::from_nanos(2_000);

fn vm_mac(host: usize) -> [u8; 6] {
    [0x52, 0x54, 0, 4, host as u8, 0]
}

/// Host `h` with one VM, its driver up, and its cable out.
fn host(h: usize, demux: DemuxMode, link: LinkConfig) -> HostSim {
    let mut host = Host::new(HostConfig {
        table_frames: 64,
        data_frames: 2048,
        iommu: IommuConfig::default(),
    })
    .unwrap();
    let mut net = Network::new(
        &mut host,
        NetworkConfig {
            uplink_mac: [0x52, 0x54, 0, 4, h as u8, 0xff],
            uplink_requester: RequesterId::new(0, 1, 0).unwrap(),
            uplink_rx_descriptors: 64,
            uplink_tx_descriptors: 64,
            demux,
            vm_to_vm: VmToVm::Bridge,
            crossover_patience: 64,
            crossover_timeout_ns: 0,
        },
    )
    .unwrap();
    let vm = host
        .add_vm(VmConfig {
            memory: 4 << 20,
            requester: RequesterId::new(0, 2, 0).unwrap(),
        })
        .unwrap();
    net.add_vnic(&mut host, vm, vm_mac(h), Irq(0x40)).unwrap();
    let mut pages = GuestPageAllocator::new(Gpa::new(1 << 20), 512, Placement::Contiguous);
    let driver = E1000Driver::bring_up(
        &mut net.guest(&mut host, vm),
        &mut pages,
        E1000Config::default(),
    )
    .unwrap();
    HostSim::new(
        host,
        net,
        vec![SimGuest { vm, driver }],
        (Link::new(link), Link::new(link)),
        IRQ_LATENCY,
    )
}

#[test]
fn vms_on_two_hosts_talk_over_the_cable() {
    let link = LinkConfig::from_cost(&CostModel::default(), 256);
    for demux in [DemuxMode::Copy, DemuxMode::Flip] {
        let mut fabric = Fabric {
            hosts: [host(0, demux, link), host(1, demux, link)],
        };
        let mut sent: [Vec<(SimTime, Vec<u8>)>; 2] = [Vec::new(), Vec::new()];
        let mut got: [Vec<(SimTime, Vec<u8>)>; 2] = [Vec::new(), Vec::new()];
        let mut on_cable = 0;
        let len = 700;
        let gap = link.serialization(len);
        for n in 0..200u32 {
            for h in 0..2 {
                let f = frame(vm_mac(1 - h), vm_mac(h), n, len);
                let sim = &mut fabric.hosts[h];
                assert!(sim.transmit(0, &f), "{demux:?}: ring full at {n}");
                sent[1 - h].push((sim.now, f));
            }
            let until = fabric.hosts[0].now + gap;
            fabric
                .run_until(
                    until,
                    &mut |h, _, t, f| got[h].push((t, f.to_vec())),
                    &mut |_, _| on_cable += 1,
                )
                .unwrap();
            for h in &mut fabric.hosts {
                h.now = until;
            }
        }
        let end = fabric.hosts[0].now + SimDuration::from_micros(1_000);
        fabric
            .run_until(
                end,
                &mut |h, _, t, f| got[h].push((t, f.to_vec())),
                &mut |_, _| on_cable += 1,
            )
            .unwrap();
        assert_eq!(on_cable, 400, "{demux:?}");
        for h in 0..2 {
            let frames: Vec<_> = got[h].iter().map(|(_, f)| f.clone()).collect();
            let want: Vec<_> = sent[h].iter().map(|(_, f)| f.clone()).collect();
            assert!(
                frames == want,
                "{demux:?}: host {h} gets its frames, byte-exact, in order"
            );
            // No frame is received before the cable could carry it (a
            // handler already on its way may take it as soon as it lands).
            let least = link.serialization(len) + SimDuration::from_nanos(link.latency_ns);
            let mut worst = SimDuration::ZERO;
            for ((t, _), (sent_at, _)) in got[h].iter().zip(&sent[h]) {
                assert!(
                    *t >= *sent_at + least,
                    "{demux:?}: {t} < {sent_at} + {least}"
                );
                worst = worst.max(*t - *sent_at);
            }
            // ... and within the cable, an interrupt latency and a few
            // frames of queueing behind each other.
            assert!(
                worst <= least + IRQ_LATENCY + SimDuration::from_nanos(4 * gap.as_nanos()),
                "{demux:?}: {worst}"
            );
        }
        let up = fabric.hosts[1].net.uplink().stats();
        assert_eq!(
            (up.rx_frames.get(), up.tx_frames.get()),
            (200, 200),
            "{demux:?}"
        );
    }
}

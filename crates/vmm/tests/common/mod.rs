//! A host with guest e1000 drivers on their vNICs, for the network tests.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    dead_code
)]

use iovirt_core::{Gpa, Irq};
use iovirt_drivers::{E1000Config, E1000Driver, GuestPageAllocator, Placement};
use iovirt_iommu::{IommuConfig, RequesterId};
use iovirt_vmm::{DemuxMode, Host, HostConfig, Network, NetworkConfig, VmConfig, VmId, VmToVm};

pub(crate) const PAGE: u64 = 4096;
pub(crate) const UPLINK_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x1];
pub(crate) const OUTSIDE: [u8; 6] = [0x52, 0x54, 0, 0, 9, 9];
pub(crate) const VECTOR: u32 = 0x41;

/// The MAC address of VM `v`.
pub(crate) const fn mac(v: usize) -> [u8; 6] {
    [0x52, 0x54, 0, 0, 0, 0xa + v as u8]
}

pub(crate) fn requester(n: u8) -> RequesterId {
    RequesterId::new(0, n, 0).unwrap()
}

/// An Ethernet II frame of `len` bytes to `dst` whose payload bytes are
/// all `fill`.
pub(crate) fn frame(dst: [u8; 6], src: [u8; 6], len: usize, fill: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.resize(len, fill);
    f
}

pub(crate) struct Rig {
    pub(crate) host: Host,
    pub(crate) net: Network,
    pub(crate) vms: Vec<VmId>,
    pub(crate) drivers: Vec<E1000Driver>,
}

impl Rig {
    /// `vms` VMs with 2 MiB each and a driver with 16-descriptor rings.
    pub(crate) fn new(vms: usize, demux: DemuxMode, vm_to_vm: VmToVm) -> Rig {
        Rig::with_timeout(vms, demux, vm_to_vm, 0)
    }

    /// Like [`Rig::new`], with a crossover timeout of `timeout_ns`.
    pub(crate) fn with_timeout(
        vms: usize,
        demux: DemuxMode,
        vm_to_vm: VmToVm,
        timeout_ns: u64,
    ) -> Rig {
        let mut host = Host::new(HostConfig {
            table_frames: 64,
            data_frames: 2048,
            iommu: IommuConfig::default(),
        })
        .unwrap();
        let ids: Vec<VmId> = (0..vms)
            .map(|v| {
                host.add_vm(VmConfig {
                    memory: 2 << 20,
                    requester: requester(2 + v as u8),
                })
                .unwrap()
            })
            .collect();
        let mut net = Network::new(
            &mut host,
            NetworkConfig {
                uplink_mac: UPLINK_MAC,
                uplink_requester: requester(1),
                uplink_rx_descriptors: 32,
                uplink_tx_descriptors: 32,
                demux,
                vm_to_vm,
                crossover_patience: 8,
                crossover_timeout_ns: timeout_ns,
            },
        )
        .unwrap();
        let mut drivers = Vec::new();
        for (v, id) in ids.iter().enumerate() {
            net.add_vnic(&mut host, *id, mac(v), Irq(VECTOR)).unwrap();
            let mut pages = GuestPageAllocator::new(Gpa::new(PAGE), 256, Placement::Contiguous);
            let config = E1000Config {
                rx_descriptors: 16,
                tx_descriptors: 16,
                ..E1000Config::default()
            };
            let d =
                E1000Driver::bring_up(&mut net.guest(&mut host, *id), &mut pages, config).unwrap();
            assert_eq!(d.mac(), mac(v));
            drivers.push(d);
        }
        Rig {
            host,
            net,
            vms: ids,
            drivers,
        }
    }

    /// A frame arrives from the wire.
    pub(crate) fn arrive(&mut self, f: &[u8]) {
        self.net.receive_from_wire(&mut self.host, f).unwrap();
    }

    /// VM `v`'s driver receives everything waiting.
    pub(crate) fn receive(&mut self, v: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut bus = self.net.guest(&mut self.host, self.vms[v]);
        self.drivers[v]
            .receive(&mut bus, |f| got.push(f.to_vec()))
            .unwrap();
        got
    }

    /// VM `v`'s driver sends `f`.
    pub(crate) fn transmit(&mut self, v: usize, f: &[u8]) {
        let mut bus = self.net.guest(&mut self.host, self.vms[v]);
        self.drivers[v].transmit(&mut bus, f).unwrap();
    }

    /// Frames the physical NIC put on the wire.
    pub(crate) fn wire(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        self.net.drain_outgoing(|f| out.push(f.to_vec()));
        out
    }

    /// A register of VM `v`'s vNIC, as its guest reads it.
    pub(crate) fn reg(&mut self, v: usize, offset: u64) -> u32 {
        use iovirt_core::RegisterAccess;
        self.net.guest(&mut self.host, self.vms[v]).read32(offset)
    }
}

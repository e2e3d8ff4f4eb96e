//! The host's network under a hostile guest: VM A writes any register of
//! its vNIC with any value and any bytes anywhere in its memory (rings,
//! descriptors, buffers), and any frames arrive from the wire, with the copy
//! or the page-flip demultiplexer, and bridged, looped-back or crossed-over
//! traffic between the VMs.
//!
//! Nothing may panic or hang, and whatever the input: the host never holds
//! more frames than it has, and VM B (its receiver off) keeps every byte of
//! its memory.

#![no_main]

use arbitrary::Arbitrary;
use iovirt_core::{Gpa, Irq, SimDuration, SimTime, Width};
use iovirt_iommu::{IommuConfig, RequesterId};
use iovirt_nic::regs;
use iovirt_vmm::{DemuxMode, Host, HostConfig, Network, NetworkConfig, VmConfig, VmToVm};
use libfuzzer_sys::fuzz_target;

const PAGE: u64 = 4096;
const VM_PAGES: u64 = 64;
const DATA_FRAMES: u64 = 200;
const MAX_OPS: usize = 96;
const MAC_A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0xa];
const MAC_B: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0xb];

#[derive(Debug, Arbitrary)]
enum Op {
    /// A register write: one of the NIC's registers (by index) or any offset.
    Mmio {
        reg: u8,
        raw: Option<u32>,
        value: u32,
    },
    /// A register read (ICR and the statistics clear on read).
    Read { reg: u8 },
    /// Bytes anywhere in A's memory: descriptors, ring contents.
    Poke { gpa: u16, words: Vec<u64> },
    /// Virtual time passes: the network's timers (moderation, crossover
    /// timeouts) fire.
    Time { ns: u32 },
    /// A frame from the wire to A, to B, broadcast, or as given.
    Wire {
        to: u8,
        len: u16,
        fill: u8,
        raw: Vec<u8>,
    },
}

#[derive(Debug, Arbitrary)]
struct Input {
    flip: bool,
    /// Bridge, loopback or crossover between the VMs.
    vm_to_vm: u8,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let mut host = Host::new(HostConfig {
        table_frames: 64,
        data_frames: DATA_FRAMES,
        iommu: IommuConfig::default(),
    })
    .unwrap();
    let requester = |n: u8| RequesterId::new(0, n, 0).unwrap();
    let [a, b] = [2, 3].map(|n| {
        host.add_vm(VmConfig {
            memory: VM_PAGES * PAGE,
            requester: requester(n),
        })
        .unwrap()
    });
    let mut net = Network::new(
        &mut host,
        NetworkConfig {
            uplink_mac: [0x52, 0x54, 0, 0, 0, 1],
            uplink_requester: requester(1),
            uplink_rx_descriptors: 16,
            uplink_tx_descriptors: 8,
            demux: if input.flip {
                DemuxMode::Flip
            } else {
                DemuxMode::Copy
            },
            vm_to_vm: [VmToVm::Bridge, VmToVm::Loopback, VmToVm::Crossover]
                [usize::from(input.vm_to_vm % 3)],
            crossover_patience: 64,
            crossover_timeout_ns: 20_000,
        },
    )
    .unwrap();
    net.add_vnic(&mut host, a, MAC_A, Irq(0x30)).unwrap();
    net.add_vnic(&mut host, b, MAC_B, Irq(0x31)).unwrap();
    // B's memory: a pattern it must keep.
    let pattern: Vec<u8> = (0..VM_PAGES * PAGE).map(|i| (i * 7 + 3) as u8).collect();
    host.write(b, Gpa::new(0), &pattern).unwrap();

    let mut now = SimTime::ZERO;
    for op in input.ops.into_iter().take(MAX_OPS) {
        match op {
            Op::Mmio { reg, raw, value } => {
                let offset = match raw {
                    Some(o) => u64::from(o) % regs::BAR_SIZE,
                    None => regs::IMPLEMENTED[usize::from(reg) % regs::IMPLEMENTED.len()],
                };
                net.mmio_write(&mut host, a, offset, Width::U32, u64::from(value));
            }
            Op::Read { reg } => {
                let offset = regs::IMPLEMENTED[usize::from(reg) % regs::IMPLEMENTED.len()];
                net.mmio_read(&mut host, a, offset, Width::U32);
            }
            Op::Poke { gpa, words } => {
                for (i, w) in words.iter().take(64).enumerate() {
                    let at = (u64::from(gpa) * 8 + i as u64 * 8) % (VM_PAGES * PAGE);
                    let _ = host.write(a, Gpa::new(at), &w.to_le_bytes());
                }
            }
            Op::Time { ns } => {
                now = now + SimDuration::from_nanos(u64::from(ns));
                net.run_timers(&mut host, now);
            }
            Op::Wire { to, len, fill, raw } => {
                let mut frame = match to % 4 {
                    0 => MAC_A.to_vec(),
                    1 => MAC_B.to_vec(),
                    2 => vec![0xff; 6],
                    _ => raw,
                };
                frame.resize(usize::from(len) % 1600, fill);
                let _ = net.receive_from_wire(&mut host, &frame);
            }
        }
        assert!(host.resident_frames() <= DATA_FRAMES);
    }
    net.drain_outgoing(|_| {});
    let mut now = vec![0u8; pattern.len()];
    host.peek(b, Gpa::new(0), &mut now).unwrap();
    assert!(now == pattern, "VM B's memory changed");
});

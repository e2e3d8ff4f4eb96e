//! A property of the host's network under every demultiplexer and VM-to-VM
//! mode: whatever mix of frames from the wire, transmits between VMs and to
//! the outside, receive passes and swap-outs of guest pages, every frame a
//! VM receives was sent to it, byte-exact and in the order its sender sent
//! it (frames may only be lost for want of buffers; frames of different
//! senders may interleave, as on any network), no frame reaches a VM it
//! was not addressed to, and every frame for the outside leaves in order.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::collections::VecDeque;

use common::{OUTSIDE, PAGE, Rig, frame, mac};
use iovirt_core::Gpa;
use iovirt_vmm::{DemuxMode, VmToVm};
use proptest::prelude::*;

const VMS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    /// A frame from the wire to VM `to` (or broadcast when `to` is VMS).
    Wire { to: usize, len: usize },
    /// VM `from` sends to VM `to`, or outside when `to` is VMS.
    Send { from: usize, to: usize, len: usize },
    /// VM `v` receives what is waiting.
    Receive { v: usize },
    /// The host swaps out one of VM `v`'s pages (rings and buffers too).
    SwapOut { v: usize, page: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let len = 60usize..1515;
    prop_oneof![
        (0..=VMS, len.clone()).prop_map(|(to, len)| Op::Wire { to, len }),
        (0..VMS, 0..=VMS, len).prop_map(|(from, to, len)| Op::Send { from, to, len }),
        (0..VMS).prop_map(|v| Op::Receive { v }),
        (0..VMS, 1..80u64).prop_map(|(v, page)| Op::SwapOut { v, page }),
    ]
}

fn mode() -> impl Strategy<Value = (DemuxMode, VmToVm)> {
    (
        prop_oneof![Just(DemuxMode::Copy), Just(DemuxMode::Flip)],
        prop_oneof![
            Just(VmToVm::Bridge),
            Just(VmToVm::Loopback),
            Just(VmToVm::Crossover)
        ],
    )
}

/// What was sent to one VM, a queue per sender (the wire is sender VMS).
type Inbox = Vec<VecDeque<Vec<u8>>>;

/// The sender of a frame, by its source address.
fn sender(f: &[u8]) -> usize {
    (0..VMS).find(|&v| f[6..12] == mac(v)).unwrap_or(VMS)
}

/// Checks `got` against what its sender sent this VM, in order: frames
/// before its match were lost; a frame matching none was never sent here.
fn arrived(inbox: &mut Inbox, got: &[u8], lost: &mut u64) -> Result<(), TestCaseError> {
    let q = &mut inbox[sender(got)];
    let k = q.iter().position(|e| e == got);
    prop_assert!(
        k.is_some(),
        "a frame nobody sent to this VM: {:02x?}",
        &got[..14]
    );
    let k = k.unwrap_or(0);
    *lost += k as u64;
    q.drain(..=k);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_frame_reaches_only_its_vm_byte_exact_in_order(
        (demux, vm_to_vm) in mode(),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let mut r = Rig::new(VMS, demux, vm_to_vm);
        let mut expected: Vec<Inbox> = vec![vec![VecDeque::new(); VMS + 1]; VMS];
        let mut outside: Vec<Vec<u8>> = Vec::new();
        let mut serial = 0u8;
        let mut lost = 0u64;
        for op in ops {
            serial = serial.wrapping_add(1);
            match op {
                Op::Wire { to, len } => {
                    let dst = if to == VMS { [0xff; 6] } else { mac(to) };
                    let f = frame(dst, OUTSIDE, len, serial);
                    for (v, inbox) in expected.iter_mut().enumerate() {
                        if to == VMS || v == to {
                            inbox[VMS].push_back(f.clone());
                        }
                    }
                    r.arrive(&f);
                }
                Op::Send { from, to, len } => {
                    if to == from {
                        continue;
                    }
                    let dst = if to == VMS { OUTSIDE } else { mac(to) };
                    let f = frame(dst, mac(from), len, serial);
                    let mut bus = r.net.guest(&mut r.host, r.vms[from]);
                    // A full ring refuses the frame: nothing was sent.
                    if r.drivers[from].transmit(&mut bus, &f).is_ok() {
                        if to == VMS {
                            outside.push(f);
                        } else {
                            expected[to][from].push_back(f);
                        }
                    }
                }
                Op::Receive { v } => {
                    for got in r.receive(v) {
                        arrived(&mut expected[v], &got, &mut lost)?;
                    }
                }
                Op::SwapOut { v, page } => {
                    let _ = r.host.swap_out(r.vms[v], Gpa::new(page * PAGE));
                }
            }
        }
        // Receive until nothing moves: a VM giving a crossed buffer back
        // lets the sender's next frames go, perhaps to a VM already drained.
        for _ in 0..8 {
            let mut moved = false;
            for (v, inbox) in expected.iter_mut().enumerate() {
                for got in r.receive(v) {
                    moved = true;
                    arrived(inbox, &got, &mut lost)?;
                }
            }
            if !moved {
                break;
            }
        }
        // Whatever is still owed was lost.
        lost += expected.iter().flatten().map(|q| q.len() as u64).sum::<u64>();
        // Every frame was addressed right: no vNIC filtered one out. And a
        // frame was lost only where a ring had no free descriptor.
        let mut no_descriptor = r.net.uplink().stats().rx_no_descriptor.get();
        for &vm in &r.vms {
            let s = r.net.vnic(vm).unwrap().stats();
            prop_assert_eq!(s.rx_filtered.get(), 0);
            no_descriptor += s.rx_no_descriptor.get();
        }
        prop_assert!(lost <= no_descriptor, "{} lost, {} for want of descriptors", lost, no_descriptor);
        // Each VM's frames to the outside leave in the order it sent them;
        // some may still wait behind a crossed frame its receiver holds.
        let wire: Vec<Vec<u8>> = r.wire().into_iter().filter(|f| f[..6] == OUTSIDE).collect();
        for v in 0..VMS {
            let left: Vec<_> = wire.iter().filter(|f| sender(f) == v).collect();
            let sent: Vec<_> = outside.iter().filter(|f| sender(f) == v).collect();
            prop_assert!(left.len() <= sent.len());
            prop_assert_eq!(&left[..], &sent[..left.len()]);
        }
    }
}

//! The host's network end to end: guest e1000 drivers on their vNICs, the
//! switch, the uplink, and both demultiplexers of seed 002 on the same
//! traffic.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::{OUTSIDE, PAGE, Rig, UPLINK_MAC, VECTOR, frame};
use iovirt_vmm::{DemuxMode, VmToVm};

const MAC: [[u8; 6]; 2] = [common::mac(0), common::mac(1)];

/// The same mixed traffic for both demultiplexers: 40 frames alternating
/// between the VMs, of lengths 60 to 1514, with a broadcast every 8th.
fn traffic() -> Vec<Vec<u8>> {
    (0..40usize)
        .map(|i| {
            let dst = if i % 8 == 7 { [0xff; 6] } else { MAC[i % 2] };
            frame(dst, OUTSIDE, 60 + (i * 97) % 1455, i as u8)
        })
        .collect()
}

fn run(demux: DemuxMode) -> Rig {
    let mut r = Rig::new(2, demux, VmToVm::Bridge);
    let mut want: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    let mut got: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    for (i, f) in traffic().iter().enumerate() {
        r.arrive(f);
        for (mac, want) in MAC.iter().zip(&mut want) {
            if f[0] == 0xff || f[..6] == mac[..] {
                want.push(f.clone());
            }
        }
        // The guests receive every few frames, as interrupts would batch.
        if i % 3 == 2 {
            for (v, got) in got.iter_mut().enumerate() {
                got.extend(r.receive(v));
            }
        }
    }
    for (v, (got, want)) in got.iter_mut().zip(&want).enumerate() {
        got.extend(r.receive(v));
        assert_eq!(
            got, want,
            "{demux:?}: VM {v} gets its frames, byte-exact, in order"
        );
    }
    r
}

#[test]
fn the_copy_demultiplexer_copies_every_frame_into_its_vm() {
    let r = run(DemuxMode::Copy);
    let s = r.net.stats();
    let frames = traffic();
    let bytes: usize = frames
        .iter()
        .map(|f| if f[0] == 0xff { 2 * f.len() } else { f.len() })
        .sum();
    assert_eq!(s.uplink_rx_frames.get(), 40);
    assert_eq!(s.copies.get(), 45, "35 unicast plus 5 broadcast to 2 VMs");
    assert_eq!(s.bytes_copied.get(), bytes as u64);
    assert_eq!(s.flips.get(), 0);
    assert_eq!(r.host.stats().frames_adopted.get(), 0);
}

#[test]
fn the_page_flip_demultiplexer_copies_no_unicast_byte() {
    let r = run(DemuxMode::Flip);
    let s = r.net.stats();
    let broadcast: usize = traffic()
        .iter()
        .filter(|f| f[0] == 0xff)
        .map(|f| 2 * f.len())
        .sum();
    assert_eq!(s.uplink_rx_frames.get(), 40);
    assert_eq!(s.flips.get(), 35, "every unicast frame flipped");
    assert_eq!(s.flip_fallbacks.get(), 5, "broadcasts are copied");
    assert_eq!(
        s.bytes_copied.get(),
        broadcast as u64,
        "only broadcast bytes"
    );
    let h = r.host.stats();
    assert_eq!(h.frames_adopted.get(), 35);
    // Every posted buffer was lent: 15 per VM at bring-up, then one per
    // frame consumed (the driver reposts each).
    assert!(s.pages_lent.get() >= 30 + 35, "{}", s.pages_lent.get());
    // Each flipped page, reposted by the driver, was unmapped again with
    // its translation invalidated before its frame rejoined the pool.
    assert!(h.invalidations.get() >= 35, "{}", h.invalidations.get());
}

#[test]
fn a_flipped_page_holds_its_packet_and_zeros_never_an_earlier_packet() {
    let mut r = Rig::new(2, DemuxMode::Flip, VmToVm::Bridge);
    // A's frames are long and full of 0xaa; after A reposts its buffers,
    // their frames return to the pool and carry B's short frames.
    for round in 0..4 {
        for _ in 0..10 {
            r.arrive(&frame(MAC[0], OUTSIDE, 1514, 0xaa));
        }
        assert_eq!(r.receive(0).len(), 10, "round {round}");
        for i in 0..10u8 {
            r.arrive(&frame(MAC[1], OUTSIDE, 60, i));
        }
        assert_eq!(r.receive(1).len(), 10);
        // Each of B's buffers is a flipped-in page: the 60 bytes, then zeros.
        for &buf in r.drivers[1].rx_buffers() {
            let mut page = vec![0u8; PAGE as usize];
            r.host.read(r.vms[1], buf, &mut page).unwrap();
            assert!(
                !page.contains(&0xaa),
                "round {round}: B's page at {buf} holds A's bytes"
            );
        }
    }
    assert!(r.net.stats().flips.get() >= 80);
}

#[test]
fn the_switch_keeps_local_traffic_off_the_wire() {
    for demux in [DemuxMode::Copy, DemuxMode::Flip] {
        let mut r = Rig::new(2, demux, VmToVm::Bridge);
        let to_b = frame(MAC[1], MAC[0], 300, 1);
        let out = frame(OUTSIDE, MAC[0], 200, 2);
        let bcast = frame([0xff; 6], MAC[0], 100, 3);
        let to_self = frame(MAC[0], MAC[0], 80, 4);
        for f in [&to_b, &out, &bcast, &to_self] {
            r.transmit(0, f);
        }
        assert_eq!(r.receive(1), vec![to_b.clone(), bcast.clone()], "{demux:?}");
        assert!(r.receive(0).is_empty(), "no frame comes back to its sender");
        assert_eq!(r.wire(), vec![out, bcast], "{demux:?}: only these leave");
        let s = r.net.stats();
        assert_eq!(s.local_frames.get(), 2);
        assert_eq!(s.uplink_tx_frames.get(), 2);
        assert_eq!(s.hairpin_drops.get(), 1);
        assert_eq!(r.net.uplink().stats().tx_frames.get(), 2);
    }
}

#[test]
fn receive_interrupts_are_injected_into_the_destination_vm_only() {
    let mut r = Rig::new(2, DemuxMode::Flip, VmToVm::Bridge);
    let before = r.host.lapic(r.vms[0]).unwrap().stats();
    r.arrive(&frame(MAC[1], OUTSIDE, 64, 0));
    assert_eq!(
        r.host.lapic(r.vms[0]).unwrap().stats(),
        before,
        "A untouched"
    );
    let b = r.host.lapic_mut(r.vms[1]).unwrap();
    assert_eq!(b.acknowledge(), Some(VECTOR as u8));
    assert!(r.net.stats().interrupts_injected.get() >= 1);
}

#[test]
fn frames_for_nobody_and_runts_are_dropped_and_counted() {
    for demux in [DemuxMode::Copy, DemuxMode::Flip] {
        let mut r = Rig::new(2, demux, VmToVm::Bridge);
        // The uplink's filter drops unknown unicast in hardware.
        r.arrive(&frame(OUTSIDE, UPLINK_MAC, 64, 0));
        assert_eq!(r.net.uplink().stats().rx_filtered.get(), 1, "{demux:?}");
        // A broadcast runt with no room for an Ethernet header, and a frame
        // for the uplink's own address, reach the host and no VM.
        r.arrive(&[0xff; 10]);
        r.arrive(&frame(UPLINK_MAC, OUTSIDE, 64, 0));
        assert_eq!(r.net.stats().no_destination.get(), 2, "{demux:?}");
        assert!(r.receive(0).is_empty() && r.receive(1).is_empty());
    }
}

#[test]
fn a_vm_that_stops_posting_buffers_starves_only_its_own_traffic() {
    let mut r = Rig::new(2, DemuxMode::Flip, VmToVm::Bridge);
    // A never receives: after its 15 posted buffers, its frames are refused
    // by its vNIC; B, receiving as it goes, loses nothing.
    for i in 0..60u8 {
        r.arrive(&frame(MAC[0], OUTSIDE, 200, i));
        let f = frame(MAC[1], OUTSIDE, 200, i);
        r.arrive(&f);
        assert_eq!(r.receive(1), vec![f], "frame {i}");
    }
    let s = r.net.stats();
    assert_eq!(s.vnic_refused.get(), 45);
    assert_eq!(
        r.net.vnic(r.vms[0]).unwrap().stats().rx_no_descriptor.get(),
        45
    );
    assert_eq!(r.receive(0).len(), 15);
}

#[test]
fn vnic_interrupt_moderation_runs_on_the_platforms_clock() {
    use iovirt_core::{SimDuration, SimTime};
    use iovirt_nic::regs;
    let mut r = Rig::new(2, DemuxMode::Copy, VmToVm::Bridge);
    let b = r.vms[1];
    // ITR = 100: interrupts at least 25.6 us apart.
    {
        use iovirt_core::RegisterAccess;
        r.net.guest(&mut r.host, b).write32(regs::ITR, 100);
    }
    let injected = |r: &Rig| r.host.lapic(b).unwrap().stats().injected.get();
    let before = injected(&r);
    r.arrive(&frame(MAC[1], OUTSIDE, 64, 1));
    assert_eq!(injected(&r), before + 1, "the first interrupt goes at once");
    // The guest takes it: ICR read, vector retired.
    assert_ne!(r.reg(1, regs::ICR), 0);
    let lapic = r.host.lapic_mut(b).unwrap();
    assert_eq!(lapic.acknowledge(), Some(VECTOR as u8));
    lapic.eoi();
    // A second frame within the interval waits for the throttle timer.
    r.arrive(&frame(MAC[1], OUTSIDE, 64, 2));
    assert_eq!(injected(&r), before + 1);
    let due = r.net.next_timer().unwrap();
    assert_eq!(due, SimTime::ZERO + SimDuration::from_nanos(25_600));
    assert_eq!(
        r.net.run_timers(&mut r.host, SimTime::from_nanos(25_599)),
        0
    );
    assert_eq!(injected(&r), before + 1);
    assert_eq!(r.net.run_timers(&mut r.host, due), 1);
    assert_eq!(injected(&r), before + 2, "released when the interval ends");
    assert_eq!(r.net.next_timer(), None);
    assert_eq!(r.receive(1).len(), 2);
}

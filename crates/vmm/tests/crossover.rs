//! Seed 003's crossover end to end, with guest e1000 drivers: frames
//! between VMs on one host by shared pages, no copy and no physical NIC;
//! the register flow; both directions; one-to-many; a receiver that never
//! gives buffers back; and the loopback baseline on the same traffic.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::{OUTSIDE, PAGE, Rig, VECTOR, frame, mac};
use iovirt_nic::regs;
use iovirt_vmm::{DemuxMode, VmToVm};

/// Frames from A to B of lengths 60 to 1514, each filled with its number.
fn a_to_b(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| frame(mac(1), mac(0), 60 + (i * 211) % 1455, i as u8))
        .collect()
}

/// A sends each frame and B receives after every `batch`.
fn send_all(r: &mut Rig, frames: &[Vec<u8>], batch: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        r.transmit(0, f);
        if i % batch == batch - 1 {
            got.extend(r.receive(1));
        }
    }
    got.extend(r.receive(1));
    got
}

#[test]
fn crossover_moves_frames_between_vms_without_a_copy_or_the_physical_nic() {
    let mut r = Rig::new(2, DemuxMode::Copy, VmToVm::Crossover);
    let frames = a_to_b(40);
    assert_eq!(send_all(&mut r, &frames, 5), frames, "byte-exact, in order");
    let s = r.net.stats();
    assert_eq!(s.crossovers.get(), 40);
    assert_eq!(s.bytes_copied.get(), 0);
    assert_eq!(s.uplink_tx_frames.get(), 0);
    assert_eq!(r.net.uplink().stats().tx_frames.get(), 0);
    assert_eq!(r.net.uplink().stats().rx_frames.get(), 0);
    assert!(r.wire().is_empty());
    assert_eq!(r.host.stats().pages_shared.get(), 40);
    // A's transmits all completed through the crossover's register flow
    // (except the one B still holds: the driver hands it back next time).
    let a = r.net.vnic(r.vms[0]).unwrap().stats();
    assert!(
        a.tx_backend_completed.get() >= 39,
        "{}",
        a.tx_backend_completed.get()
    );
    assert_eq!(a.tx_frames.get(), a.tx_backend_completed.get());
}

#[test]
fn the_register_flow_of_one_crossed_frame() {
    let mut r = Rig::new(2, DemuxMode::Copy, VmToVm::Crossover);
    let f = frame(mac(1), mac(0), 300, 7);
    let (b_rdh, a_tdh) = (r.reg(1, regs::RDH), r.reg(0, regs::TDH));
    r.transmit(0, &f);
    // B's RDH moved by one, its descriptor is done, its interrupt pending.
    assert_eq!(r.reg(1, regs::RDH), b_rdh + 1);
    let b = r.vms[1];
    assert_eq!(
        r.host.lapic_mut(b).unwrap().acknowledge(),
        Some(VECTOR as u8)
    );
    // A's transmit waits for B to give the buffer back.
    assert_eq!(r.reg(0, regs::TDH), a_tdh, "TDH holds");
    assert_eq!(r.reg(0, regs::ICR) & 1, 0, "no TXDW yet");
    assert_eq!(r.receive(1), vec![f.clone()]);
    // B moved RDT past it: A's transmit completes.
    assert_eq!(r.reg(0, regs::TDH), a_tdh + 1);
    assert_eq!(r.reg(0, regs::ICR) & 1, 1, "TXDW");
    let a = r.vms[0];
    assert_eq!(
        r.host.lapic_mut(a).unwrap().acknowledge(),
        Some(VECTOR as u8)
    );
}

#[test]
fn both_directions_cross_over_at_once() {
    let mut r = Rig::new(2, DemuxMode::Flip, VmToVm::Crossover);
    let mut got = [Vec::new(), Vec::new()];
    let mut want = [Vec::new(), Vec::new()];
    for i in 0..30u8 {
        let ab = frame(mac(1), mac(0), 100 + usize::from(i) * 13, i);
        let ba = frame(mac(0), mac(1), 900 - usize::from(i) * 7, !i);
        r.transmit(0, &ab);
        r.transmit(1, &ba);
        want[1].push(ab);
        want[0].push(ba);
        if i % 3 == 2 {
            got[0].extend(r.receive(0));
            got[1].extend(r.receive(1));
        }
    }
    got[0].extend(r.receive(0));
    got[1].extend(r.receive(1));
    assert_eq!(got, want);
    assert_eq!(r.net.stats().crossovers.get(), 60);
    assert_eq!(r.net.stats().bytes_copied.get(), 0);
    assert!(r.wire().is_empty());
}

#[test]
fn one_to_many_and_external_destinations() {
    let mut r = Rig::new(3, DemuxMode::Copy, VmToVm::Crossover);
    let bcast = frame([0xff; 6], mac(0), 200, 1);
    let out = frame(OUTSIDE, mac(0), 300, 2);
    r.transmit(0, &bcast);
    r.transmit(0, &out);
    // The broadcast is in B and C (crossed) and on the wire.
    assert_eq!(r.receive(1), vec![bcast.clone()]);
    assert_eq!(r.receive(2), vec![bcast.clone()]);
    assert!(r.receive(0).is_empty());
    assert_eq!(r.net.stats().crossovers.get(), 2);
    // Once both gave the page back, A's ring went on to the external frame.
    assert_eq!(r.wire(), vec![bcast, out]);
}

#[test]
fn a_receiver_that_never_gives_buffers_back_cannot_stall_the_sender() {
    let mut r = Rig::new(3, DemuxMode::Copy, VmToVm::Crossover);
    // B never receives. A sends it 30 frames, then frames to C and out.
    for f in a_to_b(30) {
        r.transmit(0, &f);
    }
    let to_c = frame(mac(2), mac(0), 500, 3);
    let out = frame(OUTSIDE, mac(0), 400, 4);
    r.transmit(0, &to_c);
    r.transmit(0, &out);
    assert_eq!(r.receive(2), vec![to_c]);
    assert_eq!(r.wire(), vec![out]);
    let s = r.net.stats();
    assert!(s.crossover_forced.get() >= 1);
    // B's ring holds 15 frames; the ones it had room for are intact.
    let got = r.receive(1);
    assert_eq!(got.len(), 15);
    assert_eq!(got, a_to_b(15));
    assert!(r.net.vnic(r.vms[1]).unwrap().stats().rx_no_descriptor.get() >= 15);
}

#[test]
fn a_crossed_page_shows_the_frame_and_nothing_older() {
    let mut r = Rig::new(2, DemuxMode::Copy, VmToVm::Crossover);
    // A's 16 copy buffers each carry a long frame of 0xaa to an outside
    // host first; then short frames to B reuse the same buffers.
    for _ in 0..16 {
        r.transmit(0, &frame(OUTSIDE, mac(0), 1514, 0xaa));
    }
    assert_eq!(r.wire().len(), 16);
    let short: Vec<_> = (0..16u8).map(|i| frame(mac(1), mac(0), 60, i)).collect();
    for f in &short {
        r.transmit(0, f);
        let b = r.vms[1];
        // While crossed, B's buffer page shows the 60 bytes, then zeros.
        let rdh = r.reg(1, regs::RDH);
        let index = (rdh + 15) % 16;
        let buf = r.drivers[1].rx_buffers()[index as usize];
        let mut page = vec![0u8; PAGE as usize];
        r.host.read(b, buf, &mut page).unwrap();
        assert_eq!(page[..60], f[..]);
        assert!(page[60..].iter().all(|&x| x == 0), "no 0xaa from before");
        assert_eq!(r.receive(1), vec![f.clone()]);
    }
}

#[test]
fn the_loopback_baseline_carries_the_same_traffic_through_the_physical_nic() {
    let frames = a_to_b(40);
    let bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();
    let mut r = Rig::new(2, DemuxMode::Copy, VmToVm::Loopback);
    assert_eq!(send_all(&mut r, &frames, 5), frames);
    let s = r.net.stats();
    assert_eq!(s.loopback_frames.get(), 40);
    assert_eq!(s.crossovers.get(), 0);
    // Copied into a host transmit buffer, then into B's receive buffer.
    assert_eq!(s.bytes_copied.get(), 2 * bytes);
    let up = r.net.uplink().stats();
    assert_eq!((up.tx_frames.get(), up.rx_frames.get()), (40, 40));
    assert!(r.wire().is_empty(), "looped back, not on the wire");
}

#[test]
fn a_receiver_writing_into_a_crossed_buffer_changes_only_its_copy() {
    let mut r = Rig::new(2, DemuxMode::Copy, VmToVm::Crossover);
    let f = frame(mac(1), mac(0), 400, 9);
    r.transmit(0, &f);
    let index = (r.reg(1, regs::RDH) + 15) % 16;
    let rx_buf = r.drivers[1].rx_buffers()[index as usize];
    let tx_buf = r.drivers[0].tx_buffers()[0];
    let (a, b) = (r.vms[0], r.vms[1]);
    r.host.write(b, rx_buf, &[0xee; 32]).unwrap();
    let mut sent = vec![0u8; 400];
    r.host.read(a, tx_buf, &mut sent).unwrap();
    assert_eq!(sent, f, "A's transmit buffer is A's");
    // B sees its own write, and the rest of the frame.
    let got = r.receive(1);
    assert_eq!(got[0][..32], [0xee; 32]);
    assert_eq!(got[0][32..], f[32..]);
    assert_eq!(r.host.stats().shares_copied_on_write.get(), 1);
    // A's transmit still completes when B gives the buffer back.
    assert_eq!(r.reg(0, regs::TDH), 1);
}

#[test]
fn statically_wired_vms_form_a_private_network() {
    for mode in [VmToVm::Crossover, VmToVm::Bridge] {
        let mut r = Rig::new(3, DemuxMode::Copy, mode);
        r.net.wire_vms(r.vms[0], r.vms[1]).unwrap();
        assert!(r.net.wire_vms(r.vms[1], r.vms[2]).is_err(), "wired already");
        assert!(r.net.wire_vms(r.vms[2], r.vms[2]).is_err());
        let to_b = frame(mac(1), mac(0), 700, 1);
        let bcast = frame([0xff; 6], mac(0), 200, 2);
        let to_c = frame(mac(2), mac(0), 300, 3);
        let out = frame(OUTSIDE, mac(0), 100, 4);
        for f in [&to_b, &bcast, &to_c, &out] {
            r.transmit(0, f);
            r.receive(1);
        }
        // Everything went down the cable to B; B's filter kept its own
        // frames and the broadcast. Nothing reached C or the wire.
        let b = r.net.vnic(r.vms[1]).unwrap().stats();
        assert_eq!(b.rx_frames.get(), 2, "{mode:?}");
        assert_eq!(b.rx_filtered.get(), 2, "{mode:?}");
        assert!(r.receive(2).is_empty(), "{mode:?}");
        assert!(r.wire().is_empty(), "{mode:?}");
        // And back: B's frames reach A only.
        let back = frame(mac(0), mac(1), 500, 5);
        r.transmit(1, &back);
        assert_eq!(r.receive(0), vec![back], "{mode:?}");
        if mode == VmToVm::Crossover {
            assert_eq!(r.net.stats().crossovers.get(), 3);
        }
    }
}

#[test]
fn a_crossing_held_too_long_times_out_on_the_networks_clock() {
    use iovirt_core::SimTime;
    let mut r = Rig::with_timeout(2, DemuxMode::Copy, VmToVm::Crossover, 50_000);
    let f = frame(mac(1), mac(0), 800, 6);
    r.transmit(0, &f);
    assert_eq!(r.net.next_timer(), Some(SimTime::from_nanos(50_000)));
    assert_eq!(
        r.net.run_timers(&mut r.host, SimTime::from_nanos(49_999)),
        0
    );
    assert_eq!(r.reg(0, regs::TDH), 0, "A waits for B");
    assert_eq!(
        r.net.run_timers(&mut r.host, SimTime::from_nanos(50_000)),
        1
    );
    let s = r.net.stats();
    assert_eq!(
        (s.crossover_timeouts.get(), s.crossover_forced.get()),
        (1, 1)
    );
    assert_eq!(r.reg(0, regs::TDH), 1, "A's transmit completed");
    assert_eq!(r.net.next_timer(), None);
    // B kept its frame (a private copy), and is copied to from now on.
    assert_eq!(r.receive(1), vec![f]);
    let g = frame(mac(1), mac(0), 200, 7);
    r.transmit(0, &g);
    assert_eq!(r.receive(1), vec![g]);
    assert_eq!(r.net.stats().crossover_fallbacks.get(), 1);
    // A crossing given back in time cancels its timeout.
    let mut r = Rig::with_timeout(2, DemuxMode::Copy, VmToVm::Crossover, 50_000);
    r.transmit(0, &frame(mac(1), mac(0), 100, 8));
    assert_eq!(r.receive(1).len(), 1);
    assert_eq!(
        r.net.next_timer(),
        None,
        "cancelled when B gave the buffer back"
    );
}

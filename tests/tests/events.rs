//! The platform's discrete-event loop: frames cross the cable at their
//! arrival times, the NICs' moderation timers fire in virtual time, and
//! interrupts reach the receiving guest's e1000 driver, which receives only
//! in its interrupt handler. Interrupt throttling (ITR) batches the frames.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use iovirt::link::LinkConfig;
use iovirt::platform::{MIB, TwoGuests, frame};
use iovirt_core::{CostModel, Gpa, RegisterAccess, SimDuration, SimTime};
use iovirt_drivers::{E1000Config, E1000Driver, GuestPageAllocator, Placement};
use iovirt_iommu::IotlbConfig;
use iovirt_nic::regs;

const FRAMES: u32 = 200;
const LEN: usize = 1000;
const IRQ_LATENCY: SimDuration = SimDuration::from_nanos(2_000);

struct Run {
    sent: Vec<Vec<u8>>,
    received: Vec<Vec<u8>>,
    /// When B's interrupt handler ran.
    handled: Vec<SimTime>,
    /// One frame's time on the wire.
    gap: SimDuration,
}

/// A sends `FRAMES` frames at line rate; B receives only in its interrupt
/// handler, with ITR set to `itr` (units of 256 ns).
fn run(itr: u32) -> Run {
    let mut h = TwoGuests::new(IotlbConfig::default()).unwrap();
    let link = LinkConfig::from_cost(&CostModel::default(), 64);
    h.set_links(link);
    let pages = || GuestPageAllocator::new(Gpa::new(MIB), 2048, Placement::Contiguous);
    let (mut pa, mut pb) = (pages(), pages());
    let rx = E1000Config {
        rx_descriptors: 256,
        ..E1000Config::default()
    };
    let mut da = E1000Driver::bring_up(&mut h.guest(0), &mut pa, E1000Config::default()).unwrap();
    let mut db = E1000Driver::bring_up(&mut h.guest(1), &mut pb, rx).unwrap();
    h.guest(1).write32(regs::ITR, itr);
    let gap = link.serialization(LEN);
    let (mut sent, mut received, mut handled) = (Vec::new(), Vec::new(), Vec::new());
    let mut b_handler = |h: &mut TwoGuests, v: usize| {
        if v == 1 {
            handled.push(h.now);
            db.handle_interrupt(&mut h.guest(1), |f| received.push(f.to_vec()))
                .unwrap();
        }
    };
    for n in 0..FRAMES {
        let f = frame([0x52, 0x54, 0, 0, 0, 2], [0x52, 0x54, 0, 0, 0, 1], n, LEN);
        da.transmit(&mut h.guest(0), &f).unwrap();
        sent.push(f);
        let next = h.now + gap;
        h.run_until(next, IRQ_LATENCY, &mut b_handler);
    }
    let end = h.now + SimDuration::from_micros(1_000);
    h.run_until(end, IRQ_LATENCY, &mut b_handler);
    Run {
        sent,
        received,
        handled,
        gap,
    }
}

#[test]
fn without_throttling_interrupts_follow_the_frames_in_time() {
    let r = run(0);
    assert_eq!(r.received, r.sent, "byte-exact, in order");
    // A cause sets ICR and raises an interrupt when none is outstanding;
    // frames arriving before the handler reads ICR share its interrupt.
    // Frames come every 820 ns and the handler runs 2 us after the raise.
    let per = (IRQ_LATENCY.as_nanos() / r.gap.as_nanos() + 1) as usize;
    assert!(
        r.handled.len() >= FRAMES as usize / per,
        "{}",
        r.handled.len()
    );
    // The first interrupt comes one wire time, one latency and one
    // interrupt latency after the first frame left.
    let first = r.gap + SimDuration::from_nanos(500) + IRQ_LATENCY;
    assert_eq!(r.handled[0], SimTime::ZERO + first);
    assert!(
        r.handled.windows(2).all(|w| w[0] <= w[1]),
        "time moves forward"
    );
}

#[test]
fn itr_spaces_interrupts_and_batches_the_frames() {
    let itr = 200; // 51.2 us
    let r = run(itr);
    assert_eq!(r.received, r.sent, "byte-exact, in order");
    let span = r.gap.as_nanos() * u64::from(FRAMES);
    let most = span / (u64::from(itr) * 256) + 2;
    assert!(
        (2..=most as usize).contains(&r.handled.len()),
        "{} interrupts over {span} ns",
        r.handled.len()
    );
    for w in r.handled.windows(2) {
        assert!(
            (w[1] - w[0]).as_nanos() >= u64::from(itr) * 256,
            "interrupts at least ITR apart: {:?}",
            r.handled
        );
    }
    assert!(run(0).handled.len() > 10 * r.handled.len());
}

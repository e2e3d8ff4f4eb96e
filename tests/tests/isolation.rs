//! Isolation between the two VMs under a hostile guest, as a property: for
//! any sequence of register writes, scribbles over its own memory and frames
//! arriving from the wire, VM A's NIC never changes one byte of VM B's host
//! memory, and every IOMMU fault it causes is recorded under A's requester
//! ID, never B's.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use iovirt::platform::{GUEST, MIB, TwoGuests, frame, requester};
use iovirt_core::{Gpa, Hpa, PhysMemory, RegisterAccess};
use iovirt_drivers::{E1000Config, E1000Driver, GuestPageAllocator, Placement};
use iovirt_iommu::IotlbConfig;
use iovirt_nic::regs;
use proptest::prelude::*;

/// One thing the hostile guest (or the wire) does.
#[derive(Debug, Clone)]
enum Op {
    /// A register write; the register is one the NIC implements, or any offset.
    Write(u64, u32),
    /// Eight bytes written anywhere in A's own memory (descriptors, often).
    Scribble(u64, u64),
    /// Eight bytes written into the current TX (false) or RX (true) ring at
    /// this descriptor and half: forged descriptors.
    Forge(bool, u64, u64),
    /// A frame of this length arrives for A from the wire.
    Arrive(usize),
    /// A's transmitted frames are carried to B's port.
    Deliver,
}

/// Ring bases a hostile guest would try: its own memory, just past its end,
/// where B sits in host memory, the 4 GiB boundary and anything at all.
fn base() -> impl Strategy<Value = u32> {
    prop_oneof![
        (0..GUEST as u32).prop_map(|a| a & !0xf),
        Just(GUEST as u32 - 0x80),
        Just(GUEST as u32),
        (2 * GUEST as u32..3 * GUEST as u32).prop_map(|a| a & !0xfff),
        Just(0xffff_fff0),
        any::<u32>(),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let reg = proptest::sample::select(&regs::IMPLEMENTED[..]);
    let pointer = prop_oneof![
        Just(regs::TDT),
        Just(regs::RDT),
        Just(regs::TDH),
        Just(regs::RDH)
    ];
    let length = prop_oneof![Just(regs::TDLEN), Just(regs::RDLEN)];
    let enable = prop_oneof![
        Just((regs::TCTL, regs::Tctl::EN.bits())),
        Just((regs::RCTL, (regs::Rctl::EN | regs::Rctl::UPE).bits())),
    ];
    prop_oneof![
        3 => (pointer, 0..256u32).prop_map(|(r, v)| Op::Write(r, v)),
        1 => base().prop_map(|v| Op::Write(regs::TDBAL, v)),
        1 => base().prop_map(|v| Op::Write(regs::RDBAL, v)),
        1 => (length, 0..64u32, any::<bool>())
            .prop_map(|(r, n, exact)| Op::Write(r, if exact { n * 128 } else { n * 97 })),
        1 => enable.prop_map(|(r, v)| Op::Write(r, v)),
        1 => (reg.clone(), 0..512u32).prop_map(|(r, v)| Op::Write(r, v)),
        1 => (reg, any::<u32>()).prop_map(|(r, v)| Op::Write(r, v)),
        1 => (0..regs::BAR_SIZE, any::<u32>()).prop_map(|(r, v)| Op::Write(r & !3, v)),
        1 => (0..GUEST - 8, any::<u64>()).prop_map(|(a, v)| Op::Scribble(a, v)),
        4 => (any::<bool>(), 0..512u64, any::<u64>()).prop_map(|(rx, i, v)| Op::Forge(rx, i, v)),
        2 => (14..20_000usize).prop_map(Op::Arrive),
        1 => Just(Op::Deliver),
    ]
}

fn b_memory(h: &TwoGuests) -> Vec<u8> {
    let mut bytes = vec![0u8; GUEST as usize];
    PhysMemory::read(&h.mem, Hpa::new(2 * GUEST), &mut bytes).unwrap();
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn a_hostile_nic_never_reaches_the_other_vm(ops in prop::collection::vec(op(), 1..160)) {
        let mut h = TwoGuests::new(IotlbConfig::default()).unwrap();
        let pages = |seed| GuestPageAllocator::new(Gpa::new(MIB), 2048, Placement::Random { seed });
        let (mut pa, mut pb) = (pages(3), pages(4));
        let _a = E1000Driver::bring_up(&mut h.guest(0), &mut pa, E1000Config::default()).unwrap();
        let b = E1000Driver::bring_up(&mut h.guest(1), &mut pb, E1000Config::default()).unwrap();
        // B's receiver is off, so only a stray DMA could change its memory.
        h.guest(1).write32(regs::RCTL, 0);
        let before = b_memory(&h);
        let a_mac = h.nics[0].config().mac;

        for (n, op) in ops.into_iter().enumerate() {
            match op {
                Op::Write(reg, value) => h.guest(0).write32(reg, value),
                Op::Scribble(gpa, v) => {
                    PhysMemory::write(&mut h.guest(0), Gpa::new(gpa), &v.to_le_bytes()).unwrap();
                }
                Op::Forge(rx, half, v) => {
                    let mut g = h.guest(0);
                    let ring = u64::from(g.read32(if rx { regs::RDBAL } else { regs::TDBAL }));
                    // Outside A's memory the write is refused; that is fine.
                    let _ = PhysMemory::write(&mut g, Gpa::new(ring + half * 8), &v.to_le_bytes());
                }
                Op::Arrive(len) => {
                    let f = frame(a_mac, b.mac(), n as u32, len);
                    let _ = h.guest(0).with_nic(|nic, env| nic.receive(&f, env));
                }
                Op::Deliver => h.deliver(0, |_| {}),
            }
        }

        prop_assert!(b_memory(&h) == before, "VM B's memory changed");
        for r in h.iommu.faults().records() {
            prop_assert_eq!(r.requester, requester(0));
        }
        prop_assert_eq!(h.nics[1].stats().dma_faults.get(), 0);
    }
}

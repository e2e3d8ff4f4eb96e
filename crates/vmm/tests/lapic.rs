//! Interrupt injection through each VM's local APIC: coalescing, priority
//! classes, acknowledge and EOI, illegal vectors, and a model check against
//! two sorted sets.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeSet;

use iovirt_core::{InterruptSink, Irq};
use iovirt_iommu::{IommuConfig, RequesterId};
use iovirt_vmm::{ESR_RECEIVE_ILLEGAL_VECTOR, Host, HostConfig, Lapic, VmConfig, VmId, VmmError};
use proptest::prelude::*;

#[test]
fn a_vector_raised_while_pending_is_taken_once() {
    let mut apic = Lapic::new();
    for _ in 0..3 {
        apic.raise(Irq(0x41));
    }
    assert!(apic.is_pending(0x41));
    assert_eq!(apic.acknowledge(), Some(0x41));
    assert_eq!(apic.acknowledge(), None);
    let s = apic.stats();
    assert_eq!(
        (s.injected.get(), s.coalesced.get(), s.delivered.get()),
        (1, 2, 1)
    );
}

#[test]
fn priority_classes_decide_what_is_taken_and_what_nests() {
    let mut apic = Lapic::new();
    for v in [0x30, 0x52, 0x51] {
        apic.inject(Irq(v));
    }
    assert_eq!(apic.acknowledge(), Some(0x52), "the highest vector first");
    // 0x51 is in the same class as the 0x52 in service: it waits.
    assert_eq!(apic.deliverable(), None);
    apic.inject(Irq(0x61));
    assert_eq!(apic.acknowledge(), Some(0x61), "a higher class nests");
    assert_eq!(apic.eoi(), Some(0x61));
    assert_eq!(apic.deliverable(), None, "0x52 still in service");
    assert_eq!(apic.eoi(), Some(0x52));
    assert_eq!(apic.acknowledge(), Some(0x51));
    assert_eq!(apic.eoi(), Some(0x51));
    assert_eq!(apic.acknowledge(), Some(0x30));
    assert_eq!(apic.eoi(), Some(0x30));
    assert_eq!(apic.eoi(), None);
    let s = apic.stats();
    assert_eq!((s.eois.get(), s.spurious_eois.get()), (4, 1));
}

#[test]
fn illegal_vectors_are_dropped_and_flagged() {
    let mut apic = Lapic::new();
    apic.inject(Irq(5));
    apic.inject(Irq(0x10f)); // MSI data whose vector byte is 0x0f
    assert_eq!(apic.deliverable(), None);
    assert_eq!(apic.take_esr(), ESR_RECEIVE_ILLEGAL_VECTOR);
    assert_eq!(apic.take_esr(), 0, "reading clears it");
    apic.inject(Irq(0x1_0041)); // only the low byte is the vector
    assert_eq!(apic.acknowledge(), Some(0x41));
    assert_eq!(apic.stats().illegal_vectors.get(), 2);
}

#[test]
fn each_vm_has_its_own_apic() {
    let mut host = Host::new(HostConfig {
        table_frames: 8,
        data_frames: 8,
        iommu: IommuConfig::default(),
    })
    .unwrap();
    let vm = |n| VmConfig {
        memory: 4096,
        requester: RequesterId::new(0, n, 0).unwrap(),
    };
    let (a, b) = (host.add_vm(vm(2)).unwrap(), host.add_vm(vm(3)).unwrap());
    host.inject(a, Irq(0x40)).unwrap();
    // A device model raises through the APIC as its interrupt sink.
    let sink: &mut dyn InterruptSink = host.lapic_mut(b).unwrap();
    sink.raise(Irq(0x50));
    assert_eq!(host.lapic_mut(a).unwrap().acknowledge(), Some(0x40));
    assert_eq!(host.lapic(b).unwrap().deliverable(), Some(0x50));
    assert!(!host.lapic(b).unwrap().is_pending(0x40));
    assert!(matches!(
        host.inject(VmId(7), Irq(0x40)),
        Err(VmmError::NoVm(_))
    ));
}

#[derive(Debug, Clone)]
enum Op {
    Raise(u32),
    Ack,
    Eoi,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any::<u32>().prop_map(Op::Raise),
        3 => (16u32..256).prop_map(Op::Raise),
        2 => Just(Op::Ack),
        2 => Just(Op::Eoi),
    ]
}

proptest! {
    /// The APIC against two sorted sets (pending, in service) and the
    /// rule written out plainly.
    #[test]
    fn the_apic_follows_the_priority_rule(ops in prop::collection::vec(op(), 1..200)) {
        let mut apic = Lapic::new();
        let (mut irr, mut isr) = (BTreeSet::<u8>::new(), BTreeSet::<u8>::new());
        for op in ops {
            match op {
                Op::Raise(data) => {
                    apic.raise(Irq(data));
                    let v = data as u8;
                    if v >= 16 {
                        irr.insert(v);
                    }
                }
                Op::Ack => {
                    let want = irr.last().copied().filter(|&p| {
                        isr.last().is_none_or(|&s| p >> 4 > s >> 4)
                    });
                    prop_assert_eq!(apic.acknowledge(), want);
                    if let Some(v) = want {
                        irr.remove(&v);
                        isr.insert(v);
                    }
                }
                Op::Eoi => {
                    let want = isr.pop_last();
                    prop_assert_eq!(apic.eoi(), want);
                }
            }
            for v in 0..=255u8 {
                prop_assert_eq!(apic.is_pending(v), irr.contains(&v));
            }
        }
    }
}

//! The host MMU: oversubscription, swap, recycled frames, pinning, the
//! fault service, and hostile addresses; and a model check against a plain
//! byte array per VM.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use iovirt_core::{DmaPort, Gpa, Iova, Irq};
use iovirt_iommu::{IommuConfig, RequesterId};
use iovirt_vmm::{Host, HostConfig, SwapOut, VmConfig, VmId, VmmError};
use proptest::prelude::*;

const PAGE: u64 = 4096;

fn host(table_frames: u64, data_frames: u64) -> Host {
    Host::new(HostConfig {
        table_frames,
        data_frames,
        iommu: IommuConfig::default(),
    })
    .unwrap()
}

fn requester(n: u8) -> RequesterId {
    RequesterId::new(0, n, 0).unwrap()
}

fn vm(h: &mut Host, n: u8, pages: u64) -> VmId {
    h.add_vm(VmConfig {
        memory: pages * PAGE,
        requester: requester(n),
    })
    .unwrap()
}

fn dma_read(h: &mut Host, v: VmId, addr: u64, buf: &mut [u8]) -> bool {
    let mut irq: Vec<Irq> = Vec::new();
    h.dma_port(v, &mut irq)
        .unwrap()
        .dma_read(Iova::new(addr), buf)
        .is_ok()
}

#[test]
fn a_recycled_frame_never_shows_its_old_owner_to_either_side() {
    let mut h = host(32, 8);
    let (a, b) = (vm(&mut h, 2, 16), vm(&mut h, 3, 16));
    let p = 3 * PAGE;
    h.write(a, Gpa::new(p), &[0xaa; PAGE as usize]).unwrap();
    // A's device reads the page, so the IOTLB holds its translation.
    let mut buf = [0u8; 64];
    assert!(dma_read(&mut h, a, p, &mut buf));
    assert_eq!(buf, [0xaa; 64]);
    let frame = h.frame_of(a, Gpa::new(p)).unwrap();

    assert_eq!(h.swap_out(a, Gpa::new(p)).unwrap(), SwapOut::Done);
    assert_eq!(h.stats().invalidations.get(), 1);
    // B gets the frame (the allocator hands out the lowest free one).
    h.write(b, Gpa::new(0), &[0xbb; 16]).unwrap();
    assert_eq!(
        h.frame_of(b, Gpa::new(0)),
        Some(frame),
        "the frame was recycled"
    );
    let mut page = [0xffu8; PAGE as usize];
    h.read(b, Gpa::new(0), &mut page).unwrap();
    assert_eq!(&page[..16], &[0xbb; 16]);
    assert!(
        page[16..].iter().all(|&x| x == 0),
        "B sees none of A's bytes"
    );

    // A's device, with its old translation invalidated, faults instead of
    // reading B's bytes.
    assert!(!dma_read(&mut h, a, p, &mut buf));
    let fault = *h.iommu().faults().records().last().unwrap();
    assert_eq!((fault.requester, fault.addr), (requester(2), p));
    h.service_fault(&fault).unwrap();
    assert!(dma_read(&mut h, a, p, &mut buf));
    assert_eq!(buf, [0xaa; 64], "A's page came back from the store");
    assert_ne!(h.frame_of(a, Gpa::new(p)), Some(frame));
    let s = h.stats();
    assert_eq!(
        (
            s.swap_outs.get(),
            s.major_faults.get(),
            s.dma_faults_serviced.get()
        ),
        (1, 1, 1)
    );
    assert_eq!(s.bytes_swapped_out.get(), PAGE);
}

#[test]
fn oversubscribed_memory_keeps_every_byte() {
    // 2 VMs of 32 pages on 16 frames: at most half of it is ever resident.
    let mut h = host(32, 16);
    let vms = [vm(&mut h, 2, 32), vm(&mut h, 3, 32)];
    for round in 0..3u8 {
        for (i, &v) in vms.iter().enumerate() {
            for page in 0..32u64 {
                let fill = [round ^ (i as u8) << 7 ^ page as u8; 100];
                h.write(v, Gpa::new(page * PAGE + 7), &fill).unwrap();
                assert!(h.resident_frames() <= 16);
            }
        }
    }
    for (i, &v) in vms.iter().enumerate() {
        for page in 0..32u64 {
            let mut got = [0u8; 102];
            h.read(v, Gpa::new(page * PAGE + 6), &mut got).unwrap();
            let want = 2 ^ (i as u8) << 7 ^ page as u8;
            assert_eq!(got[0], 0);
            assert!(got[1..101].iter().all(|&x| x == want), "vm {i} page {page}");
            assert_eq!(got[101], 0);
        }
    }
    let s = h.stats();
    assert_eq!(s.minor_faults.get(), 64, "each page was new once");
    assert!(s.evictions.get() >= 3 * 64 - 16, "{s:?}");
    assert_eq!(s.swap_outs.get(), s.evictions.get(), "none was asked for");
    assert_eq!(h.resident_frames() + h.swapped_pages(), 64);
}

#[test]
fn pinned_pages_stay_and_a_host_of_pinned_frames_says_so() {
    let mut h = host(32, 4);
    let a = vm(&mut h, 2, 16);
    h.pin(a, Gpa::new(0), 3 * PAGE).unwrap();
    h.write(a, Gpa::new(0), &[1; 8]).unwrap();
    let frame = h.frame_of(a, Gpa::new(0));
    // Pressure from the other pages cycles through the one unpinned frame.
    for page in 3..16u64 {
        h.write(a, Gpa::new(page * PAGE), &[2; 8]).unwrap();
    }
    assert_eq!(h.frame_of(a, Gpa::new(0)), frame);
    assert_eq!(h.swap_out(a, Gpa::new(PAGE)).unwrap(), SwapOut::Pinned);
    let mut buf = [0u8; 8];
    assert!(
        dma_read(&mut h, a, 0, &mut buf),
        "a pinned page never faults"
    );
    assert_eq!(buf, [1; 8]);

    h.pin(a, Gpa::new(3 * PAGE), PAGE).unwrap();
    match h.write(a, Gpa::new(4 * PAGE), &[3; 8]) {
        Err(VmmError::AllPinned(4)) => {}
        other => panic!("{other:?}"),
    }
    h.unpin(a, Gpa::new(0), 4 * PAGE).unwrap();
    h.write(a, Gpa::new(4 * PAGE), &[3; 8]).unwrap();
    assert_eq!(
        h.swap_out(a, Gpa::new(15 * PAGE)).unwrap(),
        SwapOut::NotResident
    );
}

#[test]
fn hostile_addresses_are_refused_without_side_effects() {
    let mut h = host(32, 8);
    let a = vm(&mut h, 2, 4);
    let mut buf = [0u8; 16];
    for (gpa, len) in [
        (4 * PAGE, 1u64),
        (4 * PAGE - 8, 16),
        (u64::MAX - 7, 16),
        (u64::MAX, 1),
    ] {
        let r = h.read(a, Gpa::new(gpa), &mut buf[..len as usize]);
        assert!(
            matches!(r, Err(VmmError::OutOfRange { .. })),
            "{gpa:#x}: {r:?}"
        );
        if gpa >= 4 * PAGE {
            let r = h.swap_out(a, Gpa::new(gpa));
            assert!(matches!(r, Err(VmmError::OutOfRange { .. })), "{r:?}");
        }
    }
    assert!(h.pin(a, Gpa::new(0), 5 * PAGE).is_err());
    assert!(matches!(
        h.read(VmId(9), Gpa::new(0), &mut buf),
        Err(VmmError::NoVm(_))
    ));
    assert_eq!((h.resident_frames(), h.stats().minor_faults.get()), (0, 0));

    // A DMA outside the VM faults and is the guest's error, not serviceable.
    assert!(!dma_read(&mut h, a, 1 << 30, &mut buf));
    let fault = *h.iommu().faults().records().last().unwrap();
    assert!(matches!(
        h.service_fault(&fault),
        Err(VmmError::OutOfRange { .. })
    ));
    let mut stranger = fault;
    stranger.requester = requester(9);
    assert!(matches!(
        h.service_fault(&stranger),
        Err(VmmError::UnknownRequester(_))
    ));

    // Bad VM configs.
    for memory in [0, 100] {
        let r = h.add_vm(VmConfig {
            memory,
            requester: requester(4),
        });
        assert!(matches!(r, Err(VmmError::BadVm(_))));
    }
    let r = h.add_vm(VmConfig {
        memory: PAGE,
        requester: requester(2),
    });
    assert!(
        matches!(r, Err(VmmError::BadVm(_))),
        "requester already assigned"
    );
}

#[test]
fn running_out_of_table_frames_leaves_the_page_untouched() {
    // The root fits; the first mapping needs three more tables.
    let mut h = host(2, 8);
    let a = vm(&mut h, 2, 4);
    assert!(matches!(
        h.write(a, Gpa::new(0), &[1]),
        Err(VmmError::Tables(_))
    ));
    assert_eq!(h.resident_frames(), 0, "the frame went back");
    assert!(h.frame_of(a, Gpa::new(0)).is_none());
}

/// One step of the model check.
#[derive(Debug, Clone)]
enum Op {
    Write(usize, u64, u8, u16),
    Read(usize, u64, u16),
    SwapOut(usize, u64),
    Dma(usize, u64, u16),
}

const VM_PAGES: u64 = 12;
const SIZE: u64 = VM_PAGES * PAGE;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..2usize, 0..SIZE, any::<u8>(), 1..6000u16)
            .prop_map(|(v, a, b, n)| Op::Write(v, a, b, n)),
        (0..2usize, 0..SIZE, 1..6000u16).prop_map(|(v, a, n)| Op::Read(v, a, n)),
        (0..2usize, 0..SIZE).prop_map(|(v, a)| Op::SwapOut(v, a)),
        (0..2usize, 0..SIZE, 1..6000u16).prop_map(|(v, a, n)| Op::Dma(v, a, n)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Whatever is written, swapped and read, by the CPU or the device, each
    /// VM's memory behaves as a plain array of its own bytes, and the host
    /// never holds more frames than it has.
    #[test]
    fn each_vm_sees_exactly_its_own_bytes(ops in prop::collection::vec(op(), 1..60)) {
        let mut h = host(64, 9);
        let vms = [vm(&mut h, 2, VM_PAGES), vm(&mut h, 3, VM_PAGES)];
        let mut model = [vec![0u8; SIZE as usize], vec![0u8; SIZE as usize]];
        for op in ops {
            match op {
                Op::Write(v, a, b, n) => {
                    let n = u64::from(n).min(SIZE - a) as usize;
                    let data: Vec<u8> = (0..n).map(|i| b.wrapping_add(i as u8)).collect();
                    h.write(vms[v], Gpa::new(a), &data).unwrap();
                    model[v][a as usize..a as usize + n].copy_from_slice(&data);
                }
                Op::Read(v, a, n) => {
                    let mut got = vec![0u8; n as usize];
                    let r = h.read(vms[v], Gpa::new(a), &mut got);
                    if a + u64::from(n) > SIZE {
                        prop_assert!(r.is_err());
                    } else {
                        r.unwrap();
                        prop_assert!(got[..] == model[v][a as usize..(a + u64::from(n)) as usize]);
                    }
                }
                Op::SwapOut(v, a) => {
                    let _ = h.swap_out(vms[v], Gpa::new(a)).unwrap();
                }
                Op::Dma(v, a, n) => {
                    let n = u64::from(n).min(SIZE - a) as usize;
                    let mut got = vec![0u8; n];
                    // Each fault brings one page in; a DMA spans at most 3.
                    let mut tries = 0;
                    while !dma_read(&mut h, vms[v], a, &mut got) {
                        let records: Vec<_> = h.iommu().faults().records().copied().collect();
                        prop_assert!(records.iter().all(|f| f.requester == requester(v as u8 + 2)));
                        let done = h.service_pending_faults().unwrap();
                        prop_assert_eq!((done.serviced, done.refused), (1, 0));
                        tries += 1;
                        prop_assert!(tries <= 3);
                    }
                    prop_assert!(got[..] == model[v][a as usize..a as usize + n]);
                }
            }
            prop_assert!(h.resident_frames() <= 9);
            prop_assert!(h.resident_frames() + h.swapped_pages() <= 2 * VM_PAGES);
        }
    }
}

#[test]
fn a_swapped_page_that_cannot_be_mapped_keeps_its_contents() {
    // Two roots and one set of three lower tables: the VMs take turns.
    let mut h = host(5, 8);
    let (a, b) = (vm(&mut h, 2, 4), vm(&mut h, 3, 4));
    h.write(a, Gpa::new(0), &[0x5a; 32]).unwrap();
    assert_eq!(h.swap_out(a, Gpa::new(0)).unwrap(), SwapOut::Done);
    // Unmapping A's only page freed its tables; B takes them.
    h.write(b, Gpa::new(0), &[1]).unwrap();
    let mut got = [0u8; 32];
    assert!(matches!(
        h.read(a, Gpa::new(0), &mut got),
        Err(VmmError::Tables(_))
    ));
    assert_eq!((h.swapped_pages(), h.resident_frames()), (1, 1));
    assert_eq!(h.stats().major_faults.get(), 0);
    // Once B's page is out, A's comes back intact.
    assert_eq!(h.swap_out(b, Gpa::new(0)).unwrap(), SwapOut::Done);
    h.read(a, Gpa::new(0), &mut got).unwrap();
    assert_eq!(got, [0x5a; 32]);
    assert_eq!(h.stats().major_faults.get(), 1);
}

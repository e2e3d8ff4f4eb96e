//! Page flipping in the host MMU (seed 002): lending guest pages to a DMA
//! buffer pool and adopting pool frames as guest pages, with every stale
//! translation invalidated and no byte crossing from one owner to the next.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use iovirt_core::{DmaPort, Gpa, Hpa, Iova, Irq, PhysMemory};
use iovirt_iommu::{IommuConfig, RequesterId};
use iovirt_vmm::{Host, HostConfig, VmConfig, VmId, VmmError};
use proptest::prelude::*;

const PAGE: u64 = 4096;
const PAGE_BYTES: usize = PAGE as usize;

fn host(data_frames: u64) -> Host {
    let mut h = Host::new(HostConfig {
        table_frames: 64,
        data_frames,
        iommu: IommuConfig::default(),
    })
    .unwrap();
    h.attach_host_device(nic()).unwrap();
    h
}

fn requester(n: u8) -> RequesterId {
    RequesterId::new(0, n, 0).unwrap()
}

/// The host's own NIC: untranslated DMA.
fn nic() -> RequesterId {
    requester(1)
}

fn vm(h: &mut Host, n: u8, pages: u64) -> VmId {
    h.add_vm(VmConfig {
        memory: pages * PAGE,
        requester: requester(n),
    })
    .unwrap()
}

/// The physical NIC writes `data` into a pool frame.
fn nic_writes(h: &mut Host, frame: Hpa, data: &[u8]) {
    let mut irq: Vec<Irq> = Vec::new();
    h.device_port(nic(), &mut irq)
        .dma_write(Iova::new(frame.raw()), data)
        .unwrap();
}

fn page_of(h: &mut Host, v: VmId, gpa: u64) -> Vec<u8> {
    let mut page = vec![0u8; PAGE_BYTES];
    h.read(v, Gpa::new(gpa), &mut page).unwrap();
    page
}

#[test]
fn a_lent_page_leaves_the_vm_and_its_device_and_arrives_zeroed() {
    let mut h = host(16);
    let a = vm(&mut h, 2, 8);
    let rx = 2 * PAGE;
    h.write(a, Gpa::new(rx), &[0xaa; PAGE_BYTES]).unwrap();
    // A's device has the page's translation in the IOTLB.
    let mut irq: Vec<Irq> = Vec::new();
    let mut buf = [0u8; 8];
    h.dma_port(a, &mut irq)
        .unwrap()
        .dma_read(Iova::new(rx), &mut buf)
        .unwrap();
    let before = h.frame_of(a, Gpa::new(rx)).unwrap();

    let frame = h.lend_page(a, Gpa::new(rx)).unwrap().unwrap();
    assert_eq!(frame, before, "the page's own frame goes to the pool");
    assert_eq!(h.frame_of(a, Gpa::new(rx)), None);
    let mut bytes = [0xffu8; PAGE_BYTES];
    h.memory().read(frame, &mut bytes).unwrap();
    assert_eq!(bytes, [0; PAGE_BYTES], "zeroed before it joins the pool");
    // The invalidation reached the IOTLB: A's device faults now.
    let err = h
        .dma_port(a, &mut irq)
        .unwrap()
        .dma_read(Iova::new(rx), &mut buf)
        .unwrap_err();
    assert_eq!(err.addr, Iova::new(rx));
    assert_eq!(h.stats().invalidations.get(), 1);
    assert_eq!(h.stats().pages_lent.get(), 1);
    // Lending it again gives nothing more.
    assert_eq!(h.lend_page(a, Gpa::new(rx)).unwrap(), None);
    assert_eq!(h.stats().pages_lent.get(), 1);
}

#[test]
fn a_frame_flips_from_one_vm_to_the_other_carrying_only_the_packet() {
    let mut h = host(16);
    let (a, b) = (vm(&mut h, 2, 8), vm(&mut h, 3, 8));
    // A's receive buffer held a secret; A lends it to the pool.
    h.write(a, Gpa::new(PAGE), &[0x5e; PAGE_BYTES]).unwrap();
    let frame = h.lend_page(a, Gpa::new(PAGE)).unwrap().unwrap();
    // B lent its buffer too (the pool's frames are anyone's).
    let b_frame = h.lend_page(b, Gpa::new(3 * PAGE)).unwrap().unwrap();
    assert_ne!(frame, b_frame);
    // A 60-byte packet for B lands in A's old frame and is flipped into B.
    let packet: Vec<u8> = (0..60u8).collect();
    nic_writes(&mut h, frame, &packet);
    assert_eq!(h.adopt_frame(b, Gpa::new(3 * PAGE), frame).unwrap(), None);
    assert_eq!(h.frame_of(b, Gpa::new(3 * PAGE)), Some(frame));
    let page = page_of(&mut h, b, 3 * PAGE);
    assert_eq!(page[..60], packet[..]);
    assert!(page[60..].iter().all(|&x| x == 0), "none of A's secret");
    // B's device reaches the page through B's stage 2.
    let mut irq: Vec<Irq> = Vec::new();
    let mut head = [0u8; 4];
    h.dma_port(b, &mut irq)
        .unwrap()
        .dma_read(Iova::new(3 * PAGE), &mut head)
        .unwrap();
    assert_eq!(head, [0, 1, 2, 3]);
    assert_eq!(h.stats().frames_adopted.get(), 1);
    // A's CPU touching its lent page gets a fresh zeroed frame.
    assert_eq!(page_of(&mut h, a, PAGE), vec![0; PAGE_BYTES]);
    assert_eq!(h.stats().minor_faults.get(), 2, "A's write and this read");
}

#[test]
fn adopting_over_a_page_the_guest_touched_displaces_its_frame_zeroed() {
    let mut h = host(16);
    let a = vm(&mut h, 2, 8);
    let frame = h.lend_page(a, Gpa::new(0)).unwrap().unwrap();
    // The guest writes into its lent page anyway: a minor fault maps a
    // fresh frame under it.
    h.write(a, Gpa::new(0), &[0x77; 100]).unwrap();
    let touched = h.frame_of(a, Gpa::new(0)).unwrap();
    let invalidations = h.stats().invalidations.get();
    nic_writes(&mut h, frame, &[0x11; 64]);
    let displaced = h.adopt_frame(a, Gpa::new(0), frame).unwrap();
    assert_eq!(displaced, Some(touched));
    assert_eq!(h.stats().invalidations.get(), invalidations + 1);
    let mut bytes = [0xffu8; PAGE_BYTES];
    h.memory().read(touched, &mut bytes).unwrap();
    assert_eq!(bytes, [0; PAGE_BYTES], "the displaced frame is zeroed");
    assert_eq!(
        &page_of(&mut h, a, 0)[..66],
        &[[0x11; 64].as_slice(), &[0, 0]].concat()[..]
    );
    // The displaced frame is a pool frame now: it can be adopted or freed.
    let used = h.resident_frames();
    h.free_pool_frame(touched).unwrap();
    assert_eq!(h.resident_frames(), used - 1);
}

#[test]
fn pinned_pages_foreign_frames_and_bad_addresses_are_refused() {
    let mut h = host(16);
    let (a, b) = (vm(&mut h, 2, 8), vm(&mut h, 3, 8));
    h.pin(a, Gpa::new(0), PAGE).unwrap();
    assert!(matches!(
        h.lend_page(a, Gpa::new(0)),
        Err(VmmError::Pinned { gpa: 0, .. })
    ));
    let pool = h.alloc_pool_frame().unwrap();
    assert!(matches!(
        h.adopt_frame(a, Gpa::new(0), pool),
        Err(VmmError::Pinned { .. })
    ));
    // A frame backing B's page is not the pool's to give.
    h.write(b, Gpa::new(0), &[1]).unwrap();
    let bs = h.frame_of(b, Gpa::new(0)).unwrap();
    for frame in [bs, Hpa::new(pool.raw() + 8), Hpa::new(0), Hpa::new(!0xfff)] {
        assert!(
            matches!(
                h.adopt_frame(a, Gpa::new(PAGE), frame),
                Err(VmmError::NotPoolFrame(_))
            ),
            "{frame}"
        );
        assert!(matches!(
            h.free_pool_frame(frame),
            Err(VmmError::NotPoolFrame(_))
        ));
    }
    assert_eq!(page_of(&mut h, b, 0)[0], 1, "B's page is untouched");
    for gpa in [8 * PAGE, u64::MAX] {
        assert!(matches!(
            h.lend_page(a, Gpa::new(gpa)),
            Err(VmmError::OutOfRange { .. })
        ));
        assert!(matches!(
            h.adopt_frame(a, Gpa::new(gpa), pool),
            Err(VmmError::OutOfRange { .. })
        ));
    }
    // The refused pool frame is still the caller's.
    h.adopt_frame(a, Gpa::new(PAGE), pool).unwrap();
}

#[test]
fn lending_a_swapped_page_drops_its_copy() {
    let mut h = host(16);
    let a = vm(&mut h, 2, 8);
    h.write(a, Gpa::new(PAGE), &[9; 32]).unwrap();
    h.swap_out(a, Gpa::new(PAGE)).unwrap();
    assert_eq!(h.swapped_pages(), 1);
    let frame = h.lend_page(a, Gpa::new(PAGE)).unwrap().unwrap();
    assert_eq!(h.swapped_pages(), 0);
    let mut bytes = [0xffu8; 32];
    h.memory().read(frame, &mut bytes).unwrap();
    assert_eq!(bytes, [0; 32]);
}

#[derive(Debug, Clone)]
enum Op {
    Write {
        vm: usize,
        page: u64,
        byte: u8,
    },
    Lend {
        vm: usize,
        page: u64,
    },
    /// The NIC writes `byte` into pool frame `index` and it is adopted.
    Flip {
        index: usize,
        vm: usize,
        page: u64,
        byte: u8,
    },
    SwapOut {
        vm: usize,
        page: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let vm = 0..2usize;
    let page = 0..6u64;
    prop_oneof![
        (vm.clone(), page.clone(), 1..=255u8).prop_map(|(vm, page, byte)| Op::Write {
            vm,
            page,
            byte
        }),
        (vm.clone(), page.clone()).prop_map(|(vm, page)| Op::Lend { vm, page }),
        (0..8usize, vm.clone(), page.clone(), 1..=255u8).prop_map(|(index, vm, page, byte)| {
            Op::Flip {
                index,
                vm,
                page,
                byte,
            }
        }),
        (vm, page).prop_map(|(vm, page)| Op::SwapOut { vm, page }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Against a model where each VM page is a byte value (what the page is
    /// filled with; 0 when lent or flipped-in bytes beyond the packet): any
    /// mix of writes, lends, flips and swap-outs keeps every page's bytes,
    /// never lets a flipped page show anything but its packet and zeros,
    /// and never loses a frame (pool + resident pages = frames in use).
    #[test]
    fn flipping_keeps_every_byte_where_the_model_says(ops in proptest::collection::vec(op(), 1..60)) {
        let mut h = host(24);
        let vms = [vm(&mut h, 2, 6), vm(&mut h, 3, 6)];
        // model[vm][page] = (fill byte of the first 16 bytes, rest zero?)
        let mut model = [[(0u8, true); 6]; 2];
        let mut pool: Vec<Hpa> = Vec::new();
        for op in ops {
            match op {
                Op::Write { vm, page, byte } => {
                    h.write(vms[vm], Gpa::new(page * PAGE), &[byte; PAGE_BYTES]).unwrap();
                    model[vm][page as usize] = (byte, false);
                }
                Op::Lend { vm, page } => {
                    if let Some(f) = h.lend_page(vms[vm], Gpa::new(page * PAGE)).unwrap() {
                        pool.push(f);
                    }
                    model[vm][page as usize] = (0, true);
                }
                Op::Flip { index, vm, page, byte } => {
                    if pool.is_empty() {
                        continue;
                    }
                    let f = pool.swap_remove(index % pool.len());
                    nic_writes(&mut h, f, &[byte; 16]);
                    if let Some(d) = h.adopt_frame(vms[vm], Gpa::new(page * PAGE), f).unwrap() {
                        pool.push(d);
                    }
                    model[vm][page as usize] = (byte, true);
                }
                Op::SwapOut { vm, page } => {
                    h.swap_out(vms[vm], Gpa::new(page * PAGE)).unwrap();
                }
            }
            for f in &pool {
                let mut bytes = [0xffu8; PAGE_BYTES];
                h.memory().read(*f, &mut bytes).unwrap();
                prop_assert!(bytes.iter().all(|&x| x == 0), "pool frames are zero");
            }
        }
        for (v, pages) in model.iter().enumerate() {
            for (p, &(byte, rest_zero)) in pages.iter().enumerate() {
                let got = page_of(&mut h, vms[v], p as u64 * PAGE);
                prop_assert!(got[..16].iter().all(|&x| x == byte), "vm {v} page {p}");
                let rest = if rest_zero { 0 } else { byte };
                prop_assert!(got[16..].iter().all(|&x| x == rest), "vm {v} page {p} tail");
            }
        }
        let resident = (0..2).flat_map(|v| (0..6).map(move |p| (v, p)))
            .filter(|&(v, p)| h.frame_of(vms[v], Gpa::new(p * PAGE)).is_some())
            .count() as u64;
        prop_assert_eq!(h.resident_frames(), resident + pool.len() as u64);
    }
}

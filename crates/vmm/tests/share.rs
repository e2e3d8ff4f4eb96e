//! Shared pages in the host MMU (seed 003's dynamic remapper): one VM's
//! page mapped into another, pinned on both sides while shared, and every
//! stale translation invalidated when the share ends.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use iovirt_core::{DmaPort, Gpa, Iova, Irq};
use iovirt_iommu::{IommuConfig, RequesterId};
use iovirt_vmm::{Host, HostConfig, SwapOut, VmConfig, VmId, VmmError};

const PAGE: u64 = 4096;

fn host(data_frames: u64) -> Host {
    Host::new(HostConfig {
        table_frames: 64,
        data_frames,
        iommu: IommuConfig::default(),
    })
    .unwrap()
}

fn vm(h: &mut Host, n: u8, pages: u64) -> VmId {
    h.add_vm(VmConfig {
        memory: pages * PAGE,
        requester: RequesterId::new(0, n, 0).unwrap(),
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

fn read(h: &mut Host, v: VmId, gpa: u64, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    h.read(v, Gpa::new(gpa), &mut b).unwrap();
    b
}

#[test]
fn a_shared_page_shows_the_source_to_the_destination_and_its_device() {
    let mut h = host(32);
    let (a, b) = (vm(&mut h, 2, 8), vm(&mut h, 3, 8));
    h.write(a, Gpa::new(2 * PAGE), b"frame from A").unwrap();
    // B's receive buffer held B's own bytes, and B's device had it cached.
    h.write(b, Gpa::new(5 * PAGE), &[0xbb; 64]).unwrap();
    let mut buf = [0u8; 12];
    assert!(dma_read(&mut h, b, 5 * PAGE, &mut buf));
    let b_old = h.frame_of(b, Gpa::new(5 * PAGE)).unwrap();

    h.share_page(a, Gpa::new(2 * PAGE), b, Gpa::new(5 * PAGE))
        .unwrap();
    let a_frame = h.frame_of(a, Gpa::new(2 * PAGE)).unwrap();
    assert_eq!(h.frame_of(b, Gpa::new(5 * PAGE)), Some(a_frame));
    assert_eq!(read(&mut h, b, 5 * PAGE, 12), b"frame from A");
    assert!(dma_read(&mut h, b, 5 * PAGE, &mut buf), "no stale entry");
    assert_eq!(&buf, b"frame from A");
    // B's old frame went back zeroed.
    let mut old = [0xffu8; 64];
    iovirt_core::PhysMemory::read(h.memory(), b_old, &mut old).unwrap();
    assert_eq!(old, [0; 64]);
    assert_eq!(h.stats().pages_shared.get(), 1);

    h.unshare_page(b, Gpa::new(5 * PAGE)).unwrap();
    assert!(!dma_read(&mut h, b, 5 * PAGE, &mut buf), "invalidated");
    assert_eq!(read(&mut h, b, 5 * PAGE, 12), vec![0; 12]);
    assert_ne!(h.frame_of(b, Gpa::new(5 * PAGE)), Some(a_frame));
    assert_eq!(read(&mut h, a, 2 * PAGE, 12), b"frame from A", "A keeps it");
}

#[test]
fn neither_side_of_a_share_can_be_swapped_lent_or_replaced() {
    let mut h = host(10);
    let (a, b, c) = (vm(&mut h, 2, 8), vm(&mut h, 3, 8), vm(&mut h, 4, 16));
    h.write(a, Gpa::new(0), &[0x5a; 32]).unwrap();
    h.share_page(a, Gpa::new(0), b, Gpa::new(0)).unwrap();
    for (v, gpa) in [(a, 0), (b, 0)] {
        assert_eq!(h.swap_out(v, Gpa::new(gpa)).unwrap(), SwapOut::Pinned);
        assert!(matches!(
            h.lend_page(v, Gpa::new(gpa)),
            Err(VmmError::Pinned { .. })
        ));
    }
    let pool = h.alloc_pool_frame().unwrap();
    assert!(matches!(
        h.adopt_frame(a, Gpa::new(0), pool),
        Err(VmmError::Pinned { .. })
    ));
    // Memory pressure: C touches more pages than there are frames; the
    // shared frame is never taken.
    for p in 0..16 {
        h.write(c, Gpa::new(p * PAGE), &[p as u8; 8]).unwrap();
    }
    assert!(h.stats().evictions.get() > 0);
    assert_eq!(read(&mut h, b, 0, 32), vec![0x5a; 32]);
    // A shared mapping cannot be shared on, nor a page shared twice.
    let d = vm(&mut h, 5, 4);
    assert!(h.share_page(b, Gpa::new(0), d, Gpa::new(0)).is_err());
    assert!(h.share_page(a, Gpa::new(PAGE), b, Gpa::new(0)).is_err());
    assert!(h.share_page(a, Gpa::new(0), a, Gpa::new(PAGE)).is_err());
    h.pin(d, Gpa::new(0), PAGE).unwrap();
    assert!(matches!(
        h.share_page(a, Gpa::new(0), d, Gpa::new(0)),
        Err(VmmError::Pinned { .. })
    ));
    assert!(matches!(
        h.unshare_page(d, Gpa::new(0)),
        Err(VmmError::NotShared { .. })
    ));
    // Once unshared, A's page moves again.
    h.unshare_page(b, Gpa::new(0)).unwrap();
    assert_eq!(h.swap_out(a, Gpa::new(0)).unwrap(), SwapOut::Done);
    assert_eq!(read(&mut h, a, 0, 32), vec![0x5a; 32]);
}

#[test]
fn one_page_can_be_shared_into_several_vms() {
    let mut h = host(32);
    let vms: Vec<VmId> = (2..6).map(|n| vm(&mut h, n, 4)).collect();
    h.write(vms[0], Gpa::new(PAGE), b"broadcast").unwrap();
    for &v in &vms[1..] {
        h.share_page(vms[0], Gpa::new(PAGE), v, Gpa::new(3 * PAGE))
            .unwrap();
        assert_eq!(read(&mut h, v, 3 * PAGE, 9), b"broadcast");
    }
    // The source stays pinned until the last share ends.
    for &v in &vms[1..] {
        assert_eq!(h.swap_out(vms[0], Gpa::new(PAGE)).unwrap(), SwapOut::Pinned);
        h.unshare_page(v, Gpa::new(3 * PAGE)).unwrap();
    }
    assert_eq!(h.swap_out(vms[0], Gpa::new(PAGE)).unwrap(), SwapOut::Done);
}

#[test]
fn the_destination_writes_only_its_own_copy() {
    let mut h = host(32);
    let (a, b) = (vm(&mut h, 2, 8), vm(&mut h, 3, 8));
    h.write(a, Gpa::new(PAGE), &[0xa1; 4096]).unwrap();
    h.share_page(a, Gpa::new(PAGE), b, Gpa::new(2 * PAGE))
        .unwrap();
    // B's device may read the shared page but not write it.
    let mut irq: Vec<Irq> = Vec::new();
    let err = h
        .dma_port(b, &mut irq)
        .unwrap()
        .dma_write(Iova::new(2 * PAGE + 8), &[0xbb; 4])
        .unwrap_err();
    assert_eq!(err.reason, iovirt_core::FaultReason::WriteDenied);
    // B's CPU writes: B gets a private copy, A keeps its bytes.
    h.write(b, Gpa::new(2 * PAGE + 100), &[0xbb; 4]).unwrap();
    assert_eq!(h.stats().shares_copied_on_write.get(), 1);
    assert_ne!(
        h.frame_of(a, Gpa::new(PAGE)),
        h.frame_of(b, Gpa::new(2 * PAGE))
    );
    assert_eq!(read(&mut h, a, PAGE, 4096), vec![0xa1; 4096]);
    let mine = read(&mut h, b, 2 * PAGE, 4096);
    assert_eq!(mine[100..104], [0xbb; 4]);
    assert!(mine[..100].iter().chain(&mine[104..]).all(|&x| x == 0xa1));
    // The share is over: unsharing finds nothing, A moves freely again.
    assert!(matches!(
        h.unshare_page(b, Gpa::new(2 * PAGE)),
        Err(VmmError::NotShared { .. })
    ));
    assert_eq!(h.swap_out(a, Gpa::new(PAGE)).unwrap(), SwapOut::Done);
}

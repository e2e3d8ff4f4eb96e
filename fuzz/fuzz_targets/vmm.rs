//! The host MMU under random sequences of guest CPU accesses at any address,
//! swap-outs, pinning, device DMA through the IOMMU and the host's fault
//! handler, page lending and adoption (seed 002), page sharing and its end
//! (seed 003), on a host with few frames; and interrupts with any MSI data
//! injected, acknowledged and retired.
//!
//! Nothing may panic, and whatever the input: the host never holds more
//! frames than it has, never more pages (resident plus swapped) than its VMs
//! have, and a VM whose every access succeeded reads back exactly the bytes
//! it and its device wrote.

#![no_main]

use arbitrary::Arbitrary;
use iovirt_core::{DmaPort, Gpa, Iova, Irq};
use iovirt_iommu::{IommuConfig, RequesterId};
use iovirt_vmm::{Host, HostConfig, VmConfig};
use libfuzzer_sys::fuzz_target;

const PAGE: u64 = 4096;
const MAX_OPS: usize = 64;
/// Longest access: 3 pages.
const MAX_LEN: u64 = 3 * PAGE;

#[derive(Debug, Arbitrary)]
enum Op {
    Write {
        vm: bool,
        gpa: u64,
        len: u16,
        byte: u8,
    },
    Read {
        vm: bool,
        gpa: u64,
        len: u16,
    },
    SwapOut {
        vm: bool,
        gpa: u64,
    },
    Pin {
        vm: bool,
        gpa: u64,
        len: u16,
    },
    Unpin {
        vm: bool,
        gpa: u64,
        len: u16,
    },
    Dma {
        vm: bool,
        addr: u64,
        len: u16,
        write: bool,
        byte: u8,
    },
    Service,
    Inject {
        vm: bool,
        data: u32,
    },
    Ack {
        vm: bool,
    },
    Eoi {
        vm: bool,
    },
    /// Page flipping: a page lent to the pool.
    Lend {
        vm: bool,
        gpa: u64,
    },
    /// Page flipping: a pool frame adopted as a page.
    Adopt {
        vm: bool,
        gpa: u64,
        frame: u8,
    },
    /// The crossover: a page of one VM shared into the other.
    Share {
        to_second: bool,
        src: u64,
        dst: u64,
    },
    /// The share of a page ends.
    Unshare {
        vm: bool,
        gpa: u64,
    },
}

#[derive(Debug, Arbitrary)]
struct Input {
    table_frames: u8,
    data_frames: u8,
    pages: [u8; 2],
    /// Addresses near the VM: most ops land inside, some just outside.
    near: bool,
    ops: Vec<Op>,
}

/// One VM's expected bytes; `None` once an access failed part way, since a
/// refused multi-page access may have done its first pages.
struct Shadow(Option<Vec<u8>>);

fuzz_target!(|input: Input| {
    let data_frames = u64::from(input.data_frames % 24) + 1;
    let Ok(mut host) = Host::new(HostConfig {
        table_frames: u64::from(input.table_frames % 32) + 1,
        data_frames,
        iommu: IommuConfig::default(),
    }) else {
        return;
    };
    let mut vms = Vec::new();
    let mut shadows = Vec::new();
    for (n, &p) in input.pages.iter().enumerate() {
        let pages = u64::from(p % 32) + 1;
        let config = VmConfig {
            memory: pages * PAGE,
            requester: RequesterId::new(0, n as u8 + 2, 0).unwrap(),
        };
        match host.add_vm(config) {
            Ok(v) => vms.push((v, pages * PAGE)),
            Err(_) => return,
        }
        shadows.push(Shadow(Some(vec![0; (pages * PAGE) as usize])));
    }
    let total_pages: u64 = vms.iter().map(|&(_, size)| size / PAGE).sum();
    // Frames lent to the page-flip pool: the host's, no VM's.
    let mut pool: Vec<iovirt_core::Hpa> = Vec::new();
    let addr = |size: u64, a: u64| if input.near { a % (size + 2 * PAGE) } else { a };
    let pick = |second: bool| usize::from(second);

    for op in input.ops.into_iter().take(MAX_OPS) {
        match op {
            Op::Write { vm, gpa, len, byte } => {
                let (v, size) = vms[pick(vm)];
                let gpa = addr(size, gpa);
                let data = vec![byte; (u64::from(len) % MAX_LEN) as usize];
                let ok = host.write(v, Gpa::new(gpa), &data).is_ok();
                update(&mut shadows[pick(vm)], gpa, &data, ok);
            }
            Op::Read { vm, gpa, len } => {
                let (v, size) = vms[pick(vm)];
                let gpa = addr(size, gpa);
                let mut buf = vec![0; (u64::from(len) % MAX_LEN) as usize];
                if host.read(v, Gpa::new(gpa), &mut buf).is_ok() {
                    check(&shadows[pick(vm)], gpa, &buf);
                }
            }
            Op::SwapOut { vm, gpa } => {
                let (v, size) = vms[pick(vm)];
                let _ = host.swap_out(v, Gpa::new(addr(size, gpa)));
            }
            Op::Pin { vm, gpa, len } => {
                let (v, size) = vms[pick(vm)];
                let _ = host.pin(v, Gpa::new(addr(size, gpa)), u64::from(len) % MAX_LEN);
            }
            Op::Unpin { vm, gpa, len } => {
                let (v, size) = vms[pick(vm)];
                let _ = host.unpin(v, Gpa::new(addr(size, gpa)), u64::from(len) % MAX_LEN);
            }
            Op::Dma {
                vm,
                addr: a,
                len,
                write,
                byte,
            } => {
                let (v, size) = vms[pick(vm)];
                let a = addr(size, a);
                let mut buf = vec![byte; (u64::from(len) % MAX_LEN) as usize];
                let mut irq: Vec<Irq> = Vec::new();
                let Ok(mut port) = host.dma_port(v, &mut irq) else {
                    continue;
                };
                if write {
                    let ok = port.dma_write(Iova::new(a), &buf).is_ok();
                    update(&mut shadows[pick(vm)], a, &buf, ok);
                } else if port.dma_read(Iova::new(a), &mut buf).is_ok() {
                    check(&shadows[pick(vm)], a, &buf);
                }
            }
            Op::Service => {
                let _ = host.service_pending_faults();
            }
            Op::Inject { vm, data } => {
                host.inject(vms[pick(vm)].0, Irq(data)).unwrap();
            }
            Op::Ack { vm } => {
                let apic = host.lapic_mut(vms[pick(vm)].0).unwrap();
                if let Some(v) = apic.acknowledge() {
                    assert!(v >= 16, "illegal vector {v} delivered");
                }
            }
            Op::Eoi { vm } => {
                let _ = host.lapic_mut(vms[pick(vm)].0).unwrap().eoi();
            }
            Op::Lend { vm, gpa } => {
                let (v, size) = vms[pick(vm)];
                let gpa = addr(size, gpa);
                if let Ok(lent) = host.lend_page(v, Gpa::new(gpa)) {
                    pool.extend(lent);
                    // The page now reads as zeros.
                    zero_page(&mut shadows[pick(vm)], gpa);
                }
            }
            Op::Adopt { vm, gpa, frame } => {
                if pool.is_empty() {
                    continue;
                }
                let (v, size) = vms[pick(vm)];
                let gpa = addr(size, gpa);
                let f = pool.swap_remove(usize::from(frame) % pool.len());
                match host.adopt_frame(v, Gpa::new(gpa), f) {
                    Ok(displaced) => {
                        pool.extend(displaced);
                        // Pool frames are zeroed: the page reads as zeros.
                        zero_page(&mut shadows[pick(vm)], gpa);
                    }
                    Err(_) => pool.push(f),
                }
            }
            Op::Share {
                to_second,
                src,
                dst,
            } => {
                let (from, to) = if to_second { (0, 1) } else { (1, 0) };
                let ((a, sa), (b, sb)) = (vms[from], vms[to]);
                if host
                    .share_page(a, Gpa::new(addr(sa, src)), b, Gpa::new(addr(sb, dst)))
                    .is_ok()
                {
                    // The destination now aliases the source: stop checking it.
                    shadows[to].0 = None;
                }
            }
            Op::Unshare { vm, gpa } => {
                let (v, size) = vms[pick(vm)];
                let _ = host.unshare_page(v, Gpa::new(addr(size, gpa)));
            }
        }
        assert!(host.resident_frames() <= data_frames);
        // Each page is in at most one frame or swap slot; pool frames are
        // the host's.
        let vm_frames = host.resident_frames() - pool.len() as u64;
        assert!(vm_frames + host.swapped_pages() <= total_pages);
    }
});

/// The page holding `at` reads as zeros.
fn zero_page(shadow: &mut Shadow, at: u64) {
    let start = (at / PAGE * PAGE) as usize;
    if let Some(page) = shadow
        .0
        .as_mut()
        .and_then(|b| b.get_mut(start..start + PAGE as usize))
    {
        page.fill(0);
    }
}

fn update(shadow: &mut Shadow, at: u64, data: &[u8], ok: bool) {
    // An empty access moves nothing, wherever it points.
    let Some(bytes) = shadow.0.as_mut().filter(|_| !data.is_empty()) else {
        return;
    };
    let range = at as usize..(at as usize).saturating_add(data.len());
    let starts_inside = (at as usize) < bytes.len();
    match (ok, bytes.get_mut(range)) {
        (true, Some(dst)) => dst.copy_from_slice(data),
        (true, None) => panic!("a write past the VM's end succeeded at {at:#x}"),
        // Refused part way (a DMA faults page by page): the pages before
        // the fault may have landed.
        (false, _) if starts_inside => shadow.0 = None,
        (false, _) => {}
    }
}

fn check(shadow: &Shadow, at: u64, got: &[u8]) {
    if let Some(bytes) = shadow.0.as_ref().filter(|_| !got.is_empty()) {
        let want = bytes.get(at as usize..(at as usize).saturating_add(got.len()));
        assert!(
            want == Some(got),
            "the bytes at {at:#x} differ from what was written"
        );
    }
}

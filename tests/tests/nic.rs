//! End to end: two guests, each with an e1000 driver, each NIC behind the
//! IOMMU in its VM's domain; frames sent by one arrive byte-exact at the
//! other. And seed 000's driver-side claim: with RX buffers scattered and a
//! small IOTLB, the receive address prefetcher (NOP transmit commands) takes
//! the IOTLB misses off the receive path.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use iovirt_core::{
    BitmapFrameAllocator, Gpa, HostMemory, Hpa, Iova, Irq, MemError, MmioDevice, PhysMemory,
    RegisterAccess, Width, check_range,
};
use iovirt_drivers::{E1000Config, E1000Driver, GuestPageAllocator, Placement};
use iovirt_iommu::{
    ContextEntry, DmaRequest, DomainId, Iommu, IommuConfig, IotlbConfig, Replacement, RequesterId,
};
use iovirt_nic::{Nic, NicConfig, NicEnv, RxOutcome};
use iovirt_paging::{Levels, Mapping, PageTable, PagingConfig, PteFlags};

const MIB: u64 = 1 << 20;
/// Guest memory per VM.
const GUEST: u64 = 16 * MIB;

/// One VM's view of the platform: its NIC's registers and its own memory.
struct Guest<'h> {
    mem: &'h mut HostMemory,
    iommu: &'h mut Iommu,
    nic: &'h mut Nic,
    req: DmaRequest,
    /// Host address of guest-physical 0.
    base: u64,
    /// Frames the NIC transmitted.
    wire: &'h mut Vec<Vec<u8>>,
}

impl Guest<'_> {
    fn access(
        &mut self,
        f: impl FnOnce(
            &mut Nic,
            &mut NicEnv<
                '_,
                iovirt_iommu::IommuPort<'_, HostMemory, Vec<Irq>>,
                Vec<Irq>,
                dyn FnMut(&[u8]) + '_,
            >,
        ) -> u64,
    ) -> u64 {
        let Guest {
            mem,
            iommu,
            nic,
            req,
            wire,
            ..
        } = self;
        let (mut iommu_irqs, mut nic_irqs): (Vec<Irq>, Vec<Irq>) = (Vec::new(), Vec::new());
        let mut net = |frame: &[u8]| wire.push(frame.to_vec());
        let mut port = iommu.port(&mut **mem, &mut iommu_irqs, *req);
        let mut env = NicEnv {
            dma: &mut port,
            irq: &mut nic_irqs,
            net: &mut net as &mut dyn FnMut(&[u8]),
        };
        f(nic, &mut env)
    }
}

impl RegisterAccess for Guest<'_> {
    fn read(&mut self, offset: u64, width: Width) -> u64 {
        self.access(|nic, env| nic.mmio_read(offset, width, env))
    }

    fn write(&mut self, offset: u64, width: Width, value: u64) {
        self.access(|nic, env| {
            nic.mmio_write(offset, width, value, env);
            0
        });
    }
}

impl PhysMemory<Gpa> for Guest<'_> {
    fn size(&self) -> u64 {
        GUEST
    }

    fn read(&self, addr: Gpa, buf: &mut [u8]) -> Result<(), MemError> {
        check_range(addr, buf.len() as u64, GUEST)?;
        self.mem.read(Hpa::new(self.base + addr.raw()), buf)
    }

    fn write(&mut self, addr: Gpa, data: &[u8]) -> Result<(), MemError> {
        check_range(addr, data.len() as u64, GUEST)?;
        self.mem.write(Hpa::new(self.base + addr.raw()), data)
    }
}

/// The host: memory, one IOMMU, two NICs; VM `v` (0 or 1) lives at host
/// `16 MiB * (v + 1)`, and its NIC (requester 00:0v+2.0) is in domain v+1,
/// whose tables map IOVA = GPA onto that memory.
struct Host {
    mem: HostMemory,
    iommu: Iommu,
    /// Each VM's second-stage (IOMMU) tables.
    stage2: Vec<PageTable<Iova, Hpa>>,
    nics: [Nic; 2],
    wires: [Vec<Vec<u8>>; 2],
}

fn requester(v: usize) -> RequesterId {
    RequesterId::new(0, 2 + v as u8, 0).unwrap()
}

fn host(iotlb: IotlbConfig) -> Host {
    let mut mem = HostMemory::new(64 * MIB).unwrap();
    let mut frames = BitmapFrameAllocator::new(Hpa::new(0), 8 * MIB / 4096);
    let mut iommu = Iommu::new(IommuConfig {
        iotlb,
        ..IommuConfig::default()
    })
    .unwrap();
    let mut tables = Vec::new();
    for v in 0..2usize {
        let mut stage2 = PageTable::<Iova, Hpa>::new(
            &mut mem,
            &mut frames,
            PagingConfig::second_stage(Levels::Four),
        )
        .unwrap();
        let m = Mapping::new(
            Iova::new(0),
            Hpa::new(GUEST * (v as u64 + 1)),
            GUEST,
            PteFlags::RW,
        );
        stage2.map(&mut mem, &mut frames, m).unwrap();
        let domain = DomainId(v as u16 + 1);
        iommu.set_domain(domain, stage2.root(), Levels::Four);
        iommu.set_context(
            requester(v),
            ContextEntry::Translate {
                domain,
                pasid_enabled: false,
            },
        );
        tables.push(stage2);
    }
    let nic = |last: u8| {
        Nic::new(NicConfig {
            mac: [0x52, 0x54, 0, 0, 0, last],
            irq: Irq(u32::from(last)),
        })
    };
    Host {
        mem,
        iommu,
        stage2: tables,
        nics: [nic(1), nic(2)],
        wires: [Vec::new(), Vec::new()],
    }
}

impl Host {
    fn guest(&mut self, v: usize) -> Guest<'_> {
        let [a, b] = &mut self.nics;
        let [wa, wb] = &mut self.wires;
        let (nic, wire) = if v == 0 { (a, wa) } else { (b, wb) };
        Guest {
            mem: &mut self.mem,
            iommu: &mut self.iommu,
            nic,
            req: DmaRequest::new(requester(v)),
            base: GUEST * (v as u64 + 1),
            wire,
        }
    }

    /// Carries the frames VM `from`'s NIC sent into the other NIC.
    fn deliver(&mut self, from: usize) -> Vec<RxOutcome> {
        let frames = std::mem::take(&mut self.wires[from]);
        let mut g = self.guest(1 - from);
        frames
            .iter()
            .map(|f| {
                let f = f.clone();
                let out = std::cell::Cell::new(None);
                g.access(|nic, env| {
                    out.set(Some(nic.receive(&f, env)));
                    0
                });
                out.get().unwrap()
            })
            .collect()
    }
}

fn frame(dst: [u8; 6], src: [u8; 6], n: u32, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend((0..len - 14).map(|i| (i as u32).wrapping_mul(31).wrapping_add(n) as u8));
    f
}

#[test]
fn frames_cross_from_one_guest_to_the_other_byte_exact() {
    let mut h = host(IotlbConfig::default());
    let pages = |seed| GuestPageAllocator::new(Gpa::new(MIB), 2048, Placement::Random { seed });
    let (mut pa, mut pb) = (pages(1), pages(2));
    let mut da = E1000Driver::bring_up(&mut h.guest(0), &mut pa, E1000Config::default()).unwrap();
    let mut db = E1000Driver::bring_up(&mut h.guest(1), &mut pb, E1000Config::default()).unwrap();
    assert_eq!(da.mac(), [0x52, 0x54, 0, 0, 0, 1], "MAC read through EERD");
    let mut received: Vec<Vec<u8>> = Vec::new();
    let mut sent: Vec<Vec<u8>> = Vec::new();
    for n in 0..300u32 {
        let len = 60 + (n as usize * 37) % 1455;
        let f = frame(db.mac(), da.mac(), n, len);
        da.transmit(&mut h.guest(0), &f).unwrap();
        sent.push(f);
        let outcomes = h.deliver(0);
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, RxOutcome::Stored { .. })),
            "{outcomes:?}"
        );
        db.receive(&mut h.guest(1), |bytes| received.push(bytes.to_vec()))
            .unwrap();
    }
    assert_eq!(
        received, sent,
        "every frame arrived, in order, byte for byte"
    );
    assert_eq!(da.stats().tx_frames.get(), 300);
    assert_eq!(db.stats().rx_frames.get(), 300);
    assert_eq!(h.nics[0].stats().tx_frames.get(), 300);
    assert_eq!(h.nics[1].stats().rx_frames.get(), 300);
    assert_eq!(
        h.nics[1].stats().rx_bytes.get(),
        sent.iter().map(|f| f.len() as u64).sum::<u64>()
    );
    assert_eq!(h.iommu.faults().len(), 0, "no DMA faulted");
    // A frame to another address is filtered by B's NIC.
    da.transmit(
        &mut h.guest(0),
        &frame([0x52, 0x54, 0, 0, 0, 9], da.mac(), 0, 64),
    )
    .unwrap();
    assert_eq!(h.deliver(0), [RxOutcome::Filtered]);
}

/// Critical-path IOTLB misses per received frame at VM B, with its RX
/// buffers scattered and an 8-entry IOTLB.
fn rx_misses_per_frame(rx_prefetch: bool) -> f64 {
    let mut h = host(IotlbConfig {
        entries: 8,
        ways: 0,
        replacement: Replacement::Lru,
    });
    let mut pa = GuestPageAllocator::new(Gpa::new(MIB), 2048, Placement::Contiguous);
    let mut pb = GuestPageAllocator::new(Gpa::new(MIB), 3000, Placement::Random { seed: 99 });
    let mut da = E1000Driver::bring_up(&mut h.guest(0), &mut pa, E1000Config::default()).unwrap();
    let config = E1000Config {
        rx_prefetch,
        ..E1000Config::default()
    };
    let mut db = E1000Driver::bring_up(&mut h.guest(1), &mut pb, config).unwrap();
    let frames = 200u32;
    let mut got = 0;
    for n in 0..frames {
        da.transmit(&mut h.guest(0), &frame(db.mac(), da.mac(), n, 512))
            .unwrap();
        h.deliver(0);
        got += db.receive(&mut h.guest(1), |_| {}).unwrap();
    }
    assert_eq!(got, frames);
    if rx_prefetch {
        assert_eq!(db.stats().nop_prefetches.get(), 2 * u64::from(frames));
        assert_eq!(h.nics[1].stats().nop_commands.get(), 2 * u64::from(frames));
        assert!(h.wires[1].is_empty(), "NOP commands send nothing");
    }
    h.nics[1].stats().rx_critical_iotlb_misses.get() as f64 / f64::from(frames)
}

#[test]
fn driver_side_prefetch_takes_misses_off_the_receive_path() {
    let without = rx_misses_per_frame(false);
    let with = rx_misses_per_frame(true);
    assert!(
        without >= 1.0,
        "without prefetch: {without} misses per frame"
    );
    assert!(with <= 0.05, "with prefetch: {with} misses per frame");
}

/// Distinct page-table pages the IOMMU walks to translate every TX copy
/// buffer of a driver whose pages are scattered at random.
fn tx_buffer_table_pages(contiguous: bool) -> usize {
    let mut h = host(IotlbConfig::default());
    let mut pages = GuestPageAllocator::new(Gpa::new(MIB), 3000, Placement::Random { seed: 5 });
    let config = E1000Config {
        contiguous_tx_buffers: contiguous,
        ..E1000Config::default()
    };
    let d = E1000Driver::bring_up(&mut h.guest(0), &mut pages, config).unwrap();
    let mut tables = std::collections::BTreeSet::new();
    for &b in d.tx_buffers() {
        tables.extend(
            h.stage2[0]
                .table_pages(&h.mem, Iova::new(b.raw()), 4096)
                .unwrap(),
        );
    }
    tables.len()
}

#[test]
fn contiguous_tx_buffers_need_fewer_table_pages() {
    let scattered = tx_buffer_table_pages(false);
    let packed = tx_buffer_table_pages(true);
    // 64 pages packed: the PML4, PDPT and PD pages plus one or two page tables.
    assert!(packed <= 5, "packed: {packed} table pages");
    // Scattered over 12 MiB: a page table for each 2 MiB they touch.
    assert!(
        scattered >= packed + 3,
        "scattered: {scattered}, packed: {packed}"
    );
}

#[test]
fn applications_send_from_driver_buffers_without_a_copy() {
    let mut h = host(IotlbConfig::default());
    let pages = |seed| GuestPageAllocator::new(Gpa::new(MIB), 2048, Placement::Random { seed });
    let (mut pa, mut pb) = (pages(3), pages(4));
    let config = E1000Config {
        app_tx_buffers: 4,
        ..E1000Config::default()
    };
    let mut da = E1000Driver::bring_up(&mut h.guest(0), &mut pa, config).unwrap();
    let mut db = E1000Driver::bring_up(&mut h.guest(1), &mut pb, E1000Config::default()).unwrap();
    let bufs: Vec<Gpa> = std::iter::from_fn(|| da.alloc_app_buffer()).collect();
    assert_eq!(bufs.len(), 4);
    assert!(
        bufs.windows(2).all(|w| w[1].raw() == w[0].raw() + 4096),
        "one contiguous region"
    );
    let mut sent = Vec::new();
    for (n, &b) in bufs.iter().enumerate() {
        let f = frame(db.mac(), da.mac(), n as u32, 200 + n * 100);
        PhysMemory::write(&mut h.guest(0), b, &f).unwrap();
        da.transmit_from(&mut h.guest(0), b, f.len() as u16)
            .unwrap();
        sent.push(f);
    }
    h.deliver(0);
    let mut got = Vec::new();
    db.receive(&mut h.guest(1), |f| got.push(f.to_vec()))
        .unwrap();
    assert_eq!(got, sent);
    assert!(da.free_app_buffer(bufs[0]));
    assert!(!da.free_app_buffer(bufs[0]), "double free refused");
    assert!(
        !da.free_app_buffer(Gpa::new(0x1000)),
        "not an application buffer"
    );
    assert!(
        da.transmit_from(&mut h.guest(0), Gpa::new(0x1000), 64)
            .is_err()
    );
}

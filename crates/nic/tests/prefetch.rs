//! Seed 000's claim, device side: with buffers scattered over memory and a
//! small IOTLB, every frame takes IOTLB misses on its critical path (the
//! DMAs that move it); the device-side prefetchers move those misses into
//! the idle time after the previous frame, so the critical path hits.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use iovirt_core::{
    BitmapFrameAllocator, HostMemory, Hpa, Iova, Irq, MmioDevice, PhysMemory, TimerQueue, Width,
};
use iovirt_iommu::{
    ContextEntry, DmaRequest, DomainId, Iommu, IommuConfig, IommuPort, IotlbConfig, Replacement,
    RequesterId,
};
use iovirt_nic::{BufferTouch, Nic, NicConfig, NicEnv, Prefetchers, regs};
use iovirt_paging::{Levels, Mapping, PageTable, PagingConfig, PteFlags};

const MIB: u64 = 1 << 20;
/// Descriptors per ring.
const RING: u64 = 32;
/// Frames per run.
const FRAMES: u64 = 200;
/// IOVA of the RX ring, the TX ring, and the first buffer page.
const RX_RING: u64 = 0x10_0000;
const TX_RING: u64 = 0x10_1000;

struct Rig {
    mem: HostMemory,
    iommu: Iommu,
    nic: Nic,
    req: DmaRequest,
    /// IOVA of each descriptor's buffer, one page each, scattered.
    buffers: Vec<u64>,
}

/// A NIC behind an IOMMU with an 8-entry IOTLB; the rings and 32 buffers,
/// each in its own page, spread over 64 MiB of I/O-virtual space in a
/// scrambled order (the seed's "substantially random arrangement").
fn rig(prefetchers: Prefetchers) -> Rig {
    let mut mem = HostMemory::new(128 * MIB).unwrap();
    let mut frames = BitmapFrameAllocator::new(Hpa::new(0), 4 * MIB / 4096);
    let mut stage2 = PageTable::<Iova, Hpa>::new(
        &mut mem,
        &mut frames,
        PagingConfig::second_stage(Levels::Four),
    )
    .unwrap();
    let mut map = |iova: u64, mem: &mut HostMemory| {
        let m = Mapping::new(
            Iova::new(iova),
            Hpa::new(iova + 32 * MIB),
            4096,
            PteFlags::RW,
        );
        stage2.map(mem, &mut frames, m).unwrap();
    };
    map(RX_RING, &mut mem);
    map(TX_RING, &mut mem);
    // Page i of 16384 (64 MiB), in an order no cache line or IOTLB set likes.
    let buffers: Vec<u64> = (0..RING)
        .map(|i| 0x100_0000 + ((i * 7919) % 16384) * 4096)
        .collect();
    for &b in &buffers {
        map(b, &mut mem);
    }
    let config = IommuConfig {
        iotlb: IotlbConfig {
            entries: 8,
            ways: 0,
            replacement: Replacement::Lru,
        },
        ..IommuConfig::default()
    };
    let mut iommu = Iommu::new(config).unwrap();
    iommu.set_domain(DomainId(1), stage2.root(), Levels::Four);
    let rid = RequesterId::new(0, 2, 0).unwrap();
    iommu.set_context(
        rid,
        ContextEntry::Translate {
            domain: DomainId(1),
            pasid_enabled: false,
        },
    );
    let mut nic = Nic::new(NicConfig {
        mac: [2, 0, 0, 0, 0, 1],
        irq: Irq(1),
    });
    nic.set_prefetchers(prefetchers);
    Rig {
        mem,
        iommu,
        nic,
        req: DmaRequest::new(rid),
        buffers,
    }
}

impl Rig {
    fn hpa(iova: u64) -> Hpa {
        Hpa::new(iova + 32 * MIB)
    }

    /// Runs `f` on the NIC with an environment whose frames go to `net`
    /// (the tests look at counters, not at interrupts or timers, so those
    /// are thrown away).
    fn with_env<R>(
        &mut self,
        net: &mut dyn FnMut(&[u8]),
        f: impl FnOnce(
            &mut Nic,
            &mut NicEnv<
                '_,
                IommuPort<'_, HostMemory, Vec<Irq>>,
                Vec<Irq>,
                dyn FnMut(&[u8]) + '_,
                TimerQueue,
            >,
        ) -> R,
    ) -> R {
        let (mut iommu_irqs, mut nic_irqs): (Vec<Irq>, Vec<Irq>) = (Vec::new(), Vec::new());
        let mut timers = TimerQueue::new();
        let mut port = self.iommu.port(&mut self.mem, &mut iommu_irqs, self.req);
        let mut env = NicEnv {
            dma: &mut port,
            irq: &mut nic_irqs,
            net,
            timers: &mut timers,
        };
        f(&mut self.nic, &mut env)
    }

    /// A register write by the driver.
    fn write_reg(&mut self, reg: u64, value: u32) {
        self.with_env(&mut |_| {}, |nic, env| {
            nic.mmio_write(reg, Width::U32, u64::from(value), env)
        });
    }
}

/// Receives `FRAMES` frames, the driver handing each descriptor back right
/// after the frame: returns critical-path IOTLB misses per frame.
fn rx_misses(prefetchers: Prefetchers) -> (f64, u64) {
    let mut r = rig(prefetchers);
    for (i, &b) in r.buffers.clone().iter().enumerate() {
        r.mem
            .write_u64(Rig::hpa(RX_RING + i as u64 * 16), b)
            .unwrap();
    }
    for (reg, value) in [
        (regs::RDBAL, RX_RING as u32),
        (regs::RDLEN, (RING * 16) as u32),
        (regs::RDH, 0),
        (regs::RDT, (RING - 1) as u32),
        (regs::RCTL, (regs::Rctl::EN | regs::Rctl::BAM).bits()),
    ] {
        r.write_reg(reg, value);
    }
    let frame = [0xffu8; 1000];
    let mut tail = RING - 1;
    for _ in 0..FRAMES {
        let outcome = r.with_env(&mut |_| {}, |nic, env| nic.receive(&frame, env));
        assert!(
            matches!(outcome, iovirt_nic::RxOutcome::Stored { .. }),
            "{outcome:?}"
        );
        // The driver consumes the frame and gives the descriptor back.
        tail = (tail + 1) % RING;
        r.write_reg(regs::RDT, tail as u32);
    }
    let s = r.nic.stats();
    assert_eq!(s.rx_frames.get(), FRAMES);
    (
        s.critical_iotlb_misses.get() as f64 / FRAMES as f64,
        s.prefetch_iotlb_misses.get(),
    )
}

/// Transmits `FRAMES` frames from the driver's fixed copy buffers (one per
/// descriptor): returns critical-path IOTLB misses per frame.
fn tx_misses(prefetchers: Prefetchers) -> (f64, u64) {
    let mut r = rig(prefetchers);
    for (i, &b) in r.buffers.clone().iter().enumerate() {
        r.mem
            .write_u64(Rig::hpa(TX_RING + i as u64 * 16), b)
            .unwrap();
        // Length 1000, EOP | RS.
        r.mem
            .write_u32(Rig::hpa(TX_RING + i as u64 * 16 + 8), 1000 | (0x09 << 24))
            .unwrap();
    }
    for (reg, value) in [
        (regs::TDBAL, TX_RING as u32),
        (regs::TDLEN, (RING * 16) as u32),
        (regs::TCTL, regs::Tctl::EN.bits()),
    ] {
        r.write_reg(reg, value);
    }
    let mut sent = 0u64;
    for i in 1..=FRAMES {
        let mut net = |f: &[u8]| {
            assert_eq!(f.len(), 1000);
            sent += 1;
        };
        r.with_env(&mut net, |nic, env| {
            nic.mmio_write(regs::TDT, Width::U32, i % RING, env)
        });
    }
    assert_eq!(sent, FRAMES);
    let s = r.nic.stats();
    (
        s.critical_iotlb_misses.get() as f64 / FRAMES as f64,
        s.prefetch_iotlb_misses.get(),
    )
}

#[test]
fn rx_prefetchers_take_the_misses_off_the_critical_path() {
    let (baseline, _) = rx_misses(Prefetchers::default());
    let (descriptor_only, _) = rx_misses(Prefetchers {
        rx_descriptor: true,
        ..Prefetchers::default()
    });
    let (both, moved) = rx_misses(Prefetchers {
        rx_buffer: Some(BufferTouch::Read),
        ..Prefetchers::default()
    });
    let (null_write, _) = rx_misses(Prefetchers {
        rx_buffer: Some(BufferTouch::NullWrite),
        ..Prefetchers::default()
    });
    // Without prefetching each frame misses on its buffer's page.
    assert!(baseline >= 1.0, "baseline {baseline}");
    assert!(descriptor_only <= baseline);
    // With the buffer prefetcher the critical path all but never misses:
    // only the very first frame's buffer is cold.
    assert!(both <= 0.02, "with prefetch {both}");
    assert!(null_write <= 0.02, "null-write prefetch {null_write}");
    assert!(
        moved as f64 >= (baseline - both) * FRAMES as f64 * 0.9,
        "the misses moved to prefetches"
    );
}

#[test]
fn tx_prefetchers_take_the_misses_off_the_critical_path() {
    let (baseline, _) = tx_misses(Prefetchers::default());
    let (both, moved) = tx_misses(Prefetchers {
        tx_descriptor: true,
        tx_buffer: true,
        ..Prefetchers::default()
    });
    assert!(baseline >= 1.0, "baseline {baseline}");
    assert!(both <= 0.02, "with prefetch {both}");
    assert!(moved > 0);
}

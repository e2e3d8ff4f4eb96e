//! The `iotlb-prefetch` scenario (seed 000): VM A sends frames to VM B; B's
//! receive buffers are scattered at random or packed, its IOTLB small or
//! large, and seed 000's prefetchers off, on the device side, on the driver
//! side, or both. The headline figure is the IOTLB misses on B's receive
//! critical path per frame; the technique should bring it from 1 or more to
//! about 0 on the same traffic.

use iovirt_core::{Cost, CostModel, Gpa, RegisterAccess, SimDuration, SimTime};
use iovirt_drivers::{E1000Config, E1000Driver, GuestPageAllocator, Placement};
use iovirt_iommu::{IotlbConfig, Replacement};
use iovirt_nic::{BufferTouch, Prefetchers, regs};
use serde::{Deserialize, Serialize};

use crate::config::{check_frames, check_interrupts};
use crate::link::LinkConfig;
use crate::platform::{MIB, PlatformError, TwoGuests, frame};

/// Which of seed 000's prefetchers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PrefetchMode {
    /// None: the baseline.
    Off,
    /// The NIC's RX descriptor and buffer prefetchers.
    Device,
    /// The driver's receive address prefetcher (NOP transmit commands).
    Driver,
    /// Both.
    Both,
}

impl PrefetchMode {
    /// Every mode, baseline first.
    pub const ALL: [PrefetchMode; 4] = [
        PrefetchMode::Off,
        PrefetchMode::Device,
        PrefetchMode::Driver,
        PrefetchMode::Both,
    ];
}

/// Where B's receive buffers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BufferPlacement {
    /// One page each, scattered at random over 12 MiB.
    Random,
    /// One page each, consecutive.
    Contiguous,
}

pub use crate::platform::Pacing;

/// The scenario's parameters (the `[iotlb_prefetch]` table of a config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// Frames per run.
    pub frames: u32,
    /// Frame length in bytes.
    pub frame_len: usize,
    /// IOTLB sizes to try (fully associative, LRU).
    pub iotlb_entries: Vec<usize>,
    /// Lock-step or line-rate traffic.
    pub pacing: Pacing,
    /// Line rate: from a NIC's interrupt to its driver's handler, ns.
    pub irq_latency_ns: u64,
    /// Line rate: B's ITR register (interrupts at least `itr` x 256 ns
    /// apart; 0 for none).
    pub itr: u32,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            frames: 2000,
            frame_len: 512,
            iotlb_entries: vec![8, 64, 512],
            pacing: Pacing::Lockstep,
            irq_latency_ns: 2_000,
            itr: 0,
        }
    }
}

/// One run's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Prefetchers.
    pub prefetch: PrefetchMode,
    /// Buffer placement.
    pub placement: BufferPlacement,
    /// IOTLB entries.
    pub iotlb_entries: usize,
    /// Frames received.
    pub frames: u64,
    /// Headline: IOTLB misses on the receive critical path, per frame.
    pub critical_misses_per_frame: f64,
    /// Page-table entries read on the receive critical path, per frame.
    pub table_reads_per_frame: f64,
    /// Virtual time the receive DMAs spend translating, per frame (ns).
    pub translation_ns_per_frame: f64,
    /// Prefetch DMAs per frame (device side and NOP commands).
    pub prefetches_per_frame: f64,
}

/// Runs every combination of prefetch mode, placement and IOTLB size.
pub fn run(params: &Params, cost: &CostModel, seed: u64) -> Result<Vec<Row>, PlatformError> {
    run_tapped(params, cost, seed, &mut |_, _| {})
}

/// Like [`run`], showing every frame on the wire to `tap`, in order.
pub fn run_tapped(
    params: &Params,
    cost: &CostModel,
    seed: u64,
    tap: &mut dyn FnMut(SimTime, &[u8]),
) -> Result<Vec<Row>, PlatformError> {
    let mut rows = Vec::new();
    for &entries in &params.iotlb_entries {
        for placement in [BufferPlacement::Random, BufferPlacement::Contiguous] {
            for mode in PrefetchMode::ALL {
                rows.push(run_one(params, cost, seed, mode, placement, entries, tap)?);
            }
        }
    }
    Ok(rows)
}

fn run_one(
    params: &Params,
    cost: &CostModel,
    seed: u64,
    mode: PrefetchMode,
    placement: BufferPlacement,
    entries: usize,
    tap: &mut dyn FnMut(SimTime, &[u8]),
) -> Result<Row, PlatformError> {
    let mut h = TwoGuests::new(IotlbConfig {
        entries,
        ways: 0,
        replacement: Replacement::Lru,
    })?;
    h.set_links(LinkConfig::from_cost(cost, 1024));
    let mut pa = GuestPageAllocator::new(Gpa::new(MIB), 2048, Placement::Contiguous);
    let pb_placement = match placement {
        BufferPlacement::Random => Placement::Random { seed },
        BufferPlacement::Contiguous => Placement::Contiguous,
    };
    let mut pb = GuestPageAllocator::new(Gpa::new(MIB), 3000, pb_placement);
    let driver_prefetch = matches!(mode, PrefetchMode::Driver | PrefetchMode::Both);
    let device_prefetch = matches!(mode, PrefetchMode::Device | PrefetchMode::Both);
    let mut da = E1000Driver::bring_up(&mut h.guest(0), &mut pa, E1000Config::default())
        .map_err(PlatformError::Driver)?;
    let config = E1000Config {
        rx_prefetch: driver_prefetch,
        ..E1000Config::default()
    };
    let mut db =
        E1000Driver::bring_up(&mut h.guest(1), &mut pb, config).map_err(PlatformError::Driver)?;
    if device_prefetch {
        h.nics[1].set_prefetchers(Prefetchers {
            rx_descriptor: true,
            rx_buffer: Some(BufferTouch::Read),
            ..Prefetchers::default()
        });
    }
    let (src, dst) = (da.mac(), db.mac());
    let mut received = 0u64;
    match params.pacing {
        Pacing::Lockstep => {
            for n in 0..params.frames {
                let f = frame(dst, src, n, params.frame_len);
                // A full TX ring means B has not caught up: deliver and
                // retry once.
                if da.transmit(&mut h.guest(0), &f).is_err() {
                    h.deliver_tapped(0, tap, |_| {});
                    let _ = db.receive(&mut h.guest(1), |_| received += 1);
                    da.transmit(&mut h.guest(0), &f)
                        .map_err(|_| PlatformError::Stalled)?;
                }
                h.deliver_tapped(0, tap, |_| {});
                db.receive(&mut h.guest(1), |_| received += 1)
                    .map_err(PlatformError::Guest)?;
            }
        }
        Pacing::LineRate => {
            h.guest(1).write32(regs::ITR, params.itr);
            let gap = LinkConfig::from_cost(cost, 1024).serialization(params.frame_len);
            let latency = SimDuration::from_nanos(params.irq_latency_ns);
            let mut g = Handlers {
                a: da,
                b: db,
                received: 0,
                failed: None,
            };
            for n in 0..params.frames {
                let f = frame(dst, src, n, params.frame_len);
                // A's ring full: wait a frame time at a time for its reclaim.
                for _ in 0..1024 {
                    if g.a.transmit(&mut h.guest(0), &f).is_ok() {
                        break;
                    }
                    let next = h.now + gap;
                    h.run_tapped_until(next, latency, &mut |h, v| g.on_interrupt(h, v), tap);
                }
                let next = h.now + gap;
                h.run_tapped_until(next, latency, &mut |h, v| g.on_interrupt(h, v), tap);
            }
            // Let the last frames arrive and be handled.
            let end = h.now + SimDuration::from_micros(1_000);
            h.run_tapped_until(end, latency, &mut |h, v| g.on_interrupt(h, v), tap);
            if let Some(err) = g.failed {
                return Err(PlatformError::Guest(err));
            }
            received = g.received;
        }
    }
    let s = h.nics[1].stats();
    let frames = received.max(1) as f64;
    let rx_cost = Cost {
        iotlb_hits: u32::try_from(s.rx_critical_iotlb_hits.get()).unwrap_or(u32::MAX),
        iotlb_misses: u32::try_from(s.rx_critical_iotlb_misses.get()).unwrap_or(u32::MAX),
        table_reads: u32::try_from(s.rx_critical_table_reads.get()).unwrap_or(u32::MAX),
        bytes: 0,
    };
    let prefetches = s.prefetches.get() + s.nop_commands.get();
    Ok(Row {
        prefetch: mode,
        placement,
        iotlb_entries: entries,
        frames: received,
        critical_misses_per_frame: s.rx_critical_iotlb_misses.get() as f64 / frames,
        table_reads_per_frame: s.rx_critical_table_reads.get() as f64 / frames,
        translation_ns_per_frame: cost.time(&rx_cost).as_nanos() as f64 / frames,
        prefetches_per_frame: prefetches as f64 / frames,
    })
}

/// The two drivers as interrupt handlers (line-rate pacing).
struct Handlers {
    a: E1000Driver,
    b: E1000Driver,
    received: u64,
    failed: Option<iovirt_core::MemError>,
}

impl Handlers {
    /// VM `v`'s interrupt: B receives, A reclaims its transmit descriptors.
    fn on_interrupt(&mut self, h: &mut TwoGuests, v: usize) {
        let r = if v == 1 {
            let received = &mut self.received;
            self.b.handle_interrupt(&mut h.guest(1), |_| *received += 1)
        } else {
            self.a.handle_interrupt(&mut h.guest(0), |_| {})
        };
        if let Err(err) = r {
            self.failed.get_or_insert(err);
        }
    }
}

impl Params {
    /// Checks the values, naming the first bad field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        check_frames(self.frames)?;
        if !(60..=1514).contains(&self.frame_len) {
            return Err((
                "frame_len",
                format!(
                    "{} is not an Ethernet frame length (60..=1514)",
                    self.frame_len
                ),
            ));
        }
        if self.iotlb_entries.is_empty() || self.iotlb_entries.len() > 16 {
            return Err(("iotlb_entries", "give 1 to 16 sizes".to_owned()));
        }
        if let Some(bad) = self.iotlb_entries.iter().find(|&&e| e > 65_536) {
            return Err(("iotlb_entries", format!("{bad} entries is more than 65536")));
        }
        check_interrupts(self.irq_latency_ns, self.itr)?;
        Ok(())
    }
}

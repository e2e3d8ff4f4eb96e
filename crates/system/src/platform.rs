//! Two VMs on one host, each with an e1000-style NIC behind the IOMMU in
//! its own domain, joined by a cable (a [`Link`] each way, in virtual time); each VM sees its NIC's registers and
//! its own guest-physical memory, as its driver must.

use iovirt_core::{
    BadMemorySize, BitmapFrameAllocator, CostModel, EventQueue, Gpa, HostMemory, Hpa,
    InterruptSink, Iova, Irq, MemError, MmioDevice, NetworkPort, PhysMemory, RegisterAccess,
    SimDuration, SimTime, TimerQueue, Width, check_range,
};
use iovirt_iommu::{
    BadIotlbConfig, ContextEntry, DmaRequest, DomainId, Iommu, IommuConfig, IommuPort, IotlbConfig,
    RequesterId,
};
use iovirt_nic::{Nic, NicConfig, NicEnv, RxOutcome};
use iovirt_paging::{Levels, MapError, Mapping, PageTable, PagingConfig, PteFlags};

use crate::link::{Link, LinkConfig};

/// One MiB.
pub const MIB: u64 = 1 << 20;
/// Guest-physical memory per VM.
pub const GUEST: u64 = 16 * MIB;

/// Counts interrupts without storing them (the drivers poll), so the hot
/// path allocates nothing.
#[derive(Debug, Default)]
pub struct IrqCount(pub u64);

impl InterruptSink for IrqCount {
    fn raise(&mut self, _irq: Irq) {
        self.0 += 1;
    }
}

/// The environment a guest's NIC runs in for one call.
pub type GuestEnv<'a> =
    NicEnv<'a, IommuPort<'a, HostMemory, IrqCount>, IrqCount, LinkPort<'a>, TimerQueue>;

/// Where a guest's NIC transmits: its outbound link, at the platform's
/// time. A concrete port rather than a closure behind `dyn`, so the
/// transmit engine calls the link directly.
pub struct LinkPort<'a> {
    wire: &'a mut Link,
    now: SimTime,
}

impl NetworkPort for LinkPort<'_> {
    /// A full link drops the frame (counted in the link's stats).
    fn send(&mut self, frame: &[u8]) {
        let _ = self.wire.send(self.now, frame);
    }
}

/// One VM's view of the platform: its NIC's registers and its own memory.
pub struct Guest<'h> {
    mem: &'h mut HostMemory,
    iommu: &'h mut Iommu,
    nic: &'h mut Nic,
    req: DmaRequest,
    /// Host address of guest-physical 0.
    base: u64,
    wire: &'h mut Link,
    now: SimTime,
    timers: &'h mut TimerQueue,
    irqs: &'h mut IrqCount,
}

impl Guest<'_> {
    /// Runs `f` on the NIC with its environment: DMA through the IOMMU,
    /// frames onto the wire, interrupts dropped (the drivers poll).
    pub fn with_nic<R>(&mut self, f: impl FnOnce(&mut Nic, &mut GuestEnv<'_>) -> R) -> R {
        let Guest {
            mem,
            iommu,
            nic,
            req,
            wire,
            now,
            timers,
            irqs,
            ..
        } = self;
        let mut iommu_irqs = IrqCount::default();
        let mut net = LinkPort { wire, now: *now };
        let mut port = iommu.port(&mut **mem, &mut iommu_irqs, *req);
        let mut env = NicEnv {
            timers: &mut **timers,
            dma: &mut port,
            irq: &mut **irqs,
            net: &mut net,
        };
        f(nic, &mut env)
    }
}

impl RegisterAccess for Guest<'_> {
    fn read(&mut self, offset: u64, width: Width) -> u64 {
        self.with_nic(|nic, env| nic.mmio_read(offset, width, env))
    }

    fn write(&mut self, offset: u64, width: Width, value: u64) {
        self.with_nic(|nic, env| nic.mmio_write(offset, width, value, env));
    }
}

impl PhysMemory<Gpa> for Guest<'_> {
    fn size(&self) -> u64 {
        GUEST
    }

    fn read(&self, addr: Gpa, buf: &mut [u8]) -> Result<(), MemError> {
        if !in_guest(addr, buf.len()) {
            check_range(addr, buf.len() as u64, GUEST)?;
        }
        self.mem.read(Hpa::new(self.base + addr.raw()), buf)
    }

    fn write(&mut self, addr: Gpa, data: &[u8]) -> Result<(), MemError> {
        if !in_guest(addr, data.len()) {
            check_range(addr, data.len() as u64, GUEST)?;
        }
        self.mem.write(Hpa::new(self.base + addr.raw()), data)
    }
}

/// Whether `len` bytes at `addr` lie in a guest's memory: `check_range`'s
/// test without its overflow check, so a driver's constant-length access
/// (a descriptor, a status byte) costs one compare. Out of range,
/// `check_range` gives the error.
#[inline(always)]
fn in_guest(addr: Gpa, len: usize) -> bool {
    let len = len as u64;
    len <= GUEST && addr.raw() <= GUEST - len
}

/// The host: memory, one IOMMU, two NICs. VM `v` (0 or 1) lives at host
/// `16 MiB * (v + 1)`; its NIC (requester 00:0v+2.0) is in domain v+1, whose
/// tables map IOVA = GPA onto that memory with 4 KiB pages.
pub struct TwoGuests {
    /// Host memory.
    pub mem: HostMemory,
    /// The IOMMU both NICs sit behind.
    pub iommu: Iommu,
    /// Each VM's second-stage (IOMMU) tables.
    pub stage2: Vec<PageTable<Iova, Hpa>>,
    /// The two NICs.
    pub nics: [Nic; 2],
    /// The cable between the NICs, one link each way: frames each NIC
    /// transmitted, not yet delivered.
    pub links: [Link; 2],
    /// Virtual time: a guest transmits now; a frame is received at its
    /// arrival.
    pub now: SimTime,
    /// Each NIC's timers (interrupt moderation; off by default).
    pub timers: [TimerQueue; 2],
    /// Interrupts each NIC has raised.
    pub irqs: [IrqCount; 2],
    /// Interrupts raised and not yet delivered to their VM's handler.
    pub pending: EventQueue<usize>,
}

/// How a scenario's traffic is paced and its guests receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pacing {
    /// Each frame is sent once the one before has been taken in, and the
    /// receiving drivers poll.
    Lockstep,
    /// Frames are sent at the link's line rate, and the receiving drivers
    /// take them only in their interrupt handlers, an interrupt latency
    /// after the interrupt (the discrete-event loop).
    LineRate,
}

/// What became of the frames a run sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Delivery {
    /// Frames the guests received (a broadcast counts once per receiver).
    pub frames: u64,
    /// Frames received with other bytes than were sent (must be 0).
    pub corrupted: u64,
    /// Frames sent and never received: dropped for want of buffers, or
    /// refused by a full transmit ring (line rate only).
    pub lost: u64,
    /// Line rate: mean time from a frame's send to the receiving guest's
    /// handler taking it, ns (0 in lock-step).
    pub latency_ns_mean: f64,
    /// Line rate: the longest such time, ns.
    pub latency_ns_max: u64,
}

/// Frames received, checked against what was sent.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) frames: u64,
    pub(crate) corrupted: u64,
    pub(crate) lost: u64,
    /// When each frame in flight was sent (line rate), by its bytes.
    sent_at: std::collections::HashMap<Vec<u8>, SimTime>,
    /// Frames whose latency was measured, and its sum and maximum, ns.
    timed: u64,
    latency_sum_ns: u64,
    latency_max_ns: u64,
}

impl Tally {
    /// Runs `sim` until `until`, checking every frame its guests receive
    /// against what was sent to each (`expected`, by guest).
    pub(crate) fn run(
        &mut self,
        sim: &mut crate::host_sim::HostSim,
        until: SimTime,
        expected: &mut [std::collections::VecDeque<Vec<u8>>],
        tap: &mut dyn FnMut(SimTime, &[u8]),
    ) -> Result<(), PlatformError> {
        sim.run_until(
            until,
            &mut |g, t, got| {
                self.check_at(expected, g, got);
                if let Some(sent) = self.sent_at.remove(got) {
                    let ns = (t - sent).as_nanos();
                    self.timed += 1;
                    self.latency_sum_ns = self.latency_sum_ns.saturating_add(ns);
                    self.latency_max_ns = self.latency_max_ns.max(ns);
                }
            },
            tap,
        )
    }

    /// Frame `f` was sent at `at`: its latency is measured when a guest
    /// receives it.
    pub(crate) fn sent(&mut self, at: SimTime, f: &[u8]) {
        self.sent_at.insert(f.to_vec(), at);
    }

    /// The run's figures so far.
    pub(crate) fn delivery(&self) -> Delivery {
        Delivery {
            frames: self.frames,
            corrupted: self.corrupted,
            lost: self.lost,
            latency_ns_mean: if self.timed == 0 {
                0.0
            } else {
                self.latency_sum_ns as f64 / self.timed as f64
            },
            latency_ns_max: self.latency_max_ns,
        }
    }

    /// Lets the last frames arrive and be handled (1 ms), then counts what
    /// never arrived as lost.
    pub(crate) fn finish(
        &mut self,
        sim: &mut crate::host_sim::HostSim,
        expected: &mut [std::collections::VecDeque<Vec<u8>>],
        tap: &mut dyn FnMut(SimTime, &[u8]),
    ) -> Result<(), PlatformError> {
        let end = sim.now + SimDuration::from_micros(1_000);
        self.run(sim, end, expected, tap)?;
        self.settle(expected);
        Ok(())
    }

    /// Every guest's driver receives what is waiting (a polling pass), each
    /// frame checked against what was sent to it.
    pub(crate) fn poll(
        &mut self,
        host: &mut iovirt_vmm::Host,
        net: &mut iovirt_vmm::Network,
        guests: &mut [crate::host_sim::SimGuest],
        expected: &mut [std::collections::VecDeque<Vec<u8>>],
    ) -> Result<(), PlatformError> {
        for (g, q) in guests.iter_mut().zip(expected) {
            g.driver
                .receive(&mut net.guest(host, g.vm), |got| self.check(q, got))
                .map_err(PlatformError::Guest)?;
        }
        Ok(())
    }

    /// Counts every frame still expected as lost.
    pub(crate) fn settle(&mut self, expected: &mut [std::collections::VecDeque<Vec<u8>>]) {
        self.sent_at.clear();
        for q in expected {
            self.lost += q.len() as u64;
            q.clear();
        }
    }

    /// [`Tally::check`] against guest `g`'s queue.
    pub(crate) fn check_at(
        &mut self,
        expected: &mut [std::collections::VecDeque<Vec<u8>>],
        g: usize,
        got: &[u8],
    ) {
        if let Some(q) = expected.get_mut(g) {
            self.check(q, got);
        }
    }

    /// `got` arrived where `expected` were sent, in order: frames before
    /// the one it matches were lost; one that matches none is corrupted.
    pub(crate) fn check(&mut self, expected: &mut std::collections::VecDeque<Vec<u8>>, got: &[u8]) {
        self.frames += 1;
        match expected.iter().position(|e| e == got) {
            Some(k) => {
                self.lost += k as u64;
                expected.drain(..=k);
            }
            None => self.corrupted += 1,
        }
    }
}

/// The requester id of VM `v`'s NIC: 00:0(v+2).0.
pub fn requester(v: usize) -> RequesterId {
    RequesterId::from_raw(((v as u16 & 0x1f) + 2) << 3)
}

/// A platform that could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// Host memory of an impossible size.
    #[error(transparent)]
    Memory(#[from] BadMemorySize),
    /// An IOTLB geometry no hardware has.
    #[error(transparent)]
    Iotlb(#[from] BadIotlbConfig),
    /// The second-stage tables could not be built.
    #[error("building the IOMMU tables: {0}")]
    Tables(#[from] MapError),
    /// A guest driver could not start.
    #[error("guest driver: {0}")]
    Driver(iovirt_drivers::DriverError),
    /// Guest memory refused a driver's access.
    #[error("guest memory: {0}")]
    Guest(MemError),
    /// The host (its memory, its network) refused.
    #[error("host: {0}")]
    Host(#[from] iovirt_vmm::VmmError),
    /// A scenario's parameters that do not pass its checks.
    #[error("`{field}`: {reason}")]
    Invalid {
        /// The field, as `table.field`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HCA or its driver refused.
    #[error("HCA: {0}")]
    Hca(String),
    /// The traffic could not make progress (a ring stayed full).
    #[error("the traffic stalled: a TX ring stayed full")]
    Stalled,
}

impl TwoGuests {
    /// The platform with an IOMMU of the given IOTLB.
    pub fn new(iotlb: IotlbConfig) -> Result<TwoGuests, PlatformError> {
        let mut mem = HostMemory::new(64 * MIB)?;
        let mut frames = BitmapFrameAllocator::new(Hpa::new(0), 8 * MIB / 4096);
        let mut iommu = Iommu::new(IommuConfig {
            iotlb,
            ..IommuConfig::default()
        })?;
        let mut stage2 = Vec::new();
        for v in 0..2usize {
            let mut table = PageTable::<Iova, Hpa>::new(
                &mut mem,
                &mut frames,
                PagingConfig::second_stage(Levels::Four),
            )?;
            let m = Mapping::new(
                Iova::new(0),
                Hpa::new(GUEST * (v as u64 + 1)),
                GUEST,
                PteFlags::RW,
            );
            table.map(&mut mem, &mut frames, m)?;
            let domain = DomainId(v as u16 + 1);
            iommu.set_domain(domain, table.root(), Levels::Four);
            iommu.set_context(
                requester(v),
                ContextEntry::Translate {
                    domain,
                    pasid_enabled: false,
                },
            );
            stage2.push(table);
        }
        let nic = |last: u8| {
            Nic::new(NicConfig {
                mac: [0x52, 0x54, 0, 0, 0, last],
                irq: Irq(u32::from(last)),
            })
        };
        Ok(TwoGuests {
            mem,
            iommu,
            stage2,
            nics: [nic(1), nic(2)],
            links: [link(), link()],
            now: SimTime::ZERO,
            timers: [TimerQueue::new(), TimerQueue::new()],
            irqs: [IrqCount::default(), IrqCount::default()],
            pending: EventQueue::new(),
        })
    }

    /// VM `v`'s view.
    pub fn guest(&mut self, v: usize) -> Guest<'_> {
        self.guest_and_inbound(v).0
    }

    /// VM `v`'s view, and the link into its NIC (the other VM's way out),
    /// borrowed apart so frames can be delivered straight off it.
    fn guest_and_inbound(&mut self, v: usize) -> (Guest<'_>, &mut Link) {
        let [a, b] = &mut self.nics;
        let [wa, wb] = &mut self.links;
        let [ta, tb] = &mut self.timers;
        let [ia, ib] = &mut self.irqs;
        let (nic, wire, inbound, timers, irqs) = if v == 0 {
            (a, wa, wb, ta, ia)
        } else {
            (b, wb, wa, tb, ib)
        };
        let guest = Guest {
            mem: &mut self.mem,
            iommu: &mut self.iommu,
            nic,
            req: DmaRequest::new(requester(v)),
            base: GUEST * (v as u64 + 1),
            wire,
            now: self.now,
            timers,
            irqs,
        };
        (guest, inbound)
    }

    /// Replaces both links (empty) with links of `config`.
    pub fn set_links(&mut self, config: LinkConfig) {
        self.links = [Link::new(config), Link::new(config)];
    }

    /// Carries every frame VM `from`'s NIC sent into the other NIC, each at
    /// its arrival time, handing each outcome to `on`. Time moves to the
    /// last arrival.
    pub fn deliver(&mut self, from: usize, on: impl FnMut(RxOutcome)) {
        self.deliver_tapped(from, &mut |_, _| {}, on);
    }

    /// Like [`TwoGuests::deliver`], showing every frame and its arrival
    /// time to `tap` first (a capture on the wire).
    pub fn deliver_tapped(
        &mut self,
        from: usize,
        tap: &mut dyn FnMut(SimTime, &[u8]),
        mut on: impl FnMut(RxOutcome),
    ) {
        if from > 1 {
            return;
        }
        let mut last = self.now;
        {
            let (mut g, link) = self.guest_and_inbound(1 - from);
            link.deliver_until(SimTime::from_nanos(u64::MAX), |t, frame| {
                tap(t, frame);
                last = last.max(t);
                on(g.with_nic(|nic, env| nic.receive(frame, env)));
            });
        }
        self.now = last;
    }
}

impl TwoGuests {
    /// The discrete-event loop: runs, in virtual-time order, every event due
    /// by `until`: frames arriving over the links (received by the NIC at
    /// their arrival), the NICs' timers (interrupt moderation), and
    /// interrupts, each delivered `irq_latency` after its NIC raised it to
    /// `handler(platform, vm)` (the guest's interrupt handler). Ties go
    /// timers first, then arrivals, then interrupts, VM 0 before VM 1; time
    /// ends at `until`. Returns the events run.
    pub fn run_until(
        &mut self,
        until: SimTime,
        irq_latency: SimDuration,
        handler: &mut dyn FnMut(&mut TwoGuests, usize),
    ) -> u64 {
        self.run_tapped_until(until, irq_latency, handler, &mut |_, _| {})
    }

    /// Like [`TwoGuests::run_until`], showing every frame and its arrival
    /// time to `tap` as it arrives.
    pub fn run_tapped_until(
        &mut self,
        until: SimTime,
        irq_latency: SimDuration,
        handler: &mut dyn FnMut(&mut TwoGuests, usize),
        tap: &mut dyn FnMut(SimTime, &[u8]),
    ) -> u64 {
        let mut events = 0;
        loop {
            let timer = (0..2)
                .filter_map(|v| Some((self.timers.get(v)?.next_expiry()?, v)))
                .min();
            let arrival = (0..2)
                .filter_map(|v| Some((self.links.get(v)?.next_arrival()?, v)))
                .min();
            let interrupt = self.pending.next_time();
            let next = [timer.map(|t| t.0), arrival.map(|t| t.0), interrupt]
                .into_iter()
                .flatten()
                .min();
            let Some(at) = next.filter(|&t| t <= until) else {
                break;
            };
            self.now = self.now.max(at);
            let raised = [self.irqs[0].0, self.irqs[1].0];
            match (timer, arrival) {
                (Some((t, v)), _) if t == at => {
                    if let Some(token) = self.timers.get_mut(v).and_then(|q| q.pop_until(at)) {
                        self.guest(v).with_nic(|nic, env| nic.on_timer(token, env));
                    }
                }
                (_, Some((t, from))) if t == at => {
                    self.sync_timers(1 - from);
                    self.deliver_until(from, at, tap);
                }
                _ => {
                    if let Some((_, v)) = self.pending.pop_until(at) {
                        self.sync_timers(v);
                        handler(self, v);
                    }
                }
            }
            for (v, before) in raised.into_iter().enumerate() {
                if self.irqs.get(v).is_some_and(|c| c.0 > before) {
                    self.pending.schedule_at(self.now + irq_latency, v);
                }
            }
            events += 1;
        }
        self.now = self.now.max(until);
        events
    }

    /// Brings NIC `v`'s timer clock to now, firing any timer due by then
    /// (the loop runs those first, so normally there is none).
    fn sync_timers(&mut self, v: usize) {
        let now = self.now;
        while let Some(token) = self.timers.get_mut(v).and_then(|q| q.pop_until(now)) {
            self.guest(v).with_nic(|nic, env| nic.on_timer(token, env));
        }
    }

    /// Delivers the frames on link `from` that arrived by `until`.
    fn deliver_until(&mut self, from: usize, until: SimTime, tap: &mut dyn FnMut(SimTime, &[u8])) {
        if from > 1 {
            return;
        }
        let (mut g, link) = self.guest_and_inbound(1 - from);
        link.deliver_until(until, |t, frame| {
            tap(t, frame);
            g.with_nic(|nic, env| nic.receive(frame, env));
        });
    }
}

/// The default cable: the cost model's wire, 1024 frames of queue.
fn link() -> Link {
    Link::new(LinkConfig::from_cost(&CostModel::default(), 1024))
}

/// A UDP datagram in IPv4 in an Ethernet II frame of `len` bytes (at least
/// 42, the headers) to `dst` from `src`: `10.0.0.{src[5]}` port 5000 to
/// `10.0.0.{dst[5]}` port 5001, with a payload that depends on `n`. Wireshark
/// decodes every field.
pub fn frame(dst: [u8; 6], src: [u8; 6], n: u32, len: usize) -> Vec<u8> {
    const HEADERS: usize = 14 + 20 + 8;
    let payload: Vec<u8> = (0..len.saturating_sub(HEADERS))
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(n) as u8)
        .collect();
    let builder = etherparse::PacketBuilder::ethernet2(src, dst)
        .ipv4([10, 0, 0, src[5]], [10, 0, 0, dst[5]], 64)
        .udp(5000, 5001);
    let mut f = Vec::with_capacity(builder.size(payload.len()));
    // Writing into a Vec only fails for a payload beyond what IPv4 can
    // carry; the frames here are at most a page.
    if builder.write(&mut f, &payload).is_err() {
        f.clear();
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_guest_agrees_with_check_range() {
        let edges = [
            0,
            1,
            7,
            8,
            16,
            GUEST - 16,
            GUEST - 8,
            GUEST - 1,
            GUEST,
            GUEST + 1,
        ];
        for addr in edges.into_iter().chain([u64::MAX - 7, u64::MAX]) {
            for len in [0usize, 1, 8, 16, 4096, GUEST as usize, usize::MAX] {
                assert_eq!(
                    in_guest(Gpa::new(addr), len),
                    check_range(Gpa::new(addr), len as u64, GUEST).is_ok(),
                    "addr {addr:#x} len {len}"
                );
            }
        }
    }
}

//! Hosts with an RDMA HCA on the discrete-event loop: each host runs VMs
//! whose drivers drive their own HCA functions (seed 001, FIG. 2), its VMM
//! services the HCA's host-stage page faults, and two hosts are joined by a
//! cable of two [`Link`]s.
//!
//! Fault service takes virtual time: a guest-stage fault is serviced by the
//! VM's driver a minor fault's time after the event; a host-stage fault by
//! the VMM after a minor or a major (swap-in) fault's time, as the cost
//! model gives them. Completions are polled by the platform after every
//! event and time-stamped, as an application spinning on its CQs would see
//! them.

use iovirt_core::{CostModel, FrameQueue, Gpa, Gvmi, Irq, SimDuration, SimTime};
use iovirt_drivers::{GuestPageAllocator, HcaDriver, Placement, WorkCompletion};
use iovirt_hca::{
    Cqn, Event, FaultStage, FunctionConfig, FunctionId, FunctionPort, Hca, HcaConfig, HcaEnv,
    PageFault,
};
use iovirt_iommu::{IommuConfig, RequesterId};
use iovirt_vmm::{HcaGuestBus, Host, HostConfig, VmConfig, VmId};
use serde::Serialize;

use crate::link::{Link, LinkConfig};
use crate::platform::PlatformError;

/// Guest-physical address where a VM's driver takes its pages.
const GUEST_PAGES_BASE: u64 = 1 << 20;
/// Application virtual addresses start here.
pub const APP_BASE: u64 = 0x4000_0000;

/// What an application did with a region's pages before registering it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppPages<'a> {
    /// Never touched: each page appears on first use (a guest-stage fault
    /// with on-demand paging).
    Untouched,
    /// Touched: every page is backed, zeroed.
    Touched,
    /// Written with these bytes: every page is backed.
    Filled(&'a [u8]),
}

/// One VM on an RDMA host.
#[derive(Debug)]
pub struct RdmaGuest {
    /// The VM.
    pub vm: VmId,
    /// Its function on the HCA.
    pub function: FunctionId,
    /// Its GVMI.
    pub gvmi: Gvmi,
    /// Its HCA driver.
    pub driver: HcaDriver,
    /// Its MAC.
    pub mac: [u8; 6],
    /// Its IPv4 address.
    pub ip: [u8; 4],
    /// CQs the platform polls.
    pub cqs: Vec<Cqn>,
}

/// Fault service and completion counters of a host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RdmaHostStats {
    /// Guest-stage faults the VMs' drivers serviced.
    pub guest_faults_serviced: u64,
    /// Host-stage faults the VMM serviced.
    pub host_faults_serviced: u64,
    /// Of those, pages swapped in from the store.
    pub major_faults: u64,
    /// QPs that moved to the error state.
    pub qp_fatal: u64,
    /// CQ overflows.
    pub cq_errors: u64,
    /// Completion events of armed CQs.
    pub completion_events: u64,
}

#[derive(Debug, Clone, Copy)]
enum Service {
    Guest(usize, PageFault),
    Host(PageFault),
}

/// A host with an HCA, its VMs and their drivers.
#[derive(Debug)]
pub struct RdmaHost {
    /// The host's memory, IOMMU and VMs.
    pub host: Host,
    /// The HCA.
    pub hca: Hca,
    /// The VMs.
    pub guests: Vec<RdmaGuest>,
    cost: CostModel,
    index: u8,
    out: FrameQueue,
    /// Reused by the completion poll.
    polled: Vec<WorkCompletion>,
    irqs: Vec<Irq>,
    pending: Vec<(SimTime, Service)>,
    /// Completions seen, with the time the platform polled them.
    pub completions: Vec<(SimTime, usize, WorkCompletion)>,
    /// Counters.
    pub stats: RdmaHostStats,
}

/// A host's shape.
#[derive(Debug, Clone, Copy)]
pub struct RdmaHostConfig {
    /// Frames for stage-2 tables.
    pub table_frames: u64,
    /// Frames backing guest pages (below the VMs' total: oversubscribed).
    pub data_frames: u64,
    /// The IOMMU (its IOTLB caches the PA2MA translations).
    pub iommu: IommuConfig,
    /// The HCA's tables.
    pub hca: HcaConfig,
}

impl Default for RdmaHostConfig {
    fn default() -> RdmaHostConfig {
        RdmaHostConfig {
            table_frames: 256,
            data_frames: 8192,
            iommu: IommuConfig::default(),
            hca: HcaConfig::default(),
        }
    }
}

impl RdmaHost {
    /// Host number `index` (it names the MACs and IPs) with no VMs.
    pub fn new(
        index: u8,
        config: RdmaHostConfig,
        cost: CostModel,
    ) -> Result<RdmaHost, PlatformError> {
        let host = Host::new(HostConfig {
            table_frames: config.table_frames,
            data_frames: config.data_frames,
            iommu: config.iommu,
        })?;
        let mut hca = Hca::new(config.hca);
        hca.add_function(
            FunctionId::PF,
            FunctionConfig {
                gvmi: Gvmi::HOST,
                mac: [0x02, 0, 0, 0, index, 0xff],
                ip: [10, 0, index, 254],
                irq: Irq(0x20),
            },
        )
        .map_err(|e| PlatformError::Hca(format!("physical function: {e}")))?;
        Ok(RdmaHost {
            host,
            hca,
            guests: Vec::new(),
            cost,
            index,
            out: FrameQueue::default(),
            polled: Vec::new(),
            irqs: Vec::new(),
            pending: Vec::new(),
            completions: Vec::new(),
            stats: RdmaHostStats::default(),
        })
    }

    /// Adds a VM of `memory` bytes with its own HCA function and driver;
    /// its driver places pages as `placement` says. Returns its index.
    pub fn add_vm(&mut self, memory: u64, placement: Placement) -> Result<usize, PlatformError> {
        let i = self.guests.len();
        let n = u8::try_from(i + 1).map_err(|_| PlatformError::Hca("too many VMs".into()))?;
        let vm = self.host.add_vm(VmConfig {
            memory,
            requester: RequesterId::new(0, 2 + n, 0)
                .ok_or_else(|| PlatformError::Hca("too many VMs".into()))?,
        })?;
        let gvmi = Gvmi(u16::from(n));
        self.host.assign_gvmi(vm, gvmi)?;
        let function = FunctionId(u16::from(n));
        let mac = [0x02, 0, 0, 0, self.index, n];
        let ip = [10, 0, self.index, n];
        self.hca
            .add_function(
                function,
                FunctionConfig {
                    gvmi,
                    mac,
                    ip,
                    irq: Irq(0x40 + u32::from(n)),
                },
            )
            .map_err(|e| PlatformError::Hca(format!("function: {e}")))?;
        let pages = memory.saturating_sub(GUEST_PAGES_BASE) / 4096;
        let driver = HcaDriver::new(
            GuestPageAllocator::new(Gpa::new(GUEST_PAGES_BASE), pages, placement),
            APP_BASE,
        );
        self.guests.push(RdmaGuest {
            vm,
            function,
            gvmi,
            driver,
            mac,
            ip,
            cqs: Vec::new(),
        });
        Ok(i)
    }

    /// Runs `f` with guest `i`'s driver and its bus.
    pub fn with_guest<R>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut HcaDriver, &mut HcaGuestBus<'_>) -> R,
    ) -> Option<R> {
        let g = self.guests.get_mut(i)?;
        let mut bus = HcaGuestBus {
            host: &mut self.host,
            vm: g.vm,
            port: FunctionPort {
                hca: &mut self.hca,
                function: g.function,
            },
        };
        Some(f(&mut g.driver, &mut bus))
    }

    /// Application memory of `len` bytes for guest `guest`, its pages as
    /// `pages` says, registered in `pd` with `access` in `mode`. Returns the
    /// address and the key.
    pub fn app_region(
        &mut self,
        guest: usize,
        pd: iovirt_hca::Pdn,
        len: u64,
        access: iovirt_hca::mr::Access,
        mode: iovirt_hca::mr::MrMode,
        pages: AppPages<'_>,
    ) -> Result<(u64, iovirt_hca::Mkey), PlatformError> {
        self.with_guest(guest, |d, bus| {
            let populate = !matches!(pages, AppPages::Untouched);
            let va = d
                .app_alloc(bus, len, populate)
                .map_err(hca_err("app_alloc"))?;
            if let AppPages::Filled(data) = pages {
                d.app_write(bus, va, data).map_err(hca_err("app_write"))?;
            }
            let key = d
                .reg_mr(bus, pd, va, len, access, mode)
                .map_err(hca_err("reg_mr"))?;
            Ok((va, key))
        })
        .ok_or_else(|| PlatformError::Hca(format!("no guest {guest}")))?
    }

    /// Runs the HCA at `now`: timers due, a frame, then sending (at most
    /// `budget` packets), events, fault services due and completions.
    fn run_hca(&mut self, now: SimTime, frame: Option<&[u8]>, budget: usize) {
        let RdmaHost {
            host,
            hca,
            out,
            irqs,
            cost,
            ..
        } = self;
        let (mut mem, mut oracle) = host.hca_ports(*cost);
        let mut wire = |f: &[u8]| out.push(f);
        let mut env = HcaEnv {
            mem: &mut mem,
            wire: &mut wire,
            irq: irqs,
            now,
            oracle: Some(&mut oracle),
        };
        hca.run_timers(&mut env);
        if let Some(f) = frame {
            hca.receive(f, &mut env);
        }
        hca.process(&mut env, budget);
        self.irqs.clear();
        self.take_events(now);
        self.poll_completions(now);
    }

    /// Takes the functions' events and schedules their service.
    fn take_events(&mut self, now: SimTime) {
        // Function 0 (the host's), then each guest's.
        for slot in 0..=self.guests.len() {
            let (guest, f) = match slot.checked_sub(1) {
                None => (None, FunctionId::PF),
                Some(i) => match self.guests.get(i) {
                    Some(g) => (Some(i), g.function),
                    None => continue,
                },
            };
            while let Some(e) = self.hca.poll_event(f) {
                match e {
                    Event::PageFault(pf) => {
                        let (service, delay) = match (pf.stage, guest) {
                            (FaultStage::Guest, Some(i)) => {
                                (Service::Guest(i, pf), self.cost.minor_fault_ns)
                            }
                            (FaultStage::Host, _) => {
                                let swapped = pf
                                    .estimate_ns
                                    .is_some_and(|e| e >= self.cost.major_fault_ns);
                                let d = if swapped {
                                    self.cost.major_fault_ns
                                } else {
                                    self.cost.minor_fault_ns
                                };
                                (Service::Host(pf), d)
                            }
                            (FaultStage::Guest, None) => continue,
                        };
                        self.pending
                            .push((now + SimDuration::from_nanos(delay), service));
                    }
                    Event::QpFatal(_) => self.stats.qp_fatal += 1,
                    Event::CqError(_) => self.stats.cq_errors += 1,
                    Event::Completion(_) => self.stats.completion_events += 1,
                }
            }
        }
    }

    /// Services the faults due by `now`.
    fn run_services(&mut self, now: SimTime) {
        let mut due: Vec<(SimTime, Service)> = Vec::new();
        self.pending.retain(|&(t, s)| {
            if t <= now {
                due.push((t, s));
                false
            } else {
                true
            }
        });
        due.sort_by_key(|&(t, _)| t);
        self.hca.advance_to(now);
        for (_, s) in due {
            match s {
                Service::Guest(i, pf) => {
                    let ok = self
                        .with_guest(i, |d, bus| d.service_fault(bus, &pf))
                        .is_some_and(|r| r.is_ok());
                    if ok {
                        self.stats.guest_faults_serviced += 1;
                    } else {
                        log::warn!("guest {i} could not service {pf:?}");
                    }
                }
                Service::Host(pf) => {
                    let Some(pa) = pf.pa else { continue };
                    match self.host.service_gvmi_fault(pf.gvmi, pa) {
                        Ok(major) => {
                            self.stats.host_faults_serviced += 1;
                            self.stats.major_faults += u64::from(major);
                            self.hca.resume_page_fault(FunctionId::PF, pf.token);
                        }
                        Err(e) => log::warn!("host could not service {pf:?}: {e}"),
                    }
                }
            }
        }
    }

    /// Polls every registered CQ of every guest.
    fn poll_completions(&mut self, now: SimTime) {
        let RdmaHost {
            host,
            hca,
            guests,
            polled,
            completions,
            ..
        } = self;
        for (i, g) in guests.iter_mut().enumerate() {
            for &cq in &g.cqs {
                polled.clear();
                let mut bus = HcaGuestBus {
                    host: &mut *host,
                    vm: g.vm,
                    port: FunctionPort {
                        hca: &mut *hca,
                        function: g.function,
                    },
                };
                let _ = g.driver.poll_cq(&mut bus, cq, 64, polled);
                completions.extend(polled.iter().map(|wc| (now, i, *wc)));
            }
        }
    }

    /// When this host next has something to do on its own.
    pub fn next_event(&self) -> Option<SimTime> {
        let service = self.pending.iter().map(|&(t, _)| t).min();
        [service, self.hca.next_timer()].into_iter().flatten().min()
    }

    /// Makes a VM page leave memory (the host MMU swapping it out).
    pub fn swap_out(&mut self, guest: usize, gpa: Gpa) -> Result<(), PlatformError> {
        let vm = self
            .guests
            .get(guest)
            .map(|g| g.vm)
            .ok_or_else(|| PlatformError::Hca("no such guest".into()))?;
        self.host.swap_out(vm, gpa)?;
        Ok(())
    }
}

/// A frame filter on the cable: `true` drops the frame (tests inject loss).
pub type LossFilter = Box<dyn FnMut(usize, &[u8]) -> bool + Send>;

/// Two RDMA hosts joined by a cable, on one event loop.
pub struct RdmaFabric {
    /// The hosts.
    pub hosts: [RdmaHost; 2],
    /// `links[i]` carries host i's frames to the other host.
    pub links: [Link; 2],
    /// The time of the last event run.
    pub now: SimTime,
    /// Frames the filter dropped.
    pub lost: u64,
    loss: Option<LossFilter>,
    /// Frames arriving at one instant, reused.
    arrivals: FrameQueue,
}

impl RdmaFabric {
    /// Two hosts and a cable as `link` describes it.
    pub fn new(hosts: [RdmaHost; 2], link: LinkConfig) -> RdmaFabric {
        RdmaFabric {
            hosts,
            links: [Link::new(link), Link::new(link)],
            now: SimTime::ZERO,
            lost: 0,
            loss: None,
            arrivals: FrameQueue::default(),
        }
    }

    /// Drops the frames `filter(direction, frame)` picks.
    pub fn set_loss(&mut self, filter: LossFilter) {
        self.loss = Some(filter);
    }

    /// Runs both hosts until `until` or until nothing is left to do;
    /// every frame the cable delivers goes to `tap` with its arrival time.
    pub fn run_until(&mut self, until: SimTime, tap: &mut dyn FnMut(SimTime, &[u8])) {
        let now = self.now;
        for h in 0..2 {
            self.pump(h, now, None);
        }
        loop {
            let [l0, l1] = &self.links;
            let [h0, h1] = &self.hosts;
            let candidates = [
                l0.next_arrival(),
                l1.next_arrival(),
                h0.next_event(),
                h1.next_event(),
            ];
            let Some((at, which)) = candidates
                .iter()
                .enumerate()
                .filter_map(|(i, t)| Some(((*t)?, i)))
                .min()
                .filter(|&(t, _)| t <= until)
            else {
                break;
            };
            self.now = self.now.max(at);
            let now = self.now;
            match which {
                0 | 1 => {
                    // A frame from host `which` reaches the other host.
                    let mut frames = std::mem::take(&mut self.arrivals);
                    frames.clear();
                    if let Some(link) = self.links.get_mut(which) {
                        link.deliver_until(now, |t, f| {
                            tap(t, f);
                            frames.push(f);
                        });
                    }
                    let to = 1 - which;
                    for f in frames.frames() {
                        self.pump(to, now, Some(f));
                    }
                    self.arrivals = frames;
                    // The sender's link has room again: the HCA sends at
                    // the pace the cable takes its frames.
                    self.pump(which, now, None);
                }
                _ => {
                    let h = which - 2;
                    if let Some(host) = self.hosts.get_mut(h) {
                        host.run_services(now);
                    }
                    self.pump(h, now, None);
                }
            }
        }
    }

    /// Runs host `h` at `now` (with an arriving frame) and puts what it
    /// sends on its link.
    fn pump(&mut self, h: usize, now: SimTime, frame: Option<&[u8]>) {
        let (Some(link), Some(host)) = (self.links.get_mut(h), self.hosts.get_mut(h)) else {
            return;
        };
        let room = link.config().queue_frames.saturating_sub(link.in_flight());
        host.run_hca(now, frame, room);
        for f in host.out.frames() {
            if let Some(filter) = self.loss.as_mut()
                && filter(h, f)
            {
                self.lost += 1;
                continue;
            }
            let _ = link.send(now, f);
        }
        host.out.clear();
    }
}

/// One end of a connection: a guest's PD, CQ and QP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpEnd {
    /// The host (0 or 1).
    pub host: usize,
    /// The guest on it.
    pub guest: usize,
    /// Its protection domain.
    pub pd: iovirt_hca::Pdn,
    /// Its CQ (sends and receives).
    pub cq: Cqn,
    /// The QP.
    pub qpn: iovirt_hca::Qpn,
}

/// The attributes a connection is brought up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectAttrs {
    /// Path MTU.
    pub mtu: iovirt_hca::qp::PathMtu,
    /// The responder's RNR timer code.
    pub min_rnr_timer: u8,
    /// Transport timeout exponent.
    pub timeout: u8,
    /// Transport retries.
    pub retry_cnt: u8,
    /// RNR retries (7: infinite).
    pub rnr_retry: u8,
    /// First PSN both ways.
    pub psn: u32,
}

impl Default for ConnectAttrs {
    fn default() -> ConnectAttrs {
        ConnectAttrs {
            mtu: iovirt_hca::qp::PathMtu::Mtu1024,
            min_rnr_timer: 1,
            timeout: 10,
            retry_cnt: 7,
            rnr_retry: 7,
            psn: 100,
        }
    }
}

/// A driver error as a platform error naming the verb.
pub(crate) fn hca_err(what: &str) -> impl Fn(iovirt_drivers::VerbsError) -> PlatformError + '_ {
    move |e| PlatformError::Hca(format!("{what}: {e}"))
}

impl RdmaFabric {
    /// A PD, a CQ of 2^`log_cq` entries (polled by the platform) and a QP
    /// of `qp_type` with 2^`log_wq` WQEs per queue, for guest `guest` of
    /// host `host`.
    pub fn endpoint(
        &mut self,
        host: usize,
        guest: usize,
        qp_type: iovirt_hca::qp::QpType,
        log_wq: u8,
        log_cq: u8,
    ) -> Result<QpEnd, PlatformError> {
        let h = self
            .hosts
            .get_mut(host)
            .ok_or_else(|| PlatformError::Hca("no such host".into()))?;
        let (pd, cq, qpn) = h
            .with_guest(guest, |d, bus| -> Result<_, PlatformError> {
                let pd = d.alloc_pd(bus).map_err(hca_err("alloc_pd"))?;
                let cq = d.create_cq(bus, log_cq).map_err(hca_err("create_cq"))?;
                let qpn = d
                    .create_qp(
                        bus,
                        iovirt_drivers::QpInit {
                            qp_type,
                            pd,
                            send_cq: cq,
                            recv_cq: cq,
                            log_sq: log_wq,
                            log_rq: log_wq,
                        },
                    )
                    .map_err(hca_err("create_qp"))?;
                Ok((pd, cq, qpn))
            })
            .ok_or_else(|| PlatformError::Hca("no such guest".into()))??;
        if let Some(g) = h.guests.get_mut(guest) {
            g.cqs.push(cq);
        }
        Ok(QpEnd {
            host,
            guest,
            pd,
            cq,
            qpn,
        })
    }

    /// Brings `a` (RC or UC) to RTS connected to `b`.
    pub fn connect_one(
        &mut self,
        a: QpEnd,
        b: QpEnd,
        attrs: ConnectAttrs,
    ) -> Result<(), PlatformError> {
        use iovirt_hca::mr::Access;
        use iovirt_hca::qp::{AddressVector, QpAttr, QpState, QpType};
        let peer = self
            .hosts
            .get(b.host)
            .and_then(|h| h.guests.get(b.guest))
            .ok_or_else(|| PlatformError::Hca("no such guest".into()))?;
        let av = AddressVector {
            dmac: peer.mac,
            dip: peer.ip,
        };
        let h = self
            .hosts
            .get_mut(a.host)
            .ok_or_else(|| PlatformError::Hca("no such host".into()))?;
        let rc = h.guests.get(a.guest).and_then(|g| g.driver.qp_type(a.qpn)) == Some(QpType::Rc);
        let access = if rc {
            Access::REMOTE_WRITE | Access::REMOTE_READ
        } else {
            Access::REMOTE_WRITE
        };
        h.with_guest(a.guest, |d, bus| -> Result<(), PlatformError> {
            let init = QpAttr {
                access: Some(access),
                ..QpAttr::default()
            };
            d.modify_qp(bus, a.qpn, QpState::Init, init)
                .map_err(hca_err("INIT"))?;
            let rtr = QpAttr {
                dest_qpn: Some(b.qpn),
                av: Some(av),
                path_mtu: Some(attrs.mtu),
                rq_psn: Some(attrs.psn),
                min_rnr_timer: Some(attrs.min_rnr_timer),
                ..QpAttr::default()
            };
            d.modify_qp(bus, a.qpn, QpState::Rtr, rtr)
                .map_err(hca_err("RTR"))?;
            let rts = QpAttr {
                sq_psn: Some(attrs.psn),
                timeout: Some(attrs.timeout),
                retry_cnt: Some(attrs.retry_cnt),
                rnr_retry: Some(attrs.rnr_retry),
                ..QpAttr::default()
            };
            d.modify_qp(bus, a.qpn, QpState::Rts, rts)
                .map_err(hca_err("RTS"))
        })
        .ok_or_else(|| PlatformError::Hca("no such guest".into()))?
    }

    /// A connected pair of `qp_type` between guest `g0` of host 0 and guest
    /// `g1` of host 1.
    pub fn connect_pair(
        &mut self,
        g0: usize,
        g1: usize,
        qp_type: iovirt_hca::qp::QpType,
        log_wq: u8,
        attrs: ConnectAttrs,
    ) -> Result<(QpEnd, QpEnd), PlatformError> {
        let a = self.endpoint(0, g0, qp_type, log_wq, log_wq + 1)?;
        let b = self.endpoint(1, g1, qp_type, log_wq, log_wq + 1)?;
        self.connect_one(a, b, attrs)?;
        self.connect_one(b, a, attrs)?;
        Ok((a, b))
    }
}

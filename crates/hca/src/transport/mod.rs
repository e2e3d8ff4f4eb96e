//! The transport: queue pairs' send and receive engines, the doorbells
//! that start them, the packets they exchange and the timers that retry.
//!
//! The HCA is driven by its platform in virtual time: doorbell writes
//! record the drivers' producer indices, [`Hca::process`] sends packets
//! (round robin over the QPs with work, one packet per QP per turn, so a
//! stalled QP never holds up another), [`Hca::receive`] takes a frame off
//! the wire, and [`Hca::run_timers`] fires the transport and RNR timers due.

mod ack;
mod dma;
mod reply;
mod requester;
mod responder;
mod unreliable;

use std::collections::VecDeque;
use std::ops::Bound;

use iovirt_core::{Counter, Gvmi, GvmiDma, InterruptSink, MmioDevice, NetworkPort, SimTime, Width};
use serde::{Deserialize, Serialize};

use crate::cq::CqWrite;
use crate::cqe::{Cqe, CqeOpcode, CqeStatus};
use crate::device::Hca;
use crate::event::{Event, FaultStage, PageFault};
use crate::ids::{Cqn, FunctionId, Qpn};
use crate::qp::{QpContext, QpState};
use crate::wire::{Operation, RocePacket, Transport};

pub(crate) use dma::{Dir, Miss, RegionAccess};
pub(crate) use requester::Requester;
pub(crate) use responder::Responder;

/// Seed 004: how long the host expects a missing page to take.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait FaultOracle {
    /// The estimate, in nanoseconds, for the page of `addr` (a virtual
    /// address for a guest-stage fault, a VM-physical one for a host-stage
    /// fault) of `gvmi`; `None` when the host gives none.
    fn estimate(&mut self, stage: FaultStage, gvmi: Gvmi, addr: u64) -> Option<u64>;
}

/// What the HCA works with on each call: memory through the second stage,
/// the wire, interrupts, the time, and the host's fault-time estimates.
pub struct HcaEnv<'a> {
    /// GVMI-tagged DMA (the IOMMU's PA2MA stage).
    pub mem: &'a mut dyn GvmiDma,
    /// Where packets go.
    pub wire: &'a mut dyn NetworkPort,
    /// Where event-queue interrupts go.
    pub irq: &'a mut dyn InterruptSink,
    /// The virtual time now.
    pub now: SimTime,
    /// Seed 004's estimates; without one, every fault is answered by an
    /// RNR NAK with the QP's `min_rnr_timer`.
    pub oracle: Option<&'a mut dyn FaultOracle>,
}

/// Per-QP counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QpStats {
    /// Packets sent (requests, responses, ACKs, NAKs).
    pub tx_packets: Counter,
    /// Packets received for this QP.
    pub rx_packets: Counter,
    /// Send WQEs completed (any status).
    pub send_completions: Counter,
    /// Receive WQEs completed (any status).
    pub recv_completions: Counter,
    /// Payload bytes sent in requests and READ responses.
    pub tx_payload_bytes: Counter,
    /// Payload bytes placed.
    pub rx_payload_bytes: Counter,
    /// Packets retransmitted.
    pub retransmitted_packets: Counter,
    /// RNR NAKs this QP sent as responder.
    pub rnr_naks_sent: Counter,
    /// RNR NAKs this QP received as requester.
    pub rnr_naks_received: Counter,
    /// Sequence-error NAKs sent.
    pub seq_naks_sent: Counter,
    /// Page faults this QP hit.
    pub page_faults: Counter,
    /// Virtual nanoseconds from each fault to its resume, summed.
    pub fault_wait_ns: Counter,
    /// Packets dropped at this QP.
    pub rx_dropped: Counter,
    /// Transport timeouts.
    pub timeouts: Counter,
}

/// A queue pair: its context, its queues' indices, both engines and counters.
#[derive(Debug, Clone)]
pub(crate) struct Qp {
    pub(crate) ctx: QpContext,
    /// The driver's send producer counter (doorbell).
    pub(crate) sq_pi: u16,
    /// The driver's receive producer counter (doorbell).
    pub(crate) rq_pi: u16,
    /// The next receive WQE the responder takes.
    pub(crate) rq_ci: u16,
    pub(crate) req: Requester,
    pub(crate) resp: Responder,
    pub(crate) stats: QpStats,
    /// The first flush after entering the error state is done (the
    /// responder's state was cleared then).
    pub(crate) flushed: bool,
}

impl Qp {
    pub(crate) fn new(ctx: QpContext) -> Qp {
        let mut qp = Qp {
            req: Requester::new(ctx.sq.entries() as usize),
            resp: Responder::new(),
            ctx,
            sq_pi: 0,
            rq_pi: 0,
            rq_ci: 0,
            stats: QpStats::default(),
            flushed: false,
        };
        qp.sync_psns();
        qp
    }

    /// Back to RESET: queues empty, engines idle.
    pub(crate) fn reset(&mut self) {
        *self = Qp::new(self.ctx.clone());
    }

    /// Takes the PSNs from the context (after a modify set them).
    pub(crate) fn sync_psns(&mut self) {
        if self.ctx.state == QpState::Rtr || self.ctx.state == QpState::Init {
            self.resp.set_epsn(self.ctx.rq_psn);
        }
        if self.ctx.state == QpState::Rts && !self.req.started {
            self.req.set_psn(self.ctx.sq_psn, &self.ctx);
        }
    }
}

/// Doorbell register offsets within a function's 4 KiB doorbell page. All
/// doorbells are 64-bit writes; other widths are ignored and counted.
pub mod doorbell {
    /// Send queue: bits 63:32 QPN, bits 15:0 the new producer counter.
    pub const SQ: u64 = 0x00;
    /// Receive queue: bits 63:32 QPN, bits 15:0 the new producer counter.
    pub const RQ: u64 = 0x08;
    /// CQ consumer index: bits 63:32 CQN, bits 31:0 the consumer index.
    pub const CQ_CI: u64 = 0x10;
    /// CQ arm: bits 63:32 CQN, bit 0 solicited only.
    pub const CQ_ARM: u64 = 0x18;
    /// Bytes of doorbell page per function.
    pub const PAGE: u64 = 0x1000;
}

impl Hca {
    /// A doorbell write by function `f` at offset `reg` of its page.
    pub fn doorbell(&mut self, f: FunctionId, reg: u64, value: u64) {
        let id = (value >> 32) as u32;
        let ok = match reg {
            doorbell::SQ | doorbell::RQ => match Qpn::new(id).and_then(|q| self.qps.get_mut(&q)) {
                Some(qp) if qp.ctx.function == f => {
                    let pi = value as u16;
                    let (ring, taken) = if reg == doorbell::SQ {
                        (qp.ctx.sq, qp.req.fetched())
                    } else {
                        (qp.ctx.rq, qp.rq_ci)
                    };
                    // A producer that claims more than the ring holds is a
                    // driver bug; real hardware would overrun, this ignores it.
                    if u32::from(pi.wrapping_sub(taken)) > ring.entries() {
                        false
                    } else {
                        if reg == doorbell::SQ {
                            qp.sq_pi = pi;
                        } else {
                            qp.rq_pi = pi;
                        }
                        true
                    }
                }
                _ => false,
            },
            doorbell::CQ_CI | doorbell::CQ_ARM => match self.cqs.get_mut(&Cqn(id)) {
                Some(cq) if cq.function == f => {
                    if reg == doorbell::CQ_CI {
                        cq.set_ci(value as u32)
                    } else {
                        cq.armed = Some(value & 1 != 0);
                        true
                    }
                }
                _ => false,
            },
            _ => false,
        };
        if !ok {
            self.stats.bad_doorbells.inc();
            log::debug!("hca {f}: bad doorbell {reg:#x} = {value:#x}");
        }
    }

    /// Resumes after page fault `token` was serviced. The owning function
    /// resumes its guest-stage faults; the host (function 0) any fault. A
    /// responder that NAKed sends an unsolicited ACK on the next
    /// [`process`](Self::process) so the requester retries at once; held
    /// packets are replayed then; a stalled requester goes on.
    pub fn resume_page_fault(&mut self, f: FunctionId, token: u32) -> bool {
        let found = self.qps.iter().find_map(|(qpn, qp)| {
            let mine = f == FunctionId::PF || qp.ctx.function == f;
            let mkey = qp.resp.fault_mkey(token).or(qp.req.fault_mkey(token));
            mkey.filter(|_| mine).map(|k| (*qpn, k))
        });
        let Some((qpn, mkey)) = found else {
            self.stats.cmd_errors.inc();
            return false;
        };
        if let Some(ctx) = self.mpt.get_mut(mkey) {
            ctx.counters.page_faults_handled.inc();
        }
        let now = self.now;
        self.resume_responder(qpn, token, now);
        self.resume_requester(qpn, token, now);
        true
    }

    /// Moves the HCA's clock to `now` (commands carry no time: a platform
    /// that runs a driver's command at `now` says so first).
    pub fn advance_to(&mut self, now: SimTime) {
        self.now = self.now.max(now);
    }

    pub(crate) fn count_bad_doorbell(&mut self) {
        self.stats.bad_doorbells.inc();
    }

    /// Sends packets: round robin over the QPs, one packet per QP per
    /// turn, until nothing is left to send or `budget` packets went out.
    /// Returns the packets sent.
    pub fn process(&mut self, env: &mut HcaEnv<'_>, budget: usize) -> usize {
        self.advance_to(env.now);
        self.replay_held(env);
        let mut sent = 0;
        // Round robin from the QP after the last one served, across calls:
        // with a budget of one packet, every QP still gets its turn.
        let mut idle = 0usize;
        while sent < budget && idle < self.qps.len() {
            let after = self.rr_cursor.map_or(Bound::Unbounded, Bound::Excluded);
            let next = self
                .qps
                .range((after, Bound::Unbounded))
                .next()
                .or_else(|| self.qps.iter().next())
                .map(|(q, _)| *q);
            let Some(qpn) = next else {
                break;
            };
            self.rr_cursor = Some(qpn);
            let stepped = self.responder_step(qpn, env) || self.requester_step(qpn, env);
            // After the steps: a QP that went to error in this very turn is
            // flushed now, not left until the platform calls again (every
            // posted WQE completes).
            self.flush_if_error(qpn, env);
            if stepped {
                sent += 1;
                idle = 0;
            } else {
                idle += 1;
            }
        }
        sent
    }

    /// The earliest time a timer is due.
    pub fn next_timer(&self) -> Option<SimTime> {
        self.qps.values().filter_map(|q| q.req.next_timer()).min()
    }

    /// Fires the timers due at `env.now`.
    pub fn run_timers(&mut self, env: &mut HcaEnv<'_>) {
        self.advance_to(env.now);
        let due: Vec<Qpn> = self
            .qps
            .iter()
            .filter(|(_, q)| q.req.next_timer().is_some_and(|t| t <= env.now))
            .map(|(n, _)| *n)
            .collect();
        for qpn in due {
            self.requester_timer(qpn, env);
        }
    }

    /// Takes a frame off the wire.
    pub fn receive(&mut self, frame: &[u8], env: &mut HcaEnv<'_>) {
        self.advance_to(env.now);
        self.stats.rx_packets.inc();
        let pkt = match RocePacket::parse(frame) {
            Ok(p) => p,
            Err(e) => {
                self.stats.rx_malformed.inc();
                // A flood of bad frames allocates only for a cause's first.
                let causes = &mut self.stats.rx_malformed_by_cause;
                match causes.get_mut(e.counter_name()) {
                    Some(c) => c.inc(),
                    None => causes.entry(e.counter_name().to_owned()).or_default().inc(),
                }
                log::debug!("hca: malformed packet dropped: {e}");
                return;
            }
        };
        let qpn = Qpn::from_wire(pkt.headers.bth.dest_qp);
        let Some(qp) = self.qps.get(&qpn) else {
            self.stats.rx_unknown_qp.inc();
            log::debug!("hca: packet for unknown {qpn} dropped");
            return;
        };
        // The packet must be for this QP's transport and address.
        let dip = pkt.headers.dst_ip.octets();
        let own_ip = self.functions.get(&qp.ctx.function).map(|f| f.config.ip);
        let transport_ok = matches!(
            (pkt.headers.bth.opcode.transport(), qp.ctx.qp_type),
            (Some(Transport::Rc), crate::qp::QpType::Rc)
                | (Some(Transport::Uc), crate::qp::QpType::Uc)
                | (Some(Transport::Ud), crate::qp::QpType::Ud)
        );
        if own_ip != Some(dip) || !transport_ok {
            self.stats.rx_unknown_qp.inc();
            log::debug!("hca: packet for {qpn} with the wrong address or transport dropped");
            return;
        }
        if let Some(q) = self.qps.get_mut(&qpn) {
            q.stats.rx_packets.inc();
        }
        let response = matches!(
            pkt.headers.bth.opcode.operation(),
            Some(
                Operation::RdmaReadResponse | Operation::Acknowledge | Operation::AtomicAcknowledge
            )
        );
        if response {
            self.requester_receive(qpn, &pkt, env);
        } else {
            self.responder_receive(qpn, &pkt, frame, env);
        }
    }

    /// Writes a completion for `qpn` to `cqn`.
    pub(crate) fn complete(&mut self, cqn: Cqn, cqe: Cqe, env: &mut HcaEnv<'_>) {
        let Hca { cqs, functions, .. } = self;
        let Some(cq) = cqs.get_mut(&cqn) else {
            return;
        };
        let f = cq.function;
        let gvmi = functions.get(&f).map_or(Gvmi::HOST, |x| x.config.gvmi);
        let write = cq.push(&cqe, gvmi, env.mem);
        match write {
            CqWrite::Written { notify } => {
                if notify && let Some(irq) = self.post_event(f, Event::Completion(cqn)) {
                    env.irq.raise(irq);
                }
            }
            CqWrite::Overflow | CqWrite::DmaFault | CqWrite::InError => {
                // IBTA C11-37: an overrun or a CQE write that faults puts the
                // CQ in error, once, with a CQ error event. C9-218: the QP
                // whose completion is lost goes to the error state, and so
                // does every QP that later tries to complete to that CQ.
                self.stats.completions_lost.inc();
                let entered_error = match write {
                    CqWrite::Overflow => Some((&mut self.stats.cq_overflows, "overflowed")),
                    CqWrite::DmaFault => {
                        Some((&mut self.stats.cq_access_errors, "ring unreachable"))
                    }
                    _ => None,
                };
                if let Some((counter, why)) = entered_error {
                    counter.inc();
                    log::warn!("hca: {cqn} {why}, completion of {} lost", cqe.qpn);
                    if let Some(irq) = self.post_event(f, Event::CqError(cqn)) {
                        env.irq.raise(irq);
                    }
                } else {
                    log::debug!("hca: {cqn} in error, completion of {} lost", cqe.qpn);
                }
                self.qp_fatal(cqe.qpn, env);
            }
        }
    }

    /// Moves a QP to the error state on its own and tells its driver.
    pub(crate) fn qp_fatal(&mut self, qpn: Qpn, env: &mut HcaEnv<'_>) {
        let Some(qp) = self.qps.get_mut(&qpn) else {
            return;
        };
        if qp.ctx.state == QpState::Err {
            return;
        }
        qp.ctx.state = QpState::Err;
        let f = qp.ctx.function;
        self.stats.qp_errors.inc();
        log::info!("hca: {qpn} moved to the error state");
        if let Some(irq) = self.post_event(f, Event::QpFatal(qpn)) {
            env.irq.raise(irq);
        }
    }

    /// Flushes every outstanding WQE of a QP in the error state, and the
    /// send WQEs of a QP in the send-queue error state (UC/UD; its receive
    /// queue goes on). WQEs the driver posts while the QP stays in error
    /// are flushed on the next call too: every posted WQE completes.
    fn flush_if_error(&mut self, qpn: Qpn, env: &mut HcaEnv<'_>) {
        let Some(qp) = self.qps.get_mut(&qpn) else {
            return;
        };
        let err = qp.ctx.state == QpState::Err;
        if !err && qp.ctx.state != QpState::Sqe {
            return;
        }
        let sends_left = !qp.req.inflight.is_empty() || qp.req.fetched() != qp.sq_pi;
        let recvs_left = err && qp.rq_ci != qp.rq_pi;
        if !sends_left && !recvs_left && (qp.flushed || !err) {
            return;
        }
        if err && !qp.flushed {
            qp.flushed = true;
            qp.resp.clear();
        }
        let (send_cq, recv_cq) = (qp.ctx.send_cq, qp.ctx.recv_cq);
        let mut sends: Vec<u16> = qp.req.drain_for_flush(qp.sq_pi);
        let mut recvs = Vec::new();
        while err && qp.rq_ci != qp.rq_pi {
            recvs.push(qp.rq_ci);
            qp.rq_ci = qp.rq_ci.wrapping_add(1);
        }
        for (cq, list, opcode) in [
            (send_cq, &mut sends, CqeOpcode::Send),
            (recv_cq, &mut recvs, CqeOpcode::Recv),
        ] {
            for index in list.drain(..) {
                let cqe = Cqe::error(qpn, index, opcode, CqeStatus::WrFlushError);
                if let Some(q) = self.qps.get_mut(&qpn) {
                    if opcode == CqeOpcode::Send {
                        q.stats.send_completions.inc();
                    } else {
                        q.stats.recv_completions.inc();
                    }
                }
                self.complete(cq, cqe, env);
            }
        }
    }

    /// Raises a page-fault event for `miss` on `qpn` and returns its token
    /// and the host's estimate.
    pub(crate) fn raise_fault(
        &mut self,
        qpn: Qpn,
        miss: Miss,
        access: iovirt_core::AccessKind,
        env: &mut HcaEnv<'_>,
    ) -> Option<(u32, Option<u64>)> {
        let Miss::Fault {
            stage,
            mkey,
            gvmi,
            va,
            pa,
        } = miss
        else {
            return None;
        };
        let estimate = env
            .oracle
            .as_mut()
            .and_then(|o| o.estimate(stage, gvmi, pa.map_or(va, |p| p.raw())));
        let token = self.token();
        let owner = self.qps.get(&qpn)?.ctx.function;
        let target = match stage {
            FaultStage::Guest => {
                self.stats.guest_page_faults.inc();
                owner
            }
            FaultStage::Host => {
                self.stats.host_page_faults.inc();
                FunctionId::PF
            }
        };
        if let Some(ctx) = self.mpt.get_mut(mkey) {
            ctx.counters.page_faults.inc();
        }
        if let Some(q) = self.qps.get_mut(&qpn) {
            q.stats.page_faults.inc();
        }
        let fault = PageFault {
            token,
            qpn,
            mkey,
            va,
            pa,
            gvmi,
            access,
            stage,
            estimate_ns: estimate,
        };
        log::debug!("hca: page fault {fault:?}");
        if let Some(irq) = self.post_event(target, Event::PageFault(fault)) {
            env.irq.raise(irq);
        }
        Some((token, estimate))
    }

    /// The region view of `qpn`'s function and PD.
    pub(crate) fn region_access(&self, qpn: Qpn) -> Option<RegionAccess<'_>> {
        let qp = self.qps.get(&qpn)?;
        let f = self.functions.get(&qp.ctx.function)?;
        Some(RegionAccess {
            mpt: &self.mpt,
            mtt: &f.mtt,
            function: qp.ctx.function,
            pd: qp.ctx.pd,
        })
    }

    /// The GVMI of `qpn`'s function (its queues live in that VM's memory).
    pub(crate) fn qp_gvmi(&self, qpn: Qpn) -> Gvmi {
        self.qps
            .get(&qpn)
            .and_then(|q| self.functions.get(&q.ctx.function))
            .map_or(Gvmi::HOST, |f| f.config.gvmi)
    }
}

impl<E: ?Sized> MmioDevice<E> for Hca {
    fn mmio_size(&self) -> u64 {
        doorbell::PAGE * (u64::from(u16::MAX) + 1)
    }

    fn mmio_read(&mut self, _offset: u64, _width: Width, _env: &mut E) -> u64 {
        // Doorbells are write-only.
        0
    }

    fn mmio_write(&mut self, offset: u64, width: Width, value: u64, _env: &mut E) {
        let f = FunctionId((offset / doorbell::PAGE) as u16);
        if width != Width::U64 {
            self.stats.bad_doorbells.inc();
            return;
        }
        self.doorbell(f, offset % doorbell::PAGE, value);
    }
}

/// A bounded queue helper: pushes unless full.
pub(crate) fn push_bounded<T>(q: &mut VecDeque<T>, cap: usize, v: T) -> bool {
    if q.len() >= cap {
        false
    } else {
        q.push_back(v);
        true
    }
}

//! The requester: fetches send WQEs, segments them into packets by path
//! MTU, keeps what is unacknowledged, and handles ACKs, NAKs, RNR NAKs,
//! READ responses and the transport and RNR timers (go-back-N).

use std::collections::VecDeque;

use iovirt_core::{AccessKind, Gpa, SimDuration, SimTime};
use zerocopy::FromBytes;

use super::{Dir, HcaEnv, Miss};
use crate::cqe::{Cqe, CqeOpcode, CqeStatus};
use crate::device::Hca;
use crate::ids::{Mkey, Qpn};
use crate::mr::Access;
use crate::qp::{QpContext, QpState, QpType};
use crate::wire::{
    AethSyndrome, BthRepr, Deth, NakCode, Opcode, Operation, Position, Psn, Reth, RnrTimer,
    RocePacket, transport_timeout_ns,
};
use crate::wqe::{Remote, SendWqe, SendWqeLayout, WQE_STRIDE, WqeFlags, WqeOpcode};

/// A send WQE between fetch and completion.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InFlight {
    /// The WQE counter.
    index: u16,
    wqe: SendWqe,
    /// PSN of the first packet (READ: of the request and first response).
    first_psn: Psn,
    /// PSNs the message uses.
    npkts: u32,
    /// RDMA READ: response bytes placed.
    read_bytes: u32,
    /// Acknowledged (READ: every response placed).
    done: bool,
}

impl InFlight {
    fn last_psn(&self) -> Psn {
        self.first_psn.add(self.npkts.saturating_sub(1))
    }

    fn holds(&self, psn: Psn) -> bool {
        let d = psn.diff(self.first_psn);
        d >= 0 && (d as u32) < self.npkts
    }
}

/// A fault the requester waits on (gathering a request, or placing a
/// READ response): no NAK goes out, the QP just waits.
#[derive(Debug, Clone, Copy)]
struct Stall {
    token: u32,
    mkey: Mkey,
    since: SimTime,
}

/// The requester half of a QP.
#[derive(Debug, Clone)]
pub(crate) struct Requester {
    inflight: VecDeque<InFlight>,
    cap: usize,
    /// The counter of the next WQE to fetch.
    next_fetch: u16,
    /// Index into `inflight` of the message being sent.
    cur: usize,
    /// Bytes of it already sent.
    cur_offset: u32,
    /// The next PSN to send.
    psn: Psn,
    /// Packets sent and not acknowledged exist.
    pub(crate) started: bool,
    retry_left: u8,
    rnr_left: u8,
    deadline: Option<SimTime>,
    rnr_until: Option<SimTime>,
    stall: Option<Stall>,
    /// The highest PSN sent so far.
    max_sent: Option<Psn>,
}

impl Requester {
    pub(crate) fn new(cap: usize) -> Requester {
        Requester {
            inflight: VecDeque::with_capacity(cap),
            cap,
            next_fetch: 0,
            cur: 0,
            cur_offset: 0,
            psn: Psn::new(0),
            started: false,
            retry_left: 7,
            rnr_left: 7,
            deadline: None,
            rnr_until: None,
            stall: None,
            max_sent: None,
        }
    }

    /// Whether `psn` was sent before (a retransmission).
    fn is_resend(&self, psn: Psn) -> bool {
        self.max_sent.is_some_and(|m| psn.diff(m) <= 0)
    }

    fn note_sent(&mut self, psn: Psn) {
        if !self.is_resend(psn) {
            self.max_sent = Some(psn);
        }
    }

    pub(crate) fn set_psn(&mut self, psn: u32, ctx: &QpContext) {
        self.psn = Psn::new(psn);
        self.retry_left = ctx.retry_cnt;
        self.rnr_left = ctx.rnr_retry;
    }

    /// The counter of the next WQE the HCA fetches.
    pub(crate) fn fetched(&self) -> u16 {
        self.next_fetch
    }

    pub(crate) fn next_timer(&self) -> Option<SimTime> {
        match (self.rnr_until, self.deadline) {
            (Some(r), _) => Some(r),
            (None, d) => d,
        }
    }

    pub(crate) fn fault_mkey(&self, token: u32) -> Option<Mkey> {
        self.stall.filter(|s| s.token == token).map(|s| s.mkey)
    }

    /// The WQE counters to flush: in flight, then posted and not fetched.
    pub(crate) fn drain_for_flush(&mut self, sq_pi: u16) -> Vec<u16> {
        let mut out: Vec<u16> = self.inflight.drain(..).map(|w| w.index).collect();
        while self.next_fetch != sq_pi {
            out.push(self.next_fetch);
            self.next_fetch = self.next_fetch.wrapping_add(1);
        }
        self.cur = 0;
        self.cur_offset = 0;
        self.deadline = None;
        self.rnr_until = None;
        self.stall = None;
        out
    }

    /// Rewinds to resend from `psn` (go-back-N); `false` if no message
    /// holds it.
    fn rewind(&mut self, psn: Psn, mtu: u32) -> bool {
        let Some(i) = self.inflight.iter().position(|w| !w.done && w.holds(psn)) else {
            return false;
        };
        let Some(w) = self.inflight.get(i) else {
            return false;
        };
        let pkt = psn.diff(w.first_psn) as u32;
        self.cur = i;
        self.cur_offset = if w.wqe.opcode == WqeOpcode::RdmaRead {
            w.read_bytes
        } else {
            pkt * mtu
        };
        self.psn = if w.wqe.opcode == WqeOpcode::RdmaRead {
            w.first_psn.add(w.read_bytes / mtu)
        } else {
            psn
        };
        true
    }
}

/// The wire opcode of packet `pos` of a message.
fn request_opcode(t: QpType, op: WqeOpcode, pos: Position) -> Opcode {
    use Position::*;
    let base = match (op, pos) {
        (WqeOpcode::Send | WqeOpcode::SendImm, First) => 0x00,
        (WqeOpcode::Send | WqeOpcode::SendImm, Middle) => 0x01,
        (WqeOpcode::Send, Last) => 0x02,
        (WqeOpcode::SendImm, Last) => 0x03,
        (WqeOpcode::Send, Only) => 0x04,
        (WqeOpcode::SendImm, Only) => 0x05,
        (WqeOpcode::RdmaWrite | WqeOpcode::RdmaWriteImm, First) => 0x06,
        (WqeOpcode::RdmaWrite | WqeOpcode::RdmaWriteImm, Middle) => 0x07,
        (WqeOpcode::RdmaWrite, Last) => 0x08,
        (WqeOpcode::RdmaWriteImm, Last) => 0x09,
        (WqeOpcode::RdmaWrite, Only) => 0x0a,
        (WqeOpcode::RdmaWriteImm, Only) => 0x0b,
        (WqeOpcode::RdmaRead, _) => 0x0c,
    };
    Opcode(match t {
        QpType::Rc => base,
        QpType::Uc => 0x20 + base,
        QpType::Ud => 0x60 + base,
    })
}

/// The completion opcode of a send WQE.
fn send_cqe_opcode(op: WqeOpcode) -> CqeOpcode {
    match op {
        WqeOpcode::Send | WqeOpcode::SendImm => CqeOpcode::Send,
        WqeOpcode::RdmaWrite | WqeOpcode::RdmaWriteImm => CqeOpcode::RdmaWrite,
        WqeOpcode::RdmaRead => CqeOpcode::RdmaRead,
    }
}

impl Hca {
    /// Sends the next request packet of `qpn`, if it has one and may.
    pub(crate) fn requester_step(&mut self, qpn: Qpn, env: &mut HcaEnv<'_>) -> bool {
        let Some(qp) = self.qps.get(&qpn) else {
            return false;
        };
        if !matches!(qp.ctx.state, QpState::Rts)
            || qp.req.rnr_until.is_some()
            || qp.req.stall.is_some()
        {
            return false;
        }
        if qp.req.cur >= qp.req.inflight.len() && !self.fetch_wqe(qpn, env) {
            return false;
        }
        self.send_request_packet(qpn, env)
    }

    /// Reads the next posted send WQE into the in-flight list.
    fn fetch_wqe(&mut self, qpn: Qpn, env: &mut HcaEnv<'_>) -> bool {
        let gvmi = self.qp_gvmi(qpn);
        let Some(qp) = self.qps.get_mut(&qpn) else {
            return false;
        };
        let r = &mut qp.req;
        if r.next_fetch == qp.sq_pi || r.inflight.len() >= r.cap {
            return false;
        }
        // A fence waits for every earlier RDMA READ to complete.
        let index = r.next_fetch;
        let slot = u64::from(index) & u64::from(qp.ctx.sq.entries() - 1);
        let addr = Gpa::new(qp.ctx.sq.base.raw().wrapping_add(slot * WQE_STRIDE));
        let mut raw = [0u8; WQE_STRIDE as usize];
        if env.mem.dma_read(gvmi, addr, &mut raw).is_err() {
            log::warn!("hca: {qpn} send queue unreachable at {addr}");
            self.qp_fatal(qpn, env);
            return false;
        }
        let Ok(layout) = SendWqeLayout::read_from_bytes(&raw) else {
            return false;
        };
        let parsed = SendWqe::parse(&layout, qp.ctx.qp_type == QpType::Ud);
        let mtu = qp.ctx.path_mtu.bytes();
        let wqe = match parsed {
            Ok(w)
                if w.flags.contains(WqeFlags::FENCE)
                    && r.inflight
                        .iter()
                        .any(|x| x.wqe.opcode == WqeOpcode::RdmaRead && !x.done) =>
            {
                let _ = w;
                return false;
            }
            Ok(w) if qp.ctx.qp_type == QpType::Ud && w.length() > u64::from(mtu) => {
                log::debug!("hca: {qpn} UD send of {} bytes over the MTU", w.length());
                Err(CqeStatus::LocalLengthError)
            }
            Ok(w) if qp.ctx.qp_type == QpType::Uc && w.opcode == WqeOpcode::RdmaRead => {
                Err(CqeStatus::LocalQpOperationError)
            }
            Ok(w) => Ok(w),
            Err(e) => {
                log::debug!("hca: {qpn} malformed send WQE {index}: {e}");
                Err(CqeStatus::LocalQpOperationError)
            }
        };
        r.next_fetch = index.wrapping_add(1);
        match wqe {
            Ok(wqe) => {
                let len = wqe.length() as u32;
                let npkts = len.div_ceil(mtu).max(1);
                r.inflight.push_back(InFlight {
                    index,
                    wqe,
                    first_psn: r.psn,
                    npkts,
                    read_bytes: 0,
                    done: false,
                });
                true
            }
            Err(status) => {
                let cq = qp.ctx.send_cq;
                qp.stats.send_completions.inc();
                let cqe = Cqe {
                    qpn,
                    wqe_index: index,
                    opcode: CqeOpcode::Send,
                    status,
                    byte_len: 0,
                    imm: None,
                    src_qp: 0,
                    solicited: false,
                };
                self.complete(cq, cqe, env);
                self.send_error(qpn, env);
                false
            }
        }
    }

    /// A send failed locally: RC and UC QPs go to the error state, UD to
    /// the send-queue error state.
    fn send_error(&mut self, qpn: Qpn, env: &mut HcaEnv<'_>) {
        let ud = self
            .qps
            .get(&qpn)
            .is_some_and(|q| q.ctx.qp_type == QpType::Ud);
        if ud {
            if let Some(q) = self.qps.get_mut(&qpn) {
                q.ctx.state = QpState::Sqe;
            }
        } else {
            self.qp_fatal(qpn, env);
        }
    }

    /// Builds and sends the packet at the requester's position.
    fn send_request_packet(&mut self, qpn: Qpn, env: &mut HcaEnv<'_>) -> bool {
        let Some(qp) = self.qps.get(&qpn) else {
            return false;
        };
        let Some(w) = qp.req.inflight.get(qp.req.cur).copied() else {
            return false;
        };
        let ctx = &qp.ctx;
        let mtu = ctx.path_mtu.bytes();
        let total = w.wqe.length() as u32;
        let off = qp.req.cur_offset;
        let psn = qp.req.psn;
        let read = w.wqe.opcode == WqeOpcode::RdmaRead;
        let chunk = if read { 0 } else { (total - off).min(mtu) };
        let first = off == 0;
        let last = read || off + chunk >= total;
        let pos = match (first, last) {
            (true, true) => Position::Only,
            (true, false) => Position::First,
            (false, true) => Position::Last,
            (false, false) => Position::Middle,
        };
        let opcode = request_opcode(ctx.qp_type, w.wqe.opcode, pos);
        let (dest_qp, av, qkey) = match w.wqe.remote {
            Remote::Ud { ah, dest_qpn, qkey } => {
                let av = self
                    .functions
                    .get(&ctx.function)
                    .and_then(|f| f.ahs.get(ah as usize).copied().flatten());
                let Some(av) = av else {
                    return self.fail_wqe(
                        qpn,
                        w.index,
                        w.wqe.opcode,
                        CqeStatus::LocalQpOperationError,
                        env,
                    );
                };
                (dest_qpn.raw(), av, qkey)
            }
            _ => (ctx.dest_qpn.raw(), ctx.av, 0),
        };
        let mut bth = BthRepr::new(opcode, dest_qp, psn);
        bth.ack_req = last && ctx.qp_type == QpType::Rc;
        bth.solicited = last && w.wqe.flags.contains(WqeFlags::SOLICITED);
        let mut headers = self.headers_for(ctx.function, av, qpn, bth);
        if opcode.has_reth() {
            let (va, rkey) = match w.wqe.remote {
                Remote::Rdma { va, rkey } => (va, rkey.0),
                _ => (0, 0),
            };
            headers.reth = Some(if read {
                // A resent READ asks for what is still missing.
                Reth {
                    va: va.wrapping_add(u64::from(off)),
                    rkey,
                    dma_len: total - off,
                }
            } else {
                Reth {
                    va,
                    rkey,
                    dma_len: total,
                }
            });
        }
        if opcode.has_deth() {
            headers.deth = Some(Deth {
                qkey,
                src_qp: qpn.raw(),
            });
        }
        if opcode.has_immdt() {
            headers.immediate = Some(w.wqe.imm);
        }
        // Gather the payload from the WQE's list.
        let mut payload = std::mem::take(&mut self.scratch);
        payload.clear();
        payload.resize(chunk as usize, 0);
        if chunk > 0 {
            let Some(access) = self.region_access(qpn) else {
                self.scratch = payload;
                return false;
            };
            let mut skip = u64::from(off);
            let mut done = 0usize;
            let mut result = Ok(());
            for sge in w.wqe.sges() {
                if done >= payload.len() {
                    break;
                }
                let len = u64::from(sge.length);
                if skip >= len {
                    skip -= len;
                    continue;
                }
                let n = ((len - skip) as usize).min(payload.len() - done);
                let Some(buf) = payload.get_mut(done..done + n) else {
                    break;
                };
                if let Err(m) = access.copy(
                    env.mem,
                    sge.lkey,
                    sge.addr.wrapping_add(skip),
                    Access::empty(),
                    Dir::Read(buf),
                ) {
                    result = Err(m);
                    break;
                }
                done += n;
                skip = 0;
            }
            if let Err(m) = result {
                self.scratch = payload;
                return self.gather_miss(qpn, w, m, env);
            }
        }
        let mut frame = std::mem::take(&mut self.frame);
        let emitted = headers.emit(&payload, &mut frame);
        self.scratch = payload;
        if let Err(e) = emitted {
            log::warn!("hca: {qpn} could not emit {opcode:?}: {e}");
            self.frame = frame;
            return self.fail_wqe(
                qpn,
                w.index,
                w.wqe.opcode,
                CqeStatus::LocalQpOperationError,
                env,
            );
        }
        env.wire.send(&frame);
        self.frame = frame;
        self.stats.tx_packets.inc();
        self.stats.tx_payload_bytes.add(u64::from(chunk));
        let timeout = transport_timeout_ns;
        let Some(qp) = self.qps.get_mut(&qpn) else {
            return true;
        };
        qp.stats.tx_packets.inc();
        qp.stats.tx_payload_bytes.add(u64::from(chunk));
        let r = &mut qp.req;
        // Sent before (a rewind): a retransmission.
        if r.is_resend(psn) {
            qp.stats.retransmitted_packets.inc();
            self.stats.retransmitted_packets.inc();
        }
        r.note_sent(psn);
        r.psn = if read {
            psn.add(w.npkts - (off / mtu))
        } else {
            psn.add(1)
        };
        r.started = true;
        if last {
            r.cur += 1;
            r.cur_offset = 0;
        } else {
            r.cur_offset = off + chunk;
        }
        match qp.ctx.qp_type {
            QpType::Rc => {
                if r.deadline.is_none()
                    && let Some(t) = timeout(qp.ctx.timeout)
                {
                    r.deadline = Some(env.now + SimDuration::from_nanos(t));
                }
            }
            // Unreliable: complete as soon as the last packet is out.
            QpType::Uc | QpType::Ud => {
                if last {
                    if let Some(x) = r.inflight.get_mut(r.cur - 1) {
                        x.done = true;
                    }
                    self.retire(qpn, env);
                }
            }
        }
        true
    }

    /// A gather missed: a protection error fails the WQE; a fault stalls
    /// the QP until it is resumed (seed 001, paragraph 0062: no NAK, the
    /// data waits in local memory).
    fn gather_miss(&mut self, qpn: Qpn, w: InFlight, miss: Miss, env: &mut HcaEnv<'_>) -> bool {
        match miss {
            Miss::Fault { mkey, .. } => {
                if let Some((token, _)) = self.raise_fault(qpn, miss, AccessKind::Read, env)
                    && let Some(q) = self.qps.get_mut(&qpn)
                {
                    q.req.stall = Some(Stall {
                        token,
                        mkey,
                        since: env.now,
                    });
                }
                false
            }
            Miss::Protection(_) | Miss::Stage2(_) => {
                log::debug!("hca: {qpn} WQE {} gather refused: {miss:?}", w.index);
                self.fail_wqe(
                    qpn,
                    w.index,
                    w.wqe.opcode,
                    CqeStatus::LocalProtectionError,
                    env,
                )
            }
        }
    }

    /// Completes WQE `index` with an error and moves the QP to its error state.
    fn fail_wqe(
        &mut self,
        qpn: Qpn,
        index: u16,
        op: WqeOpcode,
        status: CqeStatus,
        env: &mut HcaEnv<'_>,
    ) -> bool {
        let Some(qp) = self.qps.get_mut(&qpn) else {
            return false;
        };
        let cq = qp.ctx.send_cq;
        qp.req.inflight.retain(|w| w.index != index);
        qp.req.cur = qp.req.cur.min(qp.req.inflight.len());
        qp.stats.send_completions.inc();
        let cqe = Cqe {
            qpn,
            wqe_index: index,
            opcode: send_cqe_opcode(op),
            status,
            byte_len: 0,
            imm: None,
            src_qp: 0,
            solicited: false,
        };
        self.complete(cq, cqe, env);
        self.send_error(qpn, env);
        false
    }

    /// Completes the finished WQEs at the head, in order.
    fn retire(&mut self, qpn: Qpn, env: &mut HcaEnv<'_>) {
        loop {
            let Some(qp) = self.qps.get_mut(&qpn) else {
                return;
            };
            let r = &mut qp.req;
            let Some(w) = r.inflight.front().copied().filter(|w| w.done) else {
                if r.inflight.iter().all(|w| w.done) || r.cur == 0 {
                    // Nothing sent is outstanding: no timer.
                    if r.cur == 0 {
                        r.deadline = None;
                    }
                }
                return;
            };
            r.inflight.pop_front();
            r.cur = r.cur.saturating_sub(1);
            qp.stats.send_completions.inc();
            let cq = qp.ctx.send_cq;
            if w.wqe.flags.contains(WqeFlags::SIGNALED) {
                let cqe = Cqe {
                    qpn,
                    wqe_index: w.index,
                    opcode: send_cqe_opcode(w.wqe.opcode),
                    status: CqeStatus::Success,
                    byte_len: w.wqe.length() as u32,
                    imm: None,
                    src_qp: 0,
                    solicited: false,
                };
                self.complete(cq, cqe, env);
            }
        }
    }

    /// Handles an ACK, NAK or READ response for `qpn`.
    pub(crate) fn requester_receive(
        &mut self,
        qpn: Qpn,
        pkt: &RocePacket<'_>,
        env: &mut HcaEnv<'_>,
    ) {
        let Some(qp) = self.qps.get_mut(&qpn) else {
            return;
        };
        if qp.ctx.qp_type != QpType::Rc || !matches!(qp.ctx.state, QpState::Rts | QpState::Sqe) {
            qp.stats.rx_dropped.inc();
            self.stats.rx_dropped.inc();
            return;
        }
        let psn = pkt.headers.bth.psn;
        let op = pkt.headers.bth.opcode;
        if op.operation() == Some(Operation::RdmaReadResponse) {
            self.read_response(qpn, pkt, env);
            return;
        }
        let Some(aeth) = pkt.headers.aeth else {
            return;
        };
        match aeth.syndrome {
            AethSyndrome::Ack { .. } => {
                self.acknowledge(qpn, psn, env);
                if let Some(q) = self.qps.get_mut(&qpn)
                    && q.req.rnr_until.is_some()
                {
                    // Seed 001, paragraph 0060: an unsolicited ACK after an
                    // RNR NAK means the responder is ready; retry at once.
                    q.req.rnr_until = None;
                    let mtu = q.ctx.path_mtu.bytes();
                    q.req.rewind(psn.add(1), mtu);
                }
            }
            AethSyndrome::RnrNak { timer } => self.rnr_nak(qpn, psn, timer, env),
            AethSyndrome::Nak(NakCode::PsnSequenceError) => {
                self.stats.naks_received.inc();
                self.acknowledge(qpn, psn.add(Psn::MODULUS - 1), env);
                if let Some(q) = self.qps.get_mut(&qpn) {
                    let mtu = q.ctx.path_mtu.bytes();
                    q.req.rewind(psn, mtu);
                }
            }
            AethSyndrome::Nak(code) => {
                self.stats.naks_received.inc();
                self.acknowledge(qpn, psn.add(Psn::MODULUS - 1), env);
                let status = match code {
                    NakCode::RemoteAccessError => CqeStatus::RemoteAccessError,
                    NakCode::InvalidRequest => CqeStatus::RemoteInvalidRequest,
                    _ => CqeStatus::RemoteOperationalError,
                };
                let failed = self.qps.get(&qpn).and_then(|q| {
                    q.req
                        .inflight
                        .iter()
                        .find(|w| !w.done && w.holds(psn))
                        .copied()
                });
                if let Some(w) = failed {
                    self.fail_wqe(qpn, w.index, w.wqe.opcode, status, env);
                }
            }
            AethSyndrome::Reserved(_) => {}
        }
    }

    /// Marks every message whose last PSN is at or before `psn` acknowledged.
    fn acknowledge(&mut self, qpn: Qpn, psn: Psn, env: &mut HcaEnv<'_>) {
        let Some(qp) = self.qps.get_mut(&qpn) else {
            return;
        };
        let r = &mut qp.req;
        let mut progressed = false;
        for (i, w) in r.inflight.iter_mut().enumerate() {
            // Only messages already sent in full can be acknowledged; a READ
            // completes by its responses, never by an ACK.
            if i >= r.cur || psn.diff(w.last_psn()) < 0 {
                break;
            }
            if w.wqe.opcode == WqeOpcode::RdmaRead && !w.done {
                break;
            }
            if !w.done {
                w.done = true;
                progressed = true;
            }
        }
        if progressed {
            r.retry_left = qp.ctx.retry_cnt;
            r.rnr_left = qp.ctx.rnr_retry;
            r.deadline = transport_timeout_ns(qp.ctx.timeout)
                .filter(|_| r.cur > 0)
                .map(|t| env.now + SimDuration::from_nanos(t));
        }
        self.retire(qpn, env);
    }

    fn rnr_nak(&mut self, qpn: Qpn, psn: Psn, timer: RnrTimer, env: &mut HcaEnv<'_>) {
        self.stats.rnr_naks_received.inc();
        self.acknowledge(qpn, psn.add(Psn::MODULUS - 1), env);
        let Some(qp) = self.qps.get_mut(&qpn) else {
            return;
        };
        qp.stats.rnr_naks_received.inc();
        let infinite = qp.ctx.rnr_retry == 7;
        if !infinite && qp.req.rnr_left == 0 {
            let failed = qp
                .req
                .inflight
                .iter()
                .find(|w| !w.done && w.holds(psn))
                .copied();
            if let Some(w) = failed {
                self.fail_wqe(qpn, w.index, w.wqe.opcode, CqeStatus::RnrRetryExceeded, env);
            }
            return;
        }
        if !infinite {
            qp.req.rnr_left -= 1;
        }
        let mtu = qp.ctx.path_mtu.bytes();
        qp.req.rewind(psn, mtu);
        qp.req.deadline = None;
        qp.req.rnr_until = Some(env.now + SimDuration::from_nanos(timer.to_ns()));
    }

    /// Places a READ response into the oldest outstanding READ.
    fn read_response(&mut self, qpn: Qpn, pkt: &RocePacket<'_>, env: &mut HcaEnv<'_>) {
        let psn = pkt.headers.bth.psn;
        let Some(qp) = self.qps.get(&qpn) else {
            return;
        };
        let mtu = qp.ctx.path_mtu.bytes();
        let Some(w) = qp
            .req
            .inflight
            .iter()
            .take(qp.req.cur)
            .find(|w| w.wqe.opcode == WqeOpcode::RdmaRead && !w.done)
            .copied()
        else {
            self.drop_at(qpn);
            return;
        };
        // Responses arrive in order; anything else waits for the timer.
        let expected = w.first_psn.add(w.read_bytes / mtu);
        let total = w.wqe.length() as u32;
        let n = pkt.payload.len() as u32;
        let last = matches!(
            pkt.headers.bth.opcode.position(),
            Some(Position::Last | Position::Only)
        );
        let size_ok = if last {
            w.read_bytes + n == total
        } else {
            n == mtu && w.read_bytes + n < total
        };
        if psn != expected || !size_ok {
            self.drop_at(qpn);
            return;
        }
        // Earlier messages are implicitly acknowledged by a response.
        self.acknowledge(qpn, w.first_psn.add(Psn::MODULUS - 1), env);
        let Some(access) = self.region_access(qpn) else {
            return;
        };
        let mut skip = u64::from(w.read_bytes);
        let mut done = 0usize;
        let mut miss = None;
        for sge in w.wqe.sges() {
            if done >= pkt.payload.len() {
                break;
            }
            let len = u64::from(sge.length);
            if skip >= len {
                skip -= len;
                continue;
            }
            let k = ((len - skip) as usize).min(pkt.payload.len() - done);
            let Some(piece) = pkt.payload.get(done..done + k) else {
                break;
            };
            if let Err(m) = access.copy(
                env.mem,
                sge.lkey,
                sge.addr.wrapping_add(skip),
                Access::LOCAL_WRITE,
                Dir::Write(piece),
            ) {
                miss = Some(m);
                break;
            }
            done += k;
            skip = 0;
        }
        match miss {
            Some(m @ Miss::Fault { mkey, .. }) => {
                // Drop the response; the READ is asked again from here once
                // the page is back.
                if let Some((token, _)) = self.raise_fault(qpn, m, AccessKind::Write, env)
                    && let Some(q) = self.qps.get_mut(&qpn)
                {
                    q.req.stall = Some(Stall {
                        token,
                        mkey,
                        since: env.now,
                    });
                    q.req.deadline = None;
                    q.req.rewind(psn, mtu);
                }
            }
            Some(m) => {
                log::debug!("hca: {qpn} READ response placement refused: {m:?}");
                self.fail_wqe(
                    qpn,
                    w.index,
                    w.wqe.opcode,
                    CqeStatus::LocalProtectionError,
                    env,
                );
            }
            None => {
                let Some(q) = self.qps.get_mut(&qpn) else {
                    return;
                };
                q.stats.rx_payload_bytes.add(u64::from(n));
                self.stats.rx_payload_bytes.add(u64::from(n));
                if let Some(x) = q.req.inflight.iter_mut().find(|x| x.index == w.index) {
                    x.read_bytes += n;
                    if last {
                        x.done = true;
                    }
                }
                q.req.retry_left = q.ctx.retry_cnt;
                if last {
                    self.retire(qpn, env);
                }
            }
        }
    }

    fn drop_at(&mut self, qpn: Qpn) {
        self.stats.rx_dropped.inc();
        if let Some(q) = self.qps.get_mut(&qpn) {
            q.stats.rx_dropped.inc();
        }
    }

    /// The transport or RNR timer of `qpn` fired.
    pub(crate) fn requester_timer(&mut self, qpn: Qpn, env: &mut HcaEnv<'_>) {
        let Some(qp) = self.qps.get_mut(&qpn) else {
            return;
        };
        let mtu = qp.ctx.path_mtu.bytes();
        if qp.req.rnr_until.is_some_and(|t| t <= env.now) {
            // RNR wait over: resend from the NAKed packet (rewound already).
            qp.req.rnr_until = None;
            return;
        }
        if qp.req.deadline.is_none_or(|t| t > env.now) {
            return;
        }
        qp.req.deadline = None;
        qp.stats.timeouts.inc();
        self.stats.timeouts.inc();
        let Some(w) = qp.req.inflight.iter().find(|w| !w.done).copied() else {
            return;
        };
        if qp.req.retry_left == 0 {
            self.fail_wqe(qpn, w.index, w.wqe.opcode, CqeStatus::RetryExceeded, env);
            return;
        }
        qp.req.retry_left -= 1;
        let from = if w.wqe.opcode == WqeOpcode::RdmaRead {
            w.first_psn.add(w.read_bytes / mtu)
        } else {
            w.first_psn
        };
        qp.req.rewind(from, mtu);
    }

    /// Resumes a requester stalled on fault `token`.
    pub(crate) fn resume_requester(&mut self, qpn: Qpn, token: u32, now: SimTime) {
        let Some(qp) = self.qps.get_mut(&qpn) else {
            return;
        };
        if let Some(s) = qp.req.stall.filter(|s| s.token == token) {
            qp.stats
                .fault_wait_ns
                .add(now.saturating_since(s.since).as_nanos());
            qp.req.stall = None;
        }
    }
}

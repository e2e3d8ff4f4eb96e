//! The requester's receive side: ACKs, NAKs and RNR NAKs, READ responses,
//! and the transport and RNR timers.

use iovirt_core::{AccessKind, SimDuration, SimTime};

use super::{Dir, HcaEnv, Miss};
use crate::cqe::CqeStatus;
use crate::device::Hca;
use crate::ids::Qpn;
use crate::mr::Access;
use crate::qp::{QpState, QpType};
use crate::wire::{
    AethSyndrome, NakCode, Operation, Position, Psn, RnrTimer, RocePacket, transport_timeout_ns,
};
use crate::wqe::WqeOpcode;

impl Hca {
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
    pub(super) fn acknowledge(&mut self, qpn: Qpn, psn: Psn, env: &mut HcaEnv<'_>) {
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

    pub(super) fn rnr_nak(&mut self, qpn: Qpn, psn: Psn, timer: RnrTimer, env: &mut HcaEnv<'_>) {
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
    pub(super) fn read_response(&mut self, qpn: Qpn, pkt: &RocePacket<'_>, env: &mut HcaEnv<'_>) {
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
            Some(m @ Miss::Fault { .. }) => {
                // Drop the response; the READ is asked again from here once
                // the page is back.
                if let Some(req) = self.stall_on_fault(qpn, m, AccessKind::Write, env) {
                    req.deadline = None;
                    req.rewind(psn, mtu);
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

    pub(super) fn drop_at(&mut self, qpn: Qpn) {
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

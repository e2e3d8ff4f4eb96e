//! The responder: checks each request's PSN and opcode sequence, places
//! SEND and RDMA WRITE payloads through both translation stages, answers
//! with ACKs and NAKs, serves RDMA READs, and, on a page fault, follows
//! seed 001's FIG. 4: RNR NAK, drop, suspend only this QP, unsolicited ACK
//! once the page is back (or seed 004's hold for a short fault).

use std::collections::VecDeque;

use iovirt_core::{AccessKind, Gpa, SimTime};
use zerocopy::FromBytes;

use super::{Dir, HcaEnv, Miss, push_bounded};
use crate::cqe::{Cqe, CqeOpcode, CqeStatus};
use crate::device::Hca;
use crate::ids::{Mkey, Qpn};
use crate::mr::Access;
use crate::qp::{QpState, QpType};
use crate::wire::{AethSyndrome, NakCode, Opcode, Operation, Position, Psn, RnrTimer, RocePacket};
use crate::wqe::{RecvWqe, RecvWqeLayout, WQE_STRIDE};

/// RDMA READs a responder queues (IB's max_dest_rd_atomic).
pub(super) const MAX_READS: usize = 16;

/// A SEND being placed into a receive WQE.
#[derive(Debug, Clone, Copy)]
pub(super) struct RecvInProgress {
    pub(super) wqe: RecvWqe,
    pub(super) index: u16,
    pub(super) offset: u32,
}

/// An RDMA WRITE being placed.
#[derive(Debug, Clone, Copy)]
pub(super) struct WriteInProgress {
    pub(super) rkey: Mkey,
    pub(super) va: u64,
    pub(super) total: u32,
    pub(super) offset: u32,
}

/// An RDMA READ being answered.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReadResponse {
    pub(super) psn: Psn,
    pub(super) rkey: Mkey,
    pub(super) va: u64,
    pub(super) len: u32,
    pub(super) sent: u32,
}

/// The responder's wait on a page fault.
#[derive(Debug, Clone, Copy)]
pub(super) struct Suspended {
    pub(super) token: u32,
    pub(super) mkey: Mkey,
    pub(super) since: SimTime,
    /// The RNR timer code sent (or `None` when the packet was held).
    pub(super) rnr: Option<RnrTimer>,
}

/// The responder half of a QP.
#[derive(Debug, Clone)]
pub(crate) struct Responder {
    pub(super) epsn: Psn,
    pub(super) msn: u32,
    pub(super) recv: Option<RecvInProgress>,
    pub(super) write: Option<WriteInProgress>,
    /// A sequence NAK went out for the current expected PSN.
    pub(super) nak_sent: bool,
    pub(super) fault: Option<Suspended>,
    /// A READ response stalled on a local fault.
    pub(super) read_stall: Option<Suspended>,
    pub(super) reads: VecDeque<ReadResponse>,
    /// ACK (or NAK) to send: syndrome and PSN.
    pub(super) pending: VecDeque<(AethSyndrome, Psn)>,
    /// Packets held during a short fault (seed 004).
    pub(super) held: VecDeque<Vec<u8>>,
    /// The fault is resolved: replay `held`.
    pub(super) replay: bool,
}

impl Responder {
    pub(crate) fn new() -> Responder {
        Responder {
            epsn: Psn::new(0),
            msn: 0,
            recv: None,
            write: None,
            nak_sent: false,
            fault: None,
            read_stall: None,
            reads: VecDeque::with_capacity(MAX_READS),
            pending: VecDeque::with_capacity(4),
            held: VecDeque::new(),
            replay: false,
        }
    }

    pub(crate) fn set_epsn(&mut self, psn: u32) {
        self.epsn = Psn::new(psn);
    }

    pub(crate) fn clear(&mut self) {
        self.recv = None;
        self.write = None;
        self.fault = None;
        self.read_stall = None;
        self.reads.clear();
        self.pending.clear();
        self.held.clear();
    }

    pub(crate) fn fault_mkey(&self, token: u32) -> Option<Mkey> {
        [self.fault, self.read_stall]
            .into_iter()
            .flatten()
            .find(|s| s.token == token)
            .map(|s| s.mkey)
    }

    pub(super) fn queue(&mut self, syndrome: AethSyndrome, psn: Psn) {
        // A newer ACK replaces an older queued one: ACKs are cumulative.
        if matches!(syndrome, AethSyndrome::Ack { .. })
            && let Some(last) = self.pending.back_mut()
            && matches!(last.0, AethSyndrome::Ack { .. })
        {
            *last = (syndrome, psn);
            return;
        }
        push_bounded(&mut self.pending, 4, (syndrome, psn));
    }
}

pub(super) const ACK: AethSyndrome = AethSyndrome::Ack {
    credits: AethSyndrome::UNLIMITED_CREDITS,
};

/// What placing a packet came to.
pub(super) enum Placed {
    Done,
    /// NAK with this code and move the QP to error.
    Nak(NakCode),
    /// Receiver not ready (no receive WQE).
    NoRecvWqe,
    /// A page is missing.
    Fault(Miss),
}

impl Hca {
    /// Handles a request packet for `qpn`.
    pub(crate) fn responder_receive(
        &mut self,
        qpn: Qpn,
        pkt: &RocePacket<'_>,
        frame: &[u8],
        env: &mut HcaEnv<'_>,
    ) {
        let Some(qp) = self.qps.get_mut(&qpn) else {
            return;
        };
        if !matches!(qp.ctx.state, QpState::Rtr | QpState::Rts | QpState::Sqe) {
            qp.stats.rx_dropped.inc();
            self.stats.rx_dropped.inc();
            return;
        }
        match qp.ctx.qp_type {
            QpType::Rc => self.rc_request(qpn, pkt, frame, env),
            QpType::Uc => self.uc_request(qpn, pkt, env),
            QpType::Ud => self.ud_request(qpn, pkt, env),
        }
    }

    pub(super) fn rc_request(
        &mut self,
        qpn: Qpn,
        pkt: &RocePacket<'_>,
        frame: &[u8],
        env: &mut HcaEnv<'_>,
    ) {
        let hold_cap = self.config.hold_buffer_packets;
        // The device-wide hold count matters only to a suspended QP: count
        // it then, not for every packet.
        let suspended = self.qps.get(&qpn).is_some_and(|q| q.resp.fault.is_some());
        let held_total: usize = if suspended {
            self.qps.values().map(|q| q.resp.held.len()).sum()
        } else {
            0
        };
        let Some(qp) = self.qps.get_mut(&qpn) else {
            return;
        };
        let psn = pkt.headers.bth.psn;
        let r = &mut qp.resp;
        let d = psn.diff(r.epsn);
        if let Some(s) = r.fault {
            // Suspended on a page fault: hold what comes while holding,
            // else answer the retry with another RNR NAK, no new event.
            match s.rnr {
                None if held_total < hold_cap => {
                    r.held.push_back(frame.to_vec());
                    self.stats.held_packets.inc();
                }
                None => {
                    qp.stats.rx_dropped.inc();
                    self.stats.rx_dropped.inc();
                }
                Some(timer) => {
                    if d == 0 {
                        r.queue(AethSyndrome::RnrNak { timer }, psn);
                    }
                    qp.stats.rx_dropped.inc();
                    self.stats.rx_dropped.inc();
                }
            }
            return;
        }
        let op = pkt.headers.bth.opcode;
        if d > 0 {
            // Ahead: a packet was lost. One NAK per gap, the rest dropped.
            if !r.nak_sent {
                r.nak_sent = true;
                let e = r.epsn;
                r.queue(AethSyndrome::Nak(NakCode::PsnSequenceError), e);
            }
            qp.stats.rx_dropped.inc();
            self.stats.rx_dropped.inc();
            return;
        }
        if d < 0 {
            self.stats.duplicates.inc();
            if op == Opcode::RC_RDMA_READ_REQUEST {
                // A duplicate READ is answered again, from memory, after
                // the same checks as the first time (a peer could name any
                // key in a "duplicate").
                let mtu = qp.ctx.path_mtu.bytes();
                let allowed = qp.ctx.access.contains(Access::REMOTE_READ);
                let Some(reth) = pkt.headers.reth.filter(|_| allowed) else {
                    qp.stats.rx_dropped.inc();
                    self.stats.rx_dropped.inc();
                    return;
                };
                let checked = self.region_access(qpn).is_some_and(|a| {
                    a.mpt
                        .check(
                            Mkey(reth.rkey),
                            a.function,
                            a.pd,
                            reth.va,
                            u64::from(reth.dma_len),
                            Access::REMOTE_READ,
                        )
                        .is_ok()
                });
                let Some(qp) = self.qps.get_mut(&qpn) else {
                    return;
                };
                if !checked {
                    qp.stats.rx_dropped.inc();
                    self.stats.rx_dropped.inc();
                    return;
                }
                // The requester goes back to `psn`: responses from there on
                // are sent again, so queued ones at or after it go.
                let r = &mut qp.resp;
                r.reads.retain_mut(|x| {
                    let d = psn.diff(x.psn);
                    if d <= 0 {
                        return false;
                    }
                    let keep = (d as u32).saturating_mul(mtu);
                    x.len = x.len.min(keep);
                    x.sent < x.len
                });
                push_bounded(
                    &mut r.reads,
                    MAX_READS,
                    ReadResponse {
                        psn,
                        rkey: Mkey(reth.rkey),
                        va: reth.va,
                        len: reth.dma_len,
                        sent: 0,
                    },
                );
            } else {
                let last = r.epsn.add(Psn::MODULUS - 1);
                r.queue(ACK, last);
            }
            return;
        }
        match self.place(qpn, pkt, env) {
            Placed::Done => {
                let Some(qp) = self.qps.get_mut(&qpn) else {
                    return;
                };
                let r = &mut qp.resp;
                r.nak_sent = false;
                let mtu = qp.ctx.path_mtu.bytes();
                if op == Opcode::RC_RDMA_READ_REQUEST {
                    let len = pkt.headers.reth.map_or(0, |x| x.dma_len);
                    r.epsn = r.epsn.add(len.div_ceil(mtu).max(1));
                } else {
                    r.epsn = r.epsn.add(1);
                    let end = matches!(op.position(), Some(Position::Last | Position::Only));
                    if pkt.headers.bth.ack_req || end {
                        r.queue(ACK, psn);
                    }
                }
            }
            Placed::Nak(code) => {
                if let Some(q) = self.qps.get_mut(&qpn) {
                    q.resp.queue(AethSyndrome::Nak(code), psn);
                    q.resp.recv = None;
                    q.resp.write = None;
                }
                // Send the NAK before the QP stops sending anything.
                self.responder_step(qpn, env);
                self.qp_fatal(qpn, env);
            }
            Placed::NoRecvWqe => {
                if let Some(q) = self.qps.get_mut(&qpn) {
                    let timer = RnrTimer::new(q.ctx.min_rnr_timer);
                    q.resp.queue(AethSyndrome::RnrNak { timer }, psn);
                    q.stats.rx_dropped.inc();
                }
                self.stats.rx_dropped.inc();
            }
            Placed::Fault(m) => self.responder_fault(qpn, m, psn, frame, env),
        }
    }

    /// Seed 001 FIG. 4 (steps 124-130) with seed 004's choice of mode.
    pub(super) fn responder_fault(
        &mut self,
        qpn: Qpn,
        m: Miss,
        psn: Psn,
        frame: &[u8],
        env: &mut HcaEnv<'_>,
    ) {
        let Miss::Fault { mkey, .. } = m else {
            return;
        };
        let Some((token, estimate)) = self.raise_fault(qpn, m, AccessKind::Write, env) else {
            return;
        };
        let held_total: usize = self.qps.values().map(|q| q.resp.held.len()).sum();
        let threshold = self.config.hold_threshold_ns;
        let hold = estimate.is_some_and(|e| e <= threshold)
            && held_total < self.config.hold_buffer_packets;
        let Some(q) = self.qps.get_mut(&qpn) else {
            return;
        };
        let rnr = if hold {
            q.resp.held.push_back(frame.to_vec());
            self.stats.held_packets.inc();
            None
        } else {
            // The NAK's timer covers the estimate, never below min_rnr_timer.
            let floor = RnrTimer::new(q.ctx.min_rnr_timer);
            let timer = match estimate {
                Some(e) if RnrTimer::at_least(e).to_ns() > floor.to_ns() => RnrTimer::at_least(e),
                _ => floor,
            };
            q.resp.queue(AethSyndrome::RnrNak { timer }, psn);
            q.stats.rx_dropped.inc();
            self.stats.rx_dropped.inc();
            Some(timer)
        };
        q.resp.fault = Some(Suspended {
            token,
            mkey,
            since: env.now,
            rnr,
        });
    }

    /// Resumes a responder suspended on fault `token`: an unsolicited ACK
    /// after an RNR NAK, or the held packets replayed on the next
    /// [`Hca::process`].
    pub(crate) fn resume_responder(&mut self, qpn: Qpn, token: u32, now: SimTime) {
        let Some(qp) = self.qps.get_mut(&qpn) else {
            return;
        };
        if let Some(s) = qp.resp.read_stall.filter(|s| s.token == token) {
            qp.stats
                .fault_wait_ns
                .add(now.saturating_since(s.since).as_nanos());
            qp.resp.read_stall = None;
        }
        let Some(s) = qp.resp.fault.filter(|s| s.token == token) else {
            return;
        };
        qp.stats
            .fault_wait_ns
            .add(now.saturating_since(s.since).as_nanos());
        qp.resp.fault = None;
        if s.rnr.is_some() {
            let last = qp.resp.epsn.add(Psn::MODULUS - 1);
            qp.resp.queue(ACK, last);
            self.stats.unsolicited_acks.inc();
        } else {
            qp.resp.replay = true;
        }
    }

    /// Feeds the packets held during resolved short faults back in.
    pub(crate) fn replay_held(&mut self, env: &mut HcaEnv<'_>) {
        while let Some(qpn) = self
            .qps
            .iter()
            .find(|(_, q)| q.resp.replay)
            .map(|(n, _)| *n)
        {
            let Some(q) = self.qps.get_mut(&qpn) else {
                return;
            };
            q.resp.replay = false;
            let held = std::mem::take(&mut q.resp.held);
            for f in held {
                self.receive(&f, env);
            }
        }
    }

    /// Places a request in order at the expected PSN.
    pub(super) fn place(&mut self, qpn: Qpn, pkt: &RocePacket<'_>, env: &mut HcaEnv<'_>) -> Placed {
        let Some(qp) = self.qps.get(&qpn) else {
            return Placed::Done;
        };
        let op = pkt.headers.bth.opcode;
        let pos = op.position();
        let mtu = qp.ctx.path_mtu.bytes();
        let n = pkt.payload.len() as u32;
        let r = &qp.resp;
        let qp_access = qp.ctx.access;
        // Opcode sequence: a message in progress continues, else one starts.
        let continuing = matches!(pos, Some(Position::Middle | Position::Last));
        let in_send = r.recv.is_some();
        let in_write = r.write.is_some();
        let seq_ok = match op.operation() {
            Some(Operation::Send) => continuing == in_send && !in_write,
            Some(Operation::RdmaWrite) => continuing == in_write && !in_send,
            Some(Operation::RdmaReadRequest) => !in_send && !in_write,
            _ => false,
        };
        if !seq_ok {
            log::debug!("hca: {qpn} opcode {op:?} out of sequence");
            return Placed::Nak(NakCode::InvalidRequest);
        }
        // First and middle packets carry exactly one MTU.
        if matches!(pos, Some(Position::First | Position::Middle)) && n != mtu {
            return Placed::Nak(NakCode::InvalidRequest);
        }
        match op.operation() {
            Some(Operation::Send) => self.place_send(qpn, pkt, env),
            Some(Operation::RdmaWrite) => {
                let (rkey, va, total, offset) = match (r.write, pkt.headers.reth) {
                    (Some(w), _) => (w.rkey, w.va, w.total, w.offset),
                    (None, Some(reth)) => {
                        if !qp_access.contains(Access::REMOTE_WRITE) {
                            return Placed::Nak(NakCode::RemoteAccessError);
                        }
                        // The whole message must be allowed before a byte lands.
                        if let Some(a) = self.region_access(qpn)
                            && let Err(e) = a.mpt.check(
                                Mkey(reth.rkey),
                                a.function,
                                a.pd,
                                reth.va,
                                u64::from(reth.dma_len),
                                Access::REMOTE_WRITE,
                            )
                        {
                            log::debug!("hca: {qpn} RDMA WRITE refused: {e}");
                            return Placed::Nak(NakCode::RemoteAccessError);
                        }
                        (Mkey(reth.rkey), reth.va, reth.dma_len, 0)
                    }
                    (None, None) => return Placed::Nak(NakCode::InvalidRequest),
                };
                let end = matches!(pos, Some(Position::Last | Position::Only));
                // In u64: a hostile RETH may announce up to 4 GiB.
                let upto = u64::from(offset) + u64::from(n);
                if upto > u64::from(total) || (end && upto != u64::from(total)) {
                    return Placed::Nak(NakCode::InvalidRequest);
                }
                // WRITE with immediate consumes a receive WQE: check first.
                if op.has_immdt() && qp.rq_ci == qp.rq_pi {
                    return Placed::NoRecvWqe;
                }
                if n > 0 {
                    let Some(a) = self.region_access(qpn) else {
                        return Placed::Done;
                    };
                    match a.copy(
                        env.mem,
                        rkey,
                        va.wrapping_add(u64::from(offset)),
                        Access::REMOTE_WRITE,
                        Dir::Write(pkt.payload),
                    ) {
                        Ok(_) => {}
                        Err(m @ Miss::Fault { .. }) => return Placed::Fault(m),
                        Err(_) => return Placed::Nak(NakCode::RemoteAccessError),
                    }
                }
                self.count_rx(qpn, n);
                let Some(q) = self.qps.get_mut(&qpn) else {
                    return Placed::Done;
                };
                if end {
                    q.resp.write = None;
                    q.resp.msn = q.resp.msn.wrapping_add(1);
                    if let Some(imm) = pkt.headers.immediate {
                        let index = q.rq_ci;
                        q.rq_ci = q.rq_ci.wrapping_add(1);
                        let cq = q.ctx.recv_cq;
                        q.stats.recv_completions.inc();
                        let cqe = Cqe {
                            qpn,
                            wqe_index: index,
                            opcode: CqeOpcode::RecvRdmaWithImm,
                            status: CqeStatus::Success,
                            byte_len: total,
                            imm: Some(imm),
                            src_qp: 0,
                            solicited: pkt.headers.bth.solicited,
                        };
                        self.complete(cq, cqe, env);
                    }
                } else {
                    q.resp.write = Some(WriteInProgress {
                        rkey,
                        va,
                        total,
                        offset: offset + n,
                    });
                }
                Placed::Done
            }
            Some(Operation::RdmaReadRequest) => {
                let Some(reth) = pkt.headers.reth else {
                    return Placed::Nak(NakCode::InvalidRequest);
                };
                if !qp_access.contains(Access::REMOTE_READ) {
                    return Placed::Nak(NakCode::RemoteAccessError);
                }
                if let Some(a) = self.region_access(qpn)
                    && let Err(e) = a.mpt.check(
                        Mkey(reth.rkey),
                        a.function,
                        a.pd,
                        reth.va,
                        u64::from(reth.dma_len),
                        Access::REMOTE_READ,
                    )
                {
                    log::debug!("hca: {qpn} RDMA READ refused: {e}");
                    return Placed::Nak(NakCode::RemoteAccessError);
                }
                let Some(q) = self.qps.get_mut(&qpn) else {
                    return Placed::Done;
                };
                let queued = push_bounded(
                    &mut q.resp.reads,
                    MAX_READS,
                    ReadResponse {
                        psn: pkt.headers.bth.psn,
                        rkey: Mkey(reth.rkey),
                        va: reth.va,
                        len: reth.dma_len,
                        sent: 0,
                    },
                );
                if !queued {
                    return Placed::Nak(NakCode::InvalidRequest);
                }
                q.resp.msn = q.resp.msn.wrapping_add(1);
                Placed::Done
            }
            _ => Placed::Nak(NakCode::InvalidRequest),
        }
    }

    pub(super) fn count_rx(&mut self, qpn: Qpn, n: u32) {
        self.stats.rx_payload_bytes.add(u64::from(n));
        if let Some(q) = self.qps.get_mut(&qpn) {
            q.stats.rx_payload_bytes.add(u64::from(n));
        }
    }

    /// Reads the receive WQE at the responder's consumer index.
    pub(super) fn fetch_recv(
        &mut self,
        qpn: Qpn,
        env: &mut HcaEnv<'_>,
    ) -> Option<Result<RecvWqe, ()>> {
        let gvmi = self.qp_gvmi(qpn);
        let qp = self.qps.get(&qpn)?;
        if qp.rq_ci == qp.rq_pi {
            return None;
        }
        let slot = u64::from(qp.rq_ci) & u64::from(qp.ctx.rq.entries() - 1);
        let addr = Gpa::new(qp.ctx.rq.base.raw().wrapping_add(slot * WQE_STRIDE));
        let mut raw = [0u8; WQE_STRIDE as usize];
        if env.mem.dma_read(gvmi, addr, &mut raw).is_err() {
            log::warn!("hca: {qpn} receive queue unreachable at {addr}");
            return Some(Err(()));
        }
        let layout = RecvWqeLayout::read_from_bytes(&raw).ok()?;
        Some(Ok(RecvWqe::parse(&layout)))
    }

    /// Places a SEND packet (RC or UC) into the current receive WQE.
    pub(super) fn place_send(
        &mut self,
        qpn: Qpn,
        pkt: &RocePacket<'_>,
        env: &mut HcaEnv<'_>,
    ) -> Placed {
        let Some(qp) = self.qps.get(&qpn) else {
            return Placed::Done;
        };
        let mut cur = match qp.resp.recv {
            Some(c) => c,
            None => match self.fetch_recv(qpn, env) {
                None => return Placed::NoRecvWqe,
                Some(Err(())) => {
                    self.qp_fatal(qpn, env);
                    return Placed::Done;
                }
                Some(Ok(wqe)) => RecvInProgress {
                    wqe,
                    index: self.qps.get(&qpn).map_or(0, |q| q.rq_ci),
                    offset: 0,
                },
            },
        };
        let n = pkt.payload.len() as u32;
        if u64::from(cur.offset) + u64::from(n) > cur.wqe.capacity() {
            // Too long for the receive WQE: it completes in error.
            self.finish_recv(qpn, cur, CqeStatus::LocalLengthError, pkt, env);
            return Placed::Nak(NakCode::InvalidRequest);
        }
        if let Some(m) = self.scatter(qpn, &cur.wqe, cur.offset, pkt.payload, env) {
            return match m {
                Miss::Fault { .. } => {
                    // Keep the WQE: the retry continues into it.
                    if let Some(q) = self.qps.get_mut(&qpn) {
                        q.resp.recv = (cur.offset > 0).then_some(cur);
                    }
                    Placed::Fault(m)
                }
                _ => {
                    self.finish_recv(qpn, cur, CqeStatus::LocalProtectionError, pkt, env);
                    Placed::Nak(NakCode::RemoteOperationalError)
                }
            };
        }
        self.count_rx(qpn, n);
        cur.offset += n;
        if matches!(
            pkt.headers.bth.opcode.position(),
            Some(Position::Last | Position::Only)
        ) {
            self.finish_recv(qpn, cur, CqeStatus::Success, pkt, env);
            if let Some(q) = self.qps.get_mut(&qpn) {
                q.resp.msn = q.resp.msn.wrapping_add(1);
            }
        } else if let Some(q) = self.qps.get_mut(&qpn) {
            q.resp.recv = Some(cur);
        }
        Placed::Done
    }

    /// Copies `data` into a receive WQE's scatter list at `offset`.
    pub(super) fn scatter(
        &mut self,
        qpn: Qpn,
        wqe: &RecvWqe,
        offset: u32,
        data: &[u8],
        env: &mut HcaEnv<'_>,
    ) -> Option<Miss> {
        let a = self.region_access(qpn)?;
        let mut skip = u64::from(offset);
        let mut done = 0usize;
        for sge in wqe.sges() {
            if done >= data.len() {
                break;
            }
            let len = u64::from(sge.length);
            if skip >= len {
                skip -= len;
                continue;
            }
            let k = ((len - skip) as usize).min(data.len() - done);
            let piece = data.get(done..done + k)?;
            if let Err(m) = a.copy(
                env.mem,
                sge.lkey,
                sge.addr.wrapping_add(skip),
                Access::LOCAL_WRITE,
                Dir::Write(piece),
            ) {
                return Some(m);
            }
            done += k;
            skip = 0;
        }
        None
    }

    /// Completes the receive WQE of `cur` and consumes it.
    pub(super) fn finish_recv(
        &mut self,
        qpn: Qpn,
        cur: RecvInProgress,
        status: CqeStatus,
        pkt: &RocePacket<'_>,
        env: &mut HcaEnv<'_>,
    ) {
        let Some(q) = self.qps.get_mut(&qpn) else {
            return;
        };
        q.resp.recv = None;
        q.rq_ci = cur.index.wrapping_add(1);
        q.stats.recv_completions.inc();
        let cq = q.ctx.recv_cq;
        let cqe = Cqe {
            qpn,
            wqe_index: cur.index,
            opcode: CqeOpcode::Recv,
            status,
            byte_len: cur.offset,
            imm: pkt.headers.immediate,
            src_qp: pkt.headers.deth.map_or(0, |d| d.src_qp),
            solicited: pkt.headers.bth.solicited,
        };
        self.complete(cq, cqe, env);
    }
}

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
use crate::wire::{BthRepr, Deth, Opcode, Position, Psn, Reth, transport_timeout_ns};
use crate::wqe::{Remote, SendWqe, SendWqeLayout, WQE_STRIDE, WqeFlags, WqeOpcode};

/// A send WQE between fetch and completion.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InFlight {
    /// The WQE counter.
    pub(super) index: u16,
    pub(super) wqe: SendWqe,
    /// PSN of the first packet (READ: of the request and first response).
    pub(super) first_psn: Psn,
    /// PSNs the message uses.
    pub(super) npkts: u32,
    /// RDMA READ: response bytes placed.
    pub(super) read_bytes: u32,
    /// Acknowledged (READ: every response placed).
    pub(super) done: bool,
}

impl InFlight {
    pub(super) fn last_psn(&self) -> Psn {
        self.first_psn.add(self.npkts.saturating_sub(1))
    }

    pub(super) fn holds(&self, psn: Psn) -> bool {
        let d = psn.diff(self.first_psn);
        d >= 0 && (d as u32) < self.npkts
    }
}

/// A fault the requester waits on (gathering a request, or placing a
/// READ response): no NAK goes out, the QP just waits.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stall {
    pub(super) token: u32,
    pub(super) mkey: Mkey,
    pub(super) since: SimTime,
}

/// The requester half of a QP.
#[derive(Debug, Clone)]
pub(crate) struct Requester {
    pub(super) inflight: VecDeque<InFlight>,
    pub(super) cap: usize,
    /// The counter of the next WQE to fetch.
    pub(super) next_fetch: u16,
    /// Index into `inflight` of the message being sent.
    pub(super) cur: usize,
    /// Bytes of it already sent.
    pub(super) cur_offset: u32,
    /// The next PSN to send.
    pub(super) psn: Psn,
    /// Packets sent and not acknowledged exist.
    pub(crate) started: bool,
    pub(super) retry_left: u8,
    pub(super) rnr_left: u8,
    pub(super) deadline: Option<SimTime>,
    pub(super) rnr_until: Option<SimTime>,
    pub(super) stall: Option<Stall>,
    /// The highest PSN sent so far.
    pub(super) max_sent: Option<Psn>,
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
    pub(super) fn is_resend(&self, psn: Psn) -> bool {
        self.max_sent.is_some_and(|m| psn.diff(m) <= 0)
    }

    pub(super) fn note_sent(&mut self, psn: Psn) {
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
    pub(super) fn rewind(&mut self, psn: Psn, mtu: u32) -> bool {
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
pub(super) fn request_opcode(t: QpType, op: WqeOpcode, pos: Position) -> Opcode {
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
pub(super) fn send_cqe_opcode(op: WqeOpcode) -> CqeOpcode {
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
    pub(super) fn fetch_wqe(&mut self, qpn: Qpn, env: &mut HcaEnv<'_>) -> bool {
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
            Err(status) => self.fail_wqe(qpn, index, WqeOpcode::Send, status, env),
        }
    }

    /// A send failed locally: RC and UC QPs go to the error state, UD to
    /// the send-queue error state.
    pub(super) fn send_error(&mut self, qpn: Qpn, env: &mut HcaEnv<'_>) {
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
    pub(super) fn send_request_packet(&mut self, qpn: Qpn, env: &mut HcaEnv<'_>) -> bool {
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
        // Gather the payload from the WQE's list straight into the frame
        // (one copy, as a device's DMA engine does).
        let mut frame = std::mem::take(&mut self.frame);
        let emitted = match self.region_access(qpn) {
            Some(access) => headers.emit_with(chunk as usize, &mut frame, |payload| {
                gather(&access, env.mem, w.wqe.sges(), u64::from(off), payload)
            }),
            None => Ok(Ok(())),
        };
        let emitted = match emitted {
            Ok(Err(m)) => {
                self.frame = frame;
                return self.gather_miss(qpn, w, m, env);
            }
            Ok(Ok(())) => Ok(()),
            Err(e) => Err(e),
        };
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

    /// Raises the page fault of `miss` (a fault, else nothing happens) and
    /// stalls `qpn`'s sender until it is resumed: a fault on local memory
    /// delays the QP without a NAK. Returns the stalled requester.
    pub(super) fn stall_on_fault(
        &mut self,
        qpn: Qpn,
        miss: Miss,
        access: AccessKind,
        env: &mut HcaEnv<'_>,
    ) -> Option<&mut Requester> {
        let Miss::Fault { mkey, .. } = miss else {
            return None;
        };
        let (token, _) = self.raise_fault(qpn, miss, access, env)?;
        let q = self.qps.get_mut(&qpn)?;
        q.req.stall = Some(Stall {
            token,
            mkey,
            since: env.now,
        });
        Some(&mut q.req)
    }

    /// A gather missed: a protection error fails the WQE; a fault stalls
    /// the QP until it is resumed (seed 001, paragraph 0062: no NAK, the
    /// data waits in local memory).
    pub(super) fn gather_miss(
        &mut self,
        qpn: Qpn,
        w: InFlight,
        miss: Miss,
        env: &mut HcaEnv<'_>,
    ) -> bool {
        match miss {
            Miss::Fault { .. } => {
                self.stall_on_fault(qpn, miss, AccessKind::Read, env);
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
    pub(super) fn fail_wqe(
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
        let cqe = Cqe::error(qpn, index, send_cqe_opcode(op), status);
        self.complete(cq, cqe, env);
        self.send_error(qpn, env);
        false
    }

    /// Completes the finished WQEs at the head, in order.
    pub(super) fn retire(&mut self, qpn: Qpn, env: &mut HcaEnv<'_>) {
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
}

/// Copies the bytes of a gather list from `skip` bytes in into `payload`;
/// whatever the list does not cover reads as zeros.
fn gather(
    access: &super::RegionAccess<'_>,
    mem: &mut dyn iovirt_core::GvmiDma,
    sges: &[crate::wqe::Sge],
    mut skip: u64,
    payload: &mut [u8],
) -> Result<(), Miss> {
    let mut done = 0usize;
    for sge in sges {
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
        access.copy(
            mem,
            sge.lkey,
            sge.addr.wrapping_add(skip),
            Access::empty(),
            Dir::Read(buf),
        )?;
        done += n;
        skip = 0;
    }
    payload.get_mut(done..).unwrap_or_default().fill(0);
    Ok(())
}

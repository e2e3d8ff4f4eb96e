//! The responder's transmit side: ACKs and NAKs, and RDMA READ responses
//! read from memory through both stages.

use iovirt_core::AccessKind;

use super::responder::{ACK, ReadResponse, Suspended};
use super::{Dir, HcaEnv, Miss};
use crate::device::Hca;
use crate::ids::Qpn;
use crate::mr::Access;
use crate::qp::{AddressVector, QpState};
use crate::wire::{Aeth, AethSyndrome, BthRepr, NakCode, Opcode, Psn, RoceHeaders};

impl Hca {
    /// Headers for a packet of `qpn`'s function to `av`.
    pub(crate) fn headers_for(
        &self,
        f: crate::ids::FunctionId,
        av: AddressVector,
        qpn: Qpn,
        bth: BthRepr,
    ) -> RoceHeaders {
        let mut h = RoceHeaders::new(bth);
        if let Some(func) = self.functions.get(&f) {
            h.src_mac = func.config.mac;
            h.src_ip = func.config.ip.into();
        }
        h.dst_mac = av.dmac;
        h.dst_ip = av.dip.into();
        // RoCEv2 spreads flows over ECMP paths by UDP source port.
        h.udp_src_port = 0xc000 | (qpn.raw() as u16 & 0x3fff);
        h
    }

    /// Sends a queued ACK/NAK or the next READ response packet of `qpn`.
    pub(crate) fn responder_step(&mut self, qpn: Qpn, env: &mut HcaEnv<'_>) -> bool {
        let Some(qp) = self.qps.get_mut(&qpn) else {
            return false;
        };
        if !matches!(qp.ctx.state, QpState::Rtr | QpState::Rts | QpState::Sqe) {
            return false;
        }
        if let Some((syndrome, psn)) = qp.resp.pending.pop_front() {
            let msn = qp.resp.msn;
            self.send_ack(qpn, syndrome, psn, msn, env);
            return true;
        }
        if qp.resp.read_stall.is_some() || qp.ctx.state == QpState::Rtr {
            return false;
        }
        let Some(rd) = qp.resp.reads.front().copied() else {
            return false;
        };
        self.send_read_response(qpn, rd, env)
    }

    pub(super) fn send_ack(
        &mut self,
        qpn: Qpn,
        syndrome: AethSyndrome,
        psn: Psn,
        msn: u32,
        env: &mut HcaEnv<'_>,
    ) {
        let Some(qp) = self.qps.get(&qpn) else {
            return;
        };
        let bth = BthRepr::new(Opcode::RC_ACKNOWLEDGE, qp.ctx.dest_qpn.raw(), psn);
        let mut h = self.headers_for(qp.ctx.function, qp.ctx.av, qpn, bth);
        h.aeth = Some(Aeth {
            syndrome,
            msn: msn & 0xff_ffff,
        });
        self.emit(qpn, &h, &[], env);
        match syndrome {
            AethSyndrome::RnrNak { .. } => {
                self.stats.rnr_naks_sent.inc();
                if let Some(q) = self.qps.get_mut(&qpn) {
                    q.stats.rnr_naks_sent.inc();
                }
            }
            AethSyndrome::Nak(NakCode::PsnSequenceError) => {
                self.stats.seq_naks_sent.inc();
                if let Some(q) = self.qps.get_mut(&qpn) {
                    q.stats.seq_naks_sent.inc();
                }
            }
            AethSyndrome::Nak(_) => self.stats.naks_sent.inc(),
            _ => {}
        }
    }

    /// Puts a packet with `payload` on the wire.
    pub(super) fn emit(&mut self, qpn: Qpn, h: &RoceHeaders, payload: &[u8], env: &mut HcaEnv<'_>) {
        let mut frame = std::mem::take(&mut self.frame);
        match h.emit(payload, &mut frame) {
            Ok(()) => {
                env.wire.send(&frame);
                self.stats.tx_packets.inc();
                if let Some(q) = self.qps.get_mut(&qpn) {
                    q.stats.tx_packets.inc();
                }
            }
            Err(e) => log::warn!("hca: {qpn} could not emit {:?}: {e}", h.bth.opcode),
        }
        self.frame = frame;
    }

    pub(super) fn send_read_response(
        &mut self,
        qpn: Qpn,
        rd: ReadResponse,
        env: &mut HcaEnv<'_>,
    ) -> bool {
        let Some(qp) = self.qps.get(&qpn) else {
            return false;
        };
        let mtu = qp.ctx.path_mtu.bytes();
        let n = (rd.len - rd.sent).min(mtu);
        let first = rd.sent == 0;
        let last = rd.sent + n >= rd.len;
        let opcode = match (first, last) {
            (true, true) => Opcode::RC_RDMA_READ_RESPONSE_ONLY,
            (true, false) => Opcode::RC_RDMA_READ_RESPONSE_FIRST,
            (false, true) => Opcode::RC_RDMA_READ_RESPONSE_LAST,
            (false, false) => Opcode::RC_RDMA_READ_RESPONSE_MIDDLE,
        };
        let psn = rd.psn.add(rd.sent / mtu);
        let bth = BthRepr::new(opcode, qp.ctx.dest_qpn.raw(), psn);
        let mut h = self.headers_for(qp.ctx.function, qp.ctx.av, qpn, bth);
        if opcode.has_aeth() {
            h.aeth = Some(Aeth {
                syndrome: ACK,
                msn: qp.resp.msn & 0xff_ffff,
            });
        }
        // The copy overwrites every byte (or fails), so the reused buffer
        // is not zeroed first; without a region view the payload is zeros.
        let mut payload = std::mem::take(&mut self.scratch);
        payload.clear();
        let buf = payload.append(n as usize).unwrap_or_default();
        let copied = match self.region_access(qpn) {
            Some(a) => a.copy(
                env.mem,
                rd.rkey,
                rd.va.wrapping_add(u64::from(rd.sent)),
                Access::REMOTE_READ,
                Dir::Read(buf),
            ),
            None => {
                buf.fill(0);
                Ok(iovirt_core::Cost::ZERO)
            }
        };
        match copied {
            Ok(_) => {
                self.emit(qpn, &h, payload.as_slice(), env);
                self.scratch = payload;
                self.stats.tx_payload_bytes.add(u64::from(n));
                if let Some(q) = self.qps.get_mut(&qpn) {
                    q.stats.tx_payload_bytes.add(u64::from(n));
                    if let Some(front) = q.resp.reads.front_mut() {
                        front.sent += n;
                        if front.sent >= front.len {
                            q.resp.reads.pop_front();
                        }
                    }
                }
                true
            }
            Err(m @ Miss::Fault { mkey, .. }) => {
                self.scratch = payload;
                // Paragraph 0062: the data waits in local memory; the
                // requester just sees the response later. No NAK.
                if let Some((token, _)) = self.raise_fault(qpn, m, AccessKind::Read, env)
                    && let Some(q) = self.qps.get_mut(&qpn)
                {
                    q.resp.read_stall = Some(Suspended {
                        token,
                        mkey,
                        since: env.now,
                        rnr: None,
                    });
                }
                false
            }
            Err(m) => {
                self.scratch = payload;
                log::debug!("hca: {qpn} READ response refused after the check: {m:?}");
                if let Some(q) = self.qps.get_mut(&qpn) {
                    q.resp.reads.pop_front();
                    q.resp
                        .queue(AethSyndrome::Nak(NakCode::RemoteAccessError), psn);
                }
                false
            }
        }
    }
}

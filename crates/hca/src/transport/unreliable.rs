//! The responder for unreliable services: UC drops a message with a gap
//! and resynchronises; UD takes one SEND per packet after its Q_Key check.
//! Faults drop (seed 001, paragraph 0062) after raising the event.

use iovirt_core::AccessKind;

use super::HcaEnv;
use super::responder::Placed;
use crate::device::Hca;
use crate::ids::Qpn;
use crate::wire::{Position, RocePacket};

impl Hca {
    /// UC: no ACKs; a gap or a fault drops the message in progress.
    pub(super) fn uc_request(&mut self, qpn: Qpn, pkt: &RocePacket<'_>, env: &mut HcaEnv<'_>) {
        let Some(qp) = self.qps.get_mut(&qpn) else {
            return;
        };
        let psn = pkt.headers.bth.psn;
        let pos = pkt.headers.bth.opcode.position();
        if psn != qp.resp.epsn {
            // Lost packets: abandon the message in progress; resynchronise
            // on the next first or only packet.
            qp.resp.write = None;
            if let Some(c) = qp.resp.recv.take() {
                qp.rq_ci = c.index;
            }
            if !matches!(pos, Some(Position::First | Position::Only)) {
                qp.resp.epsn = psn.add(1);
                qp.stats.rx_dropped.inc();
                self.stats.rx_dropped.inc();
                return;
            }
        }
        qp.resp.epsn = psn.add(1);
        match self.place(qpn, pkt, env) {
            Placed::Done => {}
            Placed::Fault(m) => {
                // Paragraph 0062: unreliable service drops until serviced.
                self.raise_fault(qpn, m, AccessKind::Write, env);
                self.uc_drop(qpn);
            }
            Placed::Nak(_) | Placed::NoRecvWqe => self.uc_drop(qpn),
        }
    }

    pub(super) fn uc_drop(&mut self, qpn: Qpn) {
        if let Some(q) = self.qps.get_mut(&qpn) {
            q.resp.write = None;
            if let Some(c) = q.resp.recv.take() {
                q.rq_ci = c.index;
            }
            q.stats.rx_dropped.inc();
        }
        self.stats.rx_dropped.inc();
    }

    /// UD: one SEND per packet, checked against the Q_Key.
    pub(super) fn ud_request(&mut self, qpn: Qpn, pkt: &RocePacket<'_>, env: &mut HcaEnv<'_>) {
        let Some(qp) = self.qps.get(&qpn) else {
            return;
        };
        let qkey_ok = pkt.headers.deth.is_some_and(|d| d.qkey == qp.ctx.qkey);
        if !qkey_ok || qp.resp.recv.is_some() {
            self.uc_drop(qpn);
            return;
        }
        match self.place_send(qpn, pkt, env) {
            Placed::Done => {}
            Placed::Fault(m) => {
                self.raise_fault(qpn, m, AccessKind::Write, env);
                self.uc_drop(qpn);
            }
            Placed::Nak(_) | Placed::NoRecvWqe => self.uc_drop(qpn),
        }
    }
}

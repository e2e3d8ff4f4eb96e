//! Queue pair contexts: type, state machine and the attributes the
//! transport uses, with InfiniBand's rules for which attributes each
//! transition requires.

use iovirt_core::Gpa;
use serde::{Deserialize, Serialize};

use crate::ids::{Cqn, FunctionId, Pdn, Qpn};
use crate::mr::Access;

/// The transport service of a QP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QpType {
    /// Reliable connection: ACKs, retransmission, RNR NAKs, RDMA READ.
    Rc,
    /// Unreliable connection: SEND and RDMA WRITE, no ACKs; losses drop.
    Uc,
    /// Unreliable datagram: SEND only, one packet per message, to any QP.
    Ud,
}

/// QP states (InfiniBand's, without SQD).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QpState {
    /// Just created or reset: nothing is processed.
    Reset,
    /// Receive WQEs may be posted; no traffic.
    Init,
    /// Ready to receive.
    Rtr,
    /// Ready to send.
    Rts,
    /// Send queue error (UC/UD): a send failed; receives go on.
    Sqe,
    /// Error: every outstanding WQE is flushed.
    Err,
}

/// The path MTU: payload bytes per packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PathMtu {
    /// 256 bytes.
    Mtu256,
    /// 512 bytes.
    Mtu512,
    /// 1024 bytes.
    Mtu1024,
    /// 2048 bytes.
    Mtu2048,
    /// 4096 bytes.
    Mtu4096,
}

impl PathMtu {
    /// Payload bytes per packet.
    pub fn bytes(self) -> u32 {
        match self {
            PathMtu::Mtu256 => 256,
            PathMtu::Mtu512 => 512,
            PathMtu::Mtu1024 => 1024,
            PathMtu::Mtu2048 => 2048,
            PathMtu::Mtu4096 => 4096,
        }
    }
}

/// Where a connected QP's packets go: the peer's Ethernet and IPv4
/// addresses (RoCEv2's address vector; the GID is the IPv4 address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AddressVector {
    /// Destination MAC.
    pub dmac: [u8; 6],
    /// Destination IPv4 address.
    pub dip: [u8; 4],
}

/// Attributes given to a modify command; `None` leaves one unchanged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QpAttr {
    /// Remote operations the QP accepts (REMOTE_WRITE, REMOTE_READ).
    pub access: Option<Access>,
    /// Q_Key (UD).
    pub qkey: Option<u32>,
    /// The connected peer QP.
    pub dest_qpn: Option<Qpn>,
    /// The connected peer's address.
    pub av: Option<AddressVector>,
    /// Path MTU.
    pub path_mtu: Option<PathMtu>,
    /// The PSN the responder expects next.
    pub rq_psn: Option<u32>,
    /// The PSN the requester sends next.
    pub sq_psn: Option<u32>,
    /// Transport timeout exponent (4.096 us x 2^timeout; 0 = none).
    pub timeout: Option<u8>,
    /// Transport retries (3 bits).
    pub retry_cnt: Option<u8>,
    /// RNR retries (3 bits; 7 = infinite).
    pub rnr_retry: Option<u8>,
    /// The RNR NAK timer code this QP's responder sends (5 bits).
    pub min_rnr_timer: Option<u8>,
    /// RDMA READs this QP may have outstanding as requester.
    pub max_rd_atomic: Option<u8>,
}

/// Why a modify was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error, Serialize, Deserialize)]
pub enum ModifyError {
    /// InfiniBand defines no such transition.
    #[error("no transition from {from:?} to {to:?}")]
    BadTransition {
        /// The current state.
        from: QpState,
        /// The requested state.
        to: QpState,
    },
    /// The transition requires an attribute that was not given.
    #[error("transition needs attribute `{0}`")]
    Missing(&'static str),
    /// An attribute is out of its field's range.
    #[error("attribute `{0}` out of range")]
    OutOfRange(&'static str),
}

/// A queue's ring in (guest) memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ring {
    /// First WQE (or CQE), a VM-physical address of the owning function.
    pub base: Gpa,
    /// log2 of the entry count.
    pub log_size: u8,
}

impl Ring {
    /// Entries in the ring.
    pub fn entries(self) -> u32 {
        1u32 << self.log_size
    }
}

/// A queue pair's context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QpContext {
    /// The QP number.
    pub qpn: Qpn,
    /// The transport service.
    pub qp_type: QpType,
    /// The owning function.
    pub function: FunctionId,
    /// Protection domain: keys used on this QP must belong to it.
    pub pd: Pdn,
    /// Where send completions go.
    pub send_cq: Cqn,
    /// Where receive completions go.
    pub recv_cq: Cqn,
    /// The send queue.
    pub sq: Ring,
    /// The receive queue.
    pub rq: Ring,
    /// The state.
    pub state: QpState,
    /// Remote operations accepted.
    pub access: Access,
    /// Q_Key (UD).
    pub qkey: u32,
    /// Connected peer.
    pub dest_qpn: Qpn,
    /// Connected peer's address.
    pub av: AddressVector,
    /// Path MTU.
    pub path_mtu: PathMtu,
    /// Expected PSN (responder).
    pub rq_psn: u32,
    /// Next PSN (requester).
    pub sq_psn: u32,
    /// Transport timeout exponent.
    pub timeout: u8,
    /// Transport retries.
    pub retry_cnt: u8,
    /// RNR retries (7 = infinite).
    pub rnr_retry: u8,
    /// RNR timer code sent in RNR NAKs.
    pub min_rnr_timer: u8,
    /// Outstanding RDMA READs allowed.
    pub max_rd_atomic: u8,
}

impl QpContext {
    /// A QP in RESET.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        qpn: Qpn,
        qp_type: QpType,
        function: FunctionId,
        pd: Pdn,
        send_cq: Cqn,
        recv_cq: Cqn,
        sq: Ring,
        rq: Ring,
    ) -> QpContext {
        QpContext {
            qpn,
            qp_type,
            function,
            pd,
            send_cq,
            recv_cq,
            sq,
            rq,
            state: QpState::Reset,
            access: Access::empty(),
            qkey: 0,
            dest_qpn: Qpn::from_wire(0),
            av: AddressVector {
                dmac: [0; 6],
                dip: [0; 4],
            },
            path_mtu: PathMtu::Mtu1024,
            rq_psn: 0,
            sq_psn: 0,
            timeout: 14,
            retry_cnt: 7,
            rnr_retry: 7,
            min_rnr_timer: 1,
            max_rd_atomic: 1,
        }
    }

    /// Moves to `to` with `attr`, checking the transition and its required
    /// attributes; the context is unchanged when it fails.
    pub fn modify(&mut self, to: QpState, attr: &QpAttr) -> Result<(), ModifyError> {
        let from = self.state;
        let connected = self.qp_type != QpType::Ud;
        let rc = self.qp_type == QpType::Rc;
        let need = |present: bool, name| {
            if present {
                Ok(())
            } else {
                Err(ModifyError::Missing(name))
            }
        };
        match (from, to) {
            (_, QpState::Reset) | (_, QpState::Err) => {}
            (QpState::Reset, QpState::Init) => {
                if connected {
                    need(attr.access.is_some(), "access")?;
                } else {
                    need(attr.qkey.is_some(), "qkey")?;
                }
            }
            (QpState::Init, QpState::Init) => {}
            (QpState::Init, QpState::Rtr) => {
                if connected {
                    need(attr.dest_qpn.is_some(), "dest_qpn")?;
                    need(attr.av.is_some(), "av")?;
                    need(attr.path_mtu.is_some(), "path_mtu")?;
                    need(attr.rq_psn.is_some(), "rq_psn")?;
                }
                if rc {
                    need(attr.min_rnr_timer.is_some(), "min_rnr_timer")?;
                }
            }
            (QpState::Rtr, QpState::Rts) => {
                need(attr.sq_psn.is_some(), "sq_psn")?;
                if rc {
                    need(attr.timeout.is_some(), "timeout")?;
                    need(attr.retry_cnt.is_some(), "retry_cnt")?;
                    need(attr.rnr_retry.is_some(), "rnr_retry")?;
                }
            }
            (QpState::Rts, QpState::Rts) => {}
            (QpState::Sqe, QpState::Rts) if !rc => {}
            _ => return Err(ModifyError::BadTransition { from, to }),
        }
        let range = |v: Option<u8>, max: u8, name| match v {
            Some(x) if x > max => Err(ModifyError::OutOfRange(name)),
            _ => Ok(()),
        };
        range(attr.timeout, 31, "timeout")?;
        range(attr.retry_cnt, 7, "retry_cnt")?;
        range(attr.rnr_retry, 7, "rnr_retry")?;
        range(attr.min_rnr_timer, 31, "min_rnr_timer")?;
        if attr.rq_psn.is_some_and(|p| p > 0xff_ffff) {
            return Err(ModifyError::OutOfRange("rq_psn"));
        }
        if attr.sq_psn.is_some_and(|p| p > 0xff_ffff) {
            return Err(ModifyError::OutOfRange("sq_psn"));
        }
        if attr
            .access
            .is_some_and(|a| a.contains(Access::REMOTE_READ) && self.qp_type != QpType::Rc)
        {
            return Err(ModifyError::OutOfRange("access"));
        }
        macro_rules! apply {
            ($($f:ident),*) => { $( if let Some(v) = attr.$f { self.$f = v; } )* };
        }
        apply!(
            access,
            qkey,
            dest_qpn,
            av,
            path_mtu,
            rq_psn,
            sq_psn,
            timeout,
            retry_cnt,
            rnr_retry,
            min_rnr_timer,
            max_rd_atomic
        );
        self.state = to;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn qp(t: QpType) -> QpContext {
        let ring = Ring {
            base: Gpa::new(0x1000),
            log_size: 4,
        };
        QpContext::new(
            Qpn::new(5).unwrap(),
            t,
            FunctionId(1),
            Pdn(1),
            Cqn(1),
            Cqn(1),
            ring,
            ring,
        )
    }

    fn rtr_attr() -> QpAttr {
        QpAttr {
            dest_qpn: Qpn::new(9),
            av: Some(AddressVector {
                dmac: [2, 0, 0, 0, 0, 1],
                dip: [10, 0, 0, 1],
            }),
            path_mtu: Some(PathMtu::Mtu4096),
            rq_psn: Some(100),
            min_rnr_timer: Some(12),
            ..QpAttr::default()
        }
    }

    #[test]
    fn rc_walks_reset_init_rtr_rts_with_required_attributes() {
        let mut q = qp(QpType::Rc);
        assert_eq!(
            q.modify(QpState::Rtr, &rtr_attr()),
            Err(ModifyError::BadTransition {
                from: QpState::Reset,
                to: QpState::Rtr
            })
        );
        assert_eq!(
            q.modify(QpState::Init, &QpAttr::default()),
            Err(ModifyError::Missing("access"))
        );
        let init = QpAttr {
            access: Some(Access::REMOTE_WRITE | Access::REMOTE_READ),
            ..QpAttr::default()
        };
        q.modify(QpState::Init, &init).unwrap();
        let mut partial = rtr_attr();
        partial.min_rnr_timer = None;
        assert_eq!(
            q.modify(QpState::Rtr, &partial),
            Err(ModifyError::Missing("min_rnr_timer"))
        );
        assert_eq!(q.state, QpState::Init, "a refused modify changes nothing");
        q.modify(QpState::Rtr, &rtr_attr()).unwrap();
        let rts = QpAttr {
            sq_psn: Some(7),
            timeout: Some(14),
            retry_cnt: Some(8),
            rnr_retry: Some(7),
            ..QpAttr::default()
        };
        assert_eq!(
            q.modify(QpState::Rts, &rts),
            Err(ModifyError::OutOfRange("retry_cnt"))
        );
        q.modify(
            QpState::Rts,
            &QpAttr {
                retry_cnt: Some(3),
                ..rts
            },
        )
        .unwrap();
        assert_eq!(
            (
                q.state,
                q.rq_psn,
                q.sq_psn,
                q.min_rnr_timer,
                q.path_mtu.bytes()
            ),
            (QpState::Rts, 100, 7, 12, 4096)
        );
        assert_eq!(
            q.modify(QpState::Sqe, &QpAttr::default()),
            Err(ModifyError::BadTransition {
                from: QpState::Rts,
                to: QpState::Sqe
            })
        );
        q.modify(QpState::Err, &QpAttr::default()).unwrap();
        q.modify(QpState::Reset, &QpAttr::default()).unwrap();
    }

    #[test]
    fn ud_needs_a_qkey_and_no_peer_and_uc_has_no_remote_read() {
        let mut q = qp(QpType::Ud);
        assert_eq!(
            q.modify(QpState::Init, &QpAttr::default()),
            Err(ModifyError::Missing("qkey"))
        );
        q.modify(
            QpState::Init,
            &QpAttr {
                qkey: Some(0x1111),
                ..QpAttr::default()
            },
        )
        .unwrap();
        q.modify(QpState::Rtr, &QpAttr::default()).unwrap();
        q.modify(
            QpState::Rts,
            &QpAttr {
                sq_psn: Some(0),
                ..QpAttr::default()
            },
        )
        .unwrap();
        let mut uc = qp(QpType::Uc);
        assert_eq!(
            uc.modify(
                QpState::Init,
                &QpAttr {
                    access: Some(Access::REMOTE_READ),
                    ..QpAttr::default()
                }
            ),
            Err(ModifyError::OutOfRange("access"))
        );
    }
}

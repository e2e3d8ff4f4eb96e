//! Completion queue entries: the 32-byte layout the HCA writes into a
//! completion queue in (guest) memory, with an owner bit the driver polls.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | QPN (24 bits) |
//! | 4 | 4 | byte count (receive: bytes placed; send: message length) |
//! | 8 | 4 | immediate data |
//! | 12 | 4 | source QPN (UD receive) |
//! | 16 | 2 | WQE index (the queue's 16-bit WQE counter) |
//! | 18 | 1 | opcode ([`CqeOpcode`]) |
//! | 19 | 1 | status ([`CqeStatus`]) |
//! | 20 | 1 | flags (bit 0: immediate valid; bit 1: solicited) |
//! | 21 | 10 | reserved |
//! | 31 | 1 | owner: bit 0 is 1 on the first pass over the ring, 0 on the second, and so on |
//!
//! The driver owns entry `ci mod size` when its owner bit equals
//! `((ci / size) & 1) ^ 1`.

use serde::{Deserialize, Serialize};
use zerocopy::byteorder::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::ids::Qpn;

/// Bytes per CQE.
pub const CQE_SIZE: u64 = 32;

/// What completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum CqeOpcode {
    /// A SEND (with or without immediate) completed at the requester.
    Send = 0,
    /// An RDMA WRITE completed at the requester.
    RdmaWrite = 1,
    /// An RDMA READ completed at the requester.
    RdmaRead = 2,
    /// A receive WQE took a SEND.
    Recv = 3,
    /// A receive WQE was consumed by an RDMA WRITE with immediate.
    RecvRdmaWithImm = 4,
}

impl CqeOpcode {
    /// The opcode of byte `raw`, if defined.
    pub fn from_raw(raw: u8) -> Option<CqeOpcode> {
        Some(match raw {
            0 => CqeOpcode::Send,
            1 => CqeOpcode::RdmaWrite,
            2 => CqeOpcode::RdmaRead,
            3 => CqeOpcode::Recv,
            4 => CqeOpcode::RecvRdmaWithImm,
            _ => return None,
        })
    }
}

/// Completion status, with the verbs' names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum CqeStatus {
    /// Success.
    Success = 0,
    /// A message did not fit the receive WQE (or a WQE was malformed).
    LocalLengthError = 1,
    /// A local key, bound or right was wrong.
    LocalProtectionError = 2,
    /// The WQE was flushed because the QP is in the error state.
    WrFlushError = 3,
    /// The responder NAKed with remote access error.
    RemoteAccessError = 4,
    /// The responder NAKed with invalid request.
    RemoteInvalidRequest = 5,
    /// The responder NAKed with remote operational error.
    RemoteOperationalError = 6,
    /// The transport retry counter ran out (no ACK).
    RetryExceeded = 7,
    /// The RNR retry counter ran out.
    RnrRetryExceeded = 8,
    /// The WQE itself was malformed (bad opcode or scatter list).
    LocalQpOperationError = 9,
    /// A response had the wrong opcode for the outstanding request.
    BadResponse = 10,
}

impl CqeStatus {
    /// The status of byte `raw`, if defined.
    pub fn from_raw(raw: u8) -> Option<CqeStatus> {
        use CqeStatus::*;
        Some(match raw {
            0 => Success,
            1 => LocalLengthError,
            2 => LocalProtectionError,
            3 => WrFlushError,
            4 => RemoteAccessError,
            5 => RemoteInvalidRequest,
            6 => RemoteOperationalError,
            7 => RetryExceeded,
            8 => RnrRetryExceeded,
            9 => LocalQpOperationError,
            10 => BadResponse,
            _ => return None,
        })
    }
}

/// A CQE as laid out in memory.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct CqeLayout {
    /// QPN.
    pub qpn: U32,
    /// Bytes.
    pub byte_len: U32,
    /// Immediate data.
    pub imm: U32,
    /// Source QPN (UD).
    pub src_qp: U32,
    /// WQE counter of the completed WQE.
    pub wqe_index: U16,
    /// [`CqeOpcode`].
    pub opcode: u8,
    /// [`CqeStatus`].
    pub status: u8,
    /// Bit 0 immediate valid, bit 1 solicited.
    pub flags: u8,
    /// Reserved.
    pub reserved: [u8; 10],
    /// Owner bit (bit 0).
    pub owner: u8,
}

/// A completion, typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cqe {
    /// The QP.
    pub qpn: Qpn,
    /// The WQE counter of the completed WQE.
    pub wqe_index: u16,
    /// What completed.
    pub opcode: CqeOpcode,
    /// How.
    pub status: CqeStatus,
    /// Bytes.
    pub byte_len: u32,
    /// Immediate data, when present.
    pub imm: Option<u32>,
    /// Source QPN (UD receives; 0 otherwise).
    pub src_qp: u32,
    /// The sender asked for a solicited event.
    pub solicited: bool,
}

impl Cqe {
    /// A completion in error for WQE `index` of `qpn`: no bytes, no
    /// immediate data.
    pub fn error(qpn: Qpn, index: u16, opcode: CqeOpcode, status: CqeStatus) -> Cqe {
        Cqe {
            qpn,
            wqe_index: index,
            opcode,
            status,
            byte_len: 0,
            imm: None,
            src_qp: 0,
            solicited: false,
        }
    }

    /// The layout of this completion with `owner` bit.
    pub fn layout(&self, owner: bool) -> CqeLayout {
        CqeLayout {
            qpn: U32::new(self.qpn.raw()),
            byte_len: U32::new(self.byte_len),
            imm: U32::new(self.imm.unwrap_or(0)),
            src_qp: U32::new(self.src_qp),
            wqe_index: U16::new(self.wqe_index),
            opcode: self.opcode as u8,
            status: self.status as u8,
            flags: u8::from(self.imm.is_some()) | (u8::from(self.solicited) << 1),
            reserved: [0; 10],
            owner: u8::from(owner),
        }
    }

    /// Reads a completion; `None` when the opcode or status byte is not one
    /// the HCA writes.
    pub fn parse(raw: &CqeLayout) -> Option<Cqe> {
        Some(Cqe {
            qpn: Qpn::from_wire(raw.qpn.get()),
            wqe_index: raw.wqe_index.get(),
            opcode: CqeOpcode::from_raw(raw.opcode)?,
            status: CqeStatus::from_raw(raw.status)?,
            byte_len: raw.byte_len.get(),
            imm: (raw.flags & 1 != 0).then_some(raw.imm.get()),
            src_qp: raw.src_qp.get(),
            solicited: raw.flags & 2 != 0,
        })
    }
}

/// The owner bit the HCA writes at producer index `pi` of a ring of
/// `2^log_size` entries.
pub fn owner_bit(pi: u32, log_size: u8) -> bool {
    (pi >> log_size) & 1 == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn layout_round_trip_and_owner_phases() {
        assert_eq!(size_of::<CqeLayout>() as u64, CQE_SIZE);
        let c = Cqe {
            qpn: Qpn::new(0x42).unwrap(),
            wqe_index: 0x1234,
            opcode: CqeOpcode::RecvRdmaWithImm,
            status: CqeStatus::Success,
            byte_len: 4096,
            imm: Some(0xcafe),
            src_qp: 0,
            solicited: true,
        };
        let raw = c.layout(true);
        let b = raw.as_bytes();
        assert_eq!(&b[16..22], &[0x34, 0x12, 4, 0, 3, 0]);
        assert_eq!(b[31], 1);
        assert_eq!(Cqe::parse(&raw), Some(c));
        // A ring of 4: the first pass writes owner 1, the second 0.
        assert!(owner_bit(3, 2));
        assert!(!owner_bit(4, 2));
        assert!(owner_bit(8, 2));
        let bad = CqeLayout { status: 99, ..raw };
        assert_eq!(Cqe::parse(&bad), None);
    }
}

//! Work queue entries: the binary layouts a driver writes into its send and
//! receive queues in (guest) memory, and their checked, typed reading.
//!
//! All fields are little-endian. Both queues have a 64-byte stride.
//!
//! Send WQE (64 bytes):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | opcode ([`WqeOpcode`]) |
//! | 1 | 1 | flags ([`WqeFlags`]) |
//! | 2 | 1 | number of scatter/gather entries (0 to 2) |
//! | 3 | 1 | reserved |
//! | 4 | 4 | immediate data (sent big-endian in ImmDt as the driver wrote it) |
//! | 8 | 8 | reserved |
//! | 16 | 16 | remote segment: RC/UC `remote_va` (8), `rkey` (4), reserved (4); UD `ah` (4), `dest_qpn` (4), `qkey` (4), reserved (4) |
//! | 32 | 16 × 2 | scatter/gather entries: `addr` (8), `length` (4), `lkey` (4) |
//!
//! Receive WQE (64 bytes): four scatter/gather entries; the first with
//! length 0 ends the list.

use bitflags::bitflags;
use serde::{Deserialize, Serialize};
use zerocopy::byteorder::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::ids::{Mkey, Qpn};

/// Bytes per send or receive WQE.
pub const WQE_STRIDE: u64 = 64;
/// Scatter/gather entries a send WQE holds.
pub const SEND_SGES: usize = 2;
/// Scatter/gather entries a receive WQE holds.
pub const RECV_SGES: usize = 4;

/// What a send WQE asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum WqeOpcode {
    /// SEND.
    Send = 0,
    /// SEND with immediate.
    SendImm = 1,
    /// RDMA WRITE.
    RdmaWrite = 2,
    /// RDMA WRITE with immediate (consumes a receive WQE at the responder).
    RdmaWriteImm = 3,
    /// RDMA READ.
    RdmaRead = 4,
}

impl WqeOpcode {
    /// The opcode of byte `raw`, if defined.
    pub fn from_raw(raw: u8) -> Option<WqeOpcode> {
        Some(match raw {
            0 => WqeOpcode::Send,
            1 => WqeOpcode::SendImm,
            2 => WqeOpcode::RdmaWrite,
            3 => WqeOpcode::RdmaWriteImm,
            4 => WqeOpcode::RdmaRead,
            _ => return None,
        })
    }

    /// Whether the request names remote memory (RETH).
    pub fn is_rdma(self) -> bool {
        matches!(
            self,
            WqeOpcode::RdmaWrite | WqeOpcode::RdmaWriteImm | WqeOpcode::RdmaRead
        )
    }

    /// Whether the request carries immediate data.
    pub fn has_imm(self) -> bool {
        matches!(self, WqeOpcode::SendImm | WqeOpcode::RdmaWriteImm)
    }
}

bitflags! {
    /// Send WQE flags.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    pub struct WqeFlags: u8 {
        /// Write a completion when the request completes successfully
        /// (errors always complete).
        const SIGNALED = 1 << 0;
        /// Set the solicited-event bit of the last packet.
        const SOLICITED = 1 << 1;
        /// Wait for earlier RDMA READs to complete first.
        const FENCE = 1 << 2;
    }
}

/// A scatter/gather entry as laid out in memory.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SgeLayout {
    /// Virtual address in the region of `lkey`.
    pub addr: U64,
    /// Bytes.
    pub length: U32,
    /// The local key.
    pub lkey: U32,
}

/// A send WQE as laid out in memory.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SendWqeLayout {
    /// [`WqeOpcode`] as a byte.
    pub opcode: u8,
    /// [`WqeFlags`] bits.
    pub flags: u8,
    /// Scatter/gather entries used.
    pub num_sge: u8,
    /// Reserved.
    pub reserved0: u8,
    /// Immediate data.
    pub imm: U32,
    /// Reserved.
    pub reserved1: U64,
    /// RC/UC: remote VA; UD: address handle (low 32 bits) and destination
    /// QPN (high 32 bits).
    pub remote_a: U64,
    /// RC/UC: R_Key; UD: Q_Key.
    pub remote_b: U32,
    /// Reserved.
    pub reserved2: U32,
    /// The scatter/gather list.
    pub sge: [SgeLayout; SEND_SGES],
}

/// A receive WQE as laid out in memory.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct RecvWqeLayout {
    /// The scatter list; the first entry of length 0 ends it.
    pub sge: [SgeLayout; RECV_SGES],
}

/// A checked scatter/gather entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sge {
    /// Virtual address.
    pub addr: u64,
    /// Bytes.
    pub length: u32,
    /// The local key.
    pub lkey: Mkey,
}

impl From<SgeLayout> for Sge {
    fn from(s: SgeLayout) -> Sge {
        Sge {
            addr: s.addr.get(),
            length: s.length.get(),
            lkey: Mkey(s.lkey.get()),
        }
    }
}

impl From<Sge> for SgeLayout {
    fn from(s: Sge) -> SgeLayout {
        SgeLayout {
            addr: U64::new(s.addr),
            length: U32::new(s.length),
            lkey: U32::new(s.lkey.0),
        }
    }
}

/// Where a send goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Remote {
    /// SEND on RC/UC: the connection's peer picks the memory.
    None,
    /// RDMA on RC/UC: remote VA and R_Key.
    Rdma {
        /// Remote virtual address.
        va: u64,
        /// Remote key.
        rkey: Mkey,
    },
    /// UD: address handle, destination QP and Q_Key.
    Ud {
        /// Address handle index of the sending function.
        ah: u32,
        /// Destination QP.
        dest_qpn: Qpn,
        /// Q_Key.
        qkey: u32,
    },
}

/// A send WQE, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SendWqe {
    /// What to do.
    pub opcode: WqeOpcode,
    /// Flags.
    pub flags: WqeFlags,
    /// Immediate data (when the opcode carries it).
    pub imm: u32,
    /// The destination.
    pub remote: Remote,
    /// Gather (or, for RDMA READ, scatter) entries; `num_sge` of them used.
    pub sge: [Sge; SEND_SGES],
    /// Entries used.
    pub num_sge: u8,
}

/// Why a WQE was refused: the QP's local error completion says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error, Serialize, Deserialize)]
pub enum WqeError {
    /// The opcode byte names no operation.
    #[error("unknown opcode {0:#x}")]
    BadOpcode(u8),
    /// More scatter/gather entries than the WQE holds.
    #[error("{0} scatter/gather entries")]
    TooManySges(u8),
    /// The operation is not allowed on this QP type (RDMA on UD, READ on UC).
    #[error("operation not supported on this QP type")]
    WrongQpType,
    /// The total length overflows 32 bits or exceeds the transport's limit.
    #[error("message length {0} too long")]
    TooLong(u64),
}

impl SendWqe {
    /// Total bytes the gather list names.
    pub fn length(&self) -> u64 {
        self.sges().iter().map(|s| u64::from(s.length)).sum()
    }

    /// The entries in use.
    pub fn sges(&self) -> &[Sge] {
        self.sge.get(..usize::from(self.num_sge)).unwrap_or(&[])
    }

    /// Reads a send WQE for a QP whose type is UD (`ud`) or connected.
    pub fn parse(raw: &SendWqeLayout, ud: bool) -> Result<SendWqe, WqeError> {
        let opcode = WqeOpcode::from_raw(raw.opcode).ok_or(WqeError::BadOpcode(raw.opcode))?;
        if usize::from(raw.num_sge) > SEND_SGES {
            return Err(WqeError::TooManySges(raw.num_sge));
        }
        let remote = if ud {
            if opcode.is_rdma() {
                return Err(WqeError::WrongQpType);
            }
            let a = raw.remote_a.get();
            Remote::Ud {
                ah: a as u32,
                dest_qpn: Qpn::from_wire((a >> 32) as u32),
                qkey: raw.remote_b.get(),
            }
        } else if opcode.is_rdma() {
            Remote::Rdma {
                va: raw.remote_a.get(),
                rkey: Mkey(raw.remote_b.get()),
            }
        } else {
            Remote::None
        };
        let wqe = SendWqe {
            opcode,
            flags: WqeFlags::from_bits_truncate(raw.flags),
            imm: raw.imm.get(),
            remote,
            sge: raw.sge.map(Sge::from),
            num_sge: raw.num_sge,
        };
        let len = wqe.length();
        if len > u64::from(u32::MAX) {
            return Err(WqeError::TooLong(len));
        }
        Ok(wqe)
    }

    /// The memory layout of this WQE (what a driver writes).
    pub fn layout(&self) -> SendWqeLayout {
        let (a, b) = match self.remote {
            Remote::None => (0, 0),
            Remote::Rdma { va, rkey } => (va, rkey.0),
            Remote::Ud { ah, dest_qpn, qkey } => {
                (u64::from(ah) | (u64::from(dest_qpn.raw()) << 32), qkey)
            }
        };
        SendWqeLayout {
            opcode: self.opcode as u8,
            flags: self.flags.bits(),
            num_sge: self.num_sge,
            imm: U32::new(self.imm),
            remote_a: U64::new(a),
            remote_b: U32::new(b),
            sge: self.sge.map(SgeLayout::from),
            ..SendWqeLayout::default()
        }
    }
}

/// A receive WQE's scatter list, checked: the entries before the first of
/// length 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecvWqe {
    /// The entries.
    pub sge: [Sge; RECV_SGES],
    /// Entries used.
    pub num_sge: u8,
}

impl RecvWqe {
    /// Reads a receive WQE.
    pub fn parse(raw: &RecvWqeLayout) -> RecvWqe {
        let sge = raw.sge.map(Sge::from);
        let num_sge = sge.iter().take_while(|s| s.length != 0).count() as u8;
        RecvWqe { sge, num_sge }
    }

    /// The entries in use.
    pub fn sges(&self) -> &[Sge] {
        self.sge.get(..usize::from(self.num_sge)).unwrap_or(&[])
    }

    /// Total bytes the scatter list can take.
    pub fn capacity(&self) -> u64 {
        self.sges().iter().map(|s| u64::from(s.length)).sum()
    }

    /// The layout of a receive WQE with `sges` (at most four; the rest are
    /// dropped).
    pub fn layout(sges: &[Sge]) -> RecvWqeLayout {
        let mut raw = RecvWqeLayout::default();
        for (slot, s) in raw.sge.iter_mut().zip(sges) {
            *slot = SgeLayout::from(*s);
        }
        raw
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn layouts_have_the_documented_sizes_and_offsets() {
        assert_eq!(size_of::<SendWqeLayout>() as u64, WQE_STRIDE);
        assert_eq!(size_of::<RecvWqeLayout>() as u64, WQE_STRIDE);
        let wqe = SendWqe {
            opcode: WqeOpcode::RdmaWriteImm,
            flags: WqeFlags::SIGNALED,
            imm: 0xdead_beef,
            remote: Remote::Rdma {
                va: 0x1122_3344_5566_7788,
                rkey: Mkey(0xaabb_ccdd),
            },
            sge: [
                Sge {
                    addr: 0x1000,
                    length: 300,
                    lkey: Mkey(0x100),
                },
                Sge {
                    addr: 0,
                    length: 0,
                    lkey: Mkey(0),
                },
            ],
            num_sge: 1,
        };
        let bytes = wqe.layout();
        let b = bytes.as_bytes();
        assert_eq!(&b[..8], &[3, 1, 1, 0, 0xef, 0xbe, 0xad, 0xde]);
        assert_eq!(&b[16..24], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&b[24..28], &0xaabb_ccddu32.to_le_bytes());
        assert_eq!(
            &b[32..48],
            &[0, 0x10, 0, 0, 0, 0, 0, 0, 44, 1, 0, 0, 0, 1, 0, 0]
        );
        assert_eq!(SendWqe::parse(&bytes, false), Ok(wqe));
        assert_eq!(wqe.length(), 300);
    }

    #[test]
    fn hostile_wqes_are_refused() {
        let mut raw = SendWqeLayout {
            opcode: 9,
            ..SendWqeLayout::default()
        };
        assert_eq!(SendWqe::parse(&raw, false), Err(WqeError::BadOpcode(9)));
        raw.opcode = WqeOpcode::Send as u8;
        raw.num_sge = 3;
        assert_eq!(SendWqe::parse(&raw, false), Err(WqeError::TooManySges(3)));
        raw.num_sge = 2;
        raw.sge[0].length = U32::new(u32::MAX);
        raw.sge[1].length = U32::new(2);
        assert_eq!(
            SendWqe::parse(&raw, false),
            Err(WqeError::TooLong(u64::from(u32::MAX) + 2))
        );
        raw.opcode = WqeOpcode::RdmaRead as u8;
        assert_eq!(SendWqe::parse(&raw, true), Err(WqeError::WrongQpType));
    }

    #[test]
    fn ud_remote_and_receive_lists() {
        let raw = SendWqeLayout {
            opcode: 0,
            remote_a: U64::new(7 | (0x12_3456u64 << 32)),
            remote_b: U32::new(0x1111_2222),
            ..SendWqeLayout::default()
        };
        let w = SendWqe::parse(&raw, true).unwrap();
        assert_eq!(
            w.remote,
            Remote::Ud {
                ah: 7,
                dest_qpn: Qpn::new(0x12_3456).unwrap(),
                qkey: 0x1111_2222
            }
        );
        let s = |len| Sge {
            addr: 0x2000,
            length: len,
            lkey: Mkey(0x200),
        };
        let r = RecvWqe::parse(&RecvWqe::layout(&[s(100), s(0), s(50)]));
        assert_eq!(
            (r.num_sge, r.capacity()),
            (1, 100),
            "a zero length ends the list"
        );
    }
}

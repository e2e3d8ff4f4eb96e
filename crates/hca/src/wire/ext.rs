//! The extended transport headers: RETH, AETH, DETH, ImmDt and AtomicAckETH.
//!
//! Each is a small fixed-size struct of plain values with `parse` from the
//! start of a buffer, `emit` into one and `to_bytes`; all big-endian.

use super::bth::MASK_24;
use super::{
    AETH_LEN, ATOMIC_ACK_ETH_LEN, DETH_LEN, IMMDT_LEN, RETH_LEN, RnrTimer, WireError, put, take,
};

/// RDMA Extended Transport Header: the remote buffer of a WRITE or READ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Reth {
    /// Remote virtual address.
    pub va: u64,
    /// Remote key of the memory region.
    pub rkey: u32,
    /// Length of the whole transfer in bytes.
    pub dma_len: u32,
}

impl Reth {
    /// Reads a RETH from the start of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Reth, WireError> {
        let b: [u8; RETH_LEN] = take(buf, 0)?;
        let [
            v0,
            v1,
            v2,
            v3,
            v4,
            v5,
            v6,
            v7,
            k0,
            k1,
            k2,
            k3,
            l0,
            l1,
            l2,
            l3,
        ] = b;
        Ok(Reth {
            va: u64::from_be_bytes([v0, v1, v2, v3, v4, v5, v6, v7]),
            rkey: u32::from_be_bytes([k0, k1, k2, k3]),
            dma_len: u32::from_be_bytes([l0, l1, l2, l3]),
        })
    }

    /// The 16 bytes of the header.
    pub fn to_bytes(&self) -> [u8; RETH_LEN] {
        let mut b = [0u8; RETH_LEN];
        let (va, rest) = b.split_at_mut(8);
        let (rkey, len) = rest.split_at_mut(4);
        va.copy_from_slice(&self.va.to_be_bytes());
        rkey.copy_from_slice(&self.rkey.to_be_bytes());
        len.copy_from_slice(&self.dma_len.to_be_bytes());
        b
    }

    /// Writes the header at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        put(buf, 0, &self.to_bytes())
    }
}

/// The code of a NAK syndrome (class 0b11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NakCode {
    /// 0x60: a PSN ahead of the expected one; the MSN field carries the
    /// expected PSN's message.
    PsnSequenceError,
    /// 0x61: the request was malformed or not allowed on the QP.
    InvalidRequest,
    /// 0x62: R_Key, bounds or access rights violated.
    RemoteAccessError,
    /// 0x63: the responder failed for a reason of its own.
    RemoteOperationalError,
    /// Any other code (the low five bits, 4 to 31), reserved by IB.
    Other(u8),
}

impl NakCode {
    /// The low five bits of the syndrome.
    pub const fn code(self) -> u8 {
        match self {
            NakCode::PsnSequenceError => 0,
            NakCode::InvalidRequest => 1,
            NakCode::RemoteAccessError => 2,
            NakCode::RemoteOperationalError => 3,
            NakCode::Other(c) => c & 0x1F,
        }
    }

    /// The NAK code of the low five bits of `code`.
    pub const fn from_code(code: u8) -> NakCode {
        match code & 0x1F {
            0 => NakCode::PsnSequenceError,
            1 => NakCode::InvalidRequest,
            2 => NakCode::RemoteAccessError,
            3 => NakCode::RemoteOperationalError,
            c => NakCode::Other(c),
        }
    }
}

/// The syndrome byte of an AETH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AethSyndrome {
    /// A positive acknowledgement with the responder's end-to-end credit
    /// count (five bits; [`AethSyndrome::UNLIMITED_CREDITS`] = no limit).
    Ack {
        /// Credit count code.
        credits: u8,
    },
    /// Receiver not ready: retry after the timer.
    RnrNak {
        /// How long the requester waits before retrying.
        timer: RnrTimer,
    },
    /// A negative acknowledgement.
    Nak(NakCode),
    /// A syndrome IB reserves: bit 7 set, or class 0b10. Carried unchanged
    /// so that decoding and encoding are exact inverses.
    Reserved(u8),
}

impl AethSyndrome {
    /// The credit count meaning "no end-to-end flow control".
    pub const UNLIMITED_CREDITS: u8 = 0x1F;

    /// Decodes a syndrome byte; every byte has exactly one decoding.
    pub const fn from_raw(raw: u8) -> AethSyndrome {
        if raw & 0x80 != 0 {
            return AethSyndrome::Reserved(raw);
        }
        let low = raw & 0x1F;
        match (raw >> 5) & 0x3 {
            0b00 => AethSyndrome::Ack { credits: low },
            0b01 => AethSyndrome::RnrNak {
                timer: RnrTimer::new(low),
            },
            0b11 => AethSyndrome::Nak(NakCode::from_code(low)),
            _ => AethSyndrome::Reserved(raw),
        }
    }

    /// Encodes the syndrome byte. Fields wider than five bits are
    /// truncated to them.
    pub const fn raw(self) -> u8 {
        match self {
            AethSyndrome::Ack { credits } => credits & 0x1F,
            AethSyndrome::RnrNak { timer } => 0x20 | timer.code(),
            AethSyndrome::Nak(code) => 0x60 | code.code(),
            AethSyndrome::Reserved(raw) => raw,
        }
    }
}

/// ACK Extended Transport Header: syndrome and message sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Aeth {
    /// What kind of acknowledgement this is.
    pub syndrome: AethSyndrome,
    /// Message sequence number, 24 bits.
    pub msn: u32,
}

impl Aeth {
    /// Reads an AETH from the start of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Aeth, WireError> {
        let [s, m0, m1, m2] = take::<AETH_LEN>(buf, 0)?;
        Ok(Aeth {
            syndrome: AethSyndrome::from_raw(s),
            msn: u32::from_be_bytes([0, m0, m1, m2]),
        })
    }

    /// The four bytes of the header (the MSN truncated to 24 bits).
    pub fn to_bytes(&self) -> [u8; AETH_LEN] {
        let [_, m0, m1, m2] = (self.msn & MASK_24).to_be_bytes();
        [self.syndrome.raw(), m0, m1, m2]
    }

    /// Writes the header at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        put(buf, 0, &self.to_bytes())
    }
}

/// Datagram Extended Transport Header of UD packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Deth {
    /// Queue key the receiving QP checks.
    pub qkey: u32,
    /// Sending QP, 24 bits.
    pub src_qp: u32,
}

impl Deth {
    /// Reads a DETH from the start of `buf` (the reserved byte is ignored).
    pub fn parse(buf: &[u8]) -> Result<Deth, WireError> {
        let [k0, k1, k2, k3, _, q0, q1, q2] = take::<DETH_LEN>(buf, 0)?;
        Ok(Deth {
            qkey: u32::from_be_bytes([k0, k1, k2, k3]),
            src_qp: u32::from_be_bytes([0, q0, q1, q2]),
        })
    }

    /// The eight bytes of the header (source QP truncated to 24 bits).
    pub fn to_bytes(&self) -> [u8; DETH_LEN] {
        let [k0, k1, k2, k3] = self.qkey.to_be_bytes();
        let [_, q0, q1, q2] = (self.src_qp & MASK_24).to_be_bytes();
        [k0, k1, k2, k3, 0, q0, q1, q2]
    }

    /// Writes the header at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        put(buf, 0, &self.to_bytes())
    }
}

/// Immediate data: four bytes delivered to the receiver's completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ImmDt(pub u32);

impl ImmDt {
    /// Reads the immediate data from the start of `buf`.
    pub fn parse(buf: &[u8]) -> Result<ImmDt, WireError> {
        Ok(ImmDt(u32::from_be_bytes(take::<IMMDT_LEN>(buf, 0)?)))
    }

    /// The four bytes, big-endian.
    pub fn to_bytes(&self) -> [u8; IMMDT_LEN] {
        self.0.to_be_bytes()
    }

    /// Writes the immediate data at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        put(buf, 0, &self.to_bytes())
    }
}

/// Atomic ACK Extended Transport Header: the original value of the target
/// of an atomic operation, carried by ATOMIC ACKNOWLEDGE after its AETH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AtomicAckEth(pub u64);

impl AtomicAckEth {
    /// Reads the header from the start of `buf`.
    pub fn parse(buf: &[u8]) -> Result<AtomicAckEth, WireError> {
        Ok(AtomicAckEth(u64::from_be_bytes(
            take::<ATOMIC_ACK_ETH_LEN>(buf, 0)?,
        )))
    }

    /// The eight bytes, big-endian.
    pub fn to_bytes(&self) -> [u8; ATOMIC_ACK_ETH_LEN] {
        self.0.to_be_bytes()
    }

    /// Writes the header at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        put(buf, 0, &self.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reth_is_va_rkey_len_big_endian() {
        let r = Reth {
            va: 0x0102_0304_0506_0708,
            rkey: 0x1122_3344,
            dma_len: 0x0000_1000,
        };
        let b = r.to_bytes();
        assert_eq!(
            b,
            [
                1, 2, 3, 4, 5, 6, 7, 8, 0x11, 0x22, 0x33, 0x44, 0, 0, 0x10, 0
            ]
        );
        assert_eq!(Reth::parse(&b), Ok(r));
        assert_eq!(
            Reth::parse(&b[..15]),
            Err(WireError::Truncated { need: 16, have: 15 })
        );
        let mut out = [0u8; 17];
        r.emit(&mut out[1..]).unwrap();
        assert_eq!(out[1..], b);
        assert!(r.emit(&mut [0u8; 3]).is_err());
    }

    #[test]
    fn syndromes_decode_to_the_fact_table() {
        assert_eq!(
            AethSyndrome::from_raw(0x1F),
            AethSyndrome::Ack { credits: 31 }
        );
        assert_eq!(
            AethSyndrome::from_raw(0x00),
            AethSyndrome::Ack { credits: 0 }
        );
        assert_eq!(
            AethSyndrome::from_raw(0x2E),
            AethSyndrome::RnrNak {
                timer: RnrTimer::new(14)
            }
        );
        assert_eq!(
            AethSyndrome::from_raw(0x60),
            AethSyndrome::Nak(NakCode::PsnSequenceError)
        );
        assert_eq!(
            AethSyndrome::from_raw(0x61),
            AethSyndrome::Nak(NakCode::InvalidRequest)
        );
        assert_eq!(
            AethSyndrome::from_raw(0x62),
            AethSyndrome::Nak(NakCode::RemoteAccessError)
        );
        assert_eq!(
            AethSyndrome::from_raw(0x63),
            AethSyndrome::Nak(NakCode::RemoteOperationalError)
        );
        assert_eq!(
            AethSyndrome::from_raw(0x64),
            AethSyndrome::Nak(NakCode::Other(4))
        );
        assert_eq!(AethSyndrome::from_raw(0x41), AethSyndrome::Reserved(0x41));
        assert_eq!(AethSyndrome::from_raw(0x80), AethSyndrome::Reserved(0x80));
    }

    #[test]
    fn every_syndrome_byte_round_trips() {
        for raw in 0..=255u8 {
            assert_eq!(AethSyndrome::from_raw(raw).raw(), raw, "{raw:#04x}");
        }
        assert_eq!(AethSyndrome::Nak(NakCode::RemoteAccessError).raw(), 0x62);
        assert_eq!(
            AethSyndrome::RnrNak {
                timer: RnrTimer::new(1)
            }
            .raw(),
            0x21
        );
    }

    #[test]
    fn aeth_deth_immdt_atomic_bytes() {
        let a = Aeth {
            syndrome: AethSyndrome::Nak(NakCode::PsnSequenceError),
            msn: 0xFF01_0203,
        };
        assert_eq!(a.to_bytes(), [0x60, 0x01, 0x02, 0x03]);
        assert_eq!(Aeth::parse(&a.to_bytes()).map(|a| a.msn), Ok(0x01_0203));
        assert_eq!(
            Aeth::parse(&[0x60]),
            Err(WireError::Truncated { need: 4, have: 1 })
        );

        let d = Deth {
            qkey: 0x8001_0002,
            src_qp: 0x12_3456,
        };
        assert_eq!(d.to_bytes(), [0x80, 0x01, 0x00, 0x02, 0, 0x12, 0x34, 0x56]);
        // The reserved byte is ignored on receive.
        assert_eq!(
            Deth::parse(&[0x80, 0x01, 0x00, 0x02, 0xAA, 0x12, 0x34, 0x56]),
            Ok(d)
        );

        let i = ImmDt(0xDEAD_BEEF);
        assert_eq!(i.to_bytes(), [0xDE, 0xAD, 0xBE, 0xEF]);
        assert_eq!(ImmDt::parse(&[0xDE, 0xAD, 0xBE, 0xEF, 9]), Ok(i));
        let mut buf = [0u8; 4];
        i.emit(&mut buf).unwrap();
        assert_eq!(buf, [0xDE, 0xAD, 0xBE, 0xEF]);

        let at = AtomicAckEth(0x0102_0304_0506_0708);
        assert_eq!(AtomicAckEth::parse(&at.to_bytes()), Ok(at));
        let mut buf = [0u8; 8];
        at.emit(&mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(d.emit(&mut [0u8; 7]).is_err());
        assert!(a.emit(&mut [0u8; 4]).is_ok());
    }
}

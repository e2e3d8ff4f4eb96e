//! Legacy descriptor layouts (16 bytes each), as the device reads and
//! writes them in the rings.

use bitflags::bitflags;
use zerocopy::byteorder::little_endian::{U16, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Bytes per descriptor.
pub const DESC_SIZE: u64 = 16;

bitflags! {
    /// Transmit descriptor command bits.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct TxCmd: u8 {
        /// End of packet: the last descriptor of a frame.
        const EOP = 0x01;
        /// Insert FCS.
        const IFCS = 0x02;
        /// Insert checksum.
        const IC = 0x04;
        /// Report status: write DD back when done.
        const RS = 0x08;
        /// Report packet sent.
        const RPS = 0x10;
        /// Extension: not a legacy descriptor.
        const DEXT = 0x20;
        /// VLAN packet enable.
        const VLE = 0x40;
        /// Interrupt delay enable.
        const IDE = 0x80;
    }
}

bitflags! {
    /// Transmit descriptor status bits.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct TxSta: u8 {
        /// Descriptor done.
        const DD = 0x01;
    }
}

bitflags! {
    /// Receive descriptor status bits.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct RxSta: u8 {
        /// Descriptor done.
        const DD = 0x01;
        /// End of packet.
        const EOP = 0x02;
        /// Ignore checksum indication.
        const IXSM = 0x04;
        /// 802.1Q packet.
        const VP = 0x08;
    }
}

/// A legacy transmit descriptor.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct TxDesc {
    /// Buffer address (I/O-virtual).
    pub addr: U64,
    /// Bytes in the buffer.
    pub length: U16,
    /// Checksum offset.
    pub cso: u8,
    /// Command bits ([`TxCmd`]).
    pub cmd: u8,
    /// Status bits ([`TxSta`]), written back by the device.
    pub sta: u8,
    /// Checksum start.
    pub css: u8,
    /// VLAN tag.
    pub special: U16,
}

/// A legacy receive descriptor.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct RxDesc {
    /// Buffer address (I/O-virtual).
    pub addr: U64,
    /// Bytes stored, written back by the device.
    pub length: U16,
    /// Packet checksum, written back.
    pub checksum: U16,
    /// Status bits ([`RxSta`]), written back.
    pub status: u8,
    /// Error bits, written back.
    pub errors: u8,
    /// VLAN tag, written back.
    pub special: U16,
}

impl TxDesc {
    /// The command bits.
    pub fn cmd(&self) -> TxCmd {
        TxCmd::from_bits_retain(self.cmd)
    }

    /// Whether this is iovirt's NOP transmit command (seed 000): DEXT set
    /// with descriptor type 0xF in bits 23:20 of the length/type word,
    /// a type the 8254x reserves. See [`crate`] docs.
    pub fn is_nop(&self) -> bool {
        self.cmd().contains(TxCmd::DEXT) && self.cso >> 4 == 0xf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_16_bytes_little_endian() {
        assert_eq!(core::mem::size_of::<TxDesc>(), 16);
        assert_eq!(core::mem::size_of::<RxDesc>(), 16);
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
        raw[8..10].copy_from_slice(&1514u16.to_le_bytes());
        raw[11] = (TxCmd::EOP | TxCmd::RS).bits();
        let d = TxDesc::read_from_bytes(&raw).unwrap();
        assert_eq!(d.addr.get(), 0x1122_3344_5566_7788);
        assert_eq!(d.length.get(), 1514);
        assert_eq!(d.cmd(), TxCmd::EOP | TxCmd::RS);
        assert!(!d.is_nop());
        let nop = TxDesc {
            cso: 0xf0,
            cmd: TxCmd::DEXT.bits(),
            ..d
        };
        assert!(nop.is_nop());
        let rx = RxDesc {
            length: U16::new(60),
            status: (RxSta::DD | RxSta::EOP).bits(),
            ..RxDesc::default()
        };
        assert_eq!(rx.as_bytes()[8..10], [60, 0]);
        assert_eq!(rx.as_bytes()[12], 0x03);
    }
}

//! The HCA's object names: queue pair numbers, memory keys, protection
//! domains, completion queues and the PCI functions the VMs drive.

use core::fmt;

use serde::{Deserialize, Serialize};

/// A queue pair number: 24 bits on the wire (BTH DestQP). QPN 0 and 1 are
/// InfiniBand's special QPs and never allocated to a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Qpn(u32);

impl Qpn {
    /// The largest QPN the 24-bit field carries.
    pub const MAX: u32 = 0x00ff_ffff;

    /// A QPN, or `None` when `raw` does not fit 24 bits.
    pub const fn new(raw: u32) -> Option<Qpn> {
        if raw <= Self::MAX {
            Some(Qpn(raw))
        } else {
            None
        }
    }

    /// The QPN from a 24-bit wire field (upper bits dropped).
    pub const fn from_wire(raw: u32) -> Qpn {
        Qpn(raw & Self::MAX)
    }

    /// The number.
    pub const fn raw(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Qpn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "qp {:#x}", self.0)
    }
}

/// A memory key (L_Key or R_Key): the MPT index in bits 31:8 and an 8-bit
/// key variant the owner picks, so that a stale key of a re-registered
/// region no longer matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Mkey(pub u32);

impl Mkey {
    /// A key from its MPT index (24 bits) and variant.
    pub const fn new(index: u32, variant: u8) -> Mkey {
        Mkey((index << 8) | variant as u32)
    }

    /// The memory protection table index.
    pub const fn index(self) -> u32 {
        self.0 >> 8
    }

    /// The variant byte.
    pub const fn variant(self) -> u8 {
        (self.0 & 0xff) as u8
    }
}

impl fmt::Display for Mkey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mkey {:#x}", self.0)
    }
}

/// A protection domain number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Pdn(pub u32);

impl fmt::Display for Pdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pd {}", self.0)
    }
}

/// A completion queue number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cqn(pub u32);

impl fmt::Display for Cqn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cq {}", self.0)
    }
}

/// A PCI function of the HCA: the host's physical function (0) or a
/// virtual function assigned to one VM. Each has its own command interface,
/// doorbell page, event queue and GVMI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FunctionId(pub u16);

impl FunctionId {
    /// The host's physical function.
    pub const PF: FunctionId = FunctionId(0);
}

impl fmt::Display for FunctionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "function {}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qpn_is_24_bits_and_mkey_splits_index_and_variant() {
        assert_eq!(Qpn::new(0x0100_0000), None);
        assert_eq!(Qpn::from_wire(0xab12_3456).raw(), 0x12_3456);
        let k = Mkey::new(0x12_3456, 0x7e);
        assert_eq!(k.0, 0x1234_567e);
        assert_eq!((k.index(), k.variant()), (0x12_3456, 0x7e));
        assert_eq!(k.to_string(), "mkey 0x1234567e");
        assert_eq!(Qpn::from_wire(0x11).to_string(), "qp 0x11");
    }
}

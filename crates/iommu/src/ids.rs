//! The identifiers an IOMMU keys its tables by.

use core::fmt;

use serde::{Deserialize, Serialize};

/// A PCI requester id: bus (8 bits), device (5 bits), function (3 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequesterId(u16);

impl RequesterId {
    /// The id of `bus:device.function`, or `None` when the device (< 32) or
    /// function (< 8) is out of range.
    pub const fn new(bus: u8, device: u8, function: u8) -> Option<RequesterId> {
        if device >= 32 || function >= 8 {
            return None;
        }
        Some(RequesterId(
            ((bus as u16) << 8) | ((device as u16) << 3) | function as u16,
        ))
    }

    /// The id from its 16-bit encoding.
    pub const fn from_raw(raw: u16) -> RequesterId {
        RequesterId(raw)
    }

    /// The 16-bit encoding.
    pub const fn raw(self) -> u16 {
        self.0
    }

    /// The bus number (the root-table index).
    pub const fn bus(self) -> u8 {
        (self.0 >> 8) as u8
    }

    /// Device and function together (the context-table index).
    pub const fn devfn(self) -> u8 {
        (self.0 & 0xff) as u8
    }
}

impl fmt::Display for RequesterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02x}:{:02x}.{}",
            self.bus(),
            self.devfn() >> 3,
            self.devfn() & 7
        )
    }
}

/// A process address space id: 20 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Pasid(u32);

impl Pasid {
    /// One more than the largest PASID.
    pub const LIMIT: u32 = 1 << 20;

    /// The PASID `raw`, or `None` when it does not fit in 20 bits.
    pub const fn new(raw: u32) -> Option<Pasid> {
        if raw < Self::LIMIT {
            Some(Pasid(raw))
        } else {
            None
        }
    }

    /// The value.
    pub const fn raw(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Pasid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pasid {:#x}", self.0)
    }
}

/// A domain: one second-stage address space, shared by the requesters
/// attached to it, and the tag its IOTLB entries carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DomainId(pub u16);

impl fmt::Display for DomainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "domain {}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requester_encoding() {
        let r = RequesterId::new(0x3a, 0x1f, 7).unwrap();
        assert_eq!(r.raw(), 0x3aff);
        assert_eq!((r.bus(), r.devfn()), (0x3a, 0xff));
        assert_eq!(r.to_string(), "3a:1f.7");
        assert_eq!(RequesterId::new(0, 32, 0), None);
        assert_eq!(RequesterId::new(0, 0, 8), None);
        assert_eq!(RequesterId::from_raw(0x0108).to_string(), "01:01.0");
    }

    #[test]
    fn pasid_is_20_bits() {
        assert_eq!(Pasid::new(0xf_ffff).map(Pasid::raw), Some(0xf_ffff));
        assert_eq!(Pasid::new(1 << 20), None);
    }
}

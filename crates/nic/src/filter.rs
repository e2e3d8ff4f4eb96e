//! The receive filter: exact addresses (RAL/RAH), broadcast, the multicast
//! hash table (MTA) and the promiscuous modes.

use crate::regs::{MTA_ENTRIES, RA_ENTRIES, RAH_AV, Rctl};

/// Why a frame was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Matched a valid receive-address entry.
    Exact,
    /// Broadcast, with BAM set.
    Broadcast,
    /// Multicast whose hash bit is set in the MTA.
    MulticastHash,
    /// Accepted by UPE or MPE.
    Promiscuous,
}

/// The filter's tables.
#[derive(Debug, Clone)]
pub struct ReceiveFilter {
    pub(crate) ral: [u32; RA_ENTRIES],
    pub(crate) rah: [u32; RA_ENTRIES],
    pub(crate) mta: [u32; MTA_ENTRIES],
}

impl Default for ReceiveFilter {
    fn default() -> Self {
        ReceiveFilter {
            ral: [0; RA_ENTRIES],
            rah: [0; RA_ENTRIES],
            mta: [0; MTA_ENTRIES],
        }
    }
}

/// The 12-bit MTA hash of a destination address for multicast offset `mo`
/// (RCTL.MO): address bits 47:36, 46:35, 45:34 or 43:32.
pub fn mta_hash(dst: [u8; 6], mo: u32) -> u32 {
    let word = (u32::from(dst[5]) << 8) | u32::from(dst[4]);
    let shift = match mo {
        0 => 4,
        1 => 3,
        2 => 2,
        _ => 0,
    };
    (word >> shift) & 0xfff
}

impl ReceiveFilter {
    /// Sets receive-address entry `i` to `mac`, valid (as a driver writes RAL/RAH).
    pub fn set_address(&mut self, i: usize, mac: [u8; 6]) {
        if let (Some(ral), Some(rah)) = (self.ral.get_mut(i), self.rah.get_mut(i)) {
            *ral = u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]);
            *rah = u32::from(u16::from_le_bytes([mac[4], mac[5]])) | RAH_AV;
        }
    }

    /// Whether a frame to `dst` passes under `rctl`, and why.
    pub fn accept(&self, rctl: Rctl, dst: [u8; 6]) -> Option<Accept> {
        let low = u32::from_le_bytes([dst[0], dst[1], dst[2], dst[3]]);
        let high = u32::from(u16::from_le_bytes([dst[4], dst[5]]));
        let exact = self
            .ral
            .iter()
            .zip(&self.rah)
            .any(|(&l, &h)| h & RAH_AV != 0 && l == low && h & 0xffff == high);
        if exact {
            return Some(Accept::Exact);
        }
        let multicast = dst[0] & 1 != 0;
        if dst == [0xff; 6] {
            return if rctl.contains(Rctl::BAM) {
                Some(Accept::Broadcast)
            } else if rctl.contains(Rctl::MPE) {
                Some(Accept::Promiscuous)
            } else {
                None
            };
        }
        if multicast {
            if rctl.contains(Rctl::MPE) {
                return Some(Accept::Promiscuous);
            }
            let hash = mta_hash(dst, rctl.multicast_offset());
            let bit = self
                .mta
                .get((hash >> 5) as usize)
                .is_some_and(|w| w & (1 << (hash & 31)) != 0);
            return bit.then_some(Accept::MulticastHash);
        }
        rctl.contains(Rctl::UPE).then_some(Accept::Promiscuous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    #[test]
    fn exact_broadcast_multicast_promiscuous() {
        let mut f = ReceiveFilter::default();
        f.set_address(0, MAC);
        let none = Rctl::empty();
        assert_eq!(f.accept(none, MAC), Some(Accept::Exact));
        assert_eq!(f.accept(none, [0x52, 0x54, 0, 0x12, 0x34, 0x57]), None);
        assert_eq!(f.accept(none, [0xff; 6]), None);
        assert_eq!(f.accept(Rctl::BAM, [0xff; 6]), Some(Accept::Broadcast));
        let group = [0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb];
        assert_eq!(f.accept(none, group), None);
        let hash = mta_hash(group, 0);
        assert_eq!(hash, 0xfb0); // address bits 47:36
        f.mta[(hash >> 5) as usize] |= 1 << (hash & 31);
        assert_eq!(f.accept(none, group), Some(Accept::MulticastHash));
        assert_eq!(
            f.accept(Rctl::MPE, [0x01, 2, 3, 4, 5, 6]),
            Some(Accept::Promiscuous)
        );
        assert_eq!(
            f.accept(Rctl::UPE, [0x02, 2, 3, 4, 5, 6]),
            Some(Accept::Promiscuous)
        );
        // An entry without AV matches nothing.
        f.rah[0] &= !RAH_AV;
        assert_eq!(f.accept(none, MAC), None);
    }

    #[test]
    fn hash_offsets() {
        let dst = [0, 0, 0, 0, 0xcd, 0xab];
        assert_eq!(mta_hash(dst, 0), 0xabc);
        assert_eq!(mta_hash(dst, 3), 0xbcd);
        assert_eq!(mta_hash(dst, 1), (0xabcd >> 3) & 0xfff);
        assert_eq!(mta_hash(dst, 2), (0xabcd >> 2) & 0xfff);
    }
}

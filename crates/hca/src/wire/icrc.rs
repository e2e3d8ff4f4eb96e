//! The invariant CRC of RoCEv2 packets.
//!
//! The ICRC is the Ethernet CRC-32 over the parts of a packet no router or
//! switch may change: the fields that do change on the way (IPv4 TOS, TTL
//! and header checksum, the UDP checksum, the BTH's FECN/BECN byte) are
//! replaced by ones, and eight bytes of ones stand in for the InfiniBand
//! local routing header RoCEv2 does not have.

use std::sync::OnceLock;

use super::{BTH_LEN, IPV4_HEADER_LEN, UDP_HEADER_LEN};

/// The ICRC of a RoCEv2 packet over IPv4.
///
/// `packet` runs from the first byte of the IPv4 header to the last byte
/// of pad, the ICRC itself excluded (the Ethernet header is not covered).
/// IPv4 options are covered as they are. The value is stored in the frame
/// as `icrc(..).to_le_bytes()`. Nothing is copied beyond the 40 bytes of
/// fixed headers: the rest goes to the CRC in place. A slice too short to
/// hold the headers gives the CRC of what it has, masked where it reaches.
pub fn icrc(packet: &[u8]) -> u32 {
    if let Some(crc) = icrc_no_options(packet) {
        return crc;
    }
    let mut hasher = fresh_hasher();
    hasher.update(&[0xFF; 8]);
    let ihl = packet
        .first()
        .map_or(IPV4_HEADER_LEN, |b| usize::from(b & 0x0F) * 4)
        .max(IPV4_HEADER_LEN);
    let (ip, rest) = split_at_most(packet, ihl);
    let (ip_fixed, ip_options) = split_at_most(ip, IPV4_HEADER_LEN);
    // TOS, TTL and the header checksum.
    update_masked::<IPV4_HEADER_LEN>(&mut hasher, ip_fixed, &[1, 8, 10, 11]);
    hasher.update(ip_options);
    let (udp, rest) = split_at_most(rest, UDP_HEADER_LEN);
    // The UDP checksum.
    update_masked::<UDP_HEADER_LEN>(&mut hasher, udp, &[6, 7]);
    let (bth, rest) = split_at_most(rest, BTH_LEN);
    // FECN, BECN and the six reserved bits.
    update_masked::<BTH_LEN>(&mut hasher, bth, &[4]);
    hasher.update(rest);
    hasher.finalize()
}

/// The common case, an IPv4 header without options and the whole BTH: the
/// ones, the masked fixed headers and the rest in two updates (small
/// updates take the hasher's slow path). `None` for anything else.
fn icrc_no_options(packet: &[u8]) -> Option<u32> {
    const FIXED: usize = IPV4_HEADER_LEN + UDP_HEADER_LEN + BTH_LEN;
    let (fixed, rest) = packet.split_at_checked(FIXED)?;
    if fixed.first().map(|b| b & 0x0F) != Some(5) {
        return None;
    }
    let mut head = [0xFFu8; 8 + FIXED];
    head.get_mut(8..)?.copy_from_slice(fixed);
    // TOS, TTL and the IPv4 checksum; the UDP checksum; BTH byte 4.
    for i in [1, 8, 10, 11, 26, 27, 32] {
        *head.get_mut(8 + i)? = 0xFF;
    }
    let mut hasher = fresh_hasher();
    hasher.update(&head);
    hasher.update(rest);
    Some(hasher.finalize())
}

/// A hasher in its initial state. `Hasher::new` probes the CPU's features
/// on every call (two calls per packet); the answer cannot change, so the
/// hasher made by the first call is cloned instead.
fn fresh_hasher() -> crc32fast::Hasher {
    static FRESH: OnceLock<crc32fast::Hasher> = OnceLock::new();
    FRESH.get_or_init(crc32fast::Hasher::new).clone()
}

/// `bytes` split after `n`, or all of it and nothing when shorter.
fn split_at_most(bytes: &[u8], n: usize) -> (&[u8], &[u8]) {
    bytes.split_at_checked(n).unwrap_or((bytes, &[]))
}

/// Feeds `bytes` (at most `N`) to the hasher with the bytes at `ones` set
/// to 0xFF, through a copy on the stack.
fn update_masked<const N: usize>(hasher: &mut crc32fast::Hasher, bytes: &[u8], ones: &[usize]) {
    let mut buf = [0u8; N];
    let n = bytes.len().min(N);
    let (head, _) = buf.split_at_mut(n);
    head.copy_from_slice(bytes.get(..n).unwrap_or_default());
    for &i in ones {
        if let Some(b) = head.get_mut(i) {
            *b = 0xFF;
        }
    }
    hasher.update(head);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CNP captured on a ConnectX-4 Lx, from the IPv4 header on (the
    /// Ethernet header is not covered). Source: the regression tests of
    /// Scapy's RoCE layer, secdev/scapy test/contrib/roce.uts, "RoCE CNP
    /// captured on ConnectX-4 Lx"; its ICRC bytes are 82 fd 00 2a.
    const CNP_FROM_IP: [u8; 56] = [
        0x45, 0xc2, 0x00, 0x3c, 0x71, 0x8c, 0x40, 0x00, 0x40, 0x11, 0x91, 0x61, 0x0a, 0x00, 0x11,
        0x01, 0x0a, 0x00, 0x12, 0x01, 0x00, 0x00, 0x12, 0xb7, 0x00, 0x28, 0x00, 0x00, 0x81, 0x00,
        0xff, 0xff, 0x40, 0x00, 0x01, 0x18, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn hardware_cnp_vector() {
        assert_eq!(icrc(&CNP_FROM_IP).to_le_bytes(), [0x82, 0xfd, 0x00, 0x2a]);
    }

    #[test]
    fn variant_fields_do_not_count() {
        let base = icrc(&CNP_FROM_IP);
        for (at, value) in [
            (1, 0x00),
            (8, 0x01),
            (10, 0x12),
            (11, 0x34),
            (26, 0x77),
            (27, 1),
            (32, 0x80),
        ] {
            let mut p = CNP_FROM_IP;
            p[at] = value;
            assert_eq!(icrc(&p), base, "byte {at}");
        }
        // And an invariant one does.
        let mut p = CNP_FROM_IP;
        p[33] ^= 1;
        assert_ne!(icrc(&p), base);
    }

    #[test]
    fn options_shift_the_later_masks() {
        // The same packet with one word of IPv4 options (IHL 6): the UDP
        // checksum and BTH byte 4 move four bytes on and stay masked.
        let mut p = Vec::from(&CNP_FROM_IP[..20]);
        p[0] = 0x46;
        p.extend_from_slice(&[1, 1, 1, 0]);
        p.extend_from_slice(&CNP_FROM_IP[20..]);
        let base = icrc(&p);
        p[30] = 0xAB; // UDP checksum
        p[36] = 0x00; // BTH byte 4
        assert_eq!(icrc(&p), base);
        p[24] ^= 0x01; // UDP source port
        assert_ne!(icrc(&p), base);
    }

    #[test]
    fn fast_path_matches_the_general_one() {
        let mut p = Vec::from(CNP_FROM_IP);
        p.extend((0..300u32).map(|i| (i * 7) as u8));
        for len in [40, 41, 56, 100, p.len()] {
            let fast = icrc_no_options(&p[..len]).unwrap();
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&[0xFF; 8]);
            update_masked::<IPV4_HEADER_LEN>(&mut hasher, &p[..20], &[1, 8, 10, 11]);
            update_masked::<UDP_HEADER_LEN>(&mut hasher, &p[20..28], &[6, 7]);
            update_masked::<BTH_LEN>(&mut hasher, &p[28..40], &[4]);
            hasher.update(&p[40..len]);
            assert_eq!(fast, hasher.finalize(), "{len} bytes");
        }
        assert_eq!(icrc_no_options(&p[..39]), None);
    }

    #[test]
    fn short_input_does_not_panic() {
        assert_eq!(icrc(&[]), crc32fast::hash(&[0xFF; 8]));
        let _ = icrc(&CNP_FROM_IP[..25]);
        let _ = icrc(&[0x4F; 3]);
    }
}

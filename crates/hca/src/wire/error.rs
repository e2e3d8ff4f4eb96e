//! Why a frame was refused, or could not be written.

use thiserror::Error;

/// Every reason the codec refuses a frame on receive or a header set on
/// transmit; one variant per cause so that each can have its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WireError {
    /// The buffer ends before the header or field being read.
    #[error("truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes the layer needs, counted from the start of the buffer read.
        need: usize,
        /// Bytes there are.
        have: usize,
    },
    /// The EtherType is not IPv4 or the IP version is not 4.
    #[error("not an IPv4 frame")]
    NotIpv4,
    /// The IPv4 header length field is below five words.
    #[error("bad IPv4 header length")]
    BadIpHeaderLength,
    /// The IPv4 total length is smaller than the header or larger than the frame.
    #[error("IPv4 total length {total} does not fit the frame")]
    BadIpLength {
        /// The total length field.
        total: u16,
    },
    /// The IPv4 header checksum does not verify.
    #[error("bad IPv4 header checksum")]
    BadIpChecksum,
    /// The datagram is a fragment (MF set or a non-zero fragment offset).
    #[error("IPv4 fragment")]
    Fragmented,
    /// The IP protocol is not UDP.
    #[error("IP protocol {0} is not UDP")]
    NotUdp(u8),
    /// The UDP destination port is not 4791.
    #[error("UDP destination port {0} is not RoCEv2")]
    NotRoce(u16),
    /// The UDP length disagrees with the IPv4 total length.
    #[error("UDP length {udp} disagrees with the IP payload length {ip}")]
    BadUdpLength {
        /// The UDP length field.
        udp: u16,
        /// The IPv4 payload length (total length minus header).
        ip: usize,
    },
    /// A non-zero UDP checksum does not verify.
    #[error("bad UDP checksum")]
    BadUdpChecksum,
    /// The invariant CRC does not match the packet.
    #[error("bad ICRC: computed {expected:#010x}, found {found:#010x}")]
    BadIcrc {
        /// The ICRC computed over the packet.
        expected: u32,
        /// The ICRC the packet carries.
        found: u32,
    },
    /// The BTH opcode is not one this codec knows.
    #[error("unknown opcode {0:#04x}")]
    UnknownOpcode(u8),
    /// The BTH transport header version is not 0.
    #[error("transport header version {0} is not 0")]
    BadTver(u8),
    /// The reserved bits of the BTH (beside FECN and BECN) are not zero.
    #[error("reserved BTH bits set")]
    ReservedBits,
    /// The pad count does not fit the bytes after the headers, or those are
    /// not a multiple of four.
    #[error("pad count {pad} does not fit {len} bytes of payload and pad")]
    BadPad {
        /// The BTH pad count.
        pad: u8,
        /// Bytes between the last header and the ICRC.
        len: usize,
    },
    /// An opcode that carries no payload (an ACK, a READ request) has some.
    #[error("{len} bytes of payload on an opcode that carries none")]
    UnexpectedPayload {
        /// Payload bytes found, or offered to the emitter.
        len: usize,
    },
    /// Emit: the opcode calls for an extended header that is missing.
    #[error("opcode calls for a {0} that is missing")]
    MissingHeader(&'static str),
    /// Emit: an extended header is present that the opcode does not carry.
    #[error("opcode carries no {0}")]
    UnexpectedHeader(&'static str),
    /// Emit: the frame would not fit the IPv4 total length field.
    #[error("payload of {len} bytes too long for one IPv4 datagram")]
    PayloadTooLong {
        /// The payload length offered.
        len: usize,
    },
}

impl WireError {
    /// A stable snake_case name for the cause, for drop counters and logs.
    pub fn counter_name(&self) -> &'static str {
        match self {
            WireError::Truncated { .. } => "truncated",
            WireError::NotIpv4 => "not_ipv4",
            WireError::BadIpHeaderLength => "bad_ip_header_length",
            WireError::BadIpLength { .. } => "bad_ip_length",
            WireError::BadIpChecksum => "bad_ip_checksum",
            WireError::Fragmented => "fragmented",
            WireError::NotUdp(_) => "not_udp",
            WireError::NotRoce(_) => "not_roce",
            WireError::BadUdpLength { .. } => "bad_udp_length",
            WireError::BadUdpChecksum => "bad_udp_checksum",
            WireError::BadIcrc { .. } => "bad_icrc",
            WireError::UnknownOpcode(_) => "unknown_opcode",
            WireError::BadTver(_) => "bad_tver",
            WireError::ReservedBits => "reserved_bits",
            WireError::BadPad { .. } => "bad_pad",
            WireError::UnexpectedPayload { .. } => "unexpected_payload",
            WireError::MissingHeader(_) => "missing_header",
            WireError::UnexpectedHeader(_) => "unexpected_header",
            WireError::PayloadTooLong { .. } => "payload_too_long",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_names_are_distinct() {
        let all = [
            WireError::Truncated { need: 1, have: 0 },
            WireError::NotIpv4,
            WireError::BadIpHeaderLength,
            WireError::BadIpLength { total: 0 },
            WireError::BadIpChecksum,
            WireError::Fragmented,
            WireError::NotUdp(6),
            WireError::NotRoce(53),
            WireError::BadUdpLength { udp: 0, ip: 0 },
            WireError::BadUdpChecksum,
            WireError::BadIcrc {
                expected: 0,
                found: 1,
            },
            WireError::UnknownOpcode(0xff),
            WireError::BadTver(1),
            WireError::ReservedBits,
            WireError::BadPad { pad: 3, len: 0 },
            WireError::UnexpectedPayload { len: 4 },
            WireError::MissingHeader("RETH"),
            WireError::UnexpectedHeader("AETH"),
            WireError::PayloadTooLong { len: 70000 },
        ];
        let mut names: Vec<&str> = all.iter().map(WireError::counter_name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len());
        assert_eq!(
            all[10].to_string(),
            "bad ICRC: computed 0x00000000, found 0x00000001"
        );
    }
}

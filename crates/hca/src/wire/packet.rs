//! Whole RoCEv2 frames: parse one off the wire, emit one onto it.

use std::net::Ipv4Addr;

use etherparse::err::ipv4::{HeaderError, HeaderSliceError};
use etherparse::{
    EtherType, Ethernet2HeaderSlice, IpDscp, IpEcn, IpNumber, Ipv4Header, Ipv4HeaderSlice,
    UdpHeader, UdpHeaderSlice, checksum::Sum16BitWords,
};

use super::{
    AETH_LEN, ATOMIC_ACK_ETH_LEN, Aeth, AtomicAckEth, BTH_LEN, Bth, BthRepr, DETH_LEN, Deth,
    ETHERNET_HEADER_LEN, ICRC_LEN, IPV4_HEADER_LEN, ImmDt, RETH_LEN, ROCE_UDP_PORT, Reth,
    UDP_HEADER_LEN, WireError, icrc,
};

/// The UDP source port [`RoceHeaders::new`] uses: the bottom of the range
/// RoCEv2 senders pick flow entropy from.
const DEFAULT_UDP_SRC_PORT: u16 = 0xC000;

/// Every header field of a RoCEv2 frame: what [`RoceHeaders::emit`] writes
/// and what [`RocePacket::parse`] reads back.
///
/// Fields the codec fixes are not here: the EtherType (IPv4), the IPv4
/// version, header length (no options on emit), DF (set on emit, not
/// checked on receive), protocol, total length and checksum, the UDP
/// destination port, length and checksum (zero on emit), the BTH pad count
/// (from the payload length) and the ICRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RoceHeaders {
    /// Destination MAC address.
    pub dst_mac: [u8; 6],
    /// Source MAC address.
    pub src_mac: [u8; 6],
    /// Source IPv4 address.
    pub src_ip: Ipv4Addr,
    /// Destination IPv4 address.
    pub dst_ip: Ipv4Addr,
    /// IPv4 DSCP, six bits (traffic class of the QP).
    pub dscp: u8,
    /// IPv4 ECN, two bits (ECT on send; CE when a switch marked it).
    pub ecn: u8,
    /// IPv4 time to live.
    pub ttl: u8,
    /// IPv4 identification.
    pub identification: u16,
    /// UDP source port: flow entropy for ECMP, usually hashed from the QP.
    pub udp_src_port: u16,
    /// The Base Transport Header.
    pub bth: BthRepr,
    /// RDMA Extended Transport Header, exactly when the opcode has one.
    pub reth: Option<Reth>,
    /// ACK Extended Transport Header, exactly when the opcode has one.
    pub aeth: Option<Aeth>,
    /// Datagram Extended Transport Header, exactly on UD.
    pub deth: Option<Deth>,
    /// Original remote value of an ATOMIC ACKNOWLEDGE.
    pub atomic_ack: Option<u64>,
    /// Immediate data, exactly on the `*_IMM` opcodes.
    pub immediate: Option<u32>,
}

/// A RoCEv2 frame that passed every check, borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RocePacket<'a> {
    /// The header fields.
    pub headers: RoceHeaders,
    /// The payload, without pad and ICRC.
    pub payload: &'a [u8],
}

/// Pad bytes after `payload_len` bytes to reach a multiple of four.
const fn pad_len(payload_len: usize) -> usize {
    payload_len.wrapping_neg() & 3
}

impl RoceHeaders {
    /// Headers for a packet with `bth`, between zero addresses, TTL 64,
    /// no DSCP/ECN, source port 0xC000 and no extended headers: set the
    /// ones the opcode calls for.
    pub const fn new(bth: BthRepr) -> RoceHeaders {
        RoceHeaders {
            dst_mac: [0; 6],
            src_mac: [0; 6],
            src_ip: Ipv4Addr::UNSPECIFIED,
            dst_ip: Ipv4Addr::UNSPECIFIED,
            dscp: 0,
            ecn: 0,
            ttl: 64,
            identification: 0,
            udp_src_port: DEFAULT_UDP_SRC_PORT,
            bth,
            reth: None,
            aeth: None,
            deth: None,
            atomic_ack: None,
            immediate: None,
        }
    }

    /// Length of the whole frame [`emit`](Self::emit) writes for a payload
    /// of `payload_len` bytes: Ethernet to ICRC, no Ethernet padding or FCS.
    pub const fn frame_len(&self, payload_len: usize) -> usize {
        ETHERNET_HEADER_LEN + self.ip_total_len(payload_len)
    }

    /// The IPv4 total length for a payload of `payload_len` bytes.
    const fn ip_total_len(&self, payload_len: usize) -> usize {
        IPV4_HEADER_LEN
            + UDP_HEADER_LEN
            + BTH_LEN
            + self.bth.opcode.ext_len()
            + payload_len
            + pad_len(payload_len)
            + ICRC_LEN
    }

    /// Checks that the headers and a payload of `payload_len` bytes make a
    /// frame [`RocePacket::parse`] accepts.
    pub fn check(&self, payload_len: usize) -> Result<(), WireError> {
        let op = self.bth.opcode;
        if !op.is_valid() {
            return Err(WireError::UnknownOpcode(op.raw()));
        }
        if self.bth.tver != 0 {
            return Err(WireError::BadTver(self.bth.tver));
        }
        presence("RETH", op.has_reth(), self.reth.is_some())?;
        presence("AETH", op.has_aeth(), self.aeth.is_some())?;
        presence("DETH", op.has_deth(), self.deth.is_some())?;
        presence(
            "AtomicAckETH",
            op.has_atomic_ack_eth(),
            self.atomic_ack.is_some(),
        )?;
        presence("ImmDt", op.has_immdt(), self.immediate.is_some())?;
        if !op.has_payload() && payload_len != 0 {
            return Err(WireError::UnexpectedPayload { len: payload_len });
        }
        if self.ip_total_len(payload_len) > usize::from(u16::MAX) {
            return Err(WireError::PayloadTooLong { len: payload_len });
        }
        Ok(())
    }

    /// Writes the whole frame for `payload` into `out`, replacing what it
    /// held: Ethernet II, IPv4 (DF, checksum), UDP (checksum 0), BTH with
    /// the pad count, the extended headers, payload, zero pad, ICRC. Does
    /// not allocate when `out` already has [`frame_len`](Self::frame_len)
    /// bytes of capacity. On error `out` is left untouched.
    pub fn emit(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
        self.emit_with(payload.len(), out, |room| {
            room.copy_from_slice(payload);
            Ok::<(), core::convert::Infallible>(())
        })
        .map(|filled| match filled {
            Ok(()) | Err(_) => (),
        })
    }

    /// Writes the frame for a payload of `payload_len` bytes that `fill`
    /// writes in place (a device gathering straight from memory into its
    /// frame buffer, one copy fewer than [`emit`](Self::emit)). The ICRC
    /// covers what `fill` wrote. When `fill` fails, its error is returned
    /// inside `Ok` and `out` holds no valid frame. The payload's bytes in
    /// `out` are not cleared first: reusing `out` for frames of the same
    /// size costs no memset.
    pub fn emit_with<E>(
        &self,
        payload_len: usize,
        out: &mut Vec<u8>,
        fill: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<Result<(), E>, WireError> {
        self.check(payload_len)?;
        let pad = pad_len(payload_len);
        let total = self.ip_total_len(payload_len);
        let too_long = WireError::PayloadTooLong { len: payload_len };
        let ip_payload_len = u16::try_from(total - IPV4_HEADER_LEN).map_err(|_| too_long)?;

        let mut ip = Ipv4Header::new(
            ip_payload_len,
            self.ttl,
            IpNumber::UDP,
            self.src_ip.octets(),
            self.dst_ip.octets(),
        )
        .map_err(|_| too_long)?;
        ip.dscp = IpDscp::try_new(self.dscp & IpDscp::MAX_U8).unwrap_or(IpDscp::ZERO);
        ip.ecn = IpEcn::try_new(self.ecn & IpEcn::MAX_U8).unwrap_or(IpEcn::ZERO);
        ip.identification = self.identification;
        ip.dont_fragment = true;
        ip.header_checksum = ip.calc_header_checksum();
        let udp = UdpHeader {
            source_port: self.udp_src_port,
            destination_port: ROCE_UDP_PORT,
            length: ip_payload_len,
            checksum: 0,
        };
        let mut bth = self.bth;
        // pad < 4 by construction.
        bth.pad_count = pad as u8;

        // The headers, at most 14 + 20 + 8 + 12 + 16 + 8 + 4 + 8 + 4 bytes.
        let mut head = [0u8; 96];
        let mut at = 0usize;
        let mut put = |bytes: &[u8]| {
            if let Some(dst) = head.get_mut(at..at + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
            at += bytes.len();
        };
        put(&self.dst_mac);
        put(&self.src_mac);
        put(&EtherType::IPV4.0.to_be_bytes());
        put(&ip.to_bytes());
        put(&udp.to_bytes());
        put(&bth.to_bytes());
        if let Some(reth) = &self.reth {
            put(&reth.to_bytes());
        }
        if let Some(deth) = &self.deth {
            put(&deth.to_bytes());
        }
        if let Some(aeth) = &self.aeth {
            put(&aeth.to_bytes());
        }
        if let Some(orig) = self.atomic_ack {
            put(&AtomicAckEth(orig).to_bytes());
        }
        if let Some(imm) = self.immediate {
            put(&ImmDt(imm).to_bytes());
        }
        let frame_len = self.frame_len(payload_len);
        // Grow only when needed: a shorter frame truncates without writing.
        if out.len() < frame_len {
            out.resize(frame_len, 0);
        } else {
            out.truncate(frame_len);
        }
        let (Some(h), Some(dst)) = (head.get(..at), out.get_mut(..at)) else {
            return Err(too_long);
        };
        dst.copy_from_slice(h);
        let payload_end = at + payload_len;
        if let Err(e) = fill(out.get_mut(at..payload_end).unwrap_or_default()) {
            return Ok(Err(e));
        }
        if let Some(p) = out.get_mut(payload_end..payload_end + pad) {
            p.fill(0);
        }
        let crc = icrc(
            out.get(ETHERNET_HEADER_LEN..payload_end + pad)
                .unwrap_or_default(),
        );
        if let Some(c) = out.get_mut(payload_end + pad..) {
            c.copy_from_slice(&crc.to_le_bytes());
        }
        Ok(Ok(()))
    }
}

/// An extended header must be present exactly when the opcode calls for it.
fn presence(name: &'static str, wanted: bool, present: bool) -> Result<(), WireError> {
    match (wanted, present) {
        (true, false) => Err(WireError::MissingHeader(name)),
        (false, true) => Err(WireError::UnexpectedHeader(name)),
        _ => Ok(()),
    }
}

impl<'a> RocePacket<'a> {
    /// Parses and checks a whole Ethernet frame (without FCS).
    ///
    /// Layer by layer: Ethernet II with the IPv4 EtherType (no VLAN tag);
    /// IPv4 with a valid header checksum, not a fragment, protocol UDP;
    /// IPv4 options are accepted (and covered by the ICRC as they are);
    /// bytes after the IPv4 total length are Ethernet padding and ignored.
    /// UDP to port 4791 whose length matches the IPv4 payload, its checksum
    /// verified when not zero. Then the ICRC, before any InfiniBand field is
    /// trusted; then the BTH (version 0, reserved bits clear, a known
    /// opcode), the extended headers the opcode calls for, and the pad.
    pub fn parse(frame: &'a [u8]) -> Result<RocePacket<'a>, WireError> {
        let truncated = |need: usize, have: usize| WireError::Truncated { need, have };
        let eth = Ethernet2HeaderSlice::from_slice(frame)
            .map_err(|_| truncated(ETHERNET_HEADER_LEN, frame.len()))?;
        if eth.ether_type() != EtherType::IPV4 {
            return Err(WireError::NotIpv4);
        }
        let ip_bytes = frame.get(ETHERNET_HEADER_LEN..).unwrap_or_default();
        let ip = Ipv4HeaderSlice::from_slice(ip_bytes).map_err(|e| match e {
            HeaderSliceError::Len(l) => {
                truncated(ETHERNET_HEADER_LEN + l.required_len, frame.len())
            }
            HeaderSliceError::Content(HeaderError::UnexpectedVersion { .. }) => WireError::NotIpv4,
            HeaderSliceError::Content(HeaderError::HeaderLengthSmallerThanHeader { .. }) => {
                WireError::BadIpHeaderLength
            }
        })?;
        let ihl = ip.slice().len();
        let total = usize::from(ip.total_len());
        if total < ihl {
            return Err(WireError::BadIpLength {
                total: ip.total_len(),
            });
        }
        let datagram = ip_bytes
            .get(..total)
            .ok_or(truncated(ETHERNET_HEADER_LEN + total, frame.len()))?;
        // Summed over the raw bytes so that every bit counts, the reserved
        // flag included.
        if Sum16BitWords::new().add_slice(ip.slice()).ones_complement() != 0 {
            return Err(WireError::BadIpChecksum);
        }
        if ip.more_fragments() || ip.fragments_offset().value() != 0 {
            return Err(WireError::Fragmented);
        }
        if ip.protocol() != IpNumber::UDP {
            return Err(WireError::NotUdp(ip.protocol().0));
        }

        // From here on `have` counts what the IPv4 total length declares.
        let have = ETHERNET_HEADER_LEN + total;
        let udp_bytes = datagram.get(ihl..).unwrap_or_default();
        let udp = UdpHeaderSlice::from_slice(udp_bytes)
            .map_err(|_| truncated(ETHERNET_HEADER_LEN + ihl + UDP_HEADER_LEN, have))?;
        if udp.destination_port() != ROCE_UDP_PORT {
            return Err(WireError::NotRoce(udp.destination_port()));
        }
        if usize::from(udp.length()) != udp_bytes.len() {
            return Err(WireError::BadUdpLength {
                udp: udp.length(),
                ip: udp_bytes.len(),
            });
        }
        let roce = udp_bytes.get(UDP_HEADER_LEN..).unwrap_or_default();
        let roce_start = ETHERNET_HEADER_LEN + ihl + UDP_HEADER_LEN;
        if roce.len() < BTH_LEN + ICRC_LEN {
            return Err(truncated(roce_start + BTH_LEN + ICRC_LEN, have));
        }
        if udp.checksum() != 0 {
            let computed =
                udp.to_header()
                    .calc_checksum_ipv4_raw(ip.source(), ip.destination(), roce);
            if computed != Ok(udp.checksum()) {
                return Err(WireError::BadUdpChecksum);
            }
        }

        let (covered, icrc_bytes) = datagram
            .split_at_checked(total - ICRC_LEN)
            .ok_or(truncated(have, have))?;
        let found = u32::from_le_bytes(super::take(icrc_bytes, 0)?);
        let expected = icrc(covered);
        if expected != found {
            return Err(WireError::BadIcrc { expected, found });
        }

        let body = roce.get(..roce.len() - ICRC_LEN).unwrap_or_default();
        let (bth_bytes, rest) = body
            .split_at_checked(BTH_LEN)
            .ok_or(truncated(roce_start + BTH_LEN + ICRC_LEN, have))?;
        let bth = Bth::new_checked(bth_bytes)?;
        if bth.tver() != 0 {
            return Err(WireError::BadTver(bth.tver()));
        }
        if bth.resv6() != 0 {
            return Err(WireError::ReservedBits);
        }
        let opcode = bth.opcode();
        if !opcode.is_valid() {
            return Err(WireError::UnknownOpcode(opcode.raw()));
        }
        let ext_start = roce_start + BTH_LEN;
        let (mut ext, data) = rest
            .split_at_checked(opcode.ext_len())
            .ok_or(truncated(ext_start + opcode.ext_len() + ICRC_LEN, have))?;

        let mut headers = RoceHeaders {
            dst_mac: eth.destination(),
            src_mac: eth.source(),
            src_ip: ip.source_addr(),
            dst_ip: ip.destination_addr(),
            dscp: ip.dcp().value(),
            ecn: ip.ecn().value(),
            ttl: ip.ttl(),
            identification: ip.identification(),
            udp_src_port: udp.source_port(),
            ..RoceHeaders::new(BthRepr::parse(&bth))
        };
        // The lengths were checked against ext_len above; the parses
        // below cannot run short.
        if opcode.has_reth() {
            headers.reth = Some(Reth::parse(ext)?);
            ext = ext.get(RETH_LEN..).unwrap_or_default();
        }
        if opcode.has_deth() {
            headers.deth = Some(Deth::parse(ext)?);
            ext = ext.get(DETH_LEN..).unwrap_or_default();
        }
        if opcode.has_aeth() {
            headers.aeth = Some(Aeth::parse(ext)?);
            ext = ext.get(AETH_LEN..).unwrap_or_default();
        }
        if opcode.has_atomic_ack_eth() {
            headers.atomic_ack = Some(AtomicAckEth::parse(ext)?.0);
            ext = ext.get(ATOMIC_ACK_ETH_LEN..).unwrap_or_default();
        }
        if opcode.has_immdt() {
            headers.immediate = Some(ImmDt::parse(ext)?.0);
        }

        let pad = bth.pad_count();
        if !opcode.has_payload() && !data.is_empty() {
            return Err(WireError::UnexpectedPayload { len: data.len() });
        }
        let bad_pad = WireError::BadPad {
            pad,
            len: data.len(),
        };
        if data.len() % 4 != 0 {
            return Err(bad_pad);
        }
        let payload_len = data.len().checked_sub(usize::from(pad)).ok_or(bad_pad)?;
        let payload = data.get(..payload_len).ok_or(bad_pad)?;
        Ok(RocePacket { headers, payload })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{AethSyndrome, Opcode, Psn};

    fn write_first() -> RoceHeaders {
        let mut h = RoceHeaders::new(BthRepr::new(
            Opcode::RC_RDMA_WRITE_FIRST,
            0x11,
            Psn::new(0x22),
        ));
        h.reth = Some(Reth {
            va: 0x1000,
            rkey: 0x77,
            dma_len: 8192,
        });
        h
    }

    #[test]
    fn emit_then_parse_gives_the_same_fields() {
        let h = write_first();
        let mut out = Vec::new();
        h.emit(b"hello", &mut out).unwrap();
        assert_eq!(out.len(), h.frame_len(5));
        assert_eq!(out.len(), 14 + 20 + 8 + 12 + 16 + 8 + 4);
        let p = RocePacket::parse(&out).unwrap();
        assert_eq!(p.payload, b"hello");
        let mut expect = h;
        expect.bth.pad_count = 3;
        assert_eq!(p.headers, expect);
    }

    #[test]
    fn emit_reuses_capacity() {
        let h = write_first();
        let mut out = Vec::with_capacity(h.frame_len(64));
        let before = out.as_ptr();
        h.emit(&[7u8; 64], &mut out).unwrap();
        assert_eq!(out.as_ptr(), before);
        assert_eq!(out.capacity(), h.frame_len(64));
    }

    #[test]
    fn emit_refuses_inconsistent_headers_and_leaves_out_alone() {
        let mut out = vec![1, 2, 3];
        let mut h = write_first();
        h.reth = None;
        assert_eq!(h.emit(b"", &mut out), Err(WireError::MissingHeader("RETH")));
        let mut h = write_first();
        h.aeth = Some(Aeth {
            syndrome: AethSyndrome::Ack { credits: 0 },
            msn: 0,
        });
        assert_eq!(
            h.emit(b"", &mut out),
            Err(WireError::UnexpectedHeader("AETH"))
        );
        let mut h = write_first();
        h.bth.opcode = Opcode(0x13);
        assert_eq!(h.emit(b"", &mut out), Err(WireError::UnknownOpcode(0x13)));
        let mut h = write_first();
        h.bth.tver = 1;
        assert_eq!(h.emit(b"", &mut out), Err(WireError::BadTver(1)));
        let mut h = RoceHeaders::new(BthRepr::new(Opcode::RC_ACKNOWLEDGE, 1, Psn::new(1)));
        h.aeth = Some(Aeth {
            syndrome: AethSyndrome::Ack { credits: 0 },
            msn: 0,
        });
        assert_eq!(
            h.emit(b"x", &mut out),
            Err(WireError::UnexpectedPayload { len: 1 })
        );
        let h = write_first();
        // 65475 bytes are left for payload and pad: 65472 plus no pad fits,
        // 65473 plus three bytes of pad does not.
        let big = vec![0u8; 65473];
        assert_eq!(
            h.emit(&big, &mut out),
            Err(WireError::PayloadTooLong { len: big.len() })
        );
        assert_eq!(out, [1, 2, 3]);
        // The largest payload that fits does.
        h.emit(&big[1..], &mut out).unwrap();
        assert_eq!(out.len(), 14 + 65532);
        assert_eq!(
            RocePacket::parse(&out).map(|p| p.payload.len()),
            Ok(big.len() - 1)
        );
    }

    #[test]
    fn pad_lengths() {
        assert_eq!([0, 1, 2, 3, 4, 5].map(pad_len), [0, 3, 2, 1, 0, 3]);
    }
}

//! The RoCEv2 codec from the outside: byte-exact frames, a captured
//! hardware frame, every refusal, and properties over random frames.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::Ipv4Addr;

use iovirt_hca::wire::{
    Aeth, AethSyndrome, BthRepr, Deth, NakCode, Opcode, Psn, Reth, RnrTimer, RoceHeaders,
    RocePacket, WireError, icrc,
};
use proptest::prelude::*;

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];
const IP_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const IP_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// Offsets in an emitted frame (no IPv4 options).
const IP: usize = 14;
const UDP: usize = 34;
const BTH: usize = 42;

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(u8::is_ascii_hexdigit)
        .map(|c| (c as char).to_digit(16).unwrap() as u8)
        .collect();
    digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
}

fn a_to_b(bth: BthRepr) -> RoceHeaders {
    let mut h = RoceHeaders::new(bth);
    h.dst_mac = MAC_B;
    h.src_mac = MAC_A;
    h.src_ip = IP_A;
    h.dst_ip = IP_B;
    h.udp_src_port = 0xC001;
    h
}

fn b_to_a(bth: BthRepr) -> RoceHeaders {
    let mut h = a_to_b(bth);
    h.dst_mac = MAC_A;
    h.src_mac = MAC_B;
    h.src_ip = IP_B;
    h.dst_ip = IP_A;
    h
}

fn emit(h: &RoceHeaders, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    h.emit(payload, &mut out).unwrap();
    out
}

/// Recomputes every length and check a crafted frame needs to get past
/// the layers below the one under test: IPv4 total length and checksum,
/// UDP length, ICRC (taken as the last four bytes).
fn fix(frame: &mut [u8]) {
    let ihl = usize::from(frame[IP] & 0x0F) * 4;
    let total = frame.len() - IP;
    frame[IP + 2..IP + 4].copy_from_slice(&(total as u16).to_be_bytes());
    frame[IP + 10..IP + 12].copy_from_slice(&[0, 0]);
    let mut sum: u32 = frame[IP..IP + ihl]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    frame[IP + 10..IP + 12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let udp = IP + ihl;
    frame[udp + 4..udp + 6].copy_from_slice(&((total - ihl) as u16).to_be_bytes());
    let end = frame.len() - 4;
    let crc = icrc(&frame[IP..end]);
    frame[end..].copy_from_slice(&crc.to_le_bytes());
}

// ---------------------------------------------------------------------
// Byte-exact frames. The header bytes are worked out by hand from the
// field values; the IPv4 checksums by hand; the ICRCs with zlib's CRC-32
// (an implementation independent of this crate) over the masked bytes.

#[test]
fn rc_rdma_write_first_with_reth() {
    let mut bth = BthRepr::new(Opcode::RC_RDMA_WRITE_FIRST, 0x123, Psn::new(0x456));
    bth.migreq = true;
    let mut h = a_to_b(bth);
    h.dscp = 26;
    h.ecn = 2;
    h.identification = 0x1234;
    h.reth = Some(Reth {
        va: 0x7F00_1234_5000,
        rkey: 0xABCD_0001,
        dma_len: 0x1_0000,
    });
    let frame = emit(&h, b"RDMA!!");
    let expected = hex("02 00 00 00 00 02  02 00 00 00 00 01  08 00
         45 6a 00 44  12 34 40 00  40 11 14 09  0a 00 00 01  0a 00 00 02
         c0 01 12 b7  00 30 00 00
         06 60 ff ff  00 00 01 23  00 00 04 56
         00 00 7f 00 12 34 50 00  ab cd 00 01  00 01 00 00
         52 44 4d 41 21 21  00 00
         92 42 ce 94");
    assert_eq!(frame, expected);
    assert_eq!(frame.len(), h.frame_len(6));
    let p = RocePacket::parse(&frame).unwrap();
    assert_eq!(p.payload, b"RDMA!!");
    assert_eq!(p.headers.bth.pad_count, 2);
    assert_eq!((p.headers.dscp, p.headers.ecn), (26, 2));
}

#[test]
fn ack_with_unlimited_credits() {
    let mut h = b_to_a(BthRepr::new(Opcode::RC_ACKNOWLEDGE, 0x77, Psn::new(0x457)));
    h.aeth = Some(Aeth {
        syndrome: AethSyndrome::Ack {
            credits: AethSyndrome::UNLIMITED_CREDITS,
        },
        msn: 0x10,
    });
    let frame = emit(&h, b"");
    let expected = hex("02 00 00 00 00 01  02 00 00 00 00 02  08 00
         45 00 00 30  00 00 40 00  40 11 26 bb  0a 00 00 02  0a 00 00 01
         c0 01 12 b7  00 1c 00 00
         11 00 ff ff  00 00 00 77  00 00 04 57
         1f 00 00 10
         6d b2 a3 6f");
    assert_eq!(frame, expected);
    let p = RocePacket::parse(&frame).unwrap();
    assert_eq!(p.headers.aeth, h.aeth);
    assert!(p.payload.is_empty());
}

#[test]
fn rnr_nak_with_timer_code_14() {
    let mut h = b_to_a(BthRepr::new(Opcode::RC_ACKNOWLEDGE, 0x77, Psn::new(0x458)));
    h.aeth = Some(Aeth {
        syndrome: AethSyndrome::RnrNak {
            timer: RnrTimer::at_least(1_000_000),
        },
        msn: 0x10,
    });
    let frame = emit(&h, b"");
    let expected = hex("02 00 00 00 00 01  02 00 00 00 00 02  08 00
         45 00 00 30  00 00 40 00  40 11 26 bb  0a 00 00 02  0a 00 00 01
         c0 01 12 b7  00 1c 00 00
         11 00 ff ff  00 00 00 77  00 00 04 58
         2e 00 00 10
         78 ba 64 a5");
    assert_eq!(frame, expected);
    let p = RocePacket::parse(&frame).unwrap();
    let Some(Aeth {
        syndrome: AethSyndrome::RnrNak { timer },
        msn: 0x10,
    }) = p.headers.aeth
    else {
        panic!("not an RNR NAK: {:?}", p.headers.aeth);
    };
    assert_eq!(timer.to_ns(), 1_280_000);
}

#[test]
fn ud_send_only_imm_with_deth() {
    let mut bth = BthRepr::new(Opcode::UD_SEND_ONLY_IMM, 0xABCD, Psn::new(0));
    bth.solicited = true;
    let mut h = a_to_b(bth);
    h.udp_src_port = 0xC042;
    h.identification = 7;
    h.deth = Some(Deth {
        qkey: 0x8001_0000,
        src_qp: 0x42,
    });
    h.immediate = Some(0xDEAD_BEEF);
    let frame = emit(&h, b"abc");
    let expected = hex("02 00 00 00 00 02  02 00 00 00 00 01  08 00
         45 00 00 3c  00 07 40 00  40 11 26 a8  0a 00 00 01  0a 00 00 02
         c0 42 12 b7  00 28 00 00
         65 90 ff ff  00 00 ab cd  00 00 00 00
         80 01 00 00  00 00 00 42
         de ad be ef
         61 62 63  00
         50 af b2 0b");
    assert_eq!(frame, expected);
    let p = RocePacket::parse(&frame).unwrap();
    assert_eq!(p.payload, b"abc");
    assert_eq!(p.headers.deth, h.deth);
    assert_eq!(p.headers.immediate, Some(0xDEAD_BEEF));
    assert!(p.headers.bth.solicited);
}

// ---------------------------------------------------------------------
// A frame from real hardware.

/// A CNP captured on a Mellanox ConnectX-4 Lx, as printed in the
/// regression tests of Scapy's RoCE layer (secdev/scapy,
/// test/contrib/roce.uts, "RoCE CNP captured on ConnectX-4 Lx"). It has
/// BECN set, TOS 0xC2 and UDP source port 0; its ICRC is 82 fd 00 2a.
fn connectx4_cnp() -> Vec<u8> {
    hex("e41d 2dab 2bc2 7cfe 9064 3b32 0800 45c2
         003c 718c 4000 4011 9161 0a00 1101 0a00
         1201 0000 12b7 0028 0000 8100 ffff 4000
         0118 0000 0000 0000 0000 0000 0000 0000
         0000 0000 0000 82fd 002a")
}

#[test]
fn captured_cnp_parses_and_reemits_byte_for_byte() {
    let frame = connectx4_cnp();
    assert_eq!(frame.len(), 74);
    assert_eq!(icrc(&frame[IP..70]).to_le_bytes(), [0x82, 0xfd, 0x00, 0x2a]);
    let p = RocePacket::parse(&frame).unwrap();
    let h = p.headers;
    assert_eq!(h.dst_mac, [0xe4, 0x1d, 0x2d, 0xab, 0x2b, 0xc2]);
    assert_eq!(h.src_mac, [0x7c, 0xfe, 0x90, 0x64, 0x3b, 0x32]);
    assert_eq!(h.src_ip, Ipv4Addr::new(10, 0, 17, 1));
    assert_eq!(h.dst_ip, Ipv4Addr::new(10, 0, 18, 1));
    assert_eq!((h.dscp, h.ecn, h.ttl), (48, 2, 64));
    assert_eq!(h.identification, 0x718c);
    assert_eq!(h.udp_src_port, 0);
    assert_eq!(h.bth.opcode, Opcode::CNP);
    assert!(h.bth.becn && !h.bth.fecn);
    assert_eq!(h.bth.dest_qp, 0x118);
    assert_eq!(h.bth.pkey, 0xFFFF);
    assert_eq!(h.bth.psn, Psn::new(0));
    assert_eq!(p.payload, [0u8; 16]);
    assert_eq!(emit(&h, p.payload), frame);
}

// ---------------------------------------------------------------------
// What the parser accepts beyond what the emitter writes.

fn send_only(payload: &[u8]) -> Vec<u8> {
    emit(
        &a_to_b(BthRepr::new(Opcode::RC_SEND_ONLY, 5, Psn::new(1))),
        payload,
    )
}

#[test]
fn ethernet_padding_is_ignored() {
    let short = send_only(b"");
    assert_eq!(short.len(), 58, "below the 60-byte Ethernet minimum");
    let mut padded = short.clone();
    padded.resize(60, 0);
    let a = RocePacket::parse(&short).unwrap();
    let b = RocePacket::parse(&padded).unwrap();
    assert_eq!(a, b);
}

#[test]
fn ipv4_options_are_accepted() {
    let plain = send_only(b"data");
    let mut with_options = plain[..UDP].to_vec();
    with_options[IP] = 0x46;
    with_options.extend_from_slice(&[1, 1, 1, 0]);
    with_options.extend_from_slice(&plain[UDP..]);
    fix(&mut with_options);
    let p = RocePacket::parse(&with_options).unwrap();
    assert_eq!(p, RocePacket::parse(&plain).unwrap());
}

#[test]
fn a_correct_udp_checksum_is_accepted() {
    let mut frame = send_only(b"sum!");
    let udp = etherparse::UdpHeader::from_slice(&frame[UDP..]).unwrap().0;
    let sum = udp
        .calc_checksum_ipv4_raw([10, 0, 0, 1], [10, 0, 0, 2], &frame[BTH..])
        .unwrap();
    assert_ne!(sum, 0);
    frame[UDP + 6..UDP + 8].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(RocePacket::parse(&frame).unwrap().payload, b"sum!");
}

// ---------------------------------------------------------------------
// Every refusal.

fn refuse(frame: &[u8]) -> WireError {
    RocePacket::parse(frame).unwrap_err()
}

#[test]
fn truncated_at_each_layer() {
    let good = send_only(b"data");
    assert_eq!(
        refuse(&good[..10]),
        WireError::Truncated { need: 14, have: 10 }
    );
    assert_eq!(
        refuse(&good[..24]),
        WireError::Truncated { need: 34, have: 24 }
    );
    // IPv4 total length beyond the frame.
    assert_eq!(
        refuse(&good[..good.len() - 1]),
        WireError::Truncated {
            need: good.len(),
            have: good.len() - 1
        }
    );
    // An IPv4 datagram too short for UDP.
    let mut f = good[..UDP + 4].to_vec();
    fix_ip_only(&mut f);
    assert_eq!(refuse(&f), WireError::Truncated { need: 42, have: 38 });
    // UDP too short for BTH and ICRC.
    let mut f = good[..BTH + 12].to_vec();
    fix(&mut f);
    assert_eq!(refuse(&f), WireError::Truncated { need: 58, have: 54 });
    // The opcode's RETH does not fit.
    let mut f = emit(
        &a_to_b(BthRepr::new(Opcode::RC_SEND_ONLY, 5, Psn::new(1))),
        b"",
    );
    f[BTH] = Opcode::RC_RDMA_WRITE_ONLY.raw();
    fix(&mut f);
    assert_eq!(refuse(&f), WireError::Truncated { need: 74, have: 58 });
}

/// Like [`fix`] but for a frame that ends inside the UDP header.
fn fix_ip_only(frame: &mut [u8]) {
    let total = frame.len() - IP;
    frame[IP + 2..IP + 4].copy_from_slice(&(total as u16).to_be_bytes());
    frame[IP + 10..IP + 12].copy_from_slice(&[0, 0]);
    let mut sum: u32 = frame[IP..UDP]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    frame[IP + 10..IP + 12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

#[test]
fn ip_layer_refusals() {
    let good = send_only(b"data");

    let mut f = good.clone();
    f[12..14].copy_from_slice(&[0x86, 0xDD]);
    assert_eq!(refuse(&f), WireError::NotIpv4);

    let mut f = good.clone();
    f[IP] = 0x65;
    assert_eq!(refuse(&f), WireError::NotIpv4);

    let mut f = good.clone();
    f[IP] = 0x44;
    assert_eq!(refuse(&f), WireError::BadIpHeaderLength);

    let mut f = good.clone();
    f[IP + 2..IP + 4].copy_from_slice(&19u16.to_be_bytes());
    assert_eq!(refuse(&f), WireError::BadIpLength { total: 19 });

    let mut f = good.clone();
    f[IP + 8] = 63; // TTL changed, checksum not updated
    assert_eq!(refuse(&f), WireError::BadIpChecksum);

    let mut f = good.clone();
    f[IP + 6] |= 0x20; // more fragments
    fix(&mut f);
    assert_eq!(refuse(&f), WireError::Fragmented);

    let mut f = good.clone();
    f[IP + 7] = 1; // fragment offset 8 bytes
    fix(&mut f);
    assert_eq!(refuse(&f), WireError::Fragmented);

    let mut f = good.clone();
    f[IP + 9] = 6; // TCP
    fix(&mut f);
    assert_eq!(refuse(&f), WireError::NotUdp(6));
}

#[test]
fn udp_layer_refusals() {
    let good = send_only(b"data");

    let mut f = good.clone();
    f[UDP + 2..UDP + 4].copy_from_slice(&4792u16.to_be_bytes());
    assert_eq!(refuse(&f), WireError::NotRoce(4792));

    let mut f = good.clone();
    f[UDP + 4..UDP + 6].copy_from_slice(&100u16.to_be_bytes());
    assert_eq!(
        refuse(&f),
        WireError::BadUdpLength {
            udp: 100,
            ip: good.len() - UDP
        }
    );

    let mut f = good.clone();
    f[UDP + 6..UDP + 8].copy_from_slice(&[0x12, 0x34]);
    assert_eq!(refuse(&f), WireError::BadUdpChecksum);
}

#[test]
fn transport_layer_refusals() {
    let good = send_only(b"data");

    let mut f = good.clone();
    f[BTH + 13] ^= 0x01; // a payload bit
    let found = u32::from_le_bytes(f[f.len() - 4..].try_into().unwrap());
    let expected = icrc(&f[IP..f.len() - 4]);
    assert_ne!(expected, found);
    assert_eq!(refuse(&f), WireError::BadIcrc { expected, found });

    let mut f = good.clone();
    f[BTH] = 0x13; // atomic compare-and-swap, not modelled
    fix(&mut f);
    assert_eq!(refuse(&f), WireError::UnknownOpcode(0x13));

    let mut f = good.clone();
    f[BTH + 1] |= 0x01;
    fix(&mut f);
    assert_eq!(refuse(&f), WireError::BadTver(1));

    // Byte 4 is outside the ICRC: no fix needed to reach the check.
    let mut f = good.clone();
    f[BTH + 4] = 0x01;
    assert_eq!(refuse(&f), WireError::ReservedBits);

    // A pad count larger than what follows the headers.
    let mut f = send_only(b"");
    f[BTH + 1] |= 0x20;
    fix(&mut f);
    assert_eq!(refuse(&f), WireError::BadPad { pad: 2, len: 0 });

    // Payload and pad not a multiple of four.
    let mut f = good.clone();
    f.remove(BTH + 12);
    fix(&mut f);
    assert_eq!(refuse(&f), WireError::BadPad { pad: 0, len: 3 });

    // An ACK with payload.
    let mut h = b_to_a(BthRepr::new(Opcode::RC_ACKNOWLEDGE, 1, Psn::new(2)));
    h.aeth = Some(Aeth {
        syndrome: AethSyndrome::Nak(NakCode::InvalidRequest),
        msn: 3,
    });
    let mut f = emit(&h, b"");
    f.splice(BTH + 16..BTH + 16, [9, 9, 9, 9]);
    fix(&mut f);
    assert_eq!(refuse(&f), WireError::UnexpectedPayload { len: 4 });
}

// ---------------------------------------------------------------------
// Properties.

prop_compose! {
    fn arb_bth()(
        index in 0..Opcode::ALL.len(),
        solicited: bool,
        migreq: bool,
        pkey: u16,
        fecn: bool,
        becn: bool,
        dest_qp in 0u32..1 << 24,
        ack_req: bool,
        psn in 0u32..1 << 24,
    ) -> BthRepr {
        BthRepr {
            opcode: Opcode::ALL[index],
            solicited,
            migreq,
            pad_count: 0,
            tver: 0,
            pkey,
            fecn,
            becn,
            dest_qp,
            ack_req,
            psn: Psn::new(psn),
        }
    }
}

prop_compose! {
    fn arb_frame(max_payload: usize)(
        bth in arb_bth(),
        macs: ([u8; 6], [u8; 6]),
        ips: (u32, u32),
        dscp in 0u8..64,
        ecn in 0u8..4,
        ttl: u8,
        identification: u16,
        udp_src_port: u16,
        reth: (u64, u32, u32),
        aeth: (u8, u32),
        deth: (u32, u32),
        atomic: u64,
        imm: u32,
        payload in proptest::collection::vec(any::<u8>(), 0..=max_payload),
    ) -> (RoceHeaders, Vec<u8>) {
        let op = bth.opcode;
        let mut h = RoceHeaders::new(bth);
        h.dst_mac = macs.0;
        h.src_mac = macs.1;
        h.src_ip = Ipv4Addr::from(ips.0);
        h.dst_ip = Ipv4Addr::from(ips.1);
        h.dscp = dscp;
        h.ecn = ecn;
        h.ttl = ttl;
        h.identification = identification;
        h.udp_src_port = udp_src_port;
        h.reth = op.has_reth().then_some(Reth { va: reth.0, rkey: reth.1, dma_len: reth.2 });
        h.aeth = op.has_aeth().then_some(Aeth {
            syndrome: AethSyndrome::from_raw(aeth.0),
            msn: aeth.1 & 0xFF_FFFF,
        });
        h.deth = op.has_deth().then_some(Deth { qkey: deth.0, src_qp: deth.1 & 0xFF_FFFF });
        h.atomic_ack = op.has_atomic_ack_eth().then_some(atomic);
        h.immediate = op.has_immdt().then_some(imm);
        let payload = if op.has_payload() { payload } else { Vec::new() };
        (h, payload)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn emit_parse_round_trip((h, payload) in arb_frame(4096)) {
        let frame = emit(&h, &payload);
        prop_assert_eq!(frame.len(), h.frame_len(payload.len()));
        prop_assert_eq!(frame.len() % 4, (14 + 20 + 8) % 4, "IP payload is word aligned");
        let p = RocePacket::parse(&frame).unwrap();
        let mut expected = h;
        expected.bth.pad_count = ((4 - payload.len() % 4) % 4) as u8;
        prop_assert_eq!(p.headers, expected);
        prop_assert_eq!(p.payload, &payload[..]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = RocePacket::parse(&bytes);
        // And behind a valid Ethernet header with the IPv4 EtherType.
        let mut framed = send_only(b"")[..IP].to_vec();
        framed.extend_from_slice(&bytes);
        let _ = RocePacket::parse(&framed);
    }

    #[test]
    fn scribbled_transport_bytes_with_a_fixed_icrc((h, payload) in arb_frame(64),
                                                    scribbles in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        // Past every integrity check, the transport parse still never
        // panics, and what it accepts re-emits to the same fields.
        let mut frame = emit(&h, &payload);
        let span = frame.len() - 4 - BTH;
        for (at, value) in scribbles {
            frame[BTH + at % span] = value;
        }
        fix(&mut frame);
        if let Ok(p) = RocePacket::parse(&frame) {
            let again = emit(&p.headers, p.payload);
            let q = RocePacket::parse(&again).unwrap();
            prop_assert_eq!(q.headers, p.headers);
            prop_assert_eq!(q.payload, p.payload);
        }
    }

    #[test]
    fn a_flipped_bit_after_ethernet_is_detected((h, payload) in arb_frame(256), bit in any::<usize>()) {
        let good = emit(&h, &payload);
        let original = RocePacket::parse(&good).unwrap();
        let bit = IP * 8 + bit % ((good.len() - IP) * 8);
        let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
        let mut bad = good.clone();
        bad[byte] ^= mask;
        let parsed = RocePacket::parse(&bad);
        if byte == BTH + 4 && mask & 0xC0 != 0 {
            // FECN and BECN: switches set them in flight, so the ICRC
            // leaves them out by design; the flip shows in the field.
            let p = parsed.unwrap();
            let mut expected = original.headers;
            expected.bth.fecn ^= mask == 0x80;
            expected.bth.becn ^= mask == 0x40;
            prop_assert_eq!(p.headers, expected);
            prop_assert_eq!(p.payload, original.payload);
        } else if (UDP + 6..UDP + 8).contains(&byte) {
            // The UDP checksum is outside the ICRC; a zero one turned into
            // anything but the true checksum is refused.
            let udp = etherparse::UdpHeader::from_slice(&bad[UDP..]).unwrap().0;
            let sum = udp.calc_checksum_ipv4_raw(h.src_ip.octets(), h.dst_ip.octets(), &bad[BTH..]).unwrap();
            if udp.checksum == sum {
                prop_assert_eq!(parsed.unwrap(), original);
            } else {
                prop_assert_eq!(parsed, Err(WireError::BadUdpChecksum));
            }
        } else {
            prop_assert!(parsed.is_err(), "flip of bit {} (byte {}) went unnoticed", bit, byte);
        }
    }
}

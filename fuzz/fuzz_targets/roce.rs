//! The RoCEv2 codec under arbitrary frames from the wire.
//!
//! Each input is parsed twice: as it is, and repaired so that it passes the
//! layers below the transport (Ethernet type, IPv4 version, fragment bits,
//! protocol, UDP port, lengths, IPv4 checksum, ICRC), which random bytes
//! almost never do. Nothing may panic, and whatever parses re-emits from
//! its fields to a frame that parses to the same fields and payload.

#![no_main]

use iovirt_hca::wire::{ROCE_UDP_PORT, RoceHeaders, RocePacket, icrc};
use libfuzzer_sys::fuzz_target;

const IP: usize = 14;

/// Makes `frame` pass everything below the BTH, keeping the rest.
fn repair(frame: &mut [u8]) {
    if frame.len() < IP + 20 + 8 + 16 {
        return;
    }
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    frame[IP] = 0x45;
    frame[IP + 6] &= 0x40; // keep DF, clear MF and the offset
    frame[IP + 7] = 0;
    frame[IP + 9] = 17;
    let total = (frame.len() - IP).min(usize::from(u16::MAX));
    let frame = &mut frame[..IP + total];
    frame[IP + 2..IP + 4].copy_from_slice(&(total as u16).to_be_bytes());
    frame[IP + 10..IP + 12].copy_from_slice(&[0, 0]);
    let mut sum: u32 = frame[IP..IP + 20]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    frame[IP + 10..IP + 12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let udp = IP + 20;
    frame[udp + 2..udp + 4].copy_from_slice(&ROCE_UDP_PORT.to_be_bytes());
    frame[udp + 4..udp + 6].copy_from_slice(&((total - 20) as u16).to_be_bytes());
    frame[udp + 6..udp + 8].copy_from_slice(&[0, 0]);
    let end = frame.len() - 4;
    let crc = icrc(&frame[IP..end]);
    frame[end..].copy_from_slice(&crc.to_le_bytes());
}

fn check(frame: &[u8]) {
    let Ok(packet) = RocePacket::parse(frame) else {
        return;
    };
    let headers: RoceHeaders = packet.headers;
    let mut out = Vec::new();
    headers
        .emit(packet.payload, &mut out)
        .expect("parsed fields re-emit");
    assert_eq!(out.len(), headers.frame_len(packet.payload.len()));
    let again = RocePacket::parse(&out).expect("re-emitted frame parses");
    assert_eq!(again.headers, headers);
    assert_eq!(again.payload, packet.payload);
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut repaired = data.to_vec();
    repair(&mut repaired);
    check(&repaired);
});

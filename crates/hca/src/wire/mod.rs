//! The RoCEv2 wire codec: the frames an HCA puts on Ethernet and takes off it.
//!
//! A RoCEv2 frame is Ethernet II / IPv4 / UDP (destination port 4791) / the
//! InfiniBand Base Transport Header (BTH) / the extended transport headers
//! its opcode calls for / payload / zero pad to a multiple of four bytes /
//! the 4-byte invariant CRC (ICRC).
//!
//! The layout follows smoltcp's `wire` module: a zero-copy view over a byte
//! buffer where a header has many bit fields ([`Bth`]), plain `Repr` structs
//! with `parse` and `emit` for the rest, and one frame-level type,
//! [`RocePacket`], that checks a whole received frame layer by layer, and
//! [`RoceHeaders`] that writes one. Parsing never panics and never allocates;
//! every way a frame can be refused is a [`WireError`] variant with a stable
//! counter name.
//!
//! ```
//! use iovirt_hca::wire::{BthRepr, Opcode, Psn, Reth, RoceHeaders, RocePacket};
//!
//! let mut headers = RoceHeaders::new(BthRepr::new(Opcode::RC_RDMA_WRITE_ONLY, 0x12, Psn::new(7)));
//! headers.reth = Some(Reth { va: 0x1000, rkey: 0x55, dma_len: 3 });
//! let mut frame = Vec::new();
//! headers.emit(b"abc", &mut frame).unwrap();
//! let packet = RocePacket::parse(&frame).unwrap();
//! assert_eq!(packet.payload, b"abc");
//! assert_eq!(packet.headers.bth.pad_count, 1);
//! assert_eq!(packet.headers.reth, headers.reth);
//! ```

mod bth;
mod error;
mod ext;
mod icrc;
mod opcode;
mod packet;
mod timer;

pub use bth::{Bth, BthRepr, Psn, psn_add, psn_diff};
pub use error::WireError;
pub use ext::{Aeth, AethSyndrome, AtomicAckEth, Deth, ImmDt, NakCode, Reth};
pub use icrc::icrc;
pub use opcode::{Opcode, Operation, Position, Transport};
pub use packet::{RoceHeaders, RocePacket};
pub use timer::{RnrTimer, transport_timeout_ns};

/// The UDP destination port of RoCEv2.
pub const ROCE_UDP_PORT: u16 = 4791;
/// Length of an Ethernet II header (no VLAN tag).
pub const ETHERNET_HEADER_LEN: usize = 14;
/// Length of an IPv4 header without options, as [`RoceHeaders::emit`] writes it.
pub const IPV4_HEADER_LEN: usize = 20;
/// Length of a UDP header.
pub const UDP_HEADER_LEN: usize = 8;
/// Length of the Base Transport Header.
pub const BTH_LEN: usize = 12;
/// Length of the RDMA Extended Transport Header.
pub const RETH_LEN: usize = 16;
/// Length of the ACK Extended Transport Header.
pub const AETH_LEN: usize = 4;
/// Length of the Datagram Extended Transport Header.
pub const DETH_LEN: usize = 8;
/// Length of the Immediate Data header.
pub const IMMDT_LEN: usize = 4;
/// Length of the Atomic ACK Extended Transport Header.
pub const ATOMIC_ACK_ETH_LEN: usize = 8;
/// Length of the invariant CRC at the end of every packet.
pub const ICRC_LEN: usize = 4;
/// The default partition key, full membership of the default partition.
pub const DEFAULT_PKEY: u16 = 0xFFFF;

/// The `N` bytes of `buf` at `at`, or [`WireError::Truncated`].
fn take<const N: usize>(buf: &[u8], at: usize) -> Result<[u8; N], WireError> {
    buf.get(at..at + N)
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or(WireError::Truncated {
            need: at + N,
            have: buf.len(),
        })
}

/// Copies `bytes` into `buf` at `at`, or [`WireError::Truncated`].
fn put(buf: &mut [u8], at: usize, bytes: &[u8]) -> Result<(), WireError> {
    let have = buf.len();
    let dst = buf
        .get_mut(at..at + bytes.len())
        .ok_or(WireError::Truncated {
            need: at + bytes.len(),
            have,
        })?;
    dst.copy_from_slice(bytes);
    Ok(())
}

//! The Base Transport Header and 24-bit packet sequence numbers.

use core::fmt;

use super::{BTH_LEN, DEFAULT_PKEY, Opcode, WireError};

/// Mask of a 24-bit field (QP numbers, PSNs, MSNs).
pub(crate) const MASK_24: u32 = 0x00FF_FFFF;

/// A 24-bit packet sequence number; arithmetic wraps modulo 2^24.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Psn(u32);

impl Psn {
    /// Number of distinct PSNs.
    pub const MODULUS: u32 = 1 << 24;

    /// The PSN of the low 24 bits of `value`.
    pub const fn new(value: u32) -> Psn {
        Psn(value & MASK_24)
    }

    /// The PSN as a number below 2^24.
    pub const fn value(self) -> u32 {
        self.0
    }

    /// The PSN `n` packets later, wrapping.
    #[must_use]
    pub const fn add(self, n: u32) -> Psn {
        Psn::new(self.0.wrapping_add(n))
    }

    /// The signed distance from `earlier` to `self` modulo 2^24, in
    /// -2^23..2^23: positive when `self` is ahead, as IB compares PSNs
    /// within half the sequence space.
    pub const fn diff(self, earlier: Psn) -> i32 {
        let d = self.0.wrapping_sub(earlier.0) & MASK_24;
        // Sign-extend bit 23.
        ((d << 8) as i32) >> 8
    }

    /// Whether `self` comes strictly after `other` in sequence-space order.
    pub const fn is_after(self, other: Psn) -> bool {
        self.diff(other) > 0
    }
}

impl fmt::Debug for Psn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Psn({})", self.0)
    }
}

impl From<u32> for Psn {
    fn from(value: u32) -> Self {
        Psn::new(value)
    }
}

/// `psn + n` modulo 2^24 on raw numbers; see [`Psn::add`].
pub const fn psn_add(psn: u32, n: u32) -> u32 {
    Psn::new(psn).add(n).value()
}

/// The signed distance `a - b` modulo 2^24 on raw numbers; see [`Psn::diff`].
pub const fn psn_diff(a: u32, b: u32) -> i32 {
    Psn::new(a).diff(Psn::new(b))
}

// Bit positions inside the BTH.
const SE: u8 = 0x80;
const MIGREQ: u8 = 0x40;
const PAD_SHIFT: u8 = 4;
const TVER_MASK: u8 = 0x0F;
const FECN: u8 = 0x80;
const BECN: u8 = 0x40;
const RESV6: u8 = 0x3F;
const ACKREQ: u8 = 0x80;

/// A zero-copy view of a Base Transport Header at the start of `buffer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bth<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Bth<T> {
    /// Wraps `buffer` after checking it holds the 12 bytes of a BTH; the
    /// accessors need no further checks.
    pub fn new_checked(buffer: T) -> Result<Bth<T>, WireError> {
        let have = buffer.as_ref().len();
        if have < BTH_LEN {
            return Err(WireError::Truncated {
                need: BTH_LEN,
                have,
            });
        }
        Ok(Bth { buffer })
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn byte(&self, i: usize) -> u8 {
        // In range after new_checked; 0 keeps a broken invariant harmless.
        self.buffer.as_ref().get(i).copied().unwrap_or(0)
    }

    fn u24(&self, i: usize) -> u32 {
        u32::from_be_bytes([0, self.byte(i), self.byte(i + 1), self.byte(i + 2)])
    }

    /// The opcode.
    pub fn opcode(&self) -> Opcode {
        Opcode(self.byte(0))
    }

    /// Solicited Event: the responder should raise a completion event.
    pub fn solicited(&self) -> bool {
        self.byte(1) & SE != 0
    }

    /// MigReq: path migration state.
    pub fn migreq(&self) -> bool {
        self.byte(1) & MIGREQ != 0
    }

    /// Pad bytes after the payload (0 to 3).
    pub fn pad_count(&self) -> u8 {
        (self.byte(1) >> PAD_SHIFT) & 0x3
    }

    /// Transport header version (0).
    pub fn tver(&self) -> u8 {
        self.byte(1) & TVER_MASK
    }

    /// Partition key.
    pub fn pkey(&self) -> u16 {
        u16::from_be_bytes([self.byte(2), self.byte(3)])
    }

    /// Forward explicit congestion notification.
    pub fn fecn(&self) -> bool {
        self.byte(4) & FECN != 0
    }

    /// Backward explicit congestion notification.
    pub fn becn(&self) -> bool {
        self.byte(4) & BECN != 0
    }

    /// The six reserved bits after FECN and BECN.
    pub fn resv6(&self) -> u8 {
        self.byte(4) & RESV6
    }

    /// Destination queue pair number (24 bits).
    pub fn dest_qp(&self) -> u32 {
        self.u24(5)
    }

    /// AckReq: the requester asks for an acknowledgement.
    pub fn ack_req(&self) -> bool {
        self.byte(8) & ACKREQ != 0
    }

    /// The seven reserved bits after AckReq.
    pub fn resv7(&self) -> u8 {
        self.byte(8) & !ACKREQ
    }

    /// Packet sequence number.
    pub fn psn(&self) -> Psn {
        Psn::new(self.u24(9))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Bth<T> {
    fn set_byte(&mut self, i: usize, value: u8) {
        if let Some(b) = self.buffer.as_mut().get_mut(i) {
            *b = value;
        }
    }

    fn set_bits(&mut self, i: usize, mask: u8, value: u8) {
        let b = self.byte(i);
        self.set_byte(i, (b & !mask) | (value & mask));
    }

    fn set_u24(&mut self, i: usize, value: u32) {
        let [_, a, b, c] = (value & MASK_24).to_be_bytes();
        self.set_byte(i, a);
        self.set_byte(i + 1, b);
        self.set_byte(i + 2, c);
    }

    /// Sets the opcode.
    pub fn set_opcode(&mut self, opcode: Opcode) {
        self.set_byte(0, opcode.0);
    }

    /// Sets Solicited Event.
    pub fn set_solicited(&mut self, on: bool) {
        self.set_bits(1, SE, if on { SE } else { 0 });
    }

    /// Sets MigReq.
    pub fn set_migreq(&mut self, on: bool) {
        self.set_bits(1, MIGREQ, if on { MIGREQ } else { 0 });
    }

    /// Sets the pad count (low two bits of `pad`).
    pub fn set_pad_count(&mut self, pad: u8) {
        self.set_bits(1, 0x3 << PAD_SHIFT, pad << PAD_SHIFT);
    }

    /// Sets the transport header version (low four bits of `tver`).
    pub fn set_tver(&mut self, tver: u8) {
        self.set_bits(1, TVER_MASK, tver);
    }

    /// Sets the partition key.
    pub fn set_pkey(&mut self, pkey: u16) {
        let [a, b] = pkey.to_be_bytes();
        self.set_byte(2, a);
        self.set_byte(3, b);
    }

    /// Sets FECN.
    pub fn set_fecn(&mut self, on: bool) {
        self.set_bits(4, FECN, if on { FECN } else { 0 });
    }

    /// Sets BECN.
    pub fn set_becn(&mut self, on: bool) {
        self.set_bits(4, BECN, if on { BECN } else { 0 });
    }

    /// Sets the destination QP (low 24 bits of `qp`).
    pub fn set_dest_qp(&mut self, qp: u32) {
        self.set_u24(5, qp);
    }

    /// Sets AckReq.
    pub fn set_ack_req(&mut self, on: bool) {
        self.set_bits(8, ACKREQ, if on { ACKREQ } else { 0 });
    }

    /// Sets the PSN.
    pub fn set_psn(&mut self, psn: Psn) {
        self.set_u24(9, psn.value());
    }
}

/// The fields of a BTH as plain values (reserved bits are written as zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BthRepr {
    /// Opcode.
    pub opcode: Opcode,
    /// Solicited Event.
    pub solicited: bool,
    /// MigReq.
    pub migreq: bool,
    /// Pad count, 0 to 3. [`RoceHeaders::emit`](super::RoceHeaders::emit)
    /// computes it from the payload and ignores this value.
    pub pad_count: u8,
    /// Transport header version, 0.
    pub tver: u8,
    /// Partition key.
    pub pkey: u16,
    /// FECN.
    pub fecn: bool,
    /// BECN.
    pub becn: bool,
    /// Destination QP, 24 bits.
    pub dest_qp: u32,
    /// AckReq.
    pub ack_req: bool,
    /// PSN.
    pub psn: Psn,
}

impl BthRepr {
    /// A BTH for `opcode` to `dest_qp` at `psn`, with the default partition
    /// key and every flag clear.
    pub const fn new(opcode: Opcode, dest_qp: u32, psn: Psn) -> BthRepr {
        BthRepr {
            opcode,
            solicited: false,
            migreq: false,
            pad_count: 0,
            tver: 0,
            pkey: DEFAULT_PKEY,
            fecn: false,
            becn: false,
            dest_qp: dest_qp & MASK_24,
            ack_req: false,
            psn,
        }
    }

    /// Reads every field of `bth`.
    pub fn parse<T: AsRef<[u8]>>(bth: &Bth<T>) -> BthRepr {
        BthRepr {
            opcode: bth.opcode(),
            solicited: bth.solicited(),
            migreq: bth.migreq(),
            pad_count: bth.pad_count(),
            tver: bth.tver(),
            pkey: bth.pkey(),
            fecn: bth.fecn(),
            becn: bth.becn(),
            dest_qp: bth.dest_qp(),
            ack_req: bth.ack_req(),
            psn: bth.psn(),
        }
    }

    /// Writes every field into `bth`, the reserved bits as zero. Fields
    /// wider than their slot are truncated to it.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, bth: &mut Bth<T>) {
        for i in 0..BTH_LEN {
            bth.set_byte(i, 0);
        }
        bth.set_opcode(self.opcode);
        bth.set_solicited(self.solicited);
        bth.set_migreq(self.migreq);
        bth.set_pad_count(self.pad_count);
        bth.set_tver(self.tver);
        bth.set_pkey(self.pkey);
        bth.set_fecn(self.fecn);
        bth.set_becn(self.becn);
        bth.set_dest_qp(self.dest_qp);
        bth.set_ack_req(self.ack_req);
        bth.set_psn(self.psn);
    }

    /// The 12 bytes of the header.
    pub fn to_bytes(&self) -> [u8; BTH_LEN] {
        let mut bth = Bth {
            buffer: [0u8; BTH_LEN],
        };
        self.emit(&mut bth);
        bth.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psn_wraps_and_compares_in_half_the_space() {
        assert_eq!(Psn::new(0x1FF_FFFF).value(), 0xFF_FFFF);
        assert_eq!(Psn::new(0xFF_FFFF).add(1), Psn::new(0));
        assert_eq!(Psn::new(0xFF_FFFE).add(5).value(), 3);
        assert_eq!(psn_add(0xFF_FFFF, 0xFF_FFFF), 0xFF_FFFE);
        assert_eq!(Psn::new(3).diff(Psn::new(0xFF_FFFE)), 5);
        assert_eq!(Psn::new(0xFF_FFFE).diff(Psn::new(3)), -5);
        assert_eq!(psn_diff(10, 10), 0);
        // Exactly half-way reads as behind: the range is -2^23..2^23.
        assert_eq!(psn_diff(1 << 23, 0), -(1 << 23));
        assert_eq!(psn_diff((1 << 23) - 1, 0), (1 << 23) - 1);
        assert!(Psn::new(1).is_after(Psn::new(0xFF_FFFF)));
        assert!(!Psn::new(0xFF_FFFF).is_after(Psn::new(1)));
        assert_eq!(format!("{:?}", Psn::from(7)), "Psn(7)");
    }

    #[test]
    fn view_reads_each_field_at_its_bits() {
        let bytes = [
            0x0A, 0xE0, 0x12, 0x34, 0xC0, 0xAB, 0xCD, 0xEF, 0x80, 0x01, 0x02, 0x03,
        ];
        let bth = Bth::new_checked(&bytes[..]).unwrap();
        assert_eq!(bth.opcode(), Opcode::RC_RDMA_WRITE_ONLY);
        assert!(bth.solicited());
        assert!(bth.migreq());
        assert_eq!(bth.pad_count(), 2);
        assert_eq!(bth.tver(), 0);
        assert_eq!(bth.pkey(), 0x1234);
        assert!(bth.fecn() && bth.becn());
        assert_eq!(bth.resv6(), 0);
        assert_eq!(bth.dest_qp(), 0xAB_CDEF);
        assert!(bth.ack_req());
        assert_eq!(bth.resv7(), 0);
        assert_eq!(bth.psn().value(), 0x01_0203);
        let repr = BthRepr::parse(&bth);
        assert_eq!(repr.to_bytes(), bytes);
    }

    #[test]
    fn short_buffer_is_refused() {
        assert_eq!(
            Bth::new_checked(&[0u8; 11][..]),
            Err(WireError::Truncated { need: 12, have: 11 })
        );
    }

    #[test]
    fn setters_touch_only_their_bits() {
        let mut bth = Bth::new_checked([0xFFu8; 12]).unwrap();
        bth.set_pad_count(1);
        bth.set_tver(0);
        bth.set_fecn(false);
        bth.set_ack_req(false);
        bth.set_dest_qp(0x0123_4567);
        bth.set_psn(Psn::new(0));
        let bytes = bth.into_inner();
        assert_eq!(
            bytes,
            [
                0xFF, 0xD0, 0xFF, 0xFF, 0x7F, 0x23, 0x45, 0x67, 0x7F, 0, 0, 0
            ]
        );
    }

    #[test]
    fn repr_new_uses_defaults() {
        let r = BthRepr::new(Opcode::RC_ACKNOWLEDGE, 0x0100_0005, Psn::new(9));
        assert_eq!(r.pkey, 0xFFFF);
        assert_eq!(r.dest_qp, 5);
        assert_eq!(r.to_bytes(), [0x11, 0, 0xFF, 0xFF, 0, 0, 0, 5, 0, 0, 0, 9]);
    }
}

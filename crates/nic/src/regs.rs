//! The register map (Intel 8254x software developer's manual, section 13)
//! and the bits this model implements.

use bitflags::bitflags;

/// Device control.
pub const CTRL: u64 = 0x0000;
/// Device status (read only).
pub const STATUS: u64 = 0x0008;
/// EEPROM/flash control.
pub const EECD: u64 = 0x0010;
/// EEPROM read.
pub const EERD: u64 = 0x0014;
/// Interrupt cause read (clear on read).
pub const ICR: u64 = 0x00c0;
/// Interrupt throttling: minimum interval between interrupts, 256 ns units.
pub const ITR: u64 = 0x00c4;
/// Interrupt cause set (write only).
pub const ICS: u64 = 0x00c8;
/// Interrupt mask set (reads return the mask).
pub const IMS: u64 = 0x00d0;
/// Interrupt mask clear (write only).
pub const IMC: u64 = 0x00d8;
/// Receive control.
pub const RCTL: u64 = 0x0100;
/// Transmit control.
pub const TCTL: u64 = 0x0400;
/// Receive descriptor base, low 32 bits.
pub const RDBAL: u64 = 0x2800;
/// Receive descriptor base, high 32 bits.
pub const RDBAH: u64 = 0x2804;
/// Receive descriptor ring length in bytes.
pub const RDLEN: u64 = 0x2808;
/// Receive descriptor head.
pub const RDH: u64 = 0x2810;
/// Receive descriptor tail.
pub const RDT: u64 = 0x2818;
/// Receive delay timer, 1024 ns units.
pub const RDTR: u64 = 0x2820;
/// Receive absolute delay timer, 1024 ns units.
pub const RADV: u64 = 0x282c;
/// Transmit descriptor base, low 32 bits.
pub const TDBAL: u64 = 0x3800;
/// Transmit descriptor base, high 32 bits.
pub const TDBAH: u64 = 0x3804;
/// Transmit descriptor ring length in bytes.
pub const TDLEN: u64 = 0x3808;
/// Transmit descriptor head.
pub const TDH: u64 = 0x3810;
/// Transmit descriptor tail.
pub const TDT: u64 = 0x3818;
/// Transmit interrupt delay, 1024 ns units.
pub const TIDV: u64 = 0x3820;
/// Transmit absolute interrupt delay, 1024 ns units.
pub const TADV: u64 = 0x382c;
/// Missed packets count (clear on read).
pub const MPC: u64 = 0x4010;
/// Good packets received count.
pub const GPRC: u64 = 0x4074;
/// Good packets transmitted count.
pub const GPTC: u64 = 0x4080;
/// Good octets received, low.
pub const GORCL: u64 = 0x4088;
/// Good octets received, high.
pub const GORCH: u64 = 0x408c;
/// Good octets transmitted, low.
pub const GOTCL: u64 = 0x4090;
/// Good octets transmitted, high.
pub const GOTCH: u64 = 0x4094;
/// Total packets received.
pub const TPR: u64 = 0x40d0;
/// Total packets transmitted.
pub const TPT: u64 = 0x40d4;
/// Multicast table array: 128 registers.
pub const MTA: u64 = 0x5200;
/// Receive address low, entry 0 (8 bytes per entry, 16 entries).
pub const RAL0: u64 = 0x5400;
/// Receive address high, entry 0.
pub const RAH0: u64 = 0x5404;
/// Entries of the receive address table.
pub const RA_ENTRIES: usize = 16;
/// Registers of the multicast table array.
pub const MTA_ENTRIES: usize = 128;
/// Size of the register block (BAR 0): 128 KiB.
pub const BAR_SIZE: u64 = 0x2_0000;

/// Every register this model implements, each array by its first entry: a
/// checklist for register tests and a dictionary for fuzzers.
pub const IMPLEMENTED: [u64; 37] = [
    CTRL, STATUS, EECD, EERD, ICR, ITR, ICS, IMS, IMC, RCTL, TCTL, RDBAL, RDBAH, RDLEN, RDH, RDT,
    RDTR, RADV, TDBAL, TDBAH, TDLEN, TDH, TDT, TIDV, TADV, MPC, GPRC, GPTC, GORCL, GORCH, GOTCL,
    GOTCH, TPR, TPT, MTA, RAL0, RAH0,
];

bitflags! {
    /// CTRL bits this model acts on (others are stored and read back).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Ctrl: u32 {
        /// Set link up.
        const SLU = 1 << 6;
        /// Device reset: self-clearing.
        const RST = 1 << 26;
    }
}

bitflags! {
    /// STATUS bits.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Status: u32 {
        /// Full duplex.
        const FD = 1 << 0;
        /// Link up.
        const LU = 1 << 1;
        /// Speed 1000 Mb/s (bits 7:6 = 10b).
        const SPEED_1000 = 1 << 7;
    }
}

bitflags! {
    /// Interrupt causes (ICR, ICS, IMS, IMC).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct Cause: u32 {
        /// Transmit descriptor written back.
        const TXDW = 0x01;
        /// Transmit queue empty.
        const TXQE = 0x02;
        /// Link status change.
        const LSC = 0x04;
        /// Receive descriptor minimum threshold reached.
        const RXDMT0 = 0x10;
        /// Receiver overrun (a frame arrived with no free descriptor).
        const RXO = 0x40;
        /// Receiver timer interrupt (a frame was stored).
        const RXT0 = 0x80;
    }
}

bitflags! {
    /// RCTL bits.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Rctl: u32 {
        /// Receiver enable.
        const EN = 1 << 1;
        /// Store bad packets.
        const SBP = 1 << 2;
        /// Unicast promiscuous.
        const UPE = 1 << 3;
        /// Multicast promiscuous.
        const MPE = 1 << 4;
        /// Long packet enable (frames up to 16 KiB instead of 1522 bytes).
        const LPE = 1 << 5;
        /// Broadcast accept mode.
        const BAM = 1 << 15;
        /// Buffer size extension (BSIZE x16).
        const BSEX = 1 << 25;
        /// Strip Ethernet CRC.
        const SECRC = 1 << 26;
    }
}

impl Rctl {
    /// The receive buffer size RCTL selects (BSIZE bits 17:16, BSEX).
    pub fn buffer_size(self) -> usize {
        let bsize = (self.bits() >> 16) & 3;
        match (self.contains(Rctl::BSEX), bsize) {
            (false, 0) => 2048,
            (false, 1) => 1024,
            (false, 2) => 512,
            (false, _) => 256,
            // BSEX with BSIZE 00 is reserved: treat as 2048, as BSEX=0.
            (true, 0) => 2048,
            (true, 1) => 16384,
            (true, 2) => 8192,
            (true, _) => 4096,
        }
    }

    /// The multicast offset (MO, bits 13:12): which 12 bits of the
    /// destination address index the MTA.
    pub fn multicast_offset(self) -> u32 {
        (self.bits() >> 12) & 3
    }
}

bitflags! {
    /// TCTL bits.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Tctl: u32 {
        /// Transmitter enable.
        const EN = 1 << 1;
        /// Pad short packets.
        const PSP = 1 << 3;
    }
}

/// RAH: address valid.
pub const RAH_AV: u32 = 1 << 31;
/// EERD: start a read.
pub const EERD_START: u32 = 1 << 0;
/// EERD: read done.
pub const EERD_DONE: u32 = 1 << 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_sizes() {
        assert_eq!(Rctl::empty().buffer_size(), 2048);
        assert_eq!(Rctl::from_bits_retain(3 << 16).buffer_size(), 256);
        assert_eq!(
            Rctl::from_bits_retain((1 << 16) | Rctl::BSEX.bits()).buffer_size(),
            16384
        );
        assert_eq!(Rctl::from_bits_retain(2 << 12).multicast_offset(), 2);
    }
}

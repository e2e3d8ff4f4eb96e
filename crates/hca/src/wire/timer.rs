//! The RNR NAK timer codes and the transport (ACK) timeout.

/// Nanoseconds of each RNR timer code, indexed by code. Code 0 is the
/// longest wait, not the shortest: IB appended it after the others.
const RNR_NS: [u64; 32] = [
    655_360_000,
    10_000,
    20_000,
    30_000,
    40_000,
    60_000,
    80_000,
    120_000,
    160_000,
    240_000,
    320_000,
    480_000,
    640_000,
    960_000,
    1_280_000,
    1_920_000,
    2_560_000,
    3_840_000,
    5_120_000,
    7_680_000,
    10_240_000,
    15_360_000,
    20_480_000,
    30_720_000,
    40_960_000,
    61_440_000,
    81_920_000,
    122_880_000,
    163_840_000,
    245_760_000,
    327_680_000,
    491_520_000,
];

/// The 5-bit RNR NAK timer code: how long a requester waits after a
/// receiver-not-ready NAK before it retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RnrTimer(u8);

impl RnrTimer {
    /// The longest wait, 655.36 ms (code 0).
    pub const MAX: RnrTimer = RnrTimer(0);

    /// The timer of the low five bits of `code`.
    pub const fn new(code: u8) -> RnrTimer {
        RnrTimer(code & 0x1F)
    }

    /// The 5-bit code.
    pub const fn code(self) -> u8 {
        self.0
    }

    /// The wait in nanoseconds.
    pub fn to_ns(self) -> u64 {
        RNR_NS.get(usize::from(self.0)).copied().unwrap_or(0)
    }

    /// The shortest timer that waits at least `ns`; waits longer than the
    /// longest timer give the longest (code 0).
    pub fn at_least(ns: u64) -> RnrTimer {
        // Codes 1 to 31 are in increasing order; code 0 tops them all.
        (1..=31u8)
            .map(RnrTimer)
            .find(|t| t.to_ns() >= ns)
            .unwrap_or(RnrTimer::MAX)
    }
}

/// The local ACK timeout of a QP in nanoseconds: 4.096 us x 2^`timeout`.
/// Only the low five bits count (the field is five bits wide). IB reads 0
/// as an infinite timeout; this gives `None` for it: no timer to arm.
pub fn transport_timeout_ns(timeout: u8) -> Option<u64> {
    match timeout & 0x1F {
        0 => None,
        t => Some(4096u64 << t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_the_facts() {
        assert_eq!(RnrTimer::new(0).to_ns(), 655_360_000);
        assert_eq!(RnrTimer::new(1).to_ns(), 10_000);
        assert_eq!(RnrTimer::new(14).to_ns(), 1_280_000);
        assert_eq!(RnrTimer::new(31).to_ns(), 491_520_000);
        assert_eq!(RnrTimer::new(0x3F).code(), 31);
        for code in 2..=31u8 {
            assert!(RnrTimer::new(code).to_ns() > RnrTimer::new(code - 1).to_ns());
        }
    }

    #[test]
    fn at_least_picks_the_shortest_sufficient_code() {
        assert_eq!(RnrTimer::at_least(0).code(), 1);
        assert_eq!(RnrTimer::at_least(10_000).code(), 1);
        assert_eq!(RnrTimer::at_least(10_001).code(), 2);
        assert_eq!(RnrTimer::at_least(1_000_000).code(), 14);
        assert_eq!(RnrTimer::at_least(491_520_000).code(), 31);
        assert_eq!(RnrTimer::at_least(491_520_001).code(), 0);
        assert_eq!(RnrTimer::at_least(u64::MAX), RnrTimer::MAX);
        for code in 0..=31u8 {
            let t = RnrTimer::new(code);
            assert_eq!(RnrTimer::at_least(t.to_ns()), t);
        }
    }

    #[test]
    fn transport_timeout_doubles_per_step() {
        assert_eq!(transport_timeout_ns(0), None);
        assert_eq!(transport_timeout_ns(1), Some(8_192));
        assert_eq!(transport_timeout_ns(14), Some(67_108_864));
        assert_eq!(transport_timeout_ns(31), Some(4096 << 31));
        assert_eq!(transport_timeout_ns(32), None);
        assert_eq!(transport_timeout_ns(33), Some(8_192));
    }
}

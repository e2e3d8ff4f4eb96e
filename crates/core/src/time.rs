//! Virtual time. Models never read a wall clock: time comes from the
//! scheduler and from the cost model, so the same inputs give the same run.

use core::fmt;
use core::ops::{Add, AddAssign, Sub};

use serde::{Deserialize, Serialize};

/// An instant of virtual time, in nanoseconds since the simulation began.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct SimTime(u64);

/// A span of virtual time, in nanoseconds.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct SimDuration(u64);

impl SimTime {
    /// The start of the simulation.
    pub const ZERO: SimTime = SimTime(0);

    /// The instant `ns` nanoseconds after the start.
    pub const fn from_nanos(ns: u64) -> SimTime {
        SimTime(ns)
    }

    /// Nanoseconds since the start.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub const fn saturating_since(self, earlier: SimTime) -> SimDuration {
        SimDuration(self.0.saturating_sub(earlier.0))
    }
}

impl SimDuration {
    /// No time.
    pub const ZERO: SimDuration = SimDuration(0);

    /// A span of `ns` nanoseconds.
    pub const fn from_nanos(ns: u64) -> SimDuration {
        SimDuration(ns)
    }

    /// A span of `us` microseconds (saturating).
    pub const fn from_micros(us: u64) -> SimDuration {
        SimDuration(us.saturating_mul(1_000))
    }

    /// A span of `ms` milliseconds (saturating).
    pub const fn from_millis(ms: u64) -> SimDuration {
        SimDuration(ms.saturating_mul(1_000_000))
    }

    /// The span in nanoseconds.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// `self * n`, saturating.
    pub const fn saturating_mul(self, n: u64) -> SimDuration {
        SimDuration(self.0.saturating_mul(n))
    }
}

// Virtual time saturates rather than wrapping: a hostile timer value (a
// guest-programmed interval of 2^64 ns) must yield "never", not the past.
impl Add<SimDuration> for SimTime {
    type Output = SimTime;
    fn add(self, d: SimDuration) -> SimTime {
        SimTime(self.0.saturating_add(d.0))
    }
}

impl AddAssign<SimDuration> for SimTime {
    fn add_assign(&mut self, d: SimDuration) {
        *self = *self + d;
    }
}

impl Sub for SimTime {
    type Output = SimDuration;
    fn sub(self, earlier: SimTime) -> SimDuration {
        self.saturating_since(earlier)
    }
}

impl Add for SimDuration {
    type Output = SimDuration;
    fn add(self, d: SimDuration) -> SimDuration {
        SimDuration(self.0.saturating_add(d.0))
    }
}

impl AddAssign for SimDuration {
    fn add_assign(&mut self, d: SimDuration) {
        *self = *self + d;
    }
}

impl core::iter::Sum for SimDuration {
    fn sum<I: Iterator<Item = SimDuration>>(iter: I) -> SimDuration {
        iter.fold(SimDuration::ZERO, Add::add)
    }
}

fn fmt_nanos(ns: u64, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match ns {
        0..1_000 => write!(f, "{ns} ns"),
        1_000..1_000_000 => write!(f, "{:.3} us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => write!(f, "{:.3} ms", ns as f64 / 1e6),
        _ => write!(f, "{:.3} s", ns as f64 / 1e9),
    }
}

impl fmt::Display for SimDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_nanos(self.0, f)
    }
}

impl fmt::Display for SimTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("t=")?;
        fmt_nanos(self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = SimTime::from_nanos(u64::MAX - 1) + SimDuration::from_nanos(10);
        assert_eq!(t.as_nanos(), u64::MAX);
        assert_eq!(
            SimTime::from_nanos(5) - SimTime::from_nanos(9),
            SimDuration::ZERO
        );
        assert_eq!(SimDuration::from_micros(u64::MAX).as_nanos(), u64::MAX);
        let mut d = SimDuration::from_micros(3);
        d += SimDuration::from_nanos(250);
        assert_eq!(d.as_nanos(), 3_250);
        let total: SimDuration = [1u64, 2, 3]
            .iter()
            .map(|&n| SimDuration::from_millis(n))
            .sum();
        assert_eq!(total, SimDuration::from_millis(6));
    }

    #[test]
    fn display_picks_a_unit() {
        assert_eq!(SimDuration::from_nanos(999).to_string(), "999 ns");
        assert_eq!(SimDuration::from_nanos(4_500).to_string(), "4.500 us");
        assert_eq!(SimDuration::from_millis(2).to_string(), "2.000 ms");
        assert_eq!(SimTime::from_nanos(3_000_000_000).to_string(), "t=3.000 s");
    }
}

//! Statistics counters.
//!
//! Each component keeps a plain struct of [`Counter`]s that serialises with
//! serde, so reports and `--json` output need no glue.

use core::fmt;
use core::ops::AddAssign;

use serde::{Deserialize, Serialize};

/// A monotonically increasing event count. Saturates instead of wrapping, so
/// a hostile guest cannot make a counter lie by overflowing it.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Counter(u64);

impl Counter {
    /// Counts one event.
    #[inline]
    pub fn inc(&mut self) {
        self.add(1);
    }

    /// Counts `n` events.
    #[inline]
    pub fn add(&mut self, n: u64) {
        // The same saturation as `saturating_add`, as an add and a branch
        // on the carry marked cold (a counter never overflows in practice):
        // no all-ones register kept and no select per count.
        let (sum, overflow) = self.0.overflowing_add(n);
        self.0 = sum;
        if overflow {
            core::hint::cold_path();
            self.0 = u64::MAX;
        }
    }

    /// The count.
    #[inline]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// Returns the count and sets it to zero (clear-on-read, like a NIC's
    /// statistics registers).
    pub fn take(&mut self) -> u64 {
        core::mem::take(&mut self.0)
    }
}

impl AddAssign<u64> for Counter {
    fn add_assign(&mut self, n: u64) {
        self.add(n);
    }
}

impl fmt::Display for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A component's statistics block.
pub trait Stats: Default + Serialize {
    /// Sets every counter back to zero.
    fn reset(&mut self) {
        *self = Self::default();
    }

    /// Returns the counts and resets them, for per-interval reports.
    fn take(&mut self) -> Self {
        core::mem::take(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default, Serialize)]
    struct Example {
        hits: Counter,
        misses: Counter,
    }
    impl Stats for Example {}

    #[test]
    fn counters_saturate_serialise_and_reset() {
        let mut s = Example::default();
        s.hits.inc();
        s.hits += 2;
        s.misses.add(u64::MAX);
        s.misses.inc();
        assert_eq!(s.misses.get(), u64::MAX);
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            format!(r#"{{"hits":3,"misses":{}}}"#, u64::MAX)
        );
        let old = s.take();
        assert_eq!(old.hits.get(), 3);
        assert_eq!(s.hits.get(), 0);
        s.hits.inc();
        s.reset();
        assert_eq!(s.hits.take(), 0);
    }
}

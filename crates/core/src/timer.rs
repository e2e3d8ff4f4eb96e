//! Timers in virtual time.

use serde::{Deserialize, Serialize};

use crate::time::{SimDuration, SimTime};

/// Names one of a device's timers; the device picks the values (e.g. one for
/// the RX delay timer, one per QP for its retransmission timer) and gets the
/// token back when the timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TimerToken(pub u64);

/// The clock and timer service a device is given.
///
/// Implemented by the platform's discrete-event scheduler; called by devices
/// (interrupt moderation, retransmission and RNR timers, fault service). When
/// a timer expires the platform calls the device's own timer handler with the
/// token.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait Timers {
    /// The current virtual time.
    fn now(&self) -> SimTime;

    /// Arms `token` to fire `delay` from now. Arming a token that is already
    /// armed moves it: one token, at most one pending expiry.
    fn schedule(&mut self, delay: SimDuration, token: TimerToken);

    /// Disarms `token`; nothing happens if it is not armed.
    fn cancel(&mut self, token: TimerToken);
}

/// A deterministic timer queue in virtual time: the reference [`Timers`]
/// for a single device or a test, and the building block of a scheduler.
/// Expiries at the same instant come out in the order they were armed.
///
/// ```
/// use iovirt_core::{SimDuration, SimTime, TimerQueue, TimerToken, Timers};
///
/// let mut q = TimerQueue::new();
/// q.schedule(SimDuration::from_nanos(500), TimerToken(1));
/// q.schedule(SimDuration::from_nanos(200), TimerToken(2));
/// q.schedule(SimDuration::from_nanos(300), TimerToken(1)); // moves token 1
/// assert_eq!(q.pop_until(SimTime::from_nanos(1_000)), Some(TimerToken(2)));
/// assert_eq!(q.now(), SimTime::from_nanos(200));
/// assert_eq!(q.pop_until(SimTime::from_nanos(1_000)), Some(TimerToken(1)));
/// assert_eq!(q.pop_until(SimTime::from_nanos(1_000)), None);
/// assert_eq!(q.now(), SimTime::from_nanos(1_000));
/// ```
#[derive(Debug, Clone, Default)]
pub struct TimerQueue {
    now: SimTime,
    seq: u64,
    /// Armed tokens: when, and the arming sequence number.
    armed: std::collections::BTreeMap<TimerToken, (SimTime, u64)>,
    /// The same, ordered by expiry.
    order: std::collections::BTreeSet<(SimTime, u64, TimerToken)>,
}

impl TimerQueue {
    /// An empty queue at time zero.
    pub fn new() -> TimerQueue {
        TimerQueue::default()
    }

    /// The earliest armed expiry.
    pub fn next_expiry(&self) -> Option<SimTime> {
        self.order.first().map(|&(t, _, _)| t)
    }

    /// Takes the earliest timer expiring at or before `until`, moving the
    /// clock to its expiry; with none, moves the clock to `until` (never
    /// backwards) and returns `None`.
    pub fn pop_until(&mut self, until: SimTime) -> Option<TimerToken> {
        match self.order.first().copied() {
            Some((t, seq, token)) if t <= until => {
                self.order.remove(&(t, seq, token));
                self.armed.remove(&token);
                self.now = self.now.max(t);
                Some(token)
            }
            _ => {
                self.now = self.now.max(until);
                None
            }
        }
    }

    /// Armed timers.
    pub fn len(&self) -> usize {
        self.armed.len()
    }

    /// Whether no timer is armed.
    pub fn is_empty(&self) -> bool {
        self.armed.is_empty()
    }
}

impl Timers for TimerQueue {
    fn now(&self) -> SimTime {
        self.now
    }

    fn schedule(&mut self, delay: SimDuration, token: TimerToken) {
        self.cancel(token);
        let at = self.now + delay;
        self.seq += 1;
        self.armed.insert(token, (at, self.seq));
        self.order.insert((at, self.seq, token));
    }

    fn cancel(&mut self, token: TimerToken) {
        if let Some((at, seq)) = self.armed.remove(&token) {
            self.order.remove(&(at, seq, token));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_instant_in_arming_order_and_cancel() {
        let mut q = TimerQueue::new();
        for t in [3u64, 1, 2] {
            q.schedule(SimDuration::from_nanos(100), TimerToken(t));
        }
        q.schedule(SimDuration::from_nanos(50), TimerToken(9));
        q.cancel(TimerToken(9));
        q.cancel(TimerToken(77)); // not armed: nothing happens
        assert_eq!(q.len(), 3);
        let fired: Vec<_> = std::iter::from_fn(|| q.pop_until(SimTime::from_nanos(100))).collect();
        assert_eq!(fired, [TimerToken(3), TimerToken(1), TimerToken(2)]);
        assert!(q.is_empty());
        // A delay that would overflow saturates: the timer never fires.
        q.schedule(SimDuration::from_nanos(u64::MAX), TimerToken(5));
        assert_eq!(q.pop_until(SimTime::from_nanos(u64::MAX - 1)), None);
        assert_eq!(q.next_expiry(), Some(SimTime::from_nanos(u64::MAX)));
    }
}

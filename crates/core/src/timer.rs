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

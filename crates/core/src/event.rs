//! The discrete-event scheduler's queue.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::time::{SimDuration, SimTime};

/// Events in virtual-time order: the heart of a discrete-event simulation.
///
/// Events at the same instant come out in the order they were scheduled, so
/// a run is the same on every machine. Time only moves forward: popping an
/// event advances [`EventQueue::now`] to it, and an event scheduled for an
/// instant already past is due now (no time travel).
///
/// ```
/// use iovirt_core::{EventQueue, SimDuration, SimTime};
///
/// let mut q = EventQueue::new();
/// q.schedule_in(SimDuration::from_nanos(500), "frame arrives");
/// q.schedule_in(SimDuration::from_nanos(100), "timer fires");
/// q.schedule_in(SimDuration::from_nanos(100), "interrupt delivered");
/// assert_eq!(q.pop(), Some((SimTime::from_nanos(100), "timer fires")));
/// assert_eq!(q.pop(), Some((SimTime::from_nanos(100), "interrupt delivered")));
/// assert_eq!(q.pop(), Some((SimTime::from_nanos(500), "frame arrives")));
/// assert_eq!(q.now(), SimTime::from_nanos(500));
/// ```
#[derive(Debug, Clone)]
pub struct EventQueue<E> {
    now: SimTime,
    seq: u64,
    heap: BinaryHeap<Pending<E>>,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            now: SimTime::ZERO,
            seq: 0,
            heap: BinaryHeap::new(),
        }
    }
}

#[derive(Debug, Clone)]
struct Pending<E> {
    at: SimTime,
    seq: u64,
    event: E,
}

// The heap is a max-heap: the earliest (time, then scheduling order) must
// compare greatest. The event itself never takes part.
impl<E> Ord for Pending<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl<E> PartialOrd for Pending<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> PartialEq for Pending<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<E> Eq for Pending<E> {}

impl<E> EventQueue<E> {
    /// An empty queue at time zero.
    pub fn new() -> EventQueue<E> {
        EventQueue::default()
    }

    /// The current virtual time: that of the last event popped.
    pub fn now(&self) -> SimTime {
        self.now
    }

    /// Schedules `event` at `at`; an instant already past means now.
    /// Returns when it will happen.
    pub fn schedule_at(&mut self, at: SimTime, event: E) -> SimTime {
        let at = at.max(self.now);
        self.seq += 1;
        self.heap.push(Pending {
            at,
            seq: self.seq,
            event,
        });
        at
    }

    /// Schedules `event` `delay` from now (saturating: a delay past the end
    /// of time is the end of time). Returns when it will happen.
    pub fn schedule_in(&mut self, delay: SimDuration, event: E) -> SimTime {
        self.schedule_at(self.now + delay, event)
    }

    /// The next event, and time moves to it.
    pub fn pop(&mut self) -> Option<(SimTime, E)> {
        let p = self.heap.pop()?;
        self.now = p.at;
        Some((p.at, p.event))
    }

    /// The next event if it is due by `until`; otherwise `None`, and time
    /// moves to `until` (if that is later than now).
    pub fn pop_until(&mut self, until: SimTime) -> Option<(SimTime, E)> {
        if self.heap.peek().is_some_and(|p| p.at <= until) {
            return self.pop();
        }
        self.now = self.now.max(until);
        None
    }

    /// When the next event is due.
    pub fn next_time(&self) -> Option<SimTime> {
        self.heap.peek().map(|p| p.at)
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no event waits.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_past_is_now_and_pop_until_moves_time() {
        let mut q = EventQueue::new();
        q.schedule_at(SimTime::from_nanos(50), 'a');
        assert_eq!(q.pop_until(SimTime::from_nanos(20)), None);
        assert_eq!(q.now(), SimTime::from_nanos(20));
        assert_eq!(
            q.pop_until(SimTime::from_nanos(60)),
            Some((SimTime::from_nanos(50), 'a'))
        );
        assert_eq!(
            q.schedule_at(SimTime::from_nanos(10), 'b'),
            SimTime::from_nanos(50)
        );
        assert_eq!(q.next_time(), Some(SimTime::from_nanos(50)));
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop(), Some((SimTime::from_nanos(50), 'b')));
        assert!(q.is_empty());
        assert_eq!(q.pop(), None);
        // Time never goes back, even when asked to.
        assert_eq!(q.pop_until(SimTime::from_nanos(5)), None);
        assert_eq!(q.now(), SimTime::from_nanos(50));
    }

    proptest! {
        /// Against a sort: events come out by time, ties in scheduling
        /// order, and time never decreases.
        #[test]
        fn events_come_out_sorted_and_stable(times in proptest::collection::vec(0u64..50, 0..200)) {
            let mut q = EventQueue::new();
            for (i, &t) in times.iter().enumerate() {
                q.schedule_at(SimTime::from_nanos(t), i);
            }
            let mut want: Vec<(u64, usize)> = times.iter().copied().zip(0..).collect();
            want.sort();
            let mut last = SimTime::ZERO;
            for (t, i) in want {
                let (at, e) = q.pop().unwrap();
                prop_assert_eq!((at, e), (SimTime::from_nanos(t), i));
                prop_assert!(at >= last);
                last = at;
            }
            prop_assert!(q.pop().is_none());
        }
    }
}

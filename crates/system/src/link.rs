//! A link between two NICs: one direction of an Ethernet cable, with a
//! latency, a bandwidth and a bounded transmit queue, in virtual time.

use std::collections::VecDeque;

use iovirt_core::{CostModel, Counter, ETHERNET_WIRE_OVERHEAD, SimDuration, SimTime};
use serde::{Deserialize, Serialize};

/// FCS bytes a frame carries on the wire but not in memory.
const FCS: u64 = 4;

/// What a link is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkConfig {
    /// One-way propagation delay, ns.
    pub latency_ns: u64,
    /// Bandwidth, bits per second (not 0).
    pub bits_per_sec: u64,
    /// Frames that may be on the link or waiting to go at once; more are
    /// dropped, as a full transmit FIFO drops.
    pub queue_frames: usize,
}

impl LinkConfig {
    /// The cost model's wire, with a queue of `queue_frames`.
    pub fn from_cost(cost: &CostModel, queue_frames: usize) -> LinkConfig {
        LinkConfig {
            latency_ns: cost.wire_latency_ns,
            bits_per_sec: cost.wire_bits_per_sec,
            queue_frames,
        }
    }

    /// Time to put a frame of `len` bytes (without FCS) on the wire: FCS,
    /// preamble and inter-frame gap included.
    pub fn serialization(&self, len: usize) -> SimDuration {
        let bits = (len as u64 + FCS + ETHERNET_WIRE_OVERHEAD) * 8;
        let bps = self.bits_per_sec.max(1);
        // In u64 when the product fits (any real frame); u128 otherwise.
        let ns = match bits.checked_mul(1_000_000_000) {
            Some(product) => product.div_ceil(bps),
            None => {
                let ns = (u128::from(bits) * 1_000_000_000).div_ceil(u128::from(bps));
                u64::try_from(ns).unwrap_or(u64::MAX)
            }
        };
        SimDuration::from_nanos(ns)
    }
}

/// What a link carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LinkStats {
    /// Frames put on the link.
    pub frames: Counter,
    /// Their bytes (without FCS).
    pub bytes: Counter,
    /// Frames dropped because the queue was full.
    pub dropped: Counter,
    /// Virtual time the link spent sending, ns.
    pub busy_ns: Counter,
}

/// One direction of a cable. Frames leave in order, each after the one
/// before has been serialised, and arrive one latency later. Frame buffers
/// are recycled: once warm, sending allocates nothing.
#[derive(Debug, Clone)]
pub struct Link {
    config: LinkConfig,
    /// When the link is free to start the next frame.
    free_at: SimTime,
    flight: VecDeque<(SimTime, Vec<u8>)>,
    spare: Vec<Vec<u8>>,
    /// The last frame length sent and its serialisation time: frames of
    /// one length tend to follow each other, and the division is costly.
    last_busy: Option<(usize, SimDuration)>,
    stats: LinkStats,
}

impl Link {
    /// An idle link.
    pub fn new(config: LinkConfig) -> Link {
        Link {
            config,
            free_at: SimTime::ZERO,
            flight: VecDeque::new(),
            spare: Vec::new(),
            last_busy: None,
            stats: LinkStats::default(),
        }
    }

    /// Sends `frame` at `now`: it starts when the link is free and arrives
    /// after its serialisation and the latency. `None` if the queue is full
    /// (the frame is dropped and counted).
    pub fn send(&mut self, now: SimTime, frame: &[u8]) -> Option<SimTime> {
        if self.flight.len() >= self.config.queue_frames {
            self.stats.dropped.inc();
            return None;
        }
        let start = now.max(self.free_at);
        let busy = match self.last_busy {
            Some((len, busy)) if len == frame.len() => busy,
            _ => {
                let busy = self.config.serialization(frame.len());
                self.last_busy = Some((frame.len(), busy));
                busy
            }
        };
        self.free_at = start + busy;
        let arrival = self.free_at + SimDuration::from_nanos(self.config.latency_ns);
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(frame);
        self.flight.push_back((arrival, buf));
        self.stats.frames.inc();
        self.stats.bytes.add(frame.len() as u64);
        self.stats.busy_ns.add(busy.as_nanos());
        Some(arrival)
    }

    /// When the next frame arrives.
    pub fn next_arrival(&self) -> Option<SimTime> {
        self.flight.front().map(|&(t, _)| t)
    }

    /// Hands every frame that has arrived by `until` to `deliver`, with its
    /// arrival time, oldest first.
    pub fn deliver_until(&mut self, until: SimTime, mut deliver: impl FnMut(SimTime, &[u8])) {
        while self.next_arrival().is_some_and(|t| t <= until) {
            if let Some((t, buf)) = self.flight.pop_front() {
                deliver(t, &buf);
                self.spare.push(buf);
            }
        }
    }

    /// Frames on the link or waiting to go.
    pub fn in_flight(&self) -> usize {
        self.flight.len()
    }

    /// What it is made of.
    pub fn config(&self) -> LinkConfig {
        self.config
    }

    /// What it carried.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ten_gig(queue_frames: usize) -> Link {
        Link::new(LinkConfig {
            latency_ns: 500,
            bits_per_sec: 10_000_000_000,
            queue_frames,
        })
    }

    #[test]
    fn frames_queue_behind_each_other_and_arrive_one_latency_later() {
        let mut l = ten_gig(8);
        // 64 B + FCS + 20 B of preamble and gap = 704 bits = 70.4 ns -> 71.
        let t0 = SimTime::ZERO;
        assert_eq!(l.send(t0, &[1; 64]), Some(SimTime::from_nanos(71 + 500)));
        assert_eq!(l.send(t0, &[2; 64]), Some(SimTime::from_nanos(142 + 500)));
        // After an idle gap the link starts at once.
        let later = SimTime::from_nanos(10_000);
        assert_eq!(l.send(later, &[3; 64]), Some(SimTime::from_nanos(10_571)));
        let mut got = Vec::new();
        l.deliver_until(SimTime::from_nanos(642), |t, f| {
            got.push((t.as_nanos(), f[0]))
        });
        assert_eq!(got, [(571, 1), (642, 2)]);
        assert_eq!(l.in_flight(), 1);
        assert_eq!(l.stats().busy_ns.get(), 3 * 71);
        assert_eq!(l.stats().bytes.get(), 192);
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let mut l = ten_gig(2);
        assert!(l.send(SimTime::ZERO, &[0; 100]).is_some());
        assert!(l.send(SimTime::ZERO, &[0; 100]).is_some());
        assert_eq!(l.send(SimTime::ZERO, &[0; 100]), None);
        assert_eq!((l.stats().frames.get(), l.stats().dropped.get()), (2, 1));
        l.deliver_until(SimTime::from_nanos(u64::MAX), |_, _| {});
        assert!(l.send(SimTime::ZERO, &[0; 100]).is_some(), "room again");
    }
}

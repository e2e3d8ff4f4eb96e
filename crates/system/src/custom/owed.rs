//! The frames the flows owe each destination on the event loop, matched as
//! they arrive: delivered, corrupted, or lost, and how long they took.

use std::collections::VecDeque;

use iovirt_core::SimTime;

use super::FlowRow;

/// Frames one sender owes one destination, in order, each with its flow
/// and when it was sent.
type Queue = VecDeque<(usize, Vec<u8>, SimTime)>;

/// Frames owed to each destination (the VMs, then the wire), a queue per
/// sender (the VMs, then the peer).
pub(super) struct Owed {
    /// The VMs' MAC addresses, by index: a frame's sender is found by its
    /// source address.
    macs: Vec<[u8; 6]>,
    queues: Vec<Vec<Queue>>,
    /// Per flow: frames timed, and the sum and maximum of their latency, ns.
    latency: Vec<(u64, u64, u64)>,
    /// Frames that arrived where no flow sent any.
    pub(super) unexpected: u64,
}

impl Owed {
    /// Nothing owed yet to the VMs of `macs` and the wire, for `flows`
    /// flows.
    pub(super) fn new(macs: Vec<[u8; 6]>, flows: usize) -> Owed {
        let ends = macs.len() + 1;
        Owed {
            macs,
            queues: vec![vec![VecDeque::new(); ends]; ends],
            latency: vec![(0, 0, 0); flows],
            unexpected: 0,
        }
    }

    /// The sender of `f`, by its source address (the peer if no VM's).
    fn sender(&self, f: &[u8]) -> usize {
        self.macs
            .iter()
            .position(|m| f.get(6..12) == Some(&m[..]))
            .unwrap_or(self.macs.len())
    }

    /// `from` sent `f` of `flow` to `dest` at `at`; `false` if either end
    /// does not exist.
    pub(super) fn owe(
        &mut self,
        dest: usize,
        from: usize,
        flow: usize,
        f: Vec<u8>,
        at: SimTime,
    ) -> bool {
        match self.queues.get_mut(dest).and_then(|d| d.get_mut(from)) {
            Some(q) => {
                q.push_back((flow, f, at));
                true
            }
            None => false,
        }
    }

    /// `got` reached `dest` at `at`: it is delivered for its flow, and the
    /// frames its sender sent there before it were lost. A frame matching
    /// none its sender owes there stands for the oldest, corrupted.
    pub(super) fn arrived(&mut self, dest: usize, got: &[u8], at: SimTime, rows: &mut [FlowRow]) {
        let from = self.sender(got);
        let Some(q) = self.queues.get_mut(dest).and_then(|d| d.get_mut(from)) else {
            self.unexpected += 1;
            return;
        };
        let Some(i) = q.iter().position(|(_, f, _)| f == got) else {
            match q.pop_front() {
                Some((k, _, _)) => {
                    if let Some(row) = rows.get_mut(k) {
                        row.corrupted += 1;
                    }
                }
                None => self.unexpected += 1,
            }
            return;
        };
        for (n, (k, _, sent)) in q.drain(..=i).enumerate() {
            let Some(row) = rows.get_mut(k) else {
                continue;
            };
            if n < i {
                row.lost += 1;
                continue;
            }
            row.delivered += 1;
            if let Some((timed, sum, max)) = self.latency.get_mut(k) {
                let ns = (at - sent).as_nanos();
                *timed += 1;
                *sum = sum.saturating_add(ns);
                *max = (*max).max(ns);
            }
        }
    }

    /// Whatever is still owed was lost.
    pub(super) fn settle(&mut self, rows: &mut [FlowRow]) {
        for q in self.queues.iter_mut().flatten() {
            for (k, _, _) in q.drain(..) {
                if let Some(row) = rows.get_mut(k) {
                    row.lost += 1;
                }
            }
        }
    }

    /// Puts each flow's latency (mean and maximum over its delivered
    /// frames, 0 if none) in its row.
    pub(super) fn time(&self, rows: &mut [FlowRow]) {
        for (row, &(timed, sum, max)) in rows.iter_mut().zip(&self.latency) {
            row.latency_ns_mean = Some(if timed == 0 {
                0.0
            } else {
                sum as f64 / timed as f64
            });
            row.latency_ns_max = Some(max);
        }
    }
}

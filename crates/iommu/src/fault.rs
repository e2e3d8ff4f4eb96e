//! Fault recording: a fixed number of fault-recording registers, an overflow
//! flag, and a fault event (interrupt) when the first unserviced fault is
//! recorded, as in Intel VT-d's primary fault logging.

use std::collections::VecDeque;

use iovirt_core::{AccessKind, FaultReason};
use iovirt_paging::{Level, WalkFault};
use serde::Serialize;

use crate::ids::{Pasid, RequesterId};

/// Which translation stage found a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Stage {
    /// The first stage: a process's tables (PASID), VA → GPA.
    First,
    /// The second stage: a domain's tables, IOVA/GPA → HPA.
    Second,
}

/// One recorded fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FaultRecord {
    /// Who made the request.
    pub requester: RequesterId,
    /// The PASID the request carried.
    pub pasid: Option<Pasid>,
    /// The faulting input address (IOVA, or process VA with a PASID).
    pub addr: u64,
    /// What the request tried to do.
    pub access: AccessKind,
    /// The reason, in VT-d's terms.
    pub reason: FaultReason,
    /// The stage whose walk found the fault, if a walk did.
    pub stage: Option<Stage>,
    /// The walker's own account, if a walk found the fault.
    pub walk: Option<WalkFault>,
}

impl FaultRecord {
    /// The table level the fault was found at, if any.
    pub fn level(&self) -> Option<Level> {
        self.walk.and_then(|w| w.level())
    }
}

/// The fault-recording registers.
#[derive(Debug, Clone)]
pub struct FaultLog {
    capacity: usize,
    records: VecDeque<FaultRecord>,
    overflow: bool,
    dropped: u64,
}

impl FaultLog {
    /// `capacity` recording registers (VT-d allows 1 to 256).
    pub fn new(capacity: usize) -> FaultLog {
        let capacity = capacity.clamp(1, 256);
        FaultLog {
            capacity,
            records: VecDeque::with_capacity(capacity),
            overflow: false,
            dropped: 0,
        }
    }

    /// Records `record`. Returns whether this fault should raise a fault
    /// event: the log had no unserviced fault before it. When every register
    /// is full, the record is dropped and the overflow flag set.
    pub(crate) fn record(&mut self, record: FaultRecord) -> bool {
        if self.records.len() >= self.capacity {
            if !self.overflow {
                log::warn!("IOMMU fault log overflow: dropping {record:?}");
            }
            self.overflow = true;
            self.dropped += 1;
            return false;
        }
        let first = self.records.is_empty();
        self.records.push_back(record);
        first
    }

    /// The unserviced records, oldest first.
    pub fn records(&self) -> impl Iterator<Item = &FaultRecord> + '_ {
        self.records.iter()
    }

    /// Services (removes) the oldest record.
    pub fn pop(&mut self) -> Option<FaultRecord> {
        self.records.pop_front()
    }

    /// Whether a fault was dropped because every register was full.
    pub fn overflow(&self) -> bool {
        self.overflow
    }

    /// Clears the overflow flag (software writes 1 to PFO).
    pub fn clear_overflow(&mut self) {
        self.overflow = false;
    }

    /// Faults dropped on overflow since creation.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Number of unserviced records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record is pending.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(addr: u64) -> FaultRecord {
        FaultRecord {
            requester: RequesterId::from_raw(8),
            pasid: None,
            addr,
            access: AccessKind::Write,
            reason: FaultReason::NotPresent,
            stage: Some(Stage::Second),
            walk: Some(WalkFault::NotPresent { level: Level::Pt }),
        }
    }

    #[test]
    fn event_on_first_pending_and_overflow() {
        let mut log = FaultLog::new(2);
        assert!(log.record(rec(1)));
        assert!(!log.record(rec(2))); // one is already pending: no second event
        assert!(!log.record(rec(3))); // full: dropped
        assert!(log.overflow());
        assert_eq!(log.dropped(), 1);
        assert_eq!(log.records().map(|r| r.addr).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(log.pop().map(|r| r.level()), Some(Some(Level::Pt)));
        assert_eq!(log.pop().map(|r| r.addr), Some(2));
        assert!(log.is_empty());
        assert!(log.record(rec(4))); // empty again: a new event
        log.clear_overflow();
        assert!(!log.overflow());
        assert_eq!(FaultLog::new(0).capacity, 1);
    }
}

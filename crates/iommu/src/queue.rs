//! Queued invalidation: descriptors processed in order, with a wait
//! descriptor that writes a status word to memory when everything before it
//! is done (Intel VT-d's invalidation queue, at the level of descriptors).

use std::collections::VecDeque;

use iovirt_core::{Hpa, PhysMemory};
use serde::{Deserialize, Serialize};

use crate::iommu::{Invalidation, Iommu};

/// One descriptor of the invalidation queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueuedInvalidation {
    /// An invalidation.
    Invalidate(Invalidation),
    /// Writes `status` (little-endian u32) at `status_addr` once every
    /// earlier descriptor has been processed.
    Wait {
        /// Where the status word goes.
        status_addr: Hpa,
        /// The status word.
        status: u32,
    },
}

/// What stopped the invalidation queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// Every slot is taken; process the queue first.
    #[error("invalidation queue full ({capacity} descriptors)")]
    Full {
        /// Slots in the queue.
        capacity: usize,
    },
    /// A wait descriptor's status write failed: the queue stopped at it (IQE).
    #[error("wait descriptor status write at {addr} failed; queue halted")]
    WaitWriteFailed {
        /// The status address.
        addr: Hpa,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct InvalidationQueue {
    capacity: usize,
    pending: VecDeque<QueuedInvalidation>,
    error: Option<QueueError>,
}

impl InvalidationQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        InvalidationQueue {
            capacity,
            pending: VecDeque::with_capacity(capacity.min(4096)),
            error: None,
        }
    }
}

impl Iommu {
    /// Appends a descriptor to the invalidation queue.
    pub fn submit(&mut self, desc: QueuedInvalidation) -> Result<(), QueueError> {
        let q = &mut self.queue;
        if q.pending.len() >= q.capacity {
            return Err(QueueError::Full {
                capacity: q.capacity,
            });
        }
        q.pending.push_back(desc);
        Ok(())
    }

    /// Processes queued descriptors in order until the queue is empty or a
    /// wait descriptor's write fails (the queue then halts at that
    /// descriptor, as with VT-d's invalidation queue error). Returns how many
    /// descriptors were processed.
    pub fn process_queue<M: PhysMemory<Hpa> + ?Sized>(
        &mut self,
        mem: &mut M,
    ) -> Result<usize, QueueError> {
        if let Some(e) = self.queue.error {
            return Err(e);
        }
        let mut done = 0;
        while let Some(desc) = self.queue.pending.front().copied() {
            match desc {
                QueuedInvalidation::Invalidate(inv) => {
                    self.invalidate(inv);
                }
                QueuedInvalidation::Wait {
                    status_addr,
                    status,
                } => {
                    if mem.write_u32(status_addr, status).is_err() {
                        log::warn!(
                            "invalidation wait descriptor: status write at {status_addr} failed"
                        );
                        let e = QueueError::WaitWriteFailed { addr: status_addr };
                        self.queue.error = Some(e);
                        return Err(e);
                    }
                    self.stats.invalidations.wait.inc();
                }
            }
            self.queue.pending.pop_front();
            done += 1;
        }
        Ok(done)
    }

    /// The error that halted the queue, if any.
    pub fn queue_error(&self) -> Option<QueueError> {
        self.queue.error
    }

    /// Clears a queue error, discarding the descriptor that caused it.
    pub fn clear_queue_error(&mut self) {
        if self.queue.error.take().is_some() {
            self.queue.pending.pop_front();
        }
    }

    /// Descriptors waiting to be processed.
    pub fn queued(&self) -> usize {
        self.queue.pending.len()
    }
}

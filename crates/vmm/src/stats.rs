//! The host MMU's counters.

use iovirt_core::Counter;
use serde::Serialize;

/// What the host MMU did, for a researcher's report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct VmmStats {
    /// First touches of a page: a zeroed frame mapped, nothing read.
    pub minor_faults: Counter,
    /// Touches of a swapped page: a frame filled from the store.
    pub major_faults: Counter,
    /// Pages whose contents went to the store.
    pub swap_outs: Counter,
    /// Swap-outs forced by a shortage of frames (the rest were asked for).
    pub evictions: Counter,
    /// Bytes copied into the store.
    pub bytes_swapped_out: Counter,
    /// Bytes copied back from the store.
    pub bytes_swapped_in: Counter,
    /// IOTLB invalidations sent because a stage-2 entry was cleared.
    pub invalidations: Counter,
    /// Device DMA faults the host serviced by bringing the page in.
    pub dma_faults_serviced: Counter,
    /// Device DMA faults outside the VM's memory, dropped by the handler.
    pub dma_faults_refused: Counter,
    /// Frames zeroed before changing hands (swap-out, lending, recycling).
    pub frames_zeroed: Counter,
    /// Guest pages given to a page-flip buffer pool (seed 002).
    pub pages_lent: Counter,
    /// Pool frames mapped in as guest pages: the remaps of page flipping.
    pub frames_adopted: Counter,
    /// Pages mapped into another VM (seed 003's crossover).
    pub pages_shared: Counter,
    /// Shared pages the destination wrote to, given a private copy first.
    pub shares_copied_on_write: Counter,
}

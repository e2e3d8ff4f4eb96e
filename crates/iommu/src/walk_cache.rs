//! The paging-structure cache for second-stage walks: remembers, per 2 MiB
//! of input space, the page table a walk reached through a non-leaf PDE and
//! the rights accumulated above it, so a walk after an IOTLB miss reads one
//! entry instead of three to five (a "PDE cache").

use iovirt_core::{Counter, Stats};
use iovirt_paging::WalkStart;
use serde::Serialize;

/// Walk-cache counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WalkCacheStats {
    /// Walks that resumed from a cached page table.
    pub hits: Counter,
    /// Walks that started from the root.
    pub misses: Counter,
    /// Entries removed by invalidation.
    pub invalidated: Counter,
}

impl Stats for WalkCacheStats {}

#[derive(Debug, Clone, Copy)]
struct Entry {
    space: u32,
    /// Input address >> 21.
    region: u64,
    start: WalkStart,
    stamp: u64,
}

/// A fully associative, LRU cache of [`WalkStart`]s.
#[derive(Debug, Clone)]
pub struct WalkCache {
    capacity: usize,
    entries: Vec<Entry>,
    tick: u64,
    stats: WalkCacheStats,
}

impl WalkCache {
    /// A cache of `capacity` entries (0 disables it).
    pub fn new(capacity: usize) -> WalkCache {
        WalkCache {
            capacity,
            entries: Vec::with_capacity(capacity),
            tick: 0,
            stats: WalkCacheStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> &WalkCacheStats {
        &self.stats
    }

    /// Sets the counters to zero.
    pub(crate) fn reset_stats(&mut self) {
        self.stats.reset();
    }

    /// Where a walk of `addr` in `space` can start, if cached.
    pub(crate) fn lookup(&mut self, space: u32, addr: u64) -> Option<WalkStart> {
        if self.capacity == 0 {
            return None;
        }
        self.tick += 1;
        let region = addr >> 21;
        match self
            .entries
            .iter_mut()
            .find(|e| e.space == space && e.region == region)
        {
            Some(e) => {
                e.stamp = self.tick;
                self.stats.hits.inc();
                Some(e.start)
            }
            None => {
                self.stats.misses.inc();
                None
            }
        }
    }

    /// Remembers `start` for the 2 MiB region of `addr`.
    pub(crate) fn insert(&mut self, space: u32, addr: u64, start: WalkStart) {
        if self.capacity == 0 {
            return;
        }
        self.tick += 1;
        let entry = Entry {
            space,
            region: addr >> 21,
            start,
            stamp: self.tick,
        };
        if let Some(e) = self
            .entries
            .iter_mut()
            .find(|e| e.space == space && e.region == entry.region)
        {
            *e = entry;
        } else if self.entries.len() < self.capacity {
            self.entries.push(entry);
        } else if let Some(lru) = self.entries.iter_mut().min_by_key(|e| e.stamp) {
            *lru = entry;
        }
    }

    /// Forgets every entry of `space` (or all, for `None`).
    pub(crate) fn invalidate(&mut self, space: Option<u32>) {
        let before = self.entries.len();
        self.entries.retain(|e| space.is_some_and(|s| s != e.space));
        self.stats
            .invalidated
            .add((before - self.entries.len()) as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iovirt_paging::Level;

    fn start(table: u64) -> WalkStart {
        WalkStart {
            table,
            level: Level::Pt,
            and_bits: 6,
            or_bits: 0,
        }
    }

    #[test]
    fn lru_per_two_mib_region() {
        let mut c = WalkCache::new(2);
        c.insert(1, 0x20_0000, start(0x1000));
        c.insert(1, 0x40_0000, start(0x2000));
        assert_eq!(c.lookup(1, 0x21_2345).map(|s| s.table), Some(0x1000));
        assert_eq!(c.lookup(2, 0x21_2345), None);
        c.insert(1, 0x60_0000, start(0x3000)); // evicts 0x40_0000, the least recent
        assert_eq!(c.lookup(1, 0x40_0000), None);
        assert!(c.lookup(1, 0x20_0000).is_some());
        assert_eq!((c.stats().hits.get(), c.stats().misses.get()), (2, 2));
        c.invalidate(Some(1));
        assert_eq!(c.lookup(1, 0x20_0000), None);
        assert_eq!(c.stats().invalidated.get(), 2);
        let mut off = WalkCache::new(0);
        off.insert(1, 0, start(0x1000));
        assert_eq!(off.lookup(1, 0), None);
    }
}

//! The IOTLB: a set-associative cache of translations.
//!
//! Entries are tagged with the address space (a domain, or a GVMI), the PASID
//! (or none), the page number and the page size, so one huge page takes one
//! entry. A lookup checks the entry of the last hit, then the entry a way
//! predictor names for the 4 KiB page, then probes the 4 KiB set, then the
//! 2 MiB and 1 GiB sets only when entries of those sizes exist; the
//! predictor only skips work, never changes which entry hits. Faults are
//! never cached.

use iovirt_core::{Counter, PageSize, Perms, Stats};
use serde::{Deserialize, Serialize};

/// Which entry of a full set is evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Replacement {
    /// Least recently used (a hit refreshes the entry).
    Lru,
    /// First in, first out (a hit does not refresh).
    Fifo,
}

/// IOTLB geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IotlbConfig {
    /// Total entries; 0 disables the IOTLB (every access walks).
    pub entries: usize,
    /// Entries per set: 1 is direct-mapped, `entries` (or 0) fully
    /// associative. `entries / ways` must be a power of two.
    pub ways: usize,
    /// Replacement policy within a set.
    pub replacement: Replacement,
}

impl Default for IotlbConfig {
    /// 64 entries, 4-way, LRU: the order of an IOMMU's per-unit IOTLB.
    fn default() -> Self {
        IotlbConfig {
            entries: 64,
            ways: 4,
            replacement: Replacement::Lru,
        }
    }
}

/// An [`IotlbConfig`] that no hardware could have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("IOTLB of {entries} entries in {ways}-way sets: the number of sets must be a power of two")]
pub struct BadIotlbConfig {
    /// Entries asked for.
    pub entries: usize,
    /// Ways asked for.
    pub ways: usize,
}

/// IOTLB counters (hits and misses are counted by the IOMMU, which knows
/// when a hit is refused for permissions and walks again).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IotlbStats {
    /// Entries written after a walk (demand or prefetch).
    pub fills: Counter,
    /// Valid entries replaced to make room.
    pub evictions: Counter,
    /// Entries written by a prefetch.
    pub prefetch_fills: Counter,
    /// Prefetched entries hit by a demand access before leaving the IOTLB.
    pub prefetch_used: Counter,
    /// Prefetched entries evicted or invalidated without a demand hit.
    pub prefetch_wasted: Counter,
    /// Entries removed by invalidation.
    pub invalidated: Counter,
}

impl Stats for IotlbStats {}

/// Marks "no PASID" in a tag.
pub(crate) const NO_PASID: u32 = u32::MAX;

/// What an entry translates: an address space, a PASID, a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tag {
    /// Domain id, or `GVMI_SPACE | gvmi`.
    pub space: u32,
    /// PASID, or [`NO_PASID`].
    pub pasid: u32,
}

/// Tag spaces of GVMI-keyed translations, kept apart from domain ids.
pub(crate) const GVMI_SPACE: u32 = 1 << 16;

/// One entry, packed into four words so a 4-way set spans two cache lines
/// and a way is matched with two compares.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Input page number << 2 | size index.
    key: u64,
    /// `VALID | space << 32 | pasid`; 0 when the entry is invalid.
    tag: u64,
    /// Output page base | permission bits (0-3) | `PREFETCHED` | `USED`.
    out: u64,
    /// LRU: last use; FIFO: fill time.
    stamp: u64,
}

const VALID: u64 = 1 << 63;
const PERMS_MASK: u64 = 0xf;
const PREFETCHED: u64 = 1 << 4;
const USED: u64 = 1 << 5;

const EMPTY: Entry = Entry {
    key: 0,
    tag: 0,
    out: 0,
    stamp: 0,
};

/// A [`Tag`] in the form entries hold it, with the way predictor's salt
/// for it: a DMA port packs its tag once and looks many addresses up
/// under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PackedTag {
    packed: u64,
    salt: u64,
}

impl Tag {
    fn packed(self) -> u64 {
        VALID | (u64::from(self.space) << 32) | u64::from(self.pasid)
    }

    /// The tag packed for lookups.
    #[inline(always)]
    pub(crate) fn pack(self) -> PackedTag {
        let packed = self.packed();
        PackedTag {
            packed,
            salt: packed ^ ((packed >> 32) << 7),
        }
    }

    fn unpack(packed: u64) -> Tag {
        Tag {
            space: ((packed >> 32) & 0x7fff_ffff) as u32,
            pasid: packed as u32,
        }
    }
}

fn page_key(vpn: u64, size: PageSize) -> u64 {
    (vpn << 2) | size_index(size) as u64
}

impl Entry {
    fn valid(&self) -> bool {
        self.tag & VALID != 0
    }

    fn size(&self) -> PageSize {
        match self.key & 3 {
            0 => PageSize::Size4K,
            1 => PageSize::Size2M,
            _ => PageSize::Size1G,
        }
    }

    /// log2 of the page size: 12, 21 or 30 (the size index is 0, 1 or 2).
    #[inline(always)]
    fn shift(&self) -> u32 {
        12 + 9 * (self.key & 3) as u32
    }

    /// The offset bits of the page, `(1 << shift) - 1`, as a match the
    /// compiler turns into a table load rather than a shift per hit.
    #[inline(always)]
    fn offset_mask(&self) -> u64 {
        match self.key & 3 {
            0 => (1 << 12) - 1,
            1 => (1 << 21) - 1,
            2 => (1 << 30) - 1,
            _ => (1 << 39) - 1,
        }
    }

    /// First input address of the page.
    fn base(&self) -> u64 {
        (self.key >> 2) << self.shift()
    }

    fn perms(&self) -> Perms {
        Perms::from_bits_truncate((self.out & PERMS_MASK) as u8)
    }

    fn flag(&self, bit: u64) -> bool {
        self.out & bit != 0
    }
}

/// A cached translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hit {
    /// Output address of the looked-up byte.
    pub out: u64,
    /// Size of the page.
    pub size: PageSize,
    /// Permissions of the cached translation.
    pub perms: Perms,
}

/// The IOTLB.
#[derive(Debug, Clone)]
pub struct Iotlb {
    config: IotlbConfig,
    ways: usize,
    set_mask: u64,
    entries: Vec<Entry>,
    tick: u64,
    /// Valid entries per size, so lookups skip sizes that are absent.
    by_size: [usize; 3],
    /// Index of the entry the last lookup hit: checked first, since a DMA
    /// burst hits one page many times. Only a hint: the entry is re-checked
    /// (valid, same tag, covers the address) before it is used.
    last_hit: usize,
    /// Way predictor: for a hash of tag and 4 KiB page, the entry that
    /// last held that page, so a hit on a page other than the last one
    /// skips the set probe. Only a hint, re-checked like `last_hit`.
    hints: [u32; HINTS],
    stats: IotlbStats,
}

/// Slots of the way predictor (a power of two).
const HINTS: usize = 256;

/// The way predictor's slot for a 4 KiB page under a packed tag. The
/// space is shifted above the page bits that vary within a guest's rings
/// and buffers, so two domains' identical IOVAs land apart.
#[inline(always)]
fn hint_slot(tag: PackedTag, vpn: u64) -> usize {
    ((vpn ^ tag.salt) as usize) & (HINTS - 1)
}

/// Accounts a hit on entry `e` (LRU stamp at `tick`, prefetch use for a
/// demand access) and returns it.
#[inline(always)]
fn touch(e: &mut Entry, tick: u64, lru: bool, demand: bool, stats: &mut IotlbStats) -> Entry {
    if lru {
        e.stamp = tick;
    }
    if demand && e.out & USED == 0 {
        e.out |= USED;
        if e.out & PREFETCHED != 0 {
            stats.prefetch_used.inc();
        }
    }
    *e
}

fn size_index(size: PageSize) -> usize {
    match size {
        PageSize::Size4K => 0,
        PageSize::Size2M => 1,
        PageSize::Size1G => 2,
    }
}

impl Iotlb {
    /// An empty IOTLB of the given geometry.
    pub fn new(config: IotlbConfig) -> Result<Iotlb, BadIotlbConfig> {
        let ways = if config.ways == 0 {
            config.entries
        } else {
            config.ways.min(config.entries)
        };
        let sets = config.entries.checked_div(ways).unwrap_or(0);
        let bad = BadIotlbConfig {
            entries: config.entries,
            ways: config.ways,
        };
        if config.entries != 0 && (sets * ways != config.entries || !sets.is_power_of_two()) {
            return Err(bad);
        }
        Ok(Iotlb {
            config,
            ways,
            set_mask: (sets as u64).saturating_sub(1),
            entries: vec![EMPTY; config.entries],
            tick: 0,
            by_size: [0; 3],
            last_hit: 0,
            hints: [0; HINTS],
            stats: IotlbStats::default(),
        })
    }

    /// The geometry.
    pub fn config(&self) -> &IotlbConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> &IotlbStats {
        &self.stats
    }

    /// Sets the counters to zero.
    pub(crate) fn reset_stats(&mut self) {
        self.stats.reset();
    }

    /// Valid entries.
    pub fn occupancy(&self) -> usize {
        self.by_size.iter().sum()
    }

    fn set_range(&self, vpn: u64, size: PageSize) -> core::ops::Range<usize> {
        // Mix the size in so 4 KiB and huge pages of the same number spread.
        let set = ((vpn ^ (size_index(size) as u64).wrapping_mul(0x9e37)) & self.set_mask) as usize;
        let first = set * self.ways;
        first..first + self.ways
    }

    /// Looks `addr` up. A demand lookup (not a prefetch's check) marks a
    /// prefetched entry as used.
    #[inline(always)]
    pub(crate) fn lookup(&mut self, tag: Tag, addr: u64, demand: bool) -> Option<Hit> {
        self.tick += 1;
        let e = self.find(tag.pack(), addr, demand)?;
        let mask = (1u64 << e.shift()) - 1;
        Some(Hit {
            out: (e.out & !mask) | (addr & mask),
            size: e.size(),
            perms: e.perms(),
        })
    }

    /// A demand [`Iotlb::lookup`] (the same entry, the same LRU and
    /// prefetch accounting) for the DMA fast path: the output address of
    /// `addr`, the bytes from it to the end of its page, and the
    /// permissions, all from the entry's size bits without a `PageSize`.
    #[inline(always)]
    pub(crate) fn lookup_room(&mut self, tag: PackedTag, addr: u64) -> Option<(u64, u64, Perms)> {
        self.tick += 1;
        let e = self.find(tag, addr, true)?;
        let mask = e.offset_mask();
        let offset = addr & mask;
        Some(((e.out & !mask) | offset, mask - offset + 1, e.perms()))
    }

    /// The entry translating `addr` under the packed tag, its hit
    /// accounted (`touch`): the last hit's if it still covers it, else
    /// the first match probing 4 KiB, 2 MiB, then 1 GiB sets. A hinted
    /// entry is accounted where it was checked, without indexing again.
    #[inline(always)]
    fn find(&mut self, tag: PackedTag, addr: u64, demand: bool) -> Option<Entry> {
        let packed = tag.packed;
        let tick = self.tick;
        let lru = self.config.replacement == Replacement::Lru;
        let vpn = addr >> PageSize::Size4K.shift();
        let key = page_key(vpn, PageSize::Size4K);
        // A 4 KiB entry covers `addr` exactly when its key is `key`; only a
        // huge entry (size bits set) needs its own shift worked out.
        if let Some(e) = self.entries.get_mut(self.last_hit)
            && e.tag == packed
            && (e.key == key || (e.key & 3 != 0 && e.key >> 2 == addr >> e.shift()))
        {
            return Some(touch(e, tick, lru, demand, &mut self.stats));
        }
        // A 4 KiB entry for the page is what the probe below would find
        // first: its set holds at most one entry per tag and page.
        let slot = hint_slot(tag, vpn);
        if let Some(&hint) = self.hints.get(slot)
            && let Some(e) = self.entries.get_mut(hint as usize)
            && e.tag == packed
            && e.key == key
        {
            self.last_hit = hint as usize;
            return Some(touch(e, tick, lru, demand, &mut self.stats));
        }
        let i = self.probe(packed, addr, slot)?;
        let e = self.entries.get_mut(i)?;
        Some(touch(e, tick, lru, demand, &mut self.stats))
    }

    /// [`Iotlb::find`] past its two hints: probes the 4 KiB, 2 MiB, then
    /// 1 GiB sets, and points the way predictor's `slot` at a 4 KiB hit.
    /// Out of line so the hinted path stays small enough to inline into
    /// the DMA fast path.
    #[inline(never)]
    fn probe(&mut self, packed: u64, addr: u64, slot: usize) -> Option<usize> {
        for size in PageSize::ALL {
            if self.by_size.get(size_index(size)).copied().unwrap_or(0) == 0 {
                continue;
            }
            let vpn = addr >> size.shift();
            let key = page_key(vpn, size);
            let range = self.set_range(vpn, size);
            let first = range.start;
            let Some(set) = self.entries.get(range) else {
                continue;
            };
            if let Some(way) = set.iter().position(|e| e.key == key && e.tag == packed) {
                self.last_hit = first + way;
                if size == PageSize::Size4K
                    && let Some(h) = self.hints.get_mut(slot)
                {
                    *h = (first + way) as u32;
                }
                return Some(first + way);
            }
        }
        None
    }

    /// Caches a translation of the page of `size` holding `addr` to the
    /// output page `out`. Replaces an entry with the same tag and page.
    pub(crate) fn insert(
        &mut self,
        tag: Tag,
        addr: u64,
        size: PageSize,
        out: u64,
        perms: Perms,
        prefetch: bool,
    ) {
        if self.entries.is_empty() {
            return;
        }
        self.tick += 1;
        let vpn = addr >> size.shift();
        let key = page_key(vpn, size);
        let tag = tag.pack();
        let packed = tag.packed;
        let range = self.set_range(vpn, size);
        let first = range.start;
        let tick = self.tick;
        let Some(set) = self.entries.get_mut(range) else {
            return;
        };
        let slot = match set.iter().position(|e| e.key == key && e.tag == packed) {
            Some(same) => same,
            None => match set.iter().position(|e| !e.valid()) {
                Some(free) => free,
                None => set
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, e)| e.stamp)
                    .map_or(0, |(i, _)| i),
            },
        };
        let Some(victim) = set.get_mut(slot) else {
            return;
        };
        let replaced_same = victim.key == key && victim.tag == packed;
        if victim.valid() {
            if !replaced_same {
                self.stats.evictions.inc();
                if victim.flag(PREFETCHED) && !victim.flag(USED) {
                    self.stats.prefetch_wasted.inc();
                }
            }
            if let Some(n) = self.by_size.get_mut(size_index(victim.size())) {
                *n -= 1;
            }
        }
        // A demand fill of a page the prefetcher already brought in keeps its
        // credit, and a refill keeps whether it was used.
        let mut flags = u64::from(perms.bits()) & PERMS_MASK;
        if prefetch || (replaced_same && victim.flag(PREFETCHED)) {
            flags |= PREFETCHED;
        }
        if replaced_same && victim.flag(USED) {
            flags |= USED;
        }
        *victim = Entry {
            key,
            tag: packed,
            out: (out & !size.mask()) | flags,
            stamp: tick,
        };
        self.last_hit = first + slot;
        if size == PageSize::Size4K
            && let Some(h) = self.hints.get_mut(hint_slot(tag, vpn))
        {
            *h = (first + slot) as u32;
        }
        if let Some(n) = self.by_size.get_mut(size_index(size)) {
            *n += 1;
        }
        self.stats.fills.inc();
        if prefetch {
            self.stats.prefetch_fills.inc();
        }
    }

    /// Removes every entry `pred` selects; returns how many.
    pub(crate) fn invalidate(&mut self, mut pred: impl FnMut(Tag, u64, PageSize) -> bool) -> u64 {
        let mut removed = 0;
        for e in self.entries.iter_mut().filter(|e| e.valid()) {
            if pred(Tag::unpack(e.tag), e.base(), e.size()) {
                removed += 1;
                if e.flag(PREFETCHED) && !e.flag(USED) {
                    self.stats.prefetch_wasted.inc();
                }
                if let Some(n) = self.by_size.get_mut(size_index(e.size())) {
                    *n -= 1;
                }
                *e = EMPTY;
            }
        }
        self.stats.invalidated.add(removed);
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Tag = Tag {
        space: 1,
        pasid: NO_PASID,
    };
    const RW: Perms = Perms::READ.union(Perms::WRITE);

    fn tlb(entries: usize, ways: usize, replacement: Replacement) -> Iotlb {
        Iotlb::new(IotlbConfig {
            entries,
            ways,
            replacement,
        })
        .unwrap()
    }

    #[test]
    fn geometry_is_checked() {
        assert!(
            Iotlb::new(IotlbConfig {
                entries: 12,
                ways: 4,
                ..IotlbConfig::default()
            })
            .is_err()
        );
        assert!(
            Iotlb::new(IotlbConfig {
                entries: 10,
                ways: 4,
                ..IotlbConfig::default()
            })
            .is_err()
        );
        assert!(
            Iotlb::new(IotlbConfig {
                entries: 15,
                ways: 0,
                ..IotlbConfig::default()
            })
            .is_ok()
        );
        assert!(
            Iotlb::new(IotlbConfig {
                entries: 16,
                ways: 1,
                ..IotlbConfig::default()
            })
            .is_ok()
        );
        let mut off = tlb(0, 0, Replacement::Lru);
        off.insert(T, 0x1000, PageSize::Size4K, 0x5000, RW, false);
        assert_eq!(off.lookup(T, 0x1000, true), None);
    }

    #[test]
    fn hit_returns_the_byte_address_and_tags_separate_spaces() {
        let mut t = tlb(16, 4, Replacement::Lru);
        t.insert(T, 0x1234, PageSize::Size4K, 0x9000, RW, false);
        assert_eq!(
            t.lookup(T, 0x1abc, true),
            Some(Hit {
                out: 0x9abc,
                size: PageSize::Size4K,
                perms: RW
            })
        );
        assert_eq!(
            t.lookup(
                Tag {
                    space: 2,
                    pasid: NO_PASID
                },
                0x1abc,
                true
            ),
            None
        );
        assert_eq!(t.lookup(Tag { space: 1, pasid: 7 }, 0x1abc, true), None);
        assert_eq!(t.lookup(T, 0x2000, true), None);
        // A huge page is one entry covering all of it.
        t.insert(T, 0x4000_0000, PageSize::Size2M, 0x8_0000_0000, RW, false);
        assert_eq!(t.occupancy(), 2);
        assert_eq!(
            t.lookup(T, 0x401f_fff0, true).map(|h| h.out),
            Some(0x8_001f_fff0)
        );
    }

    #[test]
    fn lru_and_fifo_pick_different_victims() {
        for (policy, survivor) in [(Replacement::Lru, 0x0u64), (Replacement::Fifo, 0x1000)] {
            let mut t = tlb(2, 0, policy); // fully associative, two entries
            t.insert(T, 0x0, PageSize::Size4K, 0x10_0000, RW, false);
            t.insert(T, 0x1000, PageSize::Size4K, 0x20_0000, RW, false);
            assert!(t.lookup(T, 0x0, true).is_some()); // refreshes 0x0 under LRU only
            t.insert(T, 0x2000, PageSize::Size4K, 0x30_0000, RW, false);
            assert!(t.lookup(T, survivor, true).is_some(), "{policy:?}");
            assert_eq!(t.stats().evictions.get(), 1);
        }
    }

    #[test]
    fn direct_mapped_conflicts() {
        let mut t = tlb(4, 1, Replacement::Lru);
        t.insert(T, 0x0, PageSize::Size4K, 0x10_0000, RW, false);
        t.insert(T, 0x4000, PageSize::Size4K, 0x20_0000, RW, false); // same set: vpn 0 and 4
        assert_eq!(t.lookup(T, 0x0, true), None);
        assert!(t.lookup(T, 0x4000, true).is_some());
        assert_eq!(t.occupancy(), 1);
    }

    #[test]
    fn prefetch_used_and_wasted() {
        let mut t = tlb(2, 0, Replacement::Lru);
        t.insert(T, 0x0, PageSize::Size4K, 0x10_0000, RW, true);
        t.insert(T, 0x1000, PageSize::Size4K, 0x20_0000, RW, true);
        assert!(t.lookup(T, 0x0, true).is_some());
        assert!(t.lookup(T, 0x0, true).is_some()); // a second hit is not a second use
        assert_eq!(t.stats().prefetch_used.get(), 1);
        t.insert(T, 0x2000, PageSize::Size4K, 0x30_0000, RW, false); // evicts 0x1000, never used
        assert_eq!(t.stats().prefetch_wasted.get(), 1);
        assert_eq!(t.stats().prefetch_fills.get(), 2);
        // Invalidating an unused prefetch also wastes it.
        t.insert(T, 0x5000, PageSize::Size4K, 0x40_0000, RW, true);
        let n = t.invalidate(|_, addr, _| addr == 0x5000);
        assert_eq!(n, 1);
        assert_eq!(t.stats().prefetch_wasted.get(), 2);
        assert_eq!(t.stats().invalidated.get(), 1);
    }

    #[test]
    fn lookup_room_agrees_with_lookup() {
        let mut t = tlb(16, 4, Replacement::Lru);
        t.insert(T, 0x1000, PageSize::Size4K, 0x9000, RW, true);
        t.insert(
            T,
            0x4000_0000,
            PageSize::Size2M,
            0x8_0000_0000,
            Perms::READ,
            false,
        );
        for addr in [0x1000, 0x1abc, 0x1fff, 0x4000_0000, 0x401f_fff0] {
            let hit = t.lookup(T, addr, false).unwrap();
            let room = hit.size.bytes() - (addr & hit.size.mask());
            assert_eq!(
                t.lookup_room(T.pack(), addr),
                Some((hit.out, room, hit.perms))
            );
        }
        assert_eq!(t.lookup_room(T.pack(), 0x2000), None);
        // A demand lookup_room uses the prefetched entry, as lookup does.
        assert_eq!(t.stats().prefetch_used.get(), 1);
    }

    #[test]
    fn way_predictor_returns_what_the_probe_would() {
        let mut t = tlb(64, 8, Replacement::Lru);
        t.insert(T, 0x1000, PageSize::Size4K, 0xa000, RW, false);
        t.insert(T, 0x0, PageSize::Size2M, 0x40_0000, RW, false);
        t.insert(T, 0x9000_0000, PageSize::Size4K, 0xb000, RW, false);
        // Neither the last hit nor a 2 MiB entry: the 4 KiB entry, first
        // in the probe's order.
        assert_eq!(t.lookup(T, 0x1234, true).map(|h| h.out), Some(0xa234));
        assert_eq!(t.lookup(T, 0x5678, true).map(|h| h.out), Some(0x40_5678));
        // A stale hint is re-checked: an invalidated page misses.
        t.invalidate(|_, addr, size| addr == 0x1000 && size == PageSize::Size4K);
        t.lookup(T, 0x9000_0000, true);
        assert_eq!(t.lookup(T, 0x1234, true).map(|h| h.out), Some(0x40_1234));
        let other = Tag { space: 2, ..T };
        assert_eq!(t.lookup(other, 0x9000_0000, true), None);
    }

    #[test]
    fn refill_of_the_same_page_is_not_an_eviction() {
        let mut t = tlb(4, 0, Replacement::Lru);
        t.insert(T, 0x0, PageSize::Size4K, 0x10_0000, Perms::READ, true);
        t.insert(T, 0x0, PageSize::Size4K, 0x10_0000, RW, false);
        assert_eq!(t.occupancy(), 1);
        assert_eq!(t.stats().evictions.get(), 0);
        assert_eq!(t.lookup(T, 0x0, true).map(|h| h.perms), Some(RW));
        assert_eq!(t.stats().prefetch_used.get(), 1);
    }
}

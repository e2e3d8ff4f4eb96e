//! Memory regions: the memory protection table (MPT) of MKey contexts and
//! the memory translation tables (MTT) behind them, seed 001's first stage
//! (FIG. 3, tables 80 and 84).
//!
//! An MKey context names the region (start VA, length, access rights, PD),
//! the base of its translation entries and the GVMI its "physical" addresses
//! belong to. Translation entries are written by the owning function's
//! driver through the command interface; in an on-demand region they start
//! not present, and a DMA that meets one raises a page-fault event instead
//! of moving data.

use std::collections::BTreeMap;

use bitflags::bitflags;
use iovirt_core::{Counter, Gpa, Gvmi};
use serde::{Deserialize, Serialize};

use crate::ids::{FunctionId, Mkey, Pdn};

/// The translation granule of every region: 4 KiB pages.
pub const MR_PAGE_SIZE: u64 = 4096;

bitflags! {
    /// Access rights of a memory region. Local read is always allowed to
    /// the owner, as in InfiniBand.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    pub struct Access: u32 {
        /// The HCA may write the region for local work requests (receive
        /// buffers, RDMA READ responses).
        const LOCAL_WRITE = 1 << 0;
        /// A remote peer may RDMA WRITE the region.
        const REMOTE_WRITE = 1 << 1;
        /// A remote peer may RDMA READ the region.
        const REMOTE_READ = 1 << 2;
    }
}

/// How a region's pages become present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MrMode {
    /// Every page was pinned and written at registration; a missing entry
    /// is a protection error, never a fault.
    Pinned,
    /// Explicit on-demand paging: entries start not present and are filled
    /// by the driver when the HCA reports a fault.
    OnDemand,
    /// Implicit on-demand paging: one key for the whole address space
    /// (start 0, length 2^64 - 1), entries kept in a bounded sparse table.
    Implicit,
}

/// Per-region on-demand-paging counters, with the names users of RDMA ODP
/// expect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OdpCounters {
    /// Page-fault events raised for this region.
    pub page_faults: Counter,
    /// Faults the driver resolved (resume commands).
    pub page_faults_handled: Counter,
    /// Translation entries the driver invalidated (swap-out, unmap).
    pub page_invalidations: Counter,
    /// Invalidations the HCA completed (no DMA uses the entry any more).
    pub page_invalidations_handled: Counter,
    /// Entries filled ahead of use by a prefetch advice.
    pub page_prefetch: Counter,
}

/// One MKey context (a memory protection table entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MkeyContext {
    /// The key, index and variant.
    pub key: Mkey,
    /// The function that owns the region.
    pub function: FunctionId,
    /// The protection domain.
    pub pd: Pdn,
    /// Whose "physical" addresses the entries hold (seed 001's GVMI 88).
    pub gvmi: Gvmi,
    /// First virtual address.
    pub start: u64,
    /// Length in bytes.
    pub length: u64,
    /// Access rights.
    pub access: Access,
    /// Pinned or on-demand.
    pub mode: MrMode,
    /// First entry in the function's MTT (explicit regions).
    pub mtt_base: u32,
    /// Entries the region spans (explicit regions).
    pub mtt_pages: u32,
    /// On-demand-paging counters.
    pub counters: OdpCounters,
}

impl MkeyContext {
    /// Whether `[va, va + len)` lies inside the region.
    pub fn contains(&self, va: u64, len: u64) -> bool {
        let Some(end) = va.checked_add(len) else {
            return false;
        };
        let Some(region_end) = self.start.checked_add(self.length) else {
            // Only an implicit region reaches the top of the address space.
            return va >= self.start;
        };
        va >= self.start && end <= region_end
    }

    /// The region's page number of `va` (index into its translation entries).
    pub(crate) fn page_index(&self, va: u64) -> u64 {
        va / MR_PAGE_SIZE - self.start / MR_PAGE_SIZE
    }

    /// Pages `[start, start + length)` spans.
    pub fn span_pages(start: u64, length: u64) -> Option<u64> {
        if length == 0 {
            return Some(0);
        }
        let last = start.checked_add(length - 1)?;
        Some(last / MR_PAGE_SIZE - start / MR_PAGE_SIZE + 1)
    }
}

/// Why a memory access was refused before a byte moved. What the peer or
/// the local work request sees as a protection error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error, Serialize, Deserialize)]
pub enum ProtectionError {
    /// No region has this key's index, or its variant differs.
    #[error("invalid key")]
    InvalidKey,
    /// The region belongs to another protection domain (or function).
    #[error("protection domain mismatch")]
    PdMismatch,
    /// The range is not inside the region.
    #[error("out of the region's bounds")]
    OutOfBounds,
    /// The region does not grant the access.
    #[error("access right missing")]
    AccessDenied,
    /// A pinned region has no translation for the page.
    #[error("pinned page without translation")]
    PinnedNotPresent,
}

/// A first-stage lookup that did not produce an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage1Miss {
    /// The access is not allowed: no fault event, an error.
    Protection(ProtectionError),
    /// An on-demand page is not present: the owner's driver gets a
    /// page-fault event for `va`.
    NotPresent {
        /// The first virtual address whose page is missing.
        va: u64,
    },
}

/// One MTT entry: bit 0 present, bits 63:12 the page's "physical" address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MttEntry(pub u64);

impl MttEntry {
    /// Bit 0: the entry holds a translation.
    pub const PRESENT: u64 = 1;

    /// An entry naming the page at `pa` (the low 12 bits are ignored).
    pub fn present(pa: Gpa) -> MttEntry {
        MttEntry((pa.raw() & !(MR_PAGE_SIZE - 1)) | Self::PRESENT)
    }

    /// Whether the entry holds a translation.
    pub fn is_present(self) -> bool {
        self.0 & Self::PRESENT != 0
    }

    /// The page's address.
    pub fn page(self) -> Gpa {
        Gpa::new(self.0 & !(MR_PAGE_SIZE - 1))
    }
}

/// A function's memory translation table: a fixed array of entries handed
/// out to explicit regions in ranges, and a bounded sparse table for its
/// implicit regions.
#[derive(Debug, Clone)]
pub struct Mtt {
    entries: Vec<MttEntry>,
    /// Free ranges `(base, len)`, sorted by base, merged.
    free: Vec<(u32, u32)>,
    implicit: BTreeMap<u64, Gpa>,
    implicit_cap: usize,
}

/// The MTT has no room for what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("translation table exhausted")]
pub struct MttFull;

impl Mtt {
    /// A table of `entries` explicit entries and `implicit_cap` implicit ones.
    pub fn new(entries: u32, implicit_cap: usize) -> Mtt {
        Mtt {
            entries: vec![MttEntry::default(); entries as usize],
            free: if entries == 0 {
                Vec::new()
            } else {
                vec![(0, entries)]
            },
            implicit: BTreeMap::new(),
            implicit_cap,
        }
    }

    /// Takes `n` consecutive entries (first fit), cleared.
    pub fn alloc(&mut self, n: u32) -> Result<u32, MttFull> {
        if n == 0 {
            return Ok(0);
        }
        let i = self
            .free
            .iter()
            .position(|&(_, len)| len >= n)
            .ok_or(MttFull)?;
        let slot = self.free.get_mut(i).ok_or(MttFull)?;
        let base = slot.0;
        if slot.1 == n {
            self.free.remove(i);
        } else {
            *slot = (base + n, slot.1 - n);
        }
        self.clear(base, n);
        Ok(base)
    }

    /// Returns `n` entries at `base` to the free ranges.
    pub fn release(&mut self, base: u32, n: u32) {
        if n == 0 {
            return;
        }
        self.clear(base, n);
        let at = self.free.partition_point(|&(b, _)| b < base);
        self.free.insert(at, (base, n));
        // Merge with the neighbours so first fit keeps finding long runs.
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(self.free.len());
        for &(b, l) in &self.free {
            match merged.last_mut() {
                Some(last) if last.0 + last.1 == b => last.1 += l,
                _ => merged.push((b, l)),
            }
        }
        self.free = merged;
    }

    fn clear(&mut self, base: u32, n: u32) {
        let (b, e) = (base as usize, base as usize + n as usize);
        if let Some(s) = self.entries.get_mut(b..e) {
            s.fill(MttEntry::default());
        }
    }

    /// Entries free for explicit regions.
    pub fn free_entries(&self) -> u64 {
        self.free.iter().map(|&(_, l)| u64::from(l)).sum()
    }

    /// Entry `index`, if inside the table.
    pub fn get(&self, index: u64) -> Option<MttEntry> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.entries.get(i))
            .copied()
    }

    /// Sets entry `index`; `false` when outside the table.
    pub fn set(&mut self, index: u64, entry: MttEntry) -> bool {
        match usize::try_from(index)
            .ok()
            .and_then(|i| self.entries.get_mut(i))
        {
            Some(e) => {
                *e = entry;
                true
            }
            None => false,
        }
    }

    /// The implicit translation of virtual page `vpn`.
    pub fn implicit(&self, vpn: u64) -> Option<Gpa> {
        self.implicit.get(&vpn).copied()
    }

    /// Writes the implicit translations of the consecutive virtual pages
    /// from `first_vpn`: `Some` sets one, `None` removes it. All or
    /// nothing: refused, with the table unchanged, when the translations
    /// held afterwards would exceed the table (the driver must invalidate
    /// first). Returns how many were set and how many removed.
    pub fn write_implicit(
        &mut self,
        first_vpn: u64,
        pages: &[Option<Gpa>],
    ) -> Result<(u64, u64), MttFull> {
        let vpns = (first_vpn..).zip(pages);
        let (mut added, mut removed) = (0usize, 0usize);
        for (vpn, page) in vpns.clone() {
            match (page.is_some(), self.implicit.contains_key(&vpn)) {
                (true, false) => added += 1,
                (false, true) => removed += 1,
                _ => {}
            }
        }
        if self.implicit.len() - removed + added > self.implicit_cap {
            return Err(MttFull);
        }
        let (mut set, mut cleared) = (0u64, 0u64);
        for (vpn, page) in vpns {
            match page {
                Some(pa) => {
                    self.implicit
                        .insert(vpn, Gpa::new(pa.raw() & !(MR_PAGE_SIZE - 1)));
                    set += 1;
                }
                None => cleared += u64::from(self.implicit.remove(&vpn).is_some()),
            }
        }
        Ok((set, cleared))
    }

    /// Implicit translations held.
    pub fn implicit_len(&self) -> usize {
        self.implicit.len()
    }

    /// The "physical" address of `va` in region `ctx`, whose bounds the
    /// caller has checked.
    pub fn translate(&self, ctx: &MkeyContext, va: u64) -> Result<Gpa, Stage1Miss> {
        let offset = va % MR_PAGE_SIZE;
        let page = match ctx.mode {
            MrMode::Implicit => self.implicit(va / MR_PAGE_SIZE),
            MrMode::Pinned | MrMode::OnDemand => {
                let index = ctx.page_index(va);
                if index >= u64::from(ctx.mtt_pages) {
                    return Err(Stage1Miss::Protection(ProtectionError::OutOfBounds));
                }
                self.get(u64::from(ctx.mtt_base) + index)
                    .filter(|e| e.is_present())
                    .map(MttEntry::page)
            }
        };
        match (page, ctx.mode) {
            (Some(p), _) => Ok(Gpa::new(p.raw() | offset)),
            (None, MrMode::Pinned) => {
                Err(Stage1Miss::Protection(ProtectionError::PinnedNotPresent))
            }
            (None, _) => Err(Stage1Miss::NotPresent { va }),
        }
    }
}

/// The memory protection table: MKey contexts by index.
#[derive(Debug, Clone, Default)]
pub struct Mpt {
    slots: Vec<Option<MkeyContext>>,
    max: u32,
}

impl Mpt {
    /// A table of at most `max` regions.
    pub fn new(max: u32) -> Mpt {
        Mpt {
            slots: Vec::new(),
            max,
        }
    }

    /// The lowest free index (index 0 is never used, so no key is 0).
    pub fn free_index(&self) -> Option<u32> {
        let used = self.slots.len() as u32;
        (1..used.max(1))
            .find(|&i| matches!(self.slots.get(i as usize), Some(None)))
            .or_else(|| (used.max(1) < self.max).then_some(used.max(1)))
    }

    /// Installs a context at its key's index.
    pub fn insert(&mut self, ctx: MkeyContext) {
        let i = ctx.key.index() as usize;
        if self.slots.len() <= i {
            self.slots.resize(i + 1, None);
        }
        if let Some(slot) = self.slots.get_mut(i) {
            *slot = Some(ctx);
        }
    }

    /// Removes the context at `key`'s index when the key matches.
    pub fn remove(&mut self, key: Mkey) -> Option<MkeyContext> {
        let slot = self.slots.get_mut(key.index() as usize)?;
        if slot.as_ref().is_some_and(|c| c.key == key) {
            slot.take()
        } else {
            None
        }
    }

    /// The context of `key`, when the index holds one with the same variant.
    pub fn get(&self, key: Mkey) -> Option<&MkeyContext> {
        self.slots
            .get(key.index() as usize)?
            .as_ref()
            .filter(|c| c.key == key)
    }

    /// Mutable access to the context of `key`.
    pub fn get_mut(&mut self, key: Mkey) -> Option<&mut MkeyContext> {
        self.slots
            .get_mut(key.index() as usize)?
            .as_mut()
            .filter(|c| c.key == key)
    }

    /// Every region, in index order.
    pub fn iter(&self) -> impl Iterator<Item = &MkeyContext> {
        self.slots.iter().flatten()
    }

    /// Checks that `key` may be used by a QP of `function` in `pd` for
    /// `need` on `[va, va + len)`, before any translation.
    pub fn check(
        &self,
        key: Mkey,
        function: FunctionId,
        pd: Pdn,
        va: u64,
        len: u64,
        need: Access,
    ) -> Result<&MkeyContext, ProtectionError> {
        let ctx = self.get(key).ok_or(ProtectionError::InvalidKey)?;
        if ctx.pd != pd || ctx.function != function {
            return Err(ProtectionError::PdMismatch);
        }
        if !ctx.contains(va, len) {
            return Err(ProtectionError::OutOfBounds);
        }
        if !ctx.access.contains(need) {
            return Err(ProtectionError::AccessDenied);
        }
        Ok(ctx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn region(mode: MrMode) -> MkeyContext {
        MkeyContext {
            key: Mkey::new(1, 0x42),
            function: FunctionId(1),
            pd: Pdn(3),
            gvmi: Gvmi(1),
            start: 0x7000_0800,
            length: 0x2000,
            access: Access::LOCAL_WRITE | Access::REMOTE_WRITE,
            mode,
            mtt_base: 10,
            mtt_pages: 3,
            counters: OdpCounters::default(),
        }
    }

    #[test]
    fn checks_key_pd_bounds_and_rights_in_that_order() {
        let mut mpt = Mpt::new(16);
        mpt.insert(region(MrMode::Pinned));
        let f = FunctionId(1);
        let rw = Access::REMOTE_WRITE;
        assert!(
            mpt.check(Mkey::new(1, 0x42), f, Pdn(3), 0x7000_0800, 0x2000, rw)
                .is_ok()
        );
        assert_eq!(
            mpt.check(Mkey::new(1, 0x43), f, Pdn(3), 0x7000_0800, 1, rw)
                .unwrap_err(),
            ProtectionError::InvalidKey
        );
        assert_eq!(
            mpt.check(Mkey::new(1, 0x42), f, Pdn(4), 0x7000_0800, 1, rw)
                .unwrap_err(),
            ProtectionError::PdMismatch
        );
        assert_eq!(
            mpt.check(
                Mkey::new(1, 0x42),
                FunctionId(2),
                Pdn(3),
                0x7000_0800,
                1,
                rw
            )
            .unwrap_err(),
            ProtectionError::PdMismatch
        );
        assert_eq!(
            mpt.check(Mkey::new(1, 0x42), f, Pdn(3), 0x7000_27ff, 2, rw)
                .unwrap_err(),
            ProtectionError::OutOfBounds
        );
        assert_eq!(
            mpt.check(Mkey::new(1, 0x42), f, Pdn(3), u64::MAX, 2, rw)
                .unwrap_err(),
            ProtectionError::OutOfBounds
        );
        assert_eq!(
            mpt.check(
                Mkey::new(1, 0x42),
                f,
                Pdn(3),
                0x7000_0800,
                8,
                Access::REMOTE_READ
            )
            .unwrap_err(),
            ProtectionError::AccessDenied
        );
        assert_eq!(mpt.free_index(), Some(2));
        assert_eq!(
            mpt.remove(Mkey::new(1, 0x41)),
            None,
            "a stale variant removes nothing"
        );
        assert!(mpt.remove(Mkey::new(1, 0x42)).is_some());
        assert_eq!(mpt.free_index(), Some(1));
    }

    #[test]
    fn translation_by_mode() {
        let mut mtt = Mtt::new(64, 2);
        let pinned = region(MrMode::Pinned);
        // The region's 0x2000 bytes from 0x...800 span three pages.
        assert_eq!(
            MkeyContext::span_pages(pinned.start, pinned.length),
            Some(3)
        );
        assert!(mtt.set(11, MttEntry::present(Gpa::new(0x55_5000))));
        assert_eq!(mtt.translate(&pinned, 0x7000_1abc), Ok(Gpa::new(0x55_5abc)));
        assert_eq!(
            mtt.translate(&pinned, 0x7000_0900),
            Err(Stage1Miss::Protection(ProtectionError::PinnedNotPresent))
        );
        let odp = region(MrMode::OnDemand);
        assert_eq!(
            mtt.translate(&odp, 0x7000_2000),
            Err(Stage1Miss::NotPresent { va: 0x7000_2000 })
        );
        let mut implicit = region(MrMode::Implicit);
        implicit.start = 0;
        implicit.length = u64::MAX;
        assert!(implicit.contains(u64::MAX - 1, 1));
        let two = [Some(Gpa::new(0x1234_5000)), Some(Gpa::new(0x1234_6000))];
        assert_eq!(mtt.write_implicit(0x9_0000, &two), Ok((2, 0)));
        // Full: a list that would add one more is refused whole, even with
        // a page it could have set first.
        let over = [Some(Gpa::new(0x1234_6000)), Some(Gpa::new(0))];
        assert_eq!(mtt.write_implicit(0x9_0001, &over), Err(MttFull));
        assert_eq!(mtt.implicit_len(), 2);
        assert_eq!(mtt.implicit(0x9_0002), None);
        // Removing one in the same list makes the room.
        let swap = [None, Some(Gpa::new(0x5000))];
        assert_eq!(mtt.write_implicit(0x9_0001, &swap), Ok((1, 1)));
        assert_eq!(mtt.implicit(0x9_0002), Some(Gpa::new(0x5000)));
        assert_eq!(mtt.write_implicit(0x9_0001, &swap[..1]), Ok((0, 0)));
        assert_eq!(
            mtt.translate(&implicit, 0x9000_0010),
            Ok(Gpa::new(0x1234_5010))
        );
        assert_eq!(mtt.write_implicit(0x9_0000, &[None]), Ok((0, 1)));
        assert_eq!(
            mtt.translate(&implicit, 0x9000_0010),
            Err(Stage1Miss::NotPresent { va: 0x9000_0010 })
        );
    }

    #[test]
    fn mtt_ranges_are_reused_after_release() {
        let mut mtt = Mtt::new(8, 0);
        let a = mtt.alloc(3).unwrap();
        let b = mtt.alloc(3).unwrap();
        assert_eq!((a, b), (0, 3));
        assert_eq!(mtt.alloc(3), Err(MttFull));
        assert!(mtt.set(4, MttEntry::present(Gpa::new(0x1000))));
        mtt.release(b, 3);
        mtt.release(a, 3);
        assert_eq!(mtt.free_entries(), 8);
        assert_eq!(mtt.alloc(8), Ok(0), "freed ranges merge");
        assert_eq!(
            mtt.get(4),
            Some(MttEntry::default()),
            "a new region starts not present"
        );
        assert!(!mtt.set(8, MttEntry::present(Gpa::new(0))));
    }
}

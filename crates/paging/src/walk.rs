//! The walker: input address → physical address, as the hardware does it.

use core::fmt;
use core::marker::PhantomData;

use iovirt_core::{
    Access, AccessKind, FaultReason, PageSize, Perms, PhysAddress, PhysMemory, Privilege,
};
use serde::Serialize;

use crate::config::Level;
use crate::entry::{PageTableEntry, PteFlags};
use crate::table::PageTable;

/// Most entries one walk reads (5-level paging).
pub const MAX_LEVELS: usize = 5;

/// A successful translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Translation<A> {
    /// The physical address of the input byte.
    pub addr: A,
    /// The start of the page holding it.
    pub page: A,
    /// The size of that page.
    pub size: PageSize,
    /// Effective permissions, combined over every level (READ is always set;
    /// WRITE when R/W was set at every level; USER when U/S was; EXECUTE when
    /// no level had NX).
    pub perms: Perms,
    /// The leaf entry as read (caching attributes PWT/PCD/PAT, G, A, D).
    pub leaf: PageTableEntry,
}

/// Why a walk failed, and at which level. No byte of data was accessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, thiserror::Error)]
pub enum WalkFault {
    /// The input address is not canonical (its top bits are not copies of
    /// the highest translated bit).
    #[error("address {addr:#x} is not canonical for a {width}-bit space")]
    NonCanonical {
        /// The input address.
        addr: u64,
        /// Translated width in bits.
        width: u32,
    },
    /// The input address has bits set above the translated width.
    #[error("address {addr:#x} is beyond the {width}-bit input width")]
    BeyondWidth {
        /// The input address.
        addr: u64,
        /// Translated width in bits.
        width: u32,
    },
    /// The entry at `level` has P clear.
    #[error("{level} not present")]
    NotPresent {
        /// Level of the entry.
        level: Level,
    },
    /// The entry at `level` has a reserved bit set.
    #[error("reserved bit set in {level} {entry:?}")]
    ReservedBit {
        /// Level of the entry.
        level: Level,
        /// The entry as read.
        entry: PageTableEntry,
    },
    /// The table at `level` (or the root) lies outside memory.
    #[error("{level} at {entry_addr:#x} is outside memory")]
    TableOutsideMemory {
        /// Level of the entry that could not be read.
        level: Level,
        /// Physical address of that entry.
        entry_addr: u64,
    },
    /// A write to a page that is not writable at some level.
    #[error("write to a read-only page (leaf {level})")]
    WriteToReadOnly {
        /// Level of the leaf.
        level: Level,
    },
    /// A user-mode access to a page that is supervisor-only at some level.
    #[error("user access to a supervisor page (leaf {level})")]
    UserToSupervisor {
        /// Level of the leaf.
        level: Level,
    },
    /// An instruction fetch from a page with NX set at some level.
    #[error("instruction fetch from a no-execute page (leaf {level})")]
    ExecuteNx {
        /// Level of the leaf.
        level: Level,
    },
}

impl WalkFault {
    /// The reason a DMA port reports for this fault.
    pub const fn reason(&self) -> FaultReason {
        match self {
            WalkFault::NonCanonical { .. } | WalkFault::BeyondWidth { .. } => {
                FaultReason::AddressBeyondWidth
            }
            WalkFault::NotPresent { .. } => FaultReason::NotPresent,
            WalkFault::ReservedBit { .. } => FaultReason::ReservedBit,
            WalkFault::TableOutsideMemory { .. } => FaultReason::TableOutsideMemory,
            WalkFault::WriteToReadOnly { .. } => FaultReason::WriteDenied,
            WalkFault::UserToSupervisor { .. } => FaultReason::PrivilegeDenied,
            WalkFault::ExecuteNx { .. } => FaultReason::ExecuteDenied,
        }
    }

    /// The level the fault was found at, if it was found in a table.
    pub const fn level(&self) -> Option<Level> {
        match self {
            WalkFault::NonCanonical { .. } | WalkFault::BeyondWidth { .. } => None,
            WalkFault::NotPresent { level }
            | WalkFault::ReservedBit { level, .. }
            | WalkFault::TableOutsideMemory { level, .. }
            | WalkFault::WriteToReadOnly { level }
            | WalkFault::UserToSupervisor { level }
            | WalkFault::ExecuteNx { level } => Some(*level),
        }
    }
}

/// One paging-structure entry a walk read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TableRead<A> {
    /// The level of the table read.
    pub level: Level,
    /// Physical address of the entry.
    pub addr: A,
    /// The entry's value.
    pub entry: PageTableEntry,
}

impl<A: PhysAddress> TableRead<A> {
    /// The physical address of the 4 KiB table holding the entry.
    pub fn table(&self) -> A {
        A::new(self.addr.raw() & !0xfff)
    }
}

/// Every entry one walk read, in order, without allocating: what a caller
/// charges the cost model for, and what a walk cache would fill from.
///
/// Kept as raw (address, value) pairs rather than [`TableRead`]s: the walker
/// fills it on every walk, so it must be cheap to create and to push to.
#[derive(Clone, Copy)]
pub struct WalkTrace<A> {
    /// Level of the first read (the top table's).
    top: Level,
    len: usize,
    /// (entry address, entry value) per read.
    reads: [(u64, u64); MAX_LEVELS],
    _space: PhantomData<A>,
}

impl<A: PhysAddress> WalkTrace<A> {
    #[inline]
    pub(crate) fn new(top: Level) -> Self {
        WalkTrace {
            top,
            len: 0,
            reads: [(0, 0); MAX_LEVELS],
            _space: PhantomData,
        }
    }

    #[inline]
    fn push(&mut self, addr: u64, entry: u64) {
        if let Some(slot) = self.reads.get_mut(self.len) {
            *slot = (addr, entry);
            self.len += 1;
        }
    }

    /// Number of entries read (the walk's memory accesses).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no entry was read (the input address was rejected up front).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `i`th read (0 = the top table's).
    pub fn get(&self, i: usize) -> Option<TableRead<A>> {
        if i >= self.len {
            return None;
        }
        let level = Level::from_number(self.top.number().checked_sub(u8::try_from(i).ok()?)?)?;
        let &(addr, entry) = self.reads.get(i)?;
        Some(TableRead {
            level,
            addr: A::new(addr),
            entry: PageTableEntry::from_raw(entry),
        })
    }

    /// The last read (the leaf's, on a successful walk).
    pub fn last(&self) -> Option<TableRead<A>> {
        self.get(self.len.checked_sub(1)?)
    }

    /// The reads, top level first.
    pub fn iter(&self) -> impl Iterator<Item = TableRead<A>> + '_ {
        (0..self.len).filter_map(|i| self.get(i))
    }
}

impl<A: PhysAddress> fmt::Debug for WalkTrace<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The result of a walk together with its trace (present on faults too: a
/// faulting walk still read memory).
#[derive(Clone, Copy)]
pub struct Walk<A> {
    /// The translation, or why there is none.
    pub result: Result<Translation<A>, WalkFault>,
    /// Every entry read.
    pub trace: WalkTrace<A>,
}

impl<A: PhysAddress> fmt::Debug for Walk<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Walk")
            .field("result", &self.result)
            .field("trace", &self.trace)
            .finish()
    }
}

/// A point a walk can start from: the root, or a table further down that an
/// earlier walk reached (what a paging-structure cache remembers), with the
/// rights accumulated above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct WalkStart {
    /// Physical address of the table to read next.
    pub table: u64,
    /// Level of that table.
    pub level: Level,
    /// R/W and U/S as accumulated (AND) over the entries above.
    pub and_bits: u64,
    /// NX as accumulated (OR) over the entries above.
    pub or_bits: u64,
}

impl<A: PhysAddress> Walk<A> {
    /// Where a later walk of an address in the same `level` span can resume:
    /// below the non-leaf entry this walk read at `level`, with the rights
    /// accumulated down to it. `None` if the walk did not pass through a
    /// table pointer at that level. Feeds a paging-structure (walk) cache.
    pub fn resume_below(&self, level: Level, phys_mask: u64) -> Option<WalkStart> {
        let below = level.below()?;
        let mut and_bits = PteFlags::RW.bits() | PteFlags::US.bits();
        let mut or_bits = 0;
        for read in self.trace.iter() {
            let raw = read.entry.raw();
            and_bits &= raw;
            or_bits |= raw;
            if read.level == level {
                let is_table = read.entry.is_present() && raw & PteFlags::PS.bits() == 0;
                return is_table.then_some(WalkStart {
                    table: raw & phys_mask & crate::ADDR_MASK,
                    level: below,
                    and_bits,
                    or_bits,
                });
            }
        }
        None
    }
}

/// Permissions accumulated over the levels walked so far.
#[derive(Clone, Copy)]
struct Accumulated {
    writable: bool,
    user: bool,
    nx: bool,
}

impl<I, A: PhysAddress> PageTable<I, A> {
    /// Walks the tables for `input` and checks `access` against the result,
    /// reading memory only. Never writes, never panics, and reads at most one
    /// entry per level whatever the tables contain (an entry pointing back at
    /// its own table, or at another level's, just yields what that memory
    /// holds at the next level).
    #[inline]
    pub fn walk_raw<M: PhysMemory<A> + ?Sized>(
        &self,
        mem: &M,
        input: u64,
        access: Access,
    ) -> Walk<A> {
        self.walk_raw_from(mem, input, access, self.start())
    }

    /// The start of a full walk: the root table, nothing accumulated.
    #[inline]
    pub fn start(&self) -> WalkStart {
        WalkStart {
            table: self.root().raw() & self.config().phys_mask(),
            level: self.config().levels.top(),
            and_bits: PteFlags::RW.bits() | PteFlags::US.bits(),
            or_bits: 0,
        }
    }

    /// A walk from `start` (a table an earlier walk of the same hierarchy
    /// reached, see [`Walk::resume_below`]) instead of from the root. The
    /// trace holds only the reads this walk made. A start above the mode's
    /// top level is treated as the top.
    #[inline]
    pub fn walk_raw_from<M: PhysMemory<A> + ?Sized>(
        &self,
        mem: &M,
        input: u64,
        access: Access,
        start: WalkStart,
    ) -> Walk<A> {
        let level = start.level.min(self.config().levels.top());
        let mut trace = WalkTrace::new(level);
        let result = self.walk_inner(mem, input, access, WalkStart { level, ..start }, &mut trace);
        if let Err(fault) = &result {
            log::trace!(
                "walk of {input:#x} ({access}) from root {}: {fault}",
                self.root()
            );
        }
        Walk { result, trace }
    }

    #[inline]
    fn walk_inner<M: PhysMemory<A> + ?Sized>(
        &self,
        mem: &M,
        input: u64,
        access: Access,
        start: WalkStart,
        trace: &mut WalkTrace<A>,
    ) -> Result<Translation<A>, WalkFault> {
        let cfg = self.config();
        if !cfg.input_ok(input) {
            let width = cfg.levels.width();
            return Err(match cfg.input {
                crate::InputCheck::Canonical => WalkFault::NonCanonical { addr: input, width },
                crate::InputCheck::ZeroExtended => WalkFault::BeyondWidth { addr: input, width },
            });
        }
        let phys_mask = cfg.phys_mask();
        let mut table = start.table & phys_mask;
        // R/W and U/S accumulate with AND, NX with OR: keep the raw bits.
        let mut and_bits = start.and_bits;
        let mut or_bits = start.or_bits;
        // The loop runs on the level's number and index shift, stepped down
        // together; the `Level` enum is only built for a fault or the leaf.
        let mut n = usize::from(start.level.number());
        let mut shift = start.level.shift();
        loop {
            let entry_addr = table | (((input >> shift) & 0x1ff) << 3);
            let raw =
                mem.read_u64(A::new(entry_addr))
                    .map_err(|_| WalkFault::TableOutsideMemory {
                        level: level_no(n),
                        entry_addr,
                    })?;
            trace.push(entry_addr, raw);
            if raw & PteFlags::P.bits() == 0 {
                return Err(WalkFault::NotPresent { level: level_no(n) });
            }
            // Bit 7 is PS above the page table and PAT in it; the page
            // table's two masks are the same, so the bit only selects.
            let ps = ((raw >> 7) & 1) as usize;
            let reserved = self.reserved.get(2 * n + ps).copied().unwrap_or(u64::MAX);
            if raw & reserved != 0 {
                let entry = PageTableEntry::from_raw(raw);
                return Err(WalkFault::ReservedBit {
                    level: level_no(n),
                    entry,
                });
            }
            and_bits &= raw;
            or_bits |= raw;
            if ps == 0 && n > 1 {
                table = raw & phys_mask;
                n -= 1;
                shift -= 9;
                continue;
            }
            let level = level_no(n);
            let entry = PageTableEntry::from_raw(raw);
            // A PS bit where no leaf may sit was rejected as reserved above.
            let size = level
                .leaf_size()
                .ok_or(WalkFault::ReservedBit { level, entry })?;
            let acc = Accumulated {
                writable: and_bits & PteFlags::RW.bits() != 0,
                user: and_bits & PteFlags::US.bits() != 0,
                nx: cfg.nxe && or_bits & PteFlags::NX.bits() != 0,
            };
            let perms = check_access(cfg, acc, access, level)?;
            let page = entry.page_addr(size) & phys_mask;
            return Ok(Translation {
                addr: A::new(page | (input & size.mask())),
                page: A::new(page),
                size,
                perms,
                leaf: entry,
            });
        }
    }

    /// Like [`walk_raw`](Self::walk_raw), then, when the configuration asks
    /// for it and the walk succeeded, sets A in every entry used and D in the
    /// leaf of a write, as the hardware's page-miss handler does.
    pub fn walk_raw_mut<M: PhysMemory<A> + ?Sized>(
        &self,
        mem: &mut M,
        input: u64,
        access: Access,
    ) -> Walk<A> {
        let mut walk = self.walk_raw(&*mem, input, access);
        if !self.config().update_ad || walk.result.is_err() {
            return walk;
        }
        let last = walk.trace.len().saturating_sub(1);
        for i in 0..walk.trace.len() {
            let Some(read) = walk.trace.get(i) else { break };
            let mut want = read.entry.raw() | PteFlags::A.bits();
            if i == last && access.is_write() {
                want |= PteFlags::D.bits();
            }
            if want == read.entry.raw() {
                continue;
            }
            if mem.write_u64(read.addr, want).is_err() {
                walk.result = Err(WalkFault::TableOutsideMemory {
                    level: read.level,
                    entry_addr: read.addr.raw(),
                });
                return walk;
            }
            if let Some(slot) = walk.trace.reads.get_mut(i) {
                slot.1 = want;
            }
        }
        if let Ok(t) = &mut walk.result
            && let Some(leaf) = walk.trace.last()
        {
            t.leaf = leaf.entry;
        }
        walk
    }
}

/// The level numbered `n`, which the walk keeps within 1..=5.
#[inline]
fn level_no(n: usize) -> Level {
    match n {
        0 | 1 => Level::Pt,
        2 => Level::Pd,
        3 => Level::Pdpt,
        4 => Level::Pml4,
        _ => Level::Pml5,
    }
}

fn check_access(
    cfg: &crate::PagingConfig,
    acc: Accumulated,
    access: Access,
    level: Level,
) -> Result<Perms, WalkFault> {
    let user = matches!(access.privilege, Privilege::User);
    if user && !acc.user {
        return Err(WalkFault::UserToSupervisor { level });
    }
    match access.kind {
        AccessKind::Write if !acc.writable && (user || cfg.wp) => {
            return Err(WalkFault::WriteToReadOnly { level });
        }
        AccessKind::Execute if acc.nx => return Err(WalkFault::ExecuteNx { level }),
        _ => {}
    }
    let mut perms = Perms::READ;
    perms.set(Perms::WRITE, acc.writable);
    perms.set(Perms::USER, acc.user);
    perms.set(Perms::EXECUTE, !acc.nx);
    Ok(perms)
}

#[cfg(test)]
mod tests;

//! The mapper: builds and edits tables in memory.
//!
//! Edits keep the hierarchy minimal: a table frame is allocated when the
//! first mapping needs it and given back when its last present entry goes;
//! a huge page partly unmapped or re-protected is split into a table of the
//! next size down, as an OS does.

use std::collections::BTreeSet;

use iovirt_core::{
    Access, Address, FRAME_SIZE, FrameAllocator, FrameError, MemError, PageSize, PhysAddress,
    PhysMemory,
};
use serde::Serialize;

use crate::config::{InputCheck, Level};
use crate::entry::{HUGE_PAT, PTE_PAT, PageTableEntry, PteFlags};
use crate::table::PageTable;
use crate::walk::WalkFault;

/// An edit of the tables was refused. Where an edit fails part way, what it
/// had done is undone (`map`) or left consistent (`unmap`, `protect`: every
/// entry is either old or new, never torn).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The range is empty or runs past the end of the 64-bit space.
    #[error("range {start:#x}+{len:#x} is empty or overflows")]
    BadRange {
        /// First input address.
        start: u64,
        /// Length in bytes.
        len: u64,
    },
    /// An address or the length is not a multiple of 4 KiB.
    #[error("{what} {value:#x} is not 4 KiB aligned")]
    Unaligned {
        /// Which operand.
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// Part of the input range is not translatable in this mode
    /// (non-canonical, crossing the canonical hole, or beyond the width).
    #[error("input range {start:#x}..={last:#x} is outside the translatable space")]
    InputOutOfRange {
        /// First input address.
        start: u64,
        /// Last input address.
        last: u64,
    },
    /// Part of the physical range is at or above MAXPHYADDR.
    #[error("physical range ending at {last:#x} is beyond {max_phys_bits}-bit MAXPHYADDR")]
    PhysOutOfRange {
        /// Last physical address.
        last: u64,
        /// The configured MAXPHYADDR.
        max_phys_bits: u8,
    },
    /// Flags that cannot go in a leaf (P and PS are the mapper's; NX needs NXE).
    #[error("flags {0:?} cannot be given to a leaf")]
    BadFlags(PteFlags),
    /// Part of the range is already mapped.
    #[error("input address {addr:#x} is already mapped")]
    AlreadyMapped {
        /// The first mapped input address found.
        addr: u64,
    },
    /// The frame allocator has no frame for a table.
    #[error("no free frame for a page table")]
    OutOfFrames,
    /// A table could not be read or written.
    #[error("table memory: {0}")]
    Memory(#[from] MemError),
    /// A table frame could not be given back (it is not the allocator's).
    #[error("table frame: {0}")]
    Frame(#[from] FrameError),
}

/// A mapping request: `len` bytes of input addresses from `input` onto
/// physical addresses from `phys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping<I, A> {
    /// First input address (4 KiB aligned).
    pub input: I,
    /// First physical address (4 KiB aligned).
    pub phys: A,
    /// Length in bytes (a non-zero multiple of 4 KiB).
    pub len: u64,
    /// Leaf attributes, a subset of [`PteFlags::LEAF_ATTRIBUTES`].
    pub flags: PteFlags,
    /// The largest page the mapper may use where input and physical
    /// addresses are both aligned to it (1 GiB only when the mode has it).
    pub largest: PageSize,
}

impl<I, A> Mapping<I, A> {
    /// A request with `flags`, 4 KiB pages only.
    pub fn new(input: I, phys: A, len: u64, flags: PteFlags) -> Self {
        Mapping {
            input,
            phys,
            len,
            flags,
            largest: PageSize::Size4K,
        }
    }

    /// The same request allowing pages up to `largest`.
    pub fn with_largest(self, largest: PageSize) -> Self {
        Mapping { largest, ..self }
    }
}

/// What one edit did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EditReport {
    /// Leaves written, cleared or rewritten, by size: 4 KiB, 2 MiB, 1 GiB.
    pub leaves: [u64; 3],
    /// Table frames allocated.
    pub tables_allocated: u64,
    /// Table frames freed.
    pub tables_freed: u64,
    /// Huge pages split.
    pub splits: u64,
}

impl EditReport {
    fn count_leaf(&mut self, size: PageSize) {
        let i = match size {
            PageSize::Size4K => 0,
            PageSize::Size2M => 1,
            PageSize::Size1G => 2,
        };
        if let Some(n) = self.leaves.get_mut(i) {
            *n += 1;
        }
    }

    /// Leaves of any size.
    pub fn total_leaves(&self) -> u64 {
        self.leaves.iter().sum()
    }
}

/// The range edits share one traversal.
#[derive(Clone, Copy)]
enum Edit {
    /// Clear leaves, free tables that become empty.
    Unmap,
    /// Rewrite leaf attributes.
    Protect(PteFlags),
    /// Leave leaves alone, free tables that are empty (after a failed map).
    Prune,
}

/// Working state of one range edit.
struct EditCtx<'a, M: ?Sized, F: ?Sized> {
    mem: &'a mut M,
    frames: &'a mut F,
    edit: Edit,
    report: EditReport,
}

impl<I: Address, A: PhysAddress> PageTable<I, A> {
    /// An empty hierarchy: one zeroed root table from `frames`.
    pub fn new<M, F>(
        mem: &mut M,
        frames: &mut F,
        config: crate::PagingConfig,
    ) -> Result<Self, MapError>
    where
        M: PhysMemory<A> + ?Sized,
        F: FrameAllocator<A> + ?Sized,
    {
        let root = alloc_table(mem, frames)?;
        let mut table = PageTable::from_root(root, config);
        table.stats.tables_allocated.inc();
        Ok(table)
    }

    /// Maps `m.len` bytes from `m.input` to `m.phys`, using the largest pages
    /// allowed that fit. Refuses (and undoes everything it did) if any page of
    /// the range is already mapped.
    pub fn map<M, F>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
        m: Mapping<I, A>,
    ) -> Result<EditReport, MapError>
    where
        M: PhysMemory<A> + ?Sized,
        F: FrameAllocator<A> + ?Sized,
    {
        let (start, last) = self.check_input(m.input.raw(), m.len)?;
        let phys = m.phys.raw();
        if !phys.is_multiple_of(FRAME_SIZE) {
            return Err(MapError::Unaligned {
                what: "physical address",
                value: phys,
            });
        }
        let phys_last = phys.checked_add(m.len - 1).ok_or(MapError::BadRange {
            start: phys,
            len: m.len,
        })?;
        if phys_last & !self.config().phys_mask() & !0xfff != 0 {
            return Err(MapError::PhysOutOfRange {
                last: phys_last,
                max_phys_bits: self.config().max_phys_bits,
            });
        }
        self.check_flags(m.flags)?;

        let mut report = EditReport::default();
        let mut offset = 0u64;
        while offset < m.len {
            let va = start + offset;
            match self.map_one(
                mem,
                frames,
                va,
                phys + offset,
                m.len - offset,
                &m,
                &mut report,
            ) {
                Ok(size) => offset += size.bytes(),
                Err(err) => {
                    log::debug!("map {start:#x}..={last:#x} failed at {va:#x}: {err}");
                    self.stats.tables_allocated.add(report.tables_allocated);
                    if offset > 0 {
                        // Undo: everything in start..va was mapped by this call.
                        self.edit_range(mem, frames, start, va - 1, Edit::Unmap)?;
                    }
                    // Tables created on the way to the failed page hold nothing.
                    self.edit_range(mem, frames, va, va | 0xfff, Edit::Prune)?;
                    return Err(err);
                }
            }
        }
        self.stats.tables_allocated.add(report.tables_allocated);
        self.stats.leaves_mapped.add(report.total_leaves());
        Ok(report)
    }

    /// Removes every mapping in `input..input + len`, splitting huge pages the
    /// range only partly covers and freeing tables that become empty. Pages
    /// already unmapped are skipped. Stale translations cached elsewhere (an
    /// IOTLB) are the caller's to invalidate.
    pub fn unmap<M, F>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
        input: I,
        len: u64,
    ) -> Result<EditReport, MapError>
    where
        M: PhysMemory<A> + ?Sized,
        F: FrameAllocator<A> + ?Sized,
    {
        let (start, last) = self.check_input(input.raw(), len)?;
        let report = self.edit_range(mem, frames, start, last, Edit::Unmap)?;
        self.stats.leaves_unmapped.add(report.total_leaves());
        Ok(report)
    }

    /// Replaces the leaf attributes of every mapping in `input..input + len`
    /// with `flags` (address, A and D kept), splitting huge pages the range
    /// only partly covers. Unmapped pages are skipped.
    pub fn protect<M, F>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
        input: I,
        len: u64,
        flags: PteFlags,
    ) -> Result<EditReport, MapError>
    where
        M: PhysMemory<A> + ?Sized,
        F: FrameAllocator<A> + ?Sized,
    {
        self.check_flags(flags)?;
        let (start, last) = self.check_input(input.raw(), len)?;
        let report = self.edit_range(mem, frames, start, last, Edit::Protect(flags))?;
        self.stats.leaves_protected.add(report.total_leaves());
        Ok(report)
    }

    /// The distinct table pages (root included) a walk of every page of
    /// `input..input + len` reads. Seed 000's contiguous buffer allocator is
    /// judged by this: buffers packed together share their tables.
    pub fn table_pages<M: PhysMemory<A> + ?Sized>(
        &self,
        mem: &M,
        input: I,
        len: u64,
    ) -> Result<BTreeSet<A>, MapError> {
        let (start, last) = self.check_input(input.raw(), len)?;
        let mut pages = BTreeSet::new();
        let mut va = start;
        loop {
            let walk = self.walk_raw(mem, va, Access::READ);
            pages.extend(walk.trace.iter().map(|r| r.table()));
            // Step to the next page, or past the hole that stopped the walk.
            let step = match walk.result {
                Ok(t) => t.size.bytes(),
                Err(WalkFault::NotPresent { level }) => level.span(),
                Err(_) => FRAME_SIZE,
            };
            match (va & !(step - 1)).checked_add(step) {
                Some(next) if next <= last && next > va => va = next,
                _ => break,
            }
        }
        Ok(pages)
    }

    /// Frees every table frame of the hierarchy, root included, without
    /// looking at what the leaves map.
    pub fn free_all<M, F>(mut self, mem: &mut M, frames: &mut F) -> Result<FreeReport, MapError>
    where
        M: PhysMemory<A> + ?Sized,
        F: FrameAllocator<A> + ?Sized,
    {
        let root = self.root().raw() & self.config().phys_mask();
        let freed = free_subtree(mem, frames, root, self.config().levels.top(), self.config())?;
        self.stats.tables_freed.add(freed);
        Ok(FreeReport {
            tables_freed: freed,
            stats: self.stats,
        })
    }

    /// Refuses leaf flags the mapper owns (P, PS) or the mode reserves (NX without NXE).
    fn check_flags(&self, flags: PteFlags) -> Result<(), MapError> {
        let mut bad = flags - PteFlags::LEAF_ATTRIBUTES;
        if !self.config().nxe {
            bad |= flags & PteFlags::NX;
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(MapError::BadFlags(bad))
        }
    }

    /// Checks a range of input addresses and returns its first and last byte.
    fn check_input(&self, start: u64, len: u64) -> Result<(u64, u64), MapError> {
        if !start.is_multiple_of(FRAME_SIZE) {
            return Err(MapError::Unaligned {
                what: "input address",
                value: start,
            });
        }
        if !len.is_multiple_of(FRAME_SIZE) {
            return Err(MapError::Unaligned {
                what: "length",
                value: len,
            });
        }
        let last = len
            .checked_sub(1)
            .and_then(|l| start.checked_add(l))
            .ok_or(MapError::BadRange { start, len })?;
        let cfg = self.config();
        let same_half = match cfg.input {
            InputCheck::Canonical => {
                (start >> (cfg.levels.width() - 1)) & 1 == (last >> (cfg.levels.width() - 1)) & 1
            }
            InputCheck::ZeroExtended => true,
        };
        if !cfg.input_ok(start) || !cfg.input_ok(last) || !same_half {
            return Err(MapError::InputOutOfRange { start, last });
        }
        Ok((start, last))
    }

    /// Maps the largest allowed page that fits at `va`; returns its size.
    #[allow(clippy::too_many_arguments)]
    fn map_one<M, F>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
        va: u64,
        pa: u64,
        rest: u64,
        m: &Mapping<I, A>,
        report: &mut EditReport,
    ) -> Result<PageSize, MapError>
    where
        M: PhysMemory<A> + ?Sized,
        F: FrameAllocator<A> + ?Sized,
    {
        for size in PageSize::ALL.into_iter().rev() {
            let fits = size <= m.largest
                && (size != PageSize::Size1G || self.config().page_1g)
                && va & size.mask() == 0
                && pa & size.mask() == 0
                && rest >= size.bytes();
            if fits && self.map_page(mem, frames, va, pa, size, m.flags, report)? {
                return Ok(size);
            }
        }
        // Unreachable for a 4 KiB-aligned request: a 4 KiB page always fits
        // and its slot never holds a table.
        Err(MapError::AlreadyMapped { addr: va })
    }

    /// Maps one page of `size`. `Ok(false)` when a table already sits where
    /// a huge leaf would go (the caller then tries smaller pages).
    #[allow(clippy::too_many_arguments)]
    fn map_page<M, F>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
        va: u64,
        pa: u64,
        size: PageSize,
        flags: PteFlags,
        report: &mut EditReport,
    ) -> Result<bool, MapError>
    where
        M: PhysMemory<A> + ?Sized,
        F: FrameAllocator<A> + ?Sized,
    {
        let leaf_level = Level::of_leaf(size);
        let phys_mask = self.config().phys_mask();
        let mut table = self.root().raw() & phys_mask;
        let mut level = self.config().levels.top();
        while level > leaf_level {
            let slot = A::new(table | (level.index(va) << 3));
            let entry = PageTableEntry::from_raw(mem.read_u64(slot)?);
            table = if !entry.is_present() {
                let new = alloc_table(mem, frames)?;
                report.tables_allocated += 1;
                mem.write_u64(slot, PageTableEntry::new(new.raw(), table_flags()).raw())?;
                new.raw()
            } else if is_leaf(level, entry) {
                return Err(MapError::AlreadyMapped { addr: va });
            } else {
                entry.addr() & phys_mask
            };
            let Some(next) = level.below() else { break };
            level = next;
        }
        let slot = A::new(table | (leaf_level.index(va) << 3));
        let entry = PageTableEntry::from_raw(mem.read_u64(slot)?);
        if entry.is_present() {
            if is_leaf(leaf_level, entry) {
                return Err(MapError::AlreadyMapped { addr: va });
            }
            return Ok(false);
        }
        let mut bits = PteFlags::P | flags;
        if size != PageSize::Size4K {
            bits |= PteFlags::PS;
        }
        mem.write_u64(slot, PageTableEntry::new(pa, bits).raw())?;
        report.count_leaf(size);
        Ok(true)
    }

    /// Applies `edit` to every leaf in `start..=last`.
    fn edit_range<M, F>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
        start: u64,
        last: u64,
        edit: Edit,
    ) -> Result<EditReport, MapError>
    where
        M: PhysMemory<A> + ?Sized,
        F: FrameAllocator<A> + ?Sized,
    {
        let mut ctx = EditCtx {
            mem,
            frames,
            edit,
            report: EditReport::default(),
        };
        let root = self.root().raw() & self.config().phys_mask();
        let top = self.config().levels.top();
        let result = edit_table::<A, M, F>(&mut ctx, self.config(), root, top, start, last);
        self.stats.tables_allocated.add(ctx.report.tables_allocated);
        self.stats.tables_freed.add(ctx.report.tables_freed);
        self.stats.splits.add(ctx.report.splits);
        result.map(|_| ctx.report)
    }
}

/// What [`PageTable::free_all`] did, with the final counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FreeReport {
    /// Table frames freed by this call.
    pub tables_freed: u64,
    /// The hierarchy's counters at the end.
    pub stats: crate::MapperStats,
}

/// Flags of a non-leaf entry: permissive, so the leaf alone decides.
fn table_flags() -> PteFlags {
    PteFlags::P | PteFlags::RW | PteFlags::US
}

fn is_leaf(level: Level, entry: PageTableEntry) -> bool {
    level == Level::Pt || (entry.flags().contains(PteFlags::PS) && level.leaf_size().is_some())
}

fn alloc_table<A, M, F>(mem: &mut M, frames: &mut F) -> Result<A, MapError>
where
    A: PhysAddress,
    M: PhysMemory<A> + ?Sized,
    F: FrameAllocator<A> + ?Sized,
{
    let frame = frames.alloc_frame().ok_or(MapError::OutOfFrames)?;
    if let Err(e) = mem.write(frame, &[0u8; FRAME_SIZE as usize]) {
        // The frame is unusable; hand it back rather than leak it.
        let _ = frames.free_frame(frame);
        return Err(e.into());
    }
    Ok(frame)
}

/// Whether no entry of the table at `table` is present.
fn table_is_empty<A: PhysAddress, M: PhysMemory<A> + ?Sized>(
    mem: &M,
    table: u64,
) -> Result<bool, MapError> {
    let mut buf = [0u8; FRAME_SIZE as usize];
    mem.read(A::new(table), &mut buf)?;
    Ok(buf
        .chunks_exact(8)
        .all(|e| e.first().is_none_or(|b| b & 1 == 0)))
}

/// Edits the leaves of `start..=last` below the table at `table` (of
/// `level`). Returns whether the table ended up empty.
fn edit_table<A, M, F>(
    ctx: &mut EditCtx<'_, M, F>,
    cfg: &crate::PagingConfig,
    table: u64,
    level: Level,
    start: u64,
    last: u64,
) -> Result<bool, MapError>
where
    A: PhysAddress,
    M: PhysMemory<A> + ?Sized,
    F: FrameAllocator<A> + ?Sized,
{
    let span = level.span();
    let mut va = start;
    loop {
        let slot_first = va & !(span - 1);
        let slot_last = slot_first | (span - 1);
        let sub_last = slot_last.min(last);
        let slot = A::new(table | (level.index(va) << 3));
        let entry = PageTableEntry::from_raw(ctx.mem.read_u64(slot)?);
        if entry.is_present() {
            let covered = va == slot_first && sub_last == slot_last;
            match (is_leaf(level, entry), level.below(), ctx.edit) {
                (true, _, Edit::Prune) => {}
                (true, _, Edit::Unmap | Edit::Protect(_)) if covered => {
                    let new = match ctx.edit {
                        Edit::Protect(flags) => reprotect(entry, level, flags),
                        Edit::Unmap | Edit::Prune => PageTableEntry::EMPTY,
                    };
                    ctx.mem.write_u64(slot, new.raw())?;
                    if let Some(size) = level.leaf_size() {
                        ctx.report.count_leaf(size);
                    }
                }
                (true, Some(below), _) => {
                    let child = split(ctx, entry, below)?;
                    ctx.mem
                        .write_u64(slot, PageTableEntry::new(child, table_flags()).raw())?;
                    edit_table::<A, M, F>(ctx, cfg, child, below, va, sub_last)?;
                }
                (false, Some(below), _) => {
                    let child = entry.addr() & cfg.phys_mask();
                    let empty = edit_table::<A, M, F>(ctx, cfg, child, below, va, sub_last)?;
                    if empty {
                        ctx.mem.write_u64(slot, 0)?;
                        ctx.frames.free_frame(A::new(child))?;
                        ctx.report.tables_freed += 1;
                    }
                }
                // A partly covered 4 KiB leaf cannot happen (ranges are page
                // aligned); a "table" below the page table is not one.
                (true, None, _) | (false, None, _) => {}
            }
        }
        match sub_last.checked_add(1) {
            Some(next) if sub_last < last => va = next,
            _ => break,
        }
    }
    match ctx.edit {
        Edit::Unmap | Edit::Prune => table_is_empty::<A, M>(ctx.mem, table),
        Edit::Protect(_) => Ok(false),
    }
}

/// A leaf with new attributes and its address, A, D, PS and PAT kept.
fn reprotect(entry: PageTableEntry, level: Level, flags: PteFlags) -> PageTableEntry {
    let pat = if level == Level::Pt {
        PTE_PAT
    } else {
        HUGE_PAT | PteFlags::PS.bits()
    };
    let keep = entry.raw() & (crate::entry::ADDR_MASK | pat | (PteFlags::A | PteFlags::D).bits());
    PageTableEntry::from_raw(keep | (PteFlags::P | (flags - PteFlags::A - PteFlags::D)).bits())
}

/// Replaces the huge leaf `entry` by a new table of 512 leaves of the level
/// `below` with the same attributes; returns the table's address.
fn split<A, M, F>(
    ctx: &mut EditCtx<'_, M, F>,
    entry: PageTableEntry,
    below: Level,
) -> Result<u64, MapError>
where
    A: PhysAddress,
    M: PhysMemory<A> + ?Sized,
    F: FrameAllocator<A> + ?Sized,
{
    let Some(child_size) = below.leaf_size() else {
        return Err(MapError::BadFlags(entry.flags()));
    };
    let parent_size = match below {
        Level::Pt => PageSize::Size2M,
        _ => PageSize::Size1G,
    };
    let base = entry.page_addr(parent_size);
    let mut attrs = entry.raw() & !crate::entry::ADDR_MASK;
    if below == Level::Pt {
        // PS leaves; the PAT bit moves from bit 12 to bit 7.
        let pat = entry.raw() & HUGE_PAT != 0;
        attrs &= !PteFlags::PS.bits();
        if pat {
            attrs |= PTE_PAT;
        }
    } else {
        attrs |= entry.raw() & HUGE_PAT;
    }
    let table: A = alloc_table(ctx.mem, ctx.frames)?;
    ctx.report.tables_allocated += 1;
    ctx.report.splits += 1;
    let mut buf = [0u8; FRAME_SIZE as usize];
    for (i, slot) in buf.chunks_exact_mut(8).enumerate() {
        let e = (base + i as u64 * child_size.bytes()) | attrs;
        slot.copy_from_slice(&e.to_le_bytes());
    }
    ctx.mem.write(table, &buf)?;
    Ok(table.raw())
}

/// Frees every table below and including `table`; returns how many.
///
/// Each table is cleared before its children are visited, so tables shared
/// between several parents, or pointing back up (possible only in corrupted
/// tables), are found empty on a second visit: the work is bounded by the
/// number of distinct tables, never by the number of paths to them.
fn free_subtree<A, M, F>(
    mem: &mut M,
    frames: &mut F,
    table: u64,
    level: Level,
    cfg: &crate::PagingConfig,
) -> Result<u64, MapError>
where
    A: PhysAddress,
    M: PhysMemory<A> + ?Sized,
    F: FrameAllocator<A> + ?Sized,
{
    let mut entries = [0u8; FRAME_SIZE as usize];
    mem.read(A::new(table), &mut entries)?;
    mem.write(A::new(table), &[0u8; FRAME_SIZE as usize])?;
    let mut freed = 0;
    if let Some(below) = level.below() {
        for raw in entries.chunks_exact(8) {
            let entry =
                PageTableEntry::from_raw(raw.iter().rev().fold(0, |v, b| v << 8 | u64::from(*b)));
            if entry.is_present() && !is_leaf(level, entry) {
                freed += free_subtree(mem, frames, entry.addr() & cfg.phys_mask(), below, cfg)?;
            }
        }
    }
    // A frame already given back (a second path to it) is not counted twice.
    if frames.free_frame(A::new(table)).is_ok() {
        freed += 1;
    }
    Ok(freed)
}

#[cfg(test)]
mod tests;

//! A page-table hierarchy: its root, its mode, and the typed entry points.

use core::fmt;
use core::marker::PhantomData;

use iovirt_core::{Access, Address, Counter, PhysAddress, PhysMemory, Stats};
use serde::Serialize;

use crate::config::{Level, PagingConfig};
use crate::walk::{Translation, Walk, WalkFault};

/// Counters of the edits made through one [`PageTable`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MapperStats {
    /// Table frames taken from the frame allocator (the root included).
    pub tables_allocated: Counter,
    /// Table frames given back because they became empty.
    pub tables_freed: Counter,
    /// Huge pages split into a table of smaller pages.
    pub splits: Counter,
    /// Leaf entries written by `map`.
    pub leaves_mapped: Counter,
    /// Leaf entries cleared by `unmap`.
    pub leaves_unmapped: Counter,
    /// Leaf entries rewritten by `protect`.
    pub leaves_protected: Counter,
}

impl Stats for MapperStats {}

/// One translation hierarchy from input addresses `I` (e.g. [`Gva`],
/// [`Iova`], [`Gpa`]) to physical addresses `A` (where the tables live too:
/// [`Gpa`] for a guest's own tables, [`Hpa`] for the host's).
///
/// The value is small (root, mode, counters) and does not own memory: walks
/// and edits take the memory, and edits the frame allocator, as arguments.
/// A walker over tables someone else built (a guest, a device context) is
/// just [`PageTable::from_root`].
///
/// [`Gva`]: iovirt_core::Gva
/// [`Iova`]: iovirt_core::Iova
/// [`Gpa`]: iovirt_core::Gpa
/// [`Hpa`]: iovirt_core::Hpa
pub struct PageTable<I, A> {
    root: A,
    config: PagingConfig,
    /// Reserved-bit masks derived from `config`, at `2 * level + ps`: a
    /// table pointer's and a PS entry's mask per level (the page table's
    /// two are equal: its bit 7 is PAT). Precomputed because the walker
    /// checks one per level on every walk.
    pub(crate) reserved: [u64; 12],
    pub(crate) stats: MapperStats,
    _input: PhantomData<fn(I)>,
}

impl<I, A: Copy> Clone for PageTable<I, A> {
    fn clone(&self) -> Self {
        PageTable {
            root: self.root,
            config: self.config,
            reserved: self.reserved,
            stats: self.stats,
            _input: PhantomData,
        }
    }
}

impl<I, A: PhysAddress> fmt::Debug for PageTable<I, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageTable")
            .field("root", &self.root)
            .field("levels", &self.config.levels)
            .finish_non_exhaustive()
    }
}

impl<I, A: PhysAddress> PageTable<I, A> {
    /// The hierarchy whose top table is at `root` (CR3, a context entry's
    /// second-stage pointer, a PASID entry's first-stage pointer). Bits of
    /// `root` below 4 KiB and above MAXPHYADDR are ignored, as in CR3.
    pub fn from_root(root: A, config: PagingConfig) -> Self {
        let mut reserved = [0u64; 12];
        for level in [Level::Pt, Level::Pd, Level::Pdpt, Level::Pml4, Level::Pml5] {
            let n = usize::from(level.number());
            let ps = level != Level::Pt;
            if let Some(pair) = reserved.get_mut(2 * n..2 * n + 2) {
                pair.copy_from_slice(&[
                    config.reserved_bits(level, false),
                    config.reserved_bits(level, ps),
                ]);
            }
        }
        PageTable {
            root,
            config,
            reserved,
            stats: MapperStats::default(),
            _input: PhantomData,
        }
    }

    /// The root table's address.
    pub fn root(&self) -> A {
        self.root
    }

    /// The paging mode.
    pub fn config(&self) -> &PagingConfig {
        &self.config
    }

    /// Counters of the edits made through this value.
    pub fn stats(&self) -> &MapperStats {
        &self.stats
    }

    /// Table frames this value allocated and has not freed.
    pub fn tables_in_use(&self) -> u64 {
        self.stats.tables_allocated.get() - self.stats.tables_freed.get()
    }
}

impl<I: Address, A: PhysAddress> PageTable<I, A> {
    /// Walks for `input`, reading memory only; see [`PageTable::walk_raw`].
    #[inline]
    pub fn walk<M: PhysMemory<A> + ?Sized>(&self, mem: &M, input: I, access: Access) -> Walk<A> {
        self.walk_raw(mem, input.raw(), access)
    }

    /// Walks for `input` and updates A/D bits when configured; see
    /// [`PageTable::walk_raw_mut`].
    pub fn walk_mut<M: PhysMemory<A> + ?Sized>(
        &self,
        mem: &mut M,
        input: I,
        access: Access,
    ) -> Walk<A> {
        self.walk_raw_mut(mem, input.raw(), access)
    }

    /// The translation of `input` for `access`, without the trace.
    #[inline]
    pub fn translate<M: PhysMemory<A> + ?Sized>(
        &self,
        mem: &M,
        input: I,
        access: Access,
    ) -> Result<Translation<A>, WalkFault> {
        self.walk(mem, input, access).result
    }
}

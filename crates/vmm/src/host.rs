//! The host: its memory, its IOMMU, its VMs and the host MMU that backs
//! guest-physical pages with host frames on demand and swaps them out when
//! frames run short, oldest first.

use iovirt_core::{
    BadMemorySize, BitmapFrameAllocator, FrameAllocator, Gpa, Gvmi, HostMemory, Hpa, InterruptSink,
    Iova, Irq, MemError, PageSize, PhysMemory,
};
use iovirt_iommu::{
    BadIotlbConfig, ContextEntry, DmaRequest, DomainId, FaultRecord, Invalidation, Iommu,
    IommuConfig, IommuPort, RequesterId,
};
use iovirt_paging::{Levels, MapError, Mapping, PageTable, PagingConfig, PteFlags};
use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::lapic::Lapic;
use crate::stats::VmmStats;
use crate::swap::SwapStore;

mod flip;
mod gvmi;

pub use gvmi::{HcaGuestBus, HostFaultOracle};
mod share;

const PAGE: u64 = 4096;

/// The reverse map costs 8 bytes a frame; past 1 TiB a config is a mistake.
const MAX_DATA_FRAMES: u64 = 1 << 28;

/// Which VM, as the host numbers them (0, 1, … in creation order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct VmId(pub u16);

/// The host's memory: frames for page tables and frames for guest pages.
/// Guest memory is oversubscribed when the VMs together have more pages
/// than `data_frames`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// 4 KiB frames reserved for stage-2 page tables, at the bottom of
    /// host memory.
    pub table_frames: u64,
    /// 4 KiB frames that back guest pages, above the table frames.
    pub data_frames: u64,
    /// The IOMMU.
    pub iommu: IommuConfig,
}

/// One VM's memory and the device that DMAs into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// Guest-physical memory in bytes, a multiple of 4 KiB.
    pub memory: u64,
    /// The requester ID of the device assigned to this VM; its DMA is
    /// translated by the VM's stage-2 table.
    pub requester: RequesterId,
}

/// What the host could not do.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// Host memory of an impossible size.
    #[error(transparent)]
    Memory(#[from] BadMemorySize),
    /// An IOTLB geometry no hardware has.
    #[error(transparent)]
    Iotlb(#[from] BadIotlbConfig),
    /// A stage-2 table edit failed (out of table frames, most likely).
    #[error("stage-2 table: {0}")]
    Tables(#[from] MapError),
    /// Host memory refused an access (a bug in the host, not the guest).
    #[error("host memory: {0}")]
    Host(#[from] MemError),
    /// A host config that cannot be built.
    #[error("bad host config: {0}")]
    BadHost(&'static str),
    /// A VM of no pages, of a size not a multiple of 4 KiB, or with a
    /// requester already given to another VM.
    #[error("bad VM config: {0}")]
    BadVm(&'static str),
    /// No VM has this number.
    #[error("no VM {0:?}")]
    NoVm(VmId),
    /// No VM owns the device that faulted.
    #[error("no VM owns requester {0}")]
    UnknownRequester(RequesterId),
    /// An access beyond the VM's guest-physical memory.
    #[error("{vm:?}: guest-physical {gpa:#x}+{len:#x} is outside its {size:#x} bytes")]
    OutOfRange {
        /// The VM.
        vm: VmId,
        /// Where the access started.
        gpa: u64,
        /// Its length.
        len: u64,
        /// The VM's memory size.
        size: u64,
    },
    /// Every frame is pinned: nothing can be swapped out to make room.
    #[error("out of host frames: all {0} are pinned")]
    AllPinned(u64),
    /// A pinned page cannot be lent or replaced by page flipping.
    #[error("{vm:?}: the page at {gpa:#x} is pinned")]
    Pinned {
        /// The VM.
        vm: VmId,
        /// The page.
        gpa: u64,
    },
    /// A page that is not shared was to be unshared.
    #[error("{vm:?}: the page at {gpa:#x} is not shared")]
    NotShared {
        /// The VM.
        vm: VmId,
        /// The page.
        gpa: u64,
    },
    /// A frame handed to the host MMU that is not a free-standing data
    /// frame (it backs a guest page, or is not a data frame at all).
    #[error("{0} is not a pool frame")]
    NotPoolFrame(Hpa),
}

/// Where a guest page is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Page {
    /// Never touched: reads as zeros, costs nothing.
    Untouched,
    /// In a host frame, mapped by stage 2; a pinned page is never swapped.
    Resident { frame: Hpa, pinned: bool },
    /// In the swap store, not mapped.
    Swapped(u32),
    /// Mapped to the frame of another VM's page (seed 003's crossover): not
    /// this VM's frame, so never swapped, lent or replaced until unshared.
    Shared { frame: Hpa },
    /// Given to the page-flip demultiplexer's buffer pool (seed 002): not
    /// mapped, its frame zeroed and in the pool. A touch by the guest's CPU
    /// is a minor fault, as for an untouched page.
    Lent,
}

/// What became of a page the host tried to swap out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapOut {
    /// Its contents went to the store, its frame back to the host.
    Done,
    /// It had no frame to give back.
    NotResident,
    /// It is pinned (a device may DMA to it without faulting).
    Pinned,
}

/// What one run of the host's fault handler did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FaultService {
    /// Faults whose page the host brought in.
    pub serviced: u64,
    /// Faults outside every VM's memory, dropped.
    pub refused: u64,
    /// Whether the log had overflowed (faults were lost; the devices will
    /// fault again on retry).
    pub overflowed: bool,
}

/// The page a data frame holds, and which load put it there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owner {
    vm: VmId,
    gfn: u32,
    load: u64,
}

#[derive(Debug)]
struct Vm {
    lapic: Lapic,
    requester: RequesterId,
    domain: DomainId,
    pages: Vec<Page>,
    stage2: PageTable<Iova, Hpa>,
    /// The VM's GVMI on the HCA, once assigned.
    gvmi: Option<Gvmi>,
}

/// The host: memory, IOMMU, VMs and the host MMU between them.
#[derive(Debug)]
pub struct Host {
    mem: HostMemory,
    tables: BitmapFrameAllocator<Hpa>,
    frames: BitmapFrameAllocator<Hpa>,
    data_base: u64,
    /// Which VM page each data frame holds, for eviction.
    owner: Vec<Option<Owner>>,
    /// Frames in the order their pages came in, oldest first: the eviction
    /// order. Entries whose frame has since changed hands are stale and
    /// skipped (their `load` no longer matches).
    fifo: VecDeque<(u32, u64)>,
    /// Loads so far, numbering each one.
    loads: u64,
    iommu: Iommu,
    vms: Vec<Vm>,
    store: SwapStore,
    /// Pages mapped into another VM (seed 003): (source, destination).
    shares: Vec<((VmId, u32), (VmId, u32))>,
    stats: VmmStats,
}

impl Host {
    /// A host with no VMs.
    pub fn new(config: HostConfig) -> Result<Host, VmmError> {
        let data_base = config.table_frames.saturating_mul(PAGE);
        let size = config
            .table_frames
            .saturating_add(config.data_frames)
            .saturating_mul(PAGE);
        if config.data_frames > MAX_DATA_FRAMES {
            return Err(VmmError::BadHost("over 1 TiB of guest frames"));
        }
        Ok(Host {
            mem: HostMemory::new(size)?,
            tables: BitmapFrameAllocator::new(Hpa::new(0), config.table_frames),
            frames: BitmapFrameAllocator::new(Hpa::new(data_base), config.data_frames),
            data_base,
            owner: vec![None; config.data_frames as usize],
            fifo: VecDeque::new(),
            loads: 0,
            iommu: Iommu::new(config.iommu)?,
            vms: Vec::new(),
            store: SwapStore::default(),
            shares: Vec::new(),
            stats: VmmStats::default(),
        })
    }

    /// Creates a VM with no page backed yet, and attaches its device to a
    /// new IOMMU domain whose second-stage table is the VM's stage 2.
    pub fn add_vm(&mut self, config: VmConfig) -> Result<VmId, VmmError> {
        if config.memory == 0 || !config.memory.is_multiple_of(PAGE) {
            return Err(VmmError::BadVm(
                "memory must be a non-zero multiple of 4 KiB",
            ));
        }
        let pages = u32::try_from(config.memory / PAGE)
            .map_err(|_| VmmError::BadVm("memory over 16 TiB"))?;
        if self.vms.iter().any(|v| v.requester == config.requester) {
            return Err(VmmError::BadVm("requester already assigned"));
        }
        let id = u16::try_from(self.vms.len())
            .ok()
            .filter(|&n| n < u16::MAX)
            .ok_or(VmmError::BadVm("too many VMs"))?;
        let stage2 = PageTable::new(
            &mut self.mem,
            &mut self.tables,
            PagingConfig::second_stage(Levels::Four),
        )?;
        let domain = DomainId(id + 1);
        self.iommu.set_domain(domain, stage2.root(), Levels::Four);
        self.iommu.set_context(
            config.requester,
            ContextEntry::Translate {
                domain,
                pasid_enabled: false,
            },
        );
        self.vms.push(Vm {
            lapic: Lapic::new(),
            requester: config.requester,
            domain,
            pages: vec![Page::Untouched; pages as usize],
            stage2,
            gvmi: None,
        });
        Ok(VmId(id))
    }

    /// The guest CPU reads `buf.len()` bytes at `gpa`; pages not in a frame
    /// are brought in first (a minor fault for a new page, a major one for
    /// a swapped page).
    pub fn read(&mut self, vm: VmId, gpa: Gpa, buf: &mut [u8]) -> Result<(), VmmError> {
        let mut done = 0usize;
        self.for_pages(vm, gpa, buf.len() as u64, |host, hpa, n| {
            let out = buf.get_mut(done..done + n).unwrap_or_default();
            host.mem.read(hpa, out)?;
            done += n;
            Ok(())
        })
    }

    /// Reads guest memory without bringing anything in: a resident page from
    /// its frame, a swapped page from the store, any other page as zeros.
    /// What the guest would read, with no fault and no counter moved (the
    /// view of a debugger, or of a register-only access path).
    pub fn peek(&self, vm: VmId, gpa: Gpa, buf: &mut [u8]) -> Result<(), VmmError> {
        self.gfn(vm, gpa.raw(), buf.len() as u64)?;
        let pages = &self.vm(vm)?.pages;
        let mut pos = gpa.raw();
        let mut rest = buf;
        while !rest.is_empty() {
            let off = (pos % PAGE) as usize;
            let n = rest.len().min(PAGE as usize - off);
            let (now, later) = rest.split_at_mut(n);
            match pages.get((pos / PAGE) as usize) {
                Some(Page::Resident { frame, .. } | Page::Shared { frame }) => {
                    self.mem.read(Hpa::new(frame.raw() + off as u64), now)?;
                }
                Some(Page::Swapped(slot)) => {
                    match self.store.get(*slot).and_then(|p| p.get(off..off + n)) {
                        Some(src) => now.copy_from_slice(src),
                        None => now.fill(0),
                    }
                }
                _ => now.fill(0),
            }
            pos += n as u64;
            rest = later;
        }
        Ok(())
    }

    /// The guest CPU writes `data` at `gpa`, bringing pages in as `read` does.
    /// A shared page (mapped read-only from another VM) is copied first, so
    /// the write lands in the VM's own frame (copy on write).
    pub fn write(&mut self, vm: VmId, gpa: Gpa, data: &[u8]) -> Result<(), VmmError> {
        self.copy_shared_on_write(vm, gpa, data.len() as u64)?;
        let mut done = 0usize;
        self.for_pages(vm, gpa, data.len() as u64, |host, hpa, n| {
            let part = data.get(done..done + n).unwrap_or_default();
            host.mem.write(hpa, part)?;
            done += n;
            Ok(())
        })
    }

    /// A guest driver's read of its own memory ([`PhysMemory`] reads
    /// through `&self`, so it brings nothing in: see [`Host::peek`]), with
    /// any refusal as the out-of-range error the driver sees.
    pub(crate) fn guest_read(&self, vm: VmId, addr: Gpa, buf: &mut [u8]) -> Result<(), MemError> {
        self.peek(vm, addr, buf)
            .map_err(|_| self.guest_out_of_range(vm, addr, buf.len()))
    }

    /// A guest driver's write to its own memory (demand-paged, as
    /// [`Host::write`]), with any refusal as an out-of-range error.
    pub(crate) fn guest_write(&mut self, vm: VmId, addr: Gpa, data: &[u8]) -> Result<(), MemError> {
        self.write(vm, addr, data)
            .map_err(|_| self.guest_out_of_range(vm, addr, data.len()))
    }

    fn guest_out_of_range(&self, vm: VmId, addr: Gpa, len: usize) -> MemError {
        MemError::OutOfRange {
            space: "guest-physical",
            addr: addr.raw(),
            len: len as u64,
            size: self.vm_memory(vm),
        }
    }

    /// Brings the pages of `gpa..gpa + len` in and pins them, so the VM's
    /// device can DMA to them without faulting (what a VMM does for an
    /// assigned device that cannot take page faults).
    pub fn pin(&mut self, vm: VmId, gpa: Gpa, len: u64) -> Result<(), VmmError> {
        self.set_pinned(vm, gpa, len, true)
    }

    /// Lets the pages of `gpa..gpa + len` be swapped out again.
    pub fn unpin(&mut self, vm: VmId, gpa: Gpa, len: u64) -> Result<(), VmmError> {
        self.set_pinned(vm, gpa, len, false)
    }

    /// Swaps out the page holding `gpa`: its contents go to the store, its
    /// stage-2 entry is cleared, the IOTLB forgets it, and its frame is
    /// zeroed before it goes back to the host, so whoever gets the frame
    /// next never sees this VM's data.
    pub fn swap_out(&mut self, vm: VmId, gpa: Gpa) -> Result<SwapOut, VmmError> {
        let gfn = self.gfn(vm, gpa.raw(), 1)?;
        self.evict(vm, gfn)
    }

    /// Host-side service of a device's DMA fault: if the faulting address is
    /// a page of the device's VM that is not in a frame, brings it in, so the
    /// device's retry succeeds. A fault on an address outside the VM is the
    /// guest's error and is not serviceable.
    pub fn service_fault(&mut self, fault: &FaultRecord) -> Result<(), VmmError> {
        let index = self
            .vms
            .iter()
            .position(|v| v.requester == fault.requester)
            .ok_or(VmmError::UnknownRequester(fault.requester))?;
        let vm = VmId(index as u16);
        let gfn = self.gfn(vm, fault.addr, 1)?;
        self.resident(vm, gfn)?;
        self.stats.dma_faults_serviced.inc();
        log::debug!(
            "{vm:?}: serviced a {:?} DMA fault at {:#x}",
            fault.access,
            fault.addr
        );
        Ok(())
    }

    /// The host's fault handler: drains the IOMMU's fault log, oldest
    /// first, servicing each fault it can. Faults outside any VM's memory
    /// are the guests' errors: they are counted and dropped. The log's
    /// overflow flag is cleared, so the IOMMU records again.
    pub fn service_pending_faults(&mut self) -> Result<FaultService, VmmError> {
        let mut report = FaultService::default();
        while let Some(fault) = self.iommu.faults_mut().pop() {
            match self.service_fault(&fault) {
                Ok(()) => report.serviced += 1,
                Err(VmmError::OutOfRange { .. } | VmmError::UnknownRequester(_)) => {
                    self.stats.dma_faults_refused.inc();
                    report.refused += 1;
                }
                Err(err) => return Err(err),
            }
        }
        report.overflowed = self.iommu.faults().overflow();
        self.iommu.faults_mut().clear_overflow();
        Ok(report)
    }

    /// A DMA port for the device of `vm`, translated by its stage 2.
    pub fn dma_port<'a, S: InterruptSink + ?Sized>(
        &'a mut self,
        vm: VmId,
        irq: &'a mut S,
    ) -> Result<IommuPort<'a, HostMemory, S>, VmmError> {
        let requester = self.vm(vm)?.requester;
        Ok(self.device_port(requester, irq))
    }

    /// Attaches a device the host drives itself (the physical NIC under the
    /// demultiplexer) with its DMA untranslated: I/O-virtual addresses are
    /// host-physical ones. The host trusts its own driver with that; a
    /// requester a VM already has is refused.
    pub fn attach_host_device(&mut self, requester: RequesterId) -> Result<(), VmmError> {
        if self.vms.iter().any(|v| v.requester == requester) {
            return Err(VmmError::BadHost("requester already assigned to a VM"));
        }
        self.iommu.set_context(requester, ContextEntry::PassThrough);
        Ok(())
    }

    /// A DMA port for any device, as its IOMMU context translates it.
    pub fn device_port<'a, S: InterruptSink + ?Sized>(
        &'a mut self,
        requester: RequesterId,
        irq: &'a mut S,
    ) -> IommuPort<'a, HostMemory, S> {
        self.iommu
            .port(&mut self.mem, irq, DmaRequest::new(requester))
    }

    /// Injects a device's interrupt into `vm`: the vector becomes pending in
    /// the VM's local APIC. A guest that is not taking interrupts still has
    /// at most one pending bit per vector.
    pub fn inject(&mut self, vm: VmId, irq: Irq) -> Result<(), VmmError> {
        self.lapic_mut(vm)?.inject(irq);
        Ok(())
    }

    /// The local APIC of `vm` (what is pending and in service).
    pub fn lapic(&self, vm: VmId) -> Result<&Lapic, VmmError> {
        Ok(&self.vm(vm)?.lapic)
    }

    /// The local APIC of `vm`, as an interrupt sink for the VM's emulated
    /// devices, and for the guest's acknowledge and EOI.
    pub fn lapic_mut(&mut self, vm: VmId) -> Result<&mut Lapic, VmmError> {
        self.vms
            .get_mut(usize::from(vm.0))
            .map(|v| &mut v.lapic)
            .ok_or(VmmError::NoVm(vm))
    }

    /// The IOMMU (its fault log, its stats).
    pub fn iommu(&self) -> &Iommu {
        &self.iommu
    }

    /// The IOMMU, to change its settings or drain its fault log.
    pub fn iommu_mut(&mut self) -> &mut Iommu {
        &mut self.iommu
    }

    /// Host memory, as a device outside any VM sees it.
    pub fn memory(&self) -> &HostMemory {
        &self.mem
    }

    /// The host frame backing `gpa` in `vm`, if the page is in one.
    pub fn frame_of(&self, vm: VmId, gpa: Gpa) -> Option<Hpa> {
        let page = self.vm(vm).ok()?.pages.get((gpa.raw() / PAGE) as usize)?;
        match *page {
            Page::Resident { frame, .. } | Page::Shared { frame } => {
                Some(Hpa::new(frame.raw() + gpa.raw() % PAGE))
            }
            _ => None,
        }
    }

    /// The guest-physical memory size of `vm` in bytes; 0 for no VM.
    pub fn vm_memory(&self, vm: VmId) -> u64 {
        self.vm(vm).map_or(0, |v| v.pages.len() as u64 * PAGE)
    }

    /// Data frames holding a guest page now.
    pub fn resident_frames(&self) -> u64 {
        self.frames.used_frames()
    }

    /// Pages in the swap store now.
    pub fn swapped_pages(&self) -> u64 {
        self.store.used()
    }

    /// The host MMU's counters.
    pub fn stats(&self) -> VmmStats {
        self.stats
    }

    fn vm(&self, vm: VmId) -> Result<&Vm, VmmError> {
        self.vms.get(usize::from(vm.0)).ok_or(VmmError::NoVm(vm))
    }

    /// The first page number of `gpa..gpa + len`, checked against the VM.
    fn gfn(&self, vm: VmId, gpa: u64, len: u64) -> Result<u32, VmmError> {
        let size = self.vm(vm)?.pages.len() as u64 * PAGE;
        let out = VmmError::OutOfRange { vm, gpa, len, size };
        match gpa.checked_add(len) {
            Some(end) if end <= size => u32::try_from(gpa / PAGE).map_err(|_| out),
            _ => {
                log::warn!("{out}");
                Err(out)
            }
        }
    }

    /// Runs `f(host, hpa, n)` over the range page by page, each page
    /// brought into a frame first.
    fn for_pages(
        &mut self,
        vm: VmId,
        gpa: Gpa,
        len: u64,
        mut f: impl FnMut(&mut Host, Hpa, usize) -> Result<(), VmmError>,
    ) -> Result<(), VmmError> {
        let first = self.gfn(vm, gpa.raw(), len)?;
        let mut pos = gpa.raw();
        let end = pos + len;
        let mut gfn = first;
        while pos < end {
            let off = pos % PAGE;
            let n = (PAGE - off).min(end - pos);
            let frame = self.resident(vm, gfn)?;
            f(self, Hpa::new(frame.raw() + off), n as usize)?;
            pos += n;
            gfn += 1;
        }
        Ok(())
    }

    fn set_pinned(&mut self, vm: VmId, gpa: Gpa, len: u64, pin: bool) -> Result<(), VmmError> {
        let first = self.gfn(vm, gpa.raw(), len)?;
        if len == 0 {
            return Ok(());
        }
        let last = self.gfn(vm, gpa.raw() + len - 1, 1)?;
        for gfn in first..=last {
            if pin {
                self.resident(vm, gfn)?;
            }
            if let Some(Page::Resident { pinned, .. }) = self.page_mut(vm, gfn) {
                *pinned = pin;
            }
        }
        Ok(())
    }

    fn page_mut(&mut self, vm: VmId, gfn: u32) -> Option<&mut Page> {
        self.vms
            .get_mut(usize::from(vm.0))?
            .pages
            .get_mut(gfn as usize)
    }

    /// The frame holding page `gfn` of `vm`, bringing it in if need be.
    fn resident(&mut self, vm: VmId, gfn: u32) -> Result<Hpa, VmmError> {
        let page = *self.page_mut(vm, gfn).ok_or(VmmError::NoVm(vm))?;
        let slot = match page {
            Page::Resident { frame, .. } | Page::Shared { frame } => return Ok(frame),
            Page::Untouched | Page::Lent => None,
            Page::Swapped(slot) => Some(slot),
        };
        let frame = self.take_frame()?;
        // A frame comes zeroed: freed frames are discarded, and new host
        // memory reads as zeros.
        if let Some(slot) = slot {
            let bytes = self.store.get(slot).unwrap_or_default();
            self.mem.write(frame, bytes)?;
        }
        if let Err(err) = self.install(vm, gfn, frame) {
            // The page stays where it was (its slot is still in the store);
            // the frame goes back zeroed.
            self.release_frame(frame)?;
            return Err(err);
        }
        if let Some(slot) = slot {
            self.store.free(slot);
            self.stats.major_faults.inc();
            self.stats.bytes_swapped_in.add(PAGE);
        } else {
            self.stats.minor_faults.inc();
        }
        Ok(frame)
    }

    /// Maps page `gfn` of `vm` to `frame` (4 KiB, read-write) and makes the
    /// frame the page's: the newest load in the eviction order. The page
    /// must not be mapped.
    fn install(&mut self, vm: VmId, gfn: u32, frame: Hpa) -> Result<(), VmmError> {
        self.map_gfn(vm, gfn, frame, PteFlags::RW)?;
        if let Some(p) = self.page_mut(vm, gfn) {
            *p = Page::Resident {
                frame,
                pinned: false,
            };
        }
        self.loads += 1;
        let load = self.loads;
        if let Some((index, o)) = self.owner_mut(frame) {
            *o = Some(Owner { vm, gfn, load });
            self.fifo.push_back((index, load));
        }
        if self.fifo.len() > 2 * self.owner.len() + 16 {
            // Explicit swap-outs leave stale entries behind; drop them so
            // the queue stays within twice the frames.
            let owner = &self.owner;
            self.fifo
                .retain(|&(i, l)| matches!(owner.get(i as usize), Some(Some(o)) if o.load == l));
        }
        Ok(())
    }

    /// A free data frame, swapping a page out to free one if need be.
    fn take_frame(&mut self) -> Result<Hpa, VmmError> {
        if let Some(frame) = self.frames.alloc_frame() {
            return Ok(frame);
        }
        // FIFO: the page that came in first goes; a pinned one keeps its
        // place at the back. Each entry is looked at once at most.
        for _ in 0..self.fifo.len() {
            let Some((index, load)) = self.fifo.pop_front() else {
                break;
            };
            let Some(Some(o)) = self.owner.get(index as usize).copied() else {
                continue;
            };
            if o.load != load {
                continue;
            }
            if self.evict(o.vm, o.gfn)? == SwapOut::Pinned {
                self.fifo.push_back((index, load));
                continue;
            }
            self.stats.evictions.inc();
            if let Some(frame) = self.frames.alloc_frame() {
                return Ok(frame);
            }
        }
        let n = self.owner.len() as u64;
        log::warn!("out of host frames: every one of {n} is pinned");
        Err(VmmError::AllPinned(n))
    }

    fn evict(&mut self, vm: VmId, gfn: u32) -> Result<SwapOut, VmmError> {
        let frame = match self.page_mut(vm, gfn).copied() {
            Some(Page::Resident { pinned: true, .. } | Page::Shared { .. }) => {
                return Ok(SwapOut::Pinned);
            }
            Some(Page::Resident { .. }) if self.is_shared_source(vm, gfn) => {
                return Ok(SwapOut::Pinned);
            }
            Some(Page::Resident { frame, .. }) => frame,
            Some(_) => return Ok(SwapOut::NotResident),
            None => return Err(VmmError::NoVm(vm)),
        };
        self.unmap_page(vm, gfn)?;
        let mem = &self.mem;
        let slot = self.store.put_with(|dst| mem.read(frame, dst))?;
        if let Some(p) = self.page_mut(vm, gfn) {
            *p = Page::Swapped(slot);
        }
        self.release_frame(frame)?;
        self.stats.swap_outs.inc();
        self.stats.bytes_swapped_out.add(PAGE);
        log::trace!("{vm:?}: page {gfn:#x} swapped out of {frame}");
        Ok(SwapOut::Done)
    }

    /// Maps page `gfn` of `vm` to `frame` in its stage 2 (4 KiB, with
    /// `flags`: read-write, or read-only for a shared page); the page must
    /// not be mapped.
    fn map_gfn(&mut self, vm: VmId, gfn: u32, frame: Hpa, flags: PteFlags) -> Result<(), VmmError> {
        let v = self
            .vms
            .get_mut(usize::from(vm.0))
            .ok_or(VmmError::NoVm(vm))?;
        let m = Mapping::new(Iova::new(u64::from(gfn) * PAGE), frame, PAGE, flags)
            .with_largest(PageSize::Size4K);
        v.stage2.map(&mut self.mem, &mut self.tables, m)?;
        Ok(())
    }

    /// Clears page `gfn`'s stage-2 entry and has the IOTLB forget it. Unmap
    /// first, always: once the entry is gone and the IOTLB told, no DMA can
    /// reach the frame, and only then is it safe to copy, zero or reuse it.
    fn unmap_page(&mut self, vm: VmId, gfn: u32) -> Result<(), VmmError> {
        let v = self
            .vms
            .get_mut(usize::from(vm.0))
            .ok_or(VmmError::NoVm(vm))?;
        let iova = Iova::new(u64::from(gfn) * PAGE);
        v.stage2
            .unmap(&mut self.mem, &mut self.tables, iova, PAGE)?;
        let domain = v.domain;
        let gvmi = v.gvmi;
        self.stats.invalidations.inc();
        self.iommu.invalidate(Invalidation::Page {
            domain,
            addr: iova,
            order: 0,
        });
        // The same table is the VM's PA2MA table inside the HCA (seed 001):
        // its cached translations go too (seed 001, paragraph 0061).
        if let Some(gvmi) = gvmi {
            self.iommu.invalidate(Invalidation::GvmiPage {
                gvmi,
                addr: Gpa::new(iova.raw()),
                order: 0,
            });
        }
        Ok(())
    }

    /// Zeroes a frame (the host's cost of handing it on), counted.
    fn zero_frame(&mut self, frame: Hpa) -> Result<(), VmmError> {
        self.mem.discard(frame, PAGE)?;
        self.stats.frames_zeroed.inc();
        Ok(())
    }

    /// Zeroes a frame and returns it to the host.
    fn release_frame(&mut self, frame: Hpa) -> Result<(), VmmError> {
        self.zero_frame(frame)?;
        if let Some((_, o)) = self.owner_mut(frame) {
            *o = None;
        }
        if self.frames.free_frame(frame).is_err() {
            log::error!("host MMU freed {frame} twice");
        }
        Ok(())
    }

    fn owner_mut(&mut self, frame: Hpa) -> Option<(u32, &mut Option<Owner>)> {
        let i = u32::try_from(frame.raw().checked_sub(self.data_base)? / PAGE).ok()?;
        Some((i, self.owner.get_mut(i as usize)?))
    }
}

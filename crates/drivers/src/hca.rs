//! The HCA driver: a verbs-like API over one function of an iovirt HCA,
//! working from guest-physical memory, the function's command interface
//! and its doorbell page, as a guest kernel's RDMA driver does.
//!
//! It also owns the application's address space (the process page table
//! the memory regions' virtual addresses live in) and services the HCA's
//! guest-stage page faults from it: seed 001's driver 49, which "checks
//! whether the specified virtual address is valid" and "updates the
//! entries in table 84".

use std::collections::BTreeMap;

use iovirt_core::{FRAME_SIZE, FrameAllocator, Gpa, MemError, PhysMemory, RegisterAccess, Width};
use iovirt_hca::cqe::{CQE_SIZE, Cqe, CqeLayout, CqeOpcode, CqeStatus};
use iovirt_hca::mr::{Access, MR_PAGE_SIZE, MrMode};
use iovirt_hca::qp::{QpAttr, QpState, QpType, Ring};
use iovirt_hca::wqe::{RecvWqe, Remote, SEND_SGES, SendWqe, Sge, WQE_STRIDE, WqeFlags, WqeOpcode};
use iovirt_hca::{
    CmdError, Command, CommandChannel, Cqn, Event, FaultStage, Mkey, MkeySpec, PageFault, Pdn, Qpn,
    Reply, doorbell,
};
use serde::{Deserialize, Serialize};
use zerocopy::{FromBytes, IntoBytes};

use crate::page_alloc::GuestPageAllocator;
use iovirt_core::Counter;

/// What the HCA driver needs: the command interface, the doorbell page
/// and guest-physical memory.
pub trait HcaBus: CommandChannel + RegisterAccess + PhysMemory<Gpa> {}
impl<T: CommandChannel + RegisterAccess + PhysMemory<Gpa> + ?Sized> HcaBus for T {}

/// Why a verb failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerbsError {
    /// The HCA refused the command.
    #[error("command refused: {0}")]
    Command(#[from] CmdError),
    /// Guest memory could not be read or written.
    #[error("guest memory: {0}")]
    Memory(#[from] MemError),
    /// No guest pages left.
    #[error("out of guest pages")]
    OutOfPages,
    /// The queue is full.
    #[error("queue full")]
    QueueFull,
    /// The object is unknown to the driver.
    #[error("unknown object")]
    Unknown,
    /// Too many scatter/gather entries for the WQE.
    #[error("too many scatter/gather entries")]
    TooManySges,
    /// The command answered with an unexpected reply.
    #[error("unexpected reply {0:?}")]
    Reply(Reply),
    /// The range is outside the region.
    #[error("range outside the region")]
    OutOfRange,
    /// An application address is not mapped.
    #[error("application address {0:#x} not mapped")]
    NotMapped(u64),
}

/// A send work request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendWr {
    /// Returned in the completion.
    pub wr_id: u64,
    /// The operation.
    pub opcode: WqeOpcode,
    /// Flags (signaled, solicited, fence).
    pub flags: WqeFlags,
    /// Immediate data.
    pub imm: u32,
    /// The destination.
    pub remote: Remote,
    /// Gather list (at most two entries).
    pub sges: [Option<Sge>; SEND_SGES],
}

/// A work completion, as `poll_cq` returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkCompletion {
    /// The work request's id.
    pub wr_id: u64,
    /// The QP.
    pub qpn: Qpn,
    /// What completed.
    pub opcode: CqeOpcode,
    /// How.
    pub status: CqeStatus,
    /// Bytes.
    pub byte_len: u32,
    /// Immediate data.
    pub imm: Option<u32>,
    /// Source QP (UD).
    pub src_qp: u32,
}

/// `advise_mr`'s advice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Advice {
    /// Make the pages present for reading (faulting them in).
    PrefetchRead,
    /// Make the pages present for writing (faulting them in).
    PrefetchWrite,
    /// Fill translations only for pages already present; fault nothing in.
    PrefetchNoFault,
}

/// Driver counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HcaDriverStats {
    /// Guest-stage faults serviced.
    pub faults_serviced: Counter,
    /// Application pages the driver faulted in (allocated and mapped).
    pub pages_faulted_in: Counter,
    /// Pages written by prefetch advice.
    pub pages_prefetched: Counter,
    /// Work requests posted.
    pub posted_sends: Counter,
    /// Receive requests posted.
    pub posted_recvs: Counter,
    /// Completions polled.
    pub completions: Counter,
}

#[derive(Debug, Clone)]
struct CqState {
    ring: Ring,
    ci: u32,
}

/// The driver's side of a send or receive queue.
#[derive(Debug, Clone)]
struct WorkQueue {
    ring: Ring,
    /// Producer counter (what the doorbell reports).
    pi: u16,
    /// Work request ids by WQE slot.
    ids: Vec<u64>,
    /// WQEs posted and not yet completed (the driver's flow control).
    outstanding: u32,
}

impl WorkQueue {
    fn new(ring: Ring) -> WorkQueue {
        WorkQueue {
            ring,
            pi: 0,
            ids: vec![0; ring.entries() as usize],
            outstanding: 0,
        }
    }

    /// Writes `wqe` at the producer slot, records `wr_id` for it and rings
    /// the queue's doorbell `reg` for `qpn`; refused while every slot holds
    /// a WQE not yet completed.
    fn post<B: HcaBus + ?Sized>(
        &mut self,
        bus: &mut B,
        qpn: Qpn,
        reg: u64,
        wr_id: u64,
        wqe: &[u8],
    ) -> Result<(), VerbsError> {
        if self.outstanding >= self.ring.entries() {
            return Err(VerbsError::QueueFull);
        }
        let slot = u64::from(self.pi) & u64::from(self.ring.entries() - 1);
        PhysMemory::write(bus, Gpa::new(self.ring.base.raw() + slot * WQE_STRIDE), wqe)?;
        if let Some(id) = self.ids.get_mut(slot as usize) {
            *id = wr_id;
        }
        self.pi = self.pi.wrapping_add(1);
        self.outstanding += 1;
        let value = (u64::from(qpn.raw()) << 32) | u64::from(self.pi);
        RegisterAccess::write(bus, reg, Width::U64, value);
        Ok(())
    }

    /// The work request id of WQE counter `index`.
    fn wr_id(&self, index: u16) -> Option<u64> {
        self.ids
            .get(usize::from(index) & (self.ids.len() - 1))
            .copied()
    }
}

#[derive(Debug, Clone)]
struct QpInfo {
    qp_type: QpType,
    sq: WorkQueue,
    rq: WorkQueue,
    send_cq: Cqn,
    recv_cq: Cqn,
    /// Send WQE counter the next send completion is expected at.
    sq_ci: u16,
}

#[derive(Debug, Clone, Copy)]
struct MrInfo {
    start: u64,
    length: u64,
    mode: MrMode,
}

/// A QP's creation parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpInit {
    /// Transport.
    pub qp_type: QpType,
    /// Protection domain.
    pub pd: Pdn,
    /// Send completion queue.
    pub send_cq: Cqn,
    /// Receive completion queue.
    pub recv_cq: Cqn,
    /// log2 of the send queue's WQEs.
    pub log_sq: u8,
    /// log2 of the receive queue's WQEs.
    pub log_rq: u8,
}

/// The HCA driver of one function.
#[derive(Debug)]
pub struct HcaDriver {
    pages: GuestPageAllocator,
    /// The application's page table: virtual page → guest-physical page.
    app: BTreeMap<u64, Gpa>,
    next_va: u64,
    cqs: BTreeMap<Cqn, CqState>,
    qps: BTreeMap<Qpn, QpInfo>,
    mrs: BTreeMap<Mkey, MrInfo>,
    next_variant: u8,
    stats: HcaDriverStats,
}

fn pages_of(va: u64, len: u64) -> impl Iterator<Item = u64> {
    let first = va / MR_PAGE_SIZE;
    let last = if len == 0 {
        first
    } else {
        (va + len - 1) / MR_PAGE_SIZE
    };
    first..=last
}

impl HcaDriver {
    /// A driver taking its rings and the application's pages from `pages`;
    /// application virtual addresses start at `app_base`.
    pub fn new(pages: GuestPageAllocator, app_base: u64) -> HcaDriver {
        HcaDriver {
            pages,
            app: BTreeMap::new(),
            next_va: app_base - app_base % MR_PAGE_SIZE,
            cqs: BTreeMap::new(),
            qps: BTreeMap::new(),
            mrs: BTreeMap::new(),
            next_variant: 0x11,
            stats: HcaDriverStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> &HcaDriverStats {
        &self.stats
    }

    fn expect<T>(r: Reply, f: impl FnOnce(Reply) -> Option<T>) -> Result<T, VerbsError> {
        f(r).ok_or(VerbsError::Reply(r))
    }

    fn zeroed_pages<B: HcaBus + ?Sized>(
        &mut self,
        bus: &mut B,
        bytes: u64,
    ) -> Result<Gpa, VerbsError> {
        let n = bytes.div_ceil(FRAME_SIZE).max(1);
        let base = self
            .pages
            .alloc_contiguous(n)
            .ok_or(VerbsError::OutOfPages)?;
        let zero = [0u8; FRAME_SIZE as usize];
        for i in 0..n {
            PhysMemory::write(bus, Gpa::new(base.raw() + i * FRAME_SIZE), &zero)?;
        }
        Ok(base)
    }

    // ---- the application's memory ----

    /// Reserves `len` bytes of application address space; with `populate`,
    /// backs every page now (as touching it would), else pages appear on
    /// first use (a fault the driver services). Returns the address.
    pub fn app_alloc<B: HcaBus + ?Sized>(
        &mut self,
        bus: &mut B,
        len: u64,
        populate: bool,
    ) -> Result<u64, VerbsError> {
        let va = self.next_va;
        let pages = len.div_ceil(MR_PAGE_SIZE).max(1);
        self.next_va += (pages + 1) * MR_PAGE_SIZE;
        if populate {
            for p in pages_of(va, len) {
                self.fault_in(bus, p)?;
            }
        }
        Ok(va)
    }

    /// The guest-physical page behind application page `vpn`, allocating a
    /// zeroed one when it has none yet.
    fn fault_in<B: HcaBus + ?Sized>(&mut self, bus: &mut B, vpn: u64) -> Result<Gpa, VerbsError> {
        if let Some(p) = self.app.get(&vpn) {
            return Ok(*p);
        }
        let page = self.pages.alloc_frame().ok_or(VerbsError::OutOfPages)?;
        PhysMemory::write(bus, page, &[0u8; FRAME_SIZE as usize])?;
        self.app.insert(vpn, page);
        self.stats.pages_faulted_in.inc();
        Ok(page)
    }

    /// The guest-physical address of application address `va`, if mapped.
    pub fn app_translate(&self, va: u64) -> Option<Gpa> {
        self.app
            .get(&(va / MR_PAGE_SIZE))
            .map(|p| Gpa::new(p.raw() + va % MR_PAGE_SIZE))
    }

    /// Writes application memory (faulting pages in).
    pub fn app_write<B: HcaBus + ?Sized>(
        &mut self,
        bus: &mut B,
        va: u64,
        data: &[u8],
    ) -> Result<(), VerbsError> {
        let mut done = 0usize;
        while done < data.len() {
            let a = va + done as u64;
            let n = ((MR_PAGE_SIZE - a % MR_PAGE_SIZE) as usize).min(data.len() - done);
            let page = self.fault_in(bus, a / MR_PAGE_SIZE)?;
            let piece = data.get(done..done + n).unwrap_or(&[]);
            PhysMemory::write(bus, Gpa::new(page.raw() + a % MR_PAGE_SIZE), piece)?;
            done += n;
        }
        Ok(())
    }

    /// Reads application memory; unmapped pages read as zeros.
    pub fn app_read<B: HcaBus + ?Sized>(
        &self,
        bus: &mut B,
        va: u64,
        buf: &mut [u8],
    ) -> Result<(), VerbsError> {
        let mut done = 0usize;
        while done < buf.len() {
            let a = va + done as u64;
            let n = ((MR_PAGE_SIZE - a % MR_PAGE_SIZE) as usize).min(buf.len() - done);
            let Some(piece) = buf.get_mut(done..done + n) else {
                break;
            };
            match self.app_translate(a) {
                Some(pa) => PhysMemory::read(bus, pa, piece)?,
                None => piece.fill(0),
            }
            done += n;
        }
        Ok(())
    }

    // ---- verbs ----

    /// Allocates a protection domain.
    pub fn alloc_pd<B: HcaBus + ?Sized>(&mut self, bus: &mut B) -> Result<Pdn, VerbsError> {
        Self::expect(bus.command(Command::AllocPd)?, |r| match r {
            Reply::Pd(p) => Some(p),
            _ => None,
        })
    }

    /// Registers `[va, va + len)`: pinned (every page faulted in and its
    /// translation written now), on demand (nothing written: the HCA
    /// faults), or implicit (the whole address space; `va` and `len` are
    /// ignored).
    pub fn reg_mr<B: HcaBus + ?Sized>(
        &mut self,
        bus: &mut B,
        pd: Pdn,
        va: u64,
        len: u64,
        access: Access,
        mode: MrMode,
    ) -> Result<Mkey, VerbsError> {
        let (start, length) = match mode {
            MrMode::Implicit => (0, u64::MAX),
            _ => (va, len),
        };
        // Each registration gets the next key variant, so a key kept from a
        // deregistered region does not match the index's next owner.
        let variant = self.next_variant;
        self.next_variant = self.next_variant.wrapping_add(1);
        let spec = MkeySpec {
            pd,
            start,
            length,
            access,
            mode,
            variant,
        };
        let key = Self::expect(bus.command(Command::CreateMkey(spec))?, |r| match r {
            Reply::Mkey(k) => Some(k),
            _ => None,
        })?;
        self.mrs.insert(
            key,
            MrInfo {
                start,
                length,
                mode,
            },
        );
        if mode == MrMode::Pinned {
            let mut pages = Vec::new();
            for vpn in pages_of(va, len) {
                pages.push(Some(self.fault_in(bus, vpn)?));
            }
            bus.command(Command::WriteMtt {
                mkey: key,
                va,
                pages,
                prefetch: false,
            })?;
        }
        Ok(key)
    }

    /// Deregisters a region.
    pub fn dereg_mr<B: HcaBus + ?Sized>(
        &mut self,
        bus: &mut B,
        key: Mkey,
    ) -> Result<(), VerbsError> {
        bus.command(Command::DestroyMkey(key))?;
        self.mrs.remove(&key);
        Ok(())
    }

    /// Prefetch advice on `[va, va + len)` of region `key`.
    pub fn advise_mr<B: HcaBus + ?Sized>(
        &mut self,
        bus: &mut B,
        key: Mkey,
        va: u64,
        len: u64,
        advice: Advice,
    ) -> Result<(), VerbsError> {
        let mr = *self.mrs.get(&key).ok_or(VerbsError::Unknown)?;
        let inside = mr.mode == MrMode::Implicit
            || (va >= mr.start
                && va
                    .checked_add(len)
                    .is_some_and(|e| e <= mr.start.saturating_add(mr.length)));
        if !inside {
            return Err(VerbsError::OutOfRange);
        }
        for vpn in pages_of(va, len) {
            let page = match advice {
                Advice::PrefetchNoFault => self.app.get(&vpn).copied(),
                Advice::PrefetchRead | Advice::PrefetchWrite => Some(self.fault_in(bus, vpn)?),
            };
            if let Some(p) = page {
                bus.command(Command::WriteMtt {
                    mkey: key,
                    va: vpn * MR_PAGE_SIZE,
                    pages: vec![Some(p)],
                    prefetch: true,
                })?;
                self.stats.pages_prefetched.inc();
            }
        }
        Ok(())
    }

    /// Invalidates the translations of application page range
    /// `[va, va + len)` in region `key` (before the guest reuses or
    /// unmaps the pages).
    pub fn invalidate<B: HcaBus + ?Sized>(
        &mut self,
        bus: &mut B,
        key: Mkey,
        va: u64,
        len: u64,
    ) -> Result<(), VerbsError> {
        let pages: Vec<Option<Gpa>> = pages_of(va, len).map(|_| None).collect();
        bus.command(Command::WriteMtt {
            mkey: key,
            va,
            pages,
            prefetch: false,
        })?;
        Ok(())
    }

    /// Creates a CQ of `2^log_size` entries.
    pub fn create_cq<B: HcaBus + ?Sized>(
        &mut self,
        bus: &mut B,
        log_size: u8,
    ) -> Result<Cqn, VerbsError> {
        let base = self.zeroed_pages(bus, (1u64 << log_size) * CQE_SIZE)?;
        let ring = Ring { base, log_size };
        let cqn = Self::expect(bus.command(Command::CreateCq(ring))?, |r| match r {
            Reply::Cq(c) => Some(c),
            _ => None,
        })?;
        self.cqs.insert(cqn, CqState { ring, ci: 0 });
        Ok(cqn)
    }

    /// Creates a QP.
    pub fn create_qp<B: HcaBus + ?Sized>(
        &mut self,
        bus: &mut B,
        init: QpInit,
    ) -> Result<Qpn, VerbsError> {
        let sq = Ring {
            base: self.zeroed_pages(bus, (1u64 << init.log_sq) * WQE_STRIDE)?,
            log_size: init.log_sq,
        };
        let rq = Ring {
            base: self.zeroed_pages(bus, (1u64 << init.log_rq) * WQE_STRIDE)?,
            log_size: init.log_rq,
        };
        let qpn = Self::expect(
            bus.command(Command::CreateQp {
                qp_type: init.qp_type,
                pd: init.pd,
                send_cq: init.send_cq,
                recv_cq: init.recv_cq,
                sq,
                rq,
            })?,
            |r| match r {
                Reply::Qp(q) => Some(q),
                _ => None,
            },
        )?;
        self.qps.insert(
            qpn,
            QpInfo {
                qp_type: init.qp_type,
                sq: WorkQueue::new(sq),
                rq: WorkQueue::new(rq),
                send_cq: init.send_cq,
                recv_cq: init.recv_cq,
                sq_ci: 0,
            },
        );
        Ok(qpn)
    }

    /// Modifies a QP.
    pub fn modify_qp<B: HcaBus + ?Sized>(
        &mut self,
        bus: &mut B,
        qpn: Qpn,
        state: QpState,
        attr: QpAttr,
    ) -> Result<(), VerbsError> {
        bus.command(Command::ModifyQp { qpn, state, attr })?;
        Ok(())
    }

    /// Creates an address handle for UD sends.
    pub fn create_ah<B: HcaBus + ?Sized>(
        &mut self,
        bus: &mut B,
        av: iovirt_hca::qp::AddressVector,
    ) -> Result<u32, VerbsError> {
        Self::expect(bus.command(Command::CreateAh(av))?, |r| match r {
            Reply::Ah(a) => Some(a),
            _ => None,
        })
    }

    /// Posts a send work request and rings the send doorbell.
    pub fn post_send<B: HcaBus + ?Sized>(
        &mut self,
        bus: &mut B,
        qpn: Qpn,
        wr: &SendWr,
    ) -> Result<(), VerbsError> {
        let qp = self.qps.get_mut(&qpn).ok_or(VerbsError::Unknown)?;
        let mut sge = [Sge {
            addr: 0,
            length: 0,
            lkey: Mkey(0),
        }; SEND_SGES];
        let mut n = 0u8;
        for (slot, s) in sge.iter_mut().zip(wr.sges.iter().flatten()) {
            *slot = *s;
            n += 1;
        }
        let wqe = SendWqe {
            opcode: wr.opcode,
            flags: wr.flags,
            imm: wr.imm,
            remote: wr.remote,
            sge,
            num_sge: n,
        };
        qp.sq
            .post(bus, qpn, doorbell::SQ, wr.wr_id, wqe.layout().as_bytes())?;
        self.stats.posted_sends.inc();
        Ok(())
    }

    /// Posts a receive work request and rings the receive doorbell.
    pub fn post_recv<B: HcaBus + ?Sized>(
        &mut self,
        bus: &mut B,
        qpn: Qpn,
        wr_id: u64,
        sges: &[Sge],
    ) -> Result<(), VerbsError> {
        if sges.len() > iovirt_hca::wqe::RECV_SGES {
            return Err(VerbsError::TooManySges);
        }
        let qp = self.qps.get_mut(&qpn).ok_or(VerbsError::Unknown)?;
        qp.rq.post(
            bus,
            qpn,
            doorbell::RQ,
            wr_id,
            RecvWqe::layout(sges).as_bytes(),
        )?;
        self.stats.posted_recvs.inc();
        Ok(())
    }

    /// Takes up to `max` completions of `cqn` into `out`; returns how many.
    pub fn poll_cq<B: HcaBus + ?Sized>(
        &mut self,
        bus: &mut B,
        cqn: Cqn,
        max: usize,
        out: &mut Vec<WorkCompletion>,
    ) -> Result<usize, VerbsError> {
        let cq = self.cqs.get_mut(&cqn).ok_or(VerbsError::Unknown)?;
        let mut n = 0;
        while n < max {
            let slot = u64::from(cq.ci & (cq.ring.entries() - 1));
            let mut raw = [0u8; CQE_SIZE as usize];
            PhysMemory::read(
                bus,
                Gpa::new(cq.ring.base.raw() + slot * CQE_SIZE),
                &mut raw,
            )?;
            let Ok(layout) = CqeLayout::read_from_bytes(&raw) else {
                break;
            };
            let want = (cq.ci >> cq.ring.log_size) & 1 == 0;
            if (layout.owner & 1 != 0) != want {
                break;
            }
            cq.ci = cq.ci.wrapping_add(1);
            let Some(cqe) = Cqe::parse(&layout) else {
                continue;
            };
            let Some(qp) = self.qps.get_mut(&cqe.qpn) else {
                continue;
            };
            let send = matches!(
                cqe.opcode,
                CqeOpcode::Send | CqeOpcode::RdmaWrite | CqeOpcode::RdmaRead
            );
            let wr_id = if send {
                // Unsignaled WQEs before this one completed silently.
                let done = cqe.wqe_index.wrapping_sub(qp.sq_ci).wrapping_add(1);
                qp.sq.outstanding = qp.sq.outstanding.saturating_sub(u32::from(done));
                qp.sq_ci = cqe.wqe_index.wrapping_add(1);
                qp.sq.wr_id(cqe.wqe_index)
            } else {
                qp.rq.outstanding = qp.rq.outstanding.saturating_sub(1);
                qp.rq.wr_id(cqe.wqe_index)
            };
            out.push(WorkCompletion {
                wr_id: wr_id.unwrap_or(0),
                qpn: cqe.qpn,
                opcode: cqe.opcode,
                status: cqe.status,
                byte_len: cqe.byte_len,
                imm: cqe.imm,
                src_qp: cqe.src_qp,
            });
            n += 1;
        }
        if n > 0 {
            let value = (u64::from(cqn.0) << 32) | u64::from(cq.ci);
            RegisterAccess::write(bus, doorbell::CQ_CI, Width::U64, value);
            self.stats.completions.add(n as u64);
        }
        Ok(n)
    }

    /// Arms a CQ for a completion event.
    pub fn arm_cq<B: HcaBus + ?Sized>(&mut self, bus: &mut B, cqn: Cqn, solicited_only: bool) {
        RegisterAccess::write(
            bus,
            doorbell::CQ_ARM,
            Width::U64,
            (u64::from(cqn.0) << 32) | u64::from(solicited_only),
        );
    }

    /// Services the function's event queue: guest-stage page faults are
    /// resolved here (the page found or faulted in the application's page
    /// table, its translation written, the QP resumed); other events are
    /// returned to the caller.
    pub fn handle_events<B: HcaBus + ?Sized>(
        &mut self,
        bus: &mut B,
        out: &mut Vec<Event>,
    ) -> Result<usize, VerbsError> {
        let mut serviced = 0;
        loop {
            let event = Self::expect(bus.command(Command::PollEvent)?, |r| match r {
                Reply::Event(e) => Some(e),
                _ => None,
            })?;
            match event {
                None => return Ok(serviced),
                Some(Event::PageFault(f)) if f.stage == FaultStage::Guest => {
                    self.service_fault(bus, &f)?;
                    serviced += 1;
                }
                Some(e) => out.push(e),
            }
        }
    }

    /// Seed 001, paragraph 0058: fill the translation of the faulting page
    /// (faulting it into the application first when it has no page), then
    /// resume the QP.
    pub fn service_fault<B: HcaBus + ?Sized>(
        &mut self,
        bus: &mut B,
        f: &PageFault,
    ) -> Result<(), VerbsError> {
        let vpn = f.va / MR_PAGE_SIZE;
        let page = self.fault_in(bus, vpn)?;
        bus.command(Command::WriteMtt {
            mkey: f.mkey,
            va: f.va,
            pages: vec![Some(page)],
            prefetch: false,
        })?;
        bus.command(Command::ResumePageFault(f.token))?;
        self.stats.faults_serviced.inc();
        Ok(())
    }

    /// The QPs' types (for tests and reports).
    pub fn qp_type(&self, qpn: Qpn) -> Option<QpType> {
        self.qps.get(&qpn).map(|q| q.qp_type)
    }

    /// The CQs a QP completes to.
    pub fn qp_cqs(&self, qpn: Qpn) -> Option<(Cqn, Cqn)> {
        self.qps.get(&qpn).map(|q| (q.send_cq, q.recv_cq))
    }
}

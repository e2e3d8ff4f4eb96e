//! The HCA: its functions, object tables and command interface.
//!
//! Every command names the function that issues it and may only touch that
//! function's objects: a VM drives its own virtual function directly
//! (seed 001, paragraph 0039) and cannot reach another's QPs, CQs or keys.
//! Commands check every guest-supplied field and answer with a
//! [`CmdError`]; nothing they are given can make the device panic or grow
//! beyond its configured tables.

use std::collections::{BTreeMap, VecDeque};

use iovirt_core::{Counter, Gpa, Gvmi, Irq};
use serde::{Deserialize, Serialize};

use crate::cq::Cq;
use crate::event::Event;
use crate::ids::{Cqn, FunctionId, Mkey, Pdn, Qpn};
use crate::mr::{Access, MR_PAGE_SIZE, MkeyContext, Mpt, MrMode, Mtt, MttEntry, OdpCounters};
use crate::qp::{QpAttr, QpContext, QpState, QpType, Ring};
use crate::transport::Qp;

/// Sizes of the HCA's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HcaConfig {
    /// Queue pairs (QPNs 2 to `max_qps + 1`).
    pub max_qps: u32,
    /// Completion queues.
    pub max_cqs: u32,
    /// Memory keys.
    pub max_mkeys: u32,
    /// Protection domains.
    pub max_pds: u32,
    /// Explicit MTT entries of each function.
    pub mtt_entries: u32,
    /// Implicit-ODP translations each function may hold.
    pub implicit_entries: usize,
    /// Entries of each function's event queue; events beyond are dropped
    /// and counted.
    pub event_queue_depth: usize,
    /// Address handles of each function (UD destinations).
    pub max_ahs: u32,
    /// Largest ring a QP or CQ may have, log2.
    pub max_log_ring: u8,
    /// Seed 004: a fault whose estimate is at most this many nanoseconds is
    /// waited out with the packet held in the hold buffer instead of an RNR
    /// NAK.
    pub hold_threshold_ns: u64,
    /// Seed 004: packets the hold buffer keeps, over all QPs.
    pub hold_buffer_packets: usize,
}

impl Default for HcaConfig {
    fn default() -> HcaConfig {
        HcaConfig {
            max_qps: 1024,
            max_cqs: 1024,
            max_mkeys: 4096,
            max_pds: 256,
            mtt_entries: 1 << 18,
            implicit_entries: 1 << 16,
            event_queue_depth: 256,
            max_ahs: 256,
            max_log_ring: 15,
            hold_threshold_ns: 0,
            hold_buffer_packets: 0,
        }
    }
}

/// A memory region to register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MkeySpec {
    /// Its protection domain.
    pub pd: Pdn,
    /// First virtual address (0 for an implicit region).
    pub start: u64,
    /// Length in bytes (`u64::MAX` for an implicit region).
    pub length: u64,
    /// Access rights.
    pub access: Access,
    /// Pinned, on demand, or implicit on demand.
    pub mode: MrMode,
    /// The key's variant byte.
    pub variant: u8,
}

/// A function's identity on the network and on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionConfig {
    /// The GVMI of the VM that owns the function (0: the host).
    pub gvmi: Gvmi,
    /// Source MAC of its packets.
    pub mac: [u8; 6],
    /// Source IPv4 address (its RoCEv2 GID).
    pub ip: [u8; 4],
    /// The interrupt its event queue raises.
    pub irq: Irq,
}

/// Why a command failed (the status a real command interface returns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error, Serialize, Deserialize)]
pub enum CmdError {
    /// The object does not exist or belongs to another function.
    #[error("bad resource")]
    BadResource,
    /// A field is out of range or inconsistent; names it.
    #[error("bad parameter `{0}`")]
    BadParam(&'static str),
    /// The table is full.
    #[error("resources exhausted")]
    Exhausted,
    /// The object is still in use.
    #[error("resource busy")]
    Busy,
    /// The QP transition is not allowed or lacks an attribute.
    #[error("bad QP state transition: {0}")]
    BadState(crate::qp::ModifyError),
}

/// Per-function state.
#[derive(Debug, Clone)]
pub(crate) struct Function {
    pub(crate) config: FunctionConfig,
    pub(crate) mtt: Mtt,
    pub(crate) events: VecDeque<Event>,
    pub(crate) ahs: Vec<Option<crate::qp::AddressVector>>,
}

/// Device-wide counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HcaStats {
    /// Commands refused.
    pub cmd_errors: Counter,
    /// Events dropped because an event queue was full.
    pub events_dropped: Counter,
    /// Doorbell writes that named no QP or CQ of the function, or had a bad width.
    pub bad_doorbells: Counter,
    /// Packets received.
    pub rx_packets: Counter,
    /// Packets received that failed to parse (see `rx_malformed_by_cause`).
    pub rx_malformed: Counter,
    /// Malformed packets by cause.
    pub rx_malformed_by_cause: BTreeMap<String, Counter>,
    /// Packets for a QPN with no QP, or a QP not able to receive.
    pub rx_unknown_qp: Counter,
    /// Packets sent.
    pub tx_packets: Counter,
    /// Payload bytes sent.
    pub tx_payload_bytes: Counter,
    /// Payload bytes received and placed.
    pub rx_payload_bytes: Counter,
    /// RNR NAKs sent.
    pub rnr_naks_sent: Counter,
    /// RNR NAKs received.
    pub rnr_naks_received: Counter,
    /// PSN-sequence-error NAKs sent.
    pub seq_naks_sent: Counter,
    /// Other NAKs sent (invalid request, remote access, operational).
    pub naks_sent: Counter,
    /// NAKs received (any but RNR).
    pub naks_received: Counter,
    /// Duplicate requests answered (re-ACK or READ replay).
    pub duplicates: Counter,
    /// Packets dropped: out of sequence after a NAK, UC/UD losses, faults.
    pub rx_dropped: Counter,
    /// Packets retransmitted (timeout, NAK, RNR).
    pub retransmitted_packets: Counter,
    /// Transport timeouts.
    pub timeouts: Counter,
    /// Unsolicited ACKs sent after a fault was resumed.
    pub unsolicited_acks: Counter,
    /// Packets held in the hold buffer during a short fault (seed 004).
    pub held_packets: Counter,
    /// Page faults raised, by stage.
    pub guest_page_faults: Counter,
    /// Host-stage page faults raised.
    pub host_page_faults: Counter,
    /// QPs that went to the error state.
    pub qp_errors: Counter,
    /// CQ overruns: a completion found its CQ full, and the CQ went to error.
    pub cq_overflows: Counter,
    /// CQ protection errors: a CQE write faulted, and the CQ went to error.
    pub cq_access_errors: Counter,
    /// Completions not written because their CQ was full, unreachable or
    /// already in error.
    pub completions_lost: Counter,
}

/// The HCA model.
#[derive(Debug)]
pub struct Hca {
    pub(crate) config: HcaConfig,
    pub(crate) functions: BTreeMap<FunctionId, Function>,
    pub(crate) mpt: Mpt,
    pub(crate) pds: BTreeMap<Pdn, (FunctionId, u32)>,
    pub(crate) next_pd: u32,
    pub(crate) cqs: BTreeMap<Cqn, Cq>,
    pub(crate) next_cq: u32,
    pub(crate) qps: BTreeMap<Qpn, Qp>,
    pub(crate) stats: HcaStats,
    pub(crate) next_token: u32,
    /// The QP the transmit scheduler served last.
    pub(crate) rr_cursor: Option<Qpn>,
    /// The latest virtual time the HCA has seen.
    pub(crate) now: iovirt_core::SimTime,
    /// Reused payload buffer (no allocation or zeroing per packet).
    pub(crate) scratch: iovirt_core::FrameBuf,
    /// Reused frame buffer.
    pub(crate) frame: Vec<u8>,
}

impl Hca {
    /// An HCA with no functions.
    pub fn new(config: HcaConfig) -> Hca {
        Hca {
            config,
            functions: BTreeMap::new(),
            mpt: Mpt::new(config.max_mkeys.min(1 << 24)),
            pds: BTreeMap::new(),
            next_pd: 1,
            cqs: BTreeMap::new(),
            next_cq: 1,
            qps: BTreeMap::new(),
            stats: HcaStats::default(),
            next_token: 1,
            rr_cursor: None,
            now: iovirt_core::SimTime::ZERO,
            scratch: iovirt_core::FrameBuf::with_capacity(4096),
            frame: Vec::with_capacity(4096 + 128),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HcaConfig {
        &self.config
    }

    /// Device counters.
    pub fn stats(&self) -> &HcaStats {
        &self.stats
    }

    /// Enables function `id` (the host driver's privileged operation: it
    /// assigns a virtual function to a VM with the VM's GVMI).
    pub fn add_function(&mut self, id: FunctionId, config: FunctionConfig) -> Result<(), CmdError> {
        if self.functions.contains_key(&id) {
            return Err(CmdError::Busy);
        }
        self.functions.insert(
            id,
            Function {
                config,
                mtt: Mtt::new(self.config.mtt_entries, self.config.implicit_entries),
                events: VecDeque::new(),
                ahs: Vec::new(),
            },
        );
        Ok(())
    }

    /// A function's configuration.
    pub fn function(&self, id: FunctionId) -> Option<&FunctionConfig> {
        self.functions.get(&id).map(|f| &f.config)
    }

    pub(crate) fn fail<T>(
        &mut self,
        f: FunctionId,
        what: &str,
        e: CmdError,
    ) -> Result<T, CmdError> {
        self.stats.cmd_errors.inc();
        log::debug!("hca {f}: {what} refused: {e}");
        Err(e)
    }

    fn func(&mut self, f: FunctionId) -> Result<&mut Function, CmdError> {
        self.functions.get_mut(&f).ok_or(CmdError::BadResource)
    }

    /// Allocates a protection domain.
    pub fn alloc_pd(&mut self, f: FunctionId) -> Result<Pdn, CmdError> {
        if self.func(f).is_err() {
            return self.fail(f, "alloc_pd", CmdError::BadResource);
        }
        if self.pds.len() >= self.config.max_pds as usize {
            return self.fail(f, "alloc_pd", CmdError::Exhausted);
        }
        let pd = Pdn(self.next_pd);
        self.next_pd = self.next_pd.wrapping_add(1).max(1);
        self.pds.insert(pd, (f, 0));
        Ok(pd)
    }

    /// Frees a protection domain no region or QP uses.
    pub fn dealloc_pd(&mut self, f: FunctionId, pd: Pdn) -> Result<(), CmdError> {
        match self.pds.get(&pd) {
            Some(&(owner, 0)) if owner == f => {
                self.pds.remove(&pd);
                Ok(())
            }
            Some(&(owner, _)) if owner == f => self.fail(f, "dealloc_pd", CmdError::Busy),
            _ => self.fail(f, "dealloc_pd", CmdError::BadResource),
        }
    }

    fn pd_use(&mut self, f: FunctionId, pd: Pdn, delta: i32) -> Result<(), CmdError> {
        match self.pds.get_mut(&pd) {
            Some((owner, users)) if *owner == f => {
                *users = users.saturating_add_signed(delta);
                Ok(())
            }
            _ => Err(CmdError::BadResource),
        }
    }

    /// Registers a memory region described by `spec`; returns its key
    /// (`spec.variant` in the low byte). Explicit regions get MTT entries,
    /// all not present until the driver writes them.
    pub fn create_mkey(&mut self, f: FunctionId, spec: MkeySpec) -> Result<Mkey, CmdError> {
        match self.create_mkey_inner(f, spec) {
            Ok(k) => Ok(k),
            Err(e) => self.fail(f, "create_mkey", e),
        }
    }

    fn create_mkey_inner(&mut self, f: FunctionId, spec: MkeySpec) -> Result<Mkey, CmdError> {
        let MkeySpec {
            pd,
            start,
            length,
            access,
            mode,
            variant,
        } = spec;
        let gvmi = self.func(f)?.config.gvmi;
        if !matches!(self.pds.get(&pd), Some(&(owner, _)) if owner == f) {
            return Err(CmdError::BadResource);
        }
        if access.contains(Access::REMOTE_WRITE) && !access.contains(Access::LOCAL_WRITE) {
            return Err(CmdError::BadParam("access"));
        }
        let (mtt_base, mtt_pages) = match mode {
            MrMode::Implicit => {
                if start != 0 || length != u64::MAX {
                    return Err(CmdError::BadParam("length"));
                }
                (0, 0)
            }
            MrMode::Pinned | MrMode::OnDemand => {
                if length == 0 || start.checked_add(length).is_none() {
                    return Err(CmdError::BadParam("length"));
                }
                let pages = MkeyContext::span_pages(start, length)
                    .and_then(|p| u32::try_from(p).ok())
                    .ok_or(CmdError::BadParam("length"))?;
                let base = self
                    .func(f)?
                    .mtt
                    .alloc(pages)
                    .map_err(|_| CmdError::Exhausted)?;
                (base, pages)
            }
        };
        let Some(index) = self.mpt.free_index() else {
            if let Ok(func) = self.func(f) {
                func.mtt.release(mtt_base, mtt_pages);
            }
            return Err(CmdError::Exhausted);
        };
        let key = Mkey::new(index, variant);
        self.mpt.insert(MkeyContext {
            key,
            function: f,
            pd,
            gvmi,
            start,
            length,
            access,
            mode,
            mtt_base,
            mtt_pages,
            counters: OdpCounters::default(),
        });
        self.pd_use(f, pd, 1)?;
        Ok(key)
    }

    /// Destroys a region; its MTT entries return to the function.
    pub fn destroy_mkey(&mut self, f: FunctionId, key: Mkey) -> Result<(), CmdError> {
        if self.mpt.get(key).is_none_or(|c| c.function != f) {
            return self.fail(f, "destroy_mkey", CmdError::BadResource);
        }
        if let Some(ctx) = self.mpt.remove(key) {
            if let Ok(func) = self.func(f) {
                func.mtt.release(ctx.mtt_base, ctx.mtt_pages);
            }
            let _ = self.pd_use(f, ctx.pd, -1);
        }
        Ok(())
    }

    /// A region's context (counters included).
    pub fn mkey(&self, key: Mkey) -> Option<&MkeyContext> {
        self.mpt.get(key)
    }

    /// Writes translations for pages of region `key` from the page holding
    /// `va`: `pages[i]` is the "physical" page of the i-th page (`None`
    /// clears it, an invalidation). `prefetch` counts the filled pages as
    /// prefetched (advice) instead of fault service.
    pub fn write_mtt(
        &mut self,
        f: FunctionId,
        key: Mkey,
        va: u64,
        pages: &[Option<Gpa>],
        prefetch: bool,
    ) -> Result<(), CmdError> {
        let r = self.write_mtt_inner(f, key, va, pages, prefetch);
        if let Err(e) = r {
            return self.fail(f, "write_mtt", e);
        }
        Ok(())
    }

    fn write_mtt_inner(
        &mut self,
        f: FunctionId,
        key: Mkey,
        va: u64,
        pages: &[Option<Gpa>],
        prefetch: bool,
    ) -> Result<(), CmdError> {
        let ctx = self
            .mpt
            .get(key)
            .filter(|c| c.function == f)
            .ok_or(CmdError::BadResource)?
            .clone();
        // The first page must be the region's; each entry's page is
        // checked against the region's page span below.
        if !ctx.contains(va, 1) {
            return Err(CmdError::BadParam("va"));
        }
        let first = va - va % MR_PAGE_SIZE;
        // Every page named must be the region's before any entry changes:
        // a refused command leaves the table as it was, and a list that
        // runs past the top of the address space (an implicit region's
        // last page) must not overflow the page arithmetic below.
        let last_va = u64::try_from(pages.len().saturating_sub(1))
            .ok()
            .and_then(|n| n.checked_mul(MR_PAGE_SIZE))
            .and_then(|off| first.checked_add(off))
            .ok_or(CmdError::BadParam("pages"))?;
        let in_region = match ctx.mode {
            MrMode::Implicit => true,
            MrMode::Pinned | MrMode::OnDemand => ctx.page_index(last_va) < u64::from(ctx.mtt_pages),
        };
        if !in_region {
            return Err(CmdError::BadParam("pages"));
        }
        let func = self.functions.get_mut(&f).ok_or(CmdError::BadResource)?;
        let (filled, cleared) = match ctx.mode {
            MrMode::Implicit => func
                .mtt
                .write_implicit(first / MR_PAGE_SIZE, pages)
                .map_err(|_| CmdError::Exhausted)?,
            MrMode::Pinned | MrMode::OnDemand => {
                let (mut filled, mut cleared) = (0u64, 0u64);
                for (i, page) in pages.iter().enumerate() {
                    // In range: checked above through `last_va`.
                    let slot =
                        u64::from(ctx.mtt_base) + ctx.page_index(first + i as u64 * MR_PAGE_SIZE);
                    let was = func.mtt.get(slot).is_some_and(MttEntry::is_present);
                    func.mtt
                        .set(slot, page.map(MttEntry::present).unwrap_or_default());
                    if page.is_some() {
                        filled += 1;
                    } else if was {
                        cleared += 1;
                    }
                }
                (filled, cleared)
            }
        };
        if let Some(c) = self.mpt.get_mut(key) {
            if prefetch {
                c.counters.page_prefetch.add(filled);
            }
            // Invalidation is synchronous here: no DMA is in flight between
            // commands, so every invalidation is handled when it returns.
            c.counters.page_invalidations.add(cleared);
            c.counters.page_invalidations_handled.add(cleared);
        }
        Ok(())
    }

    /// Creates a completion queue over `ring` in the function's memory.
    pub fn create_cq(&mut self, f: FunctionId, ring: Ring) -> Result<Cqn, CmdError> {
        if self.func(f).is_err() {
            return self.fail(f, "create_cq", CmdError::BadResource);
        }
        if ring.log_size > self.config.max_log_ring {
            return self.fail(f, "create_cq", CmdError::BadParam("log_size"));
        }
        if self.cqs.len() >= self.config.max_cqs as usize {
            return self.fail(f, "create_cq", CmdError::Exhausted);
        }
        let cqn = Cqn(self.next_cq);
        self.next_cq = self.next_cq.wrapping_add(1).max(1);
        self.cqs.insert(cqn, Cq::new(cqn, f, ring));
        Ok(cqn)
    }

    /// Destroys a CQ no QP uses.
    pub fn destroy_cq(&mut self, f: FunctionId, cqn: Cqn) -> Result<(), CmdError> {
        match self.cqs.get(&cqn) {
            Some(cq) if cq.function == f && cq.users == 0 => {
                self.cqs.remove(&cqn);
                Ok(())
            }
            Some(cq) if cq.function == f => self.fail(f, "destroy_cq", CmdError::Busy),
            _ => self.fail(f, "destroy_cq", CmdError::BadResource),
        }
    }

    /// A CQ's device-side state.
    pub fn cq(&self, cqn: Cqn) -> Option<&Cq> {
        self.cqs.get(&cqn)
    }

    /// Creates an address handle (a UD destination) of function `f`.
    pub fn create_ah(
        &mut self,
        f: FunctionId,
        av: crate::qp::AddressVector,
    ) -> Result<u32, CmdError> {
        let max = self.config.max_ahs as usize;
        let Ok(func) = self.func(f) else {
            return self.fail(f, "create_ah", CmdError::BadResource);
        };
        let slot = func.ahs.iter().position(Option::is_none);
        let index = match slot {
            Some(i) => i,
            None if func.ahs.len() < max => {
                func.ahs.push(None);
                func.ahs.len() - 1
            }
            None => return self.fail(f, "create_ah", CmdError::Exhausted),
        };
        if let Some(s) = func.ahs.get_mut(index) {
            *s = Some(av);
        }
        Ok(index as u32)
    }

    /// Creates a QP in RESET.
    #[allow(clippy::too_many_arguments)]
    pub fn create_qp(
        &mut self,
        f: FunctionId,
        qp_type: QpType,
        pd: Pdn,
        send_cq: Cqn,
        recv_cq: Cqn,
        sq: Ring,
        rq: Ring,
    ) -> Result<Qpn, CmdError> {
        let owned_cq = |h: &Hca, c: Cqn| h.cqs.get(&c).is_some_and(|cq| cq.function == f);
        if self.func(f).is_err() || !owned_cq(self, send_cq) || !owned_cq(self, recv_cq) {
            return self.fail(f, "create_qp", CmdError::BadResource);
        }
        if !matches!(self.pds.get(&pd), Some(&(owner, _)) if owner == f) {
            return self.fail(f, "create_qp", CmdError::BadResource);
        }
        if sq.log_size > self.config.max_log_ring || rq.log_size > self.config.max_log_ring {
            return self.fail(f, "create_qp", CmdError::BadParam("log_size"));
        }
        // QPNs 0 and 1 are InfiniBand's special QPs.
        let Some(qpn) = (2..self.config.max_qps.saturating_add(2))
            .filter_map(Qpn::new)
            .find(|q| !self.qps.contains_key(q))
        else {
            return self.fail(f, "create_qp", CmdError::Exhausted);
        };
        let ctx = QpContext::new(qpn, qp_type, f, pd, send_cq, recv_cq, sq, rq);
        self.qps.insert(qpn, Qp::new(ctx));
        for c in [send_cq, recv_cq] {
            if let Some(cq) = self.cqs.get_mut(&c) {
                cq.users += 1;
            }
        }
        let _ = self.pd_use(f, pd, 1);
        Ok(qpn)
    }

    /// Modifies a QP's state and attributes. Moving to RESET clears its
    /// queues' indices; moving to ERR flushes outstanding work.
    pub fn modify_qp(
        &mut self,
        f: FunctionId,
        qpn: Qpn,
        to: QpState,
        attr: &QpAttr,
    ) -> Result<(), CmdError> {
        let Some(qp) = self.qps.get_mut(&qpn).filter(|q| q.ctx.function == f) else {
            return self.fail(f, "modify_qp", CmdError::BadResource);
        };
        if let Err(e) = qp.ctx.modify(to, attr) {
            return self.fail(f, "modify_qp", CmdError::BadState(e));
        }
        match to {
            QpState::Reset => qp.reset(),
            QpState::Rts | QpState::Rtr | QpState::Init => qp.sync_psns(),
            QpState::Err | QpState::Sqe => {}
        }
        Ok(())
    }

    /// A QP's context.
    pub fn qp(&self, qpn: Qpn) -> Option<&QpContext> {
        self.qps.get(&qpn).map(|q| &q.ctx)
    }

    /// A QP's transport counters.
    pub fn qp_stats(&self, qpn: Qpn) -> Option<&crate::transport::QpStats> {
        self.qps.get(&qpn).map(|q| &q.stats)
    }

    /// Destroys a QP.
    pub fn destroy_qp(&mut self, f: FunctionId, qpn: Qpn) -> Result<(), CmdError> {
        if self.qps.get(&qpn).is_none_or(|q| q.ctx.function != f) {
            return self.fail(f, "destroy_qp", CmdError::BadResource);
        }
        if let Some(qp) = self.qps.remove(&qpn) {
            for c in [qp.ctx.send_cq, qp.ctx.recv_cq] {
                if let Some(cq) = self.cqs.get_mut(&c) {
                    cq.users = cq.users.saturating_sub(1);
                }
            }
            let _ = self.pd_use(f, qp.ctx.pd, -1);
        }
        Ok(())
    }

    /// Takes the oldest event of function `f`'s event queue.
    pub fn poll_event(&mut self, f: FunctionId) -> Option<Event> {
        self.functions.get_mut(&f)?.events.pop_front()
    }

    /// Events waiting in function `f`'s event queue.
    pub fn pending_events(&self, f: FunctionId) -> usize {
        self.functions.get(&f).map_or(0, |x| x.events.len())
    }

    /// Queues `event` for function `f` (bounded); returns the interrupt to raise.
    pub(crate) fn post_event(&mut self, f: FunctionId, event: Event) -> Option<Irq> {
        let depth = self.config.event_queue_depth;
        let Some(func) = self.functions.get_mut(&f) else {
            self.stats.events_dropped.inc();
            return None;
        };
        if func.events.len() >= depth {
            self.stats.events_dropped.inc();
            log::warn!("hca {f}: event queue full, {event:?} dropped");
            return None;
        }
        func.events.push_back(event);
        Some(func.config.irq)
    }

    pub(crate) fn token(&mut self) -> u32 {
        let t = self.next_token;
        self.next_token = self.next_token.wrapping_add(1).max(1);
        t
    }
}

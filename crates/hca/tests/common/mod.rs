//! A small HCA rig for the hostile-input tests: two functions over a test
//! `GvmiDma` that records every write, helpers to create objects through
//! commands, to post WQEs into guest memory and to build frames.

#![allow(dead_code, unreachable_pub)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::ops::Range;

use iovirt_core::{
    AccessKind, Cost, DmaFault, FaultReason, Gpa, Gvmi, GvmiDma, Iova, Irq, SimTime,
};
use iovirt_hca::cqe::{CQE_SIZE, Cqe, CqeLayout};
use iovirt_hca::mr::{Access, MrMode};
use iovirt_hca::qp::{AddressVector, PathMtu, QpAttr, QpState, QpType, Ring};
use iovirt_hca::wire::{AethSyndrome, BthRepr, Opcode, Psn, Reth, RoceHeaders, RocePacket};
use iovirt_hca::wqe::{RecvWqe, SendWqeLayout, Sge, WQE_STRIDE};
use iovirt_hca::{
    Command, Cqn, FaultOracle, FaultStage, FunctionConfig, FunctionId, Hca, HcaConfig, HcaEnv,
    Mkey, MkeySpec, Pdn, Qpn, Reply, doorbell,
};
use zerocopy::{FromBytes, IntoBytes};

pub const PAGE: u64 = 4096;
pub const F1: FunctionId = FunctionId(1);
pub const F2: FunctionId = FunctionId(2);
pub const PEER_IP: [u8; 4] = [10, 0, 0, 99];
pub const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 99];
pub const PEER_QPN: u32 = 0x77;

/// Guest-physical layout of each function's memory.
pub const CQ_BASE: u64 = 0x1_0000;
pub const SQ_BASE: u64 = 0x2_0000;
pub const RQ_BASE: u64 = 0x3_0000;
/// Data buffers (regions map their virtual pages here, page for page).
pub const DATA_GPA: u64 = 0x10_0000;
/// A present page that belongs to no region and no ring.
pub const FORBIDDEN_GPA: u64 = 0x8_0000;
/// The first virtual address of every region the rig registers.
pub const VA: u64 = 0x4000_0000;
pub const REGION_PAGES: u64 = 4;

pub fn gvmi(f: FunctionId) -> Gvmi {
    Gvmi(f.0 + 10)
}

pub fn ip(f: FunctionId) -> [u8; 4] {
    [10, 0, 0, f.0 as u8]
}

/// Sparse VM memory: 4 KiB pages per (GVMI, page number); absent pages
/// fault with `NotPresent`. Every successful write is logged.
#[derive(Debug, Default)]
pub struct TestMem {
    pub pages: BTreeMap<(u16, u64), Vec<u8>>,
    pub writes: Vec<(Gvmi, u64, usize)>,
}

impl TestMem {
    pub fn map(&mut self, g: Gvmi, gpa: u64, len: u64) {
        let first = gpa / PAGE;
        let last = (gpa + len.max(1) - 1) / PAGE;
        for p in first..=last {
            self.pages
                .entry((g.0, p))
                .or_insert_with(|| vec![0; PAGE as usize]);
        }
    }

    pub fn unmap(&mut self, g: Gvmi, gpa: u64) {
        self.pages.remove(&(g.0, gpa / PAGE));
    }

    fn missing(&self, g: Gvmi, pa: u64, len: usize) -> Option<u64> {
        let end = pa.checked_add(len.max(1) as u64 - 1)?;
        (pa / PAGE..=end / PAGE)
            .find(|p| !self.pages.contains_key(&(g.0, *p)))
            .map(|p| (p * PAGE).max(pa))
    }

    fn fault(addr: u64, access: AccessKind) -> DmaFault {
        DmaFault {
            addr: Iova::new(addr),
            access,
            reason: FaultReason::NotPresent,
            cost: Cost::ZERO,
        }
    }

    pub fn read(&self, g: Gvmi, pa: u64, len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|i| {
                let a = pa + i;
                self.pages
                    .get(&(g.0, a / PAGE))
                    .map_or(0, |p| p[(a % PAGE) as usize])
            })
            .collect()
    }

    pub fn poke(&mut self, g: Gvmi, pa: u64, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            let a = pa + i as u64;
            self.pages
                .get_mut(&(g.0, a / PAGE))
                .expect("poke into a mapped page")[(a % PAGE) as usize] = *b;
        }
    }

    /// Writes that fall outside every range in `allowed`.
    pub fn writes_outside(&self, allowed: &[(Gvmi, Range<u64>)]) -> Vec<(Gvmi, u64, usize)> {
        self.writes
            .iter()
            .copied()
            .filter(|&(g, a, n)| {
                !allowed
                    .iter()
                    .any(|(ag, r)| *ag == g && a >= r.start && a + n as u64 <= r.end)
            })
            .collect()
    }
}

impl GvmiDma for TestMem {
    fn dma_read(&mut self, g: Gvmi, pa: Gpa, buf: &mut [u8]) -> Result<Cost, DmaFault> {
        if let Some(a) = self.missing(g, pa.raw(), buf.len()) {
            return Err(Self::fault(a, AccessKind::Read));
        }
        let data = self.read(g, pa.raw(), buf.len());
        buf.copy_from_slice(&data);
        Ok(Cost::ZERO)
    }

    fn dma_write(&mut self, g: Gvmi, pa: Gpa, data: &[u8]) -> Result<Cost, DmaFault> {
        if let Some(a) = self.missing(g, pa.raw(), data.len()) {
            return Err(Self::fault(a, AccessKind::Write));
        }
        self.poke(g, pa.raw(), data);
        self.writes.push((g, pa.raw(), data.len()));
        Ok(Cost::ZERO)
    }

    fn probe(&mut self, g: Gvmi, pa: Gpa, access: AccessKind) -> Result<Cost, DmaFault> {
        match self.missing(g, pa.raw(), 1) {
            Some(a) => Err(Self::fault(a, access)),
            None => Ok(Cost::ZERO),
        }
    }
}

/// An HCA with functions 1 and 2, their memory, the wire and interrupts.
pub struct Rig {
    pub hca: Hca,
    pub mem: TestMem,
    pub sent: Vec<Vec<u8>>,
    pub irqs: Vec<Irq>,
    pub now: u64,
    /// Seed 004's estimate the host gives for every fault, if any.
    pub oracle_ns: Option<u64>,
}

struct FixedOracle(u64);

impl FaultOracle for FixedOracle {
    fn estimate(&mut self, _stage: FaultStage, _gvmi: Gvmi, _addr: u64) -> Option<u64> {
        Some(self.0)
    }
}

impl Rig {
    pub fn new() -> Rig {
        Rig::with_config(HcaConfig {
            max_qps: 16,
            max_cqs: 16,
            max_mkeys: 32,
            max_pds: 8,
            mtt_entries: 64,
            implicit_entries: 64,
            event_queue_depth: 8,
            max_ahs: 4,
            max_log_ring: 6,
            hold_threshold_ns: 0,
            hold_buffer_packets: 0,
        })
    }

    pub fn with_config(config: HcaConfig) -> Rig {
        let mut hca = Hca::new(config);
        let mut mem = TestMem::default();
        for f in [F1, F2] {
            hca.add_function(
                f,
                FunctionConfig {
                    gvmi: gvmi(f),
                    mac: [2, 0, 0, 0, 0, f.0 as u8],
                    ip: ip(f),
                    irq: Irq(u32::from(f.0)),
                },
            )
            .unwrap();
            let g = gvmi(f);
            mem.map(g, CQ_BASE, PAGE);
            mem.map(g, SQ_BASE, PAGE);
            mem.map(g, RQ_BASE, PAGE);
            mem.map(g, DATA_GPA, REGION_PAGES * PAGE);
            mem.map(g, FORBIDDEN_GPA, PAGE);
        }
        Rig {
            hca,
            mem,
            sent: Vec::new(),
            irqs: Vec::new(),
            now: 1_000,
            oracle_ns: None,
        }
    }

    /// Every range the HCA may write: rings and region pages.
    pub fn allowed(&self) -> Vec<(Gvmi, Range<u64>)> {
        [F1, F2]
            .into_iter()
            .flat_map(|f| {
                let g = gvmi(f);
                [
                    (g, CQ_BASE..CQ_BASE + PAGE),
                    (g, DATA_GPA..DATA_GPA + REGION_PAGES * PAGE),
                ]
            })
            .collect()
    }

    pub fn exec(&mut self, f: FunctionId, cmd: Command) -> Result<Reply, iovirt_hca::CmdError> {
        self.hca.execute(f, cmd)
    }

    pub fn pd(&mut self, f: FunctionId) -> Pdn {
        match self.exec(f, Command::AllocPd).unwrap() {
            Reply::Pd(p) => p,
            r => panic!("{r:?}"),
        }
    }

    /// A pinned region over `REGION_PAGES` pages at `VA`, mapped onto
    /// `DATA_GPA`.
    pub fn mr(&mut self, f: FunctionId, pd: Pdn, access: Access) -> Mkey {
        let key = self.mkey(f, pd, VA, REGION_PAGES * PAGE, access, MrMode::Pinned);
        let pages = (0..REGION_PAGES)
            .map(|i| Some(Gpa::new(DATA_GPA + i * PAGE)))
            .collect();
        self.exec(
            f,
            Command::WriteMtt {
                mkey: key,
                va: VA,
                pages,
                prefetch: false,
            },
        )
        .unwrap();
        key
    }

    pub fn mkey(
        &mut self,
        f: FunctionId,
        pd: Pdn,
        start: u64,
        length: u64,
        access: Access,
        mode: MrMode,
    ) -> Mkey {
        let spec = MkeySpec {
            pd,
            start,
            length,
            access,
            mode,
            variant: 0x5a,
        };
        match self.exec(f, Command::CreateMkey(spec)).unwrap() {
            Reply::Mkey(k) => k,
            r => panic!("{r:?}"),
        }
    }

    pub fn cq(&mut self, f: FunctionId, log_size: u8) -> Cqn {
        let ring = Ring {
            base: Gpa::new(CQ_BASE),
            log_size,
        };
        match self.exec(f, Command::CreateCq(ring)).unwrap() {
            Reply::Cq(c) => c,
            r => panic!("{r:?}"),
        }
    }

    pub fn qp(&mut self, f: FunctionId, t: QpType, pd: Pdn, cq: Cqn) -> Qpn {
        let ring = |b| Ring {
            base: Gpa::new(b),
            log_size: 4,
        };
        let cmd = Command::CreateQp {
            qp_type: t,
            pd,
            send_cq: cq,
            recv_cq: cq,
            sq: ring(SQ_BASE),
            rq: ring(RQ_BASE),
        };
        match self.exec(f, cmd).unwrap() {
            Reply::Qp(q) => q,
            r => panic!("{r:?}"),
        }
    }

    /// Moves a QP through INIT and RTR to RTS (MTU 1024, PSNs 0, peer
    /// `PEER_QPN` at `PEER_IP`).
    pub fn connect(&mut self, f: FunctionId, qpn: Qpn, t: QpType, access: Access) {
        self.connect_to(f, qpn, t, access, Qpn::new(PEER_QPN).unwrap(), PEER_IP);
    }

    /// Like [`connect`](Self::connect) with the peer QP `dest` at `dip`.
    pub fn connect_to(
        &mut self,
        f: FunctionId,
        qpn: Qpn,
        t: QpType,
        access: Access,
        dest: Qpn,
        dip: [u8; 4],
    ) {
        let steps = [
            (
                QpState::Init,
                QpAttr {
                    access: (t != QpType::Ud).then_some(access),
                    qkey: (t == QpType::Ud).then_some(0x1111),
                    ..QpAttr::default()
                },
            ),
            (
                QpState::Rtr,
                QpAttr {
                    dest_qpn: Some(dest),
                    av: Some(AddressVector {
                        dmac: PEER_MAC,
                        dip,
                    }),
                    path_mtu: Some(PathMtu::Mtu1024),
                    rq_psn: Some(0),
                    min_rnr_timer: Some(1),
                    ..QpAttr::default()
                },
            ),
            (
                QpState::Rts,
                QpAttr {
                    sq_psn: Some(0),
                    timeout: Some(10),
                    retry_cnt: Some(2),
                    rnr_retry: Some(2),
                    ..QpAttr::default()
                },
            ),
        ];
        for (state, attr) in steps {
            self.exec(f, Command::ModifyQp { qpn, state, attr })
                .unwrap();
        }
    }

    /// PD, CQ (16 entries), region and a connected QP of `t` for `f`.
    pub fn endpoint(&mut self, f: FunctionId, t: QpType, access: Access) -> Endpoint {
        let pd = self.pd(f);
        let cq = self.cq(f, 4);
        let key = self.mr(f, pd, access);
        let qpn = self.qp(f, t, pd, cq);
        self.connect(f, qpn, t, access);
        Endpoint {
            f,
            pd,
            cq,
            key,
            qpn,
        }
    }

    pub fn with_env<R>(&mut self, run: impl FnOnce(&mut Hca, &mut HcaEnv<'_>) -> R) -> R {
        let sent = &mut self.sent;
        let mut wire = |frame: &[u8]| sent.push(frame.to_vec());
        let mut oracle = self.oracle_ns.map(FixedOracle);
        let mut env = HcaEnv {
            mem: &mut self.mem,
            wire: &mut wire,
            irq: &mut self.irqs,
            now: SimTime::from_nanos(self.now),
            oracle: oracle.as_mut().map(|o| o as &mut dyn FaultOracle),
        };
        run(&mut self.hca, &mut env)
    }

    pub fn rx(&mut self, frame: &[u8]) {
        self.with_env(|h, env| h.receive(frame, env));
    }

    pub fn process(&mut self) -> usize {
        self.with_env(|h, env| h.process(env, 1000))
    }

    pub fn timers_at(&mut self, now: u64) {
        self.now = self.now.max(now);
        self.with_env(|h, env| h.run_timers(env));
    }

    /// Writes a send WQE at index `index` of `f`'s send queue.
    pub fn post_send_raw(&mut self, f: FunctionId, index: u16, wqe: &SendWqeLayout) {
        let at = SQ_BASE + u64::from(index % 16) * WQE_STRIDE;
        self.mem.poke(gvmi(f), at, wqe.as_bytes());
    }

    pub fn post_recv(&mut self, f: FunctionId, index: u16, sges: &[Sge]) {
        let at = RQ_BASE + u64::from(index % 16) * WQE_STRIDE;
        self.mem.poke(gvmi(f), at, RecvWqe::layout(sges).as_bytes());
    }

    pub fn ring_sq(&mut self, f: FunctionId, qpn: Qpn, pi: u16) {
        self.hca.doorbell(
            f,
            doorbell::SQ,
            (u64::from(qpn.raw()) << 32) | u64::from(pi),
        );
    }

    pub fn ring_rq(&mut self, f: FunctionId, qpn: Qpn, pi: u16) {
        self.hca.doorbell(
            f,
            doorbell::RQ,
            (u64::from(qpn.raw()) << 32) | u64::from(pi),
        );
    }

    /// The completions written to `f`'s CQ ring so far (slots `0..n`).
    pub fn cqes(&self, f: FunctionId, n: usize) -> Vec<Cqe> {
        (0..n as u64)
            .map(|i| {
                let raw = self
                    .mem
                    .read(gvmi(f), CQ_BASE + i * CQE_SIZE, CQE_SIZE as usize);
                Cqe::parse(&CqeLayout::read_from_bytes(&raw).unwrap()).expect("a CQE")
            })
            .collect()
    }

    /// The AETH syndromes of the frames sent so far, with their PSNs.
    pub fn acks(&self) -> Vec<(AethSyndrome, u32)> {
        self.sent
            .iter()
            .filter_map(|f| {
                let p = RocePacket::parse(f).ok()?;
                Some((p.headers.aeth?.syndrome, p.headers.bth.psn.value()))
            })
            .collect()
    }

    pub fn region_bytes(&self, f: FunctionId) -> Vec<u8> {
        self.mem
            .read(gvmi(f), DATA_GPA, (REGION_PAGES * PAGE) as usize)
    }

    pub fn malformed(&self, cause: &str) -> u64 {
        self.hca
            .stats()
            .rx_malformed_by_cause
            .get(cause)
            .map_or(0, |c| c.get())
    }
}

impl Default for Rig {
    fn default() -> Rig {
        Rig::new()
    }
}

/// The objects of one function's connected QP.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    pub f: FunctionId,
    pub pd: Pdn,
    pub cq: Cqn,
    pub key: Mkey,
    pub qpn: Qpn,
}

/// Headers of a request from the peer to `f`'s QP `qpn`.
pub fn hdr(f: FunctionId, op: Opcode, qpn: Qpn, psn: u32) -> RoceHeaders {
    let mut h = RoceHeaders::new(BthRepr::new(op, qpn.raw(), Psn::new(psn)));
    h.src_mac = PEER_MAC;
    h.dst_mac = [2, 0, 0, 0, 0, f.0 as u8];
    h.src_ip = PEER_IP.into();
    h.dst_ip = ip(f).into();
    h
}

pub fn frame(h: &RoceHeaders, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    h.emit(payload, &mut out).expect("emit");
    out
}

/// An RC RDMA WRITE packet to `f`'s QP.
pub fn write_pkt(
    f: FunctionId,
    op: Opcode,
    qpn: Qpn,
    psn: u32,
    reth: Option<Reth>,
    payload: &[u8],
) -> Vec<u8> {
    let mut h = hdr(f, op, qpn, psn);
    h.reth = reth;
    if op.has_immdt() {
        h.immediate = Some(0xabcd);
    }
    frame(&h, payload)
}

pub fn reth(key: Mkey, va: u64, dma_len: u32) -> Option<Reth> {
    Some(Reth {
        va,
        rkey: key.0,
        dma_len,
    })
}

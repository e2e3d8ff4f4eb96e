//! The HCA the `hca_*` targets attack: two functions with RC, UC and UD
//! QPs connected to each other, pinned, on-demand and implicit regions,
//! over sparse memory that panics on any write outside the regions' pages
//! and the CQ rings.

use std::collections::BTreeMap;

use iovirt_core::{
    AccessKind, Cost, DmaFault, FaultReason, Gpa, Gvmi, GvmiDma, Iova, Irq, SimTime,
};
use iovirt_hca::mr::{Access, MrMode};
use iovirt_hca::qp::{AddressVector, PathMtu, QpAttr, QpState, QpType, Ring};
use iovirt_hca::{
    Command, Cqn, FaultOracle, FaultStage, FunctionConfig, FunctionId, Hca, HcaConfig, HcaEnv,
    Mkey, MkeySpec, Qpn, Reply,
};

pub const PAGE: u64 = 4096;
pub const CQ_BASE: u64 = 0x1_0000;
pub const SQ_BASE: u64 = 0x2_0000;
pub const RQ_BASE: u64 = 0x3_0000;
pub const DATA: u64 = 0x10_0000;
pub const FORBIDDEN: u64 = 0x8_0000;
pub const VA: u64 = 0x4000_0000;
pub const FUNCS: [FunctionId; 2] = [FunctionId(1), FunctionId(2)];

pub fn gvmi(f: FunctionId) -> Gvmi {
    Gvmi(f.0 + 10)
}

pub fn ip(f: FunctionId) -> [u8; 4] {
    [10, 0, 0, f.0 as u8]
}

#[derive(Default)]
pub struct Mem {
    pages: BTreeMap<(u16, u64), Vec<u8>>,
}

impl Mem {
    fn map(&mut self, g: Gvmi, gpa: u64, pages: u64) {
        for p in 0..pages {
            self.pages
                .insert((g.0, gpa / PAGE + p), vec![0; PAGE as usize]);
        }
    }

    fn check(&self, g: Gvmi, pa: u64, len: usize) -> Result<(), DmaFault> {
        let last = pa.checked_add(len.max(1) as u64 - 1).ok_or(fault(pa))?;
        for p in pa / PAGE..=last / PAGE {
            if !self.pages.contains_key(&(g.0, p)) {
                return Err(fault((p * PAGE).max(pa)));
            }
        }
        Ok(())
    }

    /// Writes guest bytes (the driver's, not the HCA's).
    pub fn poke(&mut self, g: Gvmi, pa: u64, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            let a = pa + i as u64;
            if let Some(p) = self.pages.get_mut(&(g.0, a / PAGE)) {
                p[(a % PAGE) as usize] = *b;
            }
        }
    }
}

fn fault(addr: u64) -> DmaFault {
    DmaFault {
        addr: Iova::new(addr),
        access: AccessKind::Read,
        reason: FaultReason::NotPresent,
        cost: Cost::ZERO,
    }
}

impl GvmiDma for Mem {
    fn dma_read(&mut self, g: Gvmi, pa: Gpa, buf: &mut [u8]) -> Result<Cost, DmaFault> {
        self.check(g, pa.raw(), buf.len())?;
        for (i, b) in buf.iter_mut().enumerate() {
            let a = pa.raw() + i as u64;
            *b = self.pages[&(g.0, a / PAGE)][(a % PAGE) as usize];
        }
        Ok(Cost::ZERO)
    }

    fn dma_write(&mut self, g: Gvmi, pa: Gpa, data: &[u8]) -> Result<Cost, DmaFault> {
        self.check(g, pa.raw(), data.len())?;
        let (a, end) = (pa.raw(), pa.raw() + data.len() as u64);
        let ok = |lo: u64, hi: u64| a >= lo && end <= hi;
        assert!(
            ok(CQ_BASE, CQ_BASE + PAGE) || ok(DATA, DATA + 4 * PAGE),
            "HCA wrote outside every region and ring: {g} {a:#x}+{}",
            data.len()
        );
        self.poke(g, a, data);
        Ok(Cost::ZERO)
    }

    fn probe(&mut self, g: Gvmi, pa: Gpa, _: AccessKind) -> Result<Cost, DmaFault> {
        self.check(g, pa.raw(), 1).map(|()| Cost::ZERO)
    }
}

struct Oracle(u64);

impl FaultOracle for Oracle {
    fn estimate(&mut self, _: FaultStage, _: Gvmi, addr: u64) -> Option<u64> {
        (addr % 3 != 0).then_some(self.0)
    }
}

pub struct Rig {
    pub hca: Hca,
    pub mem: Mem,
    pub sent: Vec<Vec<u8>>,
    pub irqs: Vec<Irq>,
    pub now: u64,
    /// Per function: keys, QPs (RC, UC, UD first), CQs.
    pub keys: [Vec<Mkey>; 2],
    pub qps: [Vec<Qpn>; 2],
    pub cqs: [Vec<Cqn>; 2],
}

fn exec(hca: &mut Hca, f: FunctionId, cmd: Command) -> Reply {
    hca.execute(f, cmd).expect("setup command")
}

impl Rig {
    pub fn new() -> Rig {
        let config = HcaConfig {
            max_qps: 16,
            max_cqs: 16,
            max_mkeys: 32,
            max_pds: 8,
            mtt_entries: 64,
            implicit_entries: 16,
            event_queue_depth: 8,
            max_ahs: 4,
            max_log_ring: 6,
            hold_threshold_ns: 50_000,
            hold_buffer_packets: 4,
        };
        let mut hca = Hca::new(config);
        let mut mem = Mem::default();
        let mut keys: [Vec<Mkey>; 2] = Default::default();
        let mut qps: [Vec<Qpn>; 2] = Default::default();
        let mut cqs: [Vec<Cqn>; 2] = Default::default();
        let rwr = Access::LOCAL_WRITE | Access::REMOTE_WRITE | Access::REMOTE_READ;
        for (i, f) in FUNCS.into_iter().enumerate() {
            let g = gvmi(f);
            hca.add_function(
                f,
                FunctionConfig {
                    gvmi: g,
                    mac: [2, 0, 0, 0, 0, f.0 as u8],
                    ip: ip(f),
                    irq: Irq(1),
                },
            )
            .expect("function");
            for (base, n) in [
                (CQ_BASE, 1),
                (SQ_BASE, 1),
                (RQ_BASE, 1),
                (DATA, 3),
                (FORBIDDEN, 1),
            ] {
                mem.map(g, base, n);
            }
            let Reply::Pd(pd) = exec(&mut hca, f, Command::AllocPd) else {
                unreachable!()
            };
            let ring = |base, log_size| Ring {
                base: Gpa::new(base),
                log_size,
            };
            let Reply::Cq(cq) = exec(&mut hca, f, Command::CreateCq(ring(CQ_BASE, 5))) else {
                unreachable!()
            };
            cqs[i].push(cq);
            // Pinned over three pages, on demand over four (the fourth
            // page is never present), implicit with one page.
            for (start, length, mode, pages) in [
                (VA, 3 * PAGE, MrMode::Pinned, vec![0, 1, 2]),
                (VA, 4 * PAGE, MrMode::OnDemand, vec![2]),
                (0, u64::MAX, MrMode::Implicit, vec![1]),
            ] {
                let spec = MkeySpec {
                    pd,
                    start,
                    length,
                    access: rwr,
                    mode,
                    variant: 7,
                };
                let Reply::Mkey(k) = exec(&mut hca, f, Command::CreateMkey(spec)) else {
                    unreachable!()
                };
                let pages = pages
                    .into_iter()
                    .map(|p| Some(Gpa::new(DATA + p * PAGE)))
                    .collect();
                exec(
                    &mut hca,
                    f,
                    Command::WriteMtt {
                        mkey: k,
                        va: VA,
                        pages,
                        prefetch: false,
                    },
                );
                keys[i].push(k);
            }
            for t in [QpType::Rc, QpType::Uc, QpType::Ud] {
                let cmd = Command::CreateQp {
                    qp_type: t,
                    pd,
                    send_cq: cq,
                    recv_cq: cq,
                    sq: ring(SQ_BASE + qps[i].len() as u64 * 0x400, 4),
                    rq: ring(RQ_BASE + qps[i].len() as u64 * 0x400, 4),
                };
                let Reply::Qp(q) = exec(&mut hca, f, cmd) else {
                    unreachable!()
                };
                qps[i].push(q);
            }
            exec(
                &mut hca,
                f,
                Command::CreateAh(AddressVector {
                    dmac: [2; 6],
                    dip: ip(FUNCS[1 - i]),
                }),
            );
        }
        for (i, f) in FUNCS.into_iter().enumerate() {
            for (j, t) in [QpType::Rc, QpType::Uc, QpType::Ud].into_iter().enumerate() {
                let qpn = qps[i][j];
                let access = if t == QpType::Rc {
                    rwr
                } else {
                    rwr - Access::REMOTE_READ
                };
                let steps = [
                    (
                        QpState::Init,
                        QpAttr {
                            access: (t != QpType::Ud).then_some(access),
                            qkey: Some(0x1111),
                            ..QpAttr::default()
                        },
                    ),
                    (
                        QpState::Rtr,
                        QpAttr {
                            dest_qpn: Some(qps[1 - i][j]),
                            av: Some(AddressVector {
                                dmac: [2; 6],
                                dip: ip(FUNCS[1 - i]),
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
                            timeout: Some(8),
                            retry_cnt: Some(3),
                            rnr_retry: Some(3),
                            ..QpAttr::default()
                        },
                    ),
                ];
                for (state, attr) in steps {
                    exec(&mut hca, f, Command::ModifyQp { qpn, state, attr });
                }
            }
        }
        Rig {
            hca,
            mem,
            sent: Vec::new(),
            irqs: Vec::new(),
            now: 1000,
            keys,
            qps,
            cqs,
        }
    }

    pub fn with_env<R>(&mut self, run: impl FnOnce(&mut Hca, &mut HcaEnv<'_>) -> R) -> R {
        let sent = &mut self.sent;
        let mut wire = |frame: &[u8]| {
            if sent.len() < 256 {
                sent.push(frame.to_vec());
            }
        };
        let mut oracle = Oracle(10_000);
        let mut env = HcaEnv {
            mem: &mut self.mem,
            wire: &mut wire,
            irq: &mut self.irqs,
            now: SimTime::from_nanos(self.now),
            oracle: Some(&mut oracle),
        };
        let r = run(&mut self.hca, &mut env);
        self.irqs.clear();
        r
    }

    pub fn rx(&mut self, frame: &[u8]) {
        self.with_env(|h, env| h.receive(frame, env));
    }

    pub fn process(&mut self) {
        let n = self.with_env(|h, env| h.process(env, 64));
        assert!(n <= 64);
    }

    pub fn timers(&mut self, dt: u64) {
        self.now += dt;
        self.with_env(|h, env| h.run_timers(env));
    }

    /// Feeds what the HCA sent back into it (the two functions talk).
    pub fn loopback(&mut self) {
        for f in std::mem::take(&mut self.sent) {
            self.rx(&f);
        }
    }

    /// Bounds every run must keep.
    pub fn check(&self) {
        let depth = self.hca.config().event_queue_depth;
        for f in FUNCS {
            assert!(self.hca.pending_events(f) <= depth);
        }
        assert!(self.hca.pending_events(FunctionId::PF) <= depth);
    }
}

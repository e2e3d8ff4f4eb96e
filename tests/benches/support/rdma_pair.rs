//! Two hosts, each with one VM, and a connected RC pair between the VMs,
//! driven directly (no event loop): the RDMA benchmark's path, shared with
//! the allocation test. Included by path from `benches/rdma_path.rs` and
//! `tests/no_alloc.rs`.

use iovirt::link::LinkConfig;
use iovirt::rdma_sim::{AppPages, RdmaFabric, RdmaHost, RdmaHostConfig};
use iovirt_core::{CostModel, FrameQueue, Irq, NetworkPort, SimTime};
use iovirt_drivers::{Placement, QpInit, SendWr, WorkCompletion};
use iovirt_hca::mr::{Access, MrMode};
use iovirt_hca::qp::{AddressVector, PathMtu, QpAttr, QpState, QpType};
use iovirt_hca::wqe::{Remote, Sge, WqeFlags, WqeOpcode};
use iovirt_hca::{Cqn, Hca, HcaEnv, Mkey, Pdn, Qpn};
use iovirt_iommu::{IommuConfig, IotlbConfig, Replacement};

/// The largest write, and the size of both regions.
pub(crate) const MAX: usize = 1 << 20;

/// One end of the connection.
#[derive(Debug, Clone, Copy)]
struct End {
    pd: Pdn,
    cq: Cqn,
    qpn: Qpn,
}

fn endpoint(h: &mut RdmaHost) -> End {
    h.with_guest(0, |d, bus| {
        let pd = d.alloc_pd(bus).unwrap();
        let cq = d.create_cq(bus, 8).unwrap();
        let qpn = d
            .create_qp(
                bus,
                QpInit {
                    qp_type: QpType::Rc,
                    pd,
                    send_cq: cq,
                    recv_cq: cq,
                    log_sq: 7,
                    log_rq: 7,
                },
            )
            .unwrap();
        End { pd, cq, qpn }
    })
    .unwrap()
}

/// Brings `a` (on `h`) to RTS connected to `peer_qpn` at `peer`.
fn connect(h: &mut RdmaHost, a: End, peer_qpn: Qpn, peer: AddressVector) {
    h.with_guest(0, |d, bus| {
        let access = Access::REMOTE_WRITE | Access::REMOTE_READ;
        d.modify_qp(
            bus,
            a.qpn,
            QpState::Init,
            QpAttr {
                access: Some(access),
                ..QpAttr::default()
            },
        )
        .unwrap();
        d.modify_qp(
            bus,
            a.qpn,
            QpState::Rtr,
            QpAttr {
                dest_qpn: Some(peer_qpn),
                av: Some(peer),
                path_mtu: Some(PathMtu::Mtu4096),
                rq_psn: Some(100),
                min_rnr_timer: Some(1),
                ..QpAttr::default()
            },
        )
        .unwrap();
        d.modify_qp(
            bus,
            a.qpn,
            QpState::Rts,
            QpAttr {
                sq_psn: Some(100),
                timeout: Some(10),
                retry_cnt: Some(7),
                rnr_retry: Some(7),
                ..QpAttr::default()
            },
        )
        .unwrap();
    })
    .unwrap();
}

/// Application memory of `len` bytes in a pinned region, optionally filled.
fn buffer(h: &mut RdmaHost, e: End, len: u64, access: Access, fill: Option<&[u8]>) -> (u64, Mkey) {
    let pages = fill.map_or(AppPages::Touched, AppPages::Filled);
    h.app_region(0, e.pd, len, access, MrMode::Pinned, pages)
        .unwrap()
}

/// Bytes that differ from their neighbours and from other seeds'.
pub(crate) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Runs `step` on `h`'s HCA in an environment over its host's ports, with
/// frames going to `wire` and interrupts to `irq`.
fn on_hca<R>(
    h: &mut RdmaHost,
    cost: CostModel,
    now: SimTime,
    wire: &mut dyn NetworkPort,
    irq: &mut Vec<Irq>,
    step: impl FnOnce(&mut Hca, &mut HcaEnv<'_>) -> R,
) -> R {
    let (mut mem, mut oracle) = h.host.hca_ports(cost);
    let mut env = HcaEnv {
        mem: &mut mem,
        wire,
        irq,
        now,
        oracle: Some(&mut oracle),
    };
    step(&mut h.hca, &mut env)
}

/// The two hosts, a connected RC pair between their VMs, and the regions.
pub(crate) struct Bench {
    /// The two hosts: A sends, B receives.
    pub(crate) hosts: [RdmaHost; 2],
    a: End,
    src: (u64, Mkey),
    dst: (u64, Mkey),
    cost: CostModel,
    now: SimTime,
    acks: FrameQueue,
    irqs: [Vec<Irq>; 2],
    wcs: Vec<WorkCompletion>,
}

impl Bench {
    /// Both hosts, the connected pair, and the regions (A's filled with
    /// `pattern(MAX, 7)`).
    pub(crate) fn new() -> Bench {
        let cost = CostModel::default();
        // Room for 2 MiB of regions, the queues and page tables, and an
        // IOTLB that holds every page a 1 MiB write touches (the default
        // 64 entries would miss on most of them).
        let config = RdmaHostConfig {
            data_frames: 4096,
            iommu: IommuConfig {
                iotlb: IotlbConfig {
                    entries: 1024,
                    ways: 8,
                    replacement: Replacement::Lru,
                },
                ..IommuConfig::default()
            },
            ..RdmaHostConfig::default()
        };
        let mut hosts = [0u8, 1].map(|i| RdmaHost::new(i, config, cost).unwrap());
        for h in &mut hosts {
            h.add_vm(8 << 20, Placement::Contiguous).unwrap();
        }
        // Built as the tests build it; only its hosts are used.
        let f = RdmaFabric::new(hosts, LinkConfig::from_cost(&cost, 4096));
        let mut hosts = f.hosts;
        let a = endpoint(&mut hosts[0]);
        let b = endpoint(&mut hosts[1]);
        let av = |h: &RdmaHost| AddressVector {
            dmac: h.guests[0].mac,
            dip: h.guests[0].ip,
        };
        let (av_a, av_b) = (av(&hosts[0]), av(&hosts[1]));
        connect(&mut hosts[0], a, b.qpn, av_b);
        connect(&mut hosts[1], b, a.qpn, av_a);
        let data = pattern(MAX, 7);
        let src = buffer(&mut hosts[0], a, MAX as u64, Access::empty(), Some(&data));
        let dst = buffer(
            &mut hosts[1],
            b,
            MAX as u64,
            Access::LOCAL_WRITE | Access::REMOTE_WRITE,
            None,
        );
        Bench {
            hosts,
            a,
            src,
            dst,
            cost,
            now: f.now,
            acks: FrameQueue::default(),
            irqs: [Vec::new(), Vec::new()],
            wcs: Vec::with_capacity(8),
        }
    }

    /// One signaled RDMA WRITE of `size` bytes, run until its completion
    /// is polled.
    pub(crate) fn write(&mut self, size: usize) -> WorkCompletion {
        let wr = SendWr {
            wr_id: size as u64,
            opcode: WqeOpcode::RdmaWrite,
            flags: WqeFlags::SIGNALED,
            imm: 0,
            remote: Remote::Rdma {
                va: self.dst.0,
                rkey: self.dst.1,
            },
            sges: [
                Some(Sge {
                    addr: self.src.0,
                    length: size as u32,
                    lkey: self.src.1,
                }),
                None,
            ],
        };
        let (qpn, cq) = (self.a.qpn, self.a.cq);
        let [ha, hb] = &mut self.hosts;
        ha.with_guest(0, |d, bus| d.post_send(bus, qpn, &wr).unwrap())
            .unwrap();
        let [irq_a, irq_b] = &mut self.irqs;
        let acks = &mut self.acks;
        let (cost, now) = (self.cost, self.now);
        loop {
            // Requester A sends; each frame goes straight to responder B.
            let mut to_acks = |f: &[u8]| acks.push(f);
            on_hca(hb, cost, now, &mut to_acks, irq_b, |hca_b, env_b| {
                let mut to_b = |f: &[u8]| hca_b.receive(f, env_b);
                on_hca(ha, cost, now, &mut to_b, irq_a, |hca_a, env_a| {
                    hca_a.process(env_a, usize::MAX)
                })
            });
            // Responder B ACKs.
            let mut to_acks = |f: &[u8]| acks.push(f);
            on_hca(hb, cost, now, &mut to_acks, irq_b, |hca_b, env_b| {
                hca_b.process(env_b, usize::MAX)
            });
            // Requester A takes the ACKs and writes the completion.
            let mut nowhere = |_: &[u8]| panic!("unexpected frame from A on an ACK");
            on_hca(ha, cost, now, &mut nowhere, irq_a, |hca_a, env_a| {
                for f in acks.frames() {
                    hca_a.receive(f, env_a);
                }
            });
            acks.clear();
            irq_a.clear();
            irq_b.clear();
            self.wcs.clear();
            ha.with_guest(0, |d, bus| d.poll_cq(bus, cq, 4, &mut self.wcs))
                .unwrap()
                .unwrap();
            if let Some(wc) = self.wcs.first() {
                return *wc;
            }
        }
    }

    /// Guest B's copy of `len` bytes of the destination region.
    pub(crate) fn landed(&mut self, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        let va = self.dst.0;
        self.hosts[1]
            .with_guest(0, |d, bus| d.app_read(bus, va, &mut out).unwrap())
            .unwrap();
        out
    }
}

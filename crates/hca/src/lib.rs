//! # iovirt-hca
//!
//! An RDMA host channel adapter after seed 001: every VM drives its own
//! function of the HCA directly (command interface, doorbells, queues in
//! its memory), memory keys translate in two stages, and a page missing in
//! either stage suspends only the QP that met it.
//!
//! ## What it models
//!
//! - **Functions** ([`FunctionId`]): the host's physical function and one
//!   virtual function per VM, each with its GVMI, MAC and IPv4 address,
//!   event queue and 4 KiB doorbell page. Commands
//!   ([`Command`], [`Hca::execute`]) touch only the issuing function's
//!   objects.
//! - **Memory regions**: the MPT of MKey contexts (start, length, rights,
//!   PD, MTT base, GVMI) and per-function MTTs ([`mr`]); pinned,
//!   on-demand, and implicit on-demand (one key for the whole address
//!   space) regions; per-region ODP counters (page_faults,
//!   page_faults_handled, page_invalidations, page_invalidations_handled,
//!   page_prefetch).
//! - **Two-stage translation** (seed 001, FIG. 3): key → MPT → MTT gives
//!   the VM-"physical" page (stage 1, here); GVMI → PA2MA gives the machine
//!   address (stage 2, behind [`iovirt_core::GvmiDma`], which
//!   `iovirt-iommu` implements with its GVMI-tagged IOTLB). Bounds, rights
//!   and both stages are checked for every page before a byte moves.
//! - **Queues**: CQs with owner bits ([`cqe`], [`cq`]), send and receive
//!   queues of 64-byte WQEs ([`wqe`]), QPs of type RC, UC and UD with
//!   InfiniBand's state machine ([`qp`]).
//! - **Transport** ([`transport`]): RoCEv2 frames ([`wire`]) with SEND,
//!   RDMA WRITE, RDMA READ (immediate data on SEND and WRITE), segmentation
//!   by path MTU, PSN checks (one sequence NAK per gap, re-ACK of
//!   duplicates, READ replay after re-checking the key), go-back-N
//!   retransmission on NAK and timeout bounded by `retry_cnt`, RNR NAKs
//!   bounded by `rnr_retry` (7 = infinite), remote access errors NAKed with
//!   nothing written, round-robin transmit scheduling across QPs.
//! - **On-demand paging** (seed 001, FIG. 4): a miss in stage 1 raises a
//!   page-fault event to the owning VM's driver, in stage 2 to the host's
//!   (function 0). An RC responder sends an RNR NAK, drops the packet and
//!   suspends only that QP; once the driver resumes the fault it sends an
//!   unsolicited ACK and the requester resends from the faulting PSN.
//!   Gather and READ-response faults delay the QP without a NAK; UC and UD
//!   drop. Seed 004: the host's estimate of the fault's duration
//!   ([`FaultOracle`]) picks the mode: a short fault holds the packet in a
//!   bounded buffer, a long one gets an RNR NAK whose timer covers the
//!   estimate.
//!
//! ## Not modelled
//!
//! Atomics, SRQs, memory windows, send with invalidate, IPv6 and VLANs,
//! congestion control (DCQCN, seed 004's third abstract), the command
//! queue's own memory layout (commands are values), multiple ports, and
//! ACK coalescing beyond one ACK per message or AckReq.
//!
//! ## Example
//!
//! Two functions of one HCA, connected back to back: an RDMA WRITE from
//! one to the other, through the wire format and back in.
//!
//! ```
//! use iovirt_core::{FlatGvmiDma, Gpa, Gvmi, HostMemory, Irq, PhysMemory, SimTime};
//! use iovirt_hca::mr::{Access, MrMode};
//! use iovirt_hca::qp::{AddressVector, PathMtu, QpAttr, QpState, QpType, Ring};
//! use iovirt_hca::wqe::{Remote, SendWqe, Sge, WqeFlags, WqeOpcode};
//! use iovirt_hca::*;
//! use zerocopy::IntoBytes;
//!
//! let mut mem = HostMemory::new(1 << 24)?;
//! let mut hca = Hca::new(HcaConfig::default());
//! let (a, b) = (FunctionId(1), FunctionId(2));
//! for (f, n) in [(a, 1u8), (b, 2u8)] {
//!     let config = FunctionConfig { gvmi: Gvmi::HOST, mac: [2, 0, 0, 0, 0, n], ip: [10, 0, 0, n], irq: Irq(n.into()) };
//!     hca.add_function(f, config)?;
//! }
//! // Objects of each function: a PD, a CQ, a QP, a region of 8 KiB at VA 0x10_0000.
//! let mut objs = Vec::new();
//! for (f, base) in [(a, 0x10_0000u64), (b, 0x20_0000)] {
//!     let pd = hca.alloc_pd(f)?;
//!     let cq = hca.create_cq(f, Ring { base: Gpa::new(base + 0x8000), log_size: 4 })?;
//!     let ring = |off| Ring { base: Gpa::new(base + off), log_size: 4 };
//!     let qp = hca.create_qp(f, QpType::Rc, pd, cq, cq, ring(0xa000), ring(0xc000))?;
//!     let spec = MkeySpec { pd, start: 0x10_0000, length: 8192, access: Access::LOCAL_WRITE | Access::REMOTE_WRITE, mode: MrMode::Pinned, variant: 7 };
//!     let key = hca.create_mkey(f, spec)?;
//!     hca.write_mtt(f, key, 0x10_0000, &[Some(Gpa::new(base)), Some(Gpa::new(base + 0x1000))], false)?;
//!     objs.push((f, qp, key, base));
//! }
//! let [(_, qa, ka, _), (_, qb, kb, base_b)] = [objs[0], objs[1]];
//! for (f, qp, peer, n) in [(a, qa, qb, 2u8), (b, qb, qa, 1u8)] {
//!     hca.modify_qp(f, qp, QpState::Init, &QpAttr { access: Some(Access::REMOTE_WRITE), ..QpAttr::default() })?;
//!     let av = AddressVector { dmac: [2, 0, 0, 0, 0, n], dip: [10, 0, 0, n] };
//!     let rtr = QpAttr { dest_qpn: Some(peer), av: Some(av), path_mtu: Some(PathMtu::Mtu4096), rq_psn: Some(0), min_rnr_timer: Some(1), ..QpAttr::default() };
//!     hca.modify_qp(f, qp, QpState::Rtr, &rtr)?;
//!     let rts = QpAttr { sq_psn: Some(0), timeout: Some(14), retry_cnt: Some(7), rnr_retry: Some(7), ..QpAttr::default() };
//!     hca.modify_qp(f, qp, QpState::Rts, &rts)?;
//! }
//! // The application's bytes, a WRITE WQE in the send queue, the doorbell.
//! mem.write(iovirt_core::Hpa::new(0x10_0000), b"hello, responder")?;
//! let sge = Sge { addr: 0x10_0000, length: 16, lkey: ka };
//! let wqe = SendWqe { opcode: WqeOpcode::RdmaWrite, flags: WqeFlags::SIGNALED, imm: 0,
//!     remote: Remote::Rdma { va: 0x10_1000, rkey: kb }, sge: [sge, sge], num_sge: 1 };
//! mem.write(iovirt_core::Hpa::new(0x10_a000), wqe.layout().as_bytes())?;
//! hca.doorbell(a, doorbell::SQ, (u64::from(qa.raw()) << 32) | 1);
//! // Run: each frame the HCA sends comes straight back in.
//! let mut inflight: Vec<Vec<u8>> = Vec::new();
//! for _ in 0..4 {
//!     let mut out: Vec<Vec<u8>> = Vec::new();
//!     let mut irqs: Vec<Irq> = Vec::new();
//!     let mut dma = FlatGvmiDma::new(&mut mem);
//!     let mut wire = |f: &[u8]| out.push(f.to_vec());
//!     let mut env = HcaEnv { mem: &mut dma, wire: &mut wire, irq: &mut irqs, now: SimTime::ZERO, oracle: None };
//!     for f in inflight.drain(..) {
//!         hca.receive(&f, &mut env);
//!     }
//!     hca.process(&mut env, 16);
//!     inflight = out;
//! }
//! let mut landed = [0u8; 16];
//! mem.read(iovirt_core::Hpa::new(base_b + 0x1000), &mut landed)?;
//! assert_eq!(&landed, b"hello, responder");
//! assert_eq!(hca.stats().rx_payload_bytes.get(), 16);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cmd;
pub mod cq;
pub mod cqe;
pub mod device;
pub mod event;
pub mod ids;
pub mod mr;
pub mod qp;
pub mod transport;
pub mod wire;
pub mod wqe;

pub use cmd::{Command, CommandChannel, FunctionPort, Reply};
pub use device::{CmdError, FunctionConfig, Hca, HcaConfig, HcaStats, MkeySpec};
pub use event::{Event, FaultStage, PageFault};
pub use ids::{Cqn, FunctionId, Mkey, Pdn, Qpn};
pub use transport::{FaultOracle, HcaEnv, QpStats, doorbell};

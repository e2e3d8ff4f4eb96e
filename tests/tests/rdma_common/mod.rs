//! Two RDMA hosts with one or more VMs each, and connected QPs between
//! their drivers, for the end-to-end RDMA tests.

#![allow(dead_code, unreachable_pub)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use iovirt::link::LinkConfig;
use iovirt::rdma_sim::{
    AppPages, ConnectAttrs, LossFilter, QpEnd, RdmaFabric, RdmaHost, RdmaHostConfig,
};
use iovirt_core::{CostModel, SimTime};
use iovirt_drivers::{Placement, SendWr, WorkCompletion};
use iovirt_hca::Mkey;
use iovirt_hca::mr::{Access, MrMode};
use iovirt_hca::qp::{PathMtu, QpType};
use iovirt_hca::wqe::{Remote, Sge, WqeFlags, WqeOpcode};

/// One end of a connection.
pub type End = QpEnd;

pub fn fabric(guests_per_host: usize, config: RdmaHostConfig) -> RdmaFabric {
    let cost = CostModel::default();
    let mut hosts = [0u8, 1].map(|i| RdmaHost::new(i, config, cost).unwrap());
    for h in &mut hosts {
        for _ in 0..guests_per_host {
            h.add_vm(16 << 20, Placement::Contiguous).unwrap();
        }
    }
    RdmaFabric::new(hosts, LinkConfig::from_cost(&cost, 8))
}

/// Creates PD, CQ and a QP of `qp_type` for a guest.
pub fn endpoint(f: &mut RdmaFabric, host: usize, guest: usize, qp_type: QpType) -> End {
    f.endpoint(host, guest, qp_type, 7, 8).unwrap()
}

/// Brings `a` to RTS connected to `b` (RC or UC).
pub fn connect_one(f: &mut RdmaFabric, a: End, b: End, mtu: PathMtu, min_rnr_timer: u8) {
    let attrs = ConnectAttrs {
        mtu,
        min_rnr_timer,
        ..ConnectAttrs::default()
    };
    f.connect_one(a, b, attrs).unwrap();
}

/// A connected pair from host 0 guest `g0` to host 1 guest `g1`.
pub fn pair(f: &mut RdmaFabric, g0: usize, g1: usize, qp_type: QpType, mtu: PathMtu) -> (End, End) {
    let a = endpoint(f, 0, g0, qp_type);
    let b = endpoint(f, 1, g1, qp_type);
    connect_one(f, a, b, mtu, 1);
    connect_one(f, b, a, mtu, 1);
    (a, b)
}

/// A scatter/gather entry over the first `len` bytes of `buf`.
pub fn sge(buf: (u64, Mkey), len: u32) -> Sge {
    Sge {
        addr: buf.0,
        length: len,
        lkey: buf.1,
    }
}

/// A pinned source region of `len` bytes holding `pattern(len, seed)`,
/// with no remote rights.
pub fn source(f: &mut RdmaFabric, e: End, len: u64, seed: u8) -> (u64, Mkey) {
    let data = pattern(len as usize, seed);
    buffer(f, e, len, Access::empty(), MrMode::Pinned, Some(&data))
}

/// A pinned destination region of `len` bytes, writable locally and by
/// the peer.
pub fn sink(f: &mut RdmaFabric, e: End, len: u64) -> (u64, Mkey) {
    let rw = Access::LOCAL_WRITE | Access::REMOTE_WRITE;
    buffer(f, e, len, rw, MrMode::Pinned, None)
}

/// A loss filter that drops the `nth` frame (from 1) in direction `dir`
/// (0: host 0 to host 1), once.
pub fn drop_once(dir: usize, nth: u32) -> LossFilter {
    let mut seen = 0;
    Box::new(move |d, _| {
        if d == dir {
            seen += 1;
            seen == nth
        } else {
            false
        }
    })
}

/// Allocates application memory of `len` bytes, filled with `fill`
/// (populated), registered with `access` in `mode`.
pub fn buffer(
    f: &mut RdmaFabric,
    e: End,
    len: u64,
    access: Access,
    mode: MrMode,
    fill: Option<&[u8]>,
) -> (u64, Mkey) {
    let pages = match (fill, mode) {
        (Some(data), _) => AppPages::Filled(data),
        (None, MrMode::Pinned) => AppPages::Touched,
        (None, _) => AppPages::Untouched,
    };
    f.hosts[e.host]
        .app_region(e.guest, e.pd, len, access, mode, pages)
        .unwrap()
}

pub fn read_app(f: &mut RdmaFabric, e: End, va: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    f.hosts[e.host]
        .with_guest(e.guest, |d, bus| d.app_read(bus, va, &mut out).unwrap())
        .unwrap();
    out
}

pub fn post_send(f: &mut RdmaFabric, e: End, wr: SendWr) {
    f.hosts[e.host]
        .with_guest(e.guest, |d, bus| d.post_send(bus, e.qpn, &wr).unwrap())
        .unwrap();
}

pub fn post_recv(f: &mut RdmaFabric, e: End, wr_id: u64, sge: Sge) {
    f.hosts[e.host]
        .with_guest(e.guest, |d, bus| {
            d.post_recv(bus, e.qpn, wr_id, &[sge]).unwrap()
        })
        .unwrap();
}

pub fn write_wr(wr_id: u64, local: (u64, Mkey), len: u32, remote: (u64, Mkey)) -> SendWr {
    SendWr {
        wr_id,
        opcode: WqeOpcode::RdmaWrite,
        flags: WqeFlags::SIGNALED,
        imm: 0,
        remote: Remote::Rdma {
            va: remote.0,
            rkey: remote.1,
        },
        sges: [
            Some(Sge {
                addr: local.0,
                length: len,
                lkey: local.1,
            }),
            None,
        ],
    }
}

/// Runs the fabric until nothing is left to do (or `limit_ns` of virtual time).
pub fn settle(f: &mut RdmaFabric, limit_ns: u64) {
    let until = f.now + iovirt_core::SimDuration::from_nanos(limit_ns);
    f.run_until(until, &mut |_, _| {});
}

/// Completions of host `h`, guest `g`, taken.
pub fn completions(f: &mut RdmaFabric, h: usize, g: usize) -> Vec<(SimTime, WorkCompletion)> {
    let mut out = Vec::new();
    f.hosts[h].completions.retain(|&(t, gi, wc)| {
        if gi == g {
            out.push((t, wc));
            false
        } else {
            true
        }
    });
    out
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Asserts two byte strings are equal, naming the first difference.
#[track_caller]
pub fn assert_bytes(actual: &[u8], expected: &[u8]) {
    if actual != expected {
        let at = actual
            .iter()
            .zip(expected)
            .position(|(a, b)| a != b)
            .unwrap_or(actual.len().min(expected.len()));
        panic!(
            "bytes differ at {at} of {} (lengths {} and {}): {:?} vs {:?}",
            expected.len(),
            actual.len(),
            expected.len(),
            &actual[at..(at + 8).min(actual.len())],
            &expected[at..(at + 8).min(expected.len())]
        );
    }
}

/// A send work request with one gather entry.
pub fn send_wr(
    wr_id: u64,
    opcode: WqeOpcode,
    flags: WqeFlags,
    imm: u32,
    remote: Remote,
    sge: Option<Sge>,
) -> SendWr {
    SendWr {
        wr_id,
        opcode,
        flags,
        imm,
        remote,
        sges: [sge, None],
    }
}

//! Seed 001's on-demand paging end to end: page faults in the guest stage
//! (MTT) and the host stage (PA2MA), RNR NAK and suspension of only the
//! faulting QP, unsolicited ACK on resume, no data lost and no QP in
//! error; faults while gathering or answering READs delay without a NAK;
//! seed 004's estimate picks hold or RNR NAK.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod rdma_common;

use iovirt::rdma_sim::{RdmaFabric, RdmaHostConfig};
use iovirt_core::{CostModel, SimTime};
use iovirt_drivers::Advice;
use iovirt_hca::HcaConfig;
use iovirt_hca::cqe::CqeStatus;
use iovirt_hca::mr::{Access, MrMode};
use iovirt_hca::qp::{PathMtu, QpState, QpType};
use iovirt_hca::wire::{AethSyndrome, RocePacket};
use iovirt_hca::wqe::{Remote, WqeFlags, WqeOpcode};
use rdma_common::*;

const RW: Access = Access::LOCAL_WRITE.union(Access::REMOTE_WRITE);

/// RNR NAK timer codes seen on the cable from host 1.
fn rnr_codes(f: &mut RdmaFabric, run_ns: u64) -> Vec<u8> {
    let mut codes = Vec::new();
    let until = f.now + iovirt_core::SimDuration::from_nanos(run_ns);
    f.run_until(until, &mut |_, frame| {
        if let Ok(p) = RocePacket::parse(frame)
            && let Some(a) = p.headers.aeth
            && let AethSyndrome::RnrNak { timer } = a.syndrome
        {
            codes.push(timer.code());
        }
    });
    codes
}

#[test]
fn guest_stage_fault_rnr_naks_suspends_and_resumes_with_an_unsolicited_ack() {
    let mut f = fabric(1, RdmaHostConfig::default());
    let (a, b) = pair(&mut f, 0, 0, QpType::Rc, PathMtu::Mtu1024);
    let data = pattern(8192, 21);
    let src = source(&mut f, a, 8192, 21);
    // The application's pages exist; the region's translations do not.
    let dst = buffer(&mut f, b, 8192, RW, MrMode::OnDemand, Some(&[0; 8192]));
    post_send(&mut f, a, write_wr(1, src, 8192, dst));
    let codes = rnr_codes(&mut f, 10_000_000);
    assert_bytes(&read_app(&mut f, b, dst.0, 8192), &data);
    let mr = f.hosts[1].hca.mkey(dst.1).unwrap().counters;
    assert_eq!(
        (mr.page_faults.get(), mr.page_faults_handled.get()),
        (2, 2),
        "one per page"
    );
    // The estimate (a minor fault, 4 us) rounds up to timer code 1 (10 us).
    assert_eq!(codes, vec![1, 1]);
    let s1 = f.hosts[1].hca.stats();
    assert_eq!(
        (s1.guest_page_faults.get(), s1.unsolicited_acks.get()),
        (2, 2)
    );
    assert_eq!(f.hosts[1].stats.guest_faults_serviced, 2);
    assert_eq!(f.hosts[1].hca.qp(b.qpn).unwrap().state, QpState::Rts);
    assert_eq!(f.hosts[1].stats.qp_fatal + f.hosts[0].stats.qp_fatal, 0);
    let tx = completions(&mut f, 0, 0);
    assert_eq!(tx[0].1.status, CqeStatus::Success);
    let qs = f.hosts[1].hca.qp_stats(b.qpn).unwrap();
    // Each fault waited the driver's service time (4 us) at least.
    assert!(qs.fault_wait_ns.get() >= 2 * CostModel::default().minor_fault_ns);
    assert_eq!(qs.rnr_naks_sent.get(), 2);
}

#[test]
fn host_stage_fault_swaps_the_page_in_and_the_data_lands() {
    let mut f = fabric(1, RdmaHostConfig::default());
    let (a, b) = pair(&mut f, 0, 0, QpType::Rc, PathMtu::Mtu1024);
    let data = pattern(4096, 33);
    let src = source(&mut f, a, 4096, 33);
    let old = pattern(4096, 99);
    let dst = buffer(&mut f, b, 4096, RW, MrMode::Pinned, Some(&old));
    // The host swaps the VM page out: stage 1 still maps it, stage 2 not.
    let gpa = f.hosts[1].guests[0].driver.app_translate(dst.0).unwrap();
    f.hosts[1].swap_out(0, gpa).unwrap();
    post_send(&mut f, a, write_wr(1, src, 2048, (dst.0 + 1024, dst.1)));
    let codes = rnr_codes(&mut f, 10_000_000);
    // Seed 004: a swapped page is a major fault (60 us): code 5 (60 us).
    assert_eq!(codes, vec![5]);
    let mut expect = old.clone();
    expect[1024..3072].copy_from_slice(&data[..2048]);
    assert_bytes(&read_app(&mut f, b, dst.0, 4096), &expect);
    assert_eq!(f.hosts[1].stats.host_faults_serviced, 1);
    assert_eq!(f.hosts[1].stats.major_faults, 1);
    assert_eq!(f.hosts[1].hca.stats().host_page_faults.get(), 1);
    assert_eq!(completions(&mut f, 0, 0)[0].1.status, CqeStatus::Success);
    assert_eq!(f.hosts[1].hca.qp(b.qpn).unwrap().state, QpState::Rts);
}

#[test]
fn swap_out_after_use_invalidates_the_cached_translation() {
    let mut f = fabric(1, RdmaHostConfig::default());
    let (a, b) = pair(&mut f, 0, 0, QpType::Rc, PathMtu::Mtu1024);
    let src = source(&mut f, a, 4096, 1);
    let dst = buffer(&mut f, b, 4096, RW, MrMode::Pinned, Some(&[0; 4096]));
    post_send(&mut f, a, write_wr(1, src, 512, dst));
    settle(&mut f, 10_000_000);
    assert_eq!(f.hosts[1].hca.stats().host_page_faults.get(), 0);
    let gpa = f.hosts[1].guests[0].driver.app_translate(dst.0).unwrap();
    f.hosts[1].swap_out(0, gpa).unwrap();
    // The frame the page had is zeroed and free; a stale IOTLB entry would
    // let the next write land there. It faults instead.
    post_send(
        &mut f,
        a,
        write_wr(2, (src.0 + 512, src.1), 512, (dst.0 + 512, dst.1)),
    );
    settle(&mut f, 10_000_000);
    assert_eq!(f.hosts[1].hca.stats().host_page_faults.get(), 1);
    assert_bytes(&read_app(&mut f, b, dst.0, 1024), &pattern(4096, 1)[..1024]);
}

#[test]
fn implicit_odp_faults_untouched_pages_in() {
    let mut f = fabric(1, RdmaHostConfig::default());
    let (a, b) = pair(&mut f, 0, 0, QpType::Rc, PathMtu::Mtu4096);
    let src = source(&mut f, a, 12_288, 5);
    // One key for the whole address space; the pages were never touched.
    let dst = buffer(&mut f, b, 12_288, RW, MrMode::Implicit, None);
    let before = f.hosts[1].guests[0].driver.stats().pages_faulted_in.get();
    post_send(&mut f, a, write_wr(1, src, 12_288, dst));
    settle(&mut f, 10_000_000);
    assert_bytes(&read_app(&mut f, b, dst.0, 12_288), &pattern(12_288, 5));
    assert_eq!(
        f.hosts[1].guests[0].driver.stats().pages_faulted_in.get() - before,
        3
    );
    assert_eq!(
        f.hosts[1]
            .hca
            .mkey(dst.1)
            .unwrap()
            .counters
            .page_faults
            .get(),
        3
    );
}

#[test]
fn a_gather_fault_delays_the_sender_without_a_nak() {
    let mut f = fabric(1, RdmaHostConfig::default());
    let (a, b) = pair(&mut f, 0, 0, QpType::Rc, PathMtu::Mtu1024);
    let data = pattern(3000, 17);
    let src = buffer(
        &mut f,
        a,
        3000,
        Access::empty(),
        MrMode::OnDemand,
        Some(&data),
    );
    let dst = sink(&mut f, b, 4096);
    post_recv(&mut f, b, 1, sge(dst, 4096));
    post_send(
        &mut f,
        a,
        send_wr(
            1,
            WqeOpcode::Send,
            WqeFlags::SIGNALED,
            0,
            Remote::None,
            Some(sge(src, 3000)),
        ),
    );
    settle(&mut f, 10_000_000);
    assert_bytes(&read_app(&mut f, b, dst.0, 3000), &data);
    assert_eq!(
        f.hosts[0].hca.stats().guest_page_faults.get(),
        1,
        "one page"
    );
    assert_eq!(f.hosts[1].hca.stats().rnr_naks_sent.get(), 0);
    assert_eq!(f.hosts[0].hca.stats().retransmitted_packets.get(), 0);
    assert!(
        f.hosts[0].hca.qp_stats(a.qpn).unwrap().fault_wait_ns.get()
            >= CostModel::default().minor_fault_ns
    );
}

#[test]
fn a_read_response_fault_delays_without_a_nak() {
    let mut f = fabric(1, RdmaHostConfig::default());
    let (a, b) = pair(&mut f, 0, 0, QpType::Rc, PathMtu::Mtu1024);
    let data = pattern(5000, 23);
    let remote = buffer(
        &mut f,
        b,
        5000,
        Access::REMOTE_READ,
        MrMode::OnDemand,
        Some(&data),
    );
    let local = buffer(&mut f, a, 5000, Access::LOCAL_WRITE, MrMode::Pinned, None);
    post_send(
        &mut f,
        a,
        send_wr(
            1,
            WqeOpcode::RdmaRead,
            WqeFlags::SIGNALED,
            0,
            Remote::Rdma {
                va: remote.0,
                rkey: remote.1,
            },
            Some(sge(local, 5000)),
        ),
    );
    settle(&mut f, 10_000_000);
    assert_bytes(&read_app(&mut f, a, local.0, 5000), &data);
    assert_eq!(f.hosts[1].hca.stats().guest_page_faults.get(), 2);
    assert_eq!(f.hosts[1].hca.stats().rnr_naks_sent.get(), 0);
    assert_eq!(completions(&mut f, 0, 0)[0].1.status, CqeStatus::Success);
}

#[test]
fn prefetch_advice_avoids_the_faults() {
    let mut f = fabric(1, RdmaHostConfig::default());
    let (a, b) = pair(&mut f, 0, 0, QpType::Rc, PathMtu::Mtu1024);
    let src = source(&mut f, a, 8192, 2);
    let dst = buffer(&mut f, b, 8192, RW, MrMode::OnDemand, None);
    f.hosts[1]
        .with_guest(0, |d, bus| {
            d.advise_mr(bus, dst.1, dst.0, 8192, Advice::PrefetchWrite)
                .unwrap()
        })
        .unwrap();
    post_send(&mut f, a, write_wr(1, src, 8192, dst));
    settle(&mut f, 10_000_000);
    assert_bytes(&read_app(&mut f, b, dst.0, 8192), &pattern(8192, 2));
    let c = f.hosts[1].hca.mkey(dst.1).unwrap().counters;
    assert_eq!((c.page_prefetch.get(), c.page_faults.get()), (2, 0));
    // Invalidation (what the guest does before reusing the pages) counts.
    f.hosts[1]
        .with_guest(0, |d, bus| d.invalidate(bus, dst.1, dst.0, 8192).unwrap())
        .unwrap();
    let c = f.hosts[1].hca.mkey(dst.1).unwrap().counters;
    assert_eq!(
        (
            c.page_invalidations.get(),
            c.page_invalidations_handled.get()
        ),
        (2, 2)
    );
}

/// Host 1 has two VMs; QP x writes into VM 0 (on demand or pinned), QP y
/// into VM 1 (pinned). Returns when y's last write completed.
fn y_finish(x_mode: MrMode) -> (SimTime, u64) {
    let mut f = fabric(2, RdmaHostConfig::default());
    let (xa, xb) = pair(&mut f, 0, 0, QpType::Rc, PathMtu::Mtu1024);
    let (ya, yb) = pair(&mut f, 1, 1, QpType::Rc, PathMtu::Mtu1024);
    let xs = source(&mut f, xa, 65_536, 1);
    let xd = buffer(&mut f, xb, 65_536, RW, x_mode, Some(&[0; 65_536]));
    let ys = source(&mut f, ya, 65_536, 2);
    let yd = sink(&mut f, yb, 65_536);
    for i in 0..16u64 {
        post_send(
            &mut f,
            xa,
            write_wr(i, (xs.0 + i * 4096, xs.1), 4096, (xd.0 + i * 4096, xd.1)),
        );
        post_send(
            &mut f,
            ya,
            write_wr(i, (ys.0 + i * 4096, ys.1), 4096, (yd.0 + i * 4096, yd.1)),
        );
    }
    settle(&mut f, 100_000_000);
    assert_bytes(&read_app(&mut f, xb, xd.0, 65_536), &pattern(65_536, 1));
    assert_bytes(&read_app(&mut f, yb, yd.0, 65_536), &pattern(65_536, 2));
    let y = completions(&mut f, 0, 1);
    assert_eq!(y.len(), 16);
    assert!(y.iter().all(|(_, wc)| wc.status == CqeStatus::Success));
    let ys_stats = f.hosts[1].hca.qp_stats(yb.qpn).unwrap();
    assert_eq!(ys_stats.rnr_naks_sent.get(), 0, "y never NAKed");
    assert_eq!(ys_stats.page_faults.get(), 0);
    let x_faults = f.hosts[1].hca.qp_stats(xb.qpn).unwrap().page_faults.get();
    (y.last().unwrap().0, x_faults)
}

#[test]
fn a_fault_on_one_qp_does_not_delay_another() {
    let (baseline, none) = y_finish(MrMode::Pinned);
    let (with_faults, faults) = y_finish(MrMode::OnDemand);
    assert_eq!(none, 0);
    assert_eq!(faults, 16);
    // QP y finished no later than in the run where x never faulted (x's
    // stalls even leave y more of the cable).
    assert!(with_faults <= baseline, "{with_faults:?} vs {baseline:?}");
}

#[test]
fn seed_004_short_faults_hold_the_packet_long_ones_rnr_nak() {
    let config = RdmaHostConfig {
        hca: HcaConfig {
            hold_threshold_ns: 5_000,
            hold_buffer_packets: 32,
            ..HcaConfig::default()
        },
        ..RdmaHostConfig::default()
    };
    let mut f = fabric(1, config);
    let (a, b) = pair(&mut f, 0, 0, QpType::Rc, PathMtu::Mtu1024);
    let src = source(&mut f, a, 8192, 8);
    let dst = buffer(&mut f, b, 8192, RW, MrMode::OnDemand, Some(&[0; 8192]));
    post_send(&mut f, a, write_wr(1, src, 8192, dst));
    let codes = rnr_codes(&mut f, 10_000_000);
    assert!(codes.is_empty(), "minor faults (4 us) are held, not NAKed");
    assert_bytes(&read_app(&mut f, b, dst.0, 8192), &pattern(8192, 8));
    let s1 = f.hosts[1].hca.stats();
    assert!(s1.held_packets.get() >= 2);
    assert_eq!(s1.guest_page_faults.get(), 2);
    assert_eq!(f.hosts[0].hca.stats().retransmitted_packets.get(), 0);
    // A swapped page (60 us) is over the threshold: RNR NAK.
    let gpa = f.hosts[1].guests[0].driver.app_translate(dst.0).unwrap();
    f.hosts[1].swap_out(0, gpa).unwrap();
    post_send(&mut f, a, write_wr(2, src, 1024, dst));
    let codes = rnr_codes(&mut f, 10_000_000);
    assert_eq!(codes, vec![5]);
    assert_bytes(&read_app(&mut f, b, dst.0, 8192), &pattern(8192, 8));
}

#[test]
fn a_send_into_an_on_demand_receive_buffer_faults_and_is_delivered() {
    let mut f = fabric(1, RdmaHostConfig::default());
    let (a, b) = pair(&mut f, 0, 0, QpType::Rc, PathMtu::Mtu1024);
    let data = pattern(6000, 41);
    let src = source(&mut f, a, 6000, 41);
    let dst = buffer(&mut f, b, 8192, Access::LOCAL_WRITE, MrMode::OnDemand, None);
    post_recv(&mut f, b, 5, sge(dst, 8192));
    post_send(
        &mut f,
        a,
        send_wr(
            1,
            WqeOpcode::Send,
            WqeFlags::SIGNALED,
            0,
            Remote::None,
            Some(sge(src, 6000)),
        ),
    );
    let codes = rnr_codes(&mut f, 10_000_000);
    assert_bytes(&read_app(&mut f, b, dst.0, 6000), &data);
    // Two pages, each faulted in by the driver (the application never touched them).
    assert_eq!(codes.len(), 2);
    assert_eq!(f.hosts[1].guests[0].driver.stats().faults_serviced.get(), 2);
    let rx = completions(&mut f, 1, 0);
    assert_eq!(
        (rx.len(), rx[0].1.wr_id, rx[0].1.byte_len, rx[0].1.status),
        (1, 5, 6000, CqeStatus::Success)
    );
    assert_eq!(f.hosts[1].hca.qp(b.qpn).unwrap().state, QpState::Rts);
}

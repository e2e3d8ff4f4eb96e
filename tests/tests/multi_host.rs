//! The `custom` scenario's multi-host form, from a TOML string through the
//! entry point the `iovirt` binary uses (`Config::from_toml`, then
//! `custom::run` with the configuration's cost model): two hosts joined by
//! a cable, flows between their VMs and within each host. Every frame
//! arrives byte-exact; the cross-host ones, and only they, are on the
//! cable; a flow within a host keeps to that host's `vm_to_vm` path.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use iovirt::config::Config;
use iovirt::custom::{self, HostsOutcome, Outcome, host_vm_mac};
use iovirt::link::LinkConfig;
use iovirt::platform::frame;
use iovirt_core::SimTime;

/// Host 0 page-flips and crosses over, host 1 copies and bridges; two
/// flows cross the cable (one each way), one stays in each host.
fn config(pacing: &str, h0: (&str, &str)) -> String {
    format!(
        r#"
[custom]
pacing = "{pacing}"
vm_to_vm = "{}"

[[custom.hosts]]
demux = "{}"
[[custom.hosts.vms]]
memory_mib = 4
[[custom.hosts.vms]]
memory_mib = 4

[[custom.hosts]]
demux = "copy"
vm_to_vm = "bridge"
[[custom.hosts.vms]]
memory_mib = 4
[[custom.hosts.vms]]
memory_mib = 8
rx_descriptors = 128

[[custom.flows]]
from = "h0.vm0"
to = "h1.vm0"
frames = 200
len = 1514

[[custom.flows]]
from = "h1.vm1"
to = "h0.vm1"
frames = 150
len = 512

[[custom.flows]]
from = "h0.vm1"
to = "h0.vm0"
frames = 120
len = 128

[[custom.flows]]
from = "h1.vm0"
to = "h1.vm1"
frames = 100
len = 60
"#,
        h0.1, h0.0
    )
}

/// Runs `text` as the binary does; the outcome and every frame the cable
/// carried, with its arrival time.
fn run(text: &str) -> (Config, HostsOutcome, Vec<(SimTime, Vec<u8>)>) {
    let cfg = Config::from_toml(text).unwrap();
    let mut cable = Vec::new();
    let outcome = custom::run(&cfg.custom, &cfg.cost_model, &mut |t, f| {
        cable.push((t, f.to_vec()))
    })
    .unwrap();
    let Outcome::Hosts(o) = outcome else {
        panic!("the multi-host form gives the hosts' outcome");
    };
    (cfg, o, cable)
}

/// The figures of each flow: (sent, delivered, corrupted, lost).
fn figures(o: &HostsOutcome) -> Vec<(String, u64, u64, u64, u64)> {
    o.flows
        .iter()
        .map(|r| (r.flow.clone(), r.sent, r.delivered, r.corrupted, r.lost))
        .collect()
}

fn all_delivered() -> Vec<(String, u64, u64, u64, u64)> {
    [
        ("h0.vm0 -> h1.vm0", 200),
        ("h1.vm1 -> h0.vm1", 150),
        ("h0.vm1 -> h0.vm0", 120),
        ("h1.vm0 -> h1.vm1", 100),
    ]
    .into_iter()
    .map(|(f, n)| (f.to_owned(), n, n, 0, 0))
    .collect()
}

/// The cable carried exactly the cross-host flows' frames, byte-exact and
/// in order each way, and nothing of the flows within a host.
fn check_cable(o: &HostsOutcome, cable: &[(SimTime, Vec<u8>)]) {
    let one_way = |dst, src, frames| -> Vec<Vec<u8>> {
        let got: Vec<Vec<u8>> = cable
            .iter()
            .filter(|(_, f)| f[..6] == dst && f[6..12] == src)
            .map(|(_, f)| f.clone())
            .collect();
        assert_eq!(got.len(), frames as usize);
        got
    };
    let h0_to_h1 = one_way(host_vm_mac(1, 0), host_vm_mac(0, 0), 200);
    let h1_to_h0 = one_way(host_vm_mac(0, 1), host_vm_mac(1, 1), 150);
    assert_eq!(cable.len(), 200 + 150, "nothing else on the cable");
    for (n, f) in h0_to_h1.iter().enumerate() {
        assert!(*f == frame(host_vm_mac(1, 0), host_vm_mac(0, 0), n as u32, 1514));
    }
    for (n, f) in h1_to_h0.iter().enumerate() {
        assert!(*f == frame(host_vm_mac(0, 1), host_vm_mac(1, 1), n as u32, 512));
    }
    let (h0, h1) = (&o.hosts[0], &o.hosts[1]);
    assert_eq!(
        (h0.cable_out.frames.get(), h1.cable_out.frames.get()),
        (200, 150)
    );
    assert_eq!(h0.cable_out.bytes.get(), 200 * 1514);
    // Each host's physical NIC sends its cross-host frames and receives
    // the other's: the flows within a host never touch it.
    let nic = |h: &custom::HostCounters| {
        (
            h.network.uplink_tx_frames.get(),
            h.network.uplink_rx_frames.get(),
        )
    };
    assert_eq!(nic(h0), (200, 150));
    assert_eq!(nic(h1), (150, 200));
}

#[test]
fn two_hosts_in_lock_step_cross_the_cable_and_keep_their_own_paths() {
    let (cfg, o, cable) = run(&config("lockstep", ("flip", "crossover")));
    let hosts = cfg.custom.hosts.as_ref().unwrap();
    assert_eq!(
        (hosts[0].vm_to_vm, hosts[1].vm_to_vm),
        (iovirt_vmm::VmToVm::Crossover, iovirt_vmm::VmToVm::Bridge),
        "host 0 takes [custom]'s vm_to_vm, host 1 its own"
    );
    assert_eq!(figures(&o), all_delivered());
    assert_eq!(o.unexpected, 0);
    check_cable(&o, &cable);
    let (h0, h1) = (&o.hosts[0], &o.hosts[1]);
    // Host 0 crossed its local flow over (no copy, no physical NIC) and
    // flipped the frames from host 1 into its VM.
    assert_eq!(h0.network.crossovers.get(), 120);
    assert_eq!(h0.network.flips.get(), 150);
    assert_eq!(h0.network.local_frames.get(), 0);
    // Host 1 bridged its local flow and copied everything else: host 0's
    // frames in, its own out to the physical NIC.
    assert_eq!(
        (h1.network.crossovers.get(), h1.network.flips.get()),
        (0, 0)
    );
    assert_eq!(h1.network.local_frames.get(), 100);
    assert_eq!(
        h1.network.bytes_copied.get(),
        200 * 1514 + 100 * 60 + 150 * 512
    );
    // No frame across the cable arrives before the cable could carry it.
    let link = LinkConfig::from_cost(&cfg.cost_model, 1);
    for (r, len) in o.flows.iter().zip([1514, 512]) {
        let least = link.serialization(len).as_nanos() + link.latency_ns;
        assert!(r.latency_ns_mean.unwrap() >= least as f64, "{r:?}");
        assert!(r.latency_ns_max.unwrap() >= least, "{r:?}");
    }
    let first = cable.first().unwrap().0.as_nanos();
    assert!(first >= link.serialization(512).as_nanos() + link.latency_ns);
}

#[test]
fn two_hosts_at_line_rate_lose_nothing_when_their_host_work_keeps_up() {
    // Copies and bridges cost less than a frame's time on the cable.
    let (cfg, o, cable) = run(&config("line-rate", ("copy", "bridge")));
    assert_eq!(figures(&o), all_delivered());
    assert_eq!(o.unexpected, 0);
    check_cable(&o, &cable);
    assert_eq!(o.hosts[0].network.local_frames.get(), 120);
    // From the send to the handler: the cable, then at most an interrupt
    // latency and a few frames of queueing behind each other.
    let link = LinkConfig::from_cost(&cfg.cost_model, 1);
    for (r, len) in o.flows.iter().zip([1514, 512]) {
        let least = link.serialization(len).as_nanos() + link.latency_ns;
        let most = least + cfg.custom.irq_latency_ns + 4 * link.serialization(1514).as_nanos();
        let (mean, max) = (r.latency_ns_mean.unwrap(), r.latency_ns_max.unwrap());
        assert!(
            mean >= least as f64 && max <= most,
            "{r:?}: {least}..={most}"
        );
    }
}

#[test]
fn at_line_rate_the_page_flipping_host_falls_behind_and_never_corrupts() {
    // As in the single-host form: host 0's flips and crossovers cost more
    // CPU time than frames take on the cable, so its guests' interrupts
    // fall behind: its VM-bound flows wait (or lose frames, never corrupt
    // them); host 1's keep up.
    let (_, o, cable) = run(&config("line-rate", ("flip", "crossover")));
    assert_eq!(o.unexpected, 0);
    for r in &o.flows {
        assert_eq!(r.corrupted, 0, "{r:?}");
        assert_eq!(r.delivered + r.lost, r.sent, "{r:?}");
        if r.flow.ends_with("h1.vm0") || r.flow.ends_with("h1.vm1") {
            assert_eq!(r.lost, 0, "{r:?}");
        }
    }
    let mean = |k: usize| o.flows[k].latency_ns_mean.unwrap();
    assert!(
        mean(1) > 10.0 * mean(0),
        "{:?} vs {:?}",
        o.flows[1],
        o.flows[0]
    );
    // Every frame still crossed the cable: the loss is in host 0.
    assert_eq!(cable.len(), 350);
}

//! The `iovirt` command line and the `iotlb-prefetch` scenario: seed 000's
//! claim, determinism (one host and two), and the errors a user can make.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::process::Command;

use iovirt::iotlb_prefetch::{self, BufferPlacement, Params, PrefetchMode};
use iovirt::{crossover, demux};
use iovirt_core::CostModel;
use iovirt_vmm::{DemuxMode, VmToVm};

fn iovirt(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_iovirt"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn prefetch_takes_the_critical_path_misses_to_about_zero() {
    let params = Params {
        frames: 300,
        iotlb_entries: vec![8],
        ..Params::default()
    };
    let rows = iotlb_prefetch::run(&params, &CostModel::default(), 1).unwrap();
    assert_eq!(rows.len(), 2 * PrefetchMode::ALL.len());
    for r in &rows {
        assert_eq!(r.frames, 300, "every frame arrived: {r:?}");
        match r.prefetch {
            PrefetchMode::Off => assert!(r.critical_misses_per_frame >= 1.0, "{r:?}"),
            _ => assert!(r.critical_misses_per_frame <= 0.01, "{r:?}"),
        }
    }
    let off = rows
        .iter()
        .find(|r| r.prefetch == PrefetchMode::Off && r.placement == BufferPlacement::Random)
        .unwrap();
    let both = rows
        .iter()
        .find(|r| r.prefetch == PrefetchMode::Both && r.placement == BufferPlacement::Random)
        .unwrap();
    assert!(off.translation_ns_per_frame > 10.0 * both.translation_ns_per_frame);
    assert_eq!(
        both.prefetches_per_frame, 4.0,
        "two NOP commands and two device prefetches per frame"
    );
}

#[test]
fn the_same_seed_gives_the_same_report() {
    let a = iovirt(&["run", "--json", "--frames", "200", "--seed", "7"]);
    let b = iovirt(&["run", "--json", "--frames", "200", "--seed", "7"]);
    assert!(a.status.success());
    assert_eq!(a.stdout, b.stdout);
    let all: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    let reports = all["reports"].as_array().unwrap();
    let shape: Vec<_> = reports
        .iter()
        .map(|r| {
            (
                r["scenario"].as_str(),
                r["seed"].as_u64(),
                r["rows"].as_array().map(Vec::len),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            (Some("iotlb-prefetch"), Some(7), Some(24)),
            (Some("demux"), Some(7), Some(8)),
            (Some("crossover"), Some(7), Some(6)),
            (Some("rdma-odp"), Some(7), Some(5)),
            (Some("custom"), None, None)
        ]
    );
}

#[test]
fn the_page_flip_demultiplexer_copies_nothing_on_the_same_traffic() {
    let params = demux::Params {
        frames: 300,
        broadcast_every: 0,
        ..demux::Params::default()
    };
    let rows = demux::run(&params, &CostModel::default(), 5).unwrap();
    assert_eq!(rows.len(), 8);
    for r in &rows {
        assert_eq!(
            (r.delivery.frames, r.delivery.corrupted),
            (300, 0),
            "every frame, byte-exact: {r:?}"
        );
        match r.demux {
            DemuxMode::Copy => {
                assert_eq!(r.bytes_copied_per_frame, r.frame_len as f64, "{r:?}");
                assert_eq!(r.remaps_per_frame, 0.0);
            }
            DemuxMode::Flip => {
                assert_eq!(r.bytes_copied_per_frame, 0.0, "{r:?}");
                assert_eq!(r.remaps_per_frame, 1.0, "{r:?}");
                // Each remapped page, given back by its guest, is unmapped
                // with its translation invalidated and cleared.
                assert!(r.invalidations_per_frame > 0.95, "{r:?}");
                assert!(r.pages_zeroed_per_frame > 0.95, "{r:?}");
            }
        }
    }
    // Broadcasts cannot be flipped into several VMs: they are copied.
    let params = demux::Params {
        frames: 100,
        broadcast_every: 10,
        vms: vec![3],
        frame_lens: vec![200],
        ..demux::Params::default()
    };
    let rows = demux::run(&params, &CostModel::default(), 5).unwrap();
    let flip = rows.iter().find(|r| r.demux == DemuxMode::Flip).unwrap();
    assert_eq!(
        (flip.delivery.frames, flip.delivery.corrupted),
        (90 + 10 * 3, 0)
    );
    assert_eq!(flip.bytes_copied_per_frame, (10 * 3 * 200) as f64 / 120.0);
}

#[test]
fn the_table_leads_with_the_headline() {
    let out = iovirt(&["run", "iotlb-prefetch", "--frames", "100"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("iotlb-prefetch"));
    assert!(lines.next().unwrap().starts_with("headline: IOTLB misses"));
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("random") || l.contains("contiguous"))
            .count(),
        24
    );
}

#[test]
fn user_errors_are_reported() {
    let out = iovirt(&["run", "no-such-scenario"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("unknown scenario `no-such-scenario`")
    );
    let out = iovirt(&["run", "--frames", "lots"]);
    assert!(!out.status.success());
    let listed = String::from_utf8(iovirt(&["list"]).stdout).unwrap();
    let names: Vec<_> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        names,
        ["iotlb-prefetch", "demux", "crossover", "rdma-odp", "custom"]
    );
}

#[test]
fn config_files_run_and_their_errors_name_the_field() {
    let builtin = iovirt(&["config"]);
    assert!(builtin.status.success());
    let text = String::from_utf8(builtin.stdout).unwrap();
    assert!(text.contains("[iotlb_prefetch]"));
    let dir = std::env::temp_dir().join(format!("iovirt-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("small.toml");
    std::fs::write(
        &good,
        "seed = 3\n[iotlb_prefetch]\nframes = 50\niotlb_entries = [4]\n",
    )
    .unwrap();
    let out = iovirt(&[
        "run",
        "iotlb-prefetch",
        "--json",
        "--config",
        good.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            report["seed"].as_u64(),
            report["rows"].as_array().map(Vec::len)
        ),
        (Some(3), Some(8))
    );
    assert_eq!(report["rows"][0]["frames"], 50);
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[iotlb_prefetch]\nframe_len = 20\n").unwrap();
    let out = iovirt(&["run", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("`iotlb_prefetch.frame_len`")
    );
    std::fs::write(&bad, "[demux]\nvms = [2, 0]\n").unwrap();
    let out = iovirt(&["run", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("`demux.vms`: 0 VMs"), "{err}");
    let out = iovirt(&[
        "run",
        "--config",
        dir.join("missing.toml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pcap_captures_every_frame_in_virtual_time() {
    let path = std::env::temp_dir().join(format!("iovirt-pcap-test-{}.pcap", std::process::id()));
    let out = iovirt(&[
        "run",
        "iotlb-prefetch",
        "--frames",
        "20",
        "--pcap",
        path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&path).unwrap();
    // Little-endian pcap with nanosecond timestamps, Ethernet link type.
    assert_eq!(bytes[..4], 0xa1b2_3c4du32.to_le_bytes());
    assert_eq!(u32::from_le_bytes(bytes[20..24].try_into().unwrap()), 1);
    let mut reader = pcap_file::pcap::PcapReader::new(std::io::Cursor::new(bytes)).unwrap();
    let mut count = 0;
    let mut last = std::time::Duration::ZERO;
    while let Some(packet) = reader.next_packet() {
        let packet = packet.unwrap();
        assert!(packet.timestamp > last, "virtual time moves forward");
        last = packet.timestamp;
        assert_eq!(packet.data[..6], [0x52, 0x54, 0, 0, 0, 2], "to VM B");
        assert_eq!(packet.data.len(), 512);
        count += 1;
    }
    assert_eq!(count, 24 * 20, "every frame of every run");
    // (512 B + FCS + 20 B of preamble and gap) at 10 Gb/s is 428.8 ns, rounded up, plus 500 ns.
    assert_eq!(last.as_nanos(), 480 * 929);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn crossover_keeps_vm_to_vm_traffic_off_the_physical_nic_with_no_copy() {
    let params = crossover::Params {
        frames: 200,
        ..crossover::Params::default()
    };
    let rows = crossover::run(&params, &CostModel::default()).unwrap();
    assert_eq!(rows.len(), 2 * crossover::MODES.len());
    for r in &rows {
        assert_eq!(
            (r.delivery.frames, r.delivery.corrupted),
            (400, 0),
            "both ways, byte-exact: {r:?}"
        );
        let (nic, copies, remaps) = match r.vm_to_vm {
            VmToVm::Loopback => (2.0, 2.0, 0.0),
            VmToVm::Bridge => (0.0, 1.0, 0.0),
            VmToVm::Crossover => (0.0, 0.0, 1.0),
        };
        assert_eq!(r.nic_frames_per_frame, nic, "{r:?}");
        assert_eq!(r.copies_per_frame, copies, "{r:?}");
        assert_eq!(r.remaps_per_frame, remaps, "{r:?}");
    }
}

#[test]
fn a_custom_host_runs_from_a_config_file() {
    let dir = std::env::temp_dir().join(format!("iovirt-custom-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("custom.toml");
    let host = |to: &str| {
        format!(
            "[custom]\ndemux = \"copy\"\nvm_to_vm = \"bridge\"\ndata_frames = 2048\n\
             [[custom.vms]]\nmemory_mib = 2\n[[custom.vms]]\nmemory_mib = 8\n\
             [[custom.flows]]\nfrom = \"wire\"\nto = \"vm0\"\nframes = 40\nlen = 300\n\
             [[custom.flows]]\nfrom = \"vm0\"\nto = \"{to}\"\nframes = 30\nlen = 1514\n\
             [[custom.flows]]\nfrom = \"vm1\"\nto = \"wire\"\nframes = 20\nlen = 60\n"
        )
    };
    std::fs::write(&path, host("vm1")).unwrap();
    let report = custom_json(&path);
    let flows = report["outcome"]["flows"].as_array().unwrap();
    let figures: Vec<_> = flows
        .iter()
        .map(|f| {
            (
                f["flow"].as_str().unwrap().to_owned(),
                f["sent"].as_u64(),
                f["delivered"].as_u64(),
                f["corrupted"].as_u64(),
                f["lost"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        figures,
        [
            (
                "wire -> vm0".to_owned(),
                Some(40),
                Some(40),
                Some(0),
                Some(0)
            ),
            (
                "vm0 -> vm1".to_owned(),
                Some(30),
                Some(30),
                Some(0),
                Some(0)
            ),
            (
                "vm1 -> wire".to_owned(),
                Some(20),
                Some(20),
                Some(0),
                Some(0)
            ),
        ]
    );
    assert_eq!(report["outcome"]["unexpected"], 0);
    // The bridge copied the 30 local frames; the host copied 20 out.
    assert_eq!(
        report["outcome"]["network"]["bytes_copied"],
        40 * 300 + 30 * 1514 + 20 * 60
    );
    // The same host at line rate, on the discrete-event loop.
    std::fs::write(
        &path,
        host("vm1").replace("data_frames", "pacing = \"line-rate\"\ndata_frames"),
    )
    .unwrap();
    let report = custom_json(&path);
    for f in report["outcome"]["flows"].as_array().unwrap() {
        assert_eq!(f["delivered"], f["sent"], "{f}");
        assert_eq!(
            (f["corrupted"].as_u64(), f["lost"].as_u64()),
            (Some(0), Some(0)),
            "{f}"
        );
    }
    assert_eq!(report["outcome"]["unexpected"], 0);
    std::fs::write(&path, host("vm9")).unwrap();
    let out = iovirt(&["run", "custom", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("`custom.flows`: flow 1: `vm9`: there are 2 VMs"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn at_line_rate_the_device_prefetcher_keeps_its_claim_and_the_driver_one_fades() {
    let params = Params {
        frames: 400,
        iotlb_entries: vec![8],
        pacing: iotlb_prefetch::Pacing::LineRate,
        ..Params::default()
    };
    let rows = iotlb_prefetch::run(&params, &CostModel::default(), 1).unwrap();
    for r in &rows {
        assert_eq!(r.frames, 400, "every frame arrived: {r:?}");
        match r.prefetch {
            PrefetchMode::Off => assert!(r.critical_misses_per_frame >= 1.0, "{r:?}"),
            PrefetchMode::Device | PrefetchMode::Both => {
                assert!(r.critical_misses_per_frame <= 0.01, "{r:?}")
            }
            // The driver's NOP commands go out after a receive pass; at line
            // rate the next frames have already landed by then.
            PrefetchMode::Driver => assert!(r.critical_misses_per_frame > 0.5, "{r:?}"),
        }
    }
    // Throttled interrupts batch more frames per pass: the driver's
    // prefetcher helps even less.
    let throttled = iotlb_prefetch::run(
        &Params {
            itr: 100,
            ..params.clone()
        },
        &CostModel::default(),
        1,
    )
    .unwrap();
    let driver = |rows: &[iotlb_prefetch::Row]| {
        rows.iter()
            .find(|r| r.prefetch == PrefetchMode::Driver && r.placement == BufferPlacement::Random)
            .unwrap()
            .critical_misses_per_frame
    };
    assert!(
        driver(&throttled) > driver(&rows),
        "{} vs {}",
        driver(&throttled),
        driver(&rows)
    );
}

#[test]
fn the_demultiplexers_at_line_rate_on_the_event_loop() {
    // First with the host's work free: only the cable, interrupts and
    // rings limit the traffic.
    let params = demux::Params {
        frames: 600,
        vms: vec![2],
        pacing: iovirt::platform::Pacing::LineRate,
        charge_host_work: false,
        ..demux::Params::default()
    };
    let rows = demux::run(&params, &CostModel::default(), 3).unwrap();
    for r in &rows {
        assert_eq!(
            (r.delivery.frames, r.delivery.lost, r.delivery.corrupted),
            (600, 0, 0),
            "{r:?}"
        );
        // From the peer's send to the guest's handler: at least the cable,
        // at most the cable, an interrupt latency and some queueing.
        assert!(r.delivery.latency_ns_mean >= 500.0, "{r:?}");
        assert!(r.delivery.latency_ns_max <= 10_000, "{r:?}");
    }
    // Throttled interrupts (51.2 us) let 64 B frames overrun the guests'
    // 63-buffer rings: both forms lose the same frames (the guest ring is
    // the limit), and still copy nothing by page flipping.
    let throttled = demux::run(
        &demux::Params { itr: 200, ..params },
        &CostModel::default(),
        3,
    )
    .unwrap();
    let at = |demux, len| {
        throttled
            .iter()
            .find(|r| r.demux == demux && r.frame_len == len)
            .unwrap()
            .clone()
    };
    let (copy, flip) = (at(DemuxMode::Copy, 64), at(DemuxMode::Flip, 64));
    assert!(copy.delivery.lost > 0, "{copy:?}");
    assert_eq!(
        (copy.delivery.frames, copy.delivery.lost),
        (flip.delivery.frames, flip.delivery.lost)
    );
    assert_eq!(copy.delivery.frames + copy.delivery.lost, 600);
    assert_eq!((copy.delivery.corrupted, flip.delivery.corrupted), (0, 0));
    assert_eq!(flip.bytes_copied_per_frame, 0.0);
}

#[test]
fn with_the_host_s_work_as_cpu_time_page_flipping_cannot_keep_up_at_line_rate() {
    let params = demux::Params {
        frames: 600,
        vms: vec![2],
        pacing: iovirt::platform::Pacing::LineRate,
        ..demux::Params::default()
    };
    assert!(params.charge_host_work, "the default");
    let rows = demux::run(&params, &CostModel::default(), 3).unwrap();
    let at = |demux, len| {
        rows.iter()
            .find(|r| r.demux == demux && r.frame_len == len)
            .unwrap()
    };
    for len in [64, 1514] {
        let (copy, flip) = (at(DemuxMode::Copy, len), at(DemuxMode::Flip, len));
        // A copy costs less than a frame's time on the wire: no loss.
        assert_eq!(
            (
                copy.delivery.frames,
                copy.delivery.lost,
                copy.delivery.corrupted
            ),
            (600, 0, 0),
            "{copy:?}"
        );
        // A flip costs a remap, an invalidation and a page clear, more than
        // a frame's time: the guests' interrupts fall behind. At 64 B (a
        // frame every 71 ns) their rings fill and frames are lost, never
        // corrupted; at 1514 B the rings absorb the backlog as latency.
        assert!(flip.host_ns_per_frame > 1_000.0, "{flip:?}");
        assert_eq!(flip.delivery.corrupted, 0, "{flip:?}");
        assert_eq!(flip.delivery.frames + flip.delivery.lost, 600);
        if len == 64 {
            assert!(flip.delivery.lost > 0, "{flip:?}");
        }
        assert!(
            flip.delivery.latency_ns_mean > 10.0 * copy.delivery.latency_ns_mean,
            "{flip:?} vs {copy:?}"
        );
    }
}

#[test]
fn crossover_keeps_its_claim_at_line_rate() {
    let params = crossover::Params {
        frames: 300,
        pacing: iovirt::platform::Pacing::LineRate,
        charge_host_work: false,
        ..crossover::Params::default()
    };
    let rows = crossover::run(&params, &CostModel::default()).unwrap();
    for r in &rows {
        assert_eq!(
            (r.delivery.frames, r.delivery.lost, r.delivery.corrupted),
            (600, 0, 0),
            "{r:?}"
        );
        assert!(
            r.delivery.latency_ns_mean > 0.0 && r.delivery.latency_ns_max <= 10_000,
            "{r:?}"
        );
        if r.vm_to_vm == VmToVm::Crossover {
            assert_eq!(
                (r.nic_frames_per_frame, r.copies_per_frame),
                (0.0, 0.0),
                "{r:?}"
            );
            assert_eq!(r.remaps_per_frame, 1.0, "{r:?}");
        }
    }
    // With the host's work as CPU time, the crossover's 1.5 us per frame
    // cannot keep up with 64 B frames at line rate: receivers' interrupts
    // fall behind, crossed frames time out into copies, and frames are
    // lost, never corrupted. The bridge's copy keeps up.
    let rows = crossover::run(
        &crossover::Params {
            charge_host_work: true,
            frame_lens: vec![64],
            ..params
        },
        &CostModel::default(),
    )
    .unwrap();
    for r in &rows {
        assert_eq!(r.delivery.corrupted, 0, "{r:?}");
        assert_eq!(r.delivery.frames + r.delivery.lost, 600, "{r:?}");
        match r.vm_to_vm {
            VmToVm::Crossover => assert!(r.delivery.lost > 0, "{r:?}"),
            _ => assert_eq!(r.delivery.lost, 0, "{r:?}"),
        }
    }
}

#[test]
fn a_two_host_config_gives_the_same_report_and_capture_twice() {
    let dir = std::env::temp_dir().join(format!("iovirt-hosts-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("hosts.toml");
    let hosts = |pacing: &str| {
        format!(
            "[custom]\npacing = \"{pacing}\"\n\
             [[custom.hosts]]\ndemux = \"flip\"\n[[custom.hosts.vms]]\n[[custom.hosts.vms]]\n\
             [[custom.hosts]]\ndemux = \"copy\"\nvm_to_vm = \"bridge\"\n[[custom.hosts.vms]]\n\
             [[custom.flows]]\nfrom = \"h0.vm0\"\nto = \"h1.vm0\"\nframes = 60\nlen = 700\n\
             [[custom.flows]]\nfrom = \"h1.vm0\"\nto = \"h0.vm1\"\nframes = 40\nlen = 200\n\
             [[custom.flows]]\nfrom = \"h0.vm1\"\nto = \"h0.vm0\"\nframes = 30\nlen = 60\n"
        )
    };
    for pacing in ["lockstep", "line-rate"] {
        std::fs::write(&path, hosts(pacing)).unwrap();
        let run = |n: u32| {
            let pcap = dir.join(format!("{pacing}-{n}.pcap"));
            let out = iovirt(&[
                "run",
                "custom",
                "--json",
                "--seed",
                "7",
                "--config",
                path.to_str().unwrap(),
                "--pcap",
                pcap.to_str().unwrap(),
            ]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            (out.stdout, std::fs::read(&pcap).unwrap())
        };
        let (a, b) = (run(0), run(1));
        assert_eq!(a.0, b.0, "{pacing}: the same JSON");
        assert_eq!(a.1, b.1, "{pacing}: the same capture");
        let report: serde_json::Value = serde_json::from_slice(&a.0).unwrap();
        let outcome = &report["outcome"];
        assert_eq!(outcome["unexpected"], 0, "{pacing}");
        for f in outcome["flows"].as_array().unwrap() {
            assert_eq!(f["delivered"], f["sent"], "{pacing}: {f}");
            assert!(
                f["latency_ns_mean"].as_f64().unwrap() > 0.0,
                "{pacing}: {f}"
            );
        }
        let cable: Vec<_> = outcome["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["cable_out"]["frames"].as_u64())
            .collect();
        assert_eq!(cable, [Some(60), Some(40)], "{pacing}");
        // The capture holds the cable's frames, both ways, and nothing else.
        let mut reader = pcap_file::pcap::PcapReader::new(std::io::Cursor::new(&a.1)).unwrap();
        let mut lens = Vec::new();
        while let Some(packet) = reader.next_packet() {
            lens.push(packet.unwrap().data.len());
        }
        let count = |len| lens.iter().filter(|&&l| l == len).count();
        assert_eq!(
            (lens.len(), count(700), count(200)),
            (100, 60, 40),
            "{pacing}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `iovirt run custom --json --config path`, which must succeed, as JSON.
fn custom_json(path: &std::path::Path) -> serde_json::Value {
    let out = iovirt(&[
        "run",
        "custom",
        "--json",
        "--config",
        path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

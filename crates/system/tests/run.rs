//! The `iovirt` command line and the `iotlb-prefetch` scenario: seed 000's
//! claim, determinism, and the errors a user can make.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::process::Command;

use iovirt::iotlb_prefetch::{self, BufferPlacement, Params, PrefetchMode};
use iovirt_core::CostModel;

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
    let report: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    assert_eq!(report["scenario"], "iotlb-prefetch");
    assert_eq!(report["seed"], 7);
    assert_eq!(report["rows"].as_array().unwrap().len(), 24);
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
    assert!(listed.starts_with("iotlb-prefetch"));
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
    let out = iovirt(&["run", "--json", "--config", good.to_str().unwrap()]);
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
    let out = iovirt(&["run", "--frames", "20", "--pcap", path.to_str().unwrap()]);
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

//! `iovirt`: run the scenarios and print the report.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use iovirt::config::{Config, DEFAULT_CONFIG};
use iovirt::report::{CrossoverReport, CustomReport, DemuxReport, PrefetchReport, RdmaOdpReport};
use iovirt::{crossover, custom, demux, iotlb_prefetch, rdma_odp};

/// Scenarios this build knows, with one line each.
const SCENARIOS: [(&str, &str); 5] = [
    (
        "iotlb-prefetch",
        "seed 000: IOTLB misses on the receive critical path, prefetchers off/device/driver/both",
    ),
    (
        "demux",
        "seed 002: bytes the host copies per frame, copy vs page-flip demultiplexer, N VMs",
    ),
    (
        "crossover",
        "seed 003: VM-to-VM frames on the physical NIC, loopback vs bridge vs crossover",
    ),
    (
        "rdma-odp",
        "seed 001: RDMA on-demand paging, faults in both stages; other QPs' throughput vs pinned",
    ),
    (
        "custom",
        "your host, or two cabled hosts: VMs and flows from the configuration's [custom] table",
    ),
];

#[derive(Parser)]
#[command(
    name = "iovirt",
    about = "Device models for I/O virtualization: run a scenario, read the report."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a scenario (or all) and prints the report.
    Run {
        /// Scenario name, or `all`.
        #[arg(default_value = "all")]
        scenario: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// A configuration file (TOML) to run instead of the built-in one.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Seed of every random choice, overriding the configuration's.
        #[arg(long)]
        seed: Option<u64>,
        /// Frames per run, overriding the configuration's.
        #[arg(long)]
        frames: Option<u32>,
        /// Writes every frame on the wire to this pcap file (nanosecond
        /// virtual timestamps; Wireshark opens it).
        #[arg(long)]
        pcap: Option<PathBuf>,
    },
    /// Lists the scenarios.
    List,
    /// Prints the built-in configuration.
    Config,
}

/// Exit status of a user error (bad scenario, bad configuration).
const USAGE: u8 = 2;

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::List => {
            for (name, what) in SCENARIOS {
                println!("{name:<16} {what}");
            }
            ExitCode::SUCCESS
        }
        Command::Config => {
            print!("{DEFAULT_CONFIG}");
            ExitCode::SUCCESS
        }
        Command::Run {
            scenario,
            json,
            config,
            seed,
            frames,
            pcap,
        } => match run(&scenario, json, config, seed, frames, pcap) {
            Ok(()) => ExitCode::SUCCESS,
            Err((code, message)) => {
                eprintln!("iovirt: {message}");
                ExitCode::from(code)
            }
        },
    }
}

/// `iovirt run`; an error carries the exit status and the message.
fn run(
    scenario: &str,
    json: bool,
    config: Option<PathBuf>,
    seed: Option<u64>,
    frames: Option<u32>,
    pcap: Option<PathBuf>,
) -> Result<(), (u8, String)> {
    if scenario != "all" && !SCENARIOS.iter().any(|(n, _)| *n == scenario) {
        return Err((
            USAGE,
            format!("unknown scenario `{scenario}`; `iovirt list` shows the scenarios"),
        ));
    }
    let (source, text) = match &config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| (USAGE, format!("{}: {e}", path.display())))?;
            (path.display().to_string(), text)
        }
        None => (
            "built-in configuration".to_owned(),
            DEFAULT_CONFIG.to_owned(),
        ),
    };
    let mut cfg = Config::from_toml(&text).map_err(|e| (USAGE, format!("{source}: {e}")))?;
    if let Some(seed) = seed {
        cfg.seed = seed;
    }
    if let Some(frames) = frames {
        cfg.iotlb_prefetch.frames = frames;
        cfg.demux.frames = frames;
        cfg.crossover.frames = frames;
    }
    cfg.validate().map_err(|e| (USAGE, e.to_string()))?;
    let mut capture = match &pcap {
        Some(path) => {
            Some(Capture::create(path).map_err(|e| (USAGE, format!("{}: {e}", path.display())))?)
        }
        None => None,
    };
    let mut tap = |at: iovirt_core::SimTime, frame: &[u8]| {
        if let Some(c) = capture.as_mut() {
            c.record(at, frame);
        }
    };
    let selected = |name: &str| scenario == "all" || scenario == name;
    let mut tables = Vec::new();
    let mut values = Vec::new();
    let to_json = |v: serde_json::Result<serde_json::Value>| v.map_err(|e| (1, e.to_string()));
    if selected("iotlb-prefetch") {
        let rows =
            iotlb_prefetch::run_tapped(&cfg.iotlb_prefetch, &cfg.cost_model, cfg.seed, &mut tap)
                .map_err(|e| (1, format!("iotlb-prefetch: {e}")))?;
        let report = PrefetchReport {
            scenario: "iotlb-prefetch",
            seed: cfg.seed,
            params: cfg.iotlb_prefetch.clone(),
            cost_model: cfg.cost_model,
            rows,
        };
        tables.push(report.table());
        values.push(to_json(serde_json::to_value(&report))?);
    }
    if selected("demux") {
        let rows = demux::run_tapped(&cfg.demux, &cfg.cost_model, cfg.seed, &mut tap)
            .map_err(|e| (1, format!("demux: {e}")))?;
        let report = DemuxReport {
            scenario: "demux",
            seed: cfg.seed,
            params: cfg.demux.clone(),
            cost_model: cfg.cost_model,
            rows,
        };
        tables.push(report.table());
        values.push(to_json(serde_json::to_value(&report))?);
    }
    if selected("crossover") {
        let rows = crossover::run_tapped(&cfg.crossover, &cfg.cost_model, &mut tap)
            .map_err(|e| (1, format!("crossover: {e}")))?;
        let report = CrossoverReport {
            scenario: "crossover",
            seed: cfg.seed,
            params: cfg.crossover.clone(),
            cost_model: cfg.cost_model,
            rows,
        };
        tables.push(report.table());
        values.push(to_json(serde_json::to_value(&report))?);
    }
    if selected("rdma-odp") {
        let rows = rdma_odp::run_tapped(&cfg.rdma_odp, &cfg.cost_model, &mut tap)
            .map_err(|e| (1, format!("rdma-odp: {e}")))?;
        let report = RdmaOdpReport {
            scenario: "rdma-odp",
            seed: cfg.seed,
            params: cfg.rdma_odp.clone(),
            cost_model: cfg.cost_model,
            rows,
        };
        tables.push(report.table());
        values.push(to_json(serde_json::to_value(&report))?);
    }
    if selected("custom") {
        let outcome = custom::run(&cfg.custom, &cfg.cost_model, &mut tap)
            .map_err(|e| (1, format!("custom: {e}")))?;
        let report = CustomReport {
            scenario: "custom",
            params: cfg.custom.clone(),
            outcome,
        };
        tables.push(report.table());
        values.push(to_json(serde_json::to_value(&report))?);
    }
    if let (Some(c), Some(path)) = (capture, &pcap) {
        c.finish()
            .map_err(|e| (1, format!("{}: {e}", path.display())))?;
    }
    if json {
        // One scenario: its report; several: `{"reports": [...]}`.
        let value = match <[serde_json::Value; 1]>::try_from(values) {
            Ok([one]) => one,
            Err(all) => serde_json::json!({ "reports": all }),
        };
        let text = serde_json::to_string_pretty(&value).map_err(|e| (1, e.to_string()))?;
        emit(&format!("{text}\n"))
    } else {
        emit(&tables.join("\n"))
    }
}

/// Writes the report to stdout. A reader that closed the pipe early (`iovirt
/// run | head`) has what it wanted: not an error.
fn emit(text: &str) -> Result<(), (u8, String)> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err((1, e.to_string())),
        _ => Ok(()),
    }
}

/// A pcap file of every frame on the wire, stamped with its arrival in
/// virtual time (the links' latency and bandwidth).
struct Capture {
    writer: pcap_file::pcap::PcapWriter<std::io::BufWriter<std::fs::File>>,
    /// Where the current run's time zero falls in the capture, ns.
    offset: u64,
    /// The last timestamp written, ns.
    last: u64,
    error: Option<String>,
}

impl Capture {
    fn create(path: &std::path::Path) -> Result<Capture, String> {
        use pcap_file::pcap::{PcapHeader, PcapWriter};
        use pcap_file::{Endianness, TsResolution};
        let file = std::fs::File::create(path).map_err(|e| e.to_string())?;
        let header = PcapHeader {
            ts_resolution: TsResolution::NanoSecond,
            endianness: Endianness::Little,
            ..PcapHeader::default()
        };
        let writer = PcapWriter::with_header(std::io::BufWriter::new(file), header)
            .map_err(|e| e.to_string())?;
        Ok(Capture {
            writer,
            offset: 0,
            last: 0,
            error: None,
        })
    }

    /// Records `frame`, which arrived at `at` in its run's virtual time.
    /// Each run starts its clock at zero; the capture lays the runs end to
    /// end, so its timestamps never go back.
    fn record(&mut self, at: iovirt_core::SimTime, frame: &[u8]) {
        let mut stamp = at.as_nanos().saturating_add(self.offset);
        // Earlier than the last frame: a new run, whose clock restarted.
        // Frames of one instant (two links delivering together) keep it.
        if stamp < self.last {
            self.offset = self.last;
            stamp = at.as_nanos().saturating_add(self.offset);
        }
        self.last = stamp;
        let stamp = std::time::Duration::from_nanos(stamp);
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let packet = pcap_file::pcap::PcapPacket::new(stamp, len, frame);
        if self.error.is_none()
            && let Err(e) = self.writer.write_packet(&packet)
        {
            self.error = Some(e.to_string());
        }
    }

    fn finish(self) -> Result<(), String> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let mut inner = self.writer.into_writer();
        std::io::Write::flush(&mut inner).map_err(|e| e.to_string())
    }
}

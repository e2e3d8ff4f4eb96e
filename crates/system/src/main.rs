//! `iovirt`: run the scenarios and print the report.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use iovirt::config::{Config, DEFAULT_CONFIG};
use iovirt::iotlb_prefetch;
use iovirt::report::PrefetchReport;

/// Scenarios this build knows, with one line each.
const SCENARIOS: [(&str, &str); 1] = [(
    "iotlb-prefetch",
    "seed 000: IOTLB misses on the receive critical path, prefetchers off/device/driver/both",
)];

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
        } => match run(&scenario, json, config, seed, frames) {
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
    }
    cfg.iotlb_prefetch
        .validate()
        .map_err(|(field, reason)| (USAGE, format!("`iotlb_prefetch.{field}`: {reason}")))?;
    let rows = iotlb_prefetch::run(&cfg.iotlb_prefetch, &cfg.cost_model, cfg.seed)
        .map_err(|e| (1, format!("iotlb-prefetch: {e}")))?;
    let report = PrefetchReport {
        scenario: "iotlb-prefetch",
        seed: cfg.seed,
        params: cfg.iotlb_prefetch,
        cost_model: cfg.cost_model,
        rows,
    };
    if json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| (1, e.to_string()))?;
        println!("{text}");
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

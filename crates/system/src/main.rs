//! `iovirt`: run the scenarios and print the report.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use iovirt::iotlb_prefetch::{self, Params};
use iovirt::report::PrefetchReport;
use iovirt_core::CostModel;

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
    /// Runs a scenario (or all) on the built-in defaults and prints the report.
    Run {
        /// Scenario name, or `all`.
        #[arg(default_value = "all")]
        scenario: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Seed of every random choice (the same seed gives the same report).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Frames per run.
        #[arg(long)]
        frames: Option<u32>,
    },
    /// Lists the scenarios.
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::List => {
            for (name, what) in SCENARIOS {
                println!("{name:<16} {what}");
            }
            ExitCode::SUCCESS
        }
        Command::Run {
            scenario,
            json,
            seed,
            frames,
        } => {
            if scenario != "all" && !SCENARIOS.iter().any(|(n, _)| *n == scenario) {
                eprintln!(
                    "iovirt: unknown scenario `{scenario}`; `iovirt list` shows the scenarios"
                );
                return ExitCode::from(2);
            }
            let defaults = Params::default();
            let params = Params {
                seed,
                frames: frames.unwrap_or(defaults.frames),
                ..defaults
            };
            let cost_model = CostModel::default();
            match iotlb_prefetch::run(&params, &cost_model) {
                Ok(rows) => {
                    let report = PrefetchReport {
                        scenario: "iotlb-prefetch",
                        params,
                        cost_model,
                        rows,
                    };
                    if json {
                        match serde_json::to_string_pretty(&report) {
                            Ok(text) => println!("{text}"),
                            Err(e) => {
                                eprintln!("iovirt: {e}");
                                return ExitCode::FAILURE;
                            }
                        }
                    } else {
                        print!("{}", report.table());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("iovirt: iotlb-prefetch: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

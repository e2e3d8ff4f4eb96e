//! Developer tasks of the iovirt workspace, run as `cargo xtask <command>`.
//!
//! # Commands
//!
//! - `cargo xtask test` runs the full check, step by step, stopping at the first failure:
//!   `cargo fmt --all --check`, the same for `fuzz/` when it exists (rustfmt only),
//!   `cargo clippy --workspace --all-targets --all-features -- -D warnings`,
//!   `cargo test --workspace --all-features` and
//!   `cargo doc --workspace --no-deps --all-features` with `RUSTDOCFLAGS=-D warnings`. Its last line of output is
//!   always `N passed, N failed`, summed over every `test result:` line of the test step. A run in
//!   which no test ran fails.
//! - `cargo xtask bench [FILTER]` runs the criterion benchmarks of the workspace (FILTER, a
//!   regular expression over benchmark ids, is handed to criterion) and prints a table of the results; `cargo xtask bench --report`
//!   prints the table from the results already under `target/criterion/`. The same data is
//!   written to `target/criterion/iovirt-bench.json`.
//! - `cargo xtask fuzz TARGET [--seconds N]` runs one cargo-fuzz target for N seconds (60 by
//!   default) on the nightly toolchain, installing `cargo-fuzz` first if it is missing, and ends
//!   with the total number of executions and executions per second. `cargo xtask fuzz --list`
//!   lists the targets.
//!
//! # The `reference` benchmark convention
//!
//! Inside a criterion group, the benchmark whose function id is `reference` is the yardstick for
//! every other benchmark of that group: for instance a raw memcpy of the same bytes, or the floor
//! of the same number of dependent memory reads. The `ratio` column is the benchmark's mean time
//! divided by the reference's mean time. For a parameterised benchmark (`BenchmarkId::new(f, p)`)
//! the reference with the same parameter is used when there is one, and an unparameterised
//! `reference` otherwise. The reference itself, and a group without a reference, show `-`.
#![forbid(unsafe_code)]

mod bench;
mod fuzz;
mod process;
mod test;
mod units;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "\
Developer tasks of the iovirt workspace.

Usage: cargo xtask <command> [args]

Commands:
  test                      fmt check, clippy -D warnings, every test, rustdoc -D warnings;
                            ends with the line `N passed, N failed`
  bench [FILTER]            run the criterion benchmarks (FILTER: a criterion regex), then
                            print the results table and write target/criterion/iovirt-bench.json
  bench --report            only print the table from the results already on disk
  fuzz TARGET [--seconds N] run a cargo-fuzz target for N seconds (default 60) on nightly
  fuzz --list               list the fuzz targets
  help                      this text

In a criterion group, the benchmark named `reference` is the yardstick of the others:
the `ratio` column is each benchmark's time divided by the reference's time.
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = match workspace_root() {
        Ok(root) => root,
        Err(err) => return fail(&err),
    };
    let Some((command, rest)) = args.split_first() else {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    };
    let outcome = match command.as_str() {
        "test" => test::run(&root, rest),
        "bench" => bench::run(&root, rest),
        "fuzz" => fuzz::run(&root, rest),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => Err(format!("unknown command `{other}`\n\n{USAGE}")),
    };
    match outcome {
        Ok(code) => code,
        Err(err) => fail(&err),
    }
}

/// Prints an error message and returns the failure exit code.
fn fail(message: &str) -> ExitCode {
    eprintln!("xtask: error: {message}");
    ExitCode::FAILURE
}

/// The workspace root: the parent of this package's manifest directory, so that the tasks work
/// whatever the current directory is.
fn workspace_root() -> Result<PathBuf, String> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| "cannot locate the workspace root above xtask/".to_owned())
}

/// The directory cargo builds into: `CARGO_TARGET_DIR` when set, `<root>/target` otherwise.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

//! `cargo xtask fuzz`: runs cargo-fuzz targets of `fuzz/` on the nightly toolchain.

use std::fs;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use crate::process::{self, Stream};

/// How long a target runs when `--seconds` is not given.
const DEFAULT_SECONDS: u64 = 60;

/// libFuzzer's closing statistics: `Done <runs> runs in <seconds> second(s)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DoneLine {
    pub(crate) runs: u64,
    pub(crate) seconds: u64,
}

impl DoneLine {
    /// Executions per second; a run shorter than a second counts as one second.
    pub(crate) fn execs_per_sec(self) -> u64 {
        self.runs / self.seconds.max(1)
    }
}

/// Reads libFuzzer's `Done 123456 runs in 61 second(s)` line; `None` for any other line.
pub(crate) fn parse_done_line(line: &str) -> Option<DoneLine> {
    let mut words = line.split_whitespace();
    if words.next()? != "Done" {
        return None;
    }
    let runs = words.next()?.parse().ok()?;
    if words.next()? != "runs" || words.next()? != "in" {
        return None;
    }
    let seconds = words.next()?.parse().ok()?;
    if !words.next()?.starts_with("second") {
        return None;
    }
    Some(DoneLine { runs, seconds })
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    List,
    Run { target: String, seconds: u64 },
}

fn parse_args(args: &[String]) -> Result<Request, String> {
    let mut target = None;
    let mut seconds = DEFAULT_SECONDS;
    let mut list = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let seconds_value = if arg == "--seconds" {
            Some(args.next().ok_or("`--seconds` needs a number")?.to_owned())
        } else {
            arg.strip_prefix("--seconds=").map(str::to_owned)
        };
        if let Some(value) = seconds_value {
            seconds = value
                .parse()
                .map_err(|_| format!("`--seconds` needs a whole number, got `{value}`"))?;
        } else if arg == "--list" {
            list = true;
        } else if arg.starts_with('-') {
            return Err(format!("unknown option `{arg}` for `fuzz`"));
        } else if target.is_none() {
            target = Some(arg.clone());
        } else {
            return Err(format!("`fuzz` takes one target, got a second: `{arg}`"));
        }
    }
    match (list, target) {
        (true, None) => Ok(Request::List),
        (true, Some(_)) => Err("`fuzz --list` takes no target".to_owned()),
        (false, Some(target)) => Ok(Request::Run { target, seconds }),
        (false, None) => {
            Err("usage: cargo xtask fuzz TARGET [--seconds N] | cargo xtask fuzz --list".to_owned())
        }
    }
}

/// `cargo +nightly <args>`.
fn nightly_cargo(args: &[&str]) -> Command {
    let mut cmd = process::rustup_cargo();
    cmd.arg("+nightly").args(args);
    cmd
}

/// The process id of a `cargo install ... cargo-fuzz` already running on this machine, if any.
fn running_install() -> Option<u32> {
    let own = std::process::id();
    fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            if pid == own {
                return None;
            }
            let cmdline = fs::read(entry.path().join("cmdline")).ok()?;
            let words: Vec<&[u8]> = cmdline.split(|byte| *byte == 0).collect();
            let has = |word: &[u8]| words.contains(&word);
            (has(b"install") && has(b"cargo-fuzz")).then_some(pid)
        })
}

/// Makes sure `cargo +nightly fuzz` works, installing cargo-fuzz when it is missing.
fn ensure_cargo_fuzz() -> Result<(), String> {
    let mut probe = nightly_cargo(&["fuzz", "--version"]);
    probe.stdout(Stdio::null()).stderr(Stdio::null());
    if probe.status().is_ok_and(|status| status.success()) {
        return Ok(());
    }
    if let Some(pid) = running_install() {
        return Err(format!(
            "cargo-fuzz is missing and an install of it is already running (pid {pid}); \
             try again when it has finished"
        ));
    }
    let mut install = nightly_cargo(&["install", "cargo-fuzz", "--locked"]);
    println!("==> {}", process::describe(&install));
    let status = process::run(&mut install)?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("installing cargo-fuzz failed ({status})"))
    }
}

/// Runs the request; see the crate documentation.
pub(crate) fn run(root: &Path, args: &[String]) -> Result<ExitCode, String> {
    let request = parse_args(args)?;
    let fuzz_dir = root.join("fuzz");
    if !fuzz_dir.join("Cargo.toml").is_file() {
        return Err(format!("no fuzz project at {}", fuzz_dir.display()));
    }
    ensure_cargo_fuzz()?;
    match request {
        Request::List => {
            let mut cmd = nightly_cargo(&["fuzz", "list"]);
            cmd.current_dir(&fuzz_dir);
            let status = process::run(&mut cmd)?;
            if !status.success() {
                return Err(format!("`{}` failed ({status})", process::describe(&cmd)));
            }
        }
        Request::Run { target, seconds } => {
            let max_time = format!("-max_total_time={seconds}");
            let mut cmd = nightly_cargo(&["fuzz", "run", &target, "--", &max_time]);
            cmd.current_dir(&fuzz_dir);
            println!("==> {} (in fuzz/)", process::describe(&cmd));
            let (status, kept) = process::run_tee(&mut cmd, Stream::Stderr, |line| {
                parse_done_line(line).is_some()
            })?;
            match kept.iter().rev().find_map(|line| parse_done_line(line)) {
                Some(done) => println!(
                    "fuzz {target}: {} execs in {} s ({} execs/s)",
                    done.runs,
                    done.seconds,
                    done.execs_per_sec()
                ),
                None => println!("fuzz {target}: libFuzzer printed no `Done` line"),
            }
            if !status.success() {
                return Err(format!("fuzz target `{target}` failed ({status})"));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_done_line() {
        assert_eq!(
            parse_done_line("Done 1234567 runs in 61 second(s)"),
            Some(DoneLine {
                runs: 1_234_567,
                seconds: 61
            })
        );
        assert_eq!(
            parse_done_line("Done 5 runs in 0 second(s)\r"),
            Some(DoneLine {
                runs: 5,
                seconds: 0
            })
        );
    }

    #[test]
    fn ignores_other_lines() {
        assert_eq!(
            parse_done_line("#1024\tpulse  cov: 120 ft: 130 corp: 5/20b exec/s: 512"),
            None
        );
        assert_eq!(parse_done_line("Done"), None);
        assert_eq!(parse_done_line("Done many runs in 3 second(s)"), None);
        assert_eq!(parse_done_line("Done 3 runs in 4 minutes"), None);
        assert_eq!(parse_done_line("INFO: Done 3 runs in 4 second(s)"), None);
        assert_eq!(parse_done_line(""), None);
    }

    #[test]
    fn execs_per_second() {
        let done = DoneLine {
            runs: 1_200,
            seconds: 60,
        };
        assert_eq!(done.execs_per_sec(), 20);
        let instant = DoneLine {
            runs: 7,
            seconds: 0,
        };
        assert_eq!(instant.execs_per_sec(), 7);
    }

    #[test]
    fn parses_arguments() {
        let args = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            parse_args(&args(&["walker"])),
            Ok(Request::Run {
                target: "walker".to_owned(),
                seconds: DEFAULT_SECONDS
            })
        );
        assert_eq!(
            parse_args(&args(&["walker", "--seconds", "5"])),
            Ok(Request::Run {
                target: "walker".to_owned(),
                seconds: 5
            })
        );
        assert_eq!(
            parse_args(&args(&["--seconds=9", "mapper"])),
            Ok(Request::Run {
                target: "mapper".to_owned(),
                seconds: 9
            })
        );
        assert_eq!(parse_args(&args(&["--list"])), Ok(Request::List));
        assert!(parse_args(&args(&[])).is_err());
        assert!(parse_args(&args(&["walker", "--seconds"])).is_err());
        assert!(parse_args(&args(&["walker", "--seconds", "x"])).is_err());
        assert!(parse_args(&args(&["a", "b"])).is_err());
        assert!(parse_args(&args(&["--list", "walker"])).is_err());
        assert!(parse_args(&args(&["walker", "--fast"])).is_err());
    }
}

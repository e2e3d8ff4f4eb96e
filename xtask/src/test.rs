//! `cargo xtask test`: the full check of the workspace.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use crate::process::{self, Stream};
use crate::units;

/// Passed and failed counts summed over libtest's `test result:` lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) passed: u64,
    pub(crate) failed: u64,
}

impl Counts {
    fn add(&mut self, other: Self) {
        self.passed += other.passed;
        self.failed += other.failed;
    }
}

/// Reads one libtest summary line such as
/// `test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s`
/// or `test result: FAILED. 3 passed; 1 failed; ...`. Returns `None` for any other line.
pub(crate) fn parse_result_line(line: &str) -> Option<Counts> {
    let rest = line.trim().strip_prefix("test result:")?.trim_start();
    let (verdict, fields) = rest.split_once('.')?;
    if verdict != "ok" && verdict != "FAILED" {
        return None;
    }
    let mut passed = None;
    let mut failed = None;
    for field in fields.split(';') {
        let mut words = field.split_whitespace();
        let (Some(number), Some(word)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(number) = number.parse::<u64>() else {
            continue;
        };
        match word {
            "passed" => passed = Some(number),
            "failed" => failed = Some(number),
            _ => {}
        }
    }
    Some(Counts {
        passed: passed?,
        failed: failed?,
    })
}

/// Sums the counts of every `test result:` line among `lines`.
pub(crate) fn sum_results<'a>(lines: impl IntoIterator<Item = &'a str>) -> Counts {
    let mut total = Counts::default();
    for counts in lines.into_iter().filter_map(parse_result_line) {
        total.add(counts);
    }
    total
}

/// What a step does with its command.
enum Kind {
    /// Runs with inherited output; success is the exit status.
    Plain,
    /// `cargo test`: stdout is echoed and its `test result:` lines summed.
    Tests,
}

struct Step {
    label: String,
    command: Command,
    kind: Kind,
}

impl Step {
    fn new(command: Command, kind: Kind) -> Self {
        let mut label = process::describe(&command);
        for (key, value) in command.get_envs() {
            if let Some(value) = value {
                label = format!(
                    "{}={} {label}",
                    key.to_string_lossy(),
                    shell_word(&value.to_string_lossy())
                );
            }
        }
        Self {
            label,
            command,
            kind,
        }
    }
}

/// Quotes a word for display when it holds a space.
fn shell_word(word: &str) -> String {
    if word.contains(' ') {
        format!("'{word}'")
    } else {
        word.to_owned()
    }
}

/// How a step ended.
enum Outcome {
    Passed(Duration),
    Failed(Duration),
    NotRun,
}

fn steps(root: &Path) -> Vec<Step> {
    let cargo = |args: &[&str]| {
        let mut cmd = process::cargo();
        cmd.current_dir(root).args(args);
        cmd
    };
    let mut steps = vec![Step::new(cargo(&["fmt", "--all", "--check"]), Kind::Plain)];
    if root.join("fuzz").join("Cargo.toml").is_file() {
        steps.push(Step::new(
            cargo(&["fmt", "--check", "--manifest-path", "fuzz/Cargo.toml"]),
            Kind::Plain,
        ));
    }
    steps.push(Step::new(
        cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]),
        Kind::Plain,
    ));
    steps.push(Step::new(
        cargo(&["test", "--workspace", "--all-features"]),
        Kind::Tests,
    ));
    let mut doc = cargo(&["doc", "--workspace", "--no-deps", "--all-features"]);
    doc.env("RUSTDOCFLAGS", "-D warnings");
    steps.push(Step::new(doc, Kind::Plain));
    steps
}

/// Runs the check; see the crate documentation.
pub(crate) fn run(root: &Path, args: &[String]) -> Result<ExitCode, String> {
    if let Some(arg) = args.first() {
        return Err(format!("`test` takes no arguments, got `{arg}`"));
    }
    let mut steps = steps(root);
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(steps.len());
    let mut counts = Counts::default();
    let mut failure = None;
    for step in &mut steps {
        if failure.is_some() {
            outcomes.push(Outcome::NotRun);
            continue;
        }
        println!("==> {}", step.label);
        let started = Instant::now();
        let result = match step.kind {
            Kind::Plain => process::run(&mut step.command).map(|status| (status, None)),
            Kind::Tests => process::run_tee(&mut step.command, Stream::Stdout, |line| {
                line.contains("test result:")
            })
            .map(|(status, lines)| (status, Some(lines))),
        };
        let elapsed = started.elapsed();
        let problem = match result {
            Err(err) => Some(err),
            Ok((status, lines)) => {
                let zero_tests = match &lines {
                    Some(lines) => {
                        counts = sum_results(lines.iter().map(String::as_str));
                        counts.passed + counts.failed == 0
                    }
                    None => false,
                };
                if !status.success() {
                    Some(format!("step `{}` failed ({status})", step.label))
                } else if zero_tests {
                    Some(format!("step `{}` ran no test", step.label))
                } else {
                    None
                }
            }
        };
        match problem {
            Some(problem) => {
                outcomes.push(Outcome::Failed(elapsed));
                failure = Some(problem);
            }
            None => outcomes.push(Outcome::Passed(elapsed)),
        }
    }

    println!();
    print_summary(&steps, &outcomes);
    if let Some(problem) = &failure {
        println!("error: {problem}");
    }
    println!("{} passed, {} failed", counts.passed, counts.failed);
    process::flush_stdout();
    Ok(if failure.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_summary(steps: &[Step], outcomes: &[Outcome]) {
    let width = steps
        .iter()
        .map(|step| step.label.len())
        .max()
        .unwrap_or(0)
        .max("step".len());
    println!("{:<width$}  {:<7}  time", "step", "result");
    let mut total = Duration::ZERO;
    for (step, outcome) in steps.iter().zip(outcomes) {
        let (result, time) = match outcome {
            Outcome::Passed(elapsed) => ("ok", Some(*elapsed)),
            Outcome::Failed(elapsed) => ("FAILED", Some(*elapsed)),
            Outcome::NotRun => ("not run", None),
        };
        total += time.unwrap_or_default();
        let time = time.map_or_else(|| "-".to_owned(), units::wall_time);
        println!("{:<width$}  {result:<7}  {time}", step.label);
    }
    println!(
        "{:<width$}  {:<7}  {}",
        "total",
        "",
        units::wall_time(total)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ok_and_failed_lines() {
        assert_eq!(
            parse_result_line(
                "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; \
                 finished in 0.01s"
            ),
            Some(Counts {
                passed: 12,
                failed: 0
            })
        );
        assert_eq!(
            parse_result_line(
                "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; \
                 finished in 1.50s"
            ),
            Some(Counts {
                passed: 3,
                failed: 2
            })
        );
        assert_eq!(
            parse_result_line("   test result: ok. 0 passed; 0 failed; 0 ignored"),
            Some(Counts::default())
        );
    }

    #[test]
    fn rejects_other_lines() {
        assert_eq!(parse_result_line("test foo::bar ... ok"), None);
        assert_eq!(parse_result_line("running 3 tests"), None);
        assert_eq!(
            parse_result_line("test result: maybe. 1 passed; 0 failed"),
            None
        );
        assert_eq!(
            parse_result_line("test result: ok. many passed; 0 failed"),
            None
        );
        assert_eq!(parse_result_line("test result: ok. 1 passed"), None);
        assert_eq!(parse_result_line(""), None);
    }

    #[test]
    fn sums_every_result_line() {
        let output = "\
running 2 tests
test a ... ok
test b ... ok

test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s

running 0 tests

test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s

test result: FAILED. 5 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.20s
";
        assert_eq!(
            sum_results(output.lines()),
            Counts {
                passed: 7,
                failed: 1
            }
        );
        assert_eq!(sum_results(["nothing here"]), Counts::default());
    }

    #[test]
    fn labels_show_the_environment() {
        let mut cmd = Command::new("cargo");
        cmd.args(["doc", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings");
        let step = Step::new(cmd, Kind::Plain);
        assert_eq!(step.label, "RUSTDOCFLAGS='-D warnings' cargo doc --no-deps");
    }
}

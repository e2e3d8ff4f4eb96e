//! `cargo xtask bench`: runs the criterion benchmarks and reports them against each group's
//! `reference` benchmark.

use std::cmp::Ordering;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{Value, json};

use crate::process;
use crate::units;

/// The function id that marks a group's reference benchmark.
pub(crate) const REFERENCE: &str = "reference";

/// Work done by one iteration, as criterion records it in `benchmark.json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Throughput {
    Elements(u64),
    Bytes(u64),
    BytesDecimal(u64),
    Bits(u64),
    ElementsAndBytes { elements: u64, bytes: u64 },
}

impl Throughput {
    /// Reads criterion's externally tagged form, e.g. `{"Bytes": 4096}`; `null` or an unknown
    /// form gives `None`.
    pub(crate) fn from_json(value: &Value) -> Option<Self> {
        let object = value.as_object()?;
        let (kind, amount) = object.iter().next()?;
        let count = amount.as_u64();
        match kind.as_str() {
            "Elements" => count.map(Self::Elements),
            "Bytes" => count.map(Self::Bytes),
            "BytesDecimal" => count.map(Self::BytesDecimal),
            "Bits" => count.map(Self::Bits),
            "ElementsAndBytes" => Some(Self::ElementsAndBytes {
                elements: amount.get("elements")?.as_u64()?,
                bytes: amount.get("bytes")?.as_u64()?,
            }),
            _ => None,
        }
    }

    /// The rate at `mean_ns` nanoseconds per iteration, formatted with its unit.
    pub(crate) fn format_rate(self, mean_ns: f64) -> String {
        let per_sec = |count: u64| count as f64 * 1e9 / mean_ns;
        match self {
            Self::Elements(n) => units::elements_per_sec(per_sec(n)),
            Self::Bytes(n) => units::bytes_per_sec(per_sec(n)),
            Self::BytesDecimal(n) => units::bytes_decimal_per_sec(per_sec(n)),
            Self::Bits(n) => units::bits_per_sec(per_sec(n)),
            Self::ElementsAndBytes { elements, bytes } => format!(
                "{}, {}",
                units::elements_per_sec(per_sec(elements)),
                units::bytes_per_sec(per_sec(bytes))
            ),
        }
    }

    /// The JSON form written to `iovirt-bench.json`: the amount per iteration and per second.
    fn to_json(self, mean_ns: f64) -> Value {
        let per_sec = |count: u64| count as f64 * 1e9 / mean_ns;
        let (kind, per_iter, rate) = match self {
            Self::Elements(n) => ("elements", json!(n), json!(per_sec(n))),
            Self::Bytes(n) => ("bytes", json!(n), json!(per_sec(n))),
            Self::BytesDecimal(n) => ("bytes_decimal", json!(n), json!(per_sec(n))),
            Self::Bits(n) => ("bits", json!(n), json!(per_sec(n))),
            Self::ElementsAndBytes { elements, bytes } => (
                "elements_and_bytes",
                json!({ "elements": elements, "bytes": bytes }),
                json!({ "elements": per_sec(elements), "bytes": per_sec(bytes) }),
            ),
        };
        json!({ "kind": kind, "per_iteration": per_iter, "per_second": rate })
    }
}

/// One benchmark's latest result.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BenchResult {
    pub(crate) group: String,
    pub(crate) function: Option<String>,
    pub(crate) value: Option<String>,
    /// Mean time per iteration, in nanoseconds.
    pub(crate) mean_ns: f64,
    pub(crate) throughput: Option<Throughput>,
}

impl BenchResult {
    /// The benchmark's name inside its group: `function/value`, either part alone, or `-`.
    pub(crate) fn name(&self) -> String {
        match (&self.function, &self.value) {
            (Some(function), Some(value)) => format!("{function}/{value}"),
            (Some(function), None) => function.clone(),
            (None, Some(value)) => value.clone(),
            (None, None) => "-".to_owned(),
        }
    }

    fn is_reference(&self) -> bool {
        self.function.as_deref() == Some(REFERENCE)
    }
}

/// A result together with its ratio to the group's reference.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Row {
    pub(crate) result: BenchResult,
    pub(crate) ratio: Option<f64>,
}

/// Reads one benchmark from its criterion `new/` directory; `None` when a file is missing or
/// does not hold what criterion writes.
fn read_one(new_dir: &Path) -> Option<BenchResult> {
    let read = |name: &str| -> Option<Value> {
        let path = new_dir.join(name);
        let text = fs::read_to_string(&path).ok()?;
        match serde_json::from_str(&text) {
            Ok(value) => Some(value),
            Err(err) => {
                eprintln!("xtask: skipping {}: {err}", path.display());
                None
            }
        }
    };
    let benchmark = read("benchmark.json")?;
    let estimates = read("estimates.json")?;
    let text = |key: &str| {
        benchmark
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Some(BenchResult {
        group: text("group_id")?,
        function: text("function_id"),
        value: text("value_str"),
        mean_ns: estimates.get("mean")?.get("point_estimate")?.as_f64()?,
        throughput: benchmark.get("throughput").and_then(Throughput::from_json),
    })
}

/// Collects the `new/` directories below `dir`, in a stable order.
fn find_new_dirs(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut subdirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
        .map(|entry| entry.path())
        .collect();
    subdirs.sort();
    for subdir in subdirs {
        // A `new/` without results may be a benchmark that is itself named `new`.
        if subdir.file_name().is_some_and(|name| name == "new")
            && subdir.join("benchmark.json").is_file()
        {
            found.push(subdir);
        } else {
            find_new_dirs(&subdir, found);
        }
    }
}

/// Reads every benchmark under a criterion output directory (`target/criterion`), skipping those
/// whose json files are missing.
pub(crate) fn read_results(criterion_dir: &Path) -> Vec<BenchResult> {
    let mut dirs = Vec::new();
    find_new_dirs(criterion_dir, &mut dirs);
    dirs.iter().filter_map(|dir| read_one(dir)).collect()
}

/// Compares parameter values numerically when both are numbers, as text otherwise.
fn compare_values(a: Option<&str>, b: Option<&str>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => match (a.parse::<f64>(), b.parse::<f64>()) {
            (Ok(x), Ok(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
            _ => a.cmp(b),
        },
        _ => a.cmp(&b),
    }
}

/// Orders the results (by group, the reference first, then by name) and works out each one's
/// ratio to its group's reference: the reference with the same parameter value when there is
/// one, else the group's unparameterised reference.
pub(crate) fn rows(mut results: Vec<BenchResult>) -> Vec<Row> {
    results.sort_by(|a, b| {
        a.group
            .cmp(&b.group)
            .then_with(|| b.is_reference().cmp(&a.is_reference()))
            .then_with(|| a.function.cmp(&b.function))
            .then_with(|| compare_values(a.value.as_deref(), b.value.as_deref()))
    });
    results
        .iter()
        .map(|result| {
            let ratio = if result.is_reference() {
                None
            } else {
                let references = || {
                    results
                        .iter()
                        .filter(|other| other.group == result.group && other.is_reference())
                };
                references()
                    .find(|reference| reference.value == result.value)
                    .or_else(|| references().find(|reference| reference.value.is_none()))
                    .filter(|reference| reference.mean_ns > 0.0)
                    .map(|reference| result.mean_ns / reference.mean_ns)
            };
            Row {
                result: result.clone(),
                ratio,
            }
        })
        .collect()
}

/// The table's text, one line per benchmark under a header line.
pub(crate) fn table(rows: &[Row]) -> String {
    let header = ["group", "bench", "time/iter", "throughput", "ratio"];
    let mut lines: Vec<[String; 5]> = vec![header.map(str::to_owned)];
    for row in rows {
        let result = &row.result;
        lines.push([
            result.group.clone(),
            result.name(),
            units::time_ns(result.mean_ns),
            result
                .throughput
                .map_or_else(|| "-".to_owned(), |t| t.format_rate(result.mean_ns)),
            row.ratio
                .map_or_else(|| "-".to_owned(), |ratio| format!("{ratio:.2}")),
        ]);
    }
    let mut widths = [0usize; 5];
    for line in &lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &lines {
        let mut cells = Vec::with_capacity(line.len());
        for (index, (cell, width)) in line.iter().zip(widths).enumerate() {
            // Text columns align left, numbers right.
            cells.push(if index < 2 {
                format!("{cell:<width$}")
            } else {
                format!("{cell:>width$}")
            });
        }
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The JSON document written to `iovirt-bench.json`.
pub(crate) fn to_json(rows: &[Row]) -> Value {
    let benches: Vec<Value> = rows
        .iter()
        .map(|row| {
            let result = &row.result;
            json!({
                "group": result.group,
                "bench": result.name(),
                "function": result.function,
                "value": result.value,
                "mean_ns": result.mean_ns,
                "throughput": result.throughput.map(|t| t.to_json(result.mean_ns)),
                "reference": result.is_reference(),
                "ratio": row.ratio,
            })
        })
        .collect();
    json!({
        "reference_function_id": REFERENCE,
        "time_unit": "ns per iteration (criterion mean point estimate)",
        "benches": benches,
    })
}

/// Runs the benchmarks unless `--report` is given, then prints the table and writes the json.
pub(crate) fn run(root: &Path, args: &[String]) -> Result<ExitCode, String> {
    let report_only = args.iter().any(|arg| arg == "--report");
    let filters: Vec<&String> = args
        .iter()
        .filter(|arg| *arg != "--report")
        .skip_while(|arg| *arg == "--")
        .collect();
    if report_only && !filters.is_empty() {
        return Err("`bench --report` takes no filters".to_owned());
    }
    if !report_only {
        let mut cmd = process::cargo();
        cmd.current_dir(root)
            .args(["bench", "--workspace", "--all-features", "--bench", "*"]);
        if !filters.is_empty() {
            cmd.arg("--").args(filters);
        }
        println!("==> {}", process::describe(&cmd));
        let status = process::run(&mut cmd)?;
        if !status.success() {
            return Err(format!("`{}` failed ({status})", process::describe(&cmd)));
        }
    }

    let criterion_dir = crate::target_dir(root).join("criterion");
    let rows = rows(read_results(&criterion_dir));
    if rows.is_empty() {
        return Err(format!(
            "no criterion results under {}",
            criterion_dir.display()
        ));
    }
    println!();
    print!("{}", table(&rows));
    let json_path = criterion_dir.join("iovirt-bench.json");
    let text = serde_json::to_string_pretty(&to_json(&rows))
        .map_err(|err| format!("cannot encode the results: {err}"))?;
    fs::write(&json_path, text + "\n")
        .map_err(|err| format!("cannot write {}: {err}", json_path.display()))?;
    println!("\nwrote {}", json_path.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering as AtomicOrdering};

    /// A fresh directory under the system's temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let unique = format!(
                "iovirt-xtask-{tag}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, AtomicOrdering::Relaxed)
            );
            let path = std::env::temp_dir().join(unique);
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Writes the two files criterion leaves in `<dir>/new/`.
    fn write_bench(
        dir: &Path,
        group: &str,
        function: Option<&str>,
        value: Option<&str>,
        mean: f64,
        throughput: Value,
    ) {
        let new_dir = dir.join("new");
        fs::create_dir_all(&new_dir).unwrap();
        let benchmark = json!({
            "group_id": group,
            "function_id": function,
            "value_str": value,
            "throughput": throughput,
            "full_id": "ignored",
            "directory_name": "ignored",
            "title": "ignored",
        });
        let estimate = |point: f64| {
            json!({
                "confidence_interval": {
                    "confidence_level": 0.95,
                    "lower_bound": point * 0.9,
                    "upper_bound": point * 1.1,
                },
                "point_estimate": point,
                "standard_error": 1.0,
            })
        };
        let estimates = json!({
            "mean": estimate(mean),
            "median": estimate(mean * 0.5),
            "median_abs_dev": estimate(1.0),
            "slope": null,
            "std_dev": estimate(2.0),
        });
        fs::write(new_dir.join("benchmark.json"), benchmark.to_string()).unwrap();
        fs::write(new_dir.join("estimates.json"), estimates.to_string()).unwrap();
    }

    #[test]
    fn reads_results_and_computes_ratios() {
        let tmp = TempDir::new("bench");
        let root = &tmp.0;
        let copy = root.join("copy");
        write_bench(
            &copy.join("reference"),
            "copy",
            Some("reference"),
            None,
            100.0,
            json!({ "Bytes": 4096 }),
        );
        write_bench(
            &copy.join("dma"),
            "copy",
            Some("dma"),
            None,
            250.0,
            json!({ "Bytes": 4096 }),
        );
        // A parameterised group: each size has its own reference.
        let walk = root.join("walk");
        write_bench(
            &walk.join("reference").join("4"),
            "walk",
            Some("reference"),
            Some("4"),
            10.0,
            json!({ "Elements": 4 }),
        );
        write_bench(
            &walk.join("reference").join("16"),
            "walk",
            Some("reference"),
            Some("16"),
            40.0,
            json!({ "Elements": 16 }),
        );
        write_bench(
            &walk.join("walker").join("16"),
            "walk",
            Some("walker"),
            Some("16"),
            100.0,
            json!({ "Elements": 16 }),
        );
        write_bench(
            &walk.join("walker").join("4"),
            "walk",
            Some("walker"),
            Some("4"),
            30.0,
            Value::Null,
        );
        // A group without a reference, from `bench_function`.
        write_bench(
            &root.join("alone"),
            "alone",
            None,
            None,
            1_500.0,
            Value::Null,
        );
        // Missing estimates.json: skipped.
        let broken = root.join("broken").join("x").join("new");
        fs::create_dir_all(&broken).unwrap();
        fs::write(broken.join("benchmark.json"), r#"{"group_id":"broken"}"#).unwrap();
        // Criterion's html report and the saved baseline (`base/`, beside `new/`) are not
        // results.
        fs::create_dir_all(root.join("report")).unwrap();
        let base = copy.join("dma").join("base");
        fs::create_dir_all(&base).unwrap();
        for file in ["benchmark.json", "estimates.json"] {
            fs::copy(copy.join("dma").join("new").join(file), base.join(file)).unwrap();
        }
        // A benchmark function named `new` lives in a `new/` directory of its own.
        write_bench(
            &root.join("alloc").join("new"),
            "alloc",
            Some("new"),
            None,
            5.0,
            Value::Null,
        );

        let results = read_results(root);
        assert_eq!(results.len(), 8);
        let rows = rows(results.into_iter().filter(|r| r.group != "alloc").collect());
        let summary: Vec<(String, String, f64, Option<f64>)> = rows
            .iter()
            .map(|row| {
                (
                    row.result.group.clone(),
                    row.result.name(),
                    row.result.mean_ns,
                    row.ratio,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("alone".to_owned(), "-".to_owned(), 1_500.0, None),
                ("copy".to_owned(), "reference".to_owned(), 100.0, None),
                ("copy".to_owned(), "dma".to_owned(), 250.0, Some(2.5)),
                ("walk".to_owned(), "reference/4".to_owned(), 10.0, None),
                ("walk".to_owned(), "reference/16".to_owned(), 40.0, None),
                ("walk".to_owned(), "walker/4".to_owned(), 30.0, Some(3.0)),
                ("walk".to_owned(), "walker/16".to_owned(), 100.0, Some(2.5)),
            ]
        );
        assert_eq!(
            rows[2].result.throughput,
            Some(Throughput::Bytes(4096)),
            "throughput is read from benchmark.json"
        );
        assert_eq!(rows[5].result.throughput, None);

        let table = table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 8);
        assert!(lines[0].starts_with("group"));
        // 4096 bytes every 250 ns = 15.26 GiB/s.
        assert!(lines[3].contains("copy"), "{table}");
        assert!(lines[3].contains("250 ns"), "{table}");
        assert!(lines[3].contains("15.3 GiB/s"), "{table}");
        assert!(lines[3].ends_with("2.50"), "{table}");
        assert!(lines[1].contains("1.50 us"), "{table}");
        assert!(lines[1].ends_with('-'), "{table}");
        // 16 elements every 100 ns = 160 M/s.
        assert!(lines[7].contains("160 M/s"), "{table}");

        let doc = to_json(&rows);
        let benches = doc["benches"].as_array().unwrap();
        assert_eq!(benches.len(), 7);
        assert_eq!(benches[2]["bench"], "dma");
        assert_eq!(benches[2]["ratio"], 2.5);
        assert_eq!(benches[2]["throughput"]["kind"], "bytes");
        assert_eq!(benches[2]["throughput"]["per_iteration"], 4096);
        assert_eq!(benches[1]["reference"], true);
        assert!(benches[1]["ratio"].is_null());
    }

    #[test]
    fn missing_directory_gives_no_results() {
        let tmp = TempDir::new("empty");
        assert!(read_results(&tmp.0.join("does-not-exist")).is_empty());
        assert!(read_results(&tmp.0).is_empty());
    }

    #[test]
    fn throughput_forms() {
        assert_eq!(
            Throughput::from_json(&json!({ "Elements": 8 })),
            Some(Throughput::Elements(8))
        );
        assert_eq!(
            Throughput::from_json(&json!({ "BytesDecimal": 1000 })),
            Some(Throughput::BytesDecimal(1000))
        );
        assert_eq!(
            Throughput::from_json(&json!({ "ElementsAndBytes": { "elements": 2, "bytes": 64 } })),
            Some(Throughput::ElementsAndBytes {
                elements: 2,
                bytes: 64
            })
        );
        assert_eq!(Throughput::from_json(&Value::Null), None);
        assert_eq!(Throughput::from_json(&json!({ "Furlongs": 3 })), None);
        assert_eq!(Throughput::Bits(1000).format_rate(100.0), "10.0 Gbit/s");
        assert_eq!(
            Throughput::ElementsAndBytes {
                elements: 1,
                bytes: 1024
            }
            .format_rate(1000.0),
            "1.00 M/s, 977 MiB/s"
        );
    }
}

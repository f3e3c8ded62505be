//! `cargo xtask criterion`: runs the criterion benches, then reads criterion's estimates under
//! `target/criterion` and prints one table: bench id, time, and rate where a throughput is set.

use anyhow::{Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use xshell::{Shell, cmd};

pub(crate) fn run(sh: &Shell, filter: Option<&str>) -> Result<()> {
    let filter = filter.unwrap_or_default();
    cmd!(sh, "cargo bench --workspace --locked -- {filter}").run()?;
    print_table(&sh.current_dir())
}

/// One measured bench.
struct Row {
    id: String,
    mean_ns: f64,
    elements: Option<f64>,
    bytes: Option<f64>,
}

pub(crate) fn print_table(root: &Path) -> Result<()> {
    let dir = root.join("target/criterion");
    let mut rows = Vec::new();
    collect(&dir, &mut rows).with_context(|| format!("reading {}", dir.display()))?;
    if rows.is_empty() {
        println!(
            "no bench results under {}; run `cargo xtask criterion` first",
            dir.display()
        );
        return Ok(());
    }
    // By id, with a trailing size compared as a number (so 256 comes before 1024).
    rows.sort_by_key(|r| match r.id.rsplit_once('/') {
        Some((head, size)) => (
            head.to_string(),
            size.parse::<u64>().unwrap_or(u64::MAX),
            r.id.clone(),
        ),
        None => (r.id.clone(), 0, String::new()),
    });
    let width = rows.iter().map(|r| r.id.len()).max().unwrap_or(0).max(5);
    println!("{:width$}  {:>12}  {:>16}", "bench", "time", "rate");
    for row in rows {
        let rate = match (row.elements, row.bytes) {
            (Some(e), _) => human(e / (row.mean_ns * 1e-9), "elem/s"),
            (None, Some(b)) => human(b / (row.mean_ns * 1e-9), "B/s"),
            _ => String::new(),
        };
        println!("{:width$}  {:>12}  {:>16}", row.id, time(row.mean_ns), rate);
    }
    Ok(())
}

/// Finds every `new/benchmark.json` + `new/estimates.json` pair below `dir`.
fn collect(dir: &Path, rows: &mut Vec<Row>) -> Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path: PathBuf = entry?.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            if let Some(row) = read_row(&path)? {
                rows.push(row);
            }
        } else {
            collect(&path, rows)?;
        }
    }
    Ok(())
}

fn read_row(new_dir: &Path) -> Result<Option<Row>> {
    let (bench, estimates) = (
        new_dir.join("benchmark.json"),
        new_dir.join("estimates.json"),
    );
    if !bench.exists() || !estimates.exists() {
        return Ok(None);
    }
    let bench: Value = serde_json::from_str(&std::fs::read_to_string(&bench)?)?;
    let estimates: Value = serde_json::from_str(&std::fs::read_to_string(&estimates)?)?;
    let id = bench["full_id"].as_str().unwrap_or("?").to_string();
    let mean_ns = estimates["mean"]["point_estimate"]
        .as_f64()
        .context("estimates.json without a mean")?;
    let throughput = &bench["throughput"];
    Ok(Some(Row {
        id,
        mean_ns,
        elements: throughput["Elements"].as_f64(),
        bytes: throughput["Bytes"].as_f64(),
    }))
}

fn time(ns: f64) -> String {
    match ns {
        t if t < 1e3 => format!("{t:.1} ns"),
        t if t < 1e6 => format!("{:.2} µs", t / 1e3),
        t if t < 1e9 => format!("{:.2} ms", t / 1e6),
        t => format!("{:.3} s", t / 1e9),
    }
}

fn human(rate: f64, unit: &str) -> String {
    match rate {
        r if r >= 1e12 => format!("{:.2} T{unit}", r / 1e12),
        r if r >= 1e9 => format!("{:.2} G{unit}", r / 1e9),
        r if r >= 1e6 => format!("{:.2} M{unit}", r / 1e6),
        r => format!("{r:.0} {unit}"),
    }
}

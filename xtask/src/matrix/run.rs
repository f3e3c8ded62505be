//! Runs the matrix: builds the `cryptgpu` binary in release mode, probes each backend with
//! a GEMM (which is also its GEMM rate), then runs `cryptgpu bench --json` once per cell,
//! each in its own process (so its peak memory is its own), and writes the results.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use indicatif::{ProgressBar, ProgressStyle};
use xshell::{Shell, cmd};

use super::schema::{Failure, GemmRow, NetworkRow, Results, Skipped};
use super::{plots, published, report, write_atomic};

/// The networks of the full matrix: those the papers report.
const FULL_NETWORKS: &[&str] = &["lenet", "secureml", "alexnet-cifar10", "vgg16-cifar10"];

/// The networks of `--quick`.
const QUICK_NETWORKS: &[&str] = &["lenet", "secureml"];

/// Every backend the matrix knows.
const BACKENDS: &[&str] = &["cpu", "wgpu", "cuda"];

/// What `cargo xtask bench` was asked for.
#[derive(Debug)]
pub(crate) struct MatrixArgs {
    /// `--backends`, or `None` for every backend present (hardware only for wgpu).
    backends: Option<Vec<String>>,
    networks: Vec<String>,
    modes: Vec<String>,
    /// `--batch`: the same batch sizes for every mode, instead of the defaults.
    batches: Option<Vec<usize>>,
    links: Vec<String>,
    runs: usize,
    warmup: usize,
    pooling: String,
    frac_bits: Option<u32>,
    quick: bool,
    out: Option<PathBuf>,
    /// `--binary`: a `cryptgpu` built elsewhere, instead of building one.
    binary: Option<PathBuf>,
    /// The command line, for the record.
    command: String,
}

/// The help of `cargo xtask bench`.
pub(crate) const HELP: &str = "\
cargo xtask bench [OPTIONS]

Runs the bench matrix (networks x modes x batches x backends x links), three parties in one
process per cell on random inputs, and writes target/bench/<timestamp>/results.json,
results.md and SVG plots.

Options:
  --backends LIST   cpu,wgpu,cuda (default: the CPU and every GPU present; a software
                    wgpu adapter such as lavapipe runs only when wgpu is named)
  --networks LIST   zoo networks (default lenet,secureml,alexnet-cifar10,vgg16-cifar10;
                    --quick: lenet,secureml)
  --mode LIST       inference,training (default both)
  --batch LIST      batch sizes for every mode (default: inference 1 and 128, training the
                    papers' sizes, 32 for VGG-16 and 128 otherwise; --quick: 1 and 2)
  --link LIST       none,lan,wan or BANDWIDTH,RTT pairs separated by ';' (default
                    none,lan,wan; `none` is always run: it is the compute time)
  --runs N          timed runs per cell, after the warm-up (default 3; --quick 1)
  --warmup N        untimed runs per cell (default 1)
  --pooling P       avg (CryptGPU's benchmarks; default) or max
  --frac-bits F     fractional bits (default: the job's, 16)
  --quick           tiny sizes, a few minutes on two cores (CI runs it)
  --out DIR         write there instead of target/bench/<timestamp>
  --binary PATH     run this cryptgpu binary instead of building one (a machine without
                    a Rust toolchain: build here, copy it and the xtask binary there)
";

impl MatrixArgs {
    /// Parses the options after `cargo xtask bench`; `command` is the command line, for the
    /// record.
    pub(crate) fn parse(args: &mut pico_args::Arguments, command: String) -> Result<MatrixArgs> {
        let list = |s: &str| -> Result<Vec<String>, String> {
            let items: Vec<String> = s
                .split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect();
            if items.is_empty() {
                return Err("an empty list".into());
            }
            Ok(items)
        };
        let quick = args.contains("--quick");
        let backends: Option<Vec<String>> = args.opt_value_from_fn("--backends", list)?;
        let networks: Option<Vec<String>> = args.opt_value_from_fn("--networks", list)?;
        let modes: Option<Vec<String>> = args.opt_value_from_fn("--mode", list)?;
        let batches: Option<Vec<String>> = args.opt_value_from_fn("--batch", list)?;
        let links: Option<String> = args.opt_value_from_str("--link")?;
        let runs: Option<usize> = args.opt_value_from_str("--runs")?;
        let warmup: Option<usize> = args.opt_value_from_str("--warmup")?;
        let pooling: Option<String> = args.opt_value_from_str("--pooling")?;
        let frac_bits: Option<u32> = args.opt_value_from_str("--frac-bits")?;
        let out: Option<PathBuf> = args.opt_value_from_str("--out")?;
        let binary: Option<PathBuf> = args.opt_value_from_str("--binary")?;
        let rest = args.clone().finish();
        if !rest.is_empty() {
            bail!("unexpected arguments {rest:?}\n\n{HELP}");
        }
        if let Some(backends) = &backends {
            for b in backends {
                ensure!(
                    BACKENDS.contains(&b.as_str()),
                    "unknown backend `{b}`: expected cpu, wgpu or cuda"
                );
            }
        }
        let modes = modes.unwrap_or_else(|| vec!["inference".into(), "training".into()]);
        for m in &modes {
            ensure!(
                m == "inference" || m == "training",
                "unknown mode `{m}`: expected inference or training"
            );
        }
        let batches = batches
            .map(|list| {
                list.iter()
                    .map(|b| match b.parse::<usize>() {
                        Ok(n) if n >= 1 => Ok(n),
                        _ => bail!("--batch `{b}` is not a positive whole number"),
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?;
        // Links are separated by ',' unless one of them is a `BW,RTT` pair: then by ';'.
        let links = match links {
            None => vec!["none".into(), "lan".into(), "wan".into()],
            Some(text) if text.contains(';') => text
                .split(';')
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect(),
            Some(text) => text.split(',').map(|l| l.trim().to_string()).collect(),
        };
        let mut links: Vec<String> = links;
        if !links.iter().any(|l| l == "none") {
            links.insert(0, "none".into());
        }
        let runs = runs.unwrap_or(if quick { 1 } else { 3 });
        ensure!(runs >= 1, "--runs must be at least 1");
        let pooling = pooling.unwrap_or_else(|| "avg".into());
        ensure!(
            pooling == "avg" || pooling == "max",
            "--pooling must be avg or max"
        );
        let default_networks = if quick { QUICK_NETWORKS } else { FULL_NETWORKS };
        Ok(MatrixArgs {
            backends,
            networks: networks
                .unwrap_or_else(|| default_networks.iter().map(|s| s.to_string()).collect()),
            modes,
            batches,
            links,
            runs,
            warmup: warmup.unwrap_or(1),
            pooling,
            frac_bits,
            quick,
            out,
            binary,
            command,
        })
    }

    /// The batch sizes of `network` in `mode`.
    fn batches_for(&self, network: &str, mode: &str) -> Vec<usize> {
        if let Some(b) = &self.batches {
            return b.clone();
        }
        match (self.quick, mode) {
            (true, "inference") => vec![1],
            (true, _) => vec![2],
            (false, "inference") => vec![1, 128],
            (false, _) if network.starts_with("vgg") => vec![32],
            (false, _) => vec![128],
        }
    }
}

/// One cell to run.
struct Cell {
    network: String,
    mode: String,
    batch: usize,
    backend: String,
    link: String,
}

impl Cell {
    fn describe(&self) -> String {
        format!(
            "{} {} batch {} on {}, link {}",
            self.network, self.mode, self.batch, self.backend, self.link
        )
    }
}

/// The `cryptgpu` binary to run: `given` (`--binary`), else one built here in release mode.
pub(crate) fn cryptgpu_binary(sh: &Shell, root: &Path, given: Option<PathBuf>) -> Result<PathBuf> {
    let binary = match given {
        Some(binary) => binary,
        None => {
            println!("== building cryptgpu (release)");
            cmd!(sh, "cargo build --release --locked -p cryptgpu").run()?;
            root.join("target/release/cryptgpu")
        }
    };
    ensure!(
        binary.exists(),
        "no cryptgpu binary at {}",
        binary.display()
    );
    Ok(binary)
}

/// Runs the matrix and writes its results; returns the directory written.
pub(crate) fn run(sh: &Shell, root: &Path, args: &MatrixArgs) -> Result<PathBuf> {
    let started = SystemTime::now();
    let binary = cryptgpu_binary(sh, root, args.binary.clone())?;
    let figures = published::load(&root.join("benches/published.json"))?;

    let asked: Vec<String> = match &args.backends {
        Some(list) => list.clone(),
        None => BACKENDS.iter().map(|s| s.to_string()).collect(),
    };
    let gemm_n = if args.quick { 256 } else { 512 };
    let mut gemm = Vec::new();
    let mut skipped = Vec::new();
    let mut backends = Vec::new();
    for backend in &asked {
        println!("== probing {backend} (ring GEMM {gemm_n}×{gemm_n}×{gemm_n})");
        let runs = args.runs.max(3).to_string();
        let n = gemm_n.to_string();
        let out = Command::new(&binary)
            .args(["bench", "--gemm", &n, "--runs", &runs, "--json"])
            .args(["--backend", backend])
            .output()
            .with_context(|| format!("running {}", binary.display()))?;
        if !out.status.success() {
            let reason = last_line(&out.stderr);
            println!("skipped: {backend}: {reason}");
            skipped.push(Skipped {
                backend: backend.clone(),
                reason,
            });
            continue;
        }
        let row: GemmRow = serde_json::from_str(&last_line(&out.stdout))
            .with_context(|| format!("reading the GEMM record of {backend}"))?;
        if row.software_device && args.backends.is_none() {
            let reason = format!(
                "only a software adapter ({}), not a GPU; name wgpu in --backends to run it",
                row.device
            );
            println!("skipped: {backend}: {reason}");
            skipped.push(Skipped {
                backend: backend.clone(),
                reason,
            });
            continue;
        }
        println!(
            "{backend}: {} ({:.2} G MAC/s)",
            row.device,
            row.macs_per_second / 1e9
        );
        gemm.push(row);
        backends.push(backend.clone());
    }
    ensure!(
        !backends.is_empty(),
        "no backend could run: {}",
        skipped
            .iter()
            .map(|s| format!("{}: {}", s.backend, s.reason))
            .collect::<Vec<_>>()
            .join("; ")
    );

    let mut cells = Vec::new();
    for backend in &backends {
        for network in &args.networks {
            for mode in &args.modes {
                for batch in args.batches_for(network, mode) {
                    for link in &args.links {
                        cells.push(Cell {
                            network: network.clone(),
                            mode: mode.clone(),
                            batch,
                            backend: backend.clone(),
                            link: link.clone(),
                        });
                    }
                }
            }
        }
    }
    let dir = match &args.out {
        Some(dir) => dir.clone(),
        None => root
            .join("target/bench")
            .join(rfc3339(started).replace(':', "-")),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut results = Results {
        started: rfc3339(started),
        command: args.command.clone(),
        quick: args.quick,
        machine: machine(),
        commit: commit(sh),
        rows: Vec::new(),
        gemm,
        published: figures,
        skipped,
        failed: Vec::new(),
    };
    println!("== {} cells, results in {}", cells.len(), dir.display());
    let bar = ProgressBar::new(cells.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .context("the progress bar's template")?
            .progress_chars("=> "),
    );
    for cell in &cells {
        bar.set_message(cell.describe());
        match run_cell(&binary, args, cell) {
            Ok(row) => {
                bar.println(format!(
                    "{}: {:.3} s, {} rounds",
                    cell.describe(),
                    row.median_seconds,
                    row.rounds
                ));
                results.rows.push(row);
            }
            Err(e) => {
                bar.println(format!("FAILED {}: {e:#}", cell.describe()));
                results.failed.push(Failure {
                    cell: cell.describe(),
                    reason: format!("{e:#}"),
                });
            }
        }
        bar.inc(1);
        // What is measured so far, so a long run that is stopped loses nothing.
        write_tables(&results, &dir)?;
    }
    bar.finish_and_clear();

    let markdown = write_tables(&results, &dir)?;
    let svgs = plots::write_all(&results, &dir)?;
    println!("{markdown}");
    println!(
        "wrote {} (results.json, results.md and {} plots)",
        dir.display(),
        svgs.len()
    );
    if !results.failed.is_empty() {
        bail!(
            "{} of {} cells failed (listed in results.md)",
            results.failed.len(),
            cells.len()
        );
    }
    Ok(dir)
}

/// `cargo xtask bench-report --out DIR RESULTS.json...`: merges the results of several runs
/// (say the CPU matrix here and a GPU's elsewhere) into one `results.json`, `results.md` and
/// plots, without running anything. A cell that a later file measured again replaces the
/// earlier measurement. The published figures are read again from `published`.
pub(crate) fn report(inputs: &[PathBuf], published: &Path, out: &Path) -> Result<()> {
    ensure!(
        !inputs.is_empty(),
        "name one or more results.json files to merge"
    );
    let mut merged: Option<Results> = None;
    for path in inputs {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let results: Results = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a bench matrix's results.json", path.display()))?;
        merged = Some(match merged {
            None => results,
            Some(mut all) => {
                for (mine, theirs, sep) in [
                    (&mut all.machine, &results.machine, "; "),
                    (&mut all.commit, &results.commit, ", "),
                    (&mut all.command, &results.command, "; "),
                ] {
                    if !mine.split(sep).any(|part| part == theirs) {
                        mine.push_str(sep);
                        mine.push_str(theirs);
                    }
                }
                all.quick |= results.quick;
                // A cell measured again (a rerun on a quieter machine) replaces the earlier.
                all.rows.retain(|old| {
                    !results.rows.iter().any(|new| {
                        (
                            &new.network,
                            &new.mode,
                            new.batch,
                            &new.backend,
                            &new.device,
                        ) == (
                            &old.network,
                            &old.mode,
                            old.batch,
                            &old.backend,
                            &old.device,
                        ) && (&new.link, &new.pooling) == (&old.link, &old.pooling)
                    })
                });
                all.rows.extend(results.rows);
                all.gemm.retain(|old| {
                    !results.gemm.iter().any(|new| {
                        (&new.backend, &new.device, new.n) == (&old.backend, &old.device, old.n)
                    })
                });
                all.gemm.extend(results.gemm);
                all.skipped.extend(results.skipped);
                all.failed.extend(results.failed);
                all
            }
        });
    }
    let mut results = merged.context("no results")?;
    results.published = published::load(published)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    write_tables(&results, out)?;
    let svgs = plots::write_all(&results, out)?;
    println!(
        "wrote {} (results.json, results.md and {} plots) from {} runs",
        out.display(),
        svgs.len(),
        inputs.len()
    );
    Ok(())
}

/// Writes `results.json` and `results.md` into `dir`; returns the markdown.
fn write_tables(results: &Results, dir: &Path) -> Result<String> {
    let json = serde_json::to_string_pretty(results)?;
    write_atomic(&dir.join("results.json"), json.as_bytes())?;
    let markdown = report::markdown(results);
    write_atomic(&dir.join("results.md"), markdown.as_bytes())?;
    Ok(markdown)
}

/// Runs one cell in its own process and reads its record.
fn run_cell(binary: &Path, args: &MatrixArgs, cell: &Cell) -> Result<NetworkRow> {
    let mut command = Command::new(binary);
    command
        .args(["bench", "--json", "--network", &cell.network])
        .args(["--mode", &cell.mode])
        .args(["--batch", &cell.batch.to_string()])
        .args(["--backend", &cell.backend])
        .args(["--link", &cell.link])
        .args(["--runs", &args.runs.to_string()])
        .args(["--warmup", &args.warmup.to_string()])
        .args(["--pooling", &args.pooling]);
    if let Some(f) = args.frac_bits {
        command.args(["--frac-bits", &f.to_string()]);
    }
    let out = command
        .output()
        .with_context(|| format!("running {}", binary.display()))?;
    if !out.status.success() {
        bail!("{}", last_line(&out.stderr));
    }
    serde_json::from_str(&last_line(&out.stdout)).context("reading the cell's JSON record")
}

/// The last non-empty line of a process's output (its JSON record or its error).
fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(no output)")
        .to_string()
}

/// The machine, in words: CPU model, threads, memory (Linux), else the architecture.
pub(crate) fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(
            || std::env::consts::ARCH.to_string(),
            |(_, m)| m.trim().to_string(),
        );
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or_else(String::new, |kib| {
            format!(", {:.0} GiB", kib as f64 / (1024.0 * 1024.0))
        });
    format!("{model}, {threads} threads{memory}")
}

/// `git rev-parse --short HEAD`, with `-dirty` when tracked files have changes.
pub(crate) fn commit(sh: &Shell) -> String {
    let head = cmd!(sh, "git rev-parse --short HEAD")
        .quiet()
        .ignore_stderr()
        .read()
        .unwrap_or_else(|_| "unknown".into());
    let dirty = cmd!(sh, "git status --porcelain --untracked-files=no")
        .quiet()
        .ignore_stderr()
        .read()
        .is_ok_and(|s| !s.trim().is_empty());
    if dirty { format!("{head}-dirty") } else { head }
}

/// `time` as UTC RFC 3339, to the second (`2026-11-26T04:05:06Z`).
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        let at = |s: u64| UNIX_EPOCH + std::time::Duration::from_secs(s);
        assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(at(1_795_662_306)), "2026-11-26T03:05:06Z");
    }

    #[test]
    fn default_batches_follow_the_papers() {
        let args = |quick| MatrixArgs {
            backends: None,
            networks: vec![],
            modes: vec![],
            batches: None,
            links: vec![],
            runs: 1,
            warmup: 1,
            pooling: "avg".into(),
            frac_bits: None,
            quick,
            out: None,
            binary: None,
            command: String::new(),
        };
        assert_eq!(args(false).batches_for("lenet", "inference"), vec![1, 128]);
        assert_eq!(
            args(false).batches_for("vgg16-cifar10", "training"),
            vec![32]
        );
        assert_eq!(
            args(false).batches_for("alexnet-cifar10", "training"),
            vec![128]
        );
        assert_eq!(args(true).batches_for("lenet", "training"), vec![2]);
    }
}

#[cfg(test)]
mod report_tests {
    use super::*;
    use crate::matrix::report::tests::{row, sample};

    #[test]
    fn bench_report_merges_runs_and_refuses_what_is_not_a_result() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cpu = sample();
        let mut gpu = sample();
        gpu.machine = "a GPU machine".into();
        gpu.rows = vec![row("lenet", "inference", "cuda", "none")];
        let (a, b) = (dir.join("a.json"), dir.join("b.json"));
        std::fs::write(&a, serde_json::to_string(&cpu).unwrap()).unwrap();
        std::fs::write(&b, serde_json::to_string(&gpu).unwrap()).unwrap();
        let out = dir.join("merged");
        let published = crate::project_root().join("benches/published.json");
        report(&[a.clone(), b.clone()], &published, &out).unwrap();
        let merged: Results =
            serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap())
                .unwrap();
        assert_eq!(merged.rows.len(), cpu.rows.len() + 1);
        // The same file again replaces its cells instead of adding them twice.
        report(&[a.clone(), b.clone(), b.clone()], &published, &out).unwrap();
        let again: Results =
            serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap())
                .unwrap();
        assert_eq!(again.rows.len(), merged.rows.len());
        assert!(merged.machine.contains("a GPU machine"));
        assert!(merged.machine.contains(&cpu.machine));
        let markdown = std::fs::read_to_string(out.join("results.md")).unwrap();
        assert!(markdown.contains("cuda"), "{markdown}");
        assert!(out.join("time_inference.svg").exists());

        let bad = dir.join("bad.json");
        std::fs::write(&bad, "{\"rows\": 3}").unwrap();
        let message = format!("{:#}", report(&[a, bad], &published, &out).unwrap_err());
        assert!(message.contains("results.json"), "{message}");
        assert!(report(&[], &published, &out).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

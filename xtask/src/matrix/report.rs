//! `results.md`: the bench matrix as markdown tables, with the published figures beside ours.

use std::fmt::Write as _;

use super::published::{MODES, SYSTEMS, for_cell};
use super::schema::{NetworkRow, PublishedFigure, Results, zoo_name};

/// The `link` of a row that ran without an emulated link: its time is the compute time.
pub(crate) const NO_LINK: &str = "none";

/// The time the simple model predicts for an emulated row:
/// `compute + rounds · RTT + max_party_bytes · 8 / bandwidth`.
///
/// `compute` is the median of the matching `none` row. `None` when the row has no emulated
/// link (or its bandwidth or RTT is not a usable number), or `compute` is not a finite,
/// non-negative number.
pub(crate) fn formula_seconds(row: &NetworkRow, compute: f64) -> Option<f64> {
    let bits_per_second = row.link_bits_per_second?;
    let rtt = row.link_rtt_seconds?;
    let usable = bits_per_second.is_finite()
        && bits_per_second > 0.0
        && rtt.is_finite()
        && rtt >= 0.0
        && compute.is_finite()
        && compute >= 0.0;
    if !usable {
        return None;
    }
    let max_party_bytes = row.bytes_sent.iter().copied().max().unwrap_or(0) as f64;
    Some(compute + row.rounds as f64 * rtt + max_party_bytes * 8.0 / bits_per_second)
}

/// The emulated links run in `mode`, in the order they first appear.
pub(crate) fn links_run<'a>(rows: &'a [NetworkRow], mode: &str) -> Vec<&'a str> {
    let mut links: Vec<&str> = Vec::new();
    for row in rows.iter().filter(|r| r.mode == mode && r.link != NO_LINK) {
        if !links.contains(&row.link.as_str()) {
            links.push(&row.link);
        }
    }
    links
}

/// `backend (device)`, marking a software rasteriser.
pub(crate) fn backend_label(backend: &str, device: &str, software_device: bool) -> String {
    match (device.trim().is_empty(), software_device) {
        (true, false) => backend.to_string(),
        (true, true) => format!("{backend} (software rasteriser, not a GPU)"),
        (false, false) => format!("{backend} ({device})"),
        (false, true) => format!("{backend} ({device}; software rasteriser, not a GPU)"),
    }
}

/// A number with three significant digits, without an exponent.
fn three_digits(x: f64) -> String {
    if x == 0.0 {
        return "0".to_string();
    }
    let magnitude = x.abs().log10().floor() as i32;
    let decimals = (2 - magnitude).clamp(0, 9) as usize;
    format!("{x:.decimals$}")
}

/// Seconds for people: `380 ms`, `2.14 s`, `12.3 µs`; `—` for a value that is not a number.
pub(crate) fn human_seconds(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "—".to_string();
    }
    let abs = seconds.abs();
    if abs == 0.0 {
        "0 s".to_string()
    } else if abs >= 1.0 {
        format!("{} s", three_digits(seconds))
    } else if abs >= 1e-3 {
        format!("{} ms", three_digits(seconds * 1e3))
    } else {
        format!("{} µs", three_digits(seconds * 1e6))
    }
}

/// Scales `value` to the largest decimal unit of `units` (each 1000× the last) that keeps it ≥ 1.
fn decimal_units(value: f64, units: &[&str]) -> String {
    if !value.is_finite() {
        return "—".to_string();
    }
    let mut scaled = value;
    let mut unit = 0;
    while scaled.abs() >= 1000.0 && unit + 1 < units.len() {
        scaled /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{} {}", scaled.round(), units[0])
    } else {
        format!("{} {}", three_digits(scaled), units[unit])
    }
}

/// Bytes for people, decimal units: `512 B`, `3.00 MB`, `1.14 GB`.
pub(crate) fn human_bytes(bytes: f64) -> String {
    decimal_units(bytes, &["B", "kB", "MB", "GB", "TB", "PB"])
}

/// `value` divided by the first of `scales` (divisor and unit, largest first) that it
/// reaches, or by the last, with three significant digits and the unit.
fn scaled_to(value: f64, scales: &[(f64, &str)]) -> String {
    if !value.is_finite() {
        return "—".to_string();
    }
    let last = scales[scales.len() - 1];
    let (divisor, unit) = *scales.iter().find(|(d, _)| value >= *d).unwrap_or(&last);
    format!("{} {unit}", three_digits(value / divisor))
}

/// Multiply-add rates for people: `850 MMAC/s`, `13.4 GMAC/s`, `1.20 TMAC/s`.
pub(crate) fn human_rate(macs_per_second: f64) -> String {
    scaled_to(
        macs_per_second,
        &[(1e12, "TMAC/s"), (1e9, "GMAC/s"), (1e6, "MMAC/s")],
    )
}

/// Link bandwidths for people: `1 Gbit/s`, `100 Mbit/s`.
pub(crate) fn human_bits_per_second(bits_per_second: f64) -> String {
    scaled_to(
        bits_per_second,
        &[
            (1e9, "Gbit/s"),
            (1e6, "Mbit/s"),
            (1e3, "kbit/s"),
            (1.0, "bit/s"),
        ],
    )
}

/// One published figure as `seconds / bytes (batch b)`.
fn published_text(figure: &PublishedFigure) -> String {
    match figure.bytes {
        Some(bytes) => format!(
            "{} / {} (batch {})",
            human_seconds(figure.seconds),
            human_bytes(bytes),
            figure.batch
        ),
        None => format!("{} (batch {})", human_seconds(figure.seconds), figure.batch),
    }
}

/// Text safe inside a markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// The column headings of `mode`'s table.
fn mode_label(mode: &str) -> &str {
    match mode {
        "inference" => "Inference",
        "training" => "Training (one iteration)",
        other => other,
    }
}

/// One line of a mode's table: the rows of one network, batch and backend.
struct Cell<'a> {
    /// The `none` row, if it was run.
    compute: Option<&'a NetworkRow>,
    /// Every row of the cell (the `none` row too), in results order.
    rows: Vec<&'a NetworkRow>,
}

impl<'a> Cell<'a> {
    /// The row that describes the cell: the `none` row, else the first emulated one.
    fn first(&self) -> &'a NetworkRow {
        self.compute.unwrap_or(self.rows[0])
    }

    /// The cell's row over `link`.
    fn over(&self, link: &str) -> Option<&'a NetworkRow> {
        self.rows.iter().copied().find(|r| r.link == link)
    }
}

/// The cells of `mode`, in the order they first appear.
fn cells<'a>(rows: &'a [NetworkRow], mode: &str) -> Vec<Cell<'a>> {
    let mut cells: Vec<Cell<'a>> = Vec::new();
    for row in rows.iter().filter(|r| r.mode == mode) {
        let existing = cells.iter_mut().find(|c| {
            let first = c.rows[0];
            first.network == row.network && first.batch == row.batch && first.backend == row.backend
        });
        let cell = match existing {
            Some(cell) => cell,
            None => {
                cells.push(Cell {
                    compute: None,
                    rows: Vec::new(),
                });
                let last = cells.len() - 1;
                &mut cells[last]
            }
        };
        cell.rows.push(row);
        if row.link == NO_LINK && cell.compute.is_none() {
            cell.compute = Some(row);
        }
    }
    cells
}

/// The markdown of `results.md`.
pub(crate) fn markdown(results: &Results) -> String {
    let results = &results.with_pooling_in_names();
    let mut md = String::new();
    header(&mut md, results);
    for mode in MODES {
        mode_table(&mut md, results, mode);
    }
    device_work_table(&mut md, results);
    gemm_table(&mut md, results);
    skipped_and_failed(&mut md, results);
    published_sources(&mut md, results);
    formula_explanation(&mut md);
    md
}

/// The heading: machine, commit, date, command and sizes.
fn header(md: &mut String, results: &Results) {
    let _ = writeln!(md, "# cryptgpu bench matrix on {}\n", results.machine);
    let _ = writeln!(md, "- Machine: {}", results.machine);
    let _ = writeln!(md, "- Commit: `{}`", results.commit);
    let _ = writeln!(md, "- Started: {}", results.started);
    let _ = writeln!(md, "- Command: `cargo xtask {}`", results.command);
    let sizes = if results.quick {
        "quick (`--quick` sizes)"
    } else {
        "full"
    };
    let _ = writeln!(md, "- Sizes: {sizes}\n");
}

/// One mode's table, with the links it ran over described below it.
fn mode_table(md: &mut String, results: &Results, mode: &str) {
    let cells = cells(&results.rows, mode);
    let _ = writeln!(md, "## {}\n", mode_label(mode));
    if cells.is_empty() {
        let _ = writeln!(md, "No {mode} cells were run.\n");
        return;
    }
    let links = links_run(&results.rows, mode);

    let mut heads: Vec<String> = [
        "network",
        "input shape",
        "batch",
        "backend (device)",
        "compute time",
        "sent P0",
        "sent P1",
        "sent P2",
        "rounds",
        "peak memory: RSS (process, 3 parties) (device: the busiest party's); per party",
    ]
    .iter()
    .map(|h| h.to_string())
    .collect();
    for link in &links {
        let link = cell(link);
        heads.push(format!("{link}: emulated"));
        heads.push(format!("{link}: formula"));
        heads.push(format!("{link}: emulated / formula"));
    }
    for system in SYSTEMS {
        heads.push(match system {
            "Falcon" => "Falcon (paper)".to_string(),
            other => other.to_string(),
        });
    }
    let numeric = |i: usize| (4..10).contains(&i) || (10..10 + 3 * links.len()).contains(&i);
    let _ = writeln!(md, "| {} |", heads.join(" | "));
    let rule: Vec<&str> = (0..heads.len())
        .map(|i| if i == 2 || numeric(i) { "---:" } else { "---" })
        .collect();
    let _ = writeln!(md, "|{}|", rule.join("|"));

    for c in &cells {
        let first = c.first();
        let mut line: Vec<String> = vec![
            cell(&first.network),
            format!(
                "{}×{}×{}",
                first.input_shape[0], first.input_shape[1], first.input_shape[2]
            ),
            first.batch.to_string(),
            cell(&backend_label(
                &first.backend,
                &first.device,
                first.software_device,
            )),
            match c.compute {
                Some(row) => format!(
                    "{} (median of {})",
                    human_seconds(row.median_seconds),
                    row.seconds.len()
                ),
                None => "—".to_string(),
            },
        ];
        for bytes in first.bytes_sent {
            line.push(human_bytes(bytes as f64));
        }
        line.push(first.rounds.to_string());
        let mut memory = match first.peak_device_bytes {
            Some(device) => format!(
                "{} (device {})",
                human_bytes(first.peak_rss_bytes as f64),
                human_bytes(device.max() as f64)
            ),
            None => human_bytes(first.peak_rss_bytes as f64),
        };
        // Each party's device memory; older CPU rows have their tensors' instead.
        let parties = first
            .peak_device_bytes
            .and_then(|d| d.per_party())
            .or(first.peak_party_tensor_bytes);
        if let Some(parties) = parties {
            let parties: Vec<String> = parties.iter().map(|&b| human_bytes(b as f64)).collect();
            memory.push_str(&format!("; per party {}", parties.join(" / ")));
        }
        line.push(memory);
        for link in &links {
            let Some(row) = c.over(link) else {
                line.extend(["—".to_string(), "—".to_string(), "—".to_string()]);
                continue;
            };
            line.push(human_seconds(row.median_seconds));
            let formula = c
                .compute
                .and_then(|compute| formula_seconds(row, compute.median_seconds));
            match formula {
                Some(formula) => {
                    line.push(human_seconds(formula));
                    line.push(if formula > 0.0 && row.median_seconds.is_finite() {
                        format!("{:.2}×", row.median_seconds / formula)
                    } else {
                        "—".to_string()
                    });
                }
                None => line.extend(["—".to_string(), "—".to_string()]),
            }
        }
        let published = for_cell(&results.published, zoo_name(&first.network), mode);
        for system in SYSTEMS {
            let texts: Vec<String> = published
                .iter()
                .filter(|f| f.system == system)
                .map(|f| published_text(f))
                .collect();
            line.push(if texts.is_empty() {
                "—".to_string()
            } else {
                cell(&texts.join("; "))
            });
        }
        let _ = writeln!(md, "| {} |", line.join(" | "));
    }
    md.push('\n');

    for link in &links {
        let Some(row) = results
            .rows
            .iter()
            .find(|r| r.mode == mode && r.link == *link)
        else {
            continue;
        };
        let bandwidth = row
            .link_bits_per_second
            .map_or("—".to_string(), human_bits_per_second);
        let rtt = row.link_rtt_seconds.map_or("—".to_string(), human_seconds);
        let _ = writeln!(
            md,
            "- Link `{}`: {bandwidth} per party uplink, RTT {rtt}.",
            cell(link)
        );
    }
    if !links.is_empty() {
        md.push('\n');
    }
}

/// Each cell's device work per round (the busiest party's), beside the floor a round must
/// pay.
fn device_work_table(md: &mut String, results: &Results) {
    let _ = writeln!(
        md,
        "## Device work per round
"
    );
    let rows: Vec<&NetworkRow> = results
        .rows
        .iter()
        .filter(|r| r.device_counts_per_round.is_some())
        .collect();
    if rows.is_empty() {
        let _ = writeln!(
            md,
            "No cell counted its device work.
"
        );
        return;
    }
    let _ = writeln!(
        md,
        "The busiest party's launches, host↔device transfers, host waits and allocations in \
         one inference or iteration, divided by its rounds; the floor is what a round must do \
         (one launch; and where messages leave the device, one download with its wait and \
         one upload).\n"
    );
    let _ = writeln!(
        md,
        "| network | mode | batch | backend (device) | link | messages | rounds | launches | transfers | syncs | allocations | floor (launches/transfers/syncs) |"
    );
    let _ = writeln!(
        md,
        "|---|---|---:|---|---|---|---:|---:|---:|---:|---:|---|"
    );
    for row in rows {
        let Some(per) = row.device_counts_per_round else {
            continue;
        };
        let floor = row.round_floor.map_or_else(String::new, |f| {
            format!("{} / {} / {}", f.launches, f.uploads + f.downloads, f.syncs)
        });
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            cell(&row.network),
            row.mode,
            row.batch,
            cell(&backend_label(
                &row.backend,
                &row.device,
                row.software_device
            )),
            row.link,
            row.messages.as_deref().unwrap_or("device"),
            row.rounds,
            per.launches,
            per.uploads + per.downloads,
            per.syncs,
            per.allocations,
            floor,
        );
    }
    md.push('\n');
}

/// A section headed `## title` holding `lines`, then a blank line. Without lines it says
/// `none` instead, or is left out where `none` is `None`.
fn section(md: &mut String, title: &str, none: Option<&str>, lines: &[String]) {
    if lines.is_empty() && none.is_none() {
        return;
    }
    let _ = writeln!(md, "## {title}\n");
    if lines.is_empty() {
        let _ = writeln!(md, "{}\n", none.unwrap_or_default());
        return;
    }
    for line in lines {
        let _ = writeln!(md, "{line}");
    }
    md.push('\n');
}

/// The GEMM rates.
fn gemm_table(md: &mut String, results: &Results) {
    let mut lines: Vec<String> = results
        .gemm
        .iter()
        .map(|g| {
            format!(
                "| {} | {} | {} | {} |",
                cell(&backend_label(&g.backend, &g.device, g.software_device)),
                g.n,
                human_seconds(g.median_seconds),
                human_rate(g.macs_per_second)
            )
        })
        .collect();
    if !lines.is_empty() {
        let head = [
            "| backend (device) | n | median time | rate |",
            "|---|---:|---:|---:|",
        ];
        lines.splice(0..0, head.map(String::from));
    }
    let none = "No GEMM rates were measured.";
    section(md, "Ring GEMM (u64, n×n×n)", Some(none), &lines);
}

/// The backends asked for and not run, and the cells that failed (if any).
fn skipped_and_failed(md: &mut String, results: &Results) {
    let skipped: Vec<String> = results
        .skipped
        .iter()
        .map(|s| format!("- `{}`: {}", s.backend, cell(&s.reason)))
        .collect();
    let all_ran = "None: every backend asked for ran.";
    section(md, "Skipped backends", Some(all_ran), &skipped);
    let failed: Vec<String> = results
        .failed
        .iter()
        .map(|f| format!("- {}: {}", cell(&f.cell), cell(&f.reason)))
        .collect();
    section(md, "Failed cells", None, &failed);
}

/// Where the published figures come from, and their caveats.
fn published_sources(md: &mut String, results: &Results) {
    if results.published.is_empty() {
        return;
    }
    let _ = writeln!(md, "## Published figures\n");
    let _ = writeln!(
        md,
        "Their times are per inference or training iteration at their batch, bytes summed \
         over the parties; they ran on other hardware, so compare with care.\n"
    );
    for system in SYSTEMS {
        let figures: Vec<&PublishedFigure> = results
            .published
            .iter()
            .filter(|f| f.system == system)
            .collect();
        if figures.is_empty() {
            continue;
        }
        let mut seen: Vec<String> = Vec::new();
        let mut add = |text: String| {
            if !seen.contains(&text) {
                seen.push(text);
            }
        };
        for f in &figures {
            add(format!("Hardware: {}; link `{}`.", f.hardware, f.link));
        }
        for f in &figures {
            add(format!("Source: {}.", f.source.trim_end_matches('.')));
        }
        for f in &figures {
            if let Some(note) = &f.note {
                add(format!("Note: {note}"));
            }
        }
        let _ = writeln!(md, "- **{system}**");
        for line in seen {
            let _ = writeln!(md, "  - {line}");
        }
    }
    md.push('\n');
}

/// What the formula is and why the emulated times differ from it.
fn formula_explanation(md: &mut String) {
    let _ = writeln!(md, "## Emulated links and the formula\n");
    let _ = writeln!(
        md,
        "A `none` row is the compute time: the three parties in one process, no link emulated. \
         An emulated row runs the same cell with each party's uplink a FIFO queue \
         drained at the link's bandwidth, each message delivered rtt/2 after it leaves the \
         queue. Beside it stands the formula `compute + rounds · RTT + max_party_bytes · 8 / \
         bandwidth`, where compute is the median of the matching `none` row (same network, \
         mode, batch and backend), rounds are those of one inference or iteration, \
         max_party_bytes is the most bytes any one party sent, and the bandwidth is in bits \
         per second; the ratio is emulated / formula. The two differ for known reasons. The \
         formula charges a full RTT per round, while a message takes rtt/2 one way, so a round \
         in which the parties send at once costs about rtt/2 (ratio below 1 when latency \
         dominates). Compute and transfers overlap: a party computes while its earlier \
         messages drain, which the formula adds instead of overlapping (ratio below 1). And a \
         party's messages to both of its neighbours share its one uplink, so in a round the \
         second waits behind the first, and the party that sends most in a round need not be \
         the one that sends most overall, so the per-round waits add up to more than \
         max_party_bytes / bandwidth (ratio above 1 when bandwidth dominates).\n"
    );
    let _ = writeln!(
        md,
        "Piranha's released code uses constant masks and constant Beaver triples (no real \
         randomness), which its published timings reflect. `Falcon (measured here)` figures \
         hold only for the machine they were measured on.\n"
    );
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::matrix::schema::{
        DeviceCounts, DeviceCountsPerRound, Failure, GemmRow, PeakDeviceBytes, Skipped,
    };

    /// One measured row with round numbers; links and software devices are set by callers.
    pub(crate) fn row(network: &str, mode: &str, backend: &str, link: &str) -> NetworkRow {
        let (bits, rtt) = match link {
            "lan" => (Some(1e9), Some(1e-3)),
            "wan" => (Some(100e6), Some(0.05)),
            _ => (None, None),
        };
        NetworkRow {
            network: network.to_string(),
            input_shape: if network == "lenet" {
                [1, 28, 28]
            } else {
                [3, 32, 32]
            },
            mode: mode.to_string(),
            batch: if mode == "inference" { 1 } else { 128 },
            backend: backend.to_string(),
            device: "AMD EPYC 7763".to_string(),
            software_device: false,
            link: link.to_string(),
            link_bits_per_second: bits,
            link_rtt_seconds: rtt,
            seconds: vec![0.09, 0.1, 0.11],
            median_seconds: 0.1,
            bytes_sent: [1_000_000, 2_000_000, 1_500_000],
            rounds: 100,
            peak_rss_bytes: 250_000_000,
            peak_party_tensor_bytes: None,
            peak_device_bytes: None,
            device_counts: None,
            device_counts_per_round: Some(DeviceCountsPerRound {
                launches: 31.5,
                syncs: 0.25,
                ..DeviceCountsPerRound::default()
            }),
            round_floor: Some(DeviceCounts {
                launches: 1,
                ..DeviceCounts::default()
            }),
            messages: None,
            frac_bits: 16,
            pooling: "avg".to_string(),
        }
    }

    /// A published figure.
    pub(crate) fn figure(
        system: &str,
        network: &str,
        mode: &str,
        seconds: f64,
        bytes: Option<f64>,
    ) -> PublishedFigure {
        PublishedFigure {
            system: system.to_string(),
            network: network.to_string(),
            mode: mode.to_string(),
            batch: if mode == "inference" { 1 } else { 128 },
            seconds,
            bytes,
            link: "lan".to_string(),
            hardware: "NVIDIA V100".to_string(),
            source: "the paper".to_string(),
            note: (system == "Piranha").then(|| "constant masks and triples".to_string()),
        }
    }

    /// Two networks, `none` and `lan` rows, a software device, a GEMM row, a skipped backend.
    pub(crate) fn sample() -> Results {
        let mut lan = row("lenet", "inference", "cpu", "lan");
        lan.median_seconds = 0.4;
        lan.seconds = vec![0.4, 0.41, 0.39];
        let mut soft = row("alexnet-cifar10", "training", "wgpu", "none");
        soft.device = "llvmpipe (LLVM 17)".to_string();
        soft.software_device = true;
        soft.median_seconds = 2.5;
        soft.seconds = vec![2.5; 5];
        soft.peak_device_bytes = Some(PeakDeviceBytes::Total(3_000_000_000));
        Results {
            started: "2025-01-02T03:04:05Z".to_string(),
            command: "bench --quick".to_string(),
            quick: true,
            machine: "AMD EPYC 7763, 2 cores, 8 GB".to_string(),
            commit: "abc1234-dirty".to_string(),
            rows: vec![row("lenet", "inference", "cpu", "none"), lan, soft],
            gemm: vec![GemmRow {
                backend: "cpu".to_string(),
                device: "AMD EPYC 7763".to_string(),
                software_device: false,
                n: 512,
                median_seconds: 0.01,
                macs_per_second: 1.34e10,
            }],
            published: vec![
                figure("CryptGPU", "lenet", "inference", 0.38, Some(3e6)),
                figure("Piranha", "lenet", "inference", 0.031, Some(2.49e6)),
                figure("Falcon", "lenet", "inference", 0.038, None),
                figure("Falcon", "alexnet-cifar10", "training", 62.37, Some(0.62e9)),
            ],
            skipped: vec![Skipped {
                backend: "cuda".to_string(),
                reason: "not compiled in (no `cuda` feature)".to_string(),
            }],
            failed: vec![Failure {
                cell: "vgg16-cifar10 training batch 32 cpu none".to_string(),
                reason: "out of memory".to_string(),
            }],
        }
    }

    #[test]
    fn formula_by_hand() {
        let lan = row("lenet", "inference", "cpu", "lan");
        // 0.1 s compute + 100 rounds × 1 ms + 2 MB × 8 / 1 Gbit/s = 0.1 + 0.1 + 0.016.
        let formula = formula_seconds(&lan, 0.1).unwrap();
        assert!((formula - 0.216).abs() < 1e-12, "{formula}");
        assert_eq!(
            formula_seconds(&row("lenet", "inference", "cpu", "none"), 0.1),
            None
        );
        assert_eq!(formula_seconds(&lan, f64::NAN), None);
        let mut broken = lan.clone();
        broken.link_bits_per_second = Some(0.0);
        assert_eq!(formula_seconds(&broken, 0.1), None);
    }

    #[test]
    fn markdown_has_the_columns_and_values() {
        let md = markdown(&sample());
        for expected in [
            "# cryptgpu bench matrix on AMD EPYC 7763, 2 cores, 8 GB",
            "`abc1234-dirty`",
            "2025-01-02T03:04:05Z",
            "`cargo xtask bench --quick`",
            "quick",
            "## Inference",
            "## Training (one iteration)",
            "## Device work per round",
            "| lenet | inference | 1 | cpu (AMD EPYC 7763) | none | device | 100 | 31.5 | 0.0 | 0.2 \
             | 0.0 | 1 / 0 / 0 |",
            "| network | input shape | batch | backend (device) | compute time | sent P0 | sent P1 \
             | sent P2 | rounds | peak memory: RSS (process, 3 parties) (device: the busiest \
             party's); per party | lan: emulated | lan: formula | lan: emulated / \
             formula | CryptGPU | Piranha | Falcon (paper) | Falcon (measured here) |",
            "| lenet | 1×28×28 | 1 | cpu (AMD EPYC 7763) | 100 ms (median of 3) | 1.00 MB | \
             2.00 MB | 1.50 MB | 100 | 250 MB | 400 ms | 216 ms | 1.85× | 380 ms / 3.00 MB \
             (batch 1) | 31.0 ms / 2.49 MB (batch 1) | 38.0 ms (batch 1) | — |",
            "wgpu (llvmpipe (LLVM 17); software rasteriser, not a GPU)",
            "2.50 s (median of 5)",
            "250 MB (device 3.00 GB)",
            "62.4 s / 620 MB (batch 128)",
            "- Link `lan`: 1.00 Gbit/s per party uplink, RTT 1.00 ms.",
            "| cpu (AMD EPYC 7763) | 512 | 10.0 ms | 13.4 GMAC/s |",
            "- `cuda`: not compiled in (no `cuda` feature)",
            "## Failed cells\n\n- vgg16-cifar10 training batch 32 cpu none: out of memory",
            "constant masks and triples",
            "`compute + rounds · RTT + max_party_bytes · 8 / bandwidth`",
            "rtt/2",
            "share its one uplink",
        ] {
            assert!(md.contains(expected), "missing {expected:?} in\n{md}");
        }
        // The training table has no emulated link, so no link columns.
        let training = md.split("## Training").nth(1).unwrap();
        let training = training.split("## Ring GEMM").next().unwrap();
        assert!(!training.contains("lan: formula"), "{training}");
    }

    #[test]
    fn memory_shows_the_busiest_party_and_each_party() {
        let mut results = sample();
        results.rows[0].peak_device_bytes = Some(PeakDeviceBytes::PerParty([
            21_000_000, 13_100_000, 13_200_000,
        ]));
        let md = markdown(&results);
        assert!(
            md.contains("| 250 MB (device 21.0 MB); per party 21.0 MB / 13.1 MB / 13.2 MB |"),
            "{md}"
        );
        // A row from before: the CPU's tensors per party, no device figure.
        results.rows[0].peak_device_bytes = None;
        results.rows[0].peak_party_tensor_bytes =
            Some([1_420_000_000, 1_220_000_000, 1_150_000_000]);
        let md = markdown(&results);
        assert!(
            md.contains("| 250 MB; per party 1.42 GB / 1.22 GB / 1.15 GB |"),
            "{md}"
        );
    }

    #[test]
    fn empty_results_still_render() {
        let mut results = sample();
        results.rows.clear();
        results.gemm.clear();
        results.published.clear();
        results.skipped.clear();
        results.failed.clear();
        let md = markdown(&results);
        assert!(md.contains("No inference cells were run."), "{md}");
        assert!(md.contains("No GEMM rates were measured."), "{md}");
        assert!(md.contains("None: every backend asked for ran."), "{md}");
    }

    #[test]
    fn max_pooling_rows_are_named_apart_from_average_pooling_ones() {
        let mut results = sample();
        let mut max = row("lenet", "inference", "cpu", "none");
        max.pooling = "max".into();
        results.rows.push(max);
        let md = markdown(&results);
        assert!(md.contains("| lenet (max pooling) |"), "{md}");
        assert!(md.contains("| lenet |"), "{md}");
    }

    #[test]
    fn emulated_row_without_compute_row() {
        let mut results = sample();
        results.rows.remove(0);
        let md = markdown(&results);
        assert!(
            md.contains("| lenet | 1×28×28 | 1 | cpu (AMD EPYC 7763) | — |"),
            "{md}"
        );
        assert!(md.contains("| 400 ms | — | — |"), "{md}");
    }

    #[test]
    fn human_units() {
        assert_eq!(human_seconds(0.38), "380 ms");
        assert_eq!(human_seconds(2.14), "2.14 s");
        assert_eq!(human_seconds(360.83), "361 s");
        assert_eq!(human_seconds(0.031), "31.0 ms");
        assert_eq!(human_seconds(12.3e-6), "12.3 µs");
        assert_eq!(human_seconds(f64::NAN), "—");
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(3e6), "3.00 MB");
        assert_eq!(human_bytes(2.43e6), "2.43 MB");
        assert_eq!(human_bytes(1.14e9), "1.14 GB");
        assert_eq!(human_bytes(1500.0), "1.50 kB");
        assert_eq!(human_rate(1.34e10), "13.4 GMAC/s");
        assert_eq!(human_rate(1.2e12), "1.20 TMAC/s");
        assert_eq!(human_rate(8.5e8), "850 MMAC/s");
        assert_eq!(human_bits_per_second(1e9), "1.00 Gbit/s");
    }
}

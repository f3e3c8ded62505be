//! SVG plots of a bench matrix run (plotters).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{
    AsRangedCoord, DefaultFormatting, KeyPointHint, Ranged, ValueFormatter,
};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::published::{SYSTEMS, for_cell};
use super::report::{NO_LINK, human_bytes, human_rate, human_seconds};
use super::schema::{NetworkRow, Results};
use super::write_atomic;

/// Width of the legend column, in pixels.
const LEGEND_WIDTH: u32 = 340;
/// Height of every plot, in pixels.
const HEIGHT: u32 = 560;
/// The font of every label.
const FONT: &str = "sans-serif";

/// Bar colours (Tableau 10, then darker shades), cycled through the series: a CPU, two
/// GPU backends, their links and four published systems stay apart.
const COLOURS: [RGBColor; 16] = [
    RGBColor(78, 121, 167),
    RGBColor(242, 142, 43),
    RGBColor(225, 87, 89),
    RGBColor(118, 183, 178),
    RGBColor(89, 161, 79),
    RGBColor(237, 201, 72),
    RGBColor(176, 122, 161),
    RGBColor(255, 157, 167),
    RGBColor(156, 117, 95),
    RGBColor(186, 176, 172),
    RGBColor(31, 60, 110),
    RGBColor(150, 75, 0),
    RGBColor(20, 110, 60),
    RGBColor(110, 30, 120),
    RGBColor(60, 60, 60),
    RGBColor(0, 150, 190),
];

/// One legend entry of a grouped bar chart: a value per category, where it has one.
struct Series {
    /// The legend text.
    label: String,
    /// One value per category.
    values: Vec<Option<f64>>,
    /// Text drawn above each bar (e.g. the batch), per category.
    notes: Vec<Option<String>>,
}

/// A grouped bar chart: categories along x, one bar per series in each.
struct BarChart {
    /// The file name, e.g. `bytes.svg`.
    file: &'static str,
    /// The caption.
    title: String,
    /// The x axis description.
    x_desc: String,
    /// The y axis description (the log-scale note is added when used).
    y_desc: String,
    /// The category labels.
    categories: Vec<String>,
    /// The series.
    series: Vec<Series>,
    /// Formats a y value for the axis labels.
    format: fn(f64) -> String,
    /// Always use a log-scale y axis (otherwise only when values span more than 100×).
    force_log: bool,
}

impl BarChart {
    /// A chart with no series yet.
    fn new(
        file: &'static str,
        title: String,
        x_desc: &str,
        y_desc: &str,
        categories: Vec<String>,
        format: fn(f64) -> String,
    ) -> Self {
        Self {
            file,
            title,
            x_desc: x_desc.to_string(),
            y_desc: y_desc.to_string(),
            categories,
            series: Vec::new(),
            format,
            force_log: false,
        }
    }

    /// Index of the series labelled `label`, added empty if new.
    fn series_index(&mut self, label: String) -> usize {
        if let Some(i) = self.series.iter().position(|s| s.label == label) {
            return i;
        }
        let n = self.categories.len();
        self.series.push(Series {
            label,
            values: vec![None; n],
            notes: vec![None; n],
        });
        self.series.len() - 1
    }

    /// Sets `label`'s value in category `category` (keeping a value already there).
    fn set(&mut self, label: String, category: usize, value: f64, note: Option<String>) {
        let i = self.series_index(label);
        let series = &mut self.series[i];
        if category < series.values.len() && series.values[category].is_none() {
            series.values[category] = Some(value);
            series.notes[category] = note;
        }
    }

    /// The values that can be drawn: finite and positive.
    fn drawable(&self) -> Vec<f64> {
        self.series
            .iter()
            .flat_map(|s| s.values.iter().flatten().copied())
            .filter(|v| v.is_finite() && *v > 0.0)
            .collect()
    }
}

/// The x axis of a bar chart: `n` categories centred on 0, 1, …, n − 1, one tick at each.
struct CategoryAxis {
    /// The number of categories.
    n: usize,
}

impl Ranged for CategoryAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let range = self.range();
        let span = range.end - range.start;
        let fraction = if span > 0.0 {
            (value - range.start) / span
        } else {
            0.5
        };
        limit.0 + (fraction * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            (0..self.n).map(|i| i as f64).collect()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        -0.5..self.n.max(1) as f64 - 0.5
    }
}

/// Writes every plot that has data into `dir` (created if needed) and returns their paths.
///
/// The plots: `time_inference.svg`, `time_training.svg`, `bytes.svg`, `gemm.svg` and
/// `published.svg`. A plot without data is skipped: no file, no error. Each file is written
/// to `name.svg.tmp`, then renamed.
pub(crate) fn write_all(results: &Results, dir: &Path) -> Result<Vec<PathBuf>> {
    let results = &results.with_pooling_in_names();
    let charts = [
        time_chart(results, "inference"),
        time_chart(results, "training"),
        bytes_chart(results),
        gemm_chart(results),
        published_chart(results),
    ];
    let mut written = Vec::new();
    for chart in charts.iter().flatten() {
        let Some(svg) = render(chart).with_context(|| format!("drawing {}", chart.file))? else {
            continue;
        };
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the plot directory {}", dir.display()))?;
        let path = dir.join(chart.file);
        write_atomic(&path, svg.as_bytes())?;
        written.push(path);
    }
    Ok(written)
}

/// A backend's legend label, marking a software rasteriser.
fn backend_short(backend: &str, software_device: bool) -> String {
    if software_device {
        format!("{backend} (software rasteriser)")
    } else {
        backend.to_string()
    }
}

/// How a row's link reads in a legend.
fn link_label(link: &str) -> String {
    if link == NO_LINK {
        "compute".to_string()
    } else {
        format!("{link} emulated")
    }
}

/// Distinct values in first-appearance order.
fn distinct<T: PartialEq>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// (a) Time per network of `mode`: a bar per backend and link.
fn time_chart(results: &Results, mode: &str) -> Option<BarChart> {
    let rows: Vec<&NetworkRow> = results.rows.iter().filter(|r| r.mode == mode).collect();
    if rows.is_empty() {
        return None;
    }
    let keys = distinct(rows.iter().map(|r| (r.network.as_str(), r.batch)));
    let categories = keys
        .iter()
        .map(|(network, batch)| format!("{network} (batch {batch})"))
        .collect();
    let (file, title, y_desc) = if mode == "inference" {
        (
            "time_inference.svg",
            "Private inference: time per batch (median)",
            "seconds per inference",
        )
    } else {
        (
            "time_training.svg",
            "Private training: time per iteration (median)",
            "seconds per training iteration",
        )
    };
    let mut chart = BarChart::new(
        file,
        title.to_string(),
        "network (batch)",
        y_desc,
        categories,
        human_seconds,
    );
    let several_links = distinct(rows.iter().map(|r| r.link.as_str())).len() > 1;
    for row in rows {
        let Some(category) = keys
            .iter()
            .position(|k| *k == (row.network.as_str(), row.batch))
        else {
            continue;
        };
        let backend = backend_short(&row.backend, row.software_device);
        let label = if several_links || row.link != NO_LINK {
            format!("{backend}, {}", link_label(&row.link))
        } else {
            backend
        };
        chart.set(label, category, row.median_seconds, None);
    }
    Some(chart)
}

/// (b) Bytes per network, summed over the parties, per mode.
fn bytes_chart(results: &Results) -> Option<BarChart> {
    let rows = &results.rows;
    if rows.is_empty() {
        return None;
    }
    let networks = distinct(rows.iter().map(|r| r.network.as_str()));
    let mut chart = BarChart::new(
        "bytes.svg",
        "Bytes sent per inference or training iteration, all parties".to_string(),
        "network",
        "bytes (P0 + P1 + P2)",
        networks.iter().map(|n| n.to_string()).collect(),
        human_bytes,
    );
    // Bytes do not depend on the link or the backend: take the first row of each cell.
    for row in rows {
        let Some(category) = networks.iter().position(|n| *n == row.network) else {
            continue;
        };
        let total: u64 = row.bytes_sent.iter().copied().fold(0, u64::saturating_add);
        let label = format!("{} (batch {})", row.mode, row.batch);
        chart.set(label, category, total as f64, None);
    }
    Some(chart)
}

/// (c) GEMM rate per backend, a bar per matrix size.
fn gemm_chart(results: &Results) -> Option<BarChart> {
    let gemm = &results.gemm;
    if gemm.is_empty() {
        return None;
    }
    let backends = distinct(
        gemm.iter()
            .map(|g| (g.backend.as_str(), g.device.as_str(), g.software_device)),
    );
    let categories = backends
        .iter()
        .map(|(backend, device, software)| {
            let mut label = format!("{backend}: {device}");
            if *software {
                label.push_str(" (software)");
            }
            label
        })
        .collect();
    let mut chart = BarChart::new(
        "gemm.svg",
        "Ring GEMM rate (u64 products mod 2^64, n×n×n)".to_string(),
        "backend: device",
        "multiply-adds per second",
        categories,
        human_rate,
    );
    let mut sizes: Vec<usize> = distinct(gemm.iter().map(|g| g.n));
    sizes.sort_unstable();
    for n in &sizes {
        chart.series_index(format!("n = {n}"));
    }
    for g in gemm {
        let Some(category) = backends
            .iter()
            .position(|b| *b == (g.backend.as_str(), g.device.as_str(), g.software_device))
        else {
            continue;
        };
        chart.set(format!("n = {}", g.n), category, g.macs_per_second, None);
    }
    Some(chart)
}

/// (d) Ours (compute, and LAN emulated) beside the published figures, per network and mode.
fn published_chart(results: &Results) -> Option<BarChart> {
    let keys: Vec<(&str, &str)> = distinct(
        results
            .rows
            .iter()
            .map(|r| (r.network.as_str(), r.mode.as_str())),
    )
    .into_iter()
    .filter(|(network, mode)| !for_cell(&results.published, network, mode).is_empty())
    .collect();
    if keys.is_empty() {
        return None;
    }
    let mut chart = BarChart::new(
        "published.svg",
        "Ours beside the published figures (other hardware; LAN unless noted)".to_string(),
        "network, mode (bars labelled with their batch)",
        "seconds per inference or training iteration",
        keys.iter()
            .map(|(network, mode)| format!("{network}, {mode}"))
            .collect(),
        human_seconds,
    );
    chart.force_log = true;
    let backends = distinct(
        results
            .rows
            .iter()
            .map(|r| (r.backend.as_str(), r.software_device)),
    );
    // Ours first, then each system, so the legend reads in the same order as the bars.
    for (backend, software) in &backends {
        for link in [NO_LINK, "lan"] {
            if results
                .rows
                .iter()
                .any(|r| r.backend == *backend && r.software_device == *software && r.link == link)
            {
                let label = format!("ours, {}", backend_short(backend, *software));
                chart.series_index(format!("{label}, {}", link_label(link)));
            }
        }
    }
    for (category, (network, mode)) in keys.iter().enumerate() {
        let published = for_cell(&results.published, network, mode);
        let batches: Vec<usize> = published.iter().map(|f| f.batch).collect();
        for (backend, software) in &backends {
            for link in [NO_LINK, "lan"] {
                let candidates: Vec<&NetworkRow> = results
                    .rows
                    .iter()
                    .filter(|r| {
                        r.network == *network
                            && r.mode == *mode
                            && r.backend == *backend
                            && r.software_device == *software
                            && r.link == link
                    })
                    .collect();
                // The batch the papers used if we ran it, else our largest.
                let chosen = batches
                    .iter()
                    .find_map(|b| candidates.iter().find(|r| r.batch == *b))
                    .or_else(|| candidates.iter().max_by_key(|r| r.batch));
                if let Some(row) = chosen {
                    let label = format!(
                        "ours, {}, {}",
                        backend_short(backend, *software),
                        link_label(link)
                    );
                    let note = format!("b{}", row.batch);
                    chart.set(label, category, row.median_seconds, Some(note));
                }
            }
        }
        for system in SYSTEMS {
            if let Some(f) = published.iter().find(|f| f.system == system) {
                let label = match system {
                    "Falcon" => "Falcon (paper, CPU)".to_string(),
                    "Falcon (measured here)" => {
                        format!("Falcon (measured here, {})", f.link)
                    }
                    other => format!("{other} (paper, GPU)"),
                };
                chart.set(label, category, f.seconds, Some(format!("b{}", f.batch)));
            }
        }
    }
    Some(chart)
}

/// Draws `chart` as an SVG document; `None` when it has nothing to draw.
fn render(chart: &BarChart) -> Result<Option<String>> {
    let values = chart.drawable();
    let (Some(min), Some(max)) = (
        values.iter().copied().reduce(f64::min),
        values.iter().copied().reduce(f64::max),
    ) else {
        return Ok(None);
    };
    let log = chart.force_log || max / min > 100.0;

    let longest_label = chart
        .categories
        .iter()
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(0) as u32;
    let bars = chart.series.len().max(1) as u32;
    let per_category = (8 * longest_label + 24).max(30 * bars + 40).max(140);
    let plot_width = 130 + per_category * chart.categories.len().max(1) as u32;
    let width = plot_width + LEGEND_WIDTH;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        let (plot_area, legend_area) = root.split_horizontally(plot_width);
        if log {
            // Slightly wider than the decades, so that their ticks are not lost to rounding.
            let lo = 10f64.powf(min.log10().floor()) * (1.0 - 1e-9);
            let hi = 10f64.powf((max * 3.0).log10().ceil()) * (1.0 + 1e-9);
            draw_bars(&plot_area, chart, (lo..hi).log_scale(), lo, true)?;
        } else {
            draw_bars(&plot_area, chart, 0.0..max * 1.15, 0.0, false)?;
        }
        draw_legend(&legend_area, chart)?;
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    Ok(Some(svg))
}

/// Draws the axes and the bars of `chart` on `area`, bars rising from `base`.
fn draw_bars<Y>(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    chart: &BarChart,
    y: Y,
    base: f64,
    log: bool,
) -> Result<()>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let n = chart.categories.len();
    let mut ctx = ChartBuilder::on(area)
        .caption(&chart.title, (FONT, 20))
        .margin(12)
        .x_label_area_size(56)
        .y_label_area_size(90)
        .build_cartesian_2d(CategoryAxis { n }, y)
        .map_err(|e| anyhow!("{e}"))?;

    let categories = &chart.categories;
    let x_format = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < categories.len() {
            categories[i as usize].clone()
        } else {
            String::new()
        }
    };
    let format = chart.format;
    let y_format = |v: &f64| format(*v);
    let y_desc = if log {
        format!("{} (log scale)", chart.y_desc)
    } else {
        chart.y_desc.clone()
    };
    ctx.configure_mesh()
        .disable_x_mesh()
        .x_desc(chart.x_desc.as_str())
        .y_desc(y_desc)
        .x_label_formatter(&x_format)
        .y_label_formatter(&y_format)
        .x_label_style((FONT, 13))
        .y_label_style((FONT, 13))
        .axis_desc_style((FONT, 15))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;

    let k = chart.series.len().max(1) as f64;
    let group = 0.8;
    let width = group / k;
    let note_style =
        TextStyle::from((FONT, 11).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    for (j, series) in chart.series.iter().enumerate() {
        let colour = COLOURS[j % COLOURS.len()];
        let mut bars = Vec::new();
        let mut notes = Vec::new();
        for (i, value) in series.values.iter().enumerate() {
            let Some(value) = value.filter(|v| v.is_finite() && *v > base) else {
                continue;
            };
            let left = i as f64 - group / 2.0 + j as f64 * width + 0.05 * width;
            let right = left + 0.9 * width;
            bars.push(Rectangle::new(
                [(left, base), (right, value)],
                colour.filled(),
            ));
            if let Some(note) = &series.notes[i] {
                notes.push(Text::new(
                    note.clone(),
                    ((left + right) / 2.0, value),
                    note_style.clone(),
                ));
            }
        }
        ctx.draw_series(bars).map_err(|e| anyhow!("{e}"))?;
        ctx.draw_series(notes).map_err(|e| anyhow!("{e}"))?;
    }
    Ok(())
}

/// Draws the legend of `chart` (a colour swatch and a label per series) on `area`.
fn draw_legend(area: &DrawingArea<SVGBackend<'_>, Shift>, chart: &BarChart) -> Result<()> {
    let label_style =
        TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let mut y = 60;
    area.draw_text(
        "Legend",
        &TextStyle::from((FONT, 15).into_font()),
        (10, y - 30),
    )
    .map_err(|e| anyhow!("{e}"))?;
    for (j, series) in chart.series.iter().enumerate() {
        let colour = COLOURS[j % COLOURS.len()];
        area.draw(&Rectangle::new([(10, y - 7), (24, y + 7)], colour.filled()))
            .map_err(|e| anyhow!("{e}"))?;
        area.draw_text(&series.label, &label_style, (32, y))
            .map_err(|e| anyhow!("{e}"))?;
        y += 24;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::report::tests::sample;

    /// A fresh directory under the system's temp dir.
    fn temp_dir(name: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        std::env::temp_dir().join(format!(
            "cryptgpu-xtask-plots-{name}-{}-{nanos}",
            std::process::id()
        ))
    }

    #[test]
    fn writes_the_plots_of_a_sample() {
        let dir = temp_dir("sample");
        let written = write_all(&sample(), &dir).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "time_inference.svg",
                "time_training.svg",
                "bytes.svg",
                "gemm.svg",
                "published.svg"
            ]
        );
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
        for name in &names {
            let svg = read(name);
            assert!(
                svg.starts_with("<svg"),
                "{name}: {}",
                &svg[..40.min(svg.len())]
            );
            assert!(svg.trim_end().ends_with("</svg>"), "{name}");
            assert!(svg.contains("Legend"), "{name}");
        }
        assert!(read("time_inference.svg").contains("lenet (batch 1)"));
        assert!(read("time_inference.svg").contains("cpu, lan emulated"));
        assert!(read("time_training.svg").contains("alexnet-cifar10 (batch 128)"));
        assert!(read("time_training.svg").contains("software rasteriser"));
        let bytes = read("bytes.svg");
        assert!(bytes.contains("lenet") && bytes.contains("alexnet-cifar10"));
        assert!(read("gemm.svg").contains("n = 512"));
        let published = read("published.svg");
        for expected in [
            "lenet, inference",
            "alexnet-cifar10, training",
            "CryptGPU",
            "Piranha",
            "Falcon (paper, CPU)",
            "b128",
            "log scale",
        ] {
            assert!(
                published.contains(expected),
                "published.svg lacks {expected}"
            );
        }
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn empty_results_write_nothing() {
        let mut results = sample();
        results.rows.clear();
        results.gemm.clear();
        let dir = temp_dir("empty");
        assert!(write_all(&results, &dir).unwrap().is_empty());
        assert!(!dir.exists());
    }

    #[test]
    fn unusable_values_are_skipped() {
        let mut results = sample();
        for row in &mut results.rows {
            row.median_seconds = f64::NAN;
            row.bytes_sent = [0; 3];
        }
        results.gemm.clear();
        results.published.clear();
        let dir = temp_dir("nan");
        assert!(write_all(&results, &dir).unwrap().is_empty());
        assert!(!dir.exists());
    }
}

//! The bench matrix's records: what `cryptgpu bench --json` prints for one cell (a
//! network, mode, batch, backend and link), what `cryptgpu bench --gemm N --json` prints
//! for one backend's GEMM rate, and `results.json`, which holds them all.

use serde::{Deserialize, Serialize};

/// One measured cell: a network run privately by three parties in one process.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct NetworkRow {
    /// Zoo name, e.g. `lenet`, `vgg16-cifar10`.
    pub(crate) network: String,
    /// One example's shape `[C, H, W]`.
    pub(crate) input_shape: [usize; 3],
    /// `inference` or `training`.
    pub(crate) mode: String,
    /// Examples per inference or per training iteration.
    pub(crate) batch: usize,
    /// `cpu`, `wgpu` or `cuda`.
    pub(crate) backend: String,
    /// The device the backend ran on, in words (adapter or GPU name; the CPU model).
    pub(crate) device: String,
    /// Whether that device is a software rasteriser (lavapipe): its times are not a GPU's.
    pub(crate) software_device: bool,
    /// The link profile: `none`, `lan`, `wan`, or `BW,RTT` as given.
    pub(crate) link: String,
    /// The emulated link's bandwidth in bits per second (`None` for `none`).
    pub(crate) link_bits_per_second: Option<f64>,
    /// The emulated link's round-trip time in seconds (`None` for `none`).
    pub(crate) link_rtt_seconds: Option<f64>,
    /// Timed runs after the warm-up.
    pub(crate) seconds: Vec<f64>,
    /// Their median: time per inference (of `batch` examples) or per training iteration.
    pub(crate) median_seconds: f64,
    /// Bytes each party sent in one inference or iteration (P0, P1, P2).
    pub(crate) bytes_sent: [u64; 3],
    /// Rounds of one inference or iteration.
    pub(crate) rounds: u64,
    /// Peak resident memory of the process that ran the three parties, in bytes.
    pub(crate) peak_rss_bytes: u64,
    /// Each party's peak of live tensor memory (P0, P1, P2), where the backend accounts
    /// for it (the CPU backend); rows from before it was measured have none.
    #[serde(default)]
    pub(crate) peak_party_tensor_bytes: Option<[u64; 3]>,
    /// Each party's peak of live device memory (P0, P1, P2) in the device-memory ledger
    /// that every backend charges, over the whole run; rows from before it was measured
    /// have none (`null`).
    #[serde(default)]
    pub(crate) peak_device_bytes: Option<PeakDeviceBytes>,
    /// Each party's device work in one inference or iteration (P0, P1, P2); rows from
    /// before it was counted have none.
    #[serde(default)]
    pub(crate) device_counts: Option<[DeviceCounts; 3]>,
    /// The busiest party's counts divided by the rounds: what a round costs the device.
    #[serde(default)]
    pub(crate) device_counts_per_round: Option<DeviceCountsPerRound>,
    /// What a round must cost at the least (`cryptgpu_backend::counters::round_floor`).
    #[serde(default)]
    pub(crate) round_floor: Option<DeviceCounts>,
    /// `device` (messages between the parties stay on the device) or `host` (they leave
    /// it, as between hosts).
    #[serde(default)]
    pub(crate) messages: Option<String>,
    /// Fractional bits of the fixed-point encoding.
    pub(crate) frac_bits: u32,
    /// `max` or `avg`.
    pub(crate) pooling: String,
}

/// A row's peak device memory: per party (what `cryptgpu bench` writes), or one number
/// for the whole device (the schema's first form, still read).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum PeakDeviceBytes {
    /// Each party's peak (P0, P1, P2).
    PerParty([u64; 3]),
    /// One number.
    Total(u64),
}

impl PeakDeviceBytes {
    /// The largest: the busiest party's peak, or the one number.
    pub(crate) fn max(&self) -> u64 {
        match *self {
            PeakDeviceBytes::PerParty(parties) => parties.into_iter().max().unwrap_or(0),
            PeakDeviceBytes::Total(bytes) => bytes,
        }
    }

    /// Each party's peak, where the row has them.
    pub(crate) fn per_party(&self) -> Option<[u64; 3]> {
        match *self {
            PeakDeviceBytes::PerParty(parties) => Some(parties),
            PeakDeviceBytes::Total(_) => None,
        }
    }
}

/// One party's device work (`cryptgpu_backend::DeviceCounts`): counts (`u64`), or counts
/// per round (`f64`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct DeviceCounts<T = u64> {
    /// Kernel launches (dispatches, CPU passes).
    pub(crate) launches: T,
    /// Host→device transfers.
    pub(crate) uploads: T,
    /// Their bytes.
    pub(crate) upload_bytes: T,
    /// Device→host transfers.
    pub(crate) downloads: T,
    /// Their bytes.
    pub(crate) download_bytes: T,
    /// Waits of the host for the device.
    pub(crate) syncs: T,
    /// Device allocations.
    pub(crate) allocations: T,
    /// Their bytes.
    pub(crate) allocation_bytes: T,
}

/// [`DeviceCounts`] per round.
pub(crate) type DeviceCountsPerRound = DeviceCounts<f64>;

/// One backend's ring GEMM rate (u64 products mod 2^64, n×n×n).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct GemmRow {
    /// `cpu`, `wgpu` or `cuda`.
    pub(crate) backend: String,
    /// The device, in words.
    pub(crate) device: String,
    /// Whether that device is a software rasteriser.
    pub(crate) software_device: bool,
    /// The matrix size.
    pub(crate) n: usize,
    /// Median seconds per product.
    pub(crate) median_seconds: f64,
    /// u64 multiply-adds per second: n³ / median.
    pub(crate) macs_per_second: f64,
}

/// A figure published by another system, from `benches/published.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct PublishedFigure {
    /// `CryptGPU`, `Piranha`, `Falcon` or `Falcon (measured here)`.
    pub(crate) system: String,
    /// Zoo name of the network it corresponds to.
    pub(crate) network: String,
    /// `inference` or `training`.
    pub(crate) mode: String,
    /// Their batch size.
    pub(crate) batch: usize,
    /// Seconds per inference or per training iteration.
    pub(crate) seconds: f64,
    /// Bytes summed over the parties, where published.
    pub(crate) bytes: Option<f64>,
    /// `lan`, or the setting they ran in (`loopback`).
    pub(crate) link: String,
    /// Their hardware, in words.
    pub(crate) hardware: String,
    /// Where the figure comes from (paper, table, or how it was measured).
    pub(crate) source: String,
    /// Caveats (e.g. Piranha's released code uses constant masks and triples).
    pub(crate) note: Option<String>,
}

/// A backend the matrix asked for but could not run, and why.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Skipped {
    /// The backend.
    pub(crate) backend: String,
    /// Why (not compiled in, no device, only a software adapter...).
    pub(crate) reason: String,
}

/// A cell that failed, and why.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Failure {
    /// The cell, in words (network, mode, batch, backend, link).
    pub(crate) cell: String,
    /// The error `cryptgpu bench` ended with.
    pub(crate) reason: String,
}

/// Everything one `cargo xtask bench` run wrote: `target/bench/<timestamp>/results.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Results {
    /// When the run started (UTC, RFC 3339).
    pub(crate) started: String,
    /// The command line, after `cargo xtask`.
    pub(crate) command: String,
    /// Whether `--quick` sizes were used.
    pub(crate) quick: bool,
    /// The machine, in words (CPU model, cores, memory).
    pub(crate) machine: String,
    /// `git rev-parse --short HEAD` (with `-dirty` when the tree had changes).
    pub(crate) commit: String,
    /// The measured cells.
    pub(crate) rows: Vec<NetworkRow>,
    /// The GEMM rates.
    pub(crate) gemm: Vec<GemmRow>,
    /// The published figures shown beside ours.
    pub(crate) published: Vec<PublishedFigure>,
    /// Backends that were asked for and skipped.
    pub(crate) skipped: Vec<Skipped>,
    /// Cells that failed.
    #[serde(default)]
    pub(crate) failed: Vec<Failure>,
}

impl Results {
    /// A copy in which a row pooled otherwise than with CryptGPU's average pooling names its
    /// pooling beside the network (`lenet (max pooling)`), so the tables and plots keep the
    /// two variants of a network apart.
    pub(crate) fn with_pooling_in_names(&self) -> Results {
        let mut labelled = self.clone();
        for row in &mut labelled.rows {
            if row.pooling != "avg" {
                row.network = format!("{} ({} pooling)", row.network, row.pooling);
            }
        }
        labelled
    }
}

/// The zoo name of a network label made by [`Results::with_pooling_in_names`].
pub(crate) fn zoo_name(label: &str) -> &str {
    label.split(" (").next().unwrap_or(label)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row of `cryptgpu bench --json` with `peak_device_bytes` as `peak` (JSON), or
    /// without the field where `peak` is `None`.
    fn row_with(peak: Option<&str>) -> NetworkRow {
        let peak = peak.map_or(String::new(), |p| format!(r#""peak_device_bytes": {p},"#));
        let text = format!(
            r#"{{"network": "lenet", "input_shape": [1, 28, 28], "mode": "inference",
                "batch": 1, "backend": "cpu", "device": "AMD EPYC", "software_device": false,
                "link": "none", "link_bits_per_second": null, "link_rtt_seconds": null,
                "seconds": [0.4], "median_seconds": 0.4, "bytes_sent": [7, 5, 4],
                "rounds": 69, "peak_rss_bytes": 106995712, {peak}
                "frac_bits": 16, "pooling": "avg"}}"#
        );
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    #[test]
    fn peak_device_bytes_reads_per_party_one_number_null_or_nothing() {
        let parties = row_with(Some("[20979296, 13100256, 13081312]"));
        let peak = parties.peak_device_bytes.expect("per party");
        assert_eq!(
            peak,
            PeakDeviceBytes::PerParty([20_979_296, 13_100_256, 13_081_312])
        );
        assert_eq!(peak.max(), 20_979_296);
        assert_eq!(peak.per_party(), Some([20_979_296, 13_100_256, 13_081_312]));
        let one = row_with(Some("3000000000")).peak_device_bytes.expect("one");
        assert_eq!(one, PeakDeviceBytes::Total(3_000_000_000));
        assert_eq!(one.max(), 3_000_000_000);
        assert_eq!(one.per_party(), None);
        assert_eq!(row_with(Some("null")).peak_device_bytes, None);
        assert_eq!(row_with(None).peak_device_bytes, None);
        // Written back as it was read.
        let again: NetworkRow =
            serde_json::from_str(&serde_json::to_string(&parties).unwrap()).unwrap();
        assert_eq!(again.peak_device_bytes, parties.peak_device_bytes);
    }
}

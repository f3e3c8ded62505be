//! `cryptgpu bench`: one cell of the bench matrix (`cargo xtask bench` runs one process per
//! cell). A network's private inference or training iterations run through the same job
//! function as `infer` and `train` ([`cryptgpu::jobs::run_party`]), three parties in this
//! process on synthetic inputs of the network's shape, optionally over an emulated link;
//! `--gemm N` times one backend's ring GEMM instead. `--json` prints one JSON object, the
//! record `xtask/src/matrix/schema.rs` reads.
//!
//! `peak_device_bytes` is each party's peak of live device memory (P0, P1, P2) in the
//! device-memory ledger (`cryptgpu::backend::memory`), on every backend, over the whole
//! run: the sharing of the model and the inputs, the warm-up steps and the timed ones (a
//! step's buffers are the same every time, except that training's momentum buffers appear
//! after its first step).

use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use cryptgpu::backend::GpuBackend;
use cryptgpu::backend::counters::{self, DeviceCounts};
use cryptgpu::backend::memory;
use cryptgpu::device::{Job, run_on_device};
use cryptgpu::jobs::{DataSpec, PartyOutcome, StepRecord, in_process_inputs};
use cryptgpu::local::{InProcess, progress_bar};
use cryptgpu::manifest::{JobKind, Options};
use cryptgpu::nn::zoo;
use cryptgpu::transport::CommStats;
use serde_json::json;

use super::args::{NumberArgs, RunArgs};

/// The most timed runs or warm-up runs one cell may ask for.
const MAX_RUNS: usize = 1000;

/// The largest GEMM `--gemm` times (three n×n matrices of 8-byte words: 768 MiB at 8192).
const MAX_GEMM_N: usize = 8192;

/// What a bench cell times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BenchMode {
    /// Private inference of one batch.
    Inference,
    /// One private SGD iteration (forward, backward, update) on one batch.
    Training,
}

impl BenchMode {
    fn name(self) -> &'static str {
        match self {
            BenchMode::Inference => "inference",
            BenchMode::Training => "training",
        }
    }
}

/// `bench`'s options.
#[derive(Args, Debug, Clone)]
pub(crate) struct BenchArgs {
    /// The zoo network to time: lenet, secureml, alexnet-cifar10, vgg16-cifar10, resnet18,
    /// resnet50, ... (weights from the zoo's seeded initialisation; inputs random).
    #[arg(long, required_unless_present = "gemm", conflicts_with = "gemm")]
    network: Option<String>,
    /// Pooling of the zoo network: avg (CryptGPU's benchmarks) or max.
    #[arg(long, default_value = "avg")]
    pooling: String,
    /// Time private inference of one batch, or one private training iteration.
    #[arg(long, value_enum, default_value = "inference")]
    mode: BenchMode,
    /// Examples per inference or per training iteration.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Timed runs (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Untimed runs before them.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    #[command(flatten)]
    number: NumberArgs,
    /// Every message between the parties leaves the device and enters it again (download,
    /// send, upload), as between three hosts; by default messages between parties on one
    /// device stay on it.
    #[arg(long)]
    messages_via_host: bool,
    /// Time the backend's ring GEMM (u64 mod 2^64) of two N×N matrices instead of a network.
    #[arg(long, value_name = "N")]
    gemm: Option<usize>,
    #[command(flatten)]
    run: RunArgs,
}

/// Runs `cryptgpu bench`.
pub(crate) fn run(args: &BenchArgs) -> Result<()> {
    args.run.limit_device_memory();
    ensure!(
        (1..=MAX_RUNS).contains(&args.runs),
        "--runs must be between 1 and {MAX_RUNS}"
    );
    ensure!(
        args.warmup <= MAX_RUNS,
        "--warmup must be at most {MAX_RUNS}"
    );
    match (&args.network, args.gemm) {
        (_, Some(n)) => gemm(args, n),
        (Some(network), None) => network_cell(args, network),
        (None, None) => bail!("name a --network to time, or --gemm N"),
    }
}

/// Times `args.runs` private inferences or training iterations of `network`.
fn network_cell(args: &BenchArgs, network: &str) -> Result<()> {
    ensure!(
        args.batch >= 1,
        "--batch must be at least 1 (examples per inference or iteration)"
    );
    let pooling: zoo::Pooling = args.pooling.parse()?;
    let model = zoo::build(network, pooling)?;
    let input_shape = model.input_shape().to_vec();
    let steps = args.warmup + args.runs;
    let count = args
        .batch
        .checked_mul(steps)
        .context("--batch × (--runs + --warmup) is too large")?;
    let options = Options {
        batch: Some(args.batch as u64),
        frac_bits: args.number.frac_bits,
        truncation: args.number.truncation,
        comparison_bits: args.number.comparison_bits,
        ..Options::default()
    };
    let (job, options) = match args.mode {
        BenchMode::Inference => (JobKind::Infer, options),
        BenchMode::Training => (
            JobKind::Train,
            Options {
                epochs: Some(1),
                lr: Some(0.01),
                ..options
            },
        ),
    };
    // Training evaluates on its test set after the epoch: one example keeps that short.
    let data = DataSpec::Synthetic {
        limit: Some(count),
        test_limit: Some(1),
    };
    let inputs = in_process_inputs(job, options, args.run.keys(), model, data);
    let link = args.run.link();
    let bar = progress_bar(0, &format!("{network} {}", args.mode.name()));
    let result = run_on_device(
        args.run.backend,
        InProcess {
            inputs,
            progress: &bar,
            link,
            messages_on_device: !args.messages_via_host,
        },
    );
    bar.finish_and_clear();
    let (outcomes, device) = result?;
    let recorded = per_step(&outcomes)?;
    ensure!(
        recorded.len() == steps,
        "the job ran {} steps where {steps} were asked for",
        recorded.len(),
    );
    let timed = &recorded[args.warmup..];
    let seconds: Vec<f64> = timed.iter().map(|s| s.seconds).collect();
    let median_seconds = median(&seconds);
    let peak_rss = peak_rss_bytes().unwrap_or(0);
    // Device memory per party, from the ledger every backend charges (reset when the job
    // started: the whole run).
    let party_peaks = memory::party_peak_bytes();
    // The last step's traffic: a training run's first step differs (no momentum yet).
    let last = &timed[timed.len() - 1];
    let m = &outcomes[0].manifest;
    let row = json!({
        "network": network,
        "input_shape": input_shape,
        "mode": args.mode.name(),
        "batch": args.batch,
        "backend": device.backend,
        "device": device.device,
        "software_device": device.software,
        "link": link.map_or_else(|| "none".to_string(), |l| l.label()),
        "link_bits_per_second": link.map(|l| l.bits_per_second()),
        "link_rtt_seconds": link.map(|l| l.rtt().as_secs_f64()),
        "seconds": seconds,
        "median_seconds": median_seconds,
        "bytes_sent": last.bytes_sent,
        "rounds": last.rounds,
        "peak_rss_bytes": peak_rss,
        "peak_device_bytes": party_peaks,
        "device_counts": last.device.map(|c| counts_json(&c)),
        "device_counts_per_round": per_round_json(&last.device, last.rounds),
        "messages": if args.messages_via_host { "host" } else { "device" },
        "round_floor": counts_json(&counters::round_floor(!args.messages_via_host)),
        "frac_bits": m.fixed.frac_bits(),
        "comparison_bits": m.comparison_bits,
        "pooling": args.pooling,
    });
    if args.run.json {
        println!("{row}");
    } else {
        let mb = |b: u64| b as f64 / 1e6;
        println!(
            "{network} {} at batch {} on {device}{}: median {:.3} s over {} runs ({} warm-up); \
             sent P0 {:.2} MB, P1 {:.2} MB, P2 {:.2} MB; {} rounds; peak RSS {:.0} MB (three \
             parties in one process); peak device memory per party {:.1} / {:.1} / {:.1} MB",
            args.mode.name(),
            args.batch,
            link.map_or(String::new(), |l| format!(", link {l}")),
            median_seconds,
            args.runs,
            args.warmup,
            mb(last.bytes_sent[0]),
            mb(last.bytes_sent[1]),
            mb(last.bytes_sent[2]),
            last.rounds,
            mb(peak_rss),
            mb(party_peaks[0]),
            mb(party_peaks[1]),
            mb(party_peaks[2]),
        );
        let busiest = last.device.iter().max_by_key(|c| c.launches);
        if let Some(d) = busiest {
            let per_round = |x: u64| x as f64 / last.rounds.max(1) as f64;
            println!(
                "device work of the busiest party: {d}; per round {:.1} launches, {:.1} \
                 transfers, {:.1} syncs, {:.1} allocations (floor {})",
                per_round(d.launches),
                per_round(d.transfers()),
                per_round(d.syncs),
                per_round(d.allocations),
                counters::round_floor(!args.messages_via_host),
            );
        }
    }
    Ok(())
}

/// One step seen by all three parties.
struct Step {
    /// The slowest party's time.
    seconds: f64,
    /// Bytes each party sent.
    bytes_sent: [u64; 3],
    /// The step's rounds.
    rounds: u64,
    /// Each party's device work.
    device: [DeviceCounts; 3],
}

/// The counters as a JSON object (`launches`, `uploads`, `upload_bytes`, ...).
fn counts_json(counts: &DeviceCounts) -> serde_json::Value {
    counts
        .fields()
        .into_iter()
        .map(|(name, value)| (name.to_string(), json!(value)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Each counter of the busiest party per round of the step (`null` for a step without
/// rounds): what a round costs, to hold against [`counters::round_floor`].
fn per_round_json(parties: &[DeviceCounts; 3], rounds: u64) -> serde_json::Value {
    if rounds == 0 {
        return serde_json::Value::Null;
    }
    let fields = parties.map(|c| c.fields());
    (0..fields[0].len())
        .map(|i| {
            let most = fields.iter().map(|f| f[i].1).max().unwrap_or(0);
            (
                fields[0][i].0.to_string(),
                json!(most as f64 / rounds as f64),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The parties' step records, step by step.
fn per_step(outcomes: &[PartyOutcome; 3]) -> Result<Vec<Step>> {
    let n = outcomes[0].steps.len();
    ensure!(
        outcomes.iter().all(|o| o.steps.len() == n),
        "the parties recorded different numbers of steps"
    );
    Ok((0..n)
        .map(|i| {
            let records: [StepRecord; 3] = [0, 1, 2].map(|p| outcomes[p].steps[i]);
            let stats: [CommStats; 3] = records.map(|r| r.stats);
            Step {
                seconds: records.iter().map(|r| r.seconds).fold(0.0, f64::max),
                bytes_sent: stats.map(|s| s.total_bytes_sent()),
                rounds: CommStats::rounds_of(&stats),
                device: records.map(|r| r.device),
            }
        })
        .collect())
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// This process's peak resident memory (`VmHWM`, Linux), in bytes.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Times `args.runs` ring GEMMs of two n×n matrices on the chosen backend.
fn gemm(args: &BenchArgs, n: usize) -> Result<()> {
    ensure!(
        (1..=MAX_GEMM_N).contains(&n),
        "--gemm must be between 1 and {MAX_GEMM_N}"
    );
    let (seconds, device) = run_on_device(
        args.run.backend,
        GemmJob {
            n,
            runs: args.runs,
            warmup: args.warmup,
        },
    )?;
    let median_seconds = median(&seconds);
    let macs = (n as f64).powi(3) / median_seconds;
    if args.run.json {
        println!(
            "{}",
            json!({
                "backend": device.backend,
                "device": device.device,
                "software_device": device.software,
                "n": n,
                "median_seconds": median_seconds,
                "macs_per_second": macs,
            })
        );
    } else {
        println!(
            "ring GEMM {n}×{n}×{n} (u64 mod 2^64) on {device}: median {:.3} ms over {} runs, \
             {:.2} G MAC/s",
            median_seconds * 1e3,
            args.runs,
            macs / 1e9
        );
    }
    Ok(())
}

/// Times ring GEMMs on whichever backend runs it.
struct GemmJob {
    n: usize,
    runs: usize,
    warmup: usize,
}

impl Job for GemmJob {
    type Output = Vec<f64>;

    fn run<B: GpuBackend>(self, backend: B) -> Result<Vec<f64>> {
        let n = self.n;
        // Operands from a fixed xorshift sequence: what they hold does not change the time.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let a: Vec<u64> = (0..n * n).map(|_| next()).collect();
        let b: Vec<u64> = (0..n * n).map(|_| next()).collect();
        let a = backend.upload(&a, &[n, n])?;
        let b = backend.upload(&b, &[n, n])?;
        let mut seconds = Vec::with_capacity(self.runs);
        for i in 0..self.warmup + self.runs {
            backend.sync()?;
            let start = Instant::now();
            let product = backend.matmul(&a, &b)?;
            backend.sync()?;
            let elapsed = start.elapsed().as_secs_f64();
            drop(product);
            if i >= self.warmup {
                seconds.push(elapsed);
            }
        }
        Ok(seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}

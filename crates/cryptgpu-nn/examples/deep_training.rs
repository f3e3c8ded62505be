//! Private SGD on a deep network against plaintext SGD from the same weights and batches:
//! the loss of every step, both ways. This is how the README's deep-network figures were
//! measured (issue 13: fixed point you can trust at depth).
//!
//! ```text
//! cargo run --release -p cryptgpu-nn --example deep_training -- \
//!     --model alexnet-cifar10 --steps 20 --batch 8 --frac-bits 24 --truncation exact
//! ```
//!
//! Three parties run in this process (P0 owns the model, P1 the data); the inputs are
//! synthetic CIFAR-10-shaped examples (standard normal values, uniform labels). After each
//! private step the batch's logits are revealed, for this measurement only, and the
//! cross-entropy is computed from them in f64. The run fails (exit code 1) if a step's
//! private loss is more than `--tolerance` (relative, default 1 %) from the plaintext loss,
//! or is not finite; with `--keep-going` it reports every step anyway, which is how the
//! divergence of probabilistic truncation is measured.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use cryptgpu_cpu::CpuBackend;
use cryptgpu_nn::Tensor;
use cryptgpu_nn::data::synthetic;
use cryptgpu_nn::optim::{Sgd, SgdConfig};
use cryptgpu_nn::private::{PrivateSgd, SharedModel, share_input};
use cryptgpu_nn::suite::onehot;
use cryptgpu_nn::{plain, zoo};
use cryptgpu_ring::FixedPoint;
use cryptgpu_share::{KeySource, Party, Truncation};
use cryptgpu_transport::{PartyId, run_local_3pc};

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<bool> {
    let mut args = pico_args::Arguments::from_env();
    let name: String = args
        .opt_value_from_str("--model")?
        .unwrap_or_else(|| "alexnet-cifar10".into());
    let pooling: String = args
        .opt_value_from_str("--pooling")?
        .unwrap_or_else(|| "max".into());
    let steps: usize = args.opt_value_from_str("--steps")?.unwrap_or(20);
    let batch: usize = args.opt_value_from_str("--batch")?.unwrap_or(8);
    let frac_bits: u32 = args.opt_value_from_str("--frac-bits")?.unwrap_or(24);
    let truncation: Truncation = args
        .opt_value_from_fn("--truncation", str::parse::<Truncation>)?
        .unwrap_or_default();
    let lr: f64 = args.opt_value_from_str("--lr")?.unwrap_or(0.01);
    let momentum: f64 = args.opt_value_from_str("--momentum")?.unwrap_or(0.9);
    let tolerance: f64 = args.opt_value_from_str("--tolerance")?.unwrap_or(0.01);
    let seed: u64 = args.opt_value_from_str("--seed")?.unwrap_or(0);
    let keep_going = args.contains("--keep-going");
    let rest = args.finish();
    if !rest.is_empty() {
        bail!("unexpected arguments {rest:?}");
    }
    let fixed = FixedPoint::new(frac_bits).context("--frac-bits")?;
    let model = zoo::build_seeded(&name, pooling.parse()?, seed)?;
    let classes = model.num_classes();
    let shape: [usize; 3] = model
        .input_shape()
        .try_into()
        .context("the model takes [C, H, W] inputs")?;
    let data = synthetic(&shape, steps * batch, classes, seed ^ 0x5eed)?;
    let batches: Vec<(Tensor, Vec<usize>)> = (0..steps)
        .map(|s| data.batch(&(s * batch..(s + 1) * batch).collect::<Vec<_>>()))
        .collect::<cryptgpu_nn::Result<_>>()?;
    let config = SgdConfig::new(lr).with_momentum(momentum);

    // Plaintext SGD.
    let mut plain_model = model.clone();
    let mut sgd = Sgd::new(config);
    let plain_losses = batches
        .iter()
        .enumerate()
        .map(|(s, (x, y))| plain::train_step(&mut plain_model, &mut sgd, x, y, s as u64))
        .collect::<cryptgpu_nn::Result<Vec<f64>>>()?;

    // Private SGD: three parties in this process.
    println!(
        "{name} ({pooling} pooling), batch {batch}, lr {lr}, momentum {momentum}, f = \
         {frac_bits}, {truncation} truncation: {steps} SGD steps on synthetic inputs"
    );
    let start = Instant::now();
    let (model_owner, data_owner) = (PartyId::P0, PartyId::P1);
    let results = run_local_3pc(|t| -> Result<Vec<Vec<f64>>> {
        let mut p = Party::setup_with(CpuBackend::new(), t, fixed, KeySource::Os)?;
        p.set_truncation(truncation);
        let mut shared = SharedModel::share_for_training(&mut p, &model, model_owner)?;
        let mut opt = PrivateSgd::new(config);
        let mine = p.id() == data_owner;
        let mut logits = Vec::new();
        for (s, (x, labels)) in batches.iter().enumerate() {
            let hot = onehot(labels, classes);
            let sx = share_input(&mut p, data_owner, mine.then_some(x), x.shape())?;
            let sy = share_input(&mut p, data_owner, mine.then_some(&hot), hot.shape())?;
            let out = shared.train_step(&mut p, &mut opt, &sx, &sy, s as u64)?;
            logits.push(p.reveal_f64(&out)?);
        }
        Ok(logits)
    })?;
    let [first, _, _] = results;
    let private_logits = first?;
    let seconds = start.elapsed().as_secs_f64();
    let mut within = true;
    let mut diverged_at = None;
    println!("step  plaintext loss  private loss  relative difference");
    for (s, ((_, labels), (plain_loss, logits))) in batches
        .iter()
        .zip(plain_losses.iter().zip(&private_logits))
        .enumerate()
    {
        let logits = Tensor::new(&[batch, classes], logits.clone())?;
        let private_loss = if logits.data().iter().all(|v| v.is_finite()) {
            plain::softmax_cross_entropy(&logits, labels)?.0
        } else {
            f64::NAN
        };
        let relative = (private_loss - plain_loss).abs() / plain_loss.abs();
        let ok = relative <= tolerance;
        if !ok && diverged_at.is_none() {
            diverged_at = Some(s + 1);
        }
        within &= ok;
        println!(
            "{:>4}  {plain_loss:>14.6}  {private_loss:>12.6}  {:>18.3e}{}",
            s + 1,
            relative,
            if ok { "" } else { "  beyond tolerance" }
        );
        if !ok && !keep_going {
            break;
        }
    }
    println!(
        "{} private steps in {seconds:.1} s; {}",
        private_logits.len(),
        match diverged_at {
            None => format!(
                "every step's loss within {:.1} % of plaintext",
                100.0 * tolerance
            ),
            Some(s) => format!(
                "step {s} is the first beyond {:.1} % of plaintext",
                100.0 * tolerance
            ),
        }
    );
    Ok(within)
}

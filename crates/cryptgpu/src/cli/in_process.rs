//! `demo`, `infer` and `train`: the library's in-process jobs ([`cryptgpu::local`]), their
//! outputs written and their figures printed (a table, or one JSON object).

use anyhow::Result;
use cryptgpu::files::predictions::write_predictions;
use cryptgpu::jobs::DataSpec;
use cryptgpu::local::{self, Summary, number_format, progress_bar};
use cryptgpu::models::save_model;
use cryptgpu::nn::model::Model;

use super::args::{InferArgs, TrainArgs, infer_options, train_options};

/// Prints the figures every command reports.
fn print_summary(summary: &Summary) {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let percent = |a: Option<f64>| match a {
        Some(a) => format!("{:>7.2}%", 100.0 * a),
        None => "      - (no labels)".to_string(),
    };
    println!("  private accuracy    {}", percent(summary.accuracy));
    println!(
        "  plaintext accuracy  {}",
        percent(summary.plaintext_accuracy)
    );
    println!("  agreement           {:>7.2}%", 100.0 * summary.agreement);
    println!("  time                {:>7.1} s", summary.seconds);
    println!(
        "  sent per party      P0 {:.1} MiB, P1 {:.1} MiB, P2 {:.1} MiB",
        mib(summary.bytes[0]),
        mib(summary.bytes[1]),
        mib(summary.bytes[2])
    );
    println!("  rounds              {}", summary.rounds);
}

/// Private inference in one process, plaintext inference beside it, and the report.
pub(crate) fn infer_in_process(
    model: Model,
    data: DataSpec,
    args: &InferArgs,
    what: &str,
) -> Result<()> {
    let name = model.name().to_string();
    args.run.limit_device_memory();
    let bar = progress_bar(0, "private inference");
    let result = local::infer(model, data, infer_options(args), &args.run.local(&bar));
    bar.finish_and_clear();
    let result = result?;
    if let Some(path) = &args.out {
        write_predictions(path, &result.names, &result.revealed)?;
    }
    let (summary, m) = (&result.summary, &result.manifest);
    if args.run.json {
        println!("{}", summary.json(number_format(m)));
        return Ok(());
    }
    println!(
        "Private {name} inference on {} {what}: three parties in one process, backend {}, \
         fixed point with {} fractional bits and {} truncation, revealing the {}.",
        summary.samples,
        summary.backend,
        m.fixed.frac_bits(),
        m.truncation,
        m.reveal,
    );
    print_summary(summary);
    if let Some(path) = &args.out {
        println!("  predictions         {}", path.display());
    }
    Ok(())
}

/// Private training in one process, the same training in plaintext, and the report.
pub(crate) fn train_in_process(model: Model, data: DataSpec, args: &TrainArgs) -> Result<()> {
    args.run.limit_device_memory();
    let bar = progress_bar(0, "private training");
    let result = local::train(model, data, train_options(args), &args.run.local(&bar));
    bar.finish_and_clear();
    let result = result?;
    for (epoch, accuracy) in result.epoch_plaintext_accuracy.iter().enumerate() {
        eprintln!(
            "plaintext reference, epoch {}: test accuracy {:.2}%",
            epoch + 1,
            100.0 * accuracy
        );
    }
    if let Some(path) = &args.save {
        save_model(&result.trained, path)?;
    }
    let (summary, m) = (&result.summary, &result.manifest);
    if args.run.json {
        let mut extra = serde_json::Map::new();
        extra.insert(
            "epoch_accuracy".into(),
            serde_json::json!(result.epoch_accuracy),
        );
        extra.insert(
            "epoch_plaintext_accuracy".into(),
            serde_json::json!(result.epoch_plaintext_accuracy),
        );
        extra.insert(
            "train_samples".into(),
            serde_json::json!(result.train_samples),
        );
        extra.extend(number_format(m));
        println!("{}", summary.json(extra));
        return Ok(());
    }
    println!(
        "Private training of {} on {} examples, {} epoch(s), batch {}, backend {}, {} \
         fractional bits, {} truncation:",
        result.trained.name(),
        result.train_samples,
        m.epochs,
        m.batch,
        summary.backend,
        m.fixed.frac_bits(),
        m.truncation,
    );
    for (e, (a, p)) in result
        .epoch_accuracy
        .iter()
        .zip(&result.epoch_plaintext_accuracy)
        .enumerate()
    {
        println!(
            "  epoch {}: test accuracy private {:.2}%, plaintext {:.2}%",
            e + 1,
            100.0 * a,
            100.0 * p
        );
    }
    print_summary(summary);
    if let Some(path) = &args.save {
        println!("  saved               {}", path.display());
    }
    Ok(())
}

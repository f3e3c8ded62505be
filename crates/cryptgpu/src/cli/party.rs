//! `cryptgpu party`: one party of a job on this host, over mutual TLS with the other two
//! ([`cryptgpu::tls_party::TlsParty`], which runs the same party-local job function as the
//! in-process commands): what this party passes is checked against its role, then its
//! outputs written and its figures printed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use clap::Subcommand;
use cryptgpu::config::Deployment;
use cryptgpu::failure::Stage;
use cryptgpu::files::predictions::write_predictions;
use cryptgpu::jobs::{PartyInput, PartyOutcome};
use cryptgpu::local::{fraction_equal, progress_bar};
use cryptgpu::manifest::JobKind;
use cryptgpu::models::{load_model, save_model};
use cryptgpu::roles::Roles;
use cryptgpu::tls_party::{TlsParty, on_interrupt};
use cryptgpu::transport::PartyId;

use super::args::{
    DataArgs, InferArgs, ModelArgs, RunArgs, TrainArgs, data_spec, infer_options, train_options,
};

/// The job a party runs.
#[derive(Subcommand, Debug)]
pub(crate) enum PartyJob {
    /// Private inference.
    Infer(InferArgs),
    /// Private training.
    Train(TrainArgs),
}

/// Refuses an option that belongs to another party: each party passes only what it owns.
fn refuse(given: bool, option: &str, owner: &str, me: PartyId, roles: &Roles) -> Result<()> {
    if given {
        return Err(anyhow!(
            "{option} is the {owner}'s to pass, and this is {me}, the {} (see the deployment \
             file): each party passes only what it owns",
            roles.describe(me)
        ))
        .context(Stage::USAGE);
    }
    Ok(())
}

/// What this party owns and the job's options, from its command line; checked before any
/// connection is made.
struct Plan {
    input: PartyInput,
    run: RunArgs,
    out: Option<PathBuf>,
    save: Option<PathBuf>,
}

fn plan(job: PartyJob, me: PartyId, deployment: &Deployment) -> Result<Plan> {
    let roles = deployment.roles;
    let is_model_owner = me == roles.model_owner;
    let is_data_owner = me == roles.data_owner;
    let model_owner = format!("model owner ({})", roles.model_owner);
    let data_owner = format!("data owner ({})", roles.data_owner);
    let check_model_args = |m: &ModelArgs| -> Result<()> {
        if !is_model_owner {
            refuse(m.model.is_some(), "--model", &model_owner, me, &roles)?;
            refuse(m.pooling.is_some(), "--pooling", &model_owner, me, &roles)?;
            refuse(m.weights.is_some(), "--weights", &model_owner, me, &roles)?;
        }
        Ok(())
    };
    let check_data_args = |d: &DataArgs| -> Result<()> {
        if !is_data_owner {
            refuse(d.data.is_some(), "--data", &data_owner, me, &roles)?;
            refuse(d.dataset.is_some(), "--dataset", &data_owner, me, &roles)?;
            refuse(d.limit.is_some(), "--limit", &data_owner, me, &roles)?;
            refuse(
                d.mean.is_some() || d.std.is_some(),
                "--mean/--std",
                &data_owner,
                me,
                &roles,
            )?;
        }
        Ok(())
    };
    let (job, options, model, data, run, out, save) = match job {
        PartyJob::Infer(args) => {
            check_model_args(&args.model)?;
            check_data_args(&args.data)?;
            if !is_data_owner {
                refuse(args.input.is_some(), "--input", &data_owner, me, &roles)?;
                refuse(args.labels.is_some(), "--labels", &data_owner, me, &roles)?;
                refuse(args.out.is_some(), "--out", &data_owner, me, &roles)?;
            }
            // The output first: a result that could not be written is work lost.
            args.check_out()?;
            let model = is_model_owner
                .then(|| load_model(&args.model.source()).context(Stage::MODEL))
                .transpose()?;
            let data = is_data_owner
                .then(|| data_spec(&args.data, Some(&args), JobKind::Infer).context(Stage::DATA))
                .transpose()?;
            let options = infer_options(&args);
            let InferArgs { out, run, .. } = args;
            (JobKind::Infer, options, model, data, run, out, None)
        }
        PartyJob::Train(args) => {
            check_model_args(&args.model)?;
            check_data_args(&args.data)?;
            if !is_model_owner {
                refuse(args.save.is_some(), "--save", &model_owner, me, &roles)?;
                refuse(
                    !args.train_only.is_empty(),
                    "--train-only",
                    &model_owner,
                    me,
                    &roles,
                )?;
            }
            args.check_save()?;
            let model = is_model_owner
                .then(|| args.initial_model().context(Stage::MODEL))
                .transpose()?;
            let data = is_data_owner
                .then(|| data_spec(&args.data, None, JobKind::Train).context(Stage::DATA))
                .transpose()?;
            let options = train_options(&args);
            let TrainArgs { save, run, .. } = args;
            (JobKind::Train, options, model, data, run, None, save)
        }
    };
    let input = PartyInput {
        model,
        data,
        ..PartyInput::for_deployment(deployment, job, options).with_keys(run.keys())
    };
    Ok(Plan {
        input,
        run,
        out,
        save,
    })
}

/// `cryptgpu party --config FILE --id N infer|train ...`.
pub(crate) fn run(config: &Path, id: usize, job: PartyJob) -> Result<()> {
    let me = PartyId::new(id).map_err(|_| anyhow!("--id {id}: a party is 0, 1 or 2"))?;
    on_interrupt(Some(me));
    let party = TlsParty::bind(Deployment::load(config)?, me)?;
    let roles = party.deployment().roles;
    let role = roles.describe(me);
    let Plan {
        input,
        run,
        out,
        save,
    } = match plan(job, me, party.deployment()) {
        Ok(plan) => plan,
        Err(e) => return Err(party.refuse(e)),
    };
    run.limit_device_memory();
    let bar = (me == roles.data_owner).then(|| progress_bar(0, "private job"));
    let link = run.link.map(|choice| choice.0);
    let result = party.run_over(run.backend, input, link, bar.as_ref());
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let (outcome, backend) = result?;
    report(
        me,
        role,
        &outcome,
        &backend,
        out.as_deref(),
        save.as_deref(),
        run.json,
    )
}

/// Writes this party's outputs and prints its summary.
fn report(
    me: PartyId,
    role: &str,
    outcome: &PartyOutcome,
    backend: &str,
    out: Option<&Path>,
    save: Option<&Path>,
    json: bool,
) -> Result<()> {
    let m = &outcome.manifest;
    let mut accuracy = None;
    let mut samples = m.count;
    if let (Some(revealed), Some(data)) = (&outcome.revealed, &outcome.data) {
        let predictions = revealed.predicted_classes();
        if data.labelled {
            accuracy = Some(fraction_equal(&predictions, &data.test.labels));
        }
        match out {
            Some(path) => write_predictions(path, &data.names, revealed)?,
            None if !json => {
                let shown: Vec<String> =
                    predictions.iter().take(20).map(|c| c.to_string()).collect();
                println!(
                    "{me}: predicted classes{}: {}{}",
                    if predictions.len() > 20 {
                        " (first 20; --out FILE writes all)"
                    } else {
                        ""
                    },
                    shown.join(" "),
                    if predictions.len() > 20 { " ..." } else { "" }
                );
            }
            None => {}
        }
    }
    if let (Some(last), Some(data)) = (outcome.epoch_predictions.last(), &outcome.data) {
        accuracy = Some(fraction_equal(last, &data.test.labels));
        samples = data.test.len();
    }
    if let (Some(model), Some(path)) = (&outcome.trained, save) {
        save_model(model, path)?;
    }
    let s = outcome.stats;
    if json {
        let value = serde_json::json!({
            "party": me.index(),
            "role": role,
            "job": m.job.name(),
            "samples": samples,
            "accuracy": accuracy,
            "seconds": outcome.seconds,
            "bytes_sent": s.total_bytes_sent(),
            "bytes_received": s.total_bytes_received(),
            "rounds": s.rounds,
            "backend": backend,
            "out": out.map(|p| p.display().to_string()),
            "saved": save.filter(|_| outcome.trained.is_some()).map(|p| p.display().to_string()),
        });
        println!("{value}");
        return Ok(());
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let what = match m.job {
        JobKind::Infer => format!(
            "private inference of {} on {} examples",
            m.structure.name(),
            m.count
        ),
        JobKind::Train => format!(
            "private training of {} on {} examples, {} epoch(s)",
            m.structure.name(),
            m.count,
            m.epochs
        ),
    };
    println!(
        "{me} ({role}): {what} done in {:.1} s on {backend}",
        outcome.seconds
    );
    if let Some(a) = accuracy {
        println!(
            "  private accuracy    {:>7.2}% ({samples} labelled examples)",
            100.0 * a
        );
    }
    println!(
        "  this party sent     {:.1} MiB, received {:.1} MiB; {} rounds",
        mib(s.total_bytes_sent()),
        mib(s.total_bytes_received()),
        s.rounds
    );
    if let Some(path) = out {
        println!("  predictions         {}", path.display());
    }
    if let (Some(_), Some(path)) = (&outcome.trained, save) {
        println!("  trained model       {}", path.display());
    }
    Ok(())
}

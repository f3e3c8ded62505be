//! `cryptgpu party`: one party of a job on this host, over mutual TLS with the other two,
//! running the same party-local job function as the in-process commands
//! ([`crate::jobs::run_party`]); and the Ctrl-C handler every command installs.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result, anyhow};
use cryptgpu_backend::GpuBackend;
use cryptgpu_transport::{
    AbortHandle, EmulatedLink, FailureKind, LinkProfile, PartyId, TcpTransport,
};
use indicatif::ProgressBar;

use crate::backend::{Job, run_on};
use crate::config::Deployment;
use crate::failure::{Stage, classify};
use crate::files::predictions::write_predictions;
use crate::jobs::{PartyInput, PartyOutcome, Roles, run_party};
use crate::manifest::JobKind;
use crate::{
    InferArgs, PartyJob, TrainArgs, data_spec, infer_options, initial_model, load_model, progress,
    save_model, train_options,
};

/// The transport to stop when the process is interrupted.
static ABORT: Mutex<Option<AbortHandle>> = Mutex::new(None);

/// Installs the handler of Ctrl-C and termination signals: it tells the other parties (when
/// `party` runs over TLS and is connected) that this one stops and why, removes any partial
/// output file, and exits with status 130.
pub(crate) fn on_interrupt(party: Option<PartyId>) {
    let installed = ctrlc::set_handler(move || {
        let who = party.map_or_else(|| "cryptgpu".to_string(), |p| p.to_string());
        let reason = format!("{who} was interrupted (Ctrl-C or a termination signal)");
        let handle = ABORT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        if let Some(handle) = handle {
            handle.abort(FailureKind::Interrupted);
        }
        crate::files::atomic::remove_partial_files();
        eprintln!("error: {reason}");
        std::process::exit(130);
    });
    if let Err(e) = installed {
        eprintln!("note: Ctrl-C will not be handled cleanly: {e}");
    }
}

/// Connects this party to the other two over TLS once its device is ready, then runs its
/// function of the job. The transport is left in `transport`, so that a failure can be
/// told to the others.
struct OneParty<'a> {
    connect: &'a dyn Fn() -> Result<TcpTransport>,
    transport: &'a mut Option<TcpTransport>,
    input: PartyInput,
    progress: Option<&'a ProgressBar>,
    /// The emulated link this party's messages go over, if any.
    link: Option<LinkProfile>,
}

impl Job for OneParty<'_> {
    type Output = PartyOutcome;

    fn run<B: GpuBackend>(self, backend: B) -> Result<PartyOutcome> {
        let transport = self.transport.insert((self.connect)()?);
        *ABORT.lock().unwrap_or_else(|p| p.into_inner()) = Some(transport.abort_handle());
        match self.link {
            Some(profile) => run_party(
                backend,
                EmulatedLink::new(&mut *transport, profile),
                self.input,
                self.progress,
            ),
            None => run_party(backend, &mut *transport, self.input, self.progress),
        }
    }
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
    run: crate::RunArgs,
    out: Option<std::path::PathBuf>,
    save: Option<std::path::PathBuf>,
}

fn plan(job: PartyJob, me: PartyId, deployment: &Deployment) -> Result<Plan> {
    let roles = deployment.roles;
    let is_model_owner = me == roles.model_owner;
    let is_data_owner = me == roles.data_owner;
    let model_owner = format!("model owner ({})", roles.model_owner);
    let data_owner = format!("data owner ({})", roles.data_owner);
    let check_model_args = |m: &crate::ModelArgs, weights: bool| -> Result<()> {
        if !is_model_owner {
            refuse(m.model.is_some(), "--model", &model_owner, me, &roles)?;
            refuse(m.pooling.is_some(), "--pooling", &model_owner, me, &roles)?;
            refuse(weights, "--weights", &model_owner, me, &roles)?;
        }
        Ok(())
    };
    let check_data_args = |d: &crate::DataArgs| -> Result<()> {
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
    let identities = Some(deployment.identities.clone());
    Ok(match job {
        PartyJob::Infer(args) => {
            check_model_args(&args.model, args.weights.is_some())?;
            check_data_args(&args.data)?;
            if !is_data_owner {
                refuse(args.input.is_some(), "--input", &data_owner, me, &roles)?;
                refuse(args.labels.is_some(), "--labels", &data_owner, me, &roles)?;
                refuse(args.out.is_some(), "--out", &data_owner, me, &roles)?;
            }
            // The output first: a result that could not be written is work lost.
            args.check_out()?;
            let model = is_model_owner
                .then(|| load_model(&args.model, args.weights.as_deref()).context(Stage::MODEL))
                .transpose()?;
            let data = is_data_owner
                .then(|| data_spec(&args.data, Some(&args), JobKind::Infer).context(Stage::DATA))
                .transpose()?;
            let InferArgs { out, run, .. } = &args;
            Plan {
                input: PartyInput {
                    roles,
                    identities,
                    job: JobKind::Infer,
                    options: infer_options(&args),
                    keys: run.keys(),
                    model,
                    data,
                },
                run: run.clone(),
                out: out.clone(),
                save: None,
            }
        }
        PartyJob::Train(args) => {
            check_model_args(&args.model, false)?;
            check_data_args(&args.data)?;
            if !is_model_owner {
                refuse(args.save.is_some(), "--save", &model_owner, me, &roles)?;
            }
            args.check_save()?;
            let model = is_model_owner
                .then(|| initial_model(&args).context(Stage::MODEL))
                .transpose()?;
            let data = is_data_owner
                .then(|| data_spec(&args.data, None, JobKind::Train).context(Stage::DATA))
                .transpose()?;
            let TrainArgs { save, run, .. } = &args;
            Plan {
                input: PartyInput {
                    roles,
                    identities,
                    job: JobKind::Train,
                    options: train_options(&args),
                    keys: run.keys(),
                    model,
                    data,
                },
                run: run.clone(),
                out: None,
                save: save.clone(),
            }
        }
    })
}

/// `cryptgpu party --config FILE --id N infer|train ...`.
pub(crate) fn run(config: &Path, id: usize, job: PartyJob) -> Result<()> {
    let me = PartyId::new(id).map_err(|_| anyhow!("--id {id}: a party is 0, 1 or 2"))?;
    on_interrupt(Some(me));
    let deployment = Deployment::load(config)?;
    let roles = deployment.roles;
    let role = roles.describe(me);
    let tls = deployment.tls_config(me)?;
    let listen = &deployment.listen[me.index()];
    let listener =
        TcpListener::bind(listen).with_context(|| format!("{me} cannot listen on {listen}"))?;
    let link = deployment.network.link;
    let Plan {
        input,
        run,
        out,
        save,
    } = match plan(job, me, &deployment) {
        Ok(plan) => plan,
        Err(e) => return Err(tell_the_others(me, listener, &deployment, &tls, e)),
    };
    eprintln!(
        "{me} ({role}, {}): listening on {listen}; connecting to {} at {} and waiting for {} \
         (for up to {:?})",
        deployment.identities[me.index()],
        me.next(),
        deployment.network.addresses[me.next().index()],
        me.prev(),
        link.connect_timeout
    );
    let emulated = match run.link {
        Some(choice) => choice.0,
        None => deployment.emulated_link,
    };
    let listener = std::cell::Cell::new(Some(listener));
    let connect = || -> Result<TcpTransport> {
        let listener = listener
            .take()
            .context("the links to the other parties were already set up")?;
        let transport =
            TcpTransport::connect_with_listener(me, listener, &deployment.network, &tls)
                .context("setting up the links to the other parties")?;
        eprintln!(
            "{me}: connected to {} and {} over mutual TLS",
            me.next(),
            me.prev()
        );
        if let Some(profile) = emulated {
            eprintln!("{me}: sending over an emulated link: {profile}");
        }
        Ok(transport)
    };
    let mut transport = None;
    let bar = (me == roles.data_owner).then(|| progress(0, "private job"));
    let result = run_on(
        run.backend,
        OneParty {
            connect: &connect,
            transport: &mut transport,
            input,
            progress: bar.as_ref(),
            link: emulated,
        },
    );
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let (outcome, backend) = match result {
        Ok(done) => done,
        Err(e) => {
            // Failures of the links are passed on by the transport; this tells the others of
            // a failure of this party's own (a bad file, a refused manifest).
            // Only the category crosses the link: the text names this party's files and
            // values, and stays on its own terminal.
            if let Some(transport) = &transport {
                transport.abort(classify(&e));
            }
            return Err(e);
        }
    };
    // The protocol is over: say goodbye before the outputs are written.
    drop(transport);
    *ABORT.lock().unwrap_or_else(|p| p.into_inner()) = None;
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

/// This party cannot take part (a file it owns is missing or malformed, an output it
/// cannot write): says so at once, then connects to the other two, as the job would, only
/// to tell them the category of the failure, so that they stop now with a clear error
/// instead of waiting for the connect timeout. Returns the error to end with.
fn tell_the_others(
    me: PartyId,
    listener: TcpListener,
    deployment: &Deployment,
    tls: &cryptgpu_transport::TlsConfig,
    e: anyhow::Error,
) -> anyhow::Error {
    let kind = classify(&e);
    eprintln!("error: {e:#}");
    eprintln!(
        "{me}: telling {} and {} that {me} cannot take part ({kind}), waiting for them for up \
         to {:?}",
        me.next(),
        me.prev(),
        deployment.network.link.connect_timeout
    );
    match TcpTransport::connect_with_listener(me, listener, &deployment.network, tls) {
        Ok(transport) => {
            transport.abort(kind);
            drop(transport);
            anyhow!("{me} did not start ({kind}; the error is above); the others were told")
        }
        Err(told) => anyhow!(
            "{me} did not start ({kind}; the error is above), and could not tell the others: \
             {told}"
        ),
    }
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
            accuracy = Some(crate::fraction_equal(&predictions, &data.test.labels));
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
        accuracy = Some(crate::fraction_equal(last, &data.test.labels));
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

//! `cryptgpu`: private inference and training of neural networks by three parties holding
//! 2-out-of-3 replicated secret shares, on the CPU, CUDA or a wgpu GPU.
//!
//! `demo`, `infer` and `train` run the three parties (model owner, data owner, helper) as
//! threads of one process; `certs` makes a deployment's certificates and `parties.toml`,
//! and `party` runs one party of the same jobs on its own host, over mutual TLS. `serve`
//! runs one server of a service that stays up, `query` is a client of one, and `loadtest`
//! times one.
//!
//! A thin layer over the `cryptgpu` library: this file holds the commands, [`cli`] their
//! options and printing; every job is the library's.

#![forbid(unsafe_code)]

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use cryptgpu::config::{CertsRequest, ServiceRequest, make_deployment_with_service};
use cryptgpu::device::Device;
use cryptgpu::files::inputs::Layout;
use cryptgpu::jobs::{DataSpec, DatasetChoice};
use cryptgpu::manifest::JobKind;
use cryptgpu::models::load_model;
use cryptgpu::share::Truncation;
use cryptgpu::tls_party::on_interrupt;

use cli::args::{
    DataArgs, InferArgs, ModelArgs, NumberArgs, RunArgs, TrainArgs, data_spec, parse_truncation,
};
use cli::in_process::{infer_in_process, train_in_process};

/// Private machine learning on secret shares by three parties.
#[derive(Parser, Debug)]
#[command(name = "cryptgpu", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Classify bundled MNIST test digits privately with the bundled LeNet (three parties in
    /// one process) and compare with plaintext inference.
    Demo {
        /// Device: auto (CUDA, else a hardware wgpu GPU, else CPU), cpu, cuda or wgpu.
        #[arg(long, value_enum, default_value = "auto")]
        backend: Device,
        /// Classify only the first N bundled digits.
        #[arg(long)]
        limit: Option<usize>,
        /// Truncation: exact (the default) or probabilistic.
        #[arg(long, value_parser = parse_truncation)]
        truncation: Option<Truncation>,
        /// Print one JSON object at the end instead of the table.
        #[arg(long)]
        json: bool,
        /// The most device memory each party may hold, e.g. `40GB` or `512MiB` (default:
        /// no limit).
        #[arg(long, value_name = "SIZE", value_parser = cli::args::parse_device_memory)]
        device_memory: Option<u64>,
    },
    /// Private inference of a model over the data owner's examples, three parties in one
    /// process.
    Infer(InferArgs),
    /// Private training with SGD, evaluated privately after each epoch, three parties in one
    /// process, compared with the same training in plaintext.
    Train(TrainArgs),
    /// Make a deployment: a CA, a certificate and key per party, and `parties.toml`.
    Certs {
        /// The directory to write (created if needed).
        #[arg(long)]
        out: PathBuf,
        /// Where P0, P1 and P2 are reached: three host:port, comma-separated.
        #[arg(long, value_delimiter = ',', num_args = 1.., required = true)]
        addresses: Vec<String>,
        /// The parties' names (DNS names in their certificates); default party0,party1,party2.
        #[arg(long, value_delimiter = ',', num_args = 1..)]
        names: Option<Vec<String>>,
        /// Replace an existing deployment in DIR (its keys are lost).
        #[arg(long)]
        force: bool,
        /// Also make certificates and keys for N clients of the inference service (client0 to
        /// client{N-1}: they may query, never act as a party), and a [serve] table.
        #[arg(long, value_name = "N", default_value_t = 0)]
        clients: usize,
        /// Where clients reach the service on P0, P1 and P2: three host:port, comma-separated
        /// (default each party's host with its port + 10). Writes a [serve] table.
        #[arg(long, value_delimiter = ',', num_args = 1..)]
        serve_addresses: Option<Vec<String>>,
    },
    /// Time one cell of the bench matrix: a zoo network's private inference or training
    /// iteration (three parties in one process, random inputs, optionally over an emulated
    /// link), or one backend's ring GEMM. `cargo xtask bench` runs the whole matrix.
    Bench(cli::bench::BenchArgs),
    /// Run one party of a job on this host, over mutual TLS with the other two. Each party
    /// passes only what it owns: the model owner --model/--weights, the data owner
    /// --data/--dataset or --input (and --out), the helper nothing but the config.
    Party {
        /// The deployment file (`cryptgpu certs` writes one).
        #[arg(long)]
        config: PathBuf,
        /// This party: 0, 1 or 2.
        #[arg(long)]
        id: usize,
        #[command(subcommand)]
        job: cli::party::PartyJob,
    },
    /// Run one server of a private inference service until stopped: the three servers of a
    /// deployment (its `[serve]` table) share the model owner's model once, then answer
    /// clients' queries in batches.
    Serve(cli::serve::ServeArgs),
    /// Ask a service for private answers on this client's inputs: each server gets two of
    /// three random shares of them, and only this client can add up the answer.
    Query(cli::serve::QueryArgs),
    /// Upload a model to a service as its owner's client (`[serve] model_client`): each
    /// server gets two of three random shares of every weight, and none sees the model.
    Upload(cli::serve::UploadArgs),
    /// Time a service: three servers in this process and 1, 8, 64, ... concurrent clients
    /// (p50/p99 latency, queries per second, bytes per query), beside the one-shot job.
    Loadtest(cli::serve::LoadArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo {
            backend,
            limit,
            truncation,
            json,
            device_memory,
        } => {
            on_interrupt(None);
            let mut data = cryptgpu::demo::mnist_sample()?;
            if let Some(n) = limit {
                data = data.truncate(n);
            }
            let args = InferArgs {
                model: ModelArgs::default(),
                data: DataArgs::default(),
                input: None,
                layout: Layout::Nchw,
                labels: None,
                out: None,
                reveal: None,
                batch: Some(50),
                number: NumberArgs {
                    frac_bits: Some(16),
                    truncation,
                    comparison_bits: None,
                },
                run: RunArgs {
                    backend,
                    json,
                    insecure_test_keys: None,
                    link: None,
                    device_memory,
                },
            };
            infer_in_process(
                cryptgpu::demo::lenet()?,
                DataSpec::Loaded(data),
                &args,
                "bundled MNIST test digits",
            )
        }
        Command::Infer(args) => {
            on_interrupt(None);
            args.check_out()?;
            let model = load_model(&args.model.source())?;
            let data = data_spec(&args.data, Some(&args), JobKind::Infer)?;
            let what = match (&args.input, args.data.dataset) {
                (Some(path), _) => format!("inputs from {}", path.display()),
                (None, d) => format!("{:?} examples", d.unwrap_or(DatasetChoice::Mnist)),
            };
            infer_in_process(model, data, &args, &what)
        }
        Command::Train(args) => {
            on_interrupt(None);
            args.check_save()?;
            let model = args.initial_model()?;
            let data = data_spec(&args.data, None, JobKind::Train)?;
            train_in_process(model, data, &args)
        }
        Command::Certs {
            out,
            addresses,
            names,
            force,
            clients,
            serve_addresses,
        } => {
            let service = ServiceRequest {
                clients,
                serve_addresses: serve_addresses.as_deref(),
            };
            let path = make_deployment_with_service(
                &CertsRequest {
                    out: &out,
                    addresses: &addresses,
                    names: names.as_deref(),
                    force,
                },
                &service,
            )?;
            let for_clients = match clients {
                0 => String::new(),
                1 => " and for one client (client0)".to_string(),
                n => format!(" and per client (client0 to client{})", n - 1),
            };
            println!(
                "Wrote a deployment to {}: ca.pem, a certificate and a private key (mode 0600) \
                 per party{for_clients}, and {}.",
                out.display(),
                path.display()
            );
            println!(
                "Give every host parties.toml, ca.pem and its own certificate and key (never \
                 another party's key), then run on each: cryptgpu party --config parties.toml \
                 --id N infer|train ..."
            );
            if service.serves() {
                let who = if clients > 0 {
                    "Give each client parties.toml, ca.pem and its own certificate and key \
                     (clientK.pem and clientK.key.pem; no other key)"
                } else {
                    "A client needs parties.toml, ca.pem and a certificate from the client CA \
                     (none made: see --clients, or set client_ca in [serve])"
                };
                println!(
                    "The [serve] table of parties.toml sets up the inference service: each \
                     party's host runs `cryptgpu serve`. {who}; a client runs `cryptgpu query`."
                );
            }
            Ok(())
        }
        Command::Bench(args) => {
            on_interrupt(None);
            cli::bench::run(&args)
        }
        Command::Party { config, id, job } => cli::party::run(&config, id, job),
        Command::Serve(args) => cli::serve::serve(args),
        Command::Query(args) => cli::serve::query(args),
        Command::Upload(args) => cli::serve::upload(args),
        Command::Loadtest(args) => {
            on_interrupt(None);
            cli::serve::loadtest(args)
        }
    }
}

//! One party of three over mutual TLS, as each organisation runs it on its own host:
//! `tls_party CONFIG ID` loads the deployment (`cryptgpu certs` writes one), brings what
//! this party owns (P0 the model, P1 the digits, P2 nothing) and runs its side of a private
//! inference. Without arguments it makes a throwaway deployment on loopback and runs the
//! three parties as threads of this process, each exactly as on its own host.

use std::net::TcpListener;
use std::path::Path;

use anyhow::{Context, Result};
use cryptgpu::config::{CertsRequest, Deployment, make_deployment};
use cryptgpu::device::Device;
use cryptgpu::jobs::{DataSpec, PartyInput};
use cryptgpu::manifest::{JobKind, Options};
use cryptgpu::tls_party::TlsParty;
use cryptgpu::transport::PartyId;

/// This party's side of the job; the data owner returns the classes it learns.
fn run_party(config: &Path, me: PartyId) -> Result<Option<Vec<usize>>> {
    let party = TlsParty::bind(Deployment::load(config)?, me)?;
    let options = Options {
        batch: Some(4),
        ..Options::default()
    };
    let mut input = PartyInput::for_deployment(party.deployment(), JobKind::Infer, options);
    let roles = party.deployment().roles;
    if me == roles.model_owner {
        input = input.with_model(cryptgpu::demo::lenet()?);
    }
    if me == roles.data_owner {
        let digits = cryptgpu::demo::mnist_sample()?.truncate(4);
        input = input.with_data(DataSpec::Loaded(digits));
    }
    let (outcome, device) = party.run(Device::Cpu, input, None)?;
    println!(
        "{me} on {device}: sent {} bytes in {} rounds",
        outcome.stats.total_bytes_sent(),
        outcome.stats.rounds
    );
    Ok(outcome.revealed.map(|r| r.predicted_classes()))
}

/// Three free loopback ports.
fn free_addresses() -> Result<Vec<String>> {
    let listeners = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.to_string()))
        .collect()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [config, id] = &args[..] {
        let me = PartyId::new(id.parse().context("ID is 0, 1 or 2")?)?;
        if let Some(classes) = run_party(Path::new(config), me)? {
            println!("classes: {classes:?}");
        }
        return Ok(());
    }
    let dir = std::env::temp_dir().join(format!("cryptgpu-tls-party-{}", std::process::id()));
    let config = make_deployment(&CertsRequest {
        out: &dir,
        addresses: &free_addresses()?,
        names: None,
        force: true,
    })?;
    let results = std::thread::scope(|s| {
        let parties = PartyId::ALL.map(|me| {
            let config = &config;
            s.spawn(move || run_party(config, me))
        });
        parties.map(|p| p.join().expect("a party panicked"))
    });
    std::fs::remove_dir_all(&dir)?;
    let [p0, p1, p2] = results;
    let classes = p1?.context("the data owner learns the classes")?;
    anyhow::ensure!(
        p0?.is_none() && p2?.is_none(),
        "only the data owner learns them"
    );
    println!("the data owner P1 learns the classes {classes:?}; P0 and P2 learn nothing");
    assert_eq!(classes.len(), 4);
    Ok(())
}

#[test]
fn the_example_runs() {
    main().unwrap();
}

//! One party of three on this host, over mutual TLS with the other two (as `parties.toml`
//! describes them), running the same party-local job function as the in-process jobs
//! ([`crate::jobs::run_party`]); and the handler of Ctrl-C that tells the others.
//!
//! ```no_run
//! use cryptgpu::config::Deployment;
//! use cryptgpu::device::Device;
//! use cryptgpu::jobs::PartyInput;
//! use cryptgpu::manifest::{JobKind, Options};
//! use cryptgpu::tls_party::TlsParty;
//! use cryptgpu::transport::PartyId;
//!
//! # fn main() -> anyhow::Result<()> {
//! // The helper of a deployment: it owns neither the model nor the data.
//! let deployment = Deployment::load("parties.toml".as_ref())?;
//! let party = TlsParty::bind(deployment, PartyId::P2)?;
//! let input = PartyInput::for_deployment(party.deployment(), JobKind::Infer, Options::default());
//! let (outcome, device) = party.run(Device::Auto, input, None)?;
//! println!("done on {device}: sent {} bytes", outcome.stats.total_bytes_sent());
//! # Ok(())
//! # }
//! ```

use std::cell::Cell;
use std::net::TcpListener;
use std::sync::Mutex;

use anyhow::{Context, Result, anyhow};
use cryptgpu_backend::GpuBackend;
use cryptgpu_transport::{
    AbortHandle, EmulatedLink, FailureKind, LinkProfile, PartyId, TcpTransport, TlsConfig,
};
use indicatif::ProgressBar;

use crate::config::Deployment;
use crate::device::{Device, Job, run_on};
use crate::failure::classify;
use crate::jobs::{PartyInput, PartyOutcome, run_party};

/// The transport to stop when the process is interrupted.
static ABORT: Mutex<Option<AbortHandle>> = Mutex::new(None);

/// Installs the handler of Ctrl-C and termination signals: it tells the other parties (when
/// a [`TlsParty`] of this process is connected) that this one stops and why, removes any
/// partial output file, and exits with status 130.
pub fn on_interrupt(party: Option<PartyId>) {
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

/// Sets (or clears) the transport that [`on_interrupt`]'s handler stops.
fn set_abort_handle(handle: Option<AbortHandle>) {
    *ABORT.lock().unwrap_or_else(|p| p.into_inner()) = handle;
}

/// This party of a deployment, listening for its neighbour: [`TlsParty::run`] connects
/// and runs a job, [`TlsParty::refuse`] tells the others that it cannot take part. Both
/// print what they wait for on stderr.
#[derive(Debug)]
pub struct TlsParty {
    me: PartyId,
    deployment: Deployment,
    tls: TlsConfig,
    listener: TcpListener,
}

impl TlsParty {
    /// Loads this party's credentials and listens on its address.
    pub fn bind(deployment: Deployment, me: PartyId) -> Result<TlsParty> {
        let tls = deployment.tls_config(me)?;
        let listen = &deployment.listen[me.index()];
        let listener =
            TcpListener::bind(listen).with_context(|| format!("{me} cannot listen on {listen}"))?;
        Ok(TlsParty {
            me,
            deployment,
            tls,
            listener,
        })
    }

    /// This party.
    pub fn id(&self) -> PartyId {
        self.me
    }

    /// The deployment.
    pub fn deployment(&self) -> &Deployment {
        &self.deployment
    }

    /// Connects to the other two once the device is ready and runs this party's function of
    /// the job (over an emulated `link` if given, else the deployment's, if any); returns its
    /// outcome and the device it ran on. On a failure of this party's own (a bad file, a
    /// refused manifest) the others are told its category only: the text names this
    /// party's files and values and stays here.
    pub fn run(
        self,
        device: Device,
        input: PartyInput,
        progress: Option<&ProgressBar>,
    ) -> Result<(PartyOutcome, String)> {
        self.run_over(device, input, None, progress)
    }

    /// [`TlsParty::run`] with every message delivered as late as over `link`: `Some(None)`
    /// for no emulated link, `None` for the deployment's `[link] emulate`, if any.
    pub fn run_over(
        self,
        device: Device,
        input: PartyInput,
        link: Option<Option<LinkProfile>>,
        progress: Option<&ProgressBar>,
    ) -> Result<(PartyOutcome, String)> {
        let TlsParty {
            me,
            deployment,
            tls,
            listener,
        } = self;
        let network = &deployment.network;
        eprintln!(
            "{me} ({}, {}): listening on {}; connecting to {} at {} and waiting for {} (for \
             up to {:?})",
            deployment.roles.describe(me),
            deployment.identities[me.index()],
            deployment.listen[me.index()],
            me.next(),
            network.addresses[me.next().index()],
            me.prev(),
            network.link.connect_timeout
        );
        let emulated = link.unwrap_or(deployment.emulated_link);
        let listener = Cell::new(Some(listener));
        let connect = || -> Result<TcpTransport> {
            let listener = listener
                .take()
                .context("the links to the other parties were already set up")?;
            let transport = TcpTransport::connect_with_listener(me, listener, network, &tls)
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
        let result = run_on(
            device,
            OneParty {
                connect: &connect,
                transport: &mut transport,
                input,
                progress,
                link: emulated,
            },
        );
        if let (Err(e), Some(transport)) = (&result, &transport) {
            transport.abort(classify(e));
        }
        // The protocol is over: say goodbye before the outputs are written.
        drop(transport);
        set_abort_handle(None);
        result
    }

    /// This party cannot take part (a file it owns is missing or malformed, an output it
    /// cannot write): prints `error` at once, then connects to the other two, as the job
    /// would, only to tell them the category of the failure, so that they stop now with a
    /// clear error instead of waiting for the connect timeout. Returns the error to end
    /// with.
    pub fn refuse(self, error: anyhow::Error) -> anyhow::Error {
        let me = self.me;
        let kind = classify(&error);
        eprintln!("error: {error:#}");
        eprintln!(
            "{me}: telling {} and {} that {me} cannot take part ({kind}), waiting for them for \
             up to {:?}",
            me.next(),
            me.prev(),
            self.deployment.network.link.connect_timeout
        );
        match TcpTransport::connect_with_listener(
            me,
            self.listener,
            &self.deployment.network,
            &self.tls,
        ) {
            Ok(transport) => {
                transport.abort(kind);
                drop(transport);
                anyhow!("{me} did not start ({kind}; the error is above); the others were told")
            }
            Err(told) => anyhow!(
                "{me} did not start ({kind}; the error is above), and could not tell the \
                 others: {told}"
            ),
        }
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
    link: Option<LinkProfile>,
}

impl Job for OneParty<'_> {
    type Output = PartyOutcome;

    fn run<B: GpuBackend>(self, backend: B) -> Result<PartyOutcome> {
        let transport = self.transport.insert((self.connect)()?);
        set_abort_handle(Some(transport.abort_handle()));
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

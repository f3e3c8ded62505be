//! The deployment file `parties.toml` (who the three parties are, where they listen, their
//! certificates, the link limits, who owns the model and who the data, and, in `[serve]`,
//! where and how the parties serve private inference to clients) and `cryptgpu certs`,
//! which makes a fresh deployment: a CA, a certificate and key per party and per client of
//! the service, and the file. [`ClientSetup`] is what a client (`cryptgpu query`) reads.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cryptgpu_transport::rustls::{ClientConfig, ServerConfig};
use cryptgpu_transport::{
    AcceptFrom, ClientCredentials, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_FRAME_LEN,
    DEFAULT_MAX_MESSAGE_LEN, DEFAULT_QUEUE_LIMIT, DEFAULT_RECV_TIMEOUT, LinkConfig, LinkProfile,
    NetworkConfig, PartyCredentials, PartyId, TlsConfig, check_client_name, check_identity,
    generate_deployment_with_clients, read_private_key, service_client_config,
    service_server_config,
};
use serde::Deserialize;
use toml::Spanned;

use crate::files::atomic::{write_bytes_atomically, write_private_atomically};
use crate::roles::Roles;
use crate::serve::wire::Answer;

/// The longest timeout the file may set: a day.
const MAX_TIMEOUT_SECS: f64 = 86_400.0;

/// The smallest frame limit the file may set: smaller frames would cost more in headers than
/// they carry.
const MIN_FRAME_BYTES: u64 = 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    ca: PathBuf,
    #[serde(default)]
    model_owner: Option<i64>,
    #[serde(default)]
    data_owner: Option<i64>,
    #[serde(default)]
    link: RawLink,
    #[serde(default)]
    party: Vec<RawParty>,
    #[serde(default)]
    serve: Option<Spanned<RawServe>>,
}

/// `[serve]`, each value with where it is in the file. Integers are `i64` (what TOML has),
/// so that a negative one gets the range message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServe {
    addresses: Spanned<Vec<String>>,
    listen: Option<Spanned<Vec<String>>>,
    client_ca: Option<PathBuf>,
    max_batch: Option<Spanned<i64>>,
    batch_wait_ms: Option<Spanned<i64>>,
    queue_limit: Option<Spanned<i64>>,
    client_limit: Option<Spanned<i64>>,
    query_timeout_secs: Option<Spanned<f64>>,
    model_client: Option<Spanned<String>>,
    answers: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    connect_timeout_secs: Option<f64>,
    recv_timeout_secs: Option<f64>,
    max_frame_bytes: Option<u64>,
    max_message_bytes: Option<u64>,
    queue_limit_bytes: Option<u64>,
    accept_any_address: Option<bool>,
    emulate: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParty {
    name: String,
    address: String,
    listen: Option<String>,
    certificate: Option<PathBuf>,
    key: Option<PathBuf>,
}

/// A parsed and checked `parties.toml`.
#[derive(Clone, Debug)]
pub struct Deployment {
    /// The file it came from.
    pub path: PathBuf,
    /// Addresses (to dial) and link settings.
    pub network: NetworkConfig,
    /// Where each party listens (its `listen`, else its address).
    pub listen: [String; 3],
    /// The parties' identities: the DNS names in their certificates.
    pub identities: [String; 3],
    /// Who owns the model and who the data.
    pub roles: Roles,
    /// `[link] emulate`: an emulated link this party's messages go over (for trying a WAN
    /// deployment on one machine), unless `--link` says otherwise.
    pub emulated_link: Option<LinkProfile>,
    /// `[serve]`: the inference service, if the file sets it up.
    pub serve: Option<ServeConfig>,
    ca: PathBuf,
    certificates: [Option<PathBuf>; 3],
    keys: [Option<PathBuf>; 3],
}

impl Deployment {
    /// Reads and checks `path`. Certificates and keys are read later, and only this party's
    /// ([`Deployment::tls_config`]).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the deployment file {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base, path)
    }

    /// Parses the text of a deployment file; relative paths are taken from `base`, and
    /// errors name `path`.
    pub fn parse(text: &str, base: &Path, path: &Path) -> Result<Self> {
        let shown = path.display();
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let message = e.message().trim_end().to_string();
            match e.span() {
                Some(span) => {
                    let line = line_at(text, span.start);
                    anyhow::anyhow!("{shown}, line {line}: {message}")
                }
                None => anyhow::anyhow!("{shown}: {message}"),
            }
        })?;
        if raw.party.len() != 3 {
            bail!(
                "{shown}: a deployment has three [[party]] tables (P0, P1, P2, in that order), \
                 this one has {}",
                raw.party.len()
            );
        }
        let owner = |value: Option<i64>, key: &str, default: PartyId| -> Result<PartyId> {
            match value {
                None => Ok(default),
                Some(v) => usize::try_from(v)
                    .ok()
                    .and_then(|v| PartyId::new(v).ok())
                    .with_context(|| format!("{shown}: `{key}` is {v}, not 0, 1 or 2")),
            }
        };
        let roles = Roles {
            model_owner: owner(raw.model_owner, "model_owner", PartyId::P0)?,
            data_owner: owner(raw.data_owner, "data_owner", PartyId::P1)?,
        };
        if roles.model_owner == roles.data_owner {
            bail!(
                "{shown}: `model_owner` and `data_owner` are both {}: they must be different \
                 parties (the third one helps)",
                roles.model_owner.index()
            );
        }
        let mut identities = Vec::with_capacity(3);
        let mut addresses = Vec::with_capacity(3);
        let mut listen = Vec::with_capacity(3);
        let mut certificates = Vec::with_capacity(3);
        let mut keys = Vec::with_capacity(3);
        for (i, p) in raw.party.into_iter().enumerate() {
            let what = format!("{shown}: party {i} ({:?})", p.name);
            check_identity(&p.name).map_err(|_| {
                anyhow::anyhow!("{what}: the name must be a DNS name, as in its certificate")
            })?;
            if identities.contains(&p.name) {
                bail!("{what}: two parties are named {:?}", p.name);
            }
            check_address(&p.address).with_context(|| format!("{what}: `address`"))?;
            if let Some(l) = &p.listen {
                check_address(l).with_context(|| format!("{what}: `listen`"))?;
            }
            identities.push(p.name);
            listen.push(p.listen.unwrap_or_else(|| p.address.clone()));
            addresses.push(p.address);
            certificates.push(p.certificate.map(|c| base.join(c)));
            keys.push(p.key.map(|k| base.join(k)));
        }
        let seconds = |value: Option<f64>, key: &str, default: Duration| -> Result<Duration> {
            match value {
                None => Ok(default),
                Some(s) if s.is_finite() && s > 0.0 && s <= MAX_TIMEOUT_SECS => {
                    Ok(Duration::from_secs_f64(s))
                }
                Some(s) => bail!(
                    "{shown}: [link] `{key}` is {s}: it must be a number of seconds above 0 and \
                     at most {MAX_TIMEOUT_SECS}"
                ),
            }
        };
        let bytes = |value: Option<u64>, key: &str, default: u64, min: u64| -> Result<u64> {
            match value {
                None => Ok(default),
                Some(b) if b >= min => Ok(b),
                Some(b) => bail!("{shown}: [link] `{key}` is {b}: it must be at least {min}"),
            }
        };
        let link = LinkConfig {
            connect_timeout: seconds(
                raw.link.connect_timeout_secs,
                "connect_timeout_secs",
                DEFAULT_CONNECT_TIMEOUT,
            )?,
            recv_timeout: Some(seconds(
                raw.link.recv_timeout_secs,
                "recv_timeout_secs",
                DEFAULT_RECV_TIMEOUT,
            )?),
            max_frame_len: bytes(
                raw.link.max_frame_bytes,
                "max_frame_bytes",
                DEFAULT_MAX_FRAME_LEN,
                MIN_FRAME_BYTES,
            )?,
            max_message_len: bytes(
                raw.link.max_message_bytes,
                "max_message_bytes",
                DEFAULT_MAX_MESSAGE_LEN,
                1,
            )?,
            queue_limit: usize::try_from(bytes(
                raw.link.queue_limit_bytes,
                "queue_limit_bytes",
                DEFAULT_QUEUE_LIMIT as u64,
                1,
            )?)
            .unwrap_or(usize::MAX),
            accept_from: match raw.link.accept_any_address {
                Some(true) => AcceptFrom::Any,
                None | Some(false) => AcceptFrom::PeerAddresses,
            },
        };
        // The limits every transport checks (the frame length's upper bound: the parser
        // above already holds the lower ones), refused here with the file and key named.
        link.validate()
            .with_context(|| format!("{shown}: [link] `max_frame_bytes`"))?;
        let emulated_link = match &raw.link.emulate {
            None => None,
            Some(text) => cryptgpu_transport::parse_link(text)
                .with_context(|| format!("{shown}: [link] `emulate`"))?,
        };
        let addresses = three(addresses);
        let listen = three(listen);
        let serve = match raw.serve {
            None => None,
            Some(serve) => Some(parse_serve(serve, text, base, path, &addresses, &listen)?),
        };
        Ok(Deployment {
            path: path.to_path_buf(),
            network: NetworkConfig { addresses, link },
            listen,
            identities: three(identities),
            roles,
            emulated_link,
            serve,
            ca: base.join(raw.ca),
            certificates: three(certificates),
            keys: three(keys),
        })
    }

    /// `party`'s TLS configuration: the CA, its own certificate and key (the only key file
    /// read; refused on Unix if its mode lets other users read it), and the three
    /// identities.
    pub fn tls_config(&self, party: PartyId) -> Result<TlsConfig> {
        let shown = self.path.display();
        let i = party.index();
        let cert = self.certificates[i].as_ref().with_context(|| {
            format!("{shown}: party {i} has no `certificate`, which this host ({party}) needs")
        })?;
        let key = self.keys[i].as_ref().with_context(|| {
            format!("{shown}: party {i} has no `key`, which this host ({party}) needs")
        })?;
        let read = |what: &str, p: &Path| -> Result<Vec<u8>> {
            std::fs::read(p).with_context(|| format!("{shown}: reading {what} {}", p.display()))
        };
        let ca_pem = read("the CA certificate", &self.ca)?;
        let cert_pem = read(&format!("{party}'s certificate"), cert)?;
        let key_pem = read_private_key(key)
            .with_context(|| format!("{shown}: reading {party}'s private key"))?;
        let credentials =
            PartyCredentials::from_pem(&ca_pem, &cert_pem, &key_pem).with_context(|| {
                format!(
                    "{shown}: the CA {}, certificate {} or key {}",
                    self.ca.display(),
                    cert.display(),
                    key.display()
                )
            })?;
        TlsConfig::new(credentials)
            .with_identities(self.identities.clone())
            .with_context(|| format!("{shown}: the party names"))
    }

    /// The TLS server configuration of `me`'s service endpoint (`cryptgpu serve`): its party
    /// certificate and key (read as [`Deployment::tls_config`] reads them), and client
    /// certificates required from `[serve] client_ca` if set, else from the deployment CA.
    ///
    /// # Errors
    /// If the file has no `[serve]` table, or a certificate, key or the client CA cannot be
    /// read or used.
    pub fn service_server_config(&self, me: PartyId) -> Result<Arc<ServerConfig>> {
        let shown = self.path.display();
        let serve = self.serve.as_ref().with_context(|| {
            format!(
                "{shown} has no [serve] table: add one with the service's `addresses` (or make \
                 the deployment again with `cryptgpu certs --clients N`)"
            )
        })?;
        let tls = self.tls_config(me)?;
        let client_ca = match &serve.client_ca {
            None => None,
            Some(p) => Some(std::fs::read_to_string(p).with_context(|| {
                format!(
                    "{shown}: reading [serve] `client_ca`, the client CA {}",
                    p.display()
                )
            })?),
        };
        let what = match &serve.client_ca {
            Some(p) => format!("{shown}: {me}'s service TLS (client CA {})", p.display()),
            None => format!("{shown}: {me}'s service TLS"),
        };
        service_server_config(tls.credentials(), client_ca.as_deref()).context(what)
    }
}

/// `[serve]` of `parties.toml`: where the three servers of the inference service (`cryptgpu
/// serve`, one on each party's host) take clients' queries, which client certificates they
/// accept, and how they batch and bound the queries.
#[derive(Clone, Debug, PartialEq)]
pub struct ServeConfig {
    /// Where clients reach S0, S1, S2 (`host:port`, each server's own port, not its party
    /// address).
    pub addresses: [String; 3],
    /// Where each server listens (`listen`, default `addresses`).
    pub listen: [String; 3],
    /// The CA whose certificates clients present (`client_ca`, resolved from the file's
    /// folder); `None`: the deployment CA.
    pub client_ca: Option<PathBuf>,
    /// Examples per batch the servers run at most (`max_batch`, 1 to 4096, default 64).
    pub max_batch: usize,
    /// How long the first query of a batch waits for others (`batch_wait_ms`, at most
    /// 10 000 ms, default 5 ms).
    pub batch_wait: Duration,
    /// Examples queued per server before it answers "busy" (`queue_limit`, default 1024).
    pub queue_limit: usize,
    /// Queries in flight per client (`client_limit`, default 16).
    pub client_limit: usize,
    /// A query not answered in this time fails (`query_timeout_secs`, default 30 s).
    pub query_timeout: Duration,
    /// The client that owns the model and uploads it (`model_client`, the name in its
    /// client certificate): the servers then hold no model of their own and serve the
    /// shares it uploads (`cryptgpu upload`). `None`: the model owner among the servers
    /// (`[roles] model_owner`) shares it.
    pub model_client: Option<String>,
    /// What a client may ask to have revealed (`answers`, default all three: `class`,
    /// `logits`, `probabilities`). Scores reveal more of the model than classes do (they
    /// make it easier to extract), so a model owner may allow classes only.
    pub answers: Vec<Answer>,
}

impl ServeConfig {
    /// The default `max_batch`.
    pub const DEFAULT_MAX_BATCH: usize = 64;
    /// The largest `max_batch`.
    pub const MAX_MAX_BATCH: usize = 4096;
    /// The default `batch_wait_ms`.
    pub const DEFAULT_BATCH_WAIT: Duration = Duration::from_millis(5);
    /// The largest `batch_wait_ms`.
    pub const MAX_BATCH_WAIT: Duration = Duration::from_millis(10_000);
    /// The default `queue_limit`.
    pub const DEFAULT_QUEUE_LIMIT: usize = 1024;
    /// The default `client_limit`.
    pub const DEFAULT_CLIENT_LIMIT: usize = 16;
    /// The default `query_timeout_secs`.
    pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(30);

    /// A service at `addresses` (listening there) with the defaults: the deployment CA for
    /// clients, and the default batching, limits and timeout.
    pub fn new(addresses: [String; 3]) -> Self {
        ServeConfig {
            listen: addresses.clone(),
            addresses,
            client_ca: None,
            max_batch: Self::DEFAULT_MAX_BATCH,
            batch_wait: Self::DEFAULT_BATCH_WAIT,
            queue_limit: Self::DEFAULT_QUEUE_LIMIT,
            client_limit: Self::DEFAULT_CLIENT_LIMIT,
            query_timeout: Self::DEFAULT_QUERY_TIMEOUT,
            model_client: None,
            answers: Answer::ALL.to_vec(),
        }
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Checks `[serve]` (the parties' `addresses` and `listen` to keep apart from the service's).
fn parse_serve(
    raw: Spanned<RawServe>,
    text: &str,
    base: &Path,
    path: &Path,
    party_addresses: &[String; 3],
    party_listen: &[String; 3],
) -> Result<ServeConfig> {
    let shown = path.display();
    let at = |offset: usize| format!("{shown}, line {}: [serve]", line_at(text, offset));
    let table = at(raw.span().start);
    let raw = raw.into_inner();
    let list = |value: &Spanned<Vec<String>>, key: &str| -> Result<[String; 3]> {
        let here = at(value.span().start);
        let list = value.get_ref();
        if list.len() != 3 {
            bail!(
                "{here} `{key}` has {} entries: it takes three host:port, for S0, S1 and S2",
                list.len()
            );
        }
        for (i, a) in list.iter().enumerate() {
            check_address(a).with_context(|| format!("{here} `{key}`, S{i}"))?;
        }
        Ok(three(list.clone()))
    };
    let addresses = list(&raw.addresses, "addresses")?;
    let listen = match &raw.listen {
        None => addresses.clone(),
        Some(l) => list(l, "listen")?,
    };
    let here = at(raw.addresses.span().start);
    for (i, a) in addresses.iter().enumerate() {
        if addresses[..i].contains(a) {
            bail!("{here} `addresses`: S{i} has the address {a:?} of another server");
        }
        if let Some(p) = party_addresses.iter().position(|pa| pa == a) {
            bail!(
                "{here} `addresses`: S{i}'s address {a:?} is party {p}'s address: the service \
                 needs ports of its own"
            );
        }
    }
    for (i, l) in listen.iter().enumerate() {
        if *l == party_listen[i] {
            bail!(
                "{table} S{i} would listen on {l:?}, where party {i} listens: the service needs \
                 a port of its own"
            );
        }
    }
    let int = |value: &Option<Spanned<i64>>,
               key: &str,
               default: usize,
               min: i64,
               max: i64|
     -> Result<usize> {
        match value {
            None => Ok(default),
            Some(v) => {
                let n = *v.get_ref();
                if n < min || n > max {
                    let range = if max == i64::MAX {
                        format!("at least {min}")
                    } else {
                        format!("{min} to {max}")
                    };
                    bail!("{} `{key}` is {n}: it must be {range}", at(v.span().start));
                }
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            }
        }
    };
    let max_batch = int(
        &raw.max_batch,
        "max_batch",
        ServeConfig::DEFAULT_MAX_BATCH,
        1,
        ServeConfig::MAX_MAX_BATCH as i64,
    )?;
    let batch_wait_ms = int(
        &raw.batch_wait_ms,
        "batch_wait_ms",
        ServeConfig::DEFAULT_BATCH_WAIT.as_millis() as usize,
        0,
        ServeConfig::MAX_BATCH_WAIT.as_millis() as i64,
    )?;
    let queue_limit = int(
        &raw.queue_limit,
        "queue_limit",
        ServeConfig::DEFAULT_QUEUE_LIMIT,
        1,
        i64::MAX,
    )?;
    let client_limit = int(
        &raw.client_limit,
        "client_limit",
        ServeConfig::DEFAULT_CLIENT_LIMIT,
        1,
        i64::MAX,
    )?;
    let query_timeout = match &raw.query_timeout_secs {
        None => ServeConfig::DEFAULT_QUERY_TIMEOUT,
        Some(v) => {
            let s = *v.get_ref();
            if !(s.is_finite() && s > 0.0 && s <= MAX_TIMEOUT_SECS) {
                bail!(
                    "{} `query_timeout_secs` is {s}: it must be a number of seconds above 0 and \
                     at most {MAX_TIMEOUT_SECS}",
                    at(v.span().start)
                );
            }
            Duration::from_secs_f64(s)
        }
    };
    let model_client = match raw.model_client {
        None => None,
        Some(name) => {
            let here = at(name.span().start);
            let name = name.into_inner();
            if name.is_empty()
                || name.len() > 253
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                bail!(
                    "{here} `model_client` is {name:?}: it takes the DNS name in a client \
                     certificate (letters, digits, '-' and '.')"
                );
            }
            Some(name)
        }
    };
    let answers = match raw.answers {
        None => Answer::ALL.to_vec(),
        Some(list) => {
            let here = at(list.span().start);
            let list = list.into_inner();
            if list.is_empty() {
                bail!(
                    "{here} `answers` is empty: it takes one or more of class, logits, probabilities"
                );
            }
            let mut answers = Vec::new();
            for name in &list {
                let answer = Answer::ALL
                    .into_iter()
                    .find(|a| a.name() == name)
                    .with_context(|| {
                        format!(
                            "{here} `answers` has {name:?}: it takes class, logits and \
                             probabilities"
                        )
                    })?;
                if !answers.contains(&answer) {
                    answers.push(answer);
                }
            }
            answers
        }
    };
    Ok(ServeConfig {
        model_client,
        answers,
        addresses,
        listen,
        client_ca: raw.client_ca.map(|c| base.join(c)),
        max_batch,
        batch_wait: Duration::from_millis(batch_wait_ms as u64),
        queue_limit,
        client_limit,
        query_timeout,
    })
}

/// What a client of the inference service (`cryptgpu query`) needs: the three servers'
/// service addresses and identities, its own name, and its TLS configuration (the
/// deployment CA to trust for the servers, its certificate and key).
#[derive(Clone, Debug)]
pub struct ClientSetup {
    /// Where S0, S1, S2 take queries (`[serve] addresses`).
    pub servers: [String; 3],
    /// The servers' identities: the server name to verify each one's certificate against.
    pub identities: [String; 3],
    /// This client's name, as its certificate names it.
    pub name: String,
    /// The TLS client configuration (TLS 1.3, the deployment CA, this client's certificate).
    pub tls: Arc<ClientConfig>,
    /// A query not answered in this time fails (`[serve] query_timeout_secs`).
    pub query_timeout: Duration,
}

impl ClientSetup {
    /// Reads the deployment file `config` (its `[serve]` addresses, the parties' identities,
    /// the CA) and the client's certificate and key: `cert` and `key` if given, else
    /// `<name>.pem` and `<name>.key.pem` beside `config`. The key must be readable by its
    /// owner only (on Unix), and the certificate must name `name`.
    ///
    /// # Errors
    /// If the file does not parse or has no `[serve]` table, `name` is not a DNS name, a
    /// file cannot be read, or the certificate is not `name`'s.
    pub fn load(
        config: &Path,
        name: &str,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<ClientSetup> {
        let deployment = Deployment::load(config)?;
        let shown = config.display();
        let serve = deployment.serve.as_ref().with_context(|| {
            format!(
                "{shown} has no [serve] table, so it does not say where the service is: add one \
                 with the servers' `addresses`, or make the deployment again with \
                 `cryptgpu certs --clients N`, which writes it"
            )
        })?;
        check_identity(name)
            .map_err(|_| anyhow::anyhow!("client name {name:?} is not a DNS name"))?;
        let dir = config.parent().unwrap_or(Path::new("."));
        let cert = cert.map_or_else(|| dir.join(format!("{name}.pem")), Path::to_path_buf);
        let key = key.map_or_else(|| dir.join(format!("{name}.key.pem")), Path::to_path_buf);
        let credentials = ClientCredentials::from_pem_files(&deployment.ca, &cert, &key)
            .with_context(|| {
                format!(
                    "client {name:?}: the CA {}, certificate {} or key {} (a client needs the \
                     deployment's ca.pem and parties.toml, and its own certificate and key from \
                     `cryptgpu certs --clients N`)",
                    deployment.ca.display(),
                    cert.display(),
                    key.display()
                )
            })?;
        let leaf = credentials
            .cert_chain()
            .first()
            .context("the client certificate chain is empty")?;
        check_client_name(leaf, name).with_context(|| {
            format!(
                "{} is not client {name:?}'s certificate (is it another client's?)",
                cert.display()
            )
        })?;
        let tls = service_client_config(&credentials)
            .with_context(|| format!("client {name:?}: its TLS configuration"))?;
        Ok(ClientSetup {
            servers: serve.addresses.clone(),
            identities: deployment.identities.clone(),
            name: name.to_string(),
            tls,
            query_timeout: serve.query_timeout,
        })
    }
}

/// The three entries of a list checked to have three.
fn three<T: Default>(list: Vec<T>) -> [T; 3] {
    let mut it = list.into_iter();
    std::array::from_fn(|_| it.next().unwrap_or_default())
}

/// Checks that `address` looks like `host:port`.
fn check_address(address: &str) -> Result<()> {
    let (host, port) = address
        .rsplit_once(':')
        .with_context(|| format!("{address:?} is not host:port"))?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        bail!("{address:?} is not host:port");
    }
    Ok(())
}

/// The options of `cryptgpu certs`.
pub struct CertsRequest<'a> {
    /// The directory to write.
    pub out: &'a Path,
    /// `host:port` of P0, P1, P2.
    pub addresses: &'a [String],
    /// The parties' names (DNS names in their certificates), if not the defaults.
    pub names: Option<&'a [String]>,
    /// Replace an existing deployment.
    pub force: bool,
}

/// What `cryptgpu certs` makes for the inference service (`cryptgpu serve`, `cryptgpu
/// query`) besides the parties' deployment. The default asks for nothing: no clients, no
/// `[serve]` table.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServiceRequest<'a> {
    /// How many clients to make certificates for (`--clients N`): `client0` to
    /// `client{N-1}` ([`client_names`]).
    pub clients: usize,
    /// Where clients reach S0, S1, S2 (`--serve-addresses`); default each party's host with
    /// its port + 10. Written as the `[serve]` table when given or when clients are asked
    /// for.
    pub serve_addresses: Option<&'a [String]>,
}

impl ServiceRequest<'_> {
    /// Whether the written `parties.toml` gets a `[serve]` table.
    pub fn serves(&self) -> bool {
        self.clients > 0 || self.serve_addresses.is_some()
    }
}

/// The most clients `cryptgpu certs --clients` makes at once.
pub const MAX_CLIENTS: usize = 10_000;

/// The names of `n` clients made by `cryptgpu certs --clients n`: `client0`, `client1`, ...
pub fn client_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("client{i}")).collect()
}

/// `cryptgpu certs`: a CA, a certificate and key per party, and `parties.toml`, written to
/// `out`. Returns the path of `parties.toml`.
pub fn make_deployment(request: &CertsRequest<'_>) -> Result<PathBuf> {
    make_deployment_with_service(request, &ServiceRequest::default())
}

/// `cryptgpu certs` with the inference service: as [`make_deployment`], and a certificate and
/// key for each client `service` asks for (signed by the same CA, good for client
/// authentication only), and a `[serve]` table in `parties.toml` when it serves
/// ([`ServiceRequest::serves`]). Every file is written atomically; without `force`, nothing is
/// written if any of them exists. Returns the path of `parties.toml`.
pub fn make_deployment_with_service(
    request: &CertsRequest<'_>,
    service: &ServiceRequest<'_>,
) -> Result<PathBuf> {
    if request.addresses.len() != 3 {
        bail!(
            "--addresses takes three host:port, for P0, P1 and P2 (got {})",
            request.addresses.len()
        );
    }
    for a in request.addresses {
        check_address(a).context("--addresses")?;
    }
    let names: Vec<String> = match request.names {
        Some(n) if n.len() != 3 => bail!("--names takes three names (got {})", n.len()),
        Some(n) => n.to_vec(),
        None => (0..3).map(|i| format!("party{i}")).collect(),
    };
    if service.clients > MAX_CLIENTS {
        bail!(
            "--clients {}: at most {MAX_CLIENTS} clients at once",
            service.clients
        );
    }
    let clients = client_names(service.clients);
    let serve_addresses = if service.serves() {
        Some(serve_addresses(request.addresses, service.serve_addresses)?)
    } else {
        None
    };
    let toml_text = parties_toml(request.addresses, &names, serve_addresses.as_ref());
    let out = request.out;
    // The file must parse back (this checks the service addresses against the parties').
    Deployment::parse(&toml_text, out, &out.join("parties.toml"))
        .context("the parties.toml these options make")?;
    let files: Vec<(PathBuf, bool)> = std::iter::once((out.join("ca.pem"), false))
        .chain(names.iter().chain(&clients).flat_map(|n| {
            [
                (out.join(format!("{n}.pem")), false),
                (out.join(format!("{n}.key.pem")), true),
            ]
        }))
        .chain(std::iter::once((out.join("parties.toml"), false)))
        .collect();
    if !request.force
        && let Some((existing, _)) = files.iter().find(|(p, _)| p.exists())
    {
        bail!(
            "{} already exists: refusing to overwrite a deployment's keys and certificates \
             (pass --force to replace the whole deployment)",
            existing.display()
        );
    }
    let deployment = generate_deployment_with_clients([&names[0], &names[1], &names[2]], &clients)
        .context("making the deployment's certificates")?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    write_bytes_atomically(&out.join("ca.pem"), deployment.ca_cert_pem.as_bytes())?;
    for (p, name) in deployment.parties.iter().zip(&names) {
        write_bytes_atomically(&out.join(format!("{name}.pem")), p.cert_pem.as_bytes())?;
        write_private_atomically(&out.join(format!("{name}.key.pem")), p.key_pem.as_bytes())?;
    }
    for c in deployment.clients() {
        write_bytes_atomically(&out.join(format!("{}.pem", c.name)), c.cert_pem.as_bytes())?;
        write_private_atomically(
            &out.join(format!("{}.key.pem", c.name)),
            c.key_pem.as_bytes(),
        )?;
    }
    let toml_path = out.join("parties.toml");
    write_bytes_atomically(&toml_path, toml_text.as_bytes())?;
    Ok(toml_path)
}

/// The service addresses of `cryptgpu certs`: `given` (three host:port), else each party's
/// host with its port + 10.
fn serve_addresses(parties: &[String], given: Option<&[String]>) -> Result<[String; 3]> {
    match given {
        Some(given) => {
            if given.len() != 3 {
                bail!(
                    "--serve-addresses takes three host:port, for S0, S1 and S2 (got {})",
                    given.len()
                );
            }
            for a in given {
                check_address(a).context("--serve-addresses")?;
            }
            Ok(three(given.to_vec()))
        }
        None => {
            let mut out = Vec::with_capacity(3);
            for a in parties {
                let (host, port) = a.rsplit_once(':').with_context(|| format!("{a:?}"))?;
                let port = port
                    .parse::<u16>()
                    .ok()
                    .and_then(|p| p.checked_add(10))
                    .with_context(|| {
                        format!(
                            "the service's default port for {a} (its port + 10) is past 65535: \
                             pass --serve-addresses"
                        )
                    })?;
                out.push(format!("{host}:{port}"));
            }
            Ok(three(out))
        }
    }
}

/// The text of a fresh `parties.toml`, with a `[serve]` table at `serve` if given.
fn parties_toml(addresses: &[String], names: &[String], serve: Option<&[String; 3]>) -> String {
    let mut text = String::from(
        "# A cryptgpu deployment, written by `cryptgpu certs`. Every host needs this file,\n\
         # ca.pem and its own certificate and key; a party's key never leaves its host.\n\
         # Relative paths are taken from this file's folder.\n\
         \n\
         # The deployment's CA certificate, trusted by every party.\n\
         ca = \"ca.pem\"\n\
         \n\
         # Who shares the model's weights and who the inputs (and receives the predictions);\n\
         # the third party helps.\n\
         model_owner = 0\n\
         data_owner = 1\n\
         \n\
         [link]\n",
    );
    text.push_str(&format!(
        "# Setup, connecting with backoff, may take this long.\n\
         connect_timeout_secs = {}\n\
         # A receive waits this long for its message; a peer silent (not even a heartbeat)\n\
         # for half of it is stalled.\n\
         recv_timeout_secs = {}\n\
         # The largest frame accepted (messages are cut into 256 KiB frames).\n\
         max_frame_bytes = {DEFAULT_MAX_FRAME_LEN}\n\
         # The largest message.\n\
         max_message_bytes = {DEFAULT_MAX_MESSAGE_LEN}\n\
         # Received bytes held per link until the party takes them.\n\
         queue_limit_bytes = {DEFAULT_QUEUE_LIMIT}\n\
         # During setup a party closes at once any connection that does not come from the\n\
         # address of the party before it (P0 takes P2's, P1 P0's, P2 P1's; host names are\n\
         # resolved when setup starts). Set to true when a party reaches the others from\n\
         # another address (NAT, several interfaces); the TLS checks still hold.\n\
         accept_any_address = false\n\
         # To try a WAN deployment on one machine, deliver each message as late as it would\n\
         # arrive over an emulated link: \"lan\" (10 Gbit/s, 0.2 ms round trip), \"wan\"\n\
         # (100 Mbit/s, 40 ms) or \"BANDWIDTH,RTT\" such as \"1gbit,10ms\". Off by default.\n\
         # emulate = \"wan\"\n",
        DEFAULT_CONNECT_TIMEOUT.as_secs(),
        DEFAULT_RECV_TIMEOUT.as_secs(),
    ));
    for (i, (address, name)) in addresses.iter().zip(names).enumerate() {
        let port = address.rsplit_once(':').map_or("", |(_, p)| p);
        text.push_str(&format!(
            "\n# P{i}. `address` is where the others reach it; on its own host it listens there,\n\
             # or on `listen` if set (e.g. \"0.0.0.0:{port}\" behind NAT).\n\
             [[party]]\n\
             name = \"{name}\"\n\
             address = \"{address}\"\n\
             # listen = \"0.0.0.0:{port}\"\n\
             certificate = \"{name}.pem\"\n\
             key = \"{name}.key.pem\"\n"
        ));
    }
    if let Some(serve) = serve {
        text.push_str(&serve_table(serve));
    }
    text
}

/// The `[serve]` table of a fresh `parties.toml`: the addresses, and the rest at their
/// defaults, as comments.
fn serve_table(addresses: &[String; 3]) -> String {
    let quoted = |list: &[String]| {
        list.iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let any_host: Vec<String> = addresses
        .iter()
        .map(|a| format!("0.0.0.0:{}", a.rsplit_once(':').map_or("", |(_, p)| p)))
        .collect();
    format!(
        "\n# The inference service: each party's host runs `cryptgpu serve`, and a client (which\n\
         # runs no party) runs `cryptgpu query` with this file, ca.pem and its own certificate\n\
         # and key. Over mutual TLS, a client must present a certificate from `client_ca`.\n\
         [serve]\n\
         # Where clients reach S0, S1, S2 (a port of each party's host other than its party\n\
         # address).\n\
         addresses = [{}]\n\
         # Where each server listens, if not there (e.g. behind NAT).\n\
         # listen = [{}]\n\
         # The CA whose certificates clients present; default the deployment's, ca.pem.\n\
         # client_ca = \"clients-ca.pem\"\n\
         # Examples per batch the servers run at most (1 to {}).\n\
         # max_batch = {}\n\
         # How long (ms) the first query of a batch waits for others to join it (at most {}).\n\
         # batch_wait_ms = {}\n\
         # Examples queued per server before it answers \"busy\".\n\
         # queue_limit = {}\n\
         # Queries in flight per client.\n\
         # client_limit = {}\n\
         # A query not answered in this time fails.\n\
         # query_timeout_secs = {}\n\
         # The client that owns the model and uploads its shares (`cryptgpu upload`), if the\n\
         # model owner runs no server; then no server takes --model.\n\
         # model_client = \"client0\"\n\
         # What clients may ask to have revealed: scores make the model easier to extract\n\
         # than classes do.\n\
         # answers = [\"class\", \"logits\", \"probabilities\"]\n",
        quoted(addresses),
        quoted(&any_host),
        ServeConfig::MAX_MAX_BATCH,
        ServeConfig::DEFAULT_MAX_BATCH,
        ServeConfig::MAX_BATCH_WAIT.as_millis(),
        ServeConfig::DEFAULT_BATCH_WAIT.as_millis(),
        ServeConfig::DEFAULT_QUEUE_LIMIT,
        ServeConfig::DEFAULT_CLIENT_LIMIT,
        ServeConfig::DEFAULT_QUERY_TIMEOUT.as_secs(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptgpu_transport::MAX_FRAME_LEN_LIMIT;
    use proptest::prelude::*;

    fn sample() -> String {
        parties_toml(
            &[
                "127.0.0.1:7000".to_string(),
                "127.0.0.1:7001".to_string(),
                "127.0.0.1:7002".to_string(),
            ],
            &["party0".into(), "party1".into(), "party2".into()],
            None,
        )
    }

    /// [`sample`] with the `[serve]` table `cryptgpu certs --clients` writes.
    fn sample_serve() -> String {
        parties_toml(
            &[
                "127.0.0.1:7000".to_string(),
                "127.0.0.1:7001".to_string(),
                "127.0.0.1:7002".to_string(),
            ],
            &["party0".into(), "party1".into(), "party2".into()],
            Some(
                &serve_addresses(
                    &[
                        "127.0.0.1:7000".into(),
                        "127.0.0.1:7001".into(),
                        "127.0.0.1:7002".into(),
                    ],
                    None,
                )
                .unwrap(),
            ),
        )
    }

    fn parse(text: &str) -> Result<Deployment> {
        Deployment::parse(
            text,
            Path::new("/etc/cg"),
            Path::new("/etc/cg/parties.toml"),
        )
    }

    #[test]
    fn the_written_file_parses_back() {
        let d = parse(&sample()).unwrap();
        assert_eq!(d.identities, ["party0", "party1", "party2"]);
        assert_eq!(d.network.addresses[2], "127.0.0.1:7002");
        assert_eq!(d.listen[1], "127.0.0.1:7001");
        assert_eq!(d.roles.model_owner, PartyId::P0);
        assert_eq!(d.roles.data_owner, PartyId::P1);
        assert_eq!(d.network.link, LinkConfig::default());
        assert_eq!(d.ca, Path::new("/etc/cg/ca.pem"));
        assert_eq!(
            d.keys[2].as_deref(),
            Some(Path::new("/etc/cg/party2.key.pem"))
        );
    }

    #[test]
    fn an_emulated_link_is_off_unless_the_file_asks_for_one() {
        assert_eq!(parse(&sample()).unwrap().emulated_link, None);
        let text = sample().replacen("# emulate = \"wan\"", "emulate = \"wan\"", 1);
        assert_eq!(parse(&text).unwrap().emulated_link, Some(LinkProfile::WAN));
        let text = sample().replacen("# emulate = \"wan\"", "emulate = \"fast\"", 1);
        let message = format!("{:#}", parse(&text).unwrap_err());
        assert!(message.contains("emulate"), "{message}");
    }

    #[test]
    fn connections_from_any_address_only_when_the_file_says_so() {
        let d = parse(&sample()).unwrap();
        assert_eq!(d.network.link.accept_from, AcceptFrom::PeerAddresses);
        let text = sample().replacen("accept_any_address = false", "accept_any_address = true", 1);
        let d = parse(&text).unwrap();
        assert_eq!(d.network.link.accept_from, AcceptFrom::Any);
        let text = sample().replacen("accept_any_address = false\n", "", 1);
        assert_ne!(text, sample());
        let d = parse(&text).unwrap();
        assert_eq!(d.network.link.accept_from, AcceptFrom::PeerAddresses);
        // The largest frame limit allowed is accepted, and LinkConfig agrees with the parser.
        let text = sample().replacen(
            "max_frame_bytes = 1048576",
            &format!("max_frame_bytes = {MAX_FRAME_LEN_LIMIT}"),
            1,
        );
        let d = parse(&text).unwrap();
        assert_eq!(d.network.link.max_frame_len, MAX_FRAME_LEN_LIMIT);
        d.network.link.validate().unwrap();
    }

    #[test]
    fn bad_files_give_errors_that_name_the_problem() {
        let cases: [(&str, &str, &str); 11] = [
            (
                "ca = \"ca.pem\"",
                "ca = \"ca.pem\"\ncolour = 3",
                "unknown field `colour`",
            ),
            ("model_owner = 0", "model_owner = 5", "`model_owner` is 5"),
            ("data_owner = 1", "data_owner = 0", "must be different"),
            (
                "name = \"party1\"",
                "name = \"party0\"",
                "two parties are named",
            ),
            ("name = \"party1\"", "name = \"not a name\"", "DNS name"),
            (
                "address = \"127.0.0.1:7001\"",
                "address = \"localhost\"",
                "host:port",
            ),
            (
                "recv_timeout_secs = 120",
                "recv_timeout_secs = -1",
                "recv_timeout_secs",
            ),
            (
                "max_frame_bytes = 1048576",
                "max_frame_bytes = 10",
                "at least 1024",
            ),
            (
                "max_frame_bytes = 1048576",
                "max_frame_bytes = 16777217",
                "at most 16777216 (16 MiB)",
            ),
            (
                "accept_any_address = false",
                "accept_any_address = 1",
                "expected a boolean",
            ),
            ("ca = \"ca.pem\"", "ca = 7", "line 6"),
        ];
        for (from, to, want) in cases {
            let text = sample().replacen(from, to, 1);
            assert_ne!(text, sample(), "{from}");
            let e = format!("{:#}", parse(&text).unwrap_err());
            assert!(e.contains(want), "{to}: {e}");
            assert!(e.contains("/etc/cg/parties.toml"), "{e}");
        }
        let two = sample().rsplit_once("[[party]]").unwrap().0.to_string();
        let e = format!("{:#}", parse(&two).unwrap_err());
        assert!(e.contains("three [[party]] tables"), "{e}");
    }

    #[test]
    fn missing_or_unreadable_credentials_are_named() {
        let dir = crate::files::test_dir("config-credentials");
        let d = Deployment::parse(&sample(), &dir, &dir.join("parties.toml")).unwrap();
        let e = format!("{:#}", d.tls_config(PartyId::P1).unwrap_err());
        assert!(e.contains("ca.pem"), "{e}");
        std::fs::write(dir.join("ca.pem"), "junk").unwrap();
        std::fs::write(dir.join("party1.pem"), "junk").unwrap();
        let e = format!("{:#}", d.tls_config(PartyId::P1).unwrap_err());
        assert!(e.contains("party1.key.pem"), "{e}");
        write_key(&dir.join("party1.key.pem"), "junk");
        let e = format!("{:#}", d.tls_config(PartyId::P1).unwrap_err());
        assert!(
            e.contains("party1.pem") && e.contains("CA certificate"),
            "{e}"
        );
        std::fs::remove_dir_all(dir).ok();
    }

    /// Writes a key file as `cryptgpu certs` does: mode 0600.
    fn write_key(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_key_that_others_may_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::files::test_dir("config-key-mode");
        let addresses = [
            "127.0.0.1:1".to_string(),
            "127.0.0.1:2".into(),
            "127.0.0.1:3".into(),
        ];
        let path = make_deployment(&CertsRequest {
            out: &dir,
            addresses: &addresses,
            names: None,
            force: false,
        })
        .unwrap();
        let d = Deployment::load(&path).unwrap();
        let key = dir.join("party0.key.pem");
        for mode in [0o644, 0o640, 0o604, 0o660, 0o601] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = format!("{:#}", d.tls_config(PartyId::P0).unwrap_err());
            let chmod = format!("chmod 600 {}", key.display());
            assert!(
                e.contains(&chmod) && e.contains("party0.key.pem"),
                "{mode:o}: {e}"
            );
            assert!(e.contains(&format!("{mode:04o}")), "{e}");
        }
        for mode in [0o600, 0o400, 0o700] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            d.tls_config(PartyId::P0).unwrap();
        }
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn certs_writes_a_usable_deployment_and_refuses_to_overwrite_keys() {
        let dir = crate::files::test_dir("config-certs");
        let addresses = [
            "127.0.0.1:1".to_string(),
            "127.0.0.1:2".into(),
            "127.0.0.1:3".into(),
        ];
        let request = CertsRequest {
            out: &dir,
            addresses: &addresses,
            names: None,
            force: false,
        };
        let path = make_deployment(&request).unwrap();
        let d = Deployment::load(&path).unwrap();
        for p in PartyId::ALL {
            d.tls_config(p).unwrap();
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("party0.key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let key = std::fs::read(dir.join("party0.key.pem")).unwrap();
        let e = make_deployment(&request).unwrap_err().to_string();
        assert!(e.contains("--force"), "{e}");
        assert_eq!(std::fs::read(dir.join("party0.key.pem")).unwrap(), key);
        make_deployment(&CertsRequest {
            force: true,
            ..request
        })
        .unwrap();
        assert_ne!(std::fs::read(dir.join("party0.key.pem")).unwrap(), key);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn the_serve_table_parses_with_its_defaults() {
        assert_eq!(parse(&sample()).unwrap().serve, None);
        let d = parse(&sample_serve()).unwrap();
        let addresses = ["127.0.0.1:7010", "127.0.0.1:7011", "127.0.0.1:7012"].map(String::from);
        assert_eq!(d.serve, Some(ServeConfig::new(addresses.clone())));
        let serve = d.serve.unwrap();
        assert_eq!(serve.listen, addresses);
        assert_eq!(serve.max_batch, 64);
        assert_eq!(serve.batch_wait, Duration::from_millis(5));
        assert_eq!(serve.queue_limit, 1024);
        assert_eq!(serve.client_limit, 16);
        assert_eq!(serve.query_timeout, Duration::from_secs(30));
        assert_eq!(serve.client_ca, None);
        // Every commented default, set.
        let text = sample_serve()
            .replacen("# listen = [", "listen = [", 1)
            .replacen(
                "# client_ca = \"clients-ca.pem\"",
                "client_ca = \"c/ca2.pem\"",
                1,
            )
            .replacen("# max_batch = 64", "max_batch = 4096", 1)
            .replacen("# batch_wait_ms = 5", "batch_wait_ms = 0", 1)
            .replacen("# queue_limit = 1024", "queue_limit = 1", 1)
            .replacen("# client_limit = 16", "client_limit = 3", 1)
            .replacen("# query_timeout_secs = 30", "query_timeout_secs = 0.5", 1)
            .replacen(
                "# model_client = \"client0\"",
                "model_client = \"owner.example\"",
                1,
            )
            .replacen(
                "# answers = [\"class\", \"logits\", \"probabilities\"]",
                "answers = [\"class\", \"probabilities\", \"class\"]",
                1,
            );
        let serve = parse(&text).unwrap().serve.unwrap();
        assert_eq!(
            serve.listen,
            ["0.0.0.0:7010", "0.0.0.0:7011", "0.0.0.0:7012"].map(String::from)
        );
        assert_eq!(serve.addresses, addresses);
        assert_eq!(
            serve.client_ca.as_deref(),
            Some(Path::new("/etc/cg/c/ca2.pem"))
        );
        assert_eq!(serve.max_batch, 4096);
        assert_eq!(serve.batch_wait, Duration::ZERO);
        assert_eq!(serve.queue_limit, 1);
        assert_eq!(serve.client_limit, 3);
        assert_eq!(serve.query_timeout, Duration::from_millis(500));
        assert_eq!(serve.model_client.as_deref(), Some("owner.example"));
        assert_eq!(serve.answers, [Answer::Class, Answer::Probabilities]);
        // A table with the addresses alone.
        let text = format!(
            "{}\n[serve]\naddresses = [\"a:1\", \"b:2\", \"c:3\"]\n",
            sample()
        );
        let serve = parse(&text).unwrap().serve.unwrap();
        assert_eq!(
            serve,
            ServeConfig::new(["a:1", "b:2", "c:3"].map(String::from))
        );
    }

    #[test]
    fn bad_serve_tables_give_errors_that_name_the_key_and_line() {
        let serve_line = |text: &str, key: &str| {
            let line = text
                .lines()
                .position(|l| l.starts_with(&format!("{key} ")))
                .unwrap()
                + 1;
            format!("line {line}")
        };
        let cases: [(&str, &str, &str); 20] = [
            (
                "# answers = [\"class\", \"logits\", \"probabilities\"]",
                "answers = []",
                "`answers` is empty",
            ),
            (
                "# answers = [\"class\", \"logits\", \"probabilities\"]",
                "answers = [\"class\", \"weights\"]",
                "`answers` has \"weights\"",
            ),
            (
                "# model_client = \"client0\"",
                "model_client = \"a b\"",
                "`model_client` is \"a b\"",
            ),
            (
                "# max_batch = 64",
                "max_batch = 0",
                "`max_batch` is 0: it must be 1 to 4096",
            ),
            (
                "# max_batch = 64",
                "max_batch = 4097",
                "`max_batch` is 4097",
            ),
            ("# max_batch = 64", "max_batch = -3", "`max_batch` is -3"),
            ("# max_batch = 64", "max_batch = \"many\"", "invalid type"),
            ("# batch_wait_ms = 5", "batch_wait_ms = 10001", "0 to 10000"),
            (
                "# batch_wait_ms = 5",
                "batch_wait_ms = -1",
                "`batch_wait_ms` is -1",
            ),
            (
                "# queue_limit = 1024",
                "queue_limit = 0",
                "`queue_limit` is 0: it must be at least 1",
            ),
            (
                "# client_limit = 16",
                "client_limit = 0",
                "`client_limit` is 0",
            ),
            (
                "# query_timeout_secs = 30",
                "query_timeout_secs = 0",
                "`query_timeout_secs` is 0",
            ),
            (
                "# query_timeout_secs = 30",
                "query_timeout_secs = 1e9",
                "at most 86400",
            ),
            (
                "# client_limit = 16",
                "colour = 16",
                "unknown field `colour`",
            ),
            (
                "addresses = [\"127.0.0.1:7010\", ",
                "addresses = [",
                "has 2 entries",
            ),
            ("\"127.0.0.1:7011\"", "\"localhost\"", "`addresses`, S1"),
            (
                "\"127.0.0.1:7011\"",
                "\"127.0.0.1:7010\"",
                "S1 has the address",
            ),
            (
                "\"127.0.0.1:7011\"",
                "\"127.0.0.1:7002\"",
                "party 2's address",
            ),
            (
                "# listen = [\"0.0.0.0:7010\"",
                "listen = [\"127.0.0.1:7000\"",
                "where party 0 listens",
            ),
            (
                "# listen = [\"0.0.0.0:7010\", ",
                "listen = [",
                "`listen` has 2 entries",
            ),
        ];
        for (from, to, want) in cases {
            let text = sample_serve().replacen(from, to, 1);
            assert_ne!(text, sample_serve(), "{from}");
            let e = format!("{:#}", parse(&text).unwrap_err());
            assert!(e.contains(want), "{to}: {e}");
            assert!(e.contains("/etc/cg/parties.toml, line"), "{to}: {e}");
            let key = to.split(' ').next().unwrap();
            if !key.starts_with('"') && key != "listen" {
                assert!(e.contains(&serve_line(&text, key)), "{to}: {e}");
            }
        }
        // No addresses: the table's line is named.
        let text = format!("{}\n[serve]\nmax_batch = 8\n", sample());
        let e = format!("{:#}", parse(&text).unwrap_err());
        let line = text.lines().position(|l| l == "[serve]").unwrap() + 1;
        assert!(e.contains("missing field `addresses`"), "{e}");
        assert!(e.contains(&format!("line {line}")), "{e}");
    }

    #[test]
    fn certs_with_clients_writes_a_service_and_its_clients() {
        let dir = crate::files::test_dir("config-certs-clients");
        let addresses = free_ports();
        let request = CertsRequest {
            out: &dir,
            addresses: &addresses,
            names: None,
            force: false,
        };
        let service = ServiceRequest {
            clients: 2,
            serve_addresses: None,
        };
        let path = make_deployment_with_service(&request, &service).unwrap();
        let d = Deployment::load(&path).unwrap();
        let serve = d.serve.clone().unwrap();
        for (i, a) in serve.addresses.iter().enumerate() {
            let port: u16 = addresses[i].rsplit_once(':').unwrap().1.parse().unwrap();
            assert_eq!(*a, format!("127.0.0.1:{}", port + 10));
        }
        for name in ["client0", "client1"] {
            assert!(dir.join(format!("{name}.pem")).exists());
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let key = dir.join(format!("{name}.key.pem"));
                let mode = std::fs::metadata(&key).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{}", key.display());
            }
        }
        assert!(!dir.join("client2.pem").exists());
        let client = ClientSetup::load(&path, "client1", None, None).unwrap();
        assert_eq!(client.servers, serve.addresses);
        assert_eq!(client.identities, d.identities);
        assert_eq!(client.name, "client1");
        assert_eq!(client.query_timeout, Duration::from_secs(30));
        // Each server's service endpoint takes the client, over loopback TLS.
        for p in PartyId::ALL {
            let server = d.service_server_config(p).unwrap();
            assert_eq!(tls_round_trip(server, &client, p).unwrap(), b"pong");
        }
        // Another client's certificate under this name, and a client never made.
        let e = ClientSetup::load(
            &path,
            "client0",
            Some(&dir.join("client1.pem")),
            Some(&dir.join("client1.key.pem")),
        )
        .unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("client1.pem") && e.contains("\"client0\""),
            "{e}"
        );
        let e = format!(
            "{:#}",
            ClientSetup::load(&path, "client2", None, None).unwrap_err()
        );
        assert!(e.contains("client2.pem") && e.contains("--clients"), "{e}");
        let e = format!(
            "{:#}",
            ClientSetup::load(&path, "no name", None, None).unwrap_err()
        );
        assert!(e.contains("DNS name"), "{e}");
        // Without --force, nothing is overwritten; with it, the clients are new.
        let key = std::fs::read(dir.join("client0.key.pem")).unwrap();
        let e = make_deployment_with_service(&request, &service)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--force"), "{e}");
        let e = make_deployment_with_service(
            &request,
            &ServiceRequest {
                clients: 3,
                serve_addresses: None,
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--force"), "{e}");
        assert!(!dir.join("client2.pem").exists());
        make_deployment_with_service(
            &CertsRequest {
                force: true,
                ..request
            },
            &service,
        )
        .unwrap();
        assert_ne!(std::fs::read(dir.join("client0.key.pem")).unwrap(), key);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn certs_checks_the_service_options() {
        let dir = crate::files::test_dir("config-certs-serve");
        let addresses = ["h:1".to_string(), "h:2".into(), "h:65530".into()];
        let request = CertsRequest {
            out: &dir,
            addresses: &addresses,
            names: None,
            force: false,
        };
        let with = |clients, serve: Option<&[String]>| {
            let service = ServiceRequest {
                clients,
                serve_addresses: serve,
            };
            format!(
                "{:#}",
                make_deployment_with_service(&request, &service).unwrap_err()
            )
        };
        let e = with(1, None);
        assert!(
            e.contains("65530") && e.contains("--serve-addresses"),
            "{e}"
        );
        let e = with(0, Some(&["s:1".to_string(), "s:2".into()]));
        assert!(e.contains("three host:port"), "{e}");
        let e = with(0, Some(&["s:1".to_string(), "s:2".into(), "s".into()]));
        assert!(
            e.contains("--serve-addresses") && e.contains("host:port"),
            "{e}"
        );
        let e = with(0, Some(&["s:1".to_string(), "h:2".into(), "s:3".into()]));
        assert!(e.contains("party 1's address"), "{e}");
        let e = with(
            MAX_CLIENTS + 1,
            Some(&["s:1".to_string(), "s:2".into(), "s:3".into()]),
        );
        assert!(e.contains("at most"), "{e}");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "nothing written"
        );
        // Service addresses alone: a [serve] table and no clients.
        let serve = ["s:1".to_string(), "s:2".into(), "s:3".into()];
        let service = ServiceRequest {
            clients: 0,
            serve_addresses: Some(&serve),
        };
        let path = make_deployment_with_service(&request, &service).unwrap();
        let d = Deployment::load(&path).unwrap();
        assert_eq!(d.serve.unwrap().addresses, serve);
        assert!(!dir.join("client0.pem").exists());
        // No [serve] table: the client is told how to get one.
        std::fs::remove_dir_all(&dir).ok();
        let path = make_deployment(&request).unwrap();
        assert_eq!(Deployment::load(&path).unwrap().serve, None);
        let e = format!(
            "{:#}",
            ClientSetup::load(&path, "client0", None, None).unwrap_err()
        );
        assert!(
            e.contains("[serve]") && e.contains("cryptgpu certs --clients"),
            "{e}"
        );
        let d = Deployment::load(&path).unwrap();
        let e = format!("{:#}", d.service_server_config(PartyId::P0).unwrap_err());
        assert!(e.contains("[serve]"), "{e}");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_separate_client_ca_is_read_for_the_service() {
        let dir = crate::files::test_dir("config-client-ca");
        let addresses = free_ports();
        let request = CertsRequest {
            out: &dir,
            addresses: &addresses,
            names: None,
            force: false,
        };
        let path = make_deployment_with_service(
            &request,
            &ServiceRequest {
                clients: 1,
                serve_addresses: None,
            },
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap().replacen(
            "# client_ca = \"clients-ca.pem\"",
            "client_ca = \"clients-ca.pem\"",
            1,
        );
        std::fs::write(&path, text).unwrap();
        let d = Deployment::load(&path).unwrap();
        let e = format!("{:#}", d.service_server_config(PartyId::P1).unwrap_err());
        assert!(
            e.contains("clients-ca.pem") && e.contains("client_ca"),
            "{e}"
        );
        // Another CA's clients: the deployment's own client is refused.
        let other = cryptgpu_transport::generate_deployment_with_clients(
            cryptgpu_transport::DEFAULT_IDENTITIES,
            &["client0".to_string()],
        )
        .unwrap();
        std::fs::write(dir.join("clients-ca.pem"), &other.ca_cert_pem).unwrap();
        let server = d.service_server_config(PartyId::P1).unwrap();
        let client = ClientSetup::load(&path, "client0", None, None).unwrap();
        let e = tls_round_trip(server, &client, PartyId::P1).unwrap_err();
        assert!(e.contains("UnknownIssuer") || e.contains("alert"), "{e}");
        std::fs::remove_dir_all(dir).ok();
    }

    /// Three free loopback addresses whose ports + 10 are below 65536.
    fn free_ports() -> [String; 3] {
        let listeners: Vec<std::net::TcpListener> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port().min(65000));
        three(ports.map(|p| format!("127.0.0.1:{p}")).collect())
    }

    /// A client sends "ping" to a server with `server`'s configuration over loopback TCP and
    /// gets its "pong"; the first error of either side, else the reply.
    fn tls_round_trip(
        server: Arc<ServerConfig>,
        client: &ClientSetup,
        to: PartyId,
    ) -> Result<Vec<u8>, String> {
        use cryptgpu_transport::rustls::pki_types::ServerName;
        use cryptgpu_transport::rustls::{ClientConnection, ServerConnection, StreamOwned};
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let timeout = Some(Duration::from_secs(10));
        let name = client.name.clone();
        let served = std::thread::spawn(move || -> Result<(), String> {
            let (sock, _) = listener.accept().unwrap();
            sock.set_read_timeout(timeout).unwrap();
            let mut tls = StreamOwned::new(ServerConnection::new(server).unwrap(), sock);
            let mut got = [0u8; 4];
            tls.read_exact(&mut got)
                .map_err(|e| format!("server: {e}"))?;
            let leaf = tls.conn.peer_certificates().unwrap()[0].clone();
            check_client_name(&leaf, &name).unwrap();
            tls.write_all(b"pong").map_err(|e| format!("server: {e}"))?;
            tls.flush().map_err(|e| format!("server: {e}"))
        });
        let sock = std::net::TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(timeout).unwrap();
        let server_name = ServerName::try_from(client.identities[to.index()].clone()).unwrap();
        let conn = ClientConnection::new(client.tls.clone(), server_name).unwrap();
        let mut tls = StreamOwned::new(conn, sock);
        let mut got = [0u8; 4];
        let sent = tls
            .write_all(b"ping")
            .and_then(|()| tls.read_exact(&mut got))
            .map_err(|e| format!("client: {e}"));
        served.join().unwrap()?;
        sent?;
        Ok(got.to_vec())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 100_000, ..ProptestConfig::default() })]

        /// Arbitrary text, and the real file (with or without `[serve]`) with a slice
        /// replaced by arbitrary text, give a deployment or an error, never a panic.
        #[test]
        fn arbitrary_text_never_panics(
            junk in ".{0,40}",
            at in 0usize..2600,
            cut in 0usize..40,
            serve in any::<bool>(),
        ) {
            let _ = parse(&junk);
            let text = if serve { sample_serve() } else { sample() };
            let at = at.min(text.len());
            let end = (at + cut).min(text.len());
            if text.is_char_boundary(at) && text.is_char_boundary(end) {
                let mutated = format!("{}{}{}", &text[..at], junk, &text[end..]);
                let _ = parse(&mutated);
            }
        }
    }
}

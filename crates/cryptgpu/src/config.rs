//! The deployment file `parties.toml` (who the three parties are, where they listen, their
//! certificates, the link limits, who owns the model and who the data) and `cryptgpu
//! certs`, which makes a fresh deployment: a CA, a certificate and key per party, and the
//! file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cryptgpu_transport::{
    AcceptFrom, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_FRAME_LEN, DEFAULT_MAX_MESSAGE_LEN,
    DEFAULT_QUEUE_LIMIT, DEFAULT_RECV_TIMEOUT, LinkConfig, LinkProfile, NetworkConfig,
    PartyCredentials, PartyId, TlsConfig, check_identity, generate_deployment, read_private_key,
};
use serde::Deserialize;

use crate::files::atomic::{write_bytes_atomically, write_private_atomically};
use crate::roles::Roles;

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
                    let line = text[..span.start.min(text.len())]
                        .bytes()
                        .filter(|&b| b == b'\n')
                        .count()
                        + 1;
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
        Ok(Deployment {
            path: path.to_path_buf(),
            network: NetworkConfig {
                addresses: three(addresses),
                link,
            },
            listen: three(listen),
            identities: three(identities),
            roles,
            emulated_link,
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

/// `cryptgpu certs`: a CA, a certificate and key per party, and `parties.toml`, written to
/// `out`. Returns the path of `parties.toml`.
pub fn make_deployment(request: &CertsRequest<'_>) -> Result<PathBuf> {
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
    let out = request.out;
    let files: Vec<(PathBuf, bool)> = std::iter::once((out.join("ca.pem"), false))
        .chain(names.iter().flat_map(|n| {
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
    let deployment = generate_deployment([&names[0], &names[1], &names[2]])
        .context("making the deployment's certificates")?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    write_bytes_atomically(&out.join("ca.pem"), deployment.ca_cert_pem.as_bytes())?;
    for (p, name) in deployment.parties.iter().zip(&names) {
        write_bytes_atomically(&out.join(format!("{name}.pem")), p.cert_pem.as_bytes())?;
        write_private_atomically(&out.join(format!("{name}.key.pem")), p.key_pem.as_bytes())?;
    }
    let toml_path = out.join("parties.toml");
    write_bytes_atomically(
        &toml_path,
        parties_toml(request.addresses, &names).as_bytes(),
    )?;
    Ok(toml_path)
}

/// The text of a fresh `parties.toml`.
fn parties_toml(addresses: &[String], names: &[String]) -> String {
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
    text
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

    proptest! {
        #![proptest_config(ProptestConfig { cases: 100_000, ..ProptestConfig::default() })]

        /// Arbitrary text, and the real file with a slice replaced by arbitrary text, give a
        /// deployment or an error, never a panic.
        #[test]
        fn arbitrary_text_never_panics(
            junk in ".{0,40}",
            at in 0usize..2000,
            cut in 0usize..40,
        ) {
            let _ = parse(&junk);
            let text = sample();
            let at = at.min(text.len());
            let end = (at + cut).min(text.len());
            if text.is_char_boundary(at) && text.is_char_boundary(end) {
                let mutated = format!("{}{}{}", &text[..at], junk, &text[end..]);
                let _ = parse(&mutated);
            }
        }
    }
}

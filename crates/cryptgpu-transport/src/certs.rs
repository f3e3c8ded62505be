//! Generating a deployment's CA, the three parties' certificates and the certificates of the
//! inference service's clients (with `rcgen`), for tests and for setting up a real deployment.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::{ClientCredentials, PartyCredentials, PartyId, TlsConfig, TransportError};

/// A freshly generated CA, one certificate and key per party, and those of the service's
/// clients if any were asked for ([`generate_deployment_with_clients`]).
///
/// Keep [`GeneratedDeployment::ca_key_pem`] offline in a real deployment: whoever holds it can
/// impersonate any party.
#[derive(Clone)]
pub struct GeneratedDeployment {
    /// The CA certificate (PEM), which every party trusts.
    pub ca_cert_pem: String,
    /// The CA private key (PEM, PKCS#8). Not written by
    /// [`GeneratedDeployment::write_pem_files`].
    pub ca_key_pem: String,
    /// P0's, P1's and P2's certificates and keys.
    pub parties: [GeneratedParty; 3],
    /// The clients' certificates and keys, in the order asked for.
    clients: Vec<GeneratedClient>,
}

impl std::fmt::Debug for GeneratedDeployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedDeployment")
            .field("identities", &self.identities())
            .field("clients", &self.clients)
            .finish_non_exhaustive()
    }
}

/// One party's generated certificate and key.
#[derive(Clone)]
pub struct GeneratedParty {
    /// The party's identity: the DNS name in its certificate.
    pub identity: String,
    /// The certificate (PEM), signed by the CA.
    pub cert_pem: String,
    /// The private key (PEM, PKCS#8).
    pub key_pem: String,
}

/// One client of the inference service: its generated certificate (signed by the
/// deployment CA, extended key usage client authentication only, so it cannot serve as a
/// party or a server) and key. `Debug` shows the name only.
#[derive(Clone)]
pub struct GeneratedClient {
    /// The client's name: the DNS name (and common name) in its certificate.
    pub name: String,
    /// The certificate (PEM), signed by the CA.
    pub cert_pem: String,
    /// The private key (PEM, PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for GeneratedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedClient")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Where [`GeneratedDeployment::write_pem_files`] put the files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeploymentFiles {
    /// The CA certificate, `ca.pem`.
    pub ca_cert: PathBuf,
    /// Per party: its certificate `<identity>.pem` and its key `<identity>.key.pem`.
    pub parties: [(PathBuf, PathBuf); 3],
    /// Per client, in the order of [`GeneratedDeployment::clients`]: its certificate
    /// `<name>.pem` and its key `<name>.key.pem`.
    pub clients: Vec<ClientFiles>,
}

/// Where [`GeneratedDeployment::write_pem_files`] put one client's files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientFiles {
    /// The client's name.
    pub name: String,
    /// Its certificate, `<name>.pem`.
    pub cert: PathBuf,
    /// Its private key, `<name>.key.pem` (mode 0600 on Unix).
    pub key: PathBuf,
}

impl DeploymentFiles {
    /// Loads `party`'s credentials back from these files.
    ///
    /// # Errors
    /// As [`PartyCredentials::from_pem_files`].
    pub fn credentials(&self, party: PartyId) -> Result<PartyCredentials, TransportError> {
        let (cert, key) = &self.parties[party.index()];
        PartyCredentials::from_pem_files(&self.ca_cert, cert, key)
    }

    /// Loads the credentials of the client `name` back from these files.
    ///
    /// # Errors
    /// [`TransportError::Config`] if there is no such client, else as
    /// [`ClientCredentials::from_pem_files`].
    pub fn client_credentials(&self, name: &str) -> Result<ClientCredentials, TransportError> {
        let client = self
            .clients
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| TransportError::Config(format!("no client named {name:?}")))?;
        ClientCredentials::from_pem_files(&self.ca_cert, &client.cert, &client.key)
    }
}

/// Generates a CA and certificates for three parties named `identities` (DNS names, e.g.
/// [`DEFAULT_IDENTITIES`](crate::DEFAULT_IDENTITIES)). Keys are ECDSA P-256; each party
/// certificate carries its identity as a DNS subject alternative name and may act as TLS
/// client and server.
///
/// # Errors
/// [`TransportError::Config`] for an identity that is not a DNS name or repeated,
/// [`TransportError::CertGeneration`] if rcgen fails.
pub fn generate_deployment(identities: [&str; 3]) -> Result<GeneratedDeployment, TransportError> {
    generate_deployment_with_clients(identities, &[])
}

/// Generates a deployment as [`generate_deployment`] does, and with it a certificate and key
/// for each of `clients`, the clients of the inference service (`cryptgpu serve`), signed by
/// the same CA (whose key is not kept, so clients are made with the deployment). A client
/// certificate names the client (DNS subject alternative name and common name), has an ECDSA
/// P-256 key, and allows client authentication only: it cannot act as a TLS server, so never
/// as a party or a service endpoint.
///
/// Client names must be DNS names (not IP addresses), distinct from each other and from the
/// party identities (DNS names compare without regard to case), and no name may make a file
/// of [`GeneratedDeployment::write_pem_files`] collide with another (`ca`, or `x.key` beside
/// `x`).
///
/// # Errors
/// [`TransportError::Config`] for an identity or client name that is not a DNS name, is
/// repeated, or would overwrite another file; [`TransportError::CertGeneration`] if rcgen
/// fails.
pub fn generate_deployment_with_clients(
    identities: [&str; 3],
    clients: &[String],
) -> Result<GeneratedDeployment, TransportError> {
    for (i, id) in identities.iter().enumerate() {
        if identities[..i].contains(id) {
            return Err(TransportError::Config(format!(
                "identity {id:?} is given to two parties"
            )));
        }
        rustls::pki_types::ServerName::try_from(*id).map_err(|e| {
            TransportError::Config(format!("identity {id:?} is not a DNS name: {e}"))
        })?;
    }
    check_client_names(identities, clients)?;

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    // A name unique to this CA, so that a certificate from another deployment's CA is
    // reported as from an unknown issuer rather than as a bad signature.
    let fingerprint: String = ca_key
        .public_key_raw()
        .iter()
        .rev()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    ca_params.distinguished_name.push(
        DnType::CommonName,
        format!("cryptgpu deployment CA {fingerprint}"),
    );
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_cert_pem = ca_cert.pem();
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params, ca_key);

    let mut parties = Vec::with_capacity(3);
    for id in identities {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![id.to_string()])?;
        params.distinguished_name.push(DnType::CommonName, id);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &issuer)?;
        parties.push(GeneratedParty {
            identity: id.to_string(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        });
    }
    let mut generated_clients = Vec::with_capacity(clients.len());
    for name in clients {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(vec![name.clone()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &issuer)?;
        generated_clients.push(GeneratedClient {
            name: name.clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        });
    }
    let mut parties = parties.into_iter();
    let mut next = || {
        parties
            .next()
            .ok_or_else(|| TransportError::Config("three parties expected".to_string()))
    };
    Ok(GeneratedDeployment {
        ca_cert_pem,
        ca_key_pem,
        parties: [next()?, next()?, next()?],
        clients: generated_clients,
    })
}

/// Checks the client names of [`generate_deployment_with_clients`] (the identities are
/// checked already).
fn check_client_names(identities: [&str; 3], clients: &[String]) -> Result<(), TransportError> {
    for (i, name) in clients.iter().enumerate() {
        let dns = matches!(
            rustls::pki_types::ServerName::try_from(name.as_str()),
            Ok(rustls::pki_types::ServerName::DnsName(_))
        );
        if !dns {
            return Err(TransportError::Config(format!(
                "client name {name:?} is not a DNS name"
            )));
        }
        if identities.iter().any(|id| id.eq_ignore_ascii_case(name)) {
            return Err(TransportError::Config(format!(
                "client name {name:?} is a party's identity: clients need names of their own"
            )));
        }
        if clients[..i].iter().any(|c| c.eq_ignore_ascii_case(name)) {
            return Err(TransportError::Config(format!(
                "client name {name:?} is given twice"
            )));
        }
    }
    // The files write_pem_files writes, compared without regard to case (as some file
    // systems do): `ca.pem`, and per name `<name>.pem` and `<name>.key.pem`.
    let mut files = std::collections::HashSet::from(["ca.pem".to_string()]);
    for name in identities
        .iter()
        .copied()
        .chain(clients.iter().map(String::as_str))
    {
        for file in [format!("{name}.pem"), format!("{name}.key.pem")] {
            let file = file.to_ascii_lowercase();
            if !files.insert(file.clone()) {
                return Err(TransportError::Config(format!(
                    "the name {name:?} would write the file {file}, which is ca.pem or another \
                     name's file: choose another name"
                )));
            }
        }
    }
    Ok(())
}

fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), TransportError> {
    let err = |source| TransportError::File {
        path: path.to_path_buf(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).map_err(err)?;
    file.write_all(contents.as_bytes()).map_err(err)
}

impl GeneratedDeployment {
    /// The identities of P0, P1, P2.
    pub fn identities(&self) -> [String; 3] {
        [0, 1, 2].map(|i| self.parties[i].identity.clone())
    }

    /// `party`'s credentials.
    ///
    /// # Errors
    /// As [`PartyCredentials::from_pem`] (not expected for generated PEMs).
    pub fn credentials(&self, party: PartyId) -> Result<PartyCredentials, TransportError> {
        let p = &self.parties[party.index()];
        PartyCredentials::from_pem(&self.ca_cert_pem, &p.cert_pem, &p.key_pem)
    }

    /// The clients' certificates and keys, in the order they were asked for (none from
    /// [`generate_deployment`]).
    pub fn clients(&self) -> &[GeneratedClient] {
        &self.clients
    }

    /// The credentials of the client `name`: the CA (to trust for the servers), its
    /// certificate and key.
    ///
    /// # Errors
    /// [`TransportError::Config`] if there is no such client, else as
    /// [`ClientCredentials::from_pem`] (not expected for generated PEMs).
    pub fn client_credentials(&self, name: &str) -> Result<ClientCredentials, TransportError> {
        let c = self
            .clients
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| TransportError::Config(format!("no client named {name:?}")))?;
        ClientCredentials::from_pem(&self.ca_cert_pem, &c.cert_pem, &c.key_pem)
    }

    /// `party`'s TLS configuration: its credentials and this deployment's identities.
    ///
    /// # Errors
    /// As [`GeneratedDeployment::credentials`].
    pub fn tls_config(&self, party: PartyId) -> Result<TlsConfig, TransportError> {
        TlsConfig::new(self.credentials(party)?).with_identities(self.identities())
    }

    /// Writes `ca.pem` and, per party, `<identity>.pem` and `<identity>.key.pem`, per client
    /// `<name>.pem` and `<name>.key.pem` (keys with mode 0600 on Unix) into `dir`, creating it
    /// if needed. The CA key is not written.
    ///
    /// # Errors
    /// [`TransportError::File`] if the directory or a file cannot be written.
    pub fn write_pem_files(
        &self,
        dir: impl AsRef<Path>,
    ) -> Result<DeploymentFiles, TransportError> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(|source| TransportError::File {
            path: dir.to_path_buf(),
            source,
        })?;
        let ca_cert = dir.join("ca.pem");
        write_file(&ca_cert, &self.ca_cert_pem, false)?;
        let mut paths = Vec::with_capacity(3);
        for p in &self.parties {
            let cert = dir.join(format!("{}.pem", p.identity));
            let key = dir.join(format!("{}.key.pem", p.identity));
            write_file(&cert, &p.cert_pem, false)?;
            write_file(&key, &p.key_pem, true)?;
            paths.push((cert, key));
        }
        let mut clients = Vec::with_capacity(self.clients.len());
        for c in &self.clients {
            let cert = dir.join(format!("{}.pem", c.name));
            let key = dir.join(format!("{}.key.pem", c.name));
            write_file(&cert, &c.cert_pem, false)?;
            write_file(&key, &c.key_pem, true)?;
            clients.push(ClientFiles {
                name: c.name.clone(),
                cert,
                key,
            });
        }
        let mut paths = paths.into_iter();
        let mut next = || {
            paths
                .next()
                .ok_or_else(|| TransportError::Config("three parties expected".to_string()))
        };
        Ok(DeploymentFiles {
            ca_cert,
            parties: [next()?, next()?, next()?],
            clients,
        })
    }
}

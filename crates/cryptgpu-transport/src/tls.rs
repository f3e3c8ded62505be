//! Mutual-TLS credentials and the rustls configurations built from them.
//!
//! Every party holds a certificate signed by the deployment's CA whose subject alternative
//! name (a DNS name) is its identity, by default `party0`, `party1`, `party2`. A party accepts
//! a connection only from a peer whose certificate chains to the CA *and* names the identity
//! of the neighbour expected on that connection: as a TLS client it checks the server's
//! certificate against the next party's identity (standard server-name verification), as a
//! TLS server it requires a client certificate and checks it against the previous party's
//! identity. TLS 1.3 only, with the `ring` crypto provider.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore,
    ServerConfig, SignatureScheme,
};

use crate::{PartyId, TransportError};

/// The default identities of P0, P1, P2: the DNS names in their certificates.
pub const DEFAULT_IDENTITIES: [&str; 3] = ["party0", "party1", "party2"];

/// One party's TLS credentials: the deployment CA's certificate(s) to trust, the party's own
/// certificate chain (leaf first) and its private key.
pub struct PartyCredentials {
    ca_certs: Vec<CertificateDer<'static>>,
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for PartyCredentials {
    fn clone(&self) -> Self {
        PartyCredentials {
            ca_certs: self.ca_certs.clone(),
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for PartyCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartyCredentials")
            .field("ca_certs", &self.ca_certs.len())
            .field("cert_chain", &self.cert_chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

pub(crate) fn parse_certs(
    what: &str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TransportError::Credentials(format!("{what}: bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TransportError::Credentials(format!(
            "{what}: no CERTIFICATE block in the PEM"
        )));
    }
    Ok(certs)
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, TransportError> {
    std::fs::read(path).map_err(|source| TransportError::File {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a private key file, refusing (on Unix) one whose mode gives any permission to its
/// group or to other users, as ssh does: another user could have read the key, or replaced
/// it. The mode is checked on the opened file, so it is the mode of what is read.
///
/// # Errors
/// [`TransportError::KeyPermissions`] for such a file (its message says `chmod 600 PATH`),
/// [`TransportError::File`] if it cannot be opened or read.
pub fn read_private_key(path: impl AsRef<Path>) -> Result<Vec<u8>, TransportError> {
    use std::io::Read;

    let path = path.as_ref();
    let file_err = |source| TransportError::File {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(file_err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata().map_err(file_err)?.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(TransportError::KeyPermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    let mut pem = Vec::new();
    file.read_to_end(&mut pem).map_err(file_err)?;
    Ok(pem)
}

impl PartyCredentials {
    /// Credentials from PEM text: the CA certificate(s), this party's certificate chain (leaf
    /// first) and its private key (PKCS#8, PKCS#1 or SEC1).
    ///
    /// # Errors
    /// [`TransportError::Credentials`] if a PEM is malformed or lacks the expected block.
    pub fn from_pem(
        ca_pem: impl AsRef<[u8]>,
        cert_chain_pem: impl AsRef<[u8]>,
        key_pem: impl AsRef<[u8]>,
    ) -> Result<Self, TransportError> {
        let ca_certs = parse_certs("CA certificate", ca_pem.as_ref())?;
        let cert_chain = parse_certs("certificate chain", cert_chain_pem.as_ref())?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_ref())
            .map_err(|e| TransportError::Credentials(format!("private key: {e}")))?;
        Ok(PartyCredentials {
            ca_certs,
            cert_chain,
            key,
        })
    }

    /// Credentials from PEM files; see [`PartyCredentials::from_pem`]. The key file is read
    /// with [`read_private_key`], so on Unix it must be readable by its owner only.
    ///
    /// # Errors
    /// [`TransportError::File`] if a file cannot be read,
    /// [`TransportError::KeyPermissions`] for a key file open to other users, else as
    /// [`PartyCredentials::from_pem`].
    pub fn from_pem_files(
        ca_path: impl AsRef<Path>,
        cert_chain_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<Self, TransportError> {
        Self::from_pem(
            read_file(ca_path.as_ref())?,
            read_file(cert_chain_path.as_ref())?,
            read_private_key(key_path.as_ref())?,
        )
    }

    /// Credentials from DER: CA certificates, certificate chain (leaf first), private key.
    ///
    /// # Errors
    /// [`TransportError::Credentials`] if a list is empty.
    pub fn from_der(
        ca_certs: Vec<CertificateDer<'static>>,
        cert_chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TransportError> {
        if ca_certs.is_empty() || cert_chain.is_empty() {
            return Err(TransportError::Credentials(
                "empty CA or certificate chain".to_string(),
            ));
        }
        Ok(PartyCredentials {
            ca_certs,
            cert_chain,
            key,
        })
    }

    /// The trusted CA certificates (DER).
    pub fn ca_certs(&self) -> &[CertificateDer<'static>] {
        &self.ca_certs
    }

    /// This party's certificate chain (DER, leaf first).
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.cert_chain
    }
}

/// A root store holding `certs`, the CA certificates to trust.
pub(crate) fn root_store(
    certs: &[CertificateDer<'static>],
) -> Result<Arc<RootCertStore>, TransportError> {
    let mut roots = RootCertStore::empty();
    for ca in certs {
        roots
            .add(ca.clone())
            .map_err(|e| TransportError::Credentials(format!("CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

/// A TLS 1.3 client that verifies its server against `credentials`' CA certificates and the
/// server name given to each connection, presents `credentials`' certificate, and resumes
/// nothing: a party dialing its next party, or a client of the service.
pub(crate) fn client_config(
    credentials: &PartyCredentials,
) -> Result<Arc<ClientConfig>, TransportError> {
    let provider = provider();
    let verifier = WebPkiServerVerifier::builder_with_provider(
        root_store(&credentials.ca_certs)?,
        provider.clone(),
    )
    .build()
    .map_err(|e| TransportError::Credentials(format!("server verifier: {e}")))?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TransportError::Credentials(format!("TLS versions: {e}")))?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(credentials.cert_chain.clone(), credentials.key.clone_key())
        .map_err(|e| TransportError::Credentials(format!("own certificate or key: {e}")))?;
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// A TLS 1.3 server presenting `credentials`' certificate, its clients checked by
/// `verifier`, without session tickets: a party accepting its previous party, or a server
/// of the service.
pub(crate) fn server_config(
    credentials: &PartyCredentials,
    verifier: Arc<dyn ClientCertVerifier>,
) -> Result<ServerConfig, TransportError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TransportError::Credentials(format!("TLS versions: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(credentials.cert_chain.clone(), credentials.key.clone_key())
        .map_err(|e| TransportError::Credentials(format!("own certificate or key: {e}")))?;
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// What a party needs for mutual TLS: its [`PartyCredentials`] and the identities (certificate
/// DNS names) of the three parties, by default [`DEFAULT_IDENTITIES`].
#[derive(Clone, Debug)]
pub struct TlsConfig {
    credentials: PartyCredentials,
    identities: [String; 3],
}

impl TlsConfig {
    /// A configuration with the default identities `party0`, `party1`, `party2`.
    pub fn new(credentials: PartyCredentials) -> Self {
        TlsConfig {
            credentials,
            identities: DEFAULT_IDENTITIES.map(String::from),
        }
    }

    /// Replaces the identities of P0, P1, P2.
    ///
    /// # Errors
    /// [`TransportError::Config`] if an identity is not a valid DNS name or two are equal.
    pub fn with_identities(mut self, identities: [String; 3]) -> Result<Self, TransportError> {
        for (i, id) in identities.iter().enumerate() {
            server_name(id)?;
            if identities[..i].contains(id) {
                return Err(TransportError::Config(format!(
                    "identity {id:?} is given to two parties"
                )));
            }
        }
        self.identities = identities;
        Ok(self)
    }

    /// The identities of P0, P1, P2.
    pub fn identities(&self) -> &[String; 3] {
        &self.identities
    }

    /// The credentials.
    pub fn credentials(&self) -> &PartyCredentials {
        &self.credentials
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TransportError> {
        root_store(&self.credentials.ca_certs)
    }

    /// The client side, used by `party` to connect to its next party.
    pub(crate) fn client_config(&self) -> Result<Arc<ClientConfig>, TransportError> {
        client_config(&self.credentials)
    }

    /// The server side, used by `party` to accept its previous party.
    pub(crate) fn server_config(
        &self,
        party: PartyId,
    ) -> Result<Arc<ServerConfig>, TransportError> {
        let inner = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider())
            .build()
            .map_err(|e| TransportError::Credentials(format!("client verifier: {e}")))?;
        let expected = self.server_name(party.prev())?;
        let verifier = Arc::new(IdentityClientVerifier { inner, expected });
        Ok(Arc::new(server_config(&self.credentials, verifier)?))
    }

    /// The identity of `party` as a TLS server name.
    pub(crate) fn server_name(
        &self,
        party: PartyId,
    ) -> Result<ServerName<'static>, TransportError> {
        server_name(&self.identities[party.index()])
    }
}

/// Checks that `identity` can name a party: a DNS name, as in its certificate.
///
/// # Errors
/// [`TransportError::Config`] if it is not a DNS name.
pub fn check_identity(identity: &str) -> Result<(), TransportError> {
    server_name(identity).map(|_| ())
}

pub(crate) fn server_name(identity: &str) -> Result<ServerName<'static>, TransportError> {
    ServerName::try_from(identity.to_string()).map_err(|e| {
        TransportError::Config(format!("identity {identity:?} is not a DNS name: {e}"))
    })
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Verifies a client certificate against the CA (through `inner`) and then checks that it
/// names the expected party.
#[derive(Debug)]
struct IdentityClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    expected: ServerName<'static>,
}

impl ClientCertVerifier for IdentityClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        cert.verify_is_valid_for_subject_name(&self.expected)
            .map_err(|e| {
                let presented = match e {
                    webpki::Error::CertNotValidForName(context) => context.presented,
                    _ => Vec::new(),
                };
                rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                    expected: self.expected.clone(),
                    presented,
                })
            })?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

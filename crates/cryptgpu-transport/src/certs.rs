//! Generating a deployment's CA and the three parties' certificates (with `rcgen`), for tests
//! and for setting up a real deployment.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::{PartyCredentials, PartyId, TlsConfig, TransportError};

/// A freshly generated CA and one certificate and key per party.
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
}

impl std::fmt::Debug for GeneratedDeployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedDeployment")
            .field("identities", &self.identities())
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

/// Where [`GeneratedDeployment::write_pem_files`] put the files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeploymentFiles {
    /// The CA certificate, `ca.pem`.
    pub ca_cert: PathBuf,
    /// Per party: its certificate `<identity>.pem` and its key `<identity>.key.pem`.
    pub parties: [(PathBuf, PathBuf); 3],
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
    })
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

    /// `party`'s TLS configuration: its credentials and this deployment's identities.
    ///
    /// # Errors
    /// As [`GeneratedDeployment::credentials`].
    pub fn tls_config(&self, party: PartyId) -> Result<TlsConfig, TransportError> {
        TlsConfig::new(self.credentials(party)?).with_identities(self.identities())
    }

    /// Writes `ca.pem` and, per party, `<identity>.pem` and `<identity>.key.pem` (mode 0600 on
    /// Unix) into `dir`, creating it if needed. The CA key is not written.
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
        let mut paths = paths.into_iter();
        let mut next = || {
            paths
                .next()
                .ok_or_else(|| TransportError::Config("three parties expected".to_string()))
        };
        Ok(DeploymentFiles {
            ca_cert,
            parties: [next()?, next()?, next()?],
        })
    }
}

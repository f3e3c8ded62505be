//! Mutual TLS between the three servers of the inference service (`cryptgpu serve`) and the clients that query them (`cryptgpu query`).
//!
//! A server presents its party certificate (the one it uses towards the other parties) and
//! requires a client certificate that chains to the client CA: by default the deployment's
//! CA, which signs the client certificates that [`generate_deployment_with_clients`]
//! (`cryptgpu certs --clients N`) makes. A client checks each server against its CA
//! certificates and the server party's identity (standard server-name verification).
//!
//! Who may connect, and as what:
//! - a client certificate (extended key usage *client authentication* only, named by a DNS
//!   name that is no party's identity) is accepted by [`service_server_config`], and can
//!   never act as a server or a party: webpki refuses it as a server certificate, and a
//!   party's TLS server checks its peer's identity;
//! - a party certificate (client and server authentication) is accepted as a client too,
//!   when it chains to the client CA (always, with the default client CA): the hosts that run
//!   the servers may query their own service. [`check_client_name`] then names it by its
//!   party identity.
//!
//! The certificate says *that* a client belongs to the deployment; the name a client claims
//! (in the service's own hello) is checked against it with [`check_client_name`], so that
//! logs and per-client limits name clients truthfully. TLS 1.3 only, `ring` provider, no
//! session tickets or resumption.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ServerConfig};

use crate::tls::{client_config, parse_certs, provider, root_store, server_config};
use crate::{PartyCredentials, TransportError};

/// A client's TLS credentials: the CA certificate(s) it trusts to sign the servers'
/// certificates (the deployment's `ca.pem`), its own certificate chain (leaf first) and its
/// private key. They are a party's credentials in form ([`PartyCredentials`], whose
/// parsing and checks they use); only their use differs. `Debug` shows the number of
/// certificates, never the key.
#[derive(Clone, Debug)]
pub struct ClientCredentials(PartyCredentials);

impl ClientCredentials {
    /// Credentials from PEM text: the CA certificate(s) to trust for the servers, the
    /// client's certificate chain (leaf first) and its private key (PKCS#8, PKCS#1 or SEC1).
    ///
    /// # Errors
    /// [`TransportError::Credentials`] if a PEM is malformed or lacks the expected block.
    pub fn from_pem(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Self, TransportError> {
        PartyCredentials::from_pem(ca_pem, cert_pem, key_pem).map(ClientCredentials)
    }

    /// Credentials from PEM files; see [`ClientCredentials::from_pem`]. The key file is read
    /// with [`read_private_key`](crate::read_private_key), so on Unix it must be readable
    /// by its owner only.
    ///
    /// # Errors
    /// [`TransportError::File`] if a file cannot be read,
    /// [`TransportError::KeyPermissions`] for a key file open to other users, else as
    /// [`ClientCredentials::from_pem`].
    pub fn from_pem_files(
        ca: impl AsRef<Path>,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TransportError> {
        PartyCredentials::from_pem_files(ca, cert, key).map(ClientCredentials)
    }

    /// The CA certificates trusted for the servers (DER).
    pub fn ca_certs(&self) -> &[CertificateDer<'static>] {
        self.0.ca_certs()
    }

    /// The client's certificate chain (DER, leaf first).
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        self.0.cert_chain()
    }
}

/// The TLS server configuration of a service endpoint: the server presents `server`'s
/// certificate chain and key, and requires a client certificate that chains to the CA
/// certificates in `client_ca_pem` if given, else to the deployment CA
/// ([`PartyCredentials::ca_certs`]). TLS 1.3 only, no session tickets or stateful resumption.
///
/// Which client it is, is up to the caller: the verified leaf is
/// `ServerConnection::peer_certificates()[0]`, for [`check_client_name`].
///
/// # Errors
/// [`TransportError::Credentials`] if `client_ca_pem` holds no certificate or a bad one, or
/// the server's own certificate or key is unusable.
pub fn service_server_config(
    server: &PartyCredentials,
    client_ca_pem: Option<&str>,
) -> Result<Arc<ServerConfig>, TransportError> {
    let client_cas = match client_ca_pem {
        Some(pem) => parse_certs("client CA certificate", pem.as_bytes())?,
        None => server.ca_certs().to_vec(),
    };
    // Mandatory client authentication: the builder's default.
    let verifier =
        WebPkiClientVerifier::builder_with_provider(root_store(&client_cas)?, provider())
            .build()
            .map_err(|e| TransportError::Credentials(format!("client verifier: {e}")))?;
    let mut config = server_config(server, verifier)?;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(Arc::new(config))
}

/// The TLS client configuration of a client of the service: it verifies each server against
/// `client`'s CA certificates and the server name given to the connection (the server
/// party's identity, e.g. `party1`), and presents the client's certificate. TLS 1.3 only, no
/// resumption.
///
/// # Errors
/// [`TransportError::Credentials`] if a CA certificate or the client's certificate or key is
/// unusable.
pub fn service_client_config(
    client: &ClientCredentials,
) -> Result<Arc<ClientConfig>, TransportError> {
    client_config(&client.0)
}

/// Checks that `end_entity`, a client's leaf certificate (already verified against the client
/// CA by the handshake), is valid for the DNS name `name`: the name the client claims is its
/// own. A party's certificate passes for its identity.
///
/// # Errors
/// [`TransportError::Config`] if `name` is not a DNS name, [`TransportError::Credentials`] if
/// the certificate does not parse or does not name `name`.
pub fn check_client_name(
    end_entity: &CertificateDer<'_>,
    name: &str,
) -> Result<(), TransportError> {
    let expected = match ServerName::try_from(name) {
        Ok(dns @ ServerName::DnsName(_)) => dns,
        _ => {
            return Err(TransportError::Config(format!(
                "client name {name:?} is not a DNS name"
            )));
        }
    };
    let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|e| {
        TransportError::Credentials(format!("the client certificate does not parse: {e}"))
    })?;
    cert.verify_is_valid_for_subject_name(&expected)
        .map_err(|e| {
            let presented = match e {
                webpki::Error::CertNotValidForName(context) if context.presented.is_empty() => {
                    "it names no one".to_string()
                }
                webpki::Error::CertNotValidForName(context) => {
                    format!("it names {}", context.presented.join(", "))
                }
                other => other.to_string(),
            };
            TransportError::Credentials(format!(
                "the client certificate is not valid for the name {name:?} ({presented})"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DEFAULT_IDENTITIES, PartyId, TlsConfig, generate_deployment_with_clients};
    use rustls::{ClientConnection, ServerConnection};

    /// Runs a handshake in memory; returns the server's and the client's first error.
    fn handshake(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
        name: &str,
    ) -> (Option<rustls::Error>, Option<rustls::Error>) {
        let name = ServerName::try_from(name.to_string()).unwrap();
        let mut s = ServerConnection::new(server).unwrap();
        let mut c = ClientConnection::new(client, name).unwrap();
        let (mut server_err, mut client_err) = (None, None);
        for _ in 0..10 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            let mut read = &buf[..];
            while !read.is_empty() && server_err.is_none() {
                s.read_tls(&mut read).unwrap();
                if let Err(e) = s.process_new_packets() {
                    server_err = Some(e);
                }
            }
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            let mut read = &buf[..];
            while !read.is_empty() && client_err.is_none() {
                c.read_tls(&mut read).unwrap();
                if let Err(e) = c.process_new_packets() {
                    client_err = Some(e);
                }
            }
            if server_err.is_some() || client_err.is_some() {
                break;
            }
            if !s.is_handshaking() && !c.is_handshaking() {
                break;
            }
        }
        (server_err, client_err)
    }

    /// A client certificate cannot stand in for a party: a party's TLS server (which expects
    /// its previous party) refuses it, and so does a party's TLS client asking for the next.
    #[test]
    fn a_client_certificate_cannot_act_as_a_party() {
        let clients = ["client0".to_string()];
        let d = generate_deployment_with_clients(DEFAULT_IDENTITIES, &clients).unwrap();
        let client = d.client_credentials("client0").unwrap();
        // The party-to-party server of P1 expects P0.
        let p1 = d.tls_config(PartyId::P1).unwrap();
        let (server_err, _) = handshake(
            p1.server_config(PartyId::P1).unwrap(),
            service_client_config(&client).unwrap(),
            "party1",
        );
        let e = server_err.expect("P1 refuses a client certificate");
        assert!(format!("{e:?}").contains("NotValidForName"), "{e:?}");
        // A party-to-party client refuses a client's certificate as its next party's, even
        // under the client's own name (its key usage is client authentication only).
        let as_party = PartyCredentials::from_pem(
            &d.ca_cert_pem,
            &d.clients()[0].cert_pem,
            &d.clients()[0].key_pem,
        )
        .unwrap();
        let p0 = TlsConfig::new(d.credentials(PartyId::P0).unwrap())
            .with_identities(["party0".into(), "client0".into(), "party2".into()])
            .unwrap();
        let (_, client_err) = handshake(
            service_server_config(&as_party, None).unwrap(),
            p0.client_config().unwrap(),
            "client0",
        );
        let e = client_err.expect("P0 refuses a client certificate as P1");
        assert!(format!("{e:?}").contains("InvalidPurpose"), "{e:?}");
        // And the party certificate itself is fine in both roles.
        let (s, c) = handshake(
            p1.server_config(PartyId::P1).unwrap(),
            d.tls_config(PartyId::P0).unwrap().client_config().unwrap(),
            "party1",
        );
        assert!(s.is_none() && c.is_none(), "{s:?} {c:?}");
    }
}

//! Tests of the inference service's TLS: clients with certificates from the deployment CA
//! reach a server over loopback TCP; clients from another CA, servers with the wrong identity
//! and client certificates acting as servers are refused; client names are checked against
//! certificates; client certificates are generated and written with the deployment.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use cryptgpu_transport::rustls::pki_types::{CertificateDer, ServerName};
use cryptgpu_transport::rustls::{
    ClientConfig, ClientConnection, ServerConfig, ServerConnection, StreamOwned,
};
use cryptgpu_transport::{
    ClientCredentials, DEFAULT_IDENTITIES, GeneratedDeployment, PartyCredentials, PartyId,
    TransportError, check_client_name, generate_deployment, generate_deployment_with_clients,
    service_client_config, service_server_config,
};

const TIMEOUT: Duration = Duration::from_secs(10);

fn with_clients(clients: &[&str]) -> GeneratedDeployment {
    let clients: Vec<String> = clients.iter().map(|c| c.to_string()).collect();
    generate_deployment_with_clients(DEFAULT_IDENTITIES, &clients).unwrap()
}

/// An error as a string: a TLS error inside an I/O error as its `Debug` form (e.g.
/// `InvalidCertificate(UnknownIssuer)`), anything else as its message.
fn describe(e: std::io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<cryptgpu_transport::rustls::Error>())
    {
        Some(tls) => format!("{tls:?}"),
        None => e.to_string(),
    }
}

/// What each side of [`session`] saw: the server the client's leaf certificate (or its
/// error), the client the server's reply (or its error).
struct Session {
    server: Result<CertificateDer<'static>, String>,
    client: Result<Vec<u8>, String>,
}

/// A TLS session over loopback TCP: the client connects to `server_name`, sends `ping`, the
/// server reads it and answers `pong`; both sides stop at their first error.
fn session(server: Arc<ServerConfig>, client: Arc<ClientConfig>, server_name: &str) -> Session {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server_side = thread::spawn(move || -> Result<CertificateDer<'static>, String> {
        let (sock, _) = listener.accept().map_err(describe)?;
        sock.set_read_timeout(Some(TIMEOUT)).unwrap();
        let conn = ServerConnection::new(server).map_err(|e| format!("{e:?}"))?;
        let mut tls = StreamOwned::new(conn, sock);
        let mut got = [0u8; 4];
        tls.read_exact(&mut got).map_err(describe)?;
        assert_eq!(&got, b"ping");
        tls.write_all(b"pong").map_err(describe)?;
        tls.flush().map_err(describe)?;
        let leaf = tls
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .cloned()
            .ok_or("no client certificate")?;
        Ok(leaf.into_owned())
    });
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    let client_side = (|| -> Result<Vec<u8>, String> {
        let sock = TcpStream::connect(addr).map_err(describe)?;
        sock.set_read_timeout(Some(TIMEOUT)).unwrap();
        let conn = ClientConnection::new(client, name).map_err(|e| format!("{e:?}"))?;
        let mut tls = StreamOwned::new(conn, sock);
        tls.write_all(b"ping").map_err(describe)?;
        let mut got = [0u8; 4];
        tls.read_exact(&mut got).map_err(describe)?;
        Ok(got.to_vec())
    })();
    Session {
        server: server_side.join().unwrap(),
        client: client_side,
    }
}

fn server_config(d: &GeneratedDeployment, party: PartyId) -> Arc<ServerConfig> {
    service_server_config(&d.credentials(party).unwrap(), None).unwrap()
}

fn client_config(d: &GeneratedDeployment, name: &str) -> Arc<ClientConfig> {
    service_client_config(&d.client_credentials(name).unwrap()).unwrap()
}

#[test]
fn a_client_with_a_deployment_certificate_talks_to_a_server() {
    let d = with_clients(&["client0", "client1"]);
    for (party, name) in PartyId::ALL.into_iter().zip(DEFAULT_IDENTITIES) {
        let s = session(server_config(&d, party), client_config(&d, "client1"), name);
        assert_eq!(s.client.unwrap(), b"pong");
        let leaf = s.server.unwrap();
        check_client_name(&leaf, "client1").unwrap();
        for other in ["client0", "party0", "party1", "party2", "client10"] {
            let e = check_client_name(&leaf, other).unwrap_err();
            assert!(matches!(e, TransportError::Credentials(_)), "{e}");
            let e = e.to_string();
            assert!(e.contains(other) && e.contains("client1"), "{e}");
        }
    }
}

#[test]
fn a_client_certificate_from_another_deployment_is_refused() {
    let d = with_clients(&["client0"]);
    let other = with_clients(&["client0"]);
    // The client trusts this deployment's CA for the server, but its own certificate (a
    // client's, then a party's) comes from the other deployment.
    let foreign = [
        (&other.clients()[0].cert_pem, &other.clients()[0].key_pem),
        (&other.parties[1].cert_pem, &other.parties[1].key_pem),
    ];
    for (cert, key) in foreign {
        let creds = ClientCredentials::from_pem(&d.ca_cert_pem, cert, key).unwrap();
        let s = session(
            server_config(&d, PartyId::P0),
            service_client_config(&creds).unwrap(),
            "party0",
        );
        let e = s.server.unwrap_err();
        assert!(e.contains("UnknownIssuer"), "server: {e}");
        let e = s.client.unwrap_err();
        assert!(e.contains("AlertReceived"), "client: {e}");
    }
}

#[test]
fn a_separate_client_ca_replaces_the_deployment_ca_for_clients() {
    let d = with_clients(&["client0"]);
    let clients = with_clients(&["client0"]);
    let server = service_server_config(
        &d.credentials(PartyId::P2).unwrap(),
        Some(&clients.ca_cert_pem),
    )
    .unwrap();
    // A client of the client CA, trusting the deployment CA for the server, gets in.
    let c = &clients.clients()[0];
    let creds = ClientCredentials::from_pem(&d.ca_cert_pem, &c.cert_pem, &c.key_pem).unwrap();
    let s = session(
        server.clone(),
        service_client_config(&creds).unwrap(),
        "party2",
    );
    assert_eq!(s.client.unwrap(), b"pong");
    check_client_name(&s.server.unwrap(), "client0").unwrap();
    // The deployment's own client does not.
    let s = session(server.clone(), client_config(&d, "client0"), "party2");
    assert!(s.server.unwrap_err().contains("UnknownIssuer"));
    // Nor does a party: it chains to the deployment CA only.
    let p = &d.parties[0];
    let creds = ClientCredentials::from_pem(&d.ca_cert_pem, &p.cert_pem, &p.key_pem).unwrap();
    let s = session(server, service_client_config(&creds).unwrap(), "party2");
    assert!(s.server.is_err());
    // A client CA that is not a certificate is an error.
    let e = service_server_config(&d.credentials(PartyId::P0).unwrap(), Some("junk"));
    assert!(matches!(e, Err(TransportError::Credentials(_))));
}

/// Documented choice: a party's certificate is a client certificate too (it allows client
/// authentication), so the hosts of the servers may query; its name is its identity.
#[test]
fn a_party_certificate_is_accepted_as_a_client() {
    let d = with_clients(&[]);
    let p = &d.parties[2];
    let creds = ClientCredentials::from_pem(&d.ca_cert_pem, &p.cert_pem, &p.key_pem).unwrap();
    let s = session(
        server_config(&d, PartyId::P0),
        service_client_config(&creds).unwrap(),
        "party0",
    );
    assert_eq!(s.client.unwrap(), b"pong");
    let leaf = s.server.unwrap();
    check_client_name(&leaf, "party2").unwrap();
    assert!(check_client_name(&leaf, "party0").is_err());
}

#[test]
fn a_client_refuses_a_server_with_the_wrong_identity() {
    let d = with_clients(&["client0"]);
    // P1 answers where the client expects P2.
    let s = session(
        server_config(&d, PartyId::P1),
        client_config(&d, "client0"),
        "party2",
    );
    let e = s.client.unwrap_err();
    assert!(e.contains("NotValidForName"), "client: {e}");
    assert!(s.server.is_err());
    // A server of another deployment with the right name.
    let other = with_clients(&[]);
    let s = session(
        server_config(&other, PartyId::P2),
        client_config(&d, "client0"),
        "party2",
    );
    assert!(s.client.unwrap_err().contains("UnknownIssuer"));
}

#[test]
fn a_client_certificate_cannot_act_as_a_server() {
    let d = with_clients(&["client0"]);
    let c = &d.clients()[0];
    // A "server" presenting client0's certificate, to a client that even asks for client0:
    // the certificate's name and CA fit, its key usage does not.
    let fake = PartyCredentials::from_pem(&d.ca_cert_pem, &c.cert_pem, &c.key_pem).unwrap();
    let s = session(
        service_server_config(&fake, None).unwrap(),
        client_config(&d, "client0"),
        "client0",
    );
    let e = s.client.unwrap_err();
    assert!(e.contains("InvalidPurpose"), "client: {e}");
}

#[test]
fn check_client_name_wants_a_dns_name() {
    let d = with_clients(&["client0"]);
    let creds = d.client_credentials("client0").unwrap();
    let leaf = &creds.cert_chain()[0];
    for bad in ["", "not a name", "127.0.0.1"] {
        let e = check_client_name(leaf, bad).unwrap_err();
        assert!(matches!(e, TransportError::Config(_)), "{bad:?}: {e}");
    }
    let junk = CertificateDer::from(vec![1u8, 2, 3]);
    assert!(matches!(
        check_client_name(&junk, "client0"),
        Err(TransportError::Credentials(_))
    ));
}

#[test]
fn client_names_are_checked() {
    let gen_ = |names: &[&str]| {
        let names: Vec<String> = names.iter().map(|c| c.to_string()).collect();
        generate_deployment_with_clients(DEFAULT_IDENTITIES, &names)
    };
    let cases: [(&[&str], &str); 7] = [
        (&["client0", "client0"], "given twice"),
        (&["client0", "CLIENT0"], "given twice"),
        (&["party1"], "party's identity"),
        (&["Party1"], "party's identity"),
        (&["a b"], "not a DNS name"),
        (&["10.0.0.1"], "not a DNS name"),
        (&["ca"], "ca.pem"),
    ];
    for (names, want) in cases {
        let e = gen_(names).unwrap_err();
        assert!(matches!(e, TransportError::Config(_)), "{names:?}: {e}");
        assert!(e.to_string().contains(want), "{names:?}: {e}");
    }
    let e = gen_(&["party0.key"]).unwrap_err().to_string();
    assert!(e.contains("party0.key.pem"), "{e}");
    let e = gen_(&["x", "x.key"]).unwrap_err().to_string();
    assert!(e.contains("x.key.pem"), "{e}");
    // generate_deployment makes no clients; names made of other names' parts are fine.
    assert!(
        generate_deployment(DEFAULT_IDENTITIES)
            .unwrap()
            .clients()
            .is_empty()
    );
    let d = gen_(&["client0", "client0.example", "party0-reader"]).unwrap();
    let names: Vec<&str> = d.clients().iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["client0", "client0.example", "party0-reader"]);
    assert!(d.client_credentials("client1").is_err());
}

#[test]
fn client_files_are_written_with_private_keys_and_load_back() {
    let d = with_clients(&["client0", "client1"]);
    let dir = std::env::temp_dir().join(format!(
        "cryptgpu-transport-service-tls-{}",
        std::process::id()
    ));
    let files = d.write_pem_files(&dir).unwrap();
    assert_eq!(files.clients.len(), 2);
    for (i, c) in files.clients.iter().enumerate() {
        assert_eq!(c.name, format!("client{i}"));
        assert_eq!(c.cert, dir.join(format!("client{i}.pem")));
        assert_eq!(c.key, dir.join(format!("client{i}.key.pem")));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&c.key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", c.key.display());
        }
    }
    let creds = files.client_credentials("client1").unwrap();
    assert!(files.client_credentials("client2").is_err());
    let server = service_server_config(&files.credentials(PartyId::P0).unwrap(), None).unwrap();
    let s = session(server, service_client_config(&creds).unwrap(), "party0");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(s.client.unwrap(), b"pong");
    check_client_name(&s.server.unwrap(), "client1").unwrap();
    // Debug never shows a key.
    let shown = format!("{creds:?} {d:?} {:?}", d.clients());
    assert!(
        !shown.contains("PRIVATE") && !shown.contains("MII"),
        "{shown}"
    );
    assert!(shown.contains("redacted"), "{shown}");
}

#[cfg(unix)]
#[test]
fn a_client_key_that_others_may_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let d = with_clients(&["client0"]);
    let dir = std::env::temp_dir().join(format!(
        "cryptgpu-transport-service-tls-mode-{}",
        std::process::id()
    ));
    let files = d.write_pem_files(&dir).unwrap();
    let key = &files.clients[0].key;
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = files.client_credentials("client0").unwrap_err();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(matches!(e, TransportError::KeyPermissions { .. }), "{e}");
}

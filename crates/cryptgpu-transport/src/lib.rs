//! Party-to-party transport for the three parties P0, P1, P2 of cryptgpu, which sit in a ring
//! (each talks to its next and previous party).
//!
//! - [`Transport`]: the object-safe trait protocols use: `send`, `recv`, `exchange`,
//!   `exchange_both` and their `u64` forms. Sending never waits for the receiver, so no
//!   exchange pattern deadlocks, and receiving is bounded by a timeout.
//! - [`LocalTransport`] and [`run_local_3pc`]: the three parties as threads of one process
//!   over channels, the default for tests, demos and benches.
//! - [`TcpTransport`]: the parties as processes over TCP with mutual TLS (rustls, TLS 1.3,
//!   `ring`), each party authenticated by a certificate from the deployment CA naming its
//!   identity; messages of any size in bounded frames, heartbeats, and failures passed on so
//!   that a dead, stalled or misbehaving party stops the other two with its name and a
//!   [`FailureKind`] (never an error's text, which may hold secrets);
//!   [`generate_deployment`] makes the CA and certificates; [`run_tls_loopback_3pc`] runs
//!   three parties over loopback TLS in one process.
//! - [`service_server_config`], [`service_client_config`], [`ClientCredentials`] and
//!   [`check_client_name`]: mutual TLS between the parties as servers of the inference
//!   service and its clients, whose certificates [`generate_deployment_with_clients`] makes
//!   (client authentication only, so a client can never act as a party).
//! - [`Counting`] and [`CommStats`]: bytes, messages and rounds per party, with the round
//!   definition of PROTOCOLS.md.
//! - [`EmulatedLink`] and [`LinkProfile`]: a wrapper that delivers each message no earlier
//!   than it would arrive over a link of a given bandwidth and round-trip time ([`LinkProfile::LAN`],
//!   [`LinkProfile::WAN`], or parsed by [`parse_link`]), for parties on one machine.
//!
//! ```
//! use cryptgpu_transport::{Counting, Peer, Transport, run_local_3pc};
//!
//! let results = run_local_3pc(|t| {
//!     let mut t = Counting::new(t);
//!     let me = t.party().index() as u64;
//!     // Each party sends its index to the next party and receives the previous one's.
//!     let got = t.exchange_u64s(Peer::Next, &[me], Peer::Prev).unwrap();
//!     (got[0], t.stats().rounds)
//! })
//! .unwrap();
//! assert_eq!(results, [(2, 1), (0, 1), (1, 1)]);
//! ```

#![forbid(unsafe_code)]

mod certs;
mod counting;
mod emulated_link;
mod error;
mod failure;
mod frame;
mod link;
mod local;
mod party;
mod runner;
mod service_tls;
mod tcp;
mod tls;
mod transport;

use std::time::Duration;

pub use certs::{
    ClientFiles, DeploymentFiles, GeneratedClient, GeneratedDeployment, GeneratedParty,
    generate_deployment, generate_deployment_with_clients,
};
pub use counting::{CommStats, Counting, PeerCounts, StatsHandle};
pub use emulated_link::{EmulatedLink, LinkProfile, Uplink, parse_link};
pub use error::TransportError;
pub use failure::FailureKind;
pub use local::{LocalConfig, LocalTransport, run_local_3pc, run_local_3pc_with};
pub use party::{PartyId, Peer};
/// The rustls this crate is built on, for the configurations it returns
/// ([`service_server_config`], [`service_client_config`]) and the connections made with them.
pub use rustls;
pub use service_tls::{
    ClientCredentials, check_client_name, service_client_config, service_server_config,
};
pub use tcp::{
    AbortHandle, AcceptFrom, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_MESSAGE_LEN, DEFAULT_QUEUE_LIMIT,
    LinkConfig, NetworkConfig, TcpTransport, run_tls_loopback_3pc,
};
pub use tls::{DEFAULT_IDENTITIES, PartyCredentials, TlsConfig, check_identity, read_private_key};
pub use transport::{Handle, Transport, le_bytes_to_u64s, u64s_to_le_bytes};

/// Default receive timeout of both transports: 120 s. Long enough for a party to compute
/// between messages, short enough that a protocol bug or a silent peer ends in
/// [`TransportError::Timeout`] rather than a hang.
pub const DEFAULT_RECV_TIMEOUT: Duration = Duration::from_secs(120);

/// Default maximum payload of one TCP frame: 1 MiB (messages are cut into frames of at most
/// 256 KiB, so this bounds what a peer can make a party buffer, not the size of a message).
pub const DEFAULT_MAX_FRAME_LEN: u64 = 1 << 20;

/// The largest maximum frame payload a [`LinkConfig`] may set: 16 MiB. Data frames are never
/// larger than 256 KiB, so a larger limit would only let a peer make a party allocate more
/// for one frame.
pub const MAX_FRAME_LEN_LIMIT: u64 = 16 << 20;

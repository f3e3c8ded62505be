//! cryptgpu as one dependency: every crate of the workspace under one name, and a
//! [`prelude`] with what a program needs to share values, run protocols on them and reveal
//! the results, in one process or as one party of three over TLS.
//!
//! ```
//! use cryptgpu::prelude::*;
//!
//! let x = [1.5, -2.0, 3.25];
//! let revealed = run_local_3pc(|t| -> Result<Vec<f64>, Box<dyn std::error::Error + Send + Sync>> {
//!     let mut p = Party::setup(CpuBackend::new(), t, FixedPoint::default())?;
//!     let mine = (p.id() == PartyId::P0).then_some(&x[..]);
//!     let shared = p.share_f64(PartyId::P0, mine, &[3])?;
//!     let relu = nl::relu_value(&mut p, &shared)?;
//!     Ok(p.reveal_f64(&relu)?)
//! })
//! .unwrap();
//! for party in revealed {
//!     assert_eq!(party.unwrap(), [1.5, 0.0, 3.25]);
//! }
//! ```
//!
//! Whole jobs are library calls, the same ones the `cryptgpu` command makes: [`local::infer`]
//! and [`local::train`] run a private job's three parties in this process on a [`device::Device`]
//! (`auto`, `cpu`, `cuda`, `wgpu`); [`tls_party::TlsParty`] runs one party of three over mutual
//! TLS as `parties.toml` ([`config::Deployment`]) describes it; both run the one party-local
//! job function, [`jobs::run_party`], after agreeing the job's [`manifest`].
//!
//! A service that stays up is [`serve`]: three servers share a model once and answer
//! queries from clients who run no server ([`serve::client::Client`]).
//!
//! The backends: [`cpu`] always (the reference every backend agrees with bit for bit), [`cuda`]
//! and [`wgpu`] with the features of those names (both on by default, so that the command's
//! `auto` finds a GPU; `default-features = false` builds the CPU backend alone, and a device
//! not compiled in is a clear error at run time).

#![forbid(unsafe_code)]

pub mod config;
pub mod demo;
pub mod device;
pub mod failure;
pub mod files;
pub mod jobs;
pub mod local;
pub mod manifest;
pub mod models;
pub mod roles;
pub mod serve;
pub mod tls_party;

pub use cryptgpu_backend as backend;
pub use cryptgpu_cpu as cpu;
#[cfg(feature = "cuda")]
pub use cryptgpu_cuda as cuda;
pub use cryptgpu_nn as nn;
pub use cryptgpu_nonlinear as nonlinear;
pub use cryptgpu_ring as ring;
pub use cryptgpu_share as share;
pub use cryptgpu_transport as transport;
#[cfg(feature = "wgpu")]
pub use cryptgpu_wgpu as wgpu;

/// What most programs use: the backend trait and backends, the fixed-point format, a party
/// and its sharings, the transports, and the non-linear protocols as `nl`.
pub mod prelude {
    pub use cryptgpu_backend::{DeviceCounts, DeviceTensor, GpuBackend};
    pub use cryptgpu_cpu::CpuBackend;
    #[cfg(feature = "cuda")]
    pub use cryptgpu_cuda::CudaBackend;
    pub use cryptgpu_nonlinear as nl;
    pub use cryptgpu_ring::FixedPoint;
    pub use cryptgpu_share::{Bilinear, KeySource, Party, Rss, SharedBits, Truncation};
    pub use cryptgpu_transport::{
        CommStats, Counting, LocalTransport, PartyId, Peer, TcpTransport, Transport, run_local_3pc,
    };
    #[cfg(feature = "wgpu")]
    pub use cryptgpu_wgpu::WgpuBackend;
}

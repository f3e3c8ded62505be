//! 2-out-of-3 replicated secret sharing over Z_2^64 for three parties, on any
//! [`GpuBackend`](cryptgpu_backend::GpuBackend): key setup, input and reveal, local linear
//! ops, products (elementwise, matmul, convolution and its gradients) with a mandatory fresh
//! zero sharing and one resharing round, and fixed-point truncation.
//!
//! Protocol logic is apart from I/O: a [`Party`] talks through any
//! [`cryptgpu_transport::Transport`] (in-process channels or mutual-TLS TCP), wrapped in a
//! counter, and never knows which. See [`arith`] for each op's rounds and bytes and for the
//! truncation's error and failure odds, and `PROTOCOLS.md` for the protocols themselves.
//!
//! ```
//! use cryptgpu_cpu::CpuBackend;
//! use cryptgpu_ring::FixedPoint;
//! use cryptgpu_share::Party;
//! use cryptgpu_transport::{run_local_3pc, PartyId};
//!
//! let results = run_local_3pc(|transport| {
//!     let mut party = Party::setup(CpuBackend::new(), transport, FixedPoint::default())?;
//!     let mine = (party.id() == PartyId::P0).then_some(&[1.5, -2.0][..]);
//!     let x = party.share_f64(PartyId::P0, mine, &[2])?;
//!     let theirs = (party.id() == PartyId::P1).then_some(&[4.0, 0.25][..]);
//!     let y = party.share_f64(PartyId::P1, theirs, &[2])?;
//!     let xy = party.mul_fixed(&x, &y)?;
//!     party.reveal_f64(&xy)
//! })
//! .unwrap();
//! for values in results {
//!     let values = values.unwrap();
//!     assert!((values[0] - 6.0).abs() < 1e-5 && (values[1] + 0.5).abs() < 1e-5);
//! }
//! ```

#![forbid(unsafe_code)]

pub mod arith;
pub mod binary;
mod error;
mod party;
mod rss;
pub mod truncation;

#[cfg(test)]
mod privacy_tests;

pub use arith::Bilinear;
pub use binary::SharedBits;
pub use error::{OutOfComparisonRange, Result, ShareError};
pub use party::{COMPARISON_BITS, KeySource, Party, check_comparable, default_comparison_bits};
pub use rss::{BinaryRss, Rss};
pub use truncation::Truncation;

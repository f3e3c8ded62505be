//! The one error type of the non-linear protocols: sharing and device errors wrapped as
//! they are, and arguments outside a function's domain.

use cryptgpu_backend::BackendError;
use cryptgpu_ring::RingError;
use cryptgpu_share::ShareError;

/// What can go wrong in a non-linear protocol.
#[derive(Debug, thiserror::Error)]
pub enum NonlinearError {
    /// A sharing protocol failed (a peer left, a message did not fit, ...).
    #[error(transparent)]
    Share(#[from] ShareError),
    /// A device op failed or refused its arguments.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A public constant could not be encoded in fixed point.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// A public argument the function cannot take (an axis out of range, an empty axis,
    /// an option out of its domain).
    #[error("{op}: {why}")]
    Argument {
        /// The function.
        op: &'static str,
        /// What is wrong.
        why: String,
    },
}

/// The result type of the non-linear protocols.
pub type Result<T, E = NonlinearError> = std::result::Result<T, E>;

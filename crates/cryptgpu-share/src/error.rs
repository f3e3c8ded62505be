//! The one error type of the sharing layer: backend, transport and encoding errors wrapped
//! as they are, and protocol errors of its own.

use cryptgpu_backend::BackendError;
use cryptgpu_ring::RingError;
use cryptgpu_transport::{PartyId, TransportError};

/// What can go wrong in a sharing protocol.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// A device op failed or refused its arguments.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A message could not be sent or received (a peer disconnected, timed out, ...).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A value could not be encoded in fixed point (out of range, not finite).
    #[error(transparent)]
    Ring(#[from] RingError),
    /// A peer's message does not fit the protocol step (wrong length, in ring elements, or in
    /// bytes during setup): the parties are out of step or the peer misbehaves.
    #[error("{op}: {peer} sent a message of {got} where {expected} were expected")]
    UnexpectedMessage {
        /// The protocol step.
        op: &'static str,
        /// The sender.
        peer: PartyId,
        /// Length expected.
        expected: usize,
        /// Length received.
        got: usize,
    },
    /// The input owner shares a tensor of another shape than this party asked for (the
    /// same number of elements in another shape included): the parties disagree on the job.
    #[error("{op}: {owner} shares a tensor of shape {theirs:?} where shape {ours:?} was expected")]
    ShapeDisagreement {
        /// The protocol step.
        op: &'static str,
        /// The input's owner.
        owner: PartyId,
        /// The shape this party passed.
        ours: Vec<usize>,
        /// The shape the owner shares.
        theirs: Vec<usize>,
    },
    /// The input owner called `share` without its input, or another party passed one.
    #[error("{op}: {party} {why}")]
    Input {
        /// The protocol step.
        op: &'static str,
        /// The party that called it wrongly.
        party: PartyId,
        /// What is wrong.
        why: &'static str,
    },
    /// Two shared operands whose shapes do not fit.
    #[error("{op}: shapes {lhs:?} and {rhs:?} do not fit")]
    Shape {
        /// The op.
        op: &'static str,
        /// First operand's shape.
        lhs: Vec<usize>,
        /// Second operand's shape.
        rhs: Vec<usize>,
    },
    /// A protocol argument out of its domain (a shift too wide, an empty axis, ...).
    #[error("{op}: {why}")]
    Argument {
        /// The op.
        op: &'static str,
        /// What is wrong.
        why: String,
    },
    /// A value that its owner was about to share lies outside the comparison domain: found
    /// by the owner on its plaintext, before sharing. Its text must stay with the owner.
    #[error(transparent)]
    OutOfComparisonRange(#[from] OutOfComparisonRange),
    /// The operating system gave no randomness for the keys.
    #[error("could not draw key material from the operating system: {0}")]
    Entropy(String),
}

/// The result type of the sharing layer.
pub type Result<T, E = ShareError> = std::result::Result<T, E>;

/// A value that its owner was about to share (the data owner's input, the model owner's
/// parameter or constant) lies outside the comparison domain [−2^ℓ, 2^ℓ)
/// (`Party::comparison_bits`), where comparisons, ReLU, max-pooling and Clip would be
/// silently wrong: found by the owner on its plaintext, before anything is sent
/// ([`crate::Party::check_comparable`]). The text names the tensor and the value, so it must
/// stay on the owner's machine.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error(
    "{tensor}: value {value} at index {index} is outside the comparison range \
     [−{limit}, {limit}) (2^{comparison_bits} at {frac_bits} fractional bits): \
     comparisons would be wrong; widen it with `--comparison-bits` (up to 62) or use \
     fewer fractional bits"
)]
pub struct OutOfComparisonRange {
    /// The tensor: "input" or a parameter's name.
    pub tensor: String,
    /// The first offending element's position in the tensor (row-major).
    pub index: usize,
    /// Its value, in real terms.
    pub value: f64,
    /// The domain's bound in real terms, 2^(ℓ − f): values must be in [−limit, limit).
    pub limit: f64,
    /// ℓ.
    pub comparison_bits: u32,
    /// f.
    pub frac_bits: u32,
}

//! The one error type of the backend layer: bad arguments, and device failures wrapped as they are.

/// What can go wrong in a backend op.
///
/// Shape and argument errors are found before any device work starts, so a failed op
/// leaves every input tensor as it was.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Two operands' shapes do not fit together.
    #[error("{op}: shapes {lhs:?} and {rhs:?} do not fit together: {why}")]
    ShapeMismatch {
        /// The op that refused them.
        op: &'static str,
        /// The first operand's shape.
        lhs: Vec<usize>,
        /// The second operand's shape.
        rhs: Vec<usize>,
        /// Which rule the shapes break.
        why: String,
    },
    /// A data buffer whose length is not the number of elements of its shape.
    #[error("{op}: shape {shape:?} holds {expected} elements but {actual} were given")]
    LengthMismatch {
        /// The op that refused it.
        op: &'static str,
        /// The shape asked for.
        shape: Vec<usize>,
        /// Elements the shape holds.
        expected: usize,
        /// Elements given.
        actual: usize,
    },
    /// An argument out of its domain: an axis past the rank, a shift of 64 or more, a zero stride.
    #[error("{op}: {why}")]
    InvalidArgument {
        /// The op that refused it.
        op: &'static str,
        /// What is wrong, in words.
        why: String,
    },
    /// The backend asked for is not in this build.
    #[error(
        "the {backend} backend is not compiled into this build; rebuild with `--features {feature}`"
    )]
    NotCompiledWith {
        /// The backend's name, e.g. `cuda`.
        backend: &'static str,
        /// The cargo feature that adds it.
        feature: &'static str,
    },
    /// The backend is compiled in but finds no device to run on.
    #[error("no {backend} device available: {why}")]
    NoDevice {
        /// The backend's name.
        backend: &'static str,
        /// Why none was found.
        why: String,
    },
    /// A device buffer that does not fit: the party's account of the memory ledger would go
    /// past its limit ([`crate::memory::set_party_limit`]; refused before anything is
    /// allocated), or the device's driver had no more memory (`by_driver`). Only sizes: no
    /// value of any tensor.
    #[error("a device buffer does not fit: {0}")]
    OutOfDeviceMemory(crate::memory::Shortfall),
    /// A failure of the device or its driver, as the backend reported it.
    #[error(transparent)]
    Device(#[from] Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// The result type of every backend op.
pub type Result<T, E = BackendError> = std::result::Result<T, E>;

impl BackendError {
    /// An [`BackendError::InvalidArgument`] for `op`.
    pub fn invalid(op: &'static str, why: impl Into<String>) -> Self {
        Self::InvalidArgument {
            op,
            why: why.into(),
        }
    }

    /// What an [`BackendError::OutOfDeviceMemory`] lacked, as one value; `None` for every
    /// other error.
    pub fn shortfall(&self) -> Option<crate::memory::Shortfall> {
        match *self {
            Self::OutOfDeviceMemory(shortfall) => Some(shortfall),
            _ => None,
        }
    }

    /// A [`BackendError::ShapeMismatch`] for `op`.
    pub fn shapes(op: &'static str, lhs: &[usize], rhs: &[usize], why: impl Into<String>) -> Self {
        Self::ShapeMismatch {
            op,
            lhs: lhs.to_vec(),
            rhs: rhs.to_vec(),
            why: why.into(),
        }
    }
}

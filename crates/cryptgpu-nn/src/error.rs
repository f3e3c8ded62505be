//! The one error type of the neural-network crate.

use std::path::PathBuf;

/// What can go wrong while building, loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    /// A node's input shape does not fit its op (found during shape inference or execution).
    #[error("node `{node}` ({op}): {message}")]
    Shape {
        /// The node's name.
        node: String,
        /// The op's name.
        op: &'static str,
        /// What does not fit.
        message: String,
    },
    /// A model graph is malformed (an input id that does not exist, a second input, ...).
    #[error("invalid model graph: {0}")]
    Graph(String),
    /// `zoo::build` was asked for a model it does not know.
    #[error("unknown model `{name}`; known models: {}", known.join(", "))]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// The names the zoo knows.
        known: Vec<String>,
    },
    /// A parameter tensor the model needs is absent.
    #[error("missing parameter `{name}` (expected shape {expected:?}){context}")]
    MissingParameter {
        /// The parameter's name (a PyTorch state_dict key).
        name: String,
        /// The shape the model expects.
        expected: Vec<usize>,
        /// Where it was looked for (e.g. " in weights file x.safetensors"), or empty.
        context: String,
    },
    /// A parameter tensor has the wrong shape.
    #[error("parameter `{name}` has shape {found:?} but the model expects {expected:?}{context}")]
    ParameterShape {
        /// The parameter's name.
        name: String,
        /// The shape the model expects.
        expected: Vec<usize>,
        /// The shape found.
        found: Vec<usize>,
        /// Where it was found, or empty.
        context: String,
    },
    /// Tensors that the model has no parameter for.
    #[error("unexpected tensors {names:?}{context}: the model has no parameters of these names")]
    UnexpectedParameters {
        /// Their names.
        names: Vec<String>,
        /// Where they were found, or empty.
        context: String,
    },
    /// A tensor's data length does not match its shape.
    #[error("tensor of shape {shape:?} needs {expected} values, got {got}")]
    TensorLength {
        /// The shape.
        shape: Vec<usize>,
        /// Elements the shape holds.
        expected: usize,
        /// Elements given.
        got: usize,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A safetensors file is malformed or holds a dtype we cannot read.
    #[error("safetensors {context}: {message}")]
    Safetensors {
        /// The file or step.
        context: String,
        /// What went wrong.
        message: String,
    },
    /// An ONNX file is malformed or uses something outside the supported subset.
    #[error("ONNX: {0}")]
    Onnx(String),
    /// An ONNX node whose op is not in the supported layer set.
    #[error("ONNX: unsupported op `{op}` in node `{node}`; supported ops: {supported}")]
    UnsupportedOnnxOp {
        /// The op type.
        op: String,
        /// The node's name (or its first output when unnamed).
        node: String,
        /// The op types the importer takes.
        supported: String,
    },
    /// A data set's files are not where they were looked for.
    #[error(
        "{dataset} data not found in {dir}: expected {} (raw or gzip-compressed where noted); {origin}",
        files.join(", ")
    )]
    MissingData {
        /// The data set (e.g. "MNIST").
        dataset: &'static str,
        /// The directory searched.
        dir: PathBuf,
        /// The files expected there.
        files: Vec<String>,
        /// Where the files come from.
        origin: &'static str,
    },
    /// A data file is malformed.
    #[error("{path}: {message}")]
    BadData {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An argument out of range (batch size 0, labels out of range, ...).
    #[error("{0}")]
    InvalidArgument(String),
    /// A value that its owner was about to share lies outside the comparison domain: found
    /// by the owner on its plaintext, before anything is sent. Its text names the tensor
    /// and the value, so it must stay on the owner's machine. (The sharing layer's
    /// `ShareError::OutOfComparisonRange`, lifted here.)
    #[error(transparent)]
    OutOfComparisonRange(cryptgpu_share::OutOfComparisonRange),
    /// A layer of the private executor whose device buffers do not fit: its party's limit
    /// in the device-memory ledger (`cryptgpu_backend::memory`), or the device's memory, is
    /// reached. Names the layer and the bytes, never a value.
    #[error("layer `{node}` ({op}, {pass}) does not fit: {shortfall}")]
    LayerOutOfMemory {
        /// The node's name.
        node: String,
        /// Its op kind.
        op: &'static str,
        /// `forward` or `backward`.
        pass: &'static str,
        /// The bytes asked for, held and allowed.
        shortfall: cryptgpu_backend::memory::Shortfall,
    },
    /// A private protocol failed (a peer left, a message did not fit, a device op failed).
    #[error(transparent)]
    Protocol(#[from] cryptgpu_nonlinear::NonlinearError),
}

/// The result type of the neural-network crate.
pub type Result<T, E = NnError> = std::result::Result<T, E>;

impl From<cryptgpu_share::ShareError> for NnError {
    fn from(e: cryptgpu_share::ShareError) -> Self {
        match e {
            cryptgpu_share::ShareError::OutOfComparisonRange(range) => {
                NnError::OutOfComparisonRange(range)
            }
            e => NnError::Protocol(e.into()),
        }
    }
}

impl NnError {
    /// The device-memory shortfall this error is, if it is one (a backend's
    /// `OutOfDeviceMemory`, however deep in the protocol layers, or a layer's).
    pub fn shortfall(&self) -> Option<cryptgpu_backend::memory::Shortfall> {
        use cryptgpu_nonlinear::NonlinearError;
        use cryptgpu_share::ShareError;
        match self {
            NnError::LayerOutOfMemory { shortfall, .. } => Some(*shortfall),
            NnError::Protocol(
                NonlinearError::Backend(e) | NonlinearError::Share(ShareError::Backend(e)),
            ) => e.shortfall(),
            _ => None,
        }
    }

    /// This error as node `node`'s (of kind `op`, in its `pass`) if it is a device-memory
    /// shortfall that names no layer yet; otherwise unchanged.
    pub(crate) fn in_layer(self, node: &str, op: &'static str, pass: &'static str) -> NnError {
        match self.shortfall() {
            Some(shortfall) if !matches!(self, NnError::LayerOutOfMemory { .. }) => {
                NnError::LayerOutOfMemory {
                    node: node.to_string(),
                    op,
                    pass,
                    shortfall,
                }
            }
            _ => self,
        }
    }
}

impl From<cryptgpu_backend::BackendError> for NnError {
    fn from(e: cryptgpu_backend::BackendError) -> Self {
        NnError::Protocol(e.into())
    }
}

impl From<cryptgpu_ring::RingError> for NnError {
    fn from(e: cryptgpu_ring::RingError) -> Self {
        NnError::Protocol(cryptgpu_share::ShareError::from(e).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptgpu_backend::BackendError;
    use cryptgpu_backend::memory::Shortfall;
    use cryptgpu_nonlinear::NonlinearError;
    use cryptgpu_share::ShareError;

    const SHORT: Shortfall = Shortfall {
        requested: 25_700_000,
        live: 39_990_000_000,
        limit: 40_000_000_000,
        party: Some(1),
        by_driver: false,
    };

    #[test]
    fn a_shortfall_from_any_depth_is_named_after_its_layer_once() {
        for deep in [
            NnError::from(BackendError::from(SHORT)),
            NnError::from(ShareError::Backend(SHORT.into())),
            NnError::Protocol(NonlinearError::Share(ShareError::Backend(SHORT.into()))),
        ] {
            assert_eq!(deep.shortfall(), Some(SHORT));
            let named = deep.in_layer("features.28", "Conv2d", "forward");
            assert_eq!(
                named.to_string(),
                "layer `features.28` (Conv2d, forward) does not fit: 25.7 MB more device \
                 memory needed, party P1 already holds 39.99 GB of its 40.00 GB limit"
            );
            // A layer inside another (a moved ReLU, an accumulated gradient) keeps the first.
            let again = named.in_layer("outer", "Add", "backward");
            assert!(
                again.to_string().starts_with("layer `features.28`"),
                "{again}"
            );
        }
        let other = NnError::from(BackendError::invalid("matmul", "no"));
        assert_eq!(other.shortfall(), None);
        assert!(matches!(
            other.in_layer("fc", "Gemm", "forward"),
            NnError::Protocol(NonlinearError::Backend(
                BackendError::InvalidArgument { .. }
            ))
        ));
    }
}

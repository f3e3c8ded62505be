//! What a failing party tells the other two: the category of its failure
//! ([`FailureKind`]), never its text. The text of a local error names files, values, indices
//! and shapes of the owner's private data; it stays on the owner's own terminal.
//!
//! [`classify`] reads the category off the error: the out-of-range errors of the fixed-point
//! encoding and of the owners' range checks, output paths that cannot be written, device
//! errors, and the stage the error came from ([`Stage`], a context that names it: the job
//! manifest, the data owner's examples, the model owner's model). Whatever it cannot place
//! is an internal error.

use std::fmt;

use cryptgpu_backend::BackendError;
use cryptgpu_nn::NnError;
use cryptgpu_nonlinear::NonlinearError;
use cryptgpu_ring::RingError;
use cryptgpu_share::ShareError;
use cryptgpu_transport::{FailureKind, TransportError};

use crate::files::output::OutputError;

/// A context naming the stage of a job an error came from, and so its category; it reads
/// as a prefix of the error's text.
#[derive(Clone, Copy, Debug)]
pub struct Stage {
    /// The category of a failure in this stage.
    pub kind: FailureKind,
    /// The stage, in words.
    what: &'static str,
}

impl Stage {
    const fn new(kind: FailureKind, what: &'static str) -> Stage {
        Stage { kind, what }
    }

    /// Agreeing on the job manifest.
    pub const MANIFEST: Stage = Stage::new(FailureKind::Protocol, "job manifest");
    /// Reading the data owner's examples (before connecting, or once the manifest brings the
    /// model's input shape).
    pub const DATA: Stage = Stage::new(FailureKind::MalformedInput, "the data owner's examples");
    /// The command line and the deployment: an option that is another party's, a file it
    /// names that this party cannot use.
    pub const USAGE: Stage = Stage::new(FailureKind::Usage, "command line");
    /// Reading the model owner's model.
    pub const MODEL: Stage = Stage::new(FailureKind::MalformedInput, "the model owner's model");
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what)
    }
}

/// Whether a fixed-point encoding error means a value that cannot be shared (out of range or
/// not finite).
fn ring_out_of_range(e: &RingError) -> bool {
    matches!(
        e,
        RingError::NotFinite { .. }
            | RingError::NotFiniteAt { .. }
            | RingError::OutOfRange { .. }
            | RingError::OutOfRangeAt { .. }
            | RingError::ProductOverflow { .. }
    )
}

/// The category of a sharing-layer error, if it has one of its own.
fn share_kind(e: &ShareError) -> Option<FailureKind> {
    match e {
        ShareError::Ring(r) if ring_out_of_range(r) => Some(FailureKind::InputOutOfRange),
        ShareError::OutOfComparisonRange(_) => Some(FailureKind::InputOutOfRange),
        ShareError::Backend(_) => Some(FailureKind::Device),
        ShareError::Transport(_) => Some(FailureKind::Protocol),
        _ => None,
    }
}

/// The category of a non-linear protocol error, if it has one of its own.
fn nonlinear_kind(e: &NonlinearError) -> Option<FailureKind> {
    match e {
        NonlinearError::Share(s) => share_kind(s),
        NonlinearError::Backend(_) => Some(FailureKind::Device),
        NonlinearError::Ring(r) if ring_out_of_range(r) => Some(FailureKind::InputOutOfRange),
        _ => None,
    }
}

/// The category of a network-crate error, if it has one of its own.
fn nn_kind(e: &NnError) -> Option<FailureKind> {
    match e {
        NnError::Protocol(p) => nonlinear_kind(p),
        NnError::OutOfComparisonRange(_) => Some(FailureKind::InputOutOfRange),
        NnError::LayerOutOfMemory { .. } => Some(FailureKind::Device),
        NnError::Io { .. }
        | NnError::BadData { .. }
        | NnError::MissingData { .. }
        | NnError::Safetensors { .. }
        | NnError::Onnx(_)
        | NnError::UnsupportedOnnxOp { .. } => Some(FailureKind::MalformedInput),
        _ => None,
    }
}

/// The category of a local failure `e`, the only thing about it the other parties are told.
pub fn classify(e: &anyhow::Error) -> FailureKind {
    // The error's own type first: it is the most precise (a value out of range inside the
    // data owner's examples is out of range, not merely malformed).
    let own = if let Some(r) = e.downcast_ref::<RingError>() {
        ring_out_of_range(r).then_some(FailureKind::InputOutOfRange)
    } else if let Some(n) = e.downcast_ref::<NnError>() {
        nn_kind(n)
    } else if let Some(n) = e.downcast_ref::<NonlinearError>() {
        nonlinear_kind(n)
    } else if let Some(s) = e.downcast_ref::<ShareError>() {
        share_kind(s)
    } else if e.downcast_ref::<OutputError>().is_some() {
        Some(FailureKind::OutputUnwritable)
    } else if e.downcast_ref::<BackendError>().is_some() {
        Some(FailureKind::Device)
    } else if e.downcast_ref::<TransportError>().is_some() {
        Some(FailureKind::Protocol)
    } else {
        None
    };
    if let Some(kind) = own {
        return kind;
    }
    if let Some(stage) = e.downcast_ref::<Stage>() {
        return stage.kind;
    }
    if e.downcast_ref::<std::io::Error>().is_some() {
        return FailureKind::LocalIo;
    }
    FailureKind::Internal
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn errors_are_placed_by_type_then_by_stage() {
        let ring = RingError::OutOfRangeAt {
            index: 300,
            value: 9.88e14,
            max_abs: 1.4e14,
        };
        let deep: anyhow::Error =
            NnError::Protocol(NonlinearError::Share(ShareError::Ring(ring))).into();
        let deep = deep.context("sharing the input").context(Stage::DATA);
        assert_eq!(classify(&deep), FailureKind::InputOutOfRange);
        let nan: anyhow::Error = RingError::NotFiniteAt {
            index: 100,
            value: f64::NAN,
        }
        .into();
        assert_eq!(classify(&nan), FailureKind::InputOutOfRange);
        let bad = anyhow::anyhow!("/secret/path/in.npy: bad header").context(Stage::DATA);
        assert_eq!(classify(&bad), FailureKind::MalformedInput);
        let usage = anyhow::anyhow!("--data is P1's to pass").context(Stage::USAGE);
        assert_eq!(classify(&usage), FailureKind::Usage);
        let manifest = anyhow::anyhow!("`batch` differs").context(Stage::MANIFEST);
        assert_eq!(classify(&manifest), FailureKind::Protocol);
        let out: anyhow::Error = OutputError {
            option: "--out",
            path: "/x/p.xlsx".into(),
            why: "unknown format".into(),
        }
        .into();
        assert_eq!(classify(&out), FailureKind::OutputUnwritable);
        let io: anyhow::Error = std::io::Error::other("disk").into();
        assert_eq!(classify(&io.context("writing")), FailureKind::LocalIo);
        let device: anyhow::Error = BackendError::NoDevice {
            backend: "cuda",
            why: "none".into(),
        }
        .into();
        assert_eq!(classify(&device), FailureKind::Device);
        let shortfall = cryptgpu_backend::memory::Shortfall {
            requested: 25_700_000,
            live: 39_990_000_000,
            limit: 40_000_000_000,
            party: Some(1),
            by_driver: false,
        };
        let layer: anyhow::Error = NnError::LayerOutOfMemory {
            node: "features.28".into(),
            op: "Conv2d",
            pass: "forward",
            shortfall,
        }
        .into();
        assert_eq!(classify(&layer.context("P1")), FailureKind::Device);
        let unplaced: anyhow::Error =
            NnError::Protocol(NonlinearError::Backend(shortfall.into())).into();
        assert_eq!(classify(&unplaced), FailureKind::Device);
        assert_eq!(
            classify(&anyhow::anyhow!("something else")),
            FailureKind::Internal
        );
        let file = std::fs::read("/nonexistent/cryptgpu/file")
            .context("reading")
            .unwrap_err();
        assert_eq!(classify(&file), FailureKind::LocalIo);
    }
}

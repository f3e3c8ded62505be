//! Neural networks for cryptgpu: models as small DAGs ([`model`]), the exact architectures
//! CryptGPU benchmarks ([`zoo`]), an f64 plaintext executor that is the reference for the
//! private one ([`plain`]), SGD ([`optim`]), safetensors weights ([`weights`]), ONNX import
//! ([`onnx`]) and data loaders ([`data`]).
//!
//! The private executor (secret-shared, on any `GpuBackend`) walks the same [`Model`]
//! graph: see [`model`] for the walk, the parameter names and layouts.
//!
//! ```
//! use cryptgpu_nn::{plain, zoo};
//!
//! let model = zoo::build("lenet", zoo::Pooling::Avg).unwrap();
//! let shapes = model.shapes(8).unwrap();
//! assert_eq!(shapes[model.output()], vec![8, 10]);
//! assert_eq!(model.params["features.0.weight"].shape(), &[20, 1, 5, 5]);
//! # let _ = plain::Mode::Inference;
//! ```

#![forbid(unsafe_code)]

pub mod data;
mod error;
pub mod layers;
pub mod model;
pub mod onnx;
pub mod optim;
pub mod plain;
pub mod private;
#[cfg(feature = "suite")]
pub mod suite;
mod tensor;
pub mod weights;
pub mod zoo;

pub use error::{NnError, Result};
pub use model::{Model, Node, NodeId, Op};
pub use tensor::Tensor;

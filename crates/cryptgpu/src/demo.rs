//! The demo's bundled model and data: a LeNet the project trained on MNIST (plaintext, by
//! `crates/cryptgpu-nn/examples/train_lenet.rs`) and the first 1000 MNIST test digits (see
//! `assets/mnist-sample/LICENSE` for their source and licence), both compiled into the
//! binary so that `cryptgpu demo` needs no files.

use anyhow::Result;
use cryptgpu_nn::data::{self, Dataset, Normalization};
use cryptgpu_nn::model::Model;
use cryptgpu_nn::{weights, zoo};

const LENET_WEIGHTS: &[u8] = include_bytes!("../assets/lenet-mnist.safetensors");
const SAMPLE_IMAGES: &[u8] = include_bytes!("../assets/mnist-sample/t10k-images-idx3-ubyte.gz");
const SAMPLE_LABELS: &[u8] = include_bytes!("../assets/mnist-sample/t10k-labels-idx1-ubyte.gz");

/// The bundled LeNet (average pooling, as CryptGPU's), with its trained weights.
pub fn lenet() -> Result<Model> {
    let mut model = zoo::build("lenet", zoo::Pooling::Avg)?;
    weights::load_bytes(&mut model, LENET_WEIGHTS, "the bundled LeNet weights")?;
    Ok(model)
}

/// The bundled MNIST test digits, normalised as the LeNet expects.
pub fn mnist_sample() -> Result<Dataset> {
    // The loader gunzips what starts with the gzip magic bytes.
    Ok(data::mnist_from_bytes(
        SAMPLE_IMAGES,
        SAMPLE_LABELS,
        &Normalization::mnist(),
        None,
    )?)
}

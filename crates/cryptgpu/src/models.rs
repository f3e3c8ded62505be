//! The model owner's model: a zoo network (seeded, or with safetensors weights) or an ONNX
//! graph with its weights, and saving a trained model atomically, readable by its owner only.

use std::path::Path;

use anyhow::{Context, Result, bail};
use cryptgpu_nn::model::Model;
use cryptgpu_nn::{onnx, weights, zoo};

/// Which model, as the model owner names it: a zoo network and its pooling, and weights.
#[derive(Clone, Debug, Default)]
pub struct ModelSource<'a> {
    /// A zoo model (`lenet`, `secureml`, `alexnet-cifar10`, ...); may be left out with an
    /// ONNX file, whose graph is the model.
    pub name: Option<&'a str>,
    /// Pooling of zoo models: `avg` (the default) or `max`.
    pub pooling: Option<&'a str>,
    /// Weights: a `.safetensors` file for the zoo model, or an `.onnx` file.
    pub weights: Option<&'a Path>,
}

/// The model for inference: an ONNX graph, or a zoo model with its safetensors weights (or
/// its seeded initial weights, with a note on stderr).
pub fn load_model(source: &ModelSource<'_>) -> Result<Model> {
    let pooling = source.pooling.unwrap_or("avg");
    if let Some(path) = source
        .weights
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
    {
        let model = onnx::import_file(path)?;
        if let Some(name) = source.name {
            // Names the architecture the user expects: check it exists.
            zoo::build(name, pooling.parse()?)?;
        }
        return Ok(model);
    }
    let Some(name) = source.name else {
        bail!(
            "--model is needed unless --weights is an .onnx file; known models: {}",
            zoo::MODELS.join(", ")
        );
    };
    let mut model = zoo::build(name, pooling.parse()?)?;
    if let Some(path) = source.weights {
        weights::load(&mut model, path)?;
    } else {
        eprintln!("note: no --weights given: {name} runs with its seeded initial weights");
    }
    Ok(model)
}

/// The initial model for training: `weights` (an ONNX graph with its weights, or a zoo
/// model's safetensors) to fine-tune, else the zoo model seeded by `seed`.
pub fn initial_model(source: &ModelSource<'_>, seed: u64) -> Result<Model> {
    if source.weights.is_some() {
        return load_model(source);
    }
    let name = source.name.with_context(|| {
        format!(
            "--model is needed (a zoo model to train from its seeded initialisation: {}), or \
             --weights with an .onnx file to fine-tune",
            zoo::MODELS.join(", ")
        )
    })?;
    let pooling = source.pooling.unwrap_or("avg");
    Ok(zoo::build_seeded(name, pooling.parse()?, seed)?)
}

/// Writes a model atomically: safetensors (PyTorch names) or ONNX, by the extension.
pub fn save_model(model: &Model, path: &Path) -> Result<()> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let bytes = match extension.as_deref() {
        Some("safetensors") => weights::encode(&model.params, &weights::model_metadata(model))?,
        Some("onnx") => onnx::export(model, onnx::TensorEncoding::Raw)?,
        _ => bail!(
            "--save {}: the file must end in .safetensors or .onnx",
            path.display()
        ),
    };
    // The trained model is the model owner's secret: readable by its owner only.
    crate::files::atomic::write_private_atomically(path, &bytes)
}

//! Model parameters as safetensors: saved as little-endian f32 under their PyTorch
//! `state_dict` names, loaded from f32 or f64, and checked against the model with errors
//! that name the tensor and both shapes.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::{SafeTensors, serialize};

use crate::error::{NnError, Result};
use crate::model::Model;
use crate::tensor::Tensor;

/// Metadata key holding the model's name.
pub const META_MODEL: &str = "cryptgpu.model";
/// Metadata key holding the input normalisation, as `mean=a,b,c;std=d,e,f`.
pub const META_NORMALIZATION: &str = "cryptgpu.normalization";

/// Encodes tensors as a safetensors file (f32), with `metadata`.
pub fn encode(
    params: &BTreeMap<String, Tensor>,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = params
        .iter()
        .map(|(name, t)| {
            let data = t.to_f32().iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), t.shape().to_vec(), data)
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|view| (name.clone(), view))
                .map_err(|e| NnError::Safetensors {
                    context: format!("tensor `{name}`"),
                    message: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata: HashMap<String, String> = metadata.clone().into_iter().collect();
    let bytes = serialize(views, Some(metadata)).map_err(|e| NnError::Safetensors {
        context: "encoding".into(),
        message: e.to_string(),
    })?;
    canonical_header(bytes)
}

/// The same file with its JSON header's keys sorted: `safetensors` writes the metadata in
/// hash-map order, which differs from run to run, and equal weights must give equal files.
fn canonical_header(bytes: Vec<u8>) -> Result<Vec<u8>> {
    let err = |message: String| NnError::Safetensors {
        context: "encoding".into(),
        message,
    };
    let len = bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n <= bytes.len() - 8)
        .ok_or_else(|| err("the encoder wrote no header".into()))?;
    // serde_json's map keeps its keys sorted.
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len])
        .map_err(|e| err(format!("the encoder's header: {e}")))?;
    let mut text = serde_json::to_vec(&header).map_err(|e| err(e.to_string()))?;
    // Data stays aligned to 8 bytes, as the format recommends.
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - len);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + len..]);
    Ok(out)
}

/// Decodes every tensor of a safetensors file (f32 or f64) and its metadata; `context`
/// names the source in errors.
#[allow(clippy::type_complexity)]
pub fn decode(
    bytes: &[u8],
    context: &str,
) -> Result<(BTreeMap<String, Tensor>, BTreeMap<String, String>)> {
    let err = |message: String| NnError::Safetensors {
        context: context.to_owned(),
        message,
    };
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| err(e.to_string()))?;
    let file = SafeTensors::deserialize(bytes).map_err(|e| err(e.to_string()))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in file.tensors() {
        let data: Vec<f64> = match view.dtype() {
            Dtype::F32 => view
                .data()
                .chunks_exact(4)
                .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
            Dtype::F64 => view
                .data()
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("chunks of 8")))
                .collect(),
            other => {
                return Err(err(format!(
                    "tensor `{name}` has dtype {other:?}; only F32 and F64 are read"
                )));
            }
        };
        tensors.insert(name, Tensor::new(view.shape(), data)?);
    }
    let metadata = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    Ok((tensors, metadata))
}

/// The metadata [`save`] writes for `model`.
pub fn model_metadata(model: &Model) -> BTreeMap<String, String> {
    let mut metadata = BTreeMap::new();
    metadata.insert("format".into(), "pt".into());
    metadata.insert(META_MODEL.into(), model.name().to_owned());
    if let Some(norm) = &model.normalization {
        let list = |v: &[f64]| {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        metadata.insert(
            META_NORMALIZATION.into(),
            format!("mean={};std={}", list(&norm.mean), list(&norm.std)),
        );
    }
    metadata
}

/// Writes `model`'s parameters to `path` as f32 safetensors, with the model's name and
/// normalisation in the metadata.
pub fn save(model: &Model, path: &Path) -> Result<()> {
    let bytes = encode(&model.params, &model_metadata(model))?;
    std::fs::write(path, bytes).map_err(|source| NnError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Loads `path` into `model`'s parameters. The file must hold exactly the model's
/// parameters with the model's shapes; otherwise the model is unchanged and the error names
/// the tensor (and both shapes, for a mismatch).
pub fn load(model: &mut Model, path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|source| NnError::Io {
        path: path.to_owned(),
        source,
    })?;
    load_bytes(model, &bytes, &path.display().to_string())
}

/// [`load`] from bytes in memory; `source` names them in errors.
pub fn load_bytes(model: &mut Model, bytes: &[u8], source: &str) -> Result<()> {
    let (tensors, _) = decode(bytes, source)?;
    model.check_params(&tensors, &format!(" in weights file {source}"))?;
    model.params = tensors;
    Ok(())
}

//! safetensors save and load: round trip, f64 files, and errors that name the tensor.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cryptgpu_nn::weights;
use cryptgpu_nn::zoo::{self, Pooling};
use cryptgpu_nn::{NnError, Tensor};

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cryptgpu-nn-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn save_then_load_round_trips_through_f32() {
    let model = zoo::build_seeded("lenet", Pooling::Avg, 3).unwrap();
    let path = temp_path("lenet.safetensors");
    weights::save(&model, &path).unwrap();
    let mut loaded = zoo::build_seeded("lenet", Pooling::Avg, 4).unwrap();
    assert_ne!(loaded.params, model.params);
    weights::load(&mut loaded, &path).unwrap();
    for (name, t) in &model.params {
        let back = &loaded.params[name];
        assert_eq!(back.shape(), t.shape(), "{name}");
        for (a, b) in t.data().iter().zip(back.data()) {
            assert_eq!(*b, f64::from(*a as f32), "{name}: stored as f32");
        }
    }
    let (_, metadata) = weights::decode(&std::fs::read(&path).unwrap(), "test").unwrap();
    assert_eq!(metadata[weights::META_MODEL], "lenet");
    assert_eq!(
        metadata[weights::META_NORMALIZATION],
        "mean=0.1307;std=0.3081"
    );
}

#[test]
fn equal_weights_give_equal_files() {
    // The metadata map of the encoder has a random order per map; the file must not.
    let model = zoo::build_seeded("secureml", Pooling::Avg, 3).unwrap();
    let metadata = weights::model_metadata(&model);
    let first = weights::encode(&model.params, &metadata).unwrap();
    for _ in 0..8 {
        assert!(weights::encode(&model.params, &metadata).unwrap() == first);
    }
    let (back, meta) = weights::decode(&first, "test").unwrap();
    assert_eq!(back.len(), model.params.len());
    assert_eq!(meta, metadata);
    // The data starts 8-byte aligned.
    let header = u64::from_le_bytes(first[..8].try_into().unwrap());
    assert_eq!(header % 8, 0);
}

#[test]
fn f64_files_load_too() {
    let model = zoo::build_seeded("secureml", Pooling::Avg, 1).unwrap();
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> = model
        .params
        .iter()
        .map(|(n, t)| {
            let bytes = t.data().iter().flat_map(|v| v.to_le_bytes()).collect();
            (n.clone(), t.shape().to_vec(), bytes)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = raw
        .iter()
        .map(|(n, s, b)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F64, s.clone(), b)
                .unwrap();
            (n.clone(), view)
        })
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    let mut loaded = zoo::build_seeded("secureml", Pooling::Avg, 2).unwrap();
    weights::load_bytes(&mut loaded, &bytes, "f64 file").unwrap();
    assert_eq!(loaded.params, model.params, "f64 values load exactly");
}

fn file_with(params: &BTreeMap<String, Tensor>) -> Vec<u8> {
    weights::encode(params, &BTreeMap::new()).unwrap()
}

#[test]
fn mismatches_name_the_tensor_and_both_shapes() {
    let mut model = zoo::build("lenet", Pooling::Avg).unwrap();
    let before = model.params.clone();

    let mut wrong = model.params.clone();
    wrong.insert("features.3.weight".into(), Tensor::zeros(&[50, 20, 3, 3]));
    let err = weights::load_bytes(&mut model, &file_with(&wrong), "w.safetensors").unwrap_err();
    assert!(matches!(err, NnError::ParameterShape { .. }));
    let msg = err.to_string();
    for part in [
        "features.3.weight",
        "[50, 20, 3, 3]",
        "[50, 20, 5, 5]",
        "w.safetensors",
    ] {
        assert!(msg.contains(part), "`{part}` not in: {msg}");
    }

    let mut missing = model.params.clone();
    missing.remove("classifier.3.bias");
    let err = weights::load_bytes(&mut model, &file_with(&missing), "m").unwrap_err();
    assert!(
        err.to_string()
            .contains("missing parameter `classifier.3.bias`"),
        "{err}"
    );

    let mut extra = model.params.clone();
    extra.insert("classifier.5.weight".into(), Tensor::zeros(&[2, 2]));
    let err = weights::load_bytes(&mut model, &file_with(&extra), "e").unwrap_err();
    assert!(err.to_string().contains("classifier.5.weight"), "{err}");

    let err = weights::load_bytes(&mut model, b"not a safetensors file", "junk").unwrap_err();
    assert!(matches!(err, NnError::Safetensors { .. }), "{err}");

    let err = weights::load(&mut model, &temp_path("does-not-exist.safetensors")).unwrap_err();
    assert!(
        err.to_string().contains("does-not-exist.safetensors"),
        "{err}"
    );

    assert_eq!(model.params, before, "a failed load changes nothing");
}

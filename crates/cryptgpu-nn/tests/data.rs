//! Data loaders on files the tests write: MNIST idx raw and gzip, CIFAR-10 binary batches,
//! clear errors for missing or malformed files, the synthetic generator and epoch order.

use std::io::Write;
use std::path::{Path, PathBuf};

use cryptgpu_nn::NnError;
use cryptgpu_nn::data::{
    Normalization, Split, encode_idx, epoch_order, load_cifar10, load_mnist, synthetic,
};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cryptgpu-nn-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// Writes a 3-image MNIST-like test split; `gz` picks compressed files.
fn write_mnist(dir: &Path, gz: bool, labels: &[u8]) {
    let n = labels.len();
    let pixels: Vec<u8> = (0..n * 4 * 5).map(|i| (i * 13 % 256) as u8).collect();
    let images = encode_idx(&[n, 4, 5], &pixels).unwrap();
    let labels = encode_idx(&[n], labels).unwrap();
    for (name, bytes) in [
        ("t10k-images-idx3-ubyte", images),
        ("t10k-labels-idx1-ubyte", labels),
    ] {
        if gz {
            std::fs::write(dir.join(format!("{name}.gz")), gzip(&bytes)).unwrap();
        } else {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

#[test]
fn mnist_loads_raw_and_gzip_alike_and_normalises() {
    let raw = temp_dir("raw");
    let gz = temp_dir("gz");
    write_mnist(&raw, false, &[7, 2, 1]);
    write_mnist(&gz, true, &[7, 2, 1]);
    let norm = Normalization::mnist();
    let a = load_mnist(&raw, Split::Test, &norm, None).unwrap();
    let b = load_mnist(&gz, Split::Test, &norm, None).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.image_shape, [1, 4, 5]);
    assert_eq!(a.labels, [7, 2, 1]);
    let pixel = 13.0 / 255.0; // image 0, pixel 1
    let want = ((pixel - 0.1307) / 0.3081) as f32;
    assert!((a.images[1] - want).abs() < 1e-6);
    let limited = load_mnist(&gz, Split::Test, &norm, Some(2)).unwrap();
    assert_eq!(limited.len(), 2);
    let from_bytes = cryptgpu_nn::data::mnist_from_bytes(
        &std::fs::read(gz.join("t10k-images-idx3-ubyte.gz")).unwrap(),
        &std::fs::read(raw.join("t10k-labels-idx1-ubyte")).unwrap(),
        &norm,
        None,
    )
    .unwrap();
    assert_eq!(from_bytes, a);
    let (batch, labels) = a.batch(&[2, 0]).unwrap();
    assert_eq!(batch.shape(), &[2, 1, 4, 5]);
    assert_eq!(labels, [1, 7]);
    assert!(a.batch(&[3]).is_err());
}

#[test]
fn missing_mnist_says_which_files_and_where_from() {
    let dir = temp_dir("empty");
    let err = load_mnist(&dir, Split::Train, &Normalization::mnist(), None).unwrap_err();
    assert!(matches!(err, NnError::MissingData { .. }));
    let msg = err.to_string();
    for part in [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "yann.lecun.com/exdb/mnist",
        dir.to_str().unwrap(),
    ] {
        assert!(msg.contains(part), "`{part}` not in: {msg}");
    }
}

#[test]
fn malformed_mnist_is_a_clear_error() {
    let dir = temp_dir("bad");
    write_mnist(&dir, false, &[1, 2, 3]);
    // Labels for 2 images against 3 images.
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte"),
        encode_idx(&[2], &[1, 2]).unwrap(),
    )
    .unwrap();
    let err = load_mnist(&dir, Split::Test, &Normalization::mnist(), None).unwrap_err();
    assert!(err.to_string().contains("t10k-labels-idx1-ubyte"), "{err}");
    // A truncated images file.
    let mut images = encode_idx(&[3, 4, 5], &[0; 60]).unwrap();
    images.truncate(30);
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), images).unwrap();
    let err = load_mnist(&dir, Split::Test, &Normalization::mnist(), None).unwrap_err();
    assert!(err.to_string().contains("need 60 bytes"), "{err}");
    // Not gzip, not idx.
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), b"hello").unwrap();
    let err = load_mnist(&dir, Split::Test, &Normalization::mnist(), None).unwrap_err();
    assert!(err.to_string().contains("magic"), "{err}");
}

#[test]
fn cifar10_binary_batches_load_per_channel() {
    let dir = temp_dir("cifar");
    let batches = dir.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&batches).unwrap();
    let mut record = vec![3u8];
    record.extend((0..3072).map(|i| (i / 1024 * 100) as u8)); // channel c has value 100c
    let mut file = record.clone();
    file.extend(&record);
    std::fs::write(batches.join("test_batch.bin"), &file).unwrap();
    let norm = Normalization::cifar10();
    let data = load_cifar10(&dir, Split::Test, &norm, None).unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data.image_shape, [3, 32, 32]);
    assert_eq!(data.labels, [3, 3]);
    for c in 0..3 {
        let want = ((c as f64 * 100.0 / 255.0 - norm.mean[c]) / norm.std[c]) as f32;
        assert!((data.images[c * 1024 + 5] - want).abs() < 1e-6);
    }
    // The folder itself works too; the training split is missing.
    assert_eq!(
        load_cifar10(&batches, Split::Test, &norm, Some(1))
            .unwrap()
            .len(),
        1
    );
    let err = load_cifar10(&dir, Split::Train, &norm, None).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("data_batch_1.bin") && msg.contains("cs.toronto.edu"),
        "{msg}"
    );
    std::fs::write(batches.join("test_batch.bin"), &file[..100]).unwrap();
    assert!(load_cifar10(&dir, Split::Test, &norm, None).is_err());
}

#[test]
fn a_unit_data_set_renormalises_to_what_the_loaders_give() {
    // Every byte value, in three channels (CIFAR-10) and one (MNIST).
    let dir = temp_dir("renormalise");
    let batches = dir.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&batches).unwrap();
    let mut file = Vec::new();
    for label in 0..2u8 {
        file.push(label);
        file.extend((0..3072).map(|i| ((i * 7 + usize::from(label)) % 256) as u8));
    }
    std::fs::write(batches.join("test_batch.bin"), &file).unwrap();
    let unit = load_cifar10(&dir, Split::Test, &Normalization::unit(), None).unwrap();
    for norm in [
        Normalization::cifar10(),
        Normalization::imagenet(),
        Normalization::unit(),
    ] {
        let direct = load_cifar10(&dir, Split::Test, &norm, None).unwrap();
        assert!(unit.renormalized(&norm).unwrap() == direct);
    }
    write_mnist(&dir, false, &[1, 2, 3]);
    let unit = load_mnist(&dir, Split::Test, &Normalization::unit(), None).unwrap();
    let norm = Normalization::mnist();
    let direct = load_mnist(&dir, Split::Test, &norm, None).unwrap();
    assert!(unit.renormalized(&norm).unwrap() == direct);
    // A normalisation that does not fit the channels is refused, as by the loaders.
    let two = Normalization {
        mean: vec![0.1, 0.2],
        std: vec![1.0, 1.0],
    };
    assert!(unit.renormalized(&two).is_err());
    assert!(load_mnist(&dir, Split::Test, &two, None).is_err());
}

#[test]
fn synthetic_data_and_epoch_order_are_seeded() {
    let a = synthetic(&[3, 8, 8], 50, 7, 1).unwrap();
    assert_eq!(a, synthetic(&[3, 8, 8], 50, 7, 1).unwrap());
    assert_ne!(a, synthetic(&[3, 8, 8], 50, 7, 2).unwrap());
    assert_eq!(a.images.len(), 50 * 192);
    assert!(a.labels.iter().all(|&l| l < 7));
    let mean = a.images.iter().map(|&v| f64::from(v)).sum::<f64>() / a.images.len() as f64;
    let var = a.images.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / a.images.len() as f64;
    assert!(mean.abs() < 0.1 && (var - 1.0).abs() < 0.1, "{mean} {var}");
    assert!(synthetic(&[1, 2, 2], 3, 0, 0).is_err());

    let order = epoch_order(100, 5, 0);
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    assert_eq!(order, epoch_order(100, 5, 0));
    assert_ne!(order, epoch_order(100, 5, 1));
}

//! Data sets: MNIST (idx files, raw or gzip), CIFAR-10 (binary version), a synthetic
//! generator for timing models whose data is not at hand, normalisation and batching.
//!
//! Normalisation lives here, not in the model: a [`Dataset`] holds images already mapped
//! `x / 255` then `(x - mean[c]) / std[c]`; the model's [`Model::normalization`] records
//! which constants it was trained with (MNIST: mean 0.1307, std 0.3081).
//!
//! [`Model::normalization`]: crate::model::Model::normalization

use std::io::Read;
use std::path::{Path, PathBuf};

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

use crate::error::{NnError, Result};
use crate::tensor::Tensor;

/// Where MNIST comes from, for error messages and docs.
pub const MNIST_ORIGIN: &str = "MNIST comes from http://yann.lecun.com/exdb/mnist/ \
     (Yann LeCun and Corinna Cortes, CC BY-SA 3.0); keep the original file names";

/// Where CIFAR-10 comes from, for error messages and docs.
pub const CIFAR10_ORIGIN: &str = "CIFAR-10 comes from https://www.cs.toronto.edu/~kriz/cifar.html \
     (the \"CIFAR-10 binary version\"; unpack cifar-10-binary.tar.gz)";

/// Per-channel normalisation `(x / 255 - mean[c]) / std[c]`; a single entry applies to
/// every channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalization {
    /// Channel means, on the `[0, 1]` scale.
    pub mean: Vec<f64>,
    /// Channel standard deviations, on the `[0, 1]` scale.
    pub std: Vec<f64>,
}

impl Normalization {
    /// MNIST: mean 0.1307, std 0.3081 (PyTorch's customary constants).
    pub fn mnist() -> Self {
        Self {
            mean: vec![0.1307],
            std: vec![0.3081],
        }
    }

    /// CIFAR-10 channel statistics.
    pub fn cifar10() -> Self {
        Self {
            mean: vec![0.4914, 0.4822, 0.4465],
            std: vec![0.2470, 0.2435, 0.2616],
        }
    }

    /// ImageNet channel statistics (torchvision's).
    pub fn imagenet() -> Self {
        Self {
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
        }
    }

    /// No change beyond `x / 255`.
    pub fn unit() -> Self {
        Self {
            mean: vec![0.0],
            std: vec![1.0],
        }
    }

    /// The normalised value of byte `x` in channel `c`.
    pub fn apply(&self, x: u8, c: usize) -> f32 {
        let mean = self.mean[c.min(self.mean.len() - 1)];
        let std = self.std[c.min(self.std.len() - 1)];
        ((f64::from(x) / 255.0 - mean) / std) as f32
    }

    fn check(&self, channels: usize) -> Result<()> {
        let fits = |n: usize| n == 1 || n == channels;
        if self.mean.is_empty() || !fits(self.mean.len()) || !fits(self.std.len()) {
            return Err(NnError::InvalidArgument(format!(
                "normalisation with {} means and {} stds for {channels} channels",
                self.mean.len(),
                self.std.len()
            )));
        }
        if !self.std.iter().all(|&s| s > 0.0 && s.is_finite()) {
            return Err(NnError::InvalidArgument(
                "normalisation std must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// Images and labels in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// `[N, ..image_shape]` row-major, already normalised (or token ids, for a model on
    /// tokens).
    pub images: Vec<f32>,
    /// One example's shape: `[C, H, W]` for images, any shape for other inputs (`[L]` of
    /// token ids, `[L, D]` of embedded tokens).
    pub image_shape: Vec<usize>,
    /// Class of each example.
    pub labels: Vec<usize>,
    /// Number of classes.
    pub num_classes: usize,
}

impl Dataset {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per example.
    pub fn example_len(&self) -> usize {
        self.image_shape.iter().product()
    }

    /// The first `n` examples (all when fewer).
    pub fn truncate(mut self, n: usize) -> Self {
        let n = n.min(self.len());
        self.images.truncate(n * self.example_len());
        self.labels.truncate(n);
        self
    }

    /// The examples at `indices` as an `[n, ..image_shape]` tensor, and their labels.
    pub fn batch(&self, indices: &[usize]) -> Result<(Tensor, Vec<usize>)> {
        let len = self.example_len();
        let mut data = Vec::with_capacity(indices.len() * len);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            if i >= self.len() {
                return Err(NnError::InvalidArgument(format!(
                    "example {i} out of range: the data set has {}",
                    self.len()
                )));
            }
            data.extend(
                self.images[i * len..(i + 1) * len]
                    .iter()
                    .map(|&v| f64::from(v)),
            );
            labels.push(self.labels[i]);
        }
        let mut shape = vec![indices.len()];
        shape.extend(&self.image_shape);
        Ok((Tensor::new(&shape, data)?, labels))
    }

    /// Examples `start..end` as a batch.
    pub fn range(&self, start: usize, end: usize) -> Result<(Tensor, Vec<usize>)> {
        let indices: Vec<usize> = (start..end.min(self.len())).collect();
        self.batch(&indices)
    }

    /// This data set, loaded with [`Normalization::unit`], normalised with `norm` instead:
    /// exactly what the loaders give with `norm`, without reading the files again. A unit
    /// value is `x / 255` of a byte `x` rounded to `f32`, so `round(255 v)` recovers `x`.
    pub fn renormalized(&self, norm: &Normalization) -> Result<Dataset> {
        let &[channels, h, w] = &self.image_shape[..] else {
            return Err(NnError::InvalidArgument(format!(
                "only images [C, H, W] are normalised, not examples of shape {:?}",
                self.image_shape
            )));
        };
        norm.check(channels)?;
        let plane = (h * w).max(1);
        let images = self
            .images
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let x = (f64::from(v) * 255.0).round().clamp(0.0, 255.0) as u8;
                norm.apply(x, i / plane % channels.max(1))
            })
            .collect();
        Ok(Dataset {
            images,
            ..self.clone()
        })
    }
}

/// The order in which an epoch visits `n` examples: a Fisher-Yates shuffle seeded by
/// `(seed, epoch)`, so private and plaintext training can see the same batches.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// Which part of a data set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The training set.
    Train,
    /// The test set.
    Test,
}

/// Parsed contents of an idx file: its dimensions and its `u8` values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idx {
    /// Dimensions, outermost first.
    pub dims: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<u8>,
}

/// Parses an idx file of unsigned bytes (type code 0x08); `path` names it in errors.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<Idx> {
    let bad = |message: String| NnError::BadData {
        path: path.to_owned(),
        message,
    };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad("not an idx file (bad magic number)".into()));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!(
            "idx element type 0x{:02x} is not unsigned byte (0x08)",
            bytes[2]
        )));
    }
    let ndims = usize::from(bytes[3]);
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(bad("idx header is truncated".into()));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| {
            let b = &bytes[4 + 4 * i..8 + 4 * i];
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        })
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad("idx dimensions overflow".into()))?;
    if bytes.len() - header != count {
        return Err(bad(format!(
            "idx dimensions {dims:?} need {count} bytes of data, the file has {}",
            bytes.len() - header
        )));
    }
    Ok(Idx {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Encodes `u8` values as an idx file.
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Result<Vec<u8>> {
    if dims.iter().product::<usize>() != data.len() || dims.len() > 255 {
        return Err(NnError::InvalidArgument(format!(
            "idx dims {dims:?} do not hold {} values",
            data.len()
        )));
    }
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        let d = u32::try_from(d)
            .map_err(|_| NnError::InvalidArgument(format!("idx dimension {d} too large")))?;
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    Ok(out)
}

/// Reads a file, gunzipping it when it starts with the gzip magic bytes.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|source| NnError::Io {
        path: path.to_owned(),
        source,
    })?;
    gunzip_if_needed(&raw, path)
}

/// The first of `names` that exists in `dir`, each tried as it is and with `.gz`.
fn find_file(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().find_map(|name| {
        [dir.join(name), dir.join(format!("{name}.gz"))]
            .into_iter()
            .find(|p| p.is_file())
    })
}

/// The MNIST file names for a split: (images, labels).
pub fn mnist_files(split: Split) -> (&'static str, &'static str) {
    match split {
        Split::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        Split::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
}

/// Loads an MNIST split from `dir` (files `train-images-idx3-ubyte`, ... each raw or with
/// `.gz`; the `train-images.idx3-ubyte` spelling is accepted too), at most `limit`
/// examples, normalised with `norm`.
pub fn load_mnist(
    dir: &Path,
    split: Split,
    norm: &Normalization,
    limit: Option<usize>,
) -> Result<Dataset> {
    norm.check(1)?;
    let (images_name, labels_name) = mnist_files(split);
    let dotted = |name: &str| name.replacen("-idx", ".idx", 1);
    let (images_dotted, labels_dotted) = (dotted(images_name), dotted(labels_name));
    let images_path = find_file(dir, &[images_name, &images_dotted]);
    let labels_path = find_file(dir, &[labels_name, &labels_dotted]);
    let (Some(images_path), Some(labels_path)) = (images_path, labels_path) else {
        return Err(NnError::MissingData {
            dataset: "MNIST",
            dir: dir.to_owned(),
            files: vec![format!("{images_name}[.gz]"), format!("{labels_name}[.gz]")],
            origin: MNIST_ORIGIN,
        });
    };
    let images = std::fs::read(&images_path).map_err(|source| NnError::Io {
        path: images_path.clone(),
        source,
    })?;
    let labels = std::fs::read(&labels_path).map_err(|source| NnError::Io {
        path: labels_path.clone(),
        source,
    })?;
    mnist_from_files(&images, &images_path, &labels, &labels_path, norm, limit)
}

/// An MNIST data set from the bytes of an images and a labels idx file (each raw or
/// gzip-compressed), e.g. files compiled in with `include_bytes!`.
pub fn mnist_from_bytes(
    images: &[u8],
    labels: &[u8],
    norm: &Normalization,
    limit: Option<usize>,
) -> Result<Dataset> {
    norm.check(1)?;
    mnist_from_files(
        images,
        Path::new("<MNIST images>"),
        labels,
        Path::new("<MNIST labels>"),
        norm,
        limit,
    )
}

fn gunzip_if_needed(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .map_err(|e| NnError::BadData {
                path: path.to_owned(),
                message: format!("gzip: {e}"),
            })?;
        Ok(out)
    } else {
        Ok(bytes.to_vec())
    }
}

fn mnist_from_files(
    images: &[u8],
    images_path: &Path,
    labels: &[u8],
    labels_path: &Path,
    norm: &Normalization,
    limit: Option<usize>,
) -> Result<Dataset> {
    let images = parse_idx(&gunzip_if_needed(images, images_path)?, images_path)?;
    let labels = parse_idx(&gunzip_if_needed(labels, labels_path)?, labels_path)?;
    let [n, h, w] = images.dims[..] else {
        return Err(NnError::BadData {
            path: images_path.to_owned(),
            message: format!("expected 3 dimensions [N, 28, 28], got {:?}", images.dims),
        });
    };
    if labels.dims != [n] {
        return Err(NnError::BadData {
            path: labels_path.to_owned(),
            message: format!(
                "expected {n} labels to match the images file, got dimensions {:?}",
                labels.dims
            ),
        });
    }
    if let Some(bad) = labels.data.iter().find(|&&l| l > 9) {
        return Err(NnError::BadData {
            path: labels_path.to_owned(),
            message: format!("label {bad} is not a digit"),
        });
    }
    let keep = limit.unwrap_or(n).min(n);
    Ok(Dataset {
        images: images.data[..keep * h * w]
            .iter()
            .map(|&x| norm.apply(x, 0))
            .collect(),
        image_shape: vec![1, h, w],
        labels: labels.data[..keep]
            .iter()
            .map(|&l| usize::from(l))
            .collect(),
        num_classes: 10,
    })
}

/// The CIFAR-10 binary file names for a split.
pub fn cifar10_files(split: Split) -> Vec<String> {
    match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".into()],
    }
}

/// Loads a CIFAR-10 split from `dir` (the `cifar-10-batches-bin` folder, or its parent),
/// at most `limit` examples, normalised per channel with `norm`.
pub fn load_cifar10(
    dir: &Path,
    split: Split,
    norm: &Normalization,
    limit: Option<usize>,
) -> Result<Dataset> {
    norm.check(3)?;
    const RECORD: usize = 1 + 3 * 32 * 32;
    let names = cifar10_files(split);
    let base = if dir.join(&names[0]).is_file() {
        dir.to_owned()
    } else {
        dir.join("cifar-10-batches-bin")
    };
    if names.iter().any(|n| !base.join(n).is_file()) {
        return Err(NnError::MissingData {
            dataset: "CIFAR-10",
            dir: dir.to_owned(),
            files: names.iter().map(|n| format!("{n} (no .gz)")).collect(),
            origin: CIFAR10_ORIGIN,
        });
    }
    let limit = limit.unwrap_or(usize::MAX);
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for name in &names {
        if labels.len() >= limit {
            break;
        }
        let path = base.join(name);
        let bytes = std::fs::read(&path).map_err(|source| NnError::Io {
            path: path.clone(),
            source,
        })?;
        if bytes.len() % RECORD != 0 {
            return Err(NnError::BadData {
                path,
                message: format!(
                    "{} bytes is not a whole number of {RECORD}-byte records",
                    bytes.len()
                ),
            });
        }
        for record in bytes.chunks(RECORD) {
            if labels.len() >= limit {
                break;
            }
            if record[0] > 9 {
                return Err(NnError::BadData {
                    path,
                    message: format!("label {} out of range 0..10", record[0]),
                });
            }
            labels.push(usize::from(record[0]));
            images.extend(
                record[1..]
                    .iter()
                    .enumerate()
                    .map(|(i, &x)| norm.apply(x, i / 1024)),
            );
        }
    }
    Ok(Dataset {
        images,
        image_shape: vec![3, 32, 32],
        labels,
        num_classes: 10,
    })
}

/// `n` random examples of `image_shape` for timing: values from a standard normal (as the
/// normalised images of a real set roughly are), labels uniform in `0..num_classes`.
pub fn synthetic(
    image_shape: &[usize],
    n: usize,
    num_classes: usize,
    seed: u64,
) -> Result<Dataset> {
    if num_classes == 0 {
        return Err(NnError::InvalidArgument(
            "a synthetic data set needs at least one class".into(),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut uniform = move || ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let count = n * image_shape.iter().product::<usize>();
    let mut images = Vec::with_capacity(count);
    while images.len() < count {
        // Box-Muller: two normals from two uniforms.
        let (u, v) = (uniform(), uniform());
        let r = (-2.0 * u.ln()).sqrt();
        let t = std::f64::consts::TAU * v;
        images.push((r * t.cos()) as f32);
        if images.len() < count {
            images.push((r * t.sin()) as f32);
        }
    }
    let labels = (0..n)
        .map(|_| (uniform() * num_classes as f64) as usize % num_classes)
        .collect();
    Ok(Dataset {
        images,
        image_shape: image_shape.to_vec(),
        labels,
        num_classes,
    })
}

/// `n` random sequences of token ids in `0..vocabulary` of `shape` for timing, labels
/// uniform in `0..num_classes`.
pub fn synthetic_tokens(
    shape: &[usize],
    vocabulary: usize,
    n: usize,
    num_classes: usize,
    seed: u64,
) -> Result<Dataset> {
    if num_classes == 0 || vocabulary == 0 {
        return Err(NnError::InvalidArgument(
            "synthetic tokens need a vocabulary and at least one class".into(),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let count = n * shape.iter().product::<usize>();
    let images = (0..count)
        .map(|_| (rng.next_u64() % vocabulary as u64) as f32)
        .collect();
    let labels = (0..n)
        .map(|_| (rng.next_u64() % num_classes as u64) as usize)
        .collect();
    Ok(Dataset {
        images,
        image_shape: shape.to_vec(),
        labels,
        num_classes,
    })
}

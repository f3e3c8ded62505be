//! The data owner's own inputs (`--input`): a `.npy` array (images, other real values of
//! any rank, or integer token ids), a folder of PNG and JPEG files, or one such file; and
//! its labels (`--labels`).
//!
//! [`open_input`] looks at the input cheaply (the `.npy` header, the folder's file names),
//! so the count and shape are known before anything is decoded; [`InputSource::load`] then
//! decodes, checks against the model's input shape, and normalises as the data sets of
//! `cryptgpu_nn::data` do: `x / 255`, then `(x - mean[c]) / std[c]`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail, ensure};
use cryptgpu_nn::data::{Dataset, Normalization};
use image::imageops::{self, FilterType};

use super::npy::{self, Dtype, NpyData};

/// How the four dimensions of a `.npy` input are ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// `[N, C, H, W]` (PyTorch's order).
    #[default]
    Nchw,
    /// `[N, H, W, C]` (TensorFlow's and image libraries' order).
    Nhwc,
}

/// An input opened but not yet decoded.
#[derive(Clone, Debug)]
pub struct InputSource {
    /// The file or folder given.
    path: PathBuf,
    /// What it holds.
    kind: Kind,
}

/// The kinds of input.
#[derive(Clone, Debug)]
enum Kind {
    /// A `.npy` array.
    Npy {
        /// Its element type: `uint8`, `float32`, `float64`, or an integer type (token ids).
        dtype: Dtype,
        /// Its full shape, of rank 2 or more.
        file_shape: Vec<usize>,
        /// How its dimensions are ordered.
        layout: Layout,
        /// One example's shape: `[C, H, W]` of a 4-D file, else the file's shape after the
        /// first axis (`[H, W]` of a 3-D file also fits a model taking `[1, H, W]`).
        example: Vec<usize>,
        /// Number of examples.
        count: usize,
    },
    /// Image files, sorted by name.
    Images {
        /// The files.
        files: Vec<PathBuf>,
        /// Their file names.
        names: Vec<String>,
    },
}

/// Decoded inputs, ready to be shared.
#[derive(Clone, Debug, PartialEq)]
pub struct Inputs {
    /// `[N, ..shape]` row-major, normalised (token ids as they are).
    pub images: Vec<f32>,
    /// One example's shape (`[C, H, W]` for images).
    pub shape: Vec<usize>,
    /// One name per example: the file name, or the index in a `.npy` array.
    pub names: Vec<String>,
    /// The class of each example, when labels were given ([`load_labels`]).
    pub labels: Option<Vec<usize>>,
}

/// Whether `path` has one of `extensions` (lower case), in any case.
fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| extensions.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// The extensions of image inputs.
const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

/// Opens the data owner's input: a `.npy` file of `uint8`, `float32` or `float64` images
/// shaped `[N, C, H, W]` (`[N, H, W, C]` with [`Layout::Nhwc`]) or `[N, H, W]` (one
/// channel), of other real values `[N, ..]` of any rank, or of integer token ids `[N, L]`
/// (any integer type, any rank); a folder whose PNG and JPEG files (by extension, in any case) are the
/// examples, in file-name order; or a single PNG or JPEG file.
pub fn open_input(path: &Path, layout: Layout) -> Result<InputSource> {
    let meta =
        fs::metadata(path).with_context(|| format!("cannot open input {}", path.display()))?;
    let kind = if meta.is_dir() {
        open_folder(path)?
    } else if has_extension(path, &["npy"]) {
        open_npy(path, layout)?
    } else if has_extension(path, IMAGE_EXTENSIONS) {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Kind::Images {
            files: vec![path.to_owned()],
            names: vec![name],
        }
    } else {
        bail!(
            "input {}: expected a .npy file, a folder of PNG/JPEG images, or one PNG/JPEG \
             image",
            path.display()
        );
    };
    Ok(InputSource {
        path: path.to_owned(),
        kind,
    })
}

/// Lists a folder's image files, sorted by file name (byte order).
fn open_folder(dir: &Path) -> Result<Kind> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let path = entry.path();
        if !has_extension(&path, IMAGE_EXTENSIONS) {
            continue;
        }
        // Follows links: a link to an image is an image.
        if !fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            continue;
        }
        found.push((entry.file_name(), path));
    }
    if found.is_empty() {
        bail!(
            "input folder {} holds no image (PNG or JPEG files: .png, .jpg, .jpeg)",
            dir.display()
        );
    }
    found.sort_by(|a, b| a.0.as_encoded_bytes().cmp(b.0.as_encoded_bytes()));
    let names = found
        .iter()
        .map(|(name, _)| name.to_string_lossy().into_owned())
        .collect();
    let files = found.into_iter().map(|(_, path)| path).collect();
    Ok(Kind::Images { files, names })
}

/// Reads a `.npy` input's header and works out its examples' shape.
fn open_npy(path: &Path, layout: Layout) -> Result<Kind> {
    let header = npy::read_header(path)?;
    let name = path.display();
    if matches!(header.dtype, Dtype::U64) {
        bail!(
            "input {name}: elements of type {} ({}); inputs are uint8 (0 to 255), float32, \
             float64, or integer token ids (int32, int64, ...)",
            header.dtype.name(),
            header.dtype.descr()
        );
    }
    let shape = &header.shape;
    let (count, example) = match (shape.as_slice(), layout) {
        (&[n, h, w, c], Layout::Nhwc) => (n, vec![c, h, w]),
        // One channel, where both orders agree.
        (&[n, h, w], _) => (n, vec![h, w]),
        (_, Layout::Nhwc) => {
            bail!("input {name} has shape {shape:?}; --layout nhwc takes [N, H, W, C] images")
        }
        (&[n, ref rest @ ..], Layout::Nchw) if !rest.is_empty() => (n, rest.to_vec()),
        _ => bail!(
            "input {name} has shape {shape:?}; expected [N, ...]: examples along the first \
             axis (images [N, C, H, W], or [N, H, W, C] with --layout nhwc)"
        ),
    };
    if count == 0 {
        bail!("input {name} holds no example (shape {shape:?})");
    }
    if example.contains(&0) {
        bail!("input {name} has an empty dimension (shape {shape:?})");
    }
    Ok(Kind::Npy {
        dtype: header.dtype,
        file_shape: header.shape,
        layout,
        example,
        count,
    })
}

/// Checks that a normalisation fits `channels`: one mean and std, or one per channel,
/// finite, the stds positive.
fn check_normalization(norm: &Normalization, channels: usize) -> Result<()> {
    let fits = |n: usize| n == 1 || n == channels;
    ensure!(
        fits(norm.mean.len()) && fits(norm.std.len()),
        "normalisation with {} means and {} stds does not fit {channels} channels (give one \
         value, or one per channel)",
        norm.mean.len(),
        norm.std.len()
    );
    ensure!(
        norm.mean.iter().all(|m| m.is_finite()),
        "normalisation means must be finite, got {:?}",
        norm.mean
    );
    ensure!(
        norm.std.iter().all(|&s| s > 0.0 && s.is_finite()),
        "normalisation stds must be positive, got {:?}",
        norm.std
    );
    Ok(())
}

/// Channel `c`'s mean and std (a single value serves every channel).
fn channel_stats(norm: &Normalization, c: usize) -> (f64, f64) {
    (
        norm.mean[c.min(norm.mean.len() - 1)],
        norm.std[c.min(norm.std.len() - 1)],
    )
}

/// The normalised value of byte `x` in channel `c`: `x / 255`, then the normalisation.
fn byte_value(x: u8, c: usize, norm: Option<&Normalization>) -> f32 {
    match norm {
        Some(norm) => norm.apply(x, c),
        None => (f64::from(x) / 255.0) as f32,
    }
}

impl InputSource {
    /// Number of examples.
    pub fn count(&self) -> usize {
        match &self.kind {
            Kind::Npy { count, .. } => *count,
            Kind::Images { files, .. } => files.len(),
        }
    }

    /// Whether the values are floats (taken as they are unless a normalisation is given),
    /// rather than bytes or pixels (scaled to `[0, 1]` and normalised).
    pub fn is_float(&self) -> bool {
        match &self.kind {
            Kind::Npy { dtype, .. } => dtype.is_float(),
            Kind::Images { .. } => false,
        }
    }

    /// Whether the values are integers other than bytes: token ids, taken as they are.
    pub fn is_tokens(&self) -> bool {
        match &self.kind {
            Kind::Npy { dtype, .. } => !dtype.is_float() && *dtype != Dtype::U8,
            Kind::Images { .. } => false,
        }
    }

    /// One example's shape when the file fixes it (`.npy` of rank 2 or 4 and more); `None`
    /// for images, which are converted and resized to the model's input, and for a 3-D
    /// file, whose `[H, W]` examples also fit a model taking `[1, H, W]`.
    pub fn shape(&self) -> Option<Vec<usize>> {
        match &self.kind {
            Kind::Npy { example, .. } if example.len() != 2 || self.is_tokens() => {
                Some(example.clone())
            }
            Kind::Npy { .. } | Kind::Images { .. } => None,
        }
    }

    /// The examples' names: the file names of images, `"0"`, `"1"`, ... in a `.npy` array.
    pub fn names(&self) -> Vec<String> {
        match &self.kind {
            Kind::Npy { count, .. } => (0..*count).map(|i| i.to_string()).collect(),
            Kind::Images { names, .. } => names.clone(),
        }
    }

    /// Decodes the first `limit` examples (all without a limit) as inputs of shape `target`
    /// (one example's), normalised.
    ///
    /// `uint8` values and image pixels become `x / 255`, then `(x - mean[c]) / std[c]`
    /// with `normalization`. Float values are taken as they are without a normalisation,
    /// else as values on the `[0, 1]` scale, normalised `(x - mean[c]) / std[c]`; only
    /// images (`target` `[C, H, W]`) are normalised. Integer token ids are taken as they
    /// are (below 2^24, so that `f32` holds them exactly). A `.npy` input's example shape
    /// must equal `target` (or `[H, W]` for `[1, H, W]`); images are converted to
    /// `target[0]` channels (1: luma, 3: RGB) and resized to `target[1] x target[2]`.
    pub fn load(
        &self,
        target: &[usize],
        normalization: Option<&Normalization>,
        limit: Option<usize>,
    ) -> Result<Inputs> {
        let name = self.path.display();
        ensure!(
            !target.is_empty() && !target.contains(&0),
            "the model's input shape {target:?} has an empty dimension"
        );
        if let Some(norm) = normalization {
            ensure!(
                target.len() == 3 && !self.is_tokens(),
                "cannot load input {name}: only images [C, H, W] are normalised (--mean, \
                 --std), and the model takes {target:?}{}",
                if self.is_tokens() { " token ids" } else { "" }
            );
            check_normalization(norm, target[0])
                .with_context(|| format!("cannot load input {name}"))?;
        }
        let n = limit.map_or(self.count(), |l| l.min(self.count()));
        let total = target
            .iter()
            .try_fold(n, |a, &d| a.checked_mul(d))
            .ok_or_else(|| {
                anyhow!("input {name}: {n} examples of shape {target:?} are too many")
            })?;
        let images = match &self.kind {
            Kind::Npy {
                dtype,
                file_shape,
                layout,
                example,
                ..
            } => {
                let one_channel = example.len() == 2 && target.len() == 3 && target[0] == 1;
                if example[..] != *target && !(one_channel && example[..] == target[1..]) {
                    let hint = match (file_shape.as_slice(), layout) {
                        (&[_, h, w, c], Layout::Nchw) if [c, h, w] == target => {
                            " (the file looks [N, H, W, C]: try --layout nhwc)"
                        }
                        (&[_, c, h, w], Layout::Nhwc) if [c, h, w] == target => {
                            " (the file looks [N, C, H, W]: try --layout nchw)"
                        }
                        _ => "",
                    };
                    bail!(
                        "input {name}: examples have shape {example:?} (file shape \
                         {file_shape:?}), the model takes {target:?}{hint}"
                    );
                }
                self.load_npy(*dtype, *layout, target, n, total, normalization)?
            }
            Kind::Images { files, .. } => {
                let &[c, h, w] = target else {
                    bail!("images are [C, H, W] inputs, but the model takes {target:?}");
                };
                load_images(&files[..n], [c, h, w], total, normalization)?
            }
        };
        let mut names = self.names();
        names.truncate(n);
        Ok(Inputs {
            images,
            shape: target.to_vec(),
            names,
            labels: None,
        })
    }

    /// Reads `n` examples of a `.npy` input: images normalised into NCHW order, other
    /// values in the file's order.
    fn load_npy(
        &self,
        dtype: Dtype,
        layout: Layout,
        target: &[usize],
        n: usize,
        total: usize,
        normalization: Option<&Normalization>,
    ) -> Result<Vec<f32>> {
        let name = self.path.display();
        let (header, data) = npy::read_prefix(&self.path, total)?;
        ensure!(
            header.dtype == dtype && data.len() == total,
            "input {name} changed while it was being read"
        );
        let per_example = total / n.max(1);
        // Images: [C, H, W] with a channel per value, in either layout; anything else has
        // one "channel" and the file's order.
        let (c, h, w) = match *target {
            [c, h, w] => (c, h, w),
            _ => (1, 1, per_example),
        };
        // The index in the file of element (i, ch, y, x).
        // A 3-D file has one channel, where both orders agree.
        let source = |i: usize, ch: usize, y: usize, x: usize| match layout {
            Layout::Nchw => ((i * c + ch) * h + y) * w + x,
            Layout::Nhwc => ((i * h + y) * w + x) * c + ch,
        };
        let float = |k: usize, v: f64, ch: usize| -> Result<f32> {
            if !v.is_finite() {
                bail!(
                    "input {name}: element {k} (example {}) is {v}; inputs must be finite",
                    k / per_example
                );
            }
            let out = match normalization {
                None => v as f32,
                Some(norm) => {
                    let (mean, std) = channel_stats(norm, ch);
                    ((v - mean) / std) as f32
                }
            };
            if !out.is_finite() {
                bail!(
                    "input {name}: element {k} (example {}), {v}, is out of the float32 range \
                     once normalised",
                    k / per_example
                );
            }
            Ok(out)
        };
        let token = |k: usize, v: i64| -> Result<f32> {
            ensure!(
                (0..=1 << 24).contains(&v),
                "input {name}: token id {v} at element {k} (example {}) is not in 0..=2^24",
                k / per_example
            );
            Ok(v as f32)
        };
        let mut out = Vec::with_capacity(total);
        for i in 0..n {
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        let k = source(i, ch, y, x);
                        out.push(match &data {
                            NpyData::U8(v) => byte_value(v[k], ch, normalization),
                            NpyData::F32(v) => float(k, f64::from(v[k]), ch)?,
                            NpyData::F64(v) => float(k, v[k], ch)?,
                            NpyData::I64(v) => token(k, v[k])?,
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Decodes image files as `[C, H, W]` inputs: converted to luma or RGB, resized, `x / 255`
/// and normalised.
fn load_images(
    files: &[PathBuf],
    [c, h, w]: [usize; 3],
    total: usize,
    normalization: Option<&Normalization>,
) -> Result<Vec<f32>> {
    ensure!(
        c == 1 || c == 3,
        "the model takes {c} channels; images become 1 (grayscale) or 3 (RGB)"
    );
    let (Ok(width), Ok(height)) = (u32::try_from(w), u32::try_from(h)) else {
        bail!("the model's input size {h} x {w} is too large for images");
    };
    let mut out = Vec::with_capacity(total);
    for file in files {
        let decoded = image::ImageReader::open(file)
            .and_then(|reader| reader.with_guessed_format())
            .map_err(image::ImageError::IoError)
            .and_then(|reader| reader.decode())
            .with_context(|| format!("cannot decode image {}", file.display()))?;
        // Row-major pixels of `c` channels each.
        let pixels: Vec<u8> = if c == 1 {
            let img = decoded.to_luma8();
            if img.dimensions() == (width, height) {
                img.into_raw()
            } else {
                imageops::resize(&img, width, height, FilterType::Triangle).into_raw()
            }
        } else {
            let img = decoded.to_rgb8();
            if img.dimensions() == (width, height) {
                img.into_raw()
            } else {
                imageops::resize(&img, width, height, FilterType::Triangle).into_raw()
            }
        };
        ensure!(
            pixels.len() == c * h * w,
            "image {} resized to {} values, not {}",
            file.display(),
            pixels.len(),
            c * h * w
        );
        for ch in 0..c {
            out.extend(
                pixels
                    .iter()
                    .skip(ch)
                    .step_by(c)
                    .map(|&x| byte_value(x, ch, normalization)),
            );
        }
    }
    Ok(out)
}

impl Inputs {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there is nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The inputs as a data set of `num_classes` classes. Without labels every example gets
    /// class 0 as a placeholder; given labels must be one per example and below
    /// `num_classes`.
    pub fn into_dataset(self, num_classes: usize) -> Result<Dataset> {
        ensure!(num_classes > 0, "a data set needs at least one class");
        let n = self.names.len();
        let example: usize = self.shape.iter().product();
        ensure!(
            n.checked_mul(example) == Some(self.images.len()),
            "{} image values do not make {n} examples of shape {:?}",
            self.images.len(),
            self.shape
        );
        let labels = match self.labels {
            None => vec![0; n],
            Some(labels) => {
                ensure!(
                    labels.len() == n,
                    "{} labels for {n} inputs: give one label per input",
                    labels.len()
                );
                if let Some((i, &label)) =
                    labels.iter().enumerate().find(|(_, l)| **l >= num_classes)
                {
                    bail!(
                        "label {i} ({}) is class {label}, but the model has {num_classes} \
                         classes (0 to {})",
                        self.names[i],
                        num_classes - 1
                    );
                }
                labels
            }
        };
        Ok(Dataset {
            images: self.images,
            image_shape: self.shape,
            labels,
            num_classes,
        })
    }
}

/// Reads labels: a `.npy` array of integers (any integer type; shape `[N]` or `[N, 1]`), or
/// a text file with one non-negative integer per line (blank lines ignored). There must be
/// `expected` of them.
pub fn load_labels(path: &Path, expected: usize) -> Result<Vec<usize>> {
    let name = path.display();
    let labels = if has_extension(path, &["npy"]) {
        let array = npy::read(path)?;
        ensure!(
            matches!(array.shape.as_slice(), [_] | [_, 1]),
            "labels {name} have shape {:?}; expected [N] (or [N, 1])",
            array.shape
        );
        match array.data {
            NpyData::U8(v) => v.into_iter().map(usize::from).collect(),
            NpyData::I64(v) => v
                .into_iter()
                .enumerate()
                .map(|(i, l)| {
                    usize::try_from(l).map_err(|_| {
                        anyhow!("labels {name}: label {i} is {l}, not a class (0 or more)")
                    })
                })
                .collect::<Result<Vec<usize>>>()?,
            NpyData::F32(_) | NpyData::F64(_) => bail!(
                "labels {name} are {}; expected integers (any integer dtype)",
                array.dtype.name()
            ),
        }
    } else {
        let text = fs::read_to_string(path)
            .with_context(|| format!("cannot read labels {name} (a text file, or a .npy file)"))?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let mut labels = Vec::new();
        for (line_no, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let label = line.parse::<usize>().map_err(|_| {
                let shown: String = line.chars().take(40).collect();
                anyhow!(
                    "labels {name}, line {}: expected a non-negative integer, found '{shown}'",
                    line_no + 1
                )
            })?;
            labels.push(label);
        }
        labels
    };
    ensure!(
        labels.len() == expected,
        "labels {name} hold {} labels, expected {expected} (one per input)",
        labels.len()
    );
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use image::{GrayImage, Luma, Rgb, RgbImage};

    use super::*;
    use crate::files::npy::{encode_f32, encode_f64, encode_i64, encode_u8};
    use crate::files::test_dir;

    /// NCHW values `v(i, c, y, x) = 1000 i + 100 c + 10 y + x` for `n` examples of `[c, h, w]`.
    fn nchw(n: usize, [c, h, w]: [usize; 3]) -> Vec<f32> {
        let mut out = Vec::new();
        for i in 0..n {
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        out.push((1000 * i + 100 * ch + 10 * y + x) as f32);
                    }
                }
            }
        }
        out
    }

    /// The same values in NHWC order.
    fn nhwc(n: usize, [c, h, w]: [usize; 3]) -> Vec<f32> {
        let mut out = Vec::new();
        for i in 0..n {
            for y in 0..h {
                for x in 0..w {
                    for ch in 0..c {
                        out.push((1000 * i + 100 * ch + 10 * y + x) as f32);
                    }
                }
            }
        }
        out
    }

    fn message(err: anyhow::Error) -> String {
        format!("{err:#}")
    }

    #[test]
    fn npy_nchw_and_nhwc_load_the_same() {
        let dir = test_dir("inputs-layout");
        let shape = [2, 3, 4];
        let a = dir.join("nchw.npy");
        let b = dir.join("nhwc.npy");
        std::fs::write(&a, encode_f32(&[3, 2, 3, 4], &nchw(3, shape))).unwrap();
        std::fs::write(&b, encode_f32(&[3, 3, 4, 2], &nhwc(3, shape))).unwrap();

        let source = open_input(&a, Layout::Nchw).unwrap();
        assert_eq!(source.count(), 3);
        assert_eq!(source.shape(), Some(shape.to_vec()));
        assert_eq!(source.names(), ["0", "1", "2"]);
        let from_nchw = source.load(&shape, None, None).unwrap();
        assert_eq!(from_nchw.images, nchw(3, shape));
        assert_eq!(from_nchw.shape, shape);
        assert_eq!(from_nchw.names, ["0", "1", "2"]);
        assert_eq!(from_nchw.labels, None);

        let source = open_input(&b, Layout::Nhwc).unwrap();
        assert_eq!(source.shape(), Some(shape.to_vec()));
        assert_eq!(source.load(&shape, None, None).unwrap(), from_nchw);

        // The NHWC file read as NCHW has shape [3, 4, 2]: the error hints at --layout.
        let err = open_input(&b, Layout::Nchw)
            .unwrap()
            .load(&shape, None, None)
            .unwrap_err();
        let m = message(err);
        assert!(m.contains("nhwc.npy") && m.contains("[3, 4, 2]") && m.contains("[2, 3, 4]"));
        assert!(m.contains("--layout nhwc"), "{m}");
        let m = message(
            open_input(&a, Layout::Nhwc)
                .unwrap()
                .load(&shape, None, None)
                .unwrap_err(),
        );
        assert!(m.contains("--layout nchw"), "{m}");
        let m = message(
            open_input(&a, Layout::Nchw)
                .unwrap()
                .load(&[2, 4, 3], None, None)
                .unwrap_err(),
        );
        assert!(!m.contains("--layout"), "{m}");

        // A limit keeps the first examples.
        let first = open_input(&b, Layout::Nhwc)
            .unwrap()
            .load(&shape, None, Some(2))
            .unwrap();
        assert_eq!(first.images, nchw(2, shape));
        assert_eq!(first.names, ["0", "1"]);
        assert_eq!(first.len(), 2);
    }

    #[test]
    fn npy_three_dimensions_mean_one_channel() {
        let dir = test_dir("inputs-3d");
        let path = dir.join("gray.npy");
        let values: Vec<f64> = (0..12).map(|i| f64::from(i) / 12.0).collect();
        std::fs::write(&path, encode_f64(&[2, 2, 3], &values)).unwrap();
        for layout in [Layout::Nchw, Layout::Nhwc] {
            let source = open_input(&path, layout).unwrap();
            // [H, W] examples fit [1, H, W] and [H, W] models alike: the file fixes neither.
            assert_eq!(source.shape(), None);
            assert_eq!(source.load(&[2, 3], None, None).unwrap().shape, [2, 3]);
            let inputs = source.load(&[1, 2, 3], None, None).unwrap();
            let expected: Vec<f32> = values.iter().map(|&v| v as f32).collect();
            assert_eq!(inputs.images, expected);
        }
        // Floats with a normalisation are on the [0, 1] scale.
        let norm = Normalization {
            mean: vec![0.5],
            std: vec![0.25],
        };
        let inputs = open_input(&path, Layout::Nchw)
            .unwrap()
            .load(&[1, 2, 3], Some(&norm), None)
            .unwrap();
        let expected: Vec<f32> = values.iter().map(|&v| ((v - 0.5) / 0.25) as f32).collect();
        assert_eq!(inputs.images, expected);
    }

    #[test]
    fn uint8_inputs_are_scaled_and_normalised_per_channel() {
        let dir = test_dir("inputs-u8");
        let path = dir.join("bytes.npy");
        // Two examples, 3 channels of 1 x 2, NCHW.
        let bytes: Vec<u8> = vec![0, 255, 51, 102, 153, 204, 10, 20, 30, 40, 50, 60];
        std::fs::write(&path, encode_u8(&[2, 3, 1, 2], &bytes)).unwrap();
        let source = open_input(&path, Layout::Nchw).unwrap();

        let plain = source.load(&[3, 1, 2], None, None).unwrap();
        let expected: Vec<f32> = bytes
            .iter()
            .map(|&b| (f64::from(b) / 255.0) as f32)
            .collect();
        assert_eq!(plain.images, expected);
        assert_eq!(plain.images[1], 1.0);

        let norm = Normalization::cifar10();
        let normalised = source.load(&[3, 1, 2], Some(&norm), None).unwrap();
        for (k, (&b, &v)) in bytes.iter().zip(&normalised.images).enumerate() {
            let c = (k / 2) % 3;
            assert_eq!(v, norm.apply(b, c), "element {k}");
            let by_hand = ((f64::from(b) / 255.0 - norm.mean[c]) / norm.std[c]) as f32;
            assert_eq!(v, by_hand);
        }

        // One value serves every channel; two values for three channels do not fit.
        let unit = source
            .load(&[3, 1, 2], Some(&Normalization::unit()), None)
            .unwrap();
        assert_eq!(unit.images, expected);
        let bad = Normalization {
            mean: vec![0.1, 0.2],
            std: vec![0.3],
        };
        let m = message(source.load(&[3, 1, 2], Some(&bad), None).unwrap_err());
        assert!(m.contains("2 means") && m.contains("3 channels"), "{m}");
        let bad = Normalization {
            mean: vec![0.1],
            std: vec![0.0],
        };
        assert!(
            message(source.load(&[3, 1, 2], Some(&bad), None).unwrap_err()).contains("positive")
        );
    }

    #[test]
    fn bad_npy_inputs_are_errors() {
        let dir = test_dir("inputs-bad");
        let write = |name: &str, bytes: Vec<u8>| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        };
        // Integers are token ids, taken as they are; a negative one is an error.
        let ints = write("ints.npy", encode_i64(&[2, 3], &[5, 0, 7, 1, -1, 2]));
        let source = open_input(&ints, Layout::Nchw).unwrap();
        assert!(source.is_tokens());
        assert_eq!(source.shape(), Some(vec![3]));
        let first = source.load(&[3], None, Some(1)).unwrap();
        assert_eq!(first.images, [5.0, 0.0, 7.0]);
        let m = message(source.load(&[3], None, None).unwrap_err());
        assert!(
            m.contains("ints.npy") && m.contains("token id -1") && m.contains("example 1"),
            "{m}"
        );
        let m = message(
            source
                .load(&[3], Some(&Normalization::unit()), None)
                .unwrap_err(),
        );
        assert!(m.contains("only images"), "{m}");
        // Examples of any rank; the shape must be the model's.
        let flat = write("flat.npy", encode_f32(&[4, 4], &[0.0; 16]));
        let source = open_input(&flat, Layout::Nchw).unwrap();
        assert_eq!(source.shape(), Some(vec![4]));
        let m = message(source.load(&[1, 2, 2], None, None).unwrap_err());
        assert!(m.contains("[4]") && m.contains("[1, 2, 2]"), "{m}");
        let five = write("five.npy", encode_f32(&[1, 1, 1, 1, 1], &[0.0]));
        let source = open_input(&five, Layout::Nchw).unwrap();
        assert_eq!(
            source.load(&[1, 1, 1, 1], None, None).unwrap().images,
            [0.0]
        );
        let one = write("one.npy", encode_f32(&[4], &[0.0; 4]));
        assert!(message(open_input(&one, Layout::Nchw).unwrap_err()).contains("[N, ...]"));
        let m = message(open_input(&flat, Layout::Nhwc).unwrap_err());
        assert!(m.contains("[N, H, W, C]"), "{m}");
        let empty = write("empty.npy", encode_f32(&[0, 1, 2, 2], &[]));
        assert!(message(open_input(&empty, Layout::Nchw).unwrap_err()).contains("no example"));
        let nan = write(
            "nan.npy",
            encode_f32(&[2, 1, 1, 2], &[0.0, 1.0, f32::NAN, 0.0]),
        );
        let m = message(
            open_input(&nan, Layout::Nchw)
                .unwrap()
                .load(&[1, 1, 2], None, None)
                .unwrap_err(),
        );
        assert!(
            m.contains("nan.npy") && m.contains("element 2") && m.contains("example 1"),
            "{m}"
        );
        // The first example alone is fine.
        assert!(
            open_input(&nan, Layout::Nchw)
                .unwrap()
                .load(&[1, 1, 2], None, Some(1))
                .is_ok()
        );
        let big = write("big.npy", encode_f64(&[1, 1, 1, 1], &[1e300]));
        let m = message(
            open_input(&big, Layout::Nchw)
                .unwrap()
                .load(&[1, 1, 1], None, None)
                .unwrap_err(),
        );
        assert!(m.contains("float32 range"), "{m}");
        let text = write("inputs.txt", b"1 2 3".to_vec());
        assert!(
            message(open_input(&text, Layout::Nchw).unwrap_err()).contains("expected a .npy file")
        );
        let garbage = write("garbage.npy", b"not numpy".to_vec());
        assert!(message(open_input(&garbage, Layout::Nchw).unwrap_err()).contains("garbage.npy"));
        assert!(
            message(open_input(&dir.join("missing.npy"), Layout::Nchw).unwrap_err())
                .contains("missing.npy")
        );
    }

    #[test]
    fn image_folders_are_sorted_converted_and_resized() {
        let dir = test_dir("inputs-images");
        // b.png: 4 x 2 grayscale, a horizontal ramp.
        let gray = GrayImage::from_fn(4, 2, |x, _| Luma([(x * 60) as u8]));
        gray.save(dir.join("b.png")).unwrap();
        // a.PNG: 2 x 2 RGB, red on the left, blue on the right.
        let rgb = RgbImage::from_fn(2, 2, |x, _| {
            if x == 0 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            }
        });
        rgb.save_with_format(dir.join("a.PNG"), image::ImageFormat::Png)
            .unwrap();
        // c.jpg: 8 x 8 mid gray.
        let flat = RgbImage::from_pixel(8, 8, Rgb([128, 128, 128]));
        flat.save(dir.join("c.jpg")).unwrap();
        // Ignored: other extensions, a folder named like an image.
        std::fs::write(dir.join("notes.txt"), "not an image").unwrap();
        std::fs::create_dir(dir.join("d.png")).unwrap();

        let source = open_input(&dir, Layout::Nchw).unwrap();
        assert_eq!(source.count(), 3);
        assert_eq!(source.shape(), None);
        assert_eq!(source.names(), ["a.PNG", "b.png", "c.jpg"]);

        // RGB at 2 x 2: a.PNG as it is, b.png resized and grayscale copied to 3 channels.
        let inputs = source.load(&[3, 2, 2], None, None).unwrap();
        assert_eq!(inputs.images.len(), 3 * 12);
        assert_eq!(inputs.names, ["a.PNG", "b.png", "c.jpg"]);
        assert_eq!(
            &inputs.images[..12],
            &[1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0]
        );
        let b = &inputs.images[12..24];
        assert_eq!(&b[0..4], &b[4..8]);
        assert_eq!(&b[0..4], &b[8..12]);
        assert!(b[0] < b[1] && b[0] == b[2] && b[1] == b[3], "{b:?}");
        for &v in &inputs.images[24..] {
            assert!((v - 128.0 / 255.0).abs() < 3.0 / 255.0, "{v}");
        }

        // Grayscale at the size of b.png: no resize, and luma of pure red and blue.
        let norm = Normalization::mnist();
        let inputs = source.load(&[1, 2, 4], Some(&norm), Some(2)).unwrap();
        assert_eq!(inputs.names, ["a.PNG", "b.png"]);
        assert_eq!(inputs.images.len(), 2 * 8);
        let expected: Vec<f32> = [0u8, 60, 120, 180, 0, 60, 120, 180]
            .iter()
            .map(|&x| norm.apply(x, 0))
            .collect();
        assert_eq!(&inputs.images[8..], &expected[..]);
        assert!(
            inputs.images[0] > inputs.images[3],
            "red is lighter than blue in luma"
        );

        let m = message(source.load(&[2, 2, 2], None, None).unwrap_err());
        assert!(m.contains("2 channels"), "{m}");

        // One image file alone.
        let one = open_input(&dir.join("c.jpg"), Layout::Nchw).unwrap();
        assert_eq!(one.names(), ["c.jpg"]);
        assert_eq!(one.load(&[1, 3, 3], None, None).unwrap().images.len(), 9);
    }

    #[test]
    fn bad_image_folders_are_errors() {
        let dir = test_dir("inputs-no-images");
        std::fs::write(dir.join("readme.txt"), "nothing here").unwrap();
        let m = message(open_input(&dir, Layout::Nchw).unwrap_err());
        assert!(
            m.contains("inputs-no-images") && m.contains("no image"),
            "{m}"
        );

        std::fs::write(dir.join("broken.png"), b"\x89PNG\r\n\x1a\n truncated").unwrap();
        let source = open_input(&dir, Layout::Nchw).unwrap();
        let m = message(source.load(&[1, 2, 2], None, None).unwrap_err());
        assert!(
            m.contains("broken.png") && m.contains("cannot decode"),
            "{m}"
        );
    }

    #[test]
    fn datasets_from_inputs() {
        let inputs = Inputs {
            images: vec![0.0; 8],
            shape: vec![1, 2, 2],
            names: vec!["x".into(), "y".into()],
            labels: None,
        };
        let dataset = inputs.clone().into_dataset(10).unwrap();
        assert_eq!(dataset.labels, [0, 0]);
        assert_eq!(dataset.image_shape, [1, 2, 2]);
        assert_eq!(dataset.num_classes, 10);
        let labelled = Inputs {
            labels: Some(vec![3, 9]),
            ..inputs.clone()
        };
        assert_eq!(labelled.clone().into_dataset(10).unwrap().labels, [3, 9]);
        let m = message(labelled.into_dataset(5).unwrap_err());
        assert!(
            m.contains("label 1") && m.contains("class 9") && m.contains("5 classes"),
            "{m}"
        );
        let short = Inputs {
            labels: Some(vec![1]),
            ..inputs.clone()
        };
        assert!(message(short.into_dataset(10).unwrap_err()).contains("1 labels for 2 inputs"));
        assert!(inputs.into_dataset(0).is_err());
    }

    #[test]
    fn labels_from_text_and_npy() {
        let dir = test_dir("inputs-labels");
        let text = dir.join("labels.txt");
        std::fs::write(&text, "\u{feff}3\n\n 7 \r\n0\n").unwrap();
        assert_eq!(load_labels(&text, 3).unwrap(), [3, 7, 0]);
        let m = message(load_labels(&text, 4).unwrap_err());
        assert!(
            m.contains("labels.txt") && m.contains("hold 3") && m.contains("expected 4"),
            "{m}"
        );
        std::fs::write(&text, "1\n-2\n").unwrap();
        let m = message(load_labels(&text, 2).unwrap_err());
        assert!(m.contains("line 2") && m.contains("'-2'"), "{m}");
        std::fs::write(&text, "1\ncat\n").unwrap();
        assert!(message(load_labels(&text, 2).unwrap_err()).contains("'cat'"));

        let npy = dir.join("labels.npy");
        std::fs::write(&npy, encode_i64(&[3], &[4, 0, 9])).unwrap();
        assert_eq!(load_labels(&npy, 3).unwrap(), [4, 0, 9]);
        std::fs::write(&npy, encode_i64(&[3, 1], &[4, 0, 9])).unwrap();
        assert_eq!(load_labels(&npy, 3).unwrap(), [4, 0, 9]);
        std::fs::write(&npy, encode_u8(&[2], &[255, 1])).unwrap();
        assert_eq!(load_labels(&npy, 2).unwrap(), [255, 1]);
        std::fs::write(&npy, encode_i64(&[3], &[4, -1, 9])).unwrap();
        let m = message(load_labels(&npy, 3).unwrap_err());
        assert!(m.contains("label 1 is -1"), "{m}");
        std::fs::write(&npy, encode_f32(&[2], &[1.0, 2.0])).unwrap();
        assert!(message(load_labels(&npy, 2).unwrap_err()).contains("float32"));
        std::fs::write(&npy, encode_i64(&[2, 2], &[1, 2, 3, 4])).unwrap();
        assert!(message(load_labels(&npy, 4).unwrap_err()).contains("[2, 2]"));
        std::fs::write(&npy, encode_i64(&[2], &[1, 2])).unwrap();
        assert!(message(load_labels(&npy, 3).unwrap_err()).contains("hold 2 labels, expected 3"));
    }
}

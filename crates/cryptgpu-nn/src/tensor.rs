//! `Tensor`: a dense, row-major f64 host tensor, the currency of the plaintext executor and
//! of model parameters.

use crate::error::{NnError, Result};

/// A dense row-major tensor of `f64` on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f64>,
}

impl Tensor {
    /// A tensor of `shape` holding `data` (row-major); the length must match the shape.
    pub fn new(shape: &[usize], data: Vec<f64>) -> Result<Self> {
        let expected: usize = shape.iter().product();
        if expected != data.len() {
            return Err(NnError::TensorLength {
                shape: shape.to_vec(),
                expected,
                got: data.len(),
            });
        }
        Ok(Self {
            shape: shape.to_vec(),
            data,
        })
    }

    /// A tensor of `shape` from `f32` values.
    pub fn from_f32(shape: &[usize], data: &[f32]) -> Result<Self> {
        Self::new(shape, data.iter().map(|&v| f64::from(v)).collect())
    }

    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        Self::full(shape, 0.0)
    }

    /// A tensor with every element `value`.
    pub fn full(shape: &[usize], value: f64) -> Self {
        Self {
            shape: shape.to_vec(),
            data: vec![value; shape.iter().product()],
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The elements, row-major.
    pub fn data(&self) -> &[f64] {
        &self.data
    }

    /// The elements, row-major, for writing.
    pub fn data_mut(&mut self) -> &mut [f64] {
        &mut self.data
    }

    /// The elements, consuming the tensor.
    pub fn into_data(self) -> Vec<f64> {
        self.data
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The elements rounded to `f32`.
    pub fn to_f32(&self) -> Vec<f32> {
        self.data.iter().map(|&v| v as f32).collect()
    }

    /// The same elements under another shape of the same size.
    pub fn reshape(self, shape: &[usize]) -> Result<Self> {
        Self::new(shape, self.data)
    }

    /// The index of the largest element of each row of a `[N, K]` tensor (the first on ties).
    pub fn argmax_rows(&self) -> Result<Vec<usize>> {
        let [_, k] = self.shape[..] else {
            return Err(NnError::InvalidArgument(format!(
                "argmax_rows needs a [N, K] tensor, got shape {:?}",
                self.shape
            )));
        };
        if k == 0 {
            return Err(NnError::InvalidArgument(
                "argmax_rows of rows with no elements".into(),
            ));
        }
        Ok(self
            .data
            .chunks(k)
            .map(|row| {
                let mut best = 0;
                for (i, &v) in row.iter().enumerate() {
                    if v > row[best] {
                        best = i;
                    }
                }
                best
            })
            .collect())
    }

    /// The largest absolute difference to `other` (infinite when the shapes differ).
    pub fn max_abs_diff(&self, other: &Tensor) -> f64 {
        if self.shape != other.shape {
            return f64::INFINITY;
        }
        self.data
            .iter()
            .zip(&other.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
    }
}

//! `BatchReshape`: a reshape that moves the batch axis or merges it with others, as
//! PyTorch's `nn.MultiheadAttention` does (`[N, L, E] → [L, N, E] → [L, N·H, d]`, and back).
//! Its target holds sizes and one entry −k meaning k times the batch; the batch is the
//! input's element count over the target's fixed part. Local on shares, like any reshape.
//! Made by the importer from a `Reshape`, `Squeeze` or `Unsqueeze` whose output has the
//! batch anywhere but whole at axis 0 (which a [`super::reshape::Reshape`] keeps).

use super::common::*;

/// A reshape to `target`, where an entry −k is k times the batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchReshape {
    /// Sizes, and exactly one −k (k ≥ 1): k times the batch.
    pub target: Vec<i64>,
}

impl Attributes for BatchReshape {
    fn write_attrs(&self, a: &mut Attrs) {
        a.set("target", self.target.clone());
    }

    fn read_attrs(a: &Attrs) -> Result<Self> {
        let target = a.ints("target")?;
        let batch_entries = target.iter().filter(|&&d| d < 0).count();
        if batch_entries != 1 || target.iter().any(|&d| d == 0 || d.abs() >= 1 << 31) {
            return Err(a.err(format!(
                "`target` {target:?} needs sizes in [1, 2^31) and exactly one −k (k times the \
                 batch)"
            )));
        }
        Ok(Self { target })
    }
}

impl Layer for BatchReshape {
    const KIND: &'static str = "BatchReshape";

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let x = inputs[0];
        let total = element_count(x).ok_or_else(|| format!("{x:?} is too large"))?;
        let fixed = element_count(
            &self
                .target
                .iter()
                .map(|&d| d.unsigned_abs() as usize)
                .collect::<Vec<_>>(),
        )
        .ok_or_else(|| format!("target {:?} is too large", self.target))?;
        if fixed == 0 || total == 0 || !total.is_multiple_of(fixed) {
            return Err(format!(
                "cannot reshape {x:?} to {:?} (−k: k times the batch)",
                self.target
            ));
        }
        let batch = total / fixed;
        Ok(self
            .target
            .iter()
            .map(|&d| {
                if d < 0 {
                    d.unsigned_abs() as usize * batch
                } else {
                    d as usize
                }
            })
            .collect())
    }

    relayout_plain_passes!();
}

relayout_private_passes!(BatchReshape);

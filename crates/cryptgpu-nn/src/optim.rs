//! SGD with learning rate, momentum and weight decay, PyTorch's formulation:
//! `g' = g + weight_decay * w`, `v = momentum * v + g'`, `w = w - lr * v`
//! (the first step's `v` is `g'`, the same as starting from `v = 0`).

use std::collections::BTreeMap;

use crate::error::{NnError, Result};
use crate::model::{Model, ParamKind};
use crate::tensor::Tensor;

/// SGD hyperparameters, shared by the plaintext and the private trainers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f64,
    /// Momentum (0 for plain SGD).
    pub momentum: f64,
    /// L2 weight decay (0 for none).
    pub weight_decay: f64,
}

impl SgdConfig {
    /// Plain SGD with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        Self {
            lr,
            momentum: 0.0,
            weight_decay: 0.0,
        }
    }

    /// The same with `momentum`.
    pub fn with_momentum(self, momentum: f64) -> Self {
        Self { momentum, ..self }
    }

    /// The same with `weight_decay`.
    pub fn with_weight_decay(self, weight_decay: f64) -> Self {
        Self {
            weight_decay,
            ..self
        }
    }
}

/// The plaintext optimiser: its configuration and one velocity per trained parameter.
#[derive(Clone, Debug)]
pub struct Sgd {
    /// Hyperparameters.
    pub config: SgdConfig,
    velocity: BTreeMap<String, Vec<f64>>,
}

impl Sgd {
    /// A fresh optimiser (zero velocities).
    pub fn new(config: SgdConfig) -> Self {
        Self {
            config,
            velocity: BTreeMap::new(),
        }
    }

    /// Updates every trainable parameter of `model` from `grads` (by name). Every trainable
    /// parameter needs a gradient of its own shape; buffers are left alone.
    pub fn step(&mut self, model: &mut Model, grads: &BTreeMap<String, Tensor>) -> Result<()> {
        let SgdConfig {
            lr,
            momentum,
            weight_decay,
        } = self.config;
        for spec in model.param_specs() {
            if spec.kind != ParamKind::Trainable {
                continue;
            }
            let grad = grads.get(&spec.name).ok_or_else(|| {
                NnError::InvalidArgument(format!("no gradient for parameter `{}`", spec.name))
            })?;
            let param =
                model
                    .params
                    .get_mut(&spec.name)
                    .ok_or_else(|| NnError::MissingParameter {
                        name: spec.name.clone(),
                        expected: spec.shape.clone(),
                        context: String::new(),
                    })?;
            if grad.shape() != param.shape() {
                return Err(NnError::ParameterShape {
                    name: spec.name.clone(),
                    expected: param.shape().to_vec(),
                    found: grad.shape().to_vec(),
                    context: " (gradient)".into(),
                });
            }
            let velocity = self
                .velocity
                .entry(spec.name.clone())
                .or_insert_with(|| vec![0.0; grad.len()]);
            for ((w, &g), v) in param.data_mut().iter_mut().zip(grad.data()).zip(velocity) {
                let g = g + weight_decay * *w;
                *v = momentum * *v + g;
                *w -= lr * *v;
            }
        }
        Ok(())
    }
}

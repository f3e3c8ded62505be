//! A model as a small DAG of nodes, its parameters, shape inference, deterministic
//! initialisation and BatchNorm folding.
//!
//! # Walking the graph
//!
//! [`Model::nodes`] is in topological order: node 0 is the one [`Op::Input`], and every
//! node's inputs are earlier nodes. A forward pass walks the nodes in order and keeps one
//! value per node ([`Model::last_use`] tells when a value can be dropped); a backward pass
//! walks them in reverse and *adds* the gradients flowing into a node from each of its
//! consumers (a node feeding a residual `Add` and the next block has two). The model's
//! value is that of [`Model::output`].
//!
//! # Parameters
//!
//! A node with parameters owns those named `"{node.name}.{suffix}"`, exactly PyTorch's
//! `state_dict` keys for the same architecture (e.g. `features.0.weight`), with PyTorch's
//! layouts: convolution weights `[O, C / groups, kh, kw]`, linear weights `[out, in]`,
//! biases `[O]`, BatchNorm `weight`, `bias`, `running_mean`, `running_var` `[C]`.
//! [`Model::param_specs`] lists them in `state_dict` order; [`ParamKind::Buffer`]s
//! (running statistics) are not trained by SGD.

use std::collections::BTreeMap;

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

use crate::data::Normalization;
use crate::error::{NnError, Result};
pub use crate::layers::shape::window_out;
use crate::layers::{Init, ModelView, batchnorm, input::Input};
pub use crate::layers::{NodeId, Op, ParamKind};
use crate::tensor::Tensor;

/// One parameter the model needs.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    /// Full name, e.g. `features.0.weight`.
    pub name: String,
    /// Expected shape.
    pub shape: Vec<usize>,
    /// Trained or buffer.
    pub kind: ParamKind,
    /// The node that owns it.
    pub node: NodeId,
}

/// One node of the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// PyTorch module path (`features.0`), the prefix of the node's parameter names; also
    /// names the node in errors. Unique within a model.
    pub name: String,
    /// What it computes.
    pub op: Op,
    /// The nodes whose values it takes, in order (two for `Add`, none for `Input`).
    pub inputs: Vec<NodeId>,
}

/// A network: a DAG of nodes, its parameters and the input it expects.
#[derive(Clone, Debug)]
pub struct Model {
    name: String,
    input_shape: Vec<usize>,
    nodes: Vec<Node>,
    output: NodeId,
    /// Parameters by full name (see [`Model::param_specs`]).
    pub params: BTreeMap<String, Tensor>,
    /// How raw inputs are normalised before they reach the model, when known.
    pub normalization: Option<Normalization>,
    /// Parameters training leaves alone ([`Model::train_only`]).
    frozen: std::collections::BTreeSet<String>,
}

impl Model {
    /// A model from its parts, checked: node 0 is the only `Input`, inputs point to earlier
    /// nodes with the right arity, names are unique, and shapes infer from `input_shape`
    /// (one example, without the batch axis). Parameters start at zero; see
    /// [`Model::init_params`].
    pub fn new(
        name: &str,
        input_shape: &[usize],
        nodes: Vec<Node>,
        output: NodeId,
    ) -> Result<Self> {
        if !matches!(nodes.first().map(|n| &n.op), Some(Op::Input(_))) {
            return Err(NnError::Graph("node 0 must be the Input".into()));
        }
        let mut names = std::collections::HashSet::new();
        for (id, node) in nodes.iter().enumerate() {
            if id > 0 && matches!(node.op, Op::Input(_)) {
                return Err(NnError::Graph(format!(
                    "node `{}` is a second Input",
                    node.name
                )));
            }
            if !node.op.arity().accepts(node.inputs.len()) {
                return Err(NnError::Graph(format!(
                    "node `{}` ({}) has {} inputs, expected {}",
                    node.name,
                    node.op.kind(),
                    node.inputs.len(),
                    node.op.arity()
                )));
            }
            if let Some(&bad) = node.inputs.iter().find(|&&i| i >= id) {
                return Err(NnError::Graph(format!(
                    "node `{}` takes node {bad}, which is not an earlier node",
                    node.name
                )));
            }
            if node.op.only_as_output() && id != output {
                return Err(NnError::Graph(format!(
                    "{} node `{}` is allowed only as the model output",
                    node.op.kind(),
                    node.name
                )));
            }
            if !names.insert(node.name.clone()) {
                return Err(NnError::Graph(format!(
                    "two nodes are named `{}`",
                    node.name
                )));
            }
        }
        if output >= nodes.len() {
            return Err(NnError::Graph(format!(
                "output node {output} does not exist"
            )));
        }
        let mut model = Self {
            name: name.to_owned(),
            input_shape: input_shape.to_vec(),
            nodes,
            output,
            params: BTreeMap::new(),
            normalization: None,
            frozen: Default::default(),
        };
        let one = model.shapes(1)?;
        // Layers may move the batch axis (multi-head attention), but the output has it first.
        let two = model.shapes(2)?;
        let (a, b) = (&one[output], &two[output]);
        if a.first() != Some(&1) || b.first() != Some(&2) || a[1..] != b[1..] {
            return Err(NnError::Graph(format!(
                "the output `{}` of shape {a:?} at batch 1 and {b:?} at batch 2 does not have \
                 the batch axis first",
                model.nodes[output].name
            )));
        }
        for spec in model.param_specs() {
            let tensor = Tensor::zeros(&spec.shape);
            model.params.insert(spec.name, tensor);
        }
        Ok(model)
    }

    /// The model's name (e.g. `lenet`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `Some(V)` when the model's input is token ids in `0..V` (a language model's
    /// `input_ids`); `None` for real values.
    pub fn token_vocabulary(&self) -> Option<usize> {
        match &self.nodes[0].op {
            Op::Input(input) => input.vocabulary,
            _ => None,
        }
    }

    /// The shape of one input example, e.g. `[1, 28, 28]`.
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// The nodes, in topological order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node whose value is the model's output.
    pub fn output(&self) -> NodeId {
        self.output
    }

    /// The node holding the logits: the output, or the input of a final `Softmax`.
    pub fn logits(&self) -> NodeId {
        let out = &self.nodes[self.output];
        if out.op.is_output_activation() {
            out.inputs[0]
        } else {
            self.output
        }
    }

    /// Number of classes: the size of the logits of one example.
    pub fn num_classes(&self) -> usize {
        let shapes = self.shapes(1).expect("shapes were checked in Model::new");
        shapes[self.logits()].iter().product()
    }

    /// For each node, the nodes that take its value, in order.
    pub fn consumers(&self) -> Vec<Vec<NodeId>> {
        let mut consumers = vec![Vec::new(); self.nodes.len()];
        for (id, node) in self.nodes.iter().enumerate() {
            for &input in &node.inputs {
                consumers[input].push(id);
            }
        }
        consumers
    }

    /// For each node, the last node that reads its value (the output counts as read at the
    /// end: `nodes.len()`); a forward pass that needs no backward can drop a value then.
    pub fn last_use(&self) -> Vec<NodeId> {
        let mut last: Vec<NodeId> = (0..self.nodes.len()).collect();
        for (id, node) in self.nodes.iter().enumerate() {
            for &input in &node.inputs {
                last[input] = id;
            }
        }
        last[self.output] = self.nodes.len();
        last
    }

    /// Every parameter the model needs, in `state_dict` order.
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        let mut specs = Vec::new();
        for (id, node) in self.nodes.iter().enumerate() {
            for decl in node.op.params() {
                let name = format!("{}.{}", node.name, decl.suffix);
                let kind = match decl.kind {
                    ParamKind::Trainable if self.frozen.contains(&name) => ParamKind::Frozen,
                    kind => kind,
                };
                specs.push(ParamSpec {
                    name,
                    shape: decl.shape,
                    kind,
                    node: id,
                });
            }
        }
        specs
    }

    /// Trains only the parameters whose names start with one of `prefixes` (`head`,
    /// `classifier.`): every other trainable parameter becomes [`ParamKind::Frozen`], so
    /// SGD leaves it alone, and training runs backward passes only where a trained
    /// parameter is at or before a node (fine-tuning a head on a frozen encoder never
    /// differentiates through the encoder). An empty list trains everything again. Returns
    /// how many parameters train; none is an error.
    pub fn train_only(&mut self, prefixes: &[String]) -> Result<usize> {
        self.frozen.clear();
        if prefixes.is_empty() {
            return Ok(self.trained_names().len());
        }
        let (trained, frozen): (Vec<_>, Vec<_>) = self
            .trained_names()
            .into_iter()
            .partition(|name| prefixes.iter().any(|p| name.starts_with(p.as_str())));
        if trained.is_empty() {
            let names = self.trained_names();
            let shown: Vec<&str> = names.iter().rev().take(8).map(String::as_str).collect();
            return Err(NnError::InvalidArgument(format!(
                "no trainable parameter starts with {prefixes:?}; the last of the {} are: {}",
                names.len(),
                shown.join(", ")
            )));
        }
        self.frozen = frozen.into_iter().collect();
        Ok(trained.len())
    }

    /// The parameters training leaves alone.
    pub fn frozen(&self) -> &std::collections::BTreeSet<String> {
        &self.frozen
    }

    /// Freezes exactly the parameters `names` (a manifest's record of
    /// [`Model::train_only`]); each must be one the layers could learn.
    pub fn freeze(&mut self, names: impl IntoIterator<Item = String>) -> Result<()> {
        let known: std::collections::BTreeSet<String> = self.trained_names().into_iter().collect();
        let names: std::collections::BTreeSet<String> = names.into_iter().collect();
        if let Some(bad) = names.iter().find(|n| !known.contains(*n)) {
            return Err(NnError::InvalidArgument(format!(
                "cannot freeze `{bad}`: not a trainable parameter of the model"
            )));
        }
        self.frozen = names;
        Ok(())
    }

    /// Names of the parameters the layers could learn, frozen or not.
    fn trained_names(&self) -> Vec<String> {
        self.nodes
            .iter()
            .flat_map(|node| {
                node.op
                    .params()
                    .into_iter()
                    .filter(|d| d.kind == ParamKind::Trainable)
                    .map(move |d| format!("{}.{}", node.name, d.suffix))
            })
            .collect()
    }

    /// For each node, whether training needs its backward pass: it has a trained
    /// parameter, or one of its inputs needs one.
    pub fn needs_backward(&self) -> Vec<bool> {
        let trains: std::collections::BTreeSet<NodeId> = self
            .param_specs()
            .into_iter()
            .filter(|s| s.kind == ParamKind::Trainable)
            .map(|s| s.node)
            .collect();
        let mut needed = vec![false; self.nodes.len()];
        for (id, node) in self.nodes.iter().enumerate() {
            needed[id] = trains.contains(&id) || node.inputs.iter().any(|&i| needed[i]);
        }
        needed
    }

    /// The parameter `"{node}.{suffix}"`, or a `MissingParameter` error.
    pub fn param(&self, node: NodeId, suffix: &str) -> Result<&Tensor> {
        let name = format!("{}.{suffix}", self.nodes[node].name);
        self.params
            .get(&name)
            .ok_or_else(|| NnError::MissingParameter {
                expected: self.nodes[node]
                    .op
                    .params()
                    .into_iter()
                    .find(|d| d.suffix == suffix)
                    .map(|d| d.shape)
                    .unwrap_or_default(),
                name,
                context: String::new(),
            })
    }

    /// The parameter called `name`, or a `MissingParameter` error.
    pub fn param_by_name(&self, name: &str) -> Result<&Tensor> {
        self.params
            .get(name)
            .ok_or_else(|| NnError::MissingParameter {
                name: name.to_owned(),
                expected: Vec::new(),
                context: String::new(),
            })
    }

    /// Number of trainable parameter values.
    pub fn num_trainable(&self) -> usize {
        self.param_specs()
            .iter()
            .filter(|s| s.kind == ParamKind::Trainable)
            .map(|s| s.shape.iter().product::<usize>())
            .sum()
    }

    /// Checks that `params` holds exactly the model's parameters with the right shapes;
    /// `context` is appended to the messages (e.g. " in weights file x").
    pub fn check_params(&self, params: &BTreeMap<String, Tensor>, context: &str) -> Result<()> {
        let specs = self.param_specs();
        for spec in &specs {
            match params.get(&spec.name) {
                None => {
                    return Err(NnError::MissingParameter {
                        name: spec.name.clone(),
                        expected: spec.shape.clone(),
                        context: context.to_owned(),
                    });
                }
                Some(t) if t.shape() != spec.shape => {
                    return Err(NnError::ParameterShape {
                        name: spec.name.clone(),
                        expected: spec.shape.clone(),
                        found: t.shape().to_vec(),
                        context: context.to_owned(),
                    });
                }
                Some(_) => {}
            }
        }
        let extra: Vec<String> = params
            .keys()
            .filter(|k| !specs.iter().any(|s| &s.name == *k))
            .cloned()
            .collect();
        if !extra.is_empty() {
            return Err(NnError::UnexpectedParameters {
                names: extra,
                context: context.to_owned(),
            });
        }
        Ok(())
    }

    /// Replaces all parameters, after [`Model::check_params`].
    pub fn set_params(&mut self, params: BTreeMap<String, Tensor>) -> Result<()> {
        self.check_params(&params, "")?;
        self.params = params;
        Ok(())
    }

    /// Re-initialises every parameter from `seed`, deterministically, like PyTorch's layer
    /// defaults: convolution and linear weights and biases uniform in `±1/sqrt(fan_in)`
    /// (Kaiming-uniform with `a = sqrt(5)`), BatchNorm weight 1, bias 0, running mean 0,
    /// running variance 1. Each parameter has its own stream, so adding a layer does not
    /// change the others' values.
    pub fn init_params(&mut self, seed: u64) {
        for node in &self.nodes {
            for decl in node.op.params() {
                let name = format!("{}.{}", node.name, decl.suffix);
                let count: usize = decl.shape.iter().product();
                let data = match decl.init {
                    Init::Constant(v) => vec![v; count],
                    Init::Uniform { fan_in } => {
                        let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
                        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ fnv1a(&name));
                        (0..count)
                            .map(|_| {
                                let unit = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                                (2.0 * unit - 1.0) * bound
                            })
                            .collect()
                    }
                };
                let tensor = Tensor::new(&decl.shape, data).expect("length matches the spec");
                self.params.insert(name, tensor);
            }
        }
    }

    /// The output shape of every node for a batch of `batch` examples, or an error naming
    /// the first node whose input does not fit.
    pub fn shapes(&self, batch: usize) -> Result<Vec<Vec<usize>>> {
        let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            let inputs: Vec<&[usize]> = node.inputs.iter().map(|&i| &shapes[i][..]).collect();
            let shape = infer_shape(node, &inputs, batch, &self.input_shape)?;
            shapes.push(shape);
        }
        Ok(shapes)
    }

    /// The per-channel `(scale, shift)` of a BatchNorm node at inference:
    /// `scale = weight / sqrt(running_var + eps)`, `shift = bias - running_mean * scale`.
    pub fn batchnorm_affine(&self, node: NodeId) -> Result<(Vec<f64>, Vec<f64>)> {
        let Op::BatchNorm2d(crate::layers::batchnorm::BatchNorm2d { eps, .. }) =
            self.nodes[node].op
        else {
            return Err(NnError::InvalidArgument(format!(
                "node `{}` is not a BatchNorm2d",
                self.nodes[node].name
            )));
        };
        batchnorm::affine(self, node, eps)
    }

    /// The same function for inference with every BatchNorm that directly follows a
    /// convolution (and is that convolution's only consumer) folded into the convolution's
    /// weights and bias. The folded convolution keeps its name and gains a bias; the
    /// BatchNorm node disappears. Other BatchNorms stay.
    pub fn fold_batchnorm(&self) -> Result<Model> {
        let consumers = self.consumers();
        // For each BatchNorm to fold: its convolution.
        let mut folded_into: BTreeMap<NodeId, NodeId> = BTreeMap::new();
        for (id, node) in self.nodes.iter().enumerate() {
            if let Op::BatchNorm2d(_) = node.op {
                let conv = node.inputs[0];
                if matches!(self.nodes[conv].op, Op::Conv2d(_))
                    && consumers[conv].len() == 1
                    && conv != self.output
                {
                    folded_into.insert(id, conv);
                }
            }
        }
        let mut params = self.params.clone();
        let mut nodes: Vec<Node> = Vec::new();
        let mut new_id = vec![usize::MAX; self.nodes.len()];
        for (id, node) in self.nodes.iter().enumerate() {
            if let Some(&conv) = folded_into.get(&id) {
                new_id[id] = new_id[conv];
                let (scale, shift) = self.batchnorm_affine(id)?;
                let conv_name = &self.nodes[conv].name;
                let weight = params
                    .get_mut(&format!("{conv_name}.weight"))
                    .expect("checked by param()");
                let per_channel = weight.len() / scale.len();
                for (c, chunk) in weight.data_mut().chunks_mut(per_channel).enumerate() {
                    chunk.iter_mut().for_each(|w| *w *= scale[c]);
                }
                let old_bias = params
                    .remove(&format!("{conv_name}.bias"))
                    .map(Tensor::into_data)
                    .unwrap_or_else(|| vec![0.0; scale.len()]);
                let bias = old_bias
                    .iter()
                    .zip(&scale)
                    .zip(&shift)
                    .map(|((b, s), t)| b * s + t)
                    .collect();
                params.insert(
                    format!("{conv_name}.bias"),
                    Tensor::new(&[scale.len()], bias)?,
                );
                let prefix = format!("{}.", node.name);
                params.retain(|k, _| !k.starts_with(&prefix));
                if let Op::Conv2d(c) = &mut nodes[new_id[conv]].op {
                    c.bias = true;
                }
                continue;
            }
            new_id[id] = nodes.len();
            nodes.push(Node {
                name: node.name.clone(),
                op: node.op.clone(),
                inputs: node.inputs.iter().map(|&i| new_id[i]).collect(),
            });
        }
        let mut model = Model::new(&self.name, &self.input_shape, nodes, new_id[self.output])?;
        model.set_params(params)?;
        model.normalization = self.normalization.clone();
        Ok(model)
    }
}

impl ModelView for Model {
    fn node_name(&self, id: NodeId) -> &str {
        &self.nodes[id].name
    }

    fn param(&self, node: NodeId, suffix: &str) -> Result<&Tensor> {
        Model::param(self, node, suffix)
    }

    fn param_by_name(&self, name: &str) -> Result<&Tensor> {
        Model::param_by_name(self, name)
    }
}

/// FNV-1a of a parameter name: a per-parameter stream id for initialisation.
fn fnv1a(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

pub(crate) fn infer_shape(
    node: &Node,
    inputs: &[&[usize]],
    batch: usize,
    input_shape: &[usize],
) -> Result<Vec<usize>> {
    if let Op::Input(_) = node.op {
        let mut shape = vec![batch];
        shape.extend_from_slice(input_shape);
        return Ok(shape);
    }
    node.op
        .output_shape(inputs)
        .map_err(|message| NnError::Shape {
            node: node.name.clone(),
            op: node.op.kind(),
            message,
        })
}

/// Builds a model node by node; ids are handed out in order, so the graph is topological
/// by construction.
#[derive(Debug)]
pub struct GraphBuilder {
    nodes: Vec<Node>,
}

impl Default for GraphBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl GraphBuilder {
    /// A graph holding only its input node (id 0, named `input`).
    pub fn new() -> Self {
        Self {
            nodes: vec![Node {
                name: "input".into(),
                op: Op::Input(Input::default()),
                inputs: Vec::new(),
            }],
        }
    }

    /// The input node's id.
    pub fn input(&self) -> NodeId {
        0
    }

    /// A graph whose input is token ids in `0..vocabulary` (see [`Model::token_vocabulary`]).
    pub fn with_tokens(vocabulary: usize) -> Self {
        let mut b = Self::new();
        b.nodes[0].op = Op::Input(Input {
            vocabulary: Some(vocabulary),
        });
        b
    }

    /// Adds a node and returns its id.
    pub fn add(&mut self, name: impl Into<String>, op: impl Into<Op>, inputs: &[NodeId]) -> NodeId {
        self.nodes.push(Node {
            name: name.into(),
            op: op.into(),
            inputs: inputs.to_vec(),
        });
        self.nodes.len() - 1
    }

    /// The finished model (checked by [`Model::new`]), parameters initialised from `seed`
    /// (see [`Model::init_params`]).
    pub fn finish(
        self,
        name: &str,
        input_shape: &[usize],
        output: NodeId,
        seed: u64,
    ) -> Result<Model> {
        let mut model = self.finish_zeroed(name, input_shape, output)?;
        model.init_params(seed);
        Ok(model)
    }

    /// The finished model with every parameter zero: cheap for large models whose weights
    /// are loaded next or that are only inspected.
    pub fn finish_zeroed(self, name: &str, input_shape: &[usize], output: NodeId) -> Result<Model> {
        Model::new(name, input_shape, self.nodes, output)
    }
}

/// A PyTorch `nn.Sequential` inside a [`GraphBuilder`]: each pushed layer is named
/// `{prefix}.{index}`, the index counting every layer (so ReLUs take numbers too).
#[derive(Debug)]
pub struct Sequential<'a> {
    builder: &'a mut GraphBuilder,
    prefix: String,
    index: usize,
    last: NodeId,
}

impl<'a> Sequential<'a> {
    /// A sequence named `prefix` that starts from node `from`.
    pub fn new(builder: &'a mut GraphBuilder, prefix: &str, from: NodeId) -> Self {
        Self {
            builder,
            prefix: prefix.to_owned(),
            index: 0,
            last: from,
        }
    }

    /// Appends a layer fed by the previous one.
    pub fn push(&mut self, op: impl Into<Op>) -> &mut Self {
        let name = if self.prefix.is_empty() {
            self.index.to_string()
        } else {
            format!("{}.{}", self.prefix, self.index)
        };
        self.last = self.builder.add(name, op, &[self.last]);
        self.index += 1;
        self
    }

    /// The last layer's node.
    pub fn last(&self) -> NodeId {
        self.last
    }
}

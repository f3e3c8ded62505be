//! What a layer sees of ONNX, and all it sees: the node it reads (attribute getters and
//! errors naming the node), the graph it adds to while importing ([`ImportGraph`], which
//! the importer implements) and the node it writes when exporting ([`OnnxNode`]). This
//! module imports no layer, so the layers' ONNX code depends on it and not on the importer.

use std::any::Any;

use super::proto::{NodeProto, TensorProto, Writer};
use crate::error::{NnError, Result};
use crate::layers::context::{ModelView, NodeId};
use crate::tensor::Tensor;

/// The batch size a symbolic batch axis takes while importing: a prime no model dimension
/// equals, so a folded shape entry equal to it is the batch, and one that is a multiple
/// of it is the batch merged with other axes (`[L, N·H, d]` of PyTorch's multi-head
/// attention).
pub const PROBE_BATCH: usize = 1_000_003;

/// `d` as a message names it when it is a positive multiple of [`PROBE_BATCH`]: `N` or
/// `k·N` (the batch, alone or merged with k other entries); `None` for any other size.
pub(crate) fn batch_text(d: usize) -> Option<String> {
    match d / PROBE_BATCH {
        _ if d == 0 || !d.is_multiple_of(PROBE_BATCH) => None,
        1 => Some("N".into()),
        k => Some(format!("{k}·N")),
    }
}

/// What a graph value name refers to while importing.
#[derive(Clone, Debug)]
pub enum Value {
    /// The output of a model node.
    Node(NodeId),
    /// A constant (initializer, `Constant` output, or a folded computation).
    Const(TensorProto),
}

/// The `ints` of attribute `name`.
pub fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    node.attribute(name).map(|a| a.ints.clone())
}

/// The `int` of attribute `name`, or `default`.
pub fn attr_int(node: &NodeProto, name: &str, default: i64) -> i64 {
    node.attribute(name).map_or(default, |a| a.i)
}

/// The `float` of attribute `name`, or `default`.
pub fn attr_float(node: &NodeProto, name: &str, default: f32) -> f32 {
    node.attribute(name).map_or(default, |a| a.f)
}

/// An error about `node`.
pub fn bad(node: &NodeProto, message: impl std::fmt::Display) -> NnError {
    NnError::Onnx(format!(
        "node `{}` ({}): {message}",
        node.display_name(),
        node.op_type
    ))
}

/// `pads` as `[top, left, bottom, right]` (ONNX writes `[top, left, bottom, right]` for
/// 2-d: all begins, then all ends); `auto_pad` NOTSET or VALID.
pub fn pads4(node: &NodeProto) -> Result<[usize; 4]> {
    if let Some(a) = node.attribute("auto_pad") {
        let mode = String::from_utf8_lossy(&a.s);
        if mode != "NOTSET" && mode != "VALID" && !mode.is_empty() {
            return Err(bad(node, format!("auto_pad {mode} is not supported")));
        }
    }
    match attr_ints(node, "pads").as_deref() {
        None | Some([]) => Ok([0; 4]),
        Some(&[t, l, b, r]) if [t, l, b, r].iter().all(|&v| v >= 0) => {
            Ok([t, l, b, r].map(|v| v as usize))
        }
        Some(other) => Err(bad(node, format!("pads {other:?} are not 2-d"))),
    }
}

/// Symmetric `pads` as `[vertical, horizontal]`.
pub fn symmetric_pads(node: &NodeProto) -> Result<[usize; 2]> {
    match pads4(node)? {
        [t, l, b, r] if t == b && l == r => Ok([t, l]),
        other => Err(bad(
            node,
            format!("pads {other:?} are not symmetric [top, left, bottom, right]"),
        )),
    }
}

/// A 2-d attribute of positive sizes.
pub fn attr_pair(node: &NodeProto, name: &str, default: [usize; 2]) -> Result<[usize; 2]> {
    match attr_ints(node, name).as_deref() {
        None | Some([]) => Ok(default),
        Some(&[a, b]) if a > 0 && b > 0 => Ok([a as usize, b as usize]),
        Some(other) => Err(bad(node, format!("{name} {other:?} is not 2-d"))),
    }
}

/// The graph being imported, as a layer's `import` function adds to it. The typed ways
/// to add a layer (`push`, `push_internal`, `unary`) are on `dyn ImportGraph`, next to
/// the [`crate::layers::Layer`] trait.
pub trait ImportGraph {
    /// The batch size shapes are computed at while importing
    /// ([`super::PROBE_BATCH`] for a symbolic batch).
    fn batch(&self) -> usize;

    /// The model's default-domain opset (13 when the file names none).
    fn opset(&self) -> i64;

    /// The shape of node `id`'s value at [`ImportGraph::batch`].
    fn shape(&self, id: NodeId) -> &[usize];

    /// What value `name` is, if known.
    fn value(&self, name: &str) -> Option<&Value>;

    /// Names output `index` of `node` as `value`.
    fn set_output(&mut self, node: &NodeProto, index: usize, value: Value);

    /// A unique node name: the PyTorch module path of `weight` when it is called
    /// `X.weight`, else the ONNX node's name.
    fn node_name(&mut self, node: &NodeProto, weight: Option<&str>) -> String;

    /// Stores parameter `{node}.{suffix}`.
    fn insert_param(&mut self, node: &str, suffix: &str, value: Tensor);

    /// Adds a node computing `layer` (a layer struct) on `inputs`, named `name` (made
    /// unique first when `unique`); checks its attributes, arity and shapes.
    fn add_layer(
        &mut self,
        name: String,
        unique: bool,
        layer: &dyn Any,
        inputs: &[NodeId],
    ) -> Result<NodeId>;

    /// The layer struct of node `id`, to change before anything consumes it.
    fn layer_mut(&mut self, id: NodeId) -> &mut dyn Any;

    /// How many nodes take node `id`'s value.
    fn consumers(&self, id: NodeId) -> usize;

    /// The name of node `id`.
    fn name_of(&self, id: NodeId) -> &str;

    /// The inputs of node `id`.
    fn inputs_of(&self, id: NodeId) -> Vec<NodeId>;

    /// Node `id`'s shape as a message shows it, the batch by name (`[N, 4, 16]`, `[16, 4·N,
    /// 8]`): its size while importing is a probe, not the user's.
    fn describe(&self, id: NodeId) -> String {
        let symbolic = self.batch() == PROBE_BATCH;
        let dims: Vec<String> = self
            .shape(id)
            .iter()
            .map(|&d| {
                symbolic
                    .then(|| batch_text(d))
                    .flatten()
                    .unwrap_or_else(|| d.to_string())
            })
            .collect();
        format!("[{}]", dims.join(", "))
    }

    /// Whether axis `axis` of node `id` holds the batch (alone or merged with other axes):
    /// always axis 0 with a fixed batch, the axes whose size is a multiple of the probe
    /// with a symbolic one.
    fn is_batch_axis(&self, id: NodeId, axis: usize) -> bool {
        let d = self.shape(id).get(axis).copied().unwrap_or(0);
        if self.batch() == PROBE_BATCH {
            d != 0 && d % PROBE_BATCH == 0
        } else {
            axis == 0
        }
    }

    /// Input `index` of `node`, which must be a computed value (not a constant).
    fn input_node(&self, node: &NodeProto, index: usize) -> Result<NodeId> {
        match node.inputs.get(index).and_then(|n| self.value(n)) {
            Some(Value::Node(id)) => Ok(*id),
            Some(Value::Const(_)) => Err(bad(
                node,
                format!(
                    "input {index} (`{}`) is a constant where a computed value was expected",
                    node.inputs[index]
                ),
            )),
            None => Err(bad(
                node,
                format!("input {index} is missing or not computed earlier"),
            )),
        }
    }

    /// Input `index` of `node` as a constant: `None` when the input is absent, an error when
    /// it is a computed value.
    fn constant(&self, node: &NodeProto, index: usize) -> Result<Option<TensorProto>> {
        match node.inputs.get(index).map(String::as_str) {
            None | Some("") => Ok(None),
            Some(name) => match self.value(name) {
                Some(Value::Const(t)) => Ok(Some(t.clone())),
                _ => Err(bad(
                    node,
                    format!("input `{name}` must be a constant (an initializer)"),
                )),
            },
        }
    }

    /// Stores parameter `{node}.{suffix}` from an initializer, reshaped to `shape` if given.
    fn param(
        &mut self,
        node: &str,
        suffix: &str,
        t: &TensorProto,
        shape: Option<&[usize]>,
    ) -> Result<()> {
        let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
        let value = Tensor::new(shape.unwrap_or(&dims), t.values.clone())?;
        self.insert_param(node, suffix, value);
        Ok(())
    }

    /// Output 0 of `node` is the value of its input 0.
    fn identity(&mut self, node: &NodeProto) -> Result<()> {
        let value = node
            .inputs
            .first()
            .and_then(|n| self.value(n))
            .cloned()
            .ok_or_else(|| bad(node, "input is missing"))?;
        self.set_output(node, 0, value);
        Ok(())
    }

    /// Output 0 of `node` is node `id`'s value.
    fn alias(&mut self, node: &NodeProto, id: NodeId) {
        self.set_output(node, 0, Value::Node(id));
    }
}

/// One ONNX node being written by [`crate::layers::Layer::onnx_export`]: the op type the
/// layer table lists first for the layer's kind, unless the layer sets another.
pub struct OnnxNode<'a> {
    /// The model being exported (its parameters, for layers that write them differently).
    pub model: &'a dyn ModelView,
    /// The shapes of the node's inputs at batch 1.
    pub input_shapes: Vec<Vec<usize>>,
    /// The node's name in the model.
    pub name: &'a str,
    /// The ONNX op type.
    pub op_type: &'static str,
    /// Input value names: the node's inputs first; add initializer names after.
    pub inputs: Vec<String>,
    /// Attributes.
    pub attrs: Vec<Writer>,
    /// Initializers this node adds besides the model's parameters (e.g. Clip's bounds).
    pub constants: Vec<(String, Tensor)>,
    /// A second node applied to this one's output: its op type and its other inputs (a
    /// bias `Add` after a `MatMul`).
    pub then: Option<(&'static str, Vec<String>)>,
    /// Parameters the node writes in another form (as a constant) instead of as they are.
    pub replaced: Vec<String>,
}

impl OnnxNode<'_> {
    /// Adds a parameter of the node as an input, by its `state_dict` name.
    pub fn param_input(&mut self, suffix: &str) {
        self.inputs.push(format!("{}.{suffix}", self.name));
    }

    /// Adds a constant input of the node.
    pub fn constant_input(&mut self, suffix: &str, value: Tensor) {
        let name = format!("{}.{suffix}", self.name);
        self.inputs.push(name.clone());
        self.constants.push((name, value));
    }

    /// An `ints` attribute.
    pub fn ints(&mut self, name: &str, values: &[i64]) {
        let mut a = Writer::new();
        a.string(1, name).int(20, 7);
        for &v in values {
            a.int(8, v);
        }
        self.attrs.push(a);
    }

    /// An `int` attribute.
    pub fn int(&mut self, name: &str, value: i64) {
        let mut a = Writer::new();
        a.string(1, name).int(3, value).int(20, 2);
        self.attrs.push(a);
    }

    /// A `float` attribute.
    pub fn float(&mut self, name: &str, value: f64) {
        let mut a = Writer::new();
        a.string(1, name).float(2, value as f32).int(20, 1);
        self.attrs.push(a);
    }
}

//! ONNX import and export, as `torch.onnx.export` writes models (the legacy TorchScript
//! exporter and the dynamo exporter, opsets 7 to 20, a symbolic or fixed batch axis).
//!
//! Each layer's ONNX mapping lives with the layer ([`crate::layers`], listed by
//! [`crate::layers::ONNX_OPS`]); [`fold`] evaluates the shape computations exporters write
//! (`x.view(x.size(0), -1)` becomes Shape → Gather → Unsqueeze → Concat → Reshape) at
//! import time, so they are gone before an executor sees the graph. Anything else is an
//! [`NnError::UnsupportedOnnxOp`] naming the op, the node and what is supported.
//!
//! The batch axis: the graph input's first dimension may be symbolic (a dynamic batch) or
//! fixed; either way the model runs at any batch. While importing, a symbolic batch takes a
//! probe value ([`PROBE_BATCH`]) that no real dimension has, so a folded shape whose first
//! entry is the batch can be told apart from the sizes that follow it.
//!
//! Node names: a layer whose weight initializer is called `X.weight` (PyTorch's export
//! keeps `state_dict` names) becomes node `X`, so its parameters keep their PyTorch names;
//! other layers take the ONNX node's name.
//!
//! Weights stored as external data (`model.onnx.data` beside the model, the dynamo
//! exporter's default) are read by [`import_file`] from the model's folder only: a
//! location that is absolute, climbs out of the folder or points through a link outside
//! it is an error, as is a range past the file's end.
//!
//! No protobuf compiler is involved: [`proto`] reads the wire format directly.

pub mod fold;
pub mod node;
pub mod proto;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use crate::error::{NnError, Result};
use crate::layers::shape::element_count;
use crate::layers::{self, ONNX_OPS, OnnxNode};
use crate::model::{Model, Node, NodeId, Op};
use crate::tensor::Tensor;
use node::{ImportGraph, Value, bad};
use proto::{ModelProto, NodeProto, TensorProto, Writer, data_type};

pub use node::PROBE_BATCH;

/// The most values one node's output may hold per example (2^26: VGG-16 on ImageNet peaks
/// at 3.2·10^6), so a malformed file cannot make the executors allocate without bound.
const MAX_VALUES_PER_EXAMPLE: usize = 1 << 26;

/// The most bytes of external data a model may reference (16 GiB).
const MAX_EXTERNAL_BYTES: u64 = 16 << 30;

/// Imports an `.onnx` file, with its external data from the same folder.
pub fn import_file(path: &Path) -> Result<Model> {
    let bytes = std::fs::read(path).map_err(|source| NnError::Io {
        path: path.to_owned(),
        source,
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("onnx-model");
    import_with_dir(&bytes, Some(dir), stem)
}

/// Imports an ONNX model from its bytes (external data is an error: use [`import_file`]).
pub fn import(bytes: &[u8]) -> Result<Model> {
    import_with_dir(bytes, None, "onnx-model")
}

/// Reads the external data of `t` from `dir`, safely.
fn load_external(t: &mut TensorProto, dir: Option<&Path>) -> Result<()> {
    let Some(entries) = t.external.clone() else {
        return Ok(());
    };
    let Some(dir) = dir else {
        return Err(NnError::Onnx(format!(
            "tensor `{}` is stored as external data; import the model from its file so the \
             data beside it can be read",
            t.name
        )));
    };
    let get = |key: &str| {
        entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let location = get("location").ok_or_else(|| {
        NnError::Onnx(format!(
            "tensor `{}`: external data without a location",
            t.name
        ))
    })?;
    let number = |key: &str| -> Result<Option<u64>> {
        get(key)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    NnError::Onnx(format!(
                        "tensor `{}`: external {key} {v:?} is not a number",
                        t.name
                    ))
                })
            })
            .transpose()
    };
    let offset = number("offset")?.unwrap_or(0);
    let relative = Path::new(location);
    let safe = !location.is_empty()
        && relative
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !safe {
        return Err(NnError::Onnx(format!(
            "tensor `{}`: external data location {location:?} is not a plain path inside the \
             model's folder",
            t.name
        )));
    }
    let io = |path: &Path, source| NnError::Io {
        path: path.to_owned(),
        source,
    };
    let root = dir.canonicalize().map_err(|e| io(dir, e))?;
    let path = root.join(relative);
    let real = path.canonicalize().map_err(|e| io(&path, e))?;
    if !real.starts_with(&root) {
        return Err(NnError::Onnx(format!(
            "tensor `{}`: external data {location:?} leads outside the model's folder",
            t.name
        )));
    }
    let size = TensorProto::element_size(t.data_type).ok_or_else(|| {
        NnError::Onnx(format!(
            "tensor `{}`: external data of type {} is not supported",
            t.name, t.data_type
        ))
    })? as u64;
    let count = t.element_count().unwrap_or(usize::MAX) as u64;
    let expected = count.saturating_mul(size);
    let length = number("length")?.unwrap_or(expected);
    let file_len = std::fs::metadata(&real).map_err(|e| io(&real, e))?.len();
    if length != expected || length > MAX_EXTERNAL_BYTES || offset.saturating_add(length) > file_len
    {
        return Err(NnError::Onnx(format!(
            "tensor `{}`: external data {location:?} at offset {offset}, length {length} does not \
             hold its {count} values (file of {file_len} bytes)",
            t.name
        )));
    }
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(&real).map_err(|e| io(&real, e))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| io(&real, e))?;
    let mut raw = vec![0u8; length as usize];
    file.read_exact(&mut raw).map_err(|e| io(&real, e))?;
    t.load_external(&raw)
}

/// The state of one import: the graph built so far and what each ONNX value name is.
/// Layers' `import` functions add to it through its methods.
pub struct Importer {
    nodes: Vec<Node>,
    shapes: Vec<Vec<usize>>,
    input_shape: Vec<usize>,
    batch: usize,
    opset: i64,
    params: BTreeMap<String, Tensor>,
    values: HashMap<String, Value>,
    names: HashSet<String>,
}

/// Imports from bytes, external data from `dir`; a graph without a name of its own (or the
/// exporters' `main_graph` and `torch_jit`) is called `fallback_name`.
fn import_with_dir(bytes: &[u8], dir: Option<&Path>, fallback_name: &str) -> Result<Model> {
    let mut model = ModelProto::decode(bytes)?;
    if let Some(v) = model.default_opset()
        && v < 7
    {
        return Err(NnError::Onnx(format!(
            "opset {v} is too old; export with opset 13 or later"
        )));
    }
    for t in &mut model.graph.initializers {
        load_external(t, dir)?;
    }
    let graph = &model.graph;
    let mut values: HashMap<String, Value> = graph
        .initializers
        .iter()
        .map(|t| (t.name.clone(), Value::Const(t.clone())))
        .collect();
    let real_inputs: Vec<_> = graph
        .inputs
        .iter()
        .filter(|i| !values.contains_key(&i.name))
        .collect();
    let [input] = real_inputs[..] else {
        return Err(NnError::Onnx(format!(
            "expected exactly one graph input besides the initializers, found {}: {:?}",
            real_inputs.len(),
            real_inputs.iter().map(|i| &i.name).collect::<Vec<_>>()
        )));
    };
    let (batch, input_shape): (usize, Vec<usize>) = match &input.shape {
        Some(dims)
            if dims.len() >= 2 && dims[1..].iter().all(|d| matches!(d, Some(v) if *v > 0)) =>
        {
            let batch = match dims[0] {
                Some(b) if b > 0 => b as usize,
                _ => PROBE_BATCH,
            };
            (
                batch,
                dims[1..].iter().map(|d| d.unwrap_or(0) as usize).collect(),
            )
        }
        other => {
            return Err(NnError::Onnx(format!(
                "graph input `{}` needs a known shape [N, ...] with fixed non-batch dimensions, got {other:?}",
                input.name
            )));
        }
    };
    values.insert(input.name.clone(), Value::Node(0));
    let mut im = Importer {
        nodes: vec![Node {
            name: "input".into(),
            op: layers::input::Input::default().into(),
            inputs: Vec::new(),
        }],
        shapes: vec![
            std::iter::once(batch)
                .chain(input_shape.iter().copied())
                .collect(),
        ],
        input_shape,
        batch,
        opset: model.default_opset().unwrap_or(13),
        params: BTreeMap::new(),
        values,
        names: HashSet::from(["input".to_owned()]),
    };
    for node in &graph.nodes {
        im.node(node)?;
    }
    let [output] = &graph.outputs[..] else {
        return Err(NnError::Onnx(format!(
            "expected exactly one graph output, found {}",
            graph.outputs.len()
        )));
    };
    let output = match im.values.get(&output.name) {
        Some(Value::Node(id)) => *id,
        _ => {
            return Err(NnError::Onnx(format!(
                "graph output `{}` is not computed by a supported node",
                output.name
            )));
        }
    };
    let name = if ["", "main_graph", "torch_jit"].contains(&graph.name.as_str()) {
        fallback_name.to_owned()
    } else {
        graph.name.clone()
    };
    if let Some(pos) = im.nodes.iter().position(|n| n.op.only_as_output())
        && pos != output
    {
        return Err(NnError::Onnx(format!(
            "{} node `{}` is supported only as the graph output",
            im.nodes[pos].op.kind(),
            im.nodes[pos].name
        )));
    }
    let (nodes, output) = prune(im.nodes, output);
    let mut model = Model::new(&name, &im.input_shape, nodes, output)?;
    for (node, shape) in model.nodes().iter().zip(model.shapes(1)?) {
        if element_count(&shape).is_none_or(|n| n > MAX_VALUES_PER_EXAMPLE) {
            return Err(NnError::Onnx(format!(
                "node `{}` ({}) has an output of shape {shape:?} per example, more than {} \
                 values",
                node.name,
                node.op.kind(),
                MAX_VALUES_PER_EXAMPLE
            )));
        }
    }
    let specs: HashSet<String> = model.param_specs().into_iter().map(|s| s.name).collect();
    im.params.retain(|k, _| specs.contains(k));
    model.set_params(im.params)?;
    Ok(model)
}

/// Drops nodes the output does not depend on (e.g. a `Shape` branch's leftovers), keeping
/// the order; returns the nodes and the output's new id.
fn prune(nodes: Vec<Node>, output: NodeId) -> (Vec<Node>, NodeId) {
    let mut needed = vec![false; nodes.len()];
    needed[0] = true;
    needed[output] = true;
    for id in (0..nodes.len()).rev() {
        if needed[id] {
            for &i in &nodes[id].inputs {
                needed[i] = true;
            }
        }
    }
    let mut new_id = vec![usize::MAX; nodes.len()];
    let mut kept = Vec::new();
    for (id, mut node) in nodes.into_iter().enumerate() {
        if needed[id] {
            node.inputs = node.inputs.iter().map(|&i| new_id[i]).collect();
            new_id[id] = kept.len();
            kept.push(node);
        }
    }
    (kept, new_id[output])
}

impl Importer {
    fn unique(&mut self, base: String) -> String {
        let mut name = base.clone();
        let mut k = 1;
        while self.names.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.names.insert(name.clone());
        name
    }

    fn add(&mut self, name: String, op: Op, inputs: &[NodeId]) -> Result<NodeId> {
        // The checks a manifest's architecture gets (sizes below 2^31, finite numbers), so
        // that no attribute of a malformed file overflows the shape arithmetic.
        let attrs = op.to_attrs();
        if Op::from_attrs(op.kind(), &attrs)? != op {
            return Err(NnError::Graph(format!(
                "{} has attributes out of range",
                op.kind()
            )));
        }
        if !op.arity().accepts(inputs.len()) {
            return Err(NnError::Graph(format!(
                "{} takes {} inputs, got {}",
                op.kind(),
                op.arity(),
                inputs.len()
            )));
        }
        let new = Node {
            name,
            op,
            inputs: inputs.to_vec(),
        };
        let input_shapes: Vec<&[usize]> = inputs.iter().map(|&i| &self.shapes[i][..]).collect();
        let shape = crate::model::infer_shape(&new, &input_shapes, self.batch, &self.input_shape)?;
        self.nodes.push(new);
        self.shapes.push(shape);
        Ok(self.nodes.len() - 1)
    }

    fn node(&mut self, node: &NodeProto) -> Result<()> {
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(NnError::UnsupportedOnnxOp {
                op: format!("{}::{}", node.domain, node.op_type),
                node: node.display_name(),
                supported: supported_ops(),
            });
        }
        if self.batch == PROBE_BATCH {
            // The probe batch is the importer's, not the user's: messages name it N.
            return self.import_node(node).map_err(hide_probe);
        }
        self.import_node(node)
    }

    fn import_node(&mut self, node: &NodeProto) -> Result<()> {
        if fold::try_fold(self, node)? {
            return Ok(());
        }
        let importer = layers::onnx_importer(&node.op_type);
        let extra_outputs = node.outputs.iter().skip(1).any(|o| !o.is_empty());
        if extra_outputs && !importer.is_some_and(|(_, extra_ok)| extra_ok) {
            // BatchNormalization in training mode and MaxPool with indices have more outputs.
            return Err(bad(
                node,
                "only the first output is supported (training-mode or index outputs are not)",
            ));
        }
        match importer {
            Some((import, _)) => import(self, node),
            None => Err(NnError::UnsupportedOnnxOp {
                op: node.op_type.clone(),
                node: node.display_name(),
                supported: supported_ops(),
            }),
        }
    }
}

impl ImportGraph for Importer {
    fn batch(&self) -> usize {
        self.batch
    }

    fn opset(&self) -> i64 {
        self.opset
    }

    fn shape(&self, id: NodeId) -> &[usize] {
        &self.shapes[id]
    }

    fn value(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    fn set_output(&mut self, node: &NodeProto, index: usize, value: Value) {
        if let Some(out) = node.outputs.get(index)
            && !out.is_empty()
        {
            self.values.insert(out.clone(), value);
        }
    }

    fn node_name(&mut self, node: &NodeProto, weight: Option<&str>) -> String {
        let base = weight
            .and_then(|w| {
                w.strip_suffix(".weight")
                    .or_else(|| w.strip_suffix(".weight_t"))
            })
            .map(str::to_owned)
            .unwrap_or_else(|| {
                let n = node.display_name();
                if n.is_empty() {
                    node.op_type.to_lowercase()
                } else {
                    n
                }
            });
        self.unique(base)
    }

    fn insert_param(&mut self, node: &str, suffix: &str, value: Tensor) {
        self.params.insert(format!("{node}.{suffix}"), value);
    }

    fn add_layer(
        &mut self,
        name: String,
        unique: bool,
        layer: &dyn std::any::Any,
        inputs: &[NodeId],
    ) -> Result<NodeId> {
        let op = Op::from_any(layer)
            .ok_or_else(|| NnError::Graph(format!("`{name}` is not a layer kind")))?;
        let name = if unique { self.unique(name) } else { name };
        self.add(name, op, inputs)
    }

    fn layer_mut(&mut self, id: NodeId) -> &mut dyn std::any::Any {
        self.nodes[id].op.as_any_mut()
    }

    fn consumers(&self, id: NodeId) -> usize {
        self.nodes.iter().filter(|n| n.inputs.contains(&id)).count()
    }

    fn name_of(&self, id: NodeId) -> &str {
        &self.nodes[id].name
    }

    fn inputs_of(&self, id: NodeId) -> Vec<NodeId> {
        self.nodes[id].inputs.clone()
    }
}

/// `error` with every multiple k·PROBE_BATCH written as `N` or `k·N`.
fn hide_probe(error: NnError) -> NnError {
    let scrub = |text: String| {
        let mut out = String::with_capacity(text.len());
        let mut digits = String::new();
        let flush = |digits: &mut String, out: &mut String| {
            match digits.parse::<usize>().ok().and_then(node::batch_text) {
                Some(batch) => out.push_str(&batch),
                None => out.push_str(digits),
            }
            digits.clear();
        };
        for c in text.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
            } else {
                flush(&mut digits, &mut out);
                out.push(c);
            }
        }
        flush(&mut digits, &mut out);
        out
    };
    match error {
        NnError::Onnx(m) => NnError::Onnx(scrub(m)),
        NnError::Graph(m) => NnError::Graph(scrub(m)),
        NnError::Shape { node, op, message } => NnError::Shape {
            node,
            op,
            message: scrub(message),
        },
        other => other,
    }
}

/// Every op type the importer takes, for messages.
pub fn supported_ops() -> String {
    let mut ops: Vec<&str> = ONNX_OPS.iter().chain(fold::FOLDED_OPS).copied().collect();
    ops.sort_unstable();
    ops.dedup();
    ops.join(", ")
}

/// How [`export`] stores tensor values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorEncoding {
    /// `raw_data` bytes (what PyTorch writes).
    Raw,
    /// The `float_data` field.
    FloatData,
}

fn tensor_proto(name: &str, t: &Tensor, encoding: TensorEncoding, int64: bool) -> Writer {
    let mut w = Writer::new();
    let dims: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
    w.packed_ints(1, &dims);
    if int64 {
        let raw: Vec<u8> = t
            .data()
            .iter()
            .flat_map(|&v| (v as i64).to_le_bytes())
            .collect();
        w.int(2, data_type::INT64).string(8, name).bytes(9, &raw);
        return w;
    }
    w.int(2, data_type::FLOAT);
    match encoding {
        TensorEncoding::Raw => {
            let raw: Vec<u8> = t.to_f32().iter().flat_map(|v| v.to_le_bytes()).collect();
            w.string(8, name).bytes(9, &raw);
        }
        TensorEncoding::FloatData => {
            w.packed_floats(4, &t.to_f32()).string(8, name);
        }
    }
    w
}

fn value_info(name: &str, dims: &[Option<usize>]) -> Writer {
    let mut shape = Writer::new();
    for d in dims {
        let mut dim = Writer::new();
        match d {
            Some(v) => dim.int(1, *v as i64),
            None => dim.string(2, "N"),
        };
        shape.message(1, &dim);
    }
    let mut tensor = Writer::new();
    tensor.int(1, data_type::FLOAT).message(2, &shape);
    let mut ty = Writer::new();
    ty.message(1, &tensor);
    let mut info = Writer::new();
    info.string(1, name).message(2, &ty);
    info
}

/// Exports `model` as ONNX (opset 13), the way `torch.onnx.export` lays such a network
/// out: initializers named by the parameters, each layer's node from its
/// [`crate::layers::Layer::onnx_export`], a symbolic batch dimension. Used by `--save
/// model.onnx`, the round-trip tests and to hand models to other tools.
pub fn export(model: &Model, encoding: TensorEncoding) -> Result<Vec<u8>> {
    let shapes = model.shapes(1)?;
    let value_name = |id: NodeId| {
        if id == 0 {
            "input".to_owned()
        } else {
            format!("{}_out", model.nodes()[id].name)
        }
    };
    let mut graph = Writer::new();
    let mut constants: Vec<(String, Tensor)> = Vec::new();
    let mut replaced: Vec<String> = Vec::new();
    for (id, node) in model.nodes().iter().enumerate().skip(1) {
        let mut onnx = OnnxNode {
            model,
            input_shapes: node.inputs.iter().map(|&i| shapes[i].clone()).collect(),
            name: &node.name,
            op_type: "",
            inputs: node.inputs.iter().map(|&i| value_name(i)).collect(),
            attrs: Vec::new(),
            constants: Vec::new(),
            then: None,
            replaced: Vec::new(),
        };
        node.op.onnx_export(&mut onnx)?;
        let out = value_name(id);
        let first_out = match onnx.then {
            Some(_) => format!("{out}_inner"),
            None => out.clone(),
        };
        let mut n = Writer::new();
        for input in &onnx.inputs {
            n.string(1, input);
        }
        n.string(2, &first_out)
            .string(3, &format!("/{}/{}", node.name, onnx.op_type))
            .string(4, onnx.op_type);
        for a in &onnx.attrs {
            n.message(5, a);
        }
        graph.message(1, &n);
        if let Some((op_type, others)) = &onnx.then {
            let mut m = Writer::new();
            m.string(1, &first_out);
            for input in others {
                m.string(1, input);
            }
            m.string(2, &out)
                .string(3, &format!("/{}/{op_type}", node.name))
                .string(4, op_type);
            graph.message(1, &m);
        }
        constants.extend(onnx.constants);
        replaced.extend(onnx.replaced);
    }
    graph.string(2, model.name());
    for (name, t) in &model.params {
        if !replaced.contains(name) {
            graph.message(5, &tensor_proto(name, t, encoding, false));
        }
    }
    for (name, t) in &constants {
        let int64 = name.ends_with(".shape") || name.ends_with(".pads");
        graph.message(5, &tensor_proto(name, t, encoding, int64));
    }
    let input_dims: Vec<Option<usize>> = std::iter::once(None)
        .chain(model.input_shape().iter().map(|&d| Some(d)))
        .collect();
    graph.message(11, &value_info("input", &input_dims));
    let out_dims: Vec<Option<usize>> = std::iter::once(None)
        .chain(shapes[model.output()][1..].iter().map(|&d| Some(d)))
        .collect();
    graph.message(12, &value_info(&value_name(model.output()), &out_dims));
    let mut opset = Writer::new();
    opset.string(1, "").int(2, 13);
    let mut m = Writer::new();
    m.int(1, 7)
        .string(2, "cryptgpu-nn")
        .message(7, &graph)
        .message(8, &opset);
    Ok(m.finish())
}

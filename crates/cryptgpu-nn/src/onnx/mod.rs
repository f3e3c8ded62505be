//! ONNX import (and export) for the layer set of [`Op`]: Conv, Gemm, MatMul (+ Add of a
//! bias), Relu, MaxPool, AveragePool, GlobalAveragePool, Flatten, Reshape (to `[N, -1]`),
//! Add, BatchNormalization, Softmax (as the output), Dropout and Identity, as
//! `torch.onnx.export` writes them (opset 13 or later; older opsets that spell the same
//! ops the same way load too). Anything else is an [`NnError::UnsupportedOnnxOp`] naming
//! the op and the node.
//!
//! Node names: a layer whose weight initializer is called `X.weight` (PyTorch's export
//! keeps `state_dict` names) becomes node `X`, so its parameters keep their PyTorch names;
//! other layers take the ONNX node's name.
//!
//! No protobuf compiler is involved: [`proto`] reads the wire format directly.

pub mod proto;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use cryptgpu_backend::{Conv2dParams, Pool2dParams};

use crate::error::{NnError, Result};
use crate::model::{Model, Node, NodeId, Op};
use crate::tensor::Tensor;
use proto::{ModelProto, NodeProto, TensorProto, Writer, data_type};

/// Imports an `.onnx` file.
pub fn import_file(path: &Path) -> Result<Model> {
    let bytes = std::fs::read(path).map_err(|source| NnError::Io {
        path: path.to_owned(),
        source,
    })?;
    import(&bytes)
}

/// What a graph value name refers to while importing.
#[derive(Clone, Debug)]
enum Value {
    /// The output of a model node.
    Node(NodeId),
    /// A constant (initializer or `Constant` output).
    Const(TensorProto),
}

struct Importer {
    nodes: Vec<Node>,
    shapes: Vec<Vec<usize>>,
    input_shape: Vec<usize>,
    params: BTreeMap<String, Tensor>,
    values: HashMap<String, Value>,
    names: HashSet<String>,
}

/// Imports an ONNX model from its bytes.
pub fn import(bytes: &[u8]) -> Result<Model> {
    let model = ModelProto::decode(bytes)?;
    if let Some(v) = model.default_opset()
        && v < 7
    {
        return Err(NnError::Onnx(format!(
            "opset {v} is too old; export with opset 13 or later"
        )));
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
    let input_shape: Vec<usize> = match &input.shape {
        Some(dims)
            if dims.len() >= 2 && dims[1..].iter().all(|d| matches!(d, Some(v) if *v > 0)) =>
        {
            dims[1..].iter().map(|d| d.unwrap_or(0) as usize).collect()
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
            op: Op::Input,
            inputs: Vec::new(),
        }],
        shapes: vec![
            std::iter::once(1)
                .chain(input_shape.iter().copied())
                .collect(),
        ],
        input_shape,
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
    let name = if graph.name.is_empty() {
        "onnx-model".to_owned()
    } else {
        graph.name.clone()
    };
    if let Some(pos) = im.nodes.iter().position(|n| n.op == Op::Softmax)
        && pos != output
    {
        return Err(NnError::Onnx(format!(
            "Softmax node `{}` is supported only as the graph output",
            im.nodes[pos].name
        )));
    }
    let mut model = Model::new(&name, &im.input_shape, im.nodes, output)?;
    model.set_params(im.params)?;
    Ok(model)
}

fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    node.attribute(name).map(|a| a.ints.clone())
}

fn attr_int(node: &NodeProto, name: &str, default: i64) -> i64 {
    node.attribute(name).map_or(default, |a| a.i)
}

fn attr_float(node: &NodeProto, name: &str, default: f32) -> f32 {
    node.attribute(name).map_or(default, |a| a.f)
}

fn to_tensor(t: &TensorProto) -> Result<Tensor> {
    let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    Tensor::new(&shape, t.values.clone())
}

impl Importer {
    fn bad(node: &NodeProto, message: impl std::fmt::Display) -> NnError {
        NnError::Onnx(format!(
            "node `{}` ({}): {message}",
            node.display_name(),
            node.op_type
        ))
    }

    fn input_node(&self, node: &NodeProto, index: usize) -> Result<NodeId> {
        match node.inputs.get(index).and_then(|n| self.values.get(n)) {
            Some(Value::Node(id)) => Ok(*id),
            Some(Value::Const(_)) => Err(Self::bad(
                node,
                format!(
                    "input {index} (`{}`) is a constant; only weights may be",
                    node.inputs[index]
                ),
            )),
            None => Err(Self::bad(
                node,
                format!("input {index} is missing or not computed earlier"),
            )),
        }
    }

    fn constant(&self, node: &NodeProto, index: usize) -> Result<Option<&TensorProto>> {
        match node.inputs.get(index).map(String::as_str) {
            None | Some("") => Ok(None),
            Some(name) => match self.values.get(name) {
                Some(Value::Const(t)) => Ok(Some(t)),
                _ => Err(Self::bad(
                    node,
                    format!("input `{name}` must be a constant (an initializer)"),
                )),
            },
        }
    }

    /// A unique node name: the PyTorch module path of `weight` when it is called
    /// `X.weight`, else the ONNX node's name.
    fn node_name(&mut self, node: &NodeProto, weight: Option<&str>) -> String {
        let base = weight
            .and_then(|w| w.strip_suffix(".weight"))
            .map(str::to_owned)
            .unwrap_or_else(|| {
                let n = node.display_name();
                if n.is_empty() {
                    node.op_type.to_lowercase()
                } else {
                    n
                }
            });
        let mut name = base.clone();
        let mut k = 1;
        while self.names.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.names.insert(name.clone());
        name
    }

    fn push(
        &mut self,
        node: &NodeProto,
        name: String,
        op: Op,
        inputs: &[NodeId],
    ) -> Result<NodeId> {
        let new = Node {
            name,
            op,
            inputs: inputs.to_vec(),
        };
        let input_shapes: Vec<&[usize]> = inputs.iter().map(|&i| &self.shapes[i][..]).collect();
        let shape = crate::model::infer_shape(&new, &input_shapes, 1, &self.input_shape)
            .map_err(|e| Self::bad(node, e))?;
        self.nodes.push(new);
        self.shapes.push(shape);
        let id = self.nodes.len() - 1;
        if let Some(out) = node.outputs.first() {
            self.values.insert(out.clone(), Value::Node(id));
        }
        Ok(id)
    }

    fn alias(&mut self, node: &NodeProto, id: NodeId) {
        if let Some(out) = node.outputs.first() {
            self.values.insert(out.clone(), Value::Node(id));
        }
    }

    fn check_unused_outputs(&self, node: &NodeProto) -> Result<()> {
        if node.outputs.iter().skip(1).any(|o| !o.is_empty()) && node.op_type != "Dropout" {
            // BatchNormalization in training mode and MaxPool with indices have more outputs.
            return Err(Self::bad(
                node,
                "only the first output is supported (training-mode or index outputs are not)",
            ));
        }
        Ok(())
    }

    fn pads(node: &NodeProto) -> Result<[usize; 2]> {
        if let Some(a) = node.attribute("auto_pad") {
            let mode = String::from_utf8_lossy(&a.s);
            if mode != "NOTSET" && mode != "VALID" {
                return Err(Self::bad(node, format!("auto_pad {mode} is not supported")));
            }
        }
        match attr_ints(node, "pads").as_deref() {
            None | Some([]) => Ok([0, 0]),
            Some(&[t, l, b, r]) if t == b && l == r && t >= 0 && l >= 0 => {
                Ok([t as usize, l as usize])
            }
            Some(other) => Err(Self::bad(
                node,
                format!("pads {other:?} are not symmetric [top, left, bottom, right]"),
            )),
        }
    }

    fn pair(node: &NodeProto, name: &str, default: [usize; 2]) -> Result<[usize; 2]> {
        match attr_ints(node, name).as_deref() {
            None | Some([]) => Ok(default),
            Some(&[a, b]) if a > 0 && b > 0 => Ok([a as usize, b as usize]),
            Some(other) => Err(Self::bad(node, format!("{name} {other:?} is not 2-d"))),
        }
    }

    fn check_dilations(node: &NodeProto) -> Result<()> {
        match attr_ints(node, "dilations").as_deref() {
            None | Some([]) | Some([1, 1]) => Ok(()),
            Some(other) => Err(Self::bad(
                node,
                format!("dilations {other:?} are not supported"),
            )),
        }
    }

    fn node(&mut self, node: &NodeProto) -> Result<()> {
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(NnError::UnsupportedOnnxOp {
                op: format!("{}::{}", node.domain, node.op_type),
                node: node.display_name(),
            });
        }
        self.check_unused_outputs(node)?;
        match node.op_type.as_str() {
            "Constant" => {
                let t = node
                    .attribute("value")
                    .and_then(|a| a.t.clone())
                    .ok_or_else(|| Self::bad(node, "only a tensor `value` is supported"))?;
                let out = node.outputs.first().cloned().unwrap_or_default();
                self.values.insert(out, Value::Const(t));
            }
            "Conv" => {
                let x = self.input_node(node, 0)?;
                let w = self
                    .constant(node, 1)?
                    .ok_or_else(|| Self::bad(node, "has no weight"))?
                    .clone();
                let b = self.constant(node, 2)?.cloned();
                Self::check_dilations(node)?;
                let &[o, cg, kh, kw] = &w.dims[..] else {
                    return Err(Self::bad(
                        node,
                        format!("weight dims {:?} are not 4-d", w.dims),
                    ));
                };
                let groups = attr_int(node, "group", 1).max(1) as usize;
                let kernel = [kh as usize, kw as usize];
                if let Some(k) = attr_ints(node, "kernel_shape")
                    && k != [kh, kw]
                {
                    return Err(Self::bad(
                        node,
                        format!("kernel_shape {k:?} disagrees with the weight"),
                    ));
                }
                let params = Conv2dParams {
                    stride: Self::pair(node, "strides", [1, 1])?,
                    padding: Self::pads(node)?,
                    groups,
                };
                let name = self.node_name(node, Some(&w.name));
                let op = Op::Conv2d {
                    in_channels: cg as usize * groups,
                    out_channels: o as usize,
                    kernel,
                    params,
                    bias: b.is_some(),
                };
                self.params.insert(format!("{name}.weight"), to_tensor(&w)?);
                if let Some(b) = &b {
                    let t = to_tensor(b)?;
                    let len = t.len();
                    self.params
                        .insert(format!("{name}.bias"), t.reshape(&[len])?);
                }
                self.push(node, name, op, &[x])?;
            }
            "Gemm" => {
                let x = self.input_node(node, 0)?;
                let w = self
                    .constant(node, 1)?
                    .ok_or_else(|| Self::bad(node, "has no weight"))?
                    .clone();
                let c = self.constant(node, 2)?.cloned();
                if attr_int(node, "transA", 0) != 0
                    || attr_float(node, "alpha", 1.0) != 1.0
                    || (c.is_some() && attr_float(node, "beta", 1.0) != 1.0)
                {
                    return Err(Self::bad(
                        node,
                        "only transA = 0, alpha = 1, beta = 1 are supported",
                    ));
                }
                let &[r, k] = &w.dims[..] else {
                    return Err(Self::bad(
                        node,
                        format!("weight dims {:?} are not 2-d", w.dims),
                    ));
                };
                let mut weight = to_tensor(&w)?;
                if attr_int(node, "transB", 0) == 0 {
                    weight = transpose(&weight);
                }
                let (out_features, in_features) = if attr_int(node, "transB", 0) == 0 {
                    (k as usize, r as usize)
                } else {
                    (r as usize, k as usize)
                };
                let name = self.node_name(node, Some(&w.name));
                self.params.insert(format!("{name}.weight"), weight);
                if let Some(c) = &c {
                    let t = to_tensor(c)?;
                    if t.len() != out_features {
                        return Err(Self::bad(
                            node,
                            format!("bias dims {:?} do not fit {out_features} outputs", c.dims),
                        ));
                    }
                    self.params
                        .insert(format!("{name}.bias"), t.reshape(&[out_features])?);
                }
                let op = Op::Linear {
                    in_features,
                    out_features,
                    bias: c.is_some(),
                };
                self.push(node, name, op, &[x])?;
            }
            "MatMul" => {
                let x = self.input_node(node, 0)?;
                let w = self
                    .constant(node, 1)?
                    .ok_or_else(|| Self::bad(node, "the second operand must be a weight"))?
                    .clone();
                let &[in_features, out_features] = &w.dims[..] else {
                    return Err(Self::bad(
                        node,
                        format!("weight dims {:?} are not 2-d", w.dims),
                    ));
                };
                let name = self.node_name(node, Some(&w.name));
                self.params
                    .insert(format!("{name}.weight"), transpose(&to_tensor(&w)?));
                let op = Op::Linear {
                    in_features: in_features as usize,
                    out_features: out_features as usize,
                    bias: false,
                };
                self.push(node, name, op, &[x])?;
            }
            "Add" => {
                let consts = [
                    self.constant(node, 0).ok().flatten().cloned(),
                    self.constant(node, 1).ok().flatten().cloned(),
                ];
                match &consts {
                    [None, None] => {
                        let a = self.input_node(node, 0)?;
                        let b = self.input_node(node, 1)?;
                        let name = self.node_name(node, None);
                        self.push(node, name, Op::Add, &[a, b])?;
                    }
                    [Some(bias), None] | [None, Some(bias)] => {
                        let other = usize::from(consts[0].is_some());
                        let x = self.input_node(node, other)?;
                        self.fold_bias(node, x, bias)?;
                    }
                    [Some(_), Some(_)] => {
                        return Err(Self::bad(node, "adds two constants"));
                    }
                }
            }
            "Relu" => {
                let x = self.input_node(node, 0)?;
                let name = self.node_name(node, None);
                self.push(node, name, Op::Relu, &[x])?;
            }
            "MaxPool" | "AveragePool" => {
                let x = self.input_node(node, 0)?;
                Self::check_dilations(node)?;
                if attr_int(node, "ceil_mode", 0) != 0 {
                    return Err(Self::bad(node, "ceil_mode = 1 is not supported"));
                }
                if attr_int(node, "storage_order", 0) != 0 {
                    return Err(Self::bad(node, "storage_order = 1 is not supported"));
                }
                let kernel = Self::pair(node, "kernel_shape", [0, 0])?;
                if kernel == [0, 0] {
                    return Err(Self::bad(node, "has no kernel_shape"));
                }
                let padding = Self::pads(node)?;
                if node.op_type == "AveragePool"
                    && padding != [0, 0]
                    && attr_int(node, "count_include_pad", 0) == 0
                {
                    return Err(Self::bad(
                        node,
                        "padding with count_include_pad = 0 is not supported (PyTorch's default \
                         count_include_pad=True is)",
                    ));
                }
                let params = Pool2dParams {
                    kernel,
                    stride: Self::pair(node, "strides", [1, 1])?,
                    padding,
                };
                let op = if node.op_type == "MaxPool" {
                    Op::MaxPool2d(params)
                } else {
                    Op::AvgPool2d(params)
                };
                let name = self.node_name(node, None);
                self.push(node, name, op, &[x])?;
            }
            "GlobalAveragePool" => {
                let x = self.input_node(node, 0)?;
                let name = self.node_name(node, None);
                self.push(node, name, Op::GlobalAvgPool, &[x])?;
            }
            "Flatten" => {
                let x = self.input_node(node, 0)?;
                if attr_int(node, "axis", 1) != 1 {
                    return Err(Self::bad(node, "only axis = 1 is supported"));
                }
                let name = self.node_name(node, None);
                self.push(node, name, Op::Flatten, &[x])?;
            }
            "Reshape" => {
                let x = self.input_node(node, 0)?;
                let target = match self.constant(node, 1)? {
                    Some(t) => t.values.iter().map(|&v| v as i64).collect::<Vec<_>>(),
                    None => attr_ints(node, "shape")
                        .ok_or_else(|| Self::bad(node, "has no target shape"))?,
                };
                let shape = &self.shapes[x];
                let rest: usize = shape[1..].iter().product();
                let flattens = target.len() == 2
                    && (-1..=1).contains(&target[0])
                    && (target[1] == -1 || target[1] as usize == rest);
                if !flattens {
                    return Err(Self::bad(
                        node,
                        format!(
                            "only a reshape to [N, -1] (a flatten) is supported, got {target:?} for input {shape:?}"
                        ),
                    ));
                }
                if shape.len() == 2 {
                    self.alias(node, x);
                } else {
                    let name = self.node_name(node, None);
                    self.push(node, name, Op::Flatten, &[x])?;
                }
            }
            "BatchNormalization" => {
                let x = self.input_node(node, 0)?;
                if attr_int(node, "training_mode", 0) != 0 {
                    return Err(Self::bad(node, "training_mode = 1 is not supported"));
                }
                let mut tensors = Vec::new();
                for i in 1..5 {
                    let t = self
                        .constant(node, i)?
                        .ok_or_else(|| Self::bad(node, format!("input {i} is missing")))?;
                    tensors.push(t.clone());
                }
                let channels = tensors[0].values.len();
                if tensors.iter().any(|t| t.values.len() != channels) {
                    return Err(Self::bad(
                        node,
                        "scale, bias, mean and var differ in length",
                    ));
                }
                let name = self.node_name(node, Some(&tensors[0].name));
                for (suffix, t) in ["weight", "bias", "running_mean", "running_var"]
                    .iter()
                    .zip(&tensors)
                {
                    self.params.insert(
                        format!("{name}.{suffix}"),
                        Tensor::new(&[channels], t.values.clone())?,
                    );
                }
                let op = Op::BatchNorm2d {
                    channels,
                    eps: f64::from(attr_float(node, "epsilon", 1e-5)),
                    momentum: 1.0 - f64::from(attr_float(node, "momentum", 0.9)),
                };
                self.push(node, name, op, &[x])?;
            }
            "Softmax" => {
                let x = self.input_node(node, 0)?;
                let axis = attr_int(node, "axis", -1);
                if self.shapes[x].len() != 2 || !(axis == 1 || axis == -1) {
                    return Err(Self::bad(
                        node,
                        format!(
                            "only softmax over axis 1 of [N, K] is supported, got axis {axis} of {:?}",
                            self.shapes[x]
                        ),
                    ));
                }
                let name = self.node_name(node, None);
                self.push(node, name, Op::Softmax, &[x])?;
            }
            "Dropout" => {
                let x = self.input_node(node, 0)?;
                let p = match self.constant(node, 1)? {
                    Some(t) => t.values.first().copied().unwrap_or(0.5),
                    None => f64::from(attr_float(node, "ratio", 0.5)),
                };
                let name = self.node_name(node, None);
                self.push(node, name, Op::Dropout { p }, &[x])?;
            }
            "Identity" => match node
                .inputs
                .first()
                .and_then(|n| self.values.get(n))
                .cloned()
            {
                Some(v) => {
                    let out = node.outputs.first().cloned().unwrap_or_default();
                    self.values.insert(out, v);
                }
                None => return Err(Self::bad(node, "input is missing")),
            },
            other => {
                return Err(NnError::UnsupportedOnnxOp {
                    op: other.to_owned(),
                    node: node.display_name(),
                });
            }
        }
        Ok(())
    }

    /// `Add(x, bias)` right after a bias-less `MatMul` becomes that layer's bias.
    fn fold_bias(&mut self, node: &NodeProto, x: NodeId, bias: &TensorProto) -> Result<()> {
        let consumers = self.nodes.iter().filter(|n| n.inputs.contains(&x)).count();
        let target = &mut self.nodes[x];
        match &mut target.op {
            Op::Linear {
                out_features,
                bias: has_bias @ false,
                ..
            } if consumers == 0 && bias.values.len() == *out_features => {
                *has_bias = true;
                let name = format!("{}.bias", target.name);
                let len = bias.values.len();
                self.params
                    .insert(name, Tensor::new(&[len], bias.values.clone())?);
                self.alias(node, x);
                Ok(())
            }
            _ => Err(Self::bad(
                node,
                "adding a constant is supported only as the bias of a MatMul",
            )),
        }
    }
}

fn transpose(t: &Tensor) -> Tensor {
    let (r, c) = (t.shape()[0], t.shape()[1]);
    let mut data = vec![0.0; r * c];
    for i in 0..r {
        for j in 0..c {
            data[j * r + i] = t.data()[i * c + j];
        }
    }
    Tensor::new(&[c, r], data).expect("same size")
}

/// How [`export`] stores tensor values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorEncoding {
    /// `raw_data` bytes (what PyTorch writes).
    Raw,
    /// The `float_data` field.
    FloatData,
}

fn tensor_proto(name: &str, t: &Tensor, encoding: TensorEncoding) -> Writer {
    let mut w = Writer::new();
    let dims: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
    w.packed_ints(1, &dims).int(2, data_type::FLOAT);
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

fn ints_attr(name: &str, values: &[usize]) -> Writer {
    let mut a = Writer::new();
    a.string(1, name).int(20, 7);
    for &v in values {
        a.int(8, v as i64);
    }
    a
}

fn int_attr(name: &str, value: i64) -> Writer {
    let mut a = Writer::new();
    a.string(1, name).int(3, value).int(20, 2);
    a
}

fn float_attr(name: &str, value: f64) -> Writer {
    let mut a = Writer::new();
    a.string(1, name).float(2, value as f32).int(20, 1);
    a
}

/// Exports `model` as ONNX (opset 13), the way `torch.onnx.export` lays such a network
/// out: initializers named by the parameters, Conv/Gemm(transB)/... nodes, a symbolic batch
/// dimension. Used by the round-trip tests and to hand models to other tools.
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
    for (id, node) in model.nodes().iter().enumerate().skip(1) {
        let mut n = Writer::new();
        let mut inputs: Vec<String> = node.inputs.iter().map(|&i| value_name(i)).collect();
        let mut attrs = Vec::new();
        let op_type = match &node.op {
            Op::Input => unreachable!("skipped"),
            Op::Conv2d {
                kernel,
                params,
                bias,
                ..
            } => {
                inputs.push(format!("{}.weight", node.name));
                if *bias {
                    inputs.push(format!("{}.bias", node.name));
                }
                attrs.push(ints_attr("kernel_shape", kernel));
                attrs.push(ints_attr("strides", &params.stride));
                let [ph, pw] = params.padding;
                attrs.push(ints_attr("pads", &[ph, pw, ph, pw]));
                attrs.push(ints_attr("dilations", &[1, 1]));
                attrs.push(int_attr("group", params.groups as i64));
                "Conv"
            }
            Op::Linear { bias, .. } => {
                inputs.push(format!("{}.weight", node.name));
                if *bias {
                    inputs.push(format!("{}.bias", node.name));
                }
                attrs.push(float_attr("alpha", 1.0));
                attrs.push(float_attr("beta", 1.0));
                attrs.push(int_attr("transB", 1));
                "Gemm"
            }
            Op::Relu => "Relu",
            Op::MaxPool2d(p) | Op::AvgPool2d(p) => {
                attrs.push(ints_attr("kernel_shape", &p.kernel));
                attrs.push(ints_attr("strides", &p.stride));
                let [ph, pw] = p.padding;
                attrs.push(ints_attr("pads", &[ph, pw, ph, pw]));
                if matches!(node.op, Op::AvgPool2d(_)) {
                    attrs.push(int_attr("count_include_pad", 1));
                    "AveragePool"
                } else {
                    "MaxPool"
                }
            }
            Op::GlobalAvgPool => "GlobalAveragePool",
            Op::Flatten => {
                attrs.push(int_attr("axis", 1));
                "Flatten"
            }
            Op::Add => "Add",
            Op::BatchNorm2d { eps, momentum, .. } => {
                for suffix in ["weight", "bias", "running_mean", "running_var"] {
                    inputs.push(format!("{}.{suffix}", node.name));
                }
                attrs.push(float_attr("epsilon", *eps));
                attrs.push(float_attr("momentum", 1.0 - momentum));
                "BatchNormalization"
            }
            Op::Dropout { .. } => "Identity",
            Op::Softmax => {
                attrs.push(int_attr("axis", 1));
                "Softmax"
            }
        };
        for input in &inputs {
            n.string(1, input);
        }
        n.string(2, &value_name(id))
            .string(3, &format!("/{}/{op_type}", node.name))
            .string(4, op_type);
        for a in &attrs {
            n.message(5, a);
        }
        graph.message(1, &n);
    }
    graph.string(2, model.name());
    for (name, t) in &model.params {
        graph.message(5, &tensor_proto(name, t, encoding));
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

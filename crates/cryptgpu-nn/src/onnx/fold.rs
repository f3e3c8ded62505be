//! Constant folding at import: the shape computations exporters write around a dynamic
//! batch (Shape → Gather → Unsqueeze → Concat → Reshape for `x.view(x.size(0), -1)`), and
//! any other arithmetic on constants, evaluated while importing so that only layers reach
//! the graph. `Shape` of a computed value gives its shape at the importer's batch
//! ([`super::PROBE_BATCH`] when the batch is symbolic); everything else here folds only when
//! all its inputs are constants, and otherwise goes on to the layer importers.
//!
//! Values keep their ONNX element type: integer division truncates, `Cast` converts.

use super::node::{ImportGraph, Value, attr_int, attr_ints, bad};
use super::proto::{NodeProto, TensorProto, data_type};
use crate::error::{NnError, Result};
use crate::layers::shape::{broadcast_shapes, element_count, left_pad, resolve_reshape, strides};

/// The ops this module folds (some only on constants).
pub const FOLDED_OPS: &[&str] = &[
    "Constant",
    "ConstantOfShape",
    "Shape",
    "Size",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Slice",
    "Cast",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Mod",
    "Neg",
    "Equal",
    "Where",
    "Range",
    "Reshape",
    "Transpose",
    "Identity",
    "Expand",
    "Floor",
    "Ceil",
    "Sqrt",
    "Reciprocal",
];

/// The most elements a folded constant may have (a malformed file cannot make the importer
/// allocate without bound).
const MAX_FOLDED: usize = 1 << 26;

/// A constant while folding: shape, values (as f64) and ONNX element type.
#[derive(Clone, Debug)]
struct Const {
    dims: Vec<usize>,
    values: Vec<f64>,
    ty: i64,
}

impl Const {
    fn from_proto(t: &TensorProto) -> Self {
        Self {
            dims: t.dims.iter().map(|&d| d as usize).collect(),
            values: t.values.clone(),
            ty: t.data_type,
        }
    }

    fn ints(dims: Vec<usize>, values: Vec<i64>) -> Self {
        Self {
            dims,
            values: values.into_iter().map(|v| v as f64).collect(),
            ty: data_type::INT64,
        }
    }

    fn is_int(&self) -> bool {
        !matches!(self.ty, data_type::FLOAT | data_type::DOUBLE)
    }

    fn proto(self, name: &str) -> TensorProto {
        TensorProto {
            name: name.to_owned(),
            dims: self.dims.iter().map(|&d| d as i64).collect(),
            data_type: self.ty,
            values: self.values,
            external: None,
        }
    }
}

/// The element count of `dims` (saturating: an overflow reads as too large).
fn len(dims: &[usize]) -> usize {
    element_count(dims).unwrap_or(usize::MAX)
}

fn axis_of(node: &NodeProto, axis: i64, rank: usize) -> Result<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a as usize >= rank.max(1) {
        return Err(bad(
            node,
            format!("axis {axis} is out of range for rank {rank}"),
        ));
    }
    Ok(a as usize)
}

/// Folds `node` if it can: returns whether it did (its outputs are then constants or
/// aliases).
pub(crate) fn try_fold(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<bool> {
    let op = node.op_type.as_str();
    if !FOLDED_OPS.contains(&op) {
        return Ok(false);
    }
    let inputs: Vec<Option<&Value>> = node
        .inputs
        .iter()
        .map(|n| if n.is_empty() { None } else { im.value(n) })
        .collect();
    if node
        .inputs
        .iter()
        .zip(&inputs)
        .any(|(n, v)| !n.is_empty() && v.is_none())
    {
        return Err(bad(node, "an input is not computed earlier"));
    }
    let consts: Vec<Option<Const>> = inputs
        .iter()
        .map(|v| match v {
            Some(Value::Const(t)) => Some(Const::from_proto(t)),
            _ => None,
        })
        .collect();
    let all_const = inputs
        .iter()
        .zip(&consts)
        .all(|(v, c)| v.is_none() || c.is_some());
    let result = match op {
        "Constant" => constant(node)?,
        "Shape" | "Size" => {
            let dims: Vec<usize> = match inputs.first().copied().flatten() {
                Some(Value::Node(id)) => im.shape(*id).to_vec(),
                Some(Value::Const(t)) => t.dims.iter().map(|&d| d as usize).collect(),
                None => return Err(bad(node, "has no input")),
            };
            if op == "Size" {
                Const::ints(vec![], vec![len(&dims) as i64])
            } else {
                let rank = dims.len() as i64;
                let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
                let start = clamp(attr_int(node, "start", 0));
                let end = clamp(attr_int(node, "end", rank));
                let picked: Vec<i64> = dims[start..end.max(start)]
                    .iter()
                    .map(|&d| d as i64)
                    .collect();
                Const::ints(vec![picked.len()], picked)
            }
        }
        "Cast" if !all_const => {
            let to = attr_int(node, "to", data_type::FLOAT);
            if matches!(to, data_type::FLOAT | data_type::DOUBLE) {
                im.identity(node)?;
                return Ok(true);
            }
            return Err(bad(
                node,
                "only casts of computed values to float are supported",
            ));
        }
        "Identity" if !all_const => return Ok(false),
        "Expand" if all_const && expands_to_batch(im, &consts) => {
            // A constant for every example (a class token): a node, not a folded constant
            // of the probe batch's size.
            let t = need(node, &consts, 0)?;
            let mut target = expand_target(&need(node, &consts, 1)?);
            target[0] = 1;
            let one = expand(node, &t, target)?;
            let shape = one.dims[1..].to_vec();
            crate::layers::constant::import_batched(im, node, shape, one.values)?;
            return Ok(true);
        }
        _ if !all_const => return Ok(false),
        _ => {
            let c: Vec<Option<Const>> = consts;
            evaluate(node, op, c)?
        }
    };
    if len(&result.dims) > MAX_FOLDED || result.values.len() != len(&result.dims) {
        return Err(bad(
            node,
            format!("folds to an invalid constant of shape {:?}", result.dims),
        ));
    }
    let name = node.outputs.first().cloned().unwrap_or_default();
    im.set_output(node, 0, Value::Const(result.proto(&name)));
    Ok(true)
}

/// Whether an `Expand` of constants makes the batch axis: its target starts with the batch
/// and the value has at most one entry there.
fn expands_to_batch(im: &dyn ImportGraph, consts: &[Option<Const>]) -> bool {
    let (Some(Some(t)), Some(Some(target))) = (consts.first(), consts.get(1)) else {
        return false;
    };
    let target = as_ints(target);
    let leading = if t.dims.len() == target.len() {
        t.dims.first().copied().unwrap_or(1)
    } else {
        1
    };
    target.first() == Some(&(im.batch() as i64)) && leading == 1 && t.dims.len() <= target.len()
}

/// The target shape of an `Expand` (negative entries as 0).
fn expand_target(shape: &Const) -> Vec<usize> {
    as_ints(shape).iter().map(|&d| d.max(0) as usize).collect()
}

/// `t` broadcast (NumPy rules) to `shape`, as ONNX `Expand` does.
fn expand(node: &NodeProto, t: &Const, shape: Vec<usize>) -> Result<Const> {
    let count = bounded(node, &shape)?;
    let target = Const {
        dims: shape,
        values: vec![0.0; count],
        ty: t.ty,
    };
    broadcast_op(node, t, &target, |v, _| v)
}

fn constant(node: &NodeProto) -> Result<Const> {
    if let Some(t) = node.attribute("value").and_then(|a| a.t.as_ref()) {
        return Ok(Const::from_proto(t));
    }
    if let Some(a) = node.attribute("value_float") {
        return Ok(Const {
            dims: vec![],
            values: vec![f64::from(a.f)],
            ty: data_type::FLOAT,
        });
    }
    if let Some(a) = node.attribute("value_floats") {
        return Ok(Const {
            dims: vec![a.floats.len()],
            values: a.floats.iter().map(|&v| f64::from(v)).collect(),
            ty: data_type::FLOAT,
        });
    }
    if let Some(a) = node.attribute("value_int") {
        return Ok(Const::ints(vec![], vec![a.i]));
    }
    if let Some(a) = node.attribute("value_ints") {
        return Ok(Const::ints(vec![a.ints.len()], a.ints.clone()));
    }
    Err(bad(
        node,
        "only tensor, float(s) and int(s) values are supported",
    ))
}

fn need(node: &NodeProto, c: &[Option<Const>], i: usize) -> Result<Const> {
    c.get(i)
        .cloned()
        .flatten()
        .ok_or_else(|| bad(node, format!("input {i} is missing")))
}

fn as_ints(c: &Const) -> Vec<i64> {
    c.values.iter().map(|&v| v as i64).collect()
}

/// The element count of `dims`, or an error when it is beyond [`MAX_FOLDED`].
fn bounded(node: &NodeProto, dims: &[usize]) -> Result<usize> {
    element_count(dims)
        .filter(|&n| n <= MAX_FOLDED)
        .ok_or_else(|| {
            bad(
                node,
                format!("folds to a constant of shape {dims:?}, too large"),
            )
        })
}

/// Gathers `t` at flat positions computed for each output index.
fn gather_by(
    node: &NodeProto,
    t: &Const,
    dims: Vec<usize>,
    index: impl Fn(&[usize]) -> usize,
) -> Result<Const> {
    let n = bounded(node, &dims)?;
    let st = strides(&dims);
    let mut idx = vec![0; dims.len()];
    let values = (0..n)
        .map(|flat| {
            for a in 0..dims.len() {
                idx[a] = flat / st[a] % dims[a];
            }
            t.values[index(&idx)]
        })
        .collect();
    Ok(Const {
        dims,
        values,
        ty: t.ty,
    })
}

fn broadcast_op(
    node: &NodeProto,
    a: &Const,
    b: &Const,
    f: impl Fn(f64, f64) -> f64,
) -> Result<Const> {
    let dims = broadcast_shapes(&a.dims, &b.dims).ok_or_else(|| {
        bad(
            node,
            format!("shapes {:?} and {:?} do not broadcast", a.dims, b.dims),
        )
    })?;
    let at = |c: &Const| {
        let padded = left_pad(&c.dims, dims.len());
        let st = strides(&padded);
        let dims = dims.clone();
        move |idx: &[usize]| -> usize {
            (0..dims.len())
                .map(|k| if padded[k] == 1 { 0 } else { idx[k] * st[k] })
                .sum()
        }
    };
    let (ia, ib) = (at(a), at(b));
    let n = bounded(node, &dims)?;
    let st = strides(&dims);
    let mut idx = vec![0; dims.len()];
    let mut values = Vec::with_capacity(n);
    for flat in 0..n {
        for k in 0..dims.len() {
            idx[k] = flat / st[k] % dims[k];
        }
        values.push(f(a.values[ia(&idx)], b.values[ib(&idx)]));
    }
    Ok(Const {
        dims,
        values,
        ty: a.ty,
    })
}

fn evaluate(node: &NodeProto, op: &str, c: Vec<Option<Const>>) -> Result<Const> {
    Ok(match op {
        "ConstantOfShape" => {
            let shape = as_ints(&need(node, &c, 0)?);
            if shape.iter().any(|&d| d < 0) {
                return Err(bad(node, format!("negative shape {shape:?}")));
            }
            let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
            if len(&dims) > MAX_FOLDED {
                return Err(bad(node, format!("shape {dims:?} is too large")));
            }
            let (value, ty) = match node.attribute("value").and_then(|a| a.t.as_ref()) {
                Some(t) => (t.values.first().copied().unwrap_or(0.0), t.data_type),
                None => (0.0, data_type::FLOAT),
            };
            Const {
                values: vec![value; len(&dims)],
                dims,
                ty,
            }
        }
        "Gather" => {
            let data = need(node, &c, 0)?;
            let indices = need(node, &c, 1)?;
            let rank = data.dims.len();
            let axis = axis_of(node, attr_int(node, "axis", 0), rank)?;
            let extent = data.dims[axis] as i64;
            let idx: Vec<usize> = as_ints(&indices)
                .iter()
                .map(|&i| {
                    let j = if i < 0 { i + extent } else { i };
                    if (0..extent).contains(&j) {
                        Ok(j as usize)
                    } else {
                        Err(bad(node, format!("index {i} is out of range")))
                    }
                })
                .collect::<Result<_>>()?;
            let mut dims = data.dims[..axis].to_vec();
            dims.extend(&indices.dims);
            dims.extend(&data.dims[axis + 1..]);
            let ds = strides(&data.dims);
            let qi = indices.dims.len();
            gather_by(node, &data, dims, |o| {
                let mut pos = 0;
                for a in 0..axis {
                    pos += o[a] * ds[a];
                }
                let flat_index = if qi == 0 {
                    0
                } else {
                    let is = strides(&indices.dims);
                    (0..qi).map(|k| o[axis + k] * is[k]).sum()
                };
                pos += idx[flat_index] * ds[axis];
                for a in axis + 1..rank {
                    pos += o[a + qi - 1] * ds[a];
                }
                pos
            })?
        }
        "Unsqueeze" | "Squeeze" => {
            let mut t = need(node, &c, 0)?;
            let axes: Vec<i64> = match c.get(1).cloned().flatten() {
                Some(a) => as_ints(&a),
                None => attr_ints(node, "axes").unwrap_or_default(),
            };
            if op == "Unsqueeze" {
                let rank = t.dims.len() + axes.len();
                let mut axes: Vec<usize> = axes
                    .iter()
                    .map(|&a| axis_of(node, a, rank))
                    .collect::<Result<_>>()?;
                axes.sort_unstable();
                for a in axes {
                    t.dims.insert(a, 1);
                }
            } else if axes.is_empty() {
                t.dims.retain(|&d| d != 1);
            } else {
                let rank = t.dims.len();
                let mut axes: Vec<usize> = axes
                    .iter()
                    .map(|&a| axis_of(node, a, rank))
                    .collect::<Result<_>>()?;
                axes.sort_unstable();
                for a in axes.into_iter().rev() {
                    if t.dims[a] != 1 {
                        return Err(bad(
                            node,
                            format!("cannot squeeze axis {a} of {:?}", t.dims),
                        ));
                    }
                    t.dims.remove(a);
                }
            }
            t
        }
        "Reshape" => {
            let mut t = need(node, &c, 0)?;
            let target = as_ints(&need(node, &c, 1)?);
            let dims = resolve_reshape(&t.dims, &target, attr_int(node, "allowzero", 0) != 0)
                .map_err(|e| bad(node, e))?;
            t.dims = dims;
            t
        }
        "Concat" => {
            let parts: Vec<Const> = c.into_iter().flatten().collect();
            let first = parts
                .first()
                .ok_or_else(|| bad(node, "has no inputs"))?
                .clone();
            let rank = first.dims.len();
            let axis = axis_of(node, attr_int(node, "axis", 0), rank)?;
            if parts.iter().any(|p| {
                p.dims.len() != rank || (0..rank).any(|a| a != axis && p.dims[a] != first.dims[a])
            }) {
                return Err(bad(node, "inputs differ outside the axis"));
            }
            let outer = len(&first.dims[..axis]);
            let mut values = Vec::new();
            for o in 0..outer {
                for p in &parts {
                    let inner = p.values.len() / outer.max(1);
                    values.extend_from_slice(&p.values[o * inner..(o + 1) * inner]);
                }
            }
            let mut dims = first.dims.clone();
            dims[axis] = parts.iter().map(|p| p.dims[axis]).sum();
            Const {
                dims,
                values,
                ty: first.ty,
            }
        }
        "Slice" => {
            let data = need(node, &c, 0)?;
            let rank = data.dims.len();
            let (starts, ends, axes, steps) = match c.get(1).cloned().flatten() {
                Some(s) => (
                    as_ints(&s),
                    as_ints(&need(node, &c, 2)?),
                    c.get(3).cloned().flatten().map(|a| as_ints(&a)),
                    c.get(4).cloned().flatten().map(|a| as_ints(&a)),
                ),
                None => (
                    attr_ints(node, "starts").unwrap_or_default(),
                    attr_ints(node, "ends").unwrap_or_default(),
                    attr_ints(node, "axes"),
                    None,
                ),
            };
            let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
            let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
            let mut begin = vec![0i64; rank];
            let mut step = vec![1i64; rank];
            let mut dims = data.dims.clone();
            for k in 0..starts.len().min(ends.len()).min(axes.len()) {
                let a = axis_of(node, axes[k], rank)?;
                let n = data.dims[a] as i64;
                let s = steps.get(k).copied().unwrap_or(1);
                if s == 0 {
                    return Err(bad(node, "step 0"));
                }
                let fix = |v: i64, lo: i64, hi: i64| (if v < 0 { v + n } else { v }).clamp(lo, hi);
                let (b, e) = if s > 0 {
                    (fix(starts[k], 0, n), fix(ends[k], 0, n))
                } else {
                    (fix(starts[k], -1, n - 1), fix(ends[k], -1, n - 1))
                };
                let count = if s > 0 {
                    (e - b + s - 1).max(0) / s
                } else {
                    (b - e - s - 1).max(0) / -s
                };
                begin[a] = b;
                step[a] = s;
                dims[a] = count as usize;
            }
            let ds = strides(&data.dims);
            gather_by(node, &data, dims, |o| {
                (0..rank)
                    .map(|a| (begin[a] + o[a] as i64 * step[a]) as usize * ds[a])
                    .sum()
            })?
        }
        "Cast" => {
            let mut t = need(node, &c, 0)?;
            let to = attr_int(node, "to", data_type::FLOAT);
            match to {
                data_type::FLOAT => t.values.iter_mut().for_each(|v| *v = *v as f32 as f64),
                data_type::DOUBLE => {}
                data_type::BOOL => t
                    .values
                    .iter_mut()
                    .for_each(|v| *v = f64::from(u8::from(*v != 0.0))),
                data_type::INT8 | data_type::UINT8 | data_type::INT32 | data_type::INT64 => {
                    t.values.iter_mut().for_each(|v| *v = v.trunc())
                }
                other => {
                    return Err(bad(node, format!("cast to type {other} is not supported")));
                }
            }
            t.ty = to;
            t
        }
        "Add" | "Sub" | "Mul" | "Div" | "Mod" | "Equal" => {
            let a = need(node, &c, 0)?;
            let b = need(node, &c, 1)?;
            let int = a.is_int() && b.is_int();
            let mut r = match op {
                "Add" => broadcast_op(node, &a, &b, |x, y| x + y)?,
                "Sub" => broadcast_op(node, &a, &b, |x, y| x - y)?,
                "Mul" => broadcast_op(node, &a, &b, |x, y| x * y)?,
                "Div" if int => {
                    if b.values.contains(&0.0) {
                        return Err(bad(node, "integer division by zero"));
                    }
                    broadcast_op(node, &a, &b, |x, y| (x / y).trunc())?
                }
                "Div" => broadcast_op(node, &a, &b, |x, y| x / y)?,
                "Mod" => {
                    if b.values.contains(&0.0) {
                        return Err(bad(node, "modulo by zero"));
                    }
                    // Integers: the sign of the divisor (fmod = 0); floats: C's fmod.
                    if int && attr_int(node, "fmod", 0) == 0 {
                        broadcast_op(node, &a, &b, |x, y| x - y * (x / y).floor())?
                    } else {
                        broadcast_op(node, &a, &b, |x, y| x % y)?
                    }
                }
                _ => broadcast_op(node, &a, &b, |x, y| f64::from(u8::from(x == y)))?,
            };
            if op == "Equal" {
                r.ty = data_type::BOOL;
            }
            r
        }
        "Where" => {
            let cond = need(node, &c, 0)?;
            let x = need(node, &c, 1)?;
            let y = need(node, &c, 2)?;
            let xy = broadcast_op(node, &x, &y, |_, _| 0.0)?;
            let cx = broadcast_op(node, &cond, &xy, |c, _| c)?;
            let xs = broadcast_op(node, &x, &cx, |v, _| v)?;
            let ys = broadcast_op(node, &y, &cx, |v, _| v)?;
            let values = cx
                .values
                .iter()
                .zip(xs.values.iter().zip(&ys.values))
                .map(|(&k, (&a, &b))| if k != 0.0 { a } else { b })
                .collect();
            Const {
                dims: cx.dims,
                values,
                ty: x.ty,
            }
        }
        "Neg" | "Floor" | "Ceil" | "Sqrt" | "Reciprocal" | "Identity" => {
            let mut t = need(node, &c, 0)?;
            let f: fn(f64) -> f64 = match op {
                "Neg" => |v| -v,
                "Floor" => f64::floor,
                "Ceil" => f64::ceil,
                "Sqrt" => f64::sqrt,
                "Reciprocal" => |v| 1.0 / v,
                _ => |v| v,
            };
            t.values.iter_mut().for_each(|v| *v = f(*v));
            t
        }
        "Range" => {
            let [start, limit, delta] = [0, 1, 2]
                .map(|i| need(node, &c, i).map(|t| t.values.first().copied().unwrap_or(0.0)));
            let (start, limit, delta, ty) = (start?, limit?, delta?, need(node, &c, 0)?.ty);
            if delta == 0.0 {
                return Err(bad(node, "delta 0"));
            }
            let n = ((limit - start) / delta).ceil().max(0.0) as usize;
            if n > MAX_FOLDED {
                return Err(bad(node, "range too long"));
            }
            Const {
                dims: vec![n],
                values: (0..n).map(|i| start + i as f64 * delta).collect(),
                ty,
            }
        }
        "Transpose" => {
            let t = need(node, &c, 0)?;
            let rank = t.dims.len();
            let perm: Vec<usize> = match attr_ints(node, "perm") {
                Some(p) => p.iter().map(|&v| v as usize).collect(),
                None => (0..rank).rev().collect(),
            };
            let mut sorted = perm.clone();
            sorted.sort_unstable();
            if sorted != (0..rank).collect::<Vec<_>>() {
                return Err(bad(node, format!("perm {perm:?} is not a permutation")));
            }
            let dims: Vec<usize> = perm.iter().map(|&p| t.dims[p]).collect();
            let ts = strides(&t.dims);
            gather_by(node, &t, dims, |o| {
                (0..rank).map(|a| o[a] * ts[perm[a]]).sum()
            })?
        }
        "Expand" => {
            let t = need(node, &c, 0)?;
            expand(node, &t, expand_target(&need(node, &c, 1)?))?
        }
        other => {
            return Err(NnError::Onnx(format!(
                "internal: no folding rule for {other}"
            )));
        }
    })
}

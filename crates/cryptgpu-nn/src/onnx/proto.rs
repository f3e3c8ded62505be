//! A minimal protobuf wire-format reader and writer, and the few ONNX messages and fields
//! the importer needs (field numbers from `onnx.proto`). Unknown fields are skipped, as
//! protobuf requires; repeated scalars are read packed or unpacked.

use crate::error::{NnError, Result};

fn malformed(what: &str) -> NnError {
    NnError::Onnx(format!("malformed protobuf: {what}"))
}

/// One field's value on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1.
    Fixed64(u64),
    /// Wire type 2: a string, bytes, a sub-message or a packed repeated scalar.
    Bytes(&'a [u8]),
    /// Wire type 5.
    Fixed32(u32),
}

/// Reads a varint at `*pos`, advancing it.
fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos).ok_or_else(|| malformed("truncated varint"))?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(malformed("varint longer than 10 bytes"))
}

/// The fields of one message, in wire order: `(field number, value)`.
pub fn fields(buf: &[u8]) -> Result<Vec<(u32, Value<'_>)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = read_varint(buf, &mut pos)?;
        let field = u32::try_from(key >> 3).map_err(|_| malformed("field number too large"))?;
        let take = |pos: &mut usize, n: usize| -> Result<&[u8]> {
            let end = pos
                .checked_add(n)
                .filter(|&e| e <= buf.len())
                .ok_or_else(|| malformed("field runs past the end of its message"))?;
            let bytes = &buf[*pos..end];
            *pos = end;
            Ok(bytes)
        };
        let value = match key & 7 {
            0 => Value::Varint(read_varint(buf, &mut pos)?),
            1 => Value::Fixed64(u64::from_le_bytes(
                take(&mut pos, 8)?.try_into().expect("8 bytes"),
            )),
            2 => {
                let len = usize::try_from(read_varint(buf, &mut pos)?)
                    .map_err(|_| malformed("length too large"))?;
                Value::Bytes(take(&mut pos, len)?)
            }
            5 => Value::Fixed32(u32::from_le_bytes(
                take(&mut pos, 4)?.try_into().expect("4 bytes"),
            )),
            other => return Err(malformed(&format!("unsupported wire type {other}"))),
        };
        if field == 0 {
            return Err(malformed("field number 0"));
        }
        out.push((field, value));
    }
    Ok(out)
}

fn string(value: Value<'_>, what: &str) -> Result<String> {
    match value {
        Value::Bytes(b) => {
            String::from_utf8(b.to_vec()).map_err(|_| malformed(&format!("{what} is not UTF-8")))
        }
        _ => Err(malformed(&format!("{what} is not a string"))),
    }
}

fn bytes<'a>(value: Value<'a>, what: &str) -> Result<&'a [u8]> {
    match value {
        Value::Bytes(b) => Ok(b),
        _ => Err(malformed(&format!("{what} is not length-delimited"))),
    }
}

fn int(value: Value<'_>, what: &str) -> Result<i64> {
    match value {
        Value::Varint(v) => Ok(v as i64),
        _ => Err(malformed(&format!("{what} is not a varint"))),
    }
}

/// Appends the elements of a repeated int64 field (packed or not).
fn push_ints(value: Value<'_>, out: &mut Vec<i64>, what: &str) -> Result<()> {
    match value {
        Value::Varint(v) => out.push(v as i64),
        Value::Bytes(b) => {
            let mut pos = 0;
            while pos < b.len() {
                out.push(read_varint(b, &mut pos)? as i64);
            }
        }
        _ => return Err(malformed(&format!("{what} has the wrong wire type"))),
    }
    Ok(())
}

/// Appends the elements of a repeated float field (packed or not).
fn push_floats(value: Value<'_>, out: &mut Vec<f32>, what: &str) -> Result<()> {
    match value {
        Value::Fixed32(v) => out.push(f32::from_bits(v)),
        Value::Bytes(b) if b.len() % 4 == 0 => out.extend(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        _ => return Err(malformed(&format!("{what} has the wrong wire type"))),
    }
    Ok(())
}

/// Appends the elements of a repeated double field (packed or not).
fn push_doubles(value: Value<'_>, out: &mut Vec<f64>, what: &str) -> Result<()> {
    match value {
        Value::Fixed64(v) => out.push(f64::from_bits(v)),
        Value::Bytes(b) if b.len() % 8 == 0 => out.extend(
            b.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))),
        ),
        _ => return Err(malformed(&format!("{what} has the wrong wire type"))),
    }
    Ok(())
}

/// `TensorProto.DataType` values the importer reads.
pub mod data_type {
    /// 32-bit float.
    pub const FLOAT: i64 = 1;
    /// 32-bit signed integer.
    pub const INT32: i64 = 6;
    /// 64-bit signed integer.
    pub const INT64: i64 = 7;
    /// 64-bit float.
    pub const DOUBLE: i64 = 11;
    /// Unsigned byte.
    pub const UINT8: i64 = 2;
    /// Signed byte.
    pub const INT8: i64 = 3;
    /// Boolean (one byte).
    pub const BOOL: i64 = 9;
}

/// `TensorProto`: a constant tensor, its values widened to f64.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorProto {
    /// Name (initializers are referred to by it).
    pub name: String,
    /// Dimensions.
    pub dims: Vec<i64>,
    /// Element type (see [`data_type`]).
    pub data_type: i64,
    /// Elements, whichever field held them (empty until loaded when `external` is set).
    pub values: Vec<f64>,
    /// Where the values are when they are stored outside the model file (`data_location =
    /// EXTERNAL`): the `external_data` entries (`location`, `offset`, `length`).
    pub external: Option<Vec<(String, String)>>,
}

impl TensorProto {
    /// Decodes a `TensorProto` message.
    pub fn decode(buf: &[u8]) -> Result<Self> {
        let mut t = TensorProto::default();
        let (mut floats, mut doubles) = (Vec::new(), Vec::new());
        let (mut int32s, mut int64s) = (Vec::new(), Vec::new());
        let mut raw: Option<&[u8]> = None;
        for (field, value) in fields(buf)? {
            match field {
                1 => push_ints(value, &mut t.dims, "TensorProto.dims")?,
                2 => t.data_type = int(value, "TensorProto.data_type")?,
                4 => push_floats(value, &mut floats, "TensorProto.float_data")?,
                5 => push_ints(value, &mut int32s, "TensorProto.int32_data")?,
                7 => push_ints(value, &mut int64s, "TensorProto.int64_data")?,
                8 => t.name = string(value, "TensorProto.name")?,
                9 => raw = Some(bytes(value, "TensorProto.raw_data")?),
                10 => push_doubles(value, &mut doubles, "TensorProto.double_data")?,
                13 => {
                    let entry = bytes(value, "TensorProto.external_data")?;
                    let (mut key, mut val) = (String::new(), String::new());
                    for (f, v) in fields(entry)? {
                        match f {
                            1 => key = string(v, "StringStringEntryProto.key")?,
                            2 => val = string(v, "StringStringEntryProto.value")?,
                            _ => {}
                        }
                    }
                    t.external.get_or_insert_with(Vec::new).push((key, val));
                }
                14 if int(value, "TensorProto.data_location")? == 1 => {
                    t.external.get_or_insert_with(Vec::new);
                }
                _ => {}
            }
        }
        if t.external.is_some() {
            if t.dims.iter().any(|&d| d < 0) {
                return Err(NnError::Onnx(format!(
                    "tensor `{}` has dims {:?}",
                    t.name, t.dims
                )));
            }
            return Ok(t);
        }
        t.values = decode_values(&t.name, t.data_type, raw, floats, doubles, int32s, int64s)?;
        if t.dims.iter().any(|&d| d < 0) || t.element_count() != Some(t.values.len()) {
            return Err(NnError::Onnx(format!(
                "tensor `{}` has dims {:?} but {} values",
                t.name,
                t.dims,
                t.values.len()
            )));
        }
        Ok(t)
    }

    /// Fills in the values of a tensor stored outside the file from `raw`, the bytes at its
    /// `offset` and `length`.
    pub fn load_external(&mut self, raw: &[u8]) -> Result<()> {
        self.values = decode_values(
            &self.name,
            self.data_type,
            Some(raw),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        )?;
        if self.element_count() != Some(self.values.len()) {
            return Err(NnError::Onnx(format!(
                "tensor `{}` has dims {:?} but its external data holds {} values",
                self.name,
                self.dims,
                self.values.len()
            )));
        }
        self.external = None;
        Ok(())
    }

    /// The number of elements its dims give, `None` when negative or beyond `usize`.
    pub fn element_count(&self) -> Option<usize> {
        self.dims.iter().try_fold(1usize, |acc, &d| {
            usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
        })
    }

    /// The size in bytes of one element of `data_type`, for those the importer reads.
    pub fn element_size(data_type: i64) -> Option<usize> {
        match data_type {
            data_type::FLOAT | data_type::INT32 => Some(4),
            data_type::DOUBLE | data_type::INT64 => Some(8),
            data_type::BOOL | data_type::INT8 | data_type::UINT8 => Some(1),
            _ => None,
        }
    }
}

/// Decodes a tensor's values from whichever field held them.
fn decode_values(
    name: &str,
    data_type: i64,
    raw: Option<&[u8]>,
    floats: Vec<f32>,
    doubles: Vec<f64>,
    int32s: Vec<i64>,
    int64s: Vec<i64>,
) -> Result<Vec<f64>> {
    let t = TensorProto {
        name: name.to_owned(),
        data_type,
        ..TensorProto::default()
    };
    {
        let name = t.name.clone();
        let bad_raw = |size: usize| {
            NnError::Onnx(format!(
                "tensor `{name}`: raw_data length is not a multiple of {size}"
            ))
        };
        let values = match (t.data_type, raw) {
            (data_type::FLOAT, Some(raw)) => {
                if raw.len() % 4 != 0 {
                    return Err(bad_raw(4));
                }
                raw.chunks_exact(4)
                    .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                    .collect()
            }
            (data_type::DOUBLE, Some(raw)) => {
                if raw.len() % 8 != 0 {
                    return Err(bad_raw(8));
                }
                raw.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect()
            }
            (data_type::INT64, Some(raw)) => {
                if raw.len() % 8 != 0 {
                    return Err(bad_raw(8));
                }
                raw.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f64)
                    .collect()
            }
            (data_type::INT32, Some(raw)) => {
                if raw.len() % 4 != 0 {
                    return Err(bad_raw(4));
                }
                raw.chunks_exact(4)
                    .map(|c| f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                    .collect()
            }
            (data_type::FLOAT, None) => floats.into_iter().map(f64::from).collect(),
            (data_type::DOUBLE, None) => doubles,
            (data_type::INT32, None) => int32s.into_iter().map(|v| v as i32 as f64).collect(),
            (data_type::INT64, None) => int64s.into_iter().map(|v| v as f64).collect(),
            (data_type::BOOL | data_type::UINT8, Some(raw)) => {
                raw.iter().map(|&b| f64::from(b)).collect()
            }
            (data_type::INT8, Some(raw)) => raw.iter().map(|&b| f64::from(b as i8)).collect(),
            (data_type::BOOL | data_type::UINT8 | data_type::INT8, None) => {
                int32s.into_iter().map(|v| v as f64).collect()
            }
            (other, _) => {
                return Err(NnError::Onnx(format!(
                    "tensor `{}` has data type {other}; supported: float, double, int8, uint8, \
                     int32, int64, bool",
                    t.name
                )));
            }
        };
        Ok(values)
    }
}

/// `AttributeProto`, the fields the importer reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AttributeProto {
    /// Attribute name.
    pub name: String,
    /// `AttributeType` (1 float, 2 int, 3 string, 4 tensor, 6 floats, 7 ints, ...).
    pub kind: i64,
    /// Single float.
    pub f: f32,
    /// Single int.
    pub i: i64,
    /// String (bytes).
    pub s: Vec<u8>,
    /// Tensor.
    pub t: Option<TensorProto>,
    /// Repeated floats.
    pub floats: Vec<f32>,
    /// Repeated ints.
    pub ints: Vec<i64>,
}

impl AttributeProto {
    /// Decodes an `AttributeProto` message.
    pub fn decode(buf: &[u8]) -> Result<Self> {
        let mut a = AttributeProto::default();
        for (field, value) in fields(buf)? {
            match field {
                1 => a.name = string(value, "AttributeProto.name")?,
                2 => match value {
                    Value::Fixed32(v) => a.f = f32::from_bits(v),
                    _ => return Err(malformed("AttributeProto.f is not fixed32")),
                },
                3 => a.i = int(value, "AttributeProto.i")?,
                4 => a.s = bytes(value, "AttributeProto.s")?.to_vec(),
                5 => a.t = Some(TensorProto::decode(bytes(value, "AttributeProto.t")?)?),
                7 => push_floats(value, &mut a.floats, "AttributeProto.floats")?,
                8 => push_ints(value, &mut a.ints, "AttributeProto.ints")?,
                20 => a.kind = int(value, "AttributeProto.type")?,
                _ => {}
            }
        }
        Ok(a)
    }
}

/// `NodeProto`, the fields the importer reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeProto {
    /// Input value names ("" for an omitted optional input).
    pub inputs: Vec<String>,
    /// Output value names.
    pub outputs: Vec<String>,
    /// Node name (may be empty).
    pub name: String,
    /// Operator, e.g. `Conv`.
    pub op_type: String,
    /// Operator domain ("" is the default ONNX domain).
    pub domain: String,
    /// Attributes.
    pub attributes: Vec<AttributeProto>,
}

impl NodeProto {
    /// Decodes a `NodeProto` message.
    pub fn decode(buf: &[u8]) -> Result<Self> {
        let mut n = NodeProto::default();
        for (field, value) in fields(buf)? {
            match field {
                1 => n.inputs.push(string(value, "NodeProto.input")?),
                2 => n.outputs.push(string(value, "NodeProto.output")?),
                3 => n.name = string(value, "NodeProto.name")?,
                4 => n.op_type = string(value, "NodeProto.op_type")?,
                5 => n.attributes.push(AttributeProto::decode(bytes(
                    value,
                    "NodeProto.attribute",
                )?)?),
                7 => n.domain = string(value, "NodeProto.domain")?,
                _ => {}
            }
        }
        Ok(n)
    }

    /// The attribute called `name`.
    pub fn attribute(&self, name: &str) -> Option<&AttributeProto> {
        self.attributes.iter().find(|a| a.name == name)
    }

    /// A name for messages: the node's name, else its first output.
    pub fn display_name(&self) -> String {
        if !self.name.is_empty() {
            self.name.clone()
        } else {
            self.outputs.first().cloned().unwrap_or_default()
        }
    }
}

/// `ValueInfoProto` reduced to a name and a tensor shape (`None` for a symbolic or unknown
/// dimension).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ValueInfo {
    /// Value name.
    pub name: String,
    /// Dimensions, when the type is a tensor with a shape.
    pub shape: Option<Vec<Option<i64>>>,
}

impl ValueInfo {
    /// Decodes a `ValueInfoProto` message.
    pub fn decode(buf: &[u8]) -> Result<Self> {
        let mut info = ValueInfo::default();
        for (field, value) in fields(buf)? {
            match field {
                1 => info.name = string(value, "ValueInfoProto.name")?,
                2 => {
                    // TypeProto.tensor_type (1) -> TypeProto.Tensor.shape (2) -> dims (1).
                    for (f, v) in fields(bytes(value, "ValueInfoProto.type")?)? {
                        if f != 1 {
                            continue;
                        }
                        for (f, v) in fields(bytes(v, "TypeProto.tensor_type")?)? {
                            if f != 2 {
                                continue;
                            }
                            let mut dims = Vec::new();
                            for (f, v) in fields(bytes(v, "TypeProto.Tensor.shape")?)? {
                                if f != 1 {
                                    continue;
                                }
                                let mut dim = None;
                                for (f, v) in fields(bytes(v, "TensorShapeProto.dim")?)? {
                                    if f == 1 {
                                        dim = Some(int(v, "Dimension.dim_value")?);
                                    }
                                }
                                dims.push(dim);
                            }
                            info.shape = Some(dims);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(info)
    }
}

/// `GraphProto`, the fields the importer reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GraphProto {
    /// Graph name.
    pub name: String,
    /// Nodes, in topological order.
    pub nodes: Vec<NodeProto>,
    /// Constant tensors (weights).
    pub initializers: Vec<TensorProto>,
    /// Graph inputs (may include the initializers).
    pub inputs: Vec<ValueInfo>,
    /// Graph outputs.
    pub outputs: Vec<ValueInfo>,
}

impl GraphProto {
    /// Decodes a `GraphProto` message.
    pub fn decode(buf: &[u8]) -> Result<Self> {
        let mut g = GraphProto::default();
        for (field, value) in fields(buf)? {
            match field {
                1 => g
                    .nodes
                    .push(NodeProto::decode(bytes(value, "GraphProto.node")?)?),
                2 => g.name = string(value, "GraphProto.name")?,
                5 => g.initializers.push(TensorProto::decode(bytes(
                    value,
                    "GraphProto.initializer",
                )?)?),
                11 => g
                    .inputs
                    .push(ValueInfo::decode(bytes(value, "GraphProto.input")?)?),
                12 => g
                    .outputs
                    .push(ValueInfo::decode(bytes(value, "GraphProto.output")?)?),
                15 => {
                    return Err(NnError::Onnx(
                        "sparse initializers are not supported".into(),
                    ));
                }
                _ => {}
            }
        }
        Ok(g)
    }
}

/// `ModelProto`, the fields the importer reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelProto {
    /// IR version.
    pub ir_version: i64,
    /// `(domain, version)` of each operator set used.
    pub opset_import: Vec<(String, i64)>,
    /// The graph.
    pub graph: GraphProto,
}

impl ModelProto {
    /// Decodes a `ModelProto` (an `.onnx` file's bytes).
    pub fn decode(buf: &[u8]) -> Result<Self> {
        let mut m = ModelProto::default();
        let mut graph = None;
        for (field, value) in fields(buf)? {
            match field {
                1 => m.ir_version = int(value, "ModelProto.ir_version")?,
                7 => graph = Some(GraphProto::decode(bytes(value, "ModelProto.graph")?)?),
                8 => {
                    let (mut domain, mut version) = (String::new(), 0);
                    for (f, v) in fields(bytes(value, "ModelProto.opset_import")?)? {
                        match f {
                            1 => domain = string(v, "OperatorSetIdProto.domain")?,
                            2 => version = int(v, "OperatorSetIdProto.version")?,
                            _ => {}
                        }
                    }
                    m.opset_import.push((domain, version));
                }
                _ => {}
            }
        }
        m.graph = graph.ok_or_else(|| NnError::Onnx("the model has no graph".into()))?;
        Ok(m)
    }

    /// The version of the default (`""` or `ai.onnx`) operator set.
    pub fn default_opset(&self) -> Option<i64> {
        self.opset_import
            .iter()
            .find(|(d, _)| d.is_empty() || d == "ai.onnx")
            .map(|&(_, v)| v)
    }
}

/// Builds protobuf messages field by field.
#[derive(Clone, Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty message.
    pub fn new() -> Self {
        Self::default()
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire));
    }

    /// An int field (varint; negative values take ten bytes, as protobuf's int64 does).
    pub fn int(&mut self, field: u32, v: i64) -> &mut Self {
        self.key(field, 0);
        self.varint(v as u64);
        self
    }

    /// A float field (fixed32).
    pub fn float(&mut self, field: u32, v: f32) -> &mut Self {
        self.key(field, 5);
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A bytes, string or sub-message field.
    pub fn bytes(&mut self, field: u32, v: &[u8]) -> &mut Self {
        self.key(field, 2);
        self.varint(v.len() as u64);
        self.buf.extend_from_slice(v);
        self
    }

    /// A string field.
    pub fn string(&mut self, field: u32, v: &str) -> &mut Self {
        self.bytes(field, v.as_bytes())
    }

    /// A sub-message field.
    pub fn message(&mut self, field: u32, m: &Writer) -> &mut Self {
        self.bytes(field, &m.buf)
    }

    /// A packed repeated int field.
    pub fn packed_ints(&mut self, field: u32, values: &[i64]) -> &mut Self {
        let mut inner = Writer::new();
        for &v in values {
            inner.varint(v as u64);
        }
        self.bytes(field, &inner.buf)
    }

    /// A packed repeated float field.
    pub fn packed_floats(&mut self, field: u32, values: &[f32]) -> &mut Self {
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.bytes(field, &data)
    }

    /// The encoded message.
    pub fn finish(&self) -> Vec<u8> {
        self.buf.clone()
    }
}

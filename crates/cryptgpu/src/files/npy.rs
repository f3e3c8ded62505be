//! NumPy `.npy` files: reading versions 1.0, 2.0 and 3.0 of the format (little-endian,
//! C order, integer and float dtypes) and writing version 1.0 exactly as `numpy.save` does.
//!
//! The format: the magic `\x93NUMPY`, the major and minor version bytes, the header length
//! (little-endian `u16` in 1.0, `u32` in 2.0 and 3.0), then the header, a Python dict
//! literal such as `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }` padded with
//! spaces and a newline, then the data, row-major.
//!
//! Reading never trusts the file: the header length and the declared shape are checked, with
//! checked arithmetic, against the bytes actually present before anything is allocated, and
//! the data must be exactly what the shape declares.
//!
//! # Why not npyz or ndarray-npy
//!
//! Issue 25 asked for a maintained crate instead. npyz 0.9.1 and ndarray-npy 0.10.0 (the
//! latest of each) were run against files written by numpy 2.4.6 and against hostile ones.
//! Both read every dtype and version read here, and more (big-endian, Fortran order,
//! structured dtypes), but:
//!
//! - They trust the header. npyz multiplies the declared shape unchecked: `(2**32, 2**32,
//!   2**32)` panics (overflow) in a debug build and in a release build wraps to 0 elements
//!   and returns an empty array as a success. Both allocate the declared header length before
//!   reading it: a 20-byte version 2.0 file asks for 4 GiB, and the process aborts under a
//!   memory limit. ndarray-npy allocates the declared data before reading it: `(10**12,)` of
//!   `<f8` in an 88-byte file asks for 8 TB and the process aborts.
//! - They are lax, or terse, about broken files. npyz accepts unknown keys, a repeated key
//!   (the last wins) and bytes after the data; a short file is "failed to fill whole buffer"
//!   (npyz) or "reached EOF before reading all data" (ndarray-npy), without the file, the
//!   shape or the sizes that the errors here give.
//! - ndarray-npy reads only whole arrays. npyz can stream the first `count` elements, as
//!   `read_prefix` does, but without the checks above.
//! - npyz reads each dtype only into its own Rust type (an `i64` only from `<i8`, or from a
//!   datetime), so widening the ten dtypes still takes ten cases, as `decode` does with
//!   `from_le_bytes`.
//! - Neither writes what `numpy.save` writes: npyz writes `'shape': (3, ), }`, ndarray-npy
//!   `'shape': (3,)}`, numpy `'shape': (3,), }` (and pads the header to leave room for the
//!   first dimension to grow).
//! - Both parse the header with py_literal, on pest: about a dozen crates the workspace does
//!   not otherwise build (pest and its derive macro, stacker and psm, which compile assembly
//!   with cc); ndarray-npy adds ndarray.
//!
//! Wrapping npyz would keep this module's preamble and header checks in front of it and leave
//! npyz only the `from_le_bytes` of the data, so the format stays here, in one file with no
//! dependency but `anyhow`.

use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};

/// The first six bytes of every `.npy` file.
const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// The largest header read (numpy itself refuses headers over 10 000 bytes by default).
const MAX_HEADER_LEN: usize = 1 << 20;

/// The deepest nesting of tuples, lists and dicts the header parser follows.
const MAX_DEPTH: usize = 32;

/// numpy pads the header so that the data starts at a multiple of this.
const ARRAY_ALIGN: usize = 64;

/// numpy leaves room for the first dimension to grow to this many digits in place.
const GROWTH_AXIS_MAX_DIGITS: usize = 21;

/// An element type of a `.npy` file (little-endian where it has several bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// `|u1`, numpy's `uint8`.
    U8,
    /// `<u2`, `uint16`.
    U16,
    /// `<u4`, `uint32`.
    U32,
    /// `<u8`, `uint64`.
    U64,
    /// `|i1`, `int8`.
    I8,
    /// `<i2`, `int16`.
    I16,
    /// `<i4`, `int32`.
    I32,
    /// `<i8`, `int64`.
    I64,
    /// `<f4`, `float32`.
    F32,
    /// `<f8`, `float64`.
    F64,
}

/// The `descr` strings that are read, for error messages.
const SUPPORTED: &str = "|u1, <u2, <u4, <u8, |i1, <i2, <i4, <i8, <f4, <f8";

impl Dtype {
    /// Bytes per element.
    pub fn item_size(self) -> usize {
        match self {
            Dtype::U8 | Dtype::I8 => 1,
            Dtype::U16 | Dtype::I16 => 2,
            Dtype::U32 | Dtype::I32 | Dtype::F32 => 4,
            Dtype::U64 | Dtype::I64 | Dtype::F64 => 8,
        }
    }

    /// The `descr` numpy writes for it, such as `<f4`.
    pub fn descr(self) -> &'static str {
        match self {
            Dtype::U8 => "|u1",
            Dtype::U16 => "<u2",
            Dtype::U32 => "<u4",
            Dtype::U64 => "<u8",
            Dtype::I8 => "|i1",
            Dtype::I16 => "<i2",
            Dtype::I32 => "<i4",
            Dtype::I64 => "<i8",
            Dtype::F32 => "<f4",
            Dtype::F64 => "<f8",
        }
    }

    /// numpy's name for it, such as `float32`.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::U8 => "uint8",
            Dtype::U16 => "uint16",
            Dtype::U32 => "uint32",
            Dtype::U64 => "uint64",
            Dtype::I8 => "int8",
            Dtype::I16 => "int16",
            Dtype::I32 => "int32",
            Dtype::I64 => "int64",
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
        }
    }

    /// Whether it is a float type.
    pub fn is_float(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::F64)
    }

    /// The dtype of a `descr` string, or why it is not read.
    fn from_descr(descr: &str) -> Result<Self, String> {
        let (order, code) = match descr.as_bytes().first() {
            Some(b'<' | b'>' | b'|' | b'=') => (descr.chars().next(), &descr[1..]),
            _ => (None, descr),
        };
        let dtype = match code {
            "u1" => Dtype::U8,
            "u2" => Dtype::U16,
            "u4" => Dtype::U32,
            "u8" => Dtype::U64,
            "i1" => Dtype::I8,
            "i2" => Dtype::I16,
            "i4" => Dtype::I32,
            "i8" => Dtype::I64,
            "f4" => Dtype::F32,
            "f8" => Dtype::F64,
            _ => {
                return Err(format!(
                    "unsupported dtype '{descr}' (supported: {SUPPORTED})"
                ));
            }
        };
        match order {
            // One byte has no order.
            _ if dtype.item_size() == 1 => {}
            Some('<') => {}
            Some('>') => {
                return Err(format!(
                    "dtype '{descr}' is big-endian; only little-endian arrays are read \
                     (convert with array.astype('{}'))",
                    dtype.descr()
                ));
            }
            _ => {
                return Err(format!(
                    "dtype '{descr}' has no explicit byte order ('<' expected, as in '{}')",
                    dtype.descr()
                ));
            }
        }
        Ok(dtype)
    }
}

/// What a `.npy` header says: the element type, the shape and where the data starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    /// The element type.
    pub dtype: Dtype,
    /// The dimensions, outermost first; empty for a scalar.
    pub shape: Vec<usize>,
    /// The byte offset of the data in the file.
    pub data_offset: usize,
}

impl NpyHeader {
    /// Number of elements (the product of the shape; checked against the file when read).
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether there is nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The elements of an array, widened to one of four types: `uint8` stays `U8`, every other
/// integer type becomes `I64` (a `uint64` above `i64::MAX` is an error), floats keep their
/// width.
#[derive(Clone, Debug, PartialEq)]
pub enum NpyData {
    /// `uint8` elements.
    U8(Vec<u8>),
    /// `float32` elements.
    F32(Vec<f32>),
    /// `float64` elements.
    F64(Vec<f64>),
    /// Elements of any other integer type.
    I64(Vec<i64>),
}

impl NpyData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            NpyData::U8(v) => v.len(),
            NpyData::F32(v) => v.len(),
            NpyData::F64(v) => v.len(),
            NpyData::I64(v) => v.len(),
        }
    }

    /// Whether there is nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A whole `.npy` array in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    /// The element type in the file.
    pub dtype: Dtype,
    /// The dimensions, outermost first; empty for a scalar.
    pub shape: Vec<usize>,
    /// The elements, row-major.
    pub data: NpyData,
}

/// Reads the header of the `.npy` file at `path` (not its data), checking that the file
/// holds exactly the data the header declares.
pub fn read_header(path: &Path) -> Result<NpyHeader> {
    let (mut file, source) = open(path)?;
    read_header_from(&mut file, &source)
}

/// Reads the whole `.npy` file at `path`.
pub fn read(path: &Path) -> Result<NpyArray> {
    let (header, data) = read_prefix(path, usize::MAX)?;
    Ok(NpyArray {
        dtype: header.dtype,
        shape: header.shape,
        data,
    })
}

/// Reads the header and the first `count` elements (all of them when fewer) of the
/// `.npy` file at `path`, without reading the rest of the data.
pub fn read_prefix(path: &Path, count: usize) -> Result<(NpyHeader, NpyData)> {
    let (mut file, source) = open(path)?;
    let header = read_header_from(&mut file, &source)?;
    // Fits, and is in the file: the header was checked against the file's length.
    let mut raw = vec![0; count.min(header.len()) * header.dtype.item_size()];
    file.read_exact(&mut raw)
        .with_context(|| format!("cannot read the data of {source}"))?;
    let data = decode(header.dtype, &raw).map_err(|e| anyhow!("{source}: {e}"))?;
    Ok((header, data))
}

/// Parses a whole `.npy` file held in memory; `source` names it in errors.
pub fn parse(bytes: &[u8], source: &str) -> Result<NpyArray> {
    let header = read_header_from(&mut Cursor::new(bytes), source)?;
    let data =
        decode(header.dtype, &bytes[header.data_offset..]).map_err(|e| anyhow!("{source}: {e}"))?;
    Ok(NpyArray {
        dtype: header.dtype,
        shape: header.shape,
        data,
    })
}

/// Opens the file at `path`; returns it and its name for errors.
fn open(path: &Path) -> Result<(File, String)> {
    let source = path.display().to_string();
    let file = File::open(path).with_context(|| format!("cannot open {source}"))?;
    Ok((file, source))
}

/// Reads and checks the header of a file from its start, leaving the file at its data.
fn read_header_from(file: &mut (impl Read + Seek), source: &str) -> Result<NpyHeader> {
    let mut first = Vec::with_capacity(12);
    let file_len = file
        .seek(SeekFrom::End(0))
        .and_then(|len| {
            file.rewind()?;
            file.by_ref().take(12).read_to_end(&mut first)?;
            Ok(len)
        })
        .with_context(|| format!("cannot read {source}"))?;
    let preamble = preamble(&first, source)?;
    let end = preamble.header_end(file_len, source)?;
    let mut text = vec![0; end - preamble.start];
    file.seek(SeekFrom::Start(preamble.start as u64))
        .and_then(|_| file.read_exact(&mut text))
        .with_context(|| format!("cannot read the header of {source}"))?;
    parse_header(&text, &preamble, file_len, source)
}

/// The fixed-size start of a `.npy` file.
struct Preamble {
    /// The major version (1, 2 or 3).
    major: u8,
    /// The offset of the header text.
    start: usize,
    /// The declared length of the header text.
    len: usize,
}

impl Preamble {
    /// The end of the header text, checked against the file's length and the header limit.
    fn header_end(&self, file_len: u64, source: &str) -> Result<usize> {
        if self.len > MAX_HEADER_LEN {
            bail!(
                "{source}: the .npy header declares {} bytes, more than the {MAX_HEADER_LEN} \
                 read",
                self.len
            );
        }
        let end = self.start + self.len;
        if end as u64 > file_len {
            bail!(
                "{source}: truncated .npy file: the header needs {end} bytes, the file has \
                 {file_len}"
            );
        }
        Ok(end)
    }
}

/// Reads the magic, version and header length from the first (up to) 12 bytes.
fn preamble(first: &[u8], source: &str) -> Result<Preamble> {
    if first.len() < MAGIC.len() || first[..MAGIC.len()] != MAGIC[..] {
        if first.len() < MAGIC.len() && MAGIC.starts_with(first) {
            bail!("{source}: truncated .npy file ({} bytes)", first.len());
        }
        bail!("{source}: not a .npy file (it does not start with \\x93NUMPY)");
    }
    let Some(&[major, minor]) = first.get(6..8) else {
        bail!("{source}: truncated .npy file (no format version)");
    };
    let (start, len) = match (major, minor) {
        (1, 0) => match first.get(8..10) {
            Some(&[a, b]) => (10, usize::from(u16::from_le_bytes([a, b]))),
            _ => bail!("{source}: truncated .npy file (no header length)"),
        },
        (2 | 3, 0) => match first.get(8..12) {
            Some(&[a, b, c, d]) => (12, u32::from_le_bytes([a, b, c, d]) as usize),
            _ => bail!("{source}: truncated .npy file (no header length)"),
        },
        _ => bail!(
            "{source}: .npy format version {major}.{minor} is not supported (1.0, 2.0 and 3.0 \
             are)"
        ),
    };
    Ok(Preamble { major, start, len })
}

/// Parses the header text and checks the data length (`file_len` minus the data offset)
/// against the shape.
fn parse_header(
    text: &[u8],
    preamble: &Preamble,
    file_len: u64,
    source: &str,
) -> Result<NpyHeader> {
    // 1.0 and 2.0 headers are latin-1, 3.0 ones UTF-8; every header read here is ASCII.
    let text = std::str::from_utf8(text).map_err(|_| {
        anyhow!(
            "{source}: bad .npy header: the header of a version {}.0 file is not text",
            preamble.major
        )
    })?;
    let (dtype, shape) = parse_dict(text).map_err(|e| anyhow!("{source}: {e}"))?;
    let data_offset = preamble.start + preamble.len;
    let needed = shape
        .iter()
        .try_fold(dtype.item_size(), |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            anyhow!(
                "{source}: shape {shape:?} of {} is too large (its byte size overflows)",
                dtype.name()
            )
        })?;
    let present = file_len - data_offset as u64;
    if needed as u64 != present {
        bail!(
            "{source}: shape {shape:?} of {} ({}) needs {needed} bytes of data, the file has \
             {present}",
            dtype.name(),
            dtype.descr()
        );
    }
    Ok(NpyHeader {
        dtype,
        shape,
        data_offset,
    })
}

/// Decodes little-endian elements; `raw.len()` is a multiple of the item size.
fn decode(dtype: Dtype, raw: &[u8]) -> Result<NpyData, String> {
    fn each<const N: usize, T>(raw: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        raw.as_chunks::<N>().0.iter().map(|&b| f(b)).collect()
    }
    Ok(match dtype {
        Dtype::U8 => NpyData::U8(raw.to_vec()),
        Dtype::I8 => NpyData::I64(each(raw, |b| i64::from(i8::from_le_bytes(b)))),
        Dtype::I16 => NpyData::I64(each(raw, |b| i64::from(i16::from_le_bytes(b)))),
        Dtype::U16 => NpyData::I64(each(raw, |b| i64::from(u16::from_le_bytes(b)))),
        Dtype::I32 => NpyData::I64(each(raw, |b| i64::from(i32::from_le_bytes(b)))),
        Dtype::U32 => NpyData::I64(each(raw, |b| i64::from(u32::from_le_bytes(b)))),
        Dtype::I64 => NpyData::I64(each(raw, i64::from_le_bytes)),
        Dtype::U64 => NpyData::I64(
            raw.as_chunks::<8>()
                .0
                .iter()
                .enumerate()
                .map(|(i, &b)| {
                    let v = u64::from_le_bytes(b);
                    i64::try_from(v).map_err(|_| {
                        format!("element {i} of the uint64 array, {v}, does not fit in int64")
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
        Dtype::F32 => NpyData::F32(each(raw, f32::from_le_bytes)),
        Dtype::F64 => NpyData::F64(each(raw, f64::from_le_bytes)),
    })
}
/// A Python literal of the header.
#[derive(Debug)]
enum Value {
    /// A string.
    Str(String),
    /// `True` or `False`.
    Bool(bool),
    /// `None`.
    None,
    /// An integer.
    Int(i128),
    /// A tuple or a list.
    Seq(Vec<Value>),
    /// A dict.
    Dict(Vec<(Value, Value)>),
}

/// A recursive-descent parser of the Python literals that appear in `.npy` headers.
struct Parser<'a> {
    /// The header text.
    s: &'a [u8],
    /// The next byte to read.
    pos: usize,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        while self.s.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.s.get(self.pos).copied()
    }

    fn error(&self, what: &str) -> String {
        let found = match self.s.get(self.pos) {
            None => "the end of the header".to_owned(),
            Some(&b) if b.is_ascii_graphic() => format!("'{}'", b as char),
            Some(&b) => format!("byte 0x{b:02x}"),
        };
        format!(
            "expected {what} at byte {} of the header, found {found}",
            self.pos
        )
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(format!("the header nests deeper than {MAX_DEPTH} levels"));
        }
        match self.peek() {
            Some(b'{') => self.dict(depth),
            Some(b'(') => self.seq(b')', depth),
            Some(b'[') => self.seq(b']', depth),
            Some(q @ (b'\'' | b'"')) => self.string(q),
            Some(b'-' | b'+' | b'0'..=b'9') => self.int(),
            Some(b'A'..=b'Z' | b'a'..=b'z' | b'_') => {
                let start = self.pos;
                while self
                    .s
                    .get(self.pos)
                    .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
                {
                    self.pos += 1;
                }
                match &self.s[start..self.pos] {
                    b"True" => Ok(Value::Bool(true)),
                    b"False" => Ok(Value::Bool(false)),
                    b"None" => Ok(Value::None),
                    word => Err(format!(
                        "unexpected name '{}' in the header",
                        String::from_utf8_lossy(word)
                    )),
                }
            }
            _ => Err(self.error("a value")),
        }
    }

    /// `{key: value, ...}` with an optional trailing comma.
    fn dict(&mut self, depth: usize) -> Result<Value, String> {
        self.pos += 1;
        let mut entries = Vec::new();
        loop {
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(Value::Dict(entries));
            }
            let key = self.value(depth + 1)?;
            if self.peek() != Some(b':') {
                return Err(self.error("':'"));
            }
            self.pos += 1;
            let value = self.value(depth + 1)?;
            entries.push((key, value));
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => return Err(self.error("',' or '}'")),
            }
        }
    }

    /// `(a, b)`, `(a,)`, `()`, `[a, b]`, with an optional trailing comma.
    fn seq(&mut self, close: u8, depth: usize) -> Result<Value, String> {
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            if self.peek() == Some(close) {
                self.pos += 1;
                return Ok(Value::Seq(items));
            }
            items.push(self.value(depth + 1)?);
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(c) if c == close => {}
                _ => {
                    return Err(self.error(&format!("',' or '{}'", close as char)));
                }
            }
        }
    }

    /// A quoted string; a backslash keeps the byte after it.
    fn string(&mut self, quote: u8) -> Result<Value, String> {
        self.pos += 1;
        let mut bytes = Vec::new();
        loop {
            match self.s.get(self.pos) {
                None => return Err("unterminated string in the header".to_owned()),
                Some(&b) if b == quote => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    let Some(&b) = self.s.get(self.pos + 1) else {
                        return Err("unterminated string in the header".to_owned());
                    };
                    bytes.push(b);
                    self.pos += 2;
                }
                Some(&b) => {
                    bytes.push(b);
                    self.pos += 1;
                }
            }
        }
        String::from_utf8(bytes)
            .map(Value::Str)
            .map_err(|_| "a string in the header is not UTF-8".to_owned())
    }

    /// A decimal integer, with Python 2's optional `L` suffix.
    fn int(&mut self) -> Result<Value, String> {
        let negative = self.s[self.pos] == b'-';
        if matches!(self.s[self.pos], b'-' | b'+') {
            self.pos += 1;
        }
        let start = self.pos;
        let mut value: i128 = 0;
        while let Some(&b @ b'0'..=b'9') = self.s.get(self.pos) {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(i128::from(b - b'0')))
                .ok_or_else(|| "an integer in the header is too large".to_owned())?;
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.error("a digit"));
        }
        if matches!(self.s.get(self.pos), Some(b'L' | b'l')) {
            self.pos += 1;
        }
        Ok(Value::Int(if negative { -value } else { value }))
    }
}

/// Parses the header dict: its dtype and shape. Rejects big-endian data, Fortran order
/// (unless it is the same layout as C order), structured dtypes and unknown keys.
fn parse_dict(text: &str) -> Result<(Dtype, Vec<usize>), String> {
    let bad = |message: String| format!("bad .npy header: {message}");
    let mut parser = Parser {
        s: text.as_bytes(),
        pos: 0,
    };
    let value = parser.value(0).map_err(bad)?;
    if parser.peek().is_some() {
        return Err(bad(parser.error("the end of the header after the dict")));
    }
    let Value::Dict(entries) = value else {
        return Err(bad("the header is not a dict".to_owned()));
    };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    for (key, value) in entries {
        let Value::Str(key) = key else {
            return Err(bad(format!("key {key:?} is not a string")));
        };
        let slot = match key.as_str() {
            "descr" => &mut descr,
            "fortran_order" => &mut fortran,
            "shape" => &mut shape,
            _ => {
                return Err(bad(format!(
                    "unknown key '{key}' (expected 'descr', 'fortran_order' and 'shape')"
                )));
            }
        };
        if slot.replace(value).is_some() {
            return Err(bad(format!("key '{key}' appears twice")));
        }
    }
    let missing = |key: &str| bad(format!("no '{key}' key"));
    let dtype = match descr.ok_or_else(|| missing("descr"))? {
        Value::Str(s) => Dtype::from_descr(&s)?,
        Value::Seq(_) => {
            return Err("structured dtypes (a list descr) are not supported".to_owned());
        }
        other => return Err(bad(format!("'descr' is {other:?}, not a string"))),
    };
    let shape = match shape.ok_or_else(|| missing("shape"))? {
        Value::Seq(items) => items
            .into_iter()
            .map(|item| match item {
                Value::Int(d) => usize::try_from(d)
                    .map_err(|_| bad(format!("dimension {d} in 'shape' is out of range"))),
                other => Err(bad(format!("'shape' holds {other:?}, not an integer"))),
            })
            .collect::<Result<Vec<usize>, String>>()?,
        other => return Err(bad(format!("'shape' is {other:?}, not a tuple"))),
    };
    match fortran.ok_or_else(|| missing("fortran_order"))? {
        Value::Bool(false) => {}
        // With at most one dimension above 1, Fortran order is C order.
        Value::Bool(true) if shape.iter().filter(|&&d| d > 1).count() <= 1 => {}
        Value::Bool(true) => {
            return Err(format!(
                "fortran_order is True: column-major arrays of shape {shape:?} are not \
                 supported (save a C-order array, numpy.ascontiguousarray)"
            ));
        }
        other => {
            return Err(bad(format!(
                "'fortran_order' is {other:?}, not True or False"
            )));
        }
    }
    Ok((dtype, shape))
}

/// The preamble and header numpy writes for an array: version 1.0 (2.0 if the header
/// outgrows it), the dict with sorted keys and a trailing comma, room for the first
/// dimension to grow, and spaces and a newline so that the data starts at a multiple of 64
/// bytes.
fn encode_header(dtype: Dtype, shape: &[usize]) -> Vec<u8> {
    let dims = match shape {
        [d] => format!("({d},)"),
        _ => {
            let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
            format!("({})", dims.join(", "))
        }
    };
    let mut dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {dims}, }}",
        dtype.descr()
    );
    if let Some(first) = shape.first() {
        let digits = first.to_string().len();
        dict.push_str(&" ".repeat(GROWTH_AXIS_MAX_DIGITS.saturating_sub(digits)));
    }
    // The padded length of the dict and its newline after a preamble of `prefix` bytes.
    let padded = |prefix: usize| {
        let text_len = dict.len() + 1;
        text_len + ARRAY_ALIGN - (prefix + text_len) % ARRAY_ALIGN
    };
    let mut out = MAGIC.to_vec();
    match u16::try_from(padded(10)) {
        Ok(len) => {
            out.extend_from_slice(&[1, 0]);
            out.extend_from_slice(&len.to_le_bytes());
        }
        Err(_) => {
            out.extend_from_slice(&[2, 0]);
            // A header of 4 GiB would need a shape of hundreds of millions of dimensions.
            out.extend_from_slice(&(padded(12) as u32).to_le_bytes());
        }
    }
    let end = out.len() + padded(out.len());
    out.extend_from_slice(dict.as_bytes());
    out.resize(end - 1, b' ');
    out.push(b'\n');
    out
}

/// Encodes `data` of `shape` as numpy.save does, `le` giving each element's bytes.
///
/// # Panics
/// If the shape does not hold `data.len()` elements.
fn encode<T: Copy, const N: usize>(
    dtype: Dtype,
    shape: &[usize],
    data: &[T],
    le: fn(T) -> [u8; N],
) -> Vec<u8> {
    assert_eq!(
        shape.iter().product::<usize>(),
        data.len(),
        "npy shape {shape:?} does not hold {} elements",
        data.len()
    );
    debug_assert_eq!(N, dtype.item_size());
    let mut out = encode_header(dtype, shape);
    out.reserve(data.len() * N);
    out.extend(data.iter().flat_map(|&v| le(v)));
    out
}

/// Encodes `data` of `shape` as a `<f8` `.npy` file.
///
/// # Panics
/// If the shape does not hold `data.len()` elements.
pub fn encode_f64(shape: &[usize], data: &[f64]) -> Vec<u8> {
    encode(Dtype::F64, shape, data, f64::to_le_bytes)
}

/// Encodes `data` of `shape` as a `<f4` `.npy` file.
///
/// # Panics
/// If the shape does not hold `data.len()` elements.
#[cfg(test)]
pub fn encode_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    encode(Dtype::F32, shape, data, f32::to_le_bytes)
}

/// Encodes `data` of `shape` as an `<i8` `.npy` file.
///
/// # Panics
/// If the shape does not hold `data.len()` elements.
pub fn encode_i64(shape: &[usize], data: &[i64]) -> Vec<u8> {
    encode(Dtype::I64, shape, data, i64::to_le_bytes)
}

/// Encodes `data` of `shape` as a `|u1` `.npy` file.
///
/// # Panics
/// If the shape does not hold `data.len()` elements.
#[cfg(test)]
pub fn encode_u8(shape: &[usize], data: &[u8]) -> Vec<u8> {
    encode(Dtype::U8, shape, data, u8::to_le_bytes)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::files::test_dir;

    /// A file with the given header text and data, version 1.0, unpadded.
    fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn parse_err(bytes: &[u8]) -> String {
        format!("{:#}", parse(bytes, "t.npy").unwrap_err())
    }

    #[test]
    fn encodes_exactly_as_numpy_save() {
        // numpy.save("x.npy", numpy.array([1.0, 2.0, 3.0])), by the format's rules: the
        // dict (57 bytes), 20 spaces of room for the first dimension, 40 spaces so that
        // 10 + 118 bytes of preamble and header reach 128, a newline, the data.
        let mut expected = b"\x93NUMPY\x01\x00\x76\x00".to_vec();
        expected.extend_from_slice(b"{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }");
        expected.extend_from_slice(&[b' '; 60]);
        expected.push(b'\n');
        for v in [1.0f64, 2.0, 3.0] {
            expected.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(expected.len(), 128 + 24);
        assert_eq!(encode_f64(&[3], &[1.0, 2.0, 3.0]), expected);

        // numpy.save of numpy.zeros((2, 3), numpy.uint8): a 2-D shape is written "(2, 3)";
        // 59 bytes of dict, 20 of room, 38 of alignment, the newline.
        let mut expected = b"\x93NUMPY\x01\x00\x76\x00".to_vec();
        expected.extend_from_slice(b"{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3), }");
        expected.extend_from_slice(&[b' '; 58]);
        expected.push(b'\n');
        expected.extend_from_slice(&[0; 6]);
        assert_eq!(encode_u8(&[2, 3], &[0; 6]), expected);

        // numpy.save of numpy.int64(7): shape "()", no room for growth: 55 bytes of dict, 62
        // of alignment, the newline.
        let mut expected = b"\x93NUMPY\x01\x00\x76\x00".to_vec();
        expected.extend_from_slice(b"{'descr': '<i8', 'fortran_order': False, 'shape': (), }");
        expected.extend_from_slice(&[b' '; 62]);
        expected.push(b'\n');
        expected.extend_from_slice(&7i64.to_le_bytes());
        assert_eq!(encode_i64(&[], &[7]), expected);
    }

    #[test]
    fn data_starts_at_a_multiple_of_64() {
        for shape in [
            vec![0],
            vec![1],
            vec![12_345_678_901_234, 0],
            vec![123_456_789_012_345_678, 0, 3],
            vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
        ] {
            let bytes = encode_header(Dtype::U8, &shape);
            let header = preamble(&bytes[..12], "t").unwrap();
            let end = header.start + header.len;
            assert_eq!(end % 64, 0, "{shape:?}");
            assert_eq!(bytes[end - 1], b'\n');
            assert_eq!(bytes.len(), end);
        }
    }

    #[test]
    fn round_trips() {
        let f64s = [
            0.0,
            -1.5,
            f64::MAX,
            f64::MIN_POSITIVE,
            1e-300,
            f64::INFINITY,
        ];
        let a = parse(&encode_f64(&[2, 3], &f64s), "a").unwrap();
        assert_eq!(a.dtype, Dtype::F64);
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, NpyData::F64(f64s.to_vec()));

        let f32s = [0.25f32, -3.0, 7.5, f32::MIN];
        let a = parse(&encode_f32(&[4], &f32s), "a").unwrap();
        assert_eq!((a.dtype, a.shape), (Dtype::F32, vec![4]));
        assert_eq!(a.data, NpyData::F32(f32s.to_vec()));

        let i64s = [i64::MIN, -1, 0, i64::MAX];
        let a = parse(&encode_i64(&[2, 1, 2], &i64s), "a").unwrap();
        assert_eq!((a.dtype, a.shape), (Dtype::I64, vec![2, 1, 2]));
        assert_eq!(a.data, NpyData::I64(i64s.to_vec()));

        let a = parse(&encode_u8(&[], &[200]), "a").unwrap();
        assert_eq!((a.dtype, a.shape), (Dtype::U8, vec![]));
        assert_eq!(a.data, NpyData::U8(vec![200]));

        let a = parse(&encode_u8(&[3, 0], &[]), "a").unwrap();
        assert_eq!(a.shape, vec![3, 0]);
        assert_eq!(a.data.len(), 0);
    }

    #[test]
    fn reads_files_and_headers_alone() {
        let dir = test_dir("npy-files");
        let path = dir.join("x.npy");
        let values: Vec<f32> = (0..24).map(|i| i as f32 / 2.0).collect();
        std::fs::write(&path, encode_f32(&[2, 3, 4], &values)).unwrap();
        let header = read_header(&path).unwrap();
        assert_eq!(header.dtype, Dtype::F32);
        assert_eq!(header.shape, vec![2, 3, 4]);
        assert_eq!(header.data_offset, 128);
        assert_eq!(header.len(), 24);
        let array = read(&path).unwrap();
        assert_eq!(array.data, NpyData::F32(values.clone()));
        let (h, first) = read_prefix(&path, 5).unwrap();
        assert_eq!(h, header);
        assert_eq!(first, NpyData::F32(values[..5].to_vec()));
        let (_, all) = read_prefix(&path, 1000).unwrap();
        assert_eq!(all, NpyData::F32(values));

        // A truncated file fails in every reader, naming it.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        for err in [
            read_header(&path).unwrap_err(),
            read(&path).unwrap_err(),
            read_prefix(&path, 1).unwrap_err(),
        ] {
            let message = format!("{err:#}");
            assert!(message.contains("x.npy"), "{message}");
            assert!(
                message.contains("needs 96 bytes of data, the file has 95"),
                "{message}"
            );
        }
        assert!(format!("{:#}", read(&dir.join("none.npy")).unwrap_err()).contains("none.npy"));
    }

    #[test]
    fn reads_versions_2_and_3_and_other_integer_types() {
        let header = "{'descr':'<i2','fortran_order':False,'shape':(3,)}\n";
        for major in [2u8, 3] {
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&[major, 0]);
            bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
            bytes.extend_from_slice(header.as_bytes());
            for v in [-2i16, 0, 300] {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            let a = parse(&bytes, "v").unwrap();
            assert_eq!(a.dtype, Dtype::I16);
            assert_eq!(a.data, NpyData::I64(vec![-2, 0, 300]));
        }
        let cases: [(&str, Vec<u8>, NpyData); 6] = [
            ("|i1", vec![0xff, 5], NpyData::I64(vec![-1, 5])),
            ("i1", vec![0x80, 5], NpyData::I64(vec![-128, 5])),
            ("u1", vec![0xff, 5], NpyData::U8(vec![255, 5])),
            ("<u1", vec![1, 2], NpyData::U8(vec![1, 2])),
            ("<u2", vec![0xff, 0xff, 1, 0], NpyData::I64(vec![65535, 1])),
            (
                "<u4",
                [u32::MAX.to_le_bytes(), 7u32.to_le_bytes()].concat(),
                NpyData::I64(vec![i64::from(u32::MAX), 7]),
            ),
        ];
        for (descr, data, expected) in cases {
            let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (2,)}}");
            let a = parse(&raw_file(&header, &data), "t").unwrap();
            assert_eq!(a.data, expected, "{descr}");
        }
        let data = [(1u64 << 63) - 1, 3].map(u64::to_le_bytes).concat();
        let header = "{'descr': '<u8', 'fortran_order': False, 'shape': (2,)}";
        assert_eq!(
            parse(&raw_file(header, &data), "t").unwrap().data,
            NpyData::I64(vec![i64::MAX, 3])
        );
        let data = [1u64 << 63, 3].map(u64::to_le_bytes).concat();
        let message = parse_err(&raw_file(header, &data));
        assert!(
            message.contains("element 0") && message.contains("int64"),
            "{message}"
        );
        let data = [1i32, -1].map(i32::to_le_bytes).concat();
        let header = "{'descr': '<i4', 'fortran_order': False, 'shape': (2,)}";
        assert_eq!(
            parse(&raw_file(header, &data), "t").unwrap().data,
            NpyData::I64(vec![1, -1])
        );
    }

    #[test]
    fn header_dicts_in_any_form() {
        let data = [1.0f32, 2.0].map(f32::to_le_bytes).concat();
        for header in [
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
            "{'shape':(2,),'fortran_order':False,'descr':'<f4'}",
            "{ \"descr\" : \"<f4\" ,\n 'shape' : [ 2 ] , 'fortran_order' : False , }   \n",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2L,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 1), }",
            "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 1), }",
        ] {
            let a = parse(&raw_file(header, &data), "t").unwrap();
            assert_eq!(a.data, NpyData::F32(vec![1.0, 2.0]), "{header}");
        }
    }

    #[test]
    fn malformed_files_are_errors() {
        let good = encode_f32(&[2], &[1.0, 2.0]);
        let f4 = [1.0f32, 2.0].map(f32::to_le_bytes).concat();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "truncated"),
            (b"\x93NUM".to_vec(), "truncated"),
            (b"PK\x03\x04 a zip file".to_vec(), "not a .npy file"),
            (good[..7].to_vec(), "truncated"),
            (good[..9].to_vec(), "truncated"),
            (
                good[..40].to_vec(),
                "truncated .npy file: the header needs 128 bytes",
            ),
            (
                good[..good.len() - 3].to_vec(),
                "needs 8 bytes of data, the file has 5",
            ),
            (
                [&good[..], &[0]].concat(),
                "needs 8 bytes of data, the file has 9",
            ),
            (
                [&good[..6], &[4, 0], &good[8..]].concat(),
                "version 4.0 is not supported",
            ),
            (
                [&good[..6], &[1, 1], &good[8..]].concat(),
                "version 1.1 is not supported",
            ),
            (
                raw_file(
                    "{'descr': '>f4', 'fortran_order': False, 'shape': (2,)}",
                    &f4,
                ),
                "big-endian",
            ),
            (
                raw_file(
                    "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2)}",
                    &[0; 16],
                ),
                "fortran_order is True",
            ),
            (
                raw_file(
                    "{'descr': '<c8', 'fortran_order': False, 'shape': (1,)}",
                    &f4,
                ),
                "unsupported dtype '<c8'",
            ),
            (
                raw_file(
                    "{'descr': '|b1', 'fortran_order': False, 'shape': (2,)}",
                    &[0, 1],
                ),
                "unsupported dtype '|b1'",
            ),
            (
                raw_file(
                    "{'descr': 'f4', 'fortran_order': False, 'shape': (2,)}",
                    &f4,
                ),
                "no explicit byte order",
            ),
            (
                raw_file(
                    "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}",
                    &f4,
                ),
                "structured",
            ),
            (
                raw_file(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296)}",
                    &f4,
                ),
                "too large",
            ),
            (
                raw_file(
                    "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,)}",
                    &f4,
                ),
                "needs 8000000000000 bytes of data, the file has 8",
            ),
            (
                raw_file(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999999999999999999999,)}",
                    &f4,
                ),
                "too large",
            ),
            (
                raw_file(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}",
                    &f4,
                ),
                "out of range",
            ),
            (
                raw_file("{'descr': '<f4', 'fortran_order': False}", &f4),
                "no 'shape'",
            ),
            (
                raw_file(
                    "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
                    &f4,
                ),
                "appears twice",
            ),
            (
                raw_file(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}",
                    &f4,
                ),
                "unknown key 'x'",
            ),
            (
                raw_file("{'descr': '<f4', 'fortran_order': 0, 'shape': (2,)}", &f4),
                "not True or False",
            ),
            (
                raw_file(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (2.0,)}",
                    &f4,
                ),
                "bad .npy header",
            ),
            (
                raw_file(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} x",
                    &f4,
                ),
                "the end of the header",
            ),
            (
                raw_file(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)",
                    &f4,
                ),
                "expected",
            ),
            (raw_file("{'descr: '<f4'}", &f4), "expected"),
            (raw_file("(2,)", &f4), "not a dict"),
            (raw_file(&"(".repeat(1000), &f4), "nests deeper"),
            (raw_file("{'descr': '<f4\\", &f4), "unterminated"),
            (raw_file("{'descr': nan}", &f4), "unexpected name 'nan'"),
        ];
        for (bytes, expected) in cases {
            let message = parse_err(&bytes);
            assert!(message.starts_with("t.npy: "), "{message}");
            assert!(
                message.contains(expected),
                "expected {expected:?} in {message:?}"
            );
        }
        // Not text.
        let mut bytes = raw_file(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
            &f4,
        );
        bytes[12] = 0xff;
        assert!(parse_err(&bytes).contains("not text"));
        // A header length beyond the limit (version 2.0).
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[2, 0]);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_err(&bytes).contains("more than"));
    }

    /// A valid file of a random dtype and small shape.
    fn valid_file() -> impl Strategy<Value = Vec<u8>> {
        (prop::collection::vec(0usize..4, 0..4), 0usize..4).prop_map(|(shape, kind)| {
            let n: usize = shape.iter().product();
            match kind {
                0 => encode_u8(&shape, &vec![7; n]),
                1 => encode_f32(&shape, &vec![0.5; n]),
                2 => encode_f64(&shape, &vec![-1.0; n]),
                _ => encode_i64(&shape, &vec![-3; n]),
            }
        })
    }

    /// Bytes that matter to the header parser.
    const HEADER_BYTES: &[u8] = b"{}()[],:'\"\\ \n0123456789-+LTrueFalseNone<>|=fiu248descrshape";

    proptest! {
        #![proptest_config(ProptestConfig { cases: 7000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&bytes, "fuzz");
            let mut with_magic = b"\x93NUMPY\x01\x00".to_vec();
            with_magic.extend_from_slice(&bytes);
            let _ = parse(&with_magic, "fuzz");
        }

        #[test]
        fn mutated_files_never_panic(
            file in valid_file(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..6),
        ) {
            let mut bytes = file;
            for (at, byte, op) in edits {
                if bytes.is_empty() {
                    break;
                }
                let i = at.index(bytes.len());
                match op {
                    0 => bytes[i] = byte,
                    1 => bytes.truncate(i),
                    2 => bytes.insert(i, byte),
                    _ => { bytes.remove(i); }
                }
            }
            let _ = parse(&bytes, "fuzz");
        }

        #[test]
        fn mutated_headers_never_panic(
            file in valid_file(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<bool>()), 1..8),
        ) {
            let mut bytes = file;
            let header_end = 10 + usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
            for (at, with, insert) in edits {
                let i = 10 + at.index(header_end - 10);
                let b = HEADER_BYTES[with.index(HEADER_BYTES.len())];
                if insert { bytes.insert(i, b) } else { bytes[i] = b }
            }
            let _ = parse(&bytes, "fuzz");
        }
    }
}

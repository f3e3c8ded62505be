//! A layer's attributes as they travel in a job manifest: [`Attrs`], a JSON object read
//! back with checked getters, and [`Attributes`], how a layer kind writes and reads its
//! own (a kind without any says [`NoAttributes`]).

use std::fmt;

use serde_json::{Map, Value as Json, json};

use crate::error::{NnError, Result};

/// A layer's attributes as they travel in a job manifest: a JSON object, read back with
/// checked getters (a peer's manifest is untrusted input).
#[derive(Clone, Debug, Default)]
pub struct Attrs {
    map: Map<String, Json>,
    what: String,
}

impl Attrs {
    /// Attributes from a JSON object; `what` names the node in errors.
    pub fn from_json(map: Map<String, Json>, what: impl Into<String>) -> Self {
        Self {
            map,
            what: what.into(),
        }
    }

    /// The JSON object.
    pub fn into_json(self) -> Map<String, Json> {
        self.map
    }

    /// An error about these attributes, naming the node.
    pub(crate) fn err(&self, message: impl fmt::Display) -> NnError {
        NnError::InvalidArgument(format!("{}: {message}", self.what))
    }

    /// Whether `key` is present.
    pub fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// Sets an attribute.
    pub fn set(&mut self, key: &str, value: impl Into<Json>) {
        self.map.insert(key.to_owned(), value.into());
    }

    /// Sets a pair of sizes.
    pub fn set_pair(&mut self, key: &str, value: [usize; 2]) {
        self.map.insert(key.to_owned(), json!(value));
    }

    /// A size (below 2^31).
    pub fn dim(&self, key: &str) -> Result<usize> {
        match self.map.get(key).and_then(Json::as_u64) {
            Some(v) if v < 1 << 31 => Ok(v as usize),
            _ => Err(self.err(format!("`{key}` must be an integer in [0, 2^31)"))),
        }
    }

    /// A size, or `default` when absent.
    pub fn dim_or(&self, key: &str, default: usize) -> Result<usize> {
        if self.map.contains_key(key) {
            self.dim(key)
        } else {
            Ok(default)
        }
    }

    /// A list of sizes (at most 16).
    pub fn dims(&self, key: &str) -> Result<Vec<usize>> {
        let list = self
            .map
            .get(key)
            .and_then(Json::as_array)
            .ok_or_else(|| self.err(format!("`{key}` must be a list of sizes")))?;
        if list.len() > 16 {
            return Err(self.err(format!("`{key}` has more than 16 entries")));
        }
        list.iter()
            .map(|v| match v.as_u64() {
                Some(v) if v < 1 << 31 => Ok(v as usize),
                _ => Err(self.err(format!("`{key}` must hold integers in [0, 2^31)"))),
            })
            .collect()
    }

    /// A list of signed integers (at most 16).
    pub fn ints(&self, key: &str) -> Result<Vec<i64>> {
        let list = self
            .map
            .get(key)
            .and_then(Json::as_array)
            .filter(|l| l.len() <= 16)
            .ok_or_else(|| self.err(format!("`{key}` must be a list of at most 16 integers")))?;
        list.iter()
            .map(|v| {
                v.as_i64()
                    .ok_or_else(|| self.err(format!("`{key}` must hold integers")))
            })
            .collect()
    }

    /// A list of sizes, or `default` when absent.
    pub fn dims_or(&self, key: &str, default: &[usize]) -> Result<Vec<usize>> {
        if self.map.contains_key(key) {
            self.dims(key)
        } else {
            Ok(default.to_vec())
        }
    }

    /// A pair of sizes.
    pub fn pair(&self, key: &str) -> Result<[usize; 2]> {
        let v = self.dims(key)?;
        <[usize; 2]>::try_from(v).map_err(|_| self.err(format!("`{key}` must be two sizes")))
    }

    /// A pair of sizes, or `default` when absent.
    pub fn pair_or(&self, key: &str, default: [usize; 2]) -> Result<[usize; 2]> {
        if self.map.contains_key(key) {
            self.pair(key)
        } else {
            Ok(default)
        }
    }

    /// A pair of sizes, each at least 1.
    pub fn positive_pair(&self, key: &str) -> Result<[usize; 2]> {
        let v = self.pair(key)?;
        if v.contains(&0) {
            return Err(self.err(format!("`{key}` must be at least 1")));
        }
        Ok(v)
    }

    /// A finite number.
    pub fn number(&self, key: &str) -> Result<f64> {
        match self.map.get(key).and_then(Json::as_f64) {
            Some(v) if v.is_finite() => Ok(v),
            _ => Err(self.err(format!("`{key}` must be a finite number"))),
        }
    }

    /// A signed integer.
    pub fn int(&self, key: &str) -> Result<i64> {
        self.map
            .get(key)
            .and_then(Json::as_i64)
            .ok_or_else(|| self.err(format!("`{key}` must be an integer")))
    }

    /// A boolean.
    pub fn boolean(&self, key: &str) -> Result<bool> {
        self.map
            .get(key)
            .and_then(Json::as_bool)
            .ok_or_else(|| self.err(format!("`{key}` must be true or false")))
    }

    /// A boolean, or `default` when absent.
    pub fn boolean_or(&self, key: &str, default: bool) -> Result<bool> {
        if self.map.contains_key(key) {
            self.boolean(key)
        } else {
            Ok(default)
        }
    }
}

/// How a layer kind's attributes travel in a job manifest (see [`Attrs`]).
pub trait Attributes: Sized {
    /// Writes the attributes into the manifest's node object.
    fn write_attrs(&self, attrs: &mut Attrs);

    /// Reads the attributes back (checked: they may come from a peer).
    fn read_attrs(attrs: &Attrs) -> Result<Self>;
}

/// A layer kind without attributes: its manifest entry is its kind alone, and reading it
/// back gives [`Default::default`].
pub trait NoAttributes: Default {}

impl<L: NoAttributes> Attributes for L {
    fn write_attrs(&self, _: &mut Attrs) {}

    fn read_attrs(_: &Attrs) -> Result<Self> {
        Ok(L::default())
    }
}

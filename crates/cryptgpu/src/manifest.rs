//! The job manifest. Before any share moves, the three parties agree on what they are
//! about to compute: the protocol version, the job, who owns what, the public architecture as
//! the model owner describes it (layers and shapes, no weights), the input shape and count
//! as the data owner describes them, the batch size, the fixed-point format and the job's
//! options. Each party proposes what it knows or was told; the proposals are merged (an
//! option set by two parties must agree, one set by nobody takes its default) and every
//! party checks the result; a disagreement is an error that names the field.
//!
//! Two rounds: each party sends its proposal to both others, merges the three, then sends
//! the merged manifest to both others and compares, so a party whose merge differs (another
//! version of this program) is caught before any secret moves.

use anyhow::{Context, Result, anyhow, bail};

use cryptgpu_nn::data::Normalization;
use cryptgpu_nn::layers::Attrs;
use cryptgpu_nn::model::{Model, Node, Op};
use cryptgpu_ring::FixedPoint;
use cryptgpu_share::{KeySource, Truncation};
use cryptgpu_transport::{PartyId, Peer, Transport};
use serde_json::{Map, Value, json};

use crate::failure::Stage;
use crate::roles::Roles;

/// The version of the job protocol (manifest, then the jobs' message sequence); parties
/// must run the same one.
pub const PROTOCOL_VERSION: u64 = 4;

/// The fractional bits f a job accepts.
///
/// - At least 8: a resolution of 2^-8 is what the iterative approximations (exp,
///   reciprocal, inverse square root, softmax), normalised inputs and SGD steps need; below
///   it their error swamps the values.
/// - At most 28: exact truncation is correct for products below 2^(62 − 2f) in real terms
///   (64 at f = 28) and comparisons for values below 2^(63 − 2f) (128 at f = 28); beyond,
///   a network's activations and their products overflow, and the result is silently
///   wrong (f = 60 printed wrong classes). The exact truncation's messages also travel two
///   to a word only for f ≤ 32, and it needs f ≥ 1.
pub const FRAC_BITS: std::ops::RangeInclusive<u64> = 8..=28;

/// Checks a number of fractional bits against [`FRAC_BITS`], with the reason on refusal.
pub fn check_frac_bits(f: u64) -> Result<FixedPoint> {
    if !FRAC_BITS.contains(&f) {
        let (lo, hi) = (FRAC_BITS.start(), FRAC_BITS.end());
        let why = if f < *lo {
            format!(
                "below {lo} the resolution 2^-f is too coarse for the approximations and SGD                  steps"
            )
        } else {
            format!(
                "above {hi} products overflow beyond 2^(62 − 2f) = {} in real terms and                  comparisons beyond 2^(63 − 2f) = {}, so results would be silently wrong",
                2f64.powi(62 - 2 * f.min(40) as i32),
                2f64.powi(63 - 2 * f.min(40) as i32)
            )
        };
        bail!("`frac_bits` is {f}: it must be from {lo} to {hi} ({why})");
    }
    FixedPoint::new(f as u32).map_err(|e| anyhow!("`frac_bits` is {f}: {e}"))
}

/// The largest proposal or manifest a party accepts, in bytes.
const MAX_MANIFEST_BYTES: usize = 16 << 20;
/// The most nodes an architecture may have.
const MAX_NODES: usize = 100_000;
/// The most inputs one node may take (`Concat`).
const MAX_NODE_INPUTS: usize = 64;
/// The largest size, channel count, feature count, kernel, stride or padding.
const MAX_DIM: u64 = 1 << 20;

/// The largest rank of one example's shape in a manifest.
const MAX_RANK: usize = 8;
/// The most parameters an architecture may have.
const MAX_PARAMS: u64 = 1 << 28;
/// The most values one input example may have.
const MAX_INPUT: u64 = 1 << 28;
/// The most examples a job may have.
const MAX_COUNT: u64 = 1 << 40;

/// What the parties compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    /// Private inference.
    Infer,
    /// Private training.
    Train,
}

impl JobKind {
    /// The job's name on the command line: `infer` or `train`.
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Infer => "infer",
            JobKind::Train => "train",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "infer" => Some(JobKind::Infer),
            "train" => Some(JobKind::Train),
            _ => None,
        }
    }
}

/// What inference reveals to the data owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Reveal {
    /// The predicted class only (a private arg-max).
    Class,
    /// The logits.
    Logits,
    /// Softmax probabilities, computed privately.
    Probabilities,
}

impl Reveal {
    fn name(self) -> &'static str {
        match self {
            Reveal::Class => "class",
            Reveal::Logits => "logits",
            Reveal::Probabilities => "probabilities",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "class" => Some(Reveal::Class),
            "logits" => Some(Reveal::Logits),
            "probabilities" => Some(Reveal::Probabilities),
            _ => None,
        }
    }
}

/// The public options of a job as one party gives them: `None` where it gave none.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Options {
    /// Examples per private batch (inference) or per SGD step (training).
    pub batch: Option<u64>,
    /// Fractional bits of the fixed-point encoding.
    pub frac_bits: Option<u64>,
    /// What inference reveals.
    pub reveal: Option<Reveal>,
    /// Training epochs.
    pub epochs: Option<u64>,
    /// Learning rate.
    pub lr: Option<f64>,
    /// Momentum.
    pub momentum: Option<f64>,
    /// Weight decay.
    pub weight_decay: Option<f64>,
    /// Seed of the example order and the dropout masks (public).
    pub seed: Option<u64>,
    /// How fixed-point values are truncated.
    pub truncation: Option<Truncation>,
    /// ℓ of the comparison domain [−2^ℓ, 2^ℓ) (`Party::comparison_bits`).
    pub comparison_bits: Option<u64>,
}

/// What the data owner tells the others about its data.
#[derive(Clone, Debug, PartialEq)]
pub struct DataDescription {
    /// Examples to classify, or to train on.
    pub count: u64,
    /// One example's shape (`[C, H, W]` for images), when the data fixes it (not for
    /// images resized to the model's input).
    pub shape: Option<Vec<u64>>,
    /// Classes of the labels, when the data set says.
    pub classes: Option<u64>,
    /// Whether there are labels.
    pub labels: bool,
    /// Test examples (training only).
    pub test_count: Option<u64>,
}

/// One party's proposal.
#[derive(Clone, Debug)]
pub struct Proposal {
    /// The proposing party.
    pub party: PartyId,
    /// Its job.
    pub job: JobKind,
    /// Who owns what, in its configuration.
    pub roles: Roles,
    /// The parties' identities in its configuration (`None` in one process).
    pub identities: Option<[String; 3]>,
    /// Its key source.
    pub keys: KeySource,
    /// The options it was given.
    pub options: Options,
    /// The model owner's architecture.
    pub architecture: Option<Value>,
    /// The data owner's data.
    pub data: Option<DataDescription>,
}

/// What the three parties agreed on.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The job.
    pub job: JobKind,
    /// Who owns what.
    pub roles: Roles,
    /// The public architecture (every parameter zero), with the model's normalisation.
    pub structure: Model,
    /// One example's shape (`[C, H, W]` for images, `[L]` for token ids).
    pub input_shape: Vec<usize>,
    /// Examples to classify or train on.
    pub count: usize,
    /// Test examples (training).
    pub test_count: usize,
    /// Classes the model predicts.
    pub classes: usize,
    /// Examples per batch.
    pub batch: usize,
    /// The fixed-point format.
    pub fixed: FixedPoint,
    /// What inference reveals.
    pub reveal: Reveal,
    /// How fixed-point values are truncated.
    pub truncation: Truncation,
    /// ℓ: comparisons are exact for values and differences in [−2^ℓ, 2^ℓ).
    pub comparison_bits: u32,
    /// Training epochs.
    pub epochs: u64,
    /// Learning rate.
    pub lr: f64,
    /// Momentum.
    pub momentum: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Seed of the example order and dropout masks.
    pub seed: u64,
    /// The parties' key source.
    pub keys: KeySource,
    /// The manifest as canonical JSON, compared in the second round.
    canonical: Value,
}

// ---- the architecture -----------------------------------------------------------------

/// The public architecture of `model` as JSON: its name, input shape, nodes (op, shapes,
/// inputs), output and normalisation. No parameter values.
pub fn architecture_json(model: &Model) -> Value {
    let nodes: Vec<Value> = model
        .nodes()
        .iter()
        .map(|node| {
            let mut o = Map::new();
            o.insert("name".into(), json!(node.name));
            o.insert("op".into(), json!(node.op.kind()));
            o.insert("inputs".into(), json!(node.inputs));
            o.extend(node.op.to_attrs().into_json());
            Value::Object(o)
        })
        .collect();
    let mut arch = json!({
        "name": model.name(),
        "input_shape": model.input_shape(),
        "output": model.output(),
        "normalization": model.normalization.as_ref().map(|n| json!({"mean": n.mean, "std": n.std})),
        "nodes": nodes,
    });
    if !model.frozen().is_empty() {
        arch["frozen"] = json!(model.frozen());
    }
    arch
}

/// A field of a JSON object, or an error naming it.
fn field<'a>(o: &'a Map<String, Value>, key: &str, what: &str) -> Result<&'a Value> {
    o.get(key)
        .with_context(|| format!("{what}: `{key}` is missing"))
}

fn as_object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>> {
    v.as_object()
        .with_context(|| format!("{what} is not a JSON object"))
}

/// A whole number in `0..=max`.
fn uint(o: &Map<String, Value>, key: &str, max: u64, what: &str) -> Result<u64> {
    let v = field(o, key, what)?;
    let n = v
        .as_u64()
        .with_context(|| format!("{what}: `{key}` is {v}, not a whole number"))?;
    if n > max {
        bail!("{what}: `{key}` is {n}, above the limit of {max}");
    }
    Ok(n)
}

fn finite(o: &Map<String, Value>, key: &str, what: &str) -> Result<f64> {
    let v = field(o, key, what)?;
    v.as_f64()
        .filter(|x| x.is_finite())
        .with_context(|| format!("{what}: `{key}` is {v}, not a finite number"))
}

fn boolean(o: &Map<String, Value>, key: &str, what: &str) -> Result<bool> {
    let v = field(o, key, what)?;
    v.as_bool()
        .with_context(|| format!("{what}: `{key}` is {v}, not true or false"))
}

fn parse_op(o: &Map<String, Value>, what: &str) -> Result<Op> {
    let kind = field(o, "op", what)?
        .as_str()
        .with_context(|| format!("{what}: `op` is not a string"))?;
    Op::from_attrs(kind, &Attrs::from_json(o.clone(), what)).map_err(|e| anyhow!("{e}"))
}

/// The model an architecture describes, with every parameter zero; checked (bounded sizes, a
/// valid graph, shapes that fit) so that any bytes from a peer give a model or an error.
pub fn model_from_architecture(arch: &Value) -> Result<Model> {
    let what = "the architecture";
    let o = as_object(arch, what)?;
    let name = field(o, "name", what)?
        .as_str()
        .filter(|s| s.len() <= 256)
        .context("the architecture's `name` is not a string of at most 256 bytes")?;
    let shape_value = field(o, "input_shape", what)?;
    let input_shape: Vec<usize> = shape_value
        .as_array()
        .filter(|a| (1..=MAX_RANK).contains(&a.len()))
        .and_then(|a| {
            a.iter()
                .map(|x| {
                    x.as_u64()
                        .filter(|&n| (1..=MAX_DIM).contains(&n))
                        .map(|n| n as usize)
                })
                .collect::<Option<Vec<_>>>()
        })
        .with_context(|| {
            format!(
                "the architecture's `input_shape` is {shape_value}, not a list of 1 to \
                 {MAX_RANK} positive sizes"
            )
        })?;
    let input_values = input_shape.iter().map(|&d| d as u64).product::<u64>();
    if input_values > MAX_INPUT {
        bail!("the architecture's input of {input_shape:?} has more than {MAX_INPUT} values");
    }
    let output = uint(o, "output", MAX_NODES as u64, what)? as usize;
    let nodes_value = field(o, "nodes", what)?
        .as_array()
        .context("the architecture's `nodes` is not a list")?;
    if nodes_value.len() > MAX_NODES {
        bail!("the architecture has more than {MAX_NODES} nodes");
    }
    let mut nodes = Vec::with_capacity(nodes_value.len());
    let mut params: u64 = 0;
    for (i, node) in nodes_value.iter().enumerate() {
        let node_what = format!("node {i} of the architecture");
        let n = as_object(node, &node_what)?;
        let node_name = field(n, "name", &node_what)?
            .as_str()
            .filter(|s| s.len() <= 256)
            .with_context(|| format!("{node_what}: `name` is not a string of at most 256 bytes"))?;
        let node_what = format!("node {i} ({node_name:?}) of the architecture");
        let op = parse_op(n, &node_what)?;
        let inputs_value = field(n, "inputs", &node_what)?;
        let inputs: Vec<usize> = inputs_value
            .as_array()
            .filter(|a| a.len() <= MAX_NODE_INPUTS)
            .and_then(|a| {
                a.iter()
                    .map(|x| x.as_u64().filter(|&v| v < i as u64).map(|v| v as usize))
                    .collect::<Option<Vec<_>>>()
            })
            .with_context(|| {
                format!(
                    "{node_what}: `inputs` is {inputs_value}, not up to {MAX_NODE_INPUTS} earlier \
                     nodes"
                )
            })?;
        for decl in op.params() {
            let count = decl
                .shape
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
                .unwrap_or(u64::MAX);
            params = params.saturating_add(count);
        }
        if params > MAX_PARAMS {
            bail!("the architecture has more than {MAX_PARAMS} parameters");
        }
        nodes.push(Node {
            name: node_name.to_string(),
            op,
            inputs,
        });
    }
    let mut model = Model::new(name, &input_shape, nodes, output)
        .map_err(|e| anyhow!("the architecture is not a valid model: {e}"))?;
    let shapes = model
        .shapes(1)
        .map_err(|e| anyhow!("the architecture is not a valid model: {e}"))?;
    if let Some((id, shape)) = shapes.iter().enumerate().find(|(_, s)| {
        s.iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
            .is_none_or(|n| n > MAX_INPUT)
    }) {
        bail!(
            "node {id} of the architecture has an output of {shape:?}, more than {MAX_INPUT} \
             values per example"
        );
    }
    if let Some(frozen) = o.get("frozen") {
        let names = frozen
            .as_array()
            .filter(|a| a.len() <= MAX_PARAMS as usize)
            .and_then(|a| {
                a.iter()
                    .map(|n| n.as_str().filter(|n| n.len() <= 1024).map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
            })
            .context("the architecture's `frozen` is not a list of parameter names")?;
        model
            .freeze(names)
            .map_err(|e| anyhow!("the architecture's `frozen`: {e}"))?;
    }
    model.normalization = match field(o, "normalization", what)? {
        Value::Null => None,
        v => {
            let n = as_object(v, "the architecture's `normalization`")?;
            let list = |key: &str| -> Result<Vec<f64>> {
                let v = field(n, key, "the architecture's `normalization`")?;
                v.as_array()
                    .filter(|a| a.len() == 1 || a.len() == input_shape[0])
                    .and_then(|a| {
                        a.iter()
                            .map(|x| x.as_f64().filter(|x| x.is_finite()))
                            .collect::<Option<Vec<_>>>()
                    })
                    .with_context(|| {
                        format!(
                            "the architecture's normalisation `{key}` is {v}, not one finite \
                             number or one per channel"
                        )
                    })
            };
            let (mean, std) = (list("mean")?, list("std")?);
            if std.iter().any(|&s| s <= 0.0) {
                bail!("the architecture's normalisation has a `std` that is not positive");
            }
            Some(Normalization { mean, std })
        }
    };
    Ok(model)
}

// ---- proposals --------------------------------------------------------------------------

fn key_source_json(keys: KeySource) -> Value {
    match keys {
        KeySource::Os => json!("os"),
        KeySource::InsecureSeeded(seed) => json!(format!("insecure-test-keys:{seed}")),
    }
}

fn parse_key_source(v: &Value) -> Option<KeySource> {
    let s = v.as_str()?;
    if s == "os" {
        return Some(KeySource::Os);
    }
    let seed = s.strip_prefix("insecure-test-keys:")?.parse().ok()?;
    Some(KeySource::InsecureSeeded(seed))
}

fn options_json(o: &Options) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.into(), v);
        }
    };
    put("batch", o.batch.map(|v| json!(v)));
    put("frac_bits", o.frac_bits.map(|v| json!(v)));
    put("reveal", o.reveal.map(|v| json!(v.name())));
    put("epochs", o.epochs.map(|v| json!(v)));
    put("lr", o.lr.map(|v| json!(v)));
    put("momentum", o.momentum.map(|v| json!(v)));
    put("weight_decay", o.weight_decay.map(|v| json!(v)));
    put("seed", o.seed.map(|v| json!(v)));
    put("truncation", o.truncation.map(|v| json!(v.name())));
    put("comparison_bits", o.comparison_bits.map(|v| json!(v)));
    Value::Object(m)
}

fn parse_options(v: &Value, who: &str) -> Result<Options> {
    let what = format!("{who}'s options");
    let o = as_object(v, &what)?;
    for key in o.keys() {
        if ![
            "batch",
            "frac_bits",
            "reveal",
            "epochs",
            "lr",
            "momentum",
            "weight_decay",
            "seed",
            "truncation",
            "comparison_bits",
        ]
        .contains(&key.as_str())
        {
            bail!("{what}: unknown option `{key}`");
        }
    }
    let opt_u = |k: &str| -> Result<Option<u64>> {
        o.get(k).map(|_| uint(o, k, u64::MAX, &what)).transpose()
    };
    let opt_f =
        |k: &str| -> Result<Option<f64>> { o.get(k).map(|_| finite(o, k, &what)).transpose() };
    Ok(Options {
        batch: opt_u("batch")?,
        frac_bits: opt_u("frac_bits")?,
        reveal: o
            .get("reveal")
            .map(|v| {
                v.as_str()
                    .and_then(Reveal::parse)
                    .with_context(|| format!("{what}: `reveal` is {v}"))
            })
            .transpose()?,
        epochs: opt_u("epochs")?,
        lr: opt_f("lr")?,
        momentum: opt_f("momentum")?,
        weight_decay: opt_f("weight_decay")?,
        seed: opt_u("seed")?,
        truncation: o
            .get("truncation")
            .map(|v| {
                v.as_str()
                    .and_then(|s| s.parse::<Truncation>().ok())
                    .with_context(|| format!("{what}: `truncation` is {v}"))
            })
            .transpose()?,
        comparison_bits: opt_u("comparison_bits")?,
    })
}

impl Proposal {
    /// The proposal as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "format": "cryptgpu job proposal",
            "protocol": PROTOCOL_VERSION,
            "software": env!("CARGO_PKG_VERSION"),
            "party": self.party.index(),
            "job": self.job.name(),
            "roles": {"model_owner": self.roles.model_owner.index(), "data_owner": self.roles.data_owner.index()},
            "identities": self.identities,
            "keys": key_source_json(self.keys),
            "options": options_json(&self.options),
            "architecture": self.architecture,
            "data": self.data.as_ref().map(|d| json!({
                "count": d.count,
                "shape": d.shape,
                "classes": d.classes,
                "labels": d.labels,
                "test_count": d.test_count,
            })),
        })
    }

    /// A proposal received from `from`: any bytes give a proposal or an error.
    pub fn parse(bytes: &[u8], from: PartyId) -> Result<Proposal> {
        let who = from.to_string();
        if bytes.len() > MAX_MANIFEST_BYTES {
            bail!(
                "{who}'s job description has {} bytes, more than {MAX_MANIFEST_BYTES}",
                bytes.len()
            );
        }
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| anyhow!("{who}'s job description is not valid JSON: {e}"))?;
        let what = format!("{who}'s job description");
        let o = as_object(&v, &what)?;
        if o.get("format").and_then(Value::as_str) != Some("cryptgpu job proposal") {
            bail!("{what} is not a cryptgpu job proposal: is {who} running cryptgpu?");
        }
        let protocol = uint(o, "protocol", u64::MAX, &what)?;
        let software = o
            .get("software")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        if protocol != PROTOCOL_VERSION {
            bail!(
                "`protocol`: {who} runs job protocol version {protocol} (cryptgpu {software}), \
                 this party runs version {PROTOCOL_VERSION} (cryptgpu {}): run the same version",
                env!("CARGO_PKG_VERSION")
            );
        }
        let party = uint(o, "party", 2, &what)?;
        if party as usize != from.index() {
            bail!("{what} says it comes from P{party}: the parties' configurations disagree");
        }
        let job_value = field(o, "job", &what)?;
        let job = job_value
            .as_str()
            .and_then(JobKind::parse)
            .with_context(|| format!("{what}: `job` is {job_value}, not infer or train"))?;
        let roles_value = as_object(field(o, "roles", &what)?, &format!("{what}: `roles`"))?;
        let role = |key: &str| -> Result<PartyId> {
            Ok(PartyId::new(uint(roles_value, key, 2, &what)? as usize)?)
        };
        let roles = Roles {
            model_owner: role("model_owner")?,
            data_owner: role("data_owner")?,
        };
        let identities = match field(o, "identities", &what)? {
            Value::Null => None,
            v => {
                let list = v
                    .as_array()
                    .filter(|a| a.len() == 3)
                    .and_then(|a| {
                        a.iter()
                            .map(|x| x.as_str().map(String::from))
                            .collect::<Option<Vec<_>>>()
                    })
                    .with_context(|| format!("{what}: `identities` is not three names"))?;
                let mut it = list.into_iter();
                Some(std::array::from_fn(|_| it.next().unwrap_or_default()))
            }
        };
        let keys_value = field(o, "keys", &what)?;
        let keys = parse_key_source(keys_value)
            .with_context(|| format!("{what}: `keys` is {keys_value}"))?;
        let options = parse_options(field(o, "options", &what)?, &who)?;
        let architecture = match field(o, "architecture", &what)? {
            Value::Null => None,
            v => Some(v.clone()),
        };
        let data = match field(o, "data", &what)? {
            Value::Null => None,
            v => {
                let dw = format!("{what}: `data`");
                let d = as_object(v, &dw)?;
                let opt = |key: &str, max: u64| -> Result<Option<u64>> {
                    match d.get(key) {
                        None | Some(Value::Null) => Ok(None),
                        Some(_) => uint(d, key, max, &dw).map(Some),
                    }
                };
                let shape = match d.get("shape") {
                    None | Some(Value::Null) => None,
                    Some(s) => {
                        let a = s
                            .as_array()
                            .filter(|a| (1..=MAX_RANK).contains(&a.len()))
                            .and_then(|a| {
                                a.iter()
                                    .map(|d| d.as_u64().filter(|&d| d <= MAX_DIM))
                                    .collect::<Option<Vec<_>>>()
                            })
                            .with_context(|| {
                                format!("{dw}: `shape` is {s}, not 1 to {MAX_RANK} sizes")
                            })?;
                        Some(a)
                    }
                };
                Some(DataDescription {
                    count: uint(d, "count", MAX_COUNT, &dw)?,
                    shape,
                    classes: opt("classes", MAX_DIM)?,
                    labels: boolean(d, "labels", &dw)?,
                    test_count: opt("test_count", MAX_COUNT)?,
                })
            }
        };
        Ok(Proposal {
            party: from,
            job,
            roles,
            identities,
            keys,
            options,
            architecture,
            data,
        })
    }
}

// ---- merging ----------------------------------------------------------------------------

/// The value of an option: equal wherever it was given, else `default`.
fn merged<T: PartialEq + Copy + std::fmt::Display>(
    proposals: &[Proposal; 3],
    name: &str,
    get: impl Fn(&Options) -> Option<T>,
    default: T,
) -> Result<T> {
    let mut chosen: Option<(PartyId, T)> = None;
    for p in proposals {
        if let Some(v) = get(&p.options) {
            match chosen {
                Some((who, w)) if w != v => bail!(
                    "the parties disagree on `{name}`: {who} says {w}, {} says {v}",
                    p.party
                ),
                Some(_) => {}
                None => chosen = Some((p.party, v)),
            }
        }
    }
    Ok(chosen.map_or(default, |(_, v)| v))
}

/// A field that every party states and that must be equal.
fn same<T: PartialEq + std::fmt::Debug>(
    proposals: &[Proposal; 3],
    name: &str,
    get: impl Fn(&Proposal) -> T,
) -> Result<T> {
    let first = get(&proposals[0]);
    for p in &proposals[1..] {
        let v = get(p);
        if v != first {
            bail!(
                "the parties disagree on `{name}`: {} has {first:?}, {} has {v:?}",
                proposals[0].party,
                p.party
            );
        }
    }
    Ok(first)
}

impl std::fmt::Display for Reveal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Merges the three proposals (in party order) into the manifest, checking every field.
pub fn merge(proposals: &[Proposal; 3]) -> Result<Manifest> {
    let job = same(proposals, "job", |p| p.job.name())?;
    let job = JobKind::parse(job).context("job")?;
    let roles = same(proposals, "roles", |p| {
        (p.roles.model_owner.index(), p.roles.data_owner.index())
    })?;
    let roles = Roles {
        model_owner: PartyId::new(roles.0)?,
        data_owner: PartyId::new(roles.1)?,
    };
    if roles.model_owner == roles.data_owner {
        bail!("`roles`: the model owner and the data owner are the same party");
    }
    same(proposals, "identities", |p| p.identities.clone())?;
    let keys = same(proposals, "keys", |p| p.keys)?;
    for p in proposals {
        if p.architecture.is_some() && p.party != roles.model_owner {
            bail!(
                "`architecture`: {} describes a model, but the model owner is {}",
                p.party,
                roles.model_owner
            );
        }
        if p.data.is_some() && p.party != roles.data_owner {
            bail!(
                "`data`: {} describes data, but the data owner is {}",
                p.party,
                roles.data_owner
            );
        }
    }
    let arch = proposals[roles.model_owner.index()]
        .architecture
        .as_ref()
        .with_context(|| {
            format!(
                "`architecture`: the model owner {} sent none",
                roles.model_owner
            )
        })?;
    let structure = model_from_architecture(arch)
        .with_context(|| format!("`architecture` from {}", roles.model_owner))?;
    let data = proposals[roles.data_owner.index()]
        .data
        .as_ref()
        .with_context(|| format!("`data`: the data owner {} sent none", roles.data_owner))?;
    let input_shape = structure.input_shape().to_vec();
    if let Some(shape) = &data.shape
        && shape
            .iter()
            .map(|&d| d as usize)
            .ne(input_shape.iter().copied())
    {
        let hint = match input_shape[..] {
            [c, h, w] if shape[..] == [h as u64, w as u64, c as u64] => {
                " (the data owner's array looks [N, H, W, C]: it should pass --layout nhwc)"
            }
            _ => "",
        };
        bail!(
            "`input shape`: the data owner {}'s examples are {shape:?}, the model owner {}'s \
             model takes {input_shape:?}{hint}",
            roles.data_owner,
            roles.model_owner
        );
    }
    let classes = structure.num_classes();
    if let Some(c) = data.classes
        && c as usize > classes
    {
        bail!("`classes`: the data owner's labels have {c} classes, the model predicts {classes}");
    }
    if data.count == 0 {
        bail!("`count`: the data owner has no examples");
    }
    let batch_default = match job {
        JobKind::Infer => 64,
        JobKind::Train => 128,
    };
    let batch = merged(proposals, "batch", |o| o.batch, batch_default)?;
    if batch == 0 || batch > 1 << 20 {
        bail!("`batch` is {batch}: it must be from 1 to {}", 1 << 20);
    }
    let frac_bits = merged(proposals, "frac_bits", |o| o.frac_bits, 16)?;
    let fixed = check_frac_bits(frac_bits)?;
    let reveal = merged(proposals, "reveal", |o| o.reveal, Reveal::Class)?;
    let epochs = merged(proposals, "epochs", |o| o.epochs, 1)?;
    let lr = merged(proposals, "lr", |o| o.lr, 0.05)?;
    let momentum = merged(proposals, "momentum", |o| o.momentum, 0.9)?;
    let weight_decay = merged(proposals, "weight_decay", |o| o.weight_decay, 0.0)?;
    let seed = merged(proposals, "seed", |o| o.seed, 0)?;
    let truncation = merged(proposals, "truncation", |o| o.truncation, Truncation::Exact)?;
    let comparison_default = u64::from(cryptgpu_share::default_comparison_bits(fixed));
    let comparison_bits = merged(
        proposals,
        "comparison_bits",
        |o| o.comparison_bits,
        comparison_default,
    )?;
    let range = cryptgpu_share::COMPARISON_BITS;
    let comparison_bits = u32::try_from(comparison_bits)
        .ok()
        .filter(|l| range.contains(l))
        .with_context(|| {
            format!(
                "`comparison_bits` is {comparison_bits}: the comparison domain [−2^ℓ, 2^ℓ) \
                 takes ℓ from {} to {}",
                range.start(),
                range.end()
            )
        })?;
    let test_count = match job {
        JobKind::Infer => 0,
        JobKind::Train => {
            if reveal != Reveal::Class {
                bail!("`reveal` is an inference option, and the job is training");
            }
            if !data.labels {
                bail!("`labels`: training needs labelled examples, and the data owner has none");
            }
            if epochs == 0 {
                bail!("`epochs` must be at least 1");
            }
            let t = data
                .test_count
                .context("`test_count`: the data owner sent no test set size")?;
            if t == 0 {
                bail!("`test_count`: the data owner has no test examples");
            }
            t as usize
        }
    };
    let canonical = json!({
        "protocol": PROTOCOL_VERSION,
        "job": job.name(),
        "roles": [roles.model_owner.index(), roles.data_owner.index()],
        "identities": proposals[0].identities,
        "keys": key_source_json(keys),
        "architecture": architecture_json(&structure),
        "input_shape": input_shape,
        "count": data.count,
        "test_count": test_count,
        "classes": classes,
        "labels": data.labels,
        "batch": batch,
        "frac_bits": frac_bits,
        "reveal": reveal.name(),
        "epochs": epochs,
        "lr": lr,
        "momentum": momentum,
        "weight_decay": weight_decay,
        "seed": seed,
        "truncation": truncation.name(),
        "comparison_bits": comparison_bits,
    });
    Ok(Manifest {
        job,
        roles,
        structure,
        input_shape,
        count: data.count as usize,
        test_count,
        classes,
        batch: batch as usize,
        fixed,
        reveal,
        epochs,
        lr,
        momentum,
        weight_decay,
        seed,
        truncation,
        comparison_bits,
        keys,
        canonical,
    })
}

/// Where two canonical manifests first differ: the path of the field (`architecture.nodes[3]
/// .momentum`) and its value in each (`None` where it is missing).
fn first_difference(a: &Value, b: &Value) -> (String, Option<Value>, Option<Value>) {
    fn walk(path: String, a: &Value, b: &Value) -> Option<(String, Option<Value>, Option<Value>)> {
        if a == b {
            return None;
        }
        let join = |key: &str| {
            if path.is_empty() {
                key.to_string()
            } else {
                format!("{path}.{key}")
            }
        };
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for (key, v) in x {
                    match y.get(key) {
                        Some(w) => {
                            if let Some(found) = walk(join(key), v, w) {
                                return Some(found);
                            }
                        }
                        None => return Some((join(key), Some(v.clone()), None)),
                    }
                }
                y.iter()
                    .find(|(key, _)| !x.contains_key(*key))
                    .map(|(key, w)| (join(key), None, Some(w.clone())))
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
                .iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (v, w))| walk(format!("{path}[{i}]"), v, w)),
            _ => Some((path, Some(a.clone()), Some(b.clone()))),
        }
    }
    walk(String::new(), a, b)
        .map(|(path, x, y)| {
            let path = if path.is_empty() {
                "(the whole manifest)".to_string()
            } else {
                path
            };
            (path, x, y)
        })
        .unwrap_or_else(|| ("(the whole manifest)".into(), None, None))
}

/// A value of a manifest field for a message, at most 200 characters (the manifest is
/// public: the field's value is no secret).
fn shown(v: &Option<Value>) -> String {
    let text = v
        .as_ref()
        .map_or_else(|| "missing".to_string(), Value::to_string);
    if text.chars().count() > 200 {
        format!("{}…", text.chars().take(200).collect::<String>())
    } else {
        text
    }
}

/// Checks a merged manifest received from `from` against ours.
pub fn check_confirmation(mine: &Manifest, bytes: &[u8], from: PartyId) -> Result<()> {
    if bytes.is_empty() {
        bail!("{from} refused the proposals (its own error says why)");
    }
    if bytes.len() > MAX_MANIFEST_BYTES {
        bail!(
            "{from}'s manifest has {} bytes, more than {MAX_MANIFEST_BYTES}",
            bytes.len()
        );
    }
    let theirs: Value = serde_json::from_slice(bytes)
        .map_err(|e| anyhow!("{from}'s manifest is not valid JSON: {e}"))?;
    if theirs != mine.canonical {
        let (field, ours, other) = first_difference(&mine.canonical, &theirs);
        bail!(
            "{from} merged the job description differently: `{field}` is {} here and {} at \
             {from} (run the same cryptgpu version everywhere)",
            shown(&ours),
            shown(&other)
        );
    }
    Ok(())
}

/// The two rounds of agreement over `transport`: returns the manifest all three hold.
///
/// A party that cannot parse or merge the proposals still takes part in the second round,
/// sending an empty message (a refusal) instead of its merged manifest, and only then
/// fails with its own error. Every party merges before it sends its second message and no
/// party stops before it has received both, so each one that finds a disagreement (they all
/// do: they merge the same proposals) reports it in its own words, rather than only hearing
/// that a neighbour failed (a failure tells the neighbours its category, never its text).
pub fn agree<T: Transport>(transport: &mut T, mine: &Proposal) -> Result<Manifest> {
    let me = transport.party();
    let bytes = serde_json::to_vec(&mine.to_json())?;
    transport.send_vec(Peer::Next, bytes.clone())?;
    transport.send_vec(Peer::Prev, bytes)?;
    let from_next = transport.recv(Peer::Next)?;
    let from_prev = transport.recv(Peer::Prev)?;
    let merged = (|| {
        let next = Proposal::parse(&from_next, me.next())?;
        let prev = Proposal::parse(&from_prev, me.prev())?;
        let mut slots: [Option<Proposal>; 3] = [None, None, None];
        slots[me.index()] = Some(mine.clone());
        slots[me.next().index()] = Some(next);
        slots[me.prev().index()] = Some(prev);
        let [Some(a), Some(b), Some(c)] = slots else {
            bail!("the three proposals do not come from three parties");
        };
        merge(&[a, b, c])
    })()
    .context(Stage::MANIFEST);
    let canonical = match &merged {
        Ok(manifest) => serde_json::to_vec(&manifest.canonical)?,
        Err(_) => Vec::new(),
    };
    transport.send_vec(Peer::Next, canonical.clone())?;
    transport.send_vec(Peer::Prev, canonical)?;
    let from_next = transport.recv(Peer::Next);
    let from_prev = transport.recv(Peer::Prev);
    // Our own disagreement first, whatever the others did meanwhile.
    let manifest = merged?;
    check_confirmation(&manifest, &from_next?, me.next()).context(Stage::MANIFEST)?;
    check_confirmation(&manifest, &from_prev?, me.prev()).context(Stage::MANIFEST)?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptgpu_backend::{Conv2dParams, Pool2dParams};
    use cryptgpu_nn::layers::prelude::*;
    use cryptgpu_nn::model::{GraphBuilder, NodeId};
    use cryptgpu_nn::zoo;
    use proptest::prelude::*;

    /// A 3×3 convolution of the input to two channels and a BatchNorm after it: the start of
    /// the test models.
    fn conv_and_batchnorm(b: &mut GraphBuilder, eps: f64, momentum: f64) -> NodeId {
        let c = b.add(
            "conv",
            Op::Conv2d(Conv2d {
                in_channels: 1,
                out_channels: 2,
                kernel: [3, 3],
                params: Conv2dParams {
                    stride: [1, 1],
                    padding: [1, 1],
                    groups: 1,
                },
                bias: true,
                dilation: [1, 1],
            }),
            &[0],
        );
        b.add(
            "bn",
            Op::BatchNorm2d(BatchNorm2d {
                channels: 2,
                eps,
                momentum,
            }),
            &[c],
        )
    }

    /// A small model: conv, ReLU, max-pool, BatchNorm, dropout, flatten, linear, softmax.
    fn tiny() -> Model {
        let mut b = GraphBuilder::new();
        let bn = conv_and_batchnorm(&mut b, 1e-5, 0.1);
        let r = b.add("relu", Op::Relu(Relu), &[bn]);
        let add = b.add("add", Op::Add(Add::default()), &[r, bn]);
        let pool = b.add(
            "pool",
            Op::MaxPool2d(MaxPool2d::new(Pool2dParams {
                kernel: [2, 2],
                stride: [2, 2],
                padding: [0, 0],
            })),
            &[add],
        );
        let d = b.add("drop", Op::Dropout(Dropout { p: 0.25 }), &[pool]);
        let f = b.add("flat", Op::Flatten(Flatten), &[d]);
        let l = b.add(
            "fc",
            Op::Linear(Linear {
                in_features: 8,
                out_features: 3,
                bias: false,
            }),
            &[f],
        );
        let s = b.add("softmax", Op::Softmax(Softmax::default()), &[l]);
        let mut m = b.finish_zeroed("tiny", &[1, 4, 4], s).unwrap();
        m.normalization = Some(Normalization::mnist());
        m
    }

    fn proposals(model: &Model) -> [Proposal; 3] {
        let roles = Roles::DEFAULT;
        PartyId::ALL.map(|party| Proposal {
            party,
            job: JobKind::Infer,
            roles,
            identities: Some(["a".into(), "b".into(), "c".into()]),
            keys: KeySource::Os,
            options: Options::default(),
            architecture: (party == roles.model_owner).then(|| architecture_json(model)),
            data: (party == roles.data_owner).then_some(DataDescription {
                count: 10,
                shape: Some(vec![1, 4, 4]),
                classes: Some(3),
                labels: true,
                test_count: None,
            }),
        })
    }

    /// Sends each proposal through its JSON, as the peers would see it.
    fn through_json(p: &[Proposal; 3]) -> [Proposal; 3] {
        p.clone().map(|p| {
            let bytes = serde_json::to_vec(&p.to_json()).unwrap();
            Proposal::parse(&bytes, p.party).unwrap()
        })
    }

    /// The two rounds of [`agree`] without a transport: each party merges its own proposal
    /// as it is and the other two as they arrive in JSON, then checks the other two's merged
    /// manifests as they arrive.
    fn exchange(p: &[Proposal; 3]) -> Result<()> {
        let travelled = through_json(p);
        let mut merged = Vec::new();
        for me in 0..3 {
            let mut seen = travelled.clone();
            seen[me] = p[me].clone();
            merged.push(merge(&seen)?);
        }
        for (a, mine) in merged.iter().enumerate() {
            for (b, theirs) in merged.iter().enumerate() {
                if a != b {
                    let bytes = serde_json::to_vec(&theirs.canonical)?;
                    check_confirmation(mine, &bytes, PartyId::ALL[b])?;
                }
            }
        }
        Ok(())
    }

    /// A model whose every float attribute is given: BatchNorm's eps and momentum,
    /// LeakyReLU's slope, Clip's bounds, dropout's p, the normalisation constants.
    #[allow(
        clippy::too_many_arguments,
        reason = "one argument per float attribute"
    )]
    fn floaty(
        eps: f64,
        momentum: f64,
        alpha: f64,
        min: Option<f64>,
        max: Option<f64>,
        p: f64,
        mean: f64,
        std: f64,
    ) -> Model {
        let mut b = GraphBuilder::new();
        let bn = conv_and_batchnorm(&mut b, eps, momentum);
        let leaky = b.add("leaky", Op::LeakyRelu(LeakyRelu { alpha }), &[bn]);
        let clip = b.add("clip", Op::Clip(Clip { min, max }), &[leaky]);
        let d = b.add("drop", Op::Dropout(Dropout { p }), &[clip]);
        let f = b.add("flat", Op::Flatten(Flatten), &[d]);
        let l = b.add(
            "fc",
            Op::Linear(Linear {
                in_features: 32,
                out_features: 3,
                bias: false,
            }),
            &[f],
        );
        let mut m = b.finish_zeroed("floaty", &[1, 4, 4], l).unwrap();
        m.normalization = Some(Normalization {
            mean: vec![mean],
            std: vec![std],
        });
        m
    }

    /// The case that failed every run of a model with an unfolded BatchNorm: the importer
    /// stores `momentum = 1 − f64(0.9f32)`, which serde_json read back one ulp off before
    /// `float_roundtrip`, so the parties' architectures differed.
    #[test]
    fn an_unfolded_batchnorm_from_onnx_survives_the_exchange() {
        let momentum = 1.0 - f64::from(0.9f32);
        let model = floaty(
            1e-5,
            momentum,
            0.01,
            Some(-1.0),
            Some(6.0),
            0.5,
            0.1307,
            0.3081,
        );
        exchange(&proposals(&model)).unwrap();
    }

    #[test]
    fn a_differing_confirmation_names_the_nested_field_and_both_values() {
        let p = through_json(&proposals(&tiny()));
        let m = merge(&p).unwrap();
        let mut other = m.canonical.clone();
        other["architecture"]["nodes"][2]["momentum"] = json!(0.10000000000000002);
        let e = check_confirmation(&m, &serde_json::to_vec(&other).unwrap(), PartyId::P0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`architecture.nodes[2].momentum`")
                && e.contains("0.1 here")
                && e.contains("0.10000000000000002 at P0"),
            "{e}"
        );
        let mut other = m.canonical.clone();
        other.as_object_mut().unwrap().remove("seed");
        let e = check_confirmation(&m, &serde_json::to_vec(&other).unwrap(), PartyId::P2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`seed` is 0 here and missing at P2"), "{e}");
    }

    #[test]
    fn fractional_bits_outside_their_range_are_refused_with_the_reason() {
        for f in [0, 7, 29, 60] {
            let e = check_frac_bits(f).unwrap_err().to_string();
            assert!(e.contains("from 8 to 28"), "{e}");
        }
        assert!(
            check_frac_bits(60)
                .unwrap_err()
                .to_string()
                .contains("silently wrong")
        );
        assert!(
            check_frac_bits(0)
                .unwrap_err()
                .to_string()
                .contains("too coarse")
        );
        for f in [8, 16, 20, 28] {
            assert_eq!(check_frac_bits(f).unwrap().frac_bits(), f as u32);
        }
        let mut p = through_json(&proposals(&tiny()));
        p[2].options.frac_bits = Some(60);
        let e = format!("{:#}", merge(&p).unwrap_err());
        assert!(e.contains("`frac_bits` is 60"), "{e}");
    }

    #[test]
    fn every_zoo_architecture_round_trips() {
        for &name in zoo::MODELS {
            for pooling in [zoo::Pooling::Avg, zoo::Pooling::Max] {
                let model = zoo::architecture(name, pooling).unwrap();
                let back = model_from_architecture(&architecture_json(&model)).unwrap();
                assert_eq!(back.nodes(), model.nodes(), "{name}");
                assert_eq!(back.input_shape(), model.input_shape());
                assert_eq!(back.output(), model.output());
                assert_eq!(back.normalization, model.normalization);
                assert_eq!(architecture_json(&back), architecture_json(&model));
            }
        }
        let t = tiny();
        let back = model_from_architecture(&architecture_json(&t)).unwrap();
        assert_eq!(back.nodes(), t.nodes());
    }

    /// Imported ONNX models (every layer kind, and torchvision exports) travel in the
    /// manifest: the architecture round-trips, parameters and all.
    #[test]
    fn imported_architectures_round_trip() {
        let fixtures =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../cryptgpu-nn/tests/fixtures");
        for file in [
            "every_layer.onnx",
            "torch/squeezenet1_1_dynamo.onnx",
            "torch/mobilenet_v2_legacy.onnx",
            "torch/mnist_cnn_dynamo.onnx",
        ] {
            let model = cryptgpu_nn::onnx::import_file(&fixtures.join(file)).unwrap();
            let back = model_from_architecture(&architecture_json(&model)).unwrap();
            assert_eq!(back.nodes(), model.nodes(), "{file}");
            assert_eq!(back.param_specs(), model.param_specs(), "{file}");
            assert_eq!(
                architecture_json(&back),
                architecture_json(&model),
                "{file}"
            );
        }
    }

    #[test]
    fn the_merge_takes_defaults_and_the_options_given() {
        let mut p = proposals(&tiny());
        p[2].options.batch = Some(5);
        let m = merge(&through_json(&p)).unwrap();
        assert_eq!(m.batch, 5);
        assert_eq!(m.fixed.frac_bits(), 16);
        assert_eq!(m.truncation, Truncation::Exact);
        assert_eq!(m.comparison_bits, 47, "63 − f");
        assert_eq!(m.reveal, Reveal::Class);
        assert_eq!(m.count, 10);
        assert_eq!(m.input_shape, [1, 4, 4]);
        assert_eq!(m.classes, 3);
        assert_eq!(m.structure.nodes(), tiny().nodes());
    }

    #[test]
    fn mismatches_name_the_field() {
        let model = tiny();
        let check = |edit: &dyn Fn(&mut [Proposal; 3]), want: &str| {
            let mut p = proposals(&model);
            edit(&mut p);
            let e = format!("{:#}", merge(&through_json(&p)).unwrap_err());
            assert!(e.contains(want), "{want}: {e}");
        };
        check(
            &|p| {
                p[0].options.batch = Some(32);
                p[1].options.batch = Some(64);
            },
            "`batch`: P0 says 32, P1 says 64",
        );
        check(&|p| p[1].options.frac_bits = Some(99), "`frac_bits` is 99");
        check(
            &|p| {
                p[0].options.truncation = Some(Truncation::Exact);
                p[2].options.truncation = Some(Truncation::Probabilistic);
            },
            "`truncation`: P0 says exact, P2 says probabilistic",
        );
        check(
            &|p| {
                p[0].options.comparison_bits = Some(63);
                p[1].options.comparison_bits = Some(40);
            },
            "`comparison_bits`: P0 says 63, P1 says 40",
        );
        check(
            &|p| p[2].options.comparison_bits = Some(64),
            "`comparison_bits` is 64",
        );
        check(&|p| p[2].job = JobKind::Train, "`job`");
        check(&|p| p[2].keys = KeySource::InsecureSeeded(1), "`keys`");
        check(&|p| p[1].roles.model_owner = PartyId::P2, "`roles`");
        check(
            &|p| p[0].identities = Some(["x".into(), "b".into(), "c".into()]),
            "`identities`",
        );
        check(
            &|p| p[1].data.as_mut().unwrap().shape = Some(vec![3, 4, 4]),
            "`input shape`",
        );
        check(
            &|p| p[1].data.as_mut().unwrap().classes = Some(10),
            "`classes`",
        );
        check(&|p| p[1].data.as_mut().unwrap().count = 0, "`count`");
        check(
            &|p| p[2].architecture = p[0].architecture.clone(),
            "`architecture`",
        );
        check(&|p| p[0].architecture = None, "`architecture`");
        check(&|p| p[0].data = p[1].data.clone(), "`data`");
        check(
            &|p| {
                for q in p.iter_mut() {
                    q.job = JobKind::Train;
                }
                p[1].data.as_mut().unwrap().test_count = Some(4);
                p[1].data.as_mut().unwrap().labels = false;
            },
            "`labels`",
        );
        let bytes = serde_json::to_vec(
            &proposals(&model)[0]
                .to_json()
                .as_object()
                .cloned()
                .map(|mut o| {
                    o.insert("protocol".into(), json!(PROTOCOL_VERSION + 1));
                    Value::Object(o)
                })
                .unwrap(),
        )
        .unwrap();
        let e = format!("{:#}", Proposal::parse(&bytes, PartyId::P0).unwrap_err());
        assert!(e.contains("`protocol`") && e.contains("P0"), "{e}");
    }

    #[test]
    fn a_differing_merge_is_caught_by_the_confirmation() {
        let p = through_json(&proposals(&tiny()));
        let m = merge(&p).unwrap();
        let mut other = m.canonical.clone();
        other["batch"] = json!(7);
        let e = check_confirmation(&m, &serde_json::to_vec(&other).unwrap(), PartyId::P2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`batch`") && e.contains("P2"), "{e}");
        check_confirmation(&m, &serde_json::to_vec(&m.canonical).unwrap(), PartyId::P1).unwrap();
        assert!(check_confirmation(&m, b"\xff{", PartyId::P1).is_err());
        let e = check_confirmation(&m, b"", PartyId::P1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("P1 refused"), "{e}");
    }

    #[test]
    fn absurd_architectures_are_refused() {
        let base = architecture_json(&tiny());
        let edit = |f: &dyn Fn(&mut Value)| {
            let mut v = base.clone();
            f(&mut v);
            model_from_architecture(&v)
        };
        assert!(edit(&|v| v["nodes"][1]["out_channels"] = json!(1u64 << 40)).is_err());
        assert!(edit(&|v| v["nodes"][1]["stride"] = json!([0, 1])).is_err());
        assert!(edit(&|v| v["nodes"][1]["groups"] = json!(0)).is_err());
        assert!(edit(&|v| v["nodes"][1]["padding"] = json!([1048576, 1048576])).is_err());
        assert!(edit(&|v| v["input_shape"] = json!([1, 1048576, 1048576])).is_err());
        assert!(edit(&|v| v["nodes"][1]["inputs"] = json!([5])).is_err());
        assert!(edit(&|v| v["nodes"][1]["op"] = json!("Teleport")).is_err());
        assert!(edit(&|v| v["nodes"][8]["in_features"] = json!(1048576)).is_err());
        assert!(edit(&|v| v["output"] = json!(99)).is_err());
        assert!(edit(&|v| v["normalization"]["std"] = json!([0.0])).is_err());
        // Parameters beyond the limit, each layer within it.
        let mut big = base.clone();
        let nodes = big["nodes"].as_array_mut().unwrap();
        let fc = nodes[8].clone();
        let mut wide = fc.clone();
        wide["name"] = json!("wide");
        wide["in_features"] = json!(1 << 20);
        wide["out_features"] = json!(1 << 20);
        nodes.insert(9, wide);
        let e = model_from_architecture(&big).unwrap_err().to_string();
        assert!(e.contains("parameters"), "{e}");
    }

    /// A JSON value from a small grammar of the architecture's vocabulary.
    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (0u64..8).prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<i64>().prop_map(|n| json!(n)),
            (-1e9f64..1e9).prop_map(|x| json!(x)),
            prop_oneof![
                Just("Conv2d"),
                Just("Linear"),
                Just("ReLU"),
                Just("MaxPool2d"),
                Just("AvgPool2d"),
                Just("Flatten"),
                Just("Add"),
                Just("BatchNorm2d"),
                Just("Dropout"),
                Just("Softmax"),
                Just("Input"),
                Just("GlobalAvgPool"),
                Just("GlobalMaxPool"),
                Just("Clip"),
                Just("LeakyReLU"),
                Just("Sigmoid"),
                Just("Tanh"),
                Just("Reshape"),
                Just("Transpose"),
                Just("Concat"),
                Just("Pad"),
                Just("AddConst"),
                Just("Mul"),
                Just("MulConst"),
                Just("LogSoftmax"),
                Just("MatMul"),
                Just("Slice"),
            ]
            .prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("op"),
                        Just("inputs"),
                        Just("kernel"),
                        Just("stride"),
                        Just("padding"),
                        Just("groups"),
                        Just("in_channels"),
                        Just("out_channels"),
                        Just("in_features"),
                        Just("out_features"),
                        Just("bias"),
                        Just("channels"),
                        Just("eps"),
                        Just("momentum"),
                        Just("p"),
                        Just("name"),
                        Just("dilation"),
                        Just("min"),
                        Just("max"),
                        Just("alpha"),
                        Just("shape"),
                        Just("perm"),
                        Just("axis"),
                        Just("pads"),
                        Just("ceil_mode"),
                        Just("count_include_pad"),
                        Just("subtract"),
                        Just("negate_input"),
                        Just("start"),
                        Just("end"),
                    ]
                    .prop_map(String::from),
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 100_000, ..ProptestConfig::default() })]

        /// Arbitrary bytes from a peer: a proposal or an error, never a panic; the same for
        /// the confirmation round.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Proposal::parse(&bytes, PartyId::P1);
            let _ = serde_json::from_slice::<Value>(&bytes);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

        /// A real proposal with a slice of its JSON replaced, merged with the two others:
        /// a manifest or an error, never a panic.
        #[test]
        fn mutated_proposals_never_panic(
            who in 0usize..3,
            at in 0usize..4000,
            cut in 0usize..12,
            junk in "[0-9a-z\"{}\\[\\],:.-]{0,12}",
        ) {
            let p = proposals(&tiny());
            let text = serde_json::to_string(&p[who].to_json()).unwrap();
            let at = at.min(text.len());
            let end = (at + cut).min(text.len());
            let mutated = format!("{}{}{}", &text[..at], junk, &text[end..]);
            if let Ok(parsed) = Proposal::parse(mutated.as_bytes(), PartyId::ALL[who]) {
                let mut all = through_json(&p);
                all[who] = parsed;
                let _ = merge(&all);
            }
        }

        /// Architectures with random nodes from the architecture's vocabulary: a model or
        /// an error, never a panic (nor an absurd allocation).
        #[test]
        fn random_architectures_never_panic(
            nodes in proptest::collection::vec(arb_value(), 0..6),
            shape in proptest::collection::vec(0u64..40, 0..4),
            output in 0u64..8,
        ) {
            let mut all = vec![json!({"name": "input", "op": "Input", "inputs": []})];
            all.extend(nodes);
            let arch = json!({
                "name": "fuzz",
                "input_shape": shape,
                "output": output,
                "normalization": null,
                "nodes": all,
            });
            let _ = model_from_architecture(&arch);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

        /// Every architecture with arbitrary float attributes, as f64 or as f32 widened the
        /// way importers do (`f64::from`, `1 − f64::from`), survives the exchange: the three
        /// parties' manifests agree bit for bit.
        #[test]
        fn arbitrary_float_attributes_survive_the_exchange(
            eps in prop_oneof![1e-300f64..1.0, (1e-30f32..1.0).prop_map(f64::from)],
            momentum in prop_oneof![
                0.0f64..=1.0,
                (0.0f32..=1.0).prop_map(|m| 1.0 - f64::from(m)),
            ],
            alpha in prop_oneof![-1e300f64..1e300, any::<f32>().prop_filter("finite", |a| a.is_finite()).prop_map(f64::from)],
            bounds in (proptest::option::of(-1e300f64..1e300), proptest::option::of(-1e300f64..1e300)),
            p in prop_oneof![0.0f64..1.0, (0.0f32..1.0).prop_map(f64::from)],
            mean in prop_oneof![-1e300f64..1e300, (-1e6f32..1e6).prop_map(f64::from)],
            std in prop_oneof![1e-300f64..1e300, (1e-30f32..1e30).prop_map(f64::from)],
        ) {
            let (min, max) = bounds;
            let model = floaty(eps, momentum, alpha, min, max, p, mean, std);
            prop_assert!(exchange(&proposals(&model)).is_ok(), "{:#}", exchange(&proposals(&model)).unwrap_err());
        }
    }
}

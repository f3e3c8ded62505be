//! A model uploaded by its owner's client, for a model owner who runs no server
//! (`[serve] model_client`). The client encodes the model's tensors in fixed point, checks
//! them as a sharing owner would, splits each into three additive shares with the OS's
//! randomness and sends each server its two (x_i, x_{i+1}), so no single server sees a
//! weight. A server checks the upload against the architecture it carries, keeps it (in a
//! file of its own with `--model-store`, so that a restarted server serves it again without
//! a new upload), and the servers serve it once all three hold the same upload; a new upload
//! replaces it between batches.
//!
//! ```no_run
//! use cryptgpu::config::ClientSetup;
//! use cryptgpu::serve::shares::NumberFormat;
//! use cryptgpu::serve::upload::upload_model;
//!
//! # fn main() -> anyhow::Result<()> {
//! let setup = ClientSetup::load("parties.toml".as_ref(), "client0", None, None)?;
//! let model = cryptgpu::demo::lenet()?;
//! let report = upload_model(&setup, &model, NumberFormat::default())?;
//! println!("upload {} sent: {} bytes", report.id, report.bytes_sent);
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail, ensure};
use cryptgpu_backend::GpuBackend;
use cryptgpu_nn::model::Model;
use cryptgpu_nn::private::{InferenceTensor, SharedModel, inference_layout, inference_values};
use cryptgpu_share::{COMPARISON_BITS, Rss, Truncation, check_comparable, default_comparison_bits};
use cryptgpu_transport::PartyId;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::client::{ServerStream, ServiceError, open_server};
use super::shares::{NumberFormat, additive_shares, getrandom_fill, hex};
use super::wire::{
    ClientMessage, MAX_ARCHITECTURE_BYTES, ServerMessage, WIRE_VERSION, check_query_id,
    read_header, read_words, write_frame, write_header, write_words,
};
use crate::config::ClientSetup;
use crate::files::atomic::write_private_atomically_with;
use crate::manifest::{architecture_json, check_frac_bits, model_from_architecture};

/// The first bytes of a server's file of uploaded shares.
const STORE_MAGIC: &[u8; 24] = b"CRYPTGPU-MODEL-SHARES 1\n";

/// The most ring elements one tensor of an upload may hold: its two shares travel as one
/// frame of at most 4 GiB.
pub const MAX_TENSOR_ELEMENTS: usize = (u32::MAX as usize) / 16;

/// One tensor of an upload, as one server holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadedTensor {
    /// Its name and shape (from the architecture's inference layout).
    pub tensor: InferenceTensor,
    /// This server's own share x_i.
    pub own: Vec<u64>,
    /// Its copy of the next share x_{i+1}.
    pub next: Vec<u64>,
}

/// A model upload as one server holds it: public description and this server's shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// The upload's id (hex), the same at the three servers.
    pub id: String,
    /// The architecture (public), as [`architecture_json`] writes it.
    pub architecture: Value,
    /// Fractional bits of the shares.
    pub frac_bits: u32,
    /// Truncation the servers use.
    pub truncation: Truncation,
    /// ℓ of comparisons, if the owner chose one.
    pub comparison_bits: Option<u32>,
    /// The tensors, in the order of [`inference_layout`].
    pub tensors: Vec<UploadedTensor>,
}

/// The public part of an upload: what a server's file holds before the shares.
#[derive(Debug, Serialize, Deserialize)]
struct StoredHeader {
    party: usize,
    id: String,
    architecture: Value,
    frac_bits: u32,
    truncation: String,
    comparison_bits: Option<u32>,
    tensors: Vec<(String, Vec<usize>)>,
}

impl Upload {
    /// The model it describes (its architecture; the values are the shares').
    pub fn model(&self) -> Result<Model> {
        model_from_architecture(&self.architecture)
    }

    /// The shared model on `backend`: the shares uploaded to the device.
    pub fn shared<B: GpuBackend>(&self, backend: &B) -> Result<SharedModel<B>> {
        let model = self.model()?;
        let mut shares = BTreeMap::new();
        for t in &self.tensors {
            let shape = &t.tensor.shape;
            let x = Rss::from_shares(
                backend.upload(&t.own, shape)?,
                backend.upload(&t.next, shape)?,
            )?;
            shares.insert(t.tensor.name.clone(), x);
        }
        Ok(SharedModel::from_shares(&model, shares)?)
    }

    /// Writes it to `path` atomically, readable by this server's user only.
    pub fn save(&self, me: PartyId, path: &Path) -> Result<()> {
        let header = StoredHeader {
            party: me.index(),
            id: self.id.clone(),
            architecture: self.architecture.clone(),
            frac_bits: self.frac_bits,
            truncation: self.truncation.name().to_string(),
            comparison_bits: self.comparison_bits,
            tensors: self
                .tensors
                .iter()
                .map(|t| (t.tensor.name.clone(), t.tensor.shape.clone()))
                .collect(),
        };
        let header = serde_json::to_vec(&header)?;
        write_private_atomically_with(path, |out| {
            let mut out = std::io::BufWriter::new(out);
            out.write_all(STORE_MAGIC)?;
            out.write_all(&(header.len() as u64).to_le_bytes())?;
            out.write_all(&header)?;
            for t in &self.tensors {
                for w in t.own.iter().chain(&t.next) {
                    out.write_all(&w.to_le_bytes())?;
                }
            }
            out.flush()
        })
    }

    /// Reads what [`Upload::save`] wrote for server `me`, checked against its architecture.
    pub fn load(me: PartyId, path: &Path) -> Result<Upload> {
        let read = || -> Result<Upload> {
            let mut file = std::io::BufReader::new(std::fs::File::open(path)?);
            let mut magic = [0u8; 24];
            file.read_exact(&mut magic)?;
            ensure!(&magic == STORE_MAGIC, "not a file of uploaded shares");
            let mut len = [0u8; 8];
            file.read_exact(&mut len)?;
            let len = u64::from_le_bytes(len);
            ensure!(
                len <= (MAX_ARCHITECTURE_BYTES as u64) * 2,
                "a header of {len} bytes"
            );
            let mut header = vec![0u8; len as usize];
            file.read_exact(&mut header)?;
            let header: StoredHeader =
                serde_json::from_slice(&header).context("a malformed header")?;
            ensure!(
                header.party == me.index(),
                "it holds P{}'s shares, not {me}'s",
                header.party
            );
            let layout = check_upload_form(
                &header.architecture,
                header.tensors.len(),
                header.frac_bits,
                Some(&header.truncation),
                header.comparison_bits,
            )?;
            let stored: Vec<(String, Vec<usize>)> = layout
                .iter()
                .map(|t| (t.name.clone(), t.shape.clone()))
                .collect();
            ensure!(
                stored == header.tensors,
                "its tensors are not its architecture's"
            );
            let mut tensors = Vec::with_capacity(layout.len());
            for tensor in layout {
                let n: usize = tensor.shape.iter().product();
                let mut words = |count: usize| -> Result<Vec<u64>> {
                    let mut bytes = vec![0u8; count * 8];
                    file.read_exact(&mut bytes)?;
                    Ok(bytes
                        .chunks_exact(8)
                        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                        .collect())
                };
                let own = words(n)?;
                let next = words(n)?;
                tensors.push(UploadedTensor { tensor, own, next });
            }
            ensure!(
                file.read(&mut [0u8; 1])? == 0,
                "bytes after the last tensor"
            );
            Ok(Upload {
                id: header.id,
                architecture: header.architecture,
                frac_bits: header.frac_bits,
                truncation: parse_truncation(Some(&header.truncation))?,
                comparison_bits: header.comparison_bits,
                tensors,
            })
        };
        read().with_context(|| format!("reading the uploaded model's shares {}", path.display()))
    }
}

fn parse_truncation(name: Option<&str>) -> Result<Truncation> {
    match name {
        None => Ok(Truncation::Exact),
        Some(n) => n
            .parse::<Truncation>()
            .map_err(|_| anyhow::anyhow!("the truncation {n:?} is unknown")),
    }
}

/// Checks an upload's public part: the architecture is a model this build knows, its
/// inference layout has `tensors` tensors, none too large, and the number format is one the
/// servers take. Returns the layout.
fn check_upload_form(
    architecture: &Value,
    tensors: usize,
    frac_bits: u32,
    truncation: Option<&str>,
    comparison_bits: Option<u32>,
) -> Result<Vec<InferenceTensor>> {
    let model = model_from_architecture(architecture)?;
    let (_, layout) = inference_layout(&model)?;
    ensure!(
        layout.len() == tensors,
        "the architecture has {} tensors to share, the upload announced {tensors}",
        layout.len()
    );
    for t in &layout {
        let n: usize = t.shape.iter().product();
        ensure!(
            n <= MAX_TENSOR_ELEMENTS,
            "{} has {n} elements; an upload takes at most {MAX_TENSOR_ELEMENTS} per tensor",
            t.name
        );
    }
    check_frac_bits(u64::from(frac_bits))?;
    parse_truncation(truncation)?;
    if let Some(l) = comparison_bits {
        ensure!(
            COMPARISON_BITS.contains(&l),
            "`comparison_bits` is {l}: it must be from {} to {}",
            COMPARISON_BITS.start(),
            COMPARISON_BITS.end()
        );
    }
    Ok(layout)
}

/// An upload's public part, checked by a server before it takes the shares.
#[derive(Debug)]
pub struct UploadForm {
    id: String,
    architecture: Value,
    frac_bits: u32,
    truncation: Truncation,
    comparison_bits: Option<u32>,
    layout: Vec<InferenceTensor>,
}

/// Checks an `upload` header and the architecture frame that followed it: the id, the
/// architecture (a model this build knows, whose inference layout has the announced number
/// of tensors) and the number format.
pub fn check_upload(header: &ClientMessage, architecture: &[u8]) -> Result<UploadForm> {
    let ClientMessage::Upload {
        id,
        architecture_bytes,
        tensors,
        frac_bits,
        truncation,
        comparison_bits,
        ..
    } = header
    else {
        bail!("not an upload");
    };
    check_query_id(id).context("the upload's id")?;
    ensure!(
        architecture.len() == *architecture_bytes,
        "an architecture of {} bytes where {architecture_bytes} were announced",
        architecture.len()
    );
    let architecture: Value =
        serde_json::from_slice(architecture).context("the architecture is not JSON")?;
    let layout = check_upload_form(
        &architecture,
        *tensors,
        *frac_bits,
        truncation.as_deref(),
        *comparison_bits,
    )?;
    Ok(UploadForm {
        id: id.clone(),
        architecture,
        frac_bits: *frac_bits,
        truncation: parse_truncation(truncation.as_deref())?,
        comparison_bits: *comparison_bits,
        layout,
    })
}

/// Reads the shares of a checked upload: each tensor's two, of exactly its size.
pub fn receive_shares(r: &mut impl Read, form: UploadForm) -> Result<Upload> {
    let mut received = Vec::with_capacity(form.layout.len());
    for tensor in form.layout {
        let n: usize = tensor.shape.iter().product();
        let mut both =
            read_words(r, 2 * n).with_context(|| format!("the shares of {}", tensor.name))?;
        let next = both.split_off(n);
        received.push(UploadedTensor {
            tensor,
            own: both,
            next,
        });
    }
    Ok(Upload {
        id: form.id,
        architecture: form.architecture,
        frac_bits: form.frac_bits,
        truncation: form.truncation,
        comparison_bits: form.comparison_bits,
        tensors: received,
    })
}

/// The upload a server serves, and where it keeps it.
#[derive(Debug)]
pub struct ModelSlot {
    me: PartyId,
    store: Option<PathBuf>,
    current: Mutex<Option<Arc<Upload>>>,
}

impl ModelSlot {
    /// The file of server `me`'s shares in the folder `store`.
    pub fn store_file(store: &Path, me: PartyId) -> PathBuf {
        store.join(format!("uploaded-model.P{}.shares", me.index()))
    }

    /// Server `me`'s slot, keeping uploads in the folder `store` (made if absent) if given,
    /// and holding the upload kept there, if any.
    pub fn open(me: PartyId, store: Option<PathBuf>) -> Result<ModelSlot> {
        let mut current = None;
        if let Some(dir) = &store {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("making the model store {}", dir.display()))?;
            let file = Self::store_file(dir, me);
            if file.exists() {
                current = Some(Arc::new(Upload::load(me, &file)?));
            }
        }
        Ok(ModelSlot {
            me,
            store,
            current: Mutex::new(current),
        })
    }

    /// The upload held now.
    pub fn get(&self) -> Option<Arc<Upload>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Keeps `upload` (written to the store first, if there is one) in place of the last.
    pub fn put(&self, upload: Upload) -> Result<()> {
        if let Some(dir) = &self.store {
            upload.save(self.me, &Self::store_file(dir, self.me))?;
        }
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(upload));
        Ok(())
    }
}

/// Reads each server's answer to upload `id`: `want` (`upload_ready` or `uploaded`, with
/// the id), else the first server's refusal as a [`ServiceError`].
fn expect_replies(
    servers: &mut [ServerStream],
    setup: &ClientSetup,
    id: &str,
    want: &str,
) -> Result<()> {
    let mut refusal = None;
    for (i, tls) in servers.iter_mut().enumerate() {
        tls.sock.set_read_timeout(Some(setup.query_timeout))?;
        let reply: ServerMessage =
            read_header(tls).with_context(|| format!("server P{i}'s answer to the upload"))?;
        match reply {
            ServerMessage::UploadReady { id: got } if want == "upload_ready" && got == id => {}
            ServerMessage::Uploaded { id: got } if want == "uploaded" && got == id => {}
            ServerMessage::Error { kind, message, .. } => {
                refusal.get_or_insert(ServiceError {
                    server: i,
                    kind,
                    message,
                });
            }
            other => bail!("server P{i} answered the upload with {other:?} where {want} was due"),
        }
    }
    match refusal {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// What an upload sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadReport {
    /// The upload's id.
    pub id: String,
    /// Tensors shared.
    pub tensors: usize,
    /// Ring elements of the model (each sent as shares to two servers).
    pub elements: usize,
    /// Bytes the client sent (to all three servers, payload only).
    pub bytes_sent: u64,
}

/// Uploads `model` to the three servers of `setup`'s service as its owner (the deployment's
/// `model_client`), in the number format `number`: every tensor is encoded and checked here
/// (finite, in the fixed-point range, in the comparison domain) before anything is sent.
/// The servers serve it once all three hold it.
///
/// # Errors
/// A value the format cannot take, named by tensor and index (said here only); a
/// [`ServiceError`] from a server (not the model owner's client, a malformed upload, ...);
/// a broken connection.
pub fn upload_model(
    setup: &ClientSetup,
    model: &Model,
    number: NumberFormat,
) -> Result<UploadReport> {
    let frac_bits = number.frac_bits.unwrap_or(16);
    let fixed = check_frac_bits(frac_bits)?;
    let comparison_bits = number
        .comparison_bits
        .map(|l| u32::try_from(l).context("`comparison_bits`"))
        .transpose()?;
    let l = comparison_bits.unwrap_or_else(|| default_comparison_bits(fixed));
    ensure!(
        COMPARISON_BITS.contains(&l),
        "`comparison_bits` is {l}: it must be from {} to {}",
        COMPARISON_BITS.start(),
        COMPARISON_BITS.end()
    );
    let (folded, layout) = inference_layout(model)?;
    let values = inference_values(&folded)?;
    let mut encoded = Vec::with_capacity(layout.len());
    for (tensor, v) in layout.iter().zip(&values) {
        let n = v.len();
        ensure!(
            n <= MAX_TENSOR_ELEMENTS,
            "{} has {n} elements; an upload takes at most {MAX_TENSOR_ELEMENTS} per tensor",
            tensor.name
        );
        let x = fixed
            .encode_slice(v)
            .with_context(|| format!("{} cannot be encoded with f = {frac_bits}", tensor.name))?;
        check_comparable(fixed, l, &tensor.name, &x)?;
        encoded.push(x);
    }
    let architecture = serde_json::to_vec(&architecture_json(model))?;
    ensure!(
        architecture.len() <= MAX_ARCHITECTURE_BYTES,
        "the architecture takes {} bytes; an upload carries at most {MAX_ARCHITECTURE_BYTES}",
        architecture.len()
    );
    let mut id = [0u8; 16];
    getrandom_fill(&mut id)?;
    let id = hex(&id);
    let header = ClientMessage::Upload {
        client: setup.name.clone(),
        version: WIRE_VERSION,
        id: id.clone(),
        architecture_bytes: architecture.len(),
        tensors: layout.len(),
        frac_bits: fixed.frac_bits(),
        truncation: number.truncation.map(|t| t.name().to_string()),
        comparison_bits,
    };
    // The header and the architecture first: each server reads both, then says whether it
    // takes the upload, before any share is sent.
    let mut servers = Vec::with_capacity(3);
    for i in 0..3 {
        let mut tls = open_server(setup, i)?;
        write_header(&mut tls, &header)
            .and_then(|()| write_frame(&mut tls, &architecture))
            .and_then(|()| Ok(tls.flush()?))
            .with_context(|| format!("sending the upload to server P{i}"))?;
        servers.push(tls);
    }
    expect_replies(&mut servers, setup, &id, "upload_ready")?;
    let mut bytes_sent = 0u64;
    let mut elements = 0;
    for x in &encoded {
        elements += x.len();
        // Server i gets (x_i, x_{i+1}).
        let shares = additive_shares(x)?;
        for (i, tls) in servers.iter_mut().enumerate() {
            let mut both = Vec::with_capacity(2 * x.len());
            both.extend_from_slice(&shares[i]);
            both.extend_from_slice(&shares[(i + 1) % 3]);
            bytes_sent += 8 * both.len() as u64;
            write_words(tls, &both)
                .with_context(|| format!("sending the upload to server P{i}"))?;
        }
    }
    for (i, tls) in servers.iter_mut().enumerate() {
        tls.flush()
            .with_context(|| format!("sending the upload to server P{i}"))?;
    }
    expect_replies(&mut servers, setup, &id, "uploaded")?;
    Ok(UploadReport {
        id,
        tensors: layout.len(),
        elements,
        bytes_sent: bytes_sent + 3 * architecture.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_upload() -> Upload {
        let model = crate::demo::lenet().unwrap();
        let (_, layout) = inference_layout(&model).unwrap();
        let tensors = layout
            .into_iter()
            .enumerate()
            .map(|(k, tensor)| {
                let n: usize = tensor.shape.iter().product();
                UploadedTensor {
                    tensor,
                    own: (0..n as u64).map(|i| i * 7 + k as u64).collect(),
                    next: (0..n as u64).map(|i| !i).collect(),
                }
            })
            .collect();
        Upload {
            id: "0a1b".into(),
            architecture: architecture_json(&model),
            frac_bits: 16,
            truncation: Truncation::Exact,
            comparison_bits: None,
            tensors,
        }
    }

    #[test]
    fn a_stored_upload_reads_back_and_a_damaged_or_foreign_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("cryptgpu-upload-{}", std::process::id()));
        let slot = ModelSlot::open(PartyId::P1, Some(dir.clone())).unwrap();
        assert!(slot.get().is_none());
        let upload = small_upload();
        slot.put(upload.clone()).unwrap();
        let file = ModelSlot::store_file(&dir, PartyId::P1);
        // A server that starts again holds it.
        let again = ModelSlot::open(PartyId::P1, Some(dir.clone())).unwrap();
        assert_eq!(*again.get().unwrap(), upload);
        // Another server's file is not this one's.
        let err = Upload::load(PartyId::P2, &file).unwrap_err();
        assert!(format!("{err:#}").contains("P1's shares"), "{err:#}");
        // A file cut short, or with bytes after its end, is refused by name.
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() - 8]).unwrap();
        let err = Upload::load(PartyId::P1, &file).unwrap_err();
        assert!(
            format!("{err:#}").contains(&file.display().to_string()),
            "{err:#}"
        );
        let mut longer = bytes.clone();
        longer.push(0);
        std::fs::write(&file, &longer).unwrap();
        let err = Upload::load(PartyId::P1, &file).unwrap_err();
        assert!(
            format!("{err:#}").contains("after the last tensor"),
            "{err:#}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

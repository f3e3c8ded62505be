//! `WgpuError`: what can go wrong in the wgpu backend, and how it becomes a `BackendError`.

use cryptgpu_backend::BackendError;

/// A failure of the wgpu backend: no usable adapter, a device request refused, or an
/// error that wgpu reported for an op (validation, out of memory, a lost device).
#[derive(Debug, thiserror::Error)]
pub enum WgpuError {
    /// No adapter fits what was asked for (none at all, or none with `SHADER_INT64` when
    /// the native path was requested).
    #[error("no usable wgpu adapter: {0}")]
    NoAdapter(String),
    /// The adapter refused to open a device.
    #[error("the adapter {adapter} refused a device: {source}")]
    RequestDevice {
        /// The adapter's name.
        adapter: String,
        /// What wgpu said.
        source: wgpu::RequestDeviceError,
    },
    /// wgpu reported an error while running an op (validation, out of memory, internal).
    #[error("{op}: wgpu reported an error: {message}")]
    Wgpu {
        /// The backend op that was running.
        op: &'static str,
        /// wgpu's message.
        message: String,
    },
    /// Waiting for the device failed (device lost or timed out).
    #[error("{op}: waiting for the device failed: {source}")]
    Poll {
        /// The backend op that was waiting.
        op: &'static str,
        /// What wgpu said.
        source: wgpu::PollError,
    },
    /// Mapping a buffer for reading failed.
    #[error("{op}: mapping a buffer for reading failed: {message}")]
    Map {
        /// The backend op that was reading.
        op: &'static str,
        /// What wgpu said.
        message: String,
    },
    /// A tensor or dispatch that no adapter limit, even with chunking, can hold.
    #[error("{op}: {why}")]
    TooLarge {
        /// The op that refused it.
        op: &'static str,
        /// Which limit is exceeded, in words.
        why: String,
    },
}

impl From<WgpuError> for BackendError {
    fn from(error: WgpuError) -> Self {
        match error {
            WgpuError::NoAdapter(why) => BackendError::NoDevice {
                backend: "wgpu",
                why,
            },
            other => BackendError::Device(Box::new(other)),
        }
    }
}

//! The shared conformance suite on the wgpu backend, bit for bit against the scalar
//! reference: on the native `u64` path, on the emulated `vec2<u32>` path, and on both
//! again with storage bindings capped at 1024 elements so that every op runs in chunks
//! and windows. Each module opens one backend and shares it between its tests (the
//! tests run on several threads at once, as three parties would).

use cryptgpu_wgpu::{Int64Mode, WgpuBackend, WgpuOptions};
use std::sync::OnceLock;

/// The backend for `options`, opened once per test binary and module; `None` after
/// saying why when there is no adapter (a failure under `CRYPTGPU_REQUIRE_WGPU=1`).
fn shared(
    cell: &'static OnceLock<Result<WgpuBackend, String>>,
    options: WgpuOptions,
) -> Option<WgpuBackend> {
    match cell.get_or_init(|| WgpuBackend::with_options(options).map_err(|e| e.to_string())) {
        Ok(backend) => Some(backend.clone()),
        Err(why) => cryptgpu_backend::conformance::unavailable("wgpu", why),
    }
}

/// Elements per storage binding in the chunked modules: small enough that every op of the
/// suite splits its output into chunks and most read several windows.
const SMALL_BINDING: usize = 1024;

/// A module running the suite on one backend opened with `int64` and the binding cap
/// `max_binding_elements`.
macro_rules! conformance_module {
    ($name:ident, $int64:expr, $max_binding_elements:expr) => {
        mod $name {
            use super::*;

            fn backend() -> Option<WgpuBackend> {
                static CELL: OnceLock<Result<WgpuBackend, String>> = OnceLock::new();
                shared(
                    &CELL,
                    WgpuOptions {
                        int64: $int64,
                        max_binding_elements: $max_binding_elements,
                        ..WgpuOptions::default()
                    },
                )
            }

            cryptgpu_backend::conformance_tests!(backend);
        }
    };
}

conformance_module!(native, Int64Mode::Native, None);
conformance_module!(emulated, Int64Mode::Emulated, None);
conformance_module!(native_chunked, Int64Mode::Native, Some(SMALL_BINDING));
conformance_module!(emulated_chunked, Int64Mode::Emulated, Some(SMALL_BINDING));

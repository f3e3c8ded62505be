//! Finding the CUDA shared libraries before cudarc touches them: cudarc loads `libcuda`,
//! `libnvrtc` and `libcublas` on first use and panics when one is missing, so every entry
//! point checks here first and returns an error instead.
//!
//! NVRTC may also come from a directory named by `CRYPTGPU_NVRTC_DIR` (for example the
//! `nvidia/cu13/lib` folder of the `nvidia-cuda-nvrtc` pip wheel, which is how CI gets it):
//! its libraries are loaded by full path first, after which the dynamic loader resolves
//! cudarc's `dlopen("libnvrtc.so.13")` and NVRTC's own `libnvrtc-builtins` by their sonames.

use crate::CudaError;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The environment variable naming a directory that holds `libnvrtc.so.*`.
pub const NVRTC_DIR_VAR: &str = "CRYPTGPU_NVRTC_DIR";

/// Whether the CUDA driver library (`libcuda`) can be loaded.
pub fn driver() -> Result<(), CudaError> {
    static FOUND: OnceLock<bool> = OnceLock::new();
    // SAFETY: `is_culib_present` only tries to dlopen the library names cudarc knows; loading
    // the NVIDIA driver library runs its initialisers, which is what using CUDA means anyway.
    let found = *FOUND.get_or_init(|| unsafe { cudarc::driver::sys::is_culib_present() });
    loaded(
        found,
        "libcuda",
        "no NVIDIA driver is installed here (libcuda.so.1 is not on the loader's path)",
    )
}

/// Whether cuBLAS (`libcublas`) can be loaded.
pub fn cublas() -> Result<(), CudaError> {
    static FOUND: OnceLock<bool> = OnceLock::new();
    // SAFETY: as in `driver`: a dlopen of cuBLAS by its known names.
    let found = *FOUND.get_or_init(|| unsafe { cudarc::cublas::sys::is_culib_present() });
    loaded(
        found,
        "libcublas",
        "cuBLAS is not on the loader's path; add its directory to LD_LIBRARY_PATH",
    )
}

/// `Ok` when `library` was `found`, else [`CudaError::LibraryMissing`] saying `why` not.
fn loaded(found: bool, library: &'static str, why: &str) -> Result<(), CudaError> {
    found
        .then_some(())
        .ok_or_else(|| CudaError::LibraryMissing {
            library,
            why: why.into(),
        })
}

/// Whether NVRTC can be loaded, pre-loading it from `CRYPTGPU_NVRTC_DIR` when that is set.
pub fn nvrtc() -> Result<(), CudaError> {
    static STATUS: OnceLock<Result<(), String>> = OnceLock::new();
    STATUS
        .get_or_init(|| {
            let preloaded = match std::env::var_os(NVRTC_DIR_VAR) {
                Some(dir) if !dir.is_empty() => Some(preload_nvrtc(Path::new(&dir))?),
                _ => None,
            };
            // SAFETY: a dlopen of NVRTC by the names cudarc knows (or the one just pre-loaded).
            if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
                Ok(())
            } else {
                Err(match preloaded {
                    Some(path) => format!(
                        "{} was loaded but cudarc's names for NVRTC do not resolve to it",
                        path.display()
                    ),
                    None => format!(
                        "libnvrtc is not on the loader's path; set {NVRTC_DIR_VAR} to the \
                         directory holding libnvrtc.so.13 (e.g. from `pip install \
                         nvidia-cuda-nvrtc`) or add it to LD_LIBRARY_PATH"
                    ),
                })
            }
        })
        .clone()
        .map_err(|why| CudaError::LibraryMissing {
            library: "libnvrtc",
            why,
        })
}

/// Loads NVRTC's builtins and then NVRTC itself from `dir` by full path, and keeps them
/// loaded for the life of the process. Returns the path of the NVRTC library.
#[cfg(unix)]
fn preload_nvrtc(dir: &Path) -> Result<PathBuf, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("{NVRTC_DIR_VAR}={}: {e}", dir.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.contains(".so") && !name.contains(".alt."))
        .collect();
    names.sort();
    let builtins: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("libnvrtc-builtins"))
        .collect();
    let nvrtc = names
        .iter()
        .filter(|n| n.starts_with("libnvrtc.so"))
        // The most specific name (libnvrtc.so.13 over libnvrtc.so) is the real file.
        .max_by_key(|n| n.len())
        .ok_or_else(|| format!("{NVRTC_DIR_VAR}={}: no libnvrtc.so* there", dir.display()))?;
    for name in builtins.into_iter().chain([nvrtc]) {
        let path = dir.join(name);
        // SAFETY: loading NVIDIA's NVRTC libraries runs their initialisers, which have no
        // preconditions. The handle is leaked on purpose: the libraries must stay loaded
        // for as long as cudarc may call into them, which is the rest of the process.
        let library = unsafe {
            libloading::os::unix::Library::open(
                Some(&path),
                libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL,
            )
        }
        .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
        std::mem::forget(library);
    }
    Ok(dir.join(nvrtc))
}

/// Pre-loading by path is only implemented for Unix loaders.
#[cfg(not(unix))]
fn preload_nvrtc(dir: &Path) -> Result<PathBuf, String> {
    Err(format!(
        "{NVRTC_DIR_VAR}={} is only supported on Unix; put NVRTC on the loader's path instead",
        dir.display()
    ))
}

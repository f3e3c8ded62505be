//! The CUDA C sources under `kernels/`, embedded with `include_str!`, each kernel's declared
//! parameter list, the `#[repr(C)]` parameter structs the kernels take by value, and the
//! NVRTC compile step.
//!
//! The declared parameter lists are checked twice: every launch compares the arguments it
//! pushes against them (`device::Device::launch`), and the NVRTC test compares them against the
//! `.entry` signatures of the PTX, so a launch and its kernel cannot disagree silently.

use crate::CudaError;
use cryptgpu_backend::{Fused, FusedStep, Operand};
use cudarc::driver::DeviceRepr;
use std::ffi::{CStr, CString};

/// One kernel parameter as the PTX sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param {
    /// A device pointer (`.param .u64`).
    Ptr,
    /// A 32-bit integer (`.param .u32`).
    U32,
    /// A 64-bit integer (`.param .u64`).
    U64,
    /// A struct passed by value, of this many bytes (`.param .align 8 .b8 name[bytes]`).
    Struct(usize),
}

impl Param {
    /// Bytes the parameter takes.
    pub fn size(self) -> usize {
        match self {
            Param::Ptr | Param::U64 => 8,
            Param::U32 => 4,
            Param::Struct(bytes) => bytes,
        }
    }
}

/// A kernel: its name (`extern "C"`, so the PTX entry has the same name) and parameters.
#[derive(Debug)]
pub struct KernelDecl {
    /// The entry point's name.
    pub name: &'static str,
    /// Its parameters, in order.
    pub params: &'static [Param],
}

/// A `.cu` file of `kernels/` and the kernels it defines.
#[derive(Debug)]
pub struct KernelSource {
    /// The file name under `kernels/`.
    pub file: &'static str,
    /// The CUDA C source.
    pub source: &'static str,
    /// Every `extern "C" __global__` function of the file.
    pub kernels: &'static [KernelDecl],
}

/// Mirrors `GatherParams` in `kernels/layout.cu`: a strided view of up to
/// [`GATHER_MAX_RANK`] axes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GatherParams {
    /// Number of axes in use.
    pub rank: u64,
    /// Element offset of the view's first element.
    pub offset: u64,
    /// Extents of the output, row-major.
    pub shape: [u64; GATHER_MAX_RANK],
    /// Source stride (in elements) of each output axis; 0 repeats.
    pub strides: [u64; GATHER_MAX_RANK],
}

/// The most axes a strided gather takes.
pub const GATHER_MAX_RANK: usize = 12;

/// Mirrors `SelectRowsParams` in `kernels/layout.cu`: one launch of `select_rows_u64`,
/// which fills output rows `first_row .. first_row + count`, row `first_row + r` from
/// source row `rows[r]` (or with zeros where that is [`SELECT_ROWS_NONE`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SelectRowsParams {
    /// Elements per row, of the source and of the output.
    pub row_len: u64,
    /// The output row that `rows[0]` fills.
    pub first_row: u64,
    /// Rows this launch fills, at most [`SELECT_ROWS_MAX`].
    pub count: u64,
    /// The source row of each output row, or [`SELECT_ROWS_NONE`] for a row of zeros;
    /// entries from `count` on are unused.
    pub rows: [u64; SELECT_ROWS_MAX],
}

/// The most rows one `select_rows_u64` launch fills (its parameter block is 1048 bytes,
/// well inside the 4 KiB every architecture accepts).
pub const SELECT_ROWS_MAX: usize = 128;

/// The row index that stands for a row of zeros in [`SelectRowsParams::rows`].
pub const SELECT_ROWS_NONE: u64 = u64::MAX;

impl SelectRowsParams {
    /// The launches of `select_rows` picking `rows` (row `i` of the output is source row
    /// `rows[i]`, or zeros for `None`) with rows of `row_len` elements: one per
    /// [`SELECT_ROWS_MAX`] output rows, in order; none for no rows.
    pub fn chunks(rows: &[Option<usize>], row_len: usize) -> Vec<SelectRowsParams> {
        rows.chunks(SELECT_ROWS_MAX)
            .enumerate()
            .map(|(c, chunk)| {
                let mut params = SelectRowsParams {
                    row_len: row_len as u64,
                    first_row: (c * SELECT_ROWS_MAX) as u64,
                    count: chunk.len() as u64,
                    rows: [SELECT_ROWS_NONE; SELECT_ROWS_MAX],
                };
                for (slot, row) in params.rows.iter_mut().zip(chunk) {
                    *slot = row.map_or(SELECT_ROWS_NONE, |r| r as u64);
                }
                params
            })
            .collect()
    }
}

/// The most inputs `fused_u64` reads ([`cryptgpu_backend::fused::FUSED_MAX_INPUTS`]).
pub const FUSED_MAX_INPUTS: usize = cryptgpu_backend::fused::FUSED_MAX_INPUTS;

/// The most steps `fused_u64` runs ([`cryptgpu_backend::fused::FUSED_MAX_STEPS`]).
pub const FUSED_MAX_STEPS: usize = cryptgpu_backend::fused::FUSED_MAX_STEPS;

/// [`FusedCode::kind`] of a [`FusedStep::Binary`]: `op(value[a], value[b])`.
pub const FUSED_BINARY: u32 = 0;
/// [`FusedCode::kind`] of a [`FusedStep::Scalar`]: `op(value[a], arg)`.
pub const FUSED_SCALAR: u32 = 1;
/// [`FusedCode::kind`] of a [`FusedStep::Unary`]: `op(value[a])`.
pub const FUSED_UNARY: u32 = 2;
/// [`FusedCode::kind`] of a [`FusedStep::Shift`]: `op(value[a], arg)`.
pub const FUSED_SHIFT: u32 = 3;

/// Mirrors `FusedCode` in `kernels/elementwise.cu`: one step of a [`FusedParams`] program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FusedCode {
    /// [`FUSED_BINARY`], [`FUSED_SCALAR`], [`FUSED_UNARY`] or [`FUSED_SHIFT`].
    pub kind: u32,
    /// The op's code, as `binary_u64`, `unary_u64` and `shift_u64` take it.
    pub op: u32,
    /// The first operand: input `i` is `i`, step `s` is [`FUSED_MAX_INPUTS`]` + s`.
    pub a: u32,
    /// The second operand of a [`FUSED_BINARY`] step, coded as `a`; 0 otherwise.
    pub b: u32,
    /// The scalar of a [`FUSED_SCALAR`] step, the amount of a [`FUSED_SHIFT`]; 0 otherwise.
    pub arg: u64,
}

/// Mirrors `FusedParams` in `kernels/elementwise.cu`: a checked [`Fused`] program, passed
/// by value to `fused_u64` (304 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FusedParams {
    /// Inputs the program is called with, 1 to [`FUSED_MAX_INPUTS`].
    pub inputs: u64,
    /// Steps, 1 to [`FUSED_MAX_STEPS`]; the last one's value is the result.
    pub steps: u64,
    /// The steps in order; entries from `steps` on are unused (zero).
    pub code: [FusedCode; FUSED_MAX_STEPS],
}

impl FusedParams {
    /// The kernel's encoding of `program` called with `inputs` inputs. The caller has
    /// checked the program against `inputs` ([`cryptgpu_backend::fused_shape`]), so every
    /// operand reads an input below `inputs` or an earlier step and the kernel indexes
    /// only values it has set.
    pub fn new(program: &Fused, inputs: usize) -> FusedParams {
        let operand = |operand: Operand| match operand {
            Operand::Input(i) => u32::from(i),
            Operand::Step(s) => FUSED_MAX_INPUTS as u32 + u32::from(s),
        };
        let mut params = FusedParams {
            inputs: inputs as u64,
            steps: program.steps().len() as u64,
            code: [FusedCode::default(); FUSED_MAX_STEPS],
        };
        for (slot, step) in params.code.iter_mut().zip(program.steps()) {
            *slot = match *step {
                FusedStep::Binary(op, a, b) => FusedCode {
                    kind: FUSED_BINARY,
                    op: crate::binary_code(op),
                    a: operand(a),
                    b: operand(b),
                    arg: 0,
                },
                FusedStep::Scalar(op, a, scalar) => FusedCode {
                    kind: FUSED_SCALAR,
                    op: crate::binary_code(op),
                    a: operand(a),
                    b: 0,
                    arg: scalar,
                },
                FusedStep::Unary(op, a) => FusedCode {
                    kind: FUSED_UNARY,
                    op: crate::unary_code(op),
                    a: operand(a),
                    b: 0,
                    arg: 0,
                },
                FusedStep::Shift(op, a, bits) => FusedCode {
                    kind: FUSED_SHIFT,
                    op: crate::shift_code(op),
                    a: operand(a),
                    b: 0,
                    arg: u64::from(bits),
                },
            };
        }
        params
    }
}

/// Mirrors `PoolDims` in `kernels/pool.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
#[allow(missing_docs)] // the fields are the pooling dimensions, named as in `Pool2dDims`
pub struct PoolDims {
    pub planes: u64,
    pub h: u64,
    pub w: u64,
    pub oh: u64,
    pub ow: u64,
    pub kh: u64,
    pub kw: u64,
    pub sy: u64,
    pub sx: u64,
    pub py: u64,
    pub px: u64,
}

/// Mirrors `ConvDims` in `kernels/conv.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
#[allow(missing_docs)] // the fields are the convolution dimensions, named as in `Conv2dDims`
pub struct ConvDims {
    pub n: u64,
    pub c: u64,
    pub h: u64,
    pub w: u64,
    pub groups: u64,
    pub cpg: u64,
    pub kh: u64,
    pub kw: u64,
    pub oh: u64,
    pub ow: u64,
    pub sy: u64,
    pub sx: u64,
    pub py: u64,
    pub px: u64,
}

/// Mirrors `GemmDims` in `kernels/gemm.cu`: a batch of `m × k` by `k × n` products with
/// arbitrary row, column and batch strides on the inputs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
#[allow(missing_docs)] // documented in kernels/gemm.cu next to the struct
pub struct GemmDims {
    pub m: u64,
    pub n: u64,
    pub k: u64,
    pub a_off: u64,
    pub a_rs: u64,
    pub a_cs: u64,
    pub a_bs: u64,
    pub b_off: u64,
    pub b_rs: u64,
    pub b_cs: u64,
    pub b_bs: u64,
    pub c_off: u64,
    pub c_rs: u64,
    pub c_bs: u64,
    pub accumulate: u64,
}

/// Mirrors `SplitDims` in `kernels/gemm.cu`: one chunk of a matrix split into limbs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
#[allow(missing_docs)] // documented in kernels/gemm.cu next to the struct
pub struct SplitDims {
    pub rows: u64,
    pub cols: u64,
    pub k0: u64,
    pub off: u64,
    pub rs: u64,
    pub cs: u64,
    pub rows_pad: u64,
    pub kcp: u64,
    pub reversed: u64,
}

/// Mirrors `RecombineDims` in `kernels/gemm.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
#[allow(missing_docs)] // documented in kernels/gemm.cu next to the struct
pub struct RecombineDims {
    pub m: u64,
    pub n: u64,
    pub ld: u64,
    pub plane: u64,
    pub out_off: u64,
    pub out_rs: u64,
    pub accumulate: u64,
}

/// Mirrors `ChachaKey` in `kernels/chacha.cu`: the key as ChaCha's eight words.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ChachaKey {
    /// `prg::key_words` of the key.
    pub words: [u32; 8],
}

// SAFETY: each struct is #[repr(C)], made only of u64/u32 fields (any bit pattern is
// valid, no padding: every field has the struct's alignment or the u32 array fills whole
// 8-byte units), and has the exact layout of its namesake in kernels/*.cu; the NVRTC test
// checks the sizes against the PTX.
unsafe impl DeviceRepr for GatherParams {}
// SAFETY: as above.
unsafe impl DeviceRepr for SelectRowsParams {}
// SAFETY: as above (FusedCode's four u32 fill one 8-byte unit before its u64, so
// FusedParams is 8 + 8 + 12 · 24 bytes with no padding).
unsafe impl DeviceRepr for FusedParams {}
// SAFETY: as above.
unsafe impl DeviceRepr for PoolDims {}
// SAFETY: as above.
unsafe impl DeviceRepr for ConvDims {}
// SAFETY: as above.
unsafe impl DeviceRepr for GemmDims {}
// SAFETY: as above.
unsafe impl DeviceRepr for SplitDims {}
// SAFETY: as above.
unsafe impl DeviceRepr for RecombineDims {}
// SAFETY: as above.
unsafe impl DeviceRepr for ChachaKey {}

/// A value that can be passed to a kernel, with its [`Param`] kind.
pub trait KernelValue: DeviceRepr {
    /// How the PTX declares it.
    const PARAM: Param;
}

impl KernelValue for u32 {
    const PARAM: Param = Param::U32;
}
impl KernelValue for u64 {
    const PARAM: Param = Param::U64;
}

macro_rules! struct_values {
    ($($t:ty),*) => {
        $(impl KernelValue for $t {
            const PARAM: Param = Param::Struct(std::mem::size_of::<$t>());
        })*
    };
}
struct_values!(
    GatherParams,
    SelectRowsParams,
    FusedParams,
    PoolDims,
    ConvDims,
    GemmDims,
    SplitDims,
    RecombineDims,
    ChachaKey
);

use Param::{Ptr, U32, U64};

/// The declaration of kernel `name` with `params`.
const fn kernel(name: &'static str, params: &'static [Param]) -> KernelDecl {
    KernelDecl { name, params }
}

const fn by_value<T>() -> Param {
    Param::Struct(std::mem::size_of::<T>())
}

/// Every kernel source, in the order the backend loads them.
pub const SOURCES: &[KernelSource] = &[
    KernelSource {
        file: "elementwise.cu",
        source: include_str!("../../../kernels/elementwise.cu"),
        kernels: &[
            kernel("fill_u64", &[Ptr, U64, U64]),
            kernel("binary_u64", &[Ptr, Ptr, Ptr, U64, U32]),
            kernel("binary_scalar_u64", &[Ptr, Ptr, U64, U64, U32]),
            kernel("unary_u64", &[Ptr, Ptr, U64, U32]),
            kernel("shift_u64", &[Ptr, Ptr, U64, U32, U32]),
            kernel(
                "fused_u64",
                &[
                    Ptr,
                    Ptr,
                    Ptr,
                    Ptr,
                    Ptr,
                    Ptr,
                    Ptr,
                    U64,
                    by_value::<FusedParams>(),
                ],
            ),
            kernel("extract_bit_u64", &[Ptr, Ptr, U64, U32]),
            kernel("pack_bits_u64", &[Ptr, Ptr, U64, U64]),
            kernel("bit_planes_u64", &[Ptr, Ptr, U64, U64]),
            kernel("unpack_bits_u64", &[Ptr, Ptr, U64]),
        ],
    },
    KernelSource {
        file: "layout.cu",
        source: include_str!("../../../kernels/layout.cu"),
        kernels: &[
            kernel(
                "strided_gather_u64",
                &[Ptr, Ptr, U64, by_value::<GatherParams>()],
            ),
            kernel("copy_runs_u64", &[Ptr, Ptr, U64, U64, U64, U64]),
            kernel(
                "select_rows_u64",
                &[Ptr, Ptr, by_value::<SelectRowsParams>()],
            ),
            kernel("sum_axis_u64", &[Ptr, Ptr, U64, U64, U64]),
        ],
    },
    KernelSource {
        file: "pool.cu",
        source: include_str!("../../../kernels/pool.cu"),
        kernels: &[
            kernel("pool_window_sum_u64", &[Ptr, Ptr, by_value::<PoolDims>()]),
            kernel("pool_unfold_u64", &[Ptr, Ptr, by_value::<PoolDims>(), U64]),
            kernel("pool_fold_u64", &[Ptr, Ptr, by_value::<PoolDims>()]),
        ],
    },
    KernelSource {
        file: "conv.cu",
        source: include_str!("../../../kernels/conv.cu"),
        kernels: &[
            kernel("im2col_u64", &[Ptr, Ptr, by_value::<ConvDims>()]),
            kernel("col2im_u64", &[Ptr, Ptr, by_value::<ConvDims>()]),
        ],
    },
    KernelSource {
        file: "gemm.cu",
        source: include_str!("../../../kernels/gemm.cu"),
        kernels: &[
            kernel("gemm_tiled_u64", &[Ptr, Ptr, Ptr, by_value::<GemmDims>()]),
            kernel("split_i8", &[Ptr, Ptr, by_value::<SplitDims>()]),
            kernel("split_f64", &[Ptr, Ptr, by_value::<SplitDims>()]),
            kernel("recombine_i32", &[Ptr, Ptr, by_value::<RecombineDims>()]),
            kernel("recombine_f64", &[Ptr, Ptr, by_value::<RecombineDims>()]),
        ],
    },
    KernelSource {
        file: "chacha.cu",
        source: include_str!("../../../kernels/chacha.cu"),
        kernels: &[kernel(
            "chacha12_fill_u64",
            &[Ptr, U64, U64, U64, by_value::<ChachaKey>()],
        )],
    },
];

/// The declaration of kernel `name`.
pub fn decl(name: &str) -> Option<&'static KernelDecl> {
    SOURCES
        .iter()
        .flat_map(|s| s.kernels.iter())
        .find(|k| k.name == name)
}

/// NVRTC's output for one source: the PTX and the compile log (warnings, if any).
#[derive(Clone, Debug)]
pub struct CompiledPtx {
    /// The PTX text.
    pub ptx: String,
    /// NVRTC's log; empty when it had nothing to say.
    pub log: String,
}

/// The NVRTC options for a target such as `compute_90`.
pub fn nvrtc_options(arch: &str) -> Vec<String> {
    vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".into(),
        // Line tables let compute-sanitizer name the source line of a bad access.
        "--generate-line-info".into(),
    ]
}

/// The virtual architectures this NVRTC compiles for, as `major·10 + minor` (75, 80, ..).
pub fn supported_archs() -> Result<Vec<i32>, CudaError> {
    use cudarc::nvrtc::sys;
    crate::libs::nvrtc()?;
    let nvrtc_error = |e: cudarc::nvrtc::result::NvrtcError| CudaError::LibraryMissing {
        library: "libnvrtc",
        why: format!("it does not list its architectures: {e}"),
    };
    let mut count = 0;
    // SAFETY: NVRTC is loaded (checked above); the call writes one int.
    unsafe { sys::nvrtcGetNumSupportedArchs(&mut count) }
        .result()
        .map_err(nvrtc_error)?;
    let mut archs = vec![0; count.max(0) as usize];
    // SAFETY: `archs` has room for the `count` ints NVRTC writes.
    unsafe { sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) }
        .result()
        .map_err(nvrtc_error)?;
    Ok(archs)
}

/// The NVRTC target for a device of compute capability `(major, minor)`: its own
/// `compute_XY` if this NVRTC knows it, else the newest older one it knows (PTX for an
/// older virtual architecture runs on newer devices, compiled by the driver).
pub fn arch_for(compute_capability: (i32, i32)) -> Result<String, CudaError> {
    let device = compute_capability.0 * 10 + compute_capability.1;
    let archs = supported_archs()?;
    archs
        .iter()
        .copied()
        .filter(|&a| a <= device)
        .max()
        .map(|a| format!("compute_{a}"))
        .ok_or_else(|| CudaError::Compile {
            file: "(all)",
            arch: format!("compute_{device}"),
            status: "unsupported architecture".into(),
            log: format!("this NVRTC compiles for {archs:?}, none at or below the device's"),
        })
}

/// Compiles one source to PTX for `arch` (e.g. `compute_90`). A rejected source returns
/// [`CudaError::Compile`] with NVRTC's log.
pub fn compile_ptx(source: &KernelSource, arch: &str) -> Result<CompiledPtx, CudaError> {
    use cudarc::nvrtc::result as nvrtc;
    crate::libs::nvrtc()?;
    let fail = |status: String, log: String| CudaError::Compile {
        file: source.file,
        arch: arch.to_string(),
        status,
        log,
    };
    let code = CString::new(source.source)
        .map_err(|_| fail("source holds a NUL byte".into(), String::new()))?;
    let name = CString::new(source.file).expect("file names hold no NUL");
    let program = nvrtc::create_program(&code, Some(&name))
        .map_err(|e| fail(e.to_string(), String::new()))?;
    let options = nvrtc_options(arch);
    // SAFETY: `program` was just created and is destroyed only below; `code` and `name`
    // outlive it.
    let compiled = unsafe { nvrtc::compile_program(program, &options) };
    // SAFETY: as above, the program is alive.
    let log = unsafe { nvrtc::get_program_log(program) }
        .map(|raw| c_chars_to_string(&raw))
        .unwrap_or_default();
    let result = match compiled {
        // SAFETY: as above; the program compiled, so it has PTX.
        Ok(()) => unsafe { nvrtc::get_ptx(program) }
            .map(|raw| CompiledPtx {
                ptx: c_chars_to_string(&raw),
                log: log.clone(),
            })
            .map_err(|e| fail(e.to_string(), log)),
        Err(e) => Err(fail(e.to_string(), log)),
    };
    // SAFETY: the program is alive and not used after this.
    let _ = unsafe { nvrtc::destroy_program(program) };
    result
}

/// A NUL-terminated C string from NVRTC as a Rust string.
fn c_chars_to_string(raw: &[std::ffi::c_char]) -> String {
    let bytes: Vec<u8> = raw.iter().map(|&c| c as u8).collect();
    CStr::from_bytes_until_nul(&bytes)
        .map(|s| s.to_string_lossy().trim_end().to_string())
        .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim_end().to_string())
}

/// The parameters of `.entry name(..)` in a PTX text, or `None` if there is no such entry.
pub fn ptx_entry_params(ptx: &str, name: &str) -> Option<Vec<Param>> {
    let start = ptx.find(&format!(".entry {name}("))?;
    let rest = &ptx[start..];
    let body = &rest[rest.find('(')? + 1..rest.find(')')?];
    body.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let words: Vec<&str> = p.split_whitespace().collect();
            if words.contains(&".b8") {
                // `.param .align 8 .b8 name_param_3[208]`
                let last = words.last()?;
                let bytes = &last[last.find('[')? + 1..last.find(']')?];
                return Some(Param::Struct(bytes.parse().ok()?));
            }
            match words.get(1).copied() {
                Some(".u64") | Some(".s64") | Some(".b64") => Some(Param::U64),
                Some(".u32") | Some(".s32") | Some(".b32") => Some(Param::U32),
                _ => None,
            }
        })
        .collect()
}

/// Whether `actual` (from the PTX) fits the declaration: pointers and 64-bit integers are
/// both `.u64` in PTX.
pub fn params_match(declared: &[Param], actual: &[Param]) -> bool {
    declared.len() == actual.len()
        && declared.iter().zip(actual).all(|(d, a)| match d {
            Param::Ptr => *a == Param::U64,
            other => other == a,
        })
}

//! The WGSL sources, embedded with `include_str!`, and how a kernel's module is assembled:
//! a ring prelude (native `u64` or emulated `vec2<u32>` limbs), the shared bindings of
//! `common.wgsl`, then the kernel's own files.

/// Which arithmetic the kernels use for 64-bit ring elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RingPath {
    /// WGSL `u64` (needs the adapter feature `SHADER_INT64`).
    Native,
    /// Two 32-bit limbs per element (runs on every adapter).
    Emulated,
}

impl RingPath {
    /// Both paths, for tests.
    pub const ALL: [RingPath; 2] = [Self::Native, Self::Emulated];

    /// The prelude that defines `Ring` and its arithmetic on this path.
    pub fn prelude(self) -> &'static str {
        match self {
            Self::Native => RING_U64,
            Self::Emulated => RING_EMULATED,
        }
    }
}

const RING_U64: &str = include_str!("../../../shaders/ring_u64.wgsl");
const RING_EMULATED: &str = include_str!("../../../shaders/ring_emulated.wgsl");
const COMMON: &str = include_str!("../../../shaders/common.wgsl");
const ELEMENTWISE: &str = include_str!("../../../shaders/elementwise.wgsl");
const FUSED: &str = include_str!("../../../shaders/fused.wgsl");
const GATHER: &str = include_str!("../../../shaders/gather.wgsl");
const SELECT_ROWS: &str = include_str!("../../../shaders/select_rows.wgsl");
const BITS: &str = include_str!("../../../shaders/bits.wgsl");
const CHACHA12: &str = include_str!("../../../shaders/chacha12.wgsl");
const SUM_AXIS: &str = include_str!("../../../shaders/sum_axis.wgsl");
const POOL: &str = include_str!("../../../shaders/pool.wgsl");
const GEMM: &str = include_str!("../../../shaders/gemm.wgsl");
const MATMUL: &str = include_str!("../../../shaders/matmul.wgsl");
const CONV_COMMON: &str = include_str!("../../../shaders/conv_common.wgsl");
const CONV_FORWARD: &str = include_str!("../../../shaders/conv_forward.wgsl");
const CONV_GRAD_INPUT: &str = include_str!("../../../shaders/conv_grad_input.wgsl");
const CONV_GRAD_WEIGHT: &str = include_str!("../../../shaders/conv_grad_weight.wgsl");

/// Every file of `shaders/`, by name: the naga test checks that each one is here and used.
pub const FILES: [(&str, &str); 17] = [
    ("ring_u64.wgsl", RING_U64),
    ("ring_emulated.wgsl", RING_EMULATED),
    ("common.wgsl", COMMON),
    ("elementwise.wgsl", ELEMENTWISE),
    ("fused.wgsl", FUSED),
    ("gather.wgsl", GATHER),
    ("select_rows.wgsl", SELECT_ROWS),
    ("bits.wgsl", BITS),
    ("chacha12.wgsl", CHACHA12),
    ("sum_axis.wgsl", SUM_AXIS),
    ("pool.wgsl", POOL),
    ("gemm.wgsl", GEMM),
    ("matmul.wgsl", MATMUL),
    ("conv_common.wgsl", CONV_COMMON),
    ("conv_forward.wgsl", CONV_FORWARD),
    ("conv_grad_input.wgsl", CONV_GRAD_INPUT),
    ("conv_grad_weight.wgsl", CONV_GRAD_WEIGHT),
];

/// One compute pipeline: a WGSL module and its entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Binary, scalar, unary, shift, bit and fill ops (`elementwise.wgsl`).
    Elementwise,
    /// A fused elementwise program over up to six inputs, one dispatch per chunk
    /// (`fused.wgsl`); the one kernel with [`Kernel::FUSED_INPUTS`] read bindings.
    Fused,
    /// Strided copies: permute, slice, broadcast, concat (`gather.wgsl`).
    Gather,
    /// Rows picked by index, up to 128 a dispatch (`select_rows.wgsl`).
    SelectRows,
    /// Bit packing (`bits.wgsl`, `pack`).
    PackBits,
    /// Bit unpacking (`bits.wgsl`, `unpack`).
    UnpackBits,
    /// Bit slicing, word-major (`bits.wgsl`, `planes`).
    BitPlanes,
    /// The ChaCha12 keystream (`chacha12.wgsl`).
    ChaCha12,
    /// Sum over an axis (`sum_axis.wgsl`).
    SumAxis,
    /// Sum of every pooling window (`pool.wgsl`, `window_sum`).
    PoolWindowSum,
    /// Pooling windows gathered (`pool.wgsl`, `unfold`).
    PoolUnfold,
    /// The adjoint of the unfold (`pool.wgsl`, `fold`).
    PoolFold,
    /// Batched matrix product (`gemm.wgsl` + `matmul.wgsl`).
    Matmul,
    /// Convolution as implicit GEMM (`gemm.wgsl` + `conv_forward.wgsl`).
    ConvForward,
    /// Its input gradient (`gemm.wgsl` + `conv_grad_input.wgsl`).
    ConvGradInput,
    /// Its weight gradient (`gemm.wgsl` + `conv_grad_weight.wgsl`).
    ConvGradWeight,
}

impl Kernel {
    /// Every kernel.
    pub const ALL: [Kernel; 16] = [
        Self::Elementwise,
        Self::Fused,
        Self::Gather,
        Self::SelectRows,
        Self::PackBits,
        Self::UnpackBits,
        Self::BitPlanes,
        Self::ChaCha12,
        Self::SumAxis,
        Self::PoolWindowSum,
        Self::PoolUnfold,
        Self::PoolFold,
        Self::Matmul,
        Self::ConvForward,
        Self::ConvGradInput,
        Self::ConvGradWeight,
    ];

    /// The read storage bindings of [`Kernel::Fused`]: 0 and 1 (`src_a`, `src_b` of
    /// `common.wgsl`) and 4 to 7 (`fused.wgsl`), around the output (2) and parameters (3).
    pub const FUSED_INPUTS: usize = cryptgpu_backend::fused::FUSED_MAX_INPUTS;

    /// How many inputs the kernel binds: [`Kernel::FUSED_INPUTS`] for [`Kernel::Fused`],
    /// 2 (`src_a`, `src_b`) for every other kernel.
    pub fn inputs(self) -> usize {
        match self {
            Self::Fused => Self::FUSED_INPUTS,
            _ => 2,
        }
    }

    /// The entry point's name in the module.
    pub fn entry_point(self) -> &'static str {
        match self {
            Self::PackBits => "pack",
            Self::UnpackBits => "unpack",
            Self::BitPlanes => "planes",
            Self::PoolWindowSum => "window_sum",
            Self::PoolUnfold => "unfold",
            Self::PoolFold => "fold",
            _ => "main",
        }
    }

    /// The files of the module after the prelude, in order.
    pub fn files(self) -> &'static [&'static str] {
        match self {
            Self::Elementwise => &["common.wgsl", "elementwise.wgsl"],
            Self::Fused => &["common.wgsl", "fused.wgsl"],
            Self::Gather => &["common.wgsl", "gather.wgsl"],
            Self::SelectRows => &["common.wgsl", "select_rows.wgsl"],
            Self::PackBits | Self::UnpackBits | Self::BitPlanes => &["common.wgsl", "bits.wgsl"],
            Self::ChaCha12 => &["common.wgsl", "chacha12.wgsl"],
            Self::SumAxis => &["common.wgsl", "sum_axis.wgsl"],
            Self::PoolWindowSum | Self::PoolUnfold | Self::PoolFold => {
                &["common.wgsl", "pool.wgsl"]
            }
            Self::Matmul => &["common.wgsl", "gemm.wgsl", "matmul.wgsl"],
            Self::ConvForward => &[
                "common.wgsl",
                "gemm.wgsl",
                "conv_common.wgsl",
                "conv_forward.wgsl",
            ],
            Self::ConvGradInput => &[
                "common.wgsl",
                "gemm.wgsl",
                "conv_common.wgsl",
                "conv_grad_input.wgsl",
            ],
            Self::ConvGradWeight => &[
                "common.wgsl",
                "gemm.wgsl",
                "conv_common.wgsl",
                "conv_grad_weight.wgsl",
            ],
        }
    }

    /// The whole WGSL module of this kernel on `path`.
    pub fn source(self, path: RingPath) -> String {
        let mut source = String::from(path.prelude());
        for name in self.files() {
            let (_, text) = FILES
                .iter()
                .find(|(file, _)| file == name)
                .expect("every kernel file is in FILES");
            source.push('\n');
            source.push_str(text);
        }
        source
    }
}

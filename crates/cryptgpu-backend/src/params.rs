//! Op selectors and the parameters of convolution and pooling, shared by every backend.

/// An elementwise op on two ring tensors (or a tensor and a public scalar), mod 2^64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// Wrapping addition.
    Add,
    /// Wrapping subtraction, `lhs - rhs`.
    Sub,
    /// Wrapping multiplication (the low 64 bits of the product).
    Mul,
    /// Bitwise and.
    And,
    /// Bitwise or.
    Or,
    /// Bitwise exclusive or.
    Xor,
}

impl BinaryOp {
    /// Every binary op, for tests and kernel tables.
    pub const ALL: [BinaryOp; 6] = [
        Self::Add,
        Self::Sub,
        Self::Mul,
        Self::And,
        Self::Or,
        Self::Xor,
    ];

    /// The op on two scalars: the definition every backend must match bit for bit.
    #[inline]
    pub fn apply(self, lhs: u64, rhs: u64) -> u64 {
        match self {
            Self::Add => lhs.wrapping_add(rhs),
            Self::Sub => lhs.wrapping_sub(rhs),
            Self::Mul => lhs.wrapping_mul(rhs),
            Self::And => lhs & rhs,
            Self::Or => lhs | rhs,
            Self::Xor => lhs ^ rhs,
        }
    }
}

/// An elementwise op on one ring tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// Wrapping negation (additive inverse mod 2^64).
    Neg,
    /// Bitwise not.
    Not,
}

impl UnaryOp {
    /// Every unary op.
    pub const ALL: [UnaryOp; 2] = [Self::Neg, Self::Not];

    /// The op on a scalar.
    #[inline]
    pub fn apply(self, x: u64) -> u64 {
        match self {
            Self::Neg => x.wrapping_neg(),
            Self::Not => !x,
        }
    }
}

/// A shift by a public amount in `0..64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShiftOp {
    /// Shift left, zeros in.
    Left,
    /// Logical shift right, zeros in (the unsigned view).
    RightLogical,
    /// Arithmetic shift right, sign bit in (the two's complement view; fixed-point truncation).
    RightArithmetic,
}

impl ShiftOp {
    /// Every shift op.
    pub const ALL: [ShiftOp; 3] = [Self::Left, Self::RightLogical, Self::RightArithmetic];

    /// The op on a scalar; `bits` must be below 64.
    #[inline]
    pub fn apply(self, x: u64, bits: u32) -> u64 {
        match self {
            Self::Left => x << bits,
            Self::RightLogical => x >> bits,
            Self::RightArithmetic => ((x as i64) >> bits) as u64,
        }
    }
}

/// Parameters of a 2-d convolution over NCHW tensors with OIHW weights (PyTorch's layout).
///
/// With `groups = g`, the `C` input channels and `O` output channels are split into `g`
/// equal groups; output channel `o` sees only the input channels of its group, so the
/// weight tensor is `[O, C / g, kh, kw]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dParams {
    /// Step between windows, `[vertical, horizontal]`; at least 1.
    pub stride: [usize; 2],
    /// Zero rows and columns added on each side, `[vertical, horizontal]`.
    pub padding: [usize; 2],
    /// Channel groups; divides both `C` and `O`.
    pub groups: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Self {
            stride: [1, 1],
            padding: [0, 0],
            groups: 1,
        }
    }
}

impl Conv2dParams {
    /// Stride `s` and padding `p` on both axes, one group.
    pub fn new(stride: usize, padding: usize) -> Self {
        Self {
            stride: [stride, stride],
            padding: [padding, padding],
            groups: 1,
        }
    }

    /// The same parameters with `groups` channel groups.
    pub fn with_groups(self, groups: usize) -> Self {
        Self { groups, ..self }
    }
}

/// Parameters of a 2-d pooling window over NCHW tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pool2dParams {
    /// Window size, `[height, width]`; at least 1.
    pub kernel: [usize; 2],
    /// Step between windows; at least 1.
    pub stride: [usize; 2],
    /// Rows and columns of padding added on each side (each below the kernel size).
    pub padding: [usize; 2],
}

impl Pool2dParams {
    /// A square `k`×`k` window with stride `s` and no padding (e.g. `new(2, 2)` for 2×2 pooling).
    pub fn new(kernel: usize, stride: usize) -> Self {
        Self {
            kernel: [kernel, kernel],
            stride: [stride, stride],
            padding: [0, 0],
        }
    }

    /// The same window with padding `p` on both axes.
    pub fn with_padding(self, padding: usize) -> Self {
        Self {
            padding: [padding, padding],
            ..self
        }
    }

    /// Elements in one window.
    pub fn window_len(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }
}

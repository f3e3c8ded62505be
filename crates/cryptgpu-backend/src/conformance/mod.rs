//! The conformance suite: every [`GpuBackend`] op against the scalar [`reference`](mod@reference), on
//! random nonzero inputs and odd shapes, compared bit for bit. Each backend crate runs it
//! with one line, `cryptgpu_backend::conformance_tests!(make_backend);`, where
//! `make_backend: fn() -> Option<B>` returns `None` (after saying why, see [`unavailable`])
//! when the backend has no device here.

pub mod reference;

use crate::shape::packed_words;
use crate::{
    BinaryOp, Conv2dParams, DeviceTensor, GpuBackend, Pool2dParams, Result, ShiftOp, UnaryOp,
};
use rand_chacha::ChaCha8Rng;
use rand_chacha::ChaCha12Rng;
use rand_core::{Rng, SeedableRng};
use reference::HostTensor;

/// What a backend's `make_backend` returns when it has no device: `None` after printing
/// that the tests skip, or a panic when the environment variable `CRYPTGPU_REQUIRE_<NAME>`
/// (e.g. `CRYPTGPU_REQUIRE_WGPU=1`) says this machine must run them (CI sets it).
pub fn unavailable<B>(backend: &str, why: impl std::fmt::Display) -> Option<B> {
    let var = format!("CRYPTGPU_REQUIRE_{}", backend.to_uppercase());
    if std::env::var_os(&var).is_some_and(|v| !v.is_empty() && v != "0") {
        panic!("{var} is set but the {backend} backend is unavailable: {why}");
    }
    eprintln!(
        "skipped: the {backend} backend is unavailable here ({why}); set {var}=1 to make this a failure"
    );
    None
}

/// Deterministic random inputs for one check: nonzero (a zero would hide a wrong operand
/// or a missing term) and covering all 64 bits.
pub struct Inputs(ChaCha8Rng);

impl Inputs {
    /// A generator seeded from the check's name, so every run sees the same data.
    pub fn new(check: &str) -> Self {
        let seed = check.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        Self(ChaCha8Rng::seed_from_u64(seed))
    }

    /// A random nonzero ring element.
    pub fn elem(&mut self) -> u64 {
        loop {
            let v = self.0.next_u64();
            if v != 0 {
                return v;
            }
        }
    }

    /// `n` random nonzero ring elements.
    pub fn elems(&mut self, n: usize) -> Vec<u64> {
        (0..n).map(|_| self.elem()).collect()
    }

    /// A random host tensor of `shape`.
    pub fn tensor(&mut self, shape: &[usize]) -> HostTensor {
        HostTensor::new(self.elems(shape.iter().product()), shape)
    }

    /// A random 256-bit key.
    pub fn key(&mut self) -> [u8; 32] {
        let mut key = [0u8; 32];
        self.0.fill_bytes(&mut key);
        key
    }
}

/// Uploads a host tensor.
pub fn upload<B: GpuBackend>(backend: &B, x: &HostTensor) -> B::Tensor {
    backend.upload(&x.data, &x.shape).expect("upload")
}

/// Downloads a device tensor with its shape.
pub fn download<B: GpuBackend>(backend: &B, t: &B::Tensor) -> HostTensor {
    let data = backend.download(t).expect("download");
    HostTensor::new(data, t.shape())
}

/// Asserts that a backend's result equals the reference bit for bit, naming the first
/// differing element instead of dumping both tensors.
#[track_caller]
pub fn assert_same(what: &str, got: &HostTensor, want: &HostTensor) {
    assert_eq!(got.shape, want.shape, "{what}: shape differs");
    if let Some(i) = got.data.iter().zip(&want.data).position(|(g, w)| g != w) {
        let diffs = got
            .data
            .iter()
            .zip(&want.data)
            .filter(|(g, w)| g != w)
            .count();
        panic!(
            "{what}: {diffs} of {} elements differ; first at flat index {i}: got {:#018x}, want {:#018x}",
            want.data.len(),
            got.data[i],
            want.data[i]
        );
    }
}

/// Asserts that an op succeeded and that its result, downloaded, equals `want` bit for bit.
#[track_caller]
pub fn assert_op<B: GpuBackend>(
    backend: &B,
    what: &str,
    got: Result<B::Tensor>,
    want: &HostTensor,
) {
    let got = got.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_same(what, &download(backend, &got), want);
}

/// Asserts that an op refused its arguments; `why` says what the refusal is for.
#[track_caller]
pub fn assert_refused<T>(got: Result<T>, why: &str) {
    assert!(got.is_err(), "{why}");
}

/// Shapes that catch off-by-one and tail handling: scalars, ones, primes, a power of two
/// and one past it.
const ELEMENTWISE_SHAPES: &[&[usize]] = &[
    &[],
    &[1],
    &[7],
    &[64],
    &[65],
    &[3, 5],
    &[2, 3, 7],
    &[1000],
    &[4099],
    &[2, 1, 3, 1, 5],
    &[33, 129],
];

/// Uploads and downloads keep every bit; a buffer of the wrong length is refused.
pub fn check_upload_download<B: GpuBackend>(backend: &B) {
    let mut rng = Inputs::new("upload_download");
    for shape in ELEMENTWISE_SHAPES
        .iter()
        .copied()
        .chain([&[0usize, 3][..], &[4, 0]])
    {
        let x = rng.tensor(shape);
        let t = upload(backend, &x);
        assert_eq!(t.shape(), shape);
        assert_same(
            &format!("upload/download {shape:?}"),
            &download(backend, &t),
            &x,
        );
    }
    assert_refused(
        backend.upload(&[1, 2, 3], &[2, 2]),
        "upload of 3 elements as [2, 2] must fail",
    );
    backend.sync().expect("sync");
}

/// `full` and `zeros`.
pub fn check_full_and_zeros<B: GpuBackend>(backend: &B) {
    let mut rng = Inputs::new("full");
    for shape in ELEMENTWISE_SHAPES {
        let v = rng.elem();
        let n = shape.iter().product();
        assert_same(
            "full",
            &download(backend, &backend.full(shape, v).unwrap()),
            &HostTensor::new(vec![v; n], shape),
        );
        assert_same(
            "zeros",
            &download(backend, &backend.zeros(shape).unwrap()),
            &HostTensor::new(vec![0; n], shape),
        );
    }
}

/// `reshape` keeps the elements; a different element count is refused.
pub fn check_reshape<B: GpuBackend>(backend: &B) {
    let x = Inputs::new("reshape").tensor(&[2, 3, 5]);
    let t = upload(backend, &x);
    for shape in [&[30usize][..], &[5, 6], &[1, 30, 1], &[3, 2, 5]] {
        let r = backend.reshape(&t, shape).unwrap();
        assert_same(
            "reshape",
            &download(backend, &r),
            &HostTensor::new(x.data.clone(), shape),
        );
    }
    assert_refused(
        backend.reshape(&t, &[31]),
        "reshape to another element count must fail",
    );
}

/// `permute` and `transpose` on ranks 2 to 4.
pub fn check_permute<B: GpuBackend>(backend: &B) {
    let mut rng = Inputs::new("permute");
    let cases: &[(&[usize], &[usize])] = &[
        (&[7, 5], &[1, 0]),
        (&[1, 9], &[1, 0]),
        (&[3, 5, 7], &[2, 0, 1]),
        (&[3, 5, 7], &[1, 2, 0]),
        (&[3, 5, 7], &[0, 2, 1]),
        (&[2, 3, 5, 7], &[3, 1, 0, 2]),
        (&[2, 3, 5, 7], &[0, 1, 2, 3]),
        (&[65, 33], &[1, 0]),
    ];
    for &(shape, axes) in cases {
        let x = rng.tensor(shape);
        assert_op(
            backend,
            &format!("permute {shape:?} by {axes:?}"),
            backend.permute(&upload(backend, &x), axes),
            &reference::permute(&x, axes),
        );
    }
    let x = rng.tensor(&[4, 6, 5]);
    assert_op(
        backend,
        "transpose",
        backend.transpose(&upload(backend, &x), 0, 2),
        &reference::permute(&x, &[2, 1, 0]),
    );
    let t = upload(backend, &x);
    assert_refused(backend.permute(&t, &[0, 0, 1]), "a repeated axis must fail");
    assert_refused(backend.permute(&t, &[0, 1]), "too few axes must fail");
}

/// `slice` along every axis, empty and full ranges included.
pub fn check_slice<B: GpuBackend>(backend: &B) {
    let x = Inputs::new("slice").tensor(&[5, 7, 9]);
    let t = upload(backend, &x);
    for axis in 0..3 {
        let extent = x.shape[axis];
        for (start, end) in [
            (0, extent),
            (1, extent - 1),
            (2, 3),
            (extent, extent),
            (0, 1),
        ] {
            assert_op(
                backend,
                &format!("slice axis {axis} {start}..{end}"),
                backend.slice(&t, axis, start..end),
                &reference::slice(&x, axis, start, end),
            );
        }
    }
    assert_refused(backend.slice(&t, 3, 0..1), "slice past the rank must fail");
    assert_refused(
        backend.slice(&t, 0, 2..6),
        "slice past the extent must fail",
    );
}

/// `concat` along every axis, of two and three tensors.
pub fn check_concat<B: GpuBackend>(backend: &B) {
    let mut rng = Inputs::new("concat");
    for axis in 0..3 {
        let mut shapes = [[3usize, 4, 5], [3, 4, 5], [3, 4, 5]];
        shapes[1][axis] = 1;
        shapes[2][axis] = 7;
        let xs: Vec<HostTensor> = shapes.iter().map(|s| rng.tensor(s)).collect();
        let ts: Vec<B::Tensor> = xs.iter().map(|x| upload(backend, x)).collect();
        assert_op(
            backend,
            &format!("concat axis {axis}"),
            backend.concat(&ts.iter().collect::<Vec<_>>(), axis),
            &reference::concat(&xs.iter().collect::<Vec<_>>(), axis),
        );
        assert_op(
            backend,
            &format!("concat of two, axis {axis}"),
            backend.concat(&[&ts[0], &ts[1]], axis),
            &reference::concat(&[&xs[0], &xs[1]], axis),
        );
    }
    let a = upload(backend, &rng.tensor(&[2, 3]));
    let b = upload(backend, &rng.tensor(&[3, 3]));
    assert_refused(backend.concat(&[&a, &b], 1), "mismatched extents must fail");
    assert_refused(backend.concat(&[], 0), "an empty list must fail");
}

/// `select_rows`: repeated, missing (zero) and out-of-order rows, of matrices and of a
/// 3-d tensor, more rows than a launch's parameter block holds, and refusals.
pub fn check_select_rows<B: GpuBackend>(backend: &B) {
    let mut rng = Inputs::new("select_rows");
    let cases: Vec<(Vec<usize>, Vec<Option<usize>>)> = vec![
        (vec![5, 7], vec![Some(4), None, Some(0), Some(4), Some(2)]),
        (vec![3, 2, 65], vec![Some(2), Some(1)]),
        (vec![1, 3], vec![None, None]),
        (vec![4, 1], vec![]),
        (
            vec![9, 130],
            (0..300).map(|i| (i % 10 < 9).then_some(i % 9)).collect(),
        ),
    ];
    for (shape, rows) in cases {
        let x = rng.tensor(&shape);
        assert_op(
            backend,
            &format!("select_rows of {shape:?}, {} rows", rows.len()),
            backend.select_rows(&upload(backend, &x), &rows),
            &reference::select_rows(&x, &rows),
        );
    }
    let t = upload(backend, &rng.tensor(&[3, 2]));
    assert_refused(
        backend.select_rows(&t, &[Some(3)]),
        "a row past the extent must fail",
    );
    let scalar = upload(backend, &rng.tensor(&[]));
    assert_refused(
        backend.select_rows(&scalar, &[Some(0)]),
        "a scalar has no rows",
    );
}

/// `broadcast_to` by NumPy's rules.
pub fn check_broadcast<B: GpuBackend>(backend: &B) {
    let mut rng = Inputs::new("broadcast");
    let cases: &[(&[usize], &[usize])] = &[
        (&[], &[2, 3]),
        (&[5], &[4, 5]),
        (&[3, 1, 5], &[2, 3, 4, 5]),
        (&[1, 1], &[7, 9]),
        (&[2, 3], &[2, 3]),
        (&[4, 1], &[4, 65]),
    ];
    for &(from, to) in cases {
        let x = rng.tensor(from);
        assert_op(
            backend,
            &format!("broadcast {from:?} to {to:?}"),
            backend.broadcast_to(&upload(backend, &x), to),
            &reference::broadcast(&x, to),
        );
    }
    let t = upload(backend, &rng.tensor(&[3, 2]));
    assert_refused(
        backend.broadcast_to(&t, &[3, 3]),
        "an extent of 2 cannot broadcast to 3",
    );
    assert_refused(
        backend.broadcast_to(&t, &[2]),
        "broadcast to a lower rank must fail",
    );
}

/// Every elementwise binary op, tensor with tensor and tensor with a public scalar.
pub fn check_binary<B: GpuBackend>(backend: &B) {
    let mut rng = Inputs::new("binary");
    for shape in ELEMENTWISE_SHAPES {
        let (a, b) = (rng.tensor(shape), rng.tensor(shape));
        let (ta, tb) = (upload(backend, &a), upload(backend, &b));
        let s = rng.elem();
        for op in BinaryOp::ALL {
            assert_op(
                backend,
                &format!("{op:?} {shape:?}"),
                backend.binary(op, &ta, &tb),
                &reference::binary(op, &a, &b),
            );
            assert_op(
                backend,
                &format!("{op:?} scalar {shape:?}"),
                backend.binary_scalar(op, &ta, s),
                &a.map(|x| op.apply(x, s)),
            );
        }
    }
    let a = upload(backend, &rng.tensor(&[3, 4]));
    let b = upload(backend, &rng.tensor(&[4, 3]));
    assert_refused(
        backend.binary(BinaryOp::Add, &a, &b),
        "elementwise ops on different shapes must fail",
    );
}

/// `fused`: an AND's local step with its zero sharing (six inputs), a product's, and
/// programs that use every op kind on every elementwise shape; refusals of bad programs
/// and of inputs of different shapes.
pub fn check_fused<B: GpuBackend>(backend: &B) {
    use crate::{Fused, FusedStep, Operand};
    let mut rng = Inputs::new("fused");
    let input = Operand::Input;
    let mut programs: Vec<(usize, Fused)> = Vec::new();
    let and = Fused::and_term();
    programs.push((6, and));
    let mut every = Fused::new();
    let mut last = input(0);
    for (i, op) in BinaryOp::ALL.into_iter().enumerate() {
        last = every.binary(op, last, input(i as u8 % 3));
    }
    for op in BinaryOp::ALL {
        last = every.push(FusedStep::Scalar(op, last, rng.elem() | 1));
    }
    programs.push((3, every.clone()));
    let mut shifts = Fused::new();
    let mut last = shifts.push(FusedStep::Unary(UnaryOp::Neg, input(0)));
    last = shifts.push(FusedStep::Unary(UnaryOp::Not, last));
    for (op, bits) in [
        (ShiftOp::Left, 3),
        (ShiftOp::RightLogical, 63),
        (ShiftOp::RightArithmetic, 0),
        (ShiftOp::RightArithmetic, 17),
    ] {
        let shifted = shifts.push(FusedStep::Shift(op, input(1), bits));
        last = shifts.binary(BinaryOp::Add, last, shifted);
    }
    programs.push((2, shifts));
    let mut one = Fused::new();
    one.push(FusedStep::Unary(UnaryOp::Neg, input(0)));
    programs.push((1, one));
    for shape in ELEMENTWISE_SHAPES {
        for (count, program) in &programs {
            let xs: Vec<HostTensor> = (0..*count).map(|_| rng.tensor(shape)).collect();
            let ts: Vec<B::Tensor> = xs.iter().map(|x| upload(backend, x)).collect();
            assert_op(
                backend,
                &format!(
                    "fused program of {} steps on {shape:?}",
                    program.steps().len()
                ),
                backend.fused(program, &ts.iter().collect::<Vec<_>>()),
                &reference::fused(program, &xs.iter().collect::<Vec<_>>()),
            );
        }
    }
    let a = upload(backend, &rng.tensor(&[3, 4]));
    let b = upload(backend, &rng.tensor(&[4, 3]));
    let mut add = Fused::new();
    add.binary(BinaryOp::Add, input(0), input(1));
    assert_refused(
        backend.fused(&add, &[&a, &b]),
        "inputs of different shapes must fail",
    );
    assert_refused(
        backend.fused(&add, &[&a]),
        "a program reading an input it is not given must fail",
    );
    assert_refused(
        backend.fused(&Fused::new(), &[&a]),
        "an empty program must fail",
    );
}

/// Every unary op.
pub fn check_unary<B: GpuBackend>(backend: &B) {
    let mut rng = Inputs::new("unary");
    for shape in ELEMENTWISE_SHAPES {
        let a = rng.tensor(shape);
        for op in UnaryOp::ALL {
            assert_op(
                backend,
                &format!("{op:?} {shape:?}"),
                backend.unary(op, &upload(backend, &a)),
                &a.map(|x| op.apply(x)),
            );
        }
    }
}

/// Every shift by 0, 1, a middle amount and 63; 64 is refused.
pub fn check_shift<B: GpuBackend>(backend: &B) {
    let mut rng = Inputs::new("shift");
    for shape in ELEMENTWISE_SHAPES {
        let a = rng.tensor(shape);
        let t = upload(backend, &a);
        for op in ShiftOp::ALL {
            for bits in [0, 1, 20, 31, 32, 63] {
                assert_op(
                    backend,
                    &format!("{op:?} by {bits} {shape:?}"),
                    backend.shift(op, &t, bits),
                    &a.map(|x| op.apply(x, bits)),
                );
            }
            assert_refused(backend.shift(op, &t, 64), "a shift by 64 must fail");
        }
    }
}

/// `extract_bit` for low, middle and top bits.
pub fn check_extract_bit<B: GpuBackend>(backend: &B) {
    let mut rng = Inputs::new("extract_bit");
    for shape in ELEMENTWISE_SHAPES {
        let a = rng.tensor(shape);
        let t = upload(backend, &a);
        for bit in [0, 1, 31, 32, 62, 63] {
            assert_op(
                backend,
                &format!("bit {bit} {shape:?}"),
                backend.extract_bit(&t, bit),
                &a.map(|x| (x >> bit) & 1),
            );
        }
        assert_refused(backend.extract_bit(&t, 64), "bit 64 must fail");
    }
}

/// `pack_bits` reads only the lowest bit and zeroes the unused tail; `unpack_bits` inverts it.
pub fn check_pack_bits<B: GpuBackend>(backend: &B) {
    let mut rng = Inputs::new("pack_bits");
    for n in [1usize, 2, 63, 64, 65, 127, 128, 1000, 4097, 100_003] {
        let a = rng.tensor(&[n]);
        let got = backend.pack_bits(&upload(backend, &a)).unwrap();
        let mut want = vec![0u64; packed_words(n)];
        for (i, &x) in a.data.iter().enumerate() {
            want[i / 64] |= (x & 1) << (i % 64);
        }
        let want = HostTensor::new(want, &[packed_words(n)]);
        assert_same(&format!("pack {n}"), &download(backend, &got), &want);

        let shape = [1, n, 1];
        let unpacked = backend.unpack_bits(&got, &shape).unwrap();
        let want = HostTensor::new(a.data.iter().map(|&x| x & 1).collect(), &shape);
        assert_same(&format!("unpack {n}"), &download(backend, &unpacked), &want);
    }
    let packed = upload(backend, &rng.tensor(&[2]));
    assert_refused(
        backend.unpack_bits(&packed, &[200]),
        "200 bits need 4 words, not 2",
    );
    let from_words = backend.unpack_bits(&packed, &[2, 64]).unwrap();
    let words = backend.download(&packed).unwrap();
    let want: Vec<u64> = (0..128).map(|i| (words[i / 64] >> (i % 64)) & 1).collect();
    assert_same(
        "unpack of random words",
        &download(backend, &from_words),
        &HostTensor::new(want, &[2, 64]),
    );
}

/// Batched matrix products on odd shapes, with and without broadcasting of one side.
pub fn check_matmul<B: GpuBackend>(backend: &B) {
    let mut rng = Inputs::new("matmul");
    let cases: &[(&[usize], &[usize])] = &[
        (&[1, 1], &[1, 1]),
        (&[1, 7], &[7, 1]),
        (&[7, 1], &[1, 5]),
        (&[7, 13], &[13, 5]),
        (&[33, 65], &[65, 17]),
        (&[64, 64], &[64, 64]),
        (&[100, 37], &[37, 129]),
        (&[3, 5, 7], &[3, 7, 9]),
        (&[2, 3, 5, 7], &[7, 4]),
        (&[6, 11], &[2, 3, 11, 5]),
        (&[4, 0], &[0, 3]),
    ];
    for &(sa, sb) in cases {
        let (a, b) = (rng.tensor(sa), rng.tensor(sb));
        assert_op(
            backend,
            &format!("matmul {sa:?} x {sb:?}"),
            backend.matmul(&upload(backend, &a), &upload(backend, &b)),
            &reference::matmul(&a, &b),
        );
    }
    let bad: &[(&[usize], &[usize])] = &[
        (&[3, 4], &[5, 2]),
        (&[4], &[4, 2]),
        (&[2, 3, 4], &[3, 4, 2]),
    ];
    for &(sa, sb) in bad {
        let (a, b) = (
            upload(backend, &rng.tensor(sa)),
            upload(backend, &rng.tensor(sb)),
        );
        assert_refused(backend.matmul(&a, &b), "matmul {sa:?} x {sb:?} must fail");
    }
}

/// Convolution parameters, spelled out for the case tables.
const fn conv(stride: [usize; 2], padding: [usize; 2], groups: usize) -> Conv2dParams {
    Conv2dParams {
        stride,
        padding,
        groups,
    }
}

/// Convolutions with stride, padding, rectangular kernels and groups.
const CONV_CASES: &[([usize; 4], [usize; 4], Conv2dParams)] = &[
    ([1, 1, 5, 5], [1, 1, 3, 3], conv([1, 1], [0, 0], 1)),
    ([2, 3, 7, 9], [4, 3, 3, 2], conv([2, 1], [1, 0], 1)),
    ([1, 6, 8, 8], [9, 2, 3, 3], conv([1, 1], [1, 1], 3)),
    ([2, 4, 9, 7], [4, 1, 3, 3], conv([2, 2], [1, 1], 4)),
    ([1, 1, 28, 28], [20, 1, 5, 5], conv([1, 1], [0, 0], 1)),
    ([3, 5, 6, 6], [7, 5, 1, 1], conv([1, 1], [0, 0], 1)),
    ([1, 3, 11, 10], [5, 3, 4, 3], conv([3, 2], [2, 1], 1)),
];

/// Forward convolution.
pub fn check_conv2d<B: GpuBackend>(backend: &B) {
    let mut rng = Inputs::new("conv2d");
    for &(sx, sw, p) in CONV_CASES {
        let (x, w) = (rng.tensor(&sx), rng.tensor(&sw));
        assert_op(
            backend,
            &format!("conv2d {sx:?} * {sw:?} {p:?}"),
            backend.conv2d(&upload(backend, &x), &upload(backend, &w), p),
            &reference::conv2d(&x, &w, p),
        );
    }
    let x = upload(backend, &rng.tensor(&[1, 3, 5, 5]));
    let w = upload(backend, &rng.tensor(&[2, 2, 3, 3]));
    assert_refused(
        backend.conv2d(&x, &w, Conv2dParams::default()),
        "channel mismatch must fail",
    );
    let w = upload(backend, &rng.tensor(&[2, 3, 7, 7]));
    assert_refused(
        backend.conv2d(&x, &w, Conv2dParams::default()),
        "a kernel larger than the input must fail",
    );
    let w = upload(backend, &rng.tensor(&[2, 3, 3, 3]));
    assert_refused(
        backend.conv2d(&x, &w, Conv2dParams::new(0, 0)),
        "stride 0 must fail",
    );
}

/// The output shape of a valid convolution case.
fn conv_output_shape(input: &[usize], weight: &[usize], p: Conv2dParams) -> Vec<usize> {
    let dims = crate::shape::Conv2dDims::forward(input, weight, p);
    dims.expect("a valid convolution case").output_shape()
}

/// Gradient of the convolution with respect to the input.
pub fn check_conv2d_grad_input<B: GpuBackend>(backend: &B) {
    let mut rng = Inputs::new("conv2d_grad_input");
    for &(sx, sw, p) in CONV_CASES {
        let out_shape = conv_output_shape(&sx, &sw, p);
        let (g, w) = (rng.tensor(&out_shape), rng.tensor(&sw));
        let hw = [sx[2], sx[3]];
        assert_op(
            backend,
            &format!("conv2d_grad_input {sx:?} * {sw:?} {p:?}"),
            backend.conv2d_grad_input(&upload(backend, &g), &upload(backend, &w), hw, p),
            &reference::conv2d_grad_input(&g, &w, hw, p),
        );
    }
    let g = upload(backend, &rng.tensor(&[1, 2, 3, 3]));
    let w = upload(backend, &rng.tensor(&[2, 3, 3, 3]));
    assert_refused(
        backend.conv2d_grad_input(&g, &w, [6, 6], Conv2dParams::default()),
        "wrong input size must fail",
    );
}

/// Gradient of the convolution with respect to the weight.
pub fn check_conv2d_grad_weight<B: GpuBackend>(backend: &B) {
    let mut rng = Inputs::new("conv2d_grad_weight");
    for &(sx, sw, p) in CONV_CASES {
        let out_shape = conv_output_shape(&sx, &sw, p);
        let (x, g) = (rng.tensor(&sx), rng.tensor(&out_shape));
        let khw = [sw[2], sw[3]];
        assert_op(
            backend,
            &format!("conv2d_grad_weight {sx:?} * {sw:?} {p:?}"),
            backend.conv2d_grad_weight(&upload(backend, &x), &upload(backend, &g), khw, p),
            &reference::conv2d_grad_weight(&x, &g, khw, p),
        );
    }
    let x = upload(backend, &rng.tensor(&[1, 3, 5, 5]));
    let g = upload(backend, &rng.tensor(&[2, 2, 3, 3]));
    assert_refused(
        backend.conv2d_grad_weight(&x, &g, [3, 3], Conv2dParams::default()),
        "batch mismatch must fail",
    );
}

/// Sums over each axis.
pub fn check_sum_axis<B: GpuBackend>(backend: &B) {
    let mut rng = Inputs::new("sum_axis");
    for shape in [
        &[7usize][..],
        &[3, 5],
        &[2, 3, 7],
        &[4, 1, 65, 3],
        &[10, 1000],
    ] {
        let x = rng.tensor(shape);
        let t = upload(backend, &x);
        for axis in 0..shape.len() {
            assert_op(
                backend,
                &format!("sum {shape:?} over {axis}"),
                backend.sum_axis(&t, axis),
                &reference::sum_axis(&x, axis),
            );
        }
        assert_refused(
            backend.sum_axis(&t, shape.len()),
            "an axis past the rank must fail",
        );
    }
}

/// Pooling parameters, spelled out for the case tables.
const fn pool(kernel: [usize; 2], stride: [usize; 2], padding: [usize; 2]) -> Pool2dParams {
    Pool2dParams {
        kernel,
        stride,
        padding,
    }
}

/// Pooling windows: 2×2, overlapping 3×3 with stride 2, padded, rectangular.
const POOL_CASES: &[([usize; 4], Pool2dParams)] = &[
    ([1, 1, 4, 4], pool([2, 2], [2, 2], [0, 0])),
    ([2, 3, 7, 9], pool([2, 2], [2, 2], [0, 0])),
    ([2, 3, 9, 7], pool([3, 3], [2, 2], [1, 1])),
    ([1, 5, 8, 6], pool([3, 2], [1, 2], [1, 0])),
    ([3, 2, 5, 5], pool([5, 5], [1, 1], [0, 0])),
];

/// `pool_window_sum`.
pub fn check_pool_window_sum<B: GpuBackend>(backend: &B) {
    let mut rng = Inputs::new("pool_window_sum");
    for &(shape, p) in POOL_CASES {
        let x = rng.tensor(&shape);
        assert_op(
            backend,
            &format!("window sum {shape:?} {p:?}"),
            backend.pool_window_sum(&upload(backend, &x), p),
            &reference::pool_window_sum(&x, p),
        );
    }
    let t = upload(backend, &rng.tensor(&[1, 1, 2, 2]));
    assert_refused(
        backend.pool_window_sum(&t, Pool2dParams::new(3, 1)),
        "a window larger than the input must fail",
    );
}

/// `pool_unfold` with a padding value, and `pool_fold`, its adjoint.
pub fn check_pool_unfold_fold<B: GpuBackend>(backend: &B) {
    let mut rng = Inputs::new("pool_unfold");
    for &(shape, p) in POOL_CASES {
        let x = rng.tensor(&shape);
        let pad = rng.elem();
        let unfolded = reference::pool_unfold(&x, p, pad);
        assert_op(
            backend,
            &format!("unfold {shape:?} {p:?}"),
            backend.pool_unfold(&upload(backend, &x), p, pad),
            &unfolded,
        );

        let windows = rng.tensor(&unfolded.shape);
        assert_op(
            backend,
            &format!("fold {shape:?} {p:?}"),
            backend.pool_fold(&upload(backend, &windows), p, &shape),
            &reference::pool_fold(&windows, p, &shape),
        );
    }
    let t = upload(backend, &rng.tensor(&[4, 1, 2, 2]));
    assert_refused(
        backend.pool_fold(&t, Pool2dParams::new(2, 2), &[1, 1, 4, 4]),
        "windows of the wrong shape must fail",
    );
}

/// `fill_chacha12` against `rand_chacha::ChaCha12Rng`, word for word: several keys and
/// streams, positions inside a block, and a position where the block counter carries
/// into its high 32-bit word; and across the wrap of the position at 2^64, against the
/// scalar definition.
pub fn check_fill_chacha12<B: GpuBackend>(backend: &B) {
    let mut rng = Inputs::new("fill_chacha12");
    let positions = [0u64, 1, 7, 8, 13, (1u64 << 35) - 5, rng.elem() >> 4];
    for (case, &position) in positions.iter().enumerate() {
        let key = rng.key();
        let stream = if case == 2 { u64::MAX } else { rng.elem() };
        for shape in [&[1usize][..], &[3, 5], &[1000], &[2, 257]] {
            let got = backend
                .fill_chacha12(shape, &key, stream, position)
                .unwrap();
            let mut reference = ChaCha12Rng::from_seed(key);
            reference.set_stream(stream);
            reference.set_word_pos(2 * u128::from(position));
            let want = HostTensor::new(
                (0..shape.iter().product::<usize>())
                    .map(|_| reference.next_u64())
                    .collect(),
                shape,
            );
            assert_same(
                &format!("chacha12 position {position} {shape:?}"),
                &download(backend, &got),
                &want,
            );
        }
    }
    // Positions wrap at 2^64: the element at position p + i is rand_chacha's at word
    // 2·((p + i) mod 2^64), where one stream of rand_chacha would go on past block 2^61.
    let key = rng.key();
    for position in [u64::MAX - 300, u64::MAX] {
        let got = backend.fill_chacha12(&[2000], &key, 3, position).unwrap();
        let want = (0..2000u64)
            .map(|i| {
                let mut reference = ChaCha12Rng::from_seed(key);
                reference.set_stream(3);
                reference.set_word_pos(2 * u128::from(position.wrapping_add(i)));
                reference.next_u64()
            })
            .collect();
        assert_same(
            &format!("chacha12 across the wrap from {position}"),
            &download(backend, &got),
            &HostTensor::new(want, &[2000]),
        );
    }
}

/// Large elementwise tensors and PRG fills (several MiB), where backends split work into
/// threads, chunks or dispatches.
pub fn check_large<B: GpuBackend>(backend: &B) {
    let mut rng = Inputs::new("large");
    let n = (1 << 21) + 3;
    let (a, b) = (rng.tensor(&[n]), rng.tensor(&[n]));
    assert_op(
        backend,
        "large mul",
        backend.binary(BinaryOp::Mul, &upload(backend, &a), &upload(backend, &b)),
        &reference::binary(BinaryOp::Mul, &a, &b),
    );
    let key = rng.key();
    let got = download(backend, &backend.fill_chacha12(&[n], &key, 5, 3).unwrap());
    let mut reference = ChaCha12Rng::from_seed(key);
    reference.set_stream(5);
    reference.set_word_pos(6);
    let want = HostTensor::new((0..n).map(|_| reference.next_u64()).collect(), &[n]);
    assert_same("large chacha12", &got, &want);
}

/// Ops leave their inputs unchanged, and the same op run twice gives the same bits.
pub fn check_inputs_unchanged_and_deterministic<B: GpuBackend>(backend: &B) {
    let mut rng = Inputs::new("determinism");
    let (a, b) = (rng.tensor(&[37, 41]), rng.tensor(&[41, 29]));
    let (ta, tb) = (upload(backend, &a), upload(backend, &b));
    let first = download(backend, &backend.matmul(&ta, &tb).unwrap());
    let second = download(backend, &backend.matmul(&ta, &tb).unwrap());
    assert_same("matmul run twice", &second, &first);
    let x = rng.tensor(&[2, 4, 9, 9]);
    let w = rng.tensor(&[6, 2, 3, 3]);
    let (tx, tw) = (upload(backend, &x), upload(backend, &w));
    let p = Conv2dParams::new(1, 1).with_groups(2);
    let first = download(backend, &backend.conv2d(&tx, &tw, p).unwrap());
    let second = download(backend, &backend.conv2d(&tx, &tw, p).unwrap());
    assert_same("conv2d run twice", &second, &first);
    let _ = backend.add(&ta, &ta).unwrap();
    let _ = backend.reshape(&ta, &[41, 37]).unwrap();
    let _ = backend.shift(ShiftOp::Left, &ta, 3).unwrap();
    for (name, t, want) in [
        ("matmul lhs", &ta, &a),
        ("matmul rhs", &tb, &b),
        ("conv input", &tx, &x),
        ("conv weight", &tw, &w),
    ] {
        assert_same(&format!("{name} after ops"), &download(backend, t), want);
    }
}

/// `bit_planes`: row j packs bit j of every element (zero tail), for any length and rank.
pub fn check_bit_planes<B: GpuBackend>(backend: &B) {
    let mut rng = Inputs::new("bit_planes");
    for shape in [
        vec![1usize],
        vec![63],
        vec![64],
        vec![65],
        vec![3, 7, 11],
        vec![4097],
        vec![100_003],
    ] {
        let a = rng.tensor(&shape);
        let n = a.data.len();
        let words = packed_words(n);
        let got = backend.bit_planes(&upload(backend, &a)).unwrap();
        let mut want = vec![0u64; 64 * words];
        for (i, &x) in a.data.iter().enumerate() {
            for j in 0..64 {
                want[j * words + i / 64] |= ((x >> j) & 1) << (i % 64);
            }
        }
        assert_same(
            &format!("bit planes of {shape:?}"),
            &download(backend, &got),
            &HostTensor::new(want, &[64, words]),
        );
    }
}

/// The device-memory ledger ([`crate::memory`]) on `backend`: every tensor it makes is
/// charged to the calling thread's party, views and clones share their buffer's charge, the
/// last one gone gives it back, and a tensor past the party's limit is refused with
/// [`crate::BackendError::OutOfDeviceMemory`] (its bytes, the party, the limit) without
/// charging anything. Not part of [`conformance_tests!`]: it sets the process-wide limit, so
/// each backend crate runs it alone, in a test binary of its own.
pub fn check_memory_ledger<B: GpuBackend>(backend: &B) {
    use crate::BackendError;
    use crate::memory;
    memory::set_thread_party(Some(1));
    let live = || memory::party_live_bytes()[1];
    let base = live();
    memory::reset_party_peaks();
    // 1000 words: 8000 bytes a tensor.
    let data = Inputs::new("memory").elems(1000);
    let x = backend.upload(&data, &[10, 100]).unwrap();
    assert_eq!(live(), base + 8000, "an uploaded tensor is charged");
    let y = backend.add(&x, &x).unwrap();
    assert_eq!(live(), base + 16_000, "an op's output is charged");
    let view = backend.reshape(&y, &[100, 10]).unwrap();
    let copy = y.clone();
    assert_eq!(live(), base + 16_000, "views and clones share the charge");
    drop(y);
    drop(view);
    assert_eq!(live(), base + 16_000, "a clone keeps the buffer");
    drop(copy);
    assert_eq!(live(), base + 8000, "the last clone gives the buffer back");
    assert!(memory::party_peak_bytes()[1] >= base + 16_000);
    // Charged to the thread's party, whichever thread drops it.
    let z = backend.add(&x, &x).unwrap();
    std::thread::spawn(move || drop(z)).join().unwrap();
    assert_eq!(live(), base + 8000, "given back from another thread");

    memory::set_party_limit(Some(base + 8000 + 12_000));
    let fits = backend.add(&x, &x).unwrap();
    assert_eq!(live(), base + 16_000);
    let refused = backend.add(&x, &x);
    let refused_full = backend.full(&[3000], 7);
    memory::set_party_limit(None);
    for (what, refused, requested) in [("add", refused, 8000), ("full", refused_full, 24_000)] {
        match refused {
            Err(BackendError::OutOfDeviceMemory(memory::Shortfall {
                requested: asked,
                live: held,
                limit,
                party,
                by_driver,
            })) => {
                assert_eq!(asked, requested, "{what}: the bytes asked for");
                assert_eq!(held, base + 16_000, "{what}: the bytes held");
                assert_eq!(limit, base + 20_000, "{what}: the limit");
                assert_eq!(party, Some(1), "{what}: the party");
                assert!(!by_driver, "{what}");
            }
            Err(other) => panic!("{what} past the limit: {other}"),
            Ok(_) => panic!("{what} past the limit was not refused"),
        }
    }
    assert_eq!(live(), base + 16_000, "a refused tensor charges nothing");
    drop((x, fits));
    assert_eq!(live(), base, "every buffer given back");
    memory::set_thread_party(None);
}

/// Instantiates every `check_*` of [`crate::conformance`] as a `#[test]`, given a path to a
/// `fn() -> Option<B>` that makes the backend (or returns `None` after saying why it skips).
#[macro_export]
macro_rules! conformance_tests {
    ($make:path) => {
        $crate::conformance_tests!(@each $make;
            upload_download => check_upload_download,
            full_and_zeros => check_full_and_zeros,
            reshape => check_reshape,
            permute => check_permute,
            slice => check_slice,
            concat => check_concat,
            select_rows => check_select_rows,
            broadcast => check_broadcast,
            binary => check_binary,
            fused => check_fused,
            unary => check_unary,
            shift => check_shift,
            extract_bit => check_extract_bit,
            pack_bits => check_pack_bits,
            bit_planes => check_bit_planes,
            matmul => check_matmul,
            conv2d => check_conv2d,
            conv2d_grad_input => check_conv2d_grad_input,
            conv2d_grad_weight => check_conv2d_grad_weight,
            sum_axis => check_sum_axis,
            pool_window_sum => check_pool_window_sum,
            pool_unfold_fold => check_pool_unfold_fold,
            fill_chacha12 => check_fill_chacha12,
            large => check_large,
            inputs_unchanged_and_deterministic => check_inputs_unchanged_and_deterministic
        );
    };
    (@each $make:path; $($name:ident => $check:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                if let Some(backend) = $make() {
                    $crate::conformance::$check(&backend);
                }
            }
        )*
    };
}

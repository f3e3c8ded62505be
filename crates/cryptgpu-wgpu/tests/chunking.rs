//! Chunking against the CPU backend: with storage bindings capped far below the tensors,
//! every op must split its output into chunks and its inputs into windows and still agree
//! bit for bit; one elementwise op and one copy cross the adapter's real binding limit;
//! `select_rows` takes one dispatch per 128 rows; a fused program takes one dispatch per
//! chunk of its output; and clones of one backend used from three threads at once give
//! the results of one thread, run after run.

use cryptgpu_backend::conformance::{Inputs, assert_same, reference::HostTensor, unavailable};
use cryptgpu_backend::fused::FUSED_MAX_STEPS;
use cryptgpu_backend::{
    BinaryOp, Conv2dParams, DeviceTensor, Fused, FusedStep, GpuBackend, Operand, Pool2dParams,
    Result, ShiftOp, UnaryOp, counters,
};
use cryptgpu_cpu::CpuBackend;
use cryptgpu_wgpu::{Int64Mode, WgpuBackend, WgpuOptions};

fn open(int64: Int64Mode, max_binding_elements: Option<usize>) -> Option<WgpuBackend> {
    WgpuBackend::with_options(WgpuOptions {
        int64,
        max_binding_elements,
        ..WgpuOptions::default()
    })
    .map_err(|e| e.to_string())
    .or_else(|why| unavailable("wgpu", why).ok_or(()))
    .ok()
}

fn same<B: GpuBackend>(what: &str, backend: &B, got: &B::Tensor, want: &[u64], shape: &[usize]) {
    let got = HostTensor::new(backend.download(got).unwrap(), shape);
    assert_same(what, &got, &HostTensor::new(want.to_vec(), shape));
}

/// Runs a set of ops whose inputs span many 512-element windows on `gpu`, against the CPU.
fn check_ops_against_cpu(gpu: &WgpuBackend) {
    let cpu = CpuBackend::new();
    let mut rng = Inputs::new("chunking");
    let up = |x: &HostTensor| {
        (
            gpu.upload(&x.data, &x.shape).unwrap(),
            cpu.upload(&x.data, &x.shape).unwrap(),
        )
    };
    // The GPU's result of `what` against the CPU's, bit for bit, as a tensor of `shape`.
    let agree = |what: &str,
                 got: Result<<WgpuBackend as GpuBackend>::Tensor>,
                 want: Result<<CpuBackend as GpuBackend>::Tensor>,
                 shape: &[usize]| {
        let want = cpu.download(&want.unwrap()).unwrap();
        same(what, gpu, &got.unwrap(), &want, shape);
    };

    let (a, b) = (rng.tensor(&[70, 300]), rng.tensor(&[300, 45]));
    let ((ga, ca), (gb, cb)) = (up(&a), up(&b));
    agree(
        "matmul",
        gpu.matmul(&ga, &gb),
        cpu.matmul(&ca, &cb),
        &[70, 45],
    );

    let (a, b) = (rng.tensor(&[3, 40, 50]), rng.tensor(&[50, 30]));
    let ((ga, ca), (gb, cb)) = (up(&a), up(&b));
    let (got, want) = (gpu.matmul(&ga, &gb), cpu.matmul(&ca, &cb));
    agree("batched matmul", got, want, &[3, 40, 30]);

    let x = rng.tensor(&[3, 6, 17, 15]);
    let w = rng.tensor(&[8, 3, 3, 3]);
    let p = Conv2dParams::new(2, 1).with_groups(2);
    let ((gx, cx), (gw, cw)) = (up(&x), up(&w));
    let out = cpu.conv2d(&cx, &cw, p).unwrap();
    let out_shape = out.shape().to_vec();
    agree("conv2d", gpu.conv2d(&gx, &gw, p), Ok(out), &out_shape);
    let g = rng.tensor(&out_shape);
    let (gg, cg) = up(&g);
    let got = gpu.conv2d_grad_input(&gg, &gw, [17, 15], p);
    let want = cpu.conv2d_grad_input(&cg, &cw, [17, 15], p);
    agree("conv2d_grad_input", got, want, &x.shape);
    let got = gpu.conv2d_grad_weight(&gx, &gg, [3, 3], p);
    let want = cpu.conv2d_grad_weight(&cx, &cg, [3, 3], p);
    agree("conv2d_grad_weight", got, want, &w.shape);

    let pool = Pool2dParams::new(3, 2).with_padding(1);
    let (got, want) = (
        gpu.pool_window_sum(&gx, pool),
        cpu.pool_window_sum(&cx, pool),
    );
    agree("pool_window_sum", got, want, &[3, 6, 9, 8]);
    let windows = gpu.pool_unfold(&gx, pool, 7).unwrap();
    let window_shape = windows.shape().to_vec();
    let want = cpu.pool_unfold(&cx, pool, 7);
    agree("pool_unfold", Ok(windows), want, &window_shape);
    let wt = rng.tensor(&window_shape);
    let (gwt, cwt) = up(&wt);
    let got = gpu.pool_fold(&gwt, pool, &x.shape);
    let want = cpu.pool_fold(&cwt, pool, &x.shape);
    agree("pool_fold", got, want, &x.shape);

    let s = rng.tensor(&[300, 7, 5]);
    let (gs, cs) = up(&s);
    for axis in 0..3 {
        let want = cpu.sum_axis(&cs, axis).unwrap();
        let shape = want.shape().to_vec();
        agree("sum_axis", gpu.sum_axis(&gs, axis), Ok(want), &shape);
    }
    let (got, want) = (gpu.permute(&gs, &[2, 0, 1]), cpu.permute(&cs, &[2, 0, 1]));
    agree("permute", got, want, &[5, 300, 7]);
    let (got, want) = (gpu.slice(&gs, 0, 13..290), cpu.slice(&cs, 0, 13..290));
    agree("slice", got, want, &[277, 7, 5]);
    let t = rng.tensor(&[300, 1, 5]);
    let (gt, ct) = up(&t);
    let to = [2, 300, 7, 5];
    agree(
        "broadcast",
        gpu.broadcast_to(&gt, &to),
        cpu.broadcast_to(&ct, &to),
        &to,
    );
    let (got, want) = (
        gpu.concat(&[&gs, &gt, &gs], 1),
        cpu.concat(&[&cs, &ct, &cs], 1),
    );
    agree("concat", got, want, &[300, 15, 5]);
    // select_rows: rows spread further apart than a binding holds, rows longer than a
    // binding (in pieces), and more rows than one dispatch's table.
    let cases: Vec<(Vec<usize>, Vec<Option<usize>>)> = vec![
        (
            vec![40, 3, 10],
            (0..300)
                .map(|i| (i % 7 != 3).then_some((i * 13) % 40))
                .collect(),
        ),
        (vec![6, 700], vec![Some(5), None, Some(0), Some(5), Some(2)]),
        (
            vec![1000],
            (0..300).map(|i| Some((i * 37) % 1000)).collect(),
        ),
        (vec![1000], (0..300).map(Some).collect()),
    ];
    for (shape, rows) in cases {
        let x = rng.tensor(&shape);
        let (gx, cx) = up(&x);
        let want = cpu.select_rows(&cx, &rows).unwrap();
        let out_shape = want.shape().to_vec();
        let got = gpu.select_rows(&gx, &rows);
        agree(
            &format!("select_rows of {shape:?}"),
            got,
            Ok(want),
            &out_shape,
        );
    }
    let want = cpu.download(&cpu.pack_bits(&cs).unwrap()).unwrap();
    let packed = gpu.pack_bits(&gs).unwrap();
    same("pack_bits", gpu, &packed, &want, &[want.len()]);
    let want = cpu.unpack_bits(&cpu.pack_bits(&cs).unwrap(), &[10_500]);
    agree(
        "unpack_bits",
        gpu.unpack_bits(&packed, &[10_500]),
        want,
        &[10_500],
    );
    let key = rng.key();
    let got = gpu.fill_chacha12(&[5000], &key, 9, 3);
    let want = cpu.fill_chacha12(&[5000], &key, 9, 3);
    agree("fill_chacha12", got, want, &[5000]);
    let position = u64::MAX - 100;
    let got = gpu.fill_chacha12(&[3000], &key, 9, position);
    let want = cpu.fill_chacha12(&[3000], &key, 9, position);
    agree(
        "fill_chacha12 across the wrap of the position",
        got,
        want,
        &[3000],
    );
}

#[test]
fn ops_split_into_small_bindings_match_the_cpu() {
    for int64 in [Int64Mode::Native, Int64Mode::Emulated] {
        let Some(gpu) = open(int64, Some(512)) else {
            return;
        };
        assert_eq!(gpu.binding_limit(), 512);
        check_ops_against_cpu(&gpu);
    }
}

#[test]
fn select_rows_is_one_dispatch_per_128_rows() {
    let Some(gpu) = open(Int64Mode::Auto, None) else {
        return;
    };
    let mut rng = Inputs::new("select_rows dispatches");
    let x = rng.tensor(&[9, 130]);
    let gx = gpu.upload(&x.data, &x.shape).unwrap();
    for (count, dispatches) in [(0, 0), (1, 1), (128, 1), (129, 2), (300, 3)] {
        let rows: Vec<Option<usize>> = (0..count).map(|i| (i % 5 != 4).then_some(i % 9)).collect();
        let before = counters::thread_counts();
        let got = gpu.select_rows(&gx, &rows).unwrap();
        let launches = counters::thread_counts().since(&before).launches;
        assert_eq!(launches, dispatches, "select_rows of {count} rows");
        let want: Vec<u64> = rows
            .iter()
            .flat_map(|row| match row {
                Some(r) => x.data[r * 130..][..130].to_vec(),
                None => vec![0; 130],
            })
            .collect();
        same("select_rows", &gpu, &got, &want, &[count, 130]);
    }
}

/// The 6-input AND of the binary sharing, `(x0 & (y0 ^ y1)) ^ (x1 & y0) ^ r0 ^ r1`, and a
/// 2-input program with a scalar, a shift and a unary step.
fn fused_programs() -> [(usize, Fused); 2] {
    let input = Operand::Input;
    let and = Fused::and_term();
    let mut mixed = Fused::new();
    let product = mixed.binary(BinaryOp::Mul, input(1), input(0));
    let shifted = mixed.push(FusedStep::Shift(ShiftOp::RightArithmetic, product, 13));
    let negated = mixed.push(FusedStep::Unary(UnaryOp::Neg, shifted));
    mixed.push(FusedStep::Scalar(
        BinaryOp::Sub,
        negated,
        0x9e37_79b9_7f4a_7c15,
    ));
    [(6, and), (2, mixed)]
}

#[test]
fn fused_is_one_dispatch_per_chunk() {
    // (binding cap, length, dispatches): one per chunk of the output, none when empty.
    let cases = [
        (None, 0, 0),
        (None, 1, 1),
        (None, 5000, 1),
        (Some(512), 512, 1),
        (Some(512), 513, 2),
        (Some(512), 1200, 3),
    ];
    let mut rng = Inputs::new("fused dispatches");
    for int64 in [Int64Mode::Native, Int64Mode::Emulated] {
        for (cap, len, dispatches) in cases {
            let Some(gpu) = open(int64, cap) else {
                return;
            };
            for (count, program) in fused_programs() {
                let xs: Vec<Vec<u64>> = (0..count).map(|_| rng.elems(len)).collect();
                let gs: Vec<_> = xs.iter().map(|x| gpu.upload(x, &[len]).unwrap()).collect();
                let before = counters::thread_counts();
                let got = gpu.fused(&program, &gs.iter().collect::<Vec<_>>()).unwrap();
                let launches = counters::thread_counts().since(&before).launches;
                let what = format!(
                    "{int64:?} fused program of {count} inputs on {len} elements, bindings of {cap:?}"
                );
                assert_eq!(launches, dispatches, "{what}");
                let mut values = [0; FUSED_MAX_STEPS];
                let want: Vec<u64> = (0..len)
                    .map(|i| {
                        let element: Vec<u64> = xs.iter().map(|x| x[i]).collect();
                        program.apply(&element, &mut values)
                    })
                    .collect();
                same(&what, &gpu, &got, &want, &[len]);
            }
        }
    }
}

#[test]
fn elementwise_and_copy_cross_the_adapters_binding_limit() {
    let Some(gpu) = open(Int64Mode::Auto, None) else {
        return;
    };
    let limit = gpu.binding_limit();
    if limit > 1 << 24 {
        eprintln!(
            "skipped: this adapter binds {limit} elements at once; crossing that here would \
             take more memory than the test should"
        );
        return;
    }
    let n = limit + 4099;
    let mut rng = Inputs::new("beyond the binding limit");
    let (a, b) = (rng.elems(n), rng.elems(n));
    let (ga, gb) = (gpu.upload(&a, &[n]).unwrap(), gpu.upload(&b, &[n]).unwrap());
    let want: Vec<u64> = a
        .iter()
        .zip(&b)
        .map(|(&x, &y)| BinaryOp::Mul.apply(x, y))
        .collect();
    same(
        "mul beyond the binding limit",
        &gpu,
        &gpu.mul(&ga, &gb).unwrap(),
        &want,
        &[n],
    );
    let want: Vec<u64> = a[3..n - 5].to_vec();
    same(
        "slice beyond the binding limit",
        &gpu,
        &gpu.slice(&ga, 0, 3..n - 5).unwrap(),
        &want,
        &[n - 8],
    );
}

#[test]
fn clones_on_three_threads_agree_with_one_thread_run_after_run() {
    let Some(gpu) = open(Int64Mode::Auto, None) else {
        return;
    };
    let work = |backend: &WgpuBackend, seed: &str| -> Vec<u64> {
        let mut rng = Inputs::new(seed);
        let (a, b) = (rng.tensor(&[65, 129]), rng.tensor(&[129, 33]));
        let ta = backend.upload(&a.data, &a.shape).unwrap();
        let tb = backend.upload(&b.data, &b.shape).unwrap();
        let product = backend.matmul(&ta, &tb).unwrap();
        let noise = backend.fill_chacha12(&[65, 33], &rng.key(), 1, 77).unwrap();
        let sum = backend.add(&product, &noise).unwrap();
        let shifted = backend
            .shift(cryptgpu_backend::ShiftOp::RightArithmetic, &sum, 20)
            .unwrap();
        backend.download(&shifted).unwrap()
    };
    let seeds = ["party 0", "party 1", "party 2"];
    let alone: Vec<Vec<u64>> = seeds.iter().map(|s| work(&gpu, s)).collect();
    for run in 0..2 {
        let together: Vec<Vec<u64>> = std::thread::scope(|scope| {
            let handles: Vec<_> = seeds
                .iter()
                .map(|seed| {
                    let backend = gpu.clone();
                    scope.spawn(move || work(&backend, seed))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (i, (t, a)) in together.iter().zip(&alone).enumerate() {
            assert!(
                t == a,
                "run {run}, thread {i}: differs from the one-thread result"
            );
        }
    }
}

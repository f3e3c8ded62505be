//! What the conformance suite does not reach: a clear error without a driver, GEMMs long
//! enough to be cut into several exact chunks, extreme values, and three parties' handles
//! working on one GPU from three threads at once. GPU tests print `skipped:` without one.

use cryptgpu_backend::conformance::unavailable;
use cryptgpu_backend::{BackendError, GpuBackend};
use cryptgpu_cpu::CpuBackend;
use cryptgpu_cuda::{CudaBackend, GemmMethod, limbs::Scheme};
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

fn gpu(method: GemmMethod) -> Option<CudaBackend> {
    match CudaBackend::new(0).and_then(|b| b.with_gemm_method(method)) {
        Ok(backend) => Some(backend),
        Err(e @ BackendError::NoDevice { .. }) => unavailable("cuda", e),
        Err(e) => panic!("the CUDA backend failed to start with {method:?}: {e}"),
    }
}

fn random(rng: &mut ChaCha8Rng, n: usize) -> Vec<u64> {
    const EXTREMES: [u64; 5] = [0, u64::MAX, 1 << 63, 0x7f7f_7f7f_7f7f_7f80, 0xffff];
    (0..n)
        .map(|i| {
            if rng.next_u32().is_multiple_of(4) {
                EXTREMES[i % EXTREMES.len()]
            } else {
                rng.next_u64()
            }
        })
        .collect()
}

fn matmul_on<B: GpuBackend>(
    backend: &B,
    a: &[u64],
    sa: &[usize],
    b: &[u64],
    sb: &[usize],
) -> Vec<u64> {
    let c = backend
        .matmul(
            &backend.upload(a, sa).unwrap(),
            &backend.upload(b, sb).unwrap(),
        )
        .unwrap();
    backend.download(&c).unwrap()
}

#[test]
fn without_a_driver_new_returns_no_device() {
    if cryptgpu_cuda::libs::driver().is_ok() {
        eprintln!("skipped: a CUDA driver is present, so there is no missing-driver error to see");
        return;
    }
    match CudaBackend::new(0) {
        Err(BackendError::NoDevice {
            backend: "cuda",
            why,
        }) => {
            assert!(
                why.contains("libcuda"),
                "the reason must name the library: {why}"
            )
        }
        other => panic!("expected NoDevice, got {other:?}"),
    }
}

#[test]
fn a_missing_ordinal_is_no_device() {
    let Some(_) = gpu(GemmMethod::TiledInt) else {
        return;
    };
    assert!(matches!(
        CudaBackend::new(1 << 20),
        Err(BackendError::NoDevice { .. })
    ));
}

#[test]
fn long_inner_dimensions_are_chunked_exactly() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for method in GemmMethod::ALL {
        let Some(cuda) = gpu(method) else { return };
        // Past one int8 chunk (16352) by a little and by a lot, with a batch and a
        // broadcast right-hand side.
        for (batch, m, k, n) in [
            (1, 3, Scheme::Int8.max_chunk() + 40, 5),
            (2, 5, 2 * Scheme::Int8.max_chunk() + 7, 33),
            (3, 64, 1000, 65),
        ] {
            let (a, b) = (random(&mut rng, batch * m * k), random(&mut rng, k * n));
            let (sa, sb) = ([batch, m, k], [k, n]);
            assert_eq!(
                matmul_on(&cuda, &a, &sa, &b, &sb),
                matmul_on(&CpuBackend::new(), &a, &sa, &b, &sb),
                "{method:?} {batch}x{m}x{k}x{n}"
            );
        }
    }
}

#[test]
fn three_parties_share_one_gpu_from_three_threads() {
    let Some(first) = gpu(GemmMethod::Int8TensorCore) else {
        return;
    };
    // Clones on three threads: each thread gets its own stream and cuBLAS handle.
    let handles: Vec<CudaBackend> = (0..3).map(|_| first.clone()).collect();
    std::thread::scope(|scope| {
        for (party, cuda) in handles.into_iter().enumerate() {
            scope.spawn(move || {
                let mut rng = ChaCha8Rng::seed_from_u64(100 + party as u64);
                for round in 0..20 {
                    let (a, b) = (random(&mut rng, 97 * 131), random(&mut rng, 131 * 61));
                    let want = matmul_on(&CpuBackend::new(), &a, &[97, 131], &b, &[131, 61]);
                    let got = matmul_on(&cuda, &a, &[97, 131], &b, &[131, 61]);
                    assert_eq!(got, want, "party {party} round {round}");
                    let x = cuda
                        .fill_chacha12(&[1000], &[party as u8; 32], 1, 3)
                        .unwrap();
                    let y = CpuBackend::new()
                        .fill_chacha12(&[1000], &[party as u8; 32], 1, 3)
                        .unwrap();
                    assert_eq!(cuda.download(&x).unwrap(), y.as_slice());
                }
            });
        }
    });
}

#[test]
fn a_tensor_made_on_one_thread_is_read_right_on_another() {
    let Some(cuda) = gpu(GemmMethod::Fp64Blocks) else {
        return;
    };
    // Queued on this thread's stream, consumed on another thread's: cudarc's events order
    // the two streams.
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (a, b) = (random(&mut rng, 300 * 200), random(&mut rng, 200 * 100));
    let ta = cuda.upload(&a, &[300, 200]).unwrap();
    let tb = cuda.upload(&b, &[200, 100]).unwrap();
    let product = cuda.matmul(&ta, &tb).unwrap();
    let doubled = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                cuda.download(&cuda.add(&product, &product).unwrap())
                    .unwrap()
            })
            .join()
            .unwrap()
    });
    let want: Vec<u64> = matmul_on(&CpuBackend::new(), &a, &[300, 200], &b, &[200, 100])
        .into_iter()
        .map(|x| x.wrapping_add(x))
        .collect();
    assert_eq!(doubled, want);
}

#[test]
fn chacha_positions_wrap_like_the_host_definition() {
    let Some(cuda) = gpu(GemmMethod::TiledInt) else {
        return;
    };
    let key = [9u8; 32];
    for position in [0, 5, u64::MAX - 3, u64::MAX - 20, (1 << 63) - 5] {
        let got = cuda
            .download(&cuda.fill_chacha12(&[37], &key, 2, position).unwrap())
            .unwrap();
        let want = CpuBackend::new()
            .fill_chacha12(&[37], &key, 2, position)
            .unwrap();
        assert_eq!(got, want.as_slice(), "position {position:#x}");
    }
}

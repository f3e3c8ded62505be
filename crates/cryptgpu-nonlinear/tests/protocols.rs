//! The non-linear protocol suite on the CPU backend, and argument errors.

use cryptgpu_cpu::CpuBackend;

fn cpu() -> Option<CpuBackend> {
    Some(CpuBackend::new())
}

cryptgpu_nonlinear::nonlinear_protocol_tests!(cpu);

mod errors {
    //! Public arguments outside a function's domain are clear errors at every party, before
    //! any message.

    use cryptgpu_backend::Pool2dParams;
    use cryptgpu_nonlinear::suite::run3;
    use cryptgpu_nonlinear::*;

    fn message<T: std::fmt::Debug>(r: Result<T>) -> String {
        r.expect_err("must be refused").to_string()
    }

    #[test]
    fn bad_arguments_are_errors() {
        let errors = run3(&super::cpu().unwrap(), |p| {
            let x = p.constant_f64(&[1.0; 12], &[3, 4])?;
            let bits = drelu(p, &x)?;
            let wrong = p.constant_f64(&[1.0; 4], &[4])?;
            Ok(vec![
                message(max(p, &x, 2, false)),
                message(softmax(p, &x, 5, SoftmaxOptions::default())),
                message(p.mul_bit(&bits, &wrong).map_err(NonlinearError::from)),
                message(exp(p, &x, ExpOptions { squarings: 0 })),
                message(ReciprocalOptions::for_range(2.0, 1.0)),
                message(reciprocal(
                    p,
                    &x,
                    ReciprocalOptions {
                        initial: -1.0,
                        iterations: 3,
                    },
                )),
                message(max_pool2d(p, &x, Pool2dParams::new(2, 2))),
                message(global_avg_pool(p, &x)),
            ])
        });
        let all = errors[0].join("\n");
        for expected in [
            "axis 2 of shape [3, 4]",
            "axis 5 out of range",
            "mul_bit",
            "0 squarings",
            "0 < lo < hi",
            "positive initial guess",
            "max_pool2d",
            "NCHW",
        ] {
            assert!(
                all.contains(expected),
                "no error mentions {expected:?} in:\n{all}"
            );
        }
        assert_eq!(errors[0], errors[1]);
        assert_eq!(errors[1], errors[2]);
    }
}

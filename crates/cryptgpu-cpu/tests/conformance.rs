//! The shared conformance suite on the CPU backend.

fn cpu() -> Option<cryptgpu_cpu::CpuBackend> {
    Some(cryptgpu_cpu::CpuBackend::new())
}

cryptgpu_backend::conformance_tests!(cpu);

//! The device-memory ledger on the CPU backend (alone in this binary: it sets the
//! process-wide limit).

#[test]
fn tensors_are_charged_to_the_ledger_and_refused_past_the_limit() {
    cryptgpu_backend::conformance::check_memory_ledger(&cryptgpu_cpu::CpuBackend::new());
}

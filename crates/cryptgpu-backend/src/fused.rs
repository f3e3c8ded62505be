//! [`Fused`]: a short elementwise program over a few tensors of one shape, which a backend
//! runs as one pass ([`GpuBackend::fused`](crate::GpuBackend::fused)) where a protocol
//! step would otherwise launch one op per term (a product's local terms and its zero
//! sharing; an AND's).

use crate::{BackendError, BinaryOp, Result, ShiftOp, UnaryOp};

/// The most inputs a [`Fused`] program reads.
pub const FUSED_MAX_INPUTS: usize = 6;

/// The most steps a [`Fused`] program has.
pub const FUSED_MAX_STEPS: usize = 12;

/// What a step reads: input `i`, or the value of an earlier step `s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operand {
    /// Input `i` of the call.
    Input(u8),
    /// The value of step `s` (an earlier step).
    Step(u8),
}

/// One step of a [`Fused`] program: an elementwise op on earlier values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FusedStep {
    /// `op(a, b)`.
    Binary(BinaryOp, Operand, Operand),
    /// `op(a, scalar)` with a public scalar.
    Scalar(BinaryOp, Operand, u64),
    /// `op(a)`.
    Unary(UnaryOp, Operand),
    /// `op(a, bits)`, bits below 64.
    Shift(ShiftOp, Operand, u32),
}

/// A checked elementwise program: each step reads the inputs and earlier steps, and the
/// last step is the result. Built step by step with [`Fused::new`] and the builder
/// methods, checked by [`Fused::check`] against a number of inputs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Fused {
    steps: Vec<FusedStep>,
}

impl Fused {
    /// A program with no step yet.
    pub fn new() -> Fused {
        Fused::default()
    }

    /// The local term of an AND of XOR sharings with its zero sharing, over inputs
    /// (x_i, x_{i+1}, y_i, y_{i+1}, r, r'): x_i ∧ (y_i ⊕ y_{i+1}) ⊕ x_{i+1} ∧ y_i ⊕ r ⊕ r',
    /// six steps over six inputs. The program the protocols run most (every binary AND),
    /// and so the one the conformance and kernel tests hold every backend to first.
    pub fn and_term() -> Fused {
        use BinaryOp::{And, Xor};
        let input = Operand::Input;
        let mut p = Fused::new();
        let both = p.binary(Xor, input(2), input(3));
        let left = p.binary(And, input(0), both);
        let right = p.binary(And, input(1), input(2));
        let z = p.binary(Xor, left, right);
        let z = p.binary(Xor, z, input(4));
        p.binary(Xor, z, input(5));
        p
    }

    /// Appends `step` and returns the operand that reads its value.
    pub fn push(&mut self, step: FusedStep) -> Operand {
        self.steps.push(step);
        Operand::Step((self.steps.len() - 1) as u8)
    }

    /// Appends `op(a, b)`.
    pub fn binary(&mut self, op: BinaryOp, a: Operand, b: Operand) -> Operand {
        self.push(FusedStep::Binary(op, a, b))
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[FusedStep] {
        &self.steps
    }

    /// Checks the program for a call with `inputs` inputs: 1 to [`FUSED_MAX_STEPS`] steps,
    /// at most [`FUSED_MAX_INPUTS`] inputs, every operand an input below `inputs` or an
    /// earlier step, every shift below 64 bits.
    ///
    /// # Errors
    /// [`BackendError::InvalidArgument`] naming what is wrong.
    pub fn check(&self, op: &'static str, inputs: usize) -> Result<()> {
        if self.steps.is_empty() || self.steps.len() > FUSED_MAX_STEPS {
            return Err(BackendError::invalid(
                op,
                format!(
                    "a fused program has 1 to {FUSED_MAX_STEPS} steps, not {}",
                    self.steps.len()
                ),
            ));
        }
        if inputs == 0 || inputs > FUSED_MAX_INPUTS {
            return Err(BackendError::invalid(
                op,
                format!("a fused program reads 1 to {FUSED_MAX_INPUTS} inputs, not {inputs}"),
            ));
        }
        for (index, step) in self.steps.iter().enumerate() {
            let operands: &[Operand] = match step {
                FusedStep::Binary(_, a, b) => &[*a, *b],
                FusedStep::Scalar(_, a, _) | FusedStep::Unary(_, a) => &[*a],
                FusedStep::Shift(_, a, bits) => {
                    crate::shape::check_shift(op, *bits)?;
                    &[*a]
                }
            };
            for operand in operands {
                let ok = match *operand {
                    Operand::Input(i) => usize::from(i) < inputs,
                    Operand::Step(s) => usize::from(s) < index,
                };
                if !ok {
                    return Err(BackendError::invalid(
                        op,
                        format!(
                            "step {index} reads {operand:?}, which a program of {inputs} inputs \
                             has not computed before it"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The program on one element: `inputs[i]` is input `i`'s element. The definition
    /// every backend must match bit for bit. `values` holds the steps' values (at least
    /// as many as there are steps).
    #[inline]
    pub fn apply(&self, inputs: &[u64], values: &mut [u64]) -> u64 {
        let read = |values: &[u64], operand: Operand| match operand {
            Operand::Input(i) => inputs[usize::from(i)],
            Operand::Step(s) => values[usize::from(s)],
        };
        for (index, step) in self.steps.iter().enumerate() {
            values[index] = match *step {
                FusedStep::Binary(op, a, b) => op.apply(read(values, a), read(values, b)),
                FusedStep::Scalar(op, a, scalar) => op.apply(read(values, a), scalar),
                FusedStep::Unary(op, a) => op.apply(read(values, a)),
                FusedStep::Shift(op, a, bits) => op.apply(read(values, a), bits),
            };
        }
        values[self.steps.len() - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_computes_its_last_step_and_refuses_forward_reads() {
        // (x0 & (y0 ^ y1)) ^ (x1 & y0), the local part of an AND.
        let mut p = Fused::new();
        let (x0, x1, y0, y1) = (
            Operand::Input(0),
            Operand::Input(1),
            Operand::Input(2),
            Operand::Input(3),
        );
        let both = p.binary(BinaryOp::Xor, y0, y1);
        let left = p.binary(BinaryOp::And, x0, both);
        let right = p.binary(BinaryOp::And, x1, y0);
        p.binary(BinaryOp::Xor, left, right);
        p.check("t", 4).unwrap();
        let mut values = [0; FUSED_MAX_STEPS];
        let (a, b, c, d) = (0b1100u64, 0b1010, 0b0110, 0b0011);
        assert_eq!(p.apply(&[a, b, c, d], &mut values), (a & (c ^ d)) ^ (b & c));
        assert!(p.check("t", 3).is_err(), "input 3 of 3");
        assert!(Fused::new().check("t", 1).is_err(), "no step");
        let mut forward = Fused::new();
        forward.binary(BinaryOp::Add, Operand::Step(0), Operand::Input(0));
        assert!(forward.check("t", 1).is_err(), "a step reading itself");
        let mut shift = Fused::new();
        shift.push(FusedStep::Shift(ShiftOp::Left, Operand::Input(0), 64));
        assert!(shift.check("t", 1).is_err(), "a shift by 64");
        let mut long = Fused::new();
        for _ in 0..=FUSED_MAX_STEPS {
            long.push(FusedStep::Unary(UnaryOp::Neg, Operand::Input(0)));
        }
        assert!(long.check("t", 1).is_err(), "too many steps");
        assert!(
            p.check("t", FUSED_MAX_INPUTS + 1).is_err(),
            "too many inputs"
        );
    }
}

//! What a server and a client of the service both use: the OS's randomness, additive
//! shares of a client's values, ids in hex, and the number format a model is served in.

use anyhow::{Result, anyhow};
use cryptgpu_share::Truncation;

/// The number format a model is served in: the model owner's choice (a server's options or
/// an upload's), which the others take.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NumberFormat {
    /// Fractional bits (default 16).
    pub frac_bits: Option<u64>,
    /// Truncation (default exact).
    pub truncation: Option<Truncation>,
    /// ℓ of comparisons (default: the format's).
    pub comparison_bits: Option<u64>,
}

/// Fills `bytes` from the operating system's randomness.
pub fn getrandom_fill(bytes: &mut [u8]) -> Result<()> {
    getrandom::fill(bytes).map_err(|e| anyhow!("the OS has no randomness: {e}"))
}

/// Three additive shares of `x`, x = x_0 + x_1 + x_2 (mod 2^64), with x_0 and x_1 uniformly
/// random from the OS: any two of them are independent of x. Server i gets (x_i, x_{i+1}).
pub fn additive_shares(x: &[u64]) -> Result<[Vec<u64>; 3]> {
    let x0 = random_words(x.len())?;
    let x1 = random_words(x.len())?;
    let x2: Vec<u64> = x
        .iter()
        .zip(x0.iter().zip(&x1))
        .map(|(v, (a, b))| v.wrapping_sub(*a).wrapping_sub(*b))
        .collect();
    Ok([x0, x1, x2])
}

/// `n` uniformly random ring elements from the OS.
fn random_words(n: usize) -> Result<Vec<u64>> {
    let mut bytes = vec![0u8; 8 * n];
    getrandom_fill(&mut bytes)?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of lower- or upper-case hex, or `None`.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn additive_shares_add_up_and_hex_round_trips() {
        let x = [0, 1, u64::MAX, 1 << 63];
        let [a, b, c] = additive_shares(&x).unwrap();
        for (k, v) in x.iter().enumerate() {
            assert_eq!(a[k].wrapping_add(b[k]).wrapping_add(c[k]), *v);
        }
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(unhex("00AB10").unwrap(), [0, 0xab, 0x10]);
        assert!(unhex("abc").is_none() && unhex("zz").is_none());
    }
}

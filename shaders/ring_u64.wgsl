// Ring prelude, native path: Z_2^64 on WGSL's `u64` (adapters with SHADER_INT64).
//
// Every kernel is written against these functions only (and the bitwise r_and, r_or,
// r_xor and r_not of common.wgsl, which read the same on both paths), so the same kernel
// source runs on this prelude and on ring_emulated.wgsl. Unsigned WGSL arithmetic wraps, which is
// exactly arithmetic mod 2^64. Shift amounts are below 64 (the host checks them).

alias Ring = u64;

fn r_zero() -> Ring {
    return 0lu;
}

fn r_from_parts(lo: u32, hi: u32) -> Ring {
    return (u64(hi) << 32u) | u64(lo);
}

fn r_lo(x: Ring) -> u32 {
    return u32(x & 0xfffffffflu);
}

fn r_hi(x: Ring) -> u32 {
    return u32(x >> 32u);
}

fn r_add(a: Ring, b: Ring) -> Ring {
    return a + b;
}

fn r_sub(a: Ring, b: Ring) -> Ring {
    return a - b;
}

fn r_mul(a: Ring, b: Ring) -> Ring {
    return a * b;
}

fn r_neg(a: Ring) -> Ring {
    return 0lu - a;
}

fn r_shl(a: Ring, bits: u32) -> Ring {
    return a << bits;
}

fn r_shr(a: Ring, bits: u32) -> Ring {
    return a >> bits;
}

fn r_sar(a: Ring, bits: u32) -> Ring {
    return bitcast<u64>(bitcast<i64>(a) >> bits);
}

// Bit `bit` (0 = least significant) of `a`, as 0 or 1.
fn r_bit(a: Ring, bit: u32) -> u32 {
    return u32((a >> bit) & 1lu);
}

// Ring prelude, emulated path: Z_2^64 on two 32-bit limbs, for adapters without
// SHADER_INT64 (WebGPU, many mobile and integrated GPUs).
//
// A ring element is `vec2<u32>(low word, high word)`: in memory that is exactly the
// little-endian u64, so buffers are the same bytes on both paths (and the bitwise ops of
// common.wgsl, on the vector, are those of the u64). The 32x32 -> 64-bit product is
// built from 16-bit halves. Shift amounts are below 64 (the host checks them); WGSL takes
// u32 shift amounts mod 32, so every shift by a variable amount below avoids 32 and more.

alias Ring = vec2<u32>;

fn r_zero() -> Ring {
    return vec2<u32>(0u, 0u);
}

fn r_from_parts(lo: u32, hi: u32) -> Ring {
    return vec2<u32>(lo, hi);
}

fn r_lo(x: Ring) -> u32 {
    return x.x;
}

fn r_hi(x: Ring) -> u32 {
    return x.y;
}

fn r_add(a: Ring, b: Ring) -> Ring {
    let lo = a.x + b.x;
    return vec2<u32>(lo, a.y + b.y + select(0u, 1u, lo < a.x));
}

fn r_sub(a: Ring, b: Ring) -> Ring {
    let lo = a.x - b.x;
    return vec2<u32>(lo, a.y - b.y - select(0u, 1u, a.x < b.x));
}

// The full 64-bit product of two 32-bit words, as (low word, high word).
fn mul_wide(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let lo1 = p00 + (p01 << 16u);
    let carry1 = select(0u, 1u, lo1 < p00);
    let lo2 = lo1 + (p10 << 16u);
    let carry2 = select(0u, 1u, lo2 < lo1);
    let hi = p11 + (p01 >> 16u) + (p10 >> 16u) + carry1 + carry2;
    return vec2<u32>(lo2, hi);
}

fn r_mul(a: Ring, b: Ring) -> Ring {
    let low = mul_wide(a.x, b.x);
    return vec2<u32>(low.x, low.y + a.x * b.y + a.y * b.x);
}

fn r_neg(a: Ring) -> Ring {
    return r_sub(r_zero(), a);
}

fn r_shl(a: Ring, bits: u32) -> Ring {
    if bits == 0u {
        return a;
    }
    if bits < 32u {
        return vec2<u32>(a.x << bits, (a.y << bits) | (a.x >> (32u - bits)));
    }
    return vec2<u32>(0u, a.x << (bits - 32u));
}

fn r_shr(a: Ring, bits: u32) -> Ring {
    if bits == 0u {
        return a;
    }
    if bits < 32u {
        return vec2<u32>((a.x >> bits) | (a.y << (32u - bits)), a.y >> bits);
    }
    return vec2<u32>(a.y >> (bits - 32u), 0u);
}

fn r_sar(a: Ring, bits: u32) -> Ring {
    let high = bitcast<i32>(a.y);
    if bits == 0u {
        return a;
    }
    if bits < 32u {
        return vec2<u32>((a.x >> bits) | (a.y << (32u - bits)), bitcast<u32>(high >> bits));
    }
    return vec2<u32>(bitcast<u32>(high >> (bits - 32u)), bitcast<u32>(high >> 31u));
}

// Bit `bit` (0 = least significant) of `a`, as 0 or 1.
fn r_bit(a: Ring, bit: u32) -> u32 {
    if bit < 32u {
        return (a.x >> bit) & 1u;
    }
    return (a.y >> (bit - 32u)) & 1u;
}

//! NEON building blocks for the format kernels (little-endian AArch64).
//!
//! NEON is part of every AArch64 target we build for, so these helpers are plain `#[inline(always)]`
//! functions; they are `unsafe` because they load through raw pointers or because callers must
//! have checked [`super::detected`]`().neon` (the format files do, in the safe wrappers they hand
//! out). Integer dot products of bytes go through [`I8Dot`], whose two implementations let one
//! kernel body be compiled twice: with plain NEON ([`Widening`]) and with the ARMv8.2 dot
//! product instruction SDOT ([`DotProd`], only where `detected().dotprod`).
//!
//! The instructions stable Rust does not expose as intrinsics (SDOT, and the conversions between
//! f16 and f32) are written as inline assembly; each is a single instruction.

use std::arch::aarch64::*;
use std::arch::asm;

/// Sums of byte products into four i32 lanes.
pub trait I8Dot {
    /// `acc` plus the 16 products `a[j] * b[j]`, spread over the four lanes. Which lane gets
    /// which product is up to the implementation: only the total over the lanes is defined. Exact
    /// for any bytes.
    ///
    /// # Safety
    /// The CPU must have what the implementation needs (NEON; SDOT for [`DotProd`]).
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t;
}

/// [`I8Dot`] with widening multiplies (any AArch64 CPU).
pub struct Widening;

impl I8Dot for Widening {
    #[inline(always)]
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // Each i16 product is at most 128 * 128 = 16384; pairs are added as i32.
        let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        let hi = vmull_high_s8(a, b);
        vpadalq_s16(vpadalq_s16(acc, lo), hi)
    }
}

/// [`I8Dot`] with SDOT (the `dotprod` feature of ARMv8.2, on Apple M1 and later, Cortex-A76
/// and later, Neoverse, ...). Lane `i` gets the products of bytes `4i..4i + 4`.
pub struct DotProd;

impl I8Dot for DotProd {
    #[inline]
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn dot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // `vdotq_s32` is not stable yet.
        asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
        acc
    }
}

/// Sixteen bytes from `p`.
///
/// # Safety
/// `p` must be readable for 16 bytes.
#[inline(always)]
pub unsafe fn load_i8x16(p: *const i8) -> int8x16_t {
    vld1q_s8(p)
}

/// The totals of four vectors, one per lane: lane `i` of the result is the sum of the lanes of
/// `v[i]` (wrapping, as every i32 sum of the kernels).
///
/// # Safety
/// NEON must be available.
#[inline(always)]
pub unsafe fn sums4(v: [int32x4_t; 4]) -> int32x4_t {
    vpaddq_s32(vpaddq_s32(v[0], v[1]), vpaddq_s32(v[2], v[3]))
}

/// The 32 nibbles of 16 packed bytes, in ggml's order inside a 32-element block: the low
/// nibbles (elements 0..16) and the high nibbles (elements 16..32), each in 0..16.
///
/// # Safety
/// NEON must be available.
#[inline(always)]
pub unsafe fn nibbles(packed: &[u8; 16]) -> (uint8x16_t, uint8x16_t) {
    let v = vld1q_u8(packed.as_ptr());
    (vandq_u8(v, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(v))
}

/// One byte per bit of `bits`: byte `j` (of 32, as two vectors) is 0xFF where bit `j` is set,
/// else 0.
///
/// # Safety
/// NEON must be available.
#[inline(always)]
pub unsafe fn bit_mask_bytes(bits: u32) -> (uint8x16_t, uint8x16_t) {
    const SPREAD_LO: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
    const SPREAD_HI: [u8; 16] = [2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3];
    const SELECT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    // Byte j takes byte j / 8 of `bits` (little-endian lanes), then tests bit j % 8 of it.
    let b = vreinterpretq_u8_u32(vdupq_n_u32(bits));
    let select = vld1q_u8(SELECT.as_ptr());
    let lo = vqtbl1q_u8(b, vld1q_u8(SPREAD_LO.as_ptr()));
    let hi = vqtbl1q_u8(b, vld1q_u8(SPREAD_HI.as_ptr()));
    (vtstq_u8(lo, select), vtstq_u8(hi, select))
}

/// Four f16 values to f32 (exact).
///
/// # Safety
/// NEON must be available.
#[inline(always)]
pub unsafe fn f16x4_to_f32(h: uint16x4_t) -> float32x4_t {
    let r: float32x4_t;
    // `vcvt_f32_f16` needs the unstable `f16` type.
    asm!(
        "fcvtl {r:v}.4s, {h:v}.4h",
        r = lateout(vreg) r,
        h = in(vreg) h,
        options(pure, nomem, nostack, preserves_flags)
    );
    r
}

/// The upper four of eight f16 values to f32 (exact).
///
/// # Safety
/// NEON must be available.
#[inline(always)]
pub unsafe fn f16x8_high_to_f32(h: uint16x8_t) -> float32x4_t {
    let r: float32x4_t;
    asm!(
        "fcvtl2 {r:v}.4s, {h:v}.8h",
        r = lateout(vreg) r,
        h = in(vreg) h,
        options(pure, nomem, nostack, preserves_flags)
    );
    r
}

/// Eight f16 values (16 little-endian bytes at `p`) to f32, as two vectors.
///
/// # Safety
/// NEON must be available; `p` must be readable for 16 bytes.
#[inline(always)]
pub unsafe fn load_f16x8(p: *const u8) -> (float32x4_t, float32x4_t) {
    let h = vld1q_u16(p.cast());
    (f16x4_to_f32(vget_low_u16(h)), f16x8_high_to_f32(h))
}

/// Eight f32 values to f16 bits, rounding to nearest even (as `half` and ggml do; NaN stays NaN,
/// quieted, with the top of its payload).
///
/// # Safety
/// NEON must be available.
#[inline(always)]
pub unsafe fn f32x8_to_f16(lo: float32x4_t, hi: float32x4_t) -> uint16x8_t {
    let r: uint16x8_t;
    asm!(
        "fcvtn {r:v}.4h, {lo:v}.4s",
        "fcvtn2 {r:v}.8h, {hi:v}.4s",
        r = out(vreg) r,
        lo = in(vreg) lo,
        hi = in(vreg) hi,
        options(pure, nomem, nostack, preserves_flags)
    );
    r
}

/// An f16 (little-endian bytes) to f32, in one instruction (exact, as `half`'s conversion).
///
/// # Safety
/// NEON must be available.
#[inline(always)]
pub unsafe fn f16_to_f32(b: [u8; 2]) -> f32 {
    let h = u16::from_le_bytes(b);
    let r: f32;
    asm!(
        "fcvt {r:s}, {h:h}",
        r = lateout(vreg) r,
        h = in(vreg) h,
        options(pure, nomem, nostack, preserves_flags)
    );
    r
}

/// Eight bf16 values (16 little-endian bytes at `p`) to f32 (exact), as two vectors.
///
/// # Safety
/// NEON must be available; `p` must be readable for 16 bytes.
#[inline(always)]
pub unsafe fn load_bf16x8(p: *const u8) -> (float32x4_t, float32x4_t) {
    let h = vld1q_u16(p.cast());
    (
        vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h))),
        vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h)),
    )
}

/// Largest magnitude of 32 floats, NaN skipped (as a scalar fold with `f32::max` from 0).
///
/// # Safety
/// NEON must be available.
#[inline(always)]
pub unsafe fn abs_max_32(x: &[f32; 32]) -> f32 {
    let p = x.as_ptr();
    let mut m = [vdupq_n_f32(0.0); 2];
    for (k, m) in m.iter_mut().enumerate() {
        for j in 0..4 {
            // FMAXNM returns the number when one operand is a (quiet) NaN.
            *m = vmaxnmq_f32(*m, vabsq_f32(vld1q_f32(p.add(16 * k + 4 * j))));
        }
    }
    vmaxnmvq_f32(vmaxnmq_f32(m[0], m[1]))
}

/// `round(x[j] * id)` (ties away from zero, as C's `roundf`) for 32 floats, stored as i8 with
/// the saturation of Rust's `as i8`, returning the sum of the 32 stored values.
///
/// # Safety
/// NEON must be available.
#[inline(always)]
pub unsafe fn scale_round_i8_32(x: &[f32; 32], id: f32, out: &mut [i8; 32]) -> i32 {
    let p = x.as_ptr();
    let idv = vdupq_n_f32(id);
    let mut sum = 0i32;
    for h in 0..2 {
        let mut w = [vdupq_n_s16(0); 2];
        for (k, w) in w.iter_mut().enumerate() {
            let at = 16 * h + 8 * k;
            // FCVTAS rounds ties away from zero, maps NaN to 0 and saturates, as `as` does.
            let a = vcvtaq_s32_f32(vmulq_f32(vld1q_f32(p.add(at)), idv));
            let b = vcvtaq_s32_f32(vmulq_f32(vld1q_f32(p.add(at + 4)), idv));
            *w = vcombine_s16(vqmovn_s32(a), vqmovn_s32(b));
        }
        let q = vcombine_s8(vqmovn_s16(w[0]), vqmovn_s16(w[1]));
        vst1q_s8(out.as_mut_ptr().add(16 * h), q);
        sum += i32::from(vaddlvq_s8(q));
    }
    sum
}

/// One block pair of a quantized dot product with 32-element blocks (a weight block against an
/// activation block), for [`dot_blocks`].
pub trait BlockPair {
    type W;
    type A;
    /// Whether blocks have an extra term (the `m * s` of Q4_1 and Q5_1).
    const EXTRA: bool;
    /// The integer dot product of the blocks' quants, spread over four lanes.
    ///
    /// # Safety
    /// As [`I8Dot::dot`] for `D`.
    unsafe fn products<D: I8Dot>(w: &Self::W, a: &Self::A) -> int32x4_t;
    /// The factor of the integer sum (`d_w * d_a`, computed as the scalar kernel does) and the
    /// extra term (0 where [`Self::EXTRA`] is false).
    ///
    /// # Safety
    /// NEON must be available.
    unsafe fn factors(w: &Self::W, a: &Self::A) -> (f32, f32);
}

/// Sum over the first `nb` block pairs. Each block's value is computed as the scalar kernels
/// do (`sum as f32 * d`, plus the extra term): four blocks at a time, one per lane, with the
/// integer sums exact. Only the order in which block values are added differs from scalar.
///
/// # Safety
/// As [`I8Dot::dot`] for `D`.
#[inline(always)]
pub unsafe fn dot_blocks<K: BlockPair, D: I8Dot>(w: &[K::W], a: &[K::A], nb: usize) -> f32 {
    let nb = nb.min(w.len()).min(a.len());
    let (w, a) = (&w[..nb], &a[..nb]);
    let mut acc = vdupq_n_f32(0.0);
    let mut pw = w.chunks_exact(4);
    let mut pa = a.chunks_exact(4);
    for (x, y) in (&mut pw).zip(&mut pa) {
        let s = sums4([
            K::products::<D>(&x[0], &y[0]),
            K::products::<D>(&x[1], &y[1]),
            K::products::<D>(&x[2], &y[2]),
            K::products::<D>(&x[3], &y[3]),
        ]);
        let f = [
            K::factors(&x[0], &y[0]),
            K::factors(&x[1], &y[1]),
            K::factors(&x[2], &y[2]),
            K::factors(&x[3], &y[3]),
        ];
        let d = [f[0].0, f[1].0, f[2].0, f[3].0];
        let mut v = vmulq_f32(vcvtq_f32_s32(s), vld1q_f32(d.as_ptr()));
        if K::EXTRA {
            let e = [f[0].1, f[1].1, f[2].1, f[3].1];
            v = vaddq_f32(v, vld1q_f32(e.as_ptr()));
        }
        acc = vaddq_f32(acc, v);
    }
    let mut tail = 0f32;
    for (x, y) in pw.remainder().iter().zip(pa.remainder()) {
        let s = vaddvq_s32(K::products::<D>(x, y)) as f32;
        let (d, e) = K::factors(x, y);
        tail += if K::EXTRA { s * d + e } else { s * d };
    }
    vaddvq_f32(acc) + tail
}

//! AVX2 building blocks for the format kernels.
//!
//! Every function here is `unsafe` only because it needs AVX2, FMA and F16C: callers must have
//! checked [`super::detected`]`().avx2` (the format files do, in the safe wrappers they hand out).

use std::arch::x86_64::*;

/// Whether the CPU says it is Intel's (`GenuineIntel`): where tuning differs by vendor.
pub fn is_intel() -> bool {
    // Leaf 0 (the vendor) exists on every x86-64 CPU.
    let id = __cpuid(0);
    let vendor = [id.ebx, id.edx, id.ecx].map(u32::to_le_bytes).concat();
    vendor == b"GenuineIntel"
}

/// Sum of the 8 lanes.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Sum of the 8 i32 lanes.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01>(s));
    _mm_cvtsi128_si32(s)
}

/// The 32 nibbles of 16 packed bytes as 32 bytes in 0..16: element `j` of the result is the low
/// nibble of byte `j` for `j < 16` and the high nibble of byte `j - 16` otherwise (ggml's order
/// inside a 32-element block).
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn nibbles(packed: &[u8; 16]) -> __m256i {
    let lo = _mm_loadu_si128(packed.as_ptr().cast());
    let hi = _mm_srli_epi16::<4>(lo);
    _mm256_and_si256(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(0x0F))
}

/// One byte per bit of `bits`: byte `j` is 0xFF where bit `j` is set, else 0.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn bit_mask_bytes(bits: u32) -> __m256i {
    // Byte j takes byte j / 8 of `bits`, then keeps bit j % 8 of it.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits as i32),
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    );
    let select = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
    _mm256_cmpeq_epi8(_mm256_and_si256(spread, select), select)
}

/// Eight sums of four products of unsigned bytes `u` (0..=255) and signed bytes `s`, as i32.
/// Exact while adjacent pairs of products fit in i16 (`|u| * |s| * 2 <= 32767`), which holds
/// for the 4- and 5-bit formats (`u < 32`) and for 8-bit values within -127..=127.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_u8_i8(u: __m256i, s: __m256i) -> __m256i {
    let pairs = _mm256_maddubs_epi16(u, s);
    _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
}

/// As [`dot_u8_i8`] for two signed operands (values in -127..=127 on the `s` side).
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_i8_i8(a: __m256i, s: __m256i) -> __m256i {
    // |a| * (s with the sign of a) == a * s.
    dot_u8_i8(_mm256_sign_epi8(a, a), _mm256_sign_epi8(s, a))
}

/// Round to nearest, ties away from zero (C's `roundf`), exactly.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn round_away(x: __m256) -> __m256 {
    let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(x);
    // x - trunc(x) is exact; where its magnitude is at least 0.5, step away from zero.
    let sign = _mm256_set1_ps(-0.0);
    let frac = _mm256_andnot_ps(sign, _mm256_sub_ps(x, t));
    let step = _mm256_cmp_ps::<_CMP_GE_OQ>(frac, _mm256_set1_ps(0.5));
    let one = _mm256_or_ps(_mm256_and_ps(x, sign), _mm256_set1_ps(1.0));
    _mm256_add_ps(t, _mm256_and_ps(step, one))
}

/// Largest magnitude of 32 floats.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn abs_max_32(x: &[f32; 32]) -> f32 {
    let sign = _mm256_set1_ps(-0.0);
    let p = x.as_ptr();
    let m0 = _mm256_max_ps(
        _mm256_andnot_ps(sign, _mm256_loadu_ps(p)),
        _mm256_andnot_ps(sign, _mm256_loadu_ps(p.add(8))),
    );
    let m1 = _mm256_max_ps(
        _mm256_andnot_ps(sign, _mm256_loadu_ps(p.add(16))),
        _mm256_andnot_ps(sign, _mm256_loadu_ps(p.add(24))),
    );
    let m = _mm256_max_ps(m0, m1);
    let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_movehdup_ps(m));
    _mm_cvtss_f32(m)
}

/// `round_away(x[j] * id)` for 32 floats, stored as i8 (the values must be within -128..=127),
/// returning the sum of the 32 integers.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn scale_round_i8_32(x: &[f32; 32], id: f32, out: &mut [i8; 32]) -> i32 {
    let p = x.as_ptr();
    let idv = _mm256_set1_ps(id);
    let q0 = _mm256_cvtps_epi32(round_away(_mm256_mul_ps(_mm256_loadu_ps(p), idv)));
    let q1 = _mm256_cvtps_epi32(round_away(_mm256_mul_ps(_mm256_loadu_ps(p.add(8)), idv)));
    let q2 = _mm256_cvtps_epi32(round_away(_mm256_mul_ps(_mm256_loadu_ps(p.add(16)), idv)));
    let q3 = _mm256_cvtps_epi32(round_away(_mm256_mul_ps(_mm256_loadu_ps(p.add(24)), idv)));
    let sum = _mm256_add_epi32(_mm256_add_epi32(q0, q1), _mm256_add_epi32(q2, q3));
    // Packing works within 128-bit lanes: the 4-byte groups come out as q0[0..4], q1[0..4],
    // q2[0..4], q3[0..4], q0[4..8], q1[4..8], ...; the permutation restores element order.
    let w01 = _mm256_packs_epi32(q0, q1);
    let w23 = _mm256_packs_epi32(q2, q3);
    let b = _mm256_packs_epi16(w01, w23);
    let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(out.as_mut_ptr().cast(), b);
    hsum_epi32(sum)
}

/// Eight f16 values (little-endian bytes) to f32.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C. `p` must be readable for 16 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn load_f16x8(p: *const u8) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
}

/// Eight bf16 values (little-endian bytes) to f32.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C. `p` must be readable for 16 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn load_bf16x8(p: *const u8) -> __m256 {
    let w = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()));
    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(w))
}

/// An f16 (little-endian bytes) to f32, in one instruction (exact, as `half`'s conversion).
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16_to_f32(b: [u8; 2]) -> f32 {
    // Through a general register: a 16-bit load folded into the vector insert would merge into
    // (and so wait on) whatever register the compiler picks.
    let bits = u16::from_le_bytes(b) as u32;
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// The product of two f16 values (little-endian bytes) as f32: `f16(a) * f16(b)`, both
/// converted by one instruction.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16_product(a: [u8; 2], b: [u8; 2]) -> f32 {
    let bits = u16::from_le_bytes(a) as u32 | (u16::from_le_bytes(b) as u32) << 16;
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32));
    _mm_cvtss_f32(_mm_mul_ss(v, _mm_movehdup_ps(v)))
}

/// One block pair of a quantized dot product (a weight block against an activation block),
/// for [`dot_blocks`].
pub trait BlockPair {
    type W;
    type A;
    /// The block's integer products summed into 8 f32 lanes, the scale they are multiplied by,
    /// and a scalar term to add (the `m * s` term of Q4_1/Q5_1, else 0).
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    unsafe fn products(w: &Self::W, a: &Self::A) -> (__m256, f32, f32);
}

/// Sum over the first `nb` block pairs, two at a time into two accumulators.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_blocks<K: BlockPair>(w: &[K::W], a: &[K::A], nb: usize) -> f32 {
    let nb = nb.min(w.len()).min(a.len());
    let (w, a) = (&w[..nb], &a[..nb]);
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut extra = 0f32;
    let mut pw = w.chunks_exact(2);
    let mut pa = a.chunks_exact(2);
    for (x, y) in (&mut pw).zip(&mut pa) {
        let (p0, d0, e0) = K::products(&x[0], &y[0]);
        let (p1, d1, e1) = K::products(&x[1], &y[1]);
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d0), p0, acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(d1), p1, acc1);
        extra += e0 + e1;
    }
    for (x, y) in pw.remainder().iter().zip(pa.remainder()) {
        let (p, d, e) = K::products(x, y);
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d), p, acc0);
        extra += e;
    }
    hsum_ps(_mm256_add_ps(acc0, acc1)) + extra
}

/// e^x for 8 lanes, within 2 ulp of the correctly rounded result for x in [-87, 88.7]
/// (Cody-Waite reduction by ln 2, degree-6 polynomial); exactly 0 below -87.3 (where e^x is
/// below f32's normal range), +inf above 88.72, NaN for NaN.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn exp_ps(x: __m256) -> __m256 {
    let too_small = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(-87.33));
    let too_large = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(88.72));
    let xc = _mm256_min_ps(
        _mm256_max_ps(x, _mm256_set1_ps(-87.33)),
        _mm256_set1_ps(88.72),
    );
    // x = n ln2 + r, |r| <= ln2 / 2; ln 2 split in two so n * hi is exact.
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        xc,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), xc);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.398_2e-3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.333_452e-3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.166_579_6e-2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.166_666_65));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5));
    p = _mm256_fmadd_ps(
        p,
        _mm256_mul_ps(r, r),
        _mm256_add_ps(r, _mm256_set1_ps(1.0)),
    );
    // 2^n in two steps (n up to 128 does not fit one exponent field).
    let ni = _mm256_cvtps_epi32(n);
    let half = _mm256_srai_epi32::<1>(ni);
    let pow = |k: __m256i| {
        _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            k,
            _mm256_set1_epi32(127),
        )))
    };
    let y = _mm256_mul_ps(_mm256_mul_ps(p, pow(half)), pow(_mm256_sub_epi32(ni, half)));
    let y = _mm256_andnot_ps(too_small, y);
    let y = _mm256_blendv_ps(y, _mm256_set1_ps(f32::INFINITY), too_large);
    // NaN in, NaN out (the clamps above turned it into a number).
    let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x);
    _mm256_blendv_ps(y, x, nan)
}

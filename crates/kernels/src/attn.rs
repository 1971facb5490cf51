//! Attention for a tile of queries held across SIMD lanes.
//!
//! One query against one f16 key at a time converts every key and value once per query and
//! ends each dot product with a horizontal sum. When many queries share a KV head (the tokens
//! of a prompt times the heads of a group), the tile's queries go across the lanes instead,
//! `nq` of them, a multiple of [`LANES`]: each key and value element, in f32, is broadcast once
//! and multiplied into all the queries at once, so both sides of attention are small matrix
//! products with no horizontal sums ([`lane_products`]), and the online softmax runs lane-wise
//! too ([`softmax_block`]). With few queries (a decoding token's heads) the same products run
//! turned around, keys (which the engine's cache keeps transposed in blocks for this) and
//! value dimensions across the lanes and the queries as rows ([`Start::ScaledRows`]): each
//! (query, key) pair gets the same FMAs in the same order either way, so the results are bit
//! for bit the same.
//!
//! Layouts, with `i` the query (lane) and `nq` the padded tile width:
//! - queries transposed: `qt[c * nq + i]`, `c < head_dim`;
//! - scores (then weights) of a block of keys: `s[j * nq + i]`, `j < n`;
//! - the accumulated values transposed: `acc[c * nq + i]`, `c < head_dim_v`.

/// Queries are padded to a multiple of this many lanes (one 512-bit vector of f32).
pub const LANES: usize = 16;

/// [`softmax_block`] takes lanes in multiples of this many (one 256-bit vector of f32), so a
/// few queries need not pad to a whole [`LANES`].
pub const SOFTMAX_LANES: usize = 8;

/// How [`lane_products`] starts its sums.
#[derive(Clone, Copy, Debug)]
pub enum Start<'a> {
    /// From zero.
    Zero,
    /// From what `out` holds, each lane `i` scaled by `scale[i]` (the online softmax's
    /// correction of the values accumulated so far).
    Scaled(&'a [f32]),
    /// From what `out` holds, each row `r` scaled by `scale[r]` (the same correction when
    /// the queries are the rows).
    ScaledRows(&'a [f32]),
}

/// The right side of [`lane_products`]: `depth` rows of `nq` lanes, element `i` of row `k`
/// written `b[k, i]`.
#[derive(Clone, Copy, Debug)]
pub enum Right<'a> {
    /// f32, `b[k, i]` at `[k * nq + i]`.
    F32(&'a [f32]),
    /// f16 little-endian bytes, `b[k, i]` at element `k * ld + i` (`ld >= nq`): the KV cache's
    /// blocks as they lie, converted in the product's loads (exactly, so the result is the
    /// same as from their f32 copy).
    F16 { bytes: &'a [u8], ld: usize },
}

/// `out[r * nq + i] = start + Σ_k a[r * a_row + k * a_k] · b[k, i]` for every `r < rows`,
/// `k < depth`, `i < nq`: a product whose left side is read with any strides (so keys serve
/// as rows and values as columns without a copy) and whose right side and result are in
/// lanes.
///
/// Panics if `nq` is not a multiple of [`LANES`] or a slice is too short for its shape.
#[allow(clippy::too_many_arguments)]
pub fn lane_products(
    out: &mut [f32],
    rows: usize,
    nq: usize,
    a: &[f32],
    a_row: usize,
    a_k: usize,
    b: Right,
    depth: usize,
    start: Start,
) {
    let v = Variant::selected();
    lane_products_with(v, out, rows, nq, a, a_row, a_k, b, depth, start);
}

/// The kernels of this module: the scalar reference and the SIMD ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Scalar,
    /// AVX2 with FMA and F16C.
    Avx2,
    /// 512-bit products (AVX-512 F/BW/VL); the softmax is the AVX2 one.
    Avx512,
}

impl Variant {
    /// The fastest variant `f` allows.
    pub fn best(f: crate::simd::CpuFeatures) -> Variant {
        if f.avx512 {
            Variant::Avx512
        } else if f.avx2 {
            Variant::Avx2
        } else {
            Variant::Scalar
        }
    }

    /// The variant [`lane_products`] and [`softmax_block`] use here.
    pub fn selected() -> Variant {
        Variant::best(crate::simd::features())
    }

    /// Every variant this CPU can run (for tests and benchmarks).
    pub fn available() -> Vec<Variant> {
        let f = crate::simd::detected();
        let mut v = vec![Variant::Scalar];
        if f.avx2 {
            v.push(Variant::Avx2);
        }
        if f.avx512 {
            v.push(Variant::Avx512);
        }
        v
    }

    pub fn name(self) -> &'static str {
        match self {
            Variant::Scalar => "scalar",
            Variant::Avx2 => "avx2",
            Variant::Avx512 => "avx512",
        }
    }

    /// Checked on every call of the kernels, so without allocating (decoding allocates
    /// nothing).
    fn runs_here(self) -> bool {
        let f = crate::simd::detected();
        match self {
            Variant::Scalar => true,
            Variant::Avx2 => f.avx2,
            Variant::Avx512 => f.avx512,
        }
    }
}

/// [`lane_products`] with the given variant.
///
/// Panics as [`lane_products`] does, and if this CPU cannot run `variant`.
#[allow(clippy::too_many_arguments)]
pub fn lane_products_with(
    variant: Variant,
    out: &mut [f32],
    rows: usize,
    nq: usize,
    a: &[f32],
    a_row: usize,
    a_k: usize,
    b: Right,
    depth: usize,
    start: Start,
) {
    check_products(out, rows, nq, a, a_row, a_k, b, depth, start);
    assert!(
        variant.runs_here(),
        "{} kernels on this CPU",
        variant.name()
    );
    // SAFETY: the shapes were checked and the CPU runs the variant.
    unsafe { lane_products_unchecked(variant, out, rows, nq, a, a_row, a_k, b, depth, start) }
}

/// [`lane_products_with`] without its checks: the entry point of `examples/emu_probe.rs`,
/// which runs kernels on an emulated CPU where feature detection cannot run.
///
/// # Safety
/// The CPU runs `variant`; the shapes are as [`lane_products`] checks them.
#[allow(clippy::too_many_arguments)]
pub unsafe fn lane_products_unchecked(
    variant: Variant,
    out: &mut [f32],
    rows: usize,
    nq: usize,
    a: &[f32],
    a_row: usize,
    a_k: usize,
    b: Right,
    depth: usize,
    start: Start,
) {
    #[cfg(target_arch = "x86_64")]
    match variant {
        // SAFETY: the caller's contract.
        Variant::Avx512 => unsafe {
            let bp = x86::RightPtr::of(b, nq);
            match b {
                Right::F32(_) => {
                    x86::products_512::<false>(out, rows, nq, a, a_row, a_k, bp, depth, start)
                }
                Right::F16 { .. } => {
                    x86::products_512::<true>(out, rows, nq, a, a_row, a_k, bp, depth, start)
                }
            }
        },
        // SAFETY: the caller's contract.
        Variant::Avx2 => unsafe {
            let bp = x86::RightPtr::of(b, nq);
            match b {
                Right::F32(_) => {
                    x86::products_256::<false>(out, rows, nq, a, a_row, a_k, bp, depth, start)
                }
                Right::F16 { .. } => {
                    x86::products_256::<true>(out, rows, nq, a, a_row, a_k, bp, depth, start)
                }
            }
        },
        Variant::Scalar => products_scalar(out, rows, nq, a, a_row, a_k, b, depth, start),
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = variant;
        products_scalar(out, rows, nq, a, a_row, a_k, b, depth, start);
    }
}

#[allow(clippy::too_many_arguments)]
fn check_products(
    out: &[f32],
    rows: usize,
    nq: usize,
    a: &[f32],
    a_row: usize,
    a_k: usize,
    b: Right,
    depth: usize,
    start: Start,
) {
    assert!(
        nq.is_multiple_of(LANES),
        "{nq} query lanes: not a multiple of {LANES}"
    );
    assert!(out.len() >= rows * nq, "lane products: output too short");
    let right_fits = match b {
        Right::F32(b) => b.len() >= depth * nq,
        Right::F16 { bytes, ld } => {
            assert!(ld >= nq, "lane products: f16 rows of {ld} for {nq} lanes");
            depth == 0 || 2 * ((depth - 1) * ld + nq) <= bytes.len()
        }
    };
    assert!(right_fits, "lane products: right side too short");
    if rows > 0 && depth > 0 {
        let last = (rows - 1) * a_row + (depth - 1) * a_k;
        assert!(last < a.len(), "lane products: left side too short");
    }
    match start {
        Start::Zero => {}
        Start::Scaled(s) => assert!(s.len() >= nq, "lane products: fewer scales than lanes"),
        Start::ScaledRows(s) => assert!(s.len() >= rows, "lane products: fewer scales than rows"),
    }
}

/// The reference of [`lane_products`].
#[allow(clippy::too_many_arguments)]
fn products_scalar(
    out: &mut [f32],
    rows: usize,
    nq: usize,
    a: &[f32],
    a_row: usize,
    a_k: usize,
    b: Right,
    depth: usize,
    start: Start,
) {
    for r in 0..rows {
        let o = &mut out[r * nq..(r + 1) * nq];
        match start {
            Start::Zero => o.fill(0.0),
            Start::Scaled(s) => o.iter_mut().zip(s).for_each(|(x, s)| *x *= s),
            Start::ScaledRows(s) => o.iter_mut().for_each(|x| *x *= s[r]),
        }
        for k in 0..depth {
            let ak = a[r * a_row + k * a_k];
            for (i, x) in o.iter_mut().enumerate() {
                let bk = match b {
                    Right::F32(b) => b[k * nq + i],
                    Right::F16 { bytes, ld } => {
                        let at = 2 * (k * ld + i);
                        half::f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
                    }
                };
                *x = ak.mul_add(bk, *x);
            }
        }
    }
}

/// One block of an online softmax, lane by lane: `s` holds the scores of `n` keys for `nq`
/// queries (`s[j * nq + i]`, `-inf` where a key is masked). Each lane's running maximum
/// `max[i]` takes in the block's; the scores become weights `e^(s - max[i])`; `corr[i]` is
/// what the lane's earlier weights (and values summed with them) must be multiplied by, and
/// `sum[i]` becomes the corrected sum of all its weights. A lane whose keys are all masked so
/// far keeps weight 0 and correction 1.
///
/// Panics if `nq` is not a multiple of [`SOFTMAX_LANES`] or a slice is too short.
pub fn softmax_block(
    s: &mut [f32],
    n: usize,
    nq: usize,
    max: &mut [f32],
    sum: &mut [f32],
    corr: &mut [f32],
) {
    let v = Variant::selected();
    softmax_block_with(v, s, n, nq, max, sum, corr);
}

/// [`softmax_block`] with the given variant (the SIMD ones share one kernel).
///
/// Panics as [`softmax_block`] does, and if this CPU cannot run `variant`.
pub fn softmax_block_with(
    variant: Variant,
    s: &mut [f32],
    n: usize,
    nq: usize,
    max: &mut [f32],
    sum: &mut [f32],
    corr: &mut [f32],
) {
    check_softmax(s, n, nq, max, sum, corr);
    assert!(
        variant.runs_here(),
        "{} kernels on this CPU",
        variant.name()
    );
    // SAFETY: the shapes were checked and the CPU runs the variant.
    unsafe { softmax_block_unchecked(variant, s, n, nq, max, sum, corr) }
}

/// [`softmax_block_with`] without its checks (see [`lane_products_unchecked`]).
///
/// # Safety
/// The CPU runs `variant`; the shapes are as [`softmax_block`] checks them.
pub unsafe fn softmax_block_unchecked(
    variant: Variant,
    s: &mut [f32],
    n: usize,
    nq: usize,
    max: &mut [f32],
    sum: &mut [f32],
    corr: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    match variant {
        // SAFETY: the caller's contract (either variant implies AVX2, FMA and F16C).
        Variant::Avx2 | Variant::Avx512 => unsafe { x86::softmax_256(s, n, nq, max, sum, corr) },
        Variant::Scalar => softmax_scalar(s, n, nq, max, sum, corr),
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = variant;
        softmax_scalar(s, n, nq, max, sum, corr);
    }
}

fn check_softmax(s: &[f32], n: usize, nq: usize, max: &[f32], sum: &[f32], corr: &[f32]) {
    assert!(
        nq.is_multiple_of(SOFTMAX_LANES),
        "{nq} query lanes: not a multiple of {SOFTMAX_LANES}"
    );
    assert!(s.len() >= n * nq, "softmax block: scores too short");
    assert!(
        max.len() >= nq && sum.len() >= nq && corr.len() >= nq,
        "softmax block: state shorter than the lanes"
    );
}

/// The reference of [`softmax_block`].
fn softmax_scalar(
    s: &mut [f32],
    n: usize,
    nq: usize,
    max: &mut [f32],
    sum: &mut [f32],
    corr: &mut [f32],
) {
    for i in 0..nq {
        let block_max = (0..n)
            .map(|j| s[j * nq + i])
            .fold(f32::NEG_INFINITY, f32::max);
        let new_max = max[i].max(block_max);
        let (shift, c) = if new_max == f32::NEG_INFINITY {
            (0.0, 1.0)
        } else {
            (new_max, (max[i] - new_max).exp())
        };
        let mut block_sum = 0.0;
        for j in 0..n {
            let w = (s[j * nq + i] - shift).exp();
            s[j * nq + i] = w;
            block_sum += w;
        }
        corr[i] = c;
        sum[i] = sum[i] * c + block_sum;
        max[i] = new_max;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Start;
    use crate::simd::x86::{exp_ps, load_f16x8};
    use std::arch::x86_64::*;

    /// Rows per step of the 256-bit product: 6 rows × 2 vectors = 12 accumulators, with the two
    /// vectors of `b` and a broadcast, fill 15 of the 16 registers.
    const ROWS_256: usize = 6;
    /// Rows per step of the 512-bit product, over two vectors of lanes (12 accumulators; each
    /// step loads two vectors and broadcasts six values for twelve FMAs) or one (eight).
    const ROWS_512_2: usize = 6;
    const ROWS_512_1: usize = 8;

    /// The right side as the kernels read it: `b[k, i]` at element `k * ld + i` from `p`, f16
    /// bytes when `F16`, else f32.
    #[derive(Clone, Copy)]
    pub(super) struct RightPtr {
        pub p: *const u8,
        pub ld: usize,
    }

    impl RightPtr {
        pub(super) fn of(b: super::Right, nq: usize) -> RightPtr {
            match b {
                super::Right::F32(b) => RightPtr {
                    p: b.as_ptr().cast(),
                    ld: nq,
                },
                super::Right::F16 { bytes, ld } => RightPtr {
                    p: bytes.as_ptr(),
                    ld,
                },
            }
        }

        /// Eight lanes `b[k, i..i + 8]`.
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn load8<const F16: bool>(self, k: usize, i: usize) -> __m256 {
            let at = k * self.ld + i;
            if F16 {
                load_f16x8(self.p.add(2 * at))
            } else {
                _mm256_loadu_ps(self.p.cast::<f32>().add(at))
            }
        }

        /// Sixteen lanes `b[k, i..i + 16]`.
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
        unsafe fn load16<const F16: bool>(self, k: usize, i: usize) -> __m512 {
            let at = k * self.ld + i;
            if F16 {
                _mm512_cvtph_ps(_mm256_loadu_si256(self.p.add(2 * at).cast()))
            } else {
                _mm512_loadu_ps(self.p.cast::<f32>().add(at))
            }
        }
    }

    /// # Safety
    /// AVX2, FMA and F16C; the shapes as checked by `check_products`, `b` pointing into the
    /// right side they checked (f16 when `F16`).
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn products_256<const F16: bool>(
        out: &mut [f32],
        rows: usize,
        nq: usize,
        a: &[f32],
        a_row: usize,
        a_k: usize,
        b: RightPtr,
        depth: usize,
        start: Start,
    ) {
        let (op, ap) = (out.as_mut_ptr(), a.as_ptr());
        for l in (0..nq).step_by(16) {
            let mut r = 0;
            while r + ROWS_256 <= rows {
                block_256::<ROWS_256, F16>(op, nq, ap, a_row, a_k, b, depth, start, r, l);
                r += ROWS_256;
            }
            // The rest in one block (a decoding token's few queries are all of the rows).
            match rows - r {
                0 => {}
                1 => block_256::<1, F16>(op, nq, ap, a_row, a_k, b, depth, start, r, l),
                2 => block_256::<2, F16>(op, nq, ap, a_row, a_k, b, depth, start, r, l),
                3 => block_256::<3, F16>(op, nq, ap, a_row, a_k, b, depth, start, r, l),
                4 => block_256::<4, F16>(op, nq, ap, a_row, a_k, b, depth, start, r, l),
                _ => block_256::<5, F16>(op, nq, ap, a_row, a_k, b, depth, start, r, l),
            }
        }
    }

    /// Rows `r0..r0 + R`, lanes `l..l + 16`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block_256<const R: usize, const F16: bool>(
        op: *mut f32,
        nq: usize,
        ap: *const f32,
        a_row: usize,
        a_k: usize,
        b: RightPtr,
        depth: usize,
        start: Start,
        r0: usize,
        l: usize,
    ) {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        match start {
            Start::Zero => {}
            Start::Scaled(s) => {
                let s = [
                    _mm256_loadu_ps(s.as_ptr().add(l)),
                    _mm256_loadu_ps(s.as_ptr().add(l + 8)),
                ];
                for (r, ar) in acc.iter_mut().enumerate() {
                    let o = op.add((r0 + r) * nq + l);
                    ar[0] = _mm256_mul_ps(_mm256_loadu_ps(o), s[0]);
                    ar[1] = _mm256_mul_ps(_mm256_loadu_ps(o.add(8)), s[1]);
                }
            }
            Start::ScaledRows(s) => {
                for (r, ar) in acc.iter_mut().enumerate() {
                    let o = op.add((r0 + r) * nq + l);
                    let sr = _mm256_set1_ps(*s.as_ptr().add(r0 + r));
                    ar[0] = _mm256_mul_ps(_mm256_loadu_ps(o), sr);
                    ar[1] = _mm256_mul_ps(_mm256_loadu_ps(o.add(8)), sr);
                }
            }
        }
        for k in 0..depth {
            let bv = [b.load8::<F16>(k, l), b.load8::<F16>(k, l + 8)];
            let ak = ap.add(r0 * a_row + k * a_k);
            for (r, ar) in acc.iter_mut().enumerate() {
                let x = _mm256_broadcast_ss(&*ak.add(r * a_row));
                ar[0] = _mm256_fmadd_ps(x, bv[0], ar[0]);
                ar[1] = _mm256_fmadd_ps(x, bv[1], ar[1]);
            }
        }
        for (r, ar) in acc.iter().enumerate() {
            let o = op.add((r0 + r) * nq + l);
            _mm256_storeu_ps(o, ar[0]);
            _mm256_storeu_ps(o.add(8), ar[1]);
        }
    }

    /// # Safety
    /// AVX2, FMA, F16C and AVX-512 F/BW/VL; the shapes as checked by `check_products`, `b`
    /// pointing into the right side they checked (f16 when `F16`).
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn products_512<const F16: bool>(
        out: &mut [f32],
        rows: usize,
        nq: usize,
        a: &[f32],
        a_row: usize,
        a_k: usize,
        b: RightPtr,
        depth: usize,
        start: Start,
    ) {
        let (op, ap) = (out.as_mut_ptr(), a.as_ptr());
        let mut l = 0;
        while l < nq {
            if l + 32 <= nq {
                let mut r = 0;
                while r + ROWS_512_2 <= rows {
                    block_512::<ROWS_512_2, 2, F16>(op, nq, ap, a_row, a_k, b, depth, start, r, l);
                    r += ROWS_512_2;
                }
                match rows - r {
                    0 => {}
                    1 => block_512::<1, 2, F16>(op, nq, ap, a_row, a_k, b, depth, start, r, l),
                    2 => block_512::<2, 2, F16>(op, nq, ap, a_row, a_k, b, depth, start, r, l),
                    3 => block_512::<3, 2, F16>(op, nq, ap, a_row, a_k, b, depth, start, r, l),
                    4 => block_512::<4, 2, F16>(op, nq, ap, a_row, a_k, b, depth, start, r, l),
                    _ => block_512::<5, 2, F16>(op, nq, ap, a_row, a_k, b, depth, start, r, l),
                }
                l += 32;
            } else {
                let mut r = 0;
                while r + ROWS_512_1 <= rows {
                    block_512::<ROWS_512_1, 1, F16>(op, nq, ap, a_row, a_k, b, depth, start, r, l);
                    r += ROWS_512_1;
                }
                match rows - r {
                    0 => {}
                    1 => block_512::<1, 1, F16>(op, nq, ap, a_row, a_k, b, depth, start, r, l),
                    2 => block_512::<2, 1, F16>(op, nq, ap, a_row, a_k, b, depth, start, r, l),
                    3 => block_512::<3, 1, F16>(op, nq, ap, a_row, a_k, b, depth, start, r, l),
                    4 => block_512::<4, 1, F16>(op, nq, ap, a_row, a_k, b, depth, start, r, l),
                    5 => block_512::<5, 1, F16>(op, nq, ap, a_row, a_k, b, depth, start, r, l),
                    6 => block_512::<6, 1, F16>(op, nq, ap, a_row, a_k, b, depth, start, r, l),
                    _ => block_512::<7, 1, F16>(op, nq, ap, a_row, a_k, b, depth, start, r, l),
                }
                l += 16;
            }
        }
    }

    /// Rows `r0..r0 + R`, lanes `l..l + 16 V`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn block_512<const R: usize, const V: usize, const F16: bool>(
        op: *mut f32,
        nq: usize,
        ap: *const f32,
        a_row: usize,
        a_k: usize,
        b: RightPtr,
        depth: usize,
        start: Start,
        r0: usize,
        l: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        match start {
            Start::Zero => {}
            Start::Scaled(s) => {
                let mut sv = [_mm512_setzero_ps(); V];
                for (v, x) in sv.iter_mut().enumerate() {
                    *x = _mm512_loadu_ps(s.as_ptr().add(l + 16 * v));
                }
                for (r, ar) in acc.iter_mut().enumerate() {
                    let o = op.add((r0 + r) * nq + l);
                    for (v, x) in ar.iter_mut().enumerate() {
                        *x = _mm512_mul_ps(_mm512_loadu_ps(o.add(16 * v)), sv[v]);
                    }
                }
            }
            Start::ScaledRows(s) => {
                for (r, ar) in acc.iter_mut().enumerate() {
                    let o = op.add((r0 + r) * nq + l);
                    let sr = _mm512_set1_ps(*s.as_ptr().add(r0 + r));
                    for (v, x) in ar.iter_mut().enumerate() {
                        *x = _mm512_mul_ps(_mm512_loadu_ps(o.add(16 * v)), sr);
                    }
                }
            }
        }
        for k in 0..depth {
            let mut bv = [_mm512_setzero_ps(); V];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = b.load16::<F16>(k, l + 16 * v);
            }
            let ak = ap.add(r0 * a_row + k * a_k);
            for (r, ar) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*ak.add(r * a_row));
                for (v, y) in ar.iter_mut().enumerate() {
                    *y = _mm512_fmadd_ps(x, bv[v], *y);
                }
            }
        }
        for (r, ar) in acc.iter().enumerate() {
            let o = op.add((r0 + r) * nq + l);
            for (v, x) in ar.iter().enumerate() {
                _mm512_storeu_ps(o.add(16 * v), *x);
            }
        }
    }

    /// # Safety
    /// AVX2, FMA and F16C; the shapes as checked by `check_softmax`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn softmax_256(
        s: &mut [f32],
        n: usize,
        nq: usize,
        max: &mut [f32],
        sum: &mut [f32],
        corr: &mut [f32],
    ) {
        let sp = s.as_mut_ptr();
        let neg_inf = _mm256_set1_ps(f32::NEG_INFINITY);
        for l in (0..nq).step_by(8) {
            let old_max = _mm256_loadu_ps(max.as_ptr().add(l));
            let mut new_max = old_max;
            for j in 0..n {
                new_max = _mm256_max_ps(new_max, _mm256_loadu_ps(sp.add(j * nq + l)));
            }
            // Lanes with every key masked so far: shift by 0 (weights e^-inf = 0), correct by 1.
            let none = _mm256_cmp_ps::<_CMP_EQ_OQ>(new_max, neg_inf);
            let shift = _mm256_andnot_ps(none, new_max);
            let c = _mm256_blendv_ps(
                exp_ps(_mm256_sub_ps(old_max, new_max)),
                _mm256_set1_ps(1.0),
                none,
            );
            let mut block_sum = _mm256_setzero_ps();
            for j in 0..n {
                let p = sp.add(j * nq + l);
                let w = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(p), shift));
                _mm256_storeu_ps(p, w);
                block_sum = _mm256_add_ps(block_sum, w);
            }
            _mm256_storeu_ps(corr.as_mut_ptr().add(l), c);
            let total = _mm256_fmadd_ps(_mm256_loadu_ps(sum.as_ptr().add(l)), c, block_sum);
            _mm256_storeu_ps(sum.as_mut_ptr().add(l), total);
            _mm256_storeu_ps(max.as_mut_ptr().add(l), new_max);
        }
    }
}

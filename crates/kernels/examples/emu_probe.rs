//! The native half of `scripts/check-avx512`: a shared library that the script loads into its
//! own process (ctypes) to test packed kernels this CPU cannot run (AVX-512 VNNI, AVX-VNNI)
//! under an x86 emulator.
//!
//! For each case the script calls, natively, [`emu_probe_prepare`] (random packed weights and
//! activations, the scalar reference, an output buffer full of NaN) and [`emu_probe_ranges`]
//! (every byte range [`emu_probe_run`] touches); then it runs [`emu_probe_run`] alone inside
//! the emulator, on copies of those ranges mapped at the same addresses, copies the output
//! back and calls [`emu_probe_check`] natively.
//!
//! [`emu_probe_run`] must run without the operating system: it does not allocate, print, read
//! the environment or detect CPU features (all of that happens in `prepare`), and it uses a
//! one-thread pool, which runs the product on the calling thread.
//!
//! The ranges come from the global allocator below: while a case is prepared, every heap block
//! allocated is recorded under the case's tag (the packed matrix keeps its buffer private, so
//! this is the only way to learn where it is).

use ggml_type::GgmlType;
use kernels::attn::{self, Right, Start, Variant};
use kernels::matmul::QuantizedActs;
#[cfg(target_arch = "x86_64")]
use kernels::packed::matmul_packed_with;
use kernels::packed::{matmul_packed_unchecked, Kernel, PackedMatrix, GROUP};
use kernels::pool::ThreadPool;
use kernels::quant::format;
use std::alloc::{GlobalAlloc, Layout, System};
use std::os::raw::c_char;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

const FORMATS: [GgmlType; kernels::packed::PACKED_TYPES.len()] = kernels::packed::PACKED_TYPES;
/// Token counts: one, and on both sides of the 4-token tile of the 8-row kernels and of the
/// 8-token tile of the 16-row ones (whose tiles of 3 and 7 run as 4 and 8).
const TOKENS: [usize; 5] = [1, 3, 4, 7, 9];
/// (groups of rows, columns): two groups (of the kernel's 8 or 16 rows) by two 256-element
/// super-blocks (sixteen 32-element blocks); three groups by the fewest blocks of a kind (one
/// super-block, or three blocks).
const SHAPES: [(usize, usize); 2] = [(2, 512), (3, 0)];
const SMALL_COLS: usize = 96;
const SMALL_COLS_K: usize = 256;

// ---- The recording allocator ----------------------------------------------------------------

const SLOTS: usize = 1024;
/// A slot being filled in (never a real address).
const CLAIMED: usize = 1;
/// Live blocks allocated while recording: address (0 = free slot), length, tag.
static SLOT_PTR: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static SLOT_LEN: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static SLOT_TAG: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
/// The tag allocations are recorded under; 0 when not recording.
static RECORDING: AtomicUsize = AtomicUsize::new(0);
/// Set when a block could not be recorded (the table was full).
static OVERFLOW: AtomicBool = AtomicBool::new(false);
static NEXT_TAG: AtomicUsize = AtomicUsize::new(1);

/// The system allocator, remembering the blocks allocated while a case is prepared.
struct Recording;

fn record(p: *mut u8, len: usize) {
    let tag = RECORDING.load(Ordering::Acquire);
    if p.is_null() || tag == 0 {
        return;
    }
    for i in 0..SLOTS {
        if SLOT_PTR[i]
            .compare_exchange(0, CLAIMED, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            SLOT_LEN[i].store(len, Ordering::Relaxed);
            SLOT_TAG[i].store(tag, Ordering::Relaxed);
            SLOT_PTR[i].store(p as usize, Ordering::Release);
            return;
        }
    }
    OVERFLOW.store(true, Ordering::Relaxed);
}

fn forget(p: *mut u8) {
    for slot in &SLOT_PTR {
        if slot
            .compare_exchange(p as usize, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
    }
}

// SAFETY: every call is forwarded to `System` unchanged; the bookkeeping only reads addresses.
unsafe impl GlobalAlloc for Recording {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc(layout) };
        record(p, layout.size());
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc_zeroed(layout) };
        record(p, layout.size());
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        forget(p);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(p, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Recording = Recording;

/// The live blocks recorded under `tag`.
fn recorded(tag: usize) -> Vec<(usize, usize)> {
    (0..SLOTS)
        .filter_map(|i| {
            let p = SLOT_PTR[i].load(Ordering::Acquire);
            (p > CLAIMED && SLOT_TAG[i].load(Ordering::Relaxed) == tag)
                .then(|| (p, SLOT_LEN[i].load(Ordering::Relaxed)))
        })
        .collect()
}

// ---- Cases ------------------------------------------------------------------------------------

/// One run of a kernel: everything `emu_probe_run` reads lives here or in blocks this owns.
pub enum Case {
    Packed(PackedCase),
    Lanes(LaneCase),
}

/// A packed matrix product.
pub struct PackedCase {
    kernel: Kernel,
    ty: GgmlType,
    n_tokens: usize,
    tag: usize,
    pool: ThreadPool,
    w: PackedMatrix,
    x: QuantizedActs,
    /// NaN until the kernel writes it.
    out: Vec<f32>,
    /// The scalar dot products of the source rows.
    want: Vec<f32>,
    /// For a VNNI kernel on a host with AVX2: the AVX2 kernel's output, computed natively.
    /// Both sum the same integers in the same order, so they must agree bit for bit.
    avx2: Option<Vec<f32>>,
}

/// The kernels under test: every one compiled but the scalar reference.
fn kernels_under_test() -> Vec<Kernel> {
    Kernel::all_compiled()
        .iter()
        .copied()
        .filter(|&k| k != Kernel::Scalar)
        .collect()
}

/// A small deterministic generator (64-bit LCG, high bits out).
struct Lcg(u64);

impl Lcg {
    fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 32) as u32
    }
    /// Uniform in `[lo, hi)`.
    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * (self.next_u32() >> 8) as f32 / (1u32 << 24) as f32
    }
}

/// Random source rows of `ty`: every value byte random, the f16 scales (and minimums) random
/// finite values of either sign; MXFP4's exponents scales of 2^-12..2^-1 and, for one block
/// in 8, the subnormal f32 scales of exponents 0 and 1 (as `tests/packed.rs` builds them).
fn random_rows(rng: &mut Lcg, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let block = ty.block_bytes();
    let mut out = vec![0u8; rows * cols / ty.block_size() * block];
    for b in out.chunks_exact_mut(block) {
        b.iter_mut().for_each(|v| *v = rng.next_u32() as u8);
        if ty == GgmlType::MXFP4 {
            let r = rng.next_u32();
            b[0] = if r.is_multiple_of(8) {
                (r / 8 % 2) as u8
            } else {
                116 + (r / 8 % 12) as u8
            };
            continue;
        }
        let scales: &[usize] = match ty {
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
            GgmlType::Q6_K => &[208],
            GgmlType::Q3_K => &[108],
            GgmlType::Q2_K => &[80, 82],
            _ => &[0],
        };
        for &at in scales {
            let v = half::f16::from_f32(rng.range(-0.05, 0.05));
            b[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    out
}

const CASES_PER_KERNEL: usize = FORMATS.len() * SHAPES.len() * TOKENS.len();

/// Case `index` as (kernel, format, rows, columns, tokens): kernels outermost, then formats,
/// shapes and token counts.
fn case_params(index: usize) -> Option<(Kernel, GgmlType, usize, usize, usize)> {
    let kernel = *kernels_under_test().get(index / CASES_PER_KERNEL)?;
    let i = index % CASES_PER_KERNEL;
    let ty = FORMATS[i / (SHAPES.len() * TOKENS.len())];
    let (groups, mut cols) = SHAPES[i / TOKENS.len() % SHAPES.len()];
    let rows = groups * kernel.group().unwrap_or(GROUP);
    if cols == 0 {
        cols = if ty.block_size() == 256 {
            SMALL_COLS_K
        } else {
            SMALL_COLS
        };
    }
    Some((kernel, ty, rows, cols, TOKENS[i % TOKENS.len()]))
}

fn build_case(index: usize, tag: usize) -> Option<Case> {
    let packed = kernels_under_test().len() * CASES_PER_KERNEL;
    if index >= packed {
        return build_lane_case(index - packed, tag).map(Case::Lanes);
    }
    build_packed_case(index, tag).map(Case::Packed)
}

fn build_packed_case(index: usize, tag: usize) -> Option<PackedCase> {
    let (kernel, ty, rows, cols, n_tokens) = case_params(index)?;
    // The same data for every kernel, so that their outputs can be compared.
    let mut rng = Lcg(0x9E37_79B9_7F4A_7C15 ^ (index % CASES_PER_KERNEL) as u64);
    let f = format(ty)?;
    let src = random_rows(&mut rng, ty, rows, cols);
    let group = kernel.group().unwrap_or(GROUP);
    let w = PackedMatrix::from_rows_with_group(ty, rows, cols, group, &src)?;
    let xf: Vec<f32> = (0..n_tokens * cols).map(|_| rng.range(-2.0, 2.0)).collect();
    let mut x = QuantizedActs::new();
    x.quantize(f.act_type(), &xf, n_tokens, cols);
    let dot = f.vec_dot_scalar();
    let rb = src.len() / rows;
    let mut want = vec![0f32; rows * n_tokens];
    for t in 0..n_tokens {
        for r in 0..rows {
            want[t * rows + r] = dot(cols, &src[r * rb..(r + 1) * rb], x.row(t));
        }
    }
    let pool = ThreadPool::new(1);
    let avx2 = avx2_output(kernel, &pool, ty, rows, cols, &src, &x);
    Some(PackedCase {
        kernel,
        ty,
        n_tokens,
        tag,
        pool,
        avx2,
        w,
        x,
        out: vec![f32::NAN; rows * n_tokens],
        want,
    })
}

// ---- Cases of the lane-wise attention kernels (kernels::attn) ---------------------------------

/// A lane-wise attention kernel on one shape.
pub struct LaneCase {
    variant: Variant,
    op: LaneOp,
    tag: usize,
    rows: usize,
    nq: usize,
    depth: usize,
    a: Vec<f32>,
    a_row: usize,
    a_k: usize,
    b: Vec<f32>,
    /// The right side as f16 bytes (rows of `nq`), for the cases that read it so.
    b16: Vec<u8>,
    scale: Vec<f32>,
    /// What the kernel writes: a product's output, or a softmax's scores, maxima, sums and
    /// corrections one after another (the script copies back one range).
    out: Vec<f32>,
    want: Vec<f32>,
}

#[derive(Clone, Copy)]
enum LaneOp {
    /// A product from zero (`out` starts as NaN) or scaling `out` first, by lane or by row.
    Products {
        scaled: Scaled,
        /// The right side read as f16 (as decoding reads the KV cache).
        f16: bool,
    },
    Softmax,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scaled {
    No,
    Lanes,
    Rows,
}

/// The kinds of product per shape: each start with an f32 right side, then scaled by row
/// with an f16 one.
const PRODUCT_KINDS: [(Scaled, bool); 4] = [
    (Scaled::No, false),
    (Scaled::Lanes, false),
    (Scaled::Rows, false),
    (Scaled::Rows, true),
];

/// The lane variants under test: the SIMD ones this build has.
fn lane_variants() -> Vec<Variant> {
    if cfg!(target_arch = "x86_64") {
        vec![Variant::Avx2, Variant::Avx512]
    } else {
        Vec::new()
    }
}

/// (rows, lanes, depth, left side transposed) of the products: rows on both sides of the
/// kernels' row steps (6 and 8), one to four vectors of 16 lanes. Every shape has a full row
/// step, so that each case runs its variant's FMA on registers (the one-row remainders may
/// fold the broadcast into the FMA, which the script counts as another instruction).
const LANE_SHAPES: [(usize, usize, usize, bool); 4] = [
    (10, 16, 64, false),
    (6, 32, 64, true),
    (13, 48, 40, false),
    (9, 64, 24, true),
];
/// Keys per softmax case.
const SOFTMAX_KEYS: [usize; 2] = [7, 64];

/// Every lane case as (variant, index among its kinds: the [`PRODUCT_KINDS`] of each shape,
/// then softmax blocks). Softmax only for AVX2: the AVX-512 variant runs the same 256-bit
/// softmax.
fn lane_cases() -> Vec<(Variant, usize)> {
    let mut cases = Vec::new();
    for v in lane_variants() {
        let kinds = LANE_SHAPES.len() * PRODUCT_KINDS.len()
            + if v == Variant::Avx2 {
                SOFTMAX_KEYS.len()
            } else {
                0
            };
        cases.extend((0..kinds).map(|i| (v, i)));
    }
    cases
}

fn right<'a>(f16: bool, b: &'a [f32], b16: &'a [u8], nq: usize) -> Right<'a> {
    if f16 {
        Right::F16 { bytes: b16, ld: nq }
    } else {
        Right::F32(b)
    }
}

fn start(scaled: Scaled, scale: &[f32]) -> Start<'_> {
    match scaled {
        Scaled::No => Start::Zero,
        Scaled::Lanes => Start::Scaled(scale),
        Scaled::Rows => Start::ScaledRows(scale),
    }
}

fn lane_variant_name(v: Variant) -> &'static str {
    match v {
        Variant::Avx512 => "attn-avx512",
        Variant::Avx2 => "attn-avx2",
        Variant::Scalar => "attn-scalar",
    }
}

fn build_lane_case(index: usize, tag: usize) -> Option<LaneCase> {
    let (variant, i) = *lane_cases().get(index)?;
    let mut rng = Lcg(0x2545_F491_4F6C_DD1D ^ i as u64);
    let mut random =
        |n: usize, lo: f32, hi: f32| -> Vec<f32> { (0..n).map(|_| rng.range(lo, hi)).collect() };
    if i < LANE_SHAPES.len() * PRODUCT_KINDS.len() {
        let (rows, nq, depth, transposed) = LANE_SHAPES[i / PRODUCT_KINDS.len()];
        let (scaled, f16) = PRODUCT_KINDS[i % PRODUCT_KINDS.len()];
        let (a_row, a_k) = if transposed { (1, rows) } else { (depth, 1) };
        let a = random(rows * depth, -1.0, 1.0);
        let mut b = random(depth * nq, -1.0, 1.0);
        let mut b16 = Vec::new();
        if f16 {
            let halves: Vec<half::f16> = b.iter().map(|&x| half::f16::from_f32(x)).collect();
            b16 = halves.iter().flat_map(|h| h.to_le_bytes()).collect();
            b = halves.iter().map(|h| h.to_f32()).collect();
        }
        let scale = random(nq.max(rows), 0.0, 1.0);
        let out = if scaled == Scaled::No {
            vec![f32::NAN; rows * nq]
        } else {
            random(rows * nq, -1.0, 1.0)
        };
        let mut want = out.clone();
        let start = start(scaled, &scale);
        attn::lane_products_with(
            Variant::Scalar,
            &mut want,
            rows,
            nq,
            &a,
            a_row,
            a_k,
            right(f16, &b, &b16, nq),
            depth,
            start,
        );
        return Some(LaneCase {
            variant,
            op: LaneOp::Products { scaled, f16 },
            tag,
            rows,
            nq,
            depth,
            a,
            a_row,
            a_k,
            b,
            b16,
            scale,
            out,
            want,
        });
    }
    let n = SOFTMAX_KEYS[i - LANE_SHAPES.len() * PRODUCT_KINDS.len()];
    let nq = 2 * attn::LANES;
    let mut s = random(n * nq, -30.0, 30.0);
    // Lane 0 sees no key; lane 1 every other one.
    for j in 0..n {
        s[j * nq] = f32::NEG_INFINITY;
        if j % 2 == 1 {
            s[j * nq + 1] = f32::NEG_INFINITY;
        }
    }
    let mut max = random(nq, -5.0, 5.0);
    max[0] = f32::NEG_INFINITY;
    let mut sum = random(nq, 0.5, 3.0);
    sum[0] = 0.0;
    let mut out = s;
    out.extend(max);
    out.extend(sum);
    out.extend(vec![f32::NAN; nq]);
    let mut want = out.clone();
    softmax_parts(&mut want, n, nq, Variant::Scalar);
    Some(LaneCase {
        variant,
        op: LaneOp::Softmax,
        tag,
        rows: n,
        nq,
        depth: 0,
        a: Vec::new(),
        a_row: 0,
        a_k: 0,
        b: Vec::new(),
        b16: Vec::new(),
        scale: Vec::new(),
        out,
        want,
    })
}

/// The softmax of a case's buffer (scores, maxima, sums, corrections).
fn softmax_parts(buf: &mut [f32], n: usize, nq: usize, v: Variant) {
    let (s, rest) = buf.split_at_mut(n * nq);
    let (max, rest) = rest.split_at_mut(nq);
    let (sum, corr) = rest.split_at_mut(nq);
    if v == Variant::Scalar {
        attn::softmax_block_with(v, s, n, nq, max, sum, corr);
    } else {
        // SAFETY: the caller runs on a CPU with the variant (natively checked, or emulated).
        unsafe { attn::softmax_block_unchecked(v, s, n, nq, max, sum, corr) };
    }
}

/// # Safety
/// The CPU runs the case's variant.
unsafe fn run_lane_case(c: &mut LaneCase) {
    match c.op {
        LaneOp::Products { scaled, f16 } => {
            let start = start(scaled, &c.scale);
            // SAFETY: the caller's contract; the shapes were built to fit.
            unsafe {
                attn::lane_products_unchecked(
                    c.variant,
                    &mut c.out,
                    c.rows,
                    c.nq,
                    &c.a,
                    c.a_row,
                    c.a_k,
                    right(f16, &c.b, &c.b16, c.nq),
                    c.depth,
                    start,
                )
            }
        }
        LaneOp::Softmax => softmax_parts(&mut c.out, c.rows, c.nq, c.variant),
    }
}

/// The AVX2 kernel's output (on 8-row records of the same source rows), computed natively,
/// to compare another kernel's with; `None` for the AVX2 kernel itself or a host without AVX2.
#[cfg(target_arch = "x86_64")]
fn avx2_output(
    kernel: Kernel,
    pool: &ThreadPool,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    src: &[u8],
    x: &QuantizedActs,
) -> Option<Vec<f32>> {
    if kernel == Kernel::Avx2 || !Kernel::Avx2.runs_on(kernels::simd::detected()) {
        return None;
    }
    let w = PackedMatrix::from_rows_with_group(ty, rows, cols, GROUP, src)?;
    let mut out = vec![0f32; rows * x.n_tokens()];
    matmul_packed_with(Kernel::Avx2, pool, &w, x, &mut out);
    Some(out)
}

#[cfg(not(target_arch = "x86_64"))]
fn avx2_output(
    _: Kernel,
    _: &ThreadPool,
    _: GgmlType,
    _: usize,
    _: usize,
    _: &[u8],
    _: &QuantizedActs,
) -> Option<Vec<f32>> {
    None
}

/// The check of `tests/packed.rs`: relative to the magnitude, absolute near zero.
fn error(got: f32, want: f32) -> f32 {
    let e = (got - want).abs() / (1.0 + want.abs());
    if e.is_nan() {
        f32::INFINITY
    } else {
        e
    }
}
const TOLERANCE: f32 = 1e-4;

/// The lane kernels against their scalar references: the same sums, in f32, in another order
/// (and `e^x` within 2 ulp); a NaN where the reference has a number, or the reverse, fails.
fn lane_error(got: f32, want: f32) -> f32 {
    if got.is_nan() || want.is_nan() {
        return if got.is_nan() && want.is_nan() {
            0.0
        } else {
            f32::INFINITY
        };
    }
    if got == want {
        return 0.0;
    }
    (got - want).abs() / (1.0 + want.abs())
}
const LANE_TOLERANCE: f32 = 1e-5;

// ---- The C interface --------------------------------------------------------------------------

/// How many cases there are (each kernel under test × format × shape × token count).
#[no_mangle]
pub extern "C" fn emu_probe_case_count() -> u32 {
    let lanes = lane_cases().len();
    (kernels_under_test().len() * CASES_PER_KERNEL + lanes) as u32
}

/// Builds case `index` (deterministic data); null if there is no such case or its memory
/// could not all be recorded. Free it with [`emu_probe_free`].
#[no_mangle]
pub extern "C" fn emu_probe_prepare(index: u32) -> *mut Case {
    let tag = NEXT_TAG.fetch_add(1, Ordering::Relaxed);
    OVERFLOW.store(false, Ordering::Relaxed);
    RECORDING.store(tag, Ordering::Release);
    let case = build_case(index as usize, tag).map(Box::new);
    RECORDING.store(0, Ordering::Release);
    match case {
        Some(c) if !OVERFLOW.load(Ordering::Relaxed) => Box::into_raw(c),
        _ => std::ptr::null_mut(),
    }
}

/// Writes up to `max` of the address ranges [`emu_probe_run`] may touch into `ptrs` and
/// `lens` and returns how many there are (more than `max` means some were left out). The
/// first range is the output, which the caller copies back after an emulated run; the others
/// are the case itself and every heap block allocated while preparing it.
///
/// # Safety
/// `case` comes from [`emu_probe_prepare`] and is not freed; `ptrs` and `lens` hold `max`
/// elements each.
#[no_mangle]
pub unsafe extern "C" fn emu_probe_ranges(
    case: *const Case,
    ptrs: *mut usize,
    lens: *mut usize,
    max: u32,
) -> u32 {
    // SAFETY: the caller's contract.
    let (out, tag) = match unsafe { &*case } {
        Case::Packed(c) => (&c.out, c.tag),
        Case::Lanes(c) => (&c.out, c.tag),
    };
    let out = (out.as_ptr() as usize, std::mem::size_of_val(&out[..]));
    let mut ranges = vec![out];
    ranges.extend(recorded(tag).into_iter().filter(|&r| r != out));
    for (i, &(p, len)) in ranges.iter().take(max as usize).enumerate() {
        // SAFETY: i < max, within the caller's arrays.
        unsafe {
            *ptrs.add(i) = p;
            *lens.add(i) = len;
        }
    }
    ranges.len() as u32
}

/// The product of the case with its kernel, into its output: what the emulator runs.
///
/// # Safety
/// `case` comes from [`emu_probe_prepare`] and is not freed, and the CPU running this (real or
/// emulated) has the instructions of the case's kernel.
#[no_mangle]
pub unsafe extern "C" fn emu_probe_run(case: *mut Case) {
    // SAFETY: the caller's contract.
    match unsafe { &mut *case } {
        // SAFETY: the caller's contract: the CPU runs `c.kernel`.
        Case::Packed(c) => unsafe {
            matmul_packed_unchecked(c.kernel, &c.pool, &c.w, &c.x, &mut c.out)
        },
        // SAFETY: the caller's contract: the CPU runs `c.variant`.
        Case::Lanes(c) => unsafe { run_lane_case(c) },
    }
}

/// 0 if the output agrees with the scalar reference within the tolerance (and, for a VNNI
/// kernel checked on an AVX2 host, bit for bit with the AVX2 kernel's), 1 if not; the largest
/// error (|got - want| / (1 + |want|); infinite for NaN or a bit that differs from AVX2) goes
/// to `max_err`.
///
/// # Safety
/// `case` comes from [`emu_probe_prepare`] and is not freed; `max_err` is writable or null.
#[no_mangle]
pub unsafe extern "C" fn emu_probe_check(case: *const Case, max_err: *mut f32) -> i32 {
    // SAFETY: the caller's contract.
    let c = match unsafe { &*case } {
        Case::Packed(c) => c,
        Case::Lanes(c) => {
            let worst = c
                .out
                .iter()
                .zip(&c.want)
                .map(|(&g, &e)| lane_error(g, e))
                .fold(0f32, f32::max);
            if !max_err.is_null() {
                // SAFETY: the caller's contract.
                unsafe { *max_err = worst };
            }
            return i32::from(worst > LANE_TOLERANCE);
        }
    };
    let worst = c
        .out
        .iter()
        .zip(&c.want)
        .map(|(&g, &e)| error(g, e))
        .fold(0f32, f32::max);
    let same_as_avx2 = c.avx2.as_ref().is_none_or(|a| {
        a.iter()
            .zip(&c.out)
            .all(|(x, y)| x.to_bits() == y.to_bits())
    });
    let worst = if same_as_avx2 { worst } else { f32::INFINITY };
    if !max_err.is_null() {
        // SAFETY: the caller's contract.
        unsafe { *max_err = worst };
    }
    i32::from(worst > TOLERANCE)
}

/// Writes `kernel=.. format=.. tokens=.. rows=.. cols=..` and a NUL into `buf` (cut to `len`
/// bytes) and returns the length of the whole text.
///
/// # Safety
/// `case` comes from [`emu_probe_prepare`] and is not freed; `buf` holds `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn emu_probe_describe(case: *const Case, buf: *mut c_char, len: u32) -> u32 {
    // SAFETY: the caller's contract.
    let text = match unsafe { &*case } {
        Case::Packed(c) => format!(
            "kernel={} format={} tokens={} rows={} cols={}",
            c.kernel.name(),
            c.ty,
            c.n_tokens,
            c.w.rows(),
            c.w.cols()
        ),
        Case::Lanes(c) => format!(
            "kernel={} format={} tokens={} rows={} cols={}",
            lane_variant_name(c.variant),
            match c.op {
                LaneOp::Products {
                    scaled: Scaled::No, ..
                } => "lanes",
                LaneOp::Products {
                    scaled: Scaled::Lanes,
                    ..
                } => "lanes*",
                LaneOp::Products {
                    scaled: Scaled::Rows,
                    f16: false,
                } => "lanes*rows",
                LaneOp::Products {
                    scaled: Scaled::Rows,
                    f16: true,
                } => "lanes*rows-f16",
                LaneOp::Softmax => "softmax",
            },
            c.nq,
            c.rows,
            c.depth
        ),
    };
    if len > 0 {
        let n = text.len().min(len as usize - 1);
        // SAFETY: n + 1 <= len bytes of `buf`.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), n);
            *buf.add(n) = 0;
        }
    }
    text.len() as u32
}

/// Frees a case.
///
/// # Safety
/// `case` comes from [`emu_probe_prepare`] (or is null) and is not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn emu_probe_free(case: *mut Case) {
    if !case.is_null() {
        // SAFETY: the caller's contract: we own it.
        drop(unsafe { Box::from_raw(case) });
    }
}

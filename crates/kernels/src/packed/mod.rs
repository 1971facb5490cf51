//! Weight matrices repacked at load time into groups of 8 interleaved rows, for products whose
//! SIMD lanes are rows: one pass over a block of 8 rows serves every token of a prompt tile, the
//! int8 products of a row stay in one lane (no horizontal sums), and the per-row scales are
//! applied as vectors.
//!
//! Layout of one record (8 rows × one 32-element block), in the same bytes per weight as the
//! source format (so memory and bandwidth do not grow):
//! - `d`: the 8 rows' scales, f16;
//! - `m`: the 8 rows' minimums, f16 (Q4_1 and Q5_1 only);
//! - `qs`: the values. Vector `k` (0..8) of a record pairs with elements `4k..4k+4` of the
//!   activation block: its byte `4i + j` is element `4k + j` of row `i`. 4- and 5-bit formats
//!   store the low 4 bits as nibbles, vectors `2p` and `2p + 1` in the low and high halves of
//!   the 32 bytes at `32p`; Q8_0 stores the signed bytes of the 8 vectors in order;
//! - `qh` (Q5_0 and Q5_1): bit `k` of byte `b` is the fifth bit of byte `b` of vector `k`.
//!
//! The value of a record's row `i` against an activation block is
//! `d_i * d_x * Σ q·x + m_i * s_x`, where `s_x = d_x * Σ x` and, for formats without a stored
//! minimum, `m_i = -8 d_i` (Q4_0), `-16 d_i` (Q5_0) or 0 (Q8_0): the same sum the format's dot
//! product computes, in the same block order.

mod kquant;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_k;

use crate::matmul::{OutPtr, QuantizedActs};
use crate::pool::ThreadPool;
use crate::quant::f16_to_f32;
use ggml_type::GgmlType;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Rows per record.
pub const GROUP: usize = 8;
/// Elements per block (every packed format has 32-element blocks).
const QK: usize = 32;
/// Source rows [`PackedMatrix::pack_many`] reads and packs per step (a multiple of [`GROUP`]).
pub const PACK_STEP_ROWS: usize = 256;
/// Tokens per tile: the accumulators of a tile stay in registers.
const TILE_TOKENS: usize = 4;

/// What differs between the packed formats.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Spec {
    pub ty: GgmlType,
    /// Bits per value: 4, 5 or 8 (8: signed bytes).
    pub bits: u32,
    pub has_min: bool,
    /// `m = min_factor * d` where the format stores no minimum.
    pub min_factor: f32,
    /// Bytes of one source block.
    pub src_block: usize,
}

impl Spec {
    pub const fn d_off(&self) -> usize {
        0
    }
    pub const fn m_off(&self) -> usize {
        2 * GROUP
    }
    pub const fn qs_off(&self) -> usize {
        if self.has_min {
            4 * GROUP
        } else {
            2 * GROUP
        }
    }
    pub const fn qs_bytes(&self) -> usize {
        if self.bits == 8 {
            GROUP * QK
        } else {
            GROUP * QK / 2
        }
    }
    pub const fn qh_off(&self) -> usize {
        self.qs_off() + self.qs_bytes()
    }
    /// Bytes of one record.
    pub const fn record(&self) -> usize {
        match self.ty {
            GgmlType::Q4_K => kquant::Q4K_RECORD,
            GgmlType::Q6_K => kquant::Q6K_RECORD,
            _ => self.qh_off() + if self.bits == 5 { GROUP * QK / 8 } else { 0 },
        }
    }
    /// Whether this is a 256-element k-quant (see [`kquant`]).
    pub const fn is_k(&self) -> bool {
        matches!(self.ty, GgmlType::Q4_K | GgmlType::Q6_K)
    }
    /// Elements per block.
    pub const fn qk(&self) -> usize {
        if self.is_k() {
            kquant::QK_K
        } else {
            QK
        }
    }
}

pub(crate) const Q4_0: Spec = Spec {
    ty: GgmlType::Q4_0,
    bits: 4,
    has_min: false,
    min_factor: -8.0,
    src_block: 18,
};
pub(crate) const Q4_1: Spec = Spec {
    ty: GgmlType::Q4_1,
    bits: 4,
    has_min: true,
    min_factor: 0.0,
    src_block: 20,
};
pub(crate) const Q5_0: Spec = Spec {
    ty: GgmlType::Q5_0,
    bits: 5,
    has_min: false,
    min_factor: -16.0,
    src_block: 22,
};
pub(crate) const Q5_1: Spec = Spec {
    ty: GgmlType::Q5_1,
    bits: 5,
    has_min: true,
    min_factor: 0.0,
    src_block: 24,
};
pub(crate) const Q8_0: Spec = Spec {
    ty: GgmlType::Q8_0,
    bits: 8,
    has_min: false,
    min_factor: 0.0,
    src_block: 34,
};

pub(crate) const Q4_K: Spec = Spec {
    ty: GgmlType::Q4_K,
    bits: 4,
    has_min: true,
    min_factor: 0.0,
    src_block: 144,
};
pub(crate) const Q6_K: Spec = Spec {
    ty: GgmlType::Q6_K,
    bits: 6,
    has_min: false,
    min_factor: 0.0,
    src_block: 210,
};

const SPECS: [Spec; 7] = [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K];

/// The weight formats that have a packed layout.
pub const PACKED_TYPES: [GgmlType; SPECS.len()] = {
    let mut types = [GgmlType::F32; SPECS.len()];
    let mut i = 0;
    while i < SPECS.len() {
        types[i] = SPECS[i].ty;
        i += 1;
    }
    types
};

fn spec_of(ty: GgmlType) -> Option<Spec> {
    SPECS.into_iter().find(|s| s.ty == ty)
}

/// A weight matrix in the packed layout. Rows are a multiple of [`GROUP`], columns of 32.
#[derive(Debug)]
pub struct PackedMatrix {
    spec: Spec,
    rows: usize,
    cols: usize,
    data: Vec<u8>,
}

impl PackedMatrix {
    /// Whether matrices of this type and shape can be packed, and packing pays on this CPU
    /// (the packed kernels are for AVX2; elsewhere the format's own dot products are used).
    pub fn supported(ty: GgmlType, rows: usize, cols: usize) -> bool {
        Self::layout_fits(ty, rows, cols) && Self::fast_path_available()
    }

    fn layout_fits(ty: GgmlType, rows: usize, cols: usize) -> bool {
        spec_of(ty).is_some_and(|s| {
            rows > 0 && rows.is_multiple_of(GROUP) && cols > 0 && cols.is_multiple_of(s.qk())
        })
    }

    fn fast_path_available() -> bool {
        #[cfg(target_arch = "x86_64")]
        if crate::simd::features().avx2 {
            return true;
        }
        false
    }

    /// An empty packed matrix to fill with [`PackedMatrix::pack_rows`]; `None` when the type or
    /// shape cannot be packed (see [`PackedMatrix::layout_fits`]) or the size overflows.
    pub fn new(ty: GgmlType, rows: usize, cols: usize) -> Option<PackedMatrix> {
        if !Self::layout_fits(ty, rows, cols) {
            return None;
        }
        let spec = spec_of(ty)?;
        let len = (rows / GROUP)
            .checked_mul(cols / spec.qk())?
            .checked_mul(spec.record())?;
        let data = vec![0; len];
        advise_huge_pages(&data);
        Some(PackedMatrix {
            spec,
            rows,
            cols,
            data,
        })
    }

    pub fn ty(&self) -> GgmlType {
        self.spec.ty
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Bytes of one row in the source format.
    pub fn src_row_bytes(&self) -> usize {
        self.cols / self.spec.qk() * self.spec.src_block
    }
    fn blocks_per_row(&self) -> usize {
        self.cols / self.spec.qk()
    }
    fn group_bytes(&self) -> usize {
        self.blocks_per_row() * self.spec.record()
    }

    /// Packs source rows `first_row..` (`src` holds whole rows in the source format;
    /// `first_row` and the row count a multiple of [`GROUP`]). Panics otherwise.
    pub fn pack_rows(&mut self, first_row: usize, src: &[u8]) {
        let row_bytes = self.src_row_bytes();
        assert!(first_row.is_multiple_of(GROUP), "rows start at a group");
        let g0 = first_row / GROUP;
        let gb = self.group_bytes();
        let (spec, nb) = (self.spec, self.blocks_per_row());
        pack_groups(&spec, nb, row_bytes, &mut self.data[g0 * gb..], src);
    }

    /// Fills several matrices at once on `n_threads` threads: the rows of all of them are cut
    /// into steps of [`PACK_STEP_ROWS`] and the steps shared out in equal bytes, so that a
    /// model of many small matrices packs as fast as one large one (no thread start or join
    /// per matrix). `read(m, first_row, buf)` fills `buf` with whole source rows of matrix `m`
    /// from `first_row` on. The first error of any thread is returned.
    pub fn pack_many<E: Send>(
        mats: &mut [PackedMatrix],
        n_threads: usize,
        read: impl Fn(usize, usize, &mut [u8]) -> Result<(), E> + Sync,
    ) -> Result<(), E> {
        struct Step<'a> {
            mat: usize,
            first_row: usize,
            spec: Spec,
            nb: usize,
            row_bytes: usize,
            out: &'a mut [u8],
        }
        let mut steps = Vec::new();
        for (m, mat) in mats.iter_mut().enumerate() {
            let (spec, nb, gb) = (mat.spec, mat.blocks_per_row(), mat.group_bytes());
            let row_bytes = mat.src_row_bytes();
            let step_bytes = PACK_STEP_ROWS / GROUP * gb;
            for (i, out) in mat.data.chunks_mut(step_bytes).enumerate() {
                steps.push(Step {
                    mat: m,
                    first_row: i * PACK_STEP_ROWS,
                    spec,
                    nb,
                    row_bytes,
                    out,
                });
            }
        }
        let total: usize = steps.iter().map(|s| s.out.len()).sum();
        let share = total.div_ceil(n_threads.max(1)).max(1);
        // Consecutive steps to each thread, about `share` bytes each.
        let mut parts: Vec<Vec<Step>> = Vec::new();
        let mut bytes = 0;
        for step in steps {
            if parts.is_empty() || (bytes >= share && parts.len() < n_threads.max(1)) {
                parts.push(Vec::new());
                bytes = 0;
            }
            bytes += step.out.len();
            if let Some(part) = parts.last_mut() {
                part.push(step);
            }
        }
        let read = &read;
        let pack_part = move |part: Vec<Step>| -> Result<(), E> {
            let mut buf = Vec::new();
            for s in part {
                let groups = s.out.len() / (s.nb * s.spec.record());
                buf.resize(groups * GROUP * s.row_bytes, 0);
                read(s.mat, s.first_row, &mut buf)?;
                pack_groups(&s.spec, s.nb, s.row_bytes, s.out, &buf);
            }
            Ok(())
        };
        std::thread::scope(|scope| {
            let mut parts = parts.into_iter();
            let mine = parts.next();
            let handles: Vec<_> = parts.map(|p| scope.spawn(move || pack_part(p))).collect();
            let mut first = mine.map_or(Ok(()), pack_part);
            for handle in handles {
                let result = match handle.join() {
                    Ok(r) => r,
                    Err(panic) => std::panic::resume_unwind(panic),
                };
                if first.is_ok() {
                    first = result;
                }
            }
            first
        })
    }

    /// Packs a whole matrix held in memory in the source format.
    pub fn from_rows(ty: GgmlType, rows: usize, cols: usize, src: &[u8]) -> Option<PackedMatrix> {
        let mut p = PackedMatrix::new(ty, rows, cols)?;
        if src.len() != rows * p.src_row_bytes() {
            return None;
        }
        p.pack_rows(0, src);
        Some(p)
    }
}

/// Asks Linux to back `buf` with 2 MiB pages (transparent huge pages in `madvise` mode): a
/// decode step streams every weight once, and with 4 KiB pages the TLB misses on that stream
/// cost bandwidth. Only whole 2 MiB-aligned spans inside `buf` are advised; the buffer must
/// not have been touched yet (a fresh zeroed allocation) for the pages to be huge from the
/// first fault. `HEARTH_NO_HUGEPAGES=1` turns it off.
fn advise_huge_pages(buf: &[u8]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        if buf.len() < 2 * HUGE || std::env::var_os("HEARTH_NO_HUGEPAGES").is_some() {
            return;
        }
        let start = buf.as_ptr() as usize;
        let first = start.next_multiple_of(HUGE);
        let end = (start + buf.len()) / HUGE * HUGE;
        if end > first {
            // SAFETY: the range lies inside `buf`, which this process owns; MADV_HUGEPAGE
            // only changes how the kernel backs it, never its contents. A failure (an older
            // kernel, THP disabled) leaves ordinary pages, which is fine.
            unsafe {
                libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
}

/// Packs the groups of rows in `src` (whole groups) into the start of `out`.
fn pack_groups(spec: &Spec, nb: usize, row_bytes: usize, out: &mut [u8], src: &[u8]) {
    assert!(
        src.len().is_multiple_of(row_bytes * GROUP),
        "whole groups of rows"
    );
    let gb = nb * spec.record();
    assert!(
        src.len() / (row_bytes * GROUP) * gb <= out.len(),
        "rows past the matrix"
    );
    for (g, rows) in src.chunks_exact(row_bytes * GROUP).enumerate() {
        let out = &mut out[g * gb..(g + 1) * gb];
        for b in 0..nb {
            let rec = &mut out[b * spec.record()..(b + 1) * spec.record()];
            pack_record(spec, rows, row_bytes, b, rec);
        }
    }
}

/// Little-endian u32 at `at`.
#[inline(always)]
pub(crate) fn rd32(s: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([s[at], s[at + 1], s[at + 2], s[at + 3]])
}

#[inline(always)]
pub(crate) fn wr32(d: &mut [u8], at: usize, v: u32) {
    d[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Four bytes of packed nibbles from two runs of four source nibbles each (`a`: elements
/// `j`, `b`: elements `j + 4`, both taken from the low (`high == false`) or high nibbles).
#[inline(always)]
pub(crate) fn nibble_quad(a: u32, b: u32, high: bool) -> u32 {
    if high {
        ((a >> 4) & 0x0F0F_0F0F) | (b & 0xF0F0_F0F0)
    } else {
        (a & 0x0F0F_0F0F) | ((b & 0x0F0F_0F0F) << 4)
    }
}

/// Writes the record of block `b` of the 8 rows in `rows`, byte by byte from the source
/// layout (load time is part of the time to first token, so no per-element unpacking).
fn pack_record(spec: &Spec, rows: &[u8], row_bytes: usize, b: usize, rec: &mut [u8]) {
    match spec.ty {
        GgmlType::Q4_K => return kquant::pack_q4k(rows, row_bytes, b, rec),
        GgmlType::Q6_K => return kquant::pack_q6k(rows, row_bytes, b, rec),
        _ => {}
    }
    let (qs_off, qh_off) = (spec.qs_off(), spec.qh_off());
    for i in 0..GROUP {
        let off = i * row_bytes + b * spec.src_block;
        let src = &rows[off..off + spec.src_block];
        rec[spec.d_off() + 2 * i..spec.d_off() + 2 * i + 2].copy_from_slice(&src[..2]);
        let mut at = 2;
        if spec.has_min {
            rec[spec.m_off() + 2 * i..spec.m_off() + 2 * i + 2].copy_from_slice(&src[2..4]);
            at = 4;
        }
        if spec.bits == 8 {
            // Elements 4k..4k + 4 go to bytes 4i.. of vector k.
            let qs = &src[at..at + QK];
            for k in 0..QK / 4 {
                let dst = qs_off + 32 * k + 4 * i;
                rec[dst..dst + 4].copy_from_slice(&qs[4 * k..4 * k + 4]);
            }
            continue;
        }
        let qh = if spec.bits == 5 {
            let h = u32::from_le_bytes([src[at], src[at + 1], src[at + 2], src[at + 3]]);
            at += 4;
            h
        } else {
            0
        };
        let qs = &src[at..at + QK / 2];
        // Byte 4i + j of the 32 bytes at 32p holds elements 8p + j (low nibble) and
        // 8p + 4 + j (high nibble); source element e < 16 is the low nibble of qs[e], e >= 16
        // the high nibble of qs[e - 16]. Four bytes at a time.
        for p in 0..4 {
            let at = 8 * (p % 2);
            let quad = nibble_quad(rd32(qs, at), rd32(qs, at + 4), p >= 2);
            wr32(rec, qs_off + 32 * p + 4 * i, quad);
        }
        if spec.bits == 5 {
            // Bit k of byte 4i + j: the fifth bit of element 4k + j.
            for j in 0..4 {
                let mut bits = 0u8;
                for k in 0..8 {
                    bits |= (((qh >> (4 * k + j)) & 1) as u8) << k;
                }
                rec[qh_off + 4 * i + j] = bits;
            }
        }
    }
}

/// The value `q` of element `e` of row `i` in a record, and the row's scale and minimum.
fn record_value(spec: &Spec, rec: &[u8], i: usize, e: usize) -> i32 {
    let (k, byte) = (e / 4, 4 * i + e % 4);
    if spec.bits == 8 {
        return rec[spec.qs_off() + 32 * k + byte] as i8 as i32;
    }
    let packed = rec[spec.qs_off() + 32 * (k / 2) + byte];
    let lo = if k % 2 == 0 {
        packed & 0x0F
    } else {
        packed >> 4
    } as i32;
    let hi = if spec.bits == 5 {
        ((rec[spec.qh_off() + byte] >> k) & 1) as i32
    } else {
        0
    };
    lo | hi << 4
}

fn record_scales(spec: &Spec, rec: &[u8], i: usize) -> (f32, f32) {
    let at = |off: usize| f16_to_f32([rec[off + 2 * i], rec[off + 2 * i + 1]]);
    let d = at(spec.d_off());
    let m = if spec.has_min {
        at(spec.m_off())
    } else {
        spec.min_factor * d
    };
    (d, m)
}

/// Activation blocks as the packed kernels read them: for token `t`, block `b`, the quantized
/// values at `qs(t, b)` and `(d_x, s_x)` from the activations' side table.
pub(crate) struct ActView<'a> {
    pub acts: &'a QuantizedActs,
    /// Bytes of one activation block and the offset of its values.
    pub block: usize,
    pub qs_off: usize,
}

impl ActView<'_> {
    fn qs(&self, t: usize, b: usize) -> &[u8] {
        let start = b * self.block + self.qs_off;
        &self.acts.row(t)[start..start + QK]
    }
}

/// Scalar reference of the packed product: `out[c][i]` for the 8 rows of group `g` against
/// tokens `t0..t0 + n`.
fn group_scalar(
    w: &PackedMatrix,
    x: &ActView,
    g: usize,
    t0: usize,
    n: usize,
    out: &mut [[f32; GROUP]; TILE_TOKENS],
) {
    let (spec, nb) = (w.spec, w.blocks_per_row());
    let gb = w.group_bytes();
    let group = &w.data[g * gb..(g + 1) * gb];
    if spec.is_k() {
        kquant::group_scalar(spec.ty == GgmlType::Q6_K, group, nb, x, t0, n, out);
        return;
    }
    for (c, o) in out.iter_mut().enumerate().take(n) {
        let aux = x.acts.aux(t0 + c);
        *o = [0.0; GROUP];
        for b in 0..nb {
            let rec = &group[b * spec.record()..(b + 1) * spec.record()];
            let xq = x.qs(t0 + c, b);
            let (dx, sx) = (aux[2 * b], aux[2 * b + 1]);
            for (i, oi) in o.iter_mut().enumerate() {
                let dot: i32 = (0..QK)
                    .map(|e| record_value(&spec, rec, i, e) * xq[e] as i8 as i32)
                    .sum();
                let (d, m) = record_scales(&spec, rec, i);
                *oi += (d * dx) * dot as f32;
                if spec.bits != 8 {
                    *oi += m * sx;
                }
            }
        }
    }
}

/// The activation layout the packed format reads (its format's `act_type`).
fn act_view<'a>(w: &PackedMatrix, x: &'a QuantizedActs) -> ActView<'a> {
    let (block, qs_off) = match x.act_type() {
        GgmlType::Q8_1 => (36, 4),
        GgmlType::Q8_K => (kquant::Q8K_BLOCK, kquant::Q8K_QS),
        _ => (34, 2),
    };
    let want = if w.spec.is_k() {
        GgmlType::Q8_K
    } else if w.spec.has_min {
        GgmlType::Q8_1
    } else {
        GgmlType::Q8_0
    };
    assert_eq!(x.act_type(), want, "activations for a packed {}", w.spec.ty);
    assert_eq!(x.cols(), w.cols, "activation width");
    ActView {
        acts: x,
        block,
        qs_off,
    }
}

/// Which kernel computes a tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX2 with the VEX-encoded VNNI dot product.
    #[cfg(target_arch = "x86_64")]
    AvxVnni,
    /// AVX2 with the AVX-512 VNNI dot product on 256-bit vectors.
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
}

impl Kernel {
    /// The fastest the CPU runs, within the environment's restrictions
    /// ([`crate::simd::features`]).
    pub fn best() -> Kernel {
        let f = crate::simd::features();
        Kernel::all_compiled()
            .iter()
            .rev()
            .copied()
            .find(|k| k.runs_on(f))
            .unwrap_or(Kernel::Scalar)
    }

    /// Every kernel this CPU can run (for tests).
    pub fn available() -> Vec<Kernel> {
        let f = crate::simd::detected();
        Kernel::all_compiled()
            .iter()
            .copied()
            .filter(|k| k.runs_on(f))
            .collect()
    }

    /// Every kernel built for this target, slowest first, whether this CPU runs it or not (an
    /// emulator test runs the ones it cannot).
    pub fn all_compiled() -> &'static [Kernel] {
        &[
            Kernel::Scalar,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2,
            #[cfg(target_arch = "x86_64")]
            Kernel::AvxVnni,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni,
        ]
    }

    pub fn name(&self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Kernel::AvxVnni => "avx-vnni",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => "avx512-vnni",
        }
    }

    /// Whether a CPU with features `f` runs this kernel.
    pub fn runs_on(&self, f: crate::simd::CpuFeatures) -> bool {
        #[cfg(not(target_arch = "x86_64"))]
        let _ = f;
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => f.avx2,
            #[cfg(target_arch = "x86_64")]
            Kernel::AvxVnni => f.avx2 && f.avx_vnni,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => f.avx2 && f.avx512_vnni,
        }
    }
}

/// Packed weight bytes per unit of work when several tokens reuse them (stays in L2).
const CHUNK_BYTES_MAX: usize = 1 << 16;
/// Products below this many multiply-adds run on the calling thread alone.
const PARALLEL_MIN_WORK: usize = 1 << 15;

/// `out[t * rows + r] = row r · token t`, as [`crate::matmul::matmul`] computes it.
///
/// Panics if `x` is not in the weight format's activation type, `x.cols() != w.cols()`, or
/// `out.len() != x.n_tokens() * w.rows()`.
pub fn matmul_packed(pool: &ThreadPool, w: &PackedMatrix, x: &QuantizedActs, out: &mut [f32]) {
    matmul_packed_with(Kernel::best(), pool, w, x, out)
}

/// [`matmul_packed`] with a chosen kernel (tests compare them).
pub fn matmul_packed_with(
    kernel: Kernel,
    pool: &ThreadPool,
    w: &PackedMatrix,
    x: &QuantizedActs,
    out: &mut [f32],
) {
    matmul_packed_many_with(kernel, pool, &[w], x, &mut [out])
}

/// Several products of the same activations (the query, key and value projections; the gate
/// and up projections) in one dispatch of the pool: `outs[m] = ws[m] · x` as
/// [`matmul_packed`] computes each. One dispatch instead of several matters when a token's
/// whole forward pass takes a few milliseconds.
///
/// Panics as [`matmul_packed`] for any pair, or if the slices differ in length.
pub fn matmul_packed_many(
    pool: &ThreadPool,
    ws: &[&PackedMatrix],
    x: &QuantizedActs,
    outs: &mut [&mut [f32]],
) {
    matmul_packed_many_with(Kernel::best(), pool, ws, x, outs)
}

/// Most matrices of one [`matmul_packed_many`] call.
const MAX_MANY: usize = 4;

/// One matrix's share of a dispatch.
struct Job<'a> {
    w: &'a PackedMatrix,
    view: ActView<'a>,
    out: OutPtr,
    chunk: usize,
    n_chunks: usize,
}

/// [`matmul_packed_many`] with a chosen kernel. Panics if this CPU cannot run it.
pub fn matmul_packed_many_with(
    kernel: Kernel,
    pool: &ThreadPool,
    ws: &[&PackedMatrix],
    x: &QuantizedActs,
    outs: &mut [&mut [f32]],
) {
    assert!(
        kernel.runs_on(crate::simd::detected()),
        "the {} packed kernel on a CPU without its instructions",
        kernel.name()
    );
    // SAFETY: the CPU runs `kernel` (asserted).
    unsafe { matmul_packed_many_unchecked(kernel, pool, ws, x, outs) }
}

/// [`matmul_packed_with`] without the check that the CPU runs `kernel`: for a test that runs
/// kernels this CPU lacks under an emulator (which must not see feature detection).
///
/// # Safety
/// The CPU executing the call runs `kernel` ([`Kernel::runs_on`] its features).
pub unsafe fn matmul_packed_unchecked(
    kernel: Kernel,
    pool: &ThreadPool,
    w: &PackedMatrix,
    x: &QuantizedActs,
    out: &mut [f32],
) {
    matmul_packed_many_unchecked(kernel, pool, &[w], x, &mut [out])
}

/// # Safety
/// As [`matmul_packed_unchecked`].
unsafe fn matmul_packed_many_unchecked(
    kernel: Kernel,
    pool: &ThreadPool,
    ws: &[&PackedMatrix],
    x: &QuantizedActs,
    outs: &mut [&mut [f32]],
) {
    assert_eq!(ws.len(), outs.len(), "one output per matrix");
    assert!(ws.len() <= MAX_MANY, "at most {MAX_MANY} matrices at once");
    let n_tokens = x.n_tokens();
    if n_tokens == 0 || ws.is_empty() {
        return;
    }
    let work_total: usize = ws.iter().map(|w| w.rows * w.cols * n_tokens).sum();
    let n_threads = if work_total < PARALLEL_MIN_WORK {
        1
    } else {
        pool.n_threads()
    };
    let n_jobs = ws.len();
    // On the stack: no allocation per product in the decode loop.
    let jobs: [Option<Job>; MAX_MANY] = std::array::from_fn(|m| {
        let w = *ws.get(m)?;
        let out = &mut *outs[m];
        let view = act_view(w, x);
        assert_eq!(out.len(), n_tokens * w.rows, "output size");
        let n_groups = w.rows / GROUP;
        let mut chunk = n_groups.div_ceil(n_threads * 4).max(1);
        if n_tokens > 1 {
            chunk = chunk.min((CHUNK_BYTES_MAX / w.group_bytes().max(1)).max(1));
        }
        Some(Job {
            w,
            view,
            out: OutPtr(out.as_mut_ptr()),
            chunk,
            n_chunks: n_groups.div_ceil(chunk),
        })
    });
    let jobs = &jobs[..n_jobs];
    let chunks_of = |j: &Option<Job>| j.as_ref().map_or(0, |j| j.n_chunks);
    let total_chunks: usize = jobs.iter().map(chunks_of).sum();
    let next = AtomicUsize::new(0);
    let work = |_: usize, _: usize| loop {
        let mut c = next.fetch_add(1, Ordering::Relaxed);
        if c >= total_chunks {
            break;
        }
        for job in jobs.iter().flatten() {
            if c < job.n_chunks {
                // SAFETY: the CPU runs `kernel` (this function's contract).
                unsafe { run_chunk(kernel, job, c, n_tokens) };
                break;
            }
            c -= job.n_chunks;
        }
    };
    if n_threads == 1 {
        work(0, 1);
    } else {
        pool.run(&work);
    }
}

/// Groups of chunk `c` of a job, for every token tile.
///
/// # Safety
/// The CPU runs `kernel`.
unsafe fn run_chunk(kernel: Kernel, job: &Job, c: usize, n_tokens: usize) {
    let (w, rows) = (job.w, job.w.rows);
    let n_groups = rows / GROUP;
    let (g0, g1) = (c * job.chunk, ((c + 1) * job.chunk).min(n_groups));
    // Every kernel writes all `n` rows of the tile it is given.
    let mut tile = [[0f32; GROUP]; TILE_TOKENS];
    let mut t0 = 0;
    while t0 < n_tokens {
        let n = (n_tokens - t0).min(TILE_TOKENS);
        for g in g0..g1 {
            match kernel {
                Kernel::Scalar => group_scalar(w, &job.view, g, t0, n, &mut tile),
                // SAFETY (x86): the CPU runs `kernel` (this function's contract).
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx2 => unsafe {
                    x86::group::<{ x86::AVX2 }>(w, &job.view, g, t0, n, &mut tile)
                },
                #[cfg(target_arch = "x86_64")]
                Kernel::AvxVnni => unsafe {
                    x86::group::<{ x86::AVX_VNNI }>(w, &job.view, g, t0, n, &mut tile)
                },
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx512Vnni => unsafe {
                    x86::group::<{ x86::AVX512_VNNI }>(w, &job.view, g, t0, n, &mut tile)
                },
            }
            for (ci, vals) in tile.iter().enumerate().take(n) {
                let base = (t0 + ci) * rows + g * GROUP;
                for (i, &v) in vals.iter().enumerate() {
                    // SAFETY: t0 + ci < n_tokens and g * GROUP + i < rows, so the index is
                    // within the job's output (its length was checked); group `g` belongs to
                    // chunk `c` of this job, which only this thread claimed.
                    unsafe { job.out.write(base + i, v) };
                }
            }
        }
        t0 += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_sizes_match_the_source_formats() {
        // Packing keeps the bytes per weight of the source format.
        for s in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q6_K] {
            assert_eq!(s.record(), GROUP * s.src_block, "{}", s.ty);
        }
        // Q4_K keeps its 6-bit scales unpacked: 32 bytes more per 8 rows × 256.
        assert_eq!(Q4_K.record(), GROUP * Q4_K.src_block + 32);
    }

    #[test]
    fn kernel_choice() {
        let available = Kernel::available();
        assert!(available.contains(&Kernel::best()));
        assert!(available.iter().all(|k| Kernel::all_compiled().contains(k)));
        assert!(Kernel::Scalar.runs_on(crate::simd::CpuFeatures::default()));
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = crate::simd::CpuFeatures {
                avx2: true,
                ..Default::default()
            };
            assert!(Kernel::Avx2.runs_on(avx2));
            assert!(!Kernel::AvxVnni.runs_on(avx2));
            assert!(!Kernel::Avx512Vnni.runs_on(avx2));
            let names: Vec<_> = Kernel::all_compiled().iter().map(|k| k.name()).collect();
            assert_eq!(names, ["scalar", "avx2", "avx-vnni", "avx512-vnni"]);
        }
    }

    #[test]
    fn shapes_that_cannot_be_packed() {
        assert!(PackedMatrix::new(GgmlType::Q4_1, 12, 64).is_none());
        assert!(PackedMatrix::new(GgmlType::Q4_1, 16, 48).is_none());
        assert!(PackedMatrix::new(GgmlType::Q4_K, 16, 128).is_none());
        assert!(PackedMatrix::new(GgmlType::Q2_K, 16, 256).is_none());
        assert!(PackedMatrix::new(GgmlType::Q4_1, usize::MAX - 7, 64).is_none());
        assert!(PackedMatrix::from_rows(GgmlType::Q4_1, 8, 32, &[0; 10]).is_none());
    }
}

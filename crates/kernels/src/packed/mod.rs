//! Weight matrices repacked at load time into groups of `G` interleaved rows, for products
//! whose SIMD lanes are rows: one pass over a block of `G` rows serves every token of a prompt
//! tile, the int8 products of a row stay in one lane (no horizontal sums), and the per-row
//! scales are applied as vectors. `G` is 8 (256-bit vectors: AVX2, and the AVX-512 VNNI and
//! AVX-VNNI kernels on 256-bit vectors) or 16 (512-bit vectors: the AVX-512 kernels of
//! [`x86_512`]); [`PackedMatrix::new`] picks it from the CPU at load time.
//!
//! Layout of one record (`G` rows × one 32-element block), in the same bytes per weight as the
//! source format (so memory and bandwidth do not grow); a "vector" is `4G` bytes:
//! - `d`: the `G` rows' scales, f16;
//! - `m`: the `G` rows' minimums, f16 (Q4_1 and Q5_1 only);
//! - `qs`: the values. Vector `k` (0..8) of a record pairs with elements `4k..4k+4` of the
//!   activation block: its byte `4i + j` is element `4k + j` of row `i`. 4- and 5-bit formats
//!   store the low 4 bits as nibbles, vectors `2p` and `2p + 1` in the low and high nibbles of
//!   the `4G` bytes at `4G p`; Q8_0 stores the signed bytes of the 8 vectors in order;
//! - `qh` (Q5_0 and Q5_1): bit `k` of byte `b` is the fifth bit of byte `b` of vector `k`.
//!
//! The value of a record's row `i` against an activation block is
//! `d_i * d_x * Σ q·x + m_i * s_x`, where `s_x = d_x * Σ x` and, for formats without a stored
//! minimum, `m_i = -8 d_i` (Q4_0), `-16 d_i` (Q5_0) or 0 (Q8_0): the same sum the format's dot
//! product computes, in the same block order.
//!
//! The table formats IQ4_NL, IQ4_XS and MXFP4 have records of their own: see [`iq4`].

pub(crate) mod bytes;
mod iq4;
mod kquant;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_512;
#[cfg(target_arch = "x86_64")]
mod x86_iq4;
#[cfg(target_arch = "x86_64")]
mod x86_k;

use crate::matmul::{OutPtr, QuantizedActs};
use crate::pool::ThreadPool;
use crate::quant::f16_to_f32;
use bytes::PackedBytes;
use ggml_type::GgmlType;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Rows per record of the 256-bit layout, and the multiple of rows every packed matrix has.
pub const GROUP: usize = 8;
/// Rows per record of the 512-bit layout (16 lanes of 32 bits).
pub const WIDE_GROUP: usize = 16;
/// Elements per block (every packed format has 32-element blocks).
const QK: usize = 32;
/// Source rows [`PackedMatrix::pack_many`] reads and packs per step (a multiple of [`GROUP`]).
pub const PACK_STEP_ROWS: usize = 256;
/// Tokens per tile of the 8-row kernels: the accumulators of a tile stay in registers.
const TILE_TOKENS: usize = 4;
/// Tokens per tile of the 16-row kernels (32 vector registers).
const WIDE_TILE_TOKENS: usize = 8;

/// What differs between the packed formats.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Spec {
    pub ty: GgmlType,
    /// Bits per value: 2 to 8 (8: signed bytes).
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
    /// The offsets below are for records of `g` rows.
    pub const fn m_off(&self, g: usize) -> usize {
        2 * g
    }
    pub const fn qs_off(&self, g: usize) -> usize {
        // MXFP4's scales are exponent bytes (see [`iq4`]), the others' f16.
        if self.has_min {
            4 * g
        } else if iq4::e8m0_scales(self.ty) {
            g
        } else {
            2 * g
        }
    }
    pub const fn qs_bytes(&self, g: usize) -> usize {
        if self.bits == 8 {
            g * QK
        } else {
            g * QK / 2
        }
    }
    pub const fn qh_off(&self, g: usize) -> usize {
        self.qs_off(g) + self.qs_bytes(g)
    }
    /// Bytes of one record of `g` rows.
    pub const fn record(&self, g: usize) -> usize {
        match self.ty {
            GgmlType::Q4_K => kquant::q4k::record(g),
            GgmlType::Q5_K => kquant::q5k::record(g),
            GgmlType::Q6_K => kquant::q6k::record(g),
            GgmlType::Q3_K => kquant::q3k::record(g),
            GgmlType::Q2_K => kquant::q2k::record(g),
            GgmlType::IQ4_XS => iq4::xs::record(g),
            _ => self.qh_off(g) + if self.bits == 5 { g * QK / 8 } else { 0 },
        }
    }
    /// Whether this is a 256-element format against Q8_K activations (the k-quants of
    /// [`kquant`], and IQ4_XS of [`iq4`]).
    pub const fn is_k(&self) -> bool {
        matches!(
            self.ty,
            GgmlType::Q2_K
                | GgmlType::Q3_K
                | GgmlType::Q4_K
                | GgmlType::Q5_K
                | GgmlType::Q6_K
                | GgmlType::IQ4_XS
        )
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
pub(crate) const Q5_K: Spec = Spec {
    ty: GgmlType::Q5_K,
    bits: 5,
    has_min: true,
    min_factor: 0.0,
    src_block: 176,
};
pub(crate) const Q2_K: Spec = Spec {
    ty: GgmlType::Q2_K,
    bits: 2,
    has_min: true,
    min_factor: 0.0,
    src_block: 84,
};
pub(crate) const Q3_K: Spec = Spec {
    ty: GgmlType::Q3_K,
    bits: 3,
    has_min: false,
    min_factor: 0.0,
    src_block: 110,
};
pub(crate) const Q6_K: Spec = Spec {
    ty: GgmlType::Q6_K,
    bits: 6,
    has_min: false,
    min_factor: 0.0,
    src_block: 210,
};

const SPECS: [Spec; 13] = [
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    iq4::IQ4_NL,
    iq4::IQ4_XS,
    iq4::MXFP4,
];

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

/// Why a matrix cannot be packed ([`PackedMatrix::try_with_group`],
/// [`PackedMatrix::try_from_rows_with_group`]). Shapes come from model files, so a refusal is
/// an error for the caller to report (or to fall back to the format's own dot product), never
/// a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackError {
    #[error("{0} has no packed layout")]
    Unsupported(GgmlType),
    #[error("records of {0} rows: packed records hold {GROUP} or {WIDE_GROUP} rows")]
    Group(usize),
    #[error("a packed {ty} matrix needs a positive multiple of {group} rows, not {rows}")]
    Rows {
        ty: GgmlType,
        rows: usize,
        group: usize,
    },
    #[error(
        "a packed {ty} matrix needs a positive multiple of {block} columns (its block), not {cols}"
    )]
    Cols {
        ty: GgmlType,
        cols: usize,
        block: usize,
    },
    #[error("a packed {ty} matrix of {rows}x{cols} overflows the address space")]
    TooLarge {
        ty: GgmlType,
        rows: usize,
        cols: usize,
    },
    #[error("{bytes} bytes for packed weights could not be allocated: free memory, or set HEARTH_NO_PACK=1 to read the weights in place")]
    OutOfMemory { bytes: usize },
    #[error("{rows} rows of {ty} with {cols} columns are {want} bytes, not {got}")]
    SourceLength {
        ty: GgmlType,
        rows: usize,
        cols: usize,
        want: usize,
        got: usize,
    },
}

/// The spec of `ty` if a `rows × cols` matrix of it packs into records of `group` rows.
fn check_shape(ty: GgmlType, rows: usize, cols: usize, group: usize) -> Result<Spec, PackError> {
    if ![GROUP, WIDE_GROUP].contains(&group) {
        return Err(PackError::Group(group));
    }
    let spec = spec_of(ty).ok_or(PackError::Unsupported(ty))?;
    if rows == 0 || !rows.is_multiple_of(group) {
        return Err(PackError::Rows { ty, rows, group });
    }
    let block = spec.qk();
    if cols == 0 || !cols.is_multiple_of(block) {
        return Err(PackError::Cols { ty, cols, block });
    }
    Ok(spec)
}

/// A weight matrix in the packed layout. Rows are a multiple of [`GROUP`], columns of 32.
#[derive(Debug)]
pub struct PackedMatrix {
    spec: Spec,
    /// Rows per record: [`GROUP`] or [`WIDE_GROUP`].
    group: usize,
    rows: usize,
    cols: usize,
    data: PackedBytes,
    /// Bytes ahead that a one-token product prefetches its records (0: none),
    /// decided here rather than in the kernel, which must not call out of its own code (the
    /// emulator of `scripts/check-avx512` runs the kernels alone).
    #[cfg(target_arch = "x86_64")]
    prefetch: usize,
}

impl PackedMatrix {
    /// Whether matrices of this type and shape can be packed, and packing pays on this CPU
    /// (the packed kernels are for AVX2; elsewhere the format's own dot products are used).
    pub fn supported(ty: GgmlType, rows: usize, cols: usize) -> bool {
        Self::layout_fits(ty, rows, cols) && Self::fast_path_available()
    }

    /// Bytes that [`PackedMatrix::new`] would hold for this type and shape on this CPU (what a
    /// generated token reads of it); `None` where it would not pack.
    pub fn packed_len(ty: GgmlType, rows: usize, cols: usize) -> Option<usize> {
        if !Self::supported(ty, rows, cols) {
            return None;
        }
        Self::layout(ty, rows, cols, preferred_group(ty, rows))
            .ok()
            .map(|(_, len)| len)
    }

    fn layout_fits(ty: GgmlType, rows: usize, cols: usize) -> bool {
        check_shape(ty, rows, cols, GROUP).is_ok()
    }

    fn fast_path_available() -> bool {
        #[cfg(target_arch = "x86_64")]
        if crate::simd::features().avx2 {
            return true;
        }
        false
    }

    /// An empty packed matrix to fill with [`PackedMatrix::pack_rows`], in the record size the
    /// fastest kernel of this CPU reads ([`preferred_group`]); `None` when the type or shape
    /// cannot be packed (see [`PackedMatrix::layout_fits`]) or the size overflows.
    pub fn new(ty: GgmlType, rows: usize, cols: usize) -> Option<PackedMatrix> {
        Self::with_group(ty, rows, cols, preferred_group(ty, rows))
    }

    /// [`PackedMatrix::new`] with records of `group` rows ([`GROUP`] or [`WIDE_GROUP`], a
    /// divisor of `rows`); `None` otherwise.
    pub fn with_group(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        group: usize,
    ) -> Option<PackedMatrix> {
        Self::try_with_group(ty, rows, cols, group).ok()
    }

    /// [`PackedMatrix::with_group`], saying why a matrix cannot be packed.
    pub fn try_with_group(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        group: usize,
    ) -> Result<PackedMatrix, PackError> {
        let (spec, len) = Self::layout(ty, rows, cols, group)?;
        let data = PackedBytes::zeroed(len).ok_or(PackError::OutOfMemory { bytes: len })?;
        Ok(Self::in_bytes(spec, group, rows, cols, data))
    }

    /// Empty packed matrices (as [`PackedMatrix::new`]) for several shapes `(type, rows,
    /// cols)`, all in one allocation, so that huge pages back all of it and not only the
    /// aligned middle of each; `None` for a shape that cannot be packed.
    pub fn new_many(
        shapes: &[(GgmlType, usize, usize)],
    ) -> Result<Vec<Option<PackedMatrix>>, PackError> {
        let layouts: Vec<Option<(Spec, usize, usize)>> = shapes
            .iter()
            .map(|&(ty, rows, cols)| {
                let group = preferred_group(ty, rows);
                let (spec, len) = Self::layout(ty, rows, cols, group).ok()?;
                Some((spec, group, len))
            })
            .collect();
        let lens: Vec<usize> = layouts.iter().flatten().map(|l| l.2).collect();
        let bytes: usize = lens.iter().fold(0, |a, &l| a.saturating_add(l));
        let mut bufs = PackedBytes::many(&lens)
            .ok_or(PackError::OutOfMemory { bytes })?
            .into_iter();
        Ok(layouts
            .into_iter()
            .zip(shapes)
            .map(|(layout, &(_, rows, cols))| {
                let (spec, group, _) = layout?;
                let data = bufs.next()?;
                Some(Self::in_bytes(spec, group, rows, cols, data))
            })
            .collect())
    }

    /// The spec and the packed size of a matrix of this shape in records of `group` rows.
    fn layout(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        group: usize,
    ) -> Result<(Spec, usize), PackError> {
        let spec = check_shape(ty, rows, cols, group)?;
        let len = (rows / group)
            .checked_mul(cols / spec.qk())
            .and_then(|n| n.checked_mul(spec.record(group)))
            .filter(|&len| len <= isize::MAX as usize)
            .ok_or(PackError::TooLarge { ty, rows, cols })?;
        Ok((spec, len))
    }

    fn in_bytes(spec: Spec, group: usize, rows: usize, cols: usize, data: PackedBytes) -> Self {
        PackedMatrix {
            spec,
            group,
            rows,
            cols,
            data,
            #[cfg(target_arch = "x86_64")]
            prefetch: if spec.is_k() && group == WIDE_GROUP {
                x86_512::kquant_prefetch()
            } else {
                x86::record_prefetch()
            },
        }
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
    /// Rows per record.
    pub fn group(&self) -> usize {
        self.group
    }
    /// Bytes of one row in the source format.
    pub fn src_row_bytes(&self) -> usize {
        self.cols / self.spec.qk() * self.spec.src_block
    }
    fn blocks_per_row(&self) -> usize {
        self.cols / self.spec.qk()
    }
    fn record(&self) -> usize {
        self.spec.record(self.group)
    }
    fn group_bytes(&self) -> usize {
        self.blocks_per_row() * self.record()
    }

    /// Packs source rows `first_row..` (`src` holds whole rows in the source format;
    /// `first_row` and the row count a multiple of [`PackedMatrix::group`]). Panics otherwise.
    pub fn pack_rows(&mut self, first_row: usize, src: &[u8]) {
        let row_bytes = self.src_row_bytes();
        assert!(
            first_row.is_multiple_of(self.group),
            "rows start at a group"
        );
        let g0 = first_row / self.group;
        let gb = self.group_bytes();
        let (spec, nb, group) = (self.spec, self.blocks_per_row(), self.group);
        pack_groups(&spec, group, nb, row_bytes, &mut self.data[g0 * gb..], src);
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
            group: usize,
            nb: usize,
            row_bytes: usize,
            out: &'a mut [u8],
        }
        let mut steps = Vec::new();
        for (m, mat) in mats.iter_mut().enumerate() {
            let (spec, nb, gb) = (mat.spec, mat.blocks_per_row(), mat.group_bytes());
            let (row_bytes, group) = (mat.src_row_bytes(), mat.group);
            let step_bytes = PACK_STEP_ROWS / group * gb;
            for (i, out) in mat.data.chunks_mut(step_bytes).enumerate() {
                steps.push(Step {
                    mat: m,
                    first_row: i * PACK_STEP_ROWS,
                    spec,
                    group,
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
                let groups = s.out.len() / (s.nb * s.spec.record(s.group));
                buf.resize(groups * s.group * s.row_bytes, 0);
                read(s.mat, s.first_row, &mut buf)?;
                pack_groups(&s.spec, s.group, s.nb, s.row_bytes, s.out, &buf);
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
        Self::from_rows_with_group(ty, rows, cols, preferred_group(ty, rows), src)
    }

    /// [`PackedMatrix::from_rows`] in records of `group` rows (see
    /// [`PackedMatrix::with_group`]).
    pub fn from_rows_with_group(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        group: usize,
        src: &[u8],
    ) -> Option<PackedMatrix> {
        Self::try_from_rows_with_group(ty, rows, cols, group, src).ok()
    }

    /// [`PackedMatrix::from_rows_with_group`], saying why a matrix cannot be packed (its
    /// shape, or a source whose length is not that of `rows` whole rows).
    pub fn try_from_rows_with_group(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        group: usize,
        src: &[u8],
    ) -> Result<PackedMatrix, PackError> {
        // The source length is checked before the (possibly large) allocation.
        let spec = check_shape(ty, rows, cols, group)?;
        let want = (cols / spec.qk())
            .checked_mul(spec.src_block)
            .and_then(|row| row.checked_mul(rows))
            .ok_or(PackError::TooLarge { ty, rows, cols })?;
        if src.len() != want {
            return Err(PackError::SourceLength {
                ty,
                rows,
                cols,
                want,
                got: src.len(),
            });
        }
        let mut p = PackedMatrix::try_with_group(ty, rows, cols, group)?;
        p.pack_rows(0, src);
        Ok(p)
    }
}

/// Rows per record for a matrix of `ty` with `rows` rows on this CPU: [`WIDE_GROUP`] where the
/// fastest kernel is the 512-bit one and the rows divide into its groups, else [`GROUP`].
/// Q8_0 keeps 8-row records: its 512-bit one-token product streamed 15-20% slower from memory
/// (SmolLM2's Q8_0 output head: generation 210 -> 177 tok/s), and in these models Q8_0 is
/// mostly an output head, which a prompt runs for one token.
pub fn preferred_group(ty: GgmlType, rows: usize) -> usize {
    let wide = Kernel::best().group() == Some(WIDE_GROUP) && ty != GgmlType::Q8_0;
    if wide && rows.is_multiple_of(WIDE_GROUP) {
        WIDE_GROUP
    } else {
        GROUP
    }
}

/// Packs the groups of `group` rows in `src` (whole groups) into the start of `out`.
fn pack_groups(spec: &Spec, group: usize, nb: usize, row_bytes: usize, out: &mut [u8], src: &[u8]) {
    assert!(
        src.len().is_multiple_of(row_bytes * group),
        "whole groups of rows"
    );
    let record = spec.record(group);
    let gb = nb * record;
    assert!(
        src.len() / (row_bytes * group) * gb <= out.len(),
        "rows past the matrix"
    );
    for (g, rows) in src.chunks_exact(row_bytes * group).enumerate() {
        let out = &mut out[g * gb..(g + 1) * gb];
        for b in 0..nb {
            let rec = &mut out[b * record..(b + 1) * record];
            pack_record(spec, group, rows, row_bytes, b, rec);
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

/// Writes the record of block `b` of the `g` rows in `rows`, byte by byte from the source
/// layout (load time is part of the time to first token, so no per-element unpacking).
fn pack_record(spec: &Spec, g: usize, rows: &[u8], row_bytes: usize, b: usize, rec: &mut [u8]) {
    match spec.ty {
        GgmlType::Q4_K => return kquant::pack_q4k(g, rows, row_bytes, b, rec),
        GgmlType::Q5_K => return kquant::pack_q5k(g, rows, row_bytes, b, rec),
        GgmlType::Q6_K => return kquant::pack_q6k(g, rows, row_bytes, b, rec),
        GgmlType::Q3_K => return kquant::pack_q3k(g, rows, row_bytes, b, rec),
        GgmlType::Q2_K => return kquant::pack_q2k(g, rows, row_bytes, b, rec),
        GgmlType::IQ4_XS => return iq4::pack_xs(g, rows, row_bytes, b, rec),
        GgmlType::MXFP4 => return iq4::pack_mxfp4(g, rows, row_bytes, b, rec),
        _ => {}
    }
    let (qs_off, qh_off, vb) = (spec.qs_off(g), spec.qh_off(g), 4 * g);
    for i in 0..g {
        let off = i * row_bytes + b * spec.src_block;
        let src = &rows[off..off + spec.src_block];
        rec[spec.d_off() + 2 * i..spec.d_off() + 2 * i + 2].copy_from_slice(&src[..2]);
        let mut at = 2;
        if spec.has_min {
            rec[spec.m_off(g) + 2 * i..spec.m_off(g) + 2 * i + 2].copy_from_slice(&src[2..4]);
            at = 4;
        }
        if spec.bits == 8 {
            // Elements 4k..4k + 4 go to bytes 4i.. of vector k.
            let qs = &src[at..at + QK];
            for k in 0..QK / 4 {
                let dst = qs_off + vb * k + 4 * i;
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
        // Byte 4i + j of the 4g bytes at 4g p holds elements 8p + j (low nibble) and
        // 8p + 4 + j (high nibble); source element e < 16 is the low nibble of qs[e], e >= 16
        // the high nibble of qs[e - 16]. Four bytes at a time.
        for p in 0..4 {
            let at = 8 * (p % 2);
            let quad = nibble_quad(rd32(qs, at), rd32(qs, at + 4), p >= 2);
            wr32(rec, qs_off + vb * p + 4 * i, quad);
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

/// The value `q` of element `e` of row `i` in a record of `g` rows.
fn record_value(spec: &Spec, g: usize, rec: &[u8], i: usize, e: usize) -> i32 {
    let (k, byte, vb) = (e / 4, 4 * i + e % 4, 4 * g);
    if spec.bits == 8 {
        return rec[spec.qs_off(g) + vb * k + byte] as i8 as i32;
    }
    let packed = rec[spec.qs_off(g) + vb * (k / 2) + byte];
    let lo = if k % 2 == 0 {
        packed & 0x0F
    } else {
        packed >> 4
    } as i32;
    let hi = if spec.bits == 5 {
        ((rec[spec.qh_off(g) + byte] >> k) & 1) as i32
    } else {
        0
    };
    lo | hi << 4
}

/// The scale and minimum of row `i` in a record of `g` rows.
fn record_scales(spec: &Spec, g: usize, rec: &[u8], i: usize) -> (f32, f32) {
    let at = |off: usize| f16_to_f32([rec[off + 2 * i], rec[off + 2 * i + 1]]);
    let d = at(spec.d_off());
    let m = if spec.has_min {
        at(spec.m_off(g))
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

/// Scalar reference of the packed product, for either record size: `out[c * G + i]` for the
/// `G` rows of group `g` against tokens `t0..t0 + n`.
fn group_scalar(w: &PackedMatrix, x: &ActView, g: usize, t0: usize, n: usize, out: &mut [f32]) {
    let (spec, nb, rows) = (w.spec, w.blocks_per_row(), w.group);
    let (gb, record) = (w.group_bytes(), w.record());
    let group = &w.data[g * gb..(g + 1) * gb];
    if iq4::is_table_format(spec.ty) {
        iq4::group_scalar(&spec, rows, group, nb, x, t0, n, out);
        return;
    }
    if spec.is_k() {
        kquant::group_scalar(spec.ty, rows, group, nb, x, t0, n, out);
        return;
    }
    for (c, o) in out.chunks_exact_mut(rows).enumerate().take(n) {
        let aux = x.acts.aux(t0 + c);
        o.fill(0.0);
        for b in 0..nb {
            let rec = &group[b * record..(b + 1) * record];
            let xq = x.qs(t0 + c, b);
            let (dx, sx) = (aux[2 * b], aux[2 * b + 1]);
            for (i, oi) in o.iter_mut().enumerate() {
                let dot: i32 = (0..QK)
                    .map(|e| record_value(&spec, rows, rec, i, e) * xq[e] as i8 as i32)
                    .sum();
                let (d, m) = record_scales(&spec, rows, rec, i);
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
    /// AVX-512 (F, BW, VL, VNNI) on 512-bit vectors, for the 16-row layout.
    #[cfg(target_arch = "x86_64")]
    Avx512Wide,
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

    /// The fastest the CPU runs (as [`Kernel::best`]) that reads records of `group` rows.
    pub fn best_for(group: usize) -> Kernel {
        let f = crate::simd::features();
        Kernel::all_compiled()
            .iter()
            .rev()
            .copied()
            .find(|k| k.runs_on(f) && k.reads(group))
            .unwrap_or(Kernel::Scalar)
    }

    /// The record size (rows) this kernel reads; `None` for the scalar reference, which reads
    /// both.
    pub fn group(&self) -> Option<usize> {
        match self {
            Kernel::Scalar => None,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Wide => Some(WIDE_GROUP),
            #[cfg(target_arch = "x86_64")]
            _ => Some(GROUP),
        }
    }

    /// Whether this kernel reads records of `group` rows.
    pub fn reads(&self, group: usize) -> bool {
        self.group().is_none_or(|g| g == group)
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
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Wide,
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
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Wide => "avx512-vnni-16row",
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
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Wide => f.avx2 && f.avx512_vnni,
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
    matmul_packed_with(Kernel::best_for(w.group), pool, w, x, out)
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
    // Matrices of one call share a record size unless one's rows do not divide into 16.
    if let Some(first) = ws.first() {
        if ws.iter().all(|w| w.group == first.group) {
            return matmul_packed_many_with(Kernel::best_for(first.group), pool, ws, x, outs);
        }
    }
    for (w, out) in ws.iter().zip(outs.iter_mut()) {
        matmul_packed_with(Kernel::best_for(w.group), pool, w, x, out);
    }
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

/// [`matmul_packed_many`] with a chosen kernel. Panics if this CPU cannot run it or it does
/// not read the record size of a matrix.
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
    for w in ws {
        assert!(
            kernel.reads(w.group),
            "the {} kernel on {}-row records",
            kernel.name(),
            w.group
        );
    }
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
        let n_groups = w.rows / w.group;
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
/// The CPU runs `kernel`, which reads the job's record size.
unsafe fn run_chunk(kernel: Kernel, job: &Job, c: usize, n_tokens: usize) {
    let (w, view) = (job.w, &job.view);
    if w.group == WIDE_GROUP {
        // SAFETY: as this function's.
        unsafe {
            run_tiles::<WIDE_GROUP, WIDE_TILE_TOKENS>(job, c, n_tokens, |g, t0, n, tile| {
                match kernel {
                    #[cfg(target_arch = "x86_64")]
                    Kernel::Avx512Wide => x86_512::group(w, view, g, t0, n, tile),
                    _ => group_scalar(w, view, g, t0, n, tile.as_flattened_mut()),
                }
            })
        }
        return;
    }
    // SAFETY: as this function's.
    unsafe {
        run_tiles::<GROUP, TILE_TOKENS>(job, c, n_tokens, |g, t0, n, tile| match kernel {
            // SAFETY (x86): the CPU runs `kernel` (this function's contract).
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => x86::group::<{ x86::AVX2 }>(w, view, g, t0, n, tile),
            #[cfg(target_arch = "x86_64")]
            Kernel::AvxVnni => x86::group::<{ x86::AVX_VNNI }>(w, view, g, t0, n, tile),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => x86::group::<{ x86::AVX512_VNNI }>(w, view, g, t0, n, tile),
            _ => group_scalar(w, view, g, t0, n, tile.as_flattened_mut()),
        })
    }
}

/// Runs `tile(g, t0, n, out)` (which fills `out[..n]` for `G`-row group `g` and tokens
/// `t0..t0 + n`, `n <= T`) over the groups of chunk `c` and every token tile, and writes the
/// results out.
///
/// # Safety
/// `tile` is safe to call (it runs a kernel the CPU has).
unsafe fn run_tiles<const G: usize, const T: usize>(
    job: &Job,
    c: usize,
    n_tokens: usize,
    tile: impl Fn(usize, usize, usize, &mut [[f32; G]; T]),
) {
    let rows = job.w.rows;
    let n_groups = rows / G;
    let (g0, g1) = (c * job.chunk, ((c + 1) * job.chunk).min(n_groups));
    // Every kernel writes all `n` rows of the tile it is given. Zeroed element by element with
    // volatile writes: a zeroing the compiler turns into a call of libc's `memset` (as it does
    // for the 512 bytes of a 16-row tile) cannot run in `scripts/check-avx512`'s emulator,
    // which maps the kernels' code but not libc's.
    let mut out = std::mem::MaybeUninit::<[[f32; G]; T]>::uninit();
    let first = out.as_mut_ptr().cast::<f32>();
    for i in 0..G * T {
        // SAFETY: `i` is within the array's `G * T` floats.
        unsafe { first.add(i).write_volatile(0.0) };
    }
    // SAFETY: every element was written above (borrowed in place: a move is a `memcpy` too).
    let out = unsafe { &mut *out.as_mut_ptr() };
    let mut t0 = 0;
    while t0 < n_tokens {
        let n = (n_tokens - t0).min(T);
        for g in g0..g1 {
            tile(g, t0, n, out);
            for (ci, vals) in out.iter().enumerate().take(n) {
                let base = (t0 + ci) * rows + g * G;
                // SAFETY: t0 + ci < n_tokens and g * G + G <= rows, so the run is within the
                // job's output (its length was checked), and `vals` is this thread's tile;
                // group `g` belongs to chunk `c` of this job, which only this thread claimed.
                unsafe { job.out.write_run(base, vals) };
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
        for g in [GROUP, WIDE_GROUP] {
            for s in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q4_K, Q5_K, Q6_K] {
                assert_eq!(s.record(g), g * s.src_block, "{}", s.ty);
            }
            // Q3_K keeps its 6-bit scales unpacked too: 16 bytes instead of 12.
            assert_eq!(Q3_K.record(g), g * (Q3_K.src_block + 4));
            assert_eq!(iq4::IQ4_NL.record(g), g * iq4::IQ4_NL.src_block);
            // IQ4_XS keeps its 6-bit run scales unpacked: 2 bytes more per row × 256.
            assert_eq!(iq4::IQ4_XS.record(g), g * (iq4::IQ4_XS.src_block + 2));
            assert_eq!(iq4::MXFP4.record(g), g * iq4::MXFP4.src_block);
            assert_eq!(iq4::MXFP4.qs_off(g), g);
        }
    }

    /// The kernels' scales from MXFP4's exponent bytes are `e8m0_half`'s, bit for bit, for every
    /// byte (on the vector widths this CPU runs).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn kernels_read_every_exponent_byte_as_the_reference() {
        let bytes: Vec<u8> = (0..=255).collect();
        let want: Vec<u32> = bytes
            .iter()
            .map(|&e| crate::quant::mxfp4::e8m0_half(e).to_bits())
            .collect();
        let f = crate::simd::features();
        if f.avx2 {
            for (chunk, want) in bytes.chunks(8).zip(want.chunks(8)) {
                let mut got = [0f32; 8];
                // SAFETY: the CPU has AVX2; 8 bytes at the chunk.
                unsafe {
                    std::arch::x86_64::_mm256_storeu_ps(
                        got.as_mut_ptr(),
                        x86::e8m0_half_8(chunk.as_ptr()),
                    )
                };
                assert_eq!(got.map(f32::to_bits), want, "{chunk:?}");
            }
        }
        if Kernel::best().group() == Some(WIDE_GROUP) {
            for (chunk, want) in bytes.chunks(16).zip(want.chunks(16)) {
                let mut got = [0f32; 16];
                // SAFETY: the CPU runs the 512-bit kernels; 16 bytes at the chunk.
                unsafe {
                    std::arch::x86_64::_mm512_storeu_ps(
                        got.as_mut_ptr(),
                        x86_512::e8m0_half_16(chunk.as_ptr()),
                    )
                };
                assert_eq!(got.map(f32::to_bits), want, "{chunk:?}");
            }
        }
    }

    /// Every E8M0 exponent byte lands in its row's place of the record, reads as the f32
    /// `2^(e - 128)` exactly (subnormal for 0 and 1, 2^127 for 255), the scale the unpacked dot
    /// product applies, and the indices land where the scalar reference reads them.
    #[test]
    fn mxfp4_records_hold_exact_scales() {
        let (g, nb) = (GROUP, 256 / GROUP);
        // Row i, block b has exponent 8b + i (every byte once) and index (i + b + e) % 16 at
        // element e.
        let mut src = vec![0u8; g * nb * 17];
        for i in 0..g {
            for b in 0..nb {
                let blk = &mut src[(i * nb + b) * 17..(i * nb + b + 1) * 17];
                blk[0] = (8 * b + i) as u8;
                for j in 0..16 {
                    let (lo, hi) = ((i + b + j) % 16, (i + b + j + 16) % 16);
                    blk[1 + j] = (lo | hi << 4) as u8;
                }
            }
        }
        let p = PackedMatrix::from_rows_with_group(GgmlType::MXFP4, g, 32 * nb, g, &src).unwrap();
        let record = iq4::MXFP4.record(g);
        for b in 0..nb {
            let rec = &p.data[b * record..(b + 1) * record];
            for i in 0..g {
                let e = 8 * b + i;
                assert_eq!(usize::from(rec[i]), e);
                let d = crate::quant::mxfp4::e8m0_half(rec[i]);
                assert_eq!(d, 2f64.powi(e as i32 - 128) as f32, "e={e}");
                for el in 0..32 {
                    let (k, byte) = (el / 4, 4 * i + el % 4);
                    let packed = rec[iq4::MXFP4.qs_off(g) + 4 * g * (k / 2) + byte];
                    let q = if k % 2 == 0 {
                        packed & 0x0F
                    } else {
                        packed >> 4
                    };
                    assert_eq!(usize::from(q), (i + b + el) % 16, "e={e} element {el}");
                }
            }
        }
        assert_eq!(f32::from_bits(0x0020_0000), 2f64.powi(-128) as f32);
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
            assert!(!Kernel::Avx512Wide.runs_on(avx2));
            let names: Vec<_> = Kernel::all_compiled().iter().map(|k| k.name()).collect();
            assert_eq!(
                names,
                [
                    "scalar",
                    "avx2",
                    "avx-vnni",
                    "avx512-vnni",
                    "avx512-vnni-16row"
                ]
            );
            assert!(Kernel::Avx512Wide.reads(WIDE_GROUP) && !Kernel::Avx512Wide.reads(GROUP));
            assert!(Kernel::Avx2.reads(GROUP) && !Kernel::Avx2.reads(WIDE_GROUP));
            assert!(Kernel::Scalar.reads(GROUP) && Kernel::Scalar.reads(WIDE_GROUP));
        }
    }

    #[test]
    fn shapes_that_cannot_be_packed() {
        assert!(PackedMatrix::new(GgmlType::Q4_1, 12, 64).is_none());
        assert!(PackedMatrix::new(GgmlType::Q4_1, 16, 48).is_none());
        assert!(PackedMatrix::new(GgmlType::Q4_K, 16, 128).is_none());
        assert!(PackedMatrix::new(GgmlType::Q5_K, 16, 128).is_none());
        assert!(PackedMatrix::new(GgmlType::Q5_K, 12, 256).is_none());
        assert!(PackedMatrix::from_rows(GgmlType::Q5_K, 8, 256, &[0; 8 * 175]).is_none());
        assert!(PackedMatrix::with_group(GgmlType::Q5_K, 24, 256, WIDE_GROUP).is_none());
        assert!(PackedMatrix::new(GgmlType::Q2_K, 16, 128).is_none());
        assert!(PackedMatrix::new(GgmlType::Q3_K, 12, 256).is_none());
        assert!(PackedMatrix::new(GgmlType::F16, 16, 256).is_none());
        assert!(PackedMatrix::new(GgmlType::IQ4_NL, 12, 64).is_none());
        assert!(PackedMatrix::new(GgmlType::IQ4_NL, 16, 48).is_none());
        assert!(PackedMatrix::new(GgmlType::IQ4_NL, 16, 64).is_some());
        assert!(PackedMatrix::new(GgmlType::IQ4_XS, 16, 128).is_none());
        assert!(PackedMatrix::new(GgmlType::IQ4_XS, 20, 256).is_none());
        assert!(PackedMatrix::new(GgmlType::IQ4_XS, 16, 512).is_some());
        assert!(PackedMatrix::from_rows(GgmlType::IQ4_XS, 8, 256, &[0; 8 * 136 - 1]).is_none());
        assert!(PackedMatrix::new(GgmlType::MXFP4, 12, 64).is_none());
        assert!(PackedMatrix::new(GgmlType::MXFP4, 16, 48).is_none());
        assert!(PackedMatrix::new(GgmlType::MXFP4, 16, 64).is_some());
        assert!(PackedMatrix::from_rows(GgmlType::MXFP4, 8, 32, &[0; 8 * 17 + 1]).is_none());
        assert!(PackedMatrix::new(GgmlType::Q4_1, usize::MAX - 7, 64).is_none());
        assert!(PackedMatrix::from_rows(GgmlType::Q4_1, 8, 32, &[0; 10]).is_none());
        // 16-row records need a multiple of 16 rows; other sizes are refused.
        assert!(PackedMatrix::with_group(GgmlType::Q4_1, 24, 64, WIDE_GROUP).is_none());
        assert!(PackedMatrix::with_group(GgmlType::Q4_1, 32, 64, 4).is_none());
        assert!(PackedMatrix::with_group(GgmlType::Q4_1, 32, 64, WIDE_GROUP).is_some());
        // A matrix whose rows do not divide into 16 keeps 8-row records.
        assert_eq!(
            PackedMatrix::new(GgmlType::Q4_1, 24, 64).unwrap().group(),
            GROUP
        );
    }
}

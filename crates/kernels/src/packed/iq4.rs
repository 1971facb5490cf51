//! Packed records of the table formats IQ4_NL, IQ4_XS and MXFP4: 4-bit indices into 16 signed
//! levels (a [`Table`]: ggml's `kvalues_iq4nl` for IQ4_NL and IQ4_XS, `kvalues_mxfp4` for
//! MXFP4), which the kernels turn into int8 with a byte shuffle (the table in every 128-bit
//! lane). One set of kernels serves all three: the table is an argument, not a copy of each
//! kernel per format.
//!
//! IQ4_NL (`G` rows × one 32-element block, 18 bytes per row as the source), dotted against
//! Q8_0 activations:
//! - `d[G]` f16;
//! - the indices as the 4-bit formats store their values (see the parent module): vectors `2p`
//!   and `2p + 1` in the low and high nibbles of the `4G` bytes at `4G p`.
//!
//! MXFP4 (`G` rows × one 32-element block, 17 bytes per row as the source), dotted against
//! Q8_0 activations: an IQ4_NL record whose scales are the source's E8M0 exponent bytes
//! (`e[G]`, then the indices at `G`). A kernel turns byte `e` into the f32 `2^(e - 128)` (ggml
//! stores the E2M1 levels doubled, so the scale is halved) with a shift for `e >= 2` and a
//! subnormal (`2^-128`, `2^-127`) for `e = 0` and `e = 1`; `e = 255` (E8M0's NaN) becomes
//! `2^127`, as ggml and the unpacked dot product read it ([`crate::quant::mxfp4::e8m0_half`]).
//! So the kernels' scales are the unpacked path's, bit for bit. (Records held those scales as
//! f32, 20 bytes a row: 18% more bytes than the file for a generated token to stream, against
//! a few instructions per block of 32.) The kernels need the CPU's default handling of
//! subnormals (Rust never sets flush-to-zero or denormals-are-zero).
//!
//! IQ4_XS (`G` rows × one 256-element super-block, 138 bytes per row: 2 more than the source's
//! 136, for run scales unpacked to bytes), dotted against Q8_K activations:
//! - `d[G]` f16;
//! - `sc[s][row]` i8: the scale `ls - 32` (in -32..=31) of run `s` of 32;
//! - the 8 runs of indices, `16G` bytes each, laid out as an IQ4_NL record's.
//!
//! Row `i` against an activation block (`d_x`, values `x`):
//! - IQ4_NL, MXFP4: `d_i d_x Σ levels[q]·x`;
//! - IQ4_XS: `d_i d_x Σ_s sc_is Σ levels[q]·x`.
//!
//! The integer sums are exact, and every kernel (this scalar reference included) adds
//! `(d_i d_x) · sum` to the row's total with one fused multiply-add per block, so all of them
//! agree bit for bit. The unpacked dot products round the product before the addition, which
//! differs in the last bits (for MXFP4 too: the product `d_i d_x` itself, subnormal or not, is
//! the same on both paths). Where a block's exponent is so large that a total overflows
//! (`e = 255` against ordinary activations), both paths give infinities or NaN.

use super::kquant::{Q8K_BLOCK, Q8K_QS};
use super::{nibble_quad, rd32, wr32, ActView, Spec, QK};
use crate::quant::f16_to_f32;
use crate::quant::iq4_nl::KVALUES_IQ4NL;
use crate::quant::mxfp4::{e8m0_half, KVALUES_MXFP4};
use ggml_type::GgmlType;

/// The 16 levels a table format's indices pick.
pub(crate) struct Table {
    /// The signed levels (the AVX2 kernels and the scalar reference).
    pub levels: [i8; 16],
    /// The levels plus 128, as unsigned bytes: the unsigned operand of `vpdpbusd`, whose
    /// excess `128 Σ x` the VNNI kernels take off. Only the x86 kernels use it.
    #[cfg(target_arch = "x86_64")]
    pub unsigned: [u8; 16],
}

const fn table(levels: [i8; 16]) -> Table {
    #[cfg(target_arch = "x86_64")]
    let unsigned = {
        let mut t = [0u8; 16];
        let mut i = 0;
        while i < 16 {
            // Every level of both tables lies in -127..=127: 1..=255 after the shift.
            t[i] = (levels[i] as i16 + 128) as u8;
            i += 1;
        }
        t
    };
    Table {
        levels,
        #[cfg(target_arch = "x86_64")]
        unsigned,
    }
}

/// IQ4_NL's and IQ4_XS's levels.
pub(crate) static IQ4_TABLE: Table = table(KVALUES_IQ4NL);
/// MXFP4's levels: the E2M1 values doubled (0, ±1, ±2, ±3, ±4, ±6, ±8, ±12).
pub(crate) static MXFP4_TABLE: Table = table(KVALUES_MXFP4);

/// The table of a format of this module.
pub(crate) fn table_of(ty: GgmlType) -> &'static Table {
    if ty == GgmlType::MXFP4 {
        &MXFP4_TABLE
    } else {
        &IQ4_TABLE
    }
}

pub(crate) const IQ4_NL: Spec = Spec {
    ty: GgmlType::IQ4_NL,
    bits: 4,
    has_min: false,
    min_factor: 0.0,
    src_block: 18,
};
pub(crate) const IQ4_XS: Spec = Spec {
    ty: GgmlType::IQ4_XS,
    bits: 4,
    has_min: false,
    min_factor: 0.0,
    src_block: 136,
};

pub(crate) const MXFP4: Spec = Spec {
    ty: GgmlType::MXFP4,
    bits: 4,
    has_min: false,
    min_factor: 0.0,
    src_block: 17,
};

/// Whether `ty` is one of this module's formats.
pub(crate) const fn is_table_format(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::IQ4_NL | GgmlType::IQ4_XS | GgmlType::MXFP4)
}

/// Whether records of `ty` hold E8M0 exponent bytes (MXFP4) rather than f16 scales.
pub(crate) const fn e8m0_scales(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::MXFP4)
}

/// Writes the MXFP4 record of block `b` of the `g` rows in `rows`: each row's exponent byte,
/// its indices as IQ4_NL's.
pub(crate) fn pack_mxfp4(g: usize, rows: &[u8], row_bytes: usize, b: usize, rec: &mut [u8]) {
    let (src_block, qs_off) = (MXFP4.src_block, MXFP4.qs_off(g));
    for i in 0..g {
        let off = i * row_bytes + b * src_block;
        let src = &rows[off..off + src_block];
        rec[i] = src[0];
        // Element j < 16 is the low nibble of qs[j], j + 16 its high nibble, as in IQ4_NL.
        let qs = &src[1..];
        for p in 0..4 {
            let at = 8 * (p % 2);
            let quad = nibble_quad(rd32(qs, at), rd32(qs, at + 4), p >= 2);
            wr32(rec, qs_off + 4 * g * p + 4 * i, quad);
        }
    }
}

/// Offsets in an IQ4_XS record of `g` rows.
pub(crate) mod xs {
    pub const fn d(_g: usize) -> usize {
        0
    }
    pub const fn sc(g: usize) -> usize {
        2 * g
    }
    /// Run `s` of 32 elements.
    pub const fn qs(g: usize, s: usize) -> usize {
        10 * g + 16 * g * s
    }
    pub const fn record(g: usize) -> usize {
        138 * g
    }
}

/// Writes the IQ4_XS record of super-block `b` of the `g` rows in `rows`.
pub(crate) fn pack_xs(g: usize, rows: &[u8], row_bytes: usize, b: usize, rec: &mut [u8]) {
    let src_block = IQ4_XS.src_block;
    for i in 0..g {
        let off = i * row_bytes + b * src_block;
        let src = &rows[off..off + src_block];
        rec[xs::d(g) + 2 * i..xs::d(g) + 2 * i + 2].copy_from_slice(&src[0..2]);
        let h = u16::from_le_bytes([src[2], src[3]]);
        let low = &src[4..8];
        for s in 0..8 {
            let code = ((low[s / 2] >> (4 * (s % 2))) & 0x0F) | (((h >> (2 * s)) & 3) as u8) << 4;
            rec[xs::sc(g) + g * s + i] = (i32::from(code) - 32) as i8 as u8;
        }
        // Run s: its 16 bytes hold element j in the low nibble of byte j, j + 16 in the high;
        // byte 4i + j of the 4g bytes at 4g p gets elements 8p + j and 8p + 4 + j.
        for s in 0..8 {
            let qs = &src[8 + 16 * s..8 + 16 * (s + 1)];
            for p in 0..4 {
                let at = 8 * (p % 2);
                let quad = nibble_quad(rd32(qs, at), rd32(qs, at + 4), p >= 2);
                wr32(rec, xs::qs(g, s) + 4 * g * p + 4 * i, quad);
            }
        }
    }
}

/// The level of element `e` of row `i` in a run (or IQ4_NL record) of `g` rows whose indices
/// start at `qs_off`.
fn level(table: &Table, g: usize, rec: &[u8], qs_off: usize, i: usize, e: usize) -> i32 {
    let (k, byte) = (e / 4, 4 * i + e % 4);
    let packed = rec[qs_off + 4 * g * (k / 2) + byte];
    let q = if k % 2 == 0 {
        packed & 0x0F
    } else {
        packed >> 4
    };
    i32::from(table.levels[q as usize])
}

fn f16_at(rec: &[u8], off: usize, i: usize) -> f32 {
    f16_to_f32([rec[off + 2 * i], rec[off + 2 * i + 1]])
}

/// Scalar reference: `out[c * g + i]` for the `g` rows of `group` (records of `nb` blocks of
/// `spec`) against tokens `t0..t0 + n`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn group_scalar(
    spec: &Spec,
    g: usize,
    group: &[u8],
    nb: usize,
    x: &ActView,
    t0: usize,
    n: usize,
    out: &mut [f32],
) {
    let record = spec.record(g);
    let table = table_of(spec.ty);
    for (c, o) in out.chunks_exact_mut(g).enumerate().take(n) {
        o.fill(0.0);
        for b in 0..nb {
            let rec = &group[b * record..(b + 1) * record];
            if spec.ty != GgmlType::IQ4_XS {
                let (xq, dx) = (x.qs(t0 + c, b), x.acts.aux(t0 + c)[2 * b]);
                for (i, oi) in o.iter_mut().enumerate() {
                    let dot: i32 = (0..QK)
                        .map(|e| {
                            level(table, g, rec, spec.qs_off(g), i, e) * i32::from(xq[e] as i8)
                        })
                        .sum();
                    let d = if e8m0_scales(spec.ty) {
                        e8m0_half(rec[spec.d_off() + i])
                    } else {
                        f16_at(rec, spec.d_off(), i)
                    };
                    *oi = (d * dx).mul_add(dot as f32, *oi);
                }
            } else {
                let row = x.acts.row(t0 + c);
                let xb = &row[b * Q8K_BLOCK..(b + 1) * Q8K_BLOCK];
                let dx = f32::from_le_bytes([xb[0], xb[1], xb[2], xb[3]]);
                let xq = |e: usize| i32::from(xb[Q8K_QS + e] as i8);
                for (i, oi) in o.iter_mut().enumerate() {
                    let mut sum = 0i32;
                    for s in 0..8 {
                        let dot: i32 = (0..32)
                            .map(|e| level(table, g, rec, xs::qs(g, s), i, e) * xq(32 * s + e))
                            .sum();
                        sum += i32::from(rec[xs::sc(g) + g * s + i] as i8) * dot;
                    }
                    *oi = (f16_at(rec, xs::d(g), i) * dx).mul_add(sum as f32, *oi);
                }
            }
        }
    }
}

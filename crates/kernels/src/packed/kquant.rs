//! Packed records of the k-quant formats Q2_K, Q3_K, Q4_K, Q5_K and Q6_K: `G` interleaved rows (8 or 16) ×
//! one 256-element super-block, dotted against Q8_K activations.
//!
//! Within a record, every 32-element run is stored as the 32-element formats store a block (see
//! the parent module): `16G` bytes of nibbles whose vector `k` (`4G` bytes) holds elements
//! `4k..4k + 4` of the `G` rows.
//!
//! Q4_K (144 bytes per row, as the source):
//! - `d[G]`, `dmin[G]` f16;
//! - `sm[w][row]`: the source's 12 bytes of 6-bit scales and minimums as three 32-bit words,
//!   word `w` of every row together. Byte `j` of word 0 holds `sc_j` (low 6 bits) and the top
//!   2 bits of `sc_4+j`; of word 1, `m_j` and the top 2 bits of `m_4+j`; of word 2, the low 4
//!   bits of `sc_4+j` (low nibble) and of `m_4+j` (high nibble). A kernel decodes a record's
//!   scales with a few masks and shifts of the three vectors, one 32-bit lane per row: a
//!   generated token streams every weight from memory, so 4 bytes a row saved are worth more
//!   than the instructions (an unpacked copy made rows 148 bytes);
//! - the 8 runs of nibbles.
//!
//! Q5_K (176 bytes per row, as the source):
//! - `d[G]`, `dmin[G]`, `sm[w][row]` as in Q4_K;
//! - per run of 32, one after another: its low 4 bits as nibbles (`16G` bytes), then one
//!   vector (`4G` bytes) of fifth bits: bit `k` of byte `b` is the fifth bit of byte `b` of
//!   vector `k`, as the 32-element Q5_0 and Q5_1 store theirs. A kernel moves bit `k` to bit 4
//!   with one shift of the whole vector (16-bit lanes: what crosses into a neighbouring byte
//!   is masked off with the other bits) and merges it into nibble vector `k` with an and and
//!   an or; each run's bits follow its nibbles, so that a product reads a record in one
//!   ascending stream (see Q6_K below).
//!
//! Q6_K (210 bytes per row, as the source):
//! - `d[G]` f16;
//! - `sc[t][row][2]` i8: the scales of the 16-element runs `2t` and `2t + 1`;
//! - per run of 32, one after another: its low 4 bits as nibbles, then its high 2 bits as two
//!   vectors of `4G` bytes; bits `2m, 2m + 1` of byte `b` of the first (second) belong to byte
//!   `b` of vector `m` (`4 + m`). (Runs whole, rather than all low bits and then all high bits,
//!   keep a one-token product's reads in one ascending stream: with two interleaved streams
//!   per record it ran at well under half the memory bandwidth.)
//!
//! Q3_K (114 bytes per row, 4 more than the source's 110, for unpacked scales):
//! - `d[G]` f16;
//! - `sc[t][row][2]` i8: the scales (offset of 32 removed) of the 16-element runs `2t` and
//!   `2t + 1`;
//! - per run of 32, one after another: its low 2 bits as two vectors of `4G` bytes (bits
//!   `2m, 2m + 1` of byte `b` of the first (second) belong to byte `b` of vector `m` (`4 + m`),
//!   as Q6_K's high bits), then one vector of third bits (bit `k` of byte `b`: byte `b` of
//!   vector `k`, as Q5_K's fifth bits). A value is stored as `q + 4` (0..8): the source's
//!   high bit is set for `q >= 0`, which is the 4 of `q + 4`.
//!
//! Q2_K (84 bytes per row, as the source):
//! - `d[G]`, `dmin[G]` f16;
//! - `scm[t][row][2]` u8: the source's scale (low nibble) and minimum (high nibble) bytes of
//!   the 16-element runs `2t` and `2t + 1`;
//! - per run of 32: its 2-bit values as two vectors, as Q3_K's low bits.
//!
//! Row `i` against a Q8_K block (`d_x`, values `x`, sums `bsum` of each 16 values):
//! - Q4_K and Q5_K (q in 0..16 and 0..32):
//!   `d_x (d_i Σ_s sc_is Σ q·x − dmin_i Σ_s m_is (bsum_2s + bsum_2s+1))`;
//! - Q6_K: `d_x d_i Σ_r sc_ir (Σ q·x − 32 bsum_r)` over the 16 runs `r` of 16 (q in 0..64);
//! - Q3_K: the same with `q` in 0..8 and an offset of 4;
//! - Q2_K: `d_x (d_i Σ_r sc_ir Σ q·x − dmin_i Σ_r m_ir bsum_r)` over the runs of 16 (q in 0..4).

use super::{nibble_quad, rd32, wr32, ActView};
use crate::quant::f16_to_f32;
use ggml_type::GgmlType;

pub(crate) const QK_K: usize = 256;

/// Offsets in a Q4_K record of `g` rows.
pub(crate) mod q4k {
    pub const fn d(_g: usize) -> usize {
        0
    }
    pub const fn dmin(g: usize) -> usize {
        2 * g
    }
    /// Scale word `w` (0..3) of the `g` rows, 4 bytes each.
    pub const fn sm(g: usize, w: usize) -> usize {
        4 * g + 4 * g * w
    }
    pub const fn qs(g: usize) -> usize {
        16 * g
    }
    pub const fn record(g: usize) -> usize {
        144 * g
    }
}

/// Offsets in a Q5_K record of `g` rows: `d`, `dmin` and `sm` at those of Q4_K ([`q4k`]),
/// then the runs.
pub(crate) mod q5k {
    /// Run `s` of 32 elements: its nibbles (`16g` bytes), then its fifth bits (`4g`).
    pub const fn qs(g: usize, s: usize) -> usize {
        16 * g + 20 * g * s
    }
    pub const fn qh(g: usize, s: usize) -> usize {
        qs(g, s) + 16 * g
    }
    pub const fn record(g: usize) -> usize {
        176 * g
    }
}

/// The scale and minimum of run `s` (0..8) of a Q4_K or Q5_K row from its three scale words
/// (layout in the module's notes).
pub(crate) fn q4k_scale_min(words: [u32; 3], s: usize) -> (u8, u8) {
    let byte = |w: u32| (w >> (8 * (s % 4))) as u8;
    let (a, b, c) = (byte(words[0]), byte(words[1]), byte(words[2]));
    if s < 4 {
        (a & 63, b & 63)
    } else {
        ((c & 15) | (a >> 6) << 4, (c >> 4) | (b >> 6) << 4)
    }
}

/// Offsets in a Q6_K record of `g` rows.
pub(crate) mod q6k {
    pub const fn d(_g: usize) -> usize {
        0
    }
    pub const fn sc(g: usize) -> usize {
        2 * g
    }
    /// Run `t` of 32 elements: its low 4 bits (`16g` bytes) and then its high 2 bits (`8g`),
    /// so that a product streams each record in one ascending pass.
    pub const fn ql(g: usize, t: usize) -> usize {
        18 * g + 24 * g * t
    }
    pub const fn qh(g: usize, t: usize) -> usize {
        ql(g, t) + 16 * g
    }
    pub const fn record(g: usize) -> usize {
        210 * g
    }
}

/// Offsets in a Q3_K record of `g` rows.
pub(crate) mod q3k {
    pub const fn d(_g: usize) -> usize {
        0
    }
    pub const fn sc(g: usize) -> usize {
        2 * g
    }
    /// Run `t` of 32 elements: its low 2 bits (`8g` bytes), then its third bits (`4g`).
    pub const fn ql(g: usize, t: usize) -> usize {
        18 * g + 12 * g * t
    }
    pub const fn qh(g: usize, t: usize) -> usize {
        ql(g, t) + 8 * g
    }
    pub const fn record(g: usize) -> usize {
        114 * g
    }
}

/// Offsets in a Q2_K record of `g` rows.
pub(crate) mod q2k {
    pub const fn d(_g: usize) -> usize {
        0
    }
    pub const fn dmin(g: usize) -> usize {
        2 * g
    }
    pub const fn scm(g: usize) -> usize {
        4 * g
    }
    /// Run `t` of 32 elements: its 2-bit values (`8g` bytes).
    pub const fn qs(g: usize, t: usize) -> usize {
        20 * g + 8 * g * t
    }
    pub const fn record(g: usize) -> usize {
        84 * g
    }
}

/// Q8_K block: f32 `d`, 256 values, 16 i16 sums.
pub(crate) const Q8K_BLOCK: usize = 292;
pub(crate) const Q8K_QS: usize = 4;
pub(crate) const Q8K_BSUMS: usize = 260;

/// The nibble of element `e` of row `i` in a run of `g` rows.
fn get_nibble(g: usize, run: &[u8], i: usize, e: usize) -> u8 {
    let (k, j) = (e / 4, e % 4);
    let b = run[4 * g * (k / 2) + 4 * i + j];
    if k % 2 == 0 {
        b & 0x0F
    } else {
        b >> 4
    }
}

pub(crate) fn pack_q4k(g: usize, rows: &[u8], row_bytes: usize, b: usize, rec: &mut [u8]) {
    for i in 0..g {
        let off = i * row_bytes + b * 144;
        let src = &rows[off..off + 144];
        pack_q4k_row(g, i, &src[..16], &src[16..144], rec, |s| {
            q4k::qs(g) + 16 * g * s
        });
    }
}

pub(crate) fn pack_q5k(g: usize, rows: &[u8], row_bytes: usize, b: usize, rec: &mut [u8]) {
    for i in 0..g {
        let off = i * row_bytes + b * 176;
        let src = &rows[off..off + 176];
        let (qh, qs) = (&src[16..48], &src[48..176]);
        pack_q4k_row(g, i, &src[..16], qs, rec, |s| q5k::qs(g, s));
        // Element e of run s has its fifth bit at bit s of qh[e]; bit k of byte j of the
        // row's word takes that of element 4k + j.
        for s in 0..8 {
            let mut word = 0u32;
            for k in 0..8 {
                word |= ((rd32(qh, 4 * k) >> s) & 0x0101_0101) << k;
            }
            wr32(rec, q5k::qh(g, s) + 4 * i, word);
        }
    }
}

/// Row `i` of a Q4_K or Q5_K record: the scale and minimum header (`d`, `dmin`, the 12 bytes
/// of 6-bit scales and minimums) and the 128 bytes of nibbles `qs` of the source block, run
/// `s`'s nibbles going to the `16g` bytes at `run_at(s)`.
fn pack_q4k_row(
    g: usize,
    i: usize,
    head: &[u8],
    qs: &[u8],
    rec: &mut [u8],
    run_at: impl Fn(usize) -> usize,
) {
    let (d, dmin) = (q4k::d(g), q4k::dmin(g));
    rec[d + 2 * i..d + 2 * i + 2].copy_from_slice(&head[0..2]);
    rec[dmin + 2 * i..dmin + 2 * i + 2].copy_from_slice(&head[2..4]);
    for w in 0..3 {
        let at = q4k::sm(g, w) + 4 * i;
        rec[at..at + 4].copy_from_slice(&head[4 + 4 * w..8 + 4 * w]);
    }
    // Runs 2c and 2c + 1 are the low and high nibbles of the 32 bytes at 32c.
    for s in 0..8 {
        let run = 32 * (s / 2);
        for p in 0..4 {
            let at = run + 8 * p;
            let quad = nibble_quad(rd32(qs, at), rd32(qs, at + 4), s % 2 == 1);
            wr32(rec, run_at(s) + 4 * g * p + 4 * i, quad);
        }
    }
}

pub(crate) fn pack_q6k(g: usize, rows: &[u8], row_bytes: usize, b: usize, rec: &mut [u8]) {
    let (d, sc) = (q6k::d(g), q6k::sc(g));
    for t in 0..8 {
        rec[q6k::qh(g, t)..q6k::qh(g, t) + 8 * g].fill(0);
    }
    for i in 0..g {
        let off = i * row_bytes + b * 210;
        let src = &rows[off..off + 210];
        rec[d + 2 * i..d + 2 * i + 2].copy_from_slice(&src[208..210]);
        for t in 0..8 {
            rec[sc + 2 * g * t + 2 * i] = src[192 + 2 * t];
            rec[sc + 2 * g * t + 2 * i + 1] = src[192 + 2 * t + 1];
        }
        // Run t of 32: half n = t / 4 of the block, quarter t % 4 of that half. Its low 4 bits
        // are the low (quarters 0, 1) or high (2, 3) nibbles of ql[64n + 32 (t odd) ..]; its
        // high 2 bits are bits 2 (t % 4).. of qh[32n ..].
        let (ql, qh) = (&src[0..128], &src[128..192]);
        for t in 0..8 {
            let (n, quarter) = (t / 4, t % 4);
            let lo_at = 64 * n + if quarter % 2 == 1 { 32 } else { 0 };
            for p in 0..4 {
                let at = lo_at + 8 * p;
                let quad = nibble_quad(rd32(ql, at), rd32(ql, at + 4), quarter >= 2);
                wr32(rec, q6k::ql(g, t) + 4 * g * p + 4 * i, quad);
            }
            // Vector k (elements 4k..4k + 4) puts its 2-bit values at bits 2 (k % 4) of the
            // bytes of the k / 4-th high-bit vector.
            for h in 0..2 {
                let mut word = 0u32;
                for m in 0..4 {
                    let k = 4 * h + m;
                    let bits = (rd32(qh, 32 * n + 4 * k) >> (2 * quarter)) & 0x0303_0303;
                    word |= bits << (2 * m);
                }
                wr32(rec, q6k::qh(g, t) + 4 * g * h + 4 * i, word);
            }
        }
    }
}

/// Writes the two vectors (`8g` bytes at `at` of `rec`) of row `i`'s 2-bit values of the run
/// of 32 whose values are bits `shift, shift + 1` of the 32 source bytes `src`: bits `2m,
/// 2m + 1` of byte `4i + j` of vector `h` take element `4 (4h + m) + j`.
fn pack_crumbs(g: usize, src: &[u8], shift: usize, i: usize, rec: &mut [u8], at: usize) {
    for h in 0..2 {
        let mut word = 0u32;
        for m in 0..4 {
            let k = 4 * h + m;
            word |= ((rd32(src, 4 * k) >> shift) & 0x0303_0303) << (2 * m);
        }
        wr32(rec, at + 4 * g * h + 4 * i, word);
    }
}

/// The 2-bit value of element `e` (0..32) of row `i` in the run's two vectors at `run`.
fn get_crumb(g: usize, run: &[u8], i: usize, e: usize) -> u8 {
    let (k, j) = (e / 4, e % 4);
    (run[4 * g * (k / 4) + 4 * i + j] >> (2 * (k % 4))) & 3
}

/// Source blocks: elements `128n + 32j + l` are bits `2j, 2j + 1` of byte `32n + l` of `qs`
/// (run `t = 4n + j` of 32), and Q3_K's high bit of it is bit `t` of byte `l` of `hmask`.
pub(crate) fn pack_q3k(g: usize, rows: &[u8], row_bytes: usize, b: usize, rec: &mut [u8]) {
    for i in 0..g {
        let off = i * row_bytes + b * 110;
        let src = &rows[off..off + 110];
        let (hmask, qs) = (&src[0..32], &src[32..96]);
        let mut scales = [0u8; 12];
        scales.copy_from_slice(&src[96..108]);
        rec[q3k::d(g) + 2 * i..q3k::d(g) + 2 * i + 2].copy_from_slice(&src[108..110]);
        let sc = crate::quant::q3_k::unpack_scales(&scales);
        for t in 0..8 {
            rec[q3k::sc(g) + 2 * g * t + 2 * i] = sc[2 * t] as u8;
            rec[q3k::sc(g) + 2 * g * t + 2 * i + 1] = sc[2 * t + 1] as u8;
            pack_crumbs(g, &qs[32 * (t / 4)..], 2 * (t % 4), i, rec, q3k::ql(g, t));
            let mut word = 0u32;
            for k in 0..8 {
                word |= ((rd32(hmask, 4 * k) >> t) & 0x0101_0101) << k;
            }
            wr32(rec, q3k::qh(g, t) + 4 * i, word);
        }
    }
}

pub(crate) fn pack_q2k(g: usize, rows: &[u8], row_bytes: usize, b: usize, rec: &mut [u8]) {
    for i in 0..g {
        let off = i * row_bytes + b * 84;
        let src = &rows[off..off + 84];
        let (scales, qs) = (&src[0..16], &src[16..80]);
        rec[q2k::d(g) + 2 * i..q2k::d(g) + 2 * i + 2].copy_from_slice(&src[80..82]);
        rec[q2k::dmin(g) + 2 * i..q2k::dmin(g) + 2 * i + 2].copy_from_slice(&src[82..84]);
        for t in 0..8 {
            rec[q2k::scm(g) + 2 * g * t + 2 * i] = scales[2 * t];
            rec[q2k::scm(g) + 2 * g * t + 2 * i + 1] = scales[2 * t + 1];
            pack_crumbs(g, &qs[32 * (t / 4)..], 2 * (t % 4), i, rec, q2k::qs(g, t));
        }
    }
}

/// The value `q + 4` (0..8) of element `e` of row `i` in a Q3_K record.
fn q3k_value(g: usize, rec: &[u8], i: usize, e: usize) -> i32 {
    let (t, r) = (e / 32, e % 32);
    let lo = get_crumb(g, &rec[q3k::ql(g, t)..], i, r);
    let (k, j) = (r / 4, r % 4);
    let hi = (rec[q3k::qh(g, t) + 4 * i + j] >> k) & 1;
    (lo | hi << 2) as i32
}

fn q6k_value(g: usize, rec: &[u8], i: usize, e: usize) -> i32 {
    let (t, r) = (e / 32, e % 32);
    let lo = get_nibble(g, &rec[q6k::ql(g, t)..], i, r);
    let (k, j) = (r / 4, r % 4);
    let hi = (rec[q6k::qh(g, t) + 4 * g * (k / 4) + 4 * i + j] >> (2 * (k % 4))) & 3;
    (lo | hi << 4) as i32
}

/// The value (0..32) of element `e` of run `s` of row `i` in a Q5_K record.
fn q5k_value(g: usize, rec: &[u8], s: usize, i: usize, e: usize) -> i32 {
    let lo = get_nibble(g, &rec[q5k::qs(g, s)..], i, e);
    let (k, j) = (e / 4, e % 4);
    let hi = (rec[q5k::qh(g, s) + 4 * i + j] >> k) & 1;
    (lo | hi << 4) as i32
}

fn f16_at(rec: &[u8], off: usize, i: usize) -> f32 {
    f16_to_f32([rec[off + 2 * i], rec[off + 2 * i + 1]])
}

/// Scalar reference: `out[c * g + i]` for the `g` rows of `group` (records of `nb`
/// super-blocks) against tokens `t0..t0 + n`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn group_scalar(
    ty: GgmlType,
    g: usize,
    group: &[u8],
    nb: usize,
    x: &ActView,
    t0: usize,
    n: usize,
    out: &mut [f32],
) {
    let (q6, q5) = (ty == GgmlType::Q6_K, ty == GgmlType::Q5_K);
    let (q3, q2) = (ty == GgmlType::Q3_K, ty == GgmlType::Q2_K);
    let record = match ty {
        GgmlType::Q6_K => q6k::record(g),
        GgmlType::Q5_K => q5k::record(g),
        GgmlType::Q3_K => q3k::record(g),
        GgmlType::Q2_K => q2k::record(g),
        _ => q4k::record(g),
    };
    for (c, o) in out.chunks_exact_mut(g).enumerate().take(n) {
        let row = x.acts.row(t0 + c);
        o.fill(0.0);
        for b in 0..nb {
            let rec = &group[b * record..(b + 1) * record];
            let xb = &row[b * Q8K_BLOCK..(b + 1) * Q8K_BLOCK];
            let dx = f32::from_le_bytes([xb[0], xb[1], xb[2], xb[3]]);
            let xq = |e: usize| xb[Q8K_QS + e] as i8 as i32;
            let bsum = |r: usize| {
                i16::from_le_bytes([xb[Q8K_BSUMS + 2 * r], xb[Q8K_BSUMS + 2 * r + 1]]) as i32
            };
            for (i, oi) in o.iter_mut().enumerate() {
                if q3 {
                    let mut total = 0i32;
                    for r in 0..16 {
                        let sc = rec[q3k::sc(g) + 2 * g * (r / 2) + 2 * i + r % 2] as i8 as i32;
                        let dot: i32 = (16 * r..16 * r + 16)
                            .map(|e| q3k_value(g, rec, i, e) * xq(e))
                            .sum();
                        total += sc * (dot - 4 * bsum(r));
                    }
                    *oi += dx * f16_at(rec, q3k::d(g), i) * total as f32;
                } else if q2 {
                    let (mut sums, mut mins) = (0i32, 0i32);
                    for r in 0..16 {
                        let scm = rec[q2k::scm(g) + 2 * g * (r / 2) + 2 * i + r % 2] as i32;
                        let run = &rec[q2k::qs(g, r / 2)..];
                        let dot: i32 = (16 * (r % 2)..16 * (r % 2) + 16)
                            .map(|e| get_crumb(g, run, i, e) as i32 * xq(32 * (r / 2) + e))
                            .sum();
                        sums += (scm & 0xF) * dot;
                        mins += (scm >> 4) * bsum(r);
                    }
                    *oi += dx * f16_at(rec, q2k::d(g), i) * sums as f32
                        - dx * f16_at(rec, q2k::dmin(g), i) * mins as f32;
                } else if q6 {
                    let mut total = 0i32;
                    for r in 0..16 {
                        let sc = rec[q6k::sc(g) + 2 * g * (r / 2) + 2 * i + r % 2] as i8 as i32;
                        let dot: i32 = (16 * r..16 * r + 16)
                            .map(|e| q6k_value(g, rec, i, e) * xq(e))
                            .sum();
                        total += sc * (dot - 32 * bsum(r));
                    }
                    *oi += dx * f16_at(rec, q6k::d(g), i) * total as f32;
                } else {
                    let (mut sums, mut mins) = (0i32, 0i32);
                    for s in 0..8 {
                        let value = |e: usize| {
                            if q5 {
                                q5k_value(g, rec, s, i, e)
                            } else {
                                get_nibble(g, &rec[q4k::qs(g) + 16 * g * s..], i, e) as i32
                            }
                        };
                        let dot: i32 = (0..32).map(|e| value(e) * xq(32 * s + e)).sum();
                        let words = [0, 1, 2].map(|w| rd32(rec, q4k::sm(g, w) + 4 * i));
                        let (sc, m) = q4k_scale_min(words, s);
                        sums += sc as i32 * dot;
                        mins += m as i32 * (bsum(2 * s) + bsum(2 * s + 1));
                    }
                    *oi += dx * f16_at(rec, q4k::d(g), i) * sums as f32
                        - dx * f16_at(rec, q4k::dmin(g), i) * mins as f32;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::q4k_scale_min;
    use crate::quant::q4_k::unpack_scales_mins;

    #[test]
    fn scale_words_decode_as_the_source_block() {
        // Every byte value in every position, by a walk that visits all of them.
        for seed in 0..256u32 {
            let q: [u8; 12] = std::array::from_fn(|k| (seed * 37 + k as u32 * 101) as u8);
            let word =
                |w: usize| u32::from_le_bytes([q[4 * w], q[4 * w + 1], q[4 * w + 2], q[4 * w + 3]]);
            let (sc, m) = unpack_scales_mins(&q);
            for s in 0..8 {
                assert_eq!(
                    q4k_scale_min([word(0), word(1), word(2)], s),
                    (sc[s], m[s]),
                    "{q:?} run {s}"
                );
            }
        }
    }
}

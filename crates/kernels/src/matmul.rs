//! Matrix products of a weight matrix in any format of [`FORMATS`](crate::quant::FORMATS) with
//! a batch of activation rows, split across the thread pool.
//!
//! Activations are quantized once into the weight format's `act_type()` ([`QuantizedActs`]),
//! then every (weight row, token) pair is one call of the format's dot product.

use crate::pool::ThreadPool;
use crate::quant::{format, QuantFormat};
use ggml_type::GgmlType;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatrixError {
    #[error("no kernels for tensor type {0}")]
    UnsupportedType(GgmlType),
    #[error("{cols} columns is not a whole number of {ty} blocks of {block_size}")]
    PartialBlock {
        ty: GgmlType,
        cols: usize,
        block_size: usize,
    },
    #[error("a {ty} matrix of {rows}x{cols} needs {expected} bytes, got {got}")]
    WrongSize {
        ty: GgmlType,
        rows: usize,
        cols: usize,
        expected: usize,
        got: usize,
    },
    #[error("a {rows}x{cols} matrix is too large")]
    TooLarge { rows: usize, cols: usize },
}

/// A row-major weight matrix in a block format: each of `rows` rows holds `cols` elements as
/// `cols / block_size` blocks.
#[derive(Clone, Copy, Debug)]
pub struct QMatrix<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

impl<'a> QMatrix<'a> {
    /// Checks that `ty` has kernels, that `cols` is a whole number of blocks and that `data`
    /// holds exactly `rows` rows.
    pub fn new(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: &'a [u8],
    ) -> Result<Self, MatrixError> {
        if format(ty).is_none() {
            return Err(MatrixError::UnsupportedType(ty));
        }
        let block_size = ty.block_size();
        if !cols.is_multiple_of(block_size) {
            return Err(MatrixError::PartialBlock {
                ty,
                cols,
                block_size,
            });
        }
        let expected = (cols / block_size)
            .checked_mul(ty.block_bytes())
            .and_then(|rb| rb.checked_mul(rows))
            .ok_or(MatrixError::TooLarge { rows, cols })?;
        if data.len() != expected {
            return Err(MatrixError::WrongSize {
                ty,
                rows,
                cols,
                expected,
                got: data.len(),
            });
        }
        Ok(QMatrix {
            ty,
            rows,
            cols,
            data,
        })
    }

    /// Bytes in one row.
    pub fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_size() * self.ty.block_bytes()
    }

    /// The bytes of row `r`. Panics if `r >= rows`.
    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }

    /// Row `r` as `cols` floats into `out[..cols]`. Panics if `r >= rows`, `out` is shorter
    /// than a row, or the type has no kernels.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        kernels_of(self.ty).dequantize_row(self.row(r), &mut out[..self.cols]);
    }
}

fn kernels_of(ty: GgmlType) -> &'static dyn QuantFormat {
    match format(ty) {
        Some(f) => f,
        None => panic!("no kernels for tensor type {ty}"),
    }
}

/// Activations (n_tokens rows of `cols` f32) quantized once into a format's act_type, reusable
/// by every matrix that reads them.
#[derive(Debug, Clone)]
pub struct QuantizedActs {
    ty: GgmlType,
    n_tokens: usize,
    cols: usize,
    row_bytes: usize,
    buf: Vec<u8>,
    /// For Q8_0 and Q8_1: per token and block, `d` and `s = d * Σq` as f32 (Q8_1: its stored
    /// `s`), which the packed kernels read instead of converting them per weight row.
    aux: Vec<f32>,
}

impl Default for QuantizedActs {
    fn default() -> Self {
        Self::new()
    }
}

impl QuantizedActs {
    /// Empty (no tokens); nothing is allocated until the first `quantize`.
    pub fn new() -> Self {
        QuantizedActs {
            ty: GgmlType::F32,
            n_tokens: 0,
            cols: 0,
            row_bytes: 0,
            buf: Vec::new(),
            aux: Vec::new(),
        }
    }

    /// Quantizes `x` (`n_tokens` rows of `cols` floats) into `act_ty`. The buffer is reused:
    /// nothing is allocated once it has held as many bytes. Panics if `x.len() !=
    /// n_tokens * cols`, `cols` is not a whole number of `act_ty` blocks, or `act_ty` has no
    /// kernels.
    pub fn quantize(&mut self, act_ty: GgmlType, x: &[f32], n_tokens: usize, cols: usize) {
        self.quantize_with(None, act_ty, x, n_tokens, cols);
    }

    /// [`QuantizedActs::quantize`] with the rows spread over `pool` where there are enough of
    /// them (a prompt's); each row is quantized as it would be alone, so the bytes are the same.
    pub fn quantize_on(
        &mut self,
        pool: &ThreadPool,
        act_ty: GgmlType,
        x: &[f32],
        n_tokens: usize,
        cols: usize,
    ) {
        self.quantize_with(Some(pool), act_ty, x, n_tokens, cols);
    }

    fn quantize_with(
        &mut self,
        pool: Option<&ThreadPool>,
        act_ty: GgmlType,
        x: &[f32],
        n_tokens: usize,
        cols: usize,
    ) {
        let f = kernels_of(act_ty);
        assert_eq!(
            x.len(),
            n_tokens * cols,
            "activations: {} floats for {n_tokens}x{cols}",
            x.len()
        );
        assert!(
            cols.is_multiple_of(act_ty.block_size()),
            "{cols} columns in {act_ty} blocks"
        );
        let row_bytes = cols / act_ty.block_size() * act_ty.block_bytes();
        let need = row_bytes * n_tokens;
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
        // Q8_0 and Q8_1 keep `(d, s)` per block beside the bytes.
        let with_aux = matches!(act_ty, GgmlType::Q8_0 | GgmlType::Q8_1);
        let aux_row = if with_aux {
            2 * (cols / act_ty.block_size())
        } else {
            0
        };
        let mut aux = std::mem::take(&mut self.aux);
        aux.clear();
        aux.resize(aux_row * n_tokens, 0.0);
        let block = act_ty.block_bytes();
        let rows = |x: &[f32], bytes: &mut [u8], aux: &mut [f32]| {
            for (r, (src, dst)) in x
                .chunks_exact(cols)
                .zip(bytes.chunks_exact_mut(row_bytes))
                .enumerate()
            {
                f.quantize_row_fast(src, dst);
                if with_aux {
                    let aux = &mut aux[r * aux_row..(r + 1) * aux_row];
                    for (b, ds) in dst.chunks_exact(block).zip(aux.chunks_exact_mut(2)) {
                        let d = crate::quant::f16_to_f32([b[0], b[1]]);
                        ds[0] = d;
                        ds[1] = if act_ty == GgmlType::Q8_1 {
                            crate::quant::f16_to_f32([b[2], b[3]])
                        } else {
                            d * b[2..].iter().map(|&q| q as i8 as i32).sum::<i32>() as f32
                        };
                    }
                }
            }
        };
        let bytes = &mut self.buf[..need];
        let chunk = pool.and_then(|p| crate::par::rows_per_chunk(p, n_tokens, cols));
        match (pool, chunk) {
            (Some(pool), Some(per)) if row_bytes > 0 => {
                let x_chunk = per * cols;
                if with_aux {
                    crate::par::par_zip_chunks_mut(
                        pool,
                        bytes,
                        per * row_bytes,
                        &mut aux,
                        per * aux_row,
                        &|i, b, a| rows(&x[i * x_chunk..][..b.len() / row_bytes * cols], b, a),
                    );
                } else {
                    crate::par::par_chunks_mut(pool, bytes, per * row_bytes, &|i, b| {
                        rows(&x[i * x_chunk..][..b.len() / row_bytes * cols], b, &mut [])
                    });
                }
            }
            _ if row_bytes > 0 => rows(x, bytes, &mut aux),
            _ => {}
        }
        *self = QuantizedActs {
            ty: act_ty,
            n_tokens,
            cols,
            row_bytes,
            buf: std::mem::take(&mut self.buf),
            aux,
        };
    }

    /// Token `t`'s `(d, s)` pairs, one per block (Q8_0 and Q8_1 activations only).
    pub(crate) fn aux(&self, t: usize) -> &[f32] {
        let per = 2 * (self.cols / self.ty.block_size());
        &self.aux[t * per..(t + 1) * per]
    }

    pub fn act_type(&self) -> GgmlType {
        self.ty
    }

    pub fn n_tokens(&self) -> usize {
        self.n_tokens
    }

    /// Elements per token.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The quantized row of token `t`. Panics if `t >= n_tokens`.
    pub fn row(&self, t: usize) -> &[u8] {
        assert!(t < self.n_tokens, "token {t} of {}", self.n_tokens);
        &self.buf[t * self.row_bytes..(t + 1) * self.row_bytes]
    }
}

/// Products below this many multiply-adds run on the calling thread alone.
const PARALLEL_MIN_WORK: usize = 1 << 15;
/// Weight bytes in one unit of work when several tokens share it (kept within the L2 cache).
const CHUNK_BYTES_MAX: usize = 1 << 17;

/// The output of a product, written by several threads at disjoint indices (here and in
/// `packed`).
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: users write each index from exactly one thread (see `matmul` and
// `packed::matmul_packed_many_with`), and the slice outlives the dispatch.
unsafe impl Sync for OutPtr {}
unsafe impl Send for OutPtr {}

impl OutPtr {
    /// # Safety
    /// `i` is within the output slice, which is alive, and no other thread accesses index `i`
    /// during the dispatch.
    #[inline(always)]
    pub(crate) unsafe fn write(&self, i: usize, v: f32) {
        *self.0.add(i) = v;
    }

    /// Writes `vals` at `i..i + N` (a tile's rows for one token: whole vectors, not one float
    /// at a time).
    ///
    /// # Safety
    /// As [`OutPtr::write`], for each index of `i..i + N`; `vals` is not part of the output.
    #[inline(always)]
    pub(crate) unsafe fn write_run<const N: usize>(&self, i: usize, vals: &[f32; N]) {
        std::ptr::copy_nonoverlapping(vals.as_ptr(), self.0.add(i), N);
    }
}

/// out[t * w.rows + r] = dot(w row r, token t). Splits rows across the pool; for many tokens,
/// loops tokens inside a row block so weights stay in cache.
///
/// Panics if `x` is not in `w`'s activation type, `x.cols() != w.cols`, or `out.len() !=
/// x.n_tokens() * w.rows`.
pub fn matmul(pool: &ThreadPool, w: &QMatrix, x: &QuantizedActs, out: &mut [f32]) {
    let f = kernels_of(w.ty);
    assert_eq!(
        x.act_type(),
        f.act_type(),
        "activations for a {} matrix",
        w.ty
    );
    assert_eq!(x.cols(), w.cols, "activation width");
    let (rows, cols, n_tokens) = (w.rows, w.cols, x.n_tokens());
    assert_eq!(out.len(), n_tokens * rows, "output size");
    assert!(w.data.len() >= rows * w.row_bytes(), "weight data");
    if rows == 0 || n_tokens == 0 {
        return;
    }
    let dot = f.vec_dot();
    let n_threads = pool.n_threads();
    if n_threads == 1 || rows * cols * n_tokens < PARALLEL_MIN_WORK {
        for r in 0..rows {
            let wr = w.row(r);
            for t in 0..n_tokens {
                out[t * rows + r] = dot(cols, wr, x.row(t));
            }
        }
        return;
    }
    // Rows are handed out in chunks from a shared counter: about four per thread for balance,
    // fewer rows each when several tokens reuse them (so they stay in cache).
    let mut chunk = rows.div_ceil(n_threads * 4);
    if n_tokens > 1 {
        chunk = chunk.min((CHUNK_BYTES_MAX / w.row_bytes().max(1)).max(1));
    }
    let n_chunks = rows.div_ceil(chunk);
    let next = AtomicUsize::new(0);
    let outp = OutPtr(out.as_mut_ptr());
    pool.run(&|_, _| {
        loop {
            let c = next.fetch_add(1, Ordering::Relaxed);
            if c >= n_chunks {
                break;
            }
            let r0 = c * chunk;
            let r1 = (r0 + chunk).min(rows);
            for t in 0..n_tokens {
                let xt = x.row(t);
                for r in r0..r1 {
                    let v = dot(cols, w.row(r), xt);
                    // SAFETY: t < n_tokens and r < rows, so the index is within `out`
                    // (checked above); chunk `c` is claimed by exactly one thread, so no other
                    // thread writes this index; `out` is borrowed mutably for the whole call.
                    unsafe { outp.write(t * rows + r, v) };
                }
            }
        }
    });
}

/// Convenience: quantizes x into w's act type (allocating) and calls matmul.
pub fn matmul_f32(pool: &ThreadPool, w: &QMatrix, x: &[f32], n_tokens: usize, out: &mut [f32]) {
    let mut q = QuantizedActs::new();
    q.quantize(kernels_of(w.ty).act_type(), x, n_tokens, w.cols);
    matmul(pool, w, &q, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qmatrix_checks_shape() {
        let data = vec![0u8; 18 * 6];
        assert!(QMatrix::new(GgmlType::Q4_0, 3, 64, &data).is_ok());
        assert!(matches!(
            QMatrix::new(GgmlType::Q4_0, 3, 48, &data),
            Err(MatrixError::PartialBlock { .. })
        ));
        assert!(matches!(
            QMatrix::new(GgmlType::Q4_0, 4, 64, &data),
            Err(MatrixError::WrongSize {
                expected: 144,
                got: 108,
                ..
            })
        ));
        assert!(matches!(
            QMatrix::new(GgmlType::Q4_0, usize::MAX, 64, &data),
            Err(MatrixError::TooLarge { .. })
        ));
        let m = QMatrix::new(GgmlType::Q4_0, 3, 64, &data).unwrap();
        assert_eq!(m.row_bytes(), 36);
        assert_eq!(m.row(2).len(), 36);
    }

    /// A prompt's rows quantized on a pool: the same bytes and block sums as on one thread,
    /// for every activation format with its own row layout.
    #[test]
    fn acts_quantized_on_a_pool_equal_one_thread() {
        let pool = ThreadPool::new(3);
        let (n_tokens, cols) = (37, 512);
        let x: Vec<f32> = (0..n_tokens * cols)
            .map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0)
            .collect();
        assert!(crate::par::rows_per_chunk(&pool, n_tokens, cols).is_some());
        for ty in [
            GgmlType::Q8_0,
            GgmlType::Q8_1,
            GgmlType::Q8_K,
            GgmlType::F16,
        ] {
            let (mut one, mut many) = (QuantizedActs::new(), QuantizedActs::new());
            one.quantize(ty, &x, n_tokens, cols);
            many.quantize_on(&pool, ty, &x, n_tokens, cols);
            let need = one.row_bytes * n_tokens;
            assert!(need > 0, "{ty}");
            assert_eq!(one.buf[..need], many.buf[..need], "{ty} bytes");
            assert_eq!(one.aux, many.aux, "{ty} block sums");
            assert_eq!(
                one.aux.is_empty(),
                !matches!(ty, GgmlType::Q8_0 | GgmlType::Q8_1)
            );
        }
    }

    #[test]
    fn acts_reuse_their_buffer() {
        let mut q = QuantizedActs::new();
        let x = vec![0.5f32; 4 * 64];
        q.quantize(GgmlType::Q8_0, &x, 4, 64);
        let p = q.buf.as_ptr();
        q.quantize(GgmlType::Q8_0, &x[..128], 2, 64);
        assert_eq!(q.buf.as_ptr(), p);
        assert_eq!((q.n_tokens(), q.cols(), q.row(1).len()), (2, 64, 68));
    }
}

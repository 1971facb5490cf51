//! `matmul` over every format of `FORMATS`, on 1 and 3 threads, against the per-pair scalar dot
//! product and against a naive f32 product of the dequantized operands.

use kernels::matmul::{matmul, matmul_f32, QMatrix, QuantizedActs};
use kernels::pool::ThreadPool;
use kernels::quant::{format, QuantFormat, FORMATS};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const COLS: usize = 512;

fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

fn quantize_rows(f: &dyn QuantFormat, x: &[f32], cols: usize) -> Vec<u8> {
    let rb = f.ty().bytes_for(cols as u64).unwrap() as usize;
    let mut q = vec![0u8; x.len() / cols * rb];
    for (src, dst) in x.chunks_exact(cols).zip(q.chunks_exact_mut(rb)) {
        f.quantize_row(src, dst);
    }
    q
}

#[test]
fn matmul_matches_references() {
    let mut rng = StdRng::seed_from_u64(42);
    let pools = [ThreadPool::new(1), ThreadPool::new(3)];
    let mut acts = QuantizedActs::new();
    for f in FORMATS {
        let act = format(f.act_type()).unwrap();
        for rows in [1, 3, 17, 61, 257] {
            let wf = random(&mut rng, rows * COLS);
            let wq = quantize_rows(*f, &wf, COLS);
            let w = QMatrix::new(f.ty(), rows, COLS, &wq).unwrap();
            let mut wd = vec![0f32; rows * COLS];
            for (r, out) in wd.chunks_exact_mut(COLS).enumerate() {
                w.dequantize_row(r, out);
            }
            for n_tokens in [1, 7] {
                let x = random(&mut rng, n_tokens * COLS);
                acts.quantize(f.act_type(), &x, n_tokens, COLS);
                assert_eq!((acts.act_type(), acts.n_tokens()), (f.act_type(), n_tokens));
                let mut xd = vec![0f32; n_tokens * COLS];
                for (t, out) in xd.chunks_exact_mut(COLS).enumerate() {
                    act.dequantize_row(acts.row(t), out);
                }
                for pool in &pools {
                    let mut out = vec![f32::NAN; n_tokens * rows];
                    matmul(pool, &w, &acts, &mut out);
                    let what = format!(
                        "{} rows={rows} tokens={n_tokens} threads={}",
                        f.ty(),
                        pool.n_threads()
                    );
                    for t in 0..n_tokens {
                        for r in 0..rows {
                            let got = out[t * rows + r] as f64;
                            let wr = &wd[r * COLS..(r + 1) * COLS];
                            let xt = &xd[t * COLS..(t + 1) * COLS];
                            let naive: f64 =
                                wr.iter().zip(xt).map(|(a, b)| *a as f64 * *b as f64).sum();
                            let scale: f64 = wr
                                .iter()
                                .zip(xt)
                                .map(|(a, b)| (*a as f64 * *b as f64).abs())
                                .sum();
                            let scalar = f.vec_dot_scalar()(COLS, w.row(r), acts.row(t)) as f64;
                            assert!(
                                (got - scalar).abs() <= 1e-5 * scale + 1e-6,
                                "{what} ({t},{r}): {got} vs scalar {scalar}"
                            );
                            // The f16 `s` of Q8_1 blocks rounds the activation sums the
                            // minimum of Q4_1/Q5_1 blocks multiplies.
                            assert!(
                                (got - naive).abs() <= 2e-3 * scale + 1e-5,
                                "{what} ({t},{r}): {got} vs naive {naive}"
                            );
                        }
                    }
                    let mut out2 = vec![f32::NAN; n_tokens * rows];
                    matmul_f32(pool, &w, &x, n_tokens, &mut out2);
                    assert!(
                        out.iter()
                            .zip(&out2)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{what}: matmul_f32"
                    );
                }
            }
        }
    }
}

#[test]
fn large_product_splits_across_threads() {
    // Big enough for the parallel path with many chunks and a row block smaller than all rows.
    let mut rng = StdRng::seed_from_u64(3);
    let f = format(kernels::GgmlType::Q8_0).unwrap();
    let (rows, cols, n_tokens) = (1025, 4096, 5);
    let wq = quantize_rows(f, &random(&mut rng, rows * cols), cols);
    let w = QMatrix::new(f.ty(), rows, cols, &wq).unwrap();
    let x = random(&mut rng, n_tokens * cols);
    let mut single = vec![0f32; rows * n_tokens];
    let mut multi = vec![0f32; rows * n_tokens];
    matmul_f32(&ThreadPool::new(1), &w, &x, n_tokens, &mut single);
    let pool = ThreadPool::new(4);
    for _ in 0..3 {
        matmul_f32(&pool, &w, &x, n_tokens, &mut multi);
        assert!(single
            .iter()
            .zip(&multi)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}

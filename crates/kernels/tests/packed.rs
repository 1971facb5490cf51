//! The packed (8 interleaved rows) products against each format's scalar dot product.

use ggml_type::GgmlType;
use kernels::matmul::QuantizedActs;
use kernels::packed::{matmul_packed_with, Kernel, PackedMatrix};
use kernels::pool::ThreadPool;
use kernels::quant::format;
use rand::{rngs::StdRng, Rng, SeedableRng};

const TYPES: [GgmlType; 7] = kernels::packed::PACKED_TYPES;

/// Random blocks of `ty`: every value byte random (all bit patterns, -128 included), scales and
/// minimums random finite f16 of either sign.
fn random_rows(rng: &mut StdRng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let block = ty.block_bytes();
    let n_blocks = rows * cols / ty.block_size();
    let mut out = vec![0u8; n_blocks * block];
    for b in out.chunks_exact_mut(block) {
        rng.fill(b);
        // Byte offsets of the f16 scales (and minimums) of each format.
        let scales: &[usize] = match ty {
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K => &[0, 2],
            GgmlType::Q6_K => &[208],
            _ => &[0],
        };
        for &at in scales {
            let v = half::f16::from_f32(rng.gen_range(-0.05f32..0.05));
            b[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    out
}

fn reference(ty: GgmlType, w: &[u8], rows: usize, cols: usize, x: &QuantizedActs) -> Vec<f32> {
    let f = format(ty).unwrap();
    let dot = f.vec_dot_scalar();
    let rb = cols / ty.block_size() * ty.block_bytes();
    let mut out = vec![0f32; rows * x.n_tokens()];
    for t in 0..x.n_tokens() {
        for r in 0..rows {
            out[t * rows + r] = dot(cols, &w[r * rb..(r + 1) * rb], x.row(t));
        }
    }
    out
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-4 * (1.0 + b.abs())
}

#[test]
fn packed_products_match_the_scalar_dot_products() {
    let mut rng = StdRng::seed_from_u64(7);
    let pools = [ThreadPool::new(1), ThreadPool::new(3)];
    for ty in TYPES {
        let act_ty = format(ty).unwrap().act_type();
        let shapes: &[(usize, usize)] = if ty.block_size() == 256 {
            &[(8, 256), (24, 512), (16, 1024)]
        } else {
            &[(8, 32), (24, 96), (64, 256), (16, 1024)]
        };
        for &(rows, cols) in shapes {
            let w = random_rows(&mut rng, ty, rows, cols);
            let packed = PackedMatrix::from_rows(ty, rows, cols, &w).unwrap();
            for n_tokens in [1, 2, 3, 4, 5, 9] {
                let xf: Vec<f32> = (0..n_tokens * cols)
                    .map(|_| rng.gen_range(-2.0f32..2.0))
                    .collect();
                let mut x = QuantizedActs::new();
                x.quantize(act_ty, &xf, n_tokens, cols);
                let want = reference(ty, &w, rows, cols, &x);
                for kernel in Kernel::available() {
                    for pool in &pools {
                        let mut got = vec![f32::NAN; rows * n_tokens];
                        matmul_packed_with(kernel, pool, &packed, &x, &mut got);
                        for (i, (&g, &e)) in got.iter().zip(&want).enumerate() {
                            assert!(
                                close(g, e),
                                "{ty} {kernel:?} {rows}x{cols}, {n_tokens} tokens, \
                                 {} threads: [{i}] {g} vs {e}",
                                pool.n_threads()
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn kernels_agree_exactly_whatever_the_thread_count() {
    let mut rng = StdRng::seed_from_u64(11);
    let (rows, cols, n_tokens) = (256, 512, 7);
    for ty in TYPES {
        let w = random_rows(&mut rng, ty, rows, cols);
        let packed = PackedMatrix::from_rows(ty, rows, cols, &w).unwrap();
        let xf: Vec<f32> = (0..n_tokens * cols).map(|_| rng.gen()).collect();
        let mut x = QuantizedActs::new();
        x.quantize(format(ty).unwrap().act_type(), &xf, n_tokens, cols);
        for kernel in Kernel::available() {
            let mut one = vec![0f32; rows * n_tokens];
            let mut two = vec![0f32; rows * n_tokens];
            matmul_packed_with(kernel, &ThreadPool::new(1), &packed, &x, &mut one);
            matmul_packed_with(kernel, &ThreadPool::new(2), &packed, &x, &mut two);
            assert_eq!(one, two, "{ty} {kernel:?}");
        }
    }
}

#[test]
fn packing_in_pieces_equals_packing_at_once() {
    let mut rng = StdRng::seed_from_u64(3);
    let (ty, rows, cols) = (GgmlType::Q5_1, 32, 64);
    let w = random_rows(&mut rng, ty, rows, cols);
    let whole = PackedMatrix::from_rows(ty, rows, cols, &w).unwrap();
    let mut pieces = PackedMatrix::new(ty, rows, cols).unwrap();
    let rb = pieces.src_row_bytes();
    pieces.pack_rows(16, &w[16 * rb..]);
    pieces.pack_rows(0, &w[..16 * rb]);
    let xf: Vec<f32> = (0..cols).map(|i| i as f32 / 10.0).collect();
    let mut x = QuantizedActs::new();
    x.quantize(GgmlType::Q8_1, &xf, 1, cols);
    let (mut a, mut b) = (vec![0f32; rows], vec![0f32; rows]);
    let pool = ThreadPool::new(1);
    matmul_packed_with(Kernel::Scalar, &pool, &whole, &x, &mut a);
    matmul_packed_with(Kernel::Scalar, &pool, &pieces, &x, &mut b);
    assert_eq!(a, b);
}

#[test]
fn several_products_in_one_dispatch_equal_one_at_a_time() {
    let mut rng = StdRng::seed_from_u64(5);
    let cols = 512;
    let shapes = [
        (GgmlType::Q4_K, 64),
        (GgmlType::Q6_K, 16),
        (GgmlType::Q4_K, 128),
    ];
    let mats: Vec<PackedMatrix> = shapes
        .iter()
        .map(|&(ty, rows)| {
            PackedMatrix::from_rows(ty, rows, cols, &random_rows(&mut rng, ty, rows, cols)).unwrap()
        })
        .collect();
    let pool = ThreadPool::new(2);
    for n_tokens in [1, 6] {
        let xf: Vec<f32> = (0..n_tokens * cols)
            .map(|_| rng.gen_range(-1.0f32..1.0))
            .collect();
        let mut x = QuantizedActs::new();
        x.quantize(GgmlType::Q8_K, &xf, n_tokens, cols);
        let mut together: Vec<Vec<f32>> = mats
            .iter()
            .map(|m| vec![0.0; m.rows() * n_tokens])
            .collect();
        let refs: Vec<&PackedMatrix> = mats.iter().collect();
        let mut outs: Vec<&mut [f32]> = together.iter_mut().map(|v| v.as_mut_slice()).collect();
        kernels::packed::matmul_packed_many(&pool, &refs, &x, &mut outs);
        for (m, got) in mats.iter().zip(&together) {
            let mut alone = vec![0.0; m.rows() * n_tokens];
            kernels::packed::matmul_packed(&pool, m, &x, &mut alone);
            assert_eq!(&alone, got, "{} tokens", n_tokens);
        }
    }
}

#[test]
fn packing_on_threads_equals_packing_at_once_and_reports_read_errors() {
    let mut rng = StdRng::seed_from_u64(9);
    for (ty, rows, cols) in [
        (GgmlType::Q4_K, 72, 512),
        (GgmlType::Q5_0, 40, 96),
        (GgmlType::Q6_K, 8, 256),
    ] {
        let w = random_rows(&mut rng, ty, rows, cols);
        let whole = PackedMatrix::from_rows(ty, rows, cols, &w).unwrap();
        for threads in [1, 2, 3, 16] {
            let mut p = PackedMatrix::new(ty, rows, cols).unwrap();
            let rb = p.src_row_bytes();
            PackedMatrix::pack_many(
                std::slice::from_mut(&mut p),
                threads,
                |_, first, buf: &mut [u8]| {
                    buf.copy_from_slice(&w[first * rb..first * rb + buf.len()]);
                    Ok::<(), String>(())
                },
            )
            .unwrap();
            let xf: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
            let mut x = QuantizedActs::new();
            x.quantize(format(ty).unwrap().act_type(), &xf, 1, cols);
            let pool = ThreadPool::new(1);
            let (mut a, mut b) = (vec![0f32; rows], vec![0f32; rows]);
            matmul_packed_with(Kernel::Scalar, &pool, &whole, &x, &mut a);
            matmul_packed_with(Kernel::Scalar, &pool, &p, &x, &mut b);
            assert_eq!(a, b, "{ty} on {threads} threads");
        }
        let mut p = PackedMatrix::new(ty, rows, cols).unwrap();
        let rb = p.src_row_bytes();
        // The slice that reaches the last row fails.
        let err = PackedMatrix::pack_many(
            std::slice::from_mut(&mut p),
            2,
            |_, first, buf: &mut [u8]| {
                if first + buf.len() / rb >= rows {
                    Err(format!("short read at row {first}"))
                } else {
                    Ok(())
                }
            },
        );
        assert!(err.is_err_and(|e| e.starts_with("short read")), "{ty}");
    }
}

#[test]
fn packing_many_matrices_at_once_equals_packing_each() {
    let mut rng = StdRng::seed_from_u64(10);
    // Row counts above, at and below the step, so that steps split matrices unevenly.
    let shapes = [
        (GgmlType::Q4_1, 520, 64),
        (GgmlType::Q8_0, 8, 32),
        (GgmlType::Q4_K, 256, 256),
        (GgmlType::Q6_K, 264, 256),
    ];
    let sources: Vec<Vec<u8>> = shapes
        .iter()
        .map(|&(ty, rows, cols)| random_rows(&mut rng, ty, rows, cols))
        .collect();
    for threads in [1, 2, 3, 7] {
        let mut mats: Vec<PackedMatrix> = shapes
            .iter()
            .map(|&(ty, rows, cols)| PackedMatrix::new(ty, rows, cols).unwrap())
            .collect();
        let row_bytes: Vec<usize> = mats.iter().map(|m| m.src_row_bytes()).collect();
        PackedMatrix::pack_many(&mut mats, threads, |m, first, buf: &mut [u8]| {
            let at = first * row_bytes[m];
            buf.copy_from_slice(&sources[m][at..at + buf.len()]);
            Ok::<(), String>(())
        })
        .unwrap();
        for (m, &(ty, rows, cols)) in shapes.iter().enumerate() {
            let whole = PackedMatrix::from_rows(ty, rows, cols, &sources[m]).unwrap();
            let xf: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).cos()).collect();
            let mut x = QuantizedActs::new();
            x.quantize(format(ty).unwrap().act_type(), &xf, 1, cols);
            let pool = ThreadPool::new(1);
            let (mut a, mut b) = (vec![0f32; rows], vec![0f32; rows]);
            matmul_packed_with(Kernel::Scalar, &pool, &whole, &x, &mut a);
            matmul_packed_with(Kernel::Scalar, &pool, &mats[m], &x, &mut b);
            assert_eq!(a, b, "{ty} {rows}x{cols} on {threads} threads");
        }
    }
    // A read error of one matrix is the result.
    let mut mats = vec![
        PackedMatrix::new(GgmlType::Q4_0, 512, 32).unwrap(),
        PackedMatrix::new(GgmlType::Q4_0, 16, 32).unwrap(),
    ];
    let err = PackedMatrix::pack_many(&mut mats, 2, |m, first, _buf: &mut [u8]| {
        if m == 1 {
            Err(format!("matrix {m} row {first} unreadable"))
        } else {
            Ok(())
        }
    });
    assert_eq!(err, Err("matrix 1 row 0 unreadable".to_string()));
}

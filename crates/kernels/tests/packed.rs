//! The packed (8 or 16 interleaved rows) products against each format's scalar dot product.

use ggml_type::GgmlType;
use kernels::matmul::QuantizedActs;
use kernels::packed::{matmul_packed_with, Kernel, PackedMatrix, GROUP, WIDE_GROUP};
use kernels::pool::ThreadPool;
use kernels::quant::format;
use rand::{rngs::StdRng, Rng, SeedableRng};

const TYPES: [GgmlType; kernels::packed::PACKED_TYPES.len()] = kernels::packed::PACKED_TYPES;

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
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
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
            &[(8, 256), (24, 512), (16, 1024), (48, 256)]
        } else {
            &[(8, 32), (24, 96), (64, 256), (16, 1024), (48, 96)]
        };
        for &(rows, cols) in shapes {
            let w = random_rows(&mut rng, ty, rows, cols);
            for group in [GROUP, WIDE_GROUP]
                .into_iter()
                .filter(|&g| rows.is_multiple_of(g))
            {
                let packed = PackedMatrix::from_rows_with_group(ty, rows, cols, group, &w).unwrap();
                for n_tokens in [1, 2, 3, 4, 5, 8, 9, 14] {
                    let xf: Vec<f32> = (0..n_tokens * cols)
                        .map(|_| rng.gen_range(-2.0f32..2.0))
                        .collect();
                    let mut x = QuantizedActs::new();
                    x.quantize(act_ty, &xf, n_tokens, cols);
                    let want = reference(ty, &w, rows, cols, &x);
                    let kernels = Kernel::available().into_iter().filter(|k| k.reads(group));
                    for kernel in kernels {
                        for pool in &pools {
                            let mut got = vec![f32::NAN; rows * n_tokens];
                            matmul_packed_with(kernel, pool, &packed, &x, &mut got);
                            for (i, (&g, &e)) in got.iter().zip(&want).enumerate() {
                                assert!(
                                    close(g, e),
                                    "{ty} {kernel:?} {group}-row {rows}x{cols}, {n_tokens} \
                                     tokens, {} threads: [{i}] {g} vs {e}",
                                    pool.n_threads()
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Every SIMD kernel, on either record size and any thread count, gives the same bits: they
/// sum the same integers and do the same float operations in the same order.
#[test]
fn kernels_agree_exactly_whatever_the_thread_count_and_record_size() {
    let mut rng = StdRng::seed_from_u64(11);
    let (rows, cols) = (256, 512);
    for ty in TYPES {
        let w = random_rows(&mut rng, ty, rows, cols);
        for n_tokens in [1, 7, 11] {
            let xf: Vec<f32> = (0..n_tokens * cols).map(|_| rng.gen()).collect();
            let mut x = QuantizedActs::new();
            x.quantize(format(ty).unwrap().act_type(), &xf, n_tokens, cols);
            let mut first_simd: Option<(Kernel, Vec<f32>)> = None;
            for group in [GROUP, WIDE_GROUP] {
                let packed = PackedMatrix::from_rows_with_group(ty, rows, cols, group, &w).unwrap();
                for kernel in Kernel::available().into_iter().filter(|k| k.reads(group)) {
                    let mut one = vec![0f32; rows * n_tokens];
                    let mut two = vec![0f32; rows * n_tokens];
                    matmul_packed_with(kernel, &ThreadPool::new(1), &packed, &x, &mut one);
                    matmul_packed_with(kernel, &ThreadPool::new(2), &packed, &x, &mut two);
                    assert_eq!(one, two, "{ty} {kernel:?} {group}-row, {n_tokens} tokens");
                    if kernel == Kernel::Scalar {
                        continue;
                    }
                    match &first_simd {
                        None => first_simd = Some((kernel, one)),
                        Some((k0, want)) => {
                            assert!(
                            want.iter().zip(&one).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{ty} {kernel:?} {group}-row differs from {k0:?}, {n_tokens} tokens"
                        )
                        }
                    }
                }
            }
        }
    }
}

/// The table formats (IQ4_NL, IQ4_XS): every kernel adds each block's exact integer sum with
/// one fused multiply-add, as their scalar reference does, so all of them equal it bit for bit.
/// Also at the extremes of the signed products: every index the lowest level (-127) or the
/// highest (113), activations all at ±127, where a pair of products nearly fills 16 bits.
#[test]
fn table_format_kernels_equal_the_scalar_reference_bit_for_bit() {
    let mut rng = StdRng::seed_from_u64(13);
    for ty in [GgmlType::IQ4_NL, GgmlType::IQ4_XS] {
        // Where a block's indices lie.
        let qs = if ty == GgmlType::IQ4_NL {
            2..18
        } else {
            8..136
        };
        for (rows, cols) in [(32, 512), (48, 256)] {
            for fill in [None, Some(0x00u8), Some(0xFF), Some(0x0F)] {
                let mut w = random_rows(&mut rng, ty, rows, cols);
                if let Some(f) = fill {
                    for b in w.chunks_exact_mut(ty.block_bytes()) {
                        b[qs.clone()].fill(f);
                    }
                }
                for n_tokens in [1, 5, 9] {
                    let xf: Vec<f32> = (0..n_tokens * cols)
                        .map(|i| match fill {
                            None => rng.gen_range(-2.0f32..2.0),
                            Some(_) if (i * 7) % 3 == 0 => 1.0,
                            Some(_) => -1.0,
                        })
                        .collect();
                    let mut x = QuantizedActs::new();
                    x.quantize(format(ty).unwrap().act_type(), &xf, n_tokens, cols);
                    let want = reference(ty, &w, rows, cols, &x);
                    for group in [GROUP, WIDE_GROUP]
                        .into_iter()
                        .filter(|&g| rows.is_multiple_of(g))
                    {
                        let p =
                            PackedMatrix::from_rows_with_group(ty, rows, cols, group, &w).unwrap();
                        let pool = ThreadPool::new(1);
                        let mut scalar = vec![f32::NAN; rows * n_tokens];
                        matmul_packed_with(Kernel::Scalar, &pool, &p, &x, &mut scalar);
                        for (i, (&g, &e)) in scalar.iter().zip(&want).enumerate() {
                            assert!(close(g, e), "{ty} {group}-row scalar: [{i}] {g} vs {e}");
                        }
                        for kernel in Kernel::available().into_iter().filter(|k| k.reads(group)) {
                            let mut got = vec![f32::NAN; rows * n_tokens];
                            matmul_packed_with(kernel, &pool, &p, &x, &mut got);
                            for (i, (&g, &e)) in got.iter().zip(&scalar).enumerate() {
                                assert_eq!(
                                    g.to_bits(),
                                    e.to_bits(),
                                    "{ty} {kernel:?} {group}-row {rows}x{cols} fill {fill:?}, \
                                     {n_tokens} tokens: [{i}] {g} vs {e}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn the_scalar_reference_reads_both_record_sizes_alike() {
    let mut rng = StdRng::seed_from_u64(12);
    let (rows, cols, n_tokens) = (32, 512, 3);
    for ty in TYPES {
        let w = random_rows(&mut rng, ty, rows, cols);
        let xf: Vec<f32> = (0..n_tokens * cols).map(|_| rng.gen()).collect();
        let mut x = QuantizedActs::new();
        x.quantize(format(ty).unwrap().act_type(), &xf, n_tokens, cols);
        let outs: Vec<Vec<f32>> = [GROUP, WIDE_GROUP]
            .into_iter()
            .map(|group| {
                let p = PackedMatrix::from_rows_with_group(ty, rows, cols, group, &w).unwrap();
                assert_eq!(p.group(), group);
                let mut out = vec![0f32; rows * n_tokens];
                matmul_packed_with(Kernel::Scalar, &ThreadPool::new(1), &p, &x, &mut out);
                out
            })
            .collect();
        assert_eq!(outs[0], outs[1], "{ty}");
    }
}

#[test]
#[cfg(target_arch = "x86_64")]
#[should_panic(expected = "the avx2 kernel on 16-row records")]
fn an_8_row_kernel_refuses_16_row_records() {
    assert!(
        Kernel::Avx2.runs_on(kernels::simd::detected()),
        "this test needs an x86-64 CPU with AVX2"
    );
    let w = PackedMatrix::with_group(GgmlType::Q4_0, 16, 32, WIDE_GROUP).unwrap();
    let mut x = QuantizedActs::new();
    x.quantize(GgmlType::Q8_0, &[0.5; 32], 1, 32);
    matmul_packed_with(Kernel::Avx2, &ThreadPool::new(1), &w, &x, &mut [0.0; 16]);
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
        (GgmlType::Q5_K, 32),
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
    for (ty, rows, cols, group) in [
        (GgmlType::Q4_K, 72, 512, GROUP),
        (GgmlType::Q4_K, 80, 512, WIDE_GROUP),
        (GgmlType::Q5_0, 40, 96, GROUP),
        (GgmlType::Q5_0, 528, 96, WIDE_GROUP),
        (GgmlType::Q6_K, 8, 256, GROUP),
        (GgmlType::Q6_K, 16, 256, WIDE_GROUP),
        (GgmlType::Q5_K, 72, 512, GROUP),
        (GgmlType::Q5_K, 80, 512, WIDE_GROUP),
    ] {
        let w = random_rows(&mut rng, ty, rows, cols);
        let whole = PackedMatrix::from_rows_with_group(ty, rows, cols, group, &w).unwrap();
        for threads in [1, 2, 3, 16] {
            let mut p = PackedMatrix::with_group(ty, rows, cols, group).unwrap();
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
        let mut p = PackedMatrix::with_group(ty, rows, cols, group).unwrap();
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
        (GgmlType::Q5_K, 272, 256),
    ];
    let sources: Vec<Vec<u8>> = shapes
        .iter()
        .map(|&(ty, rows, cols)| random_rows(&mut rng, ty, rows, cols))
        .collect();
    // Both record sizes; with 16-row records, the matrices whose rows do not divide into 16
    // keep 8-row ones, so one pass packs both sizes.
    let group_of = |rows: usize, wide: bool| {
        if wide && rows.is_multiple_of(WIDE_GROUP) {
            WIDE_GROUP
        } else {
            GROUP
        }
    };
    for (threads, wide) in [(1, false), (2, false), (3, true), (7, true), (2, true)] {
        let mut mats: Vec<PackedMatrix> = shapes
            .iter()
            .map(|&(ty, rows, cols)| {
                PackedMatrix::with_group(ty, rows, cols, group_of(rows, wide)).unwrap()
            })
            .collect();
        let row_bytes: Vec<usize> = mats.iter().map(|m| m.src_row_bytes()).collect();
        PackedMatrix::pack_many(&mut mats, threads, |m, first, buf: &mut [u8]| {
            let at = first * row_bytes[m];
            buf.copy_from_slice(&sources[m][at..at + buf.len()]);
            Ok::<(), String>(())
        })
        .unwrap();
        for (m, &(ty, rows, cols)) in shapes.iter().enumerate() {
            let group = group_of(rows, wide);
            let whole =
                PackedMatrix::from_rows_with_group(ty, rows, cols, group, &sources[m]).unwrap();
            let xf: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).cos()).collect();
            let mut x = QuantizedActs::new();
            x.quantize(format(ty).unwrap().act_type(), &xf, 1, cols);
            let pool = ThreadPool::new(1);
            let (mut a, mut b) = (vec![0f32; rows], vec![0f32; rows]);
            matmul_packed_with(Kernel::Scalar, &pool, &whole, &x, &mut a);
            matmul_packed_with(Kernel::Scalar, &pool, &mats[m], &x, &mut b);
            assert_eq!(a, b, "{ty} {rows}x{cols} {group}-row on {threads} threads");
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

//! The packed (8 or 16 interleaved rows) products against each format's scalar dot product.

use ggml_type::GgmlType;
use kernels::matmul::QuantizedActs;
use kernels::packed::{matmul_packed_with, Kernel, PackedMatrix, GROUP, WIDE_GROUP};
use kernels::pool::ThreadPool;
use kernels::quant::format;
use rand::{rngs::StdRng, Rng, SeedableRng};

const TYPES: [GgmlType; kernels::packed::PACKED_TYPES.len()] = kernels::packed::PACKED_TYPES;

/// Random blocks of `ty`: every value byte random (all bit patterns, -128 included), scales and
/// minimums random finite f16 of either sign; MXFP4's exponents give scales of 2^-12..2^-1
/// (sums of the size the f16 scales give the other formats), and one block in 16 the
/// subnormal scales of exponents 0 and 1.
fn random_rows(rng: &mut StdRng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let block = ty.block_bytes();
    let n_blocks = rows * cols / ty.block_size();
    let mut out = vec![0u8; n_blocks * block];
    for b in out.chunks_exact_mut(block) {
        rng.fill(b);
        if ty == GgmlType::MXFP4 {
            b[0] = if rng.gen_range(0..16) == 0 {
                rng.gen_range(0..=1)
            } else {
                rng.gen_range(116..=127)
            };
            continue;
        }
        // Byte offsets of the f16 scales (and minimums) of each format.
        let scales: &[usize] = match ty {
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
            GgmlType::Q6_K => &[208],
            GgmlType::Q3_K => &[108],
            GgmlType::Q2_K => &[80, 82],
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

/// The table formats (IQ4_NL, IQ4_XS, MXFP4): every kernel adds each block's exact integer
/// sum with one fused multiply-add, as their scalar reference does, so all of them equal it bit
/// for bit. Also at the extremes of the signed products: every index the lowest level (-127,
/// MXFP4: -12) or the highest (113; MXFP4: 12), activations all at ±127, where for IQ4 a pair
/// of products nearly fills 16 bits.
#[test]
fn table_format_kernels_equal_the_scalar_reference_bit_for_bit() {
    let mut rng = StdRng::seed_from_u64(13);
    for ty in [GgmlType::IQ4_NL, GgmlType::IQ4_XS, GgmlType::MXFP4] {
        // Where a block's indices lie.
        let qs = match ty {
            GgmlType::IQ4_NL => 2..18,
            GgmlType::MXFP4 => 1..17,
            _ => 8..136,
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

/// Every packed kernel's output for MXFP4 weights `w` against `x`, as bits, with the scalar
/// reference's first; each kernel on the record size it reads.
fn mxfp4_outputs(w: &[u8], rows: usize, cols: usize, x: &QuantizedActs) -> Vec<(String, Vec<f32>)> {
    let pool = ThreadPool::new(1);
    let mut outs = Vec::new();
    for group in [GROUP, WIDE_GROUP] {
        let p = PackedMatrix::from_rows_with_group(GgmlType::MXFP4, rows, cols, group, w).unwrap();
        for kernel in Kernel::available().into_iter().filter(|k| k.reads(group)) {
            let mut out = vec![f32::NAN; rows * x.n_tokens()];
            matmul_packed_with(kernel, &pool, &p, x, &mut out);
            outs.push((format!("{kernel:?} {group}-row"), out));
        }
    }
    outs
}

/// The same float, or both NaN (a NaN's payload is not part of the result: x86 makes the same
/// default NaN in every unit, but that is the CPU's business, not the kernels').
fn same_bits(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// MXFP4's E8M0 exponents at and near both ends: 0 and 1 give the subnormal scales 2^-128 and
/// 2^-127, 254 gives 2^126 and 255 (E8M0's NaN) 2^127, as the unpacked dot product reads them.
/// Packed, the scales are exact f32, so every kernel equals the scalar reference bit for bit,
/// and the scalar reference equals the unpacked dot product within rounding. Activations
/// small enough that even 2^127 blocks stay finite, then ordinary ones, where those overflow
/// to infinities (and NaN where two of opposite signs meet) on every path alike.
#[test]
fn mxfp4_extreme_exponents_bit_for_bit() {
    const EXPONENTS: [u8; 12] = [0, 1, 2, 3, 126, 127, 128, 129, 130, 253, 254, 255];
    let mut rng = StdRng::seed_from_u64(17);
    let (rows, cols) = (32, 1024);
    let n_blocks = rows * cols / 32;
    // Rows whose blocks are all one exponent (every exponent, twice), then rows of mixed ones.
    let mut w = random_rows(&mut rng, GgmlType::MXFP4, rows, cols);
    for (i, b) in w.chunks_exact_mut(17).enumerate() {
        let row = i / (cols / 32);
        b[0] = if row < 2 * EXPONENTS.len() {
            EXPONENTS[row % EXPONENTS.len()]
        } else {
            EXPONENTS[rng.gen_range(0..EXPONENTS.len())]
        };
    }
    assert_eq!(w.len(), n_blocks * 17);
    // 7e-6: the activations' f16 scale is its smallest subnormal, 2^-24, so that a 2^127 block
    // times it is at most 2^103 * 12 * 127 * 32 and a row of 32 of them stays below 2^124.
    for (magnitude, finite) in [(7e-6f32, true), (1e-3, false), (2.0, false)] {
        for n_tokens in [1, 3, 8, 9] {
            let xf: Vec<f32> = (0..n_tokens * cols)
                .map(|_| rng.gen_range(-magnitude..magnitude))
                .collect();
            let mut x = QuantizedActs::new();
            x.quantize(GgmlType::Q8_0, &xf, n_tokens, cols);
            let want = reference(GgmlType::MXFP4, &w, rows, cols, &x);
            let outs = mxfp4_outputs(&w, rows, cols, &x);
            let (first, scalar) = &outs[0];
            assert!(first.starts_with("Scalar"), "{first}");
            for (i, (&g, &e)) in scalar.iter().zip(&want).enumerate() {
                if finite {
                    assert!(
                        g.is_finite(),
                        "x ~ {magnitude}, {n_tokens} tokens: [{i}] {g}"
                    );
                }
                let agree = if e.is_finite() {
                    close(g, e)
                } else {
                    // Overflow: the packed sum overflows where the unpacked one does, or it
                    // is within rounding of the largest finite float.
                    g.is_nan() && e.is_nan() || g == e || g.abs() >= f32::MAX / 2.0
                };
                assert!(
                    agree,
                    "x ~ {magnitude}, {n_tokens} tokens: [{i}] {g} vs {e}"
                );
            }
            for (name, got) in &outs[1..] {
                for (i, (&g, &e)) in got.iter().zip(scalar).enumerate() {
                    assert!(
                        same_bits(g, e),
                        "{name}, x ~ {magnitude}, {n_tokens} tokens: [{i}] {g} vs scalar {e}"
                    );
                }
            }
            if finite {
                // The rows of exponent 255 (row 11) are huge and finite, not zeros of an
                // activation scale that underflowed.
                for t in 0..n_tokens {
                    let v = scalar[t * rows + 11];
                    assert!(v.is_finite() && v.abs() > 1e30, "e=255 row, token {t}: {v}");
                }
                continue;
            }
            // The rows of exponents 0 and 1 are subnormal products, not zero.
            for t in 0..n_tokens {
                for r in [0, 1] {
                    assert!(scalar[t * rows + r] != 0.0 || want[t * rows + r] == 0.0);
                }
            }
        }
    }
}

/// Shapes a packed MXFP4 matrix cannot take are refused with an error that says why (never a
/// panic): rows not a whole number of records, columns not a whole number of blocks, a
/// source of the wrong length, a record size that does not exist.
#[test]
fn mxfp4_bad_shapes_are_refused_with_clear_errors() {
    use kernels::packed::PackError;
    let ty = GgmlType::MXFP4;
    let err = |r: Result<PackedMatrix, PackError>| r.unwrap_err();
    let e = err(PackedMatrix::try_with_group(ty, 12, 64, GROUP));
    assert_eq!(
        e,
        PackError::Rows {
            ty,
            rows: 12,
            group: 8
        }
    );
    assert_eq!(
        e.to_string(),
        "a packed MXFP4 matrix needs a positive multiple of 8 rows, not 12"
    );
    let e = err(PackedMatrix::try_with_group(ty, 24, 64, WIDE_GROUP));
    assert_eq!(
        e,
        PackError::Rows {
            ty,
            rows: 24,
            group: 16
        }
    );
    let e = err(PackedMatrix::try_with_group(ty, 0, 64, GROUP));
    assert_eq!(
        e,
        PackError::Rows {
            ty,
            rows: 0,
            group: 8
        }
    );
    let e = err(PackedMatrix::try_with_group(ty, 16, 48, GROUP));
    assert_eq!(
        e,
        PackError::Cols {
            ty,
            cols: 48,
            block: 32
        }
    );
    assert_eq!(
        e.to_string(),
        "a packed MXFP4 matrix needs a positive multiple of 32 columns (its block), not 48"
    );
    let e = err(PackedMatrix::try_with_group(ty, 16, 0, GROUP));
    assert_eq!(
        e,
        PackError::Cols {
            ty,
            cols: 0,
            block: 32
        }
    );
    let e = err(PackedMatrix::try_with_group(ty, 16, 64, 4));
    assert_eq!(e, PackError::Group(4));
    let e = err(PackedMatrix::try_with_group(
        ty,
        usize::MAX - 15,
        1 << 20,
        WIDE_GROUP,
    ));
    assert!(matches!(e, PackError::TooLarge { .. }), "{e}");
    // 8 rows of 64 columns are 8 * 2 * 17 bytes.
    let e = err(PackedMatrix::try_from_rows_with_group(
        ty, 8, 64, GROUP, &[0; 271],
    ));
    assert_eq!(
        e.to_string(),
        "8 rows of MXFP4 with 64 columns are 272 bytes, not 271"
    );
    let e = err(PackedMatrix::try_from_rows_with_group(
        ty, 8, 40, GROUP, &[0; 272],
    ));
    assert!(matches!(e, PackError::Cols { .. }), "{e}");
    assert!(PackedMatrix::try_from_rows_with_group(ty, 8, 64, GROUP, &[0; 272]).is_ok());
    // The Option forms refuse the same shapes, and `supported` says no before any packing.
    assert!(PackedMatrix::new(ty, 12, 64).is_none());
    assert!(PackedMatrix::new(ty, 16, 48).is_none());
    assert!(!PackedMatrix::supported(ty, 12, 64));
    assert!(!PackedMatrix::supported(ty, 16, 33));
    let e = err(PackedMatrix::try_with_group(GgmlType::F16, 16, 256, GROUP));
    assert_eq!(e.to_string(), "F16 has no packed layout");
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

#[test]
fn matrices_sharing_one_allocation_equal_matrices_alone() {
    let mut rng = StdRng::seed_from_u64(12);
    // Packable shapes around ones that are not (F16; Q4_K with 128 columns; 12 rows), whose
    // slots stay empty; one large enough for a huge-page region.
    let shapes = [
        (GgmlType::Q4_K, 2048, 1024),
        (GgmlType::F16, 16, 256),
        (GgmlType::Q6_K, 48, 256),
        (GgmlType::Q4_K, 16, 128),
        (GgmlType::Q8_0, 24, 64),
        (GgmlType::Q4_1, 12, 64),
        (GgmlType::Q5_K, 32, 512),
    ];
    let all = PackedMatrix::new_many(&shapes).unwrap();
    assert_eq!(all.len(), shapes.len());
    let empty: Vec<usize> = (0..shapes.len()).filter(|&i| all[i].is_none()).collect();
    assert_eq!(empty, [1, 3, 5]);
    let (slots, mut mats): (Vec<usize>, Vec<PackedMatrix>) = all
        .into_iter()
        .enumerate()
        .filter_map(|(i, m)| Some((i, m?)))
        .unzip();
    let sources: Vec<Vec<u8>> = slots
        .iter()
        .map(|&i| random_rows(&mut rng, shapes[i].0, shapes[i].1, shapes[i].2))
        .collect();
    let row_bytes: Vec<usize> = mats.iter().map(|m| m.src_row_bytes()).collect();
    PackedMatrix::pack_many(&mut mats, 2, |m, first, buf: &mut [u8]| {
        let at = first * row_bytes[m];
        buf.copy_from_slice(&sources[m][at..at + buf.len()]);
        Ok::<(), String>(())
    })
    .unwrap();
    let pool = ThreadPool::new(2);
    for ((&i, mat), src) in slots.iter().zip(&mats).zip(&sources) {
        let (ty, rows, cols) = shapes[i];
        let alone = PackedMatrix::from_rows(ty, rows, cols, src).unwrap();
        assert_eq!(alone.group(), mat.group(), "{ty} {rows}x{cols}");
        for n_tokens in [1, 5] {
            let xf: Vec<f32> = (0..n_tokens * cols)
                .map(|i| (i as f32 * 0.29).sin())
                .collect();
            let mut x = QuantizedActs::new();
            x.quantize(format(ty).unwrap().act_type(), &xf, n_tokens, cols);
            let (mut a, mut b) = (vec![0f32; rows * n_tokens], vec![0f32; rows * n_tokens]);
            kernels::packed::matmul_packed(&pool, &alone, &x, &mut a);
            kernels::packed::matmul_packed(&pool, mat, &x, &mut b);
            assert_eq!(a, b, "{ty} {rows}x{cols}, {n_tokens} tokens");
        }
    }
}

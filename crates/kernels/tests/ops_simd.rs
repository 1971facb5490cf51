//! Vectorized element-wise ops against their scalar references.

use kernels::ops;
use rand::{rngs::StdRng, Rng, SeedableRng};

fn close(a: f32, b: f32, rel: f32) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-30) || (a.is_nan() && b.is_nan()) || a == b
}

#[test]
fn exp_matches_libm_over_the_whole_range() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut xs: Vec<f32> = (0..4000).map(|_| rng.gen_range(-87.0f32..88.0)).collect();
    xs.extend([0.0, -0.0, 1.0, -1.0, 88.7, -87.0, 1e-8, -1e-8, 0.5, -0.5]);
    for shift in [0.0f32, 3.5, -2.0] {
        let mut got: Vec<f32> = xs.iter().map(|x| x + shift).collect();
        let mut want = got.clone();
        let sg = ops::exp_shifted_inplace(&mut got, shift);
        let sw = ops::exp_shifted_scalar(&mut want, shift);
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            assert!(close(g, w, 3e-7), "exp({}) = {g}, libm {w}", xs[i]);
        }
        assert!(close(sg, sw, 1e-5), "sums {sg} vs {sw}");
    }
    // The edges: far below the normal range is 0, above it +inf, NaN stays NaN.
    let mut edge = vec![
        -1000.0f32,
        -100.0,
        100.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        0.0,
        f32::NAN,
    ];
    ops::exp_shifted_inplace(&mut edge, 0.0);
    // e^-100 is a subnormal for libm (the scalar path) and 0 for the vector one.
    assert!(edge[1] < 1e-37, "e^-100 = {}", edge[1]);
    edge[1] = 0.0;
    assert_eq!(
        &edge[..7],
        &[0.0, 0.0, f32::INFINITY, f32::INFINITY, 0.0, 1.0, 1.0]
    );
    assert!(edge[7].is_nan());
}

#[test]
fn geglu_matches_the_scalar_gelu() {
    let mut rng = StdRng::seed_from_u64(2);
    for n in [1usize, 7, 8, 9, 64, 1000] {
        let gate: Vec<f32> = (0..n).map(|_| rng.gen_range(-12.0f32..12.0)).collect();
        let up: Vec<f32> = (0..n).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
        let (mut a, mut b) = (gate.clone(), gate.clone());
        ops::geglu_inplace(&mut a, &up);
        ops::geglu_scalar(&mut b, &up);
        for i in 0..n {
            let tol = 2e-6 * (gate[i] * up[i]).abs() + 1e-7;
            assert!(
                (a[i] - b[i]).abs() <= tol,
                "gelu({}) * {}: {} vs {}",
                gate[i],
                up[i],
                a[i],
                b[i]
            );
        }
    }
}

#[test]
fn weighted_sum_of_f16_rows_matches_the_scalar_loop() {
    let mut rng = StdRng::seed_from_u64(3);
    for (width, n_rows, stride_extra) in [
        (64, 5, 0),
        (256, 3, 32),
        (72, 9, 8),
        (5, 4, 2),
        (128, 1, 0),
        (77, 3, 6),
    ] {
        let stride = 2 * width + stride_extra;
        let rows: Vec<u8> = (0..n_rows * stride)
            .flat_map(|_| half::f16::from_f32(rng.gen_range(-1.0f32..1.0)).to_le_bytes())
            .take(n_rows * stride)
            .collect();
        let w: Vec<f32> = (0..n_rows).map(|_| rng.gen()).collect();
        let init: Vec<f32> = (0..width).map(|i| i as f32 * 0.01).collect();
        let (mut a, mut b) = (init.clone(), init);
        ops::f16::weighted_sum(&mut a, &w, &rows, stride);
        ops::f16::weighted_sum_scalar(&mut b, &w, &rows, stride);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "{width}x{n_rows}: {x} vs {y}");
        }
    }
}

#[test]
#[should_panic(expected = "f16 rows for a weighted sum")]
fn weighted_sum_refuses_short_rows() {
    let mut acc = vec![0f32; 8];
    ops::f16::weighted_sum(&mut acc, &[1.0, 1.0], &[0u8; 20], 16);
}

#[test]
fn swiglu_matches_the_scalar_silu() {
    let mut rng = StdRng::seed_from_u64(3);
    for n in [1usize, 7, 8, 9, 64, 1000] {
        let mut gate: Vec<f32> = (0..n).map(|_| rng.gen_range(-30.0f32..30.0)).collect();
        if n > 8 {
            gate[..4].copy_from_slice(&[-200.0, 200.0, 0.0, -88.0]);
        }
        let up: Vec<f32> = (0..n).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
        let (mut a, mut b) = (gate.clone(), gate.clone());
        ops::swiglu_inplace(&mut a, &up);
        ops::swiglu_scalar(&mut b, &up);
        for i in 0..n {
            assert!(
                close(a[i], b[i], 1e-6) || (a[i] - b[i]).abs() < 1e-30,
                "silu({}) * {}: {} vs {}",
                gate[i],
                up[i],
                a[i],
                b[i]
            );
        }
    }
}

//! The lane-wise attention kernels (`kernels::attn`) of every variant this CPU runs against
//! their scalar references, and a whole tile of attention against attention computed the
//! plain way.

use kernels::attn::{self, Right, Start, Variant, LANES};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn random(rng: &mut StdRng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(lo..hi)).collect()
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs() / (1.0 + w.abs());
        assert!(err <= tol, "{what}: [{i}] {g} against {w}");
    }
}

#[test]
fn lane_products_match_the_reference_for_every_shape() {
    let mut rng = StdRng::seed_from_u64(7);
    // Rows on both sides of the kernels' row steps (6, 8), lane counts of one to four
    // vectors of 16 (odd counts take the 512-bit kernel's one-vector path), strides of both
    // uses (keys: a row of `depth`; values: a column).
    for &(rows, nq, depth) in &[
        (1, 16, 1),
        (5, 16, 64),
        (6, 32, 64),
        (13, 48, 40),
        (64, 64, 64),
        (9, 64, 256),
    ] {
        for transposed in [false, true] {
            let (a_row, a_k) = if transposed { (1, rows) } else { (depth, 1) };
            let a = random(&mut rng, rows * depth, -1.0, 1.0);
            let b = random(&mut rng, depth * nq, -1.0, 1.0);
            let before = random(&mut rng, rows * nq, -1.0, 1.0);
            let scale = random(&mut rng, nq, 0.0, 1.0);
            let row_scale = random(&mut rng, rows, 0.0, 1.0);
            for start in [
                Start::Zero,
                Start::Scaled(&scale),
                Start::ScaledRows(&row_scale),
            ] {
                let mut want = before.clone();
                attn::lane_products_with(
                    Variant::Scalar,
                    &mut want,
                    rows,
                    nq,
                    &a,
                    a_row,
                    a_k,
                    Right::F32(&b),
                    depth,
                    start,
                );
                for v in Variant::available() {
                    let mut got = before.clone();
                    let b = Right::F32(&b);
                    attn::lane_products_with(
                        v, &mut got, rows, nq, &a, a_row, a_k, b, depth, start,
                    );
                    let what = format!("{} rows={rows} nq={nq} depth={depth}", v.name());
                    assert_close(&got, &want, 1e-5, &what);
                }
            }
        }
    }
}

/// An f16 right side read in place (rows of `ld >= nq` elements, as the KV cache's blocks lie)
/// gives bit for bit what its exact f32 copy gives, in every variant.
#[test]
fn f16_right_side_equals_its_f32_copy() {
    let mut rng = StdRng::seed_from_u64(11);
    for &(rows, nq, depth, ld) in &[
        (3, 64, 64, 64),
        (1, 16, 40, 64),
        (7, 48, 24, 50),
        (4, 32, 256, 32),
    ] {
        let a = random(&mut rng, rows * depth, -1.0, 1.0);
        let halves: Vec<half::f16> = (0..depth * ld)
            .map(|_| half::f16::from_f32(rng.gen_range(-1.0..1.0)))
            .collect();
        let bytes: Vec<u8> = halves.iter().flat_map(|h| h.to_le_bytes()).collect();
        let copy: Vec<f32> = (0..depth)
            .flat_map(|k| halves[k * ld..k * ld + nq].iter().map(|h| h.to_f32()))
            .collect();
        let before = random(&mut rng, rows * nq, -1.0, 1.0);
        let row_scale = random(&mut rng, rows, 0.0, 1.0);
        for start in [Start::Zero, Start::ScaledRows(&row_scale)] {
            for v in Variant::available() {
                let (mut want, mut got) = (before.clone(), before.clone());
                let b32 = Right::F32(&copy);
                attn::lane_products_with(v, &mut want, rows, nq, &a, depth, 1, b32, depth, start);
                let b16 = Right::F16 { bytes: &bytes, ld };
                attn::lane_products_with(v, &mut got, rows, nq, &a, depth, 1, b16, depth, start);
                let differs = got
                    .iter()
                    .zip(&want)
                    .position(|(g, w)| g.to_bits() != w.to_bits());
                assert_eq!(
                    differs,
                    None,
                    "{} rows={rows} nq={nq} depth={depth} ld={ld}",
                    v.name()
                );
            }
        }
    }
}

#[test]
fn lane_products_refuse_shapes_that_do_not_fit() {
    let a = vec![0f32; 64];
    let b = vec![0f32; 64];
    let mut out = vec![0f32; 64];
    let bad_lanes = std::panic::catch_unwind(|| {
        let mut out = vec![0f32; 64];
        attn::lane_products(&mut out, 1, 8, &a, 8, 1, Right::F32(&b), 8, Start::Zero)
    });
    assert!(bad_lanes.is_err(), "8 lanes accepted");
    let short = std::panic::catch_unwind(|| {
        let mut out = vec![0f32; 64];
        attn::lane_products(&mut out, 2, 16, &a, 64, 1, Right::F32(&b), 4, Start::Zero)
    });
    assert!(short.is_err(), "a left side too short accepted");
    // f16 rows of 16 lanes at a stride of 20 elements: 4 rows need 2 * (3 * 20 + 16) bytes.
    let bytes = vec![0u8; 2 * (3 * 20 + 16)];
    let fits = Right::F16 {
        bytes: &bytes,
        ld: 20,
    };
    attn::lane_products(&mut out, 1, 16, &a, 4, 1, fits, 4, Start::Zero);
    let short_f16 = std::panic::catch_unwind(|| {
        let mut out = vec![0f32; 64];
        let b = Right::F16 {
            bytes: &bytes[..bytes.len() - 1],
            ld: 20,
        };
        attn::lane_products(&mut out, 1, 16, &a, 4, 1, b, 4, Start::Zero)
    });
    assert!(short_f16.is_err(), "f16 rows too short accepted");
    let narrow = std::panic::catch_unwind(|| {
        let mut out = vec![0f32; 64];
        let b = Right::F16 {
            bytes: &bytes,
            ld: 8,
        };
        attn::lane_products(&mut out, 1, 16, &a, 4, 1, b, 4, Start::Zero)
    });
    assert!(narrow.is_err(), "f16 rows narrower than the lanes accepted");
}

#[test]
fn softmax_blocks_match_the_reference_with_masks_and_empty_lanes() {
    let mut rng = StdRng::seed_from_u64(8);
    // One 256-bit vector of lanes (a decoding token's few queries) or two of 512 bits.
    for (nq, n) in [
        (attn::SOFTMAX_LANES, 7),
        (2 * LANES, 1),
        (2 * LANES, 7),
        (2 * LANES, 64),
    ] {
        let mut s = random(&mut rng, n * nq, -30.0, 30.0);
        // Lane 0 masked entirely; lane 1 on every other key; lane 2 has a running max from
        // earlier blocks, larger than any score here; lane 3 starts with nothing seen.
        for j in 0..n {
            s[j * nq] = f32::NEG_INFINITY;
            if j % 2 == 1 {
                s[j * nq + 1] = f32::NEG_INFINITY;
            }
        }
        let mut max0 = random(&mut rng, nq, -5.0, 5.0);
        max0[0] = f32::NEG_INFINITY;
        max0[2] = 100.0;
        max0[3] = f32::NEG_INFINITY;
        let mut sum0 = random(&mut rng, nq, 0.5, 3.0);
        sum0[0] = 0.0;
        sum0[3] = 0.0;
        let run = |v: Variant| {
            let (mut s, mut max, mut sum) = (s.clone(), max0.clone(), sum0.clone());
            let mut corr = vec![f32::NAN; nq];
            attn::softmax_block_with(v, &mut s, n, nq, &mut max, &mut sum, &mut corr);
            (s, max, sum, corr)
        };
        let want = run(Variant::Scalar);
        assert_eq!(want.1[0], f32::NEG_INFINITY);
        assert_eq!((want.2[0], want.3[0]), (0.0, 1.0), "a lane with no key");
        assert!((0..n).all(|j| want.0[j * nq] == 0.0));
        assert_eq!(want.1[2], 100.0);
        assert_eq!(
            want.3[3], 0.0,
            "nothing seen before: earlier sums count for nothing"
        );
        for v in Variant::available() {
            let got = run(v);
            let what = format!("{} n={n}", v.name());
            assert_close(&got.0, &want.0, 1e-6, &format!("{what} weights"));
            assert_eq!(got.1, want.1, "{what} maxima");
            assert_close(&got.2, &want.2, 1e-6, &format!("{what} sums"));
            assert_close(&got.3, &want.3, 1e-6, &format!("{what} corrections"));
        }
    }
}

/// softmax(q·k) · v for each query, in f64 the plain way.
fn plain_attention(q: &[f32], k: &[f32], v: &[f32], nq: usize, n: usize, d: usize) -> Vec<f32> {
    let mut out = vec![0f32; nq * d];
    for i in 0..nq {
        let s: Vec<f64> = (0..n)
            .map(|j| (0..d).map(|c| (q[i * d + c] * k[j * d + c]) as f64).sum())
            .collect();
        let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
        let total: f64 = w.iter().sum();
        for c in 0..d {
            let x: f64 = (0..n).map(|j| w[j] * v[j * d + c] as f64).sum();
            out[i * d + c] = (x / total) as f32;
        }
    }
    out
}

#[test]
fn blocks_of_keys_compose_into_attention() {
    let mut rng = StdRng::seed_from_u64(9);
    let (nq, d, n, block) = (LANES, 32, 150, 64);
    let q = random(&mut rng, nq * d, -1.0, 1.0);
    let k = random(&mut rng, n * d, -1.0, 1.0);
    let v = random(&mut rng, n * d, -1.0, 1.0);
    let want = plain_attention(&q, &k, &v, nq, n, d);
    let mut qt = vec![0f32; d * nq];
    for i in 0..nq {
        for c in 0..d {
            qt[c * nq + i] = q[i * d + c];
        }
    }
    for variant in Variant::available() {
        let mut acc = vec![0f32; d * nq];
        let (mut max, mut sum, mut corr) =
            (vec![f32::NEG_INFINITY; nq], vec![0.0; nq], vec![0.0; nq]);
        let mut s = vec![0f32; block * nq];
        for p0 in (0..n).step_by(block) {
            let m = (n - p0).min(block);
            let keys = &k[p0 * d..(p0 + m) * d];
            let values = &v[p0 * d..(p0 + m) * d];
            let qt = Right::F32(&qt);
            attn::lane_products_with(variant, &mut s, m, nq, keys, d, 1, qt, d, Start::Zero);
            attn::softmax_block_with(variant, &mut s, m, nq, &mut max, &mut sum, &mut corr);
            let scaled = Start::Scaled(&corr);
            let w = Right::F32(&s);
            attn::lane_products_with(variant, &mut acc, d, nq, values, 1, d, w, m, scaled);
        }
        let mut got = vec![0f32; nq * d];
        for i in 0..nq {
            for c in 0..d {
                got[i * d + c] = acc[c * nq + i] / sum[i];
            }
        }
        assert_close(&got, &want, 1e-5, variant.name());
    }
}

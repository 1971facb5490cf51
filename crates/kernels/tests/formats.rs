//! Every format of `FORMATS`, checked the way ggml's tests/test-quantize-fns.cpp does (on its
//! synthetic data and thresholds), plus: SIMD variants against the scalar reference, and the
//! reference quantizers against bytes produced by the `gguf` python package (see
//! `data/gen_known_bytes.py`).

use kernels::quant::{format, QuantFormat, FORMATS};
use kernels::GgmlType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Row lengths: several blocks of every format (k-quants have 256-element blocks).
const LENGTHS: [usize; 3] = [256, 4096, 4352];
/// Extra lengths for one-element-block formats (SIMD tails).
const SHORT_LENGTHS: [usize; 7] = [1, 7, 8, 31, 33, 67, 1023];

// ggml's thresholds (tests/test-quantize-fns.cpp), for its test size of 4096 elements.
const GGML_TEST_SIZE: f64 = 4096.0;
const MAX_QUANTIZATION_TOTAL_ERROR: f64 = 0.002;
const MAX_QUANTIZATION_TOTAL_ERROR_2BITS: f64 = 0.0075;
const MAX_QUANTIZATION_TOTAL_ERROR_3BITS: f64 = 0.0040;
const MAX_DOT_PRODUCT_ERROR: f64 = 0.02;
const MAX_DOT_PRODUCT_ERROR_LOWBIT: f64 = 0.04;

/// SIMD variants against scalar: same math, different summation order.
const VARIANT_TOLERANCE: f64 = 1e-5;

/// ggml's synthetic data: `0.1 + amplitude * cos(i + offset)`.
fn ggml_data(offset: f32, n: usize, amplitude: f32) -> Vec<f32> {
    (0..n)
        .map(|i| (0.1 + (amplitude * (i as f32 + offset).cos()) as f64) as f32)
        .collect()
}

fn random_data(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let v: f32 = rng.gen_range(-1.0..1.0);
            // An occasional outlier, as real activations have.
            if i % 97 == 13 {
                v * 20.0
            } else {
                v
            }
        })
        .collect()
}

fn act_of(f: &dyn QuantFormat) -> &'static dyn QuantFormat {
    format(f.act_type())
        .unwrap_or_else(|| panic!("{}: act type {} not in FORMATS", f.ty(), f.act_type()))
}

fn row_bytes(ty: GgmlType, n: usize) -> usize {
    ty.bytes_for(n as u64)
        .unwrap_or_else(|| panic!("{ty}: {n} is not whole blocks")) as usize
}

fn quantize(f: &dyn QuantFormat, x: &[f32]) -> Vec<u8> {
    let mut q = vec![0u8; row_bytes(f.ty(), x.len())];
    f.quantize_row(x, &mut q);
    q
}

fn quantize_fast(f: &dyn QuantFormat, x: &[f32]) -> Vec<u8> {
    let mut q = vec![0u8; row_bytes(f.ty(), x.len())];
    f.quantize_row_fast(x, &mut q);
    q
}

fn dequantize(f: &dyn QuantFormat, q: &[u8], n: usize) -> Vec<f32> {
    let mut y = vec![f32::NAN; n];
    f.dequantize_row(q, &mut y);
    y
}

fn lengths(f: &dyn QuantFormat) -> Vec<usize> {
    let bs = f.ty().block_size();
    let mut v: Vec<usize> = LENGTHS.to_vec();
    if bs == 1 {
        v.extend(SHORT_LENGTHS);
    }
    v.retain(|n| n % bs == 0);
    v
}

#[test]
fn table_pairs_formats_as_ggml() {
    use GgmlType::*;
    let expected = [
        (F32, F32),
        (F16, F16),
        (BF16, BF16),
        (Q8_0, Q8_0),
        (Q8_1, Q8_1),
        (Q4_0, Q8_0),
        (Q4_1, Q8_1),
        (Q5_0, Q8_0),
        (Q5_1, Q8_1),
        (Q2_K, Q8_K),
        (Q3_K, Q8_K),
        (Q4_K, Q8_K),
        (Q5_K, Q8_K),
        (Q6_K, Q8_K),
        (IQ4_NL, Q8_0),
        (IQ4_XS, Q8_K),
        (MXFP4, Q8_0),
    ];
    for (ty, act) in expected {
        let f = format(ty).unwrap_or_else(|| panic!("{ty} missing from FORMATS"));
        assert_eq!(f.ty(), ty);
        assert_eq!(f.act_type(), act, "{ty}");
    }
    for f in FORMATS {
        let act = act_of(*f);
        assert_eq!(
            act.act_type(),
            act.ty(),
            "{}: an act type is its own act type",
            f.ty()
        );
        assert!(!f.vec_dot_variants().is_empty());
        assert_eq!(f.vec_dot_variants()[0].0, "scalar");
    }
}

/// Every SIMD variant this CPU can run is listed, so that the tests here exercise it.
#[test]
fn simd_variants_are_listed() {
    let cpu = kernels::simd::detected();
    for f in FORMATS {
        let names: Vec<&str> = f.vec_dot_variants().iter().map(|v| v.0).collect();
        let float = matches!(f.ty(), GgmlType::F32 | GgmlType::F16 | GgmlType::BF16);
        for (has, name) in [
            (cpu.avx2, "avx2"),
            (cpu.neon, "neon"),
            (cpu.dotprod && !float, "neon-dotprod"),
        ] {
            assert_eq!(
                names.contains(&name),
                has,
                "{}: {name} in {names:?}",
                f.ty()
            );
        }
        // Activation formats (their own act type, F32 aside) have SIMD quantizers.
        if f.act_type() == f.ty() && f.ty() != GgmlType::F32 {
            let names: Vec<&str> = f.quantize_variants().iter().map(|v| v.0).collect();
            for (has, name) in [(cpu.avx2, "avx2"), (cpu.neon, "neon")] {
                assert_eq!(names.contains(&name), has, "{} quantize: {names:?}", f.ty());
            }
        }
    }
}

#[test]
fn simd_variants_match_scalar() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for f in FORMATS {
        let act = act_of(*f);
        let variants = f.vec_dot_variants();
        let scalar = f.vec_dot_scalar();
        for n in lengths(*f) {
            for round in 0..3 {
                let (w, a) = if round == 0 {
                    (ggml_data(0.0, n, 2.0), ggml_data(1.0, n, 2.0))
                } else {
                    (random_data(&mut rng, n), random_data(&mut rng, n))
                };
                let wq = quantize(*f, &w);
                let aq = quantize(act, &a);
                let wd = dequantize(*f, &wq, n);
                let ad = dequantize(act, &aq, n);
                // The size of the terms: rounding differences scale with it, not with the sum.
                let scale: f64 = wd
                    .iter()
                    .zip(&ad)
                    .map(|(x, y)| (*x as f64 * *y as f64).abs())
                    .sum();
                let reference = scalar(n, &wq, &aq) as f64;
                assert!(reference.is_finite());
                let tol = VARIANT_TOLERANCE * scale.max(reference.abs()).max(1e-30);
                for (name, v) in &variants {
                    let got = v(n, &wq, &aq) as f64;
                    assert!(
                        (got - reference).abs() <= tol,
                        "{} {name} n={n}: {got} vs scalar {reference} (tol {tol:e})",
                        f.ty()
                    );
                }
                let dispatched = f.vec_dot()(n, &wq, &aq) as f64;
                assert!(
                    (dispatched - reference).abs() <= tol,
                    "{} dispatched n={n}",
                    f.ty()
                );
            }
        }
    }
}

/// The NEON kernels of the block formats do the scalar kernels' arithmetic: bit for bit for the
/// k-quants (exact integer sums, the scalar float epilogue), and for the 32-element formats on
/// rows of fewer than four blocks (longer rows add the block values in another order).
#[test]
fn neon_block_arithmetic_is_scalar() {
    let mut rng = StdRng::seed_from_u64(0xa64);
    for f in FORMATS {
        let bs = f.ty().block_size();
        if bs == 1 {
            continue;
        }
        let act = act_of(*f);
        for nb in [1, 2, 3, 5] {
            let n = nb * bs;
            if bs == 32 && nb >= 4 {
                continue;
            }
            for _ in 0..4 {
                let wq = quantize(*f, &random_data(&mut rng, n));
                let aq = quantize(act, &random_data(&mut rng, n));
                let want = f.vec_dot_scalar()(n, &wq, &aq);
                for (name, v) in f.vec_dot_variants() {
                    if name.starts_with("neon") {
                        let got = v(n, &wq, &aq);
                        assert_eq!(got.to_bits(), want.to_bits(), "{} {name} n={n}", f.ty());
                    }
                }
            }
        }
    }
}

#[test]
fn quantize_variants_match_reference() {
    let mut rng = StdRng::seed_from_u64(7);
    for f in FORMATS {
        let n = if f.ty().block_size() == 1 { 1031 } else { 4352 };
        let mut inputs = vec![
            ggml_data(0.5, n, 2.0),
            random_data(&mut rng, n),
            vec![0.0; n],
        ];
        // Ties for the rounding rule, and blocks with a single non-zero value.
        inputs.push((0..n).map(|i| (i % 13) as f32 * 0.5 - 3.0).collect());
        inputs.push(
            (0..n)
                .map(|i| if i % 32 == 5 { -1.0 } else { 0.0 })
                .collect(),
        );
        for x in &inputs {
            let reference = quantize(*f, x);
            for (name, q) in f.quantize_variants() {
                let mut got = vec![0u8; reference.len()];
                q(x, &mut got);
                assert!(
                    got == reference,
                    "{} quantize {name} differs from the reference",
                    f.ty()
                );
            }
            assert!(
                quantize_fast(*f, x) == reference,
                "{} quantize_row_fast",
                f.ty()
            );
        }
    }
}

fn max_quantization_error(ty: GgmlType) -> f64 {
    match ty {
        GgmlType::Q2_K => MAX_QUANTIZATION_TOTAL_ERROR_2BITS,
        GgmlType::Q3_K => MAX_QUANTIZATION_TOTAL_ERROR_3BITS,
        _ => MAX_QUANTIZATION_TOTAL_ERROR,
    }
}

fn max_dot_error(ty: GgmlType) -> f64 {
    match ty {
        GgmlType::Q2_K => MAX_DOT_PRODUCT_ERROR_LOWBIT,
        _ => MAX_DOT_PRODUCT_ERROR,
    }
}

/// ggml's measure is `sqrt(sum of squared errors) / n` at n = 4096; scaling by
/// `1 / sqrt(n * 4096)` instead gives the same number at 4096 and a comparable one at other
/// lengths.
fn ggml_normalized(err: f64, n: usize) -> f64 {
    err / (n as f64 * GGML_TEST_SIZE).sqrt()
}

#[test]
fn round_trip_error_within_ggml_thresholds() {
    for f in FORMATS {
        for n in lengths(*f) {
            let x = ggml_data(0.0, n, 2.0);
            let y = dequantize(*f, &quantize(*f, &x), n);
            let sq: f64 = x
                .iter()
                .zip(&y)
                .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
                .sum();
            let err = ggml_normalized(sq.sqrt(), n);
            let max = max_quantization_error(f.ty());
            assert!(
                err < max,
                "{} n={n}: quantization error {err} >= {max}",
                f.ty()
            );
        }
    }
}

#[test]
fn dot_error_within_ggml_thresholds() {
    for f in FORMATS {
        let act = act_of(*f);
        for n in lengths(*f) {
            for (w, a) in [
                (ggml_data(0.0, n, 2.0), ggml_data(1.0, n, 2.0)),
                (ggml_data(3.0, n, 1.0), ggml_data(4.0, n, 1.5)),
            ] {
                let wq = quantize(*f, &w);
                let aq = quantize_fast(act, &a);
                let reference: f64 = w.iter().zip(&a).map(|(x, y)| (x * y) as f64).sum();
                for (name, v) in f.vec_dot_variants() {
                    let got = v(n, &wq, &aq) as f64;
                    let err = ggml_normalized((got - reference).abs(), n);
                    let max = max_dot_error(f.ty());
                    assert!(
                        err < max,
                        "{} {name} n={n}: dot error {err} >= {max}",
                        f.ty()
                    );
                }
            }
        }
    }
}

/// The all-zero row quantizes to a row that dequantizes to zeros, and dots to zero.
#[test]
fn zeros_stay_zero() {
    for f in FORMATS {
        let n = 512;
        let q = quantize(*f, &vec![0.0; n]);
        assert!(
            dequantize(*f, &q, n).iter().all(|v| *v == 0.0),
            "{}",
            f.ty()
        );
        let a = quantize(act_of(*f), &ggml_data(0.0, n, 2.0));
        for (name, v) in f.vec_dot_variants() {
            assert_eq!(v(n, &q, &a), 0.0, "{} {name}", f.ty());
        }
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Three blocks of 32: an exact ramp with rounding ties, ggml's synthetic data, zeros.
fn known_input() -> Vec<f32> {
    const COS_BITS: [u32; 32] = [
        0x3fed760d, 0x3e774510, 0xbfc04af2, 0xbfe2eed3, 0xbea4a7a7, 0x3fc2382f, 0x40036739,
        0x3f4b13ca, 0xbf8d50a7, 0xbff279e0, 0xbf59dffa, 0x3f8886a9, 0x40061e41, 0x3fa51985,
        0xbf1c1f08, 0xbfedaf20, 0xbfa7037e, 0x3f09f409, 0x3ffd5181, 0x3fd88754, 0xbd722f4a,
        0xbfd4f04d, 0xbfd2c418, 0xbcc30e6c, 0x3fdb3da7, 0x3ffbba8a, 0x3f0117db, 0xbfaa3608,
        0xbfecb58d, 0xbf139e93, 0x3fa8b7e5, 0x4005f2a9,
    ];
    let ramp = (0..32).map(|i| ((i * 37) % 61 - 30) as f32 / 8.0);
    ramp.chain(COS_BITS.iter().map(|b| f32::from_bits(*b)))
        .chain([0.0; 32])
        .collect()
}

/// (type, quantized bytes, dequantized f32 bytes) for `known_input()`, from
/// `data/gen_known_bytes.py` (the `gguf` python package's reference quantizers, bit-exact with
/// ggml's).
const KNOWN: &[(GgmlType, &str, &str)] = &[
    (GgmlType::F32, "000070c00000603f000008c000002040000000bf000060c00000903f0000f0bf00003040000080be000050c00000b03f0000d0bf0000404000000000000040c00000d03f0000b0bf000050400000803e000030c00000f03f000090bf000060400000003f000020c000000840000060bf000070400000403f000010c0000018400d76ed3f1045773ef24ac0bfd3eee2bfa7a7a4be2f38c23f39670340ca134b3fa7508dbfe079f2bffadf59bfa986883f411e06408519a53f081f1cbf20afedbf7e03a7bf09f4093f8151fd3f5487d83f4a2f72bd4df0d4bf18c4d2bf6c0ec3bca73ddb3f8abafb3fdb17013f0836aabf8db5ecbf939e13bfe5b7a83fa9f205400000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000", "000070c00000603f000008c000002040000000bf000060c00000903f0000f0bf00003040000080be000050c00000b03f0000d0bf0000404000000000000040c00000d03f0000b0bf000050400000803e000030c00000f03f000090bf000060400000003f000020c000000840000060bf000070400000403f000010c0000018400d76ed3f1045773ef24ac0bfd3eee2bfa7a7a4be2f38c23f39670340ca134b3fa7508dbfe079f2bffadf59bfa986883f411e06408519a53f081f1cbf20afedbf7e03a7bf09f4093f8151fd3f5487d83f4a2f72bd4df0d4bf18c4d2bf6c0ec3bca73ddb3f8abafb3fdb17013f0836aabf8db5ecbf939e13bfe5b7a83fa9f205400000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"),
    (GgmlType::F16, "80c3003b40c0004100b800c3803c80bf804100b480c2803d80be0042000000c2803e80bd8042003480c1803f80bc0043003800c1404000bb8043003a80c0c0406c3fba3302be17bf25b5123e1b40593a6bbc94bfcfba443c3140293de1b86dbf38bd5038eb3fc43e91aba8be96be18a6da3ede3f093852bd66bf9db8463d304000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000", "000070c00000603f000008c000002040000000bf000060c00000903f0000f0bf00003040000080be000050c00000b03f0000d0bf0000404000000000000040c00000d03f0000b0bf000050400000803e000030c00000f03f000090bf000060400000003f000020c000000840000060bf000070400000403f000010c0000018400080ed3f0040773e0040c0bf00e0e2bf00a0a4be0040c23f0060034000204b3f00608dbf0080f2bf00e059bf0080883f002006400020a53f00201cbf00a0edbf0000a7bf00000a3f0060fd3f0080d83f002072bd0000d5bf00c0d2bf0000c3bc0040db3f00c0fb3f0020013f0040aabf00c0ecbf00a013bf00c0a83f000006400000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"),
    (GgmlType::BF16, "70c0603f08c0204000bf60c0903ff0bf304080be50c0b03fd0bf4040000040c0d03fb0bf5040803e30c0f03f90bf6040003f20c0084060bf7040403f10c01840ed3f773ec0bfe3bfa5bec23f03404b3f8dbff2bf5abf893f0640a53f1cbfeebfa7bf0a3ffd3fd93f72bdd5bfd3bfc3bcdb3ffc3f013faabfedbf14bfa93f064000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000", "000070c00000603f000008c000002040000000bf000060c00000903f0000f0bf00003040000080be000050c00000b03f0000d0bf0000404000000000000040c00000d03f0000b0bf000050400000803e000030c00000f03f000090bf000060400000003f000020c000000840000060bf000070400000403f000010c0000018400000ed3f0000773e0000c0bf0000e3bf0000a5be0000c23f0000034000004b3f00008dbf0000f2bf00005abf0000893f000006400000a53f00001cbf0000eebf0000a7bf00000a3f0000fd3f0000d93f000072bd0000d5bf0000d3bf0000c3bc0000db3f0000fc3f0000013f0000aabf0000edbf000014bf0000a93f000006400000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"),
    (GgmlType::Q8_0, "8f27811eb855ef8926c15df8922fc966009a37d16e08a33fda7711ab48e27f19b4503924700fa595ed5c7c30bd8dcc417f4edb8fb1217867fc9b9cff68771faf90dd507f00000000000000000000000000000000000000000000000000000000000000000000", "40fc6fc000c2623f000e08c0c09e2040007f00bf40de60c0009d8f3f8018eebfc0bc2f4000e071be80dc4fc080a0b13f80dccfbf80be40400000000080be40c080dccf3f80a0b1bf80dc4f4000e0713ec0bc2fc08018ee3f009d8fbf40de6040007f003fc09e20c0000e084000c262bf40fc6f4000f73c3f009d0fc0002c17400078ec3f005c7d3e8021c0bf80e9e1bf0076a0be003ec23f00e7024000b04a3f80758dbf80cdf2bf00945bbf803c893fc011064000afa43f003d1cbf8094eebf80cba6bf00590b3f005cfd3f8077d93f002087bd803ed5bf0022d3bf002087bc0094db3f803ffb3f00e7023f8004abbf0078ecbf00cb13bf00e8a83fc01106400000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"),
    (GgmlType::Q8_1, "8f27da3a811eb855ef8926c15df8922fc966009a37d16e08a33fda7711ab48e27f19b45039245b44700fa595ed5c7c30bd8dcc417f4edb8fb1217867fc9b9cff68771faf90dd507f000000000000000000000000000000000000000000000000000000000000000000000000", "40fc6fc000c2623f000e08c0c09e2040007f00bf40de60c0009d8f3f8018eebfc0bc2f4000e071be80dc4fc080a0b13f80dccfbf80be40400000000080be40c080dccf3f80a0b1bf80dc4f4000e0713ec0bc2fc08018ee3f009d8fbf40de6040007f003fc09e20c0000e084000c262bf40fc6f4000f73c3f009d0fc0002c17400078ec3f005c7d3e8021c0bf80e9e1bf0076a0be003ec23f00e7024000b04a3f80758dbf80cdf2bf00945bbf803c893fc011064000afa43f003d1cbf8094eebf80cba6bf00590b3f005cfd3f8077d93f002087bd803ed5bf0022d3bf002087bc0094db3f803ffb3f00e7023f8004abbf0078ecbf00cb13bf00e8a83fc01106400000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"),
    (GgmlType::Q4_0, "8037b05af39d27c16af49e37d16bf5ae38d231b4d1670e2f89e2e0851c0f6bd4f0a33a0f008088888888888888888888888888888888", "000070c00000703f000016c0000016400000f0be000052c00000703f0000f0bf000034400000f0be000052c00000b43f0000b4bf0000344000000000000034c00000b43f0000b4bf000052400000f03e000034c00000f03f000070bf000052400000f03e000016c000001640000070bf000052400000703f000016c00000164000b8ea3f0020863e0030c9bf00b8eabf002086be0030c93f002006400030493f002086bf00b8eabf003049bf0020863f0020064000a8a73f002006bf00b8eabf00a8a7bf0020063f002006400030c93f000000800030c9bf0030c9bf0000008000b8ea3f002006400020063f00a8a7bf00b8eabf002006bf00a8a73f002006400000008000000080000000800000008000000080000000800000008000000080000000800000008000000080000000800000008000000080000000800000008000000080000000800000008000000080000000800000008000000080000000800000008000000080000000800000008000000080000000800000008000000080"),
    (GgmlType::Q4_1, "003880c3b059e38d27b15af49d37c16af49e38c2423494bf2e98f1d0761d1f7ae3f0942b0f5cc5f00000000000000000000000000000000000000000", "000070c00000403f000010c000003040000080be000050c00000a03f0000e0bf00003040000080be000050c00000a03f0000e0bf000050400000803e000030c00000e03f0000a0bf000050400000803e000030c00000e03f0000a0bf000070400000403f000010c000001040000040bf000070400000403f000010c0000010400060ea3f0000703e0070d0bf0080f2bf008098be0050c83f003806400040443f00508cbf0080f2bf008054bf0030843f003806400040a63f006010bf0080f2bf0060aebf0020003f003806400050c83f000002bd0070d0bf0070d0bf000002bd0060ea3f003806400020003f0060aebf0080f2bf006010bf0040a63f003806400000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"),
    (GgmlType::Q5_0, "80334a69adb570a4e71b4e81b5f82c5f92c6f93d60a331b01cc7f138a2ce1b3e02d4d00a381ec6a8e046650e0080ffffffff00000000000000000000000000000000", "000070c00000703f000007c0000025400000f0be000061c00000963f0000f0bf00003440000070be000052c00000b43f0000d2bf0000434000000000000043c00000d23f0000b4bf000052400000703e000034c00000f03f000096bf000061400000f03e000025c000000740000070bf000061400000343f000016c00000164000b8ea3f0020863e006cb8bf00b8eabf002086be0030c93f002006400030493f002086bf00b8eabf003049bf0020863f0020064000a8a73f00a827bf00b8eabf00a8a7bf0020063f007cfb3f00f4d93f0000008000f4d9bf00f4d9bf0000008000f4d93f007cfb3f0020063f00a8a7bf00b8eabf002006bf00a8a73f002006400000008000000080000000800000008000000080000000800000008000000080000000800000008000000080000000800000008000000080000000800000008000000080000000800000008000000080000000800000008000000080000000800000008000000080000000800000008000000080000000800000008000000080"),
    (GgmlType::Q5_1, "be3380c34a69adb560a3d71a4d71b4e82b5e82c5f93c60931e3094bfe3380ec75d31e3c1ec2b2ff5c6e038470fa99af0000000000000000000000000000000000000000000000000", "000070c000d0583f009c03c00098224000d01abf008460c000608b3f0040e8bf0014324000c0b9be000851c00058aa3f0048c9bf009041400000f83d008c41c00050c93f0050aabf000c514000e0b93e001032c00048e83f00588bbf0088604000e01a3f009422c000a0034000c058bf0004704000d0583f001813c0001c13400018eb3f00e0953e0018c1bf0008e2bf0080b3be0028ca3f0004064000b04e3f00b08fbf0080f2bf00805dbf0048883f000406400038a93f00a01bbf0080f2bf0028a0bf00d00c3f0090fb3f00a0da3f0000bfbd0090d1bf0090d1bf0000113d00a0da3f0090fb3f00d00c3f00a0b0bf0080f2bf00a01bbf0038a93f000406400000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"),
];

#[test]
fn quantizers_match_ggml_bytes() {
    let x = known_input();
    for (ty, bytes, deq) in KNOWN {
        let f = format(*ty).unwrap();
        let expected = unhex(bytes);
        let got = quantize(f, &x);
        assert!(
            got == expected,
            "{ty}: quantized\n got {got:02x?}\nwant {expected:02x?}"
        );
        let got = quantize_fast(f, &x);
        assert!(got == expected, "{ty}: quantize_row_fast");
        let want: Vec<f32> = unhex(deq)
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let y = dequantize(f, &expected, x.len());
        assert!(
            y.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{ty}: dequantized\n got {y:?}\nwant {want:?}"
        );
    }
}

/// `HEARTH_FORCE_SCALAR=1` turns every SIMD dispatch off (checked in a child process, since
/// the features are decided once per process).
#[test]
fn force_scalar_env_disables_simd() {
    if std::env::var_os("HEARTH_KERNELS_TEST_CHILD").is_some() {
        assert_eq!(
            kernels::simd::features(),
            kernels::simd::CpuFeatures::default()
        );
        println!("child checked");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    // Under user-mode emulation (scripts/check-aarch64 runs these tests through qemu) the child
    // must be started through the same runner, named by HEARTH_TEST_RUNNER.
    let runner = std::env::var("HEARTH_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    let mut cmd = match words.next() {
        Some(program) => {
            let mut c = std::process::Command::new(program);
            c.args(words).arg(exe);
            c
        }
        None => std::process::Command::new(exe),
    };
    let out = cmd
        .args([
            "--exact",
            "force_scalar_env_disables_simd",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HEARTH_FORCE_SCALAR", "1")
        .env("HEARTH_KERNELS_TEST_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("child checked"),
        "{stdout}"
    );
}

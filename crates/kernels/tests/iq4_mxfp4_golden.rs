//! IQ4_NL, IQ4_XS and MXFP4 against llama.cpp's ggml, on the vectors of
//! `tests/data/golden/quant_iq4_mxfp4.txt` (made by `scripts/golden/make_iq4_mxfp4_vectors.py`
//! with the libggml of llama-cpp-python 0.3.36):
//!
//! - quantize: our quantizer writes exactly the bytes of ggml's `ggml_quantize_chunk` (no
//!   importance matrix), the path model files are made by;
//! - dequantize: exactly ggml's floats, bit for bit, for those blocks and for blocks of
//!   arbitrary bytes (every nibble, every scale code, E8M0's subnormal and top exponents);
//! - vec_dot: every variant within 1e-5 of the size of the terms (`Σ |w_i a_i|`) of ggml's
//!   dispatched and generic `vec_dot` against a fixed activation row, whose bytes (Q8_0, Q8_K)
//!   our activation quantizers must reproduce.

use std::collections::HashMap;

use kernels::quant::{format, QuantFormat};
use kernels::GgmlType;

const GOLDEN: &str = include_str!("../../../tests/data/golden/quant_iq4_mxfp4.txt");

const FORMATS: [GgmlType; 3] = [GgmlType::IQ4_NL, GgmlType::IQ4_XS, GgmlType::MXFP4];

/// Records by (section, key).
fn golden() -> HashMap<(String, String), String> {
    let mut m = HashMap::new();
    for line in GOLDEN.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut parts = line.splitn(3, ' ');
        let (Some(section), Some(key), Some(value)) = (parts.next(), parts.next(), parts.next())
        else {
            panic!("malformed golden line: {line:.80}");
        };
        m.insert((section.to_owned(), key.to_owned()), value.to_owned());
    }
    m
}

fn get<'a>(g: &'a HashMap<(String, String), String>, section: &str, key: &str) -> &'a str {
    g.get(&(section.to_owned(), key.to_owned()))
        .unwrap_or_else(|| panic!("golden file lacks `{section} {key}`"))
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn floats(s: &str) -> Vec<f32> {
    hex(s)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The two f32 results (bits in hex) of a `dot` record.
fn dots(s: &str) -> (f32, f32) {
    let v: Vec<f32> = s
        .split(' ')
        .map(|b| f32::from_bits(u32::from_str_radix(b, 16).expect("f32 bits")))
        .collect();
    assert_eq!(v.len(), 2, "dot record: {s}");
    (v[0], v[1])
}

fn fmt(ty: GgmlType) -> &'static dyn QuantFormat {
    format(ty).unwrap_or_else(|| panic!("{ty} missing from FORMATS"))
}

fn dequantize(ty: GgmlType, q: &[u8]) -> Vec<f32> {
    let n = q.len() / ty.block_bytes() * ty.block_size();
    let mut y = vec![f32::NAN; n];
    fmt(ty).dequantize_row(q, &mut y);
    y
}

fn assert_same_floats(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits(),
            "{what}: element {i} is {g:e} ({:#010x}), ggml has {w:e} ({:#010x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

#[test]
fn activation_rows_match_ggml() {
    let g = golden();
    for act in [GgmlType::Q8_0, GgmlType::Q8_K] {
        let name = act.name();
        let x = floats(get(&g, name, "input"));
        let want = hex(get(&g, name, "quant"));
        let f = fmt(act);
        let mut got = vec![0u8; want.len()];
        f.quantize_row(&x, &mut got);
        assert!(got == want, "{act}: quantize_row differs from ggml");
        f.quantize_row_fast(&x, &mut got);
        assert!(got == want, "{act}: quantize_row_fast differs from ggml");
    }
}

#[test]
fn quantize_matches_ggml() {
    let g = golden();
    for ty in FORMATS {
        let x = floats(get(&g, ty.name(), "input"));
        let want = hex(get(&g, ty.name(), "quant"));
        let mut got = vec![0u8; want.len()];
        fmt(ty).quantize_row(&x, &mut got);
        let bb = ty.block_bytes();
        for (b, (gb, wb)) in got.chunks(bb).zip(want.chunks(bb)).enumerate() {
            let bs = ty.block_size();
            assert!(
                gb == wb,
                "{ty}: block {b} differs from ggml\n got {gb:02x?}\nwant {wb:02x?}\ninput {:?}",
                &x[b * bs..(b + 1) * bs]
            );
        }
    }
}

#[test]
fn dequantize_matches_ggml() {
    let g = golden();
    for ty in FORMATS {
        for (q, deq) in [("quant", "dequant"), ("arb", "arb_dequant")] {
            let got = dequantize(ty, &hex(get(&g, ty.name(), q)));
            let want = floats(get(&g, ty.name(), deq));
            assert_same_floats(&got, &want, &format!("{ty} {deq}"));
        }
    }
}

#[test]
fn vec_dot_matches_ggml() {
    let g = golden();
    let mut checked = 0;
    for ty in FORMATS {
        let f = fmt(ty);
        let act = f.act_type();
        let a = hex(get(&g, act.name(), "quant"));
        let ad = dequantize(act, &a);
        for (q, dot) in [("quant", "dot"), ("arb", "arb_dot")] {
            // ggml's dot is recorded only where the blocks' values are finite.
            let Some(rec) = g.get(&(ty.name().to_owned(), dot.to_owned())) else {
                continue;
            };
            let (want, want_generic) = dots(rec);
            let w = hex(get(&g, ty.name(), q));
            let wd = dequantize(ty, &w);
            let n = wd.len();
            assert_eq!(ad.len(), n);
            // Rounding differences scale with the size of the terms, not with their sum.
            let scale: f64 = wd
                .iter()
                .zip(&ad)
                .map(|(x, y)| (f64::from(*x) * f64::from(*y)).abs())
                .sum();
            let tol = 1e-5 * scale;
            assert!(
                (f64::from(want) - f64::from(want_generic)).abs() <= tol,
                "{ty} {q}: ggml disagrees with itself: {want} vs {want_generic}"
            );
            for (name, v) in f.vec_dot_variants() {
                let got = v(n, &w, &a);
                for reference in [want, want_generic] {
                    assert!(
                        (f64::from(got) - f64::from(reference)).abs() <= tol,
                        "{ty} {q} {name}: {got} vs ggml {reference} (tol {tol:e})"
                    );
                }
            }
            checked += 1;
        }
    }
    // Every format's quantized row at least, and arbitrary blocks where they are finite.
    assert!(checked >= FORMATS.len() + 2, "only {checked} dot records");
}

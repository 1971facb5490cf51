#!/usr/bin/env python3
"""Golden vectors for the k-quant formats (Q2_K..Q6_K, Q8_K), made with llama.cpp's own ggml.

Writes crates/kernels/tests/kquant_golden.rs: for each format, the block bytes ggml's reference
quantizer (quantize_row_*_ref) makes from fixed inputs, a hash of what ggml's dequantize_row_*
makes of those blocks and of blocks of arbitrary bytes, and what ggml's AVX2 vec_dot gives
against a fixed Q8_K activation row. The inputs come from a small integer generator that the
Rust test reproduces exactly, so only outputs are stored.

Needs the llama-cpp-python wheel (its libggml-base.so / libggml-cpu.so) and numpy:
    /work/ref/venv/bin/python scripts/golden/make_kquant_vectors.py [--out PATH]
    /work/ref/venv/bin/python scripts/golden/make_kquant_vectors.py --fuzz DIR --rows N
(--fuzz writes many random rows with ggml's bytes, for a one-off wider comparison.)
"""

import argparse
import ctypes
import os
import struct
import sys

import numpy as np

QK_K = 256
BLOCK_BYTES = {"Q2_K": 84, "Q3_K": 110, "Q4_K": 144, "Q5_K": 176, "Q6_K": 210, "Q8_K": 292}
# Byte offsets of the f16 (or f32 for Q8_K) scales inside a block, for the arbitrary-bytes case.
SCALE_FIELDS = {
    "Q2_K": [(80, "e"), (82, "e")],
    "Q3_K": [(108, "e")],
    "Q4_K": [(0, "e"), (2, "e")],
    "Q5_K": [(0, "e"), (2, "e")],
    "Q6_K": [(208, "e")],
    "Q8_K": [(0, "f")],
}
ORDER = ["Q8_K", "Q4_K", "Q6_K", "Q5_K", "Q3_K", "Q2_K"]
MASK = 0xFFFFFFFF


def find_libs():
    import llama_cpp

    d = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    base = ctypes.CDLL(os.path.join(d, "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
    cpu = ctypes.CDLL(os.path.join(d, "libggml-cpu.so"), mode=ctypes.RTLD_GLOBAL)
    cpu.ggml_cpu_init()  # fills the f16 tables the dot products use
    return base, cpu


BASE, CPU = find_libs()


class XorShift:
    """xorshift32; the Rust test has the same generator."""

    def __init__(self, seed):
        self.s = seed & MASK or 1

    def next(self):
        s = self.s
        s ^= (s << 13) & MASK
        s ^= s >> 17
        s ^= (s << 5) & MASK
        self.s = s
        return s

    def uniform(self):
        """An integer in -2^23..2^23."""
        return (self.next() >> 8) - (1 << 23)


def pow2(e):
    return np.float32(2.0**e)


def gen_input(seed, nblocks):
    """Four kinds of block, cycling; every value is exact in f32."""
    g = XorShift(seed)
    out = []
    for b in range(nblocks):
        kind = b % 4
        for i in range(QK_K):
            if kind == 0:  # uniform in [-4, 4)
                v = np.float32(g.uniform()) * pow2(-21)
            elif kind == 1:  # bell-shaped with outliers
                s = (g.uniform() >> 2) + (g.uniform() >> 2) + (g.uniform() >> 2)
                v = np.float32(s) * pow2(-21)
                if i % 37 == 5:
                    v = v * np.float32(8.0)
            elif kind == 2:  # all non-negative, one run of 32 zeros
                u = g.uniform() & 0x7FFFFF
                v = np.float32(0.0) if 32 <= i < 64 else np.float32(u) * pow2(-22)
            else:  # small magnitudes
                v = np.float32(g.uniform()) * pow2(-33)
            out.append(np.float32(v))
    return np.array(out, dtype=np.float32)


def gen_bytes(seed, n):
    g = XorShift(seed)
    return bytearray(g.next() & 0xFF for _ in range(n))


def arbitrary_blocks(name, seed, nblocks):
    """Arbitrary bytes with sane scales (finite, moderate), for dequantize."""
    bb = BLOCK_BYTES[name]
    data = gen_bytes(seed, nblocks * bb)
    scales = [0.0123, -0.00071, 0.5, 3.25e-5]
    k = 0
    for b in range(nblocks):
        for off, kind in SCALE_FIELDS[name]:
            v = scales[k % len(scales)]
            k += 1
            if kind == "e":
                data[b * bb + off : b * bb + off + 2] = struct.pack("<e", v)
            else:
                data[b * bb + off : b * bb + off + 4] = struct.pack("<f", v)
    return bytes(data)


def cname(name):
    """ggml's spelling in symbol names: Q4_K -> q4_K."""
    return name[0].lower() + name[1:]


def ptr(a):
    return a.ctypes.data_as(ctypes.c_void_p)


def quantize(name, x):
    nb = len(x) // QK_K
    dst = np.zeros(nb * BLOCK_BYTES[name], dtype=np.uint8)
    f = getattr(BASE, "quantize_row_%s_ref" % cname(name))
    f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    f(ptr(x), ptr(dst), ctypes.c_int64(len(x)))
    return bytes(dst)


def dequantize(name, data):
    nb = len(data) // BLOCK_BYTES[name]
    src = np.frombuffer(data, dtype=np.uint8).copy()
    dst = np.zeros(nb * QK_K, dtype=np.float32)
    f = getattr(BASE, "dequantize_row_%s" % cname(name))
    f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    f(ptr(src), ptr(dst), ctypes.c_int64(nb * QK_K))
    return dst


def vec_dot(name, w, act, generic=False):
    n = len(w) // BLOCK_BYTES[name] * QK_K
    f = getattr(CPU, "ggml_vec_dot_%s_q8_K%s" % (cname(name), "_generic" if generic else ""))
    f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                  ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    s = np.zeros(1, dtype=np.float32)
    wa = np.frombuffer(w, dtype=np.uint8).copy()
    aa = np.frombuffer(act, dtype=np.uint8).copy()
    f(n, ptr(s), 0, ptr(wa), 0, ptr(aa), 0, 1)
    return float(s[0])


def fnv1a64(floats):
    h = 0xCBF29CE484222325
    for byte in floats.astype("<f4").tobytes():
        h ^= byte
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def cross_check_gguf(name, data, want):
    """The gguf package's numpy dequantizer, as a second opinion (reported, not required)."""
    try:
        from gguf import quants, GGMLQuantizationType

        got = quants.dequantize(np.frombuffer(data, dtype=np.uint8), getattr(GGMLQuantizationType, name))
        return bool(np.array_equal(got.reshape(-1).view(np.uint32), want.view(np.uint32)))
    except Exception as e:  # noqa: BLE001 - only a report
        return "n/a (%s)" % type(e).__name__


def f32_bits(v):
    return struct.unpack("<I", struct.pack("<f", v))[0]


def rust_hex(data, indent="        "):
    h = data.hex()
    lines = [h[i : i + 96] for i in range(0, len(h), 96)]
    return "concat!(\n" + "".join('%s    "%s",\n' % (indent, l) for l in lines) + indent + ")"


NBLOCKS = 4
ACT_SEED = 0xAC7
SEEDS = {"Q8_K": 0x51, "Q4_K": 0x52, "Q6_K": 0x53, "Q5_K": 0x54, "Q3_K": 0x55, "Q2_K": 0x56}


def make_cases(formats):
    act_x = gen_input(ACT_SEED, NBLOCKS)
    act = quantize("Q8_K", act_x)
    cases = []
    for name in formats:
        x = gen_input(SEEDS[name], NBLOCKS)
        q = quantize(name, x)
        dq = dequantize(name, q)
        arb = arbitrary_blocks(name, SEEDS[name] + 1000, 2)
        darb = dequantize(name, arb)
        case = {
            "name": name,
            "seed": SEEDS[name],
            "quant": q,
            "dequant_hash": fnv1a64(dq),
            "dequant_head": [f32_bits(v) for v in dq[:4]],
            "arb": arb,
            "arb_hash": fnv1a64(darb),
            "gguf_agrees": (cross_check_gguf(name, q, dq), cross_check_gguf(name, arb, darb)),
        }
        if name != "Q8_K":
            case["dot"] = vec_dot(name, q, act)
            case["dot_generic"] = vec_dot(name, q, act, generic=True)
        cases.append(case)
    return act, cases


TEMPLATE_HEAD = '''//! Golden vectors for the k-quant formats, made by llama.cpp's ggml (libggml-base / libggml-cpu
//! of llama-cpp-python 0.3.36) with `scripts/golden/make_kquant_vectors.py`. Do not edit by hand:
//! rerun the script.
//!
//! - quantize: our reference quantizer must write exactly ggml's `quantize_row_*_ref` bytes;
//! - dequantize: exactly ggml's `dequantize_row_*` floats (compared through an FNV-1a hash of
//!   their bits), for those blocks and for blocks of arbitrary bytes;
//! - vec_dot: every variant within 1e-4 (relative) of ggml's AVX2 `ggml_vec_dot_*_q8_K` against
//!   a fixed Q8_K activation row, which our Q8_K quantizer must also reproduce byte for byte.

use kernels::quant::{%(mods)s, QuantFormat};
use kernels::GgmlType;

const QK_K: usize = 256;
const NBLOCKS: usize = %(nblocks)d;
const ACT_SEED: u32 = %(act_seed)#x;

/// xorshift32, as in the script.
struct XorShift(u32);

impl XorShift {
    fn next(&mut self) -> u32 {
        let mut s = self.0;
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        self.0 = s;
        s
    }
    /// An integer in -2^23..2^23.
    fn uniform(&mut self) -> i32 {
        (self.next() >> 8) as i32 - (1 << 23)
    }
}

fn pow2(e: i32) -> f32 {
    f32::from_bits(((127 + e) as u32) << 23)
}

/// The script's `gen_input`: four kinds of block, cycling; every value exact in f32.
fn gen_input(seed: u32, nblocks: usize) -> Vec<f32> {
    let mut g = XorShift(if seed == 0 { 1 } else { seed });
    let mut out = Vec::with_capacity(nblocks * QK_K);
    for b in 0..nblocks {
        for i in 0..QK_K {
            let v = match b %% 4 {
                0 => g.uniform() as f32 * pow2(-21),
                1 => {
                    let s = (g.uniform() >> 2) + (g.uniform() >> 2) + (g.uniform() >> 2);
                    let v = s as f32 * pow2(-21);
                    if i %% 37 == 5 {
                        v * 8.0
                    } else {
                        v
                    }
                }
                2 => {
                    let u = g.uniform() & 0x7F_FFFF;
                    if (32..64).contains(&i) {
                        0.0
                    } else {
                        u as f32 * pow2(-22)
                    }
                }
                _ => g.uniform() as f32 * pow2(-33),
            };
            out.push(v);
        }
    }
    out
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn fnv1a64(v: &[f32]) -> u64 {
    let mut h = 0xCBF2_9CE4_8422_2325u64;
    for x in v {
        for b in x.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01B3);
        }
    }
    h
}

struct Case {
    ty: GgmlType,
    format: &'static dyn QuantFormat,
    seed: u32,
    /// ggml's blocks for `gen_input(seed, NBLOCKS)`.
    quant: &'static str,
    /// Hash and first values (bits) of ggml's dequantization of `quant`.
    dequant_hash: u64,
    dequant_head: [u32; 4],
    /// Blocks of arbitrary bytes (with sane scales) and the hash of ggml's dequantization.
    arb: &'static str,
    arb_hash: u64,
    /// ggml's AVX2 and generic vec_dot of `quant` against `ACT` (f32 bits); none for Q8_K.
    dot: Option<(u32, u32)>,
}

/// ggml's Q8_K blocks for `gen_input(ACT_SEED, NBLOCKS)`.
const ACT: &str = %(act)s;

const CASES: &[Case] = &[
%(cases)s];

fn f32_of(bits: u32) -> f32 {
    f32::from_bits(bits)
}

#[test]
fn quantize_matches_ggml() {
    for c in CASES {
        assert_eq!(c.format.ty(), c.ty);
        let x = gen_input(c.seed, NBLOCKS);
        let want = hex(c.quant);
        let mut got = vec![0u8; want.len()];
        c.format.quantize_row(&x, &mut got);
        for (b, (g, w)) in got.chunks(c.ty.block_bytes()).zip(want.chunks(c.ty.block_bytes())).enumerate() {
            assert_eq!(g, w, "{}: block {b} differs from ggml", c.ty);
        }
        let mut fast = vec![0u8; want.len()];
        c.format.quantize_row_fast(&x, &mut fast);
        assert_eq!(fast, want, "{}: quantize_row_fast", c.ty);
        for (name, f) in c.format.quantize_variants() {
            let mut v = vec![0u8; want.len()];
            f(&x, &mut v);
            assert_eq!(v, want, "{}: quantize variant {name}", c.ty);
        }
    }
}

#[test]
fn act_row_matches_ggml() {
    let x = gen_input(ACT_SEED, NBLOCKS);
    let want = hex(ACT);
    let mut got = vec![0u8; want.len()];
    q8_k::Q8K.quantize_row(&x, &mut got);
    assert_eq!(got, want);
    for (name, f) in q8_k::Q8K.quantize_variants() {
        let mut v = vec![0u8; want.len()];
        f(&x, &mut v);
        assert_eq!(v, want, "Q8_K variant {name}");
    }
}

#[test]
fn dequantize_matches_ggml() {
    for c in CASES {
        let q = hex(c.quant);
        let mut y = vec![0f32; NBLOCKS * QK_K];
        c.format.dequantize_row(&q, &mut y);
        let head: Vec<u32> = y[..4].iter().map(|v| v.to_bits()).collect();
        assert_eq!(head, c.dequant_head, "{}: first values", c.ty);
        assert_eq!(fnv1a64(&y), c.dequant_hash, "{}: dequantized blocks differ from ggml", c.ty);

        let arb = hex(c.arb);
        let mut y = vec![0f32; arb.len() / c.ty.block_bytes() * QK_K];
        c.format.dequantize_row(&arb, &mut y);
        assert_eq!(fnv1a64(&y), c.arb_hash, "{}: arbitrary blocks differ from ggml", c.ty);
    }
}

#[test]
fn vec_dot_matches_ggml() {
    let act = hex(ACT);
    let n = NBLOCKS * QK_K;
    for c in CASES {
        let Some((avx2, generic)) = c.dot else { continue };
        let (want, want_generic) = (f32_of(avx2), f32_of(generic));
        assert!((want - want_generic).abs() <= 1e-4 * want.abs(), "{}: ggml disagrees with itself", c.ty);
        let w = hex(c.quant);
        let scalar = c.format.vec_dot_scalar()(n, &w, &act);
        for (name, f) in c.format.vec_dot_variants() {
            let got = f(n, &w, &act);
            assert!(
                (got - want).abs() <= 1e-4 * want.abs(),
                "{} {name}: {got} vs ggml {want}",
                c.ty
            );
            assert!(
                (got - scalar).abs() <= 1e-5 * scalar.abs(),
                "{} {name}: {got} vs scalar {scalar}",
                c.ty
            );
        }
        assert_eq!(c.format.act_type(), GgmlType::Q8_K);
    }
}
'''

CASE_TEMPLATE = '''    Case {
        ty: GgmlType::%(name)s,
        format: &%(mod)s::%(struct)s,
        seed: %(seed)#x,
        quant: %(quant)s,
        dequant_hash: %(dequant_hash)#018x,
        dequant_head: [%(head)s],
        arb: %(arb)s,
        arb_hash: %(arb_hash)#018x,
        dot: %(dot)s,
    },
'''


def render(act, cases):
    parts = []
    for c in cases:
        name = c["name"]
        dot = "None"
        if "dot" in c:
            dot = "Some((%#010x, %#010x))" % (f32_bits(c["dot"]), f32_bits(c["dot_generic"]))
        parts.append(CASE_TEMPLATE % {
            "name": name,
            "mod": name.lower(),
            "struct": name.replace("_", ""),
            "seed": c["seed"],
            "quant": rust_hex(c["quant"]),
            "dequant_hash": c["dequant_hash"],
            "head": ", ".join("%#010x" % b for b in c["dequant_head"]),
            "arb": rust_hex(c["arb"]),
            "arb_hash": c["arb_hash"],
            "dot": dot,
        })
    mods = sorted(set([c["name"].lower() for c in cases] + ["q8_k"]))
    return TEMPLATE_HEAD % {
        "mods": ", ".join(mods),
        "nblocks": NBLOCKS,
        "act_seed": ACT_SEED,
        "act": rust_hex(act, indent=""),
        "cases": "".join(parts),
    }


def fuzz(out_dir, rows):
    """Many random rows (several distributions) with ggml's bytes and dot products, as raw files:
    <fmt>.in (f32), <fmt>.q (blocks), act.in / act.q (Q8_K), <fmt>.dot (f32 per row)."""
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(1234)
    n = 4 * QK_K

    def sample():
        k = rng.integers(0, 6)
        if k == 0:
            return rng.standard_normal(n).astype(np.float32)
        if k == 1:
            return (rng.standard_normal(n) * np.exp(rng.standard_normal(n))).astype(np.float32)
        if k == 2:
            return rng.uniform(0, 1, n).astype(np.float32)
        if k == 3:
            return (rng.integers(-8, 8, n) * 0.25).astype(np.float32)  # many ties
        if k == 4:
            x = rng.standard_normal(n).astype(np.float32)
            x[rng.integers(0, n, 40)] = 0
            x[:64] = 0
            return x
        return (rng.standard_normal(n) * 1e-3).astype(np.float32)

    xs = np.stack([sample() for _ in range(rows)])
    acts = np.stack([sample() for _ in range(rows)])
    act_q = b"".join(quantize("Q8_K", a) for a in acts)
    acts.tofile(os.path.join(out_dir, "act.in"))
    open(os.path.join(out_dir, "act.q"), "wb").write(act_q)
    xs.tofile(os.path.join(out_dir, "x.in"))
    ab = 4 * BLOCK_BYTES["Q8_K"]
    for name in ORDER:
        q = [quantize(name, x) for x in xs]
        open(os.path.join(out_dir, name + ".q"), "wb").write(b"".join(q))
        if name != "Q8_K":
            dots = np.array([vec_dot(name, q[r], act_q[r * ab:(r + 1) * ab]) for r in range(rows)],
                            dtype=np.float32)
            dots.tofile(os.path.join(out_dir, name + ".dot"))
        deq = np.concatenate([dequantize(name, qq) for qq in q])
        deq.tofile(os.path.join(out_dir, name + ".deq"))


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "..", "crates", "kernels", "tests", "kquant_golden.rs"))
    ap.add_argument("--fuzz", help="write random rows and ggml's results to this directory instead")
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--formats", default=",".join(ORDER), help="comma-separated subset of " + ",".join(ORDER))
    args = ap.parse_args()
    if args.fuzz:
        fuzz(args.fuzz, args.rows)
        return
    act, cases = make_cases([f for f in ORDER if f in args.formats.split(",")])
    for c in cases:
        print("%s: gguf numpy dequantize agrees: %s" % (c["name"], c["gguf_agrees"]), file=sys.stderr)
    with open(args.out, "w") as f:
        f.write(render(act, cases))
    try:
        import subprocess

        subprocess.run(["rustfmt", "--edition", "2021", args.out], check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print("rustfmt failed (%s): run cargo fmt" % e, file=sys.stderr)
    print("wrote", os.path.normpath(args.out), file=sys.stderr)


if __name__ == "__main__":
    main()

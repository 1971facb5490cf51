#!/usr/bin/env python3
"""Golden vectors for IQ4_NL, IQ4_XS and MXFP4, made with llama.cpp's own ggml.

Writes tests/data/golden/quant_iq4_mxfp4.txt, read by crates/kernels/tests/iq4_mxfp4_golden.rs.
For each format: fixed inputs (stored, as little-endian f32), the blocks ggml_quantize_chunk
makes of them without an importance matrix (what llama-quantize writes), what the type traits'
to_float makes of those blocks and of blocks of arbitrary bytes, and the dot products of
ggml's CPU backend (the dispatched kernel and the _generic one) against a fixed activation row
in the format's vec_dot_type (Q8_0 for IQ4_NL and MXFP4, Q8_K for IQ4_XS), whose bytes (from
ggml's quantize_row_q8_0_ref / quantize_row_q8_K_ref) are stored too.

File format: one record per line, `<section> <key> <value...>`, `#` starts a comment. Byte
strings are hex; f32 results are their bits in hex.

Needs the llama-cpp-python 0.3.36 wheel (its libggml-base.so / libggml-cpu.so) and numpy:
    /work/ref/venv/bin/python scripts/golden/make_iq4_mxfp4_vectors.py [--out PATH]
"""

import argparse
import ctypes
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "..", "tests", "data", "golden", "quant_iq4_mxfp4.txt")

# ggml_type ids (ggml.h), elements per block, bytes per block, activation type.
TYPES = {
    "Q8_0": (8, 32, 34, None),
    "Q8_K": (15, 256, 292, None),
    "IQ4_NL": (20, 32, 18, "Q8_0"),
    "IQ4_XS": (23, 256, 136, "Q8_K"),
    "MXFP4": (39, 32, 17, "Q8_0"),
}
ORDER = ["IQ4_NL", "IQ4_XS", "MXFP4"]
VEC_DOT = {
    "IQ4_NL": "ggml_vec_dot_iq4_nl_q8_0",
    "IQ4_XS": "ggml_vec_dot_iq4_xs_q8_K",
    "MXFP4": "ggml_vec_dot_mxfp4_q8_0",
}
SEEDS = {"act": 0xAC7, "IQ4_NL": 0x4E1, "IQ4_XS": 0x4E2, "MXFP4": 0x4E3}
N = 1024  # elements per row: 32 blocks of 32, or 4 super-blocks of 256

TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


class TypeTraits(ctypes.Structure):
    """ggml.h's struct ggml_type_traits."""

    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", TO_FLOAT),
        ("from_float_ref", ctypes.c_void_p),
    ]


def find_libs():
    import llama_cpp

    d = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    base = ctypes.CDLL(os.path.join(d, "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
    cpu = ctypes.CDLL(os.path.join(d, "libggml-cpu.so"), mode=ctypes.RTLD_GLOBAL)
    cpu.ggml_cpu_init()  # fills the f16 tables the dot products use
    base.ggml_get_type_traits.restype = ctypes.POINTER(TypeTraits)
    base.ggml_get_type_traits.argtypes = [ctypes.c_int]
    base.ggml_quantize_chunk.restype = ctypes.c_size_t
    base.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                         ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    return base, cpu


BASE, CPU = find_libs()


def ptr(a):
    return a.ctypes.data_as(ctypes.c_void_p)


def traits(name):
    t = BASE.ggml_get_type_traits(TYPES[name][0]).contents
    assert (t.blck_size, t.type_size) == TYPES[name][1:3], name
    return t


def row_bytes(name, n):
    _, bs, bb, _ = TYPES[name]
    assert n % bs == 0
    return n // bs * bb


def quantize_chunk(name, x):
    """What ggml_quantize_chunk (llama-quantize's path) writes, without an importance matrix."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    dst = np.zeros(row_bytes(name, len(x)), dtype=np.uint8)
    size = BASE.ggml_quantize_chunk(TYPES[name][0], ptr(x), ptr(dst), 0, 1, len(x), None)
    assert size == len(dst)
    return dst.tobytes()


def quantize_ref(name, x):
    """ggml's reference quantizer quantize_row_<type>_ref (for the activation rows; Q8_K has no
    entry in the type traits, so the symbol is called by name)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    dst = np.zeros(row_bytes(name, len(x)), dtype=np.uint8)
    cname = name[:-1].lower() + "K" if name.endswith("_K") else name.lower()
    f = getattr(BASE, "quantize_row_%s_ref" % cname)
    f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    f(ptr(x), ptr(dst), ctypes.c_int64(len(x)))
    return dst.tobytes()


def dequantize(name, data):
    _, bs, bb, _ = TYPES[name]
    src = np.frombuffer(data, dtype=np.uint8).copy()
    n = len(data) // bb * bs
    dst = np.zeros(n, dtype=np.float32)
    traits(name).to_float(ptr(src), ptr(dst), n)
    return dst


def vec_dot(name, w, act, generic=False):
    _, bs, bb, _ = TYPES[name]
    n = len(w) // bb * bs
    f = getattr(CPU, VEC_DOT[name] + ("_generic" if generic else ""))
    f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                  ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    s = np.zeros(1, dtype=np.float32)
    wa = np.frombuffer(w, dtype=np.uint8).copy()
    aa = np.frombuffer(act, dtype=np.uint8).copy()
    f(n, ptr(s), 0, ptr(wa), 0, ptr(aa), 0, 1)
    return s[0]


def f32_bits(v):
    return "%08x" % struct.unpack("<I", struct.pack("<f", float(v)))[0]


def below(x):
    """The f32 just below |x|, with x's sign."""
    b = np.abs(np.float32(x)).view(np.uint32) - 1
    return np.copysign(np.uint32(b).view(np.float32), x)


def block_kinds(rng):
    """Generators of 32 values each: ordinary data and the corners of every quantizer."""
    n = 32

    def exact_levels():
        # Exact MXFP4 levels and midpoints between them, at one scale.
        lv = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], dtype=np.float32)
        mid = (lv[1:] + lv[:-1]) / 2
        v = np.concatenate([lv, mid, -lv, -mid, [6.0, -6.0]])[:n]
        return (v * np.float32(2.0 ** rng.integers(-4, 5))).astype(np.float32)

    return [
        lambda: rng.standard_normal(n),
        lambda: rng.standard_normal(n) * np.exp(rng.standard_normal(n)),
        lambda: rng.uniform(0, 1, n),
        lambda: rng.integers(-8, 8, n) * 0.25,  # many ties
        lambda: np.zeros(n),
        lambda: rng.standard_normal(n) * 1e-20,  # below ggml's GROUP_MAX_EPS
        lambda: rng.standard_normal(n) * 1e-3,
        lambda: rng.standard_normal(n) * 300.0,
        lambda: np.where(np.arange(n) == rng.integers(0, n), -3.7, 0.0),  # one value
        lambda: -rng.uniform(0.5, 1.0, n),  # all negative
        # Largest magnitude just below a power of two: where floor(log2f(.)) is touchy.
        lambda: np.concatenate([[below(2.0 ** rng.integers(-8, 12))], rng.uniform(-0.4, 0.4, n - 1)]),
        lambda: np.concatenate([[-below(16.0)], rng.uniform(-1, 1, n - 1)]),
        exact_levels,
        lambda: rng.standard_normal(n) * 1e-5,  # IQ4 scales in f16's subnormal range
        lambda: rng.standard_normal(n) * 5e-7,  # IQ4 scales that round to 0 in f16
        lambda: rng.standard_normal(n) + 40.0,  # large offset, little spread
    ]


def gen_input(seed):
    rng = np.random.default_rng(seed)
    kinds = block_kinds(rng)
    out = []
    for b in range(N // 32):
        # Every kind once, then ordinary blocks of any scale.
        if b < len(kinds):
            v = kinds[b]()
        else:
            v = rng.standard_normal(32) * np.float32(2.0 ** rng.integers(-6, 6))
        out.append(np.asarray(v, dtype=np.float32))
    x = np.concatenate(out).astype(np.float32)
    # Super-blocks mix their runs (IQ4_XS): shuffle whole runs of 32 with a fixed permutation.
    runs = x.reshape(-1, 32)
    return runs[rng.permutation(len(runs))].reshape(-1).astype(np.float32)


def gen_act(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(N).astype(np.float32)
    x[rng.integers(0, N, 20)] *= 12.0  # outliers, as real activations have
    x[64:96] = 0.0  # a zero block
    return x


def arbitrary_blocks(name, seed):
    """Arbitrary bytes with chosen scales: every nibble and scale code, sane and corner scales."""
    rng = np.random.default_rng(seed)
    _, bs, bb, _ = TYPES[name]
    nb = N // bs
    data = bytearray(rng.integers(0, 256, nb * bb, dtype=np.uint8).tobytes())
    if name == "MXFP4":
        # E8M0: the subnormal halves (0, 1), ordinary scales, and the top (255 reads as 2^127).
        es = [0, 1, 2, 3, 64, 100, 200, 253, 254, 255] + [int(e) for e in rng.integers(110, 140, nb)]
        for b in range(nb):
            data[b * bb] = es[b]
    else:
        ds = [0.0123, -0.00071, 0.5, 3.25e-5, 6.0e-8, -0.0, 1.0, 65504.0]
        for b in range(nb):
            data[b * bb:b * bb + 2] = struct.pack("<e", ds[b % len(ds)])
    return bytes(data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()

    lines = [
        "# Golden vectors for IQ4_NL, IQ4_XS and MXFP4 from llama.cpp's ggml (llama-cpp-python 0.3.36).",
        "# Made by scripts/golden/make_iq4_mxfp4_vectors.py; do not edit by hand: rerun the script.",
        "# <section> <key> <value>: hex bytes (f32 little-endian for input/dequant), dot = f32 bits of",
        "# ggml's dispatched vec_dot and of its _generic one.",
    ]
    act_x = gen_act(SEEDS["act"])
    acts = {}
    for a in ["Q8_0", "Q8_K"]:
        acts[a] = quantize_ref(a, act_x)
        lines.append("%s input %s" % (a, act_x.tobytes().hex()))
        lines.append("%s quant %s" % (a, acts[a].hex()))

    for name in ORDER:
        act = acts[TYPES[name][3]]
        x = gen_input(SEEDS[name])
        q = quantize_chunk(name, x)
        ref = quantize_ref(name, x)
        print("%s: ggml_quantize_chunk %s the traits' from_float_ref" % (name, "equals" if q == ref else "differs from"),
              file=sys.stderr)
        dq = dequantize(name, q)
        arb = arbitrary_blocks(name, SEEDS[name] + 1000)
        darb = dequantize(name, arb)
        lines.append("%s input %s" % (name, x.tobytes().hex()))
        lines.append("%s quant %s" % (name, q.hex()))
        lines.append("%s dequant %s" % (name, dq.tobytes().hex()))
        lines.append("%s dot %s %s" % (name, f32_bits(vec_dot(name, q, act)), f32_bits(vec_dot(name, q, act, True))))
        lines.append("%s arb %s" % (name, arb.hex()))
        lines.append("%s arb_dequant %s" % (name, darb.tobytes().hex()))
        if np.all(np.isfinite(darb)):
            lines.append("%s arb_dot %s %s" % (name, f32_bits(vec_dot(name, arb, act)),
                                                f32_bits(vec_dot(name, arb, act, True))))
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote", os.path.normpath(args.out), file=sys.stderr)


if __name__ == "__main__":
    main()

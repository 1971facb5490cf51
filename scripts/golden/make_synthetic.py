#!/usr/bin/env python3
"""Tiny synthetic GGUF models (random weights, fixed seeds) and llama.cpp's logits for them.

For every weight format hearth supports (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K,
Q3_K, Q4_K, Q5_K, Q6_K) this writes one `llama` model whose 2-D weight matrices (token_embd
included) are all in that format, plus `gemma3` models for a few formats. Norms are F32.
Weights are quantized by llama.cpp's own ggml (`ggml_quantize_chunk`), so the blocks are what
llama.cpp's converter would make.

Each model is then evaluated by llama.cpp (llama-cpp-python) on a fixed token sequence with
logits for every position; the logits go to `<name>.logits.json` next to the model, with
llama.cpp's self-agreement (flash attention on vs off) so tests can size their tolerance.

Needs the llama-cpp-python wheel, the `gguf` package and numpy:
    /work/ref/venv/bin/python scripts/golden/make_synthetic.py [--out tests/data/synthetic]
"""

import argparse
import ctypes
import json
import os
import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType as T

# ---------------------------------------------------------------------------------------------
# Quantization through llama.cpp's ggml


def load_ggml():
    import llama_cpp

    d = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    base = ctypes.CDLL(os.path.join(d, "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
    base.ggml_quantize_chunk.restype = ctypes.c_size_t
    base.ggml_quantize_chunk.argtypes = [
        ctypes.c_int,  # type
        ctypes.c_void_p,  # src (f32)
        ctypes.c_void_p,  # dst
        ctypes.c_int64,  # start
        ctypes.c_int64,  # nrows
        ctypes.c_int64,  # n_per_row
        ctypes.c_void_p,  # imatrix
    ]
    base.ggml_row_size.restype = ctypes.c_size_t
    base.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    return base


GGML = load_ggml()


def quantize(w, ty):
    """A `[rows, n_per_row]` float matrix as ggml blocks of type `ty`: uint8 `[rows, row_bytes]`
    (or the float array itself for F32)."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    rows, n = w.shape
    if ty == T.F32:
        return w
    row_bytes = GGML.ggml_row_size(int(ty), n)
    dst = np.zeros((rows, row_bytes), dtype=np.uint8)
    written = GGML.ggml_quantize_chunk(
        int(ty), w.ctypes.data, dst.ctypes.data, 0, rows, n, None
    )
    assert written == rows * row_bytes, (ty, written, rows * row_bytes)
    return dst


# ---------------------------------------------------------------------------------------------
# Vocabulary: a minimal SentencePiece ("llama") vocab

NORMAL_PIECES = ["▁", "▁the", "▁a", "e", "t", "o", "n", "▁is", "▁of", "s", "▁hearth", "in", "er"]


def vocab():
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + NORMAL_PIECES
    # token types: 1 normal, 2 unknown, 3 control, 6 byte
    types = [2, 3, 3] + [6] * 256 + [1] * len(NORMAL_PIECES)
    scores = [0.0, 0.0, 0.0] + [0.0] * 256 + [-float(i + 1) for i in range(len(NORMAL_PIECES))]
    return tokens, scores, types


N_VOCAB = len(vocab()[0])

# ---------------------------------------------------------------------------------------------
# Models


def llama_spec(name, fmt, n_embd, n_head, n_head_kv, head_dim, n_ff, n_layer, tied, seed):
    return dict(
        name=name, arch="llama", fmt=fmt, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv,
        head_dim=head_dim, n_ff=n_ff, n_layer=n_layer, tied=tied, seed=seed,
    )


def gemma3_spec(name, fmt, n_embd, n_head, n_head_kv, head_dim, n_ff, n_layer, tied, seed):
    return dict(
        name=name, arch="gemma3", fmt=fmt, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv,
        head_dim=head_dim, n_ff=n_ff, n_layer=n_layer, tied=tied, seed=seed,
    )


# Shapes: k-quant rows must be multiples of 256 elements, the 32-element formats only of 32,
# so the small-block and float formats use narrower models (which keeps the files small).
SPECS = [
    llama_spec("llama_f32", "F32", 64, 2, 1, 32, 128, 1, True, 101),
    llama_spec("llama_f16", "F16", 64, 2, 1, 32, 128, 2, False, 102),
    llama_spec("llama_bf16", "BF16", 64, 2, 1, 32, 128, 2, True, 103),
    llama_spec("llama_q8_0", "Q8_0", 128, 4, 2, 32, 128, 2, True, 104),
    llama_spec("llama_q4_0", "Q4_0", 128, 2, 1, 64, 128, 2, True, 105),
    llama_spec("llama_q4_1", "Q4_1", 128, 4, 2, 32, 256, 2, False, 106),
    llama_spec("llama_q5_0", "Q5_0", 128, 2, 1, 64, 128, 2, False, 107),
    llama_spec("llama_q5_1", "Q5_1", 128, 4, 2, 32, 128, 2, True, 108),
    llama_spec("llama_q2_k", "Q2_K", 256, 4, 2, 64, 256, 1, False, 109),
    llama_spec("llama_q3_k", "Q3_K", 256, 4, 2, 64, 256, 1, True, 110),
    llama_spec("llama_q4_k", "Q4_K", 256, 4, 2, 64, 256, 1, False, 111),
    llama_spec("llama_q5_k", "Q5_K", 256, 4, 2, 64, 256, 1, False, 112),
    llama_spec("llama_q6_k", "Q6_K", 256, 4, 2, 64, 256, 1, True, 113),
    # Gemma 3: six layers so that layer 5 is global and 0..4 slide; head_dim * n_head may differ
    # from n_embd (as in the real models). Real Gemma 3 ties the output to the embedding; with a
    # tied head the current token's own logit tends to dominate, so one model has its own head.
    gemma3_spec("gemma3_q4_k", "Q4_K", 256, 4, 1, 64, 256, 6, False, 201),
    gemma3_spec("gemma3_q8_0", "Q8_0", 64, 2, 1, 64, 96, 6, True, 202),
    gemma3_spec("gemma3_f16", "F16", 64, 2, 1, 64, 64, 6, True, 203),
]

GEMMA3_SLIDING_WINDOW = 4
RMS_EPS = {"llama": 1e-5, "gemma3": 1e-6}


def make_tensors(spec):
    """name -> (float32 array in numpy order [rows, cols], is_matrix)."""
    rng = np.random.default_rng(spec["seed"])
    e, hd, nh, nkv, ff = spec["n_embd"], spec["head_dim"], spec["n_head"], spec["n_head_kv"], spec["n_ff"]

    def mat(rows, cols, gain=1.0):
        # std gain/sqrt(fan_in): activations stay O(1) through each product.
        return (rng.standard_normal((rows, cols)) * (gain / np.sqrt(cols))).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    t = {}
    # Embedding rows have rms ~1.5/sqrt(n_embd) per element: llama's first rmsnorm undoes the
    # scale, gemma3 multiplies them by sqrt(n_embd) (to rms ~1.5, like its sub-block outputs).
    t["token_embd.weight"] = (mat(N_VOCAB, e, 1.5), True)
    for l in range(spec["n_layer"]):
        p = f"blk.{l}."
        t[p + "attn_norm.weight"] = (norm(e), False)
        t[p + "attn_q.weight"] = (mat(nh * hd, e), True)
        t[p + "attn_k.weight"] = (mat(nkv * hd, e), True)
        t[p + "attn_v.weight"] = (mat(nkv * hd, e, 1.5), True)
        t[p + "attn_output.weight"] = (mat(e, nh * hd), True)
        if spec["arch"] == "gemma3":
            t[p + "attn_q_norm.weight"] = (norm(hd), False)
            t[p + "attn_k_norm.weight"] = (norm(hd), False)
            t[p + "post_attention_norm.weight"] = (norm(e), False)
            t[p + "post_ffw_norm.weight"] = (norm(e), False)
        t[p + "ffn_norm.weight"] = (norm(e), False)
        t[p + "ffn_gate.weight"] = (mat(ff, e, 1.5), True)
        t[p + "ffn_up.weight"] = (mat(ff, e), True)
        t[p + "ffn_down.weight"] = (mat(e, ff, 1.5), True)
    t["output_norm.weight"] = (norm(e), False)
    if not spec["tied"]:
        t["output.weight"] = (mat(N_VOCAB, e, 2.0), True)
    return t


FILE_TYPE = {  # general.file_type (llama_ftype) for the all-one-format models
    "F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10,
    "Q3_K": 12, "Q4_K": 15, "Q5_K": 17, "Q6_K": 18, "BF16": 32,
}


def write_model(spec, path):
    arch = spec["arch"]
    ty = T[spec["fmt"]]
    w = gguf.GGUFWriter(path, arch)
    w.add_name(spec["name"])
    w.add_file_type(FILE_TYPE[spec["fmt"]])
    w.add_context_length(256)
    w.add_embedding_length(spec["n_embd"])
    w.add_block_count(spec["n_layer"])
    w.add_feed_forward_length(spec["n_ff"])
    w.add_head_count(spec["n_head"])
    w.add_head_count_kv(spec["n_head_kv"])
    w.add_layer_norm_rms_eps(RMS_EPS[arch])
    if arch == "llama":
        w.add_rope_dimension_count(spec["head_dim"])
        w.add_rope_freq_base(10000.0)
        w.add_vocab_size(N_VOCAB)
    else:
        w.add_key_length(spec["head_dim"])
        w.add_value_length(spec["head_dim"])
        w.add_rope_freq_base(1000000.0)
        w.add_sliding_window(GEMMA3_SLIDING_WINDOW)
    tokens, scores, types = vocab()
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for name, (arr, is_matrix) in make_tensors(spec).items():
        if is_matrix and ty != T.F32:
            w.add_tensor(name, quantize(arr, ty), raw_dtype=ty)
        else:
            w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ---------------------------------------------------------------------------------------------
# Reference logits


def token_sequence(seed=7, n=24):
    rng = np.random.default_rng(seed)
    # BOS, then ordinary and byte tokens (ids >= 3), with a repeat so attention has a match.
    ids = [1] + [int(x) for x in rng.integers(3, N_VOCAB, n - 1)]
    ids[15] = ids[4]
    return ids


def llama_logits(path, ids, flash_attn):
    from llama_cpp import Llama

    llm = Llama(
        path, n_ctx=64, n_threads=2, n_threads_batch=2, logits_all=True,
        flash_attn=flash_attn, verbose=False,
    )
    assert llm.n_vocab() == N_VOCAB, llm.n_vocab()
    llm.eval(ids)
    out = np.array(llm.scores[: len(ids)], dtype=np.float64)
    llm.close()
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default_out = os.path.normpath(os.path.join(here, "..", "..", "tests", "data", "synthetic"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=default_out)
    ap.add_argument("--only", nargs="*", help="model names to (re)make")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    import llama_cpp

    ids = token_sequence()
    total = 0
    for spec in SPECS:
        if args.only and spec["name"] not in args.only:
            continue
        gguf_name = spec["name"] + ".gguf"
        path = os.path.join(args.out, gguf_name)
        write_model(spec, path)
        fa = llama_logits(path, ids, True)
        nofa = llama_logits(path, ids, False)
        d = np.abs(fa - nofa)
        top2 = np.sort(fa, axis=1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
        doc = {
            "model": gguf_name,
            "arch": spec["arch"],
            "format": spec["fmt"],
            "made_by": "scripts/golden/make_synthetic.py",
            "llama_cpp_python": llama_cpp.__version__,
            "n_vocab": N_VOCAB,
            "hparams": {k: spec[k] for k in ("n_embd", "n_head", "n_head_kv", "head_dim", "n_ff", "n_layer", "tied")},
            "tokens": ids,
            "flash_attn": True,
            "self_diff": {"max": round(float(d.max()), 6), "mean": round(float(d.mean()), 7)},
            "logits": [[round(float(v), 5) for v in row] for row in fa],
        }
        with open(os.path.join(args.out, spec["name"] + ".logits.json"), "w") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.write("\n")
        size = os.path.getsize(path)
        total += size
        print(
            f"{spec['name']:14s} {size:8d} B  logit std {fa.std():.3f}  self-diff max {d.max():.2e} "
            f"mean {d.mean():.2e}  min top-2 margin {margin.min():.3f}",
            file=sys.stderr,
        )
    print(f"total model bytes {total}", file=sys.stderr)


if __name__ == "__main__":
    main()

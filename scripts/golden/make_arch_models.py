#!/usr/bin/env python3
"""Tiny random-weight GGUF models, one or more per architecture, and llama.cpp's output for them.

`make_synthetic.py` covers the weight formats on `llama` and `gemma3`; this script covers the
architectures: each model is built so that its architecture's own features (biases, Q/K norms,
experts, rope scaling, soft-capping, sliding windows, sinks, scales, ...) change the result
within the evaluated sequence. Weights are random with fixed seeds, quantized by llama.cpp's own
ggml (through `make_synthetic.quantize`); norms, biases and other vectors are F32. The 2-D
weights are F16 (untied embeddings Q8_0, one model's experts MXFP4): with Q8_0 weights llama.cpp
quantizes every activation too, which blows rounding differences up to ~0.3 logit.

Each model is evaluated by llama.cpp (llama-cpp-python) on a fixed token sequence longer than
the sliding windows and the small original contexts used for rope scaling. Causal models give
logits for every position, embedding models (bert, nomic-bert) their pooled embedding. The
results go to `<name>.logits.json` next to `<name>.gguf`, with:

- `self_diff`: how far llama.cpp moves with flash attention off (the tolerance scale);
- `margin`: llama.cpp's top-1 minus top-2 logit per position (tests compare the argmax only
  where it is clear);
- `feature_checks`: for each feature, how far the logits move when the model is rebuilt with
  that feature switched off (same weights otherwise) - the evidence that the feature bites;
- `moe_router_gap` (MoE models): per layer, the gaps between the last chosen and the first
  unchosen expert's router score against their flash-attn on/off noise; the token sequence is
  chosen so that no routing decision is a near tie (which could send a token elsewhere);
- `hparams`: every `<arch>.*` key written, read back from the file.

Needs the llama-cpp-python wheel, the `gguf` package and numpy:
    /work/ref/venv/bin/python scripts/golden/make_arch_models.py [--only NAME ...] [--no-checks]
"""

import argparse
import ctypes
import json
import math
import os
import re
import sys
import tempfile

import numpy as np

import gguf
from gguf import GGMLQuantizationType as T

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_synthetic import quantize  # noqa: E402  (llama.cpp's ggml_quantize_chunk)

SEQ_LEN = 48  # evaluated tokens: longer than every window (8) and original context (8/16)
N_CTX = 64  # requested context; llama.cpp pads it to 256 (matters for LongRoPE, see phi3)
THREADS = 2

# ---------------------------------------------------------------------------------------------
# Vocabularies: small, but of the kind each family's real files carry.


class Vocab:
    def __init__(self, model, pre, tokens, types, scores=None, merges=None, special=None,
                 add_bos=None, add_eos=None, add_sep=None, token_type_count=None):
        self.model, self.pre, self.tokens, self.types = model, pre, tokens, types
        self.scores, self.merges = scores, merges
        self.special = special or {}
        self.add_bos, self.add_eos, self.add_sep = add_bos, add_eos, add_sep
        self.token_type_count = token_type_count

    @property
    def n(self):
        return len(self.tokens)

    def normal_ids(self):
        return [i for i, t in enumerate(self.types) if t in (1, 6)]

    def write(self, w):
        w.add_tokenizer_model(self.model)
        w.add_tokenizer_pre(self.pre)
        w.add_token_list(self.tokens)
        w.add_token_types(self.types)
        if self.scores is not None:
            w.add_token_scores(self.scores)
        if self.merges is not None:
            w.add_token_merges(self.merges)
        if self.token_type_count is not None:
            w.add_token_type_count(self.token_type_count)
        adders = {
            "bos": w.add_bos_token_id, "eos": w.add_eos_token_id, "unk": w.add_unk_token_id,
            "pad": w.add_pad_token_id, "sep": w.add_sep_token_id, "mask": w.add_mask_token_id,
            "eot": w.add_eot_token_id,
        }
        for k, v in self.special.items():
            adders[k](v)
        if self.add_bos is not None:
            w.add_add_bos_token(self.add_bos)
        if self.add_eos is not None:
            w.add_add_eos_token(self.add_eos)
        if self.add_sep is not None:
            w.add_add_sep_token(self.add_sep)


def gpt2_byte_chars():
    """The 256 byte tokens of a byte-level BPE: printable Latin-1 bytes stand for themselves,
    the others are shifted to U+0100 and up (GPT-2's scheme), in GPT-2's vocabulary order."""
    printable = (list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100)))
    table, shift = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(0x100 + shift)
            shift += 1
    order = printable + [b for b in range(256) if b not in printable]
    return [table[b] for b in order]


BPE_WORDS = [
    "Ġthe", "Ġof", "Ġand", "Ġto", "Ġa", "Ġin", "Ġis", "Ġthat", "Ġfor", "Ġit", "Ġwith", "Ġas",
    "Ġon", "Ġhearth", "Ġfire", "Ġstone", "Ġwarm", "Ġlight", "ing", "ed", "er", "es", "ly",
    "tion", "Ġmodel", "Ġtoken", "Ċ", "ĊĊ", "Ġ{", "();", "Ġ=", "Ġreturn",
]


def bpe_merges(words):
    """Merges that build each word left to right, and the tokens they make."""
    merges, made = [], []
    have = set(gpt2_byte_chars())
    for word in words:
        cur = word[0]
        for ch in word[1:]:
            new = cur + ch
            if new not in have:
                merges.append(f"{cur} {ch}")
                made.append(new)
                have.add(new)
            cur = new
    return merges, made


def bpe_vocab(pre, specials, specials_first=False, bos=None, eos=None, pad=None, eot=None,
              add_bos=False):
    """Byte-level BPE (`tokenizer.ggml.model = gpt2`): the 256 byte tokens, the tokens of a few
    merges, and the family's control tokens (at the end, or first as in tekken)."""
    merges, made = bpe_merges(BPE_WORDS)
    normal = gpt2_byte_chars() + made
    if specials_first:
        tokens = specials + normal
        types = [3] * len(specials) + [1] * len(normal)
    else:
        tokens = normal + specials
        types = [1] * len(normal) + [3] * len(specials)
    idx = {t: i for i, t in enumerate(tokens)}
    special = {}
    for key, tok in (("bos", bos), ("eos", eos), ("pad", pad), ("eot", eot)):
        if tok is not None:
            special[key] = idx[tok]
    return Vocab("gpt2", pre, tokens, types, merges=merges, special=special,
                 add_bos=add_bos, add_eos=False)


SPM_PIECES = [
    "▁", "▁the", "▁a", "e", "t", "o", "n", "▁is", "▁of", "s", "▁hearth", "in", "er", "▁to",
    "▁and", "▁fire", "▁stone", "▁warm", "ing", "ed", "▁mod", "el", "▁tok", "en", "▁light",
    "ly", "re", "▁on", "▁it", "at", "▁that", "▁for",
]


def spm_vocab(head, tail=(), bos="<s>", eos="</s>", unk="<unk>", pad=None, pre="default"):
    """SentencePiece (`tokenizer.ggml.model = llama`): the family's leading special tokens,
    the 256 byte tokens, some scored pieces, and trailing control tokens."""
    tokens = list(head) + [f"<0x{b:02X}>" for b in range(256)] + SPM_PIECES + list(tail)
    types = ([2 if t == unk else 3 for t in head] + [6] * 256 + [1] * len(SPM_PIECES)
             + [3] * len(tail))
    scores = [0.0] * len(head) + [0.0] * 256 + [-float(i + 1) for i in range(len(SPM_PIECES))]
    scores += [0.0] * len(tail)
    idx = {t: i for i, t in enumerate(tokens)}
    special = {"bos": idx[bos], "eos": idx[eos], "unk": idx[unk]}
    if pad is not None:
        special["pad"] = idx[pad]
    return Vocab("llama", pre, tokens, types, scores=scores, special=special,
                 add_bos=True, add_eos=False)


WPM_WORDS = [
    "the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "with", "as", "on", "hearth",
    "fire", "stone", "warm", "light", "model", "token", "embed", "search", "query", "document",
    "was", "he", "she", "they", "we", "you", "be", "at", "by", "this", "had", "not", "are", "but",
    "from", "or", "have", "an", "which", "one", "were", "her", "all", "there", "been", "has",
    "when", "who", "will", "more", "no", "if", "out", "so", "said", "what", "up", "its", "about",
    "into", "than", "them", "can", "only", "other", "new", "some", "could", "time", "these",
    "two", "may", "then", "do", "first", "any", "my", "now", "such", "like", "our", "over",
    "man", "me", "even", "most", "made", "after", "also", "did", "many", "before", "must",
    "through", "back", "years", "where", "much", "your", "way", "well", "down", "should",
    "because", "each", "just", "those", "people", "how", "too", "little", "state", "good",
    "very", "make", "world", "still", "own", "see", "men", "work", "long", "get", "here",
    "between", "both", "life", "being", "under", "never", "day", "same", "another", "know",
]
WPM_SUFFIXES = ["ing", "ed", "s", "er", "ly", "tion", "es"]


def wpm_vocab():
    """WordPiece (`tokenizer.ggml.model = bert`) in the form llama.cpp's converter writes:
    word-initial pieces carry a leading U+2581, `##` continuation pieces lose their `##`."""
    head = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789") + list(".,;:!?'\"()-/")
    pieces = ["▁" + c for c in chars] + list(chars)  # word-initial and ## forms
    pieces += ["▁" + w for w in WPM_WORDS] + WPM_SUFFIXES
    pieces = list(dict.fromkeys(pieces))  # "▁a", "s" come twice
    tokens = head + pieces
    types = [3] * len(head) + [1] * len(pieces)
    types[1] = 2  # [UNK]
    special = {"pad": 0, "unk": 1, "bos": 2, "sep": 3, "mask": 4}  # bos is [CLS]
    return Vocab("bert", "default", tokens, types, special=special, add_bos=True, add_eos=False,
                 add_sep=True, token_type_count=2)


def qwen_vocab():
    return bpe_vocab("qwen2", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                     bos="<|endoftext|>", eos="<|im_end|>", pad="<|endoftext|>")


LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                   "<|end_header_id|>", "<|eot_id|>"]


def llama3_vocab():
    return bpe_vocab("llama-bpe", LLAMA3_SPECIALS, bos="<|begin_of_text|>", eos="<|eot_id|>",
                     eot="<|eot_id|>", add_bos=True)


# ---------------------------------------------------------------------------------------------
# Model building


class Model:
    """Metadata and tensors of one model. Tensors are numpy arrays in numpy order (the reverse
    of ggml's ne), each with the ggml type it is stored in."""

    def __init__(self, name, arch, vocab, fmt, seed, features):
        self.name, self.arch, self.vocab, self.fmt = name, arch, vocab, T[fmt]
        self.rng = np.random.default_rng(seed)
        self.features = features
        self.kv = []  # (GGUFWriter method name, value)
        self.t = {}

    # --- metadata
    def add(self, method, value):
        self.kv.append((method, value))

    # --- tensors (every draw happens whatever is ablated, so the weights stay the same)
    def mat(self, name, rows, cols, gain=1.0, ty=None):
        # std gain/sqrt(fan_in): activations stay O(1) through each product.
        a = (self.rng.standard_normal((rows, cols)) * (gain / np.sqrt(cols))).astype(np.float32)
        self.t[name] = (a, self.fmt if ty is None else ty)
        return a

    def exps(self, name, n_exp, rows, cols, gain=1.0, ty=None):
        a = self.rng.standard_normal((n_exp, rows, cols)) * (gain / np.sqrt(cols))
        self.t[name] = (a.astype(np.float32), self.fmt if ty is None else ty)

    def vec(self, name, shape, mean=0.0, std=1.0):
        a = (mean + std * self.rng.standard_normal(shape)).astype(np.float32)
        self.t[name] = (a, T.F32)
        return a

    def norm(self, name, n, scale=1.0):
        return self.vec(name, n, mean=scale, std=0.1 * scale)

    def raw(self, name, arr, ty=T.F32):
        self.t[name] = (np.asarray(arr, dtype=np.float32), ty)

    def zero(self, name):
        a, ty = self.t[name]
        self.t[name] = (np.zeros_like(a), ty)

    def fill(self, name, value):
        a, ty = self.t[name]
        self.t[name] = (np.full_like(a, value), ty)

    # --- common blocks
    def attn(self, p, n_embd, n_head, n_kv, hd, qk_gain=1.5, v_gain=1.0, o_gain=1.0,
             bias=None, o_bias=None):
        self.mat(p + "attn_q.weight", n_head * hd, n_embd, qk_gain)
        self.mat(p + "attn_k.weight", n_kv * hd, n_embd, qk_gain)
        self.mat(p + "attn_v.weight", n_kv * hd, n_embd, v_gain)
        self.mat(p + "attn_output.weight", n_embd, n_head * hd, o_gain)
        if bias:
            self.vec(p + "attn_q.bias", n_head * hd, std=bias)
            self.vec(p + "attn_k.bias", n_kv * hd, std=bias)
            self.vec(p + "attn_v.bias", n_kv * hd, std=bias)
        if o_bias:
            self.vec(p + "attn_output.bias", n_embd, std=o_bias)

    def swiglu(self, p, n_embd, n_ff, gate_gain=1.5, up_gain=1.0, down_gain=1.5):
        self.mat(p + "ffn_gate.weight", n_ff, n_embd, gate_gain)
        self.mat(p + "ffn_up.weight", n_ff, n_embd, up_gain)
        self.mat(p + "ffn_down.weight", n_embd, n_ff, down_gain)

    def common_kv(self, n_ctx_train, n_embd, n_layer, n_ff, n_head, n_kv=None):
        self.add("add_context_length", n_ctx_train)
        self.add("add_embedding_length", n_embd)
        self.add("add_block_count", n_layer)
        self.add("add_feed_forward_length", n_ff)
        self.add("add_head_count", n_head)
        if n_kv is not None:
            self.add("add_head_count_kv", n_kv)


FILE_TYPE = {"F32": 0, "F16": 1, "Q4_0": 2, "Q8_0": 7, "BF16": 32, "MXFP4": 38}


def write_gguf(m, path):
    w = gguf.GGUFWriter(path, m.arch)
    w.add_name(m.name)
    w.add_file_type(getattr(m, "file_type", FILE_TYPE[m.fmt.name]))
    for method, value in m.kv:
        getattr(w, method)(value)
    m.vocab.write(w)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for name, (arr, ty) in m.t.items():
        if ty == T.F32:
            w.add_tensor(name, np.ascontiguousarray(arr, dtype=np.float32))
            continue
        shape = arr.shape
        q = quantize(arr.reshape(-1, shape[-1]), ty)
        w.add_tensor(name, q.reshape(*shape[:-1], q.shape[-1]), raw_dtype=ty)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def written_hparams(path, arch):
    """The `<arch>.*` keys of a written file, as JSON values."""
    r = gguf.GGUFReader(path)
    out = {}
    for key, field in r.fields.items():
        if not key.startswith(arch + "."):
            continue
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            out[key] = [field.parts[i].tolist()[0] for i in field.data]
        elif field.types[0] == gguf.GGUFValueType.STRING:
            out[key] = bytes(field.parts[-1]).decode()
        else:
            v = field.parts[-1].tolist()[0]
            out[key] = float(f"{v:.7g}") if isinstance(v, float) else v  # float32 -> shortest
    return out


# ---------------------------------------------------------------------------------------------
# The models. Each builder takes `off`, the name of one feature to switch off (or None), and
# returns the Model; `CHECKS[name]` lists the features a rebuilt model switches off.

MODELS = {}
CHECKS = {}


def model(name, checks=()):
    def reg(fn):
        MODELS[name] = fn
        CHECKS[name] = list(checks)
        return fn
    return reg


def plain_output(m, n_vocab, n_embd, gain):
    m.mat("output.weight", n_vocab, n_embd, gain)


@model("qwen2", checks=["qkv_bias"])
def qwen2(off=None, name="qwen2", seed=301, yarn=False):
    v = qwen_vocab()
    feats = ["qkv_bias", "gqa", "rope_neox"]
    if yarn:
        feats.append("rope_yarn")
    m = Model(name, "qwen2", v, "F16", seed, feats)
    e, nh, nkv, hd, ff, nl = 128, 4, 2, 32, 128, 2
    m.common_kv(256, e, nl, ff, nh, nkv)
    m.add("add_layer_norm_rms_eps", 1e-6)
    m.add("add_rope_freq_base", 1000000.0 if not yarn else 10000.0)
    if yarn and off != "rope_yarn":
        m.add("add_rope_scaling_type", gguf.RopeScalingType.YARN)
        m.add("add_rope_scaling_factor", 4.0)
        m.add("add_rope_scaling_orig_ctx_len", 16)
    m.mat("token_embd.weight", v.n, e, 1.5, ty=T.Q8_0)
    for l in range(nl):
        p = f"blk.{l}."
        m.norm(p + "attn_norm.weight", e)
        m.attn(p, e, nh, nkv, hd, bias=1.0)
        m.norm(p + "ffn_norm.weight", e)
        m.swiglu(p, e, ff)
        if off == "qkv_bias":
            for t in "qkv":
                m.zero(p + f"attn_{t}.bias")
    m.norm("output_norm.weight", e)
    plain_output(m, v.n, e, 4.0)
    if yarn:
        m.notes = {"yarn_magnitude": "cos/sin times 1 + 0.1 * ln(factor) (no yarn_log_multiplier)",
                   "yarn_params": "ext_factor 1, beta_fast 32, beta_slow 1 (llama.cpp defaults)"}
    return m


@model("qwen2_yarn", checks=["rope_yarn"])
def qwen2_yarn(off=None):
    return qwen2(off, name="qwen2_yarn", seed=317, yarn=True)


@model("qwen3", checks=["qk_norm_weights"])
def qwen3(off=None):
    v = qwen_vocab()
    m = Model("qwen3", "qwen3", v, "F16", 302,
              ["qk_norm_per_head", "head_dim_ne_n_embd_over_n_head", "gqa", "tied_output"])
    e, nh, nkv, hd, ff, nl = 128, 4, 2, 64, 128, 2
    m.common_kv(256, e, nl, ff, nh, nkv)
    m.add("add_key_length", hd)
    m.add("add_value_length", hd)
    m.add("add_layer_norm_rms_eps", 1e-6)
    m.add("add_rope_freq_base", 1000000.0)
    m.mat("token_embd.weight", v.n, e, 4.0)  # tied: the embedding is the output head
    for l in range(nl):
        p = f"blk.{l}."
        m.norm(p + "attn_norm.weight", e)
        m.attn(p, e, nh, nkv, hd)
        # Per-head RMS norms of Q and K: weights well away from 1 so they matter, and large
        # enough that the normalized Q.K scores are peaked.
        m.norm(p + "attn_q_norm.weight", hd, scale=1.6)
        m.norm(p + "attn_k_norm.weight", hd, scale=1.6)
        m.t[p + "attn_q_norm.weight"][0][:] *= 1.0 + 0.5 * m.rng.standard_normal(hd).astype(np.float32)
        if off == "qk_norm_weights":
            m.fill(p + "attn_q_norm.weight", 1.0)
            m.fill(p + "attn_k_norm.weight", 1.0)
        m.norm(p + "ffn_norm.weight", e)
        m.swiglu(p, e, ff)
    m.norm("output_norm.weight", e)
    return m


@model("qwen3moe", checks=["top2_routing"])
def qwen3moe(off=None):
    v = qwen_vocab()
    m = Model("qwen3moe", "qwen3moe", v, "F16", 303,
              ["moe_softmax_top2_renormalized", "qk_norm_per_head", "gqa",
               "head_dim_ne_n_embd_over_n_head"])
    e, nh, nkv, hd, nl, nx, ff_exp = 64, 4, 2, 48, 2, 8, 64
    m.common_kv(256, e, nl, 256, nh, nkv)
    m.add("add_key_length", hd)
    m.add("add_value_length", hd)
    m.add("add_layer_norm_rms_eps", 1e-6)
    m.add("add_rope_freq_base", 1000000.0)
    m.add("add_expert_count", nx)
    m.add("add_expert_used_count", 1 if off == "top2_routing" else 2)
    m.add("add_expert_feed_forward_length", ff_exp)
    m.mat("token_embd.weight", v.n, e, 1.5, ty=T.Q8_0)
    for l in range(nl):
        p = f"blk.{l}."
        m.norm(p + "attn_norm.weight", e)
        m.attn(p, e, nh, nkv, hd)
        m.norm(p + "attn_q_norm.weight", hd, scale=1.5)
        m.norm(p + "attn_k_norm.weight", hd, scale=1.5)
        m.norm(p + "ffn_norm.weight", e)
        m.mat(p + "ffn_gate_inp.weight", nx, e, 2.0, ty=T.F32)
        m.exps(p + "ffn_gate_exps.weight", nx, ff_exp, e, 1.5)
        m.exps(p + "ffn_up_exps.weight", nx, ff_exp, e, 1.0)
        m.exps(p + "ffn_down_exps.weight", nx, e, ff_exp, 2.0)
    m.norm("output_norm.weight", e)
    plain_output(m, v.n, e, 4.0)
    return m


def llama3_rope_factors(hd, base, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                        original_context=16):
    """Llama 3.1's per-frequency rope divisors (the `rope_freqs` tensor): wavelengths shorter
    than original_context/high_freq_factor are kept, longer than original_context/low_freq_factor
    divided by `factor`, those between interpolated smoothly."""
    out = []
    for i in range(0, hd, 2):
        freq = 1.0 / (base ** (i / hd))
        wavelen = 2 * math.pi / freq
        if wavelen < original_context / high_freq_factor:
            out.append(1.0)
        elif wavelen > original_context / low_freq_factor:
            out.append(factor)
        else:
            smooth = (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


@model("llama3_rope_freqs", checks=["rope_freqs"])
def llama3_rope_freqs(off=None):
    v = llama3_vocab()
    m = Model("llama3_rope_freqs", "llama", v, "F16", 304,
              ["rope_freqs_llama3", "gqa", "rope_norm"])
    e, nh, nkv, hd, ff, nl, base = 128, 2, 1, 64, 128, 2, 500000.0
    m.common_kv(256, e, nl, ff, nh, nkv)
    m.add("add_rope_dimension_count", hd)
    m.add("add_rope_freq_base", base)
    m.add("add_layer_norm_rms_eps", 1e-5)
    m.add("add_vocab_size", v.n)
    m.mat("token_embd.weight", v.n, e, 1.5, ty=T.Q8_0)
    factors = llama3_rope_factors(hd, base)
    if off != "rope_freqs":
        m.raw("rope_freqs.weight", factors)
    for l in range(nl):
        p = f"blk.{l}."
        m.norm(p + "attn_norm.weight", e)
        m.attn(p, e, nh, nkv, hd, qk_gain=2.0)
        m.norm(p + "ffn_norm.weight", e)
        m.swiglu(p, e, ff)
    m.norm("output_norm.weight", e)
    plain_output(m, v.n, e, 4.0)
    m.notes = {"rope_freqs": [round(float(x), 6) for x in factors]}
    return m


@model("llama_moe", checks=["top2_routing"])
def llama_moe(off=None):
    v = spm_vocab(["<unk>", "<s>", "</s>"])
    m = Model("llama_moe", "llama", v, "F16", 305,
              ["moe_softmax_top2_renormalized", "experts_on_llama_arch", "gqa", "rope_norm"])
    e, nh, nkv, hd, ff, nl, nx = 64, 2, 1, 32, 64, 2, 8
    m.common_kv(256, e, nl, ff, nh, nkv)
    m.add("add_rope_dimension_count", hd)
    m.add("add_rope_freq_base", 1000000.0)
    m.add("add_layer_norm_rms_eps", 1e-5)
    m.add("add_vocab_size", v.n)
    m.add("add_expert_count", nx)
    m.add("add_expert_used_count", 1 if off == "top2_routing" else 2)
    m.mat("token_embd.weight", v.n, e, 1.5, ty=T.Q8_0)
    for l in range(nl):
        p = f"blk.{l}."
        m.norm(p + "attn_norm.weight", e)
        m.attn(p, e, nh, nkv, hd)
        m.norm(p + "ffn_norm.weight", e)
        m.mat(p + "ffn_gate_inp.weight", nx, e, 2.0, ty=T.F32)
        m.exps(p + "ffn_gate_exps.weight", nx, ff, e, 1.5)
        m.exps(p + "ffn_up_exps.weight", nx, ff, e, 1.0)
        m.exps(p + "ffn_down_exps.weight", nx, e, ff, 2.0)
    m.norm("output_norm.weight", e)
    plain_output(m, v.n, e, 4.0)
    return m


PHI3_SPECIALS = ["<|endoftext|>", "<|assistant|>", "<|end|>", "<|user|>", "<|system|>"]


@model("phi3", checks=["longrope_factors_and_attn_factor"])
def phi3(off=None, name="phi3", seed=306, orig_ctx=16, ctx_train=512):
    v = spm_vocab(["<unk>", "<s>", "</s>"], PHI3_SPECIALS)
    m = Model(name, "phi3", v, "F16", seed,
              ["fused_qkv", "fused_gate_up", "longrope", "partial_rotary", "gqa", "rope_neox"])
    e, nh, nkv, hd, ff, nl = 128, 4, 2, 32, 128, 2
    n_rot = 24  # partial rotary (as Phi-4-mini): 3/4 of each head
    m.common_kv(ctx_train, e, nl, ff, nh, nkv)
    m.add("add_rope_scaling_orig_ctx_len", orig_ctx)
    m.add("add_layer_norm_rms_eps", 1e-5)
    m.add("add_rope_dimension_count", n_rot)
    m.add("add_rope_freq_base", 10000.0)
    # llama.cpp reads the window but runs phi3 without it (it says "Phi SWA is currently
    # disabled"); the value here is the one LongRoPE Phi-3 files carry.
    m.add("add_sliding_window", 262144)
    scale = ctx_train / orig_ctx
    attn_factor = math.sqrt(1 + math.log(scale) / math.log(orig_ctx))
    if off != "longrope_factors_and_attn_factor":
        m.add("add_rope_scaling_attn_factors", attn_factor)
    m.mat("token_embd.weight", v.n, e, 1.5, ty=T.Q8_0)
    # LongRoPE factors: short ~1, long growing with the dimension (slow frequencies stretched).
    i = np.arange(n_rot // 2, dtype=np.float32)
    short = (1.0 + 0.05 * i + 0.1 * m.rng.random(n_rot // 2)).astype(np.float32)
    long_ = (1.0 + 2.0 * (i / (n_rot // 2 - 1)) ** 2 * 8 + 0.1 * m.rng.random(n_rot // 2)).astype(np.float32)
    if off != "longrope_factors_and_attn_factor":
        m.raw("rope_factors_long.weight", long_)
        m.raw("rope_factors_short.weight", short)
    for l in range(nl):
        p = f"blk.{l}."
        m.norm(p + "attn_norm.weight", e)
        m.mat(p + "attn_qkv.weight", (nh + 2 * nkv) * hd, e, 1.5)
        m.mat(p + "attn_output.weight", e, nh * hd)
        m.norm(p + "ffn_norm.weight", e)
        # ffn_up holds gate (first n_ff rows) then up
        up = m.mat(p + "ffn_up.weight", 2 * ff, e, 1.0)
        up[:ff] *= 1.5
        m.mat(p + "ffn_down.weight", e, ff, 1.5)
    m.norm("output_norm.weight", e)
    plain_output(m, v.n, e, 4.0)
    m.notes = {
        "rope_factors_used": "long" if 256 > orig_ctx else "short",
        "why": "llama.cpp picks rope_factors_long when its context (n_ctx padded to 256) "
               "exceeds rope.scaling.original_context_length, whatever the positions evaluated",
        "rope_scaling_attn_factor": round(attn_factor, 7),
    }
    return m


@model("phi3_short", checks=["longrope_factors_and_attn_factor"])
def phi3_short(off=None):
    # original context 4096 > llama.cpp's padded n_ctx (256): the short factors apply
    return phi3(off, name="phi3_short", seed=316, orig_ctx=4096, ctx_train=131072)


GEMMA_HEAD = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]


@model("gemma2", checks=["attn_softcap", "final_softcap", "sliding_window"])
def gemma2(off=None):
    v = spm_vocab(GEMMA_HEAD, bos="<bos>", eos="<eos>", unk="<unk>", pad="<pad>")
    m = Model("gemma2", "gemma2", v, "F16", 307,
              ["attn_logit_softcap", "final_logit_softcap", "sliding_window_alternating",
               "post_attention_norm", "post_ffw_norm", "gelu_gated", "embd_scaled_sqrt_n_embd",
               "head_dim_ne_n_embd_over_n_head", "tied_output", "gqa"])
    e, nh, nkv, hd, ff, nl = 128, 4, 2, 48, 128, 4
    m.common_kv(8192, e, nl, ff, nh, nkv)
    m.add("add_key_length", hd)
    m.add("add_value_length", hd)
    m.add("add_layer_norm_rms_eps", 1e-6)
    m.add("add_rope_freq_base", 10000.0)
    m.add("add_sliding_window", 4096 if off == "sliding_window" else 8)
    m.add("add_attn_logit_softcapping", 1e6 if off == "attn_softcap" else 2.5)
    m.add("add_final_logit_softcapping", 1e6 if off == "final_softcap" else 20.0)
    # Tied head. The embedding is scaled by sqrt(n_embd) on input (to rms ~1 here) while each
    # sub-block adds a post-normed output of rms ~2, so the current token does not dominate;
    # the final norm's weights (~8) give raw logits of std ~8, which the cap of 20 bends at the
    # top (the cap squeezes margins, so the raw logits are spread wide).
    m.mat("token_embd.weight", v.n, e, 1.0)
    for l in range(nl):
        p = f"blk.{l}."
        m.norm(p + "attn_norm.weight", e)
        m.attn(p, e, nh, nkv, hd, qk_gain=2.0)
        m.norm(p + "post_attention_norm.weight", e, scale=2.0)
        m.norm(p + "ffn_norm.weight", e)
        m.swiglu(p, e, ff)
        m.norm(p + "post_ffw_norm.weight", e, scale=2.0)
    m.norm("output_norm.weight", e, scale=8.0)
    m.notes = {"swa_layers": [0, 2], "window": 8,
               "masked_if": "query_pos - key_pos >= window (a query sees itself and 7 before)",
               "attention_scale": "queries times 1/sqrt(key_length) (not 27B)"}
    return m


@model("gpt2", checks=["pos_embd"])
def gpt2(off=None):
    v = bpe_vocab("gpt-2", ["<|endoftext|>"], bos="<|endoftext|>", eos="<|endoftext|>")
    m = Model("gpt2", "gpt2", v, "F16", 308,
              ["learned_pos_embd", "fused_qkv_bias", "layernorm_bias", "gelu_ffn", "tied_output"])
    e, nh, ff, nl, ctx = 128, 4, 256, 2, 64
    m.add("add_context_length", ctx)
    m.add("add_embedding_length", e)
    m.add("add_block_count", nl)
    m.add("add_feed_forward_length", ff)
    m.add("add_head_count", nh)
    m.add("add_layer_norm_eps", 1e-5)
    m.mat("token_embd.weight", v.n, e, 4.0)
    m.vec("position_embd.weight", (ctx, e), std=1.0)
    if off == "pos_embd":
        m.zero("position_embd.weight")
    for l in range(nl):
        p = f"blk.{l}."
        m.norm(p + "attn_norm.weight", e)
        m.vec(p + "attn_norm.bias", e, std=0.2)
        m.mat(p + "attn_qkv.weight", 3 * e, e, 1.5)
        m.vec(p + "attn_qkv.bias", 3 * e, std=0.5)
        m.mat(p + "attn_output.weight", e, e)
        m.vec(p + "attn_output.bias", e, std=0.2)
        m.norm(p + "ffn_norm.weight", e)
        m.vec(p + "ffn_norm.bias", e, std=0.2)
        m.mat(p + "ffn_up.weight", ff, e, 1.5)
        m.vec(p + "ffn_up.bias", ff, std=0.5)
        m.mat(p + "ffn_down.weight", e, ff, 1.5)
        m.vec(p + "ffn_down.bias", e, std=0.2)
    m.norm("output_norm.weight", e)
    m.vec("output_norm.bias", e, std=0.2)
    return m


@model("starcoder2", checks=["biases"])
def starcoder2(off=None):
    v = bpe_vocab("starcoder", ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>"],
                  bos="<|endoftext|>", eos="<|endoftext|>")
    m = Model("starcoder2", "starcoder2", v, "F16", 309,
              ["layernorm_bias", "qkvo_bias", "ffn_bias", "gelu_ffn_not_gated", "gqa",
               "rope_neox", "tied_output"])
    e, nh, nkv, hd, ff, nl = 128, 4, 2, 32, 256, 2
    m.common_kv(4096, e, nl, ff, nh, nkv)
    m.add("add_layer_norm_eps", 1e-5)
    m.add("add_rope_freq_base", 100000.0)
    m.mat("token_embd.weight", v.n, e, 4.0)
    biases = []
    for l in range(nl):
        p = f"blk.{l}."
        m.norm(p + "attn_norm.weight", e)
        m.vec(p + "attn_norm.bias", e, std=0.2)
        m.attn(p, e, nh, nkv, hd, bias=0.7, o_bias=0.3)
        m.norm(p + "ffn_norm.weight", e)
        m.vec(p + "ffn_norm.bias", e, std=0.2)
        m.mat(p + "ffn_up.weight", ff, e, 1.5)
        m.vec(p + "ffn_up.bias", ff, std=0.5)
        m.mat(p + "ffn_down.weight", e, ff, 1.5)
        m.vec(p + "ffn_down.bias", e, std=0.3)
        biases += [p + s for s in ("attn_q.bias", "attn_k.bias", "attn_v.bias",
                                   "attn_output.bias", "ffn_up.bias", "ffn_down.bias")]
    m.norm("output_norm.weight", e)
    m.vec("output_norm.bias", e, std=0.2)
    if off == "biases":
        for b in biases:
            m.zero(b)
    return m


@model("granite", checks=["embedding_scale", "residual_scale", "attention_scale", "logit_scale"])
def granite(off=None):
    v = bpe_vocab("refact", ["<|end_of_text|>", "<|start_of_role|>", "<|end_of_role|>",
                             "<|tool_call|>"], bos="<|end_of_text|>", eos="<|end_of_text|>",
                  pad="<|end_of_text|>")
    m = Model("granite", "granite", v, "F16", 310,
              ["embedding_scale", "residual_scale", "attention_scale", "logit_scale", "gqa",
               "rope_norm"])
    e, nh, nkv, hd, ff, nl = 128, 4, 2, 32, 128, 2
    m.common_kv(4096, e, nl, ff, nh, nkv)
    m.add("add_layer_norm_rms_eps", 1e-6)
    m.add("add_rope_freq_base", 10000.0)
    m.add("add_vocab_size", v.n)
    scales = {"embedding_scale": 6.0, "residual_scale": 0.4, "attention_scale": 0.09,
              "logit_scale": 3.0}
    for k, val in scales.items():
        if off != k:
            m.add("add_" + k, val)
    if off == "logit_scale":  # the key is required: 1.0 is "off"
        m.add("add_logit_scale", 1.0)
    m.mat("token_embd.weight", v.n, e, 0.5, ty=T.Q8_0)
    for l in range(nl):
        p = f"blk.{l}."
        m.norm(p + "attn_norm.weight", e)
        m.attn(p, e, nh, nkv, hd, qk_gain=2.0, o_gain=2.0)
        m.norm(p + "ffn_norm.weight", e)
        m.swiglu(p, e, ff, down_gain=3.0)
    m.norm("output_norm.weight", e)
    plain_output(m, v.n, e, 12.0)  # divided by logit_scale 3
    return m


@model("olmo2", checks=["qk_norm_weights"])
def olmo2(off=None):
    v = bpe_vocab("dbrx", ["<|endoftext|>", "<|pad|>"], bos="<|endoftext|>",
                  eos="<|endoftext|>", pad="<|pad|>")
    m = Model("olmo2", "olmo2", v, "F16", 311,
              ["no_pre_norms", "post_attention_norm", "post_ffw_norm",
               "qk_norm_whole_projection", "gqa", "rope_neox"])
    e, nh, nkv, hd, ff, nl = 128, 4, 2, 32, 128, 2
    m.common_kv(4096, e, nl, ff, nh, nkv)
    m.add("add_layer_norm_rms_eps", 1e-6)
    m.add("add_rope_freq_base", 500000.0)
    m.mat("token_embd.weight", v.n, e, 1.0, ty=T.Q8_0)
    for l in range(nl):
        p = f"blk.{l}."
        m.attn(p, e, nh, nkv, hd, qk_gain=1.0)
        # Norms over all of Q (n_head*head_dim) and all of K (n_head_kv*head_dim); the weights
        # vary a lot across heads so that normalizing per head would give other values.
        qn = m.norm(p + "attn_q_norm.weight", nh * hd, scale=1.5)
        kn = m.norm(p + "attn_k_norm.weight", nkv * hd, scale=1.5)
        qn *= np.repeat(np.array([0.5, 1.0, 1.5, 2.0], np.float32), hd)
        kn *= np.repeat(np.array([0.6, 1.6], np.float32), hd)
        if off == "qk_norm_weights":
            m.fill(p + "attn_q_norm.weight", 1.0)
            m.fill(p + "attn_k_norm.weight", 1.0)
        m.norm(p + "post_attention_norm.weight", e)
        m.swiglu(p, e, ff)
        m.norm(p + "post_ffw_norm.weight", e)
    m.norm("output_norm.weight", e)
    plain_output(m, v.n, e, 4.0)
    return m


@model("smollm3", checks=["nope_every_4th_layer"])
def smollm3(off=None):
    v = llama3_vocab()
    # Same tensors as a `llama` model: written as llama, every layer would use rope.
    arch = "llama" if off == "nope_every_4th_layer" else "smollm3"
    m = Model("smollm3", arch, v, "F16", 312,
              ["no_rope_every_4th_layer", "gqa", "rope_norm", "tied_output"])
    e, nh, nkv, hd, ff, nl = 128, 4, 1, 32, 128, 4
    m.common_kv(4096, e, nl, ff, nh, nkv)
    m.add("add_layer_norm_rms_eps", 1e-6)
    m.add("add_rope_freq_base", 5000000.0)
    m.add("add_rope_dimension_count", hd)
    m.add("add_vocab_size", v.n)
    m.mat("token_embd.weight", v.n, e, 4.0)
    for l in range(nl):
        p = f"blk.{l}."
        m.norm(p + "attn_norm.weight", e)
        m.attn(p, e, nh, nkv, hd, qk_gain=2.0)
        m.norm(p + "ffn_norm.weight", e)
        m.swiglu(p, e, ff)
    m.norm("output_norm.weight", e)
    m.notes = {"no_rope_layers": [3], "rule": "llama.cpp skips rope where (layer + 1) % 4 == 0; "
               "the step 4 is fixed in llama.cpp, no key is read"}
    return m


@model("mistral3", checks=["rope_yarn", "attn_temperature_scale"])
def mistral3(off=None):
    specials = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"]
    v = bpe_vocab("tekken", specials, specials_first=True, bos="<s>", eos="</s>", add_bos=True)
    v.special["unk"] = 0
    m = Model("mistral3", "mistral3", v, "F16", 313,
              ["rope_yarn", "yarn_log_multiplier", "yarn_beta_from_file",
               "attn_temperature_scale", "head_dim_ne_n_embd_over_n_head", "gqa", "rope_norm"])
    e, nh, nkv, hd, ff, nl, orig = 128, 4, 2, 64, 128, 2, 8
    m.common_kv(262144, e, nl, ff, nh, nkv)
    m.add("add_key_length", hd)
    m.add("add_value_length", hd)
    m.add("add_rope_dimension_count", hd)
    m.add("add_layer_norm_rms_eps", 1e-5)
    m.add("add_rope_freq_base", 1000000.0)
    m.add("add_vocab_size", v.n)
    # As Ministral 3 writes it (yarn, mscale_all_dim 1, beta 32/1, llama-4 style attention
    # temperature), with a small original context so all of it acts within 48 tokens.
    if off != "rope_yarn":
        m.add("add_rope_scaling_type", gguf.RopeScalingType.YARN)
        m.add("add_rope_scaling_factor", 8.0)
        m.add("add_rope_scaling_yarn_beta_fast", 32.0)
        m.add("add_rope_scaling_yarn_beta_slow", 1.0)
        m.add("add_rope_scaling_yarn_log_mul", 1.0)
    m.add("add_rope_scaling_orig_ctx_len", orig)
    if off != "attn_temperature_scale":
        m.add("add_attn_temperature_scale", 0.3)
    m.mat("token_embd.weight", v.n, e, 1.5, ty=T.Q8_0)
    for l in range(nl):
        p = f"blk.{l}."
        m.norm(p + "attn_norm.weight", e)
        m.attn(p, e, nh, nkv, hd, qk_gain=2.0)
        m.norm(p + "ffn_norm.weight", e)
        m.swiglu(p, e, ff)
    m.norm("output_norm.weight", e)
    plain_output(m, v.n, e, 4.0)
    m.notes = {"attn_temperature": "after rope, Q at position p is multiplied by "
               "1 + temperature_scale * ln(floor(p / original_context_length) + 1)",
               "yarn_magnitude": "with yarn_log_multiplier 1 the rotated Q and K are not scaled "
                                 "(llama.cpp's net cos/sin factor is 1)"}
    return m


GPT_OSS_SPECIALS = ["<|startoftext|>", "<|endoftext|>", "<|start|>", "<|end|>", "<|message|>",
                    "<|channel|>", "<|return|>", "<|call|>"]


@model("gpt_oss", checks=["attn_sinks", "sliding_window", "rope_yarn", "router_bias"])
def gpt_oss(off=None, name="gpt_oss", seed=314, exp_fmt="F16"):
    v = bpe_vocab("gpt-4o", GPT_OSS_SPECIALS, bos="<|startoftext|>", eos="<|return|>",
                  pad="<|endoftext|>")
    feats = ["moe_router_bias_topk_softmax_weight", "expert_biases", "swiglu_oai_clamped",
             "attn_sinks", "sliding_window_alternating", "rope_yarn", "qkvo_bias",
             "post_attention_norm_before_moe", "head_dim_ne_n_embd_over_n_head", "gqa",
             "rope_neox"]
    m = Model(name, "gpt-oss", v, "F16", seed, feats)
    if exp_fmt == "MXFP4":
        feats.append("mxfp4_experts")
        m.file_type = FILE_TYPE["MXFP4"]  # llama.cpp's MOSTLY_MXFP4_MOE
    e, nh, nkv, hd, nl, nx, ff_exp = 64, 4, 2, 32, 2, 8, 64
    m.common_kv(4096, e, nl, ff_exp, nh, nkv)
    m.add("add_key_length", hd)
    m.add("add_value_length", hd)
    m.add("add_layer_norm_rms_eps", 1e-5)
    m.add("add_rope_freq_base", 150000.0)
    if off != "rope_yarn":
        m.add("add_rope_scaling_type", gguf.RopeScalingType.YARN)
        m.add("add_rope_scaling_factor", 4.0)
        m.add("add_rope_scaling_orig_ctx_len", 16)
        m.add("add_rope_scaling_yarn_beta_fast", 32.0)
        m.add("add_rope_scaling_yarn_beta_slow", 1.0)
    m.add("add_expert_count", nx)
    m.add("add_expert_used_count", 2)
    m.add("add_expert_feed_forward_length", ff_exp)
    m.add("add_sliding_window", 4096 if off == "sliding_window" else 8)
    m.mat("token_embd.weight", v.n, e, 1.5, ty=T.Q8_0)
    xt = T[exp_fmt]
    for l in range(nl):
        p = f"blk.{l}."
        m.norm(p + "attn_norm.weight", e)
        m.attn(p, e, nh, nkv, hd, qk_gain=2.0, bias=0.5, o_bias=0.3)
        m.vec(p + "attn_sinks.weight", nh, mean=1.0, std=1.5)
        if off == "attn_sinks":
            m.fill(p + "attn_sinks.weight", -30.0)  # exp(-30): no sink
        m.norm(p + "post_attention_norm.weight", e)
        m.mat(p + "ffn_gate_inp.weight", nx, e, 1.5, ty=T.F32)
        m.vec(p + "ffn_gate_inp.bias", nx, std=1.0)
        if off == "router_bias":
            m.zero(p + "ffn_gate_inp.bias")
        # gate/up large enough that the clamp at 7 and the gate's upper clamp act
        m.exps(p + "ffn_gate_exps.weight", nx, ff_exp, e, 5.0, ty=xt)
        m.vec(p + "ffn_gate_exps.bias", (nx, ff_exp), std=1.0)
        m.exps(p + "ffn_up_exps.weight", nx, ff_exp, e, 5.0, ty=xt)
        m.vec(p + "ffn_up_exps.bias", (nx, ff_exp), std=1.0)
        m.exps(p + "ffn_down_exps.weight", nx, e, ff_exp, 0.3, ty=xt)
        m.vec(p + "ffn_down_exps.bias", (nx, e), std=0.3)
    m.norm("output_norm.weight", e)
    plain_output(m, v.n, e, 4.0)
    m.notes = {"swa_layers": [0], "window": 8,
               "masked_if": "query_pos - key_pos >= window (a query sees itself and 7 before)",
               "swiglu_oai": "gate clamped to <= 7, up to [-7, 7]; out = (up + 1) * gate * "
                             "sigmoid(1.702 * gate)",
               "routing": "top-k of (router logits + bias), weights = softmax over the k chosen",
               "yarn_magnitude": "cos/sin times 1 + 0.1 * ln(factor) (no yarn_log_multiplier)"}
    return m


@model("gpt_oss_mxfp4", checks=["attn_sinks"])
def gpt_oss_mxfp4(off=None):
    return gpt_oss(off, name="gpt_oss_mxfp4", seed=315, exp_fmt="MXFP4")


def bert_like(off, name, arch, seed, pooling):
    v = wpm_vocab()
    nomic = arch == "nomic-bert"
    feats = ["non_causal", "token_type_embd_row0", "embd_layernorm", "post_layernorms",
             "pooling_" + {1: "mean", 2: "cls"}[pooling]]
    feats += (["fused_qkv", "rope_neox", "swiglu_ffn"] if nomic
              else ["learned_pos_embd", "qkv_bias", "gelu_ffn"])
    m = Model(name, arch, v, "F16", seed, feats)
    e, nh, nl, ctx = 128, 4, 2, 64
    ff = 256
    m.add("add_context_length", ctx if not nomic else 2048)
    m.add("add_embedding_length", e)
    m.add("add_block_count", nl)
    m.add("add_feed_forward_length", ff)
    m.add("add_head_count", nh)
    m.add("add_layer_norm_eps", 1e-12)
    m.add("add_causal_attention", False)
    m.add("add_pooling_type", gguf.PoolingType(pooling))
    if nomic:
        m.add("add_rope_freq_base", 10000.0 if off == "rope_freq_base" else 1000.0)
    m.mat("token_embd.weight", v.n, e, np.sqrt(e), ty=T.Q8_0)  # elements ~N(0, 1)
    m.vec("token_types.weight", (2, e), std=0.5)
    if off == "token_types":
        m.zero("token_types.weight")
    if not nomic:
        m.vec("position_embd.weight", (ctx, e), std=0.5)
    m.norm("token_embd_norm.weight", e)
    m.vec("token_embd_norm.bias", e, std=0.1)
    for l in range(nl):
        p = f"blk.{l}."
        if nomic:
            m.mat(p + "attn_qkv.weight", 3 * e, e, 1.5)
        else:
            m.attn(p, e, nh, nh, e // nh, qk_gain=1.5, bias=0.3, o_bias=0.2)
        if nomic:
            m.mat(p + "attn_output.weight", e, e)
        m.norm(p + "attn_output_norm.weight", e)
        m.vec(p + "attn_output_norm.bias", e, std=0.1)
        if nomic:
            m.swiglu(p, e, ff)
        else:
            m.mat(p + "ffn_up.weight", ff, e, 1.5)
            m.vec(p + "ffn_up.bias", ff, std=0.3)
            m.mat(p + "ffn_down.weight", e, ff, 1.5)
            m.vec(p + "ffn_down.bias", e, std=0.2)
        m.norm(p + "layer_output_norm.weight", e)
        m.vec(p + "layer_output_norm.bias", e, std=0.1)
    m.embedding = True
    m.pooling = pooling
    return m


@model("bert_mean", checks=["token_types"])
def bert_mean(off=None):
    return bert_like(off, "bert_mean", "bert", 318, 1)


@model("bert_cls", checks=["non_causal"])
def bert_cls(off=None):
    return bert_like(off, "bert_cls", "bert", 319, 2)


@model("nomic_bert", checks=["token_types", "rope_freq_base"])
def nomic_bert(off=None):
    return bert_like(off, "nomic_bert", "nomic-bert", 320, 1)


ORDER = ["qwen2", "qwen3", "llama3_rope_freqs", "gemma2", "phi3", "phi3_short", "qwen3moe",
         "llama_moe", "gpt2", "starcoder2", "granite", "olmo2", "smollm3", "mistral3", "gpt_oss",
         "gpt_oss_mxfp4", "bert_mean", "bert_cls", "nomic_bert", "qwen2_yarn"]
assert sorted(ORDER) == sorted(MODELS), set(ORDER) ^ set(MODELS)

# ---------------------------------------------------------------------------------------------
# llama.cpp


def token_sequence(m, seed):
    """The first token (BOS / [CLS]) then ordinary tokens, with repeats so attention has exact
    matches to find; embedders end with [SEP]."""
    rng = np.random.default_rng(seed)
    normal = m.vocab.normal_ids()
    ids = [m.vocab.special["bos"]] + [int(normal[i]) for i in rng.integers(0, len(normal), SEQ_LEN - 1)]
    ids[20], ids[33], ids[41] = ids[5], ids[12], ids[5]
    if getattr(m, "embedding", False):
        ids[-1] = m.vocab.special["sep"]
    return ids


def llama_args(flash_attn, **kw):
    # -1 for the yarn parameters means "from the model", as in llama.cpp's own defaults
    # (llama-cpp-python would otherwise force its own beta_fast/beta_slow/attn_factor).
    return dict(n_ctx=N_CTX, n_batch=N_CTX, n_ubatch=N_CTX, n_threads=THREADS,
                n_threads_batch=THREADS, flash_attn=flash_attn, verbose=False,
                yarn_ext_factor=-1.0, yarn_attn_factor=-1.0, yarn_beta_fast=-1.0,
                yarn_beta_slow=-1.0, **kw)


def llama_logits(path, ids, flash_attn, n_vocab):
    from llama_cpp import Llama

    llm = Llama(path, logits_all=True, **llama_args(flash_attn))
    assert llm.n_vocab() == n_vocab, llm.n_vocab()
    llm.eval(ids)
    out = np.array(llm.scores[: len(ids)], dtype=np.float64)
    llm.close()
    return out


def llama_embedding(path, ids, flash_attn):
    import llama_cpp
    from llama_cpp import Llama

    llm = Llama(path, embedding=True, **llama_args(flash_attn))
    n = llm.n_embd()
    llm._batch.reset()
    llm._batch.add_sequence(ids, 0, True)
    llm._ctx.kv_cache_clear()
    llm._ctx.decode(llm._batch)
    ptr = llama_cpp.llama_get_embeddings_seq(llm._ctx.ctx, 0)
    vec = np.array(ptr[:n], dtype=np.float64)
    pooling = int(llm.pooling_type())
    llm.close()
    return vec, pooling


class GgmlTensor(ctypes.Structure):
    """The leading fields of ggml.h's struct ggml_tensor (GGML_MAX_DIMS 4, GGML_MAX_SRC 10,
    GGML_MAX_OP_PARAMS 64, GGML_MAX_NAME 64), enough to read a host tensor's name and data."""
    _fields_ = [
        ("type", ctypes.c_int), ("buffer", ctypes.c_void_p), ("ne", ctypes.c_int64 * 4),
        ("nb", ctypes.c_size_t * 4), ("op", ctypes.c_int), ("op_params", ctypes.c_int32 * 16),
        ("flags", ctypes.c_int32), ("src", ctypes.c_void_p * 10), ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t), ("data", ctypes.c_void_p), ("name", ctypes.c_char * 64),
    ]


def graph_tensors(path, ids, tensor_prefix, flash_attn):
    """Per layer, an F32 tensor of llama.cpp's graph (e.g. the [n_tokens, n_expert] scores it
    picks the experts from) as [rows, ne0], read with an eval callback."""
    import llama_cpp
    import llama_cpp.llama as ll
    from llama_cpp import Llama

    want = re.compile(re.escape(tensor_prefix) + r"-(\d+)$")
    seen = {}

    def cb(t, ask, _user):
        tt = ctypes.cast(t, ctypes.POINTER(GgmlTensor)).contents
        hit = want.match(tt.name.decode(errors="replace"))
        if ask:
            return bool(hit)
        if hit and tt.type == 0:  # F32
            ne0, rows = tt.ne[0], tt.ne[1] * tt.ne[2] * tt.ne[3]
            assert tt.nb[1] == 4 * ne0  # contiguous
            buf = (ctypes.c_float * (ne0 * rows)).from_address(tt.data)
            seen[int(hit.group(1))] = np.ctypeslib.as_array(buf).reshape(rows, ne0).astype(np.float64)
        return True

    cb_c = llama_cpp.ggml_backend_sched_eval_callback(cb)
    orig = ll.llama_cpp.llama_context_default_params

    def params_with_cb():
        p = orig()
        p.cb_eval = cb_c
        return p

    ll.llama_cpp.llama_context_default_params = params_with_cb
    try:
        llm = Llama(path, logits_all=True, **llama_args(flash_attn))
        llm.eval(ids)
        llm.close()
    finally:
        ll.llama_cpp.llama_context_default_params = orig
    return seen


def router_gaps(path, ids, n_used, tensor_prefix):
    """Per layer: the gap, at each position, between the last chosen and the first unchosen
    expert's score (how close llama.cpp came to routing the token differently), against how
    far that position's scores move with flash attention off (the noise such a gap must beat).
    Reports the position where gap - 3 * noise is smallest."""
    fa = graph_tensors(path, ids, tensor_prefix, True)
    nofa = graph_tensors(path, ids, tensor_prefix, False)
    out = {}
    for il in sorted(fa):
        s = -np.sort(-fa[il], axis=1)
        gap = s[:, n_used - 1] - s[:, n_used]
        noise = np.abs(fa[il] - nofa[il]).max(axis=1)
        worst = int(np.argmin(gap - 3 * noise))
        out[str(il)] = {
            "min_gap": round(float(gap.min()), 5),
            "at_position": int(gap.argmin()),
            "self_diff_max": round(float(noise.max()), 6),
            "worst_position": worst,
            "worst_gap": round(float(gap[worst]), 5),
            "worst_self_diff": round(float(noise[worst]), 6),
        }
    return out


def moe_sequence(m, path, seed, tries=60):
    """A token sequence whose every routing decision is clear: in each layer, the smallest
    gap between the last chosen and the first unchosen expert is at least 0.01 and, at every
    position, 3x how far llama.cpp's own router scores move there with flash attention off. A near tie would let
    rounding differences route a token to another expert and change its logits wholesale."""
    n_used = written_hparams(path, m.arch)[m.arch + ".expert_used_count"]
    # gpt-oss picks from the biased logits, which llama.cpp names ffn_moe_probs
    prefix = "ffn_moe_probs" if m.arch == "gpt-oss" else "ffn_moe_logits"
    best = None
    for k in range(tries):
        ids = token_sequence(m, seed + 7919 * k)
        gaps = router_gaps(path, ids, n_used, prefix)
        score = min(g["worst_gap"] - 3 * g["worst_self_diff"] for g in gaps.values())
        score = min(score, min(g["min_gap"] for g in gaps.values()) - 0.01)
        if best is None or score > best[0]:
            best = (score, ids, gaps)
        if score >= 0:
            break
    score, ids, gaps = best
    if score < 0:
        print(f"  {m.name}: no sequence with clear routing in {tries} tries; best {gaps}",
              file=sys.stderr)
    return ids, gaps


def top5_mean_diff(ref, other):
    """Per position, mean |diff| over ref's 5 largest logits; then the mean over positions."""
    top = np.argsort(-ref, axis=1)[:, :5]
    d = np.abs(np.take_along_axis(ref, top, 1) - np.take_along_axis(other, top, 1))
    return d.mean(axis=1)


def evaluate(m, path, ids):
    if getattr(m, "embedding", False):
        fa, pooling = llama_embedding(path, ids, True)
        nofa, _ = llama_embedding(path, ids, False)
        return {"fa": fa, "nofa": nofa, "pooling": pooling}
    fa = llama_logits(path, ids, True, m.vocab.n)
    nofa = llama_logits(path, ids, False, m.vocab.n)
    return {"fa": fa, "nofa": nofa}


def cosine(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def feature_check(name, feature, ref, ids, tmpdir):
    if feature == "non_causal":
        # llama.cpp runs bert-like models as encoders, always non-causal, whatever
        # `attention.causal` says; what a causal implementation would miss is that the first
        # token's state (the CLS-pooled vector) depends on later tokens.
        later = list(ids)
        later[24:-1] = ids[1:SEQ_LEN - 24]
        m = MODELS[name]()
        path = os.path.join(tmpdir, f"{name}.gguf")
        write_gguf(m, path)
        vec, _ = llama_embedding(path, later, True)
        os.remove(path)
        return {"cosine_after_changing_tokens_24_to_46": round(cosine(ref, vec), 6)}
    m = MODELS[name](off=feature)
    path = os.path.join(tmpdir, f"{name}-{feature}.gguf")
    write_gguf(m, path)
    if getattr(m, "embedding", False):
        vec, _ = llama_embedding(path, ids, True)
        os.remove(path)
        return {"cosine_to_reference": round(cosine(ref, vec), 6)}
    out = llama_logits(path, ids, True, m.vocab.n)
    os.remove(path)
    per_pos = top5_mean_diff(ref, out)
    return {
        "top5_mean_abs_diff": round(float(per_pos.mean()), 4),
        "positions_top5_diff_over_0_25": int((per_pos > 0.25).sum()),
        "argmax_changed": int((ref.argmax(1) != out.argmax(1)).sum()),
    }


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default_out = os.path.normpath(os.path.join(here, "..", "..", "tests", "data", "arch"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=default_out)
    ap.add_argument("--only", nargs="*", help="model names to (re)make")
    ap.add_argument("--no-checks", action="store_true", help="skip the feature checks")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    import llama_cpp

    total = 0
    for seq_seed, name in enumerate(ORDER):
        if args.only and name not in args.only:
            continue
        m = MODELS[name]()
        gguf_name = name + ".gguf"
        path = os.path.join(args.out, gguf_name)
        write_gguf(m, path)
        moe = m.arch + ".expert_count" in written_hparams(path, m.arch)
        if moe:
            ids, gaps = moe_sequence(m, path, 1000 + seq_seed)
        else:
            ids = token_sequence(m, 1000 + seq_seed)
        r = evaluate(m, path, ids)
        fa, nofa = r["fa"], r["nofa"]
        d = np.abs(fa - nofa)
        doc = {
            "model": gguf_name,
            "arch": m.arch,
            "made_by": "scripts/golden/make_arch_models.py",
            "llama_cpp_python": llama_cpp.__version__,
            "features": m.features,
            "n_vocab": m.vocab.n,
            "tokenizer": {"model": m.vocab.model, "pre": m.vocab.pre},
            "weights": m.fmt.name,
            "hparams": written_hparams(path, m.arch),
            "tokens": ids,
            "n_ctx": N_CTX,
            "n_ctx_llama_cpp": 256,
            "flash_attn": True,
        }
        if hasattr(m, "notes"):
            doc["notes"] = m.notes
        if getattr(m, "embedding", False):
            doc["output"] = "pooled_embedding"
            doc["pooling_type"] = r["pooling"]
            doc["pooling"] = {1: "mean", 2: "cls"}[r["pooling"]]
            doc["self_diff"] = {"max": round(float(d.max()), 7), "cosine": round(cosine(fa, nofa), 8)}
            doc["embedding"] = [round(float(x), 6) for x in fa]
            summary = f"pooled norm {np.linalg.norm(fa):.3f} std {fa.std():.3f}  fa/nofa cos {cosine(fa, nofa):.7f}"
        else:
            top2 = np.sort(fa, axis=1)[:, -2:]
            margin = top2[:, 1] - top2[:, 0]
            clear = int((margin >= 0.25).sum())
            same_tok = int((fa.argmax(1) == np.array(ids)).sum())
            doc["output"] = "logits"
            doc["self_diff"] = {"max": round(float(d.max()), 6), "mean": round(float(d.mean()), 7),
                                "top5_mean": round(float(top5_mean_diff(fa, nofa).mean()), 7)}
            doc["margin"] = [round(float(x), 4) for x in margin]
            doc["positions_margin_ge_0_25"] = clear
            pos_top5 = top5_mean_diff(fa, nofa)
            flips = int(((fa.argmax(1) != nofa.argmax(1)) & (margin >= 0.25)).sum())
            summary = (f"logit std {fa.std():.3f}  margin>=0.25 {clear}/{len(ids)}  argmax=input "
                       f"{same_tok}  self: max {d.max():.3f} top5 max {pos_top5.max():.3f} flips {flips}")
            if moe:
                doc["moe_router_gap"] = gaps
            if m.arch == "gpt-oss":
                gate = graph_tensors(path, ids, "ffn_moe_gate_biased", True)
                up = graph_tensors(path, ids, "ffn_moe_up_biased", True)
                doc["notes"]["clamp_acts"] = {
                    str(il): {"gate_over_7": round(float((gate[il] > 7).mean()), 4),
                              "up_beyond_7": round(float((np.abs(up[il]) > 7).mean()), 4)}
                    for il in sorted(gate)}
                summary += f"  clamp {doc['notes']['clamp_acts']}"
                summary += "  router gap/noise at worst " + " ".join(
                    f"{v['worst_gap']:.3f}/{v['worst_self_diff']:.4f}" for v in gaps.values())
            doc["logits"] = [[round(float(v), 5) for v in row] for row in fa]
        if not args.no_checks:
            ref = fa
            checks = {}
            with tempfile.TemporaryDirectory() as tmp:
                for feat in CHECKS[name]:
                    checks[feat] = feature_check(name, feat, ref, ids, tmp)
            doc["feature_checks"] = checks
            summary += "\n    checks: " + "; ".join(f"{k} {v}" for k, v in checks.items())
        with open(os.path.join(args.out, name + ".logits.json"), "w") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.write("\n")
        size = os.path.getsize(path)
        total += size
        print(f"{name:18s} {m.arch:11s} {size:8d} B  {summary}", file=sys.stderr, flush=True)
    print(f"total model bytes {total}", file=sys.stderr)


if __name__ == "__main__":
    main()

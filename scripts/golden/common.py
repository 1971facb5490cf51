# Shared helpers for the golden-data scripts in this folder (imported, not run).
# Run any of them with the llama-cpp-python 0.3.36 venv, e.g.
#     /work/ref/venv/bin/python scripts/golden/make_tokens.py
"""Shared helpers: model paths, the output folder, llama.cpp calls and JSON writing."""

import ctypes
import hashlib
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
OUT_DIR = os.path.join(ROOT, "tests", "data", "golden")
DATA_DIR = os.path.join(ROOT, "tests", "data")

MODEL_FILES = {
    "smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3": "gemma-3-270m-q4_k_m.gguf",
    "qwen2_5_coder": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
}
MODEL_SHA256 = {
    "smollm2": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    "gemma3": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    "qwen2_5_coder": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
}


def cache_dir():
    """The testutil cache: $HEARTH_TEST_MODELS or <workspace>/.test-models."""
    return os.environ.get("HEARTH_TEST_MODELS") or os.path.join(ROOT, ".test-models")


def default_model_path(name):
    return os.path.join(cache_dir(), MODEL_FILES[name])


def add_model_args(parser):
    for name in MODEL_FILES:
        parser.add_argument(
            f"--{name}",
            default=default_model_path(name),
            help=f"path to {MODEL_FILES[name]} (default: testutil cache; "
            "fetch it with scripts/fetch-test-models)",
        )
    parser.add_argument(
        "--models",
        default=",".join(MODEL_FILES),
        help="comma-separated subset of models to process",
    )


def selected_models(args):
    out = []
    for name in args.models.split(","):
        name = name.strip()
        if name not in MODEL_FILES:
            sys.exit(f"unknown model {name!r}; choose from {sorted(MODEL_FILES)}")
        path = getattr(args, name)
        if not os.path.isfile(path):
            sys.exit(f"{path} is missing: run scripts/fetch-test-models first or pass --{name}")
        out.append((name, path))
    return out


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_model(name, path):
    got = sha256_file(path)
    if got != MODEL_SHA256[name]:
        sys.exit(f"{path}: sha256 {got} is not the pinned {MODEL_SHA256[name]}")
    return got


def model_info(name, path):
    import llama_cpp

    return {
        "model": name,
        "file": MODEL_FILES[name],
        "sha256": MODEL_SHA256[name],
        "reference": f"llama.cpp via llama-cpp-python {llama_cpp.__version__}",
    }


def detokenize(llm, ids, unparse_special, remove_special=False):
    """llama.cpp's own llama_detokenize (not the python wrapper's piece concatenation)."""
    import llama_cpp

    vocab = llm._model.vocab
    n = len(ids)
    arr = (llama_cpp.llama_token * max(n, 1))(*ids)
    size = max(64, 16 * n + 64)
    while True:
        buf = ctypes.create_string_buffer(size)
        got = llama_cpp.llama_detokenize(vocab, arr, n, buf, size, remove_special, unparse_special)
        if got >= 0:
            return buf.raw[:got]
        size = -got + 16


def add_bos(llm):
    return bool(llm._model.add_bos_token())


def write_json(name, obj):
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes)")
    return path


def r4(x):
    return round(float(x), 4)


def top_k(row, k=5):
    """Top-k (id, logit) of one logits row, highest first; ties broken by the lower id."""
    row = np.asarray(row, dtype=np.float32)
    idx = np.argpartition(-row, k)[: k + 8]
    idx = sorted(idx.tolist(), key=lambda i: (-float(row[i]), i))[:k]
    return [(int(i), float(row[i])) for i in idx]


def argmax(row):
    # np.argmax returns the first maximum, i.e. the lowest id among ties (as llama.cpp's greedy does).
    return int(np.argmax(row))

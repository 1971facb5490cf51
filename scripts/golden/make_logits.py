#!/usr/bin/env python3
# Run: /work/ref/venv/bin/python scripts/golden/make_logits.py [--smollm2 PATH] [--gemma3 PATH] [--models smollm2,gemma3]
"""Logit and greedy-generation golden data from llama.cpp.

Per model writes:
  tests/data/golden/logits_<model>.json
    For each prompt: the prompt ids (tokenized with the model's own BOS rule, special tokens parsed),
    64 greedy continuation ids (argmax of llama.cpp's logits, taken here; never stopped at EOS), and
    for EVERY position of the teacher-forced sequence prompt+continuation (one llama_decode) the
    top-5 ids and logits (4 decimals) and the top-two margin. Row i predicts token i+1.
    The same teacher-forced pass with flash attention off is stored as top5_ids_nofa /
    top5_logits_nofa, and llama.cpp's self-agreement between the two passes is summarized in
    reference_self_agreement.
  tests/data/golden/greedy_<model>.json
    For 4 prompts: 48 free-running greedy tokens (incremental decoding, flash attention on), their
    detokenized text, the per-step top-two margin and the first step whose margin < 0.25.

Context: Llama(n_ctx=1024, n_threads=2, flash_attn=True/False, logits_all=True, seed=0).
(In llama-cpp-python 0.3.36, flash_attn=True sets flash_attn_type=LLAMA_FLASH_ATTN_TYPE_ENABLED.)
"""

import argparse
import base64
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

N_NEW = 64
N_GREEDY = 48
NEAR_TIE = 0.25

LONG_PROSE = (
    "The village sat at the bend of a slow brown river, where the water widened into a shallow "
    "pool before it hurried on toward the sea. Every spring the fishermen repaired their nets on "
    "the stones by the bank, and the children gathered to watch the herons stalk the reeds. The "
    "miller's daughter, who had learned to read from an old almanac, kept a record of the floods, "
    "the harvests and the names of every boat that passed. One year, when the rains came early "
    "and the river rose higher than anyone could remember, her notebook became the only way to "
    "tell which fields had been lost and which could be saved. The elders met in the church and"
)

CHAT = {
    "smollm2": "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France, and what is it famous "
    "for?<|im_end|>\n<|im_start|>assistant\n",
    "gemma3": "<start_of_turn>user\nWhat is the capital of France, and what is it famous "
    "for?<end_of_turn>\n<start_of_turn>model\n",
    "qwen2_5_coder": "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\n<|im_start|>user\nWrite a Python function that checks whether a "
    "string is a palindrome.<|im_end|>\n<|im_start|>assistant\n",
}

CHAT_GREEDY = {
    "smollm2": "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n<|im_start|>user\nGive me three tips for sleeping better.<|im_end|>\n"
    "<|im_start|>assistant\n",
    "gemma3": "<start_of_turn>user\nGive me three tips for sleeping better.<end_of_turn>\n"
    "<start_of_turn>model\n",
    "qwen2_5_coder": "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\n<|im_start|>user\nGive me three tips for sleeping better.<|im_end|>\n"
    "<|im_start|>assistant\n",
}


def logit_prompts(model):
    return [
        ("prose", "The old lighthouse keeper climbed the spiral stairs every evening, and"),
        ("question", "Question: Why is the sky blue?\nAnswer:"),
        ("code", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"),
        ("list", "Things to pack for a weekend camping trip:\n1. Tent\n2."),
        ("french", "La ville de Paris est connue pour"),
        ("chinese", "\u4e2d\u56fd\u7684\u9996\u90fd\u662f"),
        ("chat", CHAT[model]),
        ("arithmetic", "12 + 7 = 19\n35 + 48 ="),
        ("json", "{\"name\": \"Alice\", \"age\": 30, \"city\":"),
        ("single_word", "Hello"),
        ("long_prose", LONG_PROSE),
    ]


def greedy_prompts(model):
    return [
        ("story", "Once upon a time,"),
        ("chat", CHAT_GREEDY[model]),
        ("counting", "1, 2, 3, 4, 5, 6,"),
        ("code", "# Python function that reverses a string\ndef"),
    ]


def load(path, flash):
    from llama_cpp import Llama

    return Llama(
        model_path=path,
        n_ctx=1024,
        n_threads=2,
        n_threads_batch=2,
        flash_attn=flash,
        logits_all=True,
        seed=0,
        verbose=False,
    )


def prompt_ids(llm, text):
    return llm.tokenize(text.encode("utf-8"), add_bos=common.add_bos(llm), special=True)


def margin(row):
    t = common.top_k(row, 2)
    return t[0][1] - t[1][1]


def greedy(llm, ids, n):
    """Free-running greedy decoding; returns (new ids, per-step margins)."""
    llm.reset()
    llm.eval(ids)
    out, margins = [], []
    for _ in range(n):
        row = llm.scores[llm.n_tokens - 1]
        tok = common.argmax(row)
        out.append(tok)
        margins.append(margin(row))
        llm.eval([tok])
    return out, margins


def teacher_forced(llm, ids):
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32, copy=True)


def top5_arrays(scores):
    ids, logits, margins = [], [], []
    for row in scores:
        t = common.top_k(row, 5)
        ids.append([i for i, _ in t])
        logits.append([common.r4(v) for _, v in t])
        margins.append(common.r4(t[0][1] - t[1][1]))
    return ids, logits, margins


def make_logits(name, path):
    prompts = logit_prompts(name)
    fa = load(path, True)
    records, fa_scores = [], []
    for pname, text in prompts:
        ids = prompt_ids(fa, text)
        cont, _ = greedy(fa, ids, N_NEW)
        full = ids + cont
        scores = teacher_forced(fa, full)
        fa_scores.append(scores)
        t_ids, t_logits, t_margin = top5_arrays(scores)
        records.append({
            "name": pname,
            "prompt": text,
            "prompt_ids": ids,
            "continuation_ids": cont,
            "top5_ids": t_ids,
            "top5_logits": t_logits,
            "margin": t_margin,
        })
        print(f"  {name}/{pname}: {len(ids)} prompt + {len(cont)} new tokens")
    add_bos = common.add_bos(fa)
    del fa

    nofa = load(path, False)
    diffs, agree_conf, n_conf, agree_all, n_all = [], 0, 0, 0, 0
    for rec, scores in zip(records, fa_scores):
        full = rec["prompt_ids"] + rec["continuation_ids"]
        s2 = teacher_forced(nofa, full)
        t_ids, t_logits, _ = top5_arrays(s2)
        rec["top5_ids_nofa"] = t_ids
        rec["top5_logits_nofa"] = t_logits
        for row, row2 in zip(scores, s2):
            top = [i for i, _ in common.top_k(row, 5)]
            diffs.extend(np.abs(row[top].astype(np.float64) - row2[top].astype(np.float64)).tolist())
            same = common.argmax(row) == common.argmax(row2)
            n_all += 1
            agree_all += same
            if margin(row) >= NEAR_TIE:
                n_conf += 1
                agree_conf += same
    del nofa
    # Incremental greedy (one token per decode) vs the one-decode teacher-forced pass, flash on.
    inc_agree, inc_n, inc_conf_agree, inc_conf_n = 0, 0, 0, 0
    for rec, scores in zip(records, fa_scores):
        n = len(rec["prompt_ids"])
        for k, tok in enumerate(rec["continuation_ids"]):
            row = scores[n - 1 + k]
            same = common.argmax(row) == tok
            inc_n += 1
            inc_agree += same
            if margin(row) >= NEAR_TIE:
                inc_conf_n += 1
                inc_conf_agree += same
    agreement = {
        "about": "flash_attn on vs off, same teacher-forced sequences: |logit difference| over the "
        "flash-on top-5 ids at every position, and argmax agreement (all positions, and positions "
        f"whose flash-on top-two margin >= {NEAR_TIE})",
        "mean_abs_dlogit_top5": round(float(np.mean(diffs)), 6),
        "max_abs_dlogit_top5": round(float(np.max(diffs)), 6),
        "argmax_agree_confident": agree_conf,
        "n_confident": n_conf,
        "argmax_agree_all": agree_all,
        "n_positions": n_all,
        "incremental_vs_batch": {
            "about": "flash on: greedy token from incremental decoding vs argmax of the one-decode "
            f"teacher-forced row at the same position (all, and margin >= {NEAR_TIE})",
            "agree_all": inc_agree,
            "n_all": inc_n,
            "agree_confident": inc_conf_agree,
            "n_confident": inc_conf_n,
        },
    }
    print(f"  {name} self-agreement: {agreement}")
    info = common.model_info(name, path)
    info.update({
        "settings": {"n_ctx": 1024, "n_threads": 2, "flash_attn": True, "seed": 0,
                     "add_bos": add_bos, "parse_special": True, "n_new": N_NEW},
        "about": "Row i of top5_* is the distribution after tokens[0..=i] of prompt_ids + "
        "continuation_ids, from ONE teacher-forced decode of the whole sequence. continuation_ids "
        "are llama.cpp greedy (argmax) tokens from incremental decoding. *_nofa: same with flash "
        "attention off. Logits rounded to 4 decimals.",
        "reference_self_agreement": agreement,
        "prompts": records,
    })
    common.write_json(f"logits_{name}.json", info)
    return agreement


def make_greedy(name, path):
    llm = load(path, True)
    records = []
    for pname, text in greedy_prompts(name):
        ids = prompt_ids(llm, text)
        cont, margins = greedy(llm, ids, N_GREEDY)
        first_tie = next((i for i, m in enumerate(margins) if m < NEAR_TIE), None)
        raw = common.detokenize(llm, cont, unparse_special=False)
        records.append({
            "name": pname,
            "prompt": text,
            "prompt_ids": ids,
            "ids": cont,
            "text": raw.decode("utf-8", errors="replace"),
            "text_b64": base64.b64encode(raw).decode("ascii"),
            "margins": [common.r4(m) for m in margins],
            "first_near_tie": first_tie,
        })
        print(f"  {name}/{pname}: first near tie at step {first_tie}: {raw[:80]!r}")
    info = common.model_info(name, path)
    info.update({
        "settings": {"n_ctx": 1024, "n_threads": 2, "flash_attn": True, "seed": 0,
                     "add_bos": common.add_bos(llm), "parse_special": True, "n_new": N_GREEDY,
                     "near_tie": NEAR_TIE},
        "about": "Free-running greedy decoding (argmax of llama.cpp logits, incremental decode, no stop "
        "at EOS). text: llama_detokenize(ids, remove_special=false, unparse_special=false) of the new "
        "tokens only (text_b64: exact bytes). margins[i]: top1-top2 logit before choosing ids[i]. "
        "first_near_tie: first i with margins[i] < near_tie (null if none); ids before it are safe "
        "to compare exactly.",
        "prompts": records,
    })
    del llm
    common.write_json(f"greedy_{name}.json", info)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_model_args(ap)
    args = ap.parse_args()
    summary = {}
    for name, path in common.selected_models(args):
        common.check_model(name, path)
        summary[name] = make_logits(name, path)
        make_greedy(name, path)
    for name, a in summary.items():
        print(f"{name}: mean |dlogit| top5 = {a['mean_abs_dlogit_top5']:.6f} (max {a['max_abs_dlogit_top5']:.4f}); "
              f"argmax agreement on margin>={NEAR_TIE}: {a['argmax_agree_confident']}/{a['n_confident']}; "
              f"all: {a['argmax_agree_all']}/{a['n_positions']}")
        b = a["incremental_vs_batch"]
        print(f"{name}: incremental vs one-decode argmax: {b['agree_confident']}/{b['n_confident']} "
              f"confident, {b['agree_all']}/{b['n_all']} all")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
# Run: /work/ref/venv/bin/python scripts/golden/make_perplexity.py [--smollm2 PATH] [--gemma3 PATH] [--text tests/data/perplexity.txt]
"""Perplexity golden data, computed the way llama.cpp's llama-perplexity does (default mode, -c 512).

The method, as read in llama.cpp's tools/perplexity/perplexity.cpp (re-implemented here):
  * the text is the file with ONE trailing '\\n' removed (what `-f` does);
  * tokenize the whole text with add_special=true, parse_special=false (BOS only if the model's
    tokenizer.ggml.add_bos_token says so);
  * n_chunk = n_tokens // n_ctx; chunk c is tokens[c*n_ctx : (c+1)*n_ctx], decoded from an empty
    KV cache at positions 0..n_ctx-1, with its first token replaced by BOS when the model adds BOS;
  * first = n_ctx // 2; the logits of positions first .. n_ctx-2 score the tokens at positions
    first+1 .. n_ctx-1 (n_ctx - first - 1 = 255 tokens per chunk);
  * nll = max + log(sum exp(l - max)) - l[tok], with max and exp in f32 and the sum and log in f64;
  * ppl = exp(sum nll / count).
Writes tests/data/golden/perplexity_<model>.json: {ppl, n_chunks, ctx, per_chunk_nll (mean nll of
each chunk), running_ppl (what llama-perplexity prints after each chunk), tokens, ...}, with flash
attention on (llama-perplexity's default `auto` enables it on CPU); ppl_flash_off is given as well.
"""

import argparse
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

N_CTX = 512


def chunk_nlls(llm, tokens, n_ctx, bos_id, add_bos):
    n_chunk = len(tokens) // n_ctx
    first = n_ctx // 2
    per_chunk = []
    for c in range(n_chunk):
        chunk = list(tokens[c * n_ctx:(c + 1) * n_ctx])
        if add_bos:
            chunk[0] = bos_id
        llm.reset()
        llm.eval(chunk)
        logits = np.array(llm.scores[:n_ctx], dtype=np.float32)
        nlls = []
        for i in range(first, n_ctx - 1):
            row = logits[i]
            tok = chunk[i + 1]  # equals tokens[c*n_ctx + i + 1]: only position 0 was replaced
            mx = np.float32(row.max())
            sum_exp = float(np.sum(np.exp(row - mx, dtype=np.float32), dtype=np.float64))
            nlls.append(-(float(np.float32(row[tok] - mx)) - math.log(sum_exp)))
        per_chunk.append(nlls)
    return per_chunk


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_model_args(ap)
    ap.add_argument("--text", default=os.path.join(common.DATA_DIR, "perplexity.txt"))
    args = ap.parse_args()

    from llama_cpp import Llama

    with open(args.text, "rb") as f:
        raw = f.read()
    if raw.endswith(b"\n"):
        raw = raw[:-1]

    for name, path in common.selected_models(args):
        common.check_model(name, path)
        result = common.model_info(name, path)
        for flash in (True, False):
            llm = Llama(model_path=path, n_ctx=N_CTX, n_batch=N_CTX, n_ubatch=N_CTX, n_threads=2,
                        n_threads_batch=2, flash_attn=flash, logits_all=True, seed=0, verbose=False)
            add_bos = common.add_bos(llm)
            tokens = llm.tokenize(raw, add_bos=True, special=False)  # add_special=true
            if len(tokens) < 2 * N_CTX:
                sys.exit(f"{args.text}: only {len(tokens)} tokens, need {2 * N_CTX}")
            per_chunk = chunk_nlls(llm, tokens, N_CTX, llm.token_bos(), add_bos)
            total, count, running = 0.0, 0, []
            for nlls in per_chunk:
                total += sum(nlls)
                count += len(nlls)
                running.append(round(math.exp(total / count), 4))
            ppl = math.exp(total / count)
            if flash:
                result.update({
                    "text": os.path.relpath(args.text, common.ROOT),
                    "ctx": N_CTX,
                    "add_bos": add_bos,
                    "flash_attn": True,
                    "n_tokens": len(tokens),
                    "n_chunks": len(per_chunk),
                    "first": N_CTX // 2,
                    "scored_per_chunk": N_CTX - N_CTX // 2 - 1,
                    "ppl": round(ppl, 6),
                    "per_chunk_nll": [round(sum(n) / len(n), 6) for n in per_chunk],
                    "running_ppl": running,
                    "tokens": tokens,
                })
            else:
                result["ppl_flash_off"] = round(ppl, 6)
                result["per_chunk_nll_flash_off"] = [round(sum(n) / len(n), 6) for n in per_chunk]
            print(f"{name}: flash_attn={flash} tokens={len(tokens)} chunks={len(per_chunk)} "
                  f"ppl={ppl:.4f} running={running}")
            del llm
        result["about"] = ("llama-perplexity -c 512 method (see scripts/golden/make_perplexity.py). "
                           "per_chunk_nll: mean nll over the 255 scored tokens of each chunk. "
                           "running_ppl: exp(mean nll over chunks so far), as llama-perplexity prints.")
        common.write_json(f"perplexity_{name}.json", result)


if __name__ == "__main__":
    main()

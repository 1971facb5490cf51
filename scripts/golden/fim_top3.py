#!/usr/bin/env python3
"""The first token's likeliest candidates for the FIM prompt of crates/server/tests/surface.rs
(fim_with_qwen2_5_coder), from llama.cpp through llama-cpp-python 0.3.36.

Usage: python fim_top3.py QWEN2.5-CODER-0.5B-INSTRUCT-Q4_K_M.gguf
Printed on 2026-12-06 (flash attention on; off gives the same three in the same order):
  [('#', 17.11), ('1', 16.70), ('a', 16.50), ('2', 15.55), ('print', 15.34)]
"""
import sys

import numpy as np
from llama_cpp import Llama

llm = Llama(sys.argv[1], n_ctx=256, n_threads=2, logits_all=True, flash_attn=True, verbose=False)
prompt = "<|fim_prefix|>def add(a, b):\n    return <|fim_suffix|>\n\nprint(add(1, 2))<|fim_middle|>"
llm.eval(llm.tokenize(prompt.encode(), add_bos=False, special=True))
logits = np.array(llm.scores[llm.n_tokens - 1])
top = np.argsort(-logits)[:5]
print([(llm.detokenize([int(t)]).decode(errors="replace"), round(float(logits[t]), 2)) for t in top])

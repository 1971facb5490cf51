"""Drives a running `hearth serve` with the official OpenAI and Ollama Python clients.

Usage: python official_clients.py BASE_URL MODEL
Exits non-zero (with a traceback) on any failure.
"""

import sys

import ollama
import openai

base, model = sys.argv[1], sys.argv[2]


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok:", what, flush=True)


oa = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)
messages = [{"role": "user", "content": "Say hello in one word."}]

r = oa.chat.completions.create(model=model, messages=messages, max_tokens=16, temperature=0)
check(r.choices[0].message.role == "assistant", "openai chat: role")
check(isinstance(r.choices[0].message.content, str), "openai chat: content")
check(r.choices[0].finish_reason in ("stop", "length"), "openai chat: finish_reason")
check(r.usage.completion_tokens <= 16 and r.usage.prompt_tokens > 0, "openai chat: usage")
whole = r.choices[0].message.content

parts, usage, finish = [], None, None
stream = oa.chat.completions.create(
    model=model,
    messages=messages,
    max_tokens=16,
    temperature=0,
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta.content:
            parts.append(c.delta.content)
        if c.finish_reason:
            finish = c.finish_reason
check("".join(parts) == whole, "openai chat stream: same text as non-streaming")
check(finish in ("stop", "length"), "openai chat stream: finish_reason")
check(usage is not None and usage.completion_tokens <= 16, "openai chat stream: usage")

c = oa.completions.create(model=model, prompt="The capital of France is", max_tokens=8, temperature=0, stop=["\n\n"])
check(isinstance(c.choices[0].text, str), "openai completion")
text = "".join(
    ch.choices[0].text
    for ch in oa.completions.create(
        model=model, prompt="The capital of France is", max_tokens=8, temperature=0, stop=["\n\n"], stream=True
    )
    if ch.choices
)
check(text == c.choices[0].text, "openai completion stream: same text")

models = oa.models.list()
check(any(m.id == model for m in models.data), "openai models list shows the loaded model")

try:
    oa.chat.completions.create(model=model, messages=messages, max_tokens=-1)
    check(False, "openai: max_tokens -1 refused")
except openai.BadRequestError as e:
    check("max_tokens" in str(e), "openai: max_tokens -1 is a 400 naming the field")

# Embeddings: the client asks for base64 by default; both encodings give unit vectors.
emb = oa.embeddings.create(model=model, input=["a cat sat on the mat", "stock markets fell"])
vecs = [d.embedding for d in emb.data]
check(len(vecs) == 2 and len(vecs[0]) > 0, "openai embeddings: one vector per input")
norm = sum(x * x for x in vecs[0]) ** 0.5
check(abs(norm - 1) < 1e-3, "openai embeddings: unit length")
floats = oa.embeddings.create(model=model, input="a cat sat on the mat", encoding_format="float")
check(
    max(abs(a - b) for a, b in zip(floats.data[0].embedding, vecs[0])) < 1e-5,
    "openai embeddings: float and base64 agree",
)

r = oa.chat.completions.create(
    model=model, messages=messages, max_tokens=6, temperature=0, logprobs=True, top_logprobs=2
)
lp = r.choices[0].logprobs.content
check(len(lp) == r.usage.completion_tokens and all(t.logprob <= 0 for t in lp), "openai chat: logprobs")
check(all(len(t.top_logprobs) == 2 and t.top_logprobs[0].token == t.token for t in lp), "openai chat: top_logprobs")

ol = ollama.Client(host=base)
e = ol.embed(model=model, input=["a cat sat on the mat"])
check(
    max(abs(a - b) for a, b in zip(e.embeddings[0], vecs[0])) < 1e-4,
    "ollama embed: the same vector as the OpenAI endpoint",
)
check(any(m.model == model for m in ol.ps().models), "ollama ps: the model is loaded")
r = ol.chat(model=model, messages=messages, options={"temperature": 0, "num_predict": 16}, stream=False)
check(r.message.role == "assistant" and isinstance(r.message.content, str), "ollama chat")
check(r.done and r.eval_count is not None and r.eval_count <= 16, "ollama chat: counts")
ol_whole = r.message.content
parts = []
last = None
for chunk in ol.chat(model=model, messages=messages, options={"temperature": 0, "num_predict": 16}, stream=True):
    parts.append(chunk.message.content)
    last = chunk
check(last.done and last.done_reason in ("stop", "length"), "ollama chat stream: done")
check("".join(parts) == ol_whole, "ollama chat stream: same text")

g = ol.generate(model=model, prompt="Why is the sky blue?", options={"temperature": 0, "num_predict": 8})
check(isinstance(g.response, str) and g.done, "ollama generate")
text = "".join(
    ch.response
    for ch in ol.generate(
        model=model, prompt="Why is the sky blue?", options={"temperature": 0, "num_predict": 8}, stream=True
    )
)
check(text == g.response, "ollama generate stream: same text")

tags = ol.list()
check(isinstance(tags.models, list), "ollama list")

try:
    ol.chat(model=model, messages=messages, options={"top_p": 7})
    check(False, "ollama: top_p 7 refused")
except ollama.ResponseError as e:
    check(e.status_code == 400 and "top_p" in str(e), "ollama: top_p 7 is a 400 naming the field")

print("all client checks passed")

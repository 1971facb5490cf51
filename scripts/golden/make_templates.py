#!/usr/bin/env python3
# Run: /work/ref/venv/bin/python scripts/golden/make_templates.py [--smollm2 PATH] [--gemma3 PATH] [--sdist PATH]
"""Chat-template golden data: prompts rendered by Jinja2 the way Hugging Face transformers
renders them (`apply_chat_template`), for hearth's minijinja renderer to match byte for byte.

transformers compiles a template in an ImmutableSandboxedEnvironment with trim_blocks and
lstrip_blocks, the loopcontrols extension, `raise_exception` and `strftime_now` globals and its own
`tojson` filter (json.dumps, non-ASCII kept), and renders it with messages, tools=None,
documents=None, add_generation_prompt and the special tokens (bos_token, eos_token).

Writes tests/data/templates/<name>.json, one per template:
  {"source": where the template came from, "template": its text, "bos_token", "eos_token",
   "cases": [{"name", "messages": [{"role", "content"}], "add_generation_prompt",
              "expected": the rendered prompt, or "error": Jinja2's message}]}
Templates:
  - each real model's `tokenizer.chat_template`, read from the GGUF with the `gguf` package
    (SmolLM2); a model whose file has none (Gemma 3 270M) gets hearth's built-in template for its
    architecture (crates/engine/src/chat/*.jinja), checked against Jinja2 all the same;
  - a few widely used templates that llama.cpp keeps in models/templates/ (read from the
    llama-cpp-python 0.3.36 sdist, which vendors llama.cpp), to cover more Jinja features;
  - a probe of `tojson`.
Needs: gguf, jinja2 (the /work/ref/venv has both).
"""

import argparse
import datetime
import json
import os
import sys
import tarfile

import gguf
import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

OUT_DIR = os.path.join(common.DATA_DIR, "templates")
BUILTIN_DIR = os.path.join(common.ROOT, "crates", "engine", "src", "chat")
SDIST = "llama_cpp_python-0.3.36.tar.gz"
SDIST_TEMPLATES = "llama_cpp_python-0.3.36/vendor/llama.cpp/models/templates/"

# llama.cpp templates worth covering, with the BOS/EOS text their tokenizers have. Templates that
# call strftime_now are left out: their output changes with the date.
EXTRA = {
    "google-gemma-2-2b-it": ("<bos>", "<eos>"),
    "meta-llama-Llama-3.1-8B-Instruct": ("<|begin_of_text|>", "<|eot_id|>"),
    "Qwen-Qwen2.5-7B-Instruct": ("", "<|im_end|>"),
    "Qwen-Qwen3-0.6B": ("", "<|im_end|>"),
    "microsoft-Phi-3.5-mini-instruct": ("<s>", "<|endoftext|>"),
    "mistralai-Mistral-Nemo-Instruct-2407": ("<s>", "</s>"),
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
}

TOJSON_PROBE = (
    "{{ messages | tojson }}\n"
    "{{ messages | tojson(indent=2) }}\n"
    "{{ {'b': 1, 'a': [1.5, 0.1, 1e16, 1e-05, none, true, false, -3]} | tojson }}\n"
    "{{ {'b': 1, 'a': 2} | tojson(sort_keys=true, separators=[',', ':']) }}\n"
    "{{ 'é\\t\\u0001' | tojson }} {{ 'é' | tojson(ensure_ascii=true) }}\n"
)

SYSTEM = "You are a terse assistant. Answer in one sentence."
Q1 = "What is the capital of France?"
A1 = "The capital of France is Paris."
Q2 = "And of Italy? Use \"quotes\", ünïcödé 🙂 and a\nsecond line.  "


def cases():
    def m(role, content):
        return {"role": role, "content": content}

    return [
        ("single", [m("user", Q1)], True),
        ("single_system", [m("system", SYSTEM), m("user", Q1)], True),
        ("multi", [m("user", Q1), m("assistant", A1), m("user", Q2)], True),
        ("multi_system", [m("system", SYSTEM), m("user", Q1), m("assistant", A1), m("user", Q2)], True),
        ("multi_no_generation_prompt", [m("user", Q1), m("assistant", A1)], False),
    ]


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # transformers' own filter (Jinja's escapes HTML characters).
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def strftime_now(fmt):
    return datetime.datetime.now().strftime(fmt)


def compile_template(text):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(text)


def render_all(name, source, text, bos, eos):
    tmpl = compile_template(text)
    out = []
    for case, messages, gen in cases():
        entry = {"name": case, "messages": messages, "add_generation_prompt": gen}
        try:
            entry["expected"] = tmpl.render(
                messages=messages,
                tools=None,
                documents=None,
                add_generation_prompt=gen,
                bos_token=bos,
                eos_token=eos,
            )
        except jinja2.exceptions.TemplateError as e:
            entry["error"] = str(e)
        out.append(entry)
    doc = {"source": source, "template": text, "bos_token": bos, "eos_token": eos, "cases": out}
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, f"{name}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    errors = sum("error" in c for c in out)
    print(f"wrote {os.path.relpath(path, common.ROOT)} ({len(out)} cases, {errors} refused)")


def gguf_str(reader, key):
    field = reader.fields.get(key)
    return None if field is None else str(field.contents())


def token_text(reader, key):
    field = reader.fields.get(key)
    if field is None:
        return ""
    return str(reader.fields["tokenizer.ggml.tokens"].contents(int(field.contents())))


def from_models(args):
    for name, path in common.selected_models(args):
        common.check_model(name, path)
        reader = gguf.GGUFReader(path)
        bos = token_text(reader, "tokenizer.ggml.bos_token_id")
        eos = token_text(reader, "tokenizer.ggml.eos_token_id")
        text = gguf_str(reader, "tokenizer.chat_template")
        if text is not None:
            source = f"{common.MODEL_FILES[name]}: tokenizer.chat_template"
        else:
            arch = gguf_str(reader, "general.architecture")
            builtin = "gemma3.jinja" if arch.startswith("gemma") else "chatml.jinja"
            with open(os.path.join(BUILTIN_DIR, builtin), encoding="utf-8") as f:
                text = f.read()
            source = f"{common.MODEL_FILES[name]} has no template: hearth's built-in {builtin}"
        render_all(name, source, text, bos, eos)


def from_llama_cpp(sdist):
    with tarfile.open(sdist) as tar:
        for name, (bos, eos) in EXTRA.items():
            member = tar.extractfile(SDIST_TEMPLATES + name + ".jinja")
            text = member.read().decode("utf-8")
            if "strftime_now" in text:
                sys.exit(f"{name} calls strftime_now: its output would change with the date")
            render_all(f"llama.cpp-{name}", f"llama.cpp models/templates/{name}.jinja ({SDIST})", text, bos, eos)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_model_args(p)
    p.add_argument(
        "--sdist",
        default=os.path.join(common.cache_dir(), SDIST),
        help=f"path to {SDIST} (get it with: python3 -m pip download --no-deps --no-binary :all: "
        "llama-cpp-python==0.3.36)",
    )
    args = p.parse_args()
    from_models(args)
    if os.path.isfile(args.sdist):
        from_llama_cpp(args.sdist)
    else:
        sys.exit(f"{args.sdist} is missing: pass --sdist (see --help)")
    render_all("tojson-probe", "hearth: transformers' tojson filter", TOJSON_PROBE, "<s>", "</s>")


if __name__ == "__main__":
    main()

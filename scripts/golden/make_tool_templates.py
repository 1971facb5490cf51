#!/usr/bin/env python3
# Run: /work/ref/venv/bin/python scripts/golden/make_tool_templates.py [--qwen2_5_coder PATH]
"""Chat-template golden data with tools: Qwen2.5-Coder-0.5B-Instruct's own template (read from
the GGUF) rendered by Jinja2 exactly as transformers' `apply_chat_template(messages, tools=...)`
renders it (see make_templates.py for the environment), for hearth's `render_with_tools`.

Writes tests/data/templates/qwen2_5_coder-tools.json in make_templates.py's format, each case
with a "tools" list (or null), and messages that may carry `tool_calls`
(`[{"id", "type": "function", "function": {"name", "arguments": {..}}}]`, arguments a dict as
transformers expects), `tool_call_id` and `name`; an assistant turn of calls only has content
None.

Every object's keys are written sorted: hearth reads request JSON into maps whose order is the
map's own (sorted unless serde_json keeps insertion order), so sorted input renders the same
either way, and the test still checks everything the template does with the tools.
Needs: gguf, jinja2 (the /work/ref/venv has both).
"""

import argparse
import json
import os
import sys

import gguf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from make_templates import OUT_DIR, compile_template, gguf_str, token_text  # noqa: E402

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "description": "The local time in a time zone.", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}},
}


def sorted_keys(x):
    return json.loads(json.dumps(x, sort_keys=True))


def call(id_, name, args):
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": args}}


def cases():
    user = {"role": "user", "content": "What's the weather in Paris, and the time in Tokyo?"}
    system = {"role": "system", "content": "You are a helpful assistant with tools."}
    one_call = {"role": "assistant", "content": None, "tool_calls": [call("call_1", "get_weather", {"city": "Paris", "unit": "celsius"})]}
    two_calls = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            call("call_1", "get_weather", {"city": "Paris"}),
            call("call_2", "get_time", {"tz": "Asia/Tokyo"}),
        ],
    }
    said_and_called = {"role": "assistant", "content": "Let me look.", "tool_calls": [call("call_9", "get_time", {})]}
    result1 = {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": '{"temp": 18, "sky": "clear"}'}
    result2 = {"role": "tool", "tool_call_id": "call_2", "content": "21:04"}
    tools = [WEATHER, TIME]
    return [
        ("tools_single", [user], tools, True),
        ("tools_system", [system, user], tools, True),
        ("tools_round_trip", [user, one_call, result1], tools, True),
        ("tools_parallel_round_trip", [system, user, two_calls, result1, result2], tools, True),
        ("tools_content_and_call", [user, said_and_called, result2, {"role": "assistant", "content": "It is 21:04."}], tools, False),
        ("no_tools_with_tool_history", [user, one_call, result1], None, True),
    ]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--qwen2_5_coder", default=common.default_model_path("qwen2_5_coder"))
    args = p.parse_args()
    path = args.qwen2_5_coder
    common.check_model("qwen2_5_coder", path)
    reader = gguf.GGUFReader(path)
    text = gguf_str(reader, "tokenizer.chat_template")
    bos = token_text(reader, "tokenizer.ggml.bos_token_id")
    eos = token_text(reader, "tokenizer.ggml.eos_token_id")
    tmpl = compile_template(text)
    out = []
    for name, messages, tools, gen in cases():
        messages = sorted_keys(messages)
        tools = sorted_keys(tools)
        entry = {"name": name, "messages": messages, "tools": tools, "add_generation_prompt": gen}
        entry["expected"] = tmpl.render(
            messages=messages, tools=tools, documents=None, add_generation_prompt=gen, bos_token=bos, eos_token=eos
        )
        out.append(entry)
    doc = {
        "source": f"{common.MODEL_FILES['qwen2_5_coder']}: tokenizer.chat_template, with tools",
        "template": text,
        "bos_token": bos,
        "eos_token": eos,
        "cases": out,
    }
    dest = os.path.join(OUT_DIR, "qwen2_5_coder-tools.json")
    with open(dest, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {os.path.relpath(dest, common.ROOT)} ({len(out)} cases)")


if __name__ == "__main__":
    main()

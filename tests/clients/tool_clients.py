#!/usr/bin/env python3
"""Tool calls, their round trip and /v1/responses through the official `openai` client against
`hearth serve` with Qwen2.5-Coder-0.5B-Instruct (whose template writes Hermes <tool_call>s).
Usage: tool_clients.py BASE_URL MODEL. Prints "all tool checks passed"."""

import json
import sys

from openai import OpenAI

base, model = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base + "/v1", api_key="unused")


def check(cond, what):
    if not cond:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}")


tools = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city name"}},
            "required": ["city"],
        },
    },
}]
messages = [{"role": "user", "content": "What is the weather like in Paris right now?"}]

# A prompt that needs the tool: the model calls it, and the call comes back parsed.
r = client.chat.completions.create(model=model, messages=messages, tools=tools, tool_choice="auto",
                                   temperature=0, max_tokens=128, seed=1)
choice = r.choices[0]
print("answer:", choice.message)
check(choice.message.tool_calls, "the model called a tool")
call = choice.message.tool_calls[0]
check(call.type == "function" and call.function.name == "get_weather", "the call names get_weather")
args = json.loads(call.function.arguments)
check(isinstance(args, dict) and "paris" in str(args.get("city", "")).lower(), f"arguments are JSON with the city: {args}")
check(call.id.startswith("call_"), "the call has an id")
check(choice.finish_reason == "tool_calls", "finish_reason is tool_calls")
check(choice.message.content in (None, ""), "no content besides the call")

# Streamed, the deltas accumulate (as the client's accumulator expects) to the same call.
calls = {}
finish = None
for chunk in client.chat.completions.create(model=model, messages=messages, tools=tools, temperature=0,
                                            max_tokens=128, seed=1, stream=True):
    for c in chunk.choices:
        for tc in c.delta.tool_calls or []:
            slot = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
            if tc.id:
                slot["id"] = tc.id
            if tc.function and tc.function.name:
                slot["name"] += tc.function.name
            if tc.function and tc.function.arguments:
                slot["arguments"] += tc.function.arguments
        finish = c.finish_reason or finish
check(len(calls) == 1 and calls[0]["name"] == "get_weather", f"streamed call: {calls}")
check(json.loads(calls[0]["arguments"]) == args, "streamed arguments equal the whole answer's")
check(calls[0]["id"], "the streamed call has an id")
check(finish == "tool_calls", "streamed finish_reason is tool_calls")

# The helper in the client that accumulates a stream gives the same call.
with client.beta.chat.completions.stream(model=model, messages=messages, tools=tools, temperature=0,
                                         max_tokens=128, seed=1) as s:
    final = s.get_final_completion()
fc = final.choices[0].message.tool_calls[0]
check(fc.function.name == "get_weather" and json.loads(fc.function.arguments) == args, "stream helper's final call")

# Round trip: the call, the tool's result, then an answer that uses it.
follow = messages + [
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": call.id, "type": "function", "function": {"name": "get_weather", "arguments": call.function.arguments}}]},
    {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature_c": 18, "sky": "sunny"})},
]
r = client.chat.completions.create(model=model, messages=follow, tools=tools, temperature=0, max_tokens=96, seed=1)
answer = r.choices[0].message
print("final answer:", answer)
check(isinstance(answer.content, str) and answer.content.strip(), "an answer after the tool result")
check("18" in answer.content or "sunny" in answer.content.lower(), "the answer uses the tool's result")

# /v1/responses, whole and streamed.
resp = client.responses.create(model=model, input="Say hello in one short sentence.", max_output_tokens=32,
                               temperature=0)
check(resp.object == "response" and resp.status in ("completed", "incomplete"), f"response status {resp.status}")
check(resp.output_text.strip(), f"output_text: {resp.output_text!r}")
check(resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens, "response usage")
deltas, kinds, completed = [], [], None
for ev in client.responses.create(model=model, input="Say hello in one short sentence.", max_output_tokens=32,
                                  temperature=0, stream=True):
    kinds.append(ev.type)
    if ev.type == "response.output_text.delta":
        deltas.append(ev.delta)
    if ev.type in ("response.completed", "response.incomplete"):
        completed = ev.response
check(kinds[0] == "response.created" and completed is not None, f"event order: {kinds[:3]} … {kinds[-1]}")
check("".join(deltas) == completed.output_text == resp.output_text, "streamed text equals the whole response")

# A tool call through the Responses API.
resp = client.responses.create(model=model, input="What is the weather like in Paris right now?", temperature=0,
                               max_output_tokens=128,
                               tools=[{"type": "function", "name": "get_weather", "description": "Get the current weather in a city.",
                                       "parameters": tools[0]["function"]["parameters"]}])
fcs = [o for o in resp.output if o.type == "function_call"]
check(fcs and fcs[0].name == "get_weather" and "paris" in json.loads(fcs[0].arguments).get("city", "").lower(),
      f"responses function_call: {resp.output}")

print("all tool checks passed")

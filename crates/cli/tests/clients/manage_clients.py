"""Drives a running `hearth serve` with the official Ollama Python client's model management:
pull (streamed progress), list, show, copy, delete, and create from an uploaded blob.

Usage: python manage_clients.py BASE_URL MODEL_NAME GGUF_PATH
MODEL_NAME must be pullable by the server (the test points it at a local hub) and not yet in
its store; GGUF_PATH is a chat model file the client uploads. Exits non-zero (with a
traceback) on any failure.
"""

import sys

import ollama

base, name, gguf_path = sys.argv[1], sys.argv[2], sys.argv[3]


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok:", what, flush=True)


ol = ollama.Client(host=base, timeout=300)

statuses, progress = [], []
for p in ol.pull(name, stream=True):
    statuses.append(p.status)
    if p.completed is not None:
        progress.append((p.digest, p.completed, p.total))
check(statuses[0] == "pulling manifest", "ollama pull: starts with pulling manifest")
check(statuses[-1] == "success", "ollama pull: ends with success")
check(statuses[-3:-1] == ["verifying sha256 digest", "writing manifest"], "ollama pull: closing lines")
check(len(progress) >= 2, f"ollama pull: progress lines ({len(progress)})")
digest, _, total = progress[0]
check(digest is not None and digest.startswith("sha256:"), "ollama pull: progress names the digest")
check(total is not None and total > 0, "ollama pull: progress has a total")
done = [c for _, c, _ in progress]
check(done == sorted(done), "ollama pull: completed never goes backwards")
check(done[-1] == total, "ollama pull: completed reaches the total")
check(any(s.startswith("pulling " + digest[7:19]) for s in statuses), "ollama pull: 'pulling <digest12>'")

again = ol.pull(name, stream=False)
check(again.status == "success", "ollama pull again (not streamed): success")

names = [m.model for m in ol.list().models]
canonical = next((n for n in names if n == name or n.startswith(name + ":")), None)
check(canonical is not None, f"ollama list shows the pulled model ({names})")

s = ol.show(name)
check(s.details.format == "gguf" and s.details.family, "ollama show: details")
check(s.details.quantization_level and s.details.parameter_size, "ollama show: size and quantization")
check(s.modelinfo["general.architecture"] == s.details.family, "ollama show: model_info")
check(s.modelinfo.get("tokenizer.ggml.tokens") is None, "ollama show: the vocabulary is elided")
check(isinstance(s.template, str) and len(s.template) > 0, "ollama show: chat template")
check("completion" in s.capabilities, "ollama show: capabilities")
check(s.modified_at is not None, "ollama show: modified_at")

r = ol.copy(name, "hearth-copy:test")
check(r.status == "success", "ollama copy")
names = [m.model for m in ol.list().models]
check("hearth-copy:test" in names, "ollama list shows the copy")
c = ol.chat(
    model="hearth-copy:test",
    messages=[{"role": "user", "content": "Hi"}],
    options={"temperature": 0, "num_predict": 4},
)
check(c.done and isinstance(c.message.content, str), "ollama chat with the copy, by name")

r = ol.delete("hearth-copy:test")
check(r.status == "success", "ollama delete")
names = [m.model for m in ol.list().models]
check("hearth-copy:test" not in names and canonical in names, "ollama list after delete")

# create: the client uploads the file as a blob (POST /api/blobs/DIGEST), then names it.
digest = ol.create_blob(gguf_path)
check(digest.startswith("sha256:") and len(digest) == 71, "ollama create_blob: uploaded")
r = ol.create(
    model="hearth-made:test",
    files={"model.gguf": digest},
    system="Answer in one word.",
    parameters={"temperature": 0.1, "num_ctx": 1024, "stop": ["<end>"]},
)
check(r.status == "success", "ollama create from the uploaded blob")
s = ol.show("hearth-made:test")
# The client's ShowResponse has no `system` field: the prompt is in the Modelfile it shows.
check('SYSTEM """Answer in one word."""' in s.modelfile,
      "ollama show: the created model's system prompt (in its modelfile)")
check("temperature" in s.parameters and "num_ctx" in s.parameters and "<end>" in s.parameters,
      f"ollama show: the created model's parameters ({s.parameters!r})")
check(isinstance(s.template, str) and len(s.template) > 0, "ollama show: the file's template")
lines = list(ol.create(model="hearth-made:preset", from_="hearth-made:test",
                       system="Be brief.", stream=True))
check(lines[-1].status == "success", "ollama create from a model, streamed")
check('SYSTEM """Be brief."""' in ol.show("hearth-made:preset").modelfile,
      "ollama show: the preset's system prompt")
c = ol.chat(
    model="hearth-made:test",
    messages=[{"role": "user", "content": "Hi"}],
    options={"num_predict": 4},
)
check(c.done and isinstance(c.message.content, str), "ollama chat with the created model")
for made in ["hearth-made:preset", "hearth-made:test"]:
    check(ol.delete(made).status == "success", f"ollama delete {made}")

for what, call, status in [
    ("create with quantize", lambda: ol.create(model="q:x", files={"m.gguf": digest},
                                                quantize="q4_K_M"), 400),
    ("create from a blob never uploaded",
     lambda: ol.create(model="q:x", files={"m.gguf": "sha256:" + "0" * 64}), 400),
    ("show of a deleted model", lambda: ol.show("hearth-copy:test"), 404),
    ("delete of a deleted model", lambda: ol.delete("hearth-copy:test"), 404),
    ("copy of a missing model", lambda: ol.copy("no-such:model", "x:y"), 404),
    ("copy to a bad name", lambda: ol.copy(name, "../x"), 400),
    ("pull of an unknown model", lambda: ol.pull("no-such-model", stream=True).__next__(), 404),
]:
    try:
        call()
        check(False, f"{what} is refused")
    except ollama.ResponseError as e:
        check(e.status_code == status, f"{what}: {status} ({e.error})")

print("all management checks passed")

"""Drives a running `hearth serve` with the official Ollama Python client's model management:
pull (streamed progress), list, show, copy, delete.

Usage: python manage_clients.py BASE_URL MODEL_NAME
MODEL_NAME must be pullable by the server (the test points it at a local hub) and not yet in
its store. Exits non-zero (with a traceback) on any failure.
"""

import sys

import ollama

base, name = sys.argv[1], sys.argv[2]


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

for what, call, status in [
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

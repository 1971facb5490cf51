"""Many users of one model: hearth replicas behind nginx, driven by the official OpenAI client.

Usage: python replicas_clients.py POOL_URL SINGLE_URL MODEL REPLICA_URL...

POOL_URL is nginx in front of every replica (deploy/nginx/hearth.conf); SINGLE_URL is nginx
in front of the first replica alone (the throughput baseline); each REPLICA_URL is one
replica, read directly for its /metrics. The replicas share one read-only model store.

Phases:
1. the store: a change through nginx is refused (403), a pull of the model there succeeds;
2. sticky routing: every turn of a conversation (X-Session-Id) reaches one replica, and the
   second turn reuses the first's prefix (usage.prompt_tokens_details.cached_tokens, and the
   replica's hearth_prompt_tokens_cached_total grows by as much);
3. throughput: the same load through SINGLE_URL and POOL_URL (numbers printed, not judged);
4. failover: streams run on both replicas, then this script prints `KILL HOST:PORT` and waits
   for a line on stdin saying the replica is dead. The streams on the dead replica must fail
   with an error (not hang), new requests must all succeed on the others, and every request
   is counted as answered or failed.

Prints `all replica checks passed` at the end; any failure raises.
"""

import sys
import threading
import time

import httpx
import openai

pool, single, model = sys.argv[1], sys.argv[2], sys.argv[3]
replicas = sys.argv[4:]
# `127.0.0.1:PORT`, as nginx's $upstream_addr names a replica.
replica_addr = {r: r.removeprefix("http://") for r in replicas}
TIMEOUT = 60


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok:", what, flush=True)


def client(base):
    # No retries: this script counts what happens to each request itself.
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=TIMEOUT)


def upstream(headers):
    """The replica that answered (the last one nginx tried)."""
    value = headers.get("x-hearth-upstream")
    if not value:
        raise AssertionError(f"no X-Hearth-Upstream header in {dict(headers)}")
    return value.split(",")[-1].strip()


def metric(addr, name):
    text = httpx.get(f"http://{addr}/metrics", timeout=TIMEOUT).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the /metrics of {addr}")


oa_pool = client(pool)

# 1. The shared store: no replica may change it; a pull of a model it has needs no write.
check(httpx.get(f"{pool}/health", timeout=TIMEOUT).status_code == 200, "health through nginx")
r = httpx.request("DELETE", f"{pool}/api/delete", json={"model": model}, timeout=TIMEOUT)
check(r.status_code == 403 and "read-only" in r.text, f"delete refused by a read-only store: {r.status_code} {r.text}")
r = httpx.post(f"{pool}/api/pull", json={"model": model, "stream": False}, timeout=TIMEOUT)
check(r.status_code == 200 and r.json().get("status") == "success", f"pull of a model the store has: {r.status_code} {r.text}")
r = httpx.post(f"{pool}/api/pull", json={"model": "qwen2.5:0.5b", "stream": False}, timeout=TIMEOUT)
check(r.status_code == 403 and "read-only" in r.text, f"pull of an absent model refused: {r.status_code} {r.text}")

# 2. Sticky conversations.
SESSIONS = ["ada", "grace", "edsger", "barbara"]
QUESTIONS = [
    ("What is the capital of France?", "And what river runs through it?"),
    ("Name a primary colour.", "Name another one."),
    ("What is two plus two?", "And times three?"),
    ("Which planet is the largest?", "Which is the smallest?"),
]
home = {}
cached_by_replica = {addr: 0 for addr in replica_addr.values()}
before = {addr: metric(addr, "hearth_prompt_tokens_cached_total") for addr in replica_addr.values()}
conversations = {}
for session, (q1, q2) in zip(SESSIONS, QUESTIONS):
    headers = {"X-Session-Id": session}
    messages = [
        {"role": "system", "content": f"You are a terse assistant. You are talking to {session}."},
        {"role": "user", "content": q1},
    ]
    turns = []
    for question in (None, q2):
        if question:
            messages.append({"role": "user", "content": question})
        raw = oa_pool.chat.completions.with_raw_response.create(
            model=model, messages=messages, max_tokens=12, temperature=0, extra_headers=headers
        )
        reply = raw.parse()
        addr = upstream(raw.headers)
        cached = reply.usage.prompt_tokens_details.cached_tokens
        cached_by_replica[addr] += cached
        turns.append((addr, reply.usage.prompt_tokens, cached))
        messages.append({"role": "assistant", "content": reply.choices[0].message.content})
    conversations[session] = messages
    print(f"session {session}: " + ", ".join(f"{a} prompt={p} cached={c}" for a, p, c in turns), flush=True)
    check(turns[0][0] == turns[1][0], f"both turns of {session} reached one replica")
    home[session] = turns[0][0]
    check(
        turns[1][2] >= turns[0][1],
        f"{session}'s second turn reused its first prompt ({turns[1][2]} cached of {turns[1][1]})",
    )
after = {addr: metric(addr, "hearth_prompt_tokens_cached_total") for addr in replica_addr.values()}
for addr in replica_addr.values():
    check(
        after[addr] - before[addr] == cached_by_replica[addr],
        f"{addr}: hearth_prompt_tokens_cached_total grew by the {cached_by_replica[addr]} tokens its answers reported",
    )
print("sessions per replica:", {a: sorted(s for s, h in home.items() if h == a) for a in replica_addr.values()}, flush=True)

# Why stickiness matters: the same next turn sent straight to a replica that never saw the
# conversation reuses only what any conversation shares (the template's first tokens).
session = SESSIONS[0]
other = next(a for a in replica_addr.values() if a != home[session])
follow_up = conversations[session] + [{"role": "user", "content": "Thank you."}]
here = client(f"http://{home[session]}").chat.completions.create(
    model=model, messages=follow_up, max_tokens=4, temperature=0
)
there = client(f"http://{other}").chat.completions.create(model=model, messages=follow_up, max_tokens=4, temperature=0)
print(
    f"next turn of {session}: {here.usage.prompt_tokens_details.cached_tokens} of {here.usage.prompt_tokens} "
    f"prompt tokens cached on its own replica, {there.usage.prompt_tokens_details.cached_tokens} on another",
    flush=True,
)
check(
    there.usage.prompt_tokens_details.cached_tokens < here.usage.prompt_tokens_details.cached_tokens,
    "another replica has less of the conversation cached than its own",
)


# 3. Throughput: the same kind of load (no session: round robin) through one replica and two.
def load(base, prompts, concurrency, max_tokens):
    oa = client(base)
    results, errors, lock = [], [], threading.Lock()
    pending = list(prompts)

    def work():
        while True:
            with lock:
                if not pending:
                    return
                prompt = pending.pop()
            try:
                raw = oa.chat.completions.with_raw_response.create(
                    model=model,
                    messages=[{"role": "user", "content": prompt}],
                    max_tokens=max_tokens,
                    temperature=0,
                )
                reply = raw.parse()
                with lock:
                    results.append((upstream(raw.headers), reply.usage.completion_tokens))
            except Exception as e:  # counted, then judged below
                with lock:
                    errors.append(repr(e))

    start = time.monotonic()
    threads = [threading.Thread(target=work) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors, time.monotonic() - start


REQUESTS, CONCURRENCY, MAX_TOKENS = 8, 4, 48
rates = {}
for label, base, offset in (("1 replica", single, 0), (f"{len(replicas)} replicas", pool, REQUESTS)):
    # Other numbers for the second run, so that it finds nothing the first one cached.
    prompts = [f"Write a short poem about the number {offset + i}." for i in range(REQUESTS)]
    results, errors, seconds = load(base, prompts, CONCURRENCY, MAX_TOKENS)
    check(not errors and len(results) == REQUESTS, f"{label}: every request answered ({errors})")
    tokens = sum(n for _, n in results)
    spread = {a: sum(1 for u, _ in results if u == a) for a in sorted({u for u, _ in results})}
    rates[label] = tokens / seconds
    print(
        f"THROUGHPUT {label}: {REQUESTS} requests, {CONCURRENCY} at a time, {tokens} tokens in "
        f"{seconds:.2f} s = {tokens / seconds:.1f} tokens/s, {REQUESTS / seconds:.2f} requests/s; "
        f"per replica {spread}",
        flush=True,
    )
first, second = rates.values()
print(f"THROUGHPUT ratio: {second / first:.2f}x", flush=True)

# 4. Failover: kill a replica while it streams.
victim = next((h for h in home.values()), next(iter(replica_addr.values())))
IN_FLIGHT = 4
outcomes = {}  # request -> ("ok", upstream, tokens) | ("failed", upstream, error, seconds after the kill)
lock = threading.Lock()
streaming = threading.Condition(lock)
on_victim = [0]
killed_at = [None]


def stream_one(i, max_tokens, prompt):
    addr = None
    try:
        with oa_pool.chat.completions.with_streaming_response.create(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
        ) as response:
            addr = upstream(response.headers)
            pieces = 0
            for chunk in response.parse():
                if chunk.choices and chunk.choices[0].delta.content:
                    pieces += 1
                    if pieces == 1 and addr == victim:
                        with streaming:
                            on_victim[0] += 1
                            streaming.notify_all()
            with lock:
                outcomes[i] = ("ok", addr, pieces)
    except Exception as e:  # the client's error is the outcome
        if isinstance(e, openai.APIStatusError):
            # nginx's own 502 names the replica that failed it too.
            addr = upstream(e.response.headers)
        with lock:
            after_kill = time.monotonic() - killed_at[0] if killed_at[0] else None
            outcomes[i] = ("failed", addr, f"{type(e).__name__}: {e}", after_kill)


long_prompt = "Count from 1 to 300, separated by commas."
streams = [threading.Thread(target=stream_one, args=(i, 160, long_prompt)) for i in range(IN_FLIGHT)]
for t in streams:
    t.start()
with streaming:
    check(streaming.wait_for(lambda: on_victim[0] > 0, timeout=TIMEOUT), f"a stream is under way on {victim}")
with lock:
    killed_at[0] = time.monotonic()
print(f"KILL {victim}", flush=True)
killed = sys.stdin.readline().strip()
check(killed == "killed", f"the test killed {victim} ({killed!r})")

# New requests after the kill: each must be answered by a replica still alive.
NEW = 6
new_requests = [
    threading.Thread(target=stream_one, args=(IN_FLIGHT + i, 16, f"Say the word number {i}.")) for i in range(NEW)
]
for t in new_requests:
    t.start()
for t in streams + new_requests:
    t.join(timeout=2 * TIMEOUT)
check(not any(t.is_alive() for t in streams + new_requests), "every request finished (none hangs)")

total = IN_FLIGHT + NEW
for i in sorted(outcomes):
    print(f"request {i}: {outcomes[i]}", flush=True)
answered = sum(1 for o in outcomes.values() if o[0] == "ok")
failed = [o for o in outcomes.values() if o[0] == "failed"]
check(len(outcomes) == total and answered + len(failed) == total, f"all {total} requests counted: {answered} answered, {len(failed)} failed")
check(len(failed) >= 1, "the streams cut by the kill failed")
check(all(o[1] == victim for o in failed), "only requests on the killed replica failed")
check(all(o[3] is not None and o[3] < TIMEOUT / 2 for o in failed), "each failure came at once, not after a timeout")
check(
    all(outcomes[IN_FLIGHT + i][0] == "ok" and outcomes[IN_FLIGHT + i][1] != victim for i in range(NEW)),
    "every request sent after the kill was answered by another replica",
)

# A conversation whose replica died goes on elsewhere (its prefix is evaluated again there).
orphans = [s for s, h in home.items() if h == victim]
if orphans:
    session = orphans[0]
    raw = oa_pool.chat.completions.with_raw_response.create(
        model=model,
        messages=conversations[session] + [{"role": "user", "content": "Thanks."}],
        max_tokens=4,
        temperature=0,
        extra_headers={"X-Session-Id": session},
    )
    reply = raw.parse()
    check(upstream(raw.headers) != victim, f"{session} goes on at {upstream(raw.headers)} after its replica died")
    print(f"{session} after failover: {reply.usage.prompt_tokens_details.cached_tokens} of {reply.usage.prompt_tokens} prompt tokens cached", flush=True)

print("all replica checks passed", flush=True)

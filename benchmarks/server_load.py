"""Load, fault and overhead figures for the local server (`tandem serve`), each against a real server process.

Three parts (all by default; ``--only load|fuzz|overhead``):

* **load** — ``--clients`` (32) concurrent streaming clients × ``--requests`` (4) each against the tiny
  random-weight model: every request must complete or get a queue/overload error (503), none lost, the
  server must not crash, and its memory (RSS) after the load is compared with after a warm-up; p50/p95
  time to first token (client side: request sent → first content chunk).
* **fuzz** — ``--fuzz`` (200) malformed or hostile requests (random bytes, cut JSON, wrong types, huge
  numbers, NaN, deep nesting, 10 MB bodies, unknown fields, bad UTF-8, ...): each must get a 4xx with an
  OpenAI error object; afterwards a valid request must still succeed.
* **overhead** — the same prompt on the same real model (SmolLM2-135M Q4_1 by default), greedy, the same
  threads and context: ``tandem generate --json`` (decode tok/s) vs a streamed request through the server
  (the server's own decode tok/s from ``timings.predicted_per_second``, and the client's chunk rate),
  interleaved ``--rounds`` times; the median of the per-round ratios is the cost of serving (also reported:
  the ratio of the medians, and of the fastest rounds, the least disturbed by other work on a shared machine).

Usage::

    python benchmarks/server_load.py                    # everything, prints a summary, exits 1 on a failed target
    python benchmarks/server_load.py --only overhead --model ~/.cache/tandem/reference-models/X.gguf --threads 2
    python benchmarks/server_load.py --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.library.reference_models import smollm2_q4_1  # noqa: E402
from app.store.db import open_database  # noqa: E402
from app.store.settings import SettingsStore, model_key  # noqa: E402
from tests.tiny_models import write_tiny_set  # noqa: E402

PROMPT = "Write a short Python function that checks whether a number is prime, and explain it in two sentences."


class Server:
    """`tandem serve` in a subprocess with its own data folder and models folder."""

    def __init__(self, models: Path, data: Path, *extra: str) -> None:
        env = {**os.environ, "TANDEM_DATA_DIR": str(data), "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", "0", "--models-dir",
                                      str(models), "--quiet", *extra], cwd=ROOT, env=env, stderr=subprocess.PIPE,
                                     text=True)
        self.base = ""
        deadline = time.monotonic() + 300
        while not self.base:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise SystemExit(f"the server exited: {self.proc.stderr.read()}")
            if time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            m = re.search(r"(http://127\.0\.0\.1:\d+)/v1", line)
            self.base = m.group(1) if m else ""

    def rss(self) -> int:
        return psutil.Process(self.proc.pid).memory_info().rss

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        self.proc.send_signal(2)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))] if values else float("nan")


# -- load ---------------------------------------------------------------------------------------------------
async def _client(base: str, model: str, n: int, max_tokens: int, results: list) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=600) as c:
        for i in range(n):
            body = {"model": model, "messages": [{"role": "user", "content": f"the value of data {i}"}],
                    "max_tokens": max_tokens, "temperature": 0, "stream": True}
            t0 = time.monotonic()
            ttft, text, status, ended = None, [], 0, False
            try:
                async with c.stream("POST", "/v1/chat/completions", json=body) as r:
                    status = r.status_code
                    if status != 200:
                        await r.aread()
                        results.append({"status": status, "error": r.json().get("error", {}).get("code")})
                        continue
                    async for line in r.aiter_lines():
                        if line == "data: [DONE]":
                            ended = True
                        elif line.startswith("data: "):
                            chunk = json.loads(line[6:])
                            delta = chunk["choices"][0]["delta"].get("content") if chunk.get("choices") else None
                            if delta:
                                ttft = ttft if ttft is not None else time.monotonic() - t0
                                text.append(delta)
            except httpx.HTTPError as e:
                results.append({"status": -1, "error": type(e).__name__})
                continue
            results.append({"status": status, "ended": ended, "ttft": ttft, "seconds": time.monotonic() - t0,
                            "chars": len("".join(text))})


def run_load(args, tiny: Path, data: Path) -> dict:
    server = Server(tiny, data, "--model", "tiny-target")
    model = "tiny-target"
    try:
        warm: list = []
        asyncio.run(_client(server.base, model, 8, args.max_tokens, warm))
        rss_warm = server.rss()
        results: list = []
        t0 = time.monotonic()

        async def everyone() -> None:
            await asyncio.gather(*[_client(server.base, model, args.requests, args.max_tokens, results)
                                   for _ in range(args.clients)])

        asyncio.run(everyone())
        wall = time.monotonic() - t0
        rss_after = server.rss()
        results2: list = []

        async def again() -> None:
            await asyncio.gather(*[_client(server.base, model, args.requests, args.max_tokens, results2)
                                   for _ in range(args.clients)])

        asyncio.run(again())
        rss_after2 = server.rss()
        health = httpx.get(f"{server.base}/health").json()
        alive = server.alive()
    finally:
        code = server.stop()
    expected = args.clients * args.requests
    done = [r for r in results if r["status"] == 200 and r.get("ended")]
    overload = [r for r in results if r["status"] == 503]
    lost = expected - len(done) - len(overload)
    ttfts = [r["ttft"] for r in done if r["ttft"] is not None]
    return {
        "clients": args.clients, "requests_each": args.requests, "max_tokens": args.max_tokens,
        "expected": expected, "completed": len(done), "overload_503": len(overload), "lost": lost,
        "second_round_completed": sum(1 for r in results2 if r["status"] == 200 and r.get("ended")),
        "wall_seconds": round(wall, 2), "ttft_p50_s": round(_percentile(ttfts, 0.5), 4),
        "ttft_p95_s": round(_percentile(ttfts, 0.95), 4), "ttft_max_s": round(max(ttfts), 4) if ttfts else None,
        "rss_after_warmup_mb": round(rss_warm / 2**20, 1), "rss_after_load_mb": round(rss_after / 2**20, 1),
        "rss_after_second_load_mb": round(rss_after2 / 2**20, 1), "queue_depth_after": health["queue_depth"],
        "server_alive": alive, "exit_code": code,
        "ok": lost == 0 and alive and health["queue_depth"] == 0 and code == 0,
    }


# -- fuzz ---------------------------------------------------------------------------------------------------
def _hostile(rng: random.Random, model: str) -> list[tuple[str, bytes]]:
    ok = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}

    def with_(**kw) -> bytes:
        return json.dumps({**ok, **kw}).encode()

    cases: list[tuple[str, bytes]] = [
        ("empty", b""), ("null", b"null"), ("array", b"[]"), ("string", b'"x"'), ("number", b"1"),
        ("cut", with_()[:-3]), ("bad utf-8", b'{"model": "\xff\xfe"}'), ("NaN", b'{"model": "x", "temperature": NaN}'),
        ("Infinity", b'{"model": "x", "top_p": Infinity}'), ("1e999", with_()[:-1] + b', "temperature": 1e999}'),
        ("deep", b'{"a":' * 5000 + b"1" + b"}" * 5000), ("10 MB", b'{"model": "x", "prompt": "' + b"a" * 10_000_000 + b'"}'),
        ("huge int", with_()[:-1] + b', "max_tokens": ' + b"9" * 5000 + b"}"),
        ("no model", json.dumps({"messages": ok["messages"]}).encode()), ("unknown model", with_(model="nope/nope")),
        ("no messages", json.dumps({"model": model}).encode()), ("n=3", with_(n=3)),
        ("empty messages", with_(messages=[])), ("last not user", with_(messages=[{"role": "assistant", "content": "x"}])),
        ("image part", with_(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}])),
        ("stream_options alone", with_(stream_options={"include_usage": True})),
        ("long prompt", with_(messages=[{"role": "user", "content": "the value of data " * 4000}])),
        ("incompatible draft", with_(draft_model="tiny-other-vocab")),
        ("draft unknown", with_(draft_model="none/none")), ("draft_min > max", with_(draft_max=2, draft_min=5)),
    ]
    # values each field refuses (type or range): every case below must be a 4xx
    invalid = {
        "temperature": [-1, 5.1, "hot", True, [], 1e308], "top_p": [0, -0.5, 1.5, "x", False],
        "max_tokens": [0, -1, 10**30, "ten", 3.5, True, 2**63], "seed": [3.5, "x", True, 2**64, -(2**64), []],
        "stop": [1, [1], ["a"] * 5, {"a": 1}, ["x" * 300]], "stream": ["yes", 1, []],
        "top_k": [-1, "x", 2.5, 10**9], "min_p": [1, -0.1, "x"], "repeat_penalty": [0, 11, "x"],
        "draft_max": [0, 33, "x", 2.5], "draft_min": [-1, 33, "x"], "draft_p_min": [1, -0.1, "x"],
        "adaptive": ["yes", 1], "draft_source": ["", "turbo", 1], "n": [0, 2, "1", True],
        "frequency_penalty": [1, "x"], "logprobs": [True, "x"], "model": [1, None, ["x"], ""],
        "messages": [None, "hi", [1], [{"role": "user"}], [{"content": "x"}]],
    }
    while len(cases) < 200:
        pick = rng.random()
        if pick < 0.6:
            name = rng.choice(list(invalid))
            value = rng.choice(invalid[name])
            cases.append((f"{name}={value!r}"[:60], json.dumps({**ok, name: value}).encode()))
        elif pick < 0.75:
            cases.append(("unknown field", with_(**{f"x{rng.randrange(10**6)}": rng.randrange(10)})))
        elif pick < 0.9:
            raw = with_(temperature=rng.random())
            cases.append(("cut JSON", raw[:rng.randrange(1, len(raw) - 1)]))
        else:
            cases.append(("random bytes", bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))))
    return cases[:200]


def run_fuzz(args, tiny: Path, data: Path) -> dict:
    server = Server(tiny, data)
    rng = random.Random(args.seed)
    counts: dict[int, int] = {}
    bad: list[str] = []
    try:
        with httpx.Client(base_url=server.base, timeout=120) as c:
            for name, body in _hostile(rng, "tiny-target"):
                for path in ("/v1/chat/completions",) if rng.random() < 0.8 else ("/v1/completions",):
                    try:
                        r = c.post(path, content=body, headers={"Content-Type": "application/json"})
                    except httpx.HTTPError as e:
                        bad.append(f"{name}: {type(e).__name__}")
                        continue
                    counts[r.status_code] = counts.get(r.status_code, 0) + 1
                    try:
                        err = r.json()["error"]
                        clear = bool(err["message"]) and 400 <= r.status_code < 500
                    except (ValueError, KeyError, TypeError):
                        clear = False
                    if not clear:
                        bad.append(f"{name}: {r.status_code} {r.text[:120]!r}")
            after = c.post("/v1/chat/completions", json={"model": "tiny-target", "max_tokens": 4,
                                                         "messages": [{"role": "user", "content": "hi"}]})
        alive = server.alive()
    finally:
        code = server.stop()
    return {"requests": sum(counts.values()), "status_counts": dict(sorted(counts.items())),
            "not_clear_4xx": bad, "valid_request_after": after.status_code, "server_alive": alive,
            "exit_code": code, "ok": not bad and after.status_code == 200 and alive and code == 0}


# -- overhead ------------------------------------------------------------------------------------------------
def run_overhead(args, data: Path) -> dict:
    model = Path(args.model) if args.model else smollm2_q4_1()
    models = Path(tempfile.mkdtemp(prefix="tandem-serve-models-"))
    link = models / model.name
    link.symlink_to(model)
    store = SettingsStore(open_database(data / "tandem.sqlite3"))
    store.set_model_settings(model_key(link), {"threads": args.threads, "n_ctx": args.ctx})  # the same as generate's
    server = Server(models, data, "--model", model.stem, "--no-past-chats")
    env = {**os.environ, "TANDEM_DATA_DIR": str(data), "PYTHONPATH": str(ROOT)}
    gen, srv, client_rates = [], [], []
    try:
        for _ in range(args.rounds):
            proc = subprocess.run([sys.executable, "-m", "app.cli", "generate", "-m", str(link), "-p", PROMPT,
                                   "-n", str(args.tokens), "--temperature", "0", "--threads", str(args.threads),
                                   "--ctx", str(args.ctx), "--no-past-chats", "--json"],
                                  cwd=ROOT, env=env, capture_output=True, text=True, check=True)
            gen.append(json.loads(proc.stdout)["stats"]["decode_tokens_per_second"])
            body = {"model": model.stem, "messages": [{"role": "user", "content": PROMPT}], "temperature": 0,
                    "max_tokens": args.tokens, "stream": True}
            first, chunks, timings = None, 0, None
            with httpx.Client(base_url=server.base, timeout=600) as c, \
                    c.stream("POST", "/v1/chat/completions", json=body) as r:
                for line in r.iter_lines():
                    if not line.startswith("data: {"):
                        continue
                    chunk = json.loads(line[6:])
                    if chunk.get("timings"):
                        timings = chunk["timings"]
                    if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                        chunks += 1
                        first = first or time.monotonic()
                last = time.monotonic()
            srv.append(timings["predicted_per_second"])
            if first and last > first and timings["predicted_n"] > 1:
                client_rates.append((timings["predicted_n"] - 1) / (last - first))
    finally:
        server.stop()
        shutil.rmtree(models, ignore_errors=True)
    g, s, cr = statistics.median(gen), statistics.median(srv), statistics.median(client_rates)
    # each round runs generate then the server back to back: the median of the per-round ratios follows the
    # machine's drift (other work on shared cores) better than the ratio of the medians
    cost = 1 - statistics.median(b / a for a, b in zip(gen, srv, strict=True))
    return {"model": model.name, "threads": args.threads, "ctx": args.ctx, "tokens": args.tokens,
            "rounds": args.rounds, "generate_tok_s": [round(x, 2) for x in gen],
            "server_tok_s": [round(x, 2) for x in srv], "client_chunk_tok_s": [round(x, 2) for x in client_rates],
            "median_generate_tok_s": round(g, 2), "median_server_tok_s": round(s, 2),
            "median_client_tok_s": round(cr, 2), "cost_server_vs_generate": round(cost, 4),
            "cost_of_medians": round(1 - s / g, 4),
            "cost_client_vs_generate": round(1 - cr / g, 4),
            # the fastest round of each side: the least disturbed by other work on the machine
            "best_generate_tok_s": round(max(gen), 2), "best_server_tok_s": round(max(srv), 2),
            "cost_best_server_vs_best_generate": round(1 - max(srv) / max(gen), 4), "ok": cost <= 0.03}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", choices=["load", "fuzz", "overhead"])
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--requests", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=12)
    p.add_argument("--model", help="the real model of the overhead part (default: SmolLM2-135M Q4_1)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ctx", type=int, default=4096)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", help="write every figure here")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tandem-server-load-"))
    tiny = work / "models"
    write_tiny_set(tiny / "tiny-org" / "tiny-repo")
    out: dict = {"machine": {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]}}
    try:
        parts = [args.only] if args.only else ["load", "fuzz", "overhead"]
        for part in parts:
            data = work / f"data-{part}"
            data.mkdir()
            t0 = time.monotonic()
            if part == "load":
                out[part] = run_load(args, tiny, data)
            elif part == "fuzz":
                out[part] = run_fuzz(args, tiny, data)
            else:
                out[part] = run_overhead(args, data)
            out[part]["seconds"] = round(time.monotonic() - t0, 1)
            print(f"{part}: {json.dumps(out[part])}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0 if all(out[k]["ok"] for k in out if k != "machine") else 1


if __name__ == "__main__":
    sys.exit(main())

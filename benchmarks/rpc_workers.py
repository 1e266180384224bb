"""The target split over two workers on this machine, plain vs speculative (draft local), with added latency.

Starts two ``tandem worker`` processes on free loopback ports, splits the target over them (all layers on the
workers, half each) and measures, in one run, greedy decoding speed of

* the target on this machine alone (plain and speculative: the baseline),
* the target over the two workers, reached directly,
* the target over the two workers through a relay that adds D ms to each direction of every connection
  (D = 1 and 5 by default: a round trip gets 2·D longer), speculative with the draft on this machine,

and checks that every greedy run writes the same tokens as the all-local plain run (exit 1 if not). This
process and the workers run with the OpenMP spin setting tandem uses with workers
(app.cli_workers.prepare_process), the all-local baseline too.

Why a relay: this kernel has no ``netem`` qdisc (``tc qdisc add dev lo root netem delay 5ms`` is refused), so
the latency is added in user space: the relay (this script with ``--relay``, one process per worker) accepts
on a loopback port, connects to the worker and forwards each chunk it reads after holding it for D ms, in
order, both ways. Everything stays on 127.0.0.1. The relay's own cost shows in the "relay 0 ms" row.

Usage::

    python benchmarks/rpc_workers.py                       # SmolLM2 F32 target, Q4_1 draft, 2 threads
    python benchmarks/rpc_workers.py --target f16 --delays 0,1,5 --tokens 128 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PROMPTS = [
    "Write a Python function that checks whether a string is a palindrome, with a docstring and two tests.",
    "Explain in three short paragraphs how a hash table works and what happens on a collision.",
    "Write a JSON object describing a book: title, author, year, a list of three chapters with page counts.",
]


# -- the relay ------------------------------------------------------------------------------------------
async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(send())
    while True:
        data = await reader.read(1 << 20)
        queue.put_nowait((time.monotonic() + delay, data))
        if not data:
            break
    await sender


def relay(listen_port: int, worker_port: int, delay_ms: float) -> None:
    """Forward 127.0.0.1:listen_port to 127.0.0.1:worker_port, holding every chunk delay_ms in each direction."""
    import socket

    delay = delay_ms / 1000

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        worker_r, worker_w = await asyncio.open_connection("127.0.0.1", worker_port)
        for w in (client_w, worker_w):
            w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(_pipe(client_r, worker_w, delay), _pipe(worker_r, client_w, delay),
                             return_exceptions=True)

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# -- the measurement --------------------------------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)


def _wait_ready(endpoint, proc: subprocess.Popen[str]) -> None:
    from app.engine.workers import WorkerError, probe

    deadline = time.monotonic() + 60
    while True:
        try:
            probe(endpoint, timeout=2.0)
            return
        except WorkerError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"rpc_workers: {endpoint} did not start") from None
            time.sleep(0.2)


def _run(engine, tokens: int) -> tuple[list[list[int]], float, float, int]:
    """Every prompt once, greedy: (tokens per prompt, decode tok/s over all, mean accepted per round, rounds)."""
    from app.engine.sampling import SamplingParams
    from app.engine.session import ChatSession

    out, n, seconds, accepted, rounds = [], 0, 0.0, 0, 0
    for prompt in PROMPTS:
        engine.reset_cache()
        result = ChatSession(engine).send(prompt, SamplingParams(temperature=0.0), max_tokens=tokens)
        s = result.stats
        out.append(result.tokens)
        n += max(0, s.generated_tokens - 1)
        seconds += s.decode_seconds
        accepted += s.accepted
        rounds += s.rounds
    return out, n / seconds if seconds else 0.0, accepted / rounds if rounds else 0.0, rounds


def _measure_condition(target: Path, draft: Path, spec, endpoints, args: argparse.Namespace) -> dict[str, object]:
    """Load the target (on `endpoints`, or here), warm up, measure plain; load the draft, measure speculative."""
    from app.engine.session import Engine, ModelSettings

    engine = Engine(history_enabled=False)
    try:
        engine.load_target(ModelSettings(target, n_ctx=2048, n_threads=args.threads, workers=endpoints))
        _run(engine, 8)  # warm-up: the weights paged in, the workers' buffers and graphs set up
        plain, plain_tps, _, _ = _run(engine, args.tokens)
        engine.set_spec(spec)
        engine.load_draft(ModelSettings(draft, n_ctx=2048, n_threads=args.threads))
        _run(engine, 8)
        toks, spec_tps, accepted, _ = _run(engine, args.tokens)
        return {"plain_tps": plain_tps, "spec_tps": spec_tps, "mean_accepted": accepted, "tokens_plain": plain,
                "tokens_spec": toks}
    finally:
        engine.close()


def measure(args: argparse.Namespace) -> int:
    from app.engine import sources
    from app.engine.defaults import spec_defaults
    from app.engine.workers import Endpoint
    from app.library import reference_models as refs

    target = {"f32": refs.smollm2_f32, "f16": refs.smollm2_f16}[args.target]()
    draft = refs.smollm2_q4_1()
    spec = spec_defaults(sources.DRAFT_MODEL)
    if args.draft_max:
        spec = replace(spec, draft_max=args.draft_max, adaptive=False)
    procs: list[subprocess.Popen[str]] = []
    rows: list[dict[str, object]] = []
    reference: list[list[int]] | None = None
    identical = True
    try:
        workers = []
        for _ in range(2):
            port = free_port()
            proc = _spawn(["-m", "app.cli", "worker", "--port", str(port), "--threads", str(args.threads)])
            procs.append(proc)
            workers.append(Endpoint("127.0.0.1", port))
            _wait_ready(workers[-1], proc)

        conditions: list[tuple[str, tuple[Endpoint, ...]]] = [("this machine only", ()), ("2 workers", tuple(workers))]
        for delay in args.delays:
            relayed = []
            for w in workers:
                port = free_port()
                proc = _spawn([str(Path(__file__).resolve()), "--relay", str(port), str(w.port), str(delay)])
                procs.append(proc)
                assert proc.stdout is not None
                proc.stdout.readline()  # "ready"
                relayed.append(Endpoint("127.0.0.1", port))
            conditions.append((f"2 workers, relay +{delay:g} ms each way", tuple(relayed)))

        best: dict[str, dict[str, object]] = {}
        for repeat in range(args.repeats):  # interleaved rounds: a machine whose load drifts slows all alike
            for label, endpoints in conditions:
                row = _measure_condition(target, draft, spec, endpoints, args)
                plain_toks, spec_toks = row.pop("tokens_plain"), row.pop("tokens_spec")
                reference = reference or plain_toks  # the first run: all-local plain
                identical = identical and plain_toks == reference and spec_toks == reference
                kept = best.setdefault(label, {"condition": label, "plain_tps": 0.0, "spec_tps": 0.0})
                for key in ("plain_tps", "spec_tps"):
                    kept[key] = max(float(kept[key]), float(row[key]))  # type: ignore[arg-type]
                if float(row["spec_tps"]) >= float(kept["spec_tps"]):
                    kept["mean_accepted"] = row["mean_accepted"]
                print(f"rpc_workers: round {repeat + 1}/{args.repeats}, {label}: plain {row['plain_tps']:.1f} tok/s, "
                      f"speculative {row['spec_tps']:.1f} tok/s", file=sys.stderr, flush=True)
        rows = list(best.values())
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()

    local_plain = float(rows[0]["plain_tps"])
    print(f"\nSmolLM2 {args.target.upper()} target ← Q4_1 draft (on this machine), {args.threads} threads, greedy, "
          f"{len(PROMPTS)} prompts × {args.tokens} tokens; speculative: "
          f"{'adaptive, up to ' if spec.adaptive else 'draft max '}{spec.draft_max}\n")
    print(f"best of {args.repeats} interleaved rounds; greedy output identical to all-local plain in every run: "
          f"{'yes' if identical else 'NO'}\n")
    print("| where the target runs | plain tok/s | × local plain | speculative tok/s | spec / plain | "
          "accepted per round |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['condition']} | {r['plain_tps']:.1f} | {float(r['plain_tps']) / local_plain:.2f} | "
              f"{r['spec_tps']:.1f} | {float(r['spec_tps']) / float(r['plain_tps']):.2f} | "
              f"{r['mean_accepted']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"target": args.target, "threads": args.threads, "tokens": args.tokens,
                                               "repeats": args.repeats, "identical": identical, "rows": rows},
                                              indent=2), encoding="utf-8")
    if not identical:
        print("rpc_workers: a run's greedy tokens differ from the all-local plain run", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--relay":
        relay(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
        return 0
    from app.cli_workers import prepare_process

    prepare_process(["generate", "--worker"])  # what tandem does in a process that uses workers, before llama.cpp loads
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", choices=("f32", "f16"), default="f32")
    p.add_argument("--threads", "-t", type=int, default=2)
    p.add_argument("--tokens", "-n", type=int, default=128)
    p.add_argument("--delays", type=lambda t: [float(x) for x in t.split(",") if x], default=[0.0, 1.0, 5.0],
                   help="added one-way latencies in ms, comma-separated (default 0,1,5)")
    p.add_argument("--repeats", "-r", type=int, default=3, help="rounds over all conditions; the best counts")
    p.add_argument("--draft-max", type=int, default=None, help="a fixed draft length (default: adaptive)")
    p.add_argument("--json", metavar="OUT")
    args = p.parse_args()
    from app.engine.workers import rpc_supported

    if not rpc_supported():
        from app.engine.workers import NO_RPC

        print(f"rpc_workers: {NO_RPC}", file=sys.stderr)
        return 1
    return measure(args)


if __name__ == "__main__":
    sys.exit(main())

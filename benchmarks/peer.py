"""Tandem next to llama.cpp's own tools: same GGUF files, threads, prompt and settings, in one run.

Runs, interleaved round by round (so a machine whose speed drifts slows both sides alike):

* ``llama-bench -p 0 -n N`` (plain decoding speed, tg) on the target — and Tandem's plain decoding of N
  tokens on the same file: once through the full loop (``generate()``: sampling, text, stats) and once as
  bare one-token ``llama_decode`` calls (what llama-bench itself times), to separate the kernels from Python;
* ``llama-speculative-simple --spec-type draft-simple --spec-draft-n-max K`` — and Tandem with the same
  draft model and the same K, on the same prompt text, greedy, N tokens;
* optionally Tandem's adaptive draft length (``--adaptive``), next to Tandem plain and its best fixed length;
* prompt lookup: ``llama-speculative-simple --spec-type ngram-simple`` and Tandem's prompt lookup on an edit
  prompt, each next to Tandem plain on that prompt (``--no-lookup`` leaves it out).

It also profiles the draft side: Tandem's draft milliseconds per generated token next to llama-bench's cost
of the same draft file at the same depth: tg × the draft's decode calls per emitted token, and the cost of the
same decodes (single-token calls at tg, two-token catch-up calls at pp2). With ``--draft none`` only plain decoding is compared (e.g. a K-quant file with no draft).
Exits 1 if any greedy Tandem run differs from Tandem's plain run.

The peer tools come from ``shared/peer/build-llama-tools.sh``. Tandem loads models without llama.cpp's
extra buffer types (repacked weights / AMX), so the peer tools get the same setting (``--repack 0``,
``--no-repack``) unless ``--peer-repack`` is given. Prints a table of ratios (Tandem / llama.cpp) and writes
JSON with every measurement.

Usage::

    python benchmarks/peer.py --adaptive                        # SmolLM2 F32 target, Q4_1 draft, 2 threads
    python benchmarks/peer.py --target f16 --adaptive --no-lookup
    python benchmarks/peer.py --target gemma --draft none       # plain decoding of a K-quant file
    python benchmarks/peer.py --target T.gguf --draft D.gguf --threads 4 --draft-max 3,5,8 --json out.json
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CODE_PROMPT = (
    "Write a Python module with a function `parse_csv(text)` that parses CSV text into a list of dictionaries, "
    "a function `to_json(rows)`, and a small command-line interface. Add docstrings."
)
EDIT_PROMPT = (
    "Rewrite the following text in a formal tone, keeping its structure and all of its details:\n\n"
    "Hey team, just a quick note about the meeting tomorrow. We're gonna start at 10 instead of 9 because the "
    "room is booked. Please bring your laptops and the reports from last week. If you can't make it, send me a "
    "message before 8 so I can update the list. Lunch will be provided after the meeting, so don't eat too much "
    "at breakfast. Thanks a lot and see you there!"
)

_DECODED = re.compile(r"decoded\s+(\d+) tokens in\s+([\d.]+) seconds, speed:\s+([\d.]+) t/s")
_ENCODED = re.compile(r"encoded\s+(\d+) tokens in")
_DRAFTED = re.compile(r"n_drafted\s*=\s*(\d+)")
_ACCEPT = re.compile(r"n_accept\s*=\s*(\d+)")


def find_bin_dir(explicit: str | None) -> Path:
    candidates = [explicit] if explicit else [os.environ.get("TANDEM_PEER_BIN")]
    candidates += sorted(glob.glob(str(Path.home() / ".cache/tandem-peer/*/vendor/llama.cpp/build/bin")))
    for c in candidates:
        if c and (Path(c) / "llama-bench").is_file():
            return Path(c)
    raise SystemExit(
        f"llama.cpp tools not found{f' in {explicit}' if explicit else ''}: build them with "
        "shared/peer/build-llama-tools.sh and pass --bin DIR (or set TANDEM_PEER_BIN)"
    )


def build_label(bin_dir: Path) -> str:
    """ "llama.cpp", or "llama.cpp (llamafile off)" for a build like Tandem's (read from its CMakeCache)."""
    cache = bin_dir.parent / "CMakeCache.txt"
    try:
        if "GGML_LLAMAFILE:BOOL=OFF" in cache.read_text(encoding="utf-8", errors="replace"):
            return "llama.cpp (llamafile off)"
    except OSError:
        pass
    return "llama.cpp"


def _run(cmd: list[str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        sig = f" (signal {-proc.returncode})" if proc.returncode < 0 else ""
        raise RuntimeError(f"{Path(cmd[0]).name} exited with {proc.returncode}{sig}: {' | '.join(tail)}")
    return proc


def llama_bench_tg(bin_dir: Path, model: Path, threads: int, n: int, repack: bool, reps: int = 2,
                   depth: int = 0) -> list[float]:
    """tg tokens/s of each of llama-bench's repetitions (`depth` tokens already in the context)."""
    cmd = [str(bin_dir / "llama-bench"), "-m", str(model), "-t", str(threads), "-p", "0", "-n", str(n), "-r",
           str(reps), "-d", str(depth), "--repack", "1" if repack else "0", "-o", "json"]
    data = json.loads(_run(cmd).stdout)
    return [float(x) for x in data[0].get("samples_ts") or [data[0]["avg_ts"]]]


def llama_bench_pp(bin_dir: Path, model: Path, threads: int, n: int, repack: bool, reps: int = 2,
                   depth: int = 0) -> list[float]:
    """pp tokens/s of a batch of `n` tokens (`depth` tokens already in the context), per repetition."""
    cmd = [str(bin_dir / "llama-bench"), "-m", str(model), "-t", str(threads), "-p", str(n), "-n", "0", "-r",
           str(reps), "-d", str(depth), "--repack", "1" if repack else "0", "-o", "json"]
    data = json.loads(_run(cmd).stdout)
    return [float(x) for x in data[0].get("samples_ts") or [data[0]["avg_ts"]]]


def spec_simple(bin_dir: Path, target: Path, draft: Path | None, prompt: str, threads: int, n: int, n_max: int,
                ctx: int, repack: bool, spec_type: str = "draft-simple") -> dict[str, object]:
    cmd = [str(bin_dir / "llama-speculative-simple"), "-m", str(target), "--spec-type", spec_type,
           "--temp", "0", "-t", str(threads), "-c", str(ctx), "-n", str(n), "-p", prompt]
    if spec_type == "draft-simple":
        cmd += ["-md", str(draft), "--spec-draft-n-max", str(n_max), "--spec-draft-p-min", "0"]
    else:
        cmd += ["--spec-ngram-simple-size-m", str(n_max)]
    if not repack:
        cmd.append("--no-repack")
    proc = _run(cmd)
    out = proc.stdout + proc.stderr
    m = _DECODED.search(out)
    if not m:
        raise RuntimeError("llama-speculative-simple: no 'decoded ... t/s' line in its output")
    drafted = int(_DRAFTED.search(out).group(1)) if _DRAFTED.search(out) else 0
    accepted = int(_ACCEPT.search(out).group(1)) if _ACCEPT.search(out) else 0
    enc = _ENCODED.search(out)
    return {
        "tps": float(m.group(3)),
        "tokens": int(m.group(1)),
        "drafted": drafted,
        "accepted": accepted,
        "acceptance": accepted / drafted if drafted else 0.0,
        "prompt_tokens": int(enc.group(1)) if enc else None,
    }


class TandemSide:
    """Tandem in this process: the target (and the draft) loaded once, every run from empty caches."""

    def __init__(self, target: Path, draft: Path | None, threads: int, ctx: int) -> None:
        from app.engine.session import Engine, ModelSettings

        self.engine = Engine(history_enabled=False)  # no past chats: every repeat starts from the same knowledge
        self.engine.load_target(ModelSettings(target, n_ctx=ctx, n_threads=threads))
        self.draft_proposer = None
        if draft is not None:  # None: plain decoding only
            self.engine.load_draft(ModelSettings(draft, n_ctx=ctx, n_threads=threads))
            self.draft_proposer = self.engine.proposer

    def render(self, user_text: str) -> str:
        """The prompt as text, rendered with the model's chat template (the same text goes to llama.cpp)."""
        from app.engine.chat_template import Message
        from app.engine.session import ChatSession

        if self.engine.target.info.chat_template is None:
            return user_text
        return ChatSession(self.engine).render([Message("user", user_text)])

    def generate(self, prompt_text: str, n: int, proposer=None, n_max: int = 0, adaptive: bool = False):
        from app.engine.sampling import SamplingParams
        from app.engine.speculative import SpecSettings, generate

        eng = self.engine
        tokens = eng.tokenize_prompt(prompt_text, special=True)
        eng.target.ctx.clear()
        if proposer is not None:
            proposer.reset()
        res = generate(eng.target.ctx, tokens, SamplingParams(temperature=0.0), proposer=proposer,
                       spec=SpecSettings(draft_max=max(n_max, 1), adaptive=adaptive), max_tokens=n)
        st = res.stats
        after_first = st.decode_seconds  # after the first token and both prompts (as llama.cpp times it)
        gen = st.generated_tokens
        return {
            "tps": (gen - 1) / after_first if after_first > 0 else 0.0,
            "tokens": gen,
            "token_ids": list(res.tokens),
            "prompt_tokens": len(tokens),
            "drafted": st.drafted,
            "accepted": st.accepted,
            "acceptance": st.acceptance_rate,
            "draft_decodes_per_token": st.draft_decodes / max(gen - 1, 1),
            "draft_tokens_per_token": st.draft_decoded_tokens / max(gen - 1, 1),
            "draft_ms_per_token": 1000 * st.draft_seconds / max(gen - 1, 1),
            "target_ms_per_token": 1000 * st.target_seconds / max(gen - 1, 1),
            "other_ms_per_token": 1000 * max(after_first - st.draft_seconds - st.target_seconds, 0) / max(gen - 1, 1),
            "text": res.text,
        }

    def raw_decode(self, n: int, prefill: list[int] | None = None) -> float:
        """Bare one-token decodes (no sampling, no Python loop logic): what llama-bench's tg times."""
        ctx = self.engine.target.ctx
        ctx.clear()
        tok = self.engine.target.model.bos if self.engine.target.model.bos >= 0 else 1
        ctx.decode(prefill or [tok], outputs="last")
        t0 = time.perf_counter()
        for _ in range(n):
            ctx.decode([tok], outputs="last")
        dt = time.perf_counter() - t0
        ctx.clear()
        return n / dt

    def close(self) -> None:
        self.engine.close()


def print_footer(identical: bool, load0: tuple[float, ...], load1: tuple[float, ...], t_start: float) -> None:
    """The closing lines of a comparison: token identity, the load average around it, the wall time."""
    print(f"greedy output of every Tandem run token-identical to Tandem plain: {'yes' if identical else 'NO'}")
    print(f"load average before {load0[0]:.2f}, after {load1[0]:.2f}; {time.time() - t_start:.0f} s")


def strip_runs(results: dict, *keys: str) -> None:
    """Drop the bulky per-run fields (texts, token ids) before the measurements are written as JSON."""
    for by_side in results.values():
        for vals in by_side.values():
            for v in vals:
                if isinstance(v, dict):
                    for k in keys:
                        v.pop(k, None)


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _model_path(choice: str | None, default: str) -> Path:
    from app.library import reference_models as rm

    named = {"f16": rm.smollm2_f16, "f32": rm.smollm2_f32, "q4_1": rm.smollm2_q4_1, "gemma": rm.gemma3_270m}
    key = (choice or default).lower()
    return named[key]() if key in named else Path(choice)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", help="target: f32 (default), f16, gemma, q4_1 (SmolLM2 / Gemma reference models) or "
                    "a GGUF path")
    ap.add_argument("--draft", help="draft: q4_1 (default: SmolLM2-135M-Instruct Q4_1), a GGUF path, or none "
                    "(plain decoding only: llama-bench vs Tandem)")
    ap.add_argument("--bin", action="append", default=[],
                    help="folder with llama-bench and llama-speculative-simple (repeat to compare several builds)")
    ap.add_argument("--threads", "-t", type=int, default=2)
    ap.add_argument("--draft-max", default="3,5,8")
    ap.add_argument("-n", type=int, default=128, help="tokens to generate (tg and speculative runs)")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--repeats", "-r", type=int, default=3)
    ap.add_argument("--prompt", default=CODE_PROMPT, help="user message for the speculative runs")
    ap.add_argument("--edit-prompt", default=EDIT_PROMPT, help="user message for the prompt-lookup runs")
    ap.add_argument("--no-lookup", action="store_true", help="skip the prompt-lookup comparison")
    ap.add_argument("--adaptive", action="store_true", help="also run Tandem's adaptive draft length")
    ap.add_argument("--peer-repack", action="store_true",
                    help="let the peer tools repack weights (llama.cpp's default; Tandem never does)")
    ap.add_argument("--json", help="write every measurement here")
    args = ap.parse_args(argv)

    target = _model_path(args.target, "f32")
    draft = None if (args.draft or "").lower() == "none" else _model_path(args.draft, "q4_1")
    peers = [(build_label(b), b) for b in (find_bin_dir(x) for x in (args.bin or [None]))]
    if len({label for label, _ in peers}) < len(peers):
        peers = [(f"{label} [{i + 1}]", b) for i, (label, b) in enumerate(peers)]
    ks = [int(k) for k in args.draft_max.split(",") if k.strip()] if draft is not None else []
    repack = args.peer_repack
    lookup_runs = not args.no_lookup and draft is not None
    for label, b in peers:
        print(f"peer tools: {label}: {b}", file=sys.stderr)
    print(f"target {target.name}, draft {draft.name if draft else 'none'}, {args.threads} threads, n={args.n}, "
          f"greedy, peer repack {'on' if repack else 'off'}", file=sys.stderr)

    side = TandemSide(target, draft, args.threads, args.ctx)
    prompt_text = side.render(args.prompt)
    edit_text = side.render(args.edit_prompt)
    prompt_tokens = side.engine.tokenize_prompt(prompt_text, special=True)
    depth = len(prompt_tokens)  # llama-bench -d: decode after as many tokens as Tandem's prompt has
    results: dict[str, dict[str, list]] = {}

    def add(key: str, side_name: str, value: object) -> None:
        vals = value if isinstance(value, list) else [value]
        results.setdefault(key, {}).setdefault(side_name, []).extend(vals)

    load0 = os.getloadavg()
    t_start = time.time()
    try:
        from app.engine.proposers import HistoryProposer

        lookup = HistoryProposer()  # this chat only: no past chats in a benchmark
        side.generate(prompt_text, 8, side.draft_proposer, 3)  # warm-up
        for rep in range(args.repeats):
            print(f"round {rep + 1}/{args.repeats}", file=sys.stderr)
            for label, b in peers:
                add("tg_target", label, llama_bench_tg(b, target, args.threads, args.n, repack))
                add("tg_depth", label, llama_bench_tg(b, target, args.threads, args.n, repack, depth=depth))
            add("tg_target", "tandem", side.generate(prompt_text, args.n))
            add("tg_target", "tandem_raw", side.raw_decode(args.n))
            add("tg_depth", "tandem_raw", side.raw_decode(args.n, prefill=prompt_tokens))
            if draft is not None:
                for label, b in peers:
                    try:
                        add("tg_draft", label, llama_bench_tg(b, draft, args.threads, args.n, repack, depth=depth))
                        # a catch-up call decodes two tokens (the last guess and the target's own token)
                        add("pp2_draft", label, llama_bench_pp(b, draft, args.threads, 2, repack, depth=depth))
                    except RuntimeError as e:
                        add("tg_draft", "error", f"{label}: {e}")
            for k in ks:
                for label, b in peers:
                    try:
                        add(f"draft-{k}", label, spec_simple(b, target, draft, prompt_text, args.threads, args.n, k,
                                                             args.ctx, repack))
                    except RuntimeError as e:
                        add(f"draft-{k}", "error", f"{label}: {e}")
                add(f"draft-{k}", "tandem", side.generate(prompt_text, args.n, side.draft_proposer, k))
            if args.adaptive and draft is not None:
                add("adaptive", "tandem", side.generate(prompt_text, args.n, side.draft_proposer, max(ks + [8]),
                                                        adaptive=True))
            if lookup_runs:
                add("lookup", "tandem_plain", side.generate(edit_text, args.n))
                add("lookup", "tandem", side.generate(edit_text, args.n, lookup, 8))
                # Tandem's default for prompt lookup: the adaptive length, up to 16
                add("lookup", "tandem_adaptive", side.generate(edit_text, args.n, lookup, 16, adaptive=True))
                for label, b in peers:
                    try:
                        add("lookup", label, spec_simple(b, target, None, edit_text, args.threads, args.n, 8,
                                                         args.ctx, repack, spec_type="ngram-simple"))
                    except RuntimeError as e:
                        add("lookup", "error", f"{label}: {e}")
    finally:
        side.close()
    load1 = os.getloadavg()

    def tps_all(key: str, name: str) -> list[float]:
        return [v if isinstance(v, float) else v["tps"] for v in results.get(key, {}).get(name, [])
                if not isinstance(v, str)]

    def tps(key: str, name: str) -> float:
        return _median(tps_all(key, name))

    def best(key: str, name: str) -> float:
        vals = tps_all(key, name)
        return max(vals) if vals else float("nan")

    def field(key: str, name: str, f: str) -> float:
        vals = [v[f] for v in results.get(key, {}).get(name, []) if isinstance(v, dict)]
        return _median(vals)

    # greedy output of every Tandem run against Tandem's plain run of the same prompt
    plain_ids = [v["token_ids"] for v in results.get("tg_target", {}).get("tandem", [])]
    spec_keys = [f"draft-{k}" for k in ks] + (["adaptive"] if args.adaptive and draft is not None else [])
    identical = all(ids == plain_ids[0] for ids in plain_ids) and all(
        v["token_ids"] == plain_ids[0] for key in spec_keys for v in results.get(key, {}).get("tandem", []))
    lookup_plain = [v["token_ids"] for v in results.get("lookup", {}).get("tandem_plain", [])]
    if lookup_plain:
        identical &= all(v["token_ids"] == lookup_plain[0] for name in ("tandem", "tandem_adaptive")
                         for v in results["lookup"].get(name, []))

    pairs = []
    for label, _ in peers:
        pairs.append((f"plain decode, target: llama-bench tg ({label}) vs Tandem generate()", "tg_target", label,
                      "tg_target", "tandem", "≥ 0.95"))
        pairs.append((f"plain decode, target: llama-bench tg ({label}) vs Tandem bare llama_decode", "tg_target",
                      label, "tg_target", "tandem_raw", ""))
        pairs.append((f"plain decode after the {depth}-token prompt: llama-bench tg -d {depth} ({label}) vs Tandem "
                      "generate()", "tg_depth", label, "tg_target", "tandem", "≥ 0.95"))
        pairs.append((f"plain decode after the {depth}-token prompt: llama-bench tg -d {depth} ({label}) vs Tandem "
                      "bare llama_decode", "tg_depth", label, "tg_depth", "tandem_raw", ""))
    for k in ks:
        pairs.append((f"draft model, max {k}: Tandem plain vs Tandem", "tg_target", "tandem", f"draft-{k}", "tandem",
                      "≥ 1.45 (max 8, F32 target)" if k == 8 else ""))
        for label, _ in peers:
            pairs.append((f"draft model, max {k}: speculative-simple ({label}) vs Tandem", f"draft-{k}", label,
                          f"draft-{k}", "tandem", "≥ 1.35 (max 8, F32 target)" if k == 8 else ""))
    if args.adaptive and ks:
        best_k = max(ks, key=lambda k: tps(f"draft-{k}", "tandem"))
        pairs.append(("adaptive: Tandem plain vs Tandem adaptive", "tg_target", "tandem", "adaptive", "tandem",
                      "≥ 0.97 (F16 target)"))
        pairs.append((f"adaptive: Tandem's best fixed length (max {best_k}) vs Tandem adaptive", f"draft-{best_k}",
                      "tandem", "adaptive", "tandem", "≥ 0.95 (F32 target)"))
    if lookup_runs:
        for label, _ in peers:
            pairs.append((f"edit prompt: speculative-simple ngram-simple ({label}) vs Tandem prompt lookup",
                          "lookup", label, "lookup", "tandem", ""))
        pairs.append(("edit prompt: Tandem plain vs Tandem prompt lookup, max 8", "lookup", "tandem_plain", "lookup",
                      "tandem", ""))
        pairs.append(("edit prompt: Tandem plain vs Tandem prompt lookup, adaptive (cap 16, the default)", "lookup",
                      "tandem_plain", "lookup", "tandem_adaptive", ""))
    rows = [(name, tps(ka, a), tps(kb, b), best(ka, a), best(kb, b), goal) for name, ka, a, kb, b, goal in pairs]
    print()
    print(f"target {target.name}, draft {draft.name if draft else 'none'}, {args.threads} threads, {args.n} tokens, "
          f"greedy, {args.repeats} rounds")
    print()
    print("| measurement | reference tok/s (median / best) | Tandem tok/s (median / best) | ratio of medians | "
          "ratio of bests | target |")
    print("|---|---:|---:|---:|---:|---|")
    for name, a, b, ab, bb, goal in rows:
        print(f"| {name} | {a:.1f} / {ab:.1f} | {b:.1f} / {bb:.1f} | {b / a:.2f} | {bb / ab:.2f} | {goal} |")
    labels = [label for label, _ in peers]
    if ks:
        # the draft side next to llama-bench's cost for the draft file at the same depth: one decode call costs at
        # least a tg step; a catch-up call evaluates two tokens (the last guess and the target's own token)
        print()
        print("| draft max | " + " | ".join(f"{lb} acceptance" for lb in labels)
              + " | Tandem acceptance | Tandem ms/token: draft / target / other | draft calls / tokens evaluated "
              "per emitted token | llama-bench: tg ms × calls | llama-bench: the same decodes (tg + pp2) | "
              "Tandem draft ms / tg × calls | / the same decodes |")
        print("|---:|" + "---:|" * len(labels) + "---:|---|---|---:|---:|---:|---:|")
        tg_ms = 1000.0 / tps("tg_draft", labels[0]) if labels else float("nan")
        pp2_ms = 2000.0 / tps("pp2_draft", labels[0]) if labels else float("nan")  # one two-token call
        for k in ks:
            key = f"draft-{k}"
            peer_acc = " | ".join(f"{field(key, lb, 'acceptance'):.0%}" for lb in labels)
            calls, toks = field(key, "tandem", "draft_decodes_per_token"), field(key, "tandem", "draft_tokens_per_token")
            dms = field(key, "tandem", "draft_ms_per_token")
            pairs_per_token = max(toks - calls, 0.0)  # fixed lengths: a call holds one token, or two when catching up
            same = (calls - pairs_per_token) * tg_ms + pairs_per_token * pp2_ms
            print(f"| {k} | {peer_acc} | {field(key, 'tandem', 'acceptance'):.0%} | "
                  f"{dms:.2f} / {field(key, 'tandem', 'target_ms_per_token'):.2f} / "
                  f"{field(key, 'tandem', 'other_ms_per_token'):.2f} | {calls:.2f} / {toks:.2f} | "
                  f"{tg_ms * calls:.2f} | {same:.2f} | {dms / (tg_ms * calls):.2f} | {dms / same:.2f} |")
    print(f"\nplain Tandem ms/token: target {field('tg_target', 'tandem', 'target_ms_per_token'):.2f}, "
          f"other {field('tg_target', 'tandem', 'other_ms_per_token'):.3f}")
    for lb in labels:
        if draft is not None:
            print(f"llama-bench on the draft file at depth {depth} ({lb}): tg {tps('tg_draft', lb):.1f} tok/s (best "
                  f"{best('tg_draft', lb):.1f}), pp2 {tps('pp2_draft', lb):.1f} tok/s: a two-token call costs "
                  f"{2 * tps('tg_draft', lb) / tps('pp2_draft', lb):.2f} single-token calls")
    if args.adaptive and draft is not None:
        print(f"Tandem adaptive: {tps('adaptive', 'tandem'):.1f} tok/s (best {best('adaptive', 'tandem'):.1f}), "
              f"acceptance {field('adaptive', 'tandem', 'acceptance'):.0%}, draft calls per token "
              f"{field('adaptive', 'tandem', 'draft_decodes_per_token'):.2f}")
    errors = [e for r in results.values() for e in r.get("error", [])]
    for e in sorted(set(errors)):
        print(f"error: {e}")
    print_footer(identical, load0, load1, t_start)
    if args.json:
        strip_runs(results, "text", "token_ids")
        Path(args.json).write_text(json.dumps({
            "target": str(target), "draft": str(draft) if draft else None, "threads": args.threads, "n": args.n,
            "peer_repack": repack, "load_average": [load0, load1], "identical": identical, "results": results,
            "table": [{"measurement": r[0], "reference_median": r[1], "tandem_median": r[2], "reference_best": r[3],
                       "tandem_best": r[4], "target": r[5]} for r in rows],
        }, indent=2) + "\n")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())

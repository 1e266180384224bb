"""Drafting without a draft model, on real chats: Tandem's history drafter next to llama.cpp's model-free modes.

For every multi-turn chat of the built-in benchmark set (code iteration, structured edits, quoting, letter
fixes, open chat), rendered with the target's chat template into the same text for both sides, greedy, N
tokens, 2 threads, interleaved round by round:

* Tandem plain decoding, and Tandem drafting from the conversation with its defaults (the adaptive length);
* Tandem when an earlier chat (not measured) asked the same request: drafting from past chats;
* ``llama-speculative-simple`` with each model-free ``--spec-type`` of the vendored llama.cpp (ngram-simple,
  ngram-map-k, ngram-map-k4v, ngram-mod, ngram-cache; its defaults otherwise).

Prints per category and overall: tok/s of each side, llama.cpp's best mode (the best of its modes per
category), Tandem / llama.cpp's best, Tandem / Tandem plain, the geometric mean over the iteration, edit and
quote categories, acceptance, and whether every Tandem run was token-identical to Tandem plain.

Usage::

    python benchmarks/peer_chats.py                     # SmolLM2 F16 target, 192 tokens, 3 rounds
    python benchmarks/peer_chats.py --target f32 -n 128 -r 1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import peer  # noqa: E402 - the llama.cpp helpers, next to this file

CHAT_CATEGORIES = ("iteration", "edit", "quote", "letter", "open")
GEO_CATEGORIES = ("iteration", "edit", "quote")
PEER_MODES = ("ngram-simple", "ngram-map-k", "ngram-map-k4v", "ngram-mod", "ngram-cache")


def llama_spec(bin_dir: Path, target: Path, prompt: str, threads: int, n: int, ctx: int, mode: str) -> dict:
    cmd = [str(bin_dir / "llama-speculative-simple"), "-m", str(target), "--spec-type", mode, "--temp", "0",
           "-t", str(threads), "-c", str(ctx), "-n", str(n), "-p", prompt, "--no-repack"]
    proc = peer._run(cmd)
    out = proc.stdout + proc.stderr
    m = peer._DECODED.search(out)
    if not m:
        raise RuntimeError(f"llama-speculative-simple {mode}: no 'decoded ... t/s' line in its output")
    drafted = int(peer._DRAFTED.search(out).group(1)) if peer._DRAFTED.search(out) else 0
    accepted = int(peer._ACCEPT.search(out).group(1)) if peer._ACCEPT.search(out) else 0
    return {"tps": float(m.group(3)), "tokens": int(m.group(1)), "acceptance": accepted / drafted if drafted else 0.0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="f16", help="f16 (default), f32, gemma, q4_1 or a GGUF path")
    ap.add_argument("--bin", default=None, help="folder with llama-speculative-simple (default: the peer build)")
    ap.add_argument("--threads", "-t", type=int, default=2)
    ap.add_argument("-n", type=int, default=192, help="tokens to generate per chat")
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--repeats", "-r", type=int, default=3)
    ap.add_argument("--json", help="write every measurement here")
    args = ap.parse_args(argv)

    from app.engine import sources
    from app.engine.bench import builtin_prompts, prompt_tokens
    from app.engine.chat_template import Message
    from app.engine.defaults import spec_defaults
    from app.engine.history_store import HistoryStore
    from app.engine.proposers import HistoryProposer
    from app.engine.sampling import SamplingParams
    from app.engine.session import ChatSession, Engine, ModelSettings
    from app.engine.speculative import generate

    target = peer._model_path(args.target, "f16")
    bin_dir = peer.find_bin_dir(args.bin)
    chats = [p for p in builtin_prompts() if p.category in CHAT_CATEGORIES]
    engine = Engine()
    engine.load_target(ModelSettings(target, n_ctx=args.ctx, n_threads=args.threads))
    texts = {c.id: ChatSession(engine, system_prompt=c.system).render([Message(r, t) for r, t in c.chat()])
             for c in chats}
    tokens = {c.id: prompt_tokens(engine, c) for c in chats}
    spec = spec_defaults(sources.HISTORY)
    greedy = SamplingParams(temperature=0.0)
    print(f"target {target.name}, {len(chats)} chats, {args.threads} threads, {args.n} tokens, greedy, "
          f"Tandem history drafting {'adaptive' if spec.adaptive else 'fixed'} up to {spec.draft_max}; "
          f"llama.cpp: {peer.build_label(bin_dir)} {bin_dir}", file=sys.stderr)

    def tandem(chat_id: str, past: bool, speculate: bool = True) -> dict:
        ctx = engine.target.ctx
        store = HistoryStore(None) if past else None
        if past:  # an earlier chat asked the same: its turn is in the store (not measured)
            ctx.clear()
            generate(ctx, tokens[chat_id], greedy, proposer=HistoryProposer(store), spec=spec, max_tokens=args.n)
        ctx.clear()
        res = generate(ctx, tokens[chat_id], greedy, proposer=HistoryProposer(store) if speculate else None,
                       spec=spec, max_tokens=args.n)
        st = res.stats
        return {"tps": st.decode_tokens_per_second, "tokens": st.generated_tokens, "ids": list(res.tokens),
                "acceptance": st.acceptance_rate, "drafted": st.drafted, "accepted": st.accepted}

    results: dict[str, dict[str, list[dict]]] = {c.id: {} for c in chats}

    def add(chat_id: str, side: str, value: dict) -> None:
        results[chat_id].setdefault(side, []).append(value)

    load0 = os.getloadavg()
    t0 = time.time()
    tandem(chats[0].id, past=False)  # warm-up
    for rep in range(args.repeats):
        print(f"round {rep + 1}/{args.repeats}", file=sys.stderr)
        for c in chats:
            add(c.id, "tandem_plain", tandem(c.id, past=False, speculate=False))
            add(c.id, "tandem", tandem(c.id, past=False))
            add(c.id, "tandem_past", tandem(c.id, past=True))
            for mode in PEER_MODES:
                try:
                    add(c.id, f"llama.cpp {mode}", llama_spec(bin_dir, target, texts[c.id], args.threads, args.n,
                                                             args.ctx, mode))
                except RuntimeError as e:
                    print(f"error: {e}", file=sys.stderr)
    engine.close()
    load1 = os.getloadavg()

    def tps(chat_id: str, side: str) -> float:
        vals = [v["tps"] for v in results[chat_id].get(side, [])]
        return statistics.median(vals) if vals else float("nan")

    def acc(chat_ids: list[str], side: str) -> float:
        vals = [v["acceptance"] for cid in chat_ids for v in results[cid].get(side, [])]
        return statistics.mean(vals) if vals else float("nan")

    def cat_tps(chat_ids: list[str], side: str) -> float:
        """Tokens over time summed over the category's chats (each chat's median run)."""
        toks = sum(statistics.median([v["tokens"] - 1 for v in results[c][side]]) for c in chat_ids)
        secs = sum((statistics.median([v["tokens"] - 1 for v in results[c][side]])) / tps(c, side) for c in chat_ids)
        return toks / secs if secs > 0 else float("nan")

    identical = all(v["ids"] == results[c]["tandem_plain"][0]["ids"] for c in results
                    for side in ("tandem_plain", "tandem", "tandem_past") for v in results[c][side])
    peer_sides = [f"llama.cpp {m}" for m in PEER_MODES]
    rows = []
    geo: list[float] = []
    for cat in (*CHAT_CATEGORIES, "all"):
        ids = [c.id for c in chats if cat in ("all", c.category)]
        plain = cat_tps(ids, "tandem_plain")
        mine = cat_tps(ids, "tandem")
        past = cat_tps(ids, "tandem_past")
        peers = {s: cat_tps(ids, s) for s in peer_sides if all(s in results[i] for i in ids)}
        best_mode = max(peers, key=lambda s: peers[s])
        rows.append((cat, plain, mine, past, best_mode, peers[best_mode], acc(ids, "tandem"), acc(ids, best_mode)))
        if cat in GEO_CATEGORIES:
            geo.append(mine / peers[best_mode])
    print(f"\ntarget {target.name}, {args.threads} threads, {args.n} tokens, greedy, {args.repeats} rounds "
          f"(medians); llama.cpp: {peer.build_label(bin_dir)}\n")
    print("| category | Tandem plain | Tandem history (default) | Tandem, asked again in a new chat | "
          "llama.cpp best model-free mode | Tandem / llama.cpp best | Tandem / Tandem plain | again / plain | "
          "acceptance Tandem / llama.cpp |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---|")
    for cat, plain, mine, past, mode, lbest, a_t, a_l in rows:
        print(f"| {cat} | {plain:.1f} | {mine:.1f} | {past:.1f} | {mode.split()[-1]} {lbest:.1f} | "
              f"{mine / lbest:.2f} | {mine / plain:.2f} | {past / plain:.2f} | {a_t:.0%} / {a_l:.0%} |")
    g = math.exp(sum(math.log(x) for x in geo) / len(geo)) if geo else float("nan")
    print(f"\ngeometric mean of Tandem / llama.cpp's best mode over {', '.join(GEO_CATEGORIES)}: {g:.2f}")
    print("llama.cpp per mode, all chats (tok/s): " + ", ".join(
        f"{s.split()[-1]} {cat_tps([c.id for c in chats], s):.1f}" for s in peer_sides
        if all(s in results[c.id] for c in chats)))
    peer.print_footer(identical, load0, load1, t0)
    if args.json:
        peer.strip_runs(results, "ids")
        Path(args.json).write_text(json.dumps({"target": str(target), "n": args.n, "threads": args.threads,
                                               "identical": identical, "results": results}, indent=2) + "\n")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())

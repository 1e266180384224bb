"""Would verifying a second candidate continuation (a small token tree) pay? An upper bound, without building it.

For every built-in prompt: decode greedily (the reference output), then replay the conversation token by
token through the history drafter's index. At each proposal point the best candidate is what Tandem drafts;
every other candidate whose continuation forks from it exactly where it went wrong is a branch a token tree
could have verified in the same batch. With the reference output known, the script counts (an oracle: the
best branch, chosen after the fact) how many more tokens such a branch would have had accepted, and how many
verify rows sending one extra branch per proposal costs. With the measured cost of a verify row and of a
plain step, that says whether trees can pay on this machine.

Usage::

    python benchmarks/history_tree_oracle.py               # SmolLM2 F16, 192 tokens, every built-in prompt
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="f16", help="f16 (default), f32 or a GGUF path")
    ap.add_argument("-n", type=int, default=192)
    ap.add_argument("--branch", type=int, default=8, help="tokens per branch (default 8)")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import peer

    from app.engine.bench import builtin_prompts, prompt_tokens
    from app.engine.history_index import MAX_MATCH
    from app.engine.proposers import HistoryProposer
    from app.engine.sampling import SamplingParams
    from app.engine.session import Engine, ModelSettings
    from app.engine.speculative import generate

    target = peer._model_path(args.target, "f16")
    engine = Engine(history_enabled=False)
    engine.load_target(ModelSettings(target, n_ctx=4096, n_threads=2))
    ctx = engine.target.ctx
    k = args.branch
    proposals = accepted = gained = helped = extra_rows = 0
    for prompt in builtin_prompts():
        tokens = prompt_tokens(engine, prompt)
        ctx.clear()
        full = tokens + generate(ctx, tokens, SamplingParams(temperature=0.0), max_tokens=args.n).tokens
        drafter = HistoryProposer()
        pos = len(tokens) + 1  # the first token comes from the prompt
        while pos < len(full):
            history = full[:pos]
            drafter.begin(history)
            candidates = drafter._conv.candidates(history, k, own=True)  # noqa: SLF001 - a measurement script
            if not candidates:
                pos += 1
                continue

            def right(cont: tuple[int, ...], pos: int = pos, full: list[int] = full) -> int:
                n = 0
                while n < len(cont) and pos + n < len(full) and cont[n] == full[pos + n]:
                    n += 1
                return n

            best = max(candidates, key=lambda c: (min(c.match, MAX_MATCH), c.recency))
            a = right(best.continuation[:k])
            others = [c for c in candidates if c.continuation[:k] != best.continuation[:k]]
            gain = 0
            for c in others:
                fork = 0
                while fork < min(len(c.continuation), a + 1) and c.continuation[fork] == best.continuation[fork]:
                    fork += 1
                if fork == a:  # it parts from the best exactly where the best went wrong
                    gain = max(gain, right(c.continuation[:k]) - a)
            if others:
                extra_rows += min(k, len(others[0].continuation))
            proposals += 1
            accepted += a
            gained += gain
            helped += gain > 0
            pos += a + 1
    # the costs of this machine: a plain step and one more verify row
    toks = prompt_tokens(engine, builtin_prompts()[0])
    ctx.clear()
    ctx.decode(toks)

    def timed(n: int) -> float:
        best_t = float("inf")
        for _ in range(8):
            t0 = time.perf_counter()
            ctx.decode([toks[-1]] * n, outputs="all" if n > 1 else "last")
            best_t = min(best_t, time.perf_counter() - t0)
            ctx.truncate(len(toks))
        return best_t

    step, row = timed(1), (timed(9) - timed(5)) / 4
    engine.close()
    saved, cost = gained * step, extra_rows * row
    print(f"target {target.name}, {args.n} tokens, branches of {k} tokens")
    print(f"proposals {proposals}, accepted from the best candidate {accepted}; a second branch (the oracle's "
          f"pick) would add {gained} tokens ({gained / max(accepted, 1):.1%}) in {helped} proposals, for "
          f"{extra_rows} more verify rows")
    print(f"plain step {1000 * step:.2f} ms, one more verify row {1000 * row:.2f} ms: the tokens gained save "
          f"{saved:.2f} s, the rows cost {cost:.2f} s -> trees {'could pay' if saved > cost else 'do not pay'} "
          "here (an upper bound: a real tree picks its branch before knowing)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

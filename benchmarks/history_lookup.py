"""What one proposal of the history drafter costs, in a short chat and in an 8,000-token one.

Tokenizes a long real text with SmolLM2's vocabulary (this repository's own Python sources, which repeat
themselves the way code iteration does), feeds it to a `HistoryProposer` as the conversation, optionally
with a past-chats store of ~1 million tokens, and times `propose()` at many points of the conversation:
microseconds per call, the mean draft length, and how often a draft was found. The cost should not grow
with the conversation (the index is hashed; at most 8 places are compared per query).

Usage::

    python benchmarks/history_lookup.py            # 500 vs 8,000 tokens, with and without past chats
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--draft", type=int, default=16)
    args = ap.parse_args(argv)

    import numpy as np

    from app.engine.history_store import HistoryStore
    from app.engine.llama_backend import Model
    from app.engine.proposers import HistoryProposer
    from app.library import reference_models

    model = Model(reference_models.smollm2_q4_1(), vocab_only=True)
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "app").rglob("*.py")))
    tokens = model.tokenize(text, add_special=False)
    print(f"{len(tokens)} tokens of this repository's sources", file=sys.stderr)
    rng = np.random.default_rng(0)
    past = HistoryStore(None)
    for start in range(0, min(len(tokens), 1_000_000) - 2000, 2000):
        past.add(tokens[start : start + 2000])
    past_tokens = past.n_tokens

    rows = []
    for length in (500, 8000):
        for store in (None, past):
            conv = tokens[len(tokens) - length :] if store is None else tokens[:length]
            proposer = HistoryProposer(store)
            proposer.begin(conv[: length // 2])
            times, found, lengths = [], 0, []
            points = rng.integers(length // 2, length, size=args.calls)
            for p in sorted(points.tolist()):
                history = conv[: p + 1]
                t0 = time.perf_counter()
                prop = proposer.propose(history, args.draft)
                times.append(time.perf_counter() - t0)
                if prop.tokens:
                    found += 1
                    lengths.append(len(prop.tokens))
            rows.append((length, "yes" if store else "no", 1e6 * statistics.median(times),
                         1e6 * statistics.quantiles(times, n=20)[-1], found / len(times),
                         statistics.mean(lengths) if lengths else 0.0))
    print(f"\npast chats store: {past_tokens} tokens\n")
    print("| conversation tokens | past chats | µs per proposal (median) | µs (95th percentile) | drafts found | "
          "mean draft length |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.0f} | {r[3]:.0f} | {r[4]:.0%} | {r[5]:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

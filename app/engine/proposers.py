"""Proposers: whatever guesses the next few tokens for the target model to verify.

One interface, two implementations (as in HF transformers' candidate generators):

* `DraftModelProposer` — a small model with the same tokenizer drafts greedily in its own context;
* `PromptLookupProposer` — no second model: the longest recent n-gram of the conversation that appeared
  before is looked up, and what followed it then is proposed now (great for edits, code, quoting).

`history` is always the accepted tokens: prompt + generated so far, its last token the one the target
sampled last (not yet in the target's KV cache).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from app.engine.llama_backend import Context

__all__ = ["Proposer", "DraftModelProposer", "PromptLookupProposer"]


class Proposer(ABC):
    name: str = "proposer"

    def __init__(self) -> None:
        self.seconds = 0.0  # time spent proposing (for the stats)

    @abstractmethod
    def propose(self, history: Sequence[int], n_max: int) -> list[int]:
        """Up to `n_max` guesses for the tokens that follow `history`."""

    def accepted(self, n_accepted_history: int) -> None:
        """The target kept the first `n_accepted_history` tokens of the last history + draft; roll back the rest."""

    def reset(self) -> None:
        """Forget all state (a new conversation or a reloaded model)."""

    def close(self) -> None:
        """Free what the proposer holds."""


class DraftModelProposer(Proposer):
    """Drafts greedily with a small model that shares the target's tokenizer.

    Drafting stops early when the draft's top-token probability falls below `p_min` (the draft is unsure,
    so its next guesses would mostly be rejected and only cost time).
    """

    name = "draft-model"

    def __init__(self, ctx: Context, p_min: float = 0.0) -> None:
        super().__init__()
        self.ctx = ctx
        self.p_min = float(p_min)
        self.last_top_probs: list[float] = []

    def propose(self, history: Sequence[int], n_max: int) -> list[int]:
        if n_max <= 0:
            return []
        t0 = time.perf_counter()
        ctx = self.ctx
        # Bring the draft's cache to `history`: keep the common prefix, decode the rest in one batch.
        n_common = ctx.common_prefix(history)
        if n_common == len(history):
            n_common -= 1  # we need fresh logits for the last token
        ctx.truncate(n_common)
        room = ctx.n_ctx - n_common
        if room <= len(history) - n_common:
            # the draft's context cannot hold the conversation any more: no drafting (the target goes on)
            self.seconds += time.perf_counter() - t0
            return []
        ctx.decode(history[n_common:], outputs="last")
        n_max = min(n_max, ctx.n_ctx - ctx.n_past)
        draft: list[int] = []
        probs: list[float] = []
        p_min = self.p_min
        while True:
            logits = ctx.logits(-1)
            tok = int(np.argmax(logits))
            if p_min > 0.0:
                top = float(logits[tok])
                p_top = 1.0 / float(np.exp(logits - top).sum())
                if p_top < p_min:
                    break
                probs.append(p_top)
            draft.append(tok)
            if len(draft) >= n_max:
                break
            ctx.decode((tok,), outputs="last")
        self.last_top_probs = probs
        self.seconds += time.perf_counter() - t0
        return draft

    def accepted(self, n_accepted_history: int) -> None:
        self.ctx.truncate(n_accepted_history)

    def reset(self) -> None:
        self.ctx.clear()

    def close(self) -> None:
        self.ctx.close()


class PromptLookupProposer(Proposer):
    """N-gram lookup in the conversation itself (prompt lookup decoding): no second model.

    Keeps an index n-gram → most recent position where it ended, updated incrementally as the history
    grows, so a proposal costs O(ngram_max) dictionary look-ups however long the conversation is.
    """

    name = "prompt-lookup"

    # ngram_min 2: a one-token match predicts the next tokens too rarely to pay for its verify rows. Measured
    # on the built-in prompts (docs/benchmarks.md, SmolLM2 F16, 2 threads): fixed max 8 0.72x -> 0.96x of
    # plain, adaptive 1.05x -> 1.10x, when one-token matches are no longer used.
    def __init__(self, ngram_max: int = 4, ngram_min: int = 2) -> None:
        super().__init__()
        if not (1 <= ngram_min <= ngram_max):
            raise ValueError("prompt lookup needs 1 <= ngram_min <= ngram_max")
        self.ngram_max = ngram_max
        self.ngram_min = ngram_min
        self._hist: list[int] = []
        self._indexed = 0  # n-grams ending before this position are in the index
        self._index: dict[tuple[int, ...], int] = {}

    def reset(self) -> None:
        self._hist = []
        self._indexed = 0
        self._index = {}

    def _sync(self, history: Sequence[int]) -> None:
        n = len(self._hist)
        if len(history) < n or list(history[:n]) != self._hist:
            self.reset()
            n = 0
        self._hist.extend(history[n:])
        # index every n-gram that ends at a position < len-1 (the final one is the query itself)
        hist = self._hist
        stop = len(hist) - 1
        index = self._index
        for end in range(self._indexed, stop):
            for n_gram in range(self.ngram_min, self.ngram_max + 1):
                start = end - n_gram + 1
                if start < 0:
                    break
                index[tuple(hist[start : end + 1])] = end
        self._indexed = max(self._indexed, stop)

    def propose(self, history: Sequence[int], n_max: int) -> list[int]:
        if n_max <= 0 or len(history) < 2:
            return []
        t0 = time.perf_counter()
        self._sync(history)
        hist = self._hist
        out: list[int] = []
        for n_gram in range(min(self.ngram_max, len(hist) - 1), self.ngram_min - 1, -1):
            end = self._index.get(tuple(hist[-n_gram:]))
            if end is not None:
                out = hist[end + 1 : end + 1 + n_max]
                if out:
                    break
        self.seconds += time.perf_counter() - t0
        return list(out)

"""Proposers: whatever guesses the next few tokens for the target model to verify.

One interface (as in HF transformers' candidate generators), three implementations:

* `DraftModelProposer` — a small model with the same tokenizer drafts greedily in its own context;
* `DraftWithHistoryProposer` — a draft model with the history drafter in front: when the conversation (or a
  past chat) has a long match, its free guesses go first;
* `HistoryProposer` — no second model: where the end of the conversation was written before (earlier in
  this chat, or in past chats of the same tokenizer family), what followed it then is proposed now — the
  longest match wins (great for edits, code, quoting, and questions asked again);

The speculative loop talks to a proposer through `begin` (a generation starts), `propose` (a `Proposal`:
the guessed tokens and, when the proposer has them, its confidence in each), `accepted` (how much of the
last proposal the target kept) and `cached_tokens`. A proposer owns whatever it drafts with (its context,
its index) and applies its own confidence cut-off; the loop never reaches into it.

`history` is always the accepted tokens: prompt + generated so far, its last token the one the target
sampled last (not yet in the target's KV cache). Within one generation it only grows: the loop appends
accepted tokens and never takes any back (rejected guesses never enter it).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from app.engine import sources
from app.engine.history_index import MAX_MATCH, Candidate, SequenceIndex
from app.engine.history_store import HistoryStore
from app.engine.llama_backend import Context, SpeculationUnsupported

__all__ = ["Proposal", "Proposer", "DraftModelProposer", "HistoryProposer", "DraftWithHistoryProposer"]


@dataclass
class Proposal:
    """What a proposer guessed for one round.

    `confidences[i]`: the proposer's probability for `tokens[i]` (None when it has no such measure);
    `note`: something the user should know, said once (e.g. the draft model's context is full);
    `exhausted`: it will guess nothing more in this generation, so the loop stops asking;
    `source`: where the guesses came from ("chat", "past chats", "draft model"), for the stats.
    """

    tokens: list[int] = field(default_factory=list)
    confidences: list[float] | None = None
    note: str = ""
    exhausted: bool = False
    source: str = ""  # where the guesses came from, for the stats ("" = the proposer's name)


class Proposer(ABC):
    name: ClassVar[str] = "proposer"
    #: whether proposals carry a confidence per token (the adaptive controller learns a cut-off from them)
    reports_confidence: ClassVar[bool] = False

    def __init__(self) -> None:
        self.seconds = 0.0  # time spent proposing (for the stats)
        self.decodes = 0  # llama_decode calls made while proposing (a draft model's cost, for the stats)
        self.decoded_tokens = 0  # ... and the tokens they evaluated (a catch-up call may hold several)

    def begin(self, prompt: Sequence[int], cancel: threading.Event | None = None, *, catch_up: bool = True) -> None:
        """A generation starts from `prompt`; `cancel` stops the proposer's own decoding while it runs.

        `catch_up`: read the prompt now (a draft model decodes it), rather than at the first proposal —
        False when the loop does not expect to draft at all (then it costs nothing unless a proposal comes).
        """

    def propose(
        self,
        history: Sequence[int],
        n_max: int,
        *,
        min_confidence: float = 0.0,
        want_confidence: bool = False,
    ) -> Proposal:
        """Up to `n_max` guesses for the tokens that follow `history`.

        `min_confidence`: stop at the first guess the proposer is less sure of than this (on top of its own
        cut-off); `want_confidence`: fill `Proposal.confidences` when the proposer can. Raises
        `DecodeAborted` when the generation's cancel event is set while it decodes.
        """
        if n_max <= 0:
            return Proposal()
        t0 = time.perf_counter()
        try:
            proposal = self._propose(history, n_max, min_confidence, want_confidence)
        finally:
            self.seconds += time.perf_counter() - t0
        del proposal.tokens[n_max:]
        if proposal.confidences is not None:
            del proposal.confidences[n_max:]
        return proposal

    @abstractmethod
    def _propose(self, history: Sequence[int], n_max: int, min_confidence: float, want_confidence: bool) -> Proposal:
        """The guesses (n_max >= 1); `propose` times the call and trims the result."""

    def accepted(self, n_keep: int) -> None:
        """The target kept the first `n_keep` tokens of the last history + proposal; roll back the rest."""

    def end(self, history: Sequence[int]) -> None:
        """The generation is over (finished or stopped): `history` is the prompt and every emitted token."""

    @property
    def cached_tokens(self) -> int | None:
        """Tokens in the proposer's own KV cache (None: it has none)."""
        return None

    def reset(self) -> None:
        """Forget all state (a new conversation or a reloaded model)."""

    def close(self) -> None:
        """Free what the proposer holds."""


class DraftModelProposer(Proposer):
    """Drafts greedily with a small model that shares the target's tokenizer.

    Drafting stops early when the draft's top-token probability falls below the cut-off (its own `p_min`
    or the round's `min_confidence`, whichever is higher): the draft is unsure, so its next guesses would
    mostly be rejected and only cost time. It also stops after an end-of-generation token (nothing after
    it can be emitted). Each round costs one decode for the tokens the draft has not seen yet (one batch)
    plus one per further guess; the top token and its probability come from numpy over the logits row.
    """

    name = sources.DRAFT_MODEL
    reports_confidence = True

    def __init__(self, ctx: Context, p_min: float = 0.0) -> None:
        super().__init__()
        refusal = ctx.model.speculation_refusal("draft")
        if refusal is not None:
            raise SpeculationUnsupported(refusal)
        if not (0.0 <= p_min < 1.0):
            raise ValueError(f"draft probability cutoff must be in [0, 1), got {p_min}")
        self._ctx = ctx
        self.p_min = float(p_min)
        self._cancel: threading.Event | None = None
        self._in_generation = False  # between begin() and the next reset: the cache is a prefix of history
        self._full = False  # the context cannot hold the conversation: no drafting until the next begin()
        self._logits_at = -1  # the cache length at which the last decode's logits were taken

    def begin(self, prompt: Sequence[int], cancel: threading.Event | None = None, *, catch_up: bool = True) -> None:
        """Keep what the cache shares with `prompt` (a chat's earlier turns) and decode the rest now."""
        self._cancel = cancel
        self._full = False
        self._ctx.truncate(self._ctx.common_prefix(prompt))
        self._in_generation = True
        if catch_up:
            self._catch_up(prompt)

    def _catch_up(self, history: Sequence[int]) -> bool:
        """Bring the cache to exactly `history`, with the logits of its last token; False if it cannot hold it."""
        ctx = self._ctx
        n_cached = ctx.n_past  # the cache holds history[:n_cached]
        if n_cached == len(history) and self._logits_at == n_cached:
            return True  # the last decode ended with history's last token: its logits are at hand
        if n_cached >= len(history):
            n_cached = len(history) - 1  # fresh logits are needed for the last token
            ctx.truncate(n_cached)
        if len(history) > ctx.n_ctx:
            self._full = True
            return False
        ctx.decode(history[n_cached:], outputs="last", cancel=self._cancel)
        self.decodes += 1
        self.decoded_tokens += len(history) - n_cached
        self._logits_at = ctx.n_past
        return True

    def _propose(self, history: Sequence[int], n_max: int, min_confidence: float, want_confidence: bool) -> Proposal:
        ctx = self._ctx
        if not self._in_generation:  # used outside the loop: find what the cache shares with history
            ctx.truncate(ctx.common_prefix(history))
        if self._full or not self._catch_up(history):
            return Proposal(
                note=f"the draft model's context ({ctx.n_ctx} tokens) is full: the rest of this reply is "
                "decoded without drafting (raise the draft context length)",
                exhausted=True,
            )
        n_max = min(n_max, ctx.n_ctx - ctx.n_past + 1)  # the last guess needs no slot: it is never decoded
        cut = max(self.p_min, min_confidence)
        with_probs = want_confidence or cut > 0.0
        is_eog = ctx.model.is_eog
        cancel = self._cancel
        tokens: list[int] = []
        probs: list[float] = []
        while True:
            if with_probs:
                tok, p = ctx.top(-1)
                if p < cut:
                    break
                probs.append(p)
            else:
                tok = ctx.argmax(-1)
            tokens.append(tok)
            if len(tokens) >= n_max or is_eog(tok):
                break
            ctx.decode((tok,), outputs="last", cancel=cancel)
            self.decodes += 1
            self.decoded_tokens += 1
            self._logits_at = ctx.n_past
        return Proposal(tokens, probs if with_probs else None)

    def accepted(self, n_keep: int) -> None:
        self._ctx.truncate(n_keep)

    @property
    def cached_tokens(self) -> int:
        return self._ctx.n_past

    def reset(self) -> None:
        self._ctx.clear()
        self._in_generation = False
        self._full = False
        self._logits_at = -1

    def close(self) -> None:
        self._ctx.close()


class HistoryProposer(Proposer):
    """Drafts what followed the longest earlier occurrence of the conversation's end (see history_index).

    Looks in the live conversation (prompt + reply so far) and, with a `store`, in past chats of the same
    tokenizer family (the turns of earlier generations are added to it at `end()`). The longest match wins;
    on a tie the most recent, this chat first. Each guess carries a confidence: how many of the candidates
    that match about as well agree on it, scaled by how long the match is — so the adaptive controller can
    learn where to cut, and a draft is never longer than `length_factor` × the match (+ 2): a two-token
    match is a weak hint, a forty-token one a near certainty.
    """

    name = sources.HISTORY
    reports_confidence = True
    SOURCE_CHAT = "this chat"
    SOURCE_PAST = "past chats"

    def __init__(self, store: HistoryStore | None = None, *, n_min: int = 2, length_factor: float = 2.0) -> None:
        super().__init__()
        if length_factor <= 0:
            raise ValueError(f"the length factor must be positive, got {length_factor}")
        self.store = store
        self.length_factor = length_factor
        self._conv = SequenceIndex(n_min=n_min, n_max=4)
        self._stored_upto = 0  # the conversation's tokens before this position are in the store already
        self._in_generation = False  # between begin() and reset(): history only grows

    def reset(self) -> None:
        self._conv.reset()
        self._stored_upto = 0
        self._in_generation = False

    def begin(self, prompt: Sequence[int], cancel: threading.Event | None = None, *, catch_up: bool = True) -> None:
        self._follow(prompt)
        self._in_generation = True

    def _follow(self, history: Sequence[int]) -> None:
        """Index `history`: extend the conversation, or start over if `history` is another one (or edited)."""
        conv = self._conv.tokens
        if len(history) < len(conv) or list(history[: len(conv)]) != conv:
            self.reset()
        self._sync(history)

    def _sync(self, history: Sequence[int]) -> None:
        n = len(self._conv)
        if len(history) > n:
            self._conv.extend(history[n:])

    def _propose(self, history: Sequence[int], n_max: int, min_confidence: float, want_confidence: bool) -> Proposal:
        if len(history) < 2:
            return Proposal()
        if self._in_generation:
            self._sync(history)  # within a generation history only grows: no need to compare it
        else:
            self._follow(history)
        hist = history if isinstance(history, list) else list(history)
        own = len(self._conv) == len(hist)  # the index holds exactly this history: periodic continuations are safe
        candidates = [(c, self.SOURCE_CHAT) for c in self._conv.candidates(hist, n_max, recency_base=1 << 40, own=own)]
        if self.store is not None:
            frozen, recent = self.store.indexes()
            candidates += [(c, self.SOURCE_PAST) for c in recent.candidates(hist, n_max, recency_base=1 << 39)]
            if frozen is not None:
                candidates += [(c, self.SOURCE_PAST) for c in frozen.candidates(hist, n_max)]
        if not candidates:
            return Proposal()
        best, source = max(candidates, key=lambda cs: (min(cs[0].match, MAX_MATCH), cs[0].recency))
        n = min(len(best.continuation), max(1, int(self.length_factor * best.match) + 2))
        tokens = list(best.continuation[:n])
        confidences = _agreement(best, [c for c, _ in candidates], n)
        for i, p in enumerate(confidences):
            if p < min_confidence:
                del tokens[i:], confidences[i:]
                break
        return Proposal(tokens, confidences, source=source)

    def end(self, history: Sequence[int]) -> None:
        self._sync(history)
        if self.store is not None and len(history) > self._stored_upto:
            self.store.add(history[self._stored_upto :])
            self._stored_upto = len(history)


def _match_scale(match: int) -> float:
    """How much a match of `match` tokens is worth as a confidence: (m - 1) / (m + 1), m at most MAX_MATCH —
    0.33 for two tokens, 0.6 for four, 0.78 for eight, 0.94 for thirty-two (measured on the built-in chats:
    a guess after a short match is right about a third of the time, after a long one nine times in ten)."""
    m = min(match, MAX_MATCH)
    return (m - 1) / (m + 1.0)


def _agreement(best: Candidate, candidates: list[Candidate], n: int) -> list[float]:
    """Per guess: the share of well-matching candidates that agree with `best` up to it, times a match factor.

    "Well matching": within half of the best match length. The match factor is `_match_scale`.
    """
    peers = [c for c in candidates if c.match * 2 >= best.match]
    scale = _match_scale(best.match)
    out = []
    for i in range(n):
        prefix = best.continuation[: i + 1]
        alive = [c for c in peers if len(c.continuation) > i]
        agree = sum(1 for c in alive if c.continuation[: i + 1] == prefix)
        out.append(scale * agree / len(alive) if alive else scale)
    return out


class DraftWithHistoryProposer(Proposer):
    """A draft model, with drafting from history in front of it: the free guesses go first.

    Each round asks the history first (it costs microseconds). When its guess rests on a long match — at
    least `min_match` tokens of the conversation (or a past chat) agree with the end of the history — that
    proposal is used and the draft model does not decode at all this round; otherwise the draft model
    drafts as usual. The draft model's cache simply falls behind on the rounds it sits out and catches up in
    one batch the next time it drafts. As llama.cpp chains its draft types, keeping the guess with the best
    expected acceptance × length, except that here the one that costs nothing is preferred when it is sure.
    """

    name = sources.DRAFT_MODEL
    reports_confidence = True
    SOURCE_DRAFT = "draft model"

    def __init__(self, draft: DraftModelProposer, history: HistoryProposer, *, min_match: int = 16) -> None:
        super().__init__()
        self.draft, self.history = draft, history
        self.min_match = min_match

    def begin(self, prompt: Sequence[int], cancel: threading.Event | None = None, *, catch_up: bool = True) -> None:
        self.history.begin(prompt, cancel)
        self._delegate(self.draft.begin, prompt, cancel, catch_up=catch_up)

    def _propose(self, history: Sequence[int], n_max: int, min_confidence: float, want_confidence: bool) -> Proposal:
        free = self.history.propose(history, n_max)
        if free.tokens and free.confidences and free.confidences[0] >= _match_scale(self.min_match):
            return free
        proposal = self._delegate(self.draft.propose, history, n_max, min_confidence=min_confidence,
                                  want_confidence=want_confidence)
        proposal.source = proposal.source or self.SOURCE_DRAFT
        return proposal

    def _delegate(self, call, *args, **kwargs):
        """Run a call of the draft model and count its decodes as this proposer's."""
        d0, t0 = self.draft.decodes, self.draft.decoded_tokens
        try:
            return call(*args, **kwargs)
        finally:
            self.decodes += self.draft.decodes - d0
            self.decoded_tokens += self.draft.decoded_tokens - t0

    def accepted(self, n_keep: int) -> None:
        self.draft.accepted(n_keep)

    def end(self, history: Sequence[int]) -> None:
        self.history.end(history)

    @property
    def cached_tokens(self) -> int:
        return self.draft.cached_tokens

    def reset(self) -> None:
        self.draft.reset()
        self.history.reset()

    def close(self) -> None:
        self.draft.close()

"""The speculative decoding loop: propose, verify in one batch, keep what the target agrees with.

One round (see docs/engine.md for the why):

1. the proposer guesses up to `draft_max` tokens d1..dn that follow the accepted history;
2. the target decodes [last, d1..dn] in ONE batch, asking for logits at every position;
3. walking the rows in order, the target's sampler picks its own token at row i; if it equals d(i+1) the
   guess is accepted and the walk goes on, otherwise the target's token is kept and the walk stops — so
   every round emits between 1 and n+1 tokens, each one exactly what the target itself would have chosen;
4. both KV caches are rolled back (`llama_memory_seq_rm`) to exactly the accepted tokens.

With no proposer, the same loop is plain decoding (one token per round).
"""

from __future__ import annotations

import codecs
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from app.engine.adaptive import AdaptiveDraftController
from app.engine.llama_backend import Context, DecodeAborted, EngineError, SpeculationUnsupported
from app.engine.proposers import Proposer
from app.engine.sampling import SamplingParams, TargetSampler
from app.engine.units import format_acceptance

__all__ = ["MAX_DRAFT_TOKENS", "SpecSettings", "Piece", "GenerationStats", "GenerationResult", "RoundInfo", "generate"]

MAX_DRAFT_TOKENS = 32  # the most guesses a round may draft, whatever sets it (app, CLI, server)


@dataclass
class SpecSettings:
    """How the loop drafts. The field defaults are the loop's own: a fixed length, as long as a draft
    model's default; what each draft source starts with in the CLI, the app and the benchmark (the adaptive
    length) is `app.engine.defaults.spec_defaults(source)`."""

    draft_max: int = 8  # at most this many guesses per round (1..MAX_DRAFT_TOKENS)
    draft_min: int = 0  # a draft shorter than this is not worth a verify batch: drop it
    draft_p_min: float = 0.0  # draft model: stop drafting when its top probability falls below this
    # choose the draft length each round (at most draft_max) from the recent acceptance, the measured costs
    # and the draft's confidence (app.engine.adaptive); only the length changes, never what is emitted
    adaptive: bool = False

    def validate(self) -> None:
        if not (1 <= self.draft_max <= MAX_DRAFT_TOKENS):
            raise ValueError(f"draft tokens (max) must be between 1 and {MAX_DRAFT_TOKENS}, got {self.draft_max}")
        if not (0 <= self.draft_min <= self.draft_max):
            raise ValueError(f"draft tokens (min) must be between 0 and the max ({self.draft_max}), got {self.draft_min}")
        if not (0.0 <= self.draft_p_min < 1.0):
            raise ValueError(f"draft probability cutoff must be in [0, 1), got {self.draft_p_min}")


@dataclass
class Piece:
    """A piece of streamed text. `from_draft`: every token in it was a draft guess the target accepted."""

    text: str
    from_draft: bool


@dataclass
class RoundInfo:
    drafted: int  # guesses verified this round
    accepted: int  # guesses the target agreed with and that were emitted
    emitted: int  # tokens added to the output this round (an end-of-generation token is not one)
    target_kv: int  # tokens in the target's KV cache after the rollback
    draft_kv: int | None  # ... in the proposer's own cache (None: it has none)


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0  # reused from the KV cache (chat prefix reuse): not processed again
    prompt_seconds: float = 0.0  # the target's prompt processing, plus the draft model's (draft_prompt_seconds)
    draft_prompt_seconds: float = 0.0  # the draft model catching up on the prompt (after the first token)
    prompt_tokens_per_second: float = 0.0
    time_to_first_token: float = 0.0  # the target's prompt and the first sampled token
    generated_tokens: int = 0
    decode_seconds: float = 0.0  # the decode rounds: from after both prompts to the end
    decode_tokens_per_second: float = 0.0  # tokens after the first / decode_seconds
    drafted: int = 0
    accepted: int = 0
    rejected: int = 0
    acceptance_rate: float = 0.0
    mean_accepted_per_round: float = 0.0
    rounds: int = 0
    draft_seconds: float = 0.0
    target_seconds: float = 0.0
    total_seconds: float = 0.0
    draft_decodes: int = 0  # llama_decode calls of the draft model during the decode rounds
    draft_decoded_tokens: int = 0  # ... and the tokens they evaluated
    proposer: str = "none"
    draft_max: int = 0
    stop_reason: str = ""
    notes: list[str] = field(default_factory=list)  # what the user should know (e.g. the draft context filled)
    accepted_by_source: dict[str, int] = field(default_factory=dict)  # "chat", "past chats", "draft model", ...

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def summary(self) -> str:
        s = (
            f"{self.decode_tokens_per_second:.1f} tok/s · {self.generated_tokens} tokens · "
            f"{self.time_to_first_token:.2f} s to first token"
        )
        if self.drafted:
            s += f" · {format_acceptance(self.accepted, self.drafted)}"
        for note in self.notes:
            s += f" · {note}"
        return s


@dataclass
class GenerationResult:
    text: str
    tokens: list[int]
    stats: GenerationStats
    pieces: list[Piece] = field(default_factory=list)


class _TextAssembler:
    """Turns token bytes into text pieces: incremental UTF-8, stop strings held back until decided."""

    def __init__(self, stop: Sequence[str]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._stop = [s for s in stop if s]
        self._hold = max((len(s) for s in self._stop), default=0)
        self._pending: list[tuple[str, bool]] = []  # (char, from_draft), not yet emitted
        self.text: list[str] = []
        self.stopped = False

    def feed(self, data: bytes, from_draft: bool) -> list[Piece]:
        text = self._decoder.decode(data)
        if not text or self.stopped:
            return []
        if not self._stop:
            self.text.append(text)
            return [Piece(text, from_draft)]
        self._pending.extend((c, from_draft) for c in text)
        pending = "".join(c for c, _ in self._pending)
        cut = -1
        for s in self._stop:
            i = pending.find(s)
            if i != -1 and (cut == -1 or i < cut):
                cut = i
        if cut != -1:
            self.stopped = True
            return self._emit(cut, drop_rest=True)
        # keep back the longest tail that could still become a stop string
        keep = 0
        for k in range(min(self._hold - 1, len(pending)), 0, -1):
            tail = pending[-k:]
            if any(s.startswith(tail) for s in self._stop):
                keep = k
                break
        return self._emit(len(pending) - keep)

    def _emit(self, n: int, drop_rest: bool = False) -> list[Piece]:
        chars, rest = self._pending[:n], self._pending[n:]
        self._pending = [] if drop_rest else rest
        pieces: list[Piece] = []
        for c, flag in chars:
            if pieces and pieces[-1].from_draft == flag:
                pieces[-1].text += c
            else:
                pieces.append(Piece(c, flag))
        self.text.extend(p.text for p in pieces)
        return pieces

    def finish(self) -> list[Piece]:
        if self.stopped:
            return []
        tail = self._decoder.decode(b"", final=True)
        if tail:
            self._pending.extend((c, False) for c in tail)
        return self._emit(len(self._pending))


def generate(
    target: Context,
    prompt: Sequence[int],
    sampling: SamplingParams,
    *,
    proposer: Proposer | None = None,
    spec: SpecSettings | None = None,
    max_tokens: int = 256,
    stop: Sequence[str] = (),
    cancel: threading.Event | None = None,
    on_piece: Callable[[Piece], None] | None = None,
    on_round: Callable[[RoundInfo], None] | None = None,
    controller: AdaptiveDraftController | None = None,
) -> GenerationResult:
    """Generate up to `max_tokens` tokens after `prompt` with the target context (and a proposer).

    The target's KV cache is reused as far as it matches `prompt` (chat prefix reuse). Returns the text,
    the token ids and the stats; streams pieces through `on_piece` as soon as they are final. `cancel`
    (set from any thread, also before the call) ends the generation within one decode, with the text so
    far and stop reason "cancelled". With `spec.adaptive`, `controller` chooses the draft lengths (a fresh
    one when None; pass the same one again to keep what it learned about this machine and these models).
    """
    spec = spec or SpecSettings()
    spec.validate()
    if max_tokens < 1:
        raise ValueError(f"max tokens must be at least 1, got {max_tokens}")
    if not prompt:
        raise EngineError("the prompt is empty")
    model = target.model
    if len(prompt) >= target.n_ctx:
        raise EngineError(
            f"the prompt has {len(prompt)} tokens but the context holds {target.n_ctx}: "
            "raise the context length or shorten the conversation"
        )
    if proposer is not None:
        refusal = model.speculation_refusal("target")
        if refusal is not None:
            raise SpeculationUnsupported(refusal)
        if spec.draft_max + 1 > target.n_batch:
            raise EngineError(
                f"the batch size ({target.n_batch}) must be at least draft tokens + 1 ({spec.draft_max + 1}): "
                "every guess is verified in one batch"
            )
    cancel = cancel or threading.Event()
    stats = GenerationStats(prompt_tokens=len(prompt), proposer=proposer.name if proposer else "none")
    stats.draft_max = spec.draft_max if proposer else 0
    sampler = TargetSampler(sampling, model.n_vocab)
    text = _TextAssembler(stop)
    out_tokens: list[int] = []
    pieces: list[Piece] = []

    def emit(new: list[Piece]) -> None:
        for p in new:
            pieces.append(p)
            if on_piece is not None:
                on_piece(p)

    t_start = time.perf_counter()
    t_decode = t_start  # when the decode rounds start (after both prompts and the first token)
    draft_seconds0 = proposer.seconds if proposer is not None else 0.0
    draft_decodes0 = proposer.decodes if proposer is not None else 0
    draft_tokens0 = proposer.decoded_tokens if proposer is not None else 0

    history: list[int] = []  # append-only: the prompt and every emitted token
    begun = False  # the proposer's begin() ran: it hears the end too

    def finish(stop_reason: str) -> GenerationResult:
        emit(text.finish())
        if begun:
            proposer.end(history)
        t_end = time.perf_counter()
        stats.stop_reason = stop_reason
        stats.generated_tokens = len(out_tokens)
        stats.decode_seconds = t_end - t_decode if out_tokens else 0.0
        after_first = max(len(out_tokens) - 1, 0)
        d = stats.decode_seconds
        stats.decode_tokens_per_second = after_first / d if d > 0 and after_first else 0.0
        stats.rejected = stats.drafted - stats.accepted
        stats.acceptance_rate = stats.accepted / stats.drafted if stats.drafted else 0.0
        stats.mean_accepted_per_round = stats.accepted / stats.rounds if stats.rounds else 0.0
        if proposer is not None:
            stats.draft_seconds = proposer.seconds - draft_seconds0
            stats.draft_decodes = proposer.decodes - draft_decodes0
            stats.draft_decoded_tokens = proposer.decoded_tokens - draft_tokens0
        stats.total_seconds = t_end - t_start
        return GenerationResult("".join(text.text), out_tokens, stats, pieces)

    try:
        # -- prompt processing (reusing the cached prefix) ----------------------------------------
        n_common = target.common_prefix(prompt)
        if n_common == len(prompt):
            n_common -= 1  # the last prompt token must be decoded again to get its logits
        if n_common < target.n_past and not model.can_roll_back:
            n_common = 0  # a recurrent model's state cannot be cut back: process the whole prompt again
        target.truncate(n_common)
        stats.cached_prompt_tokens = n_common
        sampler.prime(prompt)
        try:
            target.decode(prompt[n_common:], outputs="last", cancel=cancel)
        except DecodeAborted:
            return finish("cancelled")
        stats.prompt_seconds = time.perf_counter() - t_start
        n_processed = len(prompt) - n_common

        history.extend(prompt)
        stop_reason = ""

        def take(token: int, from_draft: bool) -> bool:
            """Record an emitted token; True when generation must stop."""
            nonlocal stop_reason
            if model.is_eog(token):
                stop_reason = "eos"
                return True
            out_tokens.append(token)
            history.append(token)
            emit(text.feed(model.token_bytes(token), from_draft))
            if text.stopped:
                stop_reason = "stop_string"
                return True
            if len(out_tokens) >= max_tokens:
                stop_reason = "max_tokens"
                return True
            return False

        # the first token comes from the prompt's logits: the user sees it before the draft reads the prompt
        done = take(sampler.sample(target, -1), False)
        stats.time_to_first_token = time.perf_counter() - t_start
        if proposer is not None and spec.adaptive and controller is None:
            controller = AdaptiveDraftController(spec.draft_max)
        if proposer is None:
            controller = None
        if proposer is not None:
            # the proposer catches up on the prompt (a draft model decodes it): prompt processing, not decoding;
            # skipped when nothing follows, or where the adaptive controller knows drafting does not pay here
            t0 = time.perf_counter()
            try:
                begun = True
                catch_up = not done and (controller is None or controller.drafting_expected)
                proposer.begin(history, cancel, catch_up=catch_up)
            except DecodeAborted:
                return finish("cancelled")
            finally:
                stats.draft_prompt_seconds = time.perf_counter() - t0
                stats.prompt_seconds += stats.draft_prompt_seconds
        stats.prompt_tokens_per_second = n_processed / stats.prompt_seconds if stats.prompt_seconds > 0 else 0.0
        draft_seconds0 = proposer.seconds if proposer is not None else 0.0
        draft_decodes0 = proposer.decodes if proposer is not None else 0
        draft_tokens0 = proposer.decoded_tokens if proposer is not None else 0
        t_decode = time.perf_counter()
        # the draft's confidence cut-off: the user's, else (adaptive) the one the controller learns
        learn_cutoff = controller is not None and spec.draft_p_min == 0.0 and proposer.reports_confidence
        proposing = proposer is not None
        target_seconds = 0.0
        while not done:
            if cancel.is_set():
                stop_reason = "cancelled"
                break
            n_past = target.n_past  # == len(history) - 1: the last token is not decoded yet
            if n_past + 1 > target.n_ctx:
                stop_reason = "context_full"
                break
            # -- propose --------------------------------------------------------------------------
            draft: list[int] = []
            n_paid = 0
            source = ""
            confidences: Sequence[float] = ()
            n_max = 0
            draft_t0 = proposer.seconds if proposer is not None else 0.0
            if proposing:
                want = controller.next_length(judged_per_guess=learn_cutoff) if controller is not None else spec.draft_max
                n_max = min(want, max_tokens - len(out_tokens) - 1, target.n_ctx - n_past - 1)
                if n_max > 0:
                    cut = controller.confidence_cutoff() if learn_cutoff else spec.draft_p_min
                    try:
                        proposal = proposer.propose(history, n_max, min_confidence=cut, want_confidence=learn_cutoff)
                    except DecodeAborted:
                        stop_reason = "cancelled"
                        break
                    draft = proposal.tokens
                    n_paid = len(draft)  # what the proposer drafted (and its time paid for)
                    if learn_cutoff and proposal.confidences and controller.drafting_is_free:
                        # free guesses are judged one by one; a draft model's are verified as drafted (it
                        # already stopped at its confidence cut-off, and its time is spent)
                        spent = proposer.seconds - draft_t0
                        del draft[controller.best_prefix(proposal.confidences[: len(draft)], spent) :]
                    source = proposal.source or proposer.name
                    confidences = proposal.confidences or ()
                    for i, t in enumerate(draft):
                        if model.is_eog(t):  # nothing after an end-of-generation token can be emitted
                            del draft[i + 1 :]
                            break
                    if proposal.note and proposal.note not in stats.notes:
                        stats.notes.append(proposal.note)
                    if proposal.exhausted:
                        proposing = False
                    if len(draft) < spec.draft_min:
                        draft = []
            # -- verify in one batch --------------------------------------------------------------
            t0 = time.perf_counter()
            try:
                target.decode([history[-1], *draft], outputs="all" if draft else "last", cancel=cancel)
            except DecodeAborted:
                stop_reason = "cancelled"
                break
            n_acc = 0
            n_out = len(out_tokens)
            for i in range(len(draft) + 1):
                tok = sampler.sample(target, i)
                if i < len(draft) and tok == draft[i]:
                    if model.is_eog(tok):  # a right guess, but the end: not emitted, not kept in the cache
                        done = take(tok, True)
                        break
                    n_acc += 1
                    if take(tok, True):
                        done = True
                        break
                else:
                    done = take(tok, False)
                    break
            verify_seconds = time.perf_counter() - t0
            target_seconds += verify_seconds
            if controller is not None:
                controller.observe(
                    asked=n_max,
                    drafted=n_paid,
                    verified=len(draft),
                    accepted=n_acc,
                    draft_seconds=proposer.seconds - draft_t0,
                    verify_seconds=verify_seconds,
                    confidences=confidences if learn_cutoff else (),
                )
            # -- roll back to the accepted tokens -------------------------------------------------
            n_keep = n_past + 1 + n_acc
            target.truncate(n_keep)
            if proposer is not None:
                proposer.accepted(n_keep)
            stats.rounds += 1
            stats.drafted += len(draft)
            stats.accepted += n_acc
            if n_acc:
                stats.accepted_by_source[source] = stats.accepted_by_source.get(source, 0) + n_acc
            stats.target_seconds = target_seconds
            if on_round is not None:
                on_round(
                    RoundInfo(
                        drafted=len(draft),
                        accepted=n_acc,
                        emitted=len(out_tokens) - n_out,
                        target_kv=target.n_past,
                        draft_kv=proposer.cached_tokens if proposer is not None else None,
                    )
                )
        stats.target_seconds = target_seconds
        return finish(stop_reason)
    finally:
        sampler.close()

"""The verify loop at its edges: stops while the draft decodes, EOS inside an accepted run, a full draft
context, a batch too small for the draft, rollbacks that fail, and a proposer that plugs in from outside."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pytest

from app.engine.llama_backend import (
    Context,
    DecodeAborted,
    EngineError,
    Model,
    RollbackFailed,
    SpeculationUnsupported,
)
from app.engine.proposers import DraftModelProposer, HistoryProposer, Proposal, Proposer
from app.engine.sampling import SamplingParams
from app.engine.speculative import RoundInfo, SpecSettings, generate
from tests.tiny_models import DRAFT, TARGET, write_tiny_model

GREEDY = SamplingParams(temperature=0.0)
PROMPT = "the value of data"


@pytest.fixture(scope="module")
def models(tiny_target, tiny_draft):
    target, draft = Model(tiny_target), Model(tiny_draft)
    yield target, draft
    draft.close()
    target.close()


class StopWhenPolledInside(threading.Event):
    """A cancel event that sets itself the `nth` time it is polled while `ctx` decodes.

    llama.cpp polls a decode's cancel event from its abort callback between graph nodes, so this stops a
    decode of `ctx` in the middle of its computation — deterministically, with no timing involved.
    """

    def __init__(self, ctx: Context, nth: int = 3) -> None:
        super().__init__()
        self._ctx, self._nth, self.polls = ctx, nth, 0

    def is_set(self) -> bool:
        if not super().is_set() and self._ctx.decoding:
            self.polls += 1
            if self.polls >= self._nth:
                self.set()
        return super().is_set()


def test_a_decode_stopped_in_the_middle_leaves_the_cache_as_it_was(models):
    target, _ = models
    toks = target.tokenize("the value of data is in the list of items " * 12)
    with Context(target, n_ctx=512, n_threads=2) as ctx:
        ctx.decode(toks[:5])
        stop = StopWhenPolledInside(ctx, nth=3)
        with pytest.raises(DecodeAborted):
            ctx.decode(toks[5:], cancel=stop)
        assert stop.polls >= 3  # it was polled from inside llama.cpp's computation
        assert ctx.tokens == toks[:5]
        # the cache really holds just those 5 tokens: decoding on gives what a fresh context gives
        ctx.decode(toks[5:9])
        after = ctx.logits(-1).copy()
        ctx.clear()
        ctx.decode(toks[:9])
        assert np.array_equal(after, ctx.logits(-1))
        # a cancel set before the call stops it before it starts
        already = threading.Event()
        already.set()
        with pytest.raises(DecodeAborted):
            ctx.decode(toks[9:12], cancel=already)
        assert ctx.tokens == toks[:9]


def test_stop_while_the_draft_reads_a_long_prompt_ends_the_reply_as_stopped(models):
    """Stop pressed while the draft model catches up on a long prompt: a stopped reply, not a failed one."""
    target, draft = models
    prompt = target.tokenize("the value of data is in the list of items and the name of the code " * 20)
    with Context(target, n_ctx=1024, n_threads=2) as tc, Context(draft, n_ctx=1024, n_threads=2) as dc:
        plain = generate(tc, prompt, GREEDY, max_tokens=12)
        tc.clear()
        stop = StopWhenPolledInside(dc, nth=3)
        res = generate(tc, prompt, GREEDY, proposer=DraftModelProposer(dc), spec=SpecSettings(draft_max=5),
                       max_tokens=12, cancel=stop)
        assert stop.polls >= 3  # stopped inside the draft's decode of the prompt
        assert res.stats.stop_reason == "cancelled"
        assert res.tokens == plain.tokens[:1]  # the first token (from the target's prompt) is kept
        assert res.text == target.detokenize(res.tokens)
        assert dc.n_past == 0  # the aborted catch-up left nothing behind
        # and the next request works and is exact
        again = generate(tc, prompt, GREEDY, proposer=DraftModelProposer(dc), spec=SpecSettings(draft_max=5),
                         max_tokens=12)
        assert again.tokens == plain.tokens


def test_stop_while_the_draft_drafts_ends_the_reply_as_stopped(models):
    target, draft = models
    prompt = target.tokenize(PROMPT)
    with Context(target, n_ctx=512, n_threads=2) as tc, Context(draft, n_ctx=512, n_threads=2) as dc:
        plain = generate(tc, prompt, GREEDY, max_tokens=40)
        tc.clear()
        proposer = DraftModelProposer(dc)
        # the first polls inside the draft come from its catch-up on the prompt; later ones from drafting
        stop = StopWhenPolledInside(dc, nth=40)
        res = generate(tc, prompt, GREEDY, proposer=proposer, spec=SpecSettings(draft_max=6), max_tokens=40,
                       cancel=stop)
        assert res.stats.stop_reason == "cancelled"
        assert 1 <= len(res.tokens) < 40
        assert res.tokens == plain.tokens[: len(res.tokens)]
        assert dc.tokens == (prompt + res.tokens)[: dc.n_past]
        assert tc.tokens == (prompt + res.tokens)[: tc.n_past]


def test_a_cancel_set_before_the_start_is_kept(models):
    target, draft = models
    with Context(target, n_ctx=256, n_threads=2) as tc, Context(draft, n_ctx=256, n_threads=2) as dc:
        stop = threading.Event()
        stop.set()
        res = generate(tc, target.tokenize(PROMPT), GREEDY, proposer=DraftModelProposer(dc), max_tokens=20,
                       cancel=stop)
        assert res.stats.stop_reason == "cancelled"
        assert res.tokens == [] and res.text == ""
        assert tc.n_past == 0 and dc.n_past == 0


# -- EOS in the middle of an accepted run ----------------------------------------------------------
@pytest.fixture(scope="module")
def eos_pair(models, tmp_path_factory):
    """A target and draft that end after a token W that greedy decoding of PROMPT reaches on its 5th step."""
    target, _ = models
    prompt = target.tokenize(PROMPT)
    with Context(target, n_ctx=256, n_threads=2) as tc:
        chain = generate(tc, prompt, GREEDY, max_tokens=12).tokens
    seen = set(prompt)
    pos = next(i for i, t in enumerate(chain) if i >= 4 and t not in seen and t not in chain[:i])
    w = chain[pos]
    folder = tmp_path_factory.mktemp("eos-models")
    t_path = write_tiny_model(folder / "eos-target.gguf", TARGET.__class__(**{**TARGET.__dict__, "eos_after": w}))
    d_path = write_tiny_model(folder / "eos-draft.gguf", DRAFT.__class__(**{**DRAFT.__dict__, "eos_after": w}))
    t_model, d_model = Model(t_path), Model(d_path)
    yield t_model, d_model, prompt, chain[: pos + 1]
    d_model.close()
    t_model.close()


def test_eos_inside_an_accepted_run_is_not_emitted_counted_or_cached(eos_pair):
    target, draft, prompt, expected = eos_pair
    with Context(target, n_ctx=256, n_threads=2) as tc, Context(draft, n_ctx=256, n_threads=2) as dc:
        plain = generate(tc, prompt, GREEDY, max_tokens=40)
        assert plain.tokens == expected and plain.stats.stop_reason == "eos"
        tc.clear()
        rounds: list[RoundInfo] = []
        drafts: list[list[int]] = []

        class Watching(DraftModelProposer):
            def _propose(self, *args, **kwargs) -> Proposal:
                p = super()._propose(*args, **kwargs)
                drafts.append(list(p.tokens))
                return p

        res = generate(tc, prompt, GREEDY, proposer=Watching(dc), spec=SpecSettings(draft_max=12), max_tokens=40,
                       on_round=rounds.append)
        assert res.tokens == expected and res.text == plain.text
        assert res.stats.stop_reason == "eos"
        eos = target.eos
        # the draft guessed the end inside a longer draft, and stopped drafting right there
        assert any(eos in d for d in drafts)
        assert all(d.index(eos) == len(d) - 1 for d in drafts if eos in d)
        # accepted = guesses that became output; emitted = output tokens (the first one came from the prompt)
        assert res.stats.accepted == sum(r.accepted for r in rounds) <= len(expected) - 1
        assert sum(r.emitted for r in rounds) == len(expected) - 1
        # neither cache holds the end token: both mirror exactly the accepted history
        history = prompt + res.tokens
        assert eos not in tc.tokens[len(prompt):] and eos not in dc.tokens[len(prompt):]
        assert tc.tokens == history[: tc.n_past] and tc.n_past >= len(history) - 1
        assert dc.tokens == history[: dc.n_past]


# -- a full draft context -----------------------------------------------------------------------------
def test_a_full_draft_context_is_reported_and_generation_goes_on_exactly(models):
    target, draft = models
    prompt = target.tokenize(PROMPT)
    # llama.cpp rounds a context up to 256 tokens: the draft's is full long before the target's
    with Context(target, n_ctx=1024, n_threads=2) as tc, Context(draft, n_ctx=256, n_threads=2) as dc:
        plain = generate(tc, prompt, GREEDY, max_tokens=320)
        tc.clear()
        rounds: list[RoundInfo] = []
        res = generate(tc, prompt, GREEDY, proposer=DraftModelProposer(dc), spec=SpecSettings(draft_max=4),
                       max_tokens=320, on_round=rounds.append)
        assert res.tokens == plain.tokens
        assert res.stats.drafted > 0  # it drafted while the draft context had room
        assert any("context" in n and "full" in n for n in res.stats.notes), res.stats.notes
        assert len(res.stats.notes) == 1  # said once
        assert max(r.draft_kv for r in rounds) <= dc.n_ctx
        assert rounds[-1].drafted == 0  # the last rounds are plain steps


def test_a_prompt_longer_than_the_draft_context_is_decoded_without_drafting(models):
    target, draft = models
    prompt = target.tokenize("the value of data is in the list " * 40)
    with Context(target, n_ctx=1024, n_threads=2) as tc, Context(draft, n_ctx=256, n_threads=2) as dc:
        assert len(prompt) > dc.n_ctx
        plain = generate(tc, prompt, GREEDY, max_tokens=20)
        tc.clear()
        res = generate(tc, prompt, GREEDY, proposer=DraftModelProposer(dc), max_tokens=20)
        assert res.tokens == plain.tokens
        assert res.stats.drafted == 0 and res.stats.notes


# -- the batch must hold a whole verify ---------------------------------------------------------------
def test_a_batch_smaller_than_draft_tokens_plus_one_is_refused(models):
    target, draft = models
    prompt = target.tokenize(PROMPT)
    with Context(target, n_ctx=256, n_batch=4, n_threads=2) as tc, Context(draft, n_ctx=256, n_threads=2) as dc:
        with pytest.raises(EngineError, match="batch size"):
            generate(tc, prompt, GREEDY, proposer=DraftModelProposer(dc), spec=SpecSettings(draft_max=4))
        # at the limit it works, and long prompts are still split into batches
        ok = generate(tc, prompt * 3, GREEDY, proposer=DraftModelProposer(dc), spec=SpecSettings(draft_max=3),
                      max_tokens=16)
        assert len(ok.tokens) == 16
        # the context refuses to give rows it could not read
        with pytest.raises(EngineError, match="batch size"):
            tc.decode(prompt[:5], outputs="all")


# -- models whose memory cannot roll back ----------------------------------------------------------
@pytest.fixture(scope="module")
def mamba(tiny_mamba):
    m = Model(tiny_mamba)
    yield m
    m.close()


def test_a_failed_rollback_clears_cache_and_mirror_together(mamba):
    toks = mamba.tokenize("the value of data is in the list")
    with Context(mamba, n_ctx=256, n_threads=2) as ctx:
        ctx.decode(toks)
        with pytest.raises(RollbackFailed, match="recurrent"):
            ctx.truncate(3)
        assert ctx.tokens == [] and ctx.n_past == 0
        # the next decode starts at position 0, as the mirror says: same logits as a fresh context
        ctx.decode(toks[:4])
        a = ctx.logits(-1).copy()
    with Context(mamba, n_ctx=256, n_threads=2) as fresh:
        fresh.decode(toks[:4])
        assert np.array_equal(a, fresh.logits(-1))


def test_a_recurrent_model_decodes_plainly_and_is_refused_for_speculation(mamba, models):
    target, _ = models
    assert not mamba.can_roll_back and mamba.memory_kind == "recurrent"
    assert "recurrent" in mamba.speculation_refusal("target")
    prompt = mamba.tokenize(PROMPT)
    with Context(mamba, n_ctx=256, n_threads=2) as ctx:
        first = generate(ctx, prompt, GREEDY, max_tokens=16)
        assert len(first.tokens) == 16
        # the next turn reuses the cached state where it can, and gives what a fresh context gives
        follow = prompt + first.tokens + mamba.tokenize(" and the list", add_special=False)
        turn2 = generate(ctx, follow, GREEDY, max_tokens=10)
        assert turn2.stats.cached_prompt_tokens > 0
        # a prompt that departs from the cache: the state is rebuilt from the start
        other = generate(ctx, mamba.tokenize("json name id"), GREEDY, max_tokens=10)
        with Context(mamba, n_ctx=256, n_threads=2) as fresh:
            assert generate(fresh, follow, GREEDY, max_tokens=10).tokens == turn2.tokens
            fresh.clear()
            assert generate(fresh, mamba.tokenize("json name id"), GREEDY, max_tokens=10).tokens == other.tokens
        with pytest.raises(SpeculationUnsupported, match="recurrent"):
            generate(ctx, prompt, GREEDY, proposer=HistoryProposer(), max_tokens=8)
        with pytest.raises(SpeculationUnsupported, match="draft"):
            DraftModelProposer(ctx)


# -- one proposer interface ------------------------------------------------------------------------
class Oracle(Proposer):
    """Proposes what plain decoding wrote (a proposer from outside the engine: the loop needs nothing more)."""

    name = "oracle"

    def __init__(self, plain: Sequence[int], n_prompt: int) -> None:
        super().__init__()
        self.plain, self.n_prompt = list(plain), n_prompt

    def _propose(self, history, n_max, min_confidence, want_confidence) -> Proposal:
        done = len(history) - self.n_prompt
        return Proposal(self.plain[done : done + n_max])


def test_a_new_proposer_plugs_into_the_loop(models):
    target, _ = models
    prompt = target.tokenize(PROMPT)
    with Context(target, n_ctx=256, n_threads=2) as tc:
        plain = generate(tc, prompt, GREEDY, max_tokens=30)
        tc.clear()
        res = generate(tc, prompt, GREEDY, proposer=Oracle(plain.tokens, len(prompt)),
                       spec=SpecSettings(draft_max=7), max_tokens=30)
        assert res.tokens == plain.tokens
        assert res.stats.proposer == "oracle"
        assert res.stats.acceptance_rate == 1.0
        assert res.stats.rounds == 4  # 29 tokens after the first, 8 per round


def test_draft_stats_count_its_decode_calls_and_the_tokens_they_evaluated(models):
    target, draft = models
    prompt = target.tokenize(PROMPT)
    with Context(target, n_ctx=256, n_threads=2) as tc, Context(draft, n_ctx=256, n_threads=2) as dc:
        res = generate(tc, prompt, GREEDY, proposer=DraftModelProposer(dc), spec=SpecSettings(draft_max=6),
                       max_tokens=60)
        st = res.stats
        assert 0 < st.draft_decodes <= st.draft_decoded_tokens
        # the draft evaluates each accepted token once and each rejected guess at most once (the prompt was
        # read in begin(), counted as prompt time)
        assert st.draft_decoded_tokens <= st.generated_tokens + st.drafted
        assert st.draft_prompt_seconds > 0 and st.prompt_seconds > st.draft_prompt_seconds

"""The adaptive draft length controller: unit tests on synthetic rounds, and exactness in the real loop."""

from __future__ import annotations

import pytest

from app.engine.adaptive import AdaptiveDraftController, expected_tokens
from app.engine.llama_backend import Context, Model
from app.engine.proposers import DraftModelProposer, HistoryProposer
from app.engine.sampling import SamplingParams
from app.engine.speculative import RoundInfo, SpecSettings, generate

MS = 1e-3


def feed(c: AdaptiveDraftController, rounds: int, accept, draft_ms: float = 1.0, verify=lambda k: 10 + 1.0 * k,
         probs=None) -> list[int]:
    """Run `rounds` synthetic rounds: accept(n) = accepted guesses when n were drafted."""
    chosen = []
    for _ in range(rounds):
        n = c.next_length()
        chosen.append(n)
        a = accept(n)
        c.observe(asked=n, drafted=n, accepted=a, draft_seconds=n * draft_ms * MS,
                  verify_seconds=verify(n + 1) * MS, confidences=probs(n) if probs else ())
    return chosen


def test_expected_tokens():
    assert expected_tokens(0.5, 0) == 1.0
    assert expected_tokens(0.5, 1) == pytest.approx(1.5)
    assert expected_tokens(0.5, 3) == pytest.approx(1 + 0.5 + 0.25 + 0.125)
    assert expected_tokens(1.0, 4) == 5.0
    assert expected_tokens(0.0, 8) == 1.0


def test_grows_to_the_cap_when_every_guess_is_accepted_and_drafting_is_cheap():
    c = AdaptiveDraftController(12)
    chosen = feed(c, 40, accept=lambda n: n)
    assert chosen[-1] == 12
    assert c.alpha > 0.95


def test_switches_drafting_off_when_nothing_is_accepted():
    c = AdaptiveDraftController(8)
    chosen = feed(c, 30, accept=lambda n: 0, draft_ms=5.0)
    assert chosen[-1] == 0
    assert chosen.count(0) > 20
    assert c.alpha < c.prior_alpha


def test_short_drafts_when_the_draft_is_almost_as_slow_as_the_target():
    # verify of one token 20 ms, each extra token in the batch 5 ms, a draft token 12 ms; 80 % acceptance
    cheap = AdaptiveDraftController(16)
    costly = AdaptiveDraftController(16)
    pattern = iter([1, 1, 1, 1, 0] * 100)

    def accept(n: int) -> int:
        a = 0
        while a < n and next(pattern):
            a += 1
        return a

    feed(cheap, 60, accept, draft_ms=0.5, verify=lambda k: 15 + 5 * k)
    feed(costly, 60, accept, draft_ms=12.0, verify=lambda k: 15 + 5 * k)
    assert costly.next_length() < cheap.next_length()
    assert costly.next_length() <= 3


def test_follows_the_text_when_it_changes():
    c = AdaptiveDraftController(10)
    feed(c, 30, accept=lambda n: n)
    long_n = c.next_length()
    feed(c, 30, accept=lambda n: min(n, 1))  # now only the first guess is ever right
    assert long_n >= 8
    assert c.next_length() <= 3


def test_learns_a_confidence_cutoff_from_the_drafts_top_probabilities():
    c = AdaptiveDraftController(8, n_start=6)

    # guesses the draft is sure of (p = 0.95) are accepted, unsure ones (p = 0.3) rejected
    def probs(n):
        return [0.95, 0.95, 0.3, 0.95, 0.3, 0.95, 0.95, 0.3][:n]

    def accept(n):
        ps = probs(n)
        return next((i for i, p in enumerate(ps) if p < 0.5), n)

    assert c.confidence_cutoff() == 0.0  # nothing measured yet
    feed(c, 40, accept, draft_ms=3.0, verify=lambda k: 15 + 4 * k, probs=probs)
    cut = c.confidence_cutoff()
    assert 0.3 < cut <= 0.6

    # a draft whose unsure guesses are right anyway: no cut
    c2 = AdaptiveDraftController(8, n_start=6)
    feed(c2, 40, accept=lambda n: n, draft_ms=3.0, verify=lambda k: 15 + 4 * k, probs=probs)
    assert c2.confidence_cutoff() == 0.0


def test_measures_the_plain_step_first():
    c = AdaptiveDraftController(8)
    chosen = feed(c, 3, accept=lambda n: n)
    assert chosen[0] == 0 and chosen[1] > 0


# costs measured on SmolLM2-135M (2 threads): the Q4_1 draft ~5.8 ms a guess; verify batches of k tokens
F16_VERIFY = lambda k: 7.8 + 2.7 * (k - 1)  # noqa: E731 - an F16 target: batches cost almost linearly
F32_VERIFY = lambda k: 14.6 + 1.25 * (k - 1)  # noqa: E731 - an F32 target: a batch costs little more than one


def test_switches_off_for_good_where_drafting_loses_even_with_every_guess_accepted():
    c = AdaptiveDraftController(8)
    chosen = feed(c, 200, accept=lambda n: n, draft_ms=5.8, verify=F16_VERIFY)
    assert c.hopeless and not c.drafting_expected
    assert all(n == 0 for n in chosen[4:]), chosen[:12]  # no probes: the text cannot make it pay
    assert chosen[:4] == [0, 4, 4, 8]  # the plain step, then two lengths of drafting measured, then off


def test_stays_at_the_cap_where_drafting_wins():
    c = AdaptiveDraftController(8)
    chosen = feed(c, 60, accept=lambda n: n, draft_ms=5.8, verify=F32_VERIFY)
    assert not c.hopeless and c.drafting_expected
    assert chosen[3:] == [8] * 57


def test_probes_find_predictable_text_again_after_switching_off():
    c = AdaptiveDraftController(8)
    feed(c, 80, accept=lambda n: 0, draft_ms=2.0, verify=F32_VERIFY)
    assert c.next_length() == 0 and not c.hopeless and c.drafting_expected
    chosen = feed(c, 60, accept=lambda n: n, draft_ms=2.0, verify=F32_VERIFY)
    assert chosen[-1] == 8


def test_rejects_bad_settings():
    with pytest.raises(ValueError):
        AdaptiveDraftController(0)
    with pytest.raises(ValueError):
        AdaptiveDraftController(4, n_min=5)
    with pytest.raises(ValueError):
        AdaptiveDraftController(4, decay=0.0)


# -- in the real loop (tiny models) -----------------------------------------------------------------
GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture(scope="module")
def contexts(tiny_target, tiny_draft):
    target, draft = Model(tiny_target), Model(tiny_draft)
    tc, dc = Context(target, n_ctx=512, n_threads=1), Context(draft, n_ctx=512, n_threads=1)
    yield target, tc, dc
    dc.close()
    tc.close()
    draft.close()
    target.close()


@pytest.mark.parametrize("text", ["the value of data", "def return if else import class self print"])
def test_adaptive_output_is_token_identical_to_plain(contexts, text):
    target, tc, dc = contexts
    prompt = target.tokenize(text)
    tc.clear()
    plain = generate(tc, prompt, GREEDY, max_tokens=48)
    proposer = DraftModelProposer(dc)
    rounds: list[RoundInfo] = []
    for proposer in (DraftModelProposer(dc), HistoryProposer()):
        tc.clear()
        proposer.reset()
        rounds.clear()
        res = generate(tc, prompt, GREEDY, proposer=proposer, spec=SpecSettings(draft_max=8, adaptive=True),
                       max_tokens=48, on_round=rounds.append)
        assert res.tokens == plain.tokens
        assert all(r.drafted <= 8 for r in rounds)
    assert proposer.seconds >= 0


def test_adaptive_varies_the_length_and_restores_the_drafts_cutoff(contexts):
    target, tc, dc = contexts
    prompt = target.tokenize("json name id type items true false null")
    proposer = DraftModelProposer(dc, p_min=0.0)
    tc.clear()
    rounds: list[RoundInfo] = []
    res = generate(tc, prompt, GREEDY, proposer=proposer, spec=SpecSettings(draft_max=6, adaptive=True),
                   max_tokens=64, on_round=rounds.append)
    assert res.stats.generated_tokens == 64
    assert len({r.drafted for r in rounds}) > 1  # the length changed during the generation
    assert proposer.p_min == 0.0  # the loop's temporary cut-off is undone


def test_best_prefix_explores_a_band_the_prior_turns_down_then_follows_the_evidence():
    costly_first_row = lambda k: 7.8 if k == 1 else 7.8 + 6.1 + 2.3 * (k - 2)  # noqa: E731 - an F16 target
    right, wrong = AdaptiveDraftController(16), AdaptiveDraftController(16)
    for c, accepted in ((right, lambda n: n), (wrong, lambda n: 0)):
        feed(c, 2, accept=lambda n: n, draft_ms=0.0, verify=costly_first_row)  # costs measured, no band yet
        confidences = [0.65] * 6  # a middling proposal: its band's prior (0.7) does not pay for a costly row
        verified = []
        for _ in range(12):
            n = c.best_prefix(confidences)
            verified.append(n)
            if n:
                c.observe(asked=16, drafted=n, accepted=accepted(n), draft_seconds=0.0,
                          verify_seconds=costly_first_row(n + 1) * MS, confidences=confidences[:n])
        assert verified[0] > 0  # explored although the prior says no
        if c is right:
            assert verified[-1] >= 4  # measured to pay: verified at length
        else:
            assert verified[-1] == 0 and verified.count(0) >= 10  # measured to lose: no longer verified

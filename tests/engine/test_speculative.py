"""The speculative loop on tiny random-weight models: exactness, distribution, rollback, stops, cancel."""

from __future__ import annotations

import threading
from collections import Counter

import numpy as np
import pytest
from scipy.stats import chi2_contingency

from app.engine.llama_backend import Context, Model
from app.engine.proposers import DraftModelProposer, HistoryProposer
from app.engine.sampling import SamplingParams
from app.engine.speculative import SpecSettings, _TextAssembler, generate

PROMPTS = [
    "the value of data",
    "def return if else import class self",
    "hello world, this is a test of the tiny model",
    "json name id type items true false null",
]
GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture(scope="module")
def models(tiny_target, tiny_draft):
    target = Model(tiny_target)
    draft = Model(tiny_draft)
    yield target, draft
    draft.close()
    target.close()


@pytest.fixture()
def contexts(models):
    target, draft = models
    tc, dc = Context(target, n_ctx=1024, n_threads=2), Context(draft, n_ctx=1024, n_threads=2)
    yield tc, dc
    dc.close()
    tc.close()


def _plain(tc: Context, prompt: list[int], sampling=GREEDY, n: int = 48):
    tc.clear()
    return generate(tc, prompt, sampling, max_tokens=n)


@pytest.mark.parametrize("prompt_text", PROMPTS)
def test_greedy_draft_model_is_token_identical_to_plain_for_every_draft_length(models, contexts, prompt_text):
    target, _ = models
    tc, dc = contexts
    prompt = target.tokenize(prompt_text)
    plain = _plain(tc, prompt)
    assert len(plain.tokens) == 48
    accepted_any = False
    for draft_max in range(1, 9):
        tc.clear()
        dc.clear()
        spec = generate(tc, prompt, GREEDY, proposer=DraftModelProposer(dc), spec=SpecSettings(draft_max=draft_max),
                        max_tokens=48)
        assert spec.tokens == plain.tokens, f"draft_max={draft_max} diverged"
        assert spec.text == plain.text
        assert spec.stats.drafted > 0
        assert spec.stats.accepted + spec.stats.rejected == spec.stats.drafted
        accepted_any |= spec.stats.accepted > 0
        # some guesses are rejected: the reject path really ran
    assert accepted_any


@pytest.mark.parametrize("prompt_text", PROMPTS[:2])
def test_greedy_history_drafting_is_token_identical_to_plain(models, contexts, prompt_text):
    target, _ = models
    tc, _ = contexts
    prompt = target.tokenize(prompt_text)
    plain = _plain(tc, prompt, n=64)
    for draft_max in (1, 3, 8):
        tc.clear()
        res = generate(tc, prompt, GREEDY, proposer=HistoryProposer(), spec=SpecSettings(draft_max=draft_max),
                       max_tokens=64)
        assert res.tokens == plain.tokens
        assert res.stats.drafted > 0


def test_rejections_happen_and_rollback_leaves_both_contexts_at_the_accepted_length(models, contexts):
    target, _ = models
    tc, dc = contexts
    prompt = target.tokenize(PROMPTS[2])
    rounds = []
    emitted = 1  # the first token comes from the prompt's logits

    def check(info):
        nonlocal emitted
        emitted += info.emitted
        # the target holds every accepted token except the newest (sampled, decoded next round)
        assert info.target_kv == len(tc.tokens) == len(prompt) + emitted - 1
        assert tc.tokens[: len(prompt)] == prompt
        # the draft holds a prefix of exactly those accepted tokens, never a rejected guess
        assert info.draft_kv == len(dc.tokens) <= info.target_kv
        assert dc.tokens == tc.tokens[: len(dc.tokens)]
        rounds.append(info)

    res = generate(tc, prompt, GREEDY, proposer=DraftModelProposer(dc), spec=SpecSettings(draft_max=6),
                   max_tokens=64, on_round=check)
    assert tc.tokens == (prompt + res.tokens)[: len(tc.tokens)]
    assert any(r.accepted < r.drafted for r in rounds), "no round rejected a guess"
    assert any(r.accepted > 0 for r in rounds), "no round accepted a guess"


def test_rollback_after_generation_matches_output(models, contexts):
    target, _ = models
    tc, dc = contexts
    prompt = target.tokenize(PROMPTS[0])
    res = generate(tc, prompt, GREEDY, proposer=DraftModelProposer(dc), spec=SpecSettings(draft_max=4), max_tokens=40)
    history = prompt + res.tokens
    assert tc.tokens == history[: len(tc.tokens)]
    assert len(tc.tokens) in (len(history) - 1, len(history))
    assert dc.tokens == history[: len(dc.tokens)]


def _first_tokens(tc, dc, prompt, sampling, proposer_factory, n_runs, n_tokens):
    samples = []
    for seed in range(n_runs):
        sampling.seed = seed
        tc.clear()
        proposer = proposer_factory()
        if proposer is not None:
            proposer.reset()
        res = generate(tc, prompt, sampling, proposer=proposer, spec=SpecSettings(draft_max=4), max_tokens=n_tokens)
        samples.append(tuple(res.tokens[:n_tokens]))
    return samples


def _chi2_same_distribution(a: list, b: list, min_count: int = 5) -> float:
    """p-value of a chi-square test that samples a and b come from one distribution (rare bins pooled)."""
    ca, cb = Counter(a), Counter(b)
    keys = sorted(set(ca) | set(cb), key=lambda k: -(ca[k] + cb[k]))
    rows_a, rows_b, rest_a, rest_b = [], [], 0, 0
    for k in keys:
        if ca[k] + cb[k] >= min_count * 2:
            rows_a.append(ca[k])
            rows_b.append(cb[k])
        else:
            rest_a += ca[k]
            rest_b += cb[k]
    if rest_a + rest_b:
        rows_a.append(rest_a)
        rows_b.append(rest_b)
    if len(rows_a) < 2:
        return 1.0
    return float(chi2_contingency(np.array([rows_a, rows_b]))[1])


def test_sampling_follows_the_target_distribution(models, contexts):
    """With temperature > 0, speculative output is distributed like plain sampling from the target.

    Compares the distribution of the 2nd..4th generated tokens (which depend on what was accepted) over
    many seeds; and shows the test has power: the draft model's own samples are clearly different.
    """
    target, draft = models
    tc, dc = contexts
    prompt = target.tokenize("the value of")
    sampling = SamplingParams(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0)
    n_runs, n_tok = 1500, 4
    # different seeds for the two arms, so the test is about distributions, not identical random streams
    plain = _first_tokens(tc, dc, prompt, sampling, lambda: None, n_runs, n_tok)
    spec_runs = []
    for seed in range(n_runs, 2 * n_runs):
        sampling.seed = seed
        tc.clear()
        res = generate(tc, prompt, sampling, proposer=DraftModelProposer(dc), spec=SpecSettings(draft_max=4),
                       max_tokens=n_tok)
        spec_runs.append(tuple(res.tokens[:n_tok]))

    # the draft model sampling on its own: a different distribution the test must tell apart
    draft_only = []
    for seed in range(n_runs):
        sampling.seed = seed
        dc.clear()
        res = generate(dc, draft.tokenize("the value of"), sampling, max_tokens=n_tok)
        draft_only.append(tuple(res.tokens[:n_tok]))
    dc.clear()

    for pos in range(1, n_tok):
        a = [s[pos] for s in plain if len(s) > pos]
        b = [s[pos] for s in spec_runs if len(s) > pos]
        p_same = _chi2_same_distribution(a, b)
        assert p_same > 0.001, f"position {pos}: speculative sampling differs from plain (p={p_same:.2g})"
    # the joint distribution of the first two tokens too, and the test's power on it
    pairs = lambda runs: [s[:2] for s in runs]  # noqa: E731
    assert _chi2_same_distribution(pairs(plain), pairs(spec_runs)) > 0.001
    p_power = _chi2_same_distribution(pairs(plain), pairs(draft_only))
    assert p_power < 1e-4, f"the test cannot tell the draft's own distribution apart (p={p_power:.2g})"


def test_same_seed_gives_the_same_sample_with_and_without_speculation(models, contexts):
    target, _ = models
    tc, dc = contexts
    prompt = target.tokenize(PROMPTS[1])
    sampling = SamplingParams(temperature=0.9, seed=1234)
    plain = _plain(tc, prompt, sampling, n=40)
    tc.clear()
    spec = generate(tc, prompt, sampling, proposer=DraftModelProposer(dc), spec=SpecSettings(draft_max=5), max_tokens=40)
    assert spec.tokens == plain.tokens


def test_max_tokens_is_exact_with_drafting(models, contexts):
    target, _ = models
    tc, dc = contexts
    prompt = target.tokenize(PROMPTS[0])
    for n in (1, 2, 7, 13):
        tc.clear()
        res = generate(tc, prompt, GREEDY, proposer=DraftModelProposer(dc), spec=SpecSettings(draft_max=8), max_tokens=n)
        assert len(res.tokens) == n
        assert res.stats.stop_reason == "max_tokens"


def test_stop_string_truncates_text_and_stops(models, contexts):
    target, _ = models
    tc, dc = contexts
    prompt = target.tokenize(PROMPTS[3])
    plain = _plain(tc, prompt, n=64)
    text = plain.text
    # a stop string in the middle of the output, spanning tokens
    stop = text[len(text) // 2 : len(text) // 2 + 4]
    assert stop.strip()
    tc.clear()
    res = generate(tc, prompt, GREEDY, proposer=DraftModelProposer(dc), spec=SpecSettings(draft_max=5),
                   max_tokens=64, stop=[stop])
    assert res.stats.stop_reason == "stop_string"
    assert res.text == text[: text.find(stop)]
    assert stop not in "".join(p.text for p in res.pieces)


def test_cancel_stops_within_one_round_and_keeps_the_text(models, contexts):
    target, _ = models
    tc, dc = contexts
    prompt = target.tokenize(PROMPTS[2])
    cancel = threading.Event()
    seen: list[str] = []

    def on_piece(piece):
        seen.append(piece.text)
        if len(seen) >= 5:
            cancel.set()

    rounds = []
    res = generate(tc, prompt, GREEDY, proposer=DraftModelProposer(dc), spec=SpecSettings(draft_max=4),
                   max_tokens=200, cancel=cancel, on_piece=on_piece, on_round=rounds.append)
    assert res.stats.stop_reason == "cancelled"
    assert 0 < len(res.tokens) < 200
    assert res.text == "".join(seen)
    # the round during which cancel was set is the last one
    n_before_cancel = next(i for i in range(len(rounds)) if sum(r.emitted for r in rounds[: i + 1]) + 1 >= 5)
    assert len(rounds) <= n_before_cancel + 1


def test_pieces_say_which_text_came_from_accepted_drafts(models, contexts):
    target, _ = models
    tc, dc = contexts
    prompt = target.tokenize(PROMPTS[0])
    res = generate(tc, prompt, GREEDY, proposer=DraftModelProposer(dc), spec=SpecSettings(draft_max=5), max_tokens=64)
    assert "".join(p.text for p in res.pieces) == res.text
    assert any(p.from_draft for p in res.pieces) and any(not p.from_draft for p in res.pieces)
    tc.clear()
    plain = generate(tc, prompt, GREEDY, max_tokens=64)
    assert not any(p.from_draft for p in plain.pieces)


def test_prefix_reuse_processes_only_new_tokens_and_gives_the_same_output(models, contexts):
    target, _ = models
    tc, dc = contexts
    first = target.tokenize(PROMPTS[0])
    r1 = generate(tc, first, GREEDY, proposer=DraftModelProposer(dc), max_tokens=20)
    follow = first + r1.tokens + target.tokenize(" and the list", add_special=False)
    r2 = generate(tc, follow, GREEDY, proposer=DraftModelProposer(dc), max_tokens=20)
    assert r2.stats.cached_prompt_tokens >= len(first) + len(r1.tokens) - 1
    tc.clear()
    dc.clear()
    fresh = generate(tc, follow, GREEDY, proposer=DraftModelProposer(dc), max_tokens=20)
    assert fresh.stats.cached_prompt_tokens == 0
    assert fresh.tokens == r2.tokens


def test_draft_probability_cutoff_shortens_drafts(models, contexts):
    target, _ = models
    tc, dc = contexts
    prompt = target.tokenize(PROMPTS[2])
    res_all = generate(tc, prompt, GREEDY, proposer=DraftModelProposer(dc, p_min=0.0),
                       spec=SpecSettings(draft_max=8), max_tokens=48)
    tc.clear()
    dc.clear()
    res_cut = generate(tc, prompt, GREEDY, proposer=DraftModelProposer(dc, p_min=0.9),
                       spec=SpecSettings(draft_max=8), max_tokens=48)
    assert res_cut.tokens == res_all.tokens
    assert res_cut.stats.drafted < res_all.stats.drafted
    assert res_cut.stats.acceptance_rate >= res_all.stats.acceptance_rate


def test_context_full_stops_cleanly(models):
    target, _ = models
    with Context(target, n_ctx=32, n_threads=2) as tc:
        prompt = target.tokenize(PROMPTS[0])
        res = generate(tc, prompt, GREEDY, proposer=HistoryProposer(), max_tokens=4 * tc.n_ctx)
        assert res.stats.stop_reason == "context_full"
        assert len(prompt) + len(res.tokens) == tc.n_ctx + 1  # the last sampled token needs no cache slot


def test_bad_settings_are_refused_with_a_message(models, contexts):
    target, _ = models
    tc, _ = contexts
    prompt = target.tokenize(PROMPTS[0])
    with pytest.raises(ValueError, match="between 1 and 32"):
        generate(tc, prompt, GREEDY, spec=SpecSettings(draft_max=0))
    with pytest.raises(ValueError, match="temperature"):
        generate(tc, prompt, SamplingParams(temperature=-1))
    with pytest.raises(ValueError, match="max tokens"):
        generate(tc, prompt, GREEDY, max_tokens=0)


# -- the text assembler ----------------------------------------------------------------------------------
def test_text_assembler_holds_back_a_possible_stop_string_and_joins_utf8():
    ta = _TextAssembler(["<END>"])
    out = []
    for data, flag in [(b"Hello <E", False), (b"N", True), (b"D> tail", False)]:
        out += ta.feed(data, flag)
    out += ta.finish()
    assert "".join(p.text for p in out) == "Hello "
    assert ta.stopped

    ta = _TextAssembler(["<END>"])
    euro = "€".encode()
    out = ta.feed(euro[:1], False) + ta.feed(euro[1:], True) + ta.feed(b" <E", False) + ta.feed(b"x", False)
    out += ta.finish()
    assert "".join(p.text for p in out) == "€ <Ex"
    assert not ta.stopped
    assert out[0].from_draft is True  # the character completed by the draft token


def test_history_drafts_what_followed_the_longest_earlier_match():
    pl = HistoryProposer()
    hist = [1, 2, 3, 4, 5, 9, 9, 1, 2, 3]
    assert pl.propose(hist, 3).tokens == [4, 5, 9]
    hist += [4, 5]
    assert pl.propose(hist, 2).tokens == [9, 9]
    # a different history resets the index
    assert pl.propose([7, 8, 9, 7, 8], 2).tokens == [9, 7]
    assert pl.propose([1, 2], 4).tokens == []


def test_history_ignores_one_token_matches_by_default():
    hist = [7, 8, 9, 5, 7]  # only "7" recurs
    assert HistoryProposer().propose(hist, 3).tokens == []
    assert HistoryProposer(n_min=1).propose(hist, 3).tokens == [8, 9, 5]

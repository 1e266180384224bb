"""Drafting from the conversation and past chats, in the real loop on the tiny models: exact, and it pays."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.engine import sources
from app.engine.history_store import HistoryStore
from app.engine.llama_backend import Context, Model
from app.engine.proposers import HistoryProposer
from app.engine.sampling import SamplingParams
from app.engine.speculative import RoundInfo, SpecSettings, generate

GREEDY = SamplingParams(temperature=0.0)
# a prompt that repeats itself, so the conversation has something to copy
REPEATING = "def return if else import class self print " * 3 + "json name id type items true false null " * 2


@pytest.fixture(scope="module")
def target(tiny_target):
    m = Model(tiny_target)
    yield m
    m.close()


@pytest.fixture()
def tc(target):
    with Context(target, n_ctx=1024, n_threads=2) as ctx:
        yield ctx


@pytest.mark.parametrize("text", [REPEATING, "the value of data", "hello world, this is a test of the tiny model"])
def test_greedy_output_is_token_identical_to_plain_for_every_draft_length(target, tc, text):
    prompt = target.tokenize(text)
    plain = generate(tc, prompt, GREEDY, max_tokens=64)
    for draft_max in (1, 3, 8, 16):
        for adaptive in (False, True):
            tc.clear()
            rounds: list[RoundInfo] = []
            res = generate(tc, prompt, GREEDY, proposer=HistoryProposer(),
                           spec=SpecSettings(draft_max=draft_max, adaptive=adaptive), max_tokens=64,
                           on_round=rounds.append)
            assert res.tokens == plain.tokens, (draft_max, adaptive)
            history = prompt + res.tokens
            assert tc.tokens == history[: tc.n_past] and tc.n_past >= len(history) - 1
            assert all(r.drafted <= draft_max for r in rounds)


def test_it_drafts_from_the_conversation_and_says_so(target, tc):
    prompt = target.tokenize(REPEATING)
    res = generate(tc, prompt, GREEDY, proposer=HistoryProposer(), spec=SpecSettings(draft_max=8), max_tokens=64)
    st = res.stats
    assert st.drafted > 0 and st.accepted > 0
    assert st.accepted_by_source == {HistoryProposer.SOURCE_CHAT: st.accepted}
    assert st.proposer == sources.HISTORY


def test_the_same_request_in_a_new_chat_drafts_from_past_chats(target, tc, tmp_path: Path):
    store = HistoryStore(tmp_path / "h.tokens")
    prompt = target.tokenize("the value of data is in the list of items")
    first = generate(tc, prompt, GREEDY, proposer=HistoryProposer(store), spec=SpecSettings(draft_max=16),
                     max_tokens=80)
    assert store.n_tokens >= len(prompt) + len(first.tokens) - 1  # the turn went into the store
    # a new chat (new proposer, empty caches) on the same machine later: the store is read back from disk
    tc.clear()
    again = generate(tc, prompt, GREEDY, proposer=HistoryProposer(HistoryStore(tmp_path / "h.tokens")),
                     spec=SpecSettings(draft_max=16), max_tokens=80)
    assert again.tokens == first.tokens
    st = again.stats
    assert st.accepted_by_source.get(HistoryProposer.SOURCE_PAST, 0) >= 0.8 * (len(first.tokens) - 1)
    assert st.acceptance_rate > 0.9
    assert st.rounds < 0.3 * len(first.tokens)


def test_the_conversations_turns_are_stored_once_each(target, tc, tmp_path: Path):
    store = HistoryStore(tmp_path / "h.tokens")
    proposer = HistoryProposer(store)
    p1 = target.tokenize("the value of data")
    r1 = generate(tc, p1, GREEDY, proposer=proposer, max_tokens=20)
    n1 = store.n_tokens
    assert n1 == len(p1) + len(r1.tokens)
    # the next turn of the same chat: only its new part is stored
    p2 = p1 + r1.tokens + target.tokenize(" and the list", add_special=False)
    r2 = generate(tc, p2, GREEDY, proposer=proposer, max_tokens=20)
    assert store.n_tokens == n1 + (len(p2) - len(p1) - len(r1.tokens)) + len(r2.tokens)


def test_a_store_that_is_switched_off_is_never_written(target, tc, tmp_path: Path):
    path = tmp_path / "h.tokens"
    res = generate(tc, target.tokenize("the value of data"), GREEDY,
                   proposer=HistoryProposer(HistoryStore(path, enabled=False)), max_tokens=20)
    assert len(res.tokens) == 20
    assert not path.exists()


def test_sampling_with_history_drafts_follows_the_target_distribution(target, tc):
    """χ² over 1,200 seeds per arm: speculative samples (with drafts that were accepted) vs plain samples."""
    from tests.engine.test_speculative import _chi2_same_distribution

    # the prompt repeats what the target writes after "the value of data": drafts are often right, not always
    base = target.tokenize("the value of data")
    prompt = base + generate(tc, base, GREEDY, max_tokens=12).tokens + base[1:]
    sampling = SamplingParams(temperature=0.8, top_k=0, top_p=1.0, min_p=0.0)
    n_runs, n_tok = 1200, 4
    plain, spec = [], []
    accepted = 0
    for seed in range(n_runs):
        sampling.seed = seed
        tc.clear()
        plain.append(tuple(generate(tc, prompt, sampling, max_tokens=n_tok).tokens))
    for seed in range(n_runs, 2 * n_runs):
        sampling.seed = seed
        tc.clear()
        res = generate(tc, prompt, sampling, proposer=HistoryProposer(), spec=SpecSettings(draft_max=4),
                       max_tokens=n_tok)
        spec.append(tuple(res.tokens))
        accepted += res.stats.accepted
    assert accepted > 100  # the drafts really were used
    for pos in range(n_tok):
        a = [s[pos] for s in plain if len(s) > pos]
        b = [s[pos] for s in spec if len(s) > pos]
        assert _chi2_same_distribution(a, b) > 0.001, f"position {pos} differs"
    assert _chi2_same_distribution([s[:2] for s in plain], [s[:2] for s in spec]) > 0.001


def test_with_a_draft_model_long_history_matches_go_first_for_free(target, tc, tiny_draft):
    from app.engine.proposers import DraftModelProposer, DraftWithHistoryProposer

    base = target.tokenize("the value of data")
    with Context(target, n_ctx=256, n_threads=2) as probe:
        chain = generate(probe, base, GREEDY, max_tokens=40).tokens
    prompt = base + chain + base[1:]  # the reply will repeat a 40-token run the prompt already holds
    plain = generate(tc, prompt, GREEDY, max_tokens=60)
    draft_model = Model(tiny_draft)
    try:
        with Context(draft_model, n_ctx=1024, n_threads=2) as dc:
            tc.clear()
            alone = DraftModelProposer(dc)
            solo = generate(tc, prompt, GREEDY, proposer=alone, spec=SpecSettings(draft_max=8), max_tokens=60)
            tc.clear()
            dc.clear()
            both = DraftWithHistoryProposer(DraftModelProposer(dc), HistoryProposer(), min_match=8)
            rounds: list[RoundInfo] = []
            res = generate(tc, prompt, GREEDY, proposer=both, spec=SpecSettings(draft_max=8), max_tokens=60,
                           on_round=rounds.append)
            assert solo.tokens == plain.tokens and res.tokens == plain.tokens
            st = res.stats
            assert st.accepted_by_source.get(HistoryProposer.SOURCE_CHAT, 0) > 0
            assert st.draft_decodes < solo.stats.draft_decodes  # the draft model sat out the free rounds
            history = prompt + res.tokens
            assert dc.tokens == history[: dc.n_past] and tc.tokens == history[: tc.n_past]
            assert all(r.draft_kv == len(dc.tokens) or r.draft_kv <= r.target_kv for r in rounds)
    finally:
        draft_model.close()

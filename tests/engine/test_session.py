"""The Engine facade: per-request stop switches, models that cannot speculate, settings that cannot work."""

from __future__ import annotations

import threading

import pytest

from app.engine.llama_backend import SpeculationUnsupported
from app.engine.sampling import SamplingParams
from app.engine.session import ChatSession, Engine, ModelSettings
from app.engine.speculative import SpecSettings

GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture()
def engine(tiny_target, tiny_draft):
    e = Engine()
    e.load_target(ModelSettings(tiny_target, n_ctx=512, n_threads=2))
    yield e
    e.close()


def test_a_stop_before_the_request_starts_is_not_lost(engine, tiny_draft):
    engine.load_draft(ModelSettings(tiny_draft, n_ctx=512, n_threads=2))
    prompt = engine.tokenize_prompt("the value of data")
    stop = threading.Event()
    stop.set()  # Stop pressed while the request waited in a queue
    res = engine.generate(prompt, GREEDY, max_tokens=30, cancel=stop)
    assert res.stats.stop_reason == "cancelled" and res.tokens == []
    # the next request has its own switch and runs to the end
    res = engine.generate(prompt, GREEDY, max_tokens=30)
    assert res.stats.stop_reason == "max_tokens" and len(res.tokens) == 30


def test_engine_cancel_stops_the_running_request_from_another_thread(engine, tiny_draft):
    engine.load_draft(ModelSettings(tiny_draft, n_ctx=512, n_threads=2))
    prompt = engine.tokenize_prompt("the value of data")
    seen: list[str] = []

    def on_piece(piece) -> None:
        seen.append(piece.text)
        if len(seen) == 3:
            t = threading.Thread(target=engine.cancel)
            t.start()
            t.join()

    res = engine.generate(prompt, GREEDY, max_tokens=400, on_piece=on_piece)
    assert res.stats.stop_reason == "cancelled"
    assert 3 <= len(res.tokens) < 400
    engine.cancel()  # nothing running: a no-op, and it does not stop the next request
    assert engine.generate(prompt, GREEDY, max_tokens=5).stats.stop_reason == "max_tokens"


def test_a_chat_turn_takes_its_stop_switch(engine):
    chat = ChatSession(engine, system_prompt="be brief")
    stop = threading.Event()
    stop.set()
    res = chat.send("hello", GREEDY, max_tokens=10, cancel=stop)
    assert res.stats.stop_reason == "cancelled"
    assert [m.role for m in chat.messages] == ["user", "assistant"]  # the (empty) stopped reply is kept


def test_a_recurrent_target_decodes_plainly_and_refuses_speculation(tiny_mamba, tiny_draft):
    e = Engine()
    try:
        e.load_target(ModelSettings(tiny_mamba, n_ctx=256, n_threads=2))
        with pytest.raises(SpeculationUnsupported, match="recurrent"):
            e.use_history()
        with pytest.raises(SpeculationUnsupported, match="recurrent"):
            e.load_draft(ModelSettings(tiny_draft, n_ctx=256, n_threads=2))
        assert e.speculation == "off" and e.draft_info is None
        res = ChatSession(e).send("the value of data", GREEDY, max_tokens=12)
        assert len(res.tokens) == 12
    finally:
        e.close()


def test_the_draft_batch_limit_is_checked_when_settings_change(tiny_target):
    e = Engine()
    try:
        e.load_target(ModelSettings(tiny_target, n_ctx=256, n_batch=8, n_threads=2))
        e.set_spec(SpecSettings(draft_max=7))
        with pytest.raises(ValueError, match="batch size"):
            e.set_spec(SpecSettings(draft_max=8))
        assert e.spec.draft_max == 7
    finally:
        e.close()


def test_adaptive_learning_is_kept_between_replies_of_the_same_pair(engine, tiny_draft):
    engine.load_draft(ModelSettings(tiny_draft, n_ctx=512, n_threads=2))
    engine.set_spec(SpecSettings(draft_max=8, adaptive=True))
    prompt = engine.tokenize_prompt("json name id type items true false null")
    first = engine.generate(prompt, GREEDY, max_tokens=40)
    controller = engine.adaptive_controller
    assert controller is not None and controller.history[0] == 0  # a fresh controller measures a plain step
    n_rounds = len(controller.history)
    second = engine.generate(prompt, GREEDY, max_tokens=40)
    assert engine.adaptive_controller is controller and len(controller.history) > n_rounds
    assert first.tokens == second.tokens
    # other settings or another pair: what it learned no longer applies
    engine.set_spec(SpecSettings(draft_max=6, adaptive=True))
    assert engine.adaptive_controller is None
    engine.generate(prompt, GREEDY, max_tokens=10)
    assert engine.adaptive_controller is not None
    engine.use_history()
    assert engine.adaptive_controller is None
    engine.disable_speculation()
    assert engine.generate(prompt, GREEDY, max_tokens=40).tokens == first.tokens


def test_past_chats_are_kept_per_tokenizer_family_switched_off_and_cleared(tiny_target, tiny_other_vocab, tmp_path):
    folder = tmp_path / "history"
    e = Engine(history_folder=folder)
    try:
        e.load_target(ModelSettings(tiny_target, n_ctx=512, n_threads=2))
        e.use_history()
        assert e.speculation == "history"
        ChatSession(e).send("the value of data", GREEDY, max_tokens=30)
        files = list(folder.glob("*.tokens"))
        assert len(files) == 1 and e.history_store().n_tokens > 30
        # another vocabulary: another file
        e.load_target(ModelSettings(tiny_other_vocab, n_ctx=512, n_threads=2))
        e.use_history()
        ChatSession(e).send("the value of data", GREEDY, max_tokens=30)
        assert len(list(folder.glob("*.tokens"))) == 2
        # off: nothing more is written, nothing is read
        e.set_history_enabled(False)
        sizes = {f: f.stat().st_size for f in folder.glob("*.tokens")}
        ChatSession(e).send("json name id type", GREEDY, max_tokens=30)
        assert {f: f.stat().st_size for f in folder.glob("*.tokens")} == sizes
        assert e.history_store().n_tokens == 0
        e.set_history_enabled(True)
        e.clear_history()
        assert list(folder.glob("*.tokens")) == [] and e.history_store().n_tokens == 0
    finally:
        e.close()

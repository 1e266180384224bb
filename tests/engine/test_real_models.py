"""Real text with real models: SmolLM2-135M-Instruct F16 (target) drafted by its own Q4_1 quantization.

The models come from the Python package index (tests/fixtures_real.py) and are cached per machine.
"""

from __future__ import annotations

import pytest

from app.engine.sampling import SamplingParams
from app.engine.session import ChatSession, Engine, IncompatibleDraft, ModelSettings
from app.engine.speculative import SpecSettings

GREEDY = SamplingParams(temperature=0.0)
PROMPTS = [
    "Write a Python function that parses a CSV file and returns a list of dicts, with type hints.",
    "Explain in a few paragraphs why the sky is blue.",
    'Return a JSON object describing a book with the fields "title", "author", "year" and "tags".',
]


@pytest.fixture(scope="module")
def engine(smollm2_f16_path, smollm2_q4_path):
    eng = Engine()
    eng.load_target(ModelSettings(smollm2_f16_path, n_ctx=2048, n_threads=2))
    yield eng
    eng.close()


def _chat_tokens(engine: Engine, text: str) -> list[int]:
    return engine.tokenize_prompt(ChatSession(engine).render([_user(text)]), special=True)


def _user(text: str):
    from app.engine.chat_template import Message

    return Message("user", text)


@pytest.mark.parametrize("prompt_text", PROMPTS)
def test_draft_model_greedy_equals_plain_greedy_for_256_tokens(engine, smollm2_q4_path, prompt_text):
    prompt = _chat_tokens(engine, prompt_text)
    engine.disable_speculation()
    engine.reset_cache()
    plain = engine.generate(prompt, GREEDY, max_tokens=256)
    assert len(plain.tokens) >= 100, plain.text

    engine.load_draft(ModelSettings(smollm2_q4_path, n_ctx=2048, n_threads=2))
    engine.set_spec(SpecSettings(draft_max=5))
    engine.reset_cache()
    spec = engine.generate(prompt, GREEDY, max_tokens=256)
    engine.disable_speculation()

    assert spec.tokens == plain.tokens
    assert spec.text == plain.text
    s = spec.stats
    assert s.drafted > 0 and s.accepted > 0
    assert s.accepted + s.rejected == s.drafted
    assert s.acceptance_rate > 0.6, s.acceptance_rate  # same model, two quantizations: they mostly agree
    assert s.rounds < len(spec.tokens)  # several tokens per target batch


def test_prompt_lookup_greedy_equals_plain(engine):
    text = (
        "Fix the typos in this text and return it in full:\n"
        "The quick brown fox jumpd over the lazy dog. The dog was not amused, and it barkd loudly at the fox."
    )
    prompt = _chat_tokens(engine, text)
    engine.disable_speculation()
    engine.reset_cache()
    plain = engine.generate(prompt, GREEDY, max_tokens=128)
    engine.use_history()
    engine.reset_cache()
    spec = engine.generate(prompt, GREEDY, max_tokens=128)
    engine.disable_speculation()
    assert spec.tokens == plain.tokens
    assert spec.stats.accepted > 0


def test_chat_completion_multi_turn_with_prefix_reuse(engine, smollm2_q4_path):
    engine.load_draft(ModelSettings(smollm2_q4_path, n_ctx=2048, n_threads=2))
    engine.reset_cache()
    chat = ChatSession(engine, system_prompt="You are a concise assistant.")
    pieces = []
    first = chat.send("What is the capital of France?", GREEDY, max_tokens=64, on_piece=pieces.append)
    assert "Paris" in first.text
    assert first.stats.stop_reason == "eos"
    assert "".join(p.text for p in pieces) == first.text
    assert first.stats.drafted > 0

    second = chat.send("And of Italy?", GREEDY, max_tokens=64)
    assert "Rome" in second.text
    # the whole first turn was already in both caches: only the new tokens were processed
    assert second.stats.cached_prompt_tokens > first.stats.prompt_tokens
    assert second.stats.prompt_tokens - second.stats.cached_prompt_tokens < 30
    assert [m.role for m in chat.messages] == ["user", "assistant", "user", "assistant"]
    engine.disable_speculation()


def test_gemma_draft_for_smollm2_is_refused_with_the_tokenizer_reason(engine, gemma_path):
    with pytest.raises(IncompatibleDraft) as err:
        engine.load_draft(ModelSettings(gemma_path, n_ctx=512, n_threads=2))
    msg = str(err.value)
    assert "tokenizer" in msg or "vocabulary" in msg
    assert engine.proposer is None  # nothing was loaded

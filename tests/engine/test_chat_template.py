"""Chat templates: the real SmolLM2 template, Gemma's turn format, and a hostile-template sandbox."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import gguf
import pytest

from app.engine.chat_template import (
    CHATML_TEMPLATE,
    GEMMA_TEMPLATE,
    ChatTemplate,
    ChatTemplateError,
    Message,
    fallback_template,
)

HISTORY = [
    Message("system", "You are concise."),
    Message("user", "What is the capital of France?"),
    Message("assistant", "Paris."),
    Message("user", "And of Italy?"),
]


def _gguf_chat_info(path: Path) -> dict[str, Any]:
    """Template, special tokens, architecture and vocabulary of a GGUF file."""
    reader = gguf.GGUFReader(path)
    fields = reader.fields
    tokens = fields["tokenizer.ggml.tokens"].contents()
    template = fields["tokenizer.chat_template"].contents() if "tokenizer.chat_template" in fields else None
    return {
        "template": template,
        "bos": tokens[fields["tokenizer.ggml.bos_token_id"].contents()],
        "eos": tokens[fields["tokenizer.ggml.eos_token_id"].contents()],
        "arch": fields["general.architecture"].contents(),
        "vocab": set(tokens),
    }


@pytest.fixture(scope="module")
def smollm2_info(smollm2_q4_path: Path) -> dict[str, Any]:
    return _gguf_chat_info(smollm2_q4_path)


@pytest.fixture(scope="module")
def gemma_info(gemma_path: Path) -> dict[str, Any]:
    return _gguf_chat_info(gemma_path)


# --------------------------------------------------------------------------- real templates


def test_smollm2_template_renders_history(smollm2_info: dict[str, Any]) -> None:
    assert smollm2_info["template"] and "<|im_start|>" in smollm2_info["template"]
    tpl = ChatTemplate(smollm2_info["template"], smollm2_info["bos"], smollm2_info["eos"])
    assert not tpl.is_fallback
    assert tpl.render(HISTORY) == (
        "<|im_start|>system\nYou are concise.<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\nParis.<|im_end|>\n"
        "<|im_start|>user\nAnd of Italy?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_smollm2_template_default_system_and_no_generation_prompt(smollm2_info: dict[str, Any]) -> None:
    tpl = ChatTemplate(smollm2_info["template"], smollm2_info["bos"], smollm2_info["eos"])
    text = tpl.render([{"role": "user", "content": "Hi"}], add_generation_prompt=False)
    assert text == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
    )


def test_smollm2_template_matches_chatml_fallback(smollm2_info: dict[str, Any]) -> None:
    """With a system message, SmolLM2's own template and the ChatML fallback agree exactly."""
    own = ChatTemplate(smollm2_info["template"]).render(HISTORY)
    assert ChatTemplate(None).render(HISTORY) == own


def test_gemma_file_uses_gemma_fallback(gemma_info: dict[str, Any]) -> None:
    # This Gemma GGUF carries no tokenizer.chat_template, so the architecture picks the fallback.
    assert gemma_info["template"] is None
    assert gemma_info["arch"] == "gemma3"
    assert gemma_info["bos"] == "<bos>"
    tpl = ChatTemplate(
        gemma_info["template"], gemma_info["bos"], gemma_info["eos"], architecture=gemma_info["arch"]
    )
    assert tpl.is_fallback and tpl.source == GEMMA_TEMPLATE
    assert tpl.render(HISTORY) == (
        "<bos><start_of_turn>user\nYou are concise.\n\nWhat is the capital of France?<end_of_turn>\n"
        "<start_of_turn>model\nParis.<end_of_turn>\n"
        "<start_of_turn>user\nAnd of Italy?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    # The turn markers the fallback emits are real special tokens of this model.
    assert {"<start_of_turn>", "<end_of_turn>"} <= gemma_info["vocab"]


def test_gemma_style_template_with_alternation_check(gemma_info: dict[str, Any]) -> None:
    """A Gemma-style template (system folded in, roles checked with raise_exception) on the real BOS."""
    template = (
        "{{ bos_token }}"
        "{% if messages[0]['role'] == 'system' %}"
        "{% set first_prefix = messages[0]['content'] + '\n\n' %}{% set loop_messages = messages[1:] %}"
        "{% else %}{% set first_prefix = '' %}{% set loop_messages = messages %}{% endif %}"
        "{% for message in loop_messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
        "{% endif %}"
        "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
        "{{ '<start_of_turn>' + role + '\n' + (first_prefix if loop.first else '') }}"
        "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
    )
    tpl = ChatTemplate(template, gemma_info["bos"], gemma_info["eos"])
    fallback = ChatTemplate(None, gemma_info["bos"], architecture="gemma3")
    assert tpl.render(HISTORY) == fallback.render(HISTORY)
    with pytest.raises(ChatTemplateError, match="roles must alternate"):
        tpl.render([Message("user", "a"), Message("user", "b")])


# --------------------------------------------------------------------------- fallbacks and helpers


@pytest.mark.parametrize("template", [None, "", "   \n"])
def test_missing_template_falls_back_to_chatml(template: str | None) -> None:
    tpl = ChatTemplate(template)
    assert tpl.is_fallback and tpl.source == CHATML_TEMPLATE
    assert tpl.render([Message("user", "Hi")]) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert (
        tpl.render([Message("user", "Hi")], add_generation_prompt=False) == "<|im_start|>user\nHi<|im_end|>\n"
    )


def test_fallback_choice() -> None:
    assert fallback_template(None) == CHATML_TEMPLATE
    assert fallback_template("llama") == CHATML_TEMPLATE
    assert fallback_template("gemma3") == GEMMA_TEMPLATE
    assert fallback_template("Gemma2") == GEMMA_TEMPLATE


def test_trim_and_lstrip_blocks() -> None:
    # trim_blocks drops the newline after a tag, lstrip_blocks the indentation before a tag.
    template = "{% for m in messages %}\n    {% if true %}\n{{ m.content }}\n    {% endif %}\n{% endfor %}"
    assert ChatTemplate(template).render(HISTORY[:2]) == "You are concise.\nWhat is the capital of France?\n"


def test_tojson_matches_hugging_face() -> None:
    tpl = ChatTemplate("{{ messages | tojson }}|{{ {'k': [1, 2]} | tojson(indent=2) }}")
    text = tpl.render([Message("user", "café <b> & ü")])
    plain, indented = text.split("|")
    assert plain == json.dumps([{"role": "user", "content": "café <b> & ü"}], ensure_ascii=False)
    assert "\\u" not in plain and "<b>" in plain  # no ASCII escaping, no HTML escaping
    assert indented == json.dumps({"k": [1, 2]}, indent=2)


def test_variables_and_helpers() -> None:
    tpl = ChatTemplate(
        "{{ bos_token }}[{{ add_generation_prompt }}]{{ strftime_now('%Y') }}{{ eos_token }}", "<s>", "</s>"
    )
    year = datetime.now().year
    assert tpl.render([], add_generation_prompt=False) in {f"<s>[False]{y}</s>" for y in (year, year + 1)}


def test_undefined_names_are_lenient_like_hugging_face() -> None:
    # Templates routinely test optional variables such as `tools` without them being passed.
    assert ChatTemplate("{% if tools %}T{% endif %}ok").render([]) == "ok"
    assert ChatTemplate("{% if tools %}T{% endif %}ok").render([], extra={"tools": [1]}) == "Tok"


def test_loop_controls_and_generation_block() -> None:
    template = (
        "{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}"
        "{% generation %}{{ m.role }};{% endgeneration %}{% endfor %}"
    )
    assert ChatTemplate(template).render(HISTORY) == "system;user;"


def test_compiled_once_per_source() -> None:
    source = "{{ messages | length }} messages"
    first, second = ChatTemplate(source), ChatTemplate(source)
    assert first._template is second._template
    assert first.render(HISTORY) == "4 messages"


# --------------------------------------------------------------------------- errors and the sandbox


def test_raise_exception_surfaces_message() -> None:
    tpl = ChatTemplate(
        "{% if messages[0].role != 'user' %}{{ raise_exception('First message must be from the user') }}{% endif %}"
    )
    with pytest.raises(ChatTemplateError) as info:
        tpl.render(HISTORY)
    assert "First message must be from the user" in str(info.value)
    assert info.value.detail == "First message must be from the user"


def test_syntax_error() -> None:
    with pytest.raises(ChatTemplateError) as info:
        ChatTemplate("{% for message in messages %}{{ message.content }")
    message = str(info.value)
    assert message.startswith("the model's chat template") and "syntax error" in message
    assert "\n" not in message


def test_undefined_used_wrongly() -> None:
    with pytest.raises(ChatTemplateError, match="undefined"):
        ChatTemplate("{{ nothing.here }}").render(HISTORY)


def test_other_runtime_error_becomes_chat_template_error() -> None:
    with pytest.raises(ChatTemplateError, match="the model's chat template failed"):
        ChatTemplate("{{ 1 + 'a' }}").render(HISTORY)


def _hostile_templates(marker: Path) -> list[str]:
    touch = f"touch {marker}"
    return [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        f"{{{{ cycler.__init__.__globals__.os.system('{touch}') }}}}",
        f"{{{{ joiner.__init__.__globals__['os'].popen('{touch}').read() }}}}",
        f"{{{{ lipsum.__globals__['os'].system('{touch}') }}}}",
        "{{ self._TemplateReference__context }}",
        f"{{{{ self._TemplateReference__context.cycler.__init__.__globals__.os.system('{touch}') }}}}",
        f"{{{{ namespace.__init__.__globals__['__builtins__']['__import__']('os').system('{touch}') }}}}",
        "{{ raise_exception.__globals__ }}",
        "{{ '{0.__class__.__base__}'.format(1) }}",
        "{{ messages.append({'role': 'user', 'content': 'injected'}) }}",
        "{% include '/etc/passwd' %}",
        "{% import 'os' as os %}",
        "{{ 'x' * 100000000 }}",
        "{{ 10 ** 10000000 }}",
        "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    ]


def test_hostile_templates_are_refused_and_never_execute(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for template in _hostile_templates(marker):
        with pytest.raises(ChatTemplateError) as info:
            ChatTemplate(template).render(HISTORY)
        assert str(info.value).startswith("the model's chat template"), template
        assert "\n" not in str(info.value), template
    assert not marker.exists()


def test_sandbox_violation_is_reported_as_such() -> None:
    with pytest.raises(ChatTemplateError, match="sandbox.*__class__"):
        ChatTemplate("{{ ''.__class__ }}").render([])


def test_immutable_history_is_not_modified() -> None:
    messages = [{"role": "user", "content": "Hi"}]
    with pytest.raises(ChatTemplateError):
        ChatTemplate("{% set _ = messages[0].update({'content': 'changed'}) %}").render(messages)
    assert messages == [{"role": "user", "content": "Hi"}]

"""Render a model's own chat template (the Jinja string stored in GGUF metadata).

GGUF files carry the Hugging Face chat template of the model under ``tokenizer.chat_template``.
That template is untrusted input: it comes with a downloaded file. It is therefore rendered in
jinja2's :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment`, with these extra rules:

* touching an unsafe attribute (anything starting with ``_``, function internals, ...) is an
  error instead of a silent empty string, so ``{{ ''.__class__.__mro__ }}`` fails loudly;
* there is no template loader, so ``{% import %}`` / ``{% include %}`` cannot reach any file;
* string/list repetition and ``**`` are capped so a template cannot allocate gigabytes.

The environment mirrors what Hugging Face templates expect: ``trim_blocks`` and
``lstrip_blocks``, the ``loopcontrols`` extension (``{% break %}``), a no-op
``{% generation %}`` block, ``raise_exception(msg)``, ``strftime_now(fmt)`` and a ``tojson``
filter that does not escape non-ASCII text and accepts ``indent``. The variables ``messages``,
``add_generation_prompt``, ``bos_token`` and ``eos_token`` are always defined.

Every failure (syntax error, a misused undefined value, a sandbox violation, a template that
calls ``raise_exception``) becomes a :class:`ChatTemplateError` whose message is one line.

When a model ships no template, a documented fallback is used: :data:`CHATML_TEMPLATE`, or
:data:`GEMMA_TEMPLATE` when the caller says the model is a Gemma model (llama.cpp's own
behaviour for Gemma files without a template is the same turn format).

Note that the rendered text may start with ``bos_token`` (many templates emit it); whoever
tokenizes the prompt must then not add a second BOS.
"""

from __future__ import annotations

import functools
import json
import operator
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from app.engine.errors import error_message, one_line

__all__ = [
    "CHATML_TEMPLATE",
    "GEMMA_TEMPLATE",
    "ChatTemplate",
    "ChatTemplateError",
    "Message",
    "fallback_template",
]

#: Fallback for models without a template: ChatML, as used by SmolLM2, Qwen and many others.
#: ``<|im_start|>{role}\n{content}<|im_end|>\n`` per message, then ``<|im_start|>assistant\n``
#: when a generation prompt is requested. No BOS is emitted.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

#: Fallback for Gemma models without a template: ``bos_token``, then
#: ``<start_of_turn>{user|model}\n{content}<end_of_turn>\n`` per turn, with a system message
#: folded into the first user turn (Gemma has no system role) and ``assistant`` named ``model``;
#: the generation prompt is ``<start_of_turn>model\n``.
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% set ns = namespace(system='') %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{% set ns.system = ns.system + message['content'] + '\\n\\n' %}"
    "{% else %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + ns.system + message['content'] + '<end_of_turn>\\n' }}"
    "{% set ns.system = '' %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)

# Limits that keep a hostile template from exhausting memory or CPU.
_MAX_REPEAT_LEN = 1_000_000  # longest string/list that `*` may build
_MAX_POWER_EXPONENT = 4096  # largest exponent that `**` accepts


class ChatTemplateError(Exception):
    """The model's chat template could not be compiled or rendered.

    ``str(error)`` is a single line suitable for the UI; :attr:`detail` holds the underlying
    message without the prefix.
    """

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail or message


@dataclass
class Message:
    """One turn of a conversation: ``role`` is ``system``, ``user`` or ``assistant``."""

    role: str
    content: str


def fallback_template(architecture: str | None = None) -> str:
    """Template used when a model has none: Gemma's turn format for Gemma models, else ChatML."""
    if architecture and architecture.lower().startswith("gemma"):
        return GEMMA_TEMPLATE
    return CHATML_TEMPLATE


# --------------------------------------------------------------------------- environment


class _TemplateRaised(Exception):
    """Raised by ``raise_exception`` inside a template; turned into ChatTemplateError."""


def _raise_exception(message: Any = "") -> None:
    raise _TemplateRaised(str(message))


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """Same output as the ``tojson`` filter Hugging Face installs (plain json.dumps, no HTML escaping)."""
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


class _GenerationBlock(Extension):
    """``{% generation %}...{% endgeneration %}`` (used by HF for assistant masks): renders its body."""

    tags = {"generation"}

    def parse(self, parser: Parser) -> list[nodes.Node]:
        next(parser.stream)  # the `generation` token
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


class _Sandbox(ImmutableSandboxedEnvironment):
    """Immutable sandbox that fails loudly on unsafe access and caps costly operators."""

    intercepted_binops = frozenset({"*", "**"})

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")

    def call_binop(self, context: jinja2.runtime.Context, op: str, left: Any, right: Any) -> Any:
        if op == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, str | bytes | list | tuple) and isinstance(count, int):
                    if len(seq) * count > _MAX_REPEAT_LEN:
                        raise SecurityError("repetition result is too large")
            return operator.mul(left, right)
        if op == "**":
            if isinstance(right, int) and abs(right) > _MAX_POWER_EXPONENT:
                raise SecurityError("exponent is too large")
            return operator.pow(left, right)
        return super().call_binop(context, op, left, right)


def _make_environment() -> _Sandbox:
    env = _Sandbox(
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        extensions=["jinja2.ext.loopcontrols", _GenerationBlock],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


_ENV = _make_environment()


@functools.lru_cache(maxsize=32)
def _compile(source: str) -> jinja2.Template:
    """Compile once per distinct template source (failures are not cached, and raise)."""
    try:
        return _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        detail = f"syntax error on line {exc.lineno}: {one_line(exc.message or '')}"
        raise ChatTemplateError(f"the model's chat template is invalid: {detail}", detail) from None
    except Exception as exc:  # noqa: BLE001 - untrusted input, any failure is the template's
        detail = error_message(exc)
        raise ChatTemplateError(f"the model's chat template is invalid: {detail}", detail) from None


# --------------------------------------------------------------------------- public class


class ChatTemplate:
    """A compiled chat template.

    ``template`` is the model's ``tokenizer.chat_template`` string; ``None`` or a blank
    string selects :func:`fallback_template` for ``architecture`` (ChatML unless Gemma).
    ``bos_token`` / ``eos_token`` are the model's special tokens as text (e.g. ``"<bos>"``).
    The template is compiled here, so an invalid template raises :class:`ChatTemplateError`
    at construction.
    """

    def __init__(
        self,
        template: str | None,
        bos_token: str = "",
        eos_token: str = "",
        *,
        architecture: str | None = None,
    ) -> None:
        self.is_fallback = template is None or not template.strip()
        self.source: str = fallback_template(architecture) if self.is_fallback else str(template)
        self.bos_token = bos_token
        self.eos_token = eos_token
        self._template = _compile(self.source)

    def render(
        self,
        messages: Sequence[Message | Mapping[str, Any]],
        add_generation_prompt: bool = True,
        *,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """Render the conversation to prompt text.

        ``messages`` are :class:`Message` objects or mappings with at least ``role`` and
        ``content``. ``extra`` adds template variables (e.g. ``tools``); it cannot override
        the standard ones.
        """
        variables: dict[str, Any] = dict(extra or {})
        variables.update(
            messages=[asdict(m) if isinstance(m, Message) else dict(m) for m in messages],
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )
        try:
            return self._template.render(**variables)
        except _TemplateRaised as exc:
            detail = one_line(str(exc))
            raise ChatTemplateError(
                f"the model's chat template rejected the conversation: {detail}", detail
            ) from None
        except ChatTemplateError:
            raise
        except Exception as exc:  # noqa: BLE001 - untrusted input, any failure is the template's
            detail = one_line(exc)
            if isinstance(exc, SecurityError):
                detail = f"blocked by the sandbox: {detail}"
            raise ChatTemplateError(f"the model's chat template failed: {detail}", detail) from None

    def __repr__(self) -> str:
        kind = "fallback" if self.is_fallback else "model"
        return f"ChatTemplate({kind}, {len(self.source)} chars)"

"""The server's request bodies: parsed, type-checked and range-checked into one `CompletionParams`.

Every problem is an `ApiError` with an HTTP status and an OpenAI-style error object (`ApiError.body()`):
the message says which field and what was wrong. Ranges are the engine's own (`SamplingParams.validate`,
`SpecSettings.validate`); defaults are the engine's (`SamplingParams()`, `app.engine.defaults`).

Fields OpenAI clients send that Tandem does not implement are accepted only at their no-op value
(`frequency_penalty: 0`, `logprobs: false`, ...); a field nobody defines is refused, so a typo never passes
silently. Tandem's extension fields: `draft_model` (a model id, as in LM Studio), `draft_source`
("off" | "draft-model" | "history"), `draft_max`, `draft_min`, `draft_p_min`, `adaptive`, and the sampling
fields `top_k`, `min_p`, `repeat_penalty` (as in llama-server).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from app.engine import sources
from app.engine.defaults import MAX_TOKENS
from app.engine.sampling import SamplingParams
from app.engine.speculative import MAX_DRAFT_TOKENS, SpecSettings

__all__ = ["ApiError", "CompletionParams", "SpecChoice", "parse_json", "parse_chat", "parse_completion",
           "MAX_STOP_STRINGS", "MAX_MESSAGES"]

MAX_STOP_STRINGS = 4  # OpenAI's limit
MAX_STOP_CHARS = 256
MAX_MESSAGES = 4096
MAX_JSON_DEPTH = 32
ROLES = ("system", "user", "assistant")
SPEC_FIELDS = tuple(f.name for f in fields(SpecSettings))  # draft_max, draft_min, draft_p_min, adaptive


class ApiError(ValueError):
    """A request the server refuses: `status` (4xx/5xx), OpenAI's `type`, the `param` at fault, a `code`.
    (A ValueError: raised inside an engine request, it is an expected failure with a readable message.)"""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",  # noqa: A002
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _bad(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


@dataclass(frozen=True)
class SpecChoice:
    """The speculation a request asks for; None fields: not given (the model's remembered preset decides)."""

    source: str | None = None  # one of sources.DRAFT_SOURCES
    draft_model: str | None = None  # a model id (draft-model)
    settings: dict[str, Any] = field(default_factory=dict)  # SpecSettings fields given explicitly

    def given(self) -> bool:
        return self.source is not None or self.draft_model is not None or bool(self.settings)


@dataclass
class CompletionParams:
    model: str
    chat: bool
    messages: list[tuple[str, str]]  # (role, text) for chat
    prompt: str  # for completions
    stream: bool = False
    include_usage: bool = False
    max_tokens: int = MAX_TOKENS
    stop: list[str] = field(default_factory=list)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    spec: SpecChoice = field(default_factory=SpecChoice)


def _depth(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if d > limit:
            return False
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return True


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object; ApiError(400) for anything else (bad UTF-8, bad JSON, NaN, too deep)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("the request body is not UTF-8 text") from None
    if not text.strip():
        raise _bad("the request body is empty: send a JSON object")
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise _bad("the request body is nested too deeply") from None
    except ValueError as e:
        raise _bad(f"the request body is not valid JSON: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(value, dict):
        raise _bad(f"the request body must be a JSON object, not {_kind(value)}")
    if not _depth(value, MAX_JSON_DEPTH):
        raise _bad("the request body is nested too deeply")
    return value


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    return "an object"


def _int(body: dict, name: str, lo: int, hi: int) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(f"'{name}' must be a whole number, not {_kind(v)}", name)
    if not (lo <= v <= hi):
        raise _bad(f"'{name}' must be between {lo} and {hi}, got {v}", name)
    return v


def _float(body: dict, name: str) -> float | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _bad(f"'{name}' must be a number, not {_kind(v)}", name)
    v = float(v)
    if not math.isfinite(v):
        raise _bad(f"'{name}' must be a finite number", name)
    return v


def _bool(body: dict, name: str) -> bool | None:
    v = body.get(name)
    if v is None:
        return None
    if not isinstance(v, bool):
        raise _bad(f"'{name}' must be true or false, not {_kind(v)}", name)
    return v


def _str(body: dict, name: str, required: bool = False) -> str | None:
    v = body.get(name)
    if v is None:
        if required:
            raise _bad(f"'{name}' is required", name, "missing_field")
        return None
    if not isinstance(v, str):
        raise _bad(f"'{name}' must be a string, not {_kind(v)}", name)
    return v


# fields clients send that are accepted when they ask for nothing Tandem would have to do differently
_NO_OP = {
    "frequency_penalty": lambda v: v in (None, 0, 0.0),
    "presence_penalty": lambda v: v in (None, 0, 0.0),
    "logit_bias": lambda v: v in (None, {}),
    "logprobs": lambda v: v in (None, False),
    "top_logprobs": lambda v: v in (None, 0),
    "tools": lambda v: v in (None, []),
    "tool_choice": lambda v: v in (None, "none", "auto"),
    "parallel_tool_calls": lambda v: v is None or isinstance(v, bool),
    "response_format": lambda v: v is None or v == {"type": "text"},
    "user": lambda v: v is None or isinstance(v, str),
    "metadata": lambda v: v is None or isinstance(v, dict),
    "store": lambda v: v in (None, False),
    "echo": lambda v: v in (None, False),
    "best_of": lambda v: v in (None, 1),
    "suffix": lambda v: v in (None, ""),
}
_COMMON = {"model", "stream", "stream_options", "max_tokens", "stop", "temperature", "top_p", "seed", "n",
           "top_k", "min_p", "repeat_penalty", "draft_model", "draft_source", *SPEC_FIELDS}
_CHAT = _COMMON | {"messages", "max_completion_tokens"}
_COMPLETION = _COMMON | {"prompt"}


def _check_fields(body: dict, known: set[str]) -> None:
    for name, value in body.items():
        if name in known:
            continue
        ok = _NO_OP.get(name)
        if ok is None:
            raise _bad(f"unknown field '{name}'", name, "unknown_field")
        if not ok(value):
            raise _bad(f"'{name}' is not supported by this server (leave it out or at its default)", name,
                       "unsupported_field")


def _content(v: Any, where: str) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, list):  # [{"type": "text", "text": "..."}]
        parts = []
        for i, part in enumerate(v):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise _bad(f"{where}.content[{i}] must be a text part ({{\"type\": \"text\", \"text\": ...}}): "
                           "images and audio are not supported", "messages")
            parts.append(part["text"])
        return "".join(parts)
    raise _bad(f"{where}.content must be a string or a list of text parts, not {_kind(v)}", "messages")


def _messages(body: dict) -> list[tuple[str, str]]:
    v = body.get("messages")
    if v is None:
        raise _bad("'messages' is required", "messages", "missing_field")
    if not isinstance(v, list):
        raise _bad(f"'messages' must be an array, not {_kind(v)}", "messages")
    if not v:
        raise _bad("'messages' must hold at least one message", "messages")
    if len(v) > MAX_MESSAGES:
        raise _bad(f"'messages' holds more than {MAX_MESSAGES} messages", "messages")
    out = []
    for i, m in enumerate(v):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise _bad(f"{where} must be an object, not {_kind(m)}", "messages")
        role = m.get("role")
        if role == "developer":
            role = "system"
        if role not in ROLES:
            raise _bad(f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}"[:300], "messages")
        out.append((role, _content(m.get("content"), where)))
    if out[-1][0] != "user":
        raise _bad("the last message must be the user's", "messages")
    return out


def _stop(body: dict) -> list[str]:
    v = body.get("stop")
    if v is None:
        return []
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise _bad("'stop' must be a string or an array of strings", "stop")
    if len(items) > MAX_STOP_STRINGS:
        raise _bad(f"'stop' holds at most {MAX_STOP_STRINGS} strings, got {len(items)}", "stop")
    if any(len(s) > MAX_STOP_CHARS for s in items):
        raise _bad(f"a stop string is at most {MAX_STOP_CHARS} characters", "stop")
    return [s for s in items if s]


def _spec(body: dict) -> SpecChoice:
    source = _str(body, "draft_source")
    if source is not None:
        try:
            source = sources.normalize_source(source)
        except ValueError as e:
            raise _bad(f"'draft_source': {e}", "draft_source") from None
    draft_model = _str(body, "draft_model")
    if draft_model is not None and source not in (None, sources.DRAFT_MODEL):
        raise _bad(f"'draft_model' needs draft_source \"{sources.DRAFT_MODEL}\", not {source!r}", "draft_model")
    if source == sources.DRAFT_MODEL and draft_model is None:
        raise _bad(f"draft_source \"{sources.DRAFT_MODEL}\" needs 'draft_model' (a model id)", "draft_model")
    given: dict[str, Any] = {}
    for name in ("draft_max", "draft_min"):
        v = _int(body, name, 0 if name == "draft_min" else 1, MAX_DRAFT_TOKENS)
        if v is not None:
            given[name] = v
    p_min = _float(body, "draft_p_min")
    if p_min is not None:
        given["draft_p_min"] = p_min
    adaptive = _bool(body, "adaptive")
    if adaptive is not None:
        given["adaptive"] = adaptive
    if given:
        try:
            replace(SpecSettings(draft_max=MAX_DRAFT_TOKENS), **given).validate()
        except ValueError as e:
            raise _bad(str(e), next(iter(given))) from None
        if given.get("draft_min", 0) > given.get("draft_max", MAX_DRAFT_TOKENS):
            raise _bad(f"'draft_min' ({given['draft_min']}) is larger than 'draft_max' ({given['draft_max']})",
                       "draft_min")
    return SpecChoice(source, draft_model, given)


def _sampling(body: dict) -> SamplingParams:
    s = SamplingParams()
    changes: dict[str, Any] = {}
    for name in ("temperature", "top_p", "min_p", "repeat_penalty"):
        v = _float(body, name)
        if v is not None:
            changes[name] = v
    top_k = _int(body, "top_k", 0, 1_000_000)
    if top_k is not None:
        changes["top_k"] = top_k
    seed = _int(body, "seed", -(2**63), 2**63 - 1)
    if seed is not None:
        changes["seed"] = seed % 2**32  # OpenAI's seeds are 64-bit; the sampler's are 32-bit
    s = replace(s, **changes)
    try:
        s.validate()
    except ValueError as e:
        raise _bad(str(e), next((k for k in changes if k.replace("_", "-") in str(e) or k in str(e)), None)) from None
    return s


def _common(body: dict, chat: bool, known: set[str]) -> dict[str, Any]:
    _check_fields(body, known)
    model = _str(body, "model", required=True)
    if not model.strip():
        raise _bad("'model' must name a model (GET /v1/models lists them)", "model", "missing_field")
    n = _int(body, "n", 1, 1_000_000)
    if n not in (None, 1):
        raise _bad("only n=1 is supported", "n")
    stream = bool(_bool(body, "stream"))
    opts = body.get("stream_options")
    include_usage = False
    if opts is not None:
        if not isinstance(opts, dict) or set(opts) - {"include_usage"}:
            raise _bad("'stream_options' must be an object with 'include_usage'", "stream_options")
        include_usage = bool(_bool(opts, "include_usage"))
        if not stream:
            raise _bad("'stream_options' is only allowed with stream: true", "stream_options")
    name = "max_completion_tokens" if chat and body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _int(body, name, 1, 1_048_576)
    return {"model": model, "chat": chat, "stream": stream, "include_usage": include_usage,
            "max_tokens": max_tokens if max_tokens is not None else MAX_TOKENS, "stop": _stop(body),
            "sampling": _sampling(body), "spec": _spec(body)}


def parse_chat(body: dict[str, Any]) -> CompletionParams:
    common = _common(body, True, _CHAT)
    return CompletionParams(messages=_messages(body), prompt="", **common)


def parse_completion(body: dict[str, Any]) -> CompletionParams:
    common = _common(body, False, _COMPLETION)
    v = body.get("prompt")
    if isinstance(v, list) and len(v) == 1 and isinstance(v[0], str):
        v = v[0]
    if v is None:
        raise _bad("'prompt' is required", "prompt", "missing_field")
    if not isinstance(v, str):
        raise _bad("'prompt' must be a string (one prompt per request)", "prompt")
    if not v:
        raise _bad("'prompt' is empty", "prompt")
    return CompletionParams(messages=[], prompt=v, **common)

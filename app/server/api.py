"""The OpenAI-compatible HTTP API (Starlette), a client of the engine service like the chat window.

Routes: ``GET /health``, ``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/chat/completions``,
``POST /v1/completions``. A completion is one request on the `EngineService` queue ("server"): the models
load just in time (`ServedModels`), the reply streams as server-sent events (``stream: true``) or comes
back whole. Every answer that is not a success is an OpenAI error object with the right status; nothing
a client sends crashes the server. A POST must send ``Content-Type: application/json`` (else 415): a web
page can send a "simple" POST (text/plain, a form) to any port without asking, but not JSON without CORS.
Requests addressed to another site's name are refused before they reach an endpoint, and an internal
error is a generic 500 (app.server.guard). A client that goes away cancels its request: a queued one
leaves the queue at once, a running one stops within one decoding round.

Speculation statistics come in both shapes clients know: LM Studio's ``stats`` (tokens/s, time to first
token, ``accepted_draft_tokens_count`` / ``rejected_…`` / ``total_…``) and llama-server's ``timings``
(``draft_n``, ``draft_n_accepted``, ``predicted_per_second``, ...).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from app.engine.chat_template import ChatTemplateError, Message
from app.engine.llama_backend import EngineError
from app.engine.session import ChatSession
from app.engine.speculative import GenerationResult, GenerationStats
from app.engine.units import format_acceptance
from app.server import schema
from app.server.config import MAX_BODY_BYTES
from app.server.guard import ServerGuard
from app.server.models import ModelCatalog, ServedModels
from app.server.schema import ApiError, CompletionParams
from app.service.app_requests import FRAME_SECONDS
from app.service.engine_service import (
    CANCELLED,
    DONE,
    FAILED,
    SERVER,
    SERVER_SWEEP,
    EngineService,
    Event,
    JobContext,
    QueueFull,
    RequestCancelled,
)

__all__ = ["ServerSettings", "RequestRecord", "create_app", "JSON_TYPE"]

JSON_TYPE = "application/json"  # the only body a POST may send (a web page cannot send it without CORS)
_FINISH = {"eos": "stop", "stop_string": "stop", "max_tokens": "length", "context_full": "length",
           "cancelled": "stop"}
_LMS_STOP = {"eos": "eosFound", "stop_string": "stopStringFound", "max_tokens": "maxPredictedTokensReached",
             "context_full": "contextLengthReached", "cancelled": "userStopped"}


@dataclass(frozen=True)
class ServerSettings:
    api_key: str | None = None  # required as "Authorization: Bearer <key>" on /v1/* when set
    cors_origins: tuple[str, ...] = ()  # () = no CORS headers at all
    max_body_bytes: int = MAX_BODY_BYTES
    sweep_seconds: float = 1.0  # how often the idle TTL is checked
    # the Host names a request may be addressed to (app.server.guard); None: any (off loopback)
    allowed_hosts: tuple[str, ...] | None = None


@dataclass(frozen=True)
class RequestRecord:
    """One line of the request log (the Server page shows them)."""

    time: float
    method: str
    path: str
    status: int
    model: str = ""
    outcome: str = ""  # done / failed / cancelled, or "" for requests that did not reach the engine
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_per_second: float = 0.0
    time_to_first_token: float = 0.0
    drafted: int = 0
    accepted: int = 0
    message: str = ""

    def summary(self) -> str:
        """One line for a log: what was asked, how it ended, how fast, how much of the drafting was accepted."""
        parts = [f"{self.method} {self.path} {self.status}"]
        if self.model:
            parts.append(self.model)
        if self.completion_tokens:
            parts.append(f"{self.completion_tokens} tokens · {self.tokens_per_second:.1f} tok/s · "
                         f"{self.time_to_first_token:.2f} s to first token")
        if self.drafted:
            parts.append(format_acceptance(self.accepted, self.drafted))
        if self.outcome and self.outcome != DONE:
            parts.append(self.outcome)
        if self.message:
            parts.append(self.message)
        return " · ".join(parts)


def _error(e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


def usage(stats: GenerationStats) -> dict[str, Any]:
    return {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.generated_tokens,
            "total_tokens": stats.prompt_tokens + stats.generated_tokens,
            "prompt_tokens_details": {"cached_tokens": stats.cached_prompt_tokens}}


def lmstudio_stats(stats: GenerationStats, draft_model: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "tokens_per_second": round(stats.decode_tokens_per_second, 3),
        "time_to_first_token": round(stats.time_to_first_token, 4),
        "generation_time": round(stats.total_seconds, 4),
        "stop_reason": _LMS_STOP.get(stats.stop_reason, stats.stop_reason),
    }
    if stats.drafted or draft_model or stats.proposer != GenerationStats.proposer:
        out.update({"draft_model": draft_model, "total_draft_tokens_count": stats.drafted,
                    "accepted_draft_tokens_count": stats.accepted, "rejected_draft_tokens_count": stats.rejected,
                    "ignored_draft_tokens_count": 0})
    return out


def llama_timings(stats: GenerationStats) -> dict[str, Any]:
    prompt_ms = stats.prompt_seconds * 1000.0
    predicted_ms = (stats.total_seconds - stats.prompt_seconds) * 1000.0
    n_prompt = max(0, stats.prompt_tokens - stats.cached_prompt_tokens)
    return {
        "cache_n": stats.cached_prompt_tokens, "prompt_n": n_prompt, "prompt_ms": round(prompt_ms, 3),
        "prompt_per_token_ms": round(prompt_ms / n_prompt, 3) if n_prompt else 0.0,
        "prompt_per_second": round(stats.prompt_tokens_per_second, 3),
        "predicted_n": stats.generated_tokens, "predicted_ms": round(predicted_ms, 3),
        "predicted_per_token_ms": round(predicted_ms / stats.generated_tokens, 3) if stats.generated_tokens else 0.0,
        "predicted_per_second": round(stats.decode_tokens_per_second, 3),
        "draft_n": stats.drafted, "draft_n_accepted": stats.accepted,
    }


class _Channel:
    """The events of one request, handed from the worker thread to the server's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.api_error: ApiError | None = None
        self.draft_model: str | None = None  # the id of the draft model drafting for it (set before "ready")

    def put(self, kind: str, value: Any = None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, value))
        except RuntimeError:  # the loop is closed: the server stopped, nobody is listening
            pass

    def on_event(self, event: Event) -> None:
        if event.kind in (DONE, FAILED, CANCELLED):
            self.put("end", (event.kind, event.data[0]))
        elif event.kind in ("ready", "piece", "queued"):
            self.put(event.kind, event.data[0] if event.data else None)


def create_app(service: EngineService, catalog: ModelCatalog, served: ServedModels,
               settings: ServerSettings = ServerSettings(),
               on_record: Callable[[RequestRecord], None] | None = None) -> Starlette:
    """The Starlette app for `service`; `on_record` gets one RequestRecord per request (server thread)."""

    def record_line(method: str, path: str, status: int, **kw: Any) -> None:
        if on_record is not None:
            try:
                on_record(RequestRecord(time.time(), method, path, status, **kw))
            except Exception:  # noqa: BLE001 - a log listener must not break a request
                pass

    def record(request: Request, status: int, **kw: Any) -> None:
        record_line(request.method, request.url.path, status, **kw)

    def authorized(request: Request) -> bool:
        if not settings.api_key:
            return True
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), settings.api_key.encode())

    def refuse_unauthorized(request: Request) -> JSONResponse | None:
        if authorized(request):
            return None
        e = ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", code="invalid_api_key")
        record(request, 401, message=e.message)
        return _error(e)

    async def body_of(request: Request) -> dict[str, Any]:
        given_type = request.headers.get("content-type", "")
        if given_type.partition(";")[0].strip().lower() != JSON_TYPE:
            got = f"got {given_type[:100]!r}" if given_type else "no Content-Type was sent"
            raise ApiError(415, f"send the body as JSON with 'Content-Type: {JSON_TYPE}' ({got})",
                           code="unsupported_media_type")
        limit = settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise ApiError(400, "the Content-Length header is not a number") from None
            if size > limit:
                raise ApiError(413, f"the request body is larger than {limit} bytes", code="body_too_large")
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise ApiError(413, f"the request body is larger than {limit} bytes", code="body_too_large")
            chunks.append(chunk)
        return schema.parse_json(b"".join(chunks))

    # -- routes ---------------------------------------------------------------------------------------
    async def health(request: Request) -> Response:
        running = service.running
        return JSONResponse({"status": "ok", "queue_depth": service.queue_depth,
                             "running": running.kind if running is not None else None,
                             "loaded": served.loaded_ids()})

    def model_entry(mid: str, m, loaded: list[str]) -> dict[str, Any]:
        return {"id": mid, "object": "model", "created": 0, "owned_by": mid.split("/")[0] if "/" in mid else "local",
                "type": "llm", "arch": m.architecture, "quantization": m.quantization,
                "max_context_length": m.context_length, "state": "loaded" if mid in loaded else "not-loaded"}

    async def list_models(request: Request) -> Response:
        if (refused := refuse_unauthorized(request)) is not None:
            return refused
        await asyncio.to_thread(catalog.refresh)
        loaded = served.loaded_ids()
        return JSONResponse({"object": "list", "data": [model_entry(mid, m, loaded) for mid, m in catalog.models()]})

    async def get_model(request: Request) -> Response:
        if (refused := refuse_unauthorized(request)) is not None:
            return refused
        mid = request.path_params["model_id"]
        m = await asyncio.to_thread(catalog.get, mid)
        if m is None:
            return _error(ApiError(404, f"model '{mid}' is not in the library", param="model", code="model_not_found"))
        return JSONResponse(model_entry(catalog.id_of(m.path) or mid, m, served.loaded_ids()))

    async def chat_completions(request: Request) -> Response:
        return await complete(request, schema.parse_chat)

    async def completions(request: Request) -> Response:
        return await complete(request, schema.parse_completion)

    async def complete(request: Request, parse: Callable[[dict], CompletionParams]) -> Response:
        if (refused := refuse_unauthorized(request)) is not None:
            return refused
        try:
            params = parse(await body_of(request))
            model = await asyncio.to_thread(catalog.get, params.model)
            if model is None:
                raise ApiError(404, f"model '{params.model}' is not in the library (GET /v1/models lists them)",
                               param="model", code="model_not_found")
            if params.spec.draft_model is not None and await asyncio.to_thread(catalog.get, params.spec.draft_model) is None:
                raise ApiError(404, f"draft model '{params.spec.draft_model}' is not in the library",
                               param="draft_model", code="model_not_found")
            model_id = catalog.id_of(model.path) or params.model
            channel = _Channel(asyncio.get_running_loop())
            try:
                ticket = service.submit(SERVER, _job(served, params, model, model_id, channel),
                                        label=f"{request.url.path} {model_id}", on_event=channel.on_event,
                                        bounded=True)
            except QueueFull as e:
                raise ApiError(503, str(e), type="server_error", code="queue_full") from None
        except ApiError as e:
            record(request, e.status, message=e.message)
            return _error(e)
        try:
            first = await _first(channel, request)
        except asyncio.CancelledError:
            service.cancel(ticket)
            raise
        if first is None:  # the client went away while the request waited
            service.cancel(ticket)
            record(request, 499, model=model_id, outcome=CANCELLED, message="client disconnected")
            return Response(status_code=499)
        kind, value = first
        if kind == "end":
            return ended_early(request, channel, model_id, value)
        created = int(time.time())
        rid = ("chatcmpl-" if params.chat else "cmpl-") + uuid.uuid4().hex[:24]
        if params.stream:
            return StreamingResponse(stream(request, channel, ticket, params, model_id, rid, created),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await whole(request, channel, ticket, params, model_id, rid, created)

    def ended_early(request: Request, channel: _Channel, model_id: str, value: tuple[str, Any]) -> Response:
        outcome, detail = value
        if channel.api_error is not None:
            e = channel.api_error
        elif outcome == FAILED:
            e = ApiError(500, str(detail), type="server_error")
        else:
            e = ApiError(503, "the request was cancelled before it started (the server is stopping)",
                         type="server_error", code="cancelled")
        record(request, e.status, model=model_id, outcome=outcome, message=e.message)
        return _error(e)

    async def whole(request: Request, channel: _Channel, ticket, params: CompletionParams, model_id: str,
                    rid: str, created: int) -> Response:
        try:
            while True:
                item = await _next(channel, request)
                if item is None:
                    service.cancel(ticket)
                    record(request, 499, model=model_id, outcome=CANCELLED, message="client disconnected")
                    return Response(status_code=499)
                if item[0] == "end":
                    break
        except asyncio.CancelledError:
            service.cancel(ticket)
            raise
        outcome, value = item[1]
        if outcome == FAILED or not isinstance(value, GenerationResult):
            e = channel.api_error or ApiError(500, str(value) if outcome == FAILED else "the request was cancelled",
                                              type="server_error")
            record(request, e.status, model=model_id, outcome=outcome, message=e.message)
            return _error(e)
        result: GenerationResult = value
        stats = result.stats
        finish = _FINISH.get(stats.stop_reason, "stop")
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
        if params.chat:
            choice["message"] = {"role": "assistant", "content": result.text}
        else:
            choice["text"] = result.text
        body = {"id": rid, "object": "chat.completion" if params.chat else "text_completion", "created": created,
                "model": model_id, "choices": [choice], "usage": usage(stats),
                "stats": lmstudio_stats(stats, channel.draft_model), "timings": llama_timings(stats),
                "system_fingerprint": "tandem"}
        _record_result(request, model_id, outcome, stats)
        return JSONResponse(body)

    def _record_result(request: Request, model_id: str, outcome: str, stats: GenerationStats,
                       status: int = 200) -> None:
        record(request, status, model=model_id, outcome=outcome, prompt_tokens=stats.prompt_tokens,
               completion_tokens=stats.generated_tokens, tokens_per_second=stats.decode_tokens_per_second,
               time_to_first_token=stats.time_to_first_token, drafted=stats.drafted, accepted=stats.accepted)

    async def stream(request: Request, channel: _Channel, ticket, params: CompletionParams, model_id: str,
                     rid: str, created: int) -> AsyncIterator[bytes]:
        obj = "chat.completion.chunk" if params.chat else "text_completion"

        def chunk(delta_text: str | None, finish: str | None = None, first: bool = False, **extra: Any) -> bytes:
            if params.chat:
                delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
                if delta_text is not None:
                    delta["content"] = delta_text
                choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            else:
                choice = {"index": 0, "text": delta_text or "", "finish_reason": finish, "logprobs": None}
            data = {"id": rid, "object": obj, "created": created, "model": model_id, "choices": [choice],
                    "system_fingerprint": "tandem", **extra}
            if params.include_usage:  # OpenAI: every chunk before the usage chunk says "usage": null
                data["usage"] = None
            return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()

        done = False
        try:
            if params.chat:
                yield chunk(None, first=True)
            while True:
                kind, value = await channel.queue.get()
                if kind == "piece":
                    yield chunk(value)
                elif kind == "end":
                    break
            outcome, value = value
            done = True
            if outcome == FAILED or not isinstance(value, GenerationResult):
                e = channel.api_error or ApiError(500, str(value) if outcome == FAILED else "the request was cancelled",
                                                  type="server_error")
                record(request, 200, model=model_id, outcome=outcome, message=e.message)
                yield f"data: {json.dumps(e.body(), ensure_ascii=False)}\n\n".encode()
            else:
                stats = value.stats
                yield chunk(None, _FINISH.get(stats.stop_reason, "stop"),
                            stats=lmstudio_stats(stats, channel.draft_model), timings=llama_timings(stats))
                if params.include_usage:
                    data = {"id": rid, "object": obj, "created": created, "model": model_id, "choices": [],
                            "usage": usage(stats), "system_fingerprint": "tandem"}
                    yield f"data: {json.dumps(data)}\n\n".encode()
                _record_result(request, model_id, outcome, stats)
            yield b"data: [DONE]\n\n"
        finally:
            if not done:  # the client went away (or the server stops): stop generating for it
                service.cancel(ticket)
                record(request, 499, model=model_id, outcome=CANCELLED, message="client disconnected")

    # -- the idle TTL ---------------------------------------------------------------------------------
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async def sweeper() -> None:
            pending = None
            while True:
                await asyncio.sleep(settings.sweep_seconds)
                if (pending is None or pending.ended) and served.expired():
                    pending = service.submit(SERVER_SWEEP, served.sweep, label="unload idle models")

        task = asyncio.create_task(sweeper())
        try:
            yield
        finally:
            task.cancel()

    async def not_found(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 405:
            e = ApiError(405, f"{request.method} is not allowed on {request.url.path}")
        elif exc.status_code == 404:
            e = ApiError(404, f"no such endpoint: {request.method} {request.url.path}", code="not_found")
        else:
            e = ApiError(exc.status_code, str(exc.detail))
        record(request, e.status, message=e.message)
        return _error(e)

    # the guard is outermost: a Host naming another site is refused first, and an internal error ends
    # as a generic 500 and one log line (app.server.guard)
    middleware = [Middleware(ServerGuard, allowed_hosts=settings.allowed_hosts,
                             on_refused=lambda method, path, status, message: record_line(
                                 method, path, status, message=message))]
    if settings.cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                                     allow_methods=["GET", "POST", "OPTIONS"],
                                     allow_headers=["Authorization", "Content-Type"]))
    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
    ]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                     exception_handlers={HTTPException: not_found})


async def _next(channel: _Channel, request: Request) -> tuple[str, Any] | None:
    """The request's next event, or None when the client disconnected meanwhile."""
    while True:
        try:
            return await asyncio.wait_for(channel.queue.get(), timeout=0.25)
        except TimeoutError:
            if await request.is_disconnected():
                return None


async def _first(channel: _Channel, request: Request) -> tuple[str, Any] | None:
    """Wait until the request is generating ("ready") or ended; None: the client went away meanwhile."""
    while True:
        item = await _next(channel, request)
        if item is None or item[0] in ("ready", "end"):
            return item


def _job(served: ServedModels, params: CompletionParams, model, model_id: str, channel: _Channel):
    """The request's function on the worker: load what it needs, check the prompt, generate."""

    def job(ctx: JobContext) -> GenerationResult:
        try:
            spec = served.speculation(model, params.spec)
            engine = served.prepare(ctx, model, model_id, spec)
        except ApiError as e:
            channel.api_error = e
            raise
        try:  # the model counts as used until the reply ends (the idle TTL starts then)
            return reply(ctx, engine, served.draft_id(spec))
        finally:
            served.used(model)

    def reply(ctx: JobContext, engine, draft_id: str | None) -> GenerationResult:
        try:
            if params.chat:
                chat = ChatSession(engine)
                chat.messages = [Message(role, text) for role, text in params.messages]
                try:
                    rendered = chat.render()
                except ChatTemplateError as e:  # the model's template refuses these messages
                    raise ApiError(400, str(e), param="messages") from None
                prompt = engine.tokenize_prompt(rendered, special=True)
            else:
                prompt = engine.tokenize_prompt(params.prompt)
            n_ctx = engine.n_ctx
            if len(prompt) >= n_ctx:
                raise ApiError(400, f"the prompt is {len(prompt)} tokens: longer than the context ({n_ctx} tokens)",
                               param="messages" if params.chat else "prompt", code="context_length_exceeded")
        except ApiError as e:
            channel.api_error = e
            raise
        except EngineError as e:
            if "template" in str(e).lower():
                channel.api_error = ApiError(400, str(e))
            raise
        channel.draft_model = draft_id
        ctx.emit("ready", len(prompt))
        max_tokens = min(params.max_tokens, n_ctx - len(prompt))
        buffer: list[str] = []
        last = [0.0]

        def on_piece(piece) -> None:
            # coalesced like the app's stream: the first piece at once, then at most one hand-over per frame,
            # so the server's thread wakes (and takes the GIL from the decoding loop) ≤ 60 times a second
            buffer.append(piece.text)
            now = time.monotonic()
            if now - last[0] >= FRAME_SECONDS:
                last[0] = now
                ctx.emit("piece", "".join(buffer))
                buffer.clear()

        try:
            result = engine.generate(prompt, params.sampling, max_tokens=max_tokens, stop=params.stop,
                                     on_piece=on_piece, cancel=ctx.cancel)
        finally:
            if buffer:
                ctx.emit("piece", "".join(buffer))
        if result.stats.stop_reason == "cancelled":
            raise RequestCancelled(result)
        return result

    return job

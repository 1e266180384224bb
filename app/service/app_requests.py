"""The chat window's requests to the engine service: load, speculation, a reply, a benchmark. No Qt.

Each function queues one request on an `EngineService` for one engine slot (the app's by default) and
returns its `Ticket`. What a request emits while it runs:

* a reply ("chat"): "pieces" (a list of `Piece`, coalesced to at most one batch per `FRAME_SECONDS`) and
  "live" (decode tok/s so far, accepted, drafted; at most 4 a second); it ends DONE with the
  `GenerationResult`, or CANCELLED with the partial result (None when it was stopped before it started:
  `stopped_before_start()` is that reply);
* a load ("load-target" / "load-draft"): "load_progress" (fraction); DONE with the `ModelInfo`;
* a benchmark ("benchmark"): "bench_progress" (≤ 10 a second); DONE with the `BenchReport` (also a
  cancelled one: it still holds what was measured).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace

from app.engine import bench, sources
from app.engine.chat_template import Message
from app.engine.defaults import MAX_TOKENS
from app.engine.llama_backend import EngineError, default_threads
from app.engine.sampling import SamplingParams
from app.engine.session import ChatSession, ModelSettings, WorkerLost
from app.engine.speculative import GenerationResult, GenerationStats, Piece, RoundInfo, SpecSettings
from app.service.engine_service import APP_SLOT, EngineService, JobContext, RequestCancelled, Ticket

__all__ = ["GenerateRequest", "BenchRequest", "FRAME_SECONDS", "LIVE_SECONDS", "BENCH_PROGRESS_SECONDS",
           "CHAT", "APP_KINDS", "LOAD_TARGET", "LOAD_DRAFT", "USE_HISTORY", "DISABLE_SPECULATION", "SET_SPEC", "UNLOAD",
           "SET_HISTORY", "CLEAR_HISTORY", "BENCHMARK", "load_target", "load_draft", "use_history",
           "disable_speculation", "set_spec", "unload", "set_history_enabled", "clear_history", "generate",
           "run_benchmark", "stopped_before_start", "speculation_after"]

FRAME_SECONDS = 1.0 / 60.0  # coalescing window for streamed text
LIVE_SECONDS = 0.25  # live stats: at most 4 a second
BENCH_PROGRESS_SECONDS = 0.1  # benchmark progress: at most 10 updates a second

# request kinds
CHAT, BENCHMARK = "chat", "benchmark"
TARGET_LOST = "target_lost"  # event of a reply whose target lost a worker (the engine unloaded the target)
LOAD_TARGET, LOAD_DRAFT, UNLOAD = "load-target", "load-draft", "unload"
USE_HISTORY, DISABLE_SPECULATION, SET_SPEC = "use-history", "disable-speculation", "set-spec"
SET_HISTORY, CLEAR_HISTORY = "set-history", "clear-history"
APP_KINDS = frozenset({CHAT, BENCHMARK, LOAD_TARGET, LOAD_DRAFT, UNLOAD, USE_HISTORY, DISABLE_SPECULATION,
                       SET_SPEC, SET_HISTORY, CLEAR_HISTORY})  # every kind of request the chat window asks for


@dataclass
class GenerateRequest:
    """A reply to generate. `cancel` is its own stop switch: set it any time, also before the worker starts it."""

    messages: list[Message]
    system_prompt: str = ""
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int = MAX_TOKENS
    stop: list[str] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass
class BenchRequest:
    """A benchmark of the loaded target (see app.engine.bench), run by the worker with its engine.

    `options` describes the sweep (prompts, draft lengths, repeats, max tokens); the models, threads and
    context come from the loaded engine. `source`: None benchmarks the engine's current speculation;
    "history" or "draft-model" (with `draft`, the draft to load) sets that source up for the
    benchmark when speculation is off, and switches it off again afterwards. `autotune`: "quick" or
    "thorough" runs that mode's sweep (bench.autotune_options) and sets the report's preset.
    """

    options: bench.BenchOptions
    autotune: str | None = None
    source: str | None = None
    draft: ModelSettings | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


def stopped_before_start() -> GenerationResult:
    """The reply of a request stopped before it started: nothing generated, stopped."""
    return GenerationResult(text="", tokens=[], stats=GenerationStats(stop_reason="cancelled"))


def speculation_after(kind: str) -> str | None:
    """What drafts after a request of `kind` ended DONE (None: it does not change speculation)."""
    return {LOAD_TARGET: sources.OFF, LOAD_DRAFT: sources.DRAFT_MODEL, USE_HISTORY: sources.HISTORY,
            DISABLE_SPECULATION: sources.OFF}.get(kind)


def _load_progress(ctx: JobContext):
    last = [0.0]

    def cb(fraction: float) -> bool:
        now = time.monotonic()
        if fraction >= 1.0 or now - last[0] >= FRAME_SECONDS:
            last[0] = now
            ctx.emit("load_progress", fraction)
        return not ctx.cancel.is_set()

    return cb


def load_target(service: EngineService, settings: ModelSettings, slot: str = APP_SLOT) -> Ticket:
    return service.submit(LOAD_TARGET, lambda ctx: ctx.engine(slot).load_target(settings, progress=_load_progress(ctx)),
                          label=settings.path.name)


def load_draft(service: EngineService, settings: ModelSettings, slot: str = APP_SLOT) -> Ticket:
    def job(ctx: JobContext):
        engine = ctx.engine(slot)
        engine.load_draft(settings, progress=_load_progress(ctx))
        return engine.draft_info

    return service.submit(LOAD_DRAFT, job, label=settings.path.name)


def use_history(service: EngineService, slot: str = APP_SLOT) -> Ticket:
    return service.submit(USE_HISTORY, lambda ctx: ctx.engine(slot).use_history())


def disable_speculation(service: EngineService, slot: str = APP_SLOT) -> Ticket:
    return service.submit(DISABLE_SPECULATION, lambda ctx: ctx.engine(slot).disable_speculation())


def set_spec(service: EngineService, spec: SpecSettings, slot: str = APP_SLOT) -> Ticket:
    return service.submit(SET_SPEC, lambda ctx: ctx.engine(slot).set_spec(spec))


def unload(service: EngineService, slot: str = APP_SLOT) -> Ticket:
    return service.submit(UNLOAD, lambda ctx: ctx.engine(slot).unload())


def set_history_enabled(service: EngineService, enabled: bool) -> Ticket:
    """The privacy switch for drafting from past chats, for every engine (off: nothing read or written)."""
    return service.submit(SET_HISTORY, lambda ctx: ctx.set_history_enabled(enabled))


def clear_history(service: EngineService) -> Ticket:
    """Forget what the engines remember of past chats (in memory and on disk)."""
    return service.submit(CLEAR_HISTORY, lambda ctx: ctx.clear_history())


def generate(service: EngineService, request: GenerateRequest, slot: str = APP_SLOT, label: str = "chat") -> Ticket:
    """A reply to `request.messages` (which must end with a user message), streamed as "pieces" events."""

    def job(ctx: JobContext) -> GenerationResult:
        buffer: list[Piece] = []
        last_emit = [0.0]

        def on_piece(piece: Piece) -> None:
            if buffer and buffer[-1].from_draft == piece.from_draft:
                buffer[-1] = Piece(buffer[-1].text + piece.text, piece.from_draft)
            else:
                buffer.append(piece)
            now = time.monotonic()
            if now - last_emit[0] >= FRAME_SECONDS:
                last_emit[0] = now
                ctx.emit("pieces", list(buffer))
                buffer.clear()

        live = {"tokens": 0, "accepted": 0, "drafted": 0, "t0": time.monotonic(), "last": 0.0}

        def on_round(info: RoundInfo) -> None:
            live["tokens"] += info.emitted
            live["accepted"] += info.accepted
            live["drafted"] += info.drafted
            now = time.monotonic()
            if now - live["last"] >= LIVE_SECONDS:
                live["last"] = now
                elapsed = now - live["t0"]
                ctx.emit("live", live["tokens"] / elapsed if elapsed > 0 else 0.0, live["accepted"], live["drafted"])

        engine = ctx.engine(slot)
        try:
            chat = ChatSession(engine, system_prompt=request.system_prompt)
            chat.messages = list(request.messages)
            if not chat.messages or chat.messages[-1].role != "user":
                raise EngineError("the conversation must end with a user message")
            prompt = engine.tokenize_prompt(chat.render(), special=True)
            live["t0"] = time.monotonic()
            result = engine.generate(prompt, request.sampling, max_tokens=request.max_tokens, stop=request.stop,
                                     on_piece=on_piece, on_round=on_round, cancel=ctx.cancel)
        except WorkerLost as e:  # the engine unloaded the target; the reply ends as failed, its text kept
            ctx.emit(TARGET_LOST, str(e))
            raise
        finally:
            if buffer:
                ctx.emit("pieces", list(buffer))
        if result.stats.stop_reason == "cancelled":
            raise RequestCancelled(result)
        return result

    return service.submit(CHAT, job, label=label, cancel=request.cancel)


def run_benchmark(service: EngineService, request: BenchRequest, slot: str = APP_SLOT) -> Ticket:
    """Benchmark with the slot's loaded models; the engine's speculation is as before afterwards."""

    def job(ctx: JobContext) -> bench.BenchReport:
        engine = ctx.engine(slot)
        temporary = False
        try:
            if not engine.loaded:
                raise bench.BenchError("load a target model first")
            current = engine.speculation
            if request.source is not None and request.source != current:
                if current != sources.OFF:
                    raise bench.BenchError(f"speculation is already on ({current}): benchmark that, or turn it off")
                if request.source == sources.HISTORY:
                    engine.use_history()
                elif request.source == sources.DRAFT_MODEL:
                    if request.draft is None:
                        raise bench.BenchError("choose a draft model to benchmark")
                    engine.load_draft(request.draft)
                else:
                    raise bench.BenchError(f"unknown speculation source {request.source!r}")
                temporary = True
                current = request.source
            if request.autotune and current == sources.OFF:
                raise bench.BenchError("auto-tune needs speculation: choose the chat history or a draft model")
            target = engine.target
            options = replace(
                request.options, model=target.settings.path,
                draft=engine.draft_info.path if current == sources.DRAFT_MODEL and engine.draft_info else None,
                prompt_lookup=current == sources.HISTORY,
                threads=target.settings.n_threads or default_threads(), n_ctx=target.ctx.n_ctx,
                gpu_layers=target.settings.n_gpu_layers,
            )  # fmt: skip
            last = {"time": 0.0, "phase": ""}

            def progress(p: bench.BenchProgress) -> None:
                now = time.monotonic()
                if p.phase != last["phase"] or now - last["time"] >= BENCH_PROGRESS_SECONDS:
                    last["time"], last["phase"] = now, p.phase
                    ctx.emit("bench_progress", p)

            if request.autotune:
                return bench.autotune(options, request.autotune, progress=progress, cancel=ctx.cancel, engine=engine)
            return bench.run_benchmark(options, progress=progress, cancel=ctx.cancel, engine=engine)
        finally:
            if engine.loaded:
                engine.reset_cache()  # the chat's cached prefix is gone: start it from empty caches
            if temporary:
                engine.disable_speculation()

    return service.submit(BENCHMARK, job, cancel=request.cancel)

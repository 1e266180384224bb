"""The engine facade the CLI and the worker thread drive: load models, pick a proposer, chat.

`Engine` owns the target model and context, and the draft (model + context, or drafting from the chat history). It never
loads a draft that is not tokenizer-compatible with the target. `ChatSession` renders a conversation with
the model's own chat template and generates replies, reusing the KV cache of the previous turns in both
contexts so a new turn processes only its new tokens.

Thread model: one thread (the worker) calls everything except `cancel()`, which any thread may call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from app.engine import sources
from app.engine.adaptive import AdaptiveDraftController
from app.engine.chat_template import ChatTemplate, Message
from app.engine.compat import Verdict, check_draft_compatibility
from app.engine.gguf_info import ModelInfo, inspect_gguf
from app.engine.history_store import DEFAULT_MAX_BYTES, HistoryStore, tokenizer_fingerprint
from app.engine.llama_backend import Context, EngineError, Model, SpeculationUnsupported
from app.engine.memory import estimate_split
from app.engine.proposers import DraftModelProposer, DraftWithHistoryProposer, HistoryProposer, Proposer
from app.engine.sampling import SamplingParams
from app.engine.speculative import GenerationResult, Piece, RoundInfo, SpecSettings, generate
from app.engine.units import format_memory
from app.engine.workers import (
    NO_RPC,
    Endpoint,
    RemoteCalls,
    WorkerError,
    WorkerInfo,
    WorkerLost,
    layer_split,
    probe,
    rpc_devices,
    rpc_supported,
)

__all__ = [
    "ModelSettings", "Engine", "ChatSession", "IncompatibleDraft", "SpeculationUnsupported", "DRAFT_SOURCES",
    "Placement", "plan_placement", "WorkerError", "WorkerLost",
]

DRAFT_SOURCES = sources.DRAFT_SOURCES



class IncompatibleDraft(EngineError):
    """The draft's tokenizer differs from the target's: it is refused, with the reason."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(f"draft model refused: {verdict.reason}")
        self.verdict = verdict


@dataclass
class ModelSettings:
    path: Path
    n_gpu_layers: int = 0
    n_ctx: int = 4096
    n_threads: int | None = None
    n_batch: int = 512
    # other machines that hold part of the model (llama.cpp RPC workers, app.engine.workers)
    workers: tuple[Endpoint, ...] = ()
    # shares of the layers: this machine first, then each worker (None: all on the workers, by free memory)
    split: tuple[float, ...] | None = None

    def validate(self) -> None:
        if not (16 <= self.n_ctx <= 1_048_576):
            raise ValueError(f"context length must be between 16 and 1048576 tokens, got {self.n_ctx}")
        if self.n_gpu_layers < -1:
            raise ValueError(f"GPU layers must be -1 (all) or more, got {self.n_gpu_layers}")
        if self.n_threads is not None and not (1 <= self.n_threads <= 512):
            raise ValueError(f"threads must be between 1 and 512, got {self.n_threads}")
        if not (1 <= self.n_batch <= 65536):
            raise ValueError(f"batch size must be between 1 and 65536, got {self.n_batch}")
        if len(set(self.workers)) != len(self.workers):
            raise ValueError("the same worker is listed twice")
        if self.split is not None:
            if not self.workers:
                raise ValueError("a split needs workers to split over")
            if len(self.split) != 1 + len(self.workers):
                raise ValueError(f"the split needs {1 + len(self.workers)} shares (this machine, then each "
                                 f"worker), got {len(self.split)}")
            if any(s < 0 for s in self.split) or sum(self.split) <= 0:
                raise ValueError("the split's shares must be 0 or more, at least one of them positive")
        if self.workers and self.n_gpu_layers != 0:
            raise ValueError("with workers, this machine's share of the model runs on its CPU: set GPU layers to 0")


@dataclass(frozen=True)
class Placement:
    """Where a model on workers lives: layers and estimated bytes per place (this machine first)."""

    workers: tuple[WorkerInfo, ...]
    layers: tuple[int, ...]
    bytes: tuple[int, ...]

    def describe(self) -> str:
        """'layers: this machine 0 (52 MiB), 127.0.0.1:50052 15 (300 MiB of 20.1 GiB free), ...'."""
        parts = [f"this machine {self.layers[0]} ({format_memory(self.bytes[0])})"]
        for w, n, b in zip(self.workers, self.layers[1:], self.bytes[1:], strict=True):
            parts.append(f"{w.endpoint} {n} ({format_memory(b)} of {format_memory(w.free)} free)")
        return "layers: " + ", ".join(parts)


def plan_placement(settings: ModelSettings, info: ModelInfo, workers: Sequence[WorkerInfo]) -> Placement:
    """Split `info`'s layers over this machine and `workers` (the settings' split, else all on the workers by
    their free memory) and estimate each place's memory; a worker whose share does not fit is refused."""
    shares = settings.split if settings.split is not None else (0.0, *(float(w.free) for w in workers))
    layers = layer_split(info.block_count, shares)
    need = estimate_split(info, settings.n_ctx, layers, n_ubatch=min(settings.n_batch, settings.n_ctx))
    for w, n, b in zip(workers, layers[1:], need[1:], strict=True):
        if n and b > w.free:
            raise WorkerError(f"worker {w.endpoint}: its {n} layers need about {format_memory(b)}, it has "
                              f"{format_memory(w.free)} free — give it a smaller share (split) or a smaller context")
    return Placement(tuple(workers), tuple(layers), tuple(need))


@dataclass
class _Loaded:
    settings: ModelSettings
    info: ModelInfo
    model: Model
    ctx: Context
    placement: Placement | None = None

    def close(self) -> None:
        self.ctx.close()
        self.model.close()


def _load(settings: ModelSettings, progress: Callable[[float], bool] | None) -> _Loaded:
    settings.validate()
    info = inspect_gguf(settings.path)  # a clear error for a missing/corrupt file before llama.cpp sees it
    if settings.workers:
        model, placement = _load_on_workers(settings, info, progress)
    else:
        model, placement = Model(settings.path, n_gpu_layers=settings.n_gpu_layers, progress=progress), None
    try:
        # all layers on workers: this machine only looks up the input embeddings, and more than one thread
        # would only spin-wait on its cores while the workers compute (measured: prompts 20x slower on 2 cores)
        threads = 1 if placement is not None and placement.layers[0] == 0 else settings.n_threads
        ctx = Context(model, n_ctx=settings.n_ctx, n_batch=settings.n_batch, n_threads=threads)
    except BaseException:
        model.close()
        raise
    return _Loaded(settings, info, model, ctx, placement)


def _load_on_workers(
    settings: ModelSettings, info: ModelInfo, progress: Callable[[float], bool] | None
) -> tuple[Model, Placement]:
    """Every worker is looked at (`probe`) and the split planned before llama.cpp connects or allocates."""
    if not rpc_supported():
        raise WorkerError(NO_RPC)
    placement = plan_placement(settings, info, [probe(e) for e in settings.workers])
    n_local = placement.layers[0]
    n_offload = -1 if n_local == 0 else info.block_count - n_local  # -1: the output layer goes too
    remote = RemoteCalls(settings.workers)
    try:
        devices: list[int] = []
        split: list[float] = []
        for w, n in zip(placement.workers, placement.layers[1:], strict=True):
            devs = rpc_devices(w.endpoint, remote)
            devices += devs
            free = [d.free for d in w.devices][: len(devs)]
            split += [n * f / max(1, sum(free)) for f in free]  # a worker's layers over its devices
        model = Model(settings.path, n_gpu_layers=n_offload, progress=progress, devices=devices,
                      tensor_split=split, remote=remote)
    except BaseException:
        remote.close()
        raise
    return model, placement


class Engine:
    def __init__(
        self,
        history_folder: Path | None = None,
        *,
        history_enabled: bool = True,
        history_max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        """`history_folder`: where past chats are remembered for drafting, one file per tokenizer family
        (None: only in memory, for this process); `history_enabled=False`: past chats are neither read nor
        written."""
        self._history_folder = history_folder
        self._history_enabled = history_enabled
        self._history_max_bytes = history_max_bytes
        self._stores: dict[str, HistoryStore] = {}
        self._target: _Loaded | None = None
        self._draft: _Loaded | None = None
        self.proposer: Proposer | None = None
        self.spec = SpecSettings()
        self._running: threading.Event | None = None  # the cancel event of the generation running now
        self._controller: AdaptiveDraftController | None = None

    # -- loading ------------------------------------------------------------------------------------
    @property
    def target(self) -> _Loaded:
        if self._target is None:
            raise EngineError("no model is loaded")
        return self._target

    @property
    def loaded(self) -> bool:
        return self._target is not None

    @property
    def n_ctx(self) -> int:
        """The loaded target's context size in tokens (EngineError when none is loaded)."""
        return self.target.ctx.n_ctx

    @property
    def adaptive_controller(self) -> AdaptiveDraftController | None:
        """What the adaptive draft length learned so far for this pair and these settings (None: nothing yet)."""
        return self._controller

    @property
    def speculation(self) -> str:
        """What drafts now: one of app.engine.sources.DRAFT_SOURCES (the proposer's name, or "off")."""
        return sources.OFF if self.proposer is None else self.proposer.name

    @property
    def target_placement(self) -> Placement | None:
        """Where the target's layers are when it runs on workers (None: all on this machine)."""
        return self._target.placement if self._target else None

    @property
    def draft_info(self) -> ModelInfo | None:
        return self._draft.info if self._draft else None

    def load_target(
        self, settings: ModelSettings, progress: Callable[[float], bool] | None = None
    ) -> ModelInfo:
        """Load the target model (replacing any loaded one; a loaded draft is re-checked against it)."""
        self.unload()
        self._target = _load(settings, progress)
        return self._target.info

    def check_draft(self, path: str | Path) -> Verdict:
        return check_draft_compatibility(self.target.info, inspect_gguf(path))

    def load_draft(self, settings: ModelSettings, progress: Callable[[float], bool] | None = None) -> Verdict:
        """Load a draft model for speculation. Raises IncompatibleDraft (nothing loaded) if tokenizers differ."""
        target = self.target
        settings.validate()
        self._refuse_speculation_on_target()
        verdict = check_draft_compatibility(target.info, inspect_gguf(settings.path))
        if not verdict.compatible:
            raise IncompatibleDraft(verdict)
        self.disable_speculation()
        draft = _load(settings, progress)
        try:
            # refuses a draft whose memory cannot roll back; the conversation's free guesses go first
            proposer = DraftWithHistoryProposer(DraftModelProposer(draft.ctx), HistoryProposer(self.history_store()))
        except BaseException:
            draft.close()
            raise
        self._draft = draft
        self._set_proposer(proposer)
        return verdict

    def use_history(self) -> None:
        """Draft without a second model: from this conversation and past chats (`HistoryProposer`)."""
        self._refuse_speculation_on_target()
        self.disable_speculation()
        self._set_proposer(HistoryProposer(self.history_store()))

    # -- past chats ---------------------------------------------------------------------------------------
    def history_store(self) -> HistoryStore:
        """The past-chats store of the loaded target's tokenizer family."""
        family = tokenizer_fingerprint(self.target.info.token_bytes())
        store = self._stores.get(family)
        if store is None:
            path = self._history_folder / f"{family}.tokens" if self._history_folder is not None else None
            store = HistoryStore(path, max_bytes=self._history_max_bytes, enabled=self._history_enabled)
            self._stores[family] = store
        return store

    @property
    def history_enabled(self) -> bool:
        return self._history_enabled

    def set_history_enabled(self, enabled: bool) -> None:
        """The privacy switch: off, past chats are neither read nor written (this chat is still drafted from)."""
        self._history_enabled = enabled
        for store in self._stores.values():
            store.enabled = enabled

    def clear_history(self) -> None:
        """Forget every past chat of every tokenizer family, in memory and on disk."""
        for store in self._stores.values():
            store.clear()
        if self._history_folder is not None and self._history_folder.is_dir():
            for f in self._history_folder.glob("*.tokens"):
                f.unlink(missing_ok=True)

    def _refuse_speculation_on_target(self) -> None:
        refusal = self.target.model.speculation_refusal("target")
        if refusal is not None:
            raise SpeculationUnsupported(refusal)

    def _set_proposer(self, proposer: Proposer | None) -> None:
        self.proposer = proposer
        self._controller = None  # what the adaptive controller learned was about the previous pair

    def disable_speculation(self) -> None:
        self._set_proposer(None)
        if self._draft is not None:
            self._draft.close()
            self._draft = None

    def set_spec(self, spec: SpecSettings) -> None:
        spec.validate()
        if self._target is not None and spec.draft_max + 1 > self._target.ctx.n_batch:
            raise ValueError(
                f"draft tokens ({spec.draft_max}) + 1 must fit the batch size ({self._target.ctx.n_batch})"
            )
        if spec != self.spec:
            self._controller = None
        self.spec = spec

    def unload(self) -> None:
        self.disable_speculation()
        if self._target is not None:
            self._target.close()
            self._target = None

    # -- generation ---------------------------------------------------------------------------------
    def tokenize_prompt(self, text: str, special: bool = False) -> list[int]:
        """Tokenize a prompt; with special=True the text may hold control tokens (a rendered chat)."""
        model = self.target.model
        add_bos = True
        if special and model.add_bos:
            bos_text = model.token_text(model.bos, special=True)
            add_bos = not (bos_text and text.startswith(bos_text))
        return model.tokenize(text, add_special=add_bos, parse_special=special)

    def generate(
        self,
        prompt: Sequence[int],
        sampling: SamplingParams,
        max_tokens: int = 256,
        stop: Sequence[str] = (),
        on_piece: Callable[[Piece], None] | None = None,
        on_round: Callable[[RoundInfo], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        """Generate with the loaded models and speculation settings.

        `cancel` is the request's own stop switch: a caller that may stop a request before it starts (a
        queue) creates it with the request and sets it whenever; `Engine.cancel()` sets the one running now.
        The adaptive controller is kept from one generation to the next while the pair and settings stay.
        """
        cancel = cancel if cancel is not None else threading.Event()
        controller = None
        if self.proposer is not None and self.spec.adaptive:
            if self._controller is None:
                self._controller = AdaptiveDraftController(self.spec.draft_max)
            controller = self._controller
        self._running = cancel
        try:
            return self._on_workers_lost(lambda: generate(
                self.target.ctx,
                prompt,
                sampling,
                proposer=self.proposer,
                spec=self.spec,
                max_tokens=max_tokens,
                stop=stop,
                cancel=cancel,
                on_piece=on_piece,
                on_round=on_round,
                controller=controller,
            ))
        finally:
            self._running = None

    def _on_workers_lost(self, fn: Callable[[], GenerationResult]) -> GenerationResult:
        """`fn()`; when a worker of the target is lost, the models are unloaded (the lost one's memory is kept
        for good, see app.engine.workers) and `WorkerLost` goes on to the caller, which keeps the text so far."""
        try:
            return fn()
        except WorkerLost:
            self.unload()
            raise

    def cancel(self) -> None:
        """Stop the running generation within one decode (also a long prompt, also the draft's). Thread-safe."""
        running = self._running
        if running is not None:
            running.set()

    def reset_cache(self) -> None:
        """Forget the cached conversation in both contexts."""
        if self._target is not None:
            self._target.ctx.clear()
        if self.proposer is not None:
            self.proposer.reset()

    def close(self) -> None:
        self.unload()


@dataclass
class ChatSession:
    """A multi-turn conversation rendered with the target's chat template."""

    engine: Engine
    system_prompt: str = ""
    messages: list[Message] = field(default_factory=list)

    def _template(self) -> ChatTemplate:
        info = self.engine.target.info
        model = self.engine.target.model
        return ChatTemplate(
            info.chat_template,
            bos_token=model.token_text(model.bos, special=True) if model.bos >= 0 else "",
            eos_token=model.token_text(model.eos, special=True) if model.eos >= 0 else "",
        )

    def render(self, messages: Sequence[Message] | None = None) -> str:
        msgs = list(messages if messages is not None else self.messages)
        if self.system_prompt:
            msgs = [Message("system", self.system_prompt), *msgs]
        return self._template().render(msgs, add_generation_prompt=True)

    def send(
        self,
        user_text: str,
        sampling: SamplingParams,
        max_tokens: int = 512,
        on_piece: Callable[[Piece], None] | None = None,
        stop: Sequence[str] = (),
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        """Add a user message, generate the assistant's reply, and add it to the history."""
        self.messages.append(Message("user", user_text))
        try:
            return self._reply(sampling, max_tokens, on_piece, stop, cancel)
        except BaseException:
            self.messages.pop()
            raise

    def regenerate(
        self,
        sampling: SamplingParams,
        max_tokens: int = 512,
        on_piece: Callable[[Piece], None] | None = None,
        stop: Sequence[str] = (),
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        """Drop the last assistant reply and generate it again."""
        if self.messages and self.messages[-1].role == "assistant":
            self.messages.pop()
        if not self.messages or self.messages[-1].role != "user":
            raise EngineError("nothing to regenerate: the conversation has no user message")
        return self._reply(sampling, max_tokens, on_piece, stop, cancel)

    def _reply(
        self,
        sampling: SamplingParams,
        max_tokens: int,
        on_piece: Callable[[Piece], None] | None,
        stop: Sequence[str],
        cancel: threading.Event | None,
    ) -> GenerationResult:
        prompt = self.engine.tokenize_prompt(self.render(), special=True)
        result = self.engine.generate(prompt, sampling, max_tokens=max_tokens, stop=stop, on_piece=on_piece,
                                      cancel=cancel)
        self.messages.append(Message("assistant", result.text))
        return result

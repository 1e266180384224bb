"""Which models the server offers, and the ones it has loaded (just in time, with an idle TTL).

* `ModelCatalog`: the library's models by id. A model's id is its path inside its library folder, without
  ``.gguf`` (``publisher/repo/file``, as LM Studio names them); its file name without ``.gguf`` works too
  when no other model has the same one. Extra files (``tandem serve --model PATH``) are offered by file name.
* `ServedModels`: the server's engine slots on the `EngineService` (one per target model), used only in
  the worker thread, inside requests. A model is loaded when a request names it; before a load the memory
  estimate (`app.engine.memory`) of the new model must fit the memory available now — idle server models
  are unloaded first, least recently used first, until it does; if it still does not fit, the request fails
  (503), nothing is overcommitted; a draft loaded for a model already loaded is checked the same way. A
  model no request used during the TTL (counted from when its last request ended) is unloaded (`sweep`).
* Speculation per request: what the request asks for (`SpecChoice`), else the server's default for that
  model (`tandem serve --draft / --prompt-lookup`), else the preset the app remembers for the pair
  (`app.store.settings`: the model's draft source and draft, the pair's draft settings), else off. The
  request's draft settings apply over the serve default's (e.g. `--draft-max 6` stays with a request's
  draft_min), else over `spec_defaults(source)` with the pair's remembered ones.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from app.engine import sources
from app.engine.defaults import spec_defaults
from app.engine.gguf_info import inspect_gguf
from app.engine.llama_backend import default_threads
from app.engine.memory import ModelLoad, estimate_load
from app.engine.session import Engine, IncompatibleDraft, ModelSettings
from app.engine.speculative import SpecSettings
from app.engine.split_names import model_stem
from app.engine.workers import Endpoint
from app.hardware import monitor
from app.library.local import LocalLibrary, LocalModel
from app.server.schema import ApiError, SpecChoice
from app.service.engine_service import JobContext
from app.store.settings import HISTORY_KEY, SettingsStore, model_key

__all__ = ["ModelCatalog", "ServedModels", "Speculation", "PresetSource", "SLOT_PREFIX"]

SLOT_PREFIX = "server:"
_SPEC_FIELDS = tuple(f.name for f in fields(SpecSettings))


class ModelCatalog:
    """The library's chat models by id (thread-safe; `refresh` rescans the folders)."""

    def __init__(self, library: LocalLibrary, extra: Iterable[Path] = ()) -> None:
        self.library = library
        self.extra = [Path(p).absolute() for p in extra]
        self._lock = threading.Lock()
        self._by_id: dict[str, LocalModel] = {}
        self._aliases: dict[str, str] = {}

    def refresh(self) -> None:
        models = [m for m in self.library.scan() if not m.broken]
        for path in self.extra:
            m = self.library.describe(path)
            if not m.broken and all(x.path != m.path for x in models):
                models.append(m)
        by_id: dict[str, LocalModel] = {}
        for m in models:
            by_id.setdefault(self._id(m), m)
        stems: dict[str, list[str]] = {}
        for mid, m in by_id.items():
            stems.setdefault(m.file_name, []).append(mid)
        with self._lock:
            self._by_id = by_id
            self._aliases = {stem: ids[0] for stem, ids in stems.items() if len(ids) == 1 and stem not in by_id}

    def _id(self, m: LocalModel) -> str:
        for folder in self.library.folders:
            try:
                rel = m.path.absolute().relative_to(folder.expanduser().absolute())
            except ValueError:
                continue
            return str(rel.with_name(model_stem(rel.name))).replace("\\", "/")
        return m.file_name

    def models(self) -> list[tuple[str, LocalModel]]:
        with self._lock:
            return sorted(self._by_id.items())

    def id_of(self, path: Path) -> str | None:
        with self._lock:
            return next((mid for mid, m in self._by_id.items() if m.path == path), None)

    def get(self, model_id: str) -> LocalModel | None:
        """The model `model_id` names (an id or a unique file name); a miss rescans once."""
        for attempt in range(2):
            with self._lock:
                mid = model_id if model_id in self._by_id else self._aliases.get(model_id)
                if mid is not None:
                    return self._by_id[mid]
            if attempt == 0:
                self.refresh()
        return None


@dataclass(frozen=True)
class Speculation:
    """What drafts for one request: `source`, the draft model's file (draft-model), its settings."""

    source: str
    draft: Path | None
    spec: SpecSettings
    draft_gpu_layers: int = 0


class PresetSource:
    """The app's remembered settings, read in the thread that asks (one SQLite connection per thread)."""

    def __init__(self, open_settings: Callable[[], SettingsStore] | None) -> None:
        self._open = open_settings
        self._local = threading.local()

    def _store(self) -> SettingsStore | None:
        if self._open is None:
            return None
        store = getattr(self._local, "store", None)
        if store is None:
            store = self._open()
            self._local.store = store
        return store

    def model_settings(self, path: Path) -> dict[str, Any]:
        store = self._store()
        return store.get_model_settings(model_key(path)) if store is not None else {}

    def pair_settings(self, target: Path, draft_key: str) -> dict[str, Any]:
        store = self._store()
        return store.get_pair_settings(model_key(target), draft_key) if store is not None else {}


def _spec_from(base: SpecSettings, stored: dict[str, Any], given: dict[str, Any]) -> SpecSettings:
    """`base` with the remembered fields of `stored`, then the request's `given` ones; ValueError when the
    result is out of range. A draft_min nobody gave is lowered to a smaller draft_max."""
    known = {k: stored[k] for k in _SPEC_FIELDS if k in stored and isinstance(stored[k], type(getattr(base, k)))}
    spec = replace(base, **known, **given)
    if spec.draft_min > spec.draft_max and "draft_min" not in given:
        spec = replace(spec, draft_min=spec.draft_max)
    spec.validate()
    return spec


class _Slot:
    def __init__(self, name: str, model: LocalModel, model_id: str) -> None:
        self.name = name
        self.model = model
        self.model_id = model_id
        self.last_used = time.monotonic()


class ServedModels:
    """The server's loaded models. `prepare` and `sweep` run in the engine's worker thread (inside requests)."""

    def __init__(self, catalog: ModelCatalog, presets: PresetSource, *, ttl_seconds: float = 600.0,
                 resources: Callable[[], monitor.Resources] = monitor.resources,
                 workers: tuple[Endpoint, ...] = (), split: tuple[float, ...] | None = None) -> None:
        """`workers` / `split`: where targets put their layers (app.engine.workers; drafts stay local)."""
        self.catalog = catalog
        self.presets = presets
        self.ttl_seconds = ttl_seconds
        self.workers = tuple(workers)
        self.split = split if self.workers else None
        self._defaults: dict[Path, Speculation] = {}
        self._resources = resources
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.Lock()  # guards _slots for readers in other threads (loaded_ids, idle)

    def set_default(self, path: Path, spec: Speculation) -> None:
        """The speculation of `path`'s requests that ask for none (`tandem serve --draft / --prompt-lookup`)."""
        self._defaults[path] = spec

    # -- readable from any thread -------------------------------------------------------------------------
    def loaded_ids(self) -> list[str]:
        with self._lock:
            return [s.model_id for s in self._slots.values()]

    def expired(self, now: float | None = None) -> bool:
        """Some loaded model has been idle longer than the TTL (a sweep would unload it)."""
        if self.ttl_seconds <= 0:
            return False
        now = time.monotonic() if now is None else now
        with self._lock:
            return any(now - s.last_used > self.ttl_seconds for s in self._slots.values())

    # -- worker thread --------------------------------------------------------------------------------
    def speculation(self, model: LocalModel, choice: SpecChoice) -> Speculation:
        """The speculation of a request for `model` (see the module docstring); ApiError for a bad draft."""
        stored = self.presets.model_settings(model.path)
        if choice.source is not None or choice.draft_model is not None:
            source = choice.source or sources.DRAFT_MODEL
            draft = None
            if source == sources.DRAFT_MODEL:
                found = self.catalog.get(choice.draft_model or "")
                if found is None:
                    raise ApiError(404, f"draft model '{choice.draft_model}' is not in the library (GET /v1/models)",
                                   param="draft_model", code="model_not_found")
                draft = found.path
        elif model.path in self._defaults:  # the serve default's settings, then the request's
            d = self._defaults[model.path]
            try:
                return replace(d, spec=_spec_from(d.spec, {}, choice.settings)) if choice.settings else d
            except ValueError as e:
                raise ApiError(400, str(e), param=next(iter(choice.settings))) from None
        else:
            try:
                source = sources.normalize_source(str(stored.get("draft_source", sources.OFF)))
            except ValueError:
                source = sources.OFF
            draft = Path(str(stored["draft_path"])) if stored.get("draft_path") else None
            if source == sources.DRAFT_MODEL and (draft is None or not draft.is_file()):
                source, draft = sources.OFF, None
        key = HISTORY_KEY if source == sources.HISTORY else (_key(draft) if draft is not None else None)
        pair = self.presets.pair_settings(model.path, key) if key else {}
        try:
            spec = _spec_from(spec_defaults(source), pair, choice.settings)
        except ValueError as e:
            raise ApiError(400, str(e)) from None
        gpu = pair.get("draft_gpu_layers", 0)
        return Speculation(source, draft, spec, gpu if isinstance(gpu, int) else 0)

    def prepare(self, ctx: JobContext, model: LocalModel, model_id: str, spec: Speculation) -> Engine:
        """The engine of `model` with `spec` in place, loading what is missing (ApiError when it cannot)."""
        name = SLOT_PREFIX + str(model.path)
        slot = self._slots.get(name)
        stored = self.presets.model_settings(model.path)
        settings = _load_settings(model.path, stored)
        if self.workers:  # this machine's share runs on its CPU (ModelSettings.validate)
            settings = replace(settings, n_gpu_layers=0, workers=self.workers, split=self.split)
        if slot is None:
            self._make_room(ctx, model, settings, spec, exclude=name)
            try:
                ctx.engine(name).load_target(settings, progress=lambda _f: not ctx.cancel.is_set())
            except BaseException:
                ctx.drop(name)
                raise
            slot = _Slot(name, model, model_id)
            with self._lock:
                self._slots[name] = slot
        engine = ctx.engine(name)
        slot.last_used = time.monotonic()
        self._apply(ctx, engine, settings, spec, name)
        return engine

    def used(self, model: LocalModel) -> None:
        """A request for `model` ended: its idle time counts from now."""
        slot = self._slots.get(SLOT_PREFIX + str(model.path))
        if slot is not None:
            slot.last_used = time.monotonic()

    def draft_id(self, spec: Speculation) -> str | None:
        """The id of the draft model of `spec` (its file name when the library does not hold it); None: none."""
        if spec.source != sources.DRAFT_MODEL or spec.draft is None:
            return None
        return self.catalog.id_of(spec.draft) or model_stem(spec.draft.name)

    def _apply(self, ctx: JobContext, engine: Engine, settings: ModelSettings, spec: Speculation,
               name: str) -> None:
        if spec.source == sources.DRAFT_MODEL:
            draft_info = engine.draft_info
            if engine.speculation != sources.DRAFT_MODEL or draft_info is None or draft_info.path != spec.draft:
                if engine.speculation != sources.OFF:
                    engine.disable_speculation()  # the draft it replaces frees its memory first
                load = ModelLoad(inspect_gguf(spec.draft), spec.draft_gpu_layers, settings.n_ctx)
                self._fit(ctx, estimate_load([load]), spec.draft.name, exclude=name)
                try:
                    engine.load_draft(replace(settings, path=spec.draft, n_gpu_layers=spec.draft_gpu_layers,
                                              workers=(), split=None))  # the draft stays on this machine
                except IncompatibleDraft as e:
                    raise ApiError(400, str(e), param="draft_model", code="incompatible_draft") from None
        elif spec.source == sources.HISTORY:
            if engine.speculation != sources.HISTORY:
                engine.use_history()
        elif engine.speculation != sources.OFF:
            engine.disable_speculation()
        engine.set_spec(spec.spec)

    def _make_room(self, ctx: JobContext, model: LocalModel, settings: ModelSettings, spec: Speculation,
                   exclude: str) -> None:
        loads = []
        if not settings.workers or (settings.split is not None and settings.split[0] > 0):
            # a target all on workers needs none of this machine's memory for its layers (the engine checks
            # each worker's share against its free memory before loading); a local share counts it whole
            loads.append(ModelLoad(inspect_gguf(model.path), settings.n_gpu_layers, settings.n_ctx,
                                   n_outputs=1 + (spec.spec.draft_max if spec.source != sources.OFF else 0)))
        if spec.source == sources.DRAFT_MODEL and spec.draft is not None:
            loads.append(ModelLoad(inspect_gguf(spec.draft), spec.draft_gpu_layers, settings.n_ctx))
        self._fit(ctx, estimate_load(loads), model.file_name, exclude)

    def _fit(self, ctx: JobContext, estimate, what: str, exclude: str) -> None:
        """Unload idle models (least recently used first, never `exclude`) until `estimate` fits the memory
        available now; ApiError 503 when it cannot, so nothing is overcommitted."""
        while True:
            res = self._resources()
            fits, message = estimate.fits(available_ram=res.available_ram, free_vram=res.free_vram,
                                          gpu_count=res.gpu_count)
            if fits:
                return
            idle = sorted((s for n, s in self._slots.items() if n != exclude), key=lambda s: s.last_used)
            if not idle:
                raise ApiError(503, f"not enough memory to load '{what}': {message}",
                               type="server_error", code="insufficient_memory")
            self.unload(ctx, idle[0].name)

    def unload(self, ctx: JobContext, name: str) -> None:
        with self._lock:
            self._slots.pop(name, None)
        ctx.drop(name)

    def sweep(self, ctx: JobContext) -> list[str]:
        """Unload the models idle longer than the TTL; returns their ids."""
        if self.ttl_seconds <= 0:
            return []
        now = time.monotonic()
        gone = [s for s in list(self._slots.values()) if now - s.last_used > self.ttl_seconds]
        for s in gone:
            self.unload(ctx, s.name)
        return [s.model_id for s in gone]

    def unload_all(self, ctx: JobContext) -> None:
        for name in list(self._slots):
            self.unload(ctx, name)


def _key(path: Path) -> str | None:
    try:
        return model_key(path)
    except OSError:
        return None


def _load_settings(path: Path, stored: dict[str, Any]) -> ModelSettings:
    """How a served model loads: the app's remembered context, GPU layers and threads, else the defaults."""
    base = ModelSettings(path)

    def pick(key: str, default: int) -> int:
        v = stored.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) else default

    threads = pick("threads", 0)
    return ModelSettings(path, n_gpu_layers=pick("gpu_layers", base.n_gpu_layers), n_ctx=pick("n_ctx", base.n_ctx),
                         n_threads=threads or default_threads(leave_one_free=True))

"""The server's loaded models: just in time, evicted for memory (least recently used first), never overcommitted."""

from __future__ import annotations

from dataclasses import replace

import pytest

from app.engine import sources
from app.engine.defaults import spec_defaults
from app.engine.gguf_info import inspect_gguf
from app.engine.memory import ModelLoad, estimate_load
from app.engine.session import ModelSettings
from app.hardware.monitor import Resources
from app.library.local import LocalLibrary
from app.server.models import SLOT_PREFIX, ModelCatalog, PresetSource, ServedModels, Speculation
from app.server.schema import ApiError, SpecChoice
from tests.server.conftest import DRAFT, OTHER, TARGET


def _per_model_bytes(path) -> int:
    return estimate_load([ModelLoad(inspect_gguf(path), 0, ModelSettings(path).n_ctx)]).cpu_bytes


def _served(library_dir, budget_models: float) -> ServedModels:
    """Memory for `budget_models` tiny models; what is loaded uses its share of it."""
    catalog = ModelCatalog(LocalLibrary([library_dir], cache_path=None))
    catalog.refresh()
    per = _per_model_bytes(catalog.get(TARGET).path)
    served: ServedModels

    def resources() -> Resources:
        free = int(budget_models * per) - len(served.loaded_ids()) * per
        return Resources(available_ram=max(0, free), total_ram=10 * per, free_vram=0, total_vram=0, gpu_count=0)

    served = ServedModels(catalog, PresetSource(None), resources=resources)
    return served


def _load(service, served, model_id):
    model = served.catalog.get(model_id)

    def job(ctx):
        served.prepare(ctx, model, model_id, served.speculation(model, SpecChoice()))
        return served.loaded_ids()

    ticket = service.submit("server", job)
    assert ticket.wait(60)
    return ticket


def test_a_second_model_loads_beside_the_first_when_memory_allows(service, library_dir):
    served = _served(library_dir, 2.5)
    assert _load(service, served, TARGET).result == [TARGET]
    assert _load(service, served, DRAFT).result == [TARGET, DRAFT]


def test_the_least_recently_used_model_makes_room_and_nothing_is_overcommitted(service, library_dir):
    served = _served(library_dir, 1.5)
    assert _load(service, served, TARGET).result == [TARGET]
    assert _load(service, served, DRAFT).result == [DRAFT]  # the target was unloaded first
    assert _load(service, served, OTHER).result == [OTHER]
    served_none = _served(library_dir, 0.5)
    ticket = _load(service, served_none, TARGET)
    assert ticket.outcome == "failed" and ticket.error.startswith("not enough memory")
    assert served_none.loaded_ids() == []


def test_unknown_draft_is_a_404(library_dir):
    served = _served(library_dir, 2)
    with pytest.raises(ApiError) as e:
        served.speculation(served.catalog.get(TARGET), SpecChoice(draft_model="nope"))
    assert e.value.status == 404 and e.value.code == "model_not_found"


def _with_draft(service, served, model_id, draft_id):
    model = served.catalog.get(model_id)

    def job(ctx):
        spec = served.speculation(model, SpecChoice(draft_model=draft_id))
        served.prepare(ctx, model, model_id, spec)
        return served.loaded_ids(), ctx.engine(SLOT_PREFIX + str(model.path)).speculation

    ticket = service.submit("server", job)
    assert ticket.wait(60)
    return ticket


def test_a_draft_for_a_loaded_model_is_checked_against_memory_first(service, library_dir):
    catalog = ModelCatalog(LocalLibrary([library_dir], cache_path=None))
    catalog.refresh()
    per, draft = _per_model_bytes(catalog.get(TARGET).path), _per_model_bytes(catalog.get(DRAFT).path)
    assert draft < per
    budget = [0]
    served: ServedModels

    def resources() -> Resources:
        free = budget[0] - len(served.loaded_ids()) * per
        return Resources(available_ram=max(0, free), total_ram=10 * per, free_vram=0, total_vram=0, gpu_count=0)

    served = ServedModels(catalog, PresetSource(None), resources=resources)
    budget[0] = per + draft // 2  # the target fits, its draft beside it does not
    assert _load(service, served, TARGET).result == [TARGET]
    ticket = _with_draft(service, served, TARGET, DRAFT)
    assert ticket.outcome == "failed" and ticket.error.startswith("not enough memory to load 'tiny-draft.gguf'")
    assert service.speculation(SLOT_PREFIX + str(catalog.get(TARGET).path)) == "off"  # nothing overcommitted
    served.ttl_seconds = 0
    # with an idle model beside it, that one is unloaded to make room for the draft
    budget[0] = 2 * per + draft // 2
    assert _load(service, served, OTHER).result == [TARGET, OTHER]
    ticket = _with_draft(service, served, TARGET, DRAFT)
    assert ticket.outcome == "done", ticket.error
    assert ticket.result == ([TARGET], "draft-model")


def test_a_requests_draft_settings_apply_over_the_serve_default(library_dir):
    served = _served(library_dir, 2)
    target, draft = served.catalog.get(TARGET), served.catalog.get(DRAFT)
    default = Speculation(sources.DRAFT_MODEL, draft.path, replace(spec_defaults(sources.DRAFT_MODEL), draft_max=6))
    served.set_default(target.path, default)  # tandem serve --draft X --draft-max 6
    spec = served.speculation(target, SpecChoice(settings={"draft_min": 2})).spec
    assert (spec.draft_max, spec.draft_min) == (6, 2)
    assert served.speculation(target, SpecChoice()).spec.draft_max == 6
    assert served.speculation(target, SpecChoice(settings={"draft_max": 3})).spec.draft_max == 3
    with pytest.raises(ApiError) as e:
        served.speculation(target, SpecChoice(settings={"draft_min": 7}))  # more than the default's 6
    assert e.value.status == 400 and e.value.param == "draft_min"


def test_the_draft_id_names_the_resolved_draft(library_dir):
    served = _served(library_dir, 2)
    draft = served.catalog.get(DRAFT)
    assert served.draft_id(Speculation(sources.DRAFT_MODEL, draft.path, spec_defaults(sources.DRAFT_MODEL))) == DRAFT
    assert served.draft_id(Speculation(sources.HISTORY, None, spec_defaults(sources.HISTORY))) is None

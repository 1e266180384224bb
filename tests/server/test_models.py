"""The server's loaded models: just in time, evicted for memory (least recently used first), never overcommitted."""

from __future__ import annotations

import pytest

from app.engine.gguf_info import inspect_gguf
from app.engine.memory import ModelLoad, estimate_load
from app.engine.session import ModelSettings
from app.hardware.monitor import Resources
from app.library.local import LocalLibrary
from app.server.models import ModelCatalog, PresetSource, ServedModels
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

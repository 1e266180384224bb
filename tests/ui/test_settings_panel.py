"""The advanced settings panel: values, bad input, draft picker, advice, memory bar."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from app.engine.advisor import advise
from app.engine.compat import check_draft_compatibility
from app.engine.defaults import DEFAULT_SOURCE, MAX_TOKENS, spec_defaults
from app.engine.gguf_info import inspect_gguf
from app.engine.memory import ModelLoad, estimate_load
from app.engine.sampling import SamplingParams
from app.engine.session import DRAFT_SOURCES, ModelSettings
from app.engine.speculative import SpecSettings
from app.hardware.monitor import Resources
from app.ui.settings_panel import DraftChoice, PanelValues, SettingsPanel


def test_values_round_trip_and_stored_values_are_sanitised(qtbot):
    panel = SettingsPanel()
    qtbot.addWidget(panel)
    panel.set_target("tiny", n_layers=4)
    v = PanelValues(gpu_layers=2, n_ctx=8192, threads=1, draft_source="history", draft_max=8, draft_min=2,
                    adaptive=True, temperature=0.0, top_k=0, seed=42, max_tokens=77)
    panel.set_values(v)
    got = panel.values()
    assert (got.gpu_layers, got.n_ctx, got.draft_source, got.draft_max, got.draft_min, got.seed, got.max_tokens) == (
        2, 8192, "history", 8, 2, 42, 77)
    assert got.adaptive and panel.adaptive.isEnabled() and got.spec().adaptive
    assert "adaptive" in PanelValues.PAIR_KEYS  # remembered per target+draft pair, like the draft lengths
    sampling, max_tokens = panel.request_settings()
    assert sampling.greedy and sampling.seed == 42 and max_tokens == 77
    # stored settings from an older/corrupt file: wrong types are ignored, not crashing
    restored = PanelValues.from_dict({"n_ctx": "lots", "temperature": 1, "draft_max": 3, "bogus": 1})
    assert restored.n_ctx == PanelValues().n_ctx and restored.temperature == 1.0 and restored.draft_max == 3


def test_the_defaults_are_the_engines():
    v = PanelValues()
    assert v.sampling() == SamplingParams() and v.max_tokens == MAX_TOKENS
    assert v.draft_source == DEFAULT_SOURCE and v.spec() == spec_defaults(DEFAULT_SOURCE)
    load = ModelSettings(Path("m.gguf"))
    assert (v.n_ctx, v.gpu_layers, v.draft_gpu_layers) == (load.n_ctx, load.n_gpu_layers, load.n_gpu_layers)
    for source in DRAFT_SOURCES:
        assert PanelValues.for_source(source).spec() == spec_defaults(source)
        # stored model settings hold no speculation settings (those are the pair's): the source's defaults
        stored = PanelValues.from_dict({"draft_source": source, "temperature": 0.1})
        assert stored.spec() == spec_defaults(source) and stored.temperature == 0.1
    assert PanelValues.for_source(DEFAULT_SOURCE) == v


def test_switching_the_draft_source_starts_from_its_defaults(qtbot):
    panel = SettingsPanel()
    qtbot.addWidget(panel)

    def choose(source: str) -> SpecSettings:
        panel.source.setCurrentIndex(panel.source.findData(source))
        return panel.values().spec()

    assert choose("history") == spec_defaults("history")
    panel.draft_max.setValue(5)
    assert choose("draft-model") == spec_defaults("draft-model")
    panel.draft_max.setValue(3)
    panel.adaptive.setChecked(False)
    mine = panel.values().spec()
    # "off" keeps the draft model's settings (they are its defaults too), so turning the draft model on again
    # finds them as they were
    assert choose("off") == mine and choose("draft-model") == mine
    assert choose("history") == spec_defaults("history")
    # values set by the window (remembered ones) belong to their source: switching away starts afresh
    panel.set_values(PanelValues(draft_source="history", draft_max=12, adaptive=False))
    assert choose("off") == spec_defaults("off")
    panel.set_values(PanelValues(draft_source="draft-model", draft_max=6))
    assert choose("off").draft_max == 6


def test_out_of_range_and_non_numeric_input_is_refused(qtbot):
    panel = SettingsPanel()
    qtbot.addWidget(panel)
    panel.show()
    for spin, bad in ((panel.draft_max, "99"), (panel.n_ctx, "5")):
        spin.lineEdit().selectAll()
        QTest.keyClicks(spin.lineEdit(), bad)
        spin.interpretText()
        QTest.keyClick(spin, Qt.Key.Key_Return)
        assert spin.minimum() <= spin.value() <= spin.maximum()
        assert spin.value() != int(bad)  # the out-of-range number never became the value
    before = panel.values().max_tokens
    panel.max_tokens.lineEdit().selectAll()
    QTest.keyClicks(panel.max_tokens.lineEdit(), "abc")
    panel.max_tokens.interpretText()
    assert panel.values().max_tokens == before
    panel.set_values(PanelValues(draft_max=500, temperature=-3, n_ctx=10))  # clamped, never invalid
    v = panel.values()
    assert v.draft_max == 32 and v.temperature == 0.0 and v.n_ctx == 256
    v.spec().validate()
    v.sampling().validate()


def test_gpu_layer_slider_shows_the_layer_count(qtbot):
    panel = SettingsPanel()
    qtbot.addWidget(panel)
    panel.set_target("tiny", n_layers=30)
    panel.gpu_layers.set_value(12)
    assert panel.gpu_layers.label.text() == "12 / 30 layers"
    panel.gpu_layers.set_value(-1)
    assert panel.values().gpu_layers == -1 and "all" in panel.gpu_layers.label.text()


def test_draft_picker_disables_incompatible_models_with_reason(qtbot, tiny_target, tiny_draft, tiny_other_vocab):
    panel = SettingsPanel()
    qtbot.addWidget(panel)
    t = inspect_gguf(tiny_target)
    choices = [DraftChoice(Path(p), Path(p).stem, check_draft_compatibility(t, inspect_gguf(p)))
               for p in (tiny_draft, tiny_other_vocab)]
    panel.set_draft_choices(choices)
    good, bad = panel.draft_item(str(tiny_draft)), panel.draft_item(str(tiny_other_vocab))
    assert good.isEnabled() and "compatible" in good.toolTip()
    assert not bad.isEnabled() and "token" in bad.toolTip()
    # a stored choice of the incompatible model is not selected
    panel.set_values(PanelValues(draft_source="draft-model", draft_path=str(tiny_other_vocab)))
    assert panel.values().draft_path == ""
    panel.set_values(PanelValues(draft_source="draft-model", draft_path=str(tiny_draft)))
    assert panel.values().draft_path == str(tiny_draft)


def test_the_draft_gpu_layers_slider_spans_the_chosen_drafts_layers(qtbot, tiny_target, tiny_draft):
    panel = SettingsPanel()
    qtbot.addWidget(panel)
    verdict = check_draft_compatibility(inspect_gguf(tiny_target), inspect_gguf(tiny_draft))
    panel.set_draft_choices([DraftChoice(Path(tiny_draft), "tiny-draft", verdict, n_layers=12)])
    panel.set_values(PanelValues(draft_source="draft-model", draft_path=str(tiny_draft), draft_gpu_layers=7))
    assert panel.values().draft_gpu_layers == 7
    assert panel.draft_gpu_layers.label.text() == "7 / 12 layers"
    panel.draft_gpu_layers.set_value(-1)
    assert panel.values().draft_gpu_layers == -1


def test_stored_settings_from_before_the_history_drafter_read_as_history():
    v = PanelValues.from_dict({"draft_source": "prompt-lookup", "draft_max": 12})
    assert v.draft_source == "history" and v.draft_max == 12 and v.adaptive


def test_advice_and_memory_bar(qtbot, tiny_target, tiny_other_vocab):
    panel = SettingsPanel()
    qtbot.addWidget(panel)
    t, other = inspect_gguf(tiny_target), inspect_gguf(tiny_other_vocab)
    advice = advise(t, draft_source="draft-model", draft=other)
    assert advice[0].level == "error" and "refused" in advice[0].text
    advice = advise(t, draft_source="draft-model", draft=t)
    texts = " ".join(a.text for a in advice)
    assert "CPU" in texts and "size" in texts
    panel.set_advice(advice)
    assert "CPU" in panel.advice.text()
    est = estimate_load([ModelLoad(t, 0, 4096)])
    plenty = Resources(available_ram=8 << 30, total_ram=16 << 30, free_vram=0, total_vram=0, gpu_count=0)
    panel.memory_bar.show_estimate(est, plenty)
    assert panel.memory_bar.fits
    tight = Resources(available_ram=1 << 20, total_ram=16 << 30, free_vram=0, total_vram=0, gpu_count=0)
    panel.memory_bar.show_estimate(est, tight)
    assert not panel.memory_bar.fits and "RAM" in panel.memory_bar.verdict.text()

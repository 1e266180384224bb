"""The Benchmark dialog and the bridge's benchmark command, with the real engine on the tiny models.

Nothing of the engine is mocked: the dialog drives `app.engine.bench` on the worker thread with the loaded
tiny models, so these tests also check that a benchmark and a reply never run at the same time, that
Cancel and shutdown stop within a round, and that an auto-tune's pick is stored through SettingsStore.
"""

from __future__ import annotations

import json
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
from PySide6.QtCore import QObject, Qt

from app.engine import bench
from app.engine.chat_template import Message
from app.engine.sampling import SamplingParams
from app.engine.session import ModelSettings
from app.library.local import LocalLibrary
from app.store.chats import ChatStore
from app.store.db import open_database
from app.store.settings import HISTORY_KEY, SettingsStore, model_key
from app.ui.benchmark_dialog import BenchmarkDialog, BenchTarget, apply_preset, parse_draft_max, summary_line
from app.ui.bridge import BENCH_PROGRESS_SECONDS, BENCHMARK_BUSY, EngineBridge, GenerateRequest
from app.ui.main_window import MainWindow
from app.ui.settings_panel import PanelValues
from tests.tiny_models import TinySpec, write_tiny_model


class Recorder(QObject):
    """Collects worker events in the GUI thread: a bound method of a GUI-thread QObject, never a lambda
    (PySide would call a lambda in the emitting worker thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.items: list[tuple[float, tuple]] = []

    def add(self, *args: object) -> None:
        self.items.append((time.monotonic(), args))

    @property
    def args(self) -> list[tuple]:
        return [a for _, a in self.items]


@contextmanager
def gui_event(qtbot, signal, check=lambda *args: True, timeout: int = 60000):
    """Like qtbot.waitSignal for a worker event, but waits until the GUI thread has received it (so the slots
    connected before — the bridge's, the dialog's — have run); `.args` are the matching event's arguments."""
    rec = Recorder()
    signal.connect(rec.add)
    got = SimpleNamespace(args=None)
    try:
        yield got
        qtbot.waitUntil(lambda: any(check(*a) for a in rec.args), timeout=timeout)
        got.args = next(a for a in rec.args if check(*a))
    finally:
        signal.disconnect(rec.add)


@pytest.fixture(scope="module")
def contrary_draft(tmp_path_factory) -> Path:
    """A draft with the target's vocabulary whose output layer is negated: its guesses are never accepted."""
    spec = TinySpec(n_layer=1, blocks_seed=22, output_scale=-6.0, name="tiny-contrary")
    return write_tiny_model(tmp_path_factory.mktemp("contrary") / "tiny-contrary.gguf", spec)


@pytest.fixture()
def bridge(qtbot, tiny_target):
    b = EngineBridge()
    with qtbot.waitSignal(b.events.loaded, timeout=30000):
        b.load_target(ModelSettings(tiny_target, n_ctx=2048, n_threads=1))
    yield b
    assert b.shutdown()


@pytest.fixture()
def store(tmp_path) -> SettingsStore:
    return SettingsStore(open_database(tmp_path / "settings.sqlite3"))


@pytest.fixture()
def prompts_file(tmp_path) -> Path:
    f = tmp_path / "prompts.jsonl"
    f.write_text(json.dumps({"id": "c1", "category": "code", "prompt": "def return if else import class self print"})
                 + "\n")
    return f


def load_draft(qtbot, bridge: EngineBridge, path: Path) -> ModelSettings:
    settings = ModelSettings(path, n_ctx=2048, n_threads=1)
    with qtbot.waitSignal(bridge.events.speculationChanged, timeout=30000,
                          check_params_cb=lambda mode: mode == "draft-model"):
        bridge.load_draft(settings)
    return settings


def make_dialog(qtbot, bridge, store, target: BenchTarget) -> BenchmarkDialog:
    d = BenchmarkDialog(bridge, store, lambda: target)
    qtbot.addWidget(d)
    d.show()
    return d


def custom(d: BenchmarkDialog, prompts: Path, draft_max: str, repeats: int, max_tokens: int) -> None:
    d.set_mode("custom")
    d.draft_max.setText(draft_max)
    d.repeats.setValue(repeats)
    d.max_tokens.setValue(max_tokens)
    d.prompts_path.setText(str(prompts))


def row_configs(d: BenchmarkDialog) -> list[str]:
    return [d.table.item(i, 0).text().split()[0] for i in range(d.table.rowCount())]


def cell(d: BenchmarkDialog, config: str, column: str) -> str:
    from app.ui.benchmark_dialog import COLUMNS

    row = row_configs(d).index(config)
    return d.table.item(row, COLUMNS.index(column)).text()


# -- the dialog ---------------------------------------------------------------------------------------------
def test_custom_sweep_runs_to_completion_with_rows_plot_and_save(qtbot, bridge, store, tiny_target, tiny_draft,
                                                                 prompts_file, tmp_path):
    draft = load_draft(qtbot, bridge, tiny_draft)
    d = make_dialog(qtbot, bridge, store, BenchTarget(tiny_target, "draft-model", draft))
    assert d.source.isHidden() and "tiny-draft" in d.source_label.text()
    assert not d.save_button.isEnabled() and d.canvas is None
    custom(d, prompts_file, "1, 3", repeats=1, max_tokens=12)
    progress = Recorder()
    bridge.events.benchProgress.connect(progress.add)
    running = []
    d.runningChanged.connect(running.append)
    with gui_event(qtbot, bridge.events.benchFinished, timeout=120000) as done:
        assert d.start()
        assert d.is_running() and not d.start_button.isEnabled() and d.cancel_button.isEnabled()
        assert bridge.busy and bridge.busy_reason == BENCHMARK_BUSY
    report = done.args[0]
    assert running == [True, False] and not d.is_running() and not bridge.busy
    assert not report.cancelled and report.meta["speculation"] == "draft-model"
    assert report.meta["draft"] == str(tiny_draft) and report.meta["threads"] == 1
    assert len(report.runs) == 4  # off, draft-1, draft-3, adaptive x 1 prompt x 1 repeat
    # progress came through, the last one says done and the bar is full
    phases = [a[0].phase for a in progress.args]
    assert phases and phases[-1] == "done" and "warmup" in phases
    assert d.progress.value() == d.progress.maximum() == 4
    assert "done" in d.status.text().lower() and "4 runs" in d.status.text()
    # one row per configuration, with every column filled
    assert row_configs(d) == ["off", "draft-1", "draft-3", "adaptive"]
    off, spec = report.summary("off"), report.summary("draft-3")
    assert cell(d, "off", "Decode tok/s").startswith(f"{off.decode_tps:.1f} ± ")
    assert cell(d, "off", "Speed-up vs off") == "1.00×" and cell(d, "off", "Identical") == "reference"
    assert cell(d, "off", "Acceptance") == "—"
    assert cell(d, "draft-3", "Acceptance") == f"{spec.acceptance_rate:.0%}" and spec.acceptance_rate > 0
    assert cell(d, "draft-3", "Mean accepted") == f"{spec.mean_accepted:.2f}"
    assert cell(d, "draft-3", "Speed-up vs off") == f"{spec.speedup:.2f}×"
    assert cell(d, "draft-3", "Identical") == "yes"
    assert cell(d, "draft-3", "TTFT").endswith(" ms") and float(cell(d, "draft-3", "Prompt tok/s")) > 0
    # greedy: no differences, so the differences tab stays off; the plot is there
    assert not d.tabs.isTabEnabled(2)
    assert d.canvas is not None and d.plot_area.widget() is d.canvas
    assert d.canvas.figure.axes and d.canvas.figure.axes[0].get_ylabel() == "decode tok/s"
    # a custom sweep picks nothing
    assert d.pick_box.isHidden()
    # save: JSON, CSV, PNG by extension; anything else is refused inline
    assert d.save_button.isEnabled()
    for name in ("r.json", "r.csv", "r.png"):
        assert d.save_report(tmp_path / name), d.status.text()
    assert json.loads((tmp_path / "r.json").read_text())["runs"][0]["config"] == "off"
    assert (tmp_path / "r.csv").read_text().startswith("config,category")
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    d.ask_save_path = lambda: str(tmp_path / "r.txt")
    d.save_button.click()
    assert not (tmp_path / "r.txt").exists() and ".json, .csv or .png" in d.status.text()
    # the chat can use the engine again, with the draft still loaded and working
    with gui_event(qtbot, bridge.events.finished, timeout=60000) as gen:
        bridge.generate(GenerateRequest([Message("user", "the value of data")], sampling=SamplingParams(temperature=0),
                                        max_tokens=24))
    assert gen.args[1].stats.drafted > 0


def test_cancel_stops_a_running_benchmark_and_shows_partial_results(qtbot, bridge, store, tiny_target, tiny_draft,
                                                                    prompts_file):
    draft = load_draft(qtbot, bridge, tiny_draft)
    d = make_dialog(qtbot, bridge, store, BenchTarget(tiny_target, "draft-model", draft))
    custom(d, prompts_file, "2,4", repeats=100, max_tokens=64)
    with gui_event(qtbot, bridge.events.benchProgress, lambda p: p.phase == "run" and p.done >= 3, timeout=60000):
        assert d.start()
    # progress is shown: the bar, the run, its speed and an ETA
    status = d.status.text()
    assert "run" in status and "tok/s" in status and "ETA" in status, status
    assert d.progress.maximum() == 4 * 100 and d.progress.value() >= 3
    assert not d.start_button.isEnabled() and not d.mode.isEnabled()
    with gui_event(qtbot, bridge.events.benchFinished, timeout=30000) as done:
        t0 = time.monotonic()
        qtbot.mouseClick(d.cancel_button, Qt.MouseButton.LeftButton)
        assert "Cancelling" in d.status.text() and not d.cancel_button.isEnabled()
    assert time.monotonic() - t0 < 5
    report = done.args[0]
    assert report.cancelled and 3 <= len(report.runs) < 400
    assert "cancelled" in d.status.text().lower() and f"{len(report.runs)} of 400" in d.status.text()
    assert d.table.rowCount() >= 1 and row_configs(d)[0] == "off"
    assert d.start_button.isEnabled() and d.save_button.isEnabled() and not bridge.busy
    # the dialog can run again afterwards
    custom(d, prompts_file, "2", repeats=1, max_tokens=8)
    with gui_event(qtbot, bridge.events.benchFinished, timeout=60000) as again:
        assert d.start()
    assert not again.args[0].cancelled and row_configs(d) == ["off", "draft-2", "adaptive"]


def test_autotune_with_a_never_accepted_draft_picks_off_and_apply_stores_it(qtbot, bridge, store, tiny_target,
                                                                             contrary_draft, prompts_file):
    draft = load_draft(qtbot, bridge, contrary_draft)
    d = make_dialog(qtbot, bridge, store, BenchTarget(tiny_target, "draft-model", draft))
    d.set_mode("quick")
    assert not d.draft_max.isEnabled() and not d.repeats.isEnabled()
    d.max_tokens.setValue(16)
    d.prompts_path.setText(str(prompts_file))
    with gui_event(qtbot, bridge.events.benchFinished, timeout=120000) as done:
        assert d.start()
    report = done.args[0]
    assert [c.name for c in report.configs] == ["off", "draft-2", "draft-4", "draft-8", "adaptive"]
    assert all(s.acceptance_rate == 0.0 for s in report.summaries if s.config != "off")
    assert report.autotune["config"] == "off" and report.autotune["speculation"] == "off"
    assert not d.pick_box.isHidden()
    assert d.summary.text().startswith("Speculation does not help on this machine for this pair: keep it off")
    assert row_configs(d)[0] == "off" and "pick" in d.table.item(0, 0).text()
    assert d.pair_keys() == (model_key(tiny_target), model_key(contrary_draft))
    assert store.get_pair_settings(*d.pair_keys()) == {}
    with qtbot.waitSignal(d.presetApplied, timeout=5000) as applied:
        qtbot.mouseClick(d.apply_button, Qt.MouseButton.LeftButton)
    preset = applied.args[0]
    assert preset["speculation"] == "off" and preset["measured_draft"] == str(contrary_draft)
    stored = store.get_pair_settings(model_key(tiny_target), model_key(contrary_draft))
    assert stored["benchmark"]["config"] == "off" and stored["benchmark"]["mode"] == "quick"
    assert "draft_max" not in stored  # "off" changes no draft length
    assert not d.apply_button.isEnabled() and "Stored" in d.applied_label.text()
    # the panel's values with this preset: speculation off
    v = apply_preset(PanelValues(draft_source="draft-model", draft_path=str(contrary_draft), draft_max=7), preset)
    assert v.draft_source == "off" and v.draft_max == 7


def test_a_cancelled_autotune_shows_its_partial_results_but_offers_no_pick(qtbot, bridge, store, tiny_target,
                                                                         tiny_draft):
    draft = load_draft(qtbot, bridge, tiny_draft)
    d = make_dialog(qtbot, bridge, store, BenchTarget(tiny_target, "draft-model", draft))
    d.set_mode("thorough")
    d.max_tokens.setValue(64)
    with gui_event(qtbot, bridge.events.benchProgress, lambda p: p.phase == "run" and p.done >= 2, timeout=60000):
        assert d.start()
    with gui_event(qtbot, bridge.events.benchFinished, timeout=30000) as done:
        d.cancel()
    report = done.args[0]
    assert report.cancelled and report.runs and report.autotune  # the auto-tune's pick of the partial sweep
    assert not d.pick_box.isHidden() and d.summary.text().startswith("Cancelled: no pick from a partial sweep")
    assert d.apply_button.isHidden() and not d.apply_button.isEnabled() and not d.apply_pick()
    assert not any("pick" in d.table.item(i, 0).text() for i in range(d.table.rowCount()))
    assert store.get_pair_settings(model_key(tiny_target), model_key(tiny_draft)) == {}


def test_a_differing_output_is_shown_with_position_and_both_continuations(qtbot, bridge, store, tiny_target,
                                                                          tiny_draft, prompts_file, monkeypatch):
    """Greedy speculation gives the plain output here, so a difference is forced (as in tests/engine)."""
    real = bench.describe_divergence

    def differing(plain, other, detok=None, **kw):
        if kw.get("config") == "draft-2":
            other = list(other[:5]) + [3 + ord("x")] * 3  # the byte token of "x"
        return real(plain, other, detok, **kw)

    monkeypatch.setattr(bench.compare, "describe_divergence", differing)
    draft = load_draft(qtbot, bridge, tiny_draft)
    d = make_dialog(qtbot, bridge, store, BenchTarget(tiny_target, "draft-model", draft))
    custom(d, prompts_file, "2,3", repeats=1, max_tokens=12)
    d.adaptive.setChecked(False)
    with gui_event(qtbot, bridge.events.benchFinished, timeout=60000) as done:
        assert d.start()
    (div,) = done.args[0].divergences
    assert row_configs(d) == ["off", "draft-2", "draft-3"]
    assert cell(d, "draft-2", "Identical") == "NO (1 run)" and cell(d, "draft-3", "Identical") == "yes"
    assert d.tabs.isTabEnabled(2) and d.tabs.tabText(2) == "Differences (1)"
    text = d.divergence.toPlainText()
    assert "draft-2 on prompt c1 (repeat 1): first difference at generated token 5" in text
    assert f"plain run:   {div.plain_text!r}" in text and f"draft-2:     {div.other_text!r}" in text
    assert div.other_text == "xxx" and div.plain_text != div.other_text


def test_bad_draft_lengths_and_broken_prompt_files_give_inline_errors(qtbot, bridge, store, tiny_target, tmp_path):
    d = make_dialog(qtbot, bridge, store, BenchTarget(tiny_target, "off", None))
    # the fields start from the benchmark's defaults; the hints say what the auto-tune modes run
    defaults = bench.BenchOptions(tiny_target)
    assert parse_draft_max(d.draft_max.text()) == defaults.draft_max == bench.DEFAULT_DRAFT_MAX
    assert (d.repeats.value(), d.max_tokens.value(), d.adaptive.isChecked()) == (
        defaults.repeats, defaults.max_tokens, defaults.adaptive)
    assert [d.mode.itemData(i) for i in range(d.mode.count())] == [*bench.AUTOTUNE_MODES, "custom"]
    assert f"at most {bench.QUICK_MAX_TOKENS} tokens" in d.mode_hint.text()
    # speculation is off: choose what to measure (no draft chosen: the chat history only)
    assert not d.source.isHidden() and [d.source.itemData(i) for i in range(d.source.count())] == ["history"]
    d.set_mode("custom")
    for text, needle in (("1,x", "'x' is not a whole number"), ("0,2", "between 1 and 32"), ("40", "between 1 and 32"),
                         ("", "enter the draft lengths")):
        d.draft_max.setText(text)
        assert not d.draft_max_error.isHidden() and needle in d.draft_max_error.text(), (text, d.draft_max_error.text())
        assert not d.start()
        assert not bridge.benchmarking and "Fix the marked input" in d.status.text()
    d.draft_max.setText("1,2,3,5,8")
    assert d.draft_max_error.isHidden()
    # broken prompt files: the reader's one-line reason under the field, never a traceback
    broken = tmp_path / "broken.jsonl"
    cases = {'{"prompt": "a"}\nnot json\n': "broken.jsonl line 2: not valid JSON",
             '{"category": "code"}\n': '"prompt" must be a non-empty string'}
    for text, needle in cases.items():
        broken.write_text(text)
        d.ask_prompts_path = lambda: str(broken)
        d.prompts_browse.click()
        assert not d.prompts_error.isHidden() and needle in d.prompts_error.text(), d.prompts_error.text()
        assert "Traceback" not in d.prompts_error.text()
        assert not d.start() and not bridge.benchmarking
    d.prompts_path.setText(str(tmp_path / "missing.jsonl"))
    assert not d.start() and "not found" in d.prompts_error.text()
    d.prompts_path.setText("")  # the built-in set
    assert d._check_prompts() == (True, None) and d.prompts_error.isHidden()
    assert parse_draft_max("8; 2 2,5") == (2, 5, 8)


def test_dialog_without_a_model_and_while_a_reply_runs(qtbot, bridge, store, tiny_target, prompts_file):
    nothing = BenchmarkDialog(bridge, store, lambda: None)
    qtbot.addWidget(nothing)
    nothing.show()
    assert not nothing.start_button.isEnabled() and "load a target model" in nothing.target_label.text().lower()
    assert not nothing.start()
    d = make_dialog(qtbot, bridge, store, BenchTarget(tiny_target, "off", None))
    custom(d, prompts_file, "2", repeats=1, max_tokens=8)
    with qtbot.waitSignal(bridge.events.pieces, timeout=30000):
        # greedy: this prompt runs to the end of the context (random sampling may end it at once)
        bridge.generate(GenerateRequest([Message("user", "the value of data")], sampling=SamplingParams(temperature=0.0),
                                        max_tokens=100000))
    assert not d.start()  # the engine is generating: refused, with the reason
    assert "reply is being generated" in d.status.text() and not d.is_running()
    bridge.stop()
    qtbot.waitUntil(lambda: not bridge.busy, timeout=30000)
    with gui_event(qtbot, bridge.events.benchFinished, timeout=60000) as done:
        assert d.start()
    assert done.args[0].meta["speculation"] == "history"


def test_summary_line():
    base = {"off_decode_tps": 100.0, "best_config": "draft-5", "best_decode_tps": 123.0}
    assert summary_line({**base, "config": "draft-5", "speculation": "draft-model", "draft_max": 5,
                         "adaptive": False, "speedup": 1.234, "decode_tps": 123.0}).startswith(
        "Fastest here: draft 5 tokens, 1.23× vs off")
    assert summary_line({**base, "config": "adaptive", "speculation": "history", "draft_max": 8,
                         "adaptive": True, "speedup": 1.5, "decode_tps": 150.0}).startswith(
        "Fastest here: adaptive draft length (up to 8 tokens), 1.50× vs off")
    off = summary_line({**base, "config": "off", "speculation": "off", "draft_max": None, "speedup": 1.0,
                        "best_decode_tps": 101.0})
    assert off.startswith("Speculation does not help on this machine for this pair: keep it off")
    v = apply_preset(PanelValues(draft_min=6), {"speculation": "history", "draft_max": 4, "adaptive": True})
    assert (v.draft_source, v.draft_max, v.draft_min, v.adaptive) == ("history", 4, 4, True)


# -- the bridge ---------------------------------------------------------------------------------------------
def _options(tiny_target, prompts, **kw) -> bench.BenchOptions:
    return bench.BenchOptions(tiny_target, prompts=prompts, **kw)


PROMPTS = [bench.BenchPrompt("c1", "code", "def return if else import class self print"),
           bench.BenchPrompt("p1", "prose", "the value of data is")]


def test_bridge_progress_is_throttled_and_a_temporary_source_is_switched_off_again(qtbot, bridge, tiny_target):
    progress = Recorder()
    bridge.events.benchProgress.connect(progress.add)
    opts = _options(tiny_target, PROMPTS, draft_max=(2,), repeats=40, max_tokens=4, warmup=False)
    with gui_event(qtbot, bridge.events.benchFinished, timeout=120000) as done:
        assert bridge.run_benchmark(opts, source="history")
        assert not bridge.run_benchmark(opts)  # one at a time
    report = done.args[0]
    # 40 repeats x 2 prompts x (off, draft-2, adaptive, the same request again in a new chat)
    assert report.meta["speculation"] == "history" and len(report.runs) == 40 * 2 * 4
    assert bridge.service.speculation() == "off"  # speculation was off before: off again
    times = [t for t, _ in progress.items]
    runs = [a[0] for a in progress.args if a[0].phase == "run"]
    assert progress.args[-1][0].phase == "done"
    # at most 10 a second (every run would have been 240)
    span = times[-1] - times[0]
    assert len(runs) < len(report.runs)
    assert len(runs) <= span / BENCH_PROGRESS_SECONDS + 2, (len(runs), span)


def test_bridge_errors_become_bench_failed(qtbot, bridge, tiny_target, tiny_other_vocab):
    long_prompt = [bench.BenchPrompt("long", "prose", "the value of data " * 1000)]
    with gui_event(qtbot, bridge.events.benchFailed, timeout=60000) as failed:
        assert bridge.run_benchmark(_options(tiny_target, long_prompt, max_tokens=8))
    assert "does not fit the context" in failed.args[0] and "\n" not in failed.args[0]
    assert not bridge.busy
    with gui_event(qtbot, bridge.events.benchFailed, timeout=60000) as failed:
        assert bridge.run_benchmark(_options(tiny_target, PROMPTS), "quick")
    assert "auto-tune needs speculation" in failed.args[0]
    with gui_event(qtbot, bridge.events.benchFailed, timeout=60000) as failed:
        assert bridge.run_benchmark(_options(tiny_target, PROMPTS), source="draft-model",
                                    draft=ModelSettings(tiny_other_vocab, n_ctx=512, n_threads=1))
    assert "refused" in failed.args[0]
    assert bridge.service.speculation() == "off"


def test_shutdown_while_benchmarking_is_prompt(qtbot, tiny_target, tiny_draft):
    b = EngineBridge()
    with qtbot.waitSignal(b.events.loaded, timeout=30000):
        b.load_target(ModelSettings(tiny_target, n_ctx=2048, n_threads=1))
    opts = _options(tiny_target, PROMPTS, draft_max=(2, 4), repeats=100, max_tokens=1000)  # minutes uncancelled
    with qtbot.waitSignal(b.events.benchProgress, timeout=60000, check_params_cb=lambda p: p.phase == "run"):
        assert b.run_benchmark(opts, source="history")
    t0 = time.monotonic()
    assert b.shutdown()
    assert time.monotonic() - t0 < 5


# -- the main window ----------------------------------------------------------------------------------------
def test_main_window_tools_benchmark_blocks_chat_and_applies_the_pick(qtbot, tmp_path, tiny_models, prompts_file,
                                                                      monkeypatch):
    monkeypatch.setenv("TANDEM_DATA_DIR", str(tmp_path / "data"))
    models = tmp_path / "models"
    models.mkdir()
    for p in tiny_models.values():
        shutil.copy(p, models / p.name)
    conn = open_database(tmp_path / "chats.sqlite3")
    settings = SettingsStore(conn)
    settings.set("model_folders", [str(models)])
    w = MainWindow(ChatStore(conn), settings, LocalLibrary([models], cache_path=None))
    w.confirm = lambda title, text: True
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: len(w.browser.models()) == 3, timeout=20000)
    tools = next(a.menu() for a in w.menuBar().actions() if a.text() == "&Tools")
    assert w.benchmark_action in tools.actions() and not w.benchmark_action.isEnabled()
    target = next(m for m in w.browser.models() if Path(m.path).stem == "tiny-target")
    settings.set_model_settings(model_key(target.path), {"n_ctx": 2048, "threads": 1, "temperature": 0.0})
    with qtbot.waitSignal(w.bridge.events.loaded, timeout=30000):
        w.load_model(target)
    qtbot.waitUntil(w.benchmark_action.isEnabled, timeout=10000)

    w.benchmark_action.trigger()
    d = w.benchmark_dialog
    assert d is not None and d.isVisible() and not d.isModal()
    assert d.target_label.text() == "tiny-target.gguf" and d.source.currentData() == "history"
    d.set_mode("quick")
    d.max_tokens.setValue(8)
    d.prompts_path.setText(str(prompts_file))
    with gui_event(qtbot, w.bridge.events.benchFinished, timeout=120000) as done:
        assert d.start()
        # the chat is blocked meanwhile, and says why; the message stays in the input box
        assert "benchmark is running" in w.chat.notice.text().lower()
        w.chat.input.setPlainText("hello")
        assert not w.chat.send()
        assert "benchmark is running" in w.chat.notice.text().lower()
        assert w.chat.input.toPlainText() == "hello" and not w.chat.is_generating()
    report = done.args[0]
    assert report.meta["speculation"] == "history" and report.autotune
    assert "chat is available" in w.chat.notice.text()
    pick = report.autotune
    with qtbot.waitSignal(d.presetApplied, timeout=5000):
        d.apply_button.click()
    v = w.panel.values()
    assert v.draft_source == pick["speculation"]
    stored = settings.get_pair_settings(model_key(target.path), HISTORY_KEY)
    assert stored["benchmark"]["config"] == pick["config"]
    if pick["speculation"] == "history":
        qtbot.waitUntil(lambda: w.speculation == "history", timeout=10000)
        assert (v.draft_max, v.adaptive) == (pick["draft_max"], pick["adaptive"])
        assert stored["draft_max"] == pick["draft_max"]
    else:
        assert w.speculation == "off"
    # the regular save keeps the benchmark's preset (it merges into the pair's settings)
    w._save_model_settings()
    assert settings.get_pair_settings(model_key(target.path), HISTORY_KEY)["benchmark"] == stored["benchmark"]

    # quitting while a benchmark runs stops it, and the engine thread, promptly
    custom(d, prompts_file, "2,4", repeats=100, max_tokens=64)
    with gui_event(qtbot, w.bridge.events.benchProgress, lambda p: p.phase == "run"):
        assert d.start()
    t0 = time.monotonic()
    w.close()
    qtbot.waitUntil(lambda: not w.bridge.is_running(), timeout=15000)
    assert time.monotonic() - t0 < 10

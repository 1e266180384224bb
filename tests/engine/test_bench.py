"""The benchmark core on tiny models: prompt files, runs, reports (JSON/CSV/PNG), auto-tune, cancel, diffs."""

from __future__ import annotations

import csv
import json
import threading
import tomllib
from dataclasses import replace
from fnmatch import fnmatch
from importlib import resources
from pathlib import Path

import pytest

from app.engine import bench
from app.engine.bench import (
    BenchError,
    BenchOptions,
    BenchPrompt,
    autotune,
    autotune_options,
    builtin_prompts,
    describe_divergence,
    first_difference,
    load_prompts,
    run_benchmark,
)
from app.engine.bench.prompts import BUILTIN_FILE
from app.engine.defaults import spec_defaults
from tests.tiny_models import TinySpec, write_tiny_model

ROOT = Path(__file__).resolve().parents[2]

PROMPTS = [
    BenchPrompt("c1", "code", "def return if else import class self print"),
    BenchPrompt("p1", "prose", "the value of data is"),
]


@pytest.fixture(scope="module")
def contrary_draft(tmp_path_factory) -> Path:
    """A draft with the target's vocabulary whose output layer is negated: its guesses are never accepted."""
    spec = TinySpec(n_layer=1, blocks_seed=22, output_scale=-6.0, name="tiny-contrary")
    return write_tiny_model(tmp_path_factory.mktemp("contrary") / "tiny-contrary.gguf", spec)


# -- output comparison --------------------------------------------------------------------------------
def test_first_difference():
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([], []) is None
    assert first_difference([1, 2, 3], [1, 9, 3]) == 1
    assert first_difference([5], [6]) == 0
    assert first_difference([1, 2, 3], [1, 2]) == 2  # one stopped early
    assert first_difference([1, 2], [1, 2, 3, 4]) == 2


def test_describe_divergence_reports_position_and_both_continuations():
    plain = [10, 11, 12, 13, 14, 15, 16]
    other = [10, 11, 12, 99, 98, 97]
    words = {i: f"<{i}>" for i in range(200)}
    d = describe_divergence(plain, other, lambda toks: "".join(words[t] for t in toks), config="draft-3",
                            prompt_id="x", tail=3, context=2)
    assert d is not None
    assert (d.position, d.config, d.prompt_id) == (3, "draft-3", "x")
    assert d.plain_tokens == [13, 14, 15] and d.other_tokens == [99, 98, 97]
    assert d.plain_text == "<13><14><15>" and d.other_text == "<99><98><97>"
    assert d.context_text == "<11><12>"
    assert describe_divergence(plain, list(plain)) is None


# -- prompts ------------------------------------------------------------------------------------------
CHAT_CATEGORIES = ("iteration", "edit", "quote", "letter", "open")


def test_builtin_prompt_set_covers_every_category():
    prompts = builtin_prompts()
    for cat in bench.CATEGORIES:
        n = sum(p.category == cat for p in prompts)
        assert (2 if cat in CHAT_CATEGORIES else 3) <= n <= 4, (cat, n)
    assert len({p.id for p in prompts}) == len(prompts)
    # the rewrite prompts carry the text to edit
    assert all(len(p.prompt) > 200 for p in prompts if p.category == "rewrite")
    # the chats are conversations that end with the user's turn, and carry what the reply should reuse
    chats = [p for p in prompts if p.category in CHAT_CATEGORIES]
    assert all(p.messages and p.messages[-1][0] == "user" for p in chats)
    assert all(sum(len(c) for _, c in p.messages) > 300 for p in chats if p.category != "open")
    assert any(len(p.messages) >= 3 for p in chats)  # multi-turn: earlier replies in the conversation


def test_chat_prompt_lines_are_parsed_and_bad_ones_refused_with_the_line(tmp_path):
    good = tmp_path / "chats.jsonl"
    good.write_text(
        '{"id": "a", "category": "edit", "system": "be exact", "messages": [{"role": "user", "content": "hi"}, '
        '{"role": "assistant", "content": "hello"}, {"role": "user", "content": "again"}]}\n', encoding="utf-8")
    (p,) = bench.load_prompts(good)
    assert p.messages == (("user", "hi"), ("assistant", "hello"), ("user", "again")) and p.system == "be exact"
    assert p.chat() == list(p.messages)
    cases = {
        '{"messages": []}': "non-empty list",
        '{"messages": [{"role": "robot", "content": "x"}]}': "role 'robot'",
        '{"messages": [{"role": "user", "content": ""}]}': "non-empty \"content\"",
        '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}': "must be the user",
        '{"messages": [{"role": "user", "content": "q"}], "prompt": "x"}': "not both",
        '{"messages": [{"role": "user", "content": "q"}], "raw": true}': "chat template",
        '{"messages": ["hello"]}': "message 1",
    }
    for line, needle in cases.items():
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"prompt": "fine"}\n' + line + "\n", encoding="utf-8")
        with pytest.raises(bench.BenchError, match="bad.jsonl line 2") as e:
            bench.load_prompts(bad)
        assert needle in str(e.value), (line, str(e.value))


def test_the_builtin_prompt_file_is_package_data_where_it_is_read():
    package = builtin_prompts.__module__.rpartition(".")[0]
    assert resources.files(package).joinpath(BUILTIN_FILE).is_file()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert any(fnmatch(BUILTIN_FILE, pattern) for pattern in package_data[package])


def test_load_prompts_and_its_errors(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "hi", "category": "chat"}\n\n# a comment\n{"id": "b", "prompt": "x", "raw": true}\n')
    ps = load_prompts(f)
    assert [(p.id, p.category, p.raw) for p in ps] == [("prompt-1", "chat", False), ("b", "other", True)]
    cases = {
        '{"prompt": "a"}\nnot json\n': "line 2",
        '{"category": "x"}\n': "prompt",
        '{"prompt": "a", "id": "z"}\n{"prompt": "b", "id": "z"}\n': "twice",
        '{"prompt": "a", "max_tokens": 0}\n': "max_tokens",
        "\n": "no prompts",
    }
    for text, needle in cases.items():
        f.write_text(text)
        with pytest.raises(BenchError, match=needle):
            load_prompts(f)
    with pytest.raises(BenchError, match="not found"):
        load_prompts(tmp_path / "missing.jsonl")


def test_options_are_checked(tiny_target, tiny_draft):
    with pytest.raises(BenchError):
        BenchOptions(tiny_target, draft=tiny_draft, prompt_lookup=True).validate()
    with pytest.raises(BenchError):
        BenchOptions(tiny_target, draft_max=(0, 3)).validate()
    with pytest.raises(BenchError):
        BenchOptions(tiny_target, repeats=0).validate()
    assert [c.name for c in BenchOptions(tiny_target).configs()] == ["off"]
    names = [c.name for c in BenchOptions(tiny_target, draft=tiny_draft, draft_max=(3, 1)).configs()]
    assert names == ["off", "draft-1", "draft-3", "adaptive"]
    with pytest.raises(BenchError, match="between 1 and 32"):
        BenchOptions(tiny_target, draft=tiny_draft, adaptive_cap=40).validate()


def test_the_adaptive_configuration_is_the_sources_default(tiny_target, tiny_draft):
    """The sweep measures what each draft source starts with (spec_defaults), unless told another cap."""
    for opts, source in ((BenchOptions(tiny_target, draft=tiny_draft), "draft-model"),
                         (BenchOptions(tiny_target, prompt_lookup=True, draft_max=(2,)), "history")):
        adaptive = next(c for c in opts.configs() if c.name == "adaptive")
        assert adaptive.spec() == spec_defaults(source)
    capped = next(c for c in BenchOptions(tiny_target, prompt_lookup=True, adaptive_cap=6).configs() if c.adaptive)
    assert (capped.name, capped.draft_max, capped.adaptive) == ("adaptive", 6, True)
    assert "adaptive" not in [c.name for c in BenchOptions(tiny_target, draft=tiny_draft, adaptive=False).configs()]


def test_drafting_from_history_also_measures_the_same_request_in_a_new_chat(tiny_target, tmp_path):
    """The past-chats run: an earlier chat (not measured) asked the same; every other run starts with none."""
    configs = BenchOptions(tiny_target, prompt_lookup=True).configs()
    assert [c.name for c in configs][-2:] == ["adaptive", bench.PAST_CHATS]
    assert bench.PAST_CHATS not in [c.name for c in BenchOptions(tiny_target, prompt_lookup=True,
                                                                 past_chats=False).configs()]
    prompts = [bench.BenchPrompt("p1", "code", "def return if else import class self print json name id")]
    report = bench.run_benchmark(BenchOptions(tiny_target, prompt_lookup=True, draft_max=(4,), prompts=prompts,
                                              repeats=1, max_tokens=48, n_ctx=512, threads=1, warmup=False))
    assert report.identical
    adaptive, again = report.summary("adaptive"), report.summary(bench.PAST_CHATS)
    assert again.acceptance_rate > 0.9 and again.mean_accepted > adaptive.mean_accepted
    # the auto-tune never picks a situation: only settings
    assert bench.pick_best(report).config != bench.PAST_CHATS


def test_autotune_options_per_mode_and_explicit_values_win(tiny_target, tiny_draft):
    base = BenchOptions(tiny_target, draft=tiny_draft, repeats=5, max_tokens=100)
    quick = autotune_options(base, "quick")
    assert quick.draft_max == bench.QUICK_DRAFT_MAX and quick.repeats == bench.QUICK_REPEATS
    assert quick.max_tokens == bench.QUICK_MAX_TOKENS and quick.adaptive
    assert sorted(p.category for p in quick.prompts) == sorted(bench.CATEGORIES)  # one prompt per category
    thorough = autotune_options(replace(base, repeats=1), "thorough")
    assert thorough.draft_max == bench.DEFAULT_DRAFT_MAX and thorough.repeats == bench.THOROUGH_MIN_REPEATS
    mine = autotune_options(base, "quick", {"draft_max": (3,), "repeats": 2, "max_tokens": 100})
    assert (mine.draft_max, mine.repeats, mine.max_tokens) == ((3,), 2, 100)
    with pytest.raises(BenchError, match="'quick' or 'thorough'"):
        autotune_options(base, "fast")


# -- a real (tiny) run -------------------------------------------------------------------------------
def test_bench_runs_and_writes_json_csv_png(tiny_target, tiny_draft, tmp_path):
    seen = []
    opts = BenchOptions(tiny_target, draft=tiny_draft, draft_max=(2, 4), prompts=PROMPTS, repeats=1,
                        max_tokens=24, threads=1)
    report = run_benchmark(opts, progress=seen.append)
    assert not report.cancelled
    assert [s.config for s in report.summaries if s.category == "all"] == ["off", "draft-2", "draft-4", "adaptive"]
    assert report.categories() == ["code", "prose"]
    assert len(report.runs) == 4 * 2
    # greedy: every configuration gives the plain output
    assert report.identical and all(r.identical for r in report.runs if r.config != "off")
    off = report.summary("off")
    assert off.speedup == 1.0 and off.acceptance_rate == 0.0 and off.prompt_tps > 0 and off.ttft_ms > 0
    spec = report.summary("draft-4")
    assert 0.0 < spec.acceptance_rate <= 1.0 and spec.mean_accepted > 0
    assert spec.speedup == pytest.approx(spec.decode_tps / off.decode_tps)
    assert report.summary("draft-2", "code") is not None
    # progress: loading, warm-up, one call per run, done
    phases = [p.phase for p in seen]
    assert phases[0] == "loading" and phases[-1] == "done" and phases.count("run") == 8
    assert seen[-1].fraction == 1.0

    report.write_json(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["identical"] is True and len(data["runs"]) == 8
    assert {"decode_tps", "decode_tps_min", "decode_tps_max", "prompt_tps", "ttft_ms", "acceptance_rate",
            "mean_accepted", "speedup", "identical", "spread"} <= set(data["summaries"][0])
    report.write_csv(tmp_path / "r.csv")
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert len(rows) == 4 * 3 and rows[0]["config"] == "off" and rows[0]["category"] == "all"
    report.write_plot(tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "draft-4" in report.format_table()


def test_a_difference_is_reported(tiny_target, tiny_draft, monkeypatch):
    """If a configuration's output differed from plain, the report says where (forced here)."""
    real = bench.describe_divergence

    def fake(plain, other, detok=None, **kw):
        if kw.get("config") == "draft-2":
            other = list(other[:5]) + [0] * 3
        return real(plain, other, detok, **kw)

    monkeypatch.setattr(bench.compare, "describe_divergence", fake)
    opts = BenchOptions(tiny_target, draft=tiny_draft, draft_max=(2,), adaptive=False, prompts=PROMPTS[:1],
                        repeats=1, max_tokens=12, threads=1, warmup=False)
    report = run_benchmark(opts)
    assert not report.identical
    (d,) = report.divergences
    assert d.config == "draft-2" and d.position == 5 and d.other_tokens == [0, 0, 0]
    assert report.summary("draft-2").identical is False and report.summary("draft-2").n_diverged == 1
    assert "DIFFERENT: draft-2" in report.format_table()
    # a configuration whose output differed is never the auto-tune pick
    assert bench.pick_best(report).config != "draft-2"


def test_autotune_picks_off_when_the_draft_is_never_accepted(tiny_target, contrary_draft):
    report = autotune(BenchOptions(tiny_target, draft=contrary_draft, prompts=PROMPTS, max_tokens=24, threads=1),
                      "quick")
    spec = [s for s in report.summaries if s.category == "all" and s.config != "off"]
    assert spec
    # the draft model is never right (the conversation's own repeats may be: they go first, for free)
    assert all(r.accepted_by_source.get("draft model", 0) == 0 for r in report.runs)
    pick = report.autotune
    if pick["config"] == "off":
        assert pick["speculation"] == "off" and pick["draft"] is None
        assert "auto-tune pick: off" in report.format_table()
    else:  # picked only because the conversation's own guesses paid, by more than the margin
        from app.engine.bench.autotune import OFF_MARGIN

        assert report.summary(pick["config"]).decode_tps >= report.summary("off").decode_tps * (1 + OFF_MARGIN)
        assert all(set(r.accepted_by_source) <= {"this chat"} for r in report.runs if r.config == pick["config"])


def test_autotune_picks_the_fastest_and_returns_a_preset(tiny_target, tiny_draft):
    report = autotune(BenchOptions(tiny_target, draft=tiny_draft, prompts=PROMPTS, max_tokens=16, threads=1),
                      "quick")
    overall = [s for s in report.summaries if s.category == "all"]
    best = max(overall, key=lambda s: s.decode_tps)
    p = report.autotune
    assert p["decode_tps"] >= 0.97 * best.decode_tps  # the pick is the best, or "off" within the margin
    assert p["decode_tps"] >= p["off_decode_tps"]
    assert {"target", "draft", "speculation", "draft_max", "adaptive", "threads", "measured"} <= set(p)
    assert p["mode"] == "quick" and not report.cancelled and not report.autotune_error
    assert [c.draft_max for c in report.configs if c.speculative and not c.adaptive] == [2, 4, 8]


def test_a_cancelled_autotune_keeps_its_partial_runs_and_their_pick(tiny_target, tiny_draft):
    cancel = threading.Event()

    def progress(p):
        if p.phase == "run" and p.done >= 2:
            cancel.set()

    opts = BenchOptions(tiny_target, draft=tiny_draft, prompts=PROMPTS, max_tokens=12, threads=1, warmup=False)
    report = autotune(opts, "thorough", progress=progress, cancel=cancel)
    assert report.cancelled and len(report.runs) == 2
    assert report.autotune is not None and report.autotune["config"] in ("off", "draft-1")
    assert "auto-tune pick from the partial sweep" in report.format_table()
    # cancelled before any run: the report, empty, and no pick
    cancel = threading.Event()
    cancel.set()
    nothing = autotune(opts, "quick", cancel=cancel)
    assert nothing.cancelled and not nothing.runs and nothing.autotune is None and not nothing.autotune_error


def test_an_autotune_with_nothing_to_pick_says_why(tiny_target, tiny_draft, tmp_path):
    """One token per run: no decode speed to compare, so no pick; the reason is kept with the report."""
    report = autotune(BenchOptions(tiny_target, draft=tiny_draft, prompts=PROMPTS[:1], threads=1, warmup=False),
                      "quick", explicit={"max_tokens": 1})
    assert report.runs and report.autotune is None
    assert report.autotune_error == "no finished runs to choose from"
    assert "auto-tune: no pick (no finished runs to choose from)" in report.format_table()
    report.write_json(tmp_path / "r.json")
    assert bench.BenchReport.load(tmp_path / "r.json").autotune_error == report.autotune_error


def test_cancel_stops_and_keeps_partial_results(tiny_target, tiny_draft):
    cancel = threading.Event()

    def progress(p):
        if p.phase == "run" and p.done >= 2:
            cancel.set()

    opts = BenchOptions(tiny_target, draft=tiny_draft, draft_max=(2, 4), prompts=PROMPTS, repeats=2,
                        max_tokens=16, threads=1, warmup=False)
    report = run_benchmark(opts, progress=progress, cancel=cancel)
    assert report.cancelled
    assert len(report.runs) == 2
    assert report.summary("off") is not None


def test_a_run_that_lost_the_cpu_is_measured_again(tiny_target, tiny_draft, monkeypatch):
    calls = []

    def contended(share, earlier):
        calls.append(share)
        return len(calls) in (5, 6, 9)  # the 5th run twice, then the 8th once

    monkeypatch.setattr(bench.machine, "contended", contended)
    opts = BenchOptions(tiny_target, draft=tiny_draft, draft_max=(2,), adaptive=False, prompts=PROMPTS, repeats=2,
                        max_tokens=8, threads=1, warmup=False)
    report = run_benchmark(opts)
    assert len(report.runs) == 2 * 2 * 2
    assert report.meta["retried_runs"] == 3
    assert "measured again" in report.format_table()
    with pytest.raises(BenchError):
        BenchOptions(tiny_target, retry_contended=-1).validate()


def test_report_round_trips_through_json(tiny_target, tiny_draft, tmp_path):
    opts = BenchOptions(tiny_target, draft=tiny_draft, draft_max=(3,), prompts=PROMPTS, repeats=1, max_tokens=8,
                        threads=1, warmup=False)
    report = run_benchmark(opts)
    report.write_json(tmp_path / "r.json")
    again = bench.BenchReport.load(tmp_path / "r.json")
    assert again.summaries == report.summaries
    assert again.format_table() == report.format_table()


def test_prompt_lookup_bench(tiny_target):
    prompts = [BenchPrompt("r", "rewrite", "the value of data is the value of data is the value of", raw=True)]
    opts = BenchOptions(tiny_target, prompt_lookup=True, draft_max=(3,), prompts=prompts, repeats=1,
                        max_tokens=24, threads=1)
    report = run_benchmark(opts)
    assert report.meta["speculation"] == "history"
    assert report.identical
    assert [c.name for c in report.configs] == ["off", "draft-3", "adaptive", bench.PAST_CHATS]
    assert report.configs[-1].draft_max == spec_defaults("history").draft_max

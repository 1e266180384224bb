"""`tandem bench` as a real subprocess on the tiny models: files written, auto-tune preset, one-line errors."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
from pathlib import Path

from tests.test_cli import assert_one_line_error, tandem


def test_bench_writes_json_csv_and_plot(tiny_target, tiny_draft, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        '{"id": "c", "category": "code", "prompt": "def return if else import class"}\n'
        '{"id": "j", "category": "json", "prompt": "json name id type items true false null"}\n',
        encoding="utf-8",
    )
    out = {ext: tmp_path / f"bench.{ext}" for ext in ("json", "csv", "png")}
    proc = tandem("bench", "-m", str(tiny_target), "--draft", str(tiny_draft), "--draft-max", "2,4",
                  "--prompts", str(prompts), "--repeats", "1", "--max-tokens", "16", "-t", "1",
                  "--json", str(out["json"]), "--csv", str(out["csv"]), "--plot", str(out["png"]))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for name in ("off", "draft-2", "draft-4", "adaptive", "speed-up vs off per category"):
        assert name in proc.stdout
    data = json.loads(out["json"].read_text())
    assert data["identical"] is True
    assert [c["name"] for c in data["configs"]] == ["off", "draft-2", "draft-4", "adaptive"]
    assert {r["prompt_id"] for r in data["runs"]} == {"c", "j"}
    rows = list(csv.DictReader(out["csv"].open()))
    assert {r["category"] for r in rows} == {"all", "code", "json"}
    assert out["png"].read_bytes()[:4] == b"\x89PNG"


def test_bench_autotune_prints_a_preset(tiny_target, tiny_draft, tmp_path):
    proc = tandem("bench", "-m", str(tiny_target), "--draft", str(tiny_draft), "--autotune", "quick",
                  "--max-tokens", "12", "-t", "1", "-q")
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith('{"preset"'))
    preset = json.loads(line)["preset"]
    assert preset["mode"] == "quick"
    assert preset["speculation"] in ("off", "draft-model")
    assert "auto-tune pick" in proc.stdout


def test_bench_bad_inputs_fail_in_one_line(tiny_target, tmp_path):
    assert_one_line_error(tandem("bench", "-m", str(tiny_target), "--draft-max", "0,3"), 2, "--draft-max")
    assert_one_line_error(tandem("bench", "-m", str(tiny_target), "--draft-max", "3,x"), 2, "--draft-max")
    assert_one_line_error(tandem("bench", "-m", str(tiny_target), "--prompts", str(tmp_path / "none.jsonl")), 1,
                          "not found")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n{oops\n', encoding="utf-8")
    assert_one_line_error(tandem("bench", "-m", str(tiny_target), "--prompts", str(bad)), 1, "line 2")
    assert_one_line_error(tandem("bench", "-m", str(tiny_target), "--autotune", "quick"), 2, "--draft")
    assert_one_line_error(tandem("bench", "-m", str(tiny_target), "--json", str(tmp_path / "no" / "x.json")), 1,
                          "folder")


def test_explicit_options_win_over_the_autotune_mode(tiny_target, tiny_draft, tmp_path):
    out = tmp_path / "r.json"
    proc = tandem("bench", "-m", str(tiny_target), "--draft", str(tiny_draft), "--autotune", "quick",
                  "--draft-max", "3", "--repeats", "2", "--max-tokens", "8", "-t", "1", "-q", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert [c["name"] for c in data["configs"]] == ["off", "draft-3", "adaptive"]  # not quick's 2,4,8
    assert (data["meta"]["repeats"], data["meta"]["max_tokens"]) == (2, 8)  # not quick's 1 and 64
    assert len({p["category"] for p in data["meta"]["prompts"]}) == len(data["meta"]["prompts"])  # quick's prompts
    assert data["autotune"]["mode"] == "quick"


def test_ctrl_c_prints_the_partial_results_and_their_pick_and_exits_130(tiny_target, tiny_draft):
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "bench", "-m", str(tiny_target), "--draft", str(tiny_draft),
         "--autotune", "thorough", "--repeats", "100", "--max-tokens", "16", "-t", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    try:
        for line in proc.stderr:  # not a terminal: one progress line per run
            if line.startswith("[") and "/" in line:
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "cancelled (partial results)" in err and "Traceback" not in err
    assert "off" in out and "auto-tune pick from the partial sweep" in out
    assert json.loads(next(ln for ln in out.splitlines() if ln.startswith('{"preset"')))["preset"]["mode"] == "thorough"

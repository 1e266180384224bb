"""`tandem` on the command line: real subprocesses, real (tiny) models, one clear line for every bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def tandem(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).resolve().parents[1],
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]


def test_inspect_prints_metadata_and_json(tiny_target):
    proc = tandem("inspect", str(tiny_target))
    assert proc.returncode == 0, proc.stderr
    assert "llama" in proc.stdout
    proc = tandem("inspect", str(tiny_target), "--json")
    data = json.loads(proc.stdout)
    assert data["architecture"] == "llama"
    assert data["block_count"] == 4


def test_check_draft_exit_codes(tiny_target, tiny_draft, tiny_other_vocab):
    ok = tandem("check-draft", str(tiny_target), str(tiny_draft))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("compatible")
    bad = tandem("check-draft", str(tiny_target), str(tiny_other_vocab))
    assert bad.returncode == 3
    assert bad.stdout.startswith("incompatible")
    assert "token" in bad.stdout


def test_generate_json_with_draft_reports_stats_and_matches_plain(tiny_target, tiny_draft):
    common = ["generate", "-m", str(tiny_target), "--raw", "--temperature", "0", "-n", "40", "-p", "the value of",
              "--json", "-t", "2"]
    plain = json.loads(tandem(*common).stdout)
    spec_proc = tandem(*common, "--draft", str(tiny_draft), "--draft-max", "4")
    assert spec_proc.returncode == 0, spec_proc.stderr
    spec = json.loads(spec_proc.stdout)
    assert spec["tokens"] == plain["tokens"]
    assert spec["text"] == plain["text"]
    stats = spec["stats"]
    for key in ("decode_tokens_per_second", "drafted", "accepted", "rejected", "acceptance_rate", "prompt_tokens",
                "prompt_tokens_per_second", "time_to_first_token", "generated_tokens", "draft_seconds",
                "target_seconds"):
        assert key in stats
    assert stats["drafted"] > 0 and stats["generated_tokens"] == 40
    assert plain["stats"]["drafted"] == 0


def test_generate_streams_text_and_a_stats_line(tiny_target, tmp_path):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("def return if else", encoding="utf-8")
    proc = tandem("generate", "-m", str(tiny_target), "--prompt-lookup", "--temperature", "0", "-n", "16",
                  "-f", str(prompt), "-t", "2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    assert "tok/s" in proc.stderr and "stop: max_tokens" in proc.stderr


def test_prompt_lookup_adaptive_by_default_and_identical_either_way(tiny_target):
    common = ["generate", "-m", str(tiny_target), "--raw", "--temperature", "0", "-n", "40", "--json", "-t", "2",
              "-p", "one two three one two three one two"]
    plain = json.loads(tandem(*common).stdout)
    for extra in ([], ["--no-adaptive", "--draft-max", "4"], ["--adaptive", "--draft-max", "8"]):
        proc = tandem(*common, "--prompt-lookup", *extra)
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        assert out["tokens"] == plain["tokens"], extra
    bad = tandem(*common, "--prompt-lookup", "--draft-max", "2", "--draft-min", "3")
    assert_one_line_error(bad, 2, "--draft-min (3) is larger than --draft-max (2)")


def test_the_same_request_again_drafts_from_past_chats_unless_switched_off(tiny_target, tmp_path, monkeypatch):
    monkeypatch.setenv("TANDEM_DATA_DIR", str(tmp_path / "data"))
    common = ["generate", "-m", str(tiny_target), "--temperature", "0", "-n", "60", "--json", "-t", "2",
              "--prompt-lookup", "-p", "the value of data is in the list of items"]
    first = json.loads(tandem(*common).stdout)
    history = tmp_path / "data" / "history"
    assert len(list(history.glob("*.tokens"))) == 1  # the turn was remembered, for this tokenizer family
    again = json.loads(tandem(*common).stdout)
    assert again["tokens"] == first["tokens"]
    assert again["stats"]["accepted_by_source"].get("past chats", 0) > 0.8 * (len(first["tokens"]) - 1)
    # off: nothing read, nothing written
    sizes = [f.stat().st_size for f in history.glob("*.tokens")]
    off = json.loads(tandem(*common, "--no-past-chats", "-p", "json name id type items").stdout)
    assert "past chats" not in off["stats"]["accepted_by_source"]
    assert [f.stat().st_size for f in history.glob("*.tokens")] == sizes
    blind = json.loads(tandem(*common, "--no-past-chats").stdout)
    assert "past chats" not in blind["stats"]["accepted_by_source"]


@pytest.mark.parametrize(
    "content, needles",
    [
        (None, ["no such file"]),
        (b"", ["empty"]),
        (b"PK\x03\x04" + b"\0" * 64, ["not a gguf"]),
    ],
)
def test_bad_model_files_give_one_line(tmp_path, content, needles):
    path = tmp_path / "model.gguf"
    if content is not None:
        path.write_bytes(content)
    for args in (("inspect", str(path)), ("generate", "-m", str(path), "-p", "hi")):
        assert_one_line_error(tandem(*args), 1, *needles)


def test_truncated_model_gives_one_line(tiny_target, tmp_path):
    data = tiny_target.read_bytes()
    for cut in (10, 100, 5000):
        bad = tmp_path / f"cut{cut}.gguf"
        bad.write_bytes(data[:cut])
        assert_one_line_error(tandem("generate", "-m", str(bad), "-p", "hi"), 1, "truncated")


def test_incompatible_draft_is_refused_with_the_reason(tiny_target, tiny_other_vocab):
    proc = tandem("generate", "-m", str(tiny_target), "--draft", str(tiny_other_vocab), "-p", "hi", "-n", "4")
    assert_one_line_error(proc, 3, "draft model refused", "tokenizer")


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--draft-max", "0"], "between 1 and 32"),
        (["--draft-max", "x"], "whole number"),
        (["--temperature", "-2"], "temperature"),
        (["--ctx", "8"], "--ctx"),
        (["--bogus"], "unrecognized"),
        (["--draft-min", "6", "--draft-max", "3"], "larger than"),
    ],
)
def test_bad_options_exit_2_with_one_line(tiny_target, extra, needle):
    proc = tandem("generate", "-m", str(tiny_target), "-p", "hi", *extra)
    assert_one_line_error(proc, 2, needle)


def test_context_too_small_for_the_prompt(tiny_target):
    proc = tandem("generate", "-m", str(tiny_target), "--raw", "--ctx", "16", "-p", "the value of data " * 40)
    assert_one_line_error(proc, 1, "context")


def test_missing_prompt_file_and_unknown_command(tiny_target):
    assert_one_line_error(tandem("generate", "-m", str(tiny_target), "-f", "/nonexistent/p.txt"), 1, "not found")
    assert_one_line_error(tandem("frobnicate"), 2, "unknown command")


def test_setup_fetches_the_demo_model_idempotently():
    proc = tandem("setup", "--quiet")
    assert proc.returncode == 0, proc.stderr
    path = proc.stdout.strip().removeprefix("demo model ready: ")
    assert path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert Path(path).stat().st_size > 90_000_000


def test_the_parsers_defaults_are_the_engines():
    """`generate`, `chat` and `bench` start from what the engine defines (app.engine.defaults), never their own."""
    from dataclasses import fields

    from app.cli import _spec_from_args, build_parser
    from app.engine.bench import BenchOptions
    from app.engine.defaults import MAX_TOKENS, spec_defaults
    from app.engine.sampling import SamplingParams
    from app.engine.session import ModelSettings
    from app.engine.speculative import SpecSettings

    parser = build_parser()

    def generate(*extra: str):
        return parser.parse_args(["generate", "-m", "t.gguf", "-p", "hi", *extra])

    args = generate()
    sampling = {f.name: getattr(args, f.name) for f in fields(SamplingParams) if hasattr(args, f.name)}
    assert set(sampling) == {"temperature", "top_k", "top_p", "min_p", "repeat_penalty", "seed"}
    assert SamplingParams(**sampling) == SamplingParams()
    load = ModelSettings(Path("t.gguf"))
    assert (args.max_tokens, args.ctx, args.gpu_layers, args.draft_gpu_layers) == (
        MAX_TOKENS, load.n_ctx, load.n_gpu_layers, load.n_gpu_layers)
    for extra, source in (((), "off"), (("--draft", "d.gguf"), "draft-model"), (("--prompt-lookup",), "history")):
        assert _spec_from_args(generate(*extra)) == spec_defaults(source), source
    given = generate("--prompt-lookup", "--draft-max", "4", "--no-adaptive", "--draft-min", "2", "--draft-p-min", "0.5")
    assert _spec_from_args(given) == SpecSettings(draft_max=4, draft_min=2, draft_p_min=0.5, adaptive=False)
    chat = parser.parse_args(["chat"])
    assert (chat.temperature, chat.max_tokens, chat.ctx) == (SamplingParams().temperature, MAX_TOKENS, load.n_ctx)
    b = parser.parse_args(["bench", "-m", "t.gguf"])
    options = BenchOptions(Path("t.gguf"))
    assert (b.ctx, b.gpu_layers, b.draft_gpu_layers) == (options.n_ctx, options.gpu_layers, options.draft_gpu_layers)
    assert (b.draft_max, b.repeats, b.max_tokens) == (None, None, None)  # unset: BenchOptions' (or the mode's)

"""The local library: scanning folders, the metadata cache, split and broken files, drafts, deleting."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest

import app.library.local as local
from app.engine.compat import check_draft_compatibility
from app.engine.gguf_info import ModelInfo, inspect_gguf
from app.library.local import (
    LocalLibrary,
    LocalModel,
    default_cache_path,
    default_models_folder,
    reveal_in_file_manager,
    tokenizer_family,
)

# ---------------------------------------------------------------------------------------------------------
# helpers


def put(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def write_gguf(path: Path, *, arch: str = "llama", n_layer: int = 3, split_max_tensors: int = 0) -> Path:
    """A small llama-like GGUF (zero weights), optionally split into parts of `split_max_tensors` tensors."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"▁w{i}" for i in range(61)]
    w = gguf.GGUFWriter(str(path), arch, split_max_tensors=split_max_tensors)
    w.add_name(path.stem)
    w.add_context_length(2048)
    w.add_block_count(n_layer)
    w.add_embedding_length(8)
    w.add_head_count(2)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_tensor("token_embd.weight", np.zeros((len(tokens), 8), dtype=np.float32))
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_q.weight", np.zeros((8, 8), dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_up.weight", np.zeros((16, 8), dtype=np.float32))
    w.add_tensor("output.weight", np.zeros((len(tokens), 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def parse_count(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every path the library hands to inspect_gguf."""
    calls: list[Path] = []
    real = local.inspect_gguf

    def counting(path: Path) -> ModelInfo:
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(local, "inspect_gguf", counting)
    return calls


@pytest.fixture
def trio(tmp_path: Path, tiny_target: Path, tiny_draft: Path, tiny_other_vocab: Path) -> dict[str, Path]:
    """The three tiny models in an LM Studio-like folder tree."""
    root = tmp_path / "models"
    return {
        "target": put(tiny_target, root / "tandem-tests" / "Tiny-Target-GGUF" / "tiny-target.gguf"),
        "draft": put(tiny_draft, root / "tandem-tests" / "Tiny-Draft-GGUF" / "tiny-draft.gguf"),
        "other": put(tiny_other_vocab, root / "someone" / "Other-GGUF" / "tiny-other-vocab.gguf"),
    }


def by_name(models: list[LocalModel]) -> dict[str, LocalModel]:
    return {m.name: m for m in models}


# ---------------------------------------------------------------------------------------------------------
# scanning


def test_scan_nested_folders_and_lmstudio_layout(
    tmp_path: Path, trio: dict[str, Path], tiny_draft: Path
) -> None:
    other_folder = tmp_path / "elsewhere"
    deep = put(tiny_draft, other_folder / "a" / "b" / "c" / "deep-copy.gguf")
    put(tiny_draft, tmp_path / "models" / ".download-123" / "partial.gguf")  # hidden folder: skipped
    (tmp_path / "models" / "notes.txt").write_text("not a model")
    (tmp_path / "models" / "tandem-tests" / "x.gguf.partial-1-abc").write_bytes(b"GGUF")

    progress: list[tuple[int, int, Path]] = []
    lib = LocalLibrary([tmp_path / "models", other_folder, tmp_path / "models"], None)  # one folder twice
    models = lib.scan(lambda done, total, path: progress.append((done, total, path)))

    assert [m.name for m in models] == ["tiny-draft", "tiny-draft", "tiny-other-vocab", "tiny-target"]
    assert sorted(m.path for m in models) == sorted([*trio.values(), deep])
    assert lib.models() == models
    assert progress[-1][:2] == (4, 4) and len(progress) == 4

    target = by_name(models)["tiny-target"]
    info = inspect_gguf(trio["target"])
    assert target.architecture == "llama" and target.quantization == "F32"
    assert target.block_count == 4 and target.context_length == 4096
    assert target.parameter_count == info.parameter_count
    assert target.file_size == trio["target"].stat().st_size
    assert target.error is None and not target.broken and target.kind == "model"
    assert target.tokenizer_family == tokenizer_family(info)
    assert lib.folder_errors == []
    assert lib.find(trio["draft"]).path == trio["draft"]
    assert lib.find(tmp_path / "unknown.gguf") is None


def test_missing_folder_is_reported_not_fatal(tmp_path: Path, trio: dict[str, Path]) -> None:
    lib = LocalLibrary([tmp_path / "nope", tmp_path / "models"], None)
    assert len(lib.scan()) == 3
    assert lib.folder_errors == [f"folder not found: {tmp_path / 'nope'}"]


def test_second_scan_uses_the_cache(
    tmp_path: Path, trio: dict[str, Path], parse_count: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache" / "library.json"
    first = LocalLibrary([tmp_path / "models"], cache).scan()
    assert len(parse_count) == 3 and cache.is_file()

    token_reads: list[Path] = []
    real_tokens = ModelInfo.token_bytes
    monkeypatch.setattr(
        ModelInfo, "token_bytes", lambda self: token_reads.append(self.path) or real_tokens(self)
    )
    parse_count.clear()
    again = LocalLibrary([tmp_path / "models"], cache)  # a fresh process: only the cache file is shared
    assert again.scan() == first
    assert parse_count == [] and token_reads == []


def test_changed_file_is_parsed_again(
    tmp_path: Path, trio: dict[str, Path], parse_count: list[Path], tiny_draft: Path
) -> None:
    cache = tmp_path / "cache.json"
    lib = LocalLibrary([tmp_path / "models"], cache)
    lib.scan()
    parse_count.clear()

    st = trio["target"].stat()
    os.utime(trio["target"], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    lib.scan()
    assert parse_count == [trio["target"]]

    # replaced by another model under the same name: new metadata
    parse_count.clear()
    shutil.copyfile(tiny_draft, trio["other"])
    models = LocalLibrary([tmp_path / "models"], cache).scan()
    assert parse_count == [trio["other"]]
    assert next(m for m in models if m.path == trio["other"]).name == "tiny-draft"


def test_damaged_cache_is_ignored(tmp_path: Path, trio: dict[str, Path], parse_count: list[Path]) -> None:
    cache = tmp_path / "cache.json"
    for garbage in (
        "{not json",
        json.dumps({"version": 1, "entries": {str(trio["target"]): {"stamp": "x"}}}),
    ):
        cache.write_text(garbage)
        parse_count.clear()
        assert len(LocalLibrary([tmp_path / "models"], cache).scan()) == 3
        assert len(parse_count) >= 1
    assert json.loads(cache.read_text())["version"] == 1


def test_split_model_is_one_entry(tmp_path: Path, parse_count: list[Path]) -> None:
    folder = tmp_path / "models" / "pub" / "Big-GGUF"
    folder.mkdir(parents=True)
    write_gguf(folder / "big.gguf", split_max_tensors=3)
    parts = sorted(folder.glob("big-*-of-*.gguf"))
    assert len(parts) >= 3

    models = LocalLibrary([tmp_path / "models"], None).scan()
    assert len(models) == 1
    (big,) = models
    assert big.path == parts[0] and big.split_paths == tuple(parts) and big.files == tuple(parts)
    assert big.name == "big" and big.error is None and big.block_count == 3
    assert big.file_size == sum(p.stat().st_size for p in parts)
    assert parse_count == [parts[0]]


def test_a_single_part_split_name_is_an_ordinary_file(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    one = write_gguf(folder / "solo-Q8_0-00001-of-00001.gguf")
    (m,) = LocalLibrary([folder], None).scan()
    assert m.error is None and m.path == one and m.split_paths == () and m.files == (one,)
    assert m.file_name == "solo-Q8_0-00001-of-00001"
    assert LocalLibrary([], None).describe(one).split_paths == ()


@pytest.mark.parametrize("missing", [1, 0])
def test_split_model_with_a_missing_part_is_broken(tmp_path: Path, missing: int) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    write_gguf(folder / "big.gguf", split_max_tensors=3)
    parts = sorted(folder.glob("big-*-of-*.gguf"))
    parts[missing].unlink()

    (big,) = LocalLibrary([folder], None).scan()
    assert big.broken and big.path == parts[0] and big.name == "big"
    assert big.error == (
        f"split GGUF is incomplete: part {missing + 1} of {len(parts)} is missing ({parts[missing].name})"
    )
    assert big.file_size == sum(p.stat().st_size for p in parts if p.exists())
    assert big.missing_files() == [parts[missing]]


def test_unreadable_files_are_listed_with_their_error(tmp_path: Path, tiny_target: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "text.gguf").write_text("this is not a model")
    (folder / "empty.gguf").write_bytes(b"")
    (folder / "truncated.gguf").write_bytes(tiny_target.read_bytes()[:5000])
    (folder / "no-arch.gguf").write_bytes(b"GGUF" + (3).to_bytes(4, "little") + bytes(16))
    put(tiny_target, folder / "good.gguf")

    models = by_name(LocalLibrary([folder], None).scan())
    assert set(models) == {"text", "empty", "truncated", "no-arch", "tiny-target"}
    assert "not a GGUF file" in models["text"].error
    assert "empty file" in models["empty"].error
    assert "truncated GGUF file" in models["truncated"].error
    assert "not a model GGUF" in models["no-arch"].error
    for name in ("text", "empty", "truncated", "no-arch"):
        m = models[name]
        assert m.broken and "\n" not in m.error and m.architecture is None and m.tokenizer_family is None
    assert models["truncated"].file_size == 5000
    assert not models["tiny-target"].broken


def test_non_model_ggufs_are_kept_apart(tmp_path: Path, tiny_target: Path) -> None:
    folder = tmp_path / "models" / "pub" / "Vision-GGUF"
    put(tiny_target, folder / "vision-Q4_K_M.gguf")
    (folder / "mmproj-model-f16.gguf").write_bytes(b"GGUF not even parsed")
    write_gguf(folder / "projector.gguf", arch="clip")

    lib = LocalLibrary([tmp_path / "models"], None)
    assert [m.path.name for m in lib.scan()] == ["vision-Q4_K_M.gguf"]
    kinds = {m.path.name: m.kind for m in lib.non_models()}
    assert kinds == {"mmproj-model-f16.gguf": "mmproj", "projector.gguf": "mmproj"}


def test_describe_a_file_outside_the_folders(
    tmp_path: Path, tiny_target: Path, parse_count: list[Path]
) -> None:
    lib = LocalLibrary([], tmp_path / "cache.json")
    m = lib.describe(tiny_target)
    assert m.name == "tiny-target" and m.path == tiny_target and m.error is None
    assert lib.describe(tiny_target) == m and parse_count == [tiny_target]
    gone = lib.describe(tmp_path / "gone.gguf")
    assert gone.broken and "no such file" in gone.error


# ---------------------------------------------------------------------------------------------------------
# drafts


def test_compatible_drafts_give_the_real_verdicts(
    tmp_path: Path, trio: dict[str, Path], tiny_draft: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(tiny_draft, tmp_path / "models" / "copy" / "tiny-draft-copy.gguf")
    (tmp_path / "models" / "broken.gguf").write_bytes(b"nope")
    lib = LocalLibrary([tmp_path / "models"], tmp_path / "cache.json")
    models = lib.scan()
    target = next(m for m in models if m.path == trio["target"])

    checks: list[tuple[Path, Path]] = []
    real_check = local.check_draft_compatibility

    def counting(t: ModelInfo, d: ModelInfo):
        checks.append((t.path, d.path))
        return real_check(t, d)

    monkeypatch.setattr(local, "check_draft_compatibility", counting)
    result = lib.compatible_drafts(target)

    assert target not in [m for m, _ in result]
    names = [(m.path.name, v.compatible) for m, v in result]
    assert names == [
        ("tiny-draft-copy.gguf", True),  # same size and name: by path
        ("tiny-draft.gguf", True),
        ("tiny-other-vocab.gguf", False),
        ("broken.gguf", False),
    ]
    verdicts = {m.path.name: v for m, v in result}
    t_info = inspect_gguf(trio["target"])
    assert verdicts["tiny-draft.gguf"] == check_draft_compatibility(t_info, inspect_gguf(trio["draft"]))
    assert verdicts["tiny-other-vocab.gguf"] == check_draft_compatibility(t_info, inspect_gguf(trio["other"]))
    assert verdicts["tiny-other-vocab.gguf"].reason.startswith("different tokenizer: token ")
    assert "not a GGUF file" in verdicts["broken.gguf"].reason
    # the two drafts share a tokenizer family: one check for both (and the target's own family)
    assert len(checks) == 2

    checks.clear()
    assert lib.compatible_drafts(target) == result and checks == []

    # a fresh library from the cache file: no parsing, same verdicts
    monkeypatch.setattr(local, "inspect_gguf", lambda p: pytest.fail(f"parsed {p}"))
    again = LocalLibrary([tmp_path / "models"], tmp_path / "cache.json")
    again.scan()
    assert [(m.path, v) for m, v in again.compatible_drafts(target)] == [(m.path, v) for m, v in result]


def test_families(trio: dict[str, Path], tmp_path: Path) -> None:
    models = {m.path: m for m in LocalLibrary([tmp_path / "models"], None).scan()}
    assert models[trio["target"]].tokenizer_family == models[trio["draft"]].tokenizer_family
    assert models[trio["target"]].tokenizer_family != models[trio["other"]].tokenizer_family
    assert len(models[trio["target"]].tokenizer_family) == 16


def test_broken_target_has_no_drafts(tmp_path: Path, trio: dict[str, Path]) -> None:
    (tmp_path / "models" / "bad.gguf").write_bytes(b"nope")
    lib = LocalLibrary([tmp_path / "models"], None)
    bad = next(m for m in lib.scan() if m.broken)
    result = lib.compatible_drafts(bad)
    assert len(result) == 3 and not any(v for _, v in result)
    assert all(v.reason.startswith("the target cannot be used") for _, v in result)


# ---------------------------------------------------------------------------------------------------------
# file actions


def test_delete_removes_every_part(tmp_path: Path, trio: dict[str, Path]) -> None:
    folder = tmp_path / "models" / "pub" / "Big-GGUF"
    folder.mkdir(parents=True)
    write_gguf(folder / "big.gguf", split_max_tensors=3)
    parts = sorted(folder.glob("big-*-of-*.gguf"))
    cache = tmp_path / "cache.json"
    lib = LocalLibrary([tmp_path / "models"], cache)
    big = next(m for m in lib.scan() if m.name == "big")

    assert lib.delete(big) == parts
    assert not any(p.exists() for p in parts)
    assert big not in lib.models() and len(lib.models()) == 3
    assert str(parts[0]) not in json.loads(cache.read_text())["entries"]
    assert [m.name for m in lib.scan()] == ["tiny-draft", "tiny-other-vocab", "tiny-target"]

    target = lib.find(trio["target"])
    assert lib.delete(target) == [trio["target"]] and not trio["target"].exists()
    assert lib.delete(target) == []  # already gone: nothing to do


def test_delete_of_a_broken_split_removes_the_parts_left(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    write_gguf(folder / "big.gguf", split_max_tensors=3)
    parts = sorted(folder.glob("big-*-of-*.gguf"))
    parts[1].unlink()
    lib = LocalLibrary([folder], None)
    (big,) = lib.scan()
    assert lib.delete(big) == [p for i, p in enumerate(parts) if i != 1]
    assert list(folder.iterdir()) == [] and lib.scan() == []


def test_reveal_in_file_manager(tmp_path: Path, tiny_target: Path) -> None:
    model = put(tiny_target, tmp_path / "m" / "model.gguf")
    ran: list[list[str]] = []

    ok = reveal_in_file_manager(model, platform="linux", run=ran.append, which=lambda n: f"/usr/bin/{n}")
    assert ok and ran[-1] == ["/usr/bin/xdg-open", str(model.parent)]
    assert reveal_in_file_manager(model, platform="darwin", run=ran.append) and ran[-1] == [
        "open",
        "-R",
        str(model),
    ]
    assert reveal_in_file_manager(model, platform="win32", run=ran.append)
    assert ran[-1] == ["explorer", f"/select,{model}"]

    no_opener = reveal_in_file_manager(model, platform="linux", run=ran.append, which=lambda n: None)
    assert not no_opener and "xdg-open" in no_opener.reason and str(model.parent) in no_opener.reason

    def broken(cmd: list[str]) -> None:
        raise PermissionError(13, "Permission denied")

    failed = LocalLibrary.reveal_in_file_manager(
        model, platform="linux", run=broken, which=lambda n: "/x/xdg-open"
    )
    assert not failed and "Permission denied" in failed.reason

    gone = reveal_in_file_manager(tmp_path / "nowhere" / "x.gguf", run=ran.append)
    assert not gone and "no longer exists" in gone.reason


# ---------------------------------------------------------------------------------------------------------
# small things


def test_default_locations_follow_tandem_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_DATA_DIR", str(tmp_path / "data"))
    assert default_models_folder() == tmp_path / "data" / "models"
    assert default_cache_path().parent == tmp_path / "data"

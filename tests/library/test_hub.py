"""app.library.hub against the local Hub server (tests/hub_server.py) through the real huggingface_hub."""

from __future__ import annotations

import hashlib

import pytest

from app.library.hub import (
    HubClient,
    HubError,
    HubRepo,
    family_name,
    fit_for_machine,
    parameter_billions,
    quant_from_filename,
    rank_draft_candidates,
    suggested_draft_range,
)

GIB = 1024**3


@pytest.mark.parametrize(
    ("name", "quant"),
    [
        ("Qwen2.5-7B-Instruct-Q5_K_M.gguf", "Q5_K_M"),
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"),
        ("model-IQ4_XS.gguf", "IQ4_XS"),
        ("m-IQ2_XXS.gguf", "IQ2_XXS"),
        ("gemma-3-270m-it-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"),
        ("llama-bf16.gguf", "BF16"),
        ("ggml-model-fp16.gguf", "F16"),
        ("big-Q8_0-00001-of-00003.gguf", "Q8_0"),
        ("sub/dir/x.Q6_K.gguf", "Q6_K"),
        ("plain.gguf", None),
        ("Q4_K_M-notes-Q3_K_S.gguf", "Q3_K_S"),
    ],
)
def test_quant_from_filename(name: str, quant: str | None) -> None:
    assert quant_from_filename(name) == quant


@pytest.mark.parametrize(
    ("name", "billions", "family"),
    [
        ("Qwen2.5-7B-Instruct", 7.0, "Qwen2.5"),
        ("SmolLM2-135M-Instruct", 0.135, "SmolLM2"),
        ("Mixtral-8x7B-v0.1", 56.0, "Mixtral"),
        ("Llama-3.2-1B-Instruct", 1.0, "Llama-3.2"),
        ("Qwen3-30B-A3B", 30.0, "Qwen3"),
        ("Phi-3.5-mini-instruct", None, "Phi-3.5-mini-instruct"),
    ],
)
def test_names(name: str, billions: float | None, family: str) -> None:
    assert parameter_billions(name) == billions
    assert family_name(name) == family


def test_draft_range_follows_the_rule_of_thumb() -> None:
    # about 1B for 7B, 3B for 14B, 7B for 32B
    for target, expected in ((7, 1), (14, 3), (32, 7)):
        lo, ideal, hi = suggested_draft_range(target)
        assert lo < expected < hi
        assert abs(ideal - expected) / expected < 0.25, (target, ideal)


def test_rank_draft_candidates_keeps_family_and_size() -> None:
    repos = [
        HubRepo("Qwen/Qwen2.5-0.5B-Instruct-GGUF", downloads=900),
        HubRepo("Qwen/Qwen2.5-1.5B-Instruct-GGUF", downloads=500),
        HubRepo("someone/Qwen2.5-1.5B-Instruct-GGUF", downloads=9000),
        HubRepo("Qwen/Qwen2.5-7B-Instruct-GGUF", downloads=10000),  # the target size itself
        HubRepo("Qwen/Qwen2.5-3B-Instruct-GGUF", downloads=100),
        HubRepo("meta/Llama-3.2-1B-GGUF", downloads=10**6),  # other family
        HubRepo("Qwen/Qwen2.5-Coder-GGUF", downloads=10**6),  # no size: cannot judge
    ]
    ranked = rank_draft_candidates(repos, "Qwen2.5-7B-Instruct", 7.0, "Qwen")
    ids = [s.repo.repo_id for s in ranked]
    assert ids[0] == "Qwen/Qwen2.5-1.5B-Instruct-GGUF"  # nearest to ~1.2B, same publisher first
    assert ids[1] == "someone/Qwen2.5-1.5B-Instruct-GGUF"
    assert "Qwen/Qwen2.5-7B-Instruct-GGUF" not in ids
    assert "meta/Llama-3.2-1B-GGUF" not in ids
    assert "Qwen/Qwen2.5-Coder-GGUF" not in ids
    assert "Qwen/Qwen2.5-0.5B-Instruct-GGUF" in ids
    assert "Qwen/Qwen2.5-3B-Instruct-GGUF" not in ids  # 3B is for 14B targets: too slow to draft a 7B
    assert "same publisher" in ranked[0].reason


def _res(ram_gib: float, vram_gib: float = 0.0) -> dict[str, int]:
    return {"available_ram": int(ram_gib * GIB), "free_vram": int(vram_gib * GIB)}


def test_fit_badge() -> None:
    assert fit_for_machine(4 * GIB, **_res(16)).level == "fits"
    assert fit_for_machine(4 * GIB, **_res(5.2)).level == "tight"
    assert fit_for_machine(8 * GIB, **_res(4)).level == "too-big"
    assert fit_for_machine(8 * GIB, **_res(4, vram_gib=8)).level == "fits"  # layers can go to the GPU
    assert fit_for_machine(None, **_res(4)).level == "unknown"
    assert "needs about" in fit_for_machine(4 * GIB, **_res(16)).detail


def _populate(hub) -> None:
    hub.add_repo("TheOrg/Tiny-7B-Instruct-GGUF", {
        "Tiny-7B-Instruct-Q4_K_M.gguf": b"A" * 30_000,
        "Tiny-7B-Instruct-Q8_0.gguf": b"B" * 50_000,
        "Tiny-7B-Instruct-F16-00001-of-00002.gguf": b"C" * 40_000,
        "Tiny-7B-Instruct-F16-00002-of-00002.gguf": b"D" * 20_000,
        "mmproj-Tiny-7B-f16.gguf": b"E" * 5_000,
        "README.md": b"# tiny",
    }, downloads=500, likes=3, tags=["gguf"], last_modified="2025-05-01T00:00:00.000Z")  # fmt: skip
    hub.add_repo("TheOrg/Tiny-1B-Instruct-GGUF", {"Tiny-1B-Instruct-Q4_K_M.gguf": b"x" * 10_000},
                 downloads=90, likes=50, tags=["gguf"], last_modified="2025-09-01T00:00:00.000Z")  # fmt: skip
    hub.add_repo("Other/Tiny-0.5B-GGUF", {"Tiny-0.5B-Q4_0.gguf": b"y" * 9_000}, downloads=2000, tags=["gguf"],
                 last_modified="2024-01-01T00:00:00.000Z")  # fmt: skip
    hub.add_repo("TheOrg/Tiny-7B-safetensors", {"model.safetensors": b"z" * 20_000}, downloads=10**6)


def test_search_sorts_and_filters_gguf(hub) -> None:
    _populate(hub)
    client = HubClient(endpoint=hub.url)
    by_downloads = [r.repo_id for r in client.search("tiny")]
    assert by_downloads == ["Other/Tiny-0.5B-GGUF", "TheOrg/Tiny-7B-Instruct-GGUF", "TheOrg/Tiny-1B-Instruct-GGUF"]
    assert [r.repo_id for r in client.search("tiny", sort="likes")][0] == "TheOrg/Tiny-1B-Instruct-GGUF"
    assert [r.repo_id for r in client.search("tiny", sort="recent")][0] == "TheOrg/Tiny-1B-Instruct-GGUF"
    assert [r.repo_id for r in client.search("1B")] == ["TheOrg/Tiny-1B-Instruct-GGUF"]
    first = client.search("tiny-7b")[0]
    assert first.downloads == 500 and first.parameters == 7.0 and first.author == "TheOrg"
    with pytest.raises(HubError, match="unknown sort"):
        client.search("x", sort="stars")


def test_files_lists_quants_sizes_sha_and_groups_splits(hub) -> None:
    _populate(hub)
    listing = HubClient(endpoint=hub.url).files("TheOrg/Tiny-7B-Instruct-GGUF")
    by_quant = {f.quant: f for f in listing.files if not f.is_projector}
    assert list(by_quant) == ["Q4_K_M", "Q8_0", "F16"]  # smallest quantization first
    q4 = by_quant["Q4_K_M"]
    assert q4.size == 30_000
    assert q4.parts[0].sha256 == hashlib.sha256(b"A" * 30_000).hexdigest()
    f16 = by_quant["F16"]
    assert [p.filename for p in f16.parts] == ["Tiny-7B-Instruct-F16-00001-of-00002.gguf",
                                                "Tiny-7B-Instruct-F16-00002-of-00002.gguf"]  # fmt: skip
    assert f16.size == 60_000 and "2 parts" in f16.display_name
    assert listing.files[-1].is_projector  # projectors last
    assert len(listing.revision) == 40 and all(f.revision == listing.revision for f in listing.files)
    assert all(not f.filename.endswith(".md") for f in listing.files)


def test_a_single_part_split_name_is_one_ordinary_file(hub) -> None:
    hub.add_repo("TheOrg/Solo-GGUF", {"Solo-Q8_0-00001-of-00001.gguf": b"S" * 1_000,
                                      "Solo-Q4_0-00002-of-00002.gguf": b"T" * 1_000})  # fmt: skip
    (solo,) = HubClient(endpoint=hub.url).files("TheOrg/Solo-GGUF").files  # the lone part 2 of 2 is left out
    assert [p.filename for p in solo.parts] == ["Solo-Q8_0-00001-of-00001.gguf"]
    assert solo.display_name == "Solo-Q8_0-00001-of-00001.gguf" and solo.quant == "Q8_0"


def test_errors_are_one_line(hub) -> None:
    _populate(hub)
    client = HubClient(endpoint=hub.url)
    with pytest.raises(HubError) as e:
        client.files("nobody/nothing")
    assert e.value.kind == "not-found" and "\n" not in str(e.value)
    url = hub.url
    hub.stop()
    with pytest.raises(HubError) as e:
        HubClient(endpoint=url).search("tiny")
    assert e.value.kind == "offline"
    assert "can't reach the Hugging Face Hub" in str(e.value)


def test_suggest_drafts_from_the_hub(hub) -> None:
    _populate(hub)
    got = HubClient(endpoint=hub.url).suggest_drafts("Tiny-7B-Instruct", 7.0, "TheOrg")
    assert [s.repo.repo_id for s in got] == ["TheOrg/Tiny-1B-Instruct-GGUF", "Other/Tiny-0.5B-GGUF"]


def test_token_is_not_in_repr() -> None:
    c = HubClient(token="hf_secretsecret123", endpoint="http://x")
    assert "hf_secret" not in repr(c)


def test_a_reset_connection_counts_as_offline() -> None:
    import httpx2

    from app.library.hub import hub_error

    assert hub_error(httpx2.ReadError("connection reset by peer")).kind == "offline"
    assert hub_error(httpx2.ConnectError("refused")).kind == "offline"
    assert hub_error(ValueError("odd")).kind == "error"

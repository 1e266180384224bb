"""The Hugging Face Hub, seen from Tandem: search GGUF repositories, list their files, suggest drafts.

Everything goes through ``huggingface_hub`` (no hand-written HTTP). The endpoint is huggingface_hub's
(``HF_ENDPOINT``) unless one is passed; tests point it at a local server (tests/hub_server.py).

Errors reach the user as one line, never a traceback: every call raises `HubError` whose ``kind`` is one
of ``offline`` (the Hub cannot be reached), ``gated`` (the repository needs an accepted licence and a
token), ``auth`` (the token was refused), ``not-found`` or ``error``.

Quantization labels are read from file names (``Q5_K_M``, ``IQ4_XS``, ``F16``…), split GGUFs
(``name-00001-of-00003.gguf``) are grouped into one downloadable model, and `fit_for_machine` turns a
file size into a fits / tight / too-big badge from the engine's rough memory estimate.
"""

from __future__ import annotations

import logging
import math
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from app.engine.errors import one_line
from app.engine.memory import rough_load_bytes
from app.engine.split_names import model_stem, parse_split_name
from app.engine.units import format_count, format_memory

log = logging.getLogger(__name__)

__all__ = [
    "DraftSuggestion",
    "Fit",
    "HubClient",
    "HubError",
    "HubFile",
    "HubFilePart",
    "HubRepo",
    "RepoFiles",
    "SORTS",
    "fit_for_machine",
    "hub_error",
    "parameter_billions",
    "quant_from_filename",
    "rank_draft_candidates",
    "suggested_draft_range",
]

# what the user can sort by → huggingface_hub's sort key (always descending)
SORTS = {"downloads": "downloads", "likes": "likes", "recent": "last_modified", "trending": "trending_score"}

_QUANT_RE = re.compile(
    r"(?<![A-Za-z0-9])("
    r"UD-[A-Z0-9_]+"  # unsloth dynamic quants: UD-Q4_K_XL
    r"|I?Q[1-8]_(?:K(?:_(?:XXS|XS|S|M|L|XL))?|[01]|NL|XXS|XS|S|M|L)(?:_[0-9A-Z]+)?"
    r"|TQ[12]_0|MXFP4(?:_MOE)?|BF16|F16|FP16|F32|FP32|Q8_0"
    r")(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_PARAMS_RE = re.compile(r"(?<![A-Za-z0-9.])(?:(\d+)x)?(\d+(?:\.\d+)?)\s*([BbMm])(?![A-Za-z0-9])")


# ---------------------------------------------------------------------------------------------------------
# errors


class HubError(Exception):
    """A Hub request failed; ``str(err)`` is one line for people, ``kind`` says what kind of failure."""

    def __init__(self, message: str, kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind


def hub_error(exc: BaseException, repo_id: str | None = None, what: str = "") -> HubError:
    """Translate anything huggingface_hub (or the network below it) raised into a `HubError`."""
    from huggingface_hub import errors

    if isinstance(exc, HubError):
        return exc
    where = f" {repo_id}" if repo_id else ""
    if isinstance(exc, errors.GatedRepoError):
        return HubError(
            f"{repo_id or 'This repository'} is gated: accept its licence on the Hugging Face website, then "
            "set an access token with Discover → “Access token…”",
            "gated",
        )
    if isinstance(exc, errors.RepositoryNotFoundError):
        return HubError(
            f"repository{where} not found on the Hub (or it is private and needs an access token)", "not-found"
        )
    if isinstance(exc, errors.RevisionNotFoundError):
        return HubError(f"that revision of{where} no longer exists on the Hub — search again", "not-found")
    if isinstance(exc, errors.EntryNotFoundError | errors.RemoteEntryNotFoundError):
        return HubError(f"file not found in{where} — the repository changed; search again", "not-found")
    if isinstance(exc, errors.LocalEntryNotFoundError) or _is_connection_error(exc):
        return HubError(
            "can't reach the Hugging Face Hub — check your internet connection (your local models still work)",
            "offline",
        )
    if isinstance(exc, errors.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            return HubError(
                f"the Hub refused access to{where or ' this repository'} (HTTP {status}): check the access "
                "token (Discover → “Access token…”)",
                "auth",
            )
        if status == 429:
            return HubError("the Hub is rate-limiting requests — wait a minute and try again", "error")
        if status is not None and status >= 500:
            return HubError(f"the Hub had a problem (HTTP {status}) — try again later", "error")
        return HubError(f"Hub request failed{(' ' + what) if what else ''}: {one_line(exc)}", "error")
    if isinstance(exc, OSError):
        return HubError(f"{what or 'Hub request'} failed: {exc.strerror or exc}", "error")
    return HubError(f"{what or 'Hub request'} failed: {one_line(exc)}", "error")


def _is_connection_error(exc: BaseException) -> bool:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        # by class name along the MRO (httpx/httpx2 ReadError and WriteError are NetworkErrors)
        names = {c.__name__ for c in type(e).__mro__}
        if names & {"ConnectError", "ConnectTimeout", "ConnectionError", "ReadTimeout", "NetworkError",
                    "TimeoutException", "RemoteProtocolError", "OfflineModeIsEnabled"}:  # fmt: skip
            return True
        if isinstance(e, ConnectionError | TimeoutError):
            return True
        e = e.__cause__ or e.__context__
    return False


# ---------------------------------------------------------------------------------------------------------
# names


def quant_from_filename(name: str) -> str | None:
    """'Qwen2.5-7B-Instruct-Q5_K_M.gguf' → 'Q5_K_M'; None when the name carries no quantization label."""
    found = _QUANT_RE.findall(model_stem(name.rsplit("/", 1)[-1]))
    if not found:
        return None
    q = found[-1].upper()
    return "F16" if q == "FP16" else "F32" if q == "FP32" else q


def parameter_billions(text: str) -> float | None:
    """The parameter count a name announces, in billions: 'Qwen2.5-7B' → 7, 'SmolLM2-135M' → 0.135,
    'Mixtral-8x7B' → 56. None if the name has none."""
    best: float | None = None
    for experts, number, unit in _PARAMS_RE.findall(text):
        value = float(number) * (int(experts) if experts else 1)
        value = value / 1000 if unit.lower() == "m" else value
        if value > 0:
            best = value  # the last one wins: 'Llama-3.2-1B' has one, 'X-3B-to-1B' names the result last
    return best


# ---------------------------------------------------------------------------------------------------------
# data


@dataclass(frozen=True)
class HubRepo:
    repo_id: str
    downloads: int = 0
    likes: int = 0
    last_modified: datetime | None = None
    gated: bool = False
    tags: tuple[str, ...] = ()

    @property
    def author(self) -> str:
        return self.repo_id.split("/", 1)[0] if "/" in self.repo_id else ""

    @property
    def name(self) -> str:
        return self.repo_id.split("/", 1)[-1]

    @property
    def parameters(self) -> float | None:
        return parameter_billions(self.name)


@dataclass(frozen=True)
class HubFilePart:
    filename: str  # path inside the repository
    size: int | None
    sha256: str | None  # the LFS object id; None for small non-LFS files


@dataclass(frozen=True)
class HubFile:
    """One downloadable model: a GGUF file, or every part of a split GGUF."""

    repo_id: str
    revision: str  # the commit the listing came from: downloads are pinned to it
    parts: tuple[HubFilePart, ...]
    quant: str | None

    @property
    def filename(self) -> str:
        return self.parts[0].filename

    @property
    def display_name(self) -> str:
        base = self.filename.rsplit("/", 1)[-1]
        split = parse_split_name(base)
        return f"{split.prefix}.gguf ({split.count} parts)" if split else base

    @property
    def size(self) -> int | None:
        sizes = [p.size for p in self.parts]
        return None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)

    @property
    def is_projector(self) -> bool:
        return "mmproj" in self.filename.rsplit("/", 1)[-1].lower()


@dataclass(frozen=True)
class RepoFiles:
    repo: HubRepo
    revision: str
    files: tuple[HubFile, ...]

    def find(self, filename: str) -> HubFile | None:
        return next((f for f in self.files if any(p.filename == filename for p in f.parts)), None)


def _group_parts(repo_id: str, revision: str, parts: Iterable[HubFilePart]) -> list[HubFile]:
    singles: list[HubFile] = []
    groups: dict[tuple[str, int], list[tuple[int, HubFilePart]]] = {}
    for p in parts:
        base = p.filename.rsplit("/", 1)[-1]
        split = parse_split_name(base)
        if split:
            folder = p.filename[: -len(base)]
            groups.setdefault((folder + split.prefix, split.count), []).append((split.part, p))
        else:
            singles.append(HubFile(repo_id, revision, (p,), quant_from_filename(p.filename)))
    for (_prefix, count), members in groups.items():
        members.sort(key=lambda np: np[0])
        if [n for n, _ in members] != list(range(1, count + 1)):
            continue  # an incomplete split upload: not downloadable as a model
        ordered = tuple(p for _, p in members)
        singles.append(HubFile(repo_id, revision, ordered, quant_from_filename(ordered[0].filename)))
    return singles


_QUANT_ORDER = ["IQ1", "IQ2", "Q2", "IQ3", "Q3", "IQ4", "Q4", "Q5", "Q6", "Q8", "BF16", "F16", "F32"]


def _quant_rank(f: HubFile) -> tuple[int, int, str]:
    q = (f.quant or "").upper().removeprefix("UD-")
    rank = next((i for i, prefix in enumerate(_QUANT_ORDER) if q.startswith(prefix)), len(_QUANT_ORDER))
    return (rank, f.size or 0, f.filename)


# ---------------------------------------------------------------------------------------------------------
# fits this machine?


@dataclass(frozen=True)
class Fit:
    level: str  # "fits" | "tight" | "too-big" | "unknown"
    text: str  # short badge text
    detail: str  # one line for the tooltip


def fit_for_machine(size: int | None, *, available_ram: int, free_vram: int, n_ctx: int = 4096) -> Fit:
    """A badge for a file of `size` bytes on a machine with `available_ram` bytes of RAM and `free_vram`
    bytes of VRAM (0 without a GPU), from the engine's rough estimate (weights + a KV cache and scratch
    allowance for `n_ctx`). Free VRAM counts: layers can be offloaded. The exact estimate is made from the
    GGUF metadata once the file is here."""
    if not size:
        return Fit("unknown", "?", "size unknown")
    need = rough_load_bytes(size, n_ctx)
    ram, vram = available_ram, free_vram
    room = ram + vram
    where = f"{format_memory(ram)} RAM available" + (f" + {format_memory(vram)} VRAM free" if vram else "")
    detail = f"needs about {format_memory(need)} with a {n_ctx}-token context; {where}"
    if room <= 0:
        return Fit("unknown", "?", detail)
    if need <= 0.8 * room:
        return Fit("fits", "fits", detail)
    if need <= room:
        return Fit("tight", "tight", detail + " — close other programs first")
    return Fit("too-big", "too big", detail)


# ---------------------------------------------------------------------------------------------------------
# draft suggestions


def suggested_draft_range(target_billions: float) -> tuple[float, float, float]:
    """(smallest, ideal, largest) draft size in billions for a target of `target_billions`.

    The rule of thumb users settled on: about 1B drafts a 7B, 3B a 14B, 7B a 32B — roughly a sixth of the
    target (closer to a fifth for the big ones). Much smaller drafts guess worse, larger ones cost too much.
    """
    ideal = target_billions / 6.0 if target_billions < 10 else target_billions / 4.8
    return target_billions / 50.0, ideal, target_billions / 3.0


@dataclass(frozen=True)
class DraftSuggestion:
    repo: HubRepo
    parameters: float | None
    reason: str


def family_name(name: str) -> str:
    """'Qwen2.5-7B-Instruct' → 'Qwen2.5'; 'SmolLM2 360M Instruct' → 'SmolLM2': the name up to its size."""
    text = name.replace("_", "-").replace(" ", "-")
    m = _PARAMS_RE.search(text)
    head = text[: m.start()] if m else text
    head = head.strip("-. ")
    return head or text.split("-", 1)[0]


def rank_draft_candidates(
    repos: Sequence[HubRepo], target_name: str, target_billions: float | None, target_author: str | None = None
) -> list[DraftSuggestion]:
    """Order Hub repositories as drafts for a target: same family, a suitable size (`suggested_draft_range`),
    the target's publisher first, then popularity. Repositories of another family or size are left out."""
    family = family_name(target_name).casefold()
    out: list[tuple[tuple[float, int, int], DraftSuggestion]] = []
    for repo in repos:
        if family and family not in repo.name.casefold().replace("_", "-"):
            continue
        b = repo.parameters
        if target_billions is not None:
            if b is None:
                continue
            lo, ideal, hi = suggested_draft_range(target_billions)
            if not lo <= b <= hi:
                continue
            distance = abs(math.log(b / ideal))
            reason = f"{format_count(b * 1e9)} drafting a {format_count(target_billions * 1e9)} target"
        else:
            distance = 0.0
            reason = "same family"
        same_author = int(bool(target_author) and repo.author.casefold() == (target_author or "").casefold())
        reason += ", same publisher" if same_author else ""
        out.append(((round(distance, 1), -same_author, -repo.downloads), DraftSuggestion(repo, b, reason)))
    out.sort(key=lambda kv: kv[0])
    return [s for _, s in out]


# ---------------------------------------------------------------------------------------------------------
# the client



@dataclass
class HubClient:
    """Search and list GGUF models on the Hub. ``token`` is only sent when set; ``endpoint`` overrides
    huggingface_hub's. Thread-safe for concurrent calls (each makes its own requests)."""

    token: str | None = None
    endpoint: str | None = None
    timeout: float = 15.0
    _api: object = field(default=None, init=False, repr=False)

    def __repr__(self) -> str:  # never show the token
        return f"HubClient(endpoint={self.endpoint!r}, token={'set' if self.token else 'none'})"

    @property
    def api(self):
        if self._api is None:
            from huggingface_hub import HfApi

            self._api = HfApi(endpoint=self.endpoint, token=self.token or False, library_name="tandem")
        return self._api

    def _token(self) -> str | bool:
        return self.token or False  # False: never pick up a token from the machine behind the user's back

    def check_reachable(self) -> None:
        """Raise an "offline" HubError at once when the Hub's host cannot be reached at all.

        huggingface_hub retries a refused connection for about 20 s before giving up (sensible for a
        flaky network, not for a machine that is offline); one TCP connect tells the two apart first.
        """
        from urllib.parse import urlparse

        from huggingface_hub import constants

        url = urlparse(self.endpoint or constants.ENDPOINT)
        host = url.hostname or ""
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            with socket.create_connection((host, port), timeout=min(self.timeout, 5.0)):
                pass
        except OSError as e:
            raise HubError(
                "can't reach the Hugging Face Hub — check your internet connection (your local models still work)",
                "offline",
            ) from e

    def search(self, query: str, sort: str = "downloads", limit: int = 50) -> list[HubRepo]:
        """GGUF repositories matching `query`, most downloaded (or liked, recent, trending) first."""
        if sort not in SORTS:
            raise HubError(f"unknown sort {sort!r} (choose from {', '.join(SORTS)})")
        query = query.strip()
        self.check_reachable()
        try:
            found = self.api.list_models(  # type: ignore[attr-defined]
                search=query or None, filter="gguf", sort=SORTS[sort], limit=limit, token=self._token()
            )
            return [self._repo(m) for m in found]
        except Exception as e:
            raise hub_error(e, what="search") from e

    @staticmethod
    def _repo(m) -> HubRepo:
        gated = getattr(m, "gated", False)
        return HubRepo(
            repo_id=m.id,
            downloads=int(getattr(m, "downloads", 0) or 0),
            likes=int(getattr(m, "likes", 0) or 0),
            last_modified=getattr(m, "last_modified", None) or getattr(m, "created_at", None),
            gated=bool(gated) and gated != "false",
            tags=tuple(getattr(m, "tags", None) or ()),
        )

    def files(self, repo_id: str) -> RepoFiles:
        """The GGUF models of a repository (split files grouped), smallest quantization first, with sizes and
        sha256 from the Hub; pinned to the current commit."""
        self.check_reachable()
        try:
            info = self.api.model_info(repo_id, files_metadata=True, timeout=self.timeout,  # type: ignore[attr-defined]
                                       token=self._token())  # fmt: skip
        except Exception as e:
            raise hub_error(e, repo_id, "listing files") from e
        revision = info.sha or "main"
        parts = []
        for s in info.siblings or []:
            if not s.rfilename.lower().endswith(".gguf"):
                continue
            lfs = s.lfs
            sha = getattr(lfs, "sha256", None) if lfs is not None else None
            size = s.size if s.size is not None else getattr(lfs, "size", None)
            parts.append(HubFilePart(s.rfilename, size, sha))
        files = sorted(_group_parts(repo_id, revision, parts), key=lambda f: (f.is_projector, _quant_rank(f)))
        return RepoFiles(self._repo(info), revision, tuple(files))

    def suggest_drafts(
        self, target_name: str, target_billions: float | None, target_author: str | None = None, limit: int = 8
    ) -> list[DraftSuggestion]:
        """Hub repositories that would make a good draft for the target (see `rank_draft_candidates`)."""
        family = family_name(target_name)
        if not family:
            return []
        repos = self.search(family, sort="downloads", limit=100)
        return rank_draft_candidates(repos, target_name, target_billions, target_author)[:limit]

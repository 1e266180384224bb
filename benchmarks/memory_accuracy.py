"""How close is app.engine.memory's RAM estimate to what llama.cpp really uses?

For each model and context size a fresh subprocess loads the model with ``llama_cpp.Llama``
(``n_gpu_layers=0``, mmap on, llama-cpp-python's defaults otherwise), generates a few tokens so that
every weight page has been touched, and reports its resident set size (RSS) before loading and after
generating. Two more references come back from the child:

* the buffer sizes llama.cpp itself logs (model, KV, output and compute buffers in host memory);
* RSS split into anonymous memory (heap: KV cache, compute buffers, repacked weights) and file-backed
  pages (the memory-mapped GGUF).

On CPUs where llama.cpp repacks weights for faster kernels (AMX, and the AVX2/NEON repacks of Q4_0,
IQ4_NL, Q4_K) the repacked copies are anonymous memory while the original mmapped pages were read once
during loading and stay counted in RSS as clean page cache that the kernel can drop at any time; so RSS
overstates what is needed. ``--no-repack`` turns the extra buffer types off (llama.cpp's
``--no-repack``) to measure the plain layout as well.

Usage::

    python benchmarks/memory_accuracy.py                       # the reference models, n_ctx 512 2048 8192
    python benchmarks/memory_accuracy.py model.gguf --ctx 4096 --no-repack
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MIB = 1024 * 1024
_BUFFER_RE = re.compile(r"(\S+)\s+(model|output|KV|compute) buffer size =\s+([\d.]+) MiB")


def _proc_status() -> dict[str, int]:
    """RssAnon / RssFile / RssShmem / VmHWM (peak RSS) from /proc/self/status (Linux), in bytes."""
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("RssAnon", "RssFile", "RssShmem", "VmHWM"):
                    out[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return out


def child(model: str, n_ctx: int, n_tokens: int, no_repack: bool, flash_attn: bool) -> None:
    """Runs in the subprocess: load, generate, print one JSON line with the measurements."""
    import llama_cpp
    import llama_cpp.llama as llama_module
    import psutil

    if no_repack:
        original = llama_module.llama_cpp.llama_model_default_params

        def without_repack():  # type: ignore[no-untyped-def]
            params = original()
            params.use_extra_bufts = False
            return params

        llama_module.llama_cpp.llama_model_default_params = without_repack

    proc = psutil.Process()
    rss0, status0 = proc.memory_info().rss, _proc_status()
    llm = llama_cpp.Llama(model, n_ctx=n_ctx, n_gpu_layers=0, verbose=True, seed=1, flash_attn=flash_attn)
    rss_loaded = proc.memory_info().rss
    # A prompt that fills most of the context, so the attention scratch reaches its full size, then a
    # short generation so every weight page has been used.
    text = "The quick brown fox jumps over the lazy dog. " * (n_ctx // 4)
    tokens = llm.tokenize(text.encode())[: max(1, n_ctx - n_tokens - 8)]
    llm.create_completion(tokens, max_tokens=n_tokens, temperature=0.0)
    rss1, status1 = proc.memory_info().rss, _proc_status()
    result = {
        "rss_before": rss0,
        "rss_loaded": rss_loaded,
        "rss_after": rss1,
        "hwm": status1.get("VmHWM", 0),
        "prompt_tokens": len(tokens),
        "anon_delta": status1.get("RssAnon", 0) - status0.get("RssAnon", 0),
        "file_delta": status1.get("RssFile", 0) - status0.get("RssFile", 0),
    }
    print("RESULT " + json.dumps(result), flush=True)


def measure(model: Path, n_ctx: int, n_tokens: int, no_repack: bool, flash_attn: bool) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", str(model), str(n_ctx), str(n_tokens)]
    if no_repack:
        cmd.append("--no-repack")
    if flash_attn:
        cmd.append("--flash-attn")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
        raise RuntimeError(f"the child process failed ({how}): " + " | ".join(tail[-2:]))
    result = json.loads(lines[-1][len("RESULT ") :])
    host = 0.0
    for name, _kind, size in _BUFFER_RE.findall(proc.stderr + proc.stdout):
        if not name.upper().startswith(("CUDA", "VULKAN", "METAL", "ROCM")) or name.endswith("_Host"):
            host += float(size) * MIB
    result["llama_host_buffers"] = host
    return result


def _reference_models() -> list[Path]:
    from app.library import reference_models

    return [reference_models.smollm2_q4_1(), reference_models.gemma3_270m()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", type=Path, help="GGUF files (default: the reference models)")
    ap.add_argument("--ctx", type=int, nargs="+", default=[512, 2048, 8192])
    ap.add_argument("--tokens", type=int, default=16, help="tokens to generate before measuring")
    ap.add_argument("--no-repack", action="store_true", help="disable llama.cpp's repacked weight buffers")
    ap.add_argument(
        "--flash-attn", action="store_true", help="turn flash attention on (Llama's default: off)"
    )
    ap.add_argument("--child", nargs=3, metavar=("MODEL", "N_CTX", "N_TOKENS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]), args.no_repack, args.flash_attn)
        return 0

    from app.engine.gguf_info import inspect_gguf
    from app.engine.memory import ModelLoad, estimate_load

    models = args.models or _reference_models()
    mode = ("repack off" if args.no_repack else "repack on") + (
        ", flash attention" if args.flash_attn else ""
    )
    print(
        f"RAM estimate vs. measurement ({mode}, n_gpu_layers=0, prompt filling the context + {args.tokens} tokens)\n"
    )
    print("| model | n_ctx | estimate MiB | RSS increase MiB | (anon / file) | error | "
          "est. buffers MiB | llama.cpp buffers MiB | error |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    errors: list[float] = []
    for path in models:
        info = inspect_gguf(path)
        for n_ctx in args.ctx:
            load = ModelLoad(info, n_gpu_layers=0, n_ctx=n_ctx, flash_attn=args.flash_attn)
            est = estimate_load([load]).models[0]
            label = f"{info.name} {info.quantization}"
            try:
                m = measure(path, n_ctx, args.tokens, args.no_repack, args.flash_attn)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                print(
                    f"| {label} | {n_ctx} | {est.cpu_bytes / MIB:.0f} | failed: {e} | | | | | |", flush=True
                )
                continue
            rss = m["rss_after"] - m["rss_before"]
            err = (est.cpu_bytes - rss) / rss * 100
            buffers = m["llama_host_buffers"]
            err_buf = (est.cpu_buffer_bytes - buffers) / buffers * 100
            errors.append(err)
            print(
                f"| {label} | {n_ctx} | {est.cpu_bytes / MIB:.0f} | {rss / MIB:.0f} "
                f"| {m['anon_delta'] / MIB:.0f} / {m['file_delta'] / MIB:.0f} | {err:+.1f} % "
                f"| {est.cpu_buffer_bytes / MIB:.0f} | {buffers / MIB:.0f} | {err_buf:+.1f} % |",
                flush=True,
            )
    if errors:
        worst = max(errors, key=abs)
        print(
            f"\nerror vs RSS: mean absolute {sum(abs(e) for e in errors) / len(errors):.1f} %, worst {worst:+.1f} %"
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "4")
    raise SystemExit(main())

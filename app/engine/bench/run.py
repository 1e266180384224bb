"""Running a benchmark: the same prompts with speculation off and with every configuration of a sweep.

The runs are interleaved — for each repeat, for each prompt, every configuration in turn — so a machine whose
speed drifts (other programs, thermal limits) slows all configurations alike. Every run starts from empty KV
caches and decodes greedily, so each configuration's output is compared token by token with the plain run of
the same prompt. A run during which other programs took the CPU is measured again.
"""

from __future__ import annotations

import datetime as _dt
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from app.engine import sources
from app.engine.bench import compare, machine
from app.engine.bench.configs import OFF, BenchOptions
from app.engine.bench.error import BenchError
from app.engine.bench.prompts import BenchPrompt, builtin_prompts
from app.engine.bench.report import BenchReport
from app.engine.bench.summary import RunRecord
from app.engine.chat_template import Message
from app.engine.history_store import HistoryStore
from app.engine.llama_backend import backend_info, default_threads
from app.engine.proposers import HistoryProposer
from app.engine.sampling import SamplingParams
from app.engine.session import ChatSession, Engine, ModelSettings
from app.engine.speculative import generate

__all__ = ["BenchProgress", "prompt_tokens", "run_benchmark"]


@dataclass
class BenchProgress:
    done: int  # runs finished
    total: int  # runs planned (warm-up not counted)
    phase: str  # "loading", "warmup", "run", "done", "cancelled"
    config: str = ""
    prompt_id: str = ""
    repeat: int = 0
    last_tps: float | None = None  # decode tok/s of the run just finished
    message: str = ""

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


def prompt_tokens(engine: Engine, prompt: BenchPrompt) -> list[int]:
    """The request as the target sees it: rendered with its chat template (a model without one, or a raw
    prompt: the text itself, a chat's turns one after the other)."""
    if prompt.raw or engine.target.info.chat_template is None:
        turns = [c for _, c in prompt.chat()]
        text = "\n\n".join([prompt.system, *turns] if prompt.system else turns)
        return engine.tokenize_prompt(text)
    chat = ChatSession(engine, system_prompt=prompt.system)
    return engine.tokenize_prompt(chat.render([Message(r, c) for r, c in prompt.chat()]), special=True)


def run_benchmark(
    options: BenchOptions,
    progress: Callable[[BenchProgress], None] | None = None,
    cancel: threading.Event | None = None,
    engine: Engine | None = None,
) -> BenchReport:
    """Run the sweep described by `options` and return the report.

    `progress` is called before loading, after the warm-up and after every run (from the calling thread);
    setting `cancel` stops within one decoding round and returns the partial report (`cancelled=True`).
    Pass a loaded `engine` to reuse its models; otherwise they are loaded here and freed at the end.
    """
    options.validate()
    cancel = cancel or threading.Event()
    prompts = options.prompts if options.prompts is not None else builtin_prompts()
    configs = options.configs()
    total = len(configs) * len(prompts) * options.repeats

    def report_progress(**kw: object) -> None:
        if progress is not None:
            progress(BenchProgress(total=total, **kw))  # type: ignore[arg-type]

    threads = options.threads or default_threads()
    own_engine = engine is None
    if own_engine:
        report_progress(done=0, phase="loading", message=f"loading {Path(options.model).name}")
        engine = Engine()
    # no past chats in a benchmark: every run starts from the same knowledge (the user's store is never read or
    # written; the past-chats configuration brings its own)
    history_was = engine.history_enabled
    engine.set_history_enabled(False)
    try:
        if own_engine:
            engine.load_target(ModelSettings(Path(options.model), n_gpu_layers=options.gpu_layers,
                                             n_ctx=options.n_ctx, n_threads=threads, workers=options.workers,
                                             split=options.split))
            if options.draft is not None:
                engine.load_draft(ModelSettings(Path(options.draft), n_gpu_layers=options.draft_gpu_layers,
                                                n_ctx=options.n_ctx, n_threads=threads))
            elif options.prompt_lookup:
                engine.use_history()
        target_ctx = engine.target.ctx
        proposer = engine.proposer
        model = engine.target.model
        tokenized = [prompt_tokens(engine, p) for p in prompts]
        for p, toks in zip(prompts, tokenized, strict=True):
            if len(toks) + (p.max_tokens or options.max_tokens) + 34 > target_ctx.n_ctx:
                raise BenchError(
                    f"prompt {p.id!r} ({len(toks)} tokens) plus {p.max_tokens or options.max_tokens} new tokens does "
                    f"not fit the context of {target_ctx.n_ctx} tokens"
                )
        greedy = SamplingParams(temperature=0.0)
        meta: dict[str, object] = {
            "target": str(options.model),
            "target_name": Path(options.model).name,
            "draft": str(options.draft) if options.draft else None,
            "draft_name": Path(options.draft).name if options.draft else options.speculation,
            "speculation": options.speculation,
            "threads": threads,
            "n_ctx": target_ctx.n_ctx,
            "repeats": options.repeats,
            "max_tokens": options.max_tokens,
            "prompts": [asdict(p) for p in prompts],
            "sampling": "greedy",
            "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "machine": machine.machine_info(),
        }
        try:
            bi = backend_info()
            meta["llama_cpp_python"] = bi.get("llama_cpp_python")
            meta["batch_invariant_cpu"] = bi.get("batch_invariant_cpu")
        except Exception:  # pragma: no cover - informational only
            pass
        report = BenchReport(meta=meta, configs=configs)

        from_history = options.speculation == sources.HISTORY

        def one_run(cfg, tokens: list[int], max_tokens: int):
            engine.reset_cache()
            drafter = proposer if cfg.speculative else None
            if cfg.speculative and from_history:
                # the benchmark's own drafter: no past chats (the user's are never read or written), except in
                # the past-chats configuration, where an earlier chat (not measured) asked the same request
                store = HistoryStore(None) if cfg.past_chats else None
                if store is not None:
                    generate(target_ctx, tokens, greedy, proposer=HistoryProposer(store), spec=cfg.spec(),
                             max_tokens=max_tokens, cancel=cancel)
                    engine.reset_cache()
                drafter = HistoryProposer(store)
            return generate(
                target_ctx, tokens, greedy, proposer=drafter,
                spec=cfg.spec(), max_tokens=max_tokens, cancel=cancel,
            )  # fmt: skip

        # warm-up: page the weights in and start the thread pools, for every configuration
        if options.warmup and not cancel.is_set():
            report_progress(done=0, phase="warmup", message="warming up")
            for cfg in configs:
                if cancel.is_set():
                    break
                one_run(cfg, tokenized[0], min(8, options.max_tokens))

        reference: dict[str, list[int]] = {}
        done = 0
        retried = 0
        shares: list[float] = []  # CPU share of the runs so far
        t0 = time.perf_counter()
        for rep in range(options.repeats):
            for p, toks in zip(prompts, tokenized, strict=True):
                for cfg in configs:
                    if cancel.is_set():
                        break
                    for attempt in range(options.retry_contended + 1):
                        wall0, cpu0 = time.perf_counter(), time.process_time()
                        res = one_run(cfg, toks, p.max_tokens or options.max_tokens)
                        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                        share = cpu / (wall * threads) if wall > 0 else 0.0
                        if attempt == options.retry_contended or res.stats.stop_reason == "cancelled":
                            break
                        if not machine.contended(share, shares):
                            break
                        retried += 1
                    shares.append(share)
                    st = res.stats
                    if st.stop_reason == "cancelled":
                        break
                    after_first = st.decode_seconds  # after the first token and both prompts
                    rec = RunRecord(
                        config=cfg.name, prompt_id=p.id, category=p.category, repeat=rep,
                        prompt_tokens=st.prompt_tokens, generated_tokens=st.generated_tokens,
                        prompt_tps=st.prompt_tokens_per_second, ttft=st.time_to_first_token,
                        decode_seconds=after_first,
                        decode_tps=(st.generated_tokens - 1) / after_first if after_first > 0 else 0.0,
                        drafted=st.drafted, accepted=st.accepted, rounds=st.rounds,
                        draft_seconds=st.draft_seconds, target_seconds=st.target_seconds,
                        stop_reason=st.stop_reason,
                        cpu_share=share, accepted_by_source=dict(st.accepted_by_source),
                    )  # fmt: skip
                    ref = reference.get(p.id)
                    if ref is None and cfg.name == OFF.name:
                        reference[p.id] = list(res.tokens)
                    elif ref is not None:
                        div = compare.describe_divergence(ref, res.tokens, model.detokenize, config=cfg.name,
                                                          prompt_id=p.id, repeat=rep)
                        rec.identical = div is None
                        if div is not None:
                            report.divergences.append(div)
                    report.runs.append(rec)
                    done += 1
                    report_progress(done=done, phase="run", config=cfg.name, prompt_id=p.id, repeat=rep,
                                    last_tps=rec.decode_tps)
        report.cancelled = cancel.is_set()
        report.meta["seconds"] = round(time.perf_counter() - t0, 2)
        report.meta["retried_runs"] = retried
        load = machine.load_average()
        if load is not None:
            report.meta["load_average_end"] = load
        report.refresh()
        report_progress(done=done, phase="cancelled" if report.cancelled else "done")
        return report
    finally:
        engine.set_history_enabled(history_was)
        if own_engine:
            engine.close()



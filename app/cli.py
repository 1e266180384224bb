"""`tandem` — the command line: inspect GGUF files, check a draft, generate with speculative decoding.

Without a sub-command it opens the desktop app (until the desktop UI is installed: a chat in the
terminal on the bundled demo model). Every bad input ends with one clear line on stderr and a
non-zero exit code (1 error, 2 bad option, 3 incompatible draft, 130 interrupted), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from app.cli_workers import (
    WORKER_COMMANDS,
    add_worker_commands,
    add_worker_options,
    prepare_process,
    workers_from_args,
)
from app.engine import sources

if TYPE_CHECKING:
    from app.engine.speculative import SpecSettings

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INCOMPATIBLE = 3


class _CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _CliError(f"{self.prog}: {message} (see {self.prog} --help)", EXIT_USAGE)


def _ranged(cast: type, kind: str, lo: float, hi: float, what: str):
    """An argparse type: `cast(text)` within [lo, hi], or one readable error line."""

    def parse(text: str):
        try:
            v = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be {kind}, got {text!r}") from None
        if not (lo <= v <= hi):
            raise argparse.ArgumentTypeError(f"{what} must be between {lo} and {hi}, got {v}")
        return v

    return parse


def _int_range(lo: int, hi: int, what: str):
    return _ranged(int, "a whole number", lo, hi, what)


def _float_range(lo: float, hi: float, what: str):
    return _ranged(float, "a number", lo, hi, what)


def _int_list(lo: int, hi: int, what: str):
    one = _int_range(lo, hi, what)

    def parse(text: str) -> tuple[int, ...]:
        items = [t for t in text.replace(" ", "").split(",") if t]
        if not items:
            raise argparse.ArgumentTypeError(f"{what} needs at least one number, got {text!r}")
        return tuple(sorted({one(t) for t in items}))

    return parse


def _on_off(flag: bool) -> str:
    return "on" if flag else "off"


HELP_HISTORY = "draft from this chat and past chats (no second model)"


def _engine(args: argparse.Namespace):
    """The engine for `generate` / `chat`: past chats in the app's data folder unless --no-past-chats."""
    from app.engine.session import Engine
    from app.store.db import default_history_dir

    return Engine(default_history_dir(), history_enabled=not args.no_past_chats)


def build_parser() -> argparse.ArgumentParser:
    """The parser; every default is the engine's (SamplingParams, spec_defaults, ModelSettings, BenchOptions)."""
    from app.engine import bench
    from app.engine.defaults import MAX_TOKENS, spec_defaults
    from app.engine.sampling import SamplingParams
    from app.engine.session import ModelSettings
    from app.engine.speculative import MAX_DRAFT_TOKENS
    from app.server.config import ServerConfig

    sampling = SamplingParams()
    load = ModelSettings(Path())
    by_draft, by_lookup = spec_defaults(sources.DRAFT_MODEL), spec_defaults(sources.HISTORY)
    bench_defaults = bench.BenchOptions(Path())
    server_defaults = ServerConfig()

    p = _Parser(prog="tandem", description="Run GGUF language models locally, faster, with speculative decoding.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    pi = sub.add_parser("inspect", help="show a GGUF file's metadata (fast: tensors are not loaded)")
    pi.add_argument("file")
    pi.add_argument("--json", action="store_true", help="print JSON")

    pc = sub.add_parser("check-draft", help="can DRAFT serve as the draft model for TARGET? (exit 0 yes, 3 no)")
    pc.add_argument("target")
    pc.add_argument("draft")
    pc.add_argument("--json", action="store_true")

    pg = sub.add_parser("generate", help="generate text, optionally with speculative decoding")
    pg.add_argument("--model", "-m", required=True, help="target model (GGUF)")
    src = pg.add_mutually_exclusive_group()
    src.add_argument("--draft", "-md", help="draft model (GGUF, same tokenizer as the target)")
    src.add_argument("--prompt-lookup", action="store_true", help=HELP_HISTORY)
    # the speculation options default to None: the draft source's own defaults (_spec_from_args)
    pg.add_argument("--draft-max", type=_int_range(1, MAX_DRAFT_TOKENS, "--draft-max"), default=None,
                    help=f"most guesses per round (default {by_draft.draft_max} with --draft, "
                         f"{by_lookup.draft_max} with --prompt-lookup)")
    pg.add_argument("--adaptive", action=argparse.BooleanOptionalAction, default=None,
                    help="choose the draft length each round (at most --draft-max) from the recent acceptance and "
                         f"the measured costs (default: {_on_off(by_draft.adaptive)} with --draft, "
                         f"{_on_off(by_lookup.adaptive)} with --prompt-lookup, as measured in docs/benchmarks.md)")
    pg.add_argument("--no-past-chats", action="store_true",
                    help="with --prompt-lookup: draft from this prompt only (past chats are neither read nor written)")
    pg.add_argument("--draft-min", type=_int_range(0, MAX_DRAFT_TOKENS, "--draft-min"), default=None,
                    help=f"drop a shorter draft (default {by_draft.draft_min})")
    pg.add_argument("--draft-p-min", type=_float_range(0.0, 0.999, "--draft-p-min"), default=None,
                    help=f"draft model: stop drafting below this probability (default {by_draft.draft_p_min})")
    pg.add_argument("--gpu-layers", "-ngl", type=_int_range(-1, 100000, "--gpu-layers"), default=load.n_gpu_layers,
                    help="layers of the target on the GPU (-1 = all)")
    pg.add_argument("--draft-gpu-layers", "-ngld", type=_int_range(-1, 100000, "--draft-gpu-layers"),
                    default=load.n_gpu_layers)
    pg.add_argument("--ctx", "-c", type=_int_range(16, 1_048_576, "--ctx"), default=load.n_ctx)
    pg.add_argument("--draft-ctx", type=_int_range(16, 1_048_576, "--draft-ctx"), default=None,
                    help="draft context length (default: same as --ctx)")
    pg.add_argument("--threads", "-t", type=_int_range(1, 512, "--threads"), default=None)
    pg.add_argument("--temperature", "--temp", type=_float_range(0.0, 5.0, "--temperature"),
                    default=sampling.temperature, help="0 = greedy (deterministic); default %(default)s")
    pg.add_argument("--top-k", type=_int_range(0, 1_000_000, "--top-k"), default=sampling.top_k,
                    help="0 = off; default %(default)s")
    pg.add_argument("--top-p", type=_float_range(0.001, 1.0, "--top-p"), default=sampling.top_p,
                    help="default %(default)s")
    pg.add_argument("--min-p", type=_float_range(0.0, 0.999, "--min-p"), default=sampling.min_p,
                    help="default %(default)s")
    pg.add_argument("--repeat-penalty", type=_float_range(0.01, 10.0, "--repeat-penalty"),
                    default=sampling.repeat_penalty, help="1 = off; default %(default)s")
    pg.add_argument("--seed", type=_int_range(0, 2**32 - 1, "--seed"), default=sampling.seed,
                    help="default: a fresh random seed each time")
    pg.add_argument("--max-tokens", "-n", type=_int_range(1, 1_048_576, "--max-tokens"), default=MAX_TOKENS,
                    help="default %(default)s")
    pg.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    pg.add_argument("--system", default="", help="system prompt")
    pg.add_argument("--raw", action="store_true", help="send the prompt as is, without the chat template")
    prompt = pg.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", "-p")
    prompt.add_argument("--prompt-file", "-f")
    pg.add_argument("--json", action="store_true", help="print one JSON object (text, tokens, stats) at the end")
    pg.add_argument("--quiet", "-q", action="store_true", help="no stats line on stderr")
    add_worker_options(pg)

    pb = sub.add_parser("bench", help="benchmark speculation on this machine: off vs a sweep of settings, auto-tune")
    pb.add_argument("--model", "-m", required=True, help="target model (GGUF)")
    bsrc = pb.add_mutually_exclusive_group()
    bsrc.add_argument("--draft", "-md", help="draft model (GGUF, same tokenizer as the target)")
    bsrc.add_argument("--prompt-lookup", action="store_true", help=HELP_HISTORY)
    pb.add_argument("--draft-max", type=_int_list(1, MAX_DRAFT_TOKENS, "--draft-max"), default=None,
                    help="draft lengths to sweep, comma-separated "
                         f"(default {','.join(map(str, bench_defaults.draft_max))})")
    pb.add_argument("--no-adaptive", action="store_true",
                    help="leave the adaptive draft length (up to the draft source's default length) out of the sweep")
    pb.add_argument("--prompts", help="prompt file (JSONL: one {\"prompt\", \"category\", \"id\"} per line); "
                    "default: the built-in set")
    # --draft-max, --repeats, --max-tokens default to None: given, they win over an auto-tune mode's choices
    pb.add_argument("--repeats", "-r", type=_int_range(1, 100, "--repeats"), default=None,
                    help=f"default {bench_defaults.repeats}")
    pb.add_argument("--max-tokens", "-n", type=_int_range(1, 65536, "--max-tokens"), default=None,
                    help=f"tokens to generate per prompt (default {bench_defaults.max_tokens})")
    pb.add_argument("--threads", "-t", type=_int_range(1, 512, "--threads"), default=None)
    pb.add_argument("--ctx", "-c", type=_int_range(64, 1_048_576, "--ctx"), default=bench_defaults.n_ctx)
    pb.add_argument("--gpu-layers", "-ngl", type=_int_range(-1, 100000, "--gpu-layers"),
                    default=bench_defaults.gpu_layers)
    pb.add_argument("--draft-gpu-layers", "-ngld", type=_int_range(-1, 100000, "--draft-gpu-layers"),
                    default=bench_defaults.draft_gpu_layers)
    pb.add_argument("--autotune", choices=bench.AUTOTUNE_MODES, default=None,
                    help="pick the fastest setting (quick: under a minute on a small model) and print it as a preset")
    pb.add_argument("--json", metavar="OUT", help="write the full report (JSON)")
    pb.add_argument("--csv", metavar="OUT", help="write the summary table (CSV)")
    pb.add_argument("--plot", metavar="OUT.png", help="write the plot: tok/s vs draft tokens per category (PNG)")
    pb.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    add_worker_options(pb)

    pv = sub.add_parser("serve", help="serve the library's models on an OpenAI-compatible HTTP API (docs/server.md)")
    pv.add_argument("--host", default=server_defaults.host,
                    help=f"address to listen on (default {server_defaults.host}: this computer only; "
                         "any other needs --api-key)")
    pv.add_argument("--port", type=_int_range(0, 65535, "--port"), default=server_defaults.port)
    pv.add_argument("--model", "-m", help="load this model (library id or GGUF path) at start; others load on request")
    vsrc = pv.add_mutually_exclusive_group()
    vsrc.add_argument("--draft", "-md", help="draft model for --model (library id or GGUF path)")
    vsrc.add_argument("--prompt-lookup", action="store_true", help=f"for --model: {HELP_HISTORY}")
    pv.add_argument("--draft-max", type=_int_range(1, MAX_DRAFT_TOKENS, "--draft-max"), default=None,
                    help="draft tokens per round for --model (default: the source's, or the pair's remembered preset)")
    pv.add_argument("--draft-min", type=_int_range(0, MAX_DRAFT_TOKENS, "--draft-min"), default=None)
    pv.add_argument("--draft-p-min", type=_float_range(0.0, 0.999, "--draft-p-min"), default=None)
    pv.add_argument("--adaptive", action=argparse.BooleanOptionalAction, default=None)
    pv.add_argument("--api-key", default=None,
                    help="require 'Authorization: Bearer KEY' (default: $TANDEM_API_KEY; needed off 127.0.0.1)")
    pv.add_argument("--cors", action="append", default=[], metavar="ORIGIN",
                    help="allow browser pages from ORIGIN (repeatable; '*' for any); default: CORS off")
    pv.add_argument("--ttl", type=_int_range(0, 10**7, "--ttl"), default=int(server_defaults.ttl_seconds),
                    help="unload a model idle this many seconds (0: never)")
    pv.add_argument("--models-dir", action="append", default=[], metavar="DIR",
                    help="another folder of GGUF models (repeatable)")
    pv.add_argument("--no-past-chats", action="store_true",
                    help="drafting from history uses only the request, not past chats")
    pv.add_argument("--quiet", "-q", action="store_true", help="no request log on stderr")
    add_worker_options(pv)

    ps = sub.add_parser("setup", help="fetch the bundled demo model (SmolLM2-135M-Instruct) into Tandem's cache")
    ps.add_argument("--quiet", "-q", action="store_true")

    pt = sub.add_parser("chat", help="chat in the terminal (default model: the bundled demo model)")
    pt.add_argument("--model", "-m", default=None, help="target model (GGUF); default: the demo model")
    tsrc = pt.add_mutually_exclusive_group()
    tsrc.add_argument("--prompt-lookup", action="store_true", help=HELP_HISTORY)
    tsrc.add_argument("--draft", "-md", default=None, help="draft model (GGUF, same tokenizer as the target)")
    pt.add_argument("--no-past-chats", action="store_true",
                    help="with --prompt-lookup: draft from this chat only (past chats are neither read nor written)")
    pt.add_argument("--system", default="You are a helpful assistant.")
    pt.add_argument("--ctx", "-c", type=_int_range(16, 1_048_576, "--ctx"), default=load.n_ctx)
    pt.add_argument("--max-tokens", "-n", type=_int_range(1, 1_048_576, "--max-tokens"), default=MAX_TOKENS)
    pt.add_argument("--temperature", "--temp", type=_float_range(0.0, 5.0, "--temperature"),
                    default=sampling.temperature)
    pt.add_argument("--smoke-test", action="store_true",
                    help="non-interactive check: load the model, answer one question, exit 0")
    add_worker_options(pt)
    add_worker_commands(sub, _int_range)
    return p


# -- commands ------------------------------------------------------------------------------------------
def _cmd_inspect(args: argparse.Namespace) -> int:
    from app.engine.gguf_info import inspect_gguf, to_json

    info = inspect_gguf(args.file)
    data = to_json(info)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    width = max(len(k) for k in data)
    for key, value in data.items():
        if key == "chat_template" and isinstance(value, str):
            value = (value[:70] + "…") if len(value) > 70 else value
            value = value.replace("\n", "⏎")
        print(f"{key:<{width}}  {value}")
    return 0


def _cmd_check_draft(args: argparse.Namespace) -> int:
    from app.engine.compat import check_draft_compatibility, draft_size_advice
    from app.engine.gguf_info import inspect_gguf

    target, draft = inspect_gguf(args.target), inspect_gguf(args.draft)
    verdict = check_draft_compatibility(target, draft)
    advice = draft_size_advice(target, draft) if verdict.compatible else None
    if args.json:
        print(json.dumps({"compatible": verdict.compatible, "reason": verdict.reason, "advice": advice}))
    else:
        print(("compatible: " if verdict.compatible else "incompatible: ") + verdict.reason.removeprefix("compatible: "))
        if advice:
            print(f"note: {advice}")
    return 0 if verdict.compatible else EXIT_INCOMPATIBLE


def _target_workers(args: argparse.Namespace) -> dict[str, object]:
    try:
        return workers_from_args(args)
    except argparse.ArgumentTypeError as e:
        raise _CliError(f"tandem {args.command}: {e}", EXIT_USAGE) from None


def _say_placement(engine) -> None:
    placement = engine.target_placement
    if placement is not None:
        print(f"tandem: target {placement.describe()}", file=sys.stderr)


def _spec_from_args(args: argparse.Namespace) -> SpecSettings:
    """`generate`'s speculation settings: the draft source's defaults (spec_defaults), then what was given."""
    from app.engine.defaults import spec_defaults
    from app.engine.speculative import SpecSettings

    source = sources.DRAFT_MODEL if args.draft else (sources.HISTORY if args.prompt_lookup else sources.OFF)
    options = {f.name for f in fields(SpecSettings)}  # --draft-max, --draft-min, --draft-p-min, --adaptive
    given = {k: v for k, v in vars(args).items() if k in options and v is not None}
    spec = replace(spec_defaults(source), **given)
    if spec.draft_min > spec.draft_max:
        raise _CliError(f"--draft-min ({spec.draft_min}) is larger than --draft-max ({spec.draft_max})", EXIT_USAGE)
    return spec


def _cmd_generate(args: argparse.Namespace) -> int:
    from app.engine.sampling import SamplingParams
    from app.engine.session import ChatSession, ModelSettings

    if args.prompt_file is not None:
        try:
            prompt_text = Path(args.prompt_file).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise _CliError(f"prompt file not found: {args.prompt_file}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise _CliError(f"cannot read prompt file {args.prompt_file}: {e}") from None
    else:
        prompt_text = args.prompt
    if not prompt_text.strip():
        raise _CliError("the prompt is empty", EXIT_USAGE)
    spec = _spec_from_args(args)
    on_workers = _target_workers(args)

    sampling = SamplingParams(
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
        repeat_penalty=args.repeat_penalty, seed=args.seed,
    )
    engine = _engine(args)
    # the request's stop switch: Ctrl-C sets it (also while the models load: the generation then stops at once)
    cancel_once = threading.Event()

    def on_sigint(signum: int, frame: object) -> None:
        if cancel_once.is_set():
            raise KeyboardInterrupt
        cancel_once.set()

    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        engine.load_target(ModelSettings(Path(args.model), n_gpu_layers=args.gpu_layers, n_ctx=args.ctx,
                                         n_threads=args.threads, **on_workers))
        if not args.quiet:
            _say_placement(engine)
        engine.set_spec(spec)
        if args.draft:
            engine.load_draft(ModelSettings(Path(args.draft), n_gpu_layers=args.draft_gpu_layers,
                                            n_ctx=args.draft_ctx or args.ctx, n_threads=args.threads))
        elif args.prompt_lookup:
            engine.use_history()

        def on_piece(piece) -> None:
            if not args.json:
                sys.stdout.write(piece.text)
                sys.stdout.flush()

        if args.raw or engine.target.info.chat_template is None:
            if args.system:
                prompt_text = f"{args.system}\n\n{prompt_text}"
            tokens = engine.tokenize_prompt(prompt_text)
            result = engine.generate(tokens, sampling, max_tokens=args.max_tokens, stop=args.stop, on_piece=on_piece,
                                     cancel=cancel_once)
        else:
            chat = ChatSession(engine, system_prompt=args.system)
            result = chat.send(prompt_text, sampling, max_tokens=args.max_tokens, on_piece=on_piece, stop=args.stop,
                               cancel=cancel_once)
    finally:
        signal.signal(signal.SIGINT, old)
        engine.close()

    stats = result.stats
    if args.json:
        print(json.dumps({"text": result.text, "tokens": result.tokens, "stats": stats.to_dict()}, ensure_ascii=False))
    else:
        sys.stdout.write("\n")
        sys.stdout.flush()
        if not args.quiet:
            line = (
                f"[{stats.summary()} · prompt {stats.prompt_tokens} tokens at "
                f"{stats.prompt_tokens_per_second:.1f} tok/s · stop: {stats.stop_reason}]"
            )
            print(line, file=sys.stderr)
    return 130 if stats.stop_reason == "cancelled" else 0


def _cmd_serve(args: argparse.Namespace) -> int:
    """`tandem serve`: the OpenAI-compatible server in the foreground until Ctrl-C."""
    from app.engine.speculative import SpecSettings
    from app.library.local import LocalLibrary, default_models_folder
    from app.library.reference_models import cache_dir
    from app.server.config import ServerConfig, ServerError
    from app.server.models import ModelCatalog, PresetSource
    from app.server.runner import LocalServer
    from app.server.schema import SpecChoice
    from app.service.engine_service import DONE, SERVER_LOAD, EngineService
    from app.store.db import StoreError, default_db_path, default_history_dir, open_database
    from app.store.settings import SettingsStore

    if (args.draft or args.prompt_lookup) and not args.model:
        raise _CliError("--draft and --prompt-lookup need --model (the model they draft for)", EXIT_USAGE)
    on_workers = _target_workers(args)  # every target the server loads puts its layers there
    try:
        store = SettingsStore(open_database(default_db_path()))
        folders = [Path(p) for p in store.get("model_folders") or []]
        presets = PresetSource(lambda: SettingsStore(open_database(default_db_path())))
    except (StoreError, OSError) as e:
        print(f"tandem: the app's settings cannot be read ({e}): serving without remembered presets", file=sys.stderr)
        folders, presets = [], PresetSource(None)
    folders += [default_models_folder(), *[Path(d) for d in args.models_dir]]
    if cache_dir().exists():
        folders.append(cache_dir())
    extra = [Path(p) for p in (args.model, args.draft) if p and Path(p).suffix.lower() == ".gguf"]
    catalog = ModelCatalog(LocalLibrary(folders, cache_path=None), extra=extra)
    catalog.refresh()

    def find(name: str, what: str):
        found = catalog.get(name) or (catalog.get(Path(name).stem) if Path(name).suffix else None)
        if found is None:
            raise _CliError(f"{what} {name!r} is not in the library (folders: {', '.join(map(str, folders))})")
        return found

    model = find(args.model, "model") if args.model else None
    choice = SpecChoice()
    if model is not None and (args.draft or args.prompt_lookup):
        _spec_from_args(args)  # checks --draft-min against --draft-max
        draft = find(args.draft, "draft model") if args.draft else None
        given = {f.name: getattr(args, f.name) for f in fields(SpecSettings) if getattr(args, f.name) is not None}
        choice = SpecChoice(sources.DRAFT_MODEL if draft else sources.HISTORY,
                            catalog.id_of(draft.path) if draft else None, given)
    api_key = args.api_key if args.api_key is not None else os.environ.get("TANDEM_API_KEY")
    config = ServerConfig(host=args.host, port=args.port, api_key=api_key or None, cors_origins=tuple(args.cors),
                          ttl_seconds=args.ttl)
    service = EngineService(default_history_dir(), history_enabled=not args.no_past_chats)

    def log(record) -> None:
        if not args.quiet:
            print(f"[{record.summary()}]", file=sys.stderr, flush=True)

    try:
        server = LocalServer(service, catalog, config, presets=presets, on_record=log, **on_workers)
        if model is not None:
            mid = catalog.id_of(model.path) or model.file_name
            # --draft / --prompt-lookup: the pair's remembered preset, then the options given
            spec = server.served.speculation(model, choice)
            if choice.given():
                server.served.set_default(model.path, spec)
            ticket = service.submit(SERVER_LOAD, lambda ctx: server.served.prepare(ctx, model, mid, spec),
                                    label=f"load {mid}")
            ticket.wait()
            if ticket.outcome != DONE:
                raise _CliError(f"cannot load {mid}: {ticket.error or 'cancelled'}")
        server.start()
    except ServerError as e:
        service.shutdown()
        raise _CliError(f"tandem serve: {e}", EXIT_USAGE) from None
    except BaseException:
        service.shutdown()
        raise
    n = len(catalog.models())
    print(f"Tandem server: {server.base_url} · {n} model{'s' if n != 1 else ''} · "
          f"{'API key required' if config.api_key else 'no API key'}"
          + (f" · targets on {', '.join(map(str, server.served.workers))}" if server.served.workers else "")
          + " · Ctrl-C stops", file=sys.stderr, flush=True)
    try:
        while server.running:
            threading.Event().wait(0.5)
    except KeyboardInterrupt:
        print("tandem: stopping the server", file=sys.stderr)
    finally:
        server.stop()
        service.shutdown()
    return 0


def _cmd_setup(args: argparse.Namespace) -> int:
    from app.library.reference_models import ensure_demo_model

    def say(msg: str) -> None:
        if not args.quiet:
            print(f"tandem: {msg}", file=sys.stderr)

    path = ensure_demo_model(progress=say)
    print(f"demo model ready: {path}")
    return 0


def _cmd_chat(args: argparse.Namespace) -> int:
    from app.engine.sampling import SamplingParams
    from app.engine.session import ChatSession, ModelSettings

    if args.model is None:
        from app.library.reference_models import ensure_demo_model

        model_path = ensure_demo_model(progress=lambda msg: print(f"tandem: {msg}", file=sys.stderr))
    else:
        model_path = Path(args.model)
    spec = _spec_from_args(args)
    on_workers = _target_workers(args)
    engine = _engine(args)
    try:
        print(f"tandem: loading {model_path.name} …", file=sys.stderr)
        engine.load_target(ModelSettings(model_path, n_ctx=args.ctx, **on_workers))
        _say_placement(engine)
        engine.set_spec(spec)
        if args.draft:
            engine.load_draft(ModelSettings(Path(args.draft), n_ctx=args.ctx))
        elif args.prompt_lookup:
            engine.use_history()
        chat = ChatSession(engine, system_prompt=args.system)
        sampling = SamplingParams(temperature=args.temperature)

        def show(piece) -> None:
            sys.stdout.write(piece.text)
            sys.stdout.flush()

        if args.smoke_test:
            sampling = SamplingParams(temperature=0.0)
            result = chat.send("Say hello in one short sentence.", sampling, max_tokens=24, on_piece=show)
            print(f"\n[{result.stats.summary()}]", file=sys.stderr)
            if not result.tokens:
                raise _CliError("smoke test failed: the model generated nothing")
            _check_lazy_imports()
            return 0
        print(f"Chatting with {model_path.name}. Empty line or Ctrl-D to quit, Ctrl-C stops a reply.",
              file=sys.stderr)
        turn = [threading.Event()]  # the stop switch of the reply being written

        def on_sigint(signum: int, frame: object) -> None:
            if turn[0].is_set():
                raise KeyboardInterrupt
            turn[0].set()

        old = signal.signal(signal.SIGINT, on_sigint)
        try:
            while True:
                try:
                    text = input("\n> ")
                except EOFError:
                    break
                if not text.strip():
                    break
                turn[0] = threading.Event()
                result = chat.send(text, sampling, max_tokens=args.max_tokens, on_piece=show, cancel=turn[0])
                print(f"\n[{result.stats.summary()}]", file=sys.stderr)
        finally:
            signal.signal(signal.SIGINT, old)
        return 0
    finally:
        engine.close()


def _cmd_bench(args: argparse.Namespace) -> int:
    from app.engine import bench

    if args.draft is None and not args.prompt_lookup and args.autotune:
        raise _CliError("auto-tune needs something to tune: add --draft MODEL or --prompt-lookup", EXIT_USAGE)
    for out in (args.json, args.csv, args.plot):
        if out and not Path(out).resolve().parent.is_dir():
            raise _CliError(f"cannot write {out}: the folder does not exist")
    prompts = bench.load_prompts(args.prompts) if args.prompts else None
    # what the user asked for explicitly wins over the defaults and the auto-tune mode's choices
    explicit = {k: v for k, v in (("draft_max", args.draft_max), ("repeats", args.repeats),
                                  ("max_tokens", args.max_tokens)) if v is not None}
    options = bench.BenchOptions(
        model=Path(args.model), draft=Path(args.draft) if args.draft else None, prompt_lookup=args.prompt_lookup,
        adaptive=not args.no_adaptive, prompts=prompts, threads=args.threads, n_ctx=args.ctx,
        gpu_layers=args.gpu_layers, draft_gpu_layers=args.draft_gpu_layers, **_target_workers(args), **explicit,
    )  # fmt: skip

    cancel = threading.Event()
    tty = sys.stderr.isatty()

    def on_sigint(signum: int, frame: object) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()

    def progress(p) -> None:
        if args.quiet:
            return
        if p.phase == "run":
            tps = f"{p.last_tps:7.1f} tok/s" if p.last_tps is not None else ""
            line = f"[{p.done:>4}/{p.total}] {p.config:<10} {p.prompt_id:<18} repeat {p.repeat + 1}  {tps}"
            print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)
        else:
            msg = p.message or p.phase
            print(("\r\033[K" if tty else "") + f"tandem bench: {msg}", file=sys.stderr, flush=True)

    # Ctrl-C (or a SIGTERM) stops after the current round and still writes the partial results
    old = signal.signal(signal.SIGINT, on_sigint)
    old_term = signal.signal(signal.SIGTERM, on_sigint)
    try:
        if args.autotune:
            report = bench.autotune(options, args.autotune, explicit=explicit, progress=progress, cancel=cancel)
        else:
            report = bench.run_benchmark(options, progress=progress, cancel=cancel)
    finally:
        signal.signal(signal.SIGINT, old)
        signal.signal(signal.SIGTERM, old_term)
    if tty and not args.quiet:
        print("\r\033[K", end="", file=sys.stderr)
    print(report.format_table())
    if report.autotune:
        print(json.dumps({"preset": report.autotune}, ensure_ascii=False))
    if args.json:
        report.write_json(args.json)
    if args.csv:
        report.write_csv(args.csv)
    if args.plot and report.runs:
        report.write_plot(args.plot)
    if report.cancelled:
        print("tandem bench: cancelled (partial results)", file=sys.stderr)
        return 130
    return 0


def _check_lazy_imports() -> None:
    """What the app imports only when a feature is used (the Hub, downloads, the token keyring, benchmark
    plots, the local server's web stack) must be there too: an installer or bundle that lacks one fails the
    smoke test, not the user."""
    try:
        import huggingface_hub.file_download  # noqa: F401  (http_get, used by downloads)
        import matplotlib.backends.backend_agg  # noqa: F401
        import starlette.applications  # noqa: F401  (the local server)
        import uvicorn.lifespan.on  # noqa: F401  (what uvicorn.Config imports by name)
        import uvicorn.loops.auto  # noqa: F401
        import uvicorn.protocols.http.auto  # noqa: F401

        from app.library import credentials, downloads, hub  # noqa: F401

        credentials._usable_keyring()  # backend discovery must not fail (None = no keyring: file fallback)
        hub.HubClient(endpoint="http://127.0.0.1:9").api  # noqa: B018 - builds the client, no request
    except Exception as e:  # noqa: BLE001
        raise _CliError(f"smoke test failed: {type(e).__name__}: {e}") from None
    print("[hub, downloads, keyring, plots and server: ok]", file=sys.stderr)


def _cmd_gui(argv: Sequence[str]) -> int:
    if "--smoke-test" in argv:
        # headless check for installers and CI: demo model, one short answer, exit 0
        return main(["chat", *argv])
    try:
        from app.ui.main import main as gui_main
    except ImportError as e:
        # Qt cannot start here (missing system libraries): chat in the terminal instead
        print(f"tandem: the desktop app cannot start ({e}); starting a chat in the terminal", file=sys.stderr)
        return main(["chat", *argv])
    return int(gui_main(list(argv)) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--install-desktop-entry" in argv or "--uninstall-desktop-entry" in argv:
        from app.desktop_integration import run_cli

        return run_cli(argv)
    prepare_process(argv)
    commands = {"inspect": _cmd_inspect, "check-draft": _cmd_check_draft, "generate": _cmd_generate,
                "chat": _cmd_chat, "bench": _cmd_bench, "setup": _cmd_setup, "serve": _cmd_serve,
                **WORKER_COMMANDS}
    if not argv or (argv[0] not in commands and argv[0] not in ("-h", "--help")):
        if argv and not argv[0].startswith("-"):
            print(f"tandem: unknown command {argv[0]!r} (commands: {', '.join(commands)})", file=sys.stderr)
            return EXIT_USAGE
        return _cmd_gui(argv)
    try:
        args = build_parser().parse_args(argv)
        return commands[args.command](args)
    except _CliError as e:
        print(str(e), file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("tandem: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # every other failure: one line, never a traceback
        return _report(e)


def _report(e: Exception) -> int:
    from app.engine.bench import BenchError
    from app.engine.chat_template import ChatTemplateError
    from app.engine.errors import error_message
    from app.engine.gguf_info import GGUFError
    from app.engine.llama_backend import EngineError
    from app.engine.session import IncompatibleDraft
    from app.library.reference_models import ReferenceModelError

    code = EXIT_INCOMPATIBLE if isinstance(e, IncompatibleDraft) else EXIT_ERROR
    expected = (EngineError, ValueError, OSError, GGUFError, ChatTemplateError, ReferenceModelError, BenchError)
    print(f"tandem: {error_message(e, expected)}", file=sys.stderr)
    if os.environ.get("TANDEM_DEBUG"):
        import traceback

        traceback.print_exc()
    return code


if __name__ == "__main__":
    sys.exit(main())

"""The command line's workers: `tandem worker` (serve this machine), `tandem workers` (look at some), and the
`--worker HOST:PORT` / `--split` options every command that loads a target shares (`add_worker_options`,
`workers_from_args`). The engine side is app.engine.workers."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.engine.workers import Endpoint

__all__ = ["add_worker_options", "workers_from_args", "add_worker_commands", "prepare_process", "WORKER_COMMANDS"]

# app.engine.workers (and with it llama.cpp) is imported only when a function here runs: `prepare_process`
# must come first


# how long an idle OpenMP thread spins before it sleeps (libgomp's default: 300000 rounds), see prepare_process
OPENMP_SPIN_COUNT = "1000"


def prepare_process(argv: list[str]) -> None:
    """Before llama.cpp is loaded, in a worker and in a process that uses workers: OpenMP threads spin only
    briefly once their work is done.

    llama.cpp's CPU backend computes each graph with OpenMP threads, and libgomp keeps an idle thread
    spinning for 300000 rounds before it sleeps. A worker computes its share of every token and then waits
    for the others; spinning meanwhile, it takes the cores that another worker (or the draft model, or any
    program) on the same machine needs. Measured on 2 cores with SmolLM2-135M F32 split over two workers of
    2 threads each: every worker burnt as much CPU as one holding the whole model, and a token took 25 ms
    instead of 10 ms on this machine alone; with GOMP_SPINCOUNT=10000, 11.5 ms. On a quiet machine
    (benchmarks/rpc_workers.py, best of 3 rounds) plain decoding over the two workers ran at 0.72× the
    all-local speed with 10000, 0.59× with 100000 and 0.87× with 1000 (the all-local target at 99–105 tok/s
    in each run, within its usual spread), hence 1000. libgomp reads the variable once,
    when it is loaded, hence here; a value already set wins. Other OpenMP runtimes ignore it."""
    if argv and (argv[0] == "worker" or any(a in ("--worker", "-w") or a.startswith("--worker=") for a in argv)):
        os.environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPIN_COUNT)


def _endpoint(text: str) -> Endpoint:
    from app.engine.workers import BadEndpoint, parse_endpoint

    try:
        return parse_endpoint(text)
    except BadEndpoint as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _shares(text: str) -> tuple[float, ...]:
    items = [t for t in text.replace(" ", "").split(",") if t]
    try:
        shares = tuple(float(t) for t in items)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--split takes numbers separated by commas, got {text!r}") from None
    if not shares or any(s < 0 for s in shares) or sum(shares) <= 0:
        raise argparse.ArgumentTypeError(f"--split needs shares of 0 or more, at least one positive, got {text!r}")
    return shares


def add_worker_options(parser: argparse.ArgumentParser) -> None:
    """--worker (repeatable) and --split, for a command that loads a target model."""
    parser.add_argument("--worker", "-w", action="append", type=_endpoint, default=[], metavar="HOST:PORT",
                        help="put the target's layers on this worker too (`tandem worker` there; repeatable); "
                             "the draft model stays on this machine")
    parser.add_argument("--split", type=_shares, default=None, metavar="LOCAL,W1,…",
                        help="shares of the target's layers: this machine first, then each --worker in order "
                             "(default: all on the workers, by their free memory)")


def workers_from_args(args: argparse.Namespace) -> dict[str, object]:
    """The ModelSettings fields for a target from --worker / --split (empty: the model stays on this machine)."""
    workers = tuple(args.worker)
    if args.split is not None and not workers:
        raise argparse.ArgumentTypeError("--split needs at least one --worker")
    return {"workers": workers, "split": args.split} if workers else {}


def _ipv4(text: str) -> str:
    try:
        socket.inet_aton(text)
    except OSError:
        raise argparse.ArgumentTypeError(f"--host must be an IPv4 address of this machine (e.g. 127.0.0.1 or "
                                         f"0.0.0.0), got {text!r}") from None
    if text.count(".") != 3:
        raise argparse.ArgumentTypeError(f"--host must be a dotted IPv4 address, got {text!r}")
    return text


def add_worker_commands(sub: argparse._SubParsersAction, int_range) -> None:
    from app.engine.workers import DEFAULT_HOST, DEFAULT_PORT

    pw = sub.add_parser("worker", help="serve this machine's devices to another Tandem (llama.cpp RPC server)")
    pw.add_argument("--host", type=_ipv4, default=DEFAULT_HOST,
                    help="address to listen on (default %(default)s: this machine only; see docs/scaling.md "
                         "before using another)")
    pw.add_argument("--port", "-p", type=int_range(1, 65535, "--port"), default=DEFAULT_PORT, help="default %(default)s")
    pw.add_argument("--threads", "-t", type=int_range(1, 512, "--threads"), default=None,
                    help="CPU threads (default: the physical cores)")
    pl = sub.add_parser("workers", help="look at workers: protocol version, devices and free memory")
    pl.add_argument("endpoints", nargs="+", type=_endpoint, metavar="HOST:PORT")
    pl.add_argument("--json", action="store_true")


def _cmd_worker(args: argparse.Namespace) -> int:
    from app.engine.llama_backend import default_threads
    from app.engine.units import format_memory
    from app.engine.workers import INSECURE_WARNING, WorkerError, local_devices, serve

    endpoint = f"{args.host}:{args.port}"
    if not args.host.startswith("127."):
        print("tandem worker: " + INSECURE_WARNING.format(endpoint=endpoint), file=sys.stderr)
    with socket.socket() as s:  # a clear line for a port in use (llama.cpp only says it failed)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((args.host, args.port))
        except OSError as e:
            raise WorkerError(f"cannot listen on {endpoint}: {e.strerror or e}") from None
    threads = args.threads or default_threads()
    for _, name, description, free, total in local_devices():
        print(f"tandem worker: offering {name} ({description}), {format_memory(free)} free of "
              f"{format_memory(total)}, {threads} threads", file=sys.stderr)
    print(f"tandem worker: listening on {endpoint} (Ctrl-C stops)", file=sys.stderr, flush=True)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            serve(args.host, args.port, threads)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            failure.append(e)

    server = threading.Thread(target=run, name="rpc-server", daemon=True)
    server.start()
    try:
        while server.is_alive():
            server.join(0.5)
    except KeyboardInterrupt:
        print("\ntandem worker: stopped", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(0)  # the server thread never returns from llama.cpp's accept loop
    if failure:
        raise failure[0]
    raise WorkerError(f"the worker on {endpoint} stopped (llama.cpp could not listen there)")


def _cmd_workers(args: argparse.Namespace) -> int:
    from app.engine.units import format_memory
    from app.engine.workers import WorkerError, probe

    results, failed = [], False
    for endpoint in args.endpoints:
        try:
            info = probe(endpoint)
        except WorkerError as e:
            failed = True
            results.append({"endpoint": str(endpoint), "error": str(e)})
            if not args.json:
                print(e)
            continue
        results.append({"endpoint": str(endpoint), "version": ".".join(map(str, info.version)),
                        "devices": [{"index": d.index, "free": d.free, "total": d.total} for d in info.devices]})
        if not args.json:
            print(info.describe())
            for d in info.devices:
                print(f"  device {d.index}: {format_memory(d.free)} free of {format_memory(d.total)}")
    if args.json:
        print(json.dumps(results))
    return 1 if failed else 0


WORKER_COMMANDS = {"worker": _cmd_worker, "workers": _cmd_workers}

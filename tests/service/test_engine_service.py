"""The engine service without Qt: order, cancellation, failures, shutdown — and every request ends once,
also with two processes spinning on every core."""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from collections import Counter

import pytest

from app.engine.chat_template import Message
from app.engine.sampling import SamplingParams
from app.engine.session import ModelSettings
from app.service import app_requests as rq
from app.service.engine_service import (
    CANCELLED,
    DONE,
    FAILED,
    OUTCOMES,
    EngineService,
    QueueFull,
    RequestCancelled,
)

HANG_GUARD = 120  # seconds: only a hang reaches this


@pytest.fixture()
def service():
    s = EngineService(max_queued=3)
    yield s
    assert s.shutdown(30)


def ends_per_request(service):
    counts: Counter[int] = Counter()
    lock = threading.Lock()

    def listen(event):
        if event.kind in OUTCOMES:
            with lock:
                counts[event.request_id] += 1

    service.subscribe(listen)
    return counts


def wait_until(cond, timeout=HANG_GUARD):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "hang guard"
        time.sleep(0.005)


def test_requests_run_one_at_a_time_in_order(service):
    ran: list[int] = []
    active = []

    def job(n):
        def run(ctx):
            active.append(n)
            assert len(active) == 1
            time.sleep(0.01)
            ran.append(n)
            active.remove(n)
            return n
        return run

    tickets = [service.submit("test", job(n)) for n in range(8)]
    assert all(t.wait(HANG_GUARD) for t in tickets)
    assert ran == list(range(8))
    assert [t.result for t in tickets] == list(range(8)) and {t.outcome for t in tickets} == {DONE}


def test_cancel_ends_a_queued_request_at_once_and_a_running_one_promptly(service):
    counts = ends_per_request(service)
    started = threading.Event()

    def spin(ctx):
        started.set()
        while not ctx.cancel.is_set():
            time.sleep(0.001)
        raise RequestCancelled("partial")

    running = service.submit("test", spin)
    queued = service.submit("test", lambda ctx: pytest.fail("a cancelled request must not run"))
    assert started.wait(HANG_GUARD)
    service.cancel(queued)
    assert queued.ended and queued.outcome == CANCELLED and queued.result is None  # at once
    service.cancel(running)
    assert running.wait(HANG_GUARD) and running.outcome == CANCELLED and running.result == "partial"
    service.cancel(running)  # again: nothing changes
    wait_until(lambda: sum(counts.values()) == 2)
    assert counts == {running.id: 1, queued.id: 1}


def test_a_failing_request_fails_alone_and_a_broken_listener_is_survived(service, capsys):
    service.subscribe(lambda e: 1 / 0)
    bad = service.submit("test", lambda ctx: (_ for _ in ()).throw(ValueError("bad value\nsecond line")))
    good = service.submit("test", lambda ctx: "fine")
    assert good.wait(HANG_GUARD) and bad.outcome == FAILED and bad.error == "bad value"
    assert good.outcome == DONE and good.result == "fine"
    assert "listener failed" in capsys.readouterr().err


def test_bounded_requests_are_refused_when_the_queue_is_full(service):
    gate = threading.Event()
    blocker = service.submit("test", lambda ctx: gate.wait(HANG_GUARD))
    wait_until(lambda: service.running is blocker)
    waiting = [service.submit("server", lambda ctx: None, bounded=True) for _ in range(3)]
    with pytest.raises(QueueFull, match="queue is full"):
        service.submit("server", lambda ctx: None, bounded=True)
    service.submit("chat", lambda ctx: None)  # the app's own requests are not bounded
    assert service.queue_depth == 4
    gate.set()
    assert all(t.wait(HANG_GUARD) for t in waiting)


def test_shutdown_cancels_everything_and_refuses_new_requests():
    s = EngineService()
    running = s.submit("test", lambda ctx: ctx.cancel.wait(HANG_GUARD) and (_ for _ in ()).throw(RequestCancelled()))
    wait_until(lambda: s.running is running)
    queued = s.submit("test", lambda ctx: None)
    assert s.shutdown(30)
    assert queued.outcome == CANCELLED and running.outcome == CANCELLED
    late = s.submit("test", lambda ctx: None)
    assert late.ended and late.outcome == FAILED and "shutting down" in late.error


def _request(n: int) -> rq.GenerateRequest:
    return rq.GenerateRequest(messages=[Message("user", "the value of data")],
                              sampling=SamplingParams(temperature=0.0), max_tokens=n)


def test_a_reply_streams_pieces_and_stop_before_start_ends_it_stopped(tiny_target, tiny_draft):
    s = EngineService()
    try:
        pieces: list = []
        assert rq.load_target(s, ModelSettings(tiny_target, n_ctx=4096, n_threads=1)).wait(HANG_GUARD)
        ticket = rq.generate(s, _request(60))
        s.subscribe(lambda e: pieces.extend(e.data[0]) if e.kind == "pieces" and e.request_id == ticket.id else None)
        assert ticket.wait(HANG_GUARD) and ticket.outcome == DONE
        # the reply was loaded behind the load: a stop pressed while it waits ends it, it never runs
        load = rq.load_draft(s, ModelSettings(tiny_draft, n_ctx=4096, n_threads=1))
        stopped = rq.generate(s, _request(4000))
        stopped.cancel.set()
        s.cancel(stopped)
        assert stopped.wait(HANG_GUARD) and stopped.outcome == CANCELLED and stopped.result is None
        assert load.wait(HANG_GUARD) and load.outcome == DONE and s.speculation() == "draft-model"
        assert rq.stopped_before_start().stats.stop_reason == "cancelled"
    finally:
        assert s.shutdown(30)


def _spin(seconds: float, started) -> None:
    started.set()
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        x += 1


def test_every_request_ends_exactly_once_under_a_cpu_hog(tiny_target, tiny_draft):
    """Two processes spin on the cores while loads, replies and cancellations (queued and running, at random
    moments) go through the service: every request ends once, with one of the three outcomes."""
    spinning = [multiprocessing.Event() for _ in range(2)]
    hogs = [multiprocessing.Process(target=_spin, args=(HANG_GUARD, e), daemon=True) for e in spinning]
    for h in hogs:
        h.start()
    assert all(e.wait(HANG_GUARD) for e in spinning)  # both spin before the first request is queued
    s = EngineService()
    counts = ends_per_request(s)
    rng = random.Random(12)
    try:
        tickets = []
        settings = ModelSettings(tiny_target, n_ctx=2048, n_threads=1)
        for i in range(120):
            r = rng.random()
            if i % 10 == 0:
                tickets.append(rq.load_target(s, settings))
            elif i % 10 == 5:
                tickets.append(rq.load_draft(s, ModelSettings(tiny_draft, n_ctx=2048, n_threads=1)))
            else:
                tickets.append(rq.generate(s, _request(rng.choice([1, 20, 300]))))
            if r < 0.3:
                s.cancel(tickets[-1])  # most likely still queued
            elif r < 0.5:
                victim = tickets[-1]
                threading.Timer(rng.random() * 0.05, lambda v=victim: s.cancel(v)).start()  # maybe running by then
        for t in tickets:
            assert t.wait(HANG_GUARD), f"request {t.id} ({t.kind}) never ended"
        wait_until(lambda: sum(counts.values()) == len(tickets))
        assert all(counts[t.id] == 1 for t in tickets)
        assert {t.outcome for t in tickets} <= set(OUTCOMES)
        assert any(t.outcome == DONE for t in tickets if t.kind == rq.CHAT)
        failed = [t for t in tickets if t.outcome == FAILED]
        assert all("no model is loaded" in t.error for t in failed)  # only behind a cancelled load
    finally:
        assert s.shutdown(30)
        for h in hogs:
            h.terminate()
            h.join(10)


def test_queued_is_announced_before_the_worker_can_start_the_request(service):
    """The chat shows "Waiting…" on "queued" and clears it on "started": "queued" must never come second."""
    release = threading.Event()
    seen: list[tuple[str, bool]] = []

    def visible(request_id: int) -> bool:
        running = service.running
        return (running is not None and running.id == request_id) or any(t.id == request_id for t in service.waiting())

    def listen(event):
        if event.kind == "queued":
            seen.append(("queued", visible(event.request_id)))
            release.set()  # the job, if the worker already had it, may end only after this was seen
        elif event.kind in ("started", DONE):
            seen.append((event.kind, True))

    service.subscribe(listen)
    ticket = service.submit("x", lambda ctx: release.wait(HANG_GUARD))
    assert ticket.wait(HANG_GUARD) and ticket.outcome == DONE and ticket.result is True
    assert seen == [("queued", False), ("started", True), (DONE, True)]

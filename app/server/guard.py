"""The server's outer guard (pure ASGI): which Host a request may name, and the answer to an internal error.

* **Host**: on a loopback address the server answers only requests whose ``Host`` names this computer
  (``127.0.0.1``, ``localhost``, ``[::1]`` or the address it is bound to, with any port). A web page a
  browser shows can send requests to the server's port, also under a name of its own that resolves to
  127.0.0.1 (DNS rebinding); the browser then sends that name as the Host, and the request gets a 400
  (``invalid_host``) before it reaches any endpoint. A request without a Host header is no browser's and
  passes. Off loopback every Host passes (clients name the machine as they reach it); there the API key
  (required there, app.server.config) keeps everyone else out.
* **Internal errors**: an exception no endpoint handled ends as one line in the server's log and, when
  no answer has started yet, an OpenAI-style 500 that says nothing about the server's internals; an answer
  already streaming is ended. Nothing reaches uvicorn, so it prints no traceback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["LOOPBACK_NAMES", "ServerGuard", "host_name", "INTERNAL_ERROR"]

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
INTERNAL_ERROR = "the server hit an internal error (its log has the details): try again"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_log = logging.getLogger("tandem.server")


def host_name(header: str) -> str:
    """The host part of a Host header, lower case, without port, brackets or a trailing dot."""
    h = header.strip().lower()
    if h.startswith("["):
        h = h[1:].partition("]")[0]
    elif h.count(":") == 1:
        h = h.partition(":")[0]
    return h.rstrip(".")


def error_body(message: str, type_: str, code: str | None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()


class ServerGuard:
    """Wraps the app (see the module docstring). `allowed_hosts`: None lets every Host pass;
    `on_refused(method, path, status, message)` hears about every request it answers itself."""

    def __init__(self, app: ASGIApp, *, allowed_hosts: tuple[str, ...] | None = None,
                 on_refused: Callable[[str, str, int, str], None] | None = None) -> None:
        self.app = app
        self.allowed = None if allowed_hosts is None else frozenset(host_name(h) for h in allowed_hosts)
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope.get("method", ""), scope.get("path", "")
        if self.allowed is not None:
            host = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), None)
            if host is not None and host_name(host) not in self.allowed:
                names = ", ".join("[::1]" if n == "::1" else n for n in LOOPBACK_NAMES)
                message = (f"this server answers only requests addressed to this computer ({names}), "
                           f"not to {host[:100]!r}")
                self._refused(method, path, 400, message)
                await _answer(send, 400, error_body(message, "invalid_request_error", "invalid_host"))
                return
        state = {"started": False, "finished": False}

        async def tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                state["finished"] = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as e:  # noqa: BLE001 - the last word on any internal error: one line, a generic 500
            _log.error("tandem server: internal error on %s %s: %s", method, path,
                       f"{type(e).__name__}: {e}".splitlines()[0][:300] if str(e) else type(e).__name__)
            self._refused(method, path, 500, INTERNAL_ERROR)
            try:
                if not state["started"]:
                    await _answer(send, 500, error_body(INTERNAL_ERROR, "server_error", "internal_error"))
                elif not state["finished"]:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:  # the client is gone
                pass

    def _refused(self, method: str, path: str, status: int, message: str) -> None:
        if self.on_refused is not None:
            try:
                self.on_refused(method, path, status, message)
            except Exception:  # noqa: BLE001 - a log listener must not break a request
                pass


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

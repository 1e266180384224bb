"""Start and stop the local server: uvicorn in its own thread, on an `EngineService` shared with the app.

`ServerConfig.validate` (app.server.config) holds the safety rules. `LocalServer.start()` returns
once the port is bound (or raises `ServerError` with one readable line: port in use, bad address);
`stop()` unloads the server's models and ends the thread. The request log (`RequestRecord`s) goes to the
`on_record` callback, in the server's thread.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import uvicorn

from app.engine.workers import Endpoint
from app.server.api import RequestRecord, ServerSettings, create_app
from app.server.config import ServerConfig, ServerError, is_loopback
from app.server.guard import LOOPBACK_NAMES
from app.server.models import ModelCatalog, PresetSource, ServedModels
from app.service.engine_service import SERVER_STOP, EngineService

__all__ = ["LocalServer"]

class LocalServer:
    """The server's thread, its uvicorn instance and its models on `service`."""

    def __init__(self, service: EngineService, catalog: ModelCatalog, config: ServerConfig, *,
                 presets: PresetSource | None = None, on_record: Callable[[RequestRecord], None] | None = None,
                 workers: tuple[Endpoint, ...] = (), split: tuple[float, ...] | None = None) -> None:
        """`workers` / `split`: the targets' layers go to these workers (app.engine.workers), drafts stay here."""
        config.validate()
        self.service = service
        self.catalog = catalog
        self.config = config
        self.served = ServedModels(catalog, presets or PresetSource(None), ttl_seconds=config.ttl_seconds,
                                   workers=workers, split=split)
        # on loopback only this computer's names pass as the Host (DNS rebinding); elsewhere the API key guards
        hosts = (*LOOPBACK_NAMES, config.host) if is_loopback(config.host) else None
        settings = ServerSettings(api_key=config.api_key or None, cors_origins=tuple(config.cors_origins),
                                  max_body_bytes=config.max_body_bytes, allowed_hosts=hosts)
        self.app = create_app(service, catalog, self.served, settings, on_record)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.port = config.port

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def base_url(self) -> str:
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"http://{host}:{self.port}/v1"

    def start(self, timeout: float = 15.0) -> None:
        """Bind and serve in a thread; returns when it accepts connections (ServerError when it cannot)."""
        if self.running:
            return
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.config.host, self.config.port))
        except OSError as e:
            sock.close()
            reason = "the port is in use" if e.errno in (98, 48, 10048) else (e.strerror or str(e))
            raise ServerError(f"cannot listen on {self.config.host}:{self.config.port}: {reason}") from None
        self._socket = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="on",
                                timeout_graceful_shutdown=3)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="tandem-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"the server did not start on {self.config.host}:{self.port}")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop serving (open streams are cancelled) and unload the server's models. True when it stopped."""
        stopped = True
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            stopped = not self._thread.is_alive()
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self._thread = None
        self._server = None
        if self.service.is_alive():
            self.service.submit(SERVER_STOP, self.served.unload_all, label="unload the server's models")
        return stopped

"""How the local server is set up, and its safety rules (no web framework imported here: the CLI reads it).

The server binds 127.0.0.1 unless told otherwise, and any other address needs an API key; CORS stays off
unless origins are listed; request bodies are bounded (`MAX_BODY_BYTES`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "DEFAULT_TTL_SECONDS", "MAX_BODY_BYTES", "ServerConfig", "ServerError",
           "is_loopback"]

MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1235  # next to LM Studio's 1234, so both can run
DEFAULT_TTL_SECONDS = 600


class ServerError(Exception):
    """The server cannot start as configured (one readable line)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT  # 0: any free port (LocalServer.port says which)
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    ttl_seconds: float = DEFAULT_TTL_SECONDS  # idle models are unloaded after this long (0: never)
    max_body_bytes: int = MAX_BODY_BYTES

    def validate(self) -> None:
        if not self.host.strip():
            raise ServerError("the address is empty")
        if not (0 <= self.port <= 65535):
            raise ServerError(f"the port must be between 0 and 65535, got {self.port}")
        if not is_loopback(self.host) and not (self.api_key or "").strip():
            raise ServerError(f"listening on {self.host} (not this computer only) needs an API key")
        if self.ttl_seconds < 0:
            raise ServerError(f"the idle TTL must be 0 (never) or more seconds, got {self.ttl_seconds}")
        for origin in self.cors_origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ServerError(f"a CORS origin is '*' or starts with http:// or https://, got {origin!r}")

"""The user's Hugging Face access token (for gated and private repositories).

Stored in the operating system's keyring (Secret Service, macOS Keychain, Windows Credential Locker)
when the `keyring` package finds a usable one; otherwise in a file only the user can read
(``<config>/hf-token``, mode 0600), the way huggingface_hub's own CLI keeps it. The token is never
logged, never shown in a repr and never written anywhere else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["TokenError", "TokenStore", "looks_like_token", "mask_token"]

SERVICE = "tandem"
USERNAME = "huggingface-token"
FILE_NAME = "hf-token"
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_\-]{8,256}$")


class TokenError(Exception):
    """A token cannot be saved or is malformed; one line for people."""


def looks_like_token(text: str) -> bool:
    """Hub tokens are 'hf_' + letters and digits; accept anything token-shaped without spaces."""
    return bool(_TOKEN_RE.match(text.strip()))


def mask_token(token: str | None) -> str:
    """'hf_abcd…wxyz' for display; '' for none."""
    if not token:
        return ""
    t = token.strip()
    return t[:3] + "…" + t[-4:] if len(t) > 10 else "…"


def _usable_keyring():
    """The keyring backend if one can really store secrets here, else None."""
    if os.environ.get("TANDEM_NO_KEYRING"):
        return None
    try:
        import keyring
        from keyring.backends import fail

        kr = keyring.get_keyring()
    except Exception:  # keyring missing or its backend discovery failed
        return None
    if isinstance(kr, fail.Keyring):
        return None
    try:
        if float(getattr(kr, "priority", 1)) <= 0:
            return None
    except Exception:
        return None
    return kr


class TokenStore:
    """get / set / clear the token. `where` tells the user where it is kept."""

    def __init__(self, config_dir: Path | str, use_keyring: bool = True) -> None:
        self.file = Path(config_dir) / FILE_NAME
        self._keyring = _usable_keyring() if use_keyring else None

    def __repr__(self) -> str:
        return f"TokenStore({self.where})"

    @property
    def where(self) -> str:
        if self._keyring is not None:
            return "the system keyring"
        return f"{self.file} (readable only by you)"

    def get(self) -> str | None:
        if self._keyring is not None:
            try:
                value = self._keyring.get_password(SERVICE, USERNAME)
                if value:
                    return value
            except Exception as e:  # a locked or broken keyring: fall back to the file
                log.warning("cannot read the token from the keyring: %s", type(e).__name__)
        try:
            value = self.file.read_text(encoding="utf-8").strip()
            return value or None
        except OSError:
            return None

    def set(self, token: str) -> str:
        """Save `token`; returns where it was saved. Raises TokenError for malformed input or I/O failure."""
        token = token.strip()
        if not looks_like_token(token):
            raise TokenError("that does not look like a Hugging Face access token (it usually starts with 'hf_')")
        if self._keyring is not None:
            try:
                self._keyring.set_password(SERVICE, USERNAME, token)
                with contextlib.suppress(OSError):
                    self.file.unlink()
                return "the system keyring"
            except Exception as e:
                log.warning("cannot store the token in the keyring (%s); using a private file", type(e).__name__)
                self._keyring = None
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(token)
            os.chmod(self.file, 0o600)
        except OSError as e:
            raise TokenError(f"cannot save the token to {self.file}: {e.strerror or e}") from e
        return str(self.file)

    def clear(self) -> None:
        if self._keyring is not None:
            with contextlib.suppress(Exception):
                self._keyring.delete_password(SERVICE, USERNAME)
        with contextlib.suppress(OSError):
            self.file.unlink()

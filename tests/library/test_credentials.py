"""The Hugging Face token store: keyring when usable, else a private file; never shown."""

from __future__ import annotations

import stat
from pathlib import Path

import keyring
import pytest
from keyring.backend import KeyringBackend

from app.library.credentials import TokenError, TokenStore, looks_like_token, mask_token

TOKEN = "hf_AbCdEfGhIjKlMnOpQrStUv"


class MemoryKeyring(KeyringBackend):
    """A real keyring backend that keeps secrets in a dict (stands in for Secret Service / Keychain)."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.store.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.store[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.store.pop((service, username), None)


def test_file_fallback_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_NO_KEYRING", "1")
    store = TokenStore(tmp_path)
    assert store.get() is None
    where = store.set("  " + TOKEN + "\n")
    assert where == str(tmp_path / "hf-token")
    assert store.get() == TOKEN
    mode = stat.S_IMODE((tmp_path / "hf-token").stat().st_mode)
    assert mode == 0o600
    assert TOKEN not in repr(store)
    store.clear()
    assert store.get() is None and not (tmp_path / "hf-token").exists()


def test_keyring_is_used_when_usable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TANDEM_NO_KEYRING", raising=False)
    backend = MemoryKeyring()
    previous = keyring.get_keyring()
    keyring.set_keyring(backend)
    try:
        store = TokenStore(tmp_path)
        assert store.where == "the system keyring"
        assert store.set(TOKEN) == "the system keyring"
        assert backend.store == {("tandem", "huggingface-token"): TOKEN}
        assert not (tmp_path / "hf-token").exists()  # nothing in plain text
        assert store.get() == TOKEN
        store.clear()
        assert store.get() is None
    finally:
        keyring.set_keyring(previous)


def test_malformed_tokens_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_NO_KEYRING", "1")
    store = TokenStore(tmp_path)
    for bad in ("", "hf abc def", "short", "x" * 300):
        with pytest.raises(TokenError, match="does not look like"):
            store.set(bad)
    assert store.get() is None
    assert looks_like_token(TOKEN)


def test_mask() -> None:
    assert mask_token(TOKEN) == "hf_…StUv"
    assert mask_token(None) == ""

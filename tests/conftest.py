"""Shared pytest setup: fixtures live in tests/fixtures_*.py and are registered here."""

import os
import tempfile

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# the app's data folder (chats, settings, past-chats history for drafting): never the real user's in tests
os.environ.setdefault("TANDEM_DATA_DIR", tempfile.mkdtemp(prefix="tandem-test-data-"))

pytest_plugins = ["tests.fixtures_tiny", "tests.fixtures_real", "tests.fixtures_hub", "tests.fixtures_workers"]

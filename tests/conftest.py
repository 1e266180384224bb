"""Shared pytest setup: fixtures live in tests/fixtures_*.py and are registered here."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

pytest_plugins = ["tests.fixtures_tiny", "tests.fixtures_real", "tests.fixtures_hub"]

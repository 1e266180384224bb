"""The engine service: the one queue and worker thread every client of the engine goes through (no Qt)."""

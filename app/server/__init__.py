"""The local OpenAI-compatible server (Starlette on uvicorn), a client of the engine service."""

"""The team server: one Kit on a shared data folder behind HTTP, with users and bearer tokens.

    accounts.py   users and hashed tokens (SQLite in the data folder)
    auth.py       bearer authentication, who may read whose rows
    schemas.py    request bodies (422 naming the field) and the completion's JSON
    errors.py     kit errors -> HTTP statuses
    routes.py     /health /models /complete /embed /usage /spend
    memory_routes.py   /memories (store, get, update, delete, history) and /retrieve, as the caller
    session_routes.py  /auth register, login, refresh, logout (``serve --allow-register``)
    sessions.py   passwords and login sessions (access + refresh tokens)
    throttle.py   failed-login limits per name and per client address
    openai_compat.py   the OpenAI-compatible /v1 routes (openai_schemas.py: their JSON)
    metrics_routes.py  /metrics (Prometheus, admins only)
    browser.py    CORS for listed origins; /docs with Swagger UI served locally
    app.py        the FastAPI app and ``serve`` (uvicorn)
    admin.py      the ``users`` and ``tokens`` commands' output

Needs FastAPI and uvicorn; nothing below the views imports this package.
"""

from __future__ import annotations

from .accounts import Accounts, NewToken, TokenInfo, User

__all__ = ["Accounts", "NewToken", "TokenInfo", "User"]

"""The team server's ASGI app (FastAPI) and ``serve``, which runs it under uvicorn."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from ..core.errors import KitError
from .accounts import Accounts
from .browser import allow_origins, check_origins, install_docs
from .memory_routes import router as memory_router
from .metrics_routes import router as metrics_router
from .openai_compat import router as openai_router
from .routes import kit_error, router
from .session_routes import SelfService, install

if TYPE_CHECKING:
    from ..kit import Kit

__all__ = ["create_app", "serve", "MAX_BODY_BYTES"]

MAX_BODY_BYTES = 1_000_000


def create_app(kit: Kit, accounts: Accounts, *, docs: bool = True, max_body_bytes: int = MAX_BODY_BYTES,
               self_service: SelfService | None = None, cors_origins: Sequence[str] = ()) -> FastAPI:
    """The server's app on ``kit`` (every call made with the caller's ``user_id``) and ``accounts``.

    ``docs``: the OpenAPI schema at ``/openapi.json`` and a Swagger page at ``/docs`` (its scripts
    served by the server, no CDN). Bodies over ``max_body_bytes`` are refused with 413.
    ``self_service``: the ``/auth`` routes (register, login, refresh, logout), off when None.
    ``cors_origins``: the browser origins allowed to call (CORS); none by default."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        kit.close()
        if sessions is not None:
            sessions.close()
        accounts.close()

    app = FastAPI(
        title="cognitionos-kit team server", version="0.1.0", lifespan=lifespan, max_body_size=max_body_bytes,
        docs_url=None, openapi_url="/openapi.json" if docs else None, redoc_url=None,
        description="Costed, ledgered LLM calls on a shared data folder; every route but /health needs a bearer token.",
    )
    app.state.kit = kit
    app.state.accounts = accounts
    app.add_exception_handler(KitError, kit_error)
    app.include_router(router)
    app.include_router(memory_router)
    app.include_router(openai_router)
    app.include_router(metrics_router)
    if docs:
        install_docs(app, "/openapi.json")
    if cors_origins:
        allow_origins(app, cors_origins)
    sessions = None if self_service is None else install(app, accounts, self_service)
    return app


def serve(home: str | None, *, host: str = "127.0.0.1", port: int = 8765, docs: bool = True,
          self_service: SelfService | None = None, cors_origins: Sequence[str] = ()) -> None:
    """Run the server on the data folder ``home`` until interrupted (provider keys from the
    environment or ``.env``, as a notebook's Kit)."""
    import uvicorn

    from ..kit import Kit

    cors_origins = check_origins(cors_origins)  # a bad one stops the command before the Kit opens
    kit = Kit(home, server=False)  # the server itself is never a client (even with COGNITIONOS_SERVER set)
    accounts = Accounts(kit.home)
    if not accounts.users():
        print(f"note: no users yet; add one with: cognitionos-kit users add NAME --admin --home {kit.home}", file=sys.stderr)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: listening on {host}, not only this machine: put TLS in front (see the README)", file=sys.stderr)
    print(f"cognitionos-kit server: data folder {kit.home}, http://{host}:{port}", flush=True)
    if self_service is not None:
        print("note: self-service is on: anyone who can reach the server may register (POST /auth/register)", file=sys.stderr)
    app = create_app(kit, accounts, docs=docs, self_service=self_service, cors_origins=cors_origins)
    uvicorn.run(app, host=host, port=port, log_level="info", server_header=False)

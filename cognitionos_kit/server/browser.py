"""What browsers need from the server: CORS for listed origins, and a ``/docs`` page whose Swagger UI
scripts come from the server itself (the ``fastapi-offline`` package's copy), not from a CDN."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from ..core.errors import ConfigurationError

__all__ = ["allow_origins", "check_origins", "install_docs", "DOCS_ASSETS"]

DOCS_ASSETS = "/docs-assets"
_METHODS = ["GET", "POST", "PATCH", "DELETE"]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigurationError(f"a CORS origin is scheme://host[:port], e.g. https://lab.example.org; got {url!r}")
    return f"{parts.scheme}://{parts.netloc}"


def check_origins(origins: Sequence[str]) -> list[str]:
    """``origins`` as CORS compares them; ``ConfigurationError`` for one that is not scheme://host[:port]."""
    return [_origin(o) for o in origins]


def allow_origins(app: FastAPI, origins: Sequence[str]) -> None:
    """CORS for exactly ``origins`` (bearer tokens in ``Authorization``, no cookies)."""
    app.add_middleware(CORSMiddleware, allow_origins=check_origins(origins), allow_methods=_METHODS,
                       allow_headers=["Authorization", "Content-Type"], allow_credentials=False)


def install_docs(app: FastAPI, openapi_url: str) -> None:
    """``/docs`` (Swagger UI) with its script, style and icon served under ``DOCS_ASSETS``."""
    app.mount(DOCS_ASSETS, StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")  # behind a proxy that serves the app under a prefix
        return get_swagger_ui_html(
            openapi_url=root + openapi_url, title=f"{app.title} - docs",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png")

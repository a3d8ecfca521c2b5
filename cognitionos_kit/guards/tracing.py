"""OpenTelemetry spans of every ledger row, one per attempt, following the GenAI semantic
conventions (``gen_ai.*`` attributes, named ``"chat gpt-4o-mini"``), plus the kit's own
``cognitionos.*`` ones (cost, request id, status, cache hit).

When spans are made (``kit.set_tracing``): by default (``None``) only once the program has set a
global tracer provider (``trace.set_tracer_provider``, or ``opentelemetry-instrument``). That
cannot happen without importing opentelemetry, so this module never imports it in that mode:
a Kit without OTel installed or set up pays one dict lookup per row. ``True`` sends spans to the
global provider even before one is set (they start to count when it is); ``False`` never."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from ..core.errors import ConfigurationError, InvalidRequestError

__all__ = ["Tracing", "span_attributes"]

_TRACER_NAME = "cognitionos_kit"


def span_attributes(row: dict[str, Any]) -> dict[str, Any]:
    """The span attributes of one ledger row (GenAI conventions plus ``cognitionos.*``)."""
    provider = row.get("provider")
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "embeddings" if row.get("kind") == "embedding" else "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,  # the name before gen_ai.provider.name, which many backends still read
        "gen_ai.request.model": row.get("model"),
        "gen_ai.response.model": row.get("response_model") or (row.get("model") if row.get("status") == "ok" else None),
        "gen_ai.usage.input_tokens": row.get("prompt_tokens"),
        "gen_ai.usage.output_tokens": row.get("completion_tokens"),
        "gen_ai.usage.cache_read.input_tokens": row.get("cached_tokens") or None,
        "gen_ai.usage.cache_creation.input_tokens": row.get("cache_write_tokens") or None,
        "error.type": row.get("error_type") or (None if row.get("status") == "ok" else row.get("status")),
        "cognitionos.cost_usd": row.get("cost_usd"),
        "cognitionos.saved_cost_usd": row.get("saved_cost_usd"),
        "cognitionos.request_id": row.get("request_id"),
        "cognitionos.attempt": row.get("attempt"),
        "cognitionos.status": row.get("status"),
        "cognitionos.cache_hit": bool(row.get("cache_hit")),
        "cognitionos.substituted": bool(row.get("substituted")),
        "cognitionos.requested_model": row.get("requested_model"),
        "cognitionos.trace_id": row.get("trace_id"),
        "cognitionos.project": row.get("project"),
    }
    return {k: v for k, v in attrs.items() if v is not None and not (isinstance(v, float) and math.isnan(v))}


class Tracing:
    """Where a Kit's spans go: ``observe(row)`` makes one span of a ledger row, or nothing."""

    def __init__(self) -> None:
        self.enabled: bool | None = None
        self.tracer_provider: Any = None  # one given to set(); else the global one
        self._cached: tuple[Any, Any] = (None, None)  # (provider, its tracer)

    def set(self, enabled: bool | None, tracer_provider: Any = None) -> None:
        if enabled is not None and enabled is not True and enabled is not False:
            raise InvalidRequestError(f"enabled must be True, False or None (when a tracer provider is set), got {enabled!r}")
        if tracer_provider is not None and not callable(getattr(tracer_provider, "get_tracer", None)):
            raise InvalidRequestError(f"tracer_provider must be an OpenTelemetry TracerProvider, got {tracer_provider!r}")
        if enabled is False and tracer_provider is not None:
            raise InvalidRequestError("tracing cannot be off and have a tracer_provider: pass one or the other")
        if enabled and tracer_provider is None:
            try:
                import opentelemetry.trace  # noqa: F401 - the global provider lives there
            except ImportError:
                raise ConfigurationError("tracing needs opentelemetry: pip install 'cognitionos_kit[otel]'") from None
        self.enabled, self.tracer_provider, self._cached = enabled, tracer_provider, (None, None)

    def _tracer(self) -> Any:
        if self.enabled is False:
            return None
        provider = self.tracer_provider
        if provider is None:
            trace = sys.modules.get("opentelemetry.trace")
            if trace is None:
                return None
            provider = trace.get_tracer_provider()
            if self.enabled is None and isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
                return None  # nobody set one up
        if self._cached[0] is not provider:
            self._cached = (provider, provider.get_tracer(_TRACER_NAME))
        return self._cached[1]

    def observe(self, row: dict[str, Any]) -> None:
        tracer = self._tracer()
        if tracer is None:
            return
        from opentelemetry.trace import SpanKind, Status, StatusCode

        end = float(row.get("ts") or time.time())
        ms = row.get("latency_ms")
        start = end - (ms / 1000 if isinstance(ms, (int, float)) and ms == ms else 0.0)
        attrs = span_attributes(row)
        span = tracer.start_span(f"{attrs['gen_ai.operation.name']} {row.get('model') or ''}".strip(),
                                 kind=SpanKind.CLIENT, start_time=int(start * 1e9), attributes=attrs)
        if row.get("status") != "ok":
            span.set_status(Status(StatusCode.ERROR, str(attrs.get("error.type") or "")))
        span.end(end_time=int(end * 1e9))

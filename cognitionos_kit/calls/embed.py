"""Embeddings from OpenAI's API: batched, timed, costed and recorded like any call (one ledger
row per batch). The local model needs none of this: see ``embeddings.py``."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..core.errors import ConfigurationError, InvalidRequestError, KitError, redact
from ..core.types import ProviderRequest, Usage
from ..core.validation import check_identifier, check_text, clean_text
from . import tokens
from .catalogue import EMBEDDING_MODELS
from .plan import check_texts
from .policy import Step, as_provider_error
from .providers.http import AttemptIO, attempt_scope

if TYPE_CHECKING:
    import numpy as np

    from .pricing import PriceBook
    from .providers.base import Provider
    from .recorder import Recorder

__all__ = ["embed", "embed_remote", "EMBEDDING_MODELS"]

_BATCH = 256  # inputs per embeddings request (the API accepts up to 2048)


def embed(texts: str | Sequence[str], model: str | None, *, user_id: str | None, provider: Provider,
          timeout: float, max_retry_wait: float | None, prices: PriceBook, recorder: Recorder) -> np.ndarray:
    """``kit.embed``: every argument checked, then the local model (offline) or OpenAI's."""
    from .embeddings import get_local_embedder

    items = check_texts(texts)
    check_identifier(user_id, "user_id")
    if model is not None:
        check_text(model, "model")
    if model is None or model == get_local_embedder().name:
        return get_local_embedder().embed(items)
    return embed_remote(provider, items, model, user_id=user_id, timeout=timeout, max_retry_wait=max_retry_wait,
                        prices=prices, recorder=recorder)


def embed_remote(provider: Provider, items: list[str], model: str, *, user_id: str | None, timeout: float,
                 max_retry_wait: float | None, prices: PriceBook, recorder: Recorder) -> np.ndarray:
    """``items`` embedded by ``model`` at ``provider`` (OpenAI) -> float32 array (n, dim)."""
    if model not in EMBEDDING_MODELS:
        raise InvalidRequestError(
            f"unknown embedding model {model!r}: use None (local all-MiniLM-L6-v2) or one of {', '.join(EMBEDDING_MODELS)}"
        )
    if not provider.configured:
        raise ConfigurationError(f"{model} needs OpenAI: set OPENAI_API_KEY (or use model=None for local embeddings)")
    import numpy as np

    provider = provider.key_views()[0]  # its first ready key (no rotation for embeddings)
    vectors: list[list[float]] = []
    request_id = "req_" + os.urandom(12).hex()
    for start in range(0, len(items), _BATCH):
        batch = items[start : start + _BATCH]
        setup_ms = provider.prepare(False)
        io = AttemptIO(timeout, max_retry_wait=max_retry_wait)
        t0 = time.perf_counter()
        row: dict[str, Any] = {
            "request_id": request_id, "attempt": start // _BATCH + 1, "kind": "embedding", "provider": provider.name,
            "model": model, "requested_provider": provider.name, "requested_model": model, "substituted": False,
            "user_id": user_id, "stream": False, "setup_ms": setup_ms or None, "key_fingerprint": provider.key_fingerprint,
        }
        try:
            with attempt_scope(io):
                vecs, usage, _ = provider.embed(batch, model)  # type: ignore[attr-defined]
        except Exception as exc:
            err = as_provider_error(exc, Step(provider, ProviderRequest(model, (), None, 1, None)), io)
            row.update(status="error", latency_ms=(time.perf_counter() - t0) * 1000,
                       http_requests=io.requests or None, maybe_billed_requests=io.maybe_billed or None,
                       error_type=getattr(err, "error_type", type(err).__name__),
                       error_message=clean_text(redact(err))[:500])
            recorder.write(row)
            if isinstance(err, KitError):
                raise err from None
            raise
        if usage.estimated:
            usage = Usage(prompt_tokens=sum(tokens.count_text(t, "text-embedding-3-small") for t in batch), estimated=True)
        est = prices.cost(provider.price_id or provider.name, model, usage)
        row.update(status="ok", latency_ms=(time.perf_counter() - t0) * 1000, prompt_tokens=usage.prompt_tokens,
                   completion_tokens=0, total_tokens=usage.prompt_tokens, cost_usd=est.cost_usd,
                   tokens_estimated=usage.estimated, http_requests=io.requests or None,
                   maybe_billed_requests=io.maybe_billed or None, price_source=est.source, price_version=est.version)
        recorder.write(row)
        vectors.extend(vecs)
    return np.asarray(vectors, dtype=np.float32).reshape(len(items), -1)

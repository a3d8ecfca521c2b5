"""Texts into vectors for the memory, through the :class:`~cognitionos_kit.calls.embeddings.Embedder`
protocol. The local MiniLM is an Embedder itself; every other model goes through a
:class:`~cognitionos_kit.calls.embeddings.RemoteEmbedder` calling back into the ``embed`` of the
Kit the memory belongs to (passed in by the Kit, so this layer never imports it). Whatever an
embedder returns is checked (shape, finite, non-zero) and scaled to unit rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..calls.embeddings import EmbedCall, Embedder, LocalMiniLM, RemoteEmbedder, get_local_embedder
from ..core.errors import ConfigurationError, InvalidRequestError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["LOCAL_MODEL", "EMBEDDING_DIMS", "Embedders", "MissingEmbedder", "embed_texts", "unit_rows", "width"]

LOCAL_MODEL = LocalMiniLM.name
# Widths of the models kit.embed serves: known without an embedding call (so no key is needed to
# load precomputed vectors). A collection of another model takes the width of its first vectors.
EMBEDDING_DIMS = {LOCAL_MODEL: LocalMiniLM.dim, "text-embedding-3-small": 1536, "text-embedding-3-large": 3072,
                  "text-embedding-ada-002": 1536}
EMBED_CHUNK = 1024  # texts per call to an embedder


class MissingEmbedder:
    """The Embedder of a remote model in a Memory without a Kit: it says what to do instead."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dim = EMBEDDING_DIMS.get(name, 0)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Refuse: only a Kit can reach a remote model."""
        raise ConfigurationError(f"embedding model {self.name!r} needs a Kit: use kit.memory or Memory(..., kit=kit)")


class Embedders:
    """The Embedder of each model name: the local MiniLM, or ``embed_call`` (a Kit's ``embed``) for
    every other model; without ``embed_call``, other models cannot embed texts (precomputed
    vectors of them still load and search)."""

    def __init__(self, embed_call: EmbedCall | None = None) -> None:
        self.embed_call = embed_call
        self.remote: dict[str, Embedder] = {}

    def get(self, model: str) -> Embedder:
        """The Embedder of ``model``."""
        if model == LOCAL_MODEL:
            return get_local_embedder()
        found = self.remote.get(model)
        if found is None:
            dim = EMBEDDING_DIMS.get(model, 0)
            found = MissingEmbedder(model) if self.embed_call is None else RemoteEmbedder(model, self.embed_call, dim=dim)
            self.remote[model] = found
        return found


def embed_texts(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    """``texts`` as unit float32 rows of ``embedder``, in batches of EMBED_CHUNK."""
    import numpy as np

    out = [np.asarray(embedder.embed(list(texts[start : start + EMBED_CHUNK])), dtype=np.float32)
           for start in range(0, len(texts), EMBED_CHUNK)]
    return unit_rows(np.concatenate(out) if out else np.zeros((0, 0), np.float32), len(texts), None, embedder.name)


def width(embedder: Embedder) -> int:
    """How wide ``embedder``'s vectors are (asking it once when it does not say)."""
    return embedder.dim or int(embed_texts(embedder, ["dimension probe"]).shape[1])


def unit_rows(vectors: object, n: int, dim: int | None, model: str | None) -> np.ndarray:
    """``vectors`` as float32 (n, dim) with unit rows; anything else is an InvalidRequestError."""
    import numpy as np

    try:
        v = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise InvalidRequestError(f"embeddings must be a numeric array: {e}") from None
    if v.ndim == 1 and n == 1:
        v = v[None]
    if v.ndim != 2 or v.shape[0] != n or (dim is not None and v.shape[1] != dim):
        raise InvalidRequestError(f"embeddings must have shape ({n}, {dim or 'dim'}) for {model}, got {v.shape}")
    if not np.isfinite(v).all():
        raise InvalidRequestError("embeddings contain NaN or infinite values")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    if (norms == 0).any():
        raise InvalidRequestError("embeddings contain an all-zero row")
    return v / norms

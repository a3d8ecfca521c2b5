"""``Memory``: the semantic memory of one collection in one data folder.

Design, in one paragraph: every write is an event appended to this process's journal (durable
when the call returns, see ``store.py``); DuckDB, after ingest, is the source of truth. Each
process mirrors its collection in a numpy :class:`~.index.Table` and searches it exactly (one
matrix-vector product, masks for visibility and type, vectorised decay and boost, argpartition).
Before each call a Memory checks, with one directory scan and a counter of this process's
appends, whether another process or another Memory object wrote events; only then does it open
DuckDB and load the new events. Access counts from ``retrieve`` are events too, applied to the
local table at once (other writers' counts arrive with their next batch of events). Filters are
evaluated in Python on the table, never pasted into SQL.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..core.errors import ConfigurationError, InvalidRequestError
from ..core.validation import check_identifier, check_text, check_time
from .filters import compile_filter
from .hit import HitList, MemoryHit
from .index import MEMORY_TYPES, SCOPES, ApproximateIndex, Table
from .ranking import Ranking, Weights
from .store import Blobs, EventLog, decode_vectors, encode_vectors

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from ..kit import Kit

__all__ = ["Memory", "MemoryNotFoundError", "OwnerRequiredError"]

LOCAL_MODEL = "all-MiniLM-L6-v2"
# Widths of the models kit.embed serves: known without an embedding call (so no key is needed to
# load precomputed vectors). A collection of another model takes the width of its first vectors.
EMBEDDING_DIMS = {LOCAL_MODEL: 384, "text-embedding-3-small": 1536, "text-embedding-3-large": 3072,
                  "text-embedding-ada-002": 1536}
_WRITE_CHUNK = 20_000  # rows per journal write in store_many / reembed
_EMBED_CHUNK = 1024


class MemoryNotFoundError(InvalidRequestError, KeyError):
    """No memory with this id that this user may use (never stored, deleted, or another user's).

    The message is the same in every case ("no memory 'mem_...' for user 'ana' in collection
    'default'"), so it never tells whether an id exists for someone else."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class OwnerRequiredError(InvalidRequestError, TypeError):
    """``get``/``update``/``delete``/``history`` were called without ``user_id=`` as a keyword
    (also a TypeError, as any call with the wrong arguments)."""


# --- validation ---------------------------------------------------------------------------
def _text(value: Any, what: str) -> str:
    """A non-blank string that is valid UTF-8 (no lone surrogates)."""
    return check_text(value, what)


def _choice(value: Any, options: Sequence[str], what: str) -> str:
    if not isinstance(value, str) or value not in options:
        raise InvalidRequestError(f"unknown {what} {value!r}: use one of {', '.join(options)}")
    return value


def _epoch(value: Any, what: str) -> float:
    return check_time(value, what).timestamp()


def _metadata(value: Any, what: str = "metadata") -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidRequestError(f"{what} must be a dict with str keys, got {type(value).__name__}")
    _check_strings(value, what)
    try:
        return json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError) as e:
        raise InvalidRequestError(f"{what} must be JSON-serialisable: {e}") from None


def _check_strings(value: Any, where: str) -> None:
    """Every key of every nested dict a str (JSON would turn 1 into "1" silently), and every key
    and string valid UTF-8; other types are left to the JSON round trip."""
    if isinstance(value, str):
        check_text(value, where, allow_empty=True)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidRequestError(f"{where} keys must be str (metadata is JSON), got {k!r}")
            check_text(k, f"{where} key", allow_empty=True)
            _check_strings(v, f"{where}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_strings(v, f"{where}[{i}]")


_F = TypeVar("_F", bound=Callable[..., Any])


def _owner_keyword(example: str) -> Callable[[_F], _F]:
    """Make a missing or positional ``user_id`` (the signature before owners were checked) an
    OwnerRequiredError that shows the call to write instead of Python's generic TypeError."""

    def wrap(fn: _F) -> _F:
        name = fn.__name__

        @functools.wraps(fn)
        def call(self: Memory, *args: Any, **kwargs: Any) -> Any:
            if "user_id" in kwargs and len(args) <= 1:
                return fn(self, *args, **kwargs)
            if len(args) >= 2:
                who = json.dumps(args[1]) if isinstance(args[1], str) else '"ana"'
                raise OwnerRequiredError(
                    f"{name}() takes only the memory id by position; pass the owner by keyword: "
                    f"kit.memory.{name}(memory_id, user_id={who}{example})")
            raise OwnerRequiredError(
                f"{name}() needs the memory's owner as a keyword, e.g. kit.memory.{name}(memory_id, user_id=\"ana\"{example}): "
                "user_id is required, since a memory is only read, changed or deleted for the user it belongs to")

        return call  # type: ignore[return-value]

    return wrap


def _dt(ts: float) -> datetime | None:
    return datetime.fromtimestamp(ts, timezone.utc) if ts else None


def _hash(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


# --- the memory ---------------------------------------------------------------------------
class Memory:
    """Semantic memory of one collection: ``store``, ``retrieve``, ``update``, ``delete``, ``history``.

    Memories belong to a ``user_id`` and have a ``scope``: ``"user"`` (private to that user),
    ``"agent"`` (private to that user and ``agent_id``) or ``"global"`` (seen by every user).
    ``memory_type`` is one of working, episodic, semantic, procedural. One collection holds
    vectors of one embedding model only (chosen at its first store; ``reembed`` migrates it).
    ``get``, ``update``, ``delete`` and ``history`` take the caller as ``user_id=`` (required,
    keyword-only): a memory is changed only by its owner, read by its owner (or by anyone if it
    is global); another user's memory is a MemoryNotFoundError exactly like an unknown id.

    >>> m = kit.memory
    >>> mid = m.store("ada", "DuckDB runs inside the Python process.", metadata={"source": "notes"})
    >>> m.retrieve("ada", "Which database is embedded?", k=3)
    >>> m.update(mid, user_id="ada", content="DuckDB runs in-process."); m.delete(mid, user_id="ada")

    ``Kit(memory={...})`` passes its keyword arguments (see ``OPTIONS``) to the Kit's memory.
    """

    OPTIONS = ("collection", "embedding_model", "half_life_days", "weights", "boost_cap", "index", "lock_timeout", "fsync")

    def __init__(
        self,
        home: str | Path,
        *,
        kit: Kit | None = None,
        collection: str = "default",
        embedding_model: str | None = None,
        half_life_days: float = 30.0,
        weights: Weights | Mapping[str, float] | Sequence[float] | None = None,
        boost_cap: int = 100,
        index: str = "exact",
        lock_timeout: float = 30.0,
        fsync: bool = False,
    ) -> None:
        self.check_options({"collection": collection, "embedding_model": embedding_model, "index": index,
                            "lock_timeout": lock_timeout, "fsync": fsync})
        self.collection = collection
        self.ranking = Ranking(Weights.coerce(weights), half_life_days, boost_cap)
        self.kit = kit
        self.log = EventLog(home, lock_timeout=lock_timeout, fsync=fsync)
        self._requested_model = embedding_model
        self._lock = threading.RLock()
        self._table: Table | None = None
        self._model: str | None = None  # the collection's model, once known
        self._configured = False  # a config event exists for the collection
        self._seq = self._access_seq = 0
        self._sig: tuple | None = None
        self._pending: set[str] = set()  # our own event row_ids, applied locally, not yet seen in DuckDB
        self._pending_access: set[str] = set()
        self._deleted: set[str] = set()
        self._stale = 0  # memories embedded with another model (an interrupted reembed)
        self._ann: ApproximateIndex | None = None
        self._ann_params: dict[str, Any] = {}
        self.index = index

    @classmethod
    def check_options(cls, options: Mapping[str, Any] | None) -> dict[str, Any]:
        """``options`` (keyword arguments of ``Memory`` but home and kit) checked without touching
        the data folder; a bad name or value is an InvalidRequestError."""
        if options is None:
            return {}
        if not isinstance(options, Mapping):
            raise InvalidRequestError(f"memory options must be a dict, got {type(options).__name__}")
        unknown = sorted(set(options) - set(cls.OPTIONS), key=str)
        if unknown:
            raise InvalidRequestError(f"unknown memory option(s) {unknown}: use {', '.join(cls.OPTIONS)}")
        o = dict(options)
        if "collection" in o:
            _text(o["collection"], "collection")
        if o.get("embedding_model") is not None:
            _text(o["embedding_model"], "embedding_model")
        Ranking(Weights.coerce(o.get("weights")), **{k: o[k] for k in ("half_life_days", "boost_cap") if k in o})
        if "index" in o:
            _choice(o["index"], ("exact", "approximate"), "index")
        lt = o.get("lock_timeout", 30.0)
        if isinstance(lt, bool) or not isinstance(lt, (int, float)) or not lt > 0:
            raise InvalidRequestError(f"lock_timeout must be a number of seconds > 0, got {lt!r}")
        if not isinstance(o.get("fsync", False), bool):
            raise InvalidRequestError(f"fsync must be True or False, got {o['fsync']!r}")
        return o

    def __repr__(self) -> str:
        n = len(self._table) if self._table is not None else "?"
        return f"Memory({str(self.log.home)!r}, collection={self.collection!r}, model={self._model or self._requested_model or LOCAL_MODEL!r}, memories={n}, index={self.index!r})"

    # --- settings --------------------------------------------------------------------------
    @property
    def index(self) -> str:
        return self._index

    @index.setter
    def index(self, value: str) -> None:
        self.use_index(value)

    def use_index(self, kind: str, **params: Any) -> None:
        """``"exact"`` (default) or ``"approximate"`` (an IVF index via faiss-cpu; ``params``: nlist,
        nprobe). The approximate index is built on the next retrieve and kept in step after that;
        it pays off from about 100k memories."""
        _choice(kind, ("exact", "approximate"), "index")
        with self._lock:
            self._index = kind
            if self._ann is not None and (kind == "exact" or params):
                self._ann.detach()
                self._ann = None
            self._ann_params = params

    @property
    def embedding_model(self) -> str:
        """The collection's embedding model."""
        self._sync()
        return self._model or LOCAL_MODEL

    def __len__(self) -> int:
        self._sync()
        return len(self._table)  # type: ignore[arg-type]

    # --- embedding -------------------------------------------------------------------------
    def _embed(self, texts: list[str], model: str) -> np.ndarray:
        import numpy as np

        out = []
        for start in range(0, len(texts), _EMBED_CHUNK):
            batch = texts[start : start + _EMBED_CHUNK]
            if self.kit is not None:
                v = self.kit.embed(batch, model=None if model == LOCAL_MODEL else model)
            elif model == LOCAL_MODEL:
                from ..calls.embeddings import get_local_embedder

                v = get_local_embedder().embed(batch)
            else:
                raise ConfigurationError(f"embedding model {model!r} needs a Kit: use kit.memory or Memory(..., kit=kit)")
            out.append(np.asarray(v, dtype=np.float32))
        return _normalised(np.concatenate(out) if out else np.zeros((0, 0), np.float32), len(texts), None, model)

    # --- keeping in step with DuckDB and other processes ------------------------------------
    def _sync(self, force: bool = False) -> Table:
        with self._lock:
            if self._table is not None and not force:
                sig = (self.log.signature(), self.log.db_state())
                if sig == self._sig:
                    return self._table
            journals = self.log.signature()
            data = self.log.pull(self.collection, self._seq, self._access_seq, full=self._table is None)
            self._sig = (journals, self.log.db_state())
            config = data["config"]
            if self._table is not None and config and config[0] != self._model:
                self._table = None  # another process re-embedded the collection: reload it all
                data = self.log.pull(self.collection, 0, 0, full=True)
            if self._table is None:
                self._load(data)
            else:
                self._apply(data)
            self._seq, self._access_seq = data["seq"], data["access_seq"]
            return self._table  # type: ignore[return-value]

    def _load(self, data: dict[str, Any]) -> None:
        import numpy as np

        config = data["config"]
        self._configured = config is not None
        model, dim = config if config else (self._requested_model or LOCAL_MODEL, None)
        if self._requested_model is not None and config and self._requested_model != model:
            raise ConfigurationError(
                f"collection {self.collection!r} holds {model} vectors ({dim} dims), not {self._requested_model}: "
                f"open it with embedding_model={model!r}, or migrate it with reembed(model={self._requested_model!r})"
            )
        if dim is None:
            dim = EMBEDDING_DIMS.get(model, 0)  # 0: not known until the first vectors arrive
        self._model = model
        ev = data["events"]
        ok = [i for i, (m, d) in enumerate(zip(ev["model"], ev["dim"])) if m == model and d == dim]
        self._stale = len(ev["model"]) - len(ok)
        table = Table(int(dim), capacity=max(1024, len(ok)))
        if ok:
            rows = _rows(ev, self.collection)
            emb = ev["embedding"]
            vectors = emb.take(ok, int(dim)) if isinstance(emb, Blobs) else decode_vectors([emb[i] for i in ok], int(dim))
            table.add(rows if len(ok) == len(rows) else [rows[i] for i in ok], vectors)
        acc = data["access"]
        pairs = [(table.pos[i], n, last) for i, n, last in zip(acc["id"], acc["n"], acc["last"]) if i in table.pos]
        if pairs:
            p, n, last = (np.array(c) for c in zip(*pairs))
            table.count[p] = n
            table.accessed[p] = last
        if self._ann is not None:
            self._ann.detach()
            self._ann = None
        self._table = table
        self._pending.clear()
        self._pending_access.clear()
        if self._stale:
            warnings.warn(
                f"{self._stale} memories of collection {self.collection!r} are embedded with another model than "
                f"{model} and are left out of retrieval; run reembed(model={model!r}) to include them",
                RuntimeWarning, stacklevel=4,
            )

    def _apply(self, data: dict[str, Any]) -> None:
        """Apply other processes' events (ours were applied when written)."""
        import numpy as np

        t = self._table
        assert t is not None
        ev = data["events"]
        rows = _rows(ev, self.collection)
        for r, rid, emb, model, dim in zip(rows, ev["row_id"], ev["embedding"], ev["model"], ev["dim"]):
            if rid in self._pending:  # ours: applied when written
                self._pending.discard(rid)
                continue
            mid = r["memory_id"]
            if r["op"] == "delete":
                self._deleted.add(mid)
                if mid in t.pos:
                    t.remove(mid)
                continue
            if mid in self._deleted or emb is None:  # emb None: purged, its delete follows
                continue
            if model != self._model or dim != t.dim:
                self._stale += 1
                continue
            vec = decode_vectors([emb], t.dim)[0]
            i = t.pos.get(mid)
            if i is None:
                t.add([r], vec[None])
            elif r["ts"] >= t.version[i]:
                t.replace(i, r, vec)
        acc = data["access"]
        for rid, ts, ids in zip(acc["row_id"], acc["ts"], acc["ids"]):
            if rid in self._pending_access:
                self._pending_access.discard(rid)
                continue
            p = np.array([t.pos[i] for i in ids if i in t.pos], dtype=np.int64)
            if len(p):
                t.count[p] += 1
                t.accessed[p] = np.maximum(t.accessed[p], ts)

    # --- store -----------------------------------------------------------------------------
    def store(
        self,
        user_id: str,
        content: str,
        memory_type: str = "semantic",
        scope: str = "user",
        metadata: Mapping[str, Any] | None = None,
        *,
        agent_id: str | None = None,
        created_at: Any = None,
    ) -> str:
        """Embed and store one memory; return its id. The same content stored again by the same
        user in the same scope returns the existing id (nothing duplicated, nothing deleted)."""
        _text(content, "content")
        return self.store_many(user_id, [content], memory_type=memory_type, scope=scope,
                               metadata=metadata if metadata is None or isinstance(metadata, Mapping) else [metadata],
                               agent_id=agent_id,
                               created_at=created_at)[0]

    def store_many(
        self,
        user_id: str,
        contents: Sequence[str],
        *,
        embeddings: np.ndarray | None = None,
        metadata: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
        memory_type: str = "semantic",
        scope: str = "user",
        agent_id: str | None = None,
        created_at: Any = None,
        embedding_model: str | None = None,
    ) -> list[str]:
        """Store many memories at once (embedded in batches, or from ``embeddings`` computed with
        the collection's model, named by ``embedding_model`` when given); return ids in order.
        ``metadata`` is one dict for all or one per content. Everything is validated (and
        embedded) before anything is written."""
        user_id = _text(user_id, "user_id")
        if isinstance(contents, (str, bytes)) or not isinstance(contents, Sequence):
            raise InvalidRequestError(f"contents must be a list of str, got {type(contents).__name__}")
        contents = [_text(c, f"contents[{i}]") for i, c in enumerate(contents)]
        _choice(memory_type, MEMORY_TYPES, "memory_type")
        _choice(scope, SCOPES, "scope")
        agent_id = self._agent(scope, agent_id)
        if metadata is None or isinstance(metadata, Mapping):
            metas = [_metadata(metadata)] * len(contents)
        elif isinstance(metadata, Sequence) and not isinstance(metadata, (str, bytes)) and len(metadata) == len(contents):
            metas = [_metadata(m, f"metadata[{i}]") for i, m in enumerate(metadata)]
        else:
            raise InvalidRequestError("metadata must be a dict, or a list of dicts as long as contents")
        created = time.time() if created_at is None else _epoch(created_at, "created_at")
        if embedding_model is not None:
            _text(embedding_model, "embedding_model")
        if not contents:
            return []
        with self._lock:
            t = self._sync()
            if embedding_model is not None and embedding_model != self._model:
                raise InvalidRequestError(f"embeddings from {embedding_model} cannot join collection {self.collection!r}, which holds {self._model} vectors")
            hashes = [_hash(c) for c in contents]
            ids: list[str | None] = []
            new: dict[str, int] = {}  # content hash -> index of its first occurrence among new ones
            for i, h in enumerate(hashes):
                existing = t.dedupe.get((user_id, scope, agent_id, h))
                ids.append(existing)
                if existing is None and h not in new:
                    new[h] = i
            todo = list(new.values())
            if todo:
                if embeddings is not None:
                    vecs = _normalised(embeddings, len(contents), t.dim or None, self._model)[todo]
                else:
                    vecs = self._embed([contents[i] for i in todo], self._model)  # type: ignore[arg-type]
                t = self._fit(vecs.shape[1])
                now = time.time()
                rows = []
                for i in todo:
                    mid = "mem_" + uuid.uuid4().hex
                    ids[i] = mid
                    rows.append({"row_id": uuid.uuid4().hex, "ts": now, "op": "store", "collection": self.collection,
                                 "memory_id": mid, "user_id": user_id, "scope": scope, "agent_id": agent_id,
                                 "memory_type": memory_type, "content": contents[i], "content_hash": hashes[i],
                                 "metadata": metas[i], "model": self._model, "dim": t.dim,
                                 "created_at": created, "updated_at": created})
                self._write(rows, vecs)
                t.add(rows, vecs)
            for i, h in enumerate(hashes):  # repeats within this call
                if ids[i] is None:
                    ids[i] = ids[new[h]]
        return ids  # type: ignore[return-value]

    def _fit(self, width: int) -> Table:
        """The table, checked against (or, while its width is unknown, made) ``width`` dims wide."""
        t = self._table
        assert t is not None
        if t.dim == 0 and not t.n:
            t = self._table = Table(int(width))
        elif width != t.dim:
            raise ConfigurationError(f"{self._model} returned {width} dims, the collection holds {t.dim}")
        return t

    def _write(self, rows: list[dict[str, Any]], vecs: np.ndarray) -> None:
        """Journal events (with their vectors); the collection's config goes first if it has none."""
        if not self._configured:
            cfg = {"row_id": uuid.uuid4().hex, "ts": time.time(), "op": "config", "collection": self.collection,
                   "model": self._model, "dim": int(vecs.shape[1])}
            self.log.append([cfg])
            self._pending.add(cfg["row_id"])
            self._configured = True
        for start in range(0, len(rows), _WRITE_CHUNK):
            chunk = rows[start : start + _WRITE_CHUNK]
            texts = encode_vectors(vecs[start : start + _WRITE_CHUNK])
            dim = int(vecs.shape[1])
            self.log.append([{**r, "metadata": json.dumps(r["metadata"]), "dim": dim, "embedding": e} for r, e in zip(chunk, texts)])
            self._pending.update(r["row_id"] for r in chunk)

    @staticmethod
    def _agent(scope: str, agent_id: Any) -> str | None:
        if scope == "agent":
            return _text(agent_id, "agent_id (needed for scope='agent')")
        if agent_id is not None:
            raise InvalidRequestError(f"agent_id is only for scope='agent' (got scope={scope!r})")
        return None

    # --- retrieve --------------------------------------------------------------------------
    def retrieve(
        self,
        user_id: str,
        query: str,
        k: int = 5,
        *,
        memory_type: str | Sequence[str] | None = None,
        filters: Mapping[str, Any] | None = None,
        agent_id: str | None = None,
        created_after: Any = None,
        created_before: Any = None,
        weights: Weights | Mapping[str, float] | Sequence[float] | None = None,
        half_life_days: float | None = None,
        boost_cap: int | None = None,
        now: Any = None,
        as_frame: bool = False,
    ) -> HitList | pd.DataFrame:
        """The ``k`` best memories ``user_id`` may see (its own, its own with ``agent_id``, global
        ones), best first, scored as in ``ranking.py``, as a :class:`~.hit.HitList` of
        :class:`MemoryHit` (a list that shows as a table). ``filters`` use the language of
        ``filters.py``; ``now`` (for reproducible scores) defaults to the current time. Each
        returned memory's access count goes up by one and its last_accessed_at is set (a hit
        shows the count it was ranked with, before this retrieval)."""
        _text(query, "query")
        args = self._check(user_id, k, memory_type, filters, agent_id, created_after, created_before,
                           weights, half_life_days, boost_cap, now)
        with self._lock:
            t = self._sync()
            q = self._embed([query], self._model)[0]  # type: ignore[arg-type]
            if t.n:
                self._fit(len(q))
            return self._search(q, *args, as_frame=as_frame)

    def retrieve_frame(self, user_id: str, query: str, k: int = 5, **kw: Any) -> pd.DataFrame:
        """``retrieve`` as a DataFrame, one row per hit with the score breakdown."""
        return self.retrieve(user_id, query, k, as_frame=True, **kw)  # type: ignore[return-value]

    def retrieve_by_vector(self, user_id: str, vector: np.ndarray, k: int = 5, **kw: Any) -> HitList | pd.DataFrame:
        """``retrieve`` with a query vector of the collection's model instead of a text."""
        as_frame = kw.pop("as_frame", False)
        args = self._check(user_id, k, kw.pop("memory_type", None), kw.pop("filters", None), kw.pop("agent_id", None),
                           kw.pop("created_after", None), kw.pop("created_before", None), kw.pop("weights", None),
                           kw.pop("half_life_days", None), kw.pop("boost_cap", None), kw.pop("now", None))
        if kw:
            raise InvalidRequestError(f"unknown argument(s) {sorted(kw)}")
        with self._lock:
            t = self._sync()
            q = _normalised(vector, 1, t.dim or None, self._model)[0]
            return self._search(q, *args, as_frame=as_frame)

    def _check(self, user_id, k, memory_type, filters, agent_id, after, before, weights, half_life, cap, now) -> tuple:  # type: ignore[no-untyped-def]
        user_id = _text(user_id, "user_id")
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise InvalidRequestError(f"k must be an int >= 1, got {k!r}")
        types = None
        if memory_type is not None:
            types = [memory_type] if isinstance(memory_type, str) else list(memory_type) if isinstance(memory_type, (list, tuple, set)) else [memory_type]
            if not types:
                raise InvalidRequestError("memory_type must name at least one type")
            types = [MEMORY_TYPES.index(_choice(m, MEMORY_TYPES, "memory_type")) for m in types]
        agent_id = check_identifier(agent_id, "agent_id")
        match = compile_filter(filters)  # a malformed filter fails here, before anything is embedded
        after = None if after is None else _epoch(after, "created_after")
        before = None if before is None else _epoch(before, "created_before")
        ranking = self.ranking.with_(weights, half_life_days=half_life, boost_cap=cap)
        now = time.time() if now is None else _epoch(now, "now")
        return user_id, k, types, match, agent_id, after, before, ranking, now

    def _search(self, q, user_id, k, types, match, agent_id, after, before, ranking, now, *, as_frame):  # type: ignore[no-untyped-def]
        import numpy as np

        t = self._table
        assert t is not None

        def allowed(rows: np.ndarray | None = None) -> np.ndarray:
            """Visibility, type and time masks: over every row, or only over candidate ``rows``."""
            pick = slice(0, t.n) if rows is None else rows
            mask = t.visible(user_id, agent_id, rows)
            if types is not None:
                mask &= np.isin(t.mtype[pick], types)
            if after is not None:
                mask &= t.created[pick] >= after
            if before is not None:
                mask &= t.created[pick] < before
            return mask

        picked = None
        if self._index == "approximate" and t.n:
            picked = self._approximate(q, allowed, k, match, ranking, now)
        if picked is None:
            picked = self._exact(q, allowed(), k, match, ranking, now)
        rows, sims, dec, bst, scores = picked
        hits = [self._hit(t, int(i), s, d, b, sc, r + 1) for r, (i, s, d, b, sc) in enumerate(zip(rows, sims, dec, bst, scores))]
        if len(rows):
            ts = time.time()
            row = {"row_id": uuid.uuid4().hex, "ts": ts, "collection": self.collection, "ids": [h.id for h in hits]}
            self.log.append_access(row)
            self._pending_access.add(row["row_id"])
            t.touch(np.asarray(rows, dtype=np.int64), ts)
        hits = HitList(hits)
        return hits.to_frame() if as_frame else hits

    def _terms(self, rows: np.ndarray, ranking: Ranking, now: float) -> tuple[np.ndarray, np.ndarray]:
        t = self._table
        return ranking.decay(now - t.updated[rows]), ranking.boost(t.count[rows])  # type: ignore[union-attr]

    def _exact(self, q, mask, k, match, ranking: Ranking, now: float) -> tuple:  # type: ignore[no-untyped-def]
        import numpy as np

        t = self._table
        n = t.n  # type: ignore[union-attr]
        cand = np.flatnonzero(mask)
        if not len(cand):
            return [], [], [], [], []
        # A full product is cheaper than gathering rows unless few are visible.
        sims = (t.vec[:n] @ q)[cand] if len(cand) > n // 4 else t.vec[cand] @ q  # type: ignore[union-attr]
        w = ranking.weights
        if w.decay or w.boost:
            dec, bst = self._terms(cand, ranking, now)
            scores = ranking.score(sims, dec, bst)
        else:
            scores = w.similarity * sims.astype(np.float64)
            dec = bst = None
        return self._top(cand, sims, scores, dec, bst, k, match, ranking, now)

    def _top(self, cand, sims, scores, dec, bst, k, match, ranking, now) -> tuple:  # type: ignore[no-untyped-def]
        """Best ``k`` of ``cand`` by ``scores``; with a metadata filter, walk down the order in
        growing slices until ``k`` pass, so only the best few rows are checked in Python."""
        import numpy as np

        t = self._table
        take, done = [], 0
        m = k if match is None else max(4 * k, 64)
        while done < len(cand) and len(take) < k:
            m = min(m, len(cand))
            part = np.argpartition(-scores, m - 1)[:m] if m < len(cand) else np.arange(len(cand))
            order = part[np.argsort(-scores[part], kind="stable")][done:]
            for j in order:
                if match is None or match(t.rows[cand[j]]["metadata"]):  # type: ignore[union-attr]
                    take.append(j)
                    if len(take) == k:
                        break
            done, m = m, m * 4
        take = np.asarray(take, dtype=np.int64)
        rows = cand[take]
        if dec is None:
            dec, bst = self._terms(rows, ranking, now)
        else:
            dec, bst = dec[take], bst[take]
        return rows, sims[take], dec, bst, scores[take]

    def _approximate(self, q, allowed, k, match, ranking: Ranking, now: float) -> tuple | None:  # type: ignore[no-untyped-def]
        """Rerank the approximate (IVF) neighbours that pass the masks; None (-> exact) if too few pass."""
        import numpy as np

        if self._ann is not None and self._ann.stale:
            self._ann.detach()
            self._ann = None
        if self._ann is None:
            self._ann = ApproximateIndex(self._table, **self._ann_params)  # type: ignore[arg-type]
        count = max(5 * k, 50)  # candidates re-scored exactly: enough to undo the 8-bit codes' errors
        while True:
            rows, sims = self._ann.search(q, count)
            rows_ok = allowed(rows)
            cand, sims = rows[rows_ok], sims[rows_ok]
            if match is not None:
                keep = np.array([match(self._table.rows[i]["metadata"]) for i in cand], dtype=bool)  # type: ignore[union-attr]
                cand, sims = cand[keep], sims[keep]
            if len(cand) >= k:
                break
            if count >= min(len(self._ann), 4096):
                return None
            count *= 8
        dec, bst = self._terms(cand, ranking, now)
        scores = ranking.score(sims, dec, bst)
        top = np.argsort(-scores, kind="stable")[:k]
        return cand[top], sims[top], dec[top], bst[top], scores[top]

    def _hit(self, t: Table, i: int, sim: float, dec: float, bst: float, score: float, rank: int) -> MemoryHit:
        r = t.rows[i]
        return MemoryHit(
            id=t.ids[i], content=r["content"], score=float(score), similarity=float(sim), decay=float(dec),
            boost=float(bst), memory_type=r["memory_type"], scope=r["scope"], metadata=dict(r["metadata"]),
            user_id=r["user_id"], agent_id=r.get("agent_id"), created_at=_dt(t.created[i]),
            updated_at=_dt(t.updated[i]), last_accessed_at=_dt(t.accessed[i]), access_count=int(t.count[i]), rank=rank,
        )

    # --- get / update / delete / history -----------------------------------------------------
    # A memory belongs to its user_id, whatever its scope. Its owner may get, update, delete it and
    # read its history; anyone may get a global memory and read its history. Everything else is
    # the same MemoryNotFoundError as an id that never existed, with the same message.
    def _missing(self, memory_id: str, user_id: str) -> MemoryNotFoundError:
        return MemoryNotFoundError(f"no memory {memory_id!r} for user {user_id!r} in collection {self.collection!r}")

    def _find(self, memory_id: Any, user_id: Any, *, change: bool) -> tuple[Table, int]:
        _text(memory_id, "memory_id")
        _text(user_id, "user_id")
        t = self._sync()
        i = t.pos.get(memory_id)
        if i is None or not _may(t.rows[i]["user_id"], t.rows[i]["scope"], user_id, change):
            raise self._missing(memory_id, user_id)
        return t, i

    def _get(self, t: Table, i: int) -> dict[str, Any]:
        r = t.rows[i]
        return {"id": t.ids[i], "content": r["content"], "memory_type": r["memory_type"], "scope": r["scope"],
                "user_id": r["user_id"], "agent_id": r.get("agent_id"), "metadata": dict(r["metadata"]),
                "created_at": _dt(t.created[i]), "updated_at": _dt(t.updated[i]),
                "last_accessed_at": _dt(t.accessed[i]), "access_count": int(t.count[i]), "model": r["model"]}

    @_owner_keyword("")
    def get(self, memory_id: str, *, user_id: str) -> dict[str, Any]:
        """The memory as a dict (content, metadata, scope, times, access count...), if ``user_id``
        owns it or it is global; otherwise MemoryNotFoundError, as for an unknown id."""
        with self._lock:
            return self._get(*self._find(memory_id, user_id, change=False))

    @_owner_keyword(", content=\"...\"")
    def update(self, memory_id: str, *, user_id: str, content: str | None = None,
               metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Change a memory of ``user_id`` (global ones too, but only by the user who stored them):
        its content (re-embedded) and/or its metadata (replaced); the change is kept in
        ``history``. Returns the memory as ``get`` does. Another user's memory raises
        MemoryNotFoundError, as an unknown id does, and nothing is embedded or written."""
        if content is None and metadata is None:
            raise InvalidRequestError("update needs content= and/or metadata=, e.g. "
                                      "kit.memory.update(memory_id, user_id=\"ana\", content=\"...\")")
        if content is not None:
            _text(content, "content")
        meta = None if metadata is None else _metadata(metadata)
        with self._lock:
            t, i = self._find(memory_id, user_id, change=True)
            old = t.rows[i]
            changed = (content is not None and content != old["content"]) or (meta is not None and meta != old["metadata"])
            if changed:
                vec = self._embed([content], self._model)[0] if content is not None and content != old["content"] else t.vec[i].copy()  # type: ignore[arg-type]
                now = time.time()
                row = {**old, "row_id": uuid.uuid4().hex, "ts": max(now, t.version[i]), "op": "update", "updated_at": now}
                if content is not None:
                    row.update(content=content, content_hash=_hash(content))
                if meta is not None:
                    row["metadata"] = meta
                self._write([row], vec[None])
                t.replace(i, row, vec)
            return self._get(t, i)

    @_owner_keyword("")
    def delete(self, memory_id: str, *, user_id: str, purge: bool = False) -> None:
        """Delete a memory of ``user_id`` (global ones too, but only by the user who stored them):
        no retrieve, get, frame or dedupe of any process sees it again. An unknown id, or another
        user's memory, raises MemoryNotFoundError and deletes nothing.

        By default its past versions (content, metadata, embedding) stay in the event table, so
        ``history`` still shows them. ``purge=True`` also blanks them there (``history`` then
        keeps only the ops and times) and drops this process's journal file once ingested.
        Journals of other live processes that wrote the memory keep their lines until they are
        ingested and removed (when that process exits), and DuckDB may keep freed bytes in its
        file until it reuses them."""
        if not isinstance(purge, bool):
            raise InvalidRequestError(f"purge must be True or False, got {purge!r}")
        with self._lock:
            t, _ = self._find(memory_id, user_id, change=True)
            row = {"row_id": uuid.uuid4().hex, "ts": time.time(), "op": "delete", "collection": self.collection, "memory_id": memory_id}
            self.log.append([row])
            self._pending.add(row["row_id"])
            self._deleted.add(memory_id)
            t.remove(memory_id)
            if purge:
                self.log.purge(self.collection, memory_id)

    @_owner_keyword("")
    def history(self, memory_id: str, *, user_id: str) -> pd.DataFrame:
        """Every change of a memory, oldest first: changed_at, op, old/new content, old/new metadata
        (also after it was deleted). For its owner, or anyone if it is global; otherwise
        MemoryNotFoundError, as for an id that was never stored."""
        _text(memory_id, "memory_id")
        _text(user_id, "user_id")
        df = self.log.query(
            """SELECT to_timestamp(ts) AS changed_at, op,
                      lag(content) OVER w AS old_content, CASE WHEN op = 'delete' THEN NULL ELSE content END AS new_content,
                      lag(metadata) OVER w AS old_metadata, CASE WHEN op = 'delete' THEN NULL ELSE metadata END AS new_metadata,
                      model, user_id AS _owner, scope AS _scope
               FROM memory_events WHERE collection = ? AND memory_id = ? WINDOW w AS (ORDER BY ts, seq) ORDER BY ts, seq""",
            [self.collection, memory_id],
        )
        stored = df[df.op != "delete"]  # delete events carry no owner; a memory's owner and scope never change
        if stored.empty or not _may(stored["_owner"].iloc[0], stored["_scope"].iloc[0], user_id, False):
            raise self._missing(memory_id, user_id)
        df = df.drop(columns=["_owner", "_scope"])
        for col in ("old_metadata", "new_metadata"):
            df[col] = [json.loads(v) if isinstance(v, str) else None for v in df[col]]
        return df

    # --- whole collection ------------------------------------------------------------------
    def frame(self, user_id: str | None = None) -> pd.DataFrame:
        """Every memory (or those ``user_id`` may see) as a DataFrame, newest first."""
        import numpy as np

        with self._lock:
            t = self._sync()
            rows = np.flatnonzero(t.visible(_text(user_id, "user_id"), None) if user_id is not None else t.alive[: t.n])
            recs = [{"id": t.ids[i], **{c: t.rows[i][c] for c in ("user_id", "scope", "agent_id", "memory_type", "content", "metadata", "model")},
                     "created_at": _dt(t.created[i]), "updated_at": _dt(t.updated[i]),
                     "last_accessed_at": _dt(t.accessed[i]), "access_count": int(t.count[i])} for i in rows[::-1]]
        cols = ["id", "user_id", "scope", "agent_id", "memory_type", "content", "metadata", "model",
                "created_at", "updated_at", "last_accessed_at", "access_count"]
        return _frame(recs, cols)

    def reembed(self, model: str | None = None) -> int:
        """Re-embed every memory of the collection with ``model`` (None: local MiniLM) and make it
        the collection's model; return how many were re-embedded. Embedding happens first: if it
        fails, nothing is written."""
        import numpy as np

        target = LOCAL_MODEL if model is None else _text(model, "model")
        with self._lock:
            t = self._sync()
            alive = np.flatnonzero(t.alive[: t.n])
            texts = [t.rows[i]["content"] for i in alive]
            if texts:
                vecs = self._embed(texts, target)
            else:  # an empty collection: only its config changes
                dim = EMBEDDING_DIMS.get(target) or self._embed(["dimension probe"], target).shape[1]
                vecs = np.zeros((0, dim), dtype=np.float32)
            now = time.time()
            rows = [{**t.rows[i], "row_id": uuid.uuid4().hex, "ts": max(now, t.version[i]), "op": "reembed",
                     "model": target, "dim": int(vecs.shape[1])} for i in alive]
            self._model, self._configured = target, False
            self._write(rows, vecs)
            self._table = None
            self._requested_model = target
        self._sync()
        return len(rows)

    def flush(self) -> int:
        """Fold every process's pending memory events into DuckDB now; return rows ingested."""
        return self.log.store.flush()

    def close(self) -> None:
        """Drop the in-process indexes (everything is already durable)."""
        with self._lock:
            if self._ann is not None:
                self._ann.detach()
                self._ann = None

    def explorer(self, **kwargs: Any) -> Any:
        """A search box, user picker, score-breakdown table and chart (ipywidgets)."""
        from ..notebook.explorer import explorer

        return explorer(self, **kwargs)


# --- helpers ------------------------------------------------------------------------------
def _may(owner: str, scope: str, user_id: str, change: bool) -> bool:
    """Whether ``user_id`` may read (``change`` False) or change a memory of ``owner`` in ``scope``."""
    return owner == user_id or (not change and scope == "global")


def _normalised(vectors: Any, n: int, dim: int | None, model: str | None) -> np.ndarray:
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


def _rows(ev: dict[str, list[Any]], collection: str) -> list[dict[str, Any]]:
    """Event columns (from ``EventLog.pull``) as the row dicts the table keeps."""
    keep = ["op", "memory_id", "user_id", "scope", "agent_id", "memory_type", "content", "content_hash",
            "metadata", "model", "ts", "created_at", "updated_at"]
    metas = json.loads("[" + ",".join(m or "{}" for m in ev["metadata"]) + "]")  # one parse, not one per row
    out = []
    for values, meta in zip(zip(*(ev[c] for c in keep)), metas):
        rec = dict(zip(keep, values))
        rec["metadata"] = meta
        rec["collection"] = collection
        out.append(rec)
    return out


def _frame(records: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame.from_records(records, columns=columns)

"""``Memory``: the semantic memory of one collection in one data folder, a facade over parts with
one job each:

- ``options.py``: the settings, checked (``Kit(memory={...})`` checks them the same way);
- ``embedding.py``: texts into unit vectors through an ``Embedder`` (the local MiniLM, or the
  Kit's ``embed`` for remote models: the Kit passes itself in, this layer never imports it);
- ``store.py``: the event log (per-process journals, DuckDB) every write goes to;
- ``replica.py``: the collection in this process (``index.Table``), kept in step with that log;
- ``search.py``: a query ranked against the replica (exact, or through ``scan.ScanIndex`` or
  ``approximate.ApproximateIndex``);
- ``crud.py`` and ``history.py``: store, get, update, delete, list, re-embed; the history SQL;
- ``owners.py``: who may use a memory, and the errors when not;
- ``evaluation.py``: recall@k and MRR of retrieval over queries with known answers.
- ``remember.py``: facts extracted from a conversation (an LLM call through the Kit) and merged
  into a user's memories (ADD, UPDATE or NONE, as Mem0's ``add``).

What counts as an access (the count the frequency boost of ``ranking.py`` grows with): only a
use the caller reports, never a retrieval by itself. ``hit.used()`` on a hit of ``retrieve``, or
``mark_used(ids, user_id=...)``, adds one access to each memory named (a hit counts at most once)
and sets its ``last_accessed_at``. Retrieving alone changes nothing, so identical retrievals give
identical scores (with ``now=`` pinned) and what was retrieved before is not favoured by itself: if
every returned hit counted, each query would lift its whole top k for the next query whether it
was right or not. ``retrieve(..., track=False)`` is read-only outright (its hits refuse ``used()``),
and ``evaluate``, ``remember`` and retrieval-augmented calls (``kit.complete(..., memory=user_id)``:
being put in a prompt is not evidence a memory helped) retrieve that way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..calls.embeddings import Embedder
from ..core.errors import ConfigurationError, InvalidRequestError
from ..core.validation import check_number, check_text
from .approximate import METHODS, ApproximateParams, method_of
from .crud import Records
from .embedding import Embedders, embed_texts, unit_rows
from .evaluation import Evaluation, check_cases, score_cases
from .history import history
from .hit import HitList, UseMarker
from .index import Table
from .inputs import TimeLike, check_choice, check_count, check_flag
from .options import INDEX_KINDS, OPTIONS, MemoryOptions, check_options
from .owners import MemoryNotFoundError, OwnerRequiredError, not_found, owner_keyword
from .ranking import WeightsLike
from .remember import Remembered, remember
from .replica import Replica
from .search import Searcher, SearchQuery, parse_query, to_hits
from .store import EventLog

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from ..kit import Kit
    from ..notebook.explorer import MemoryExplorer

__all__ = ["Memory", "MemoryNotFoundError", "OwnerRequiredError"]


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
    >>> hits = m.retrieve("ada", "Which database is embedded?", k=3)
    >>> hits[0].used()  # only uses count as accesses (the frequency boost); retrieving does not
    >>> m.update(mid, user_id="ada", content="DuckDB runs in-process."); m.delete(mid, user_id="ada")

    ``Kit(memory={...})`` passes its keyword arguments (see ``OPTIONS``) to the Kit's memory.
    """

    OPTIONS = OPTIONS

    def __init__(
        self,
        home: str | Path,
        *,
        kit: Kit | None = None,
        collection: str = "default",
        embedding_model: str | None = None,
        half_life_days: float = 30.0,
        weights: WeightsLike = None,
        boost_cap: int = 100,
        index: str = "exact",
        lock_timeout: float = 30.0,
        fsync: bool = False,
    ) -> None:
        """The memory of ``collection`` in the data folder ``home``; ``kit`` serves the remote embedding models."""
        options = MemoryOptions(collection=collection, embedding_model=embedding_model, half_life_days=half_life_days,
                                weights=weights, boost_cap=boost_cap, index=index, lock_timeout=lock_timeout, fsync=fsync)
        self.collection = collection
        self.ranking = options.ranking
        self.kit = kit
        self.log = EventLog(home, lock_timeout=lock_timeout, fsync=fsync)
        self.embedders = Embedders(None if kit is None else kit.embed)
        self.searcher = Searcher(index)
        self.replica = Replica(self.log, collection, model=embedding_model, on_reload=self.searcher.reset)
        self.records = Records(self.replica, self.embedders)

    @classmethod
    def check_options(cls, options: Mapping[str, Any] | None) -> dict[str, Any]:
        """``options`` (keyword arguments of ``Memory`` but home and kit) checked without touching
        the data folder; a bad name or value is an InvalidRequestError."""
        return check_options(options)

    def __repr__(self) -> str:
        t = self.replica.table
        return (f"Memory({str(self.log.home)!r}, collection={self.collection!r}, model={self.replica.model!r}, "
                f"memories={len(t) if t is not None else '?'}, index={self.index!r})")

    # --- settings --------------------------------------------------------------------------
    @property
    def index(self) -> str:
        """``"exact"`` or ``"approximate"``: how ``retrieve`` searches (see ``use_index``)."""
        return self.searcher.kind

    @index.setter
    def index(self, value: str) -> None:
        self.use_index(value)

    def use_index(self, kind: str, *, method: str | None = None, candidates: int | None = None, nlist: int | None = None,
                  nprobe: int | None = None, retrain_growth: float | None = None) -> None:
        """``"exact"`` (default) or ``"approximate"`` (via faiss-cpu), built on the next retrieve and
        kept in step after that; it pays off from about 100k memories. ``method="scan"`` (default):
        4-bit codes of every memory scanned per query, the best ``candidates`` (400) re-scored
        exactly; ``method="ivf"`` (implied by ``nlist`` or ``nprobe``): ``nlist`` lists of 8-bit
        codes, ``nprobe`` searched per query. Either is rebuilt past ``retrain_growth`` times the
        size it was trained at."""
        check_choice(kind, INDEX_KINDS, "index")
        params: ApproximateParams = {}
        if method is not None:
            params["method"] = check_choice(method, METHODS, "method")
        if candidates is not None:
            params["candidates"] = check_count(candidates, "candidates")
        if nlist is not None:
            params["nlist"] = check_count(nlist, "nlist")
        if nprobe is not None:
            params["nprobe"] = check_count(nprobe, "nprobe")
        if retrain_growth is not None:
            params["retrain_growth"] = check_number(retrain_growth, "retrain_growth", minimum=1.0)
        ivf = method_of(params) == "ivf"
        settings = (("candidates", candidates, False), ("nlist", nlist, True), ("nprobe", nprobe, True))
        wrong = [name for name, value, of_ivf in settings if value is not None and of_ivf != ivf]
        if wrong:
            raise InvalidRequestError(f"{' and '.join(wrong)}: not a setting of method={'ivf' if ivf else 'scan'!r} "
                                      "(method='scan' takes candidates; method='ivf' takes nlist and nprobe)")
        with self.replica.lock:
            self.searcher.use(kind, params)

    @property
    def embedding_model(self) -> str:
        """The collection's embedding model."""
        self.replica.sync()
        return self.replica.model

    @property
    def embedder(self) -> Embedder:
        """The Embedder of the collection's model (the local MiniLM, or the Kit's ``embed``)."""
        return self.embedders.get(self.embedding_model)

    def __len__(self) -> int:
        """How many memories the collection holds (every user's)."""
        return len(self.replica.sync())

    # --- store -----------------------------------------------------------------------------
    def store(self, user_id: str, content: str, memory_type: str = "semantic", scope: str = "user",
              metadata: Mapping[str, Any] | None = None, *, agent_id: str | None = None,
              created_at: TimeLike | None = None) -> str:
        """Embed and store one memory; return its id. The same content stored again by the same
        user in the same scope returns the existing id (nothing duplicated, nothing deleted)."""
        check_text(content, "content")
        metas = metadata if metadata is None or isinstance(metadata, Mapping) else [metadata]  # its error names it
        return self.records.store_many(user_id, [content], embeddings=None, metadata=metas, memory_type=memory_type,
                                       scope=scope, agent_id=agent_id, created_at=created_at, embedding_model=None)[0]

    def store_many(self, user_id: str, contents: Sequence[str], *, embeddings: np.ndarray | None = None,
                   metadata: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
                   memory_type: str = "semantic", scope: str = "user", agent_id: str | None = None,
                   created_at: TimeLike | None = None, embedding_model: str | None = None) -> list[str]:
        """Store many memories at once (embedded in batches, or from ``embeddings`` computed with
        the collection's model, named by ``embedding_model`` when given); return ids in order.
        ``metadata`` is one dict for all or one per content. Everything is validated (and
        embedded) before anything is written."""
        return self.records.store_many(user_id, contents, embeddings=embeddings, metadata=metadata,
                                       memory_type=memory_type, scope=scope, agent_id=agent_id,
                                       created_at=created_at, embedding_model=embedding_model)

    # --- retrieve --------------------------------------------------------------------------
    def retrieve(self, user_id: str, query: str, k: int = 5, *, memory_type: str | Sequence[str] | None = None,
                 filters: Mapping[str, Any] | None = None, agent_id: str | None = None, created_after: TimeLike | None = None,
                 created_before: TimeLike | None = None, weights: WeightsLike = None, half_life_days: float | None = None,
                 boost_cap: int | None = None, now: TimeLike | None = None, as_frame: bool = False,
                 track: bool = True) -> HitList | pd.DataFrame:
        """The ``k`` best memories ``user_id`` may see (its own, its own with ``agent_id``, global
        ones), best first, scored as in ``ranking.py``, as a :class:`~.hit.HitList` of
        :class:`MemoryHit` (a list that shows as a table). ``filters`` use the language of
        ``filters.py``; ``now`` (for reproducible scores) defaults to the current time.

        Retrieving changes nothing: a memory's access count (the frequency boost) grows only when
        the caller marks a hit used, ``hit.used()`` (or ``mark_used``). ``track=False`` makes the
        call read-only outright: its hits cannot be marked used (for evaluations)."""
        check_text(query, "query")
        check_flag(track, "track")
        q = parse_query(self.ranking, user_id, k, memory_type=memory_type, filters=filters, agent_id=agent_id,
                        created_after=created_after, created_before=created_before, weights=weights,
                        half_life_days=half_life_days, boost_cap=boost_cap, now=now)
        with self.replica.lock:
            t = self.replica.sync()
            vector = embed_texts(self.embedders.get(self.replica.model), [query])[0]
            if t.n:
                t = self.replica.fit(t, len(vector))
            hits = self._answer(t, vector, q, track)
        return hits.to_frame() if as_frame else hits

    def retrieve_frame(self, user_id: str, query: str, k: int = 5, *, memory_type: str | Sequence[str] | None = None,
                       filters: Mapping[str, Any] | None = None, agent_id: str | None = None,
                       created_after: TimeLike | None = None, created_before: TimeLike | None = None,
                       weights: WeightsLike = None, half_life_days: float | None = None, boost_cap: int | None = None,
                       now: TimeLike | None = None, track: bool = True) -> pd.DataFrame:
        """``retrieve`` as a DataFrame, one row per hit with the score breakdown."""
        frame: pd.DataFrame = self.retrieve(
            user_id, query, k, memory_type=memory_type, filters=filters, agent_id=agent_id, created_after=created_after,
            created_before=created_before, weights=weights, half_life_days=half_life_days, boost_cap=boost_cap, now=now,
            as_frame=True, track=track)
        return frame

    def retrieve_by_vector(self, user_id: str, vector: np.ndarray, k: int = 5, *, memory_type: str | Sequence[str] | None = None,
                           filters: Mapping[str, Any] | None = None, agent_id: str | None = None,
                           created_after: TimeLike | None = None, created_before: TimeLike | None = None,
                           weights: WeightsLike = None, half_life_days: float | None = None, boost_cap: int | None = None,
                           now: TimeLike | None = None, as_frame: bool = False, track: bool = True) -> HitList | pd.DataFrame:
        """``retrieve`` with a query vector of the collection's model instead of a text."""
        check_flag(track, "track")
        q = parse_query(self.ranking, user_id, k, memory_type=memory_type, filters=filters, agent_id=agent_id,
                        created_after=created_after, created_before=created_before, weights=weights,
                        half_life_days=half_life_days, boost_cap=boost_cap, now=now)
        with self.replica.lock:
            t = self.replica.sync()
            hits = self._answer(t, unit_rows(vector, 1, t.dim or None, self.replica.model)[0], q, track)
        return hits.to_frame() if as_frame else hits

    def _answer(self, table: Table, vector: np.ndarray, query: SearchQuery, track: bool) -> HitList:
        """The hits of ``query`` for ``vector`` (with ``track``, hits that can be marked used, each once)."""
        ranked = self.searcher.rank(table, vector, query)
        return HitList(to_hits(table, ranked, self._marker(query.user_id) if track else None))

    def _marker(self, user_id: str) -> UseMarker:
        """What ``hit.used()`` calls for the hits of one retrieval: each id counted once."""
        counted: set[str] = set()

        def mark(memory_id: str) -> bool:
            with self.replica.lock:
                if memory_id in counted:
                    return False
                self.mark_used([memory_id], user_id=user_id)
                counted.add(memory_id)
                return True

        return mark

    def mark_used(self, memory_ids: str | Sequence[str], *, user_id: str) -> int:
        """Count one access of each memory in ``memory_ids`` (each once, however often named),
        which ``user_id`` may read: it was put to use, so its frequency boost grows in later
        retrievals. Returns how many memories were counted. An id ``user_id`` may not read is a
        MemoryNotFoundError and nothing is counted. ``hit.used()`` does this for one hit."""
        import numpy as np

        user = check_text(user_id, "user_id")
        ids = [memory_ids] if isinstance(memory_ids, str) else memory_ids
        if not isinstance(ids, Sequence) or not ids:
            raise InvalidRequestError(f"memory_ids must be a memory id or a non-empty list of them, got {memory_ids!r}")
        ids = list(dict.fromkeys(check_text(i, "memory_ids") for i in ids))
        with self.replica.lock:
            rows = [self.records.find(mid, user, change=False)[1] for mid in ids]  # all checked before any is counted
            self.replica.record_access(self.replica.sync(), np.asarray(rows, dtype=np.int64), ids)
        return len(ids)

    def evaluate(self, user_id: str, queries: Sequence[str], expected_ids: Sequence[str | Sequence[str]], k: int = 10, *,
                 memory_type: str | Sequence[str] | None = None, filters: Mapping[str, Any] | None = None,
                 agent_id: str | None = None, weights: WeightsLike = None, half_life_days: float | None = None,
                 boost_cap: int | None = None, now: TimeLike | None = None) -> Evaluation:
        """Retrieval quality on queries with known answers: each query is retrieved read-only
        (``track=False``, so access counts never change) with the ranking and filters given, and
        ``expected_ids[i]`` (one memory id, or a list of acceptable ones) is looked for in its top
        ``k``. Returns an :class:`~.evaluation.Evaluation`: recall@k, MRR, hit rate at 1, and
        per-query ranks as a DataFrame. Every expected id must be a memory ``user_id`` can
        retrieve (else MemoryNotFoundError, before anything is embedded).

        >>> kit.memory.evaluate("ada", ["which database is embedded?"], [mid], k=5)
        >>> kit.memory.evaluate("ada", qs, ids, weights={"decay": 0, "boost": 0})  # similarity only
        """
        import numpy as np

        texts, expected = check_cases(queries, expected_ids)
        q = parse_query(self.ranking, user_id, k, memory_type=memory_type, filters=filters, agent_id=agent_id,
                        weights=weights, half_life_days=half_life_days, boost_cap=boost_cap, now=now)
        with self.replica.lock:
            t = self.replica.sync()
            for mid in dict.fromkeys(m for ids in expected for m in ids):
                i = t.pos.get(mid)
                if i is None or not t.visible(q.user_id, q.agent_id, np.asarray([i]))[0]:
                    raise not_found(mid, q.user_id, self.collection)
            vectors = embed_texts(self.embedders.get(self.replica.model), texts)
            t = self.replica.fit(t, int(vectors.shape[1]))
            found = []
            for vector in vectors:
                ranked = self.searcher.rank(t, vector, q)
                found.append([(t.rows[int(i)]["memory_id"], float(s)) for i, s in zip(ranked.rows, ranked.score)])
        return score_cases(texts, expected, found, q.k)

    # --- remember / recall ----------------------------------------------------------------
    def remember(self, conversation: str | Sequence[Mapping[str, str]], user_id: str, *, model: str | None = None,
                 duplicate_threshold: float = 0.9) -> Remembered:
        """Facts about ``user_id`` taken from ``conversation`` (a list of ``{"role", "content"}``
        messages, or a string: one user turn) and merged into their memories, as Mem0's ``add``:
        one LLM call through the Kit (costed and in the ledger with task_id "memory.remember";
        ``model`` or the summarizer role; offline the simulated provider extracts the user's
        first-person statements by rule) extracts atomic facts, then each one is NONE (a memory
        already says it: cosine >= ``duplicate_threshold``), UPDATE (it fills a single-valued slot
        such as home or employer that a memory of the user holds: that memory is changed, its
        ``history`` keeps the old version) or ADD. Returns a :class:`~.remember.Remembered`, one
        event per fact. Bad input is an InvalidRequestError before anything is sent.

        >>> kit.memory.remember([{"role": "user", "content": "I live in Paris and I work at Inria."}], "ada")
        >>> kit.memory.remember("I moved to Berlin.", "ada")  # UPDATE: history keeps "I live in Paris."
        """
        if self.kit is None:
            raise ConfigurationError("remember needs a Kit to extract facts with: use kit.memory.remember(...)")
        return remember(self, self.kit.complete, conversation, user_id, model=model,
                        duplicate_threshold=duplicate_threshold)

    def recall(self, user_id: str, query: str, k: int = 5) -> list[tuple[str, str]]:
        """The (id, content) of the ``k`` best memories ``user_id`` may see for ``query``, retrieved
        read-only (``track=False``): what ``kit.complete(..., memory=user_id, k=k)`` puts in the prompt."""
        hits = self.retrieve(user_id, query, k, track=False)
        return [(h.id, h.content) for h in hits]

    # --- get / update / delete / history -----------------------------------------------------
    @owner_keyword("")
    def get(self, memory_id: str, *, user_id: str) -> dict[str, Any]:
        """The memory as a dict (content, metadata, scope, times, access count...), if ``user_id``
        owns it or it is global; otherwise MemoryNotFoundError, as for an unknown id."""
        return self.records.get(memory_id, user_id)

    @owner_keyword(", content=\"...\"")
    def update(self, memory_id: str, *, user_id: str, content: str | None = None,
               metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Change a memory of ``user_id`` (global ones too, but only by the user who stored them):
        its content (re-embedded) and/or its metadata (replaced); the change is kept in
        ``history``. Returns the memory as ``get`` does. Another user's memory raises
        MemoryNotFoundError, as an unknown id does, and nothing is embedded or written."""
        return self.records.update(memory_id, user_id, content, metadata)

    @owner_keyword("")
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
        self.records.delete(memory_id, user_id, purge)

    def clear(self, *, user_id: str | None = None, purge: bool = False) -> int:
        """Delete every memory of this collection, or only those ``user_id`` stored; returns how
        many. A tutorial or a test empties its own collection this way (``Kit(memory={"collection":
        ...})``) instead of deleting the data folder. ``purge`` as in ``delete``."""
        return self.records.clear(user_id, purge)

    @owner_keyword("")
    def history(self, memory_id: str, *, user_id: str) -> pd.DataFrame:
        """Every change of a memory, oldest first: changed_at, op, old/new content, old/new metadata
        (also after it was deleted). For its owner, or anyone if it is global; otherwise
        MemoryNotFoundError, as for an id that was never stored."""
        return history(self.log, self.collection, memory_id, user_id)

    # --- whole collection ------------------------------------------------------------------
    def frame(self, user_id: str | None = None) -> pd.DataFrame:
        """Every memory (or those ``user_id`` may see) as a DataFrame, newest first."""
        return self.records.frame(user_id)

    def reembed(self, model: str | None = None) -> int:
        """Re-embed every memory of the collection with ``model`` (None: local MiniLM) and make it
        the collection's model; return how many were re-embedded. Embedding happens first: if it
        fails, nothing is written."""
        return self.records.reembed(model)

    def flush(self) -> int:
        """Fold every process's pending memory events into DuckDB now; return rows ingested."""
        return self.log.store.flush()

    def close(self) -> None:
        """Drop the in-process indexes (everything is already durable)."""
        with self.replica.lock:
            self.searcher.reset()

    def explorer(self, *, user_id: str | None = None, k: int = 5, query: str = "", now: Any = None) -> MemoryExplorer:
        """A search box, user picker, score-breakdown table and chart (ipywidgets); ``now`` is the
        time decay is measured against, as in ``retrieve(now=...)`` (default: the clock)."""
        from ..notebook.explorer import explorer  # the one view a memory opens, lazily (see pyproject's layers)

        return explorer(self, user_id=user_id, k=k, query=query, now=now)

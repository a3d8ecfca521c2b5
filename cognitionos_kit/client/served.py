"""Client mode: ``Kit(server="http://...", token=...)`` (or ``COGNITIONOS_SERVER`` and
``COGNITIONOS_TOKEN``) is a ``ServedKit``: the Kit API of a notebook, served by the team server
(``cognitionos-kit serve``). Calls, the ledger, the text log and memory are the server's: its
providers, keys, fallback, budgets and rate limits apply, and nothing is written locally.

What differs from a local Kit, on purpose:

- **Who**: every call and memory belongs to the token's user. A ``user_id=`` naming someone else
  is read as the token's user, with a warning (an admin's token may still *read* anyone's rows).
- **Settings**: providers, keys, role models, prices, budgets and the cache live on the server; a
  client Kit given one of them raises a ``ConfigurationError``. ``project``, ``views``,
  ``timeout``, ``cache`` and ``log_text`` are the client's: rows carry its project and session.
- **What is served**: ``complete``, ``acomplete``, ``stream``, ``astream``, ``chat``, ``embed``,
  ``memory`` (store, retrieve, get, update, delete, history; retrieval is read-only), ``usage``,
  ``spend``, ``summary``, ``log``, ``models``, ``status``, ``charts``, ``playground``,
  ``log_browser`` and ``dashboard``. Tools, structured output, images and experiment runs need a
  local Kit for now, and say so before anything is sent.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from html import escape
from typing import TYPE_CHECKING, Any

from ..calls.options import CallOptions, Prompt, takes_options
from ..calls.router import split_model
from ..core.client_mode import ServerChoice, resolve_server
from ..core.config import KitConfig, session_id, view_filters
from ..core.display import UsageSummary
from ..core.errors import ConfigurationError, InvalidRequestError, KitWarning, warn_user
from ..core.types import ROLES, Completion
from ..kit import Kit
from ..storage.ledger import check_last, utc_iso
from ..storage.textlog import FILTERS as LOG_FILTERS
from .connection import Connection
from .memory import ServedMemory
from .streams import AsyncServedStream, ServedStream, completion_from

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["ServedKit"]

# what the server's /complete takes besides the prompt (server/schemas.py); the rest of
# CallOptions needs a local Kit and is refused before anything is sent
_SENT = ("role", "model", "system", "max_tokens", "temperature", "seed", "agent_id", "task_id", "max_cost", "deadline",
         "stop", "top_p", "frequency_penalty", "presence_penalty", "reasoning_effort", "thinking_budget", "cache",
         "log_text", "k")
_OWN = ("user_id", "memory")  # the token's user, checked by ServedKit._owner
_DEFAULTS = CallOptions()
# the ledger's text columns the server filters on (server/filters.py); other filters apply here
_SERVER_COLUMNS = frozenset({"model", "provider", "request_id", "trace_id", "status", "project", "session_id", "role",
                             "experiment_id", "run_id", "kind", "agent_id", "task_id", "error_type"})
_ALL_ROWS = 10_000_000  # the server's largest page of ledger rows
_CLIENT_SETTINGS = frozenset({"server", "token", "project", "views", "timeout", "dotenv", "cache", "log_text"})
_KIT_DEFAULTS = {n: p.default for n, p in inspect.signature(Kit.__init__).parameters.items() if n != "self"}


def _is_text(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, (list, tuple, set, frozenset)) and bool(value)
                                      and all(isinstance(v, str) for v in value))


class _ServedRouter:
    """Which models the server's providers have per role, and their model ladders (for the
    playground's pickers and ``%%llm``), read from the server's ``/models``."""

    def __init__(self, models: pd.DataFrame) -> None:
        self.role_models: dict[str, dict[str, str]] = {}
        self.ladders: dict[str, list[str]] = {}
        endpoints: list[str] = []
        for row in models.itertuples():
            if getattr(row, "listed_by", "catalogue") not in (None, "catalogue") and row.provider not in endpoints:
                endpoints.append(row.provider)  # a named endpoint of the server's
            if row.model is None or row.model != row.model:  # an endpoint that could not list its models
                continue
            self.ladders.setdefault(row.provider, []).append(row.model)
            for role in (r.strip() for r in str(row.roles or "").split(",")):
                if role in ROLES:
                    self.role_models.setdefault(row.provider, {})[role] = row.model
        self.endpoints = tuple(endpoints)

    def models(self, provider: str) -> dict[str, list[str]]:
        roles = self.role_models.get(provider, {})
        return {m: [r for r, mm in roles.items() if mm == m] for m in self.ladders.get(provider, [])}

    def split(self, model: str) -> tuple[str | None, str]:
        prefix, _, rest = model.partition(":")
        return (prefix, rest) if rest and prefix in self.endpoints else split_model(model)

    def listed_by(self, model: str, among: Sequence[str] | None = None) -> list[str]:
        return [p for p in (among if among is not None else self.endpoints)
                if p in self.endpoints and model in self.ladders.get(p, [])]


class ServedKit(Kit):
    """A Kit whose calls, ledger, text log and memory are the team server's (see the module's
    docstring); ``Kit(server=..., token=...)`` makes one."""

    def __init__(self, home: str | os.PathLike[str] | None = None, *, server: str | None = None,
                 token: str | None = None, project: str | None = None, views: str | None = None,
                 timeout: float = 60.0, dotenv: bool | str | os.PathLike[str] = True,
                 cache: bool | str = "deterministic", log_text: bool = True, **settings: Any) -> None:
        if unknown := sorted(set(settings) - set(_KIT_DEFAULTS)):
            raise ConfigurationError(f"Kit() got unexpected keyword argument(s) {', '.join(unknown)}")
        set_here = sorted(k for k, v in settings.items() if v is not _KIT_DEFAULTS[k] and v != _KIT_DEFAULTS[k])
        if home is not None:
            set_here.insert(0, "home")
        if set_here:
            raise ConfigurationError(
                f"a client Kit uses the team server's settings, so {', '.join(set_here)} cannot be set here: set them "
                "on the server, or use a local Kit (Kit(server=False, ...))")
        self._choice: ServerChoice = resolve_server(server, token, dotenv)
        self._config = KitConfig(project=project, views=views, timeout=timeout, cache=cache,
                                 log_text=log_text, dotenv=False)
        self.server = self.home = self._choice.url  # type: ignore[assignment]
        self.project = project
        self.session_id = session_id()
        self._views = view_filters(self._config, self.session_id)
        self._connection = Connection(self._choice, float(timeout))
        self._defaults = {k: v for k, v in (("cache", cache), ("log_text", log_text)) if v != _KIT_DEFAULTS[k]}
        self._who: tuple[str, bool] | None = None
        self._memory: ServedMemory | None = None  # type: ignore[assignment]
        self._router: _ServedRouter | None = None
        self._warned: set[tuple[str, str]] = set()

    # --- who and what -----------------------------------------------------------------
    def _whoami(self) -> tuple[str, bool]:
        if self._who is None:
            st = self._connection.call("GET", "/status")
            self._who = (st["user"], bool(st["admin"]))
        return self._who

    @property
    def user(self) -> str:
        """The token's user: every call and memory of this Kit is theirs."""
        return self._whoami()[0]

    def _owner(self, user_id: str | None, what: str) -> str:
        me = self.user
        if user_id is not None and user_id != me and (what, user_id) not in self._warned:
            self._warned.add((what, user_id))
            warn_user(f"a client Kit acts as its token's user {me!r}: {what}(user_id={user_id!r}) is taken as "
                      f"{me!r} (the server takes who from the token)", KitWarning)
        return me

    def status(self) -> dict[str, Any]:
        """The server's status (simulation mode, chain, providers; never a key), who the token is,
        and this client's server, project, views and session."""
        st = self._connection.call("GET", "/status")
        self._who = (st["user"], bool(st["admin"]))
        return {**st, "server": self.server, "server_source": self._choice.source, "client": True,
                "project": self.project, "views": self._config.views or "all", "session_id": self.session_id}

    @property
    def config(self) -> KitConfig:
        raise ConfigurationError(f"a client Kit's configuration is the team server's ({self.server}): "
                                 "kit.status() shows what it uses")

    @property
    def chain(self) -> list[str]:
        """The providers the server tries by default, in order."""
        return list(self.status()["chain"])

    order = chain

    @property
    def router(self) -> _ServedRouter:  # type: ignore[override]
        if self._router is None:
            self._router = _ServedRouter(self.models())
        return self._router

    def models(self) -> pd.DataFrame:
        """The models the server can use right now, with role defaults, context window and prices."""
        import pandas as pd

        return pd.DataFrame.from_records(self._connection.call("GET", "/models")["models"])

    # --- calls --------------------------------------------------------------------------
    def _body(self, prompt: Prompt, o: CallOptions) -> dict[str, Any]:
        """The JSON body of ``POST /complete`` for a call, checked before anything is sent."""
        unsupported = [f for f in vars(_DEFAULTS) if f not in _SENT and f not in _OWN and not f.startswith("_")
                       and f not in ("output_spec", "tool_set", "image_set", "recalled")
                       and getattr(o, f) != getattr(_DEFAULTS, f)]
        if unsupported:
            raise InvalidRequestError(
                f"a client Kit cannot send {', '.join(unsupported)}= to the team server yet; use a local Kit "
                "(Kit(server=False)) for tools, structured output, images and provider lists")
        body: dict[str, Any] = {**self._defaults}
        if isinstance(prompt, str):
            body["prompt"] = prompt
        else:
            messages = [dict(m) for m in prompt]
            if any(set(m) != {"role", "content"} or not isinstance(m["content"], str) for m in messages):
                raise InvalidRequestError("a client Kit sends messages of text only: {'role': ..., 'content': '...'}")
            body["messages"] = messages
        body.update({f: getattr(o, f) for f in _SENT if getattr(o, f) is not None})
        if isinstance(body.get("stop"), (list, tuple)):
            body["stop"] = list(body["stop"])
        self._owner(o.user_id, "complete")
        if o.memory is not None:
            self._owner(o.memory, "complete(memory=...)")
            body["memory"] = True
        return {**body, "session_id": self.session_id, **({"project": self.project} if self.project else {})}

    @takes_options
    def plan(self, prompt: Prompt, options: CallOptions) -> Any:
        """Check a call without sending it; a client Kit returns the JSON body it would send (the server plans)."""
        return self._body(prompt, options)

    @takes_options
    def complete(self, prompt: Prompt, options: CallOptions) -> Completion:
        """One costed completion, made by the team server for the token's user."""
        return completion_from(self._connection.call("POST", "/complete", json=self._body(prompt, options)))

    @takes_options
    async def acomplete(self, prompt: Prompt, options: CallOptions) -> Completion:
        """Async ``complete``."""
        body = self._body(prompt, options)
        return completion_from((await self._connection.arequest("POST", "/complete", json=body)).json())

    @takes_options
    def stream(self, prompt: Prompt, options: CallOptions) -> ServedStream:  # type: ignore[override]
        """Iterate for text chunks as the server streams them; ``.completion`` afterwards."""
        body = {**self._body(prompt, options), "stream": True}
        return ServedStream(self.server, lambda: self._connection.events("/complete", body))

    @takes_options
    def astream(self, prompt: Prompt, options: CallOptions) -> AsyncServedStream:  # type: ignore[override]
        """``async for chunk in kit.astream(...)``."""
        body = {**self._body(prompt, options), "stream": True}
        return AsyncServedStream(self.server, lambda: self._connection.aevents("/complete", body))

    def embed(self, texts: str | Sequence[str], model: str | None = None, *, user_id: str | None = None) -> np.ndarray:
        """Embeddings from the server (its local model by default), float32 (n, dim), L2-normalised."""
        import numpy as np

        self._owner(user_id, "embed")
        batch = [texts] if isinstance(texts, str) else list(texts)
        if not batch:
            raise InvalidRequestError("embed needs at least one text")
        rows: list[list[float]] = []
        for i in range(0, len(batch), 256):  # the server's limit per request
            body = {"input": batch[i:i + 256], **({"model": model} if model else {})}
            rows += self._connection.call("POST", "/embed", json=body)["embeddings"]
        return np.asarray(rows, dtype=np.float32)

    # --- the server's ledger, text log and memory -----------------------------------------
    def _read(self, path: str, filters: Mapping[str, Any], server_columns: frozenset[str],
              **params: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Rows of a table route: text filters and the time window go to the server; the filters
        it cannot take (None, numbers, flags) are returned to apply here."""
        query: dict[str, Any] = {k: v for k, v in params.items() if v is not None}
        rest: dict[str, Any] = {}
        for col, value in filters.items():
            if col in ("since", "until"):
                if value is not None:
                    query[col] = utc_iso(value, col)
            elif col == "user_id":
                me, admin = self._whoami()
                if value is not None and admin:
                    query["user"] = value
                elif value is not None:
                    self._owner(value if isinstance(value, str) else None, path.strip("/"))
            elif col in server_columns and _is_text(value):
                query[col] = [value] if isinstance(value, str) else list(value)
            else:
                rest[col] = value
        return self._connection.table(path, query), rest

    @staticmethod
    def _narrow(frame: pd.DataFrame, rest: Mapping[str, Any]) -> pd.DataFrame:
        for col, value in rest.items():
            if col not in frame.columns:
                raise InvalidRequestError(f"unknown column {col!r}; valid columns: {', '.join(frame.columns)}")
            if value is None:
                frame = frame[frame[col].isna()]
            elif isinstance(value, (list, tuple, set, frozenset)):
                frame = frame[frame[col].isin(list(value))]
            else:
                frame = frame[frame[col] == value]
        return frame.reset_index(drop=True)

    def usage(self, **filters: Any) -> pd.DataFrame:
        """The server's ledger rows the token may read (its own; an admin's: anyone's), one per attempt.
        Filters as a local Kit's; this Kit's ``views`` apply."""
        last = filters.pop("last", None)
        last = None if last is None else check_last(last)
        wanted = {**self._views, **filters}
        frame, rest = self._read("/usage", wanted, _SERVER_COLUMNS, limit=last or _ALL_ROWS)
        if rest and last is not None:  # filters applied here: the newest N the server chose may not match them
            frame, rest = self._read("/usage", wanted, _SERVER_COLUMNS, limit=_ALL_ROWS)
        frame = self._narrow(frame, rest)
        return frame if last is None else frame.tail(last).reset_index(drop=True)

    def spend(self, by: str | Sequence[str] = "user_id", **filters: Any) -> pd.DataFrame:
        """Spend and calls grouped by user_id, model, provider, day or project (or a list of them)."""
        keys = [by] if isinstance(by, str) else list(by)
        frame, rest = self._read("/spend", {**self._views, **filters}, _SERVER_COLUMNS, by=keys)
        if rest:
            raise InvalidRequestError(f"a client Kit's spend filters on text columns and since/until, not {sorted(rest)}")
        return frame

    def summary(self, **filters: Any) -> UsageSummary:
        """Calls, attempts, failures, spend and latency of the server's rows the token may read."""
        return UsageSummary(self.usage(**filters))

    def budgets(self) -> pd.DataFrame:
        """The token user's budgets on the server (an admin's: every budget)."""
        return self._connection.table("/budgets")

    def alerts(self, *, now: Any = None) -> pd.DataFrame:
        """The spend alerts the server fired for the token's user, oldest first (an admin's: all)."""
        if now is not None:
            raise InvalidRequestError("a client Kit reads the server's alerts as of now (now= needs a local Kit)")
        return self._connection.table("/alerts")

    def newest_row(self, **filters: Any) -> str | None:
        """The id of the newest ledger row these filters (and this Kit's views) match: a dashboard
        polls it and redraws only when it changed."""
        frame = self.usage(**filters, last=1)
        return None if frame.empty else str(frame["row_id"].iloc[-1])

    def log(self, search: str | None = None, *, since: Any = None, until: Any = None, limit: int | None = None,
            **filters: Any) -> pd.DataFrame:
        """What each of the token's requests asked and what came back, newest first (the server's text log)."""
        return self.text_log.entries(search, since=since, until=until, limit=limit, **{**self._views, **filters})

    @property
    def ledger(self) -> Any:
        raise ConfigurationError(f"a client Kit has no ledger file: the ledger is the team server's ({self.server}); "
                                 "read it with kit.usage(), kit.spend() and kit.log()")

    @property
    def simulated(self) -> Any:
        raise ConfigurationError(f"the simulated provider of a client Kit is the team server's ({self.server})")

    @property
    def text_log(self) -> _ServedLog:  # type: ignore[override]
        """The server's text log, read through ``/log``."""
        return _ServedLog(self)

    @property
    def memory(self) -> ServedMemory:  # type: ignore[override]
        """The server's semantic memory, scoped to the token's user."""
        if self._memory is None:
            self._memory = ServedMemory(self._connection, self._owner)
        return self._memory

    def close(self) -> None:
        self._connection.close()

    def __repr__(self) -> str:
        views = f", views={self._config.views!r}" if self._config.views else ""
        project = f", project={self.project!r}" if self.project else ""
        return f"ServedKit(server={self.server!r}{project}{views})"

    def _repr_html_(self) -> str:
        return f"<code>{escape(repr(self))}</code>: calls, ledger and memory on the team server"


class _ServedLog:
    """``kit.text_log`` of a client Kit: ``entries`` as the local text log's, read from ``/log``."""

    def __init__(self, kit: ServedKit) -> None:
        self._kit = kit

    def entries(self, search: str | None = None, *, since: Any = None, until: Any = None, limit: int | None = None,
                **filters: Any) -> pd.DataFrame:
        if bad := sorted(set(filters) - set(LOG_FILTERS)):
            raise InvalidRequestError(f"kit.log cannot filter on {bad}; use search= for text, or one of {', '.join(LOG_FILTERS)}")
        if search is not None and (not isinstance(search, str) or not search.strip()):
            raise InvalidRequestError("search must be some text to look for")
        frame, rest = self._kit._read("/log", {**filters, "since": since, "until": until}, frozenset(LOG_FILTERS) - {"user_id"},
                                      search=search, limit=limit or 1_000_000)
        return self._kit._narrow(frame, rest)


def _local_only(name: str) -> Callable[..., Any]:
    def refuse(self: ServedKit, *args: Any, **kwargs: Any) -> Any:
        raise ConfigurationError(f"kit.{name}() needs a local Kit: this one is a client of {self.server}, whose "
                                 "settings, budgets and runs are the server's (use Kit(server=False) for a local one)")

    refuse.__name__ = refuse.__qualname__ = name
    return refuse


for _name in ("send", "asend", "count_tokens", "set_price", "set_role_model", "provider", "run", "runs", "compare",
              "clear_cache", "set_budget", "set_team", "set_rate_limit", "limits", "metrics_text",
              "serve_metrics", "set_tracing", "on_spend"):
    setattr(ServedKit, _name, _local_only(_name))

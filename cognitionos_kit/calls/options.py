"""The options of one call, written once: ``CallOptions`` checks them, and ``takes_options`` gives
``complete``, ``acomplete``, ``stream``, ``astream`` and ``plan`` the same explicit, typed signature
(what shift-Tab in Jupyter and an IDE show) without repeating sixteen parameters five times."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import wraps
from numbers import Real
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, Union

from ..core.errors import ConfigurationError, InvalidRequestError
from ..core.types import ROLES
from ..core.validation import check_identifier, check_number, check_text
from .policy import FallbackOn, FallbackPolicy

__all__ = ["CallOptions", "Prompt", "takes_options"]

Prompt = Union[str, Sequence[Mapping[str, str]]]  # noqa: UP007 - a runtime alias on 3.10
P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")


@dataclass(kw_only=True)  # not frozen: made on every call, and a frozen __init__ is markedly slower
class CallOptions:
    """How one call is made (all optional). Checked when made, before anything is sent.

    role: pick the model per provider for this role (planner, executor, critic, summarizer);
        fallback may cross vendors.
    model: name one model; fallback only to its ``fallback_models`` equivalents.
    system: a system prompt.
    max_tokens: the longest answer (default: the Kit's ``default_max_tokens``).
    temperature, seed: sampling settings, sent where the provider accepts them.
    user_id, agent_id, task_id: who the call is for; recorded in the ledger (spend per user).
    max_cost: the most this call may cost in USD (worst case); a cheaper model is used if needed.
    providers: the providers to try, in order (instead of the Kit's chain).
    deadline: seconds for the whole call, every fallback included.
    fallback_on: which failures move on (overrides the Kit's policy for this call).
    experiment_id, run_id: the experiment run the call belongs to (set by ``kit.run``).
    """

    role: str | None = None
    model: str | None = None
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None
    user_id: str | None = None
    agent_id: str | None = None
    task_id: str | None = None
    max_cost: float | None = None
    providers: Sequence[str] | None = None
    deadline: float | None = None
    fallback_on: FallbackOn = None
    experiment_id: str | None = None
    run_id: str | None = None

    def __post_init__(self) -> None:
        if self.role is not None and self.role not in ROLES:
            raise InvalidRequestError(f"unknown role {self.role!r}: use one of {', '.join(ROLES)}")
        if self.model is not None:
            if not isinstance(self.model, str) or not self.model.strip():
                raise InvalidRequestError(f"model must be a non-empty string, got {self.model!r}")
            check_text(self.model, "model")
        if self.system is not None:
            check_text(self.system, "system", allow_empty=True)
        mt = self.max_tokens
        if mt is not None and (not isinstance(mt, int) or isinstance(mt, bool) or mt <= 0):
            raise InvalidRequestError(f"max_tokens must be a positive integer, got {mt!r}")
        mc = self.max_cost
        if mc is not None and (not isinstance(mc, Real) or isinstance(mc, bool) or not mc > 0 or math.isinf(mc)):
            raise InvalidRequestError(f"max_cost must be a positive number of US dollars, got {mc!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise InvalidRequestError(f"seed must be an integer, got {self.seed!r}")
        t = self.temperature
        if t is not None and (not isinstance(t, Real) or isinstance(t, bool) or math.isnan(t)):
            raise InvalidRequestError(f"temperature must be a number, got {t!r}")
        if self.deadline is not None:
            check_number(self.deadline, "deadline (seconds for the whole call, every fallback included)", positive=True)
        for label in ("user_id", "agent_id", "task_id", "experiment_id", "run_id"):
            value = getattr(self, label)
            if value is not None:
                check_identifier(value, label)
        p = self.providers
        if p is not None and (isinstance(p, str) or not isinstance(p, Sequence) or not p):
            raise InvalidRequestError(f"providers must be a non-empty list of names, got {p!r}")

    def policy(self, default: FallbackPolicy) -> FallbackPolicy:
        """The fallback policy of this call: its own ``fallback_on``, else the Kit's."""
        if self.fallback_on is None:
            return default
        try:
            return FallbackPolicy.make(self.fallback_on)
        except ConfigurationError as exc:
            raise InvalidRequestError(str(exc)) from None


class _TakesOptions(Generic[P]):
    """``@takes_options`` on ``method(self, prompt, options)`` gives it the signature
    ``(self, prompt, *, role=None, ...)``: the keyword arguments become a ``CallOptions``, and
    shift-Tab (or a type checker) sees each option with its type and default."""

    def __init__(self, spec: Callable[P, CallOptions]) -> None:
        self.spec = spec

    def __call__(self, method: Callable[[S, Prompt, CallOptions], R]) -> Callable[Concatenate[S, Prompt, P], R]:
        @wraps(method)
        def call(self: S, prompt: Prompt, /, **options: Any) -> R:
            try:
                opts = CallOptions(**options)
            except TypeError:
                unknown = sorted(set(options) - set(_FIELDS))
                raise InvalidRequestError(
                    f"unknown option(s) {', '.join(unknown)}: a call takes {', '.join(_FIELDS)}"
                ) from None
            return method(self, prompt, opts)

        params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY),
                  inspect.Parameter("prompt", inspect.Parameter.POSITIONAL_ONLY, annotation="Prompt")]
        params += list(_SIGNATURE.parameters.values())
        call.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            params, return_annotation=inspect.signature(method).return_annotation)
        call.__doc__ = (method.__doc__ or "").rstrip() + "\n\n" + _OPTIONS_DOC
        return call  # type: ignore[return-value]


_SIGNATURE = inspect.signature(CallOptions)
_FIELDS = tuple(_SIGNATURE.parameters)
_OPTIONS_DOC = "Options (keyword-only, all optional):\n" + "\n".join(
    "    " + line.strip() if not line.startswith("        ") else "        " + line.strip()
    for line in (CallOptions.__doc__ or "").split("\n\n", 1)[1].splitlines() if line.strip())

takes_options = _TakesOptions(CallOptions)

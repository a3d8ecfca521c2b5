"""The options of one call, written once: ``CallOptions`` checks them, and ``takes_options`` gives
``complete``, ``acomplete``, ``stream``, ``astream`` and ``plan`` the same explicit, typed signature
(what shift-Tab in Jupyter and an IDE show) without repeating sixteen parameters five times."""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import wraps
from numbers import Real
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, Union

from ..core.errors import ConfigurationError, InvalidRequestError
from ..core.types import ROLES, Sampling
from ..core.validation import check_identifier, check_number, check_text
from .policy import FallbackOn, FallbackPolicy
from .structured import OutputSpec, output_spec

if TYPE_CHECKING:
    from ..core.media import Image
    from .tools import Tool

__all__ = ["CallOptions", "Prompt", "takes_options", "REASONING_EFFORTS"]

REASONING_EFFORTS = ("minimal", "low", "medium", "high")
# request fields the kit sets itself: extra_body may not replace them
_KIT_FIELDS = frozenset({"model", "messages", "system", "max_tokens", "max_completion_tokens", "stream",
                         "stream_options", "temperature", "seed", "tools", "tool_choice"})

Prompt = Union[str, Sequence[Mapping[str, str]]]  # noqa: UP007 - a runtime alias on 3.10
P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")


CACHE_MODES = (None, True, False, "deterministic", "refresh")


def check_cache_mode(mode: object, what: str = "cache") -> None:
    """``mode`` is one of ``CACHE_MODES`` (by identity for None, True and False: 1 is not True)."""
    if not any(mode is m or (isinstance(m, str) and mode == m) for m in CACHE_MODES):
        raise InvalidRequestError(
            f"{what} must be 'deterministic', True, False or 'refresh' (None: the Kit's), got {mode!r}")


@dataclass(kw_only=True)  # not frozen: made on every call, and a frozen __init__ is markedly slower
class CallOptions:
    """How one call is made (all optional). Checked when made, before anything is sent.

    role: pick the model per provider for this role (planner, executor, critic, summarizer);
        fallback may cross vendors.
    model: name one model; fallback only to its ``fallback_models`` equivalents.
    system: a system prompt.
    max_tokens: the longest answer (default: the Kit's ``default_max_tokens``).
    temperature, seed: sampling settings, sent where the provider accepts them.
    stop: a string or list of strings that end the answer. top_p: nucleus sampling, 0 to 1.
    frequency_penalty, presence_penalty: -2 to 2 (OpenAI). logprobs: True (or 0) for each answer
        token's log-probability, n (1 to 20) also for the n likeliest alternatives (OpenAI).
    reasoning_effort: minimal, low, medium or high (OpenAI reasoning models; Anthropic's effort, no minimal).
    thinking_budget: tokens Anthropic may spend thinking (at least 1024, below max_tokens).
    cache_prompt: True caches the prompt up to its last message (and the system prompt), "system"
        the system prompt only, or a list of message indices to cache up to (Anthropic's
        cache_control; OpenAI caches long prompts by itself). ``r.cache_saving_usd`` says what it saved.
    output: a pydantic model class or a JSON schema dict: the answer must be JSON that fits it, and
        ``r.output`` holds it parsed. output_retries: ask again this many times with the validation
        error when an answer does not fit (complete and acomplete; each ask its own ledger row).
    tools: Python functions (type hints and docstring describe them) or JSON-schema tool dicts the
        model may call; ``r.tool_calls`` holds what it asked. tool_choice: "auto" (default),
        "required", "none" or a tool's name. run_tools: run the functions and send the results back
        until the model answers (each model turn a ledger row, all sharing ``r.trace_id``; a tool's
        error goes back to the model). max_steps: the most model turns that loop may take (default 10).
    images: images for the last user message: file paths, bytes, PIL images or URLs (their tokens
        are counted before sending, so max_cost sees them).
    extra_body: more request fields, sent as they are. A setting the first provider does not accept
        is an error before sending; a fallback provider without it is sent the call without it
        (warned, and listed in the attempt's ``dropped_params``).
    log_text: False keeps this call's prompt and answer out of the text log (``kit.log()``); the
        ledger row is written as always. None: the Kit's ``log_text``.
    cache: answer from the response cache when the same request was answered before: "deterministic"
        (temperature 0 or a seed set), True (always), False (never), "refresh" (send, then store).
        None: the Kit's ``cache``. A hit costs $0, is recorded as a cache hit with the cost it saved,
        and says so (``r.cache_hit``). Errors and substitutes are never stored as the model asked.
    user_id, agent_id, task_id: who the call is for; recorded in the ledger (spend per user).
    max_cost: the most this call may cost in USD (worst case); a cheaper model is used if needed.
    providers: the providers to try, in order (instead of the Kit's chain).
    deadline: seconds for the whole call, every fallback included.
    fallback_on: which failures move on (overrides the Kit's policy for this call).
    experiment_id, run_id: the experiment run the call belongs to (set by ``kit.run``).
    memory, k: retrieval-augmented: the top ``k`` (default 5) memories of the user ``memory`` for the
        last user message go into the system prompt ("Relevant memories about the user: - ...");
        their ids are on ``r.memory_ids`` and the ledger row (``memory_user``, ``memory_ids``). They
        are retrieved read-only (``track=False``): being put in a prompt is not evidence a memory
        helped, so it does not raise its frequency boost; ``kit.memory.mark_used(r.memory_ids,
        user_id=...)`` counts them when the answer did use them.
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
    stop: str | Sequence[str] | None = None
    top_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logprobs: bool | int | None = None
    reasoning_effort: str | None = None
    thinking_budget: int | None = None
    cache_prompt: bool | str | Sequence[int] | None = None
    output: Any = None
    output_retries: int = 0
    tools: Any = None
    tool_choice: str | None = None
    run_tools: bool = False
    max_steps: int = 10
    images: Any = None
    extra_body: Mapping[str, Any] | None = None
    log_text: bool | None = None
    cache: bool | str | None = None
    memory: str | None = None
    k: int | None = None

    output_spec: OutputSpec | None = field(default=None, init=False, repr=False, compare=False)
    tool_set: tuple[Tool, ...] | None = field(default=None, init=False, repr=False, compare=False)
    image_set: tuple[Image, ...] = field(default=(), init=False, repr=False, compare=False)
    # (system prompt with the memories, their ids): retrieved once per call, every model turn uses them
    recalled: tuple[str | None, list[str]] | None = field(default=None, init=False, repr=False, compare=False)

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
        if self.log_text is not None and not isinstance(self.log_text, bool):
            raise InvalidRequestError(f"log_text must be True, False or None, got {self.log_text!r}")
        if self.cache is not None:
            check_cache_mode(self.cache)
        for label in ("user_id", "agent_id", "task_id", "experiment_id", "run_id"):
            value = getattr(self, label)
            if value is not None:
                check_identifier(value, label)
        p = self.providers
        if p is not None and (isinstance(p, str) or not isinstance(p, Sequence) or not p):
            raise InvalidRequestError(f"providers must be a non-empty list of names, got {p!r}")
        if (self.stop is not None or self.top_p is not None or self.frequency_penalty is not None
                or self.presence_penalty is not None or self.logprobs is not None or self.reasoning_effort is not None
                or self.thinking_budget is not None or self.extra_body is not None or self.cache_prompt is not None
                or self.output is not None or self.output_retries):
            self._check_sampling()
        if self.tools is not None or self.tool_choice is not None or self.run_tools or self.max_steps != 10:
            self._check_tools()
        if self.memory is not None or self.k is not None:
            self._check_memory()
        if self.images is not None:
            from ..core.media import Image

            items = self.images if isinstance(self.images, (list, tuple)) else [self.images]
            if not items:
                raise InvalidRequestError("images is empty: pass a path, bytes, a PIL image or a URL, or leave it out")
            self.image_set = tuple(Image.of(i) for i in items)

    def _check_memory(self) -> None:
        if self.memory is None:
            raise InvalidRequestError("k needs memory=: kit.complete(prompt, memory=\"ada\", k=5) puts the top k "
                                      "memories of user ada in the prompt")
        if not isinstance(self.memory, str):
            raise InvalidRequestError(f"memory must be the user_id whose memories to use, got {self.memory!r:.60}")
        check_text(self.memory, "memory (a user_id)")
        k = self.k
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 50):
            raise InvalidRequestError(f"k must be a whole number of memories from 1 to 50, got {k!r}")

    def _check_tools(self) -> None:
        from .tools import TOOL_CHOICES, make_tools

        if self.tools is None:
            what = "tool_choice" if self.tool_choice is not None else "run_tools" if self.run_tools else "max_steps"
            raise InvalidRequestError(f"{what} needs tools= (Python functions or JSON-schema tools)")
        self.tool_set = make_tools(self.tools)
        names = [t.name for t in self.tool_set]
        tc = self.tool_choice
        if tc is not None and tc not in TOOL_CHOICES and tc not in names:
            raise InvalidRequestError(f"tool_choice must be auto, required, none or a tool's name ({', '.join(names)}), "
                                      f"got {tc!r}")
        if not isinstance(self.run_tools, bool):
            raise InvalidRequestError(f"run_tools must be True or False, got {self.run_tools!r}")
        ms = self.max_steps
        if not isinstance(ms, int) or isinstance(ms, bool) or not 1 <= ms <= 100:
            raise InvalidRequestError(f"max_steps must be a whole number of model turns from 1 to 100, got {ms!r}")
        if self.run_tools:
            schema_only = [t.name for t in self.tool_set if t.fn is None]
            if schema_only:
                raise InvalidRequestError(
                    f"run_tools=True needs Python functions; {', '.join(schema_only)} "
                    f"{'is a JSON-schema tool' if len(schema_only) == 1 else 'are JSON-schema tools'}: "
                    "pass the function, or run the calls yourself from r.tool_calls")

    def _check_sampling(self) -> None:
        stop = self.stop
        if stop is not None:
            items = [stop] if isinstance(stop, str) else stop
            if not isinstance(items, Sequence) or not items or not all(isinstance(s, str) and s for s in items):
                raise InvalidRequestError(f"stop must be a non-empty string or a list of them, got {stop!r}")
            for s in items:
                check_text(s, "stop", allow_empty=True)  # "\n" is a fine stop sequence
        for name, lo, hi in (("top_p", 0.0, 1.0), ("frequency_penalty", -2.0, 2.0), ("presence_penalty", -2.0, 2.0)):
            v = getattr(self, name)
            if v is not None:
                check_number(v, name)
                if not lo <= v <= hi:
                    raise InvalidRequestError(f"{name} must be between {lo:g} and {hi:g}, got {v!r}")
        lp = self.logprobs
        if lp is not None and lp is not True and lp is not False and not (isinstance(lp, int) and 0 <= lp <= 20):
            raise InvalidRequestError(f"logprobs must be True or a number of alternatives from 0 to 20, got {lp!r}")
        if self.reasoning_effort is not None and self.reasoning_effort not in REASONING_EFFORTS:
            raise InvalidRequestError(
                f"reasoning_effort must be one of {', '.join(REASONING_EFFORTS)}, got {self.reasoning_effort!r}")
        tb = self.thinking_budget
        if tb is not None and (not isinstance(tb, int) or isinstance(tb, bool) or tb < 1024):
            raise InvalidRequestError(f"thinking_budget must be a whole number of tokens, at least 1024, got {tb!r}")
        r = self.output_retries
        if not isinstance(r, int) or isinstance(r, bool) or not 0 <= r <= 10:
            raise InvalidRequestError(f"output_retries must be a whole number from 0 to 10, got {r!r}")
        if r and self.output is None:
            raise InvalidRequestError("output_retries needs output= (a pydantic model or a JSON schema)")
        self.output_spec = None if self.output is None else output_spec(self.output)
        cp = self.cache_prompt
        if cp is not None and cp is not True and cp is not False and cp != "system" and not (
                isinstance(cp, Sequence) and not isinstance(cp, str) and cp
                and all(isinstance(i, int) and not isinstance(i, bool) for i in cp)):
            raise InvalidRequestError(
                f"cache_prompt must be True, 'system' or a list of message indices (e.g. [0, -2]), got {cp!r}")
        eb = self.extra_body
        if eb is not None:
            if not isinstance(eb, Mapping) or not all(isinstance(k, str) for k in eb):
                raise InvalidRequestError(f"extra_body must be a dict with string keys, got {eb!r:.80}")
            clash = sorted(set(eb) & _KIT_FIELDS)
            if clash:
                raise InvalidRequestError(f"extra_body may not set {', '.join(clash)}: use the call's own options")
            try:
                json.dumps(dict(eb), allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise InvalidRequestError(f"extra_body must be JSON: {exc}") from None

    def sampling(self) -> Sampling | None:
        """The sampling settings beyond temperature and seed (None when none is given)."""
        if (self.stop is None and self.top_p is None and self.frequency_penalty is None
                and self.presence_penalty is None and self.logprobs is None and self.reasoning_effort is None
                and self.thinking_budget is None and not self.extra_body and not self.cache_prompt
                and self.output is None and self.tool_set is None):
            return None
        lp = self.logprobs
        return Sampling(
            stop=None if self.stop is None else (self.stop,) if isinstance(self.stop, str) else tuple(self.stop),
            top_p=self.top_p, frequency_penalty=self.frequency_penalty, presence_penalty=self.presence_penalty,
            logprobs=None if lp is None or lp is False else 0 if lp is True else int(lp),
            reasoning_effort=self.reasoning_effort, thinking_budget=self.thinking_budget,
            cache_prompt=_cache_marks(self.cache_prompt), output=self.output_spec,
            tools=None if self.tool_set is None else tuple(t.spec for t in self.tool_set), tool_choice=self.tool_choice,
            extra_body=tuple(sorted((self.extra_body or {}).items())),
        )

    def policy(self, default: FallbackPolicy) -> FallbackPolicy:
        """The fallback policy of this call: its own ``fallback_on``, else the Kit's."""
        if self.fallback_on is None:
            return default
        try:
            return FallbackPolicy.make(self.fallback_on)
        except ConfigurationError as exc:
            raise InvalidRequestError(str(exc)) from None


def _cache_marks(value: bool | str | Sequence[int] | None) -> tuple[int | str, ...] | None:
    """``cache_prompt`` as the places to mark: "system" and message indices (-1: the last one)."""
    if not value:
        return None
    if value is True:
        return ("system", -1)
    if value == "system":
        return ("system",)
    return tuple(value)


class _TakesOptions(Generic[P]):
    """``@takes_options`` on ``method(self, prompt, options)`` gives it the signature
    ``(self, prompt, *, role=None, ...)``: the keyword arguments become a ``CallOptions``, and
    shift-Tab (or a type checker) sees each option with its type and default."""

    def __init__(self, spec: Callable[P, CallOptions]) -> None:
        self.spec = spec

    def __call__(self, method: Callable[[S, Prompt, CallOptions], R]) -> Callable[Concatenate[S, Prompt, P], R]:
        # A mistake in the call (bad input, a wrong keyword, a cost limit) is raised from here with
        # the kit's inner frames cut off: the user sees their line and this one, then the message.
        if inspect.iscoroutinefunction(method):
            @wraps(method)
            async def acall(self: S, prompt: Prompt, /, **options: Any) -> Any:
                opts = make_options(options)
                try:
                    return await method(self, prompt, opts)
                except (InvalidRequestError, ConfigurationError) as exc:
                    raise exc.with_traceback(None) from None

            call: Any = acall
        else:
            @wraps(method)
            def call(self: S, prompt: Prompt, /, **options: Any) -> R:
                opts = make_options(options)
                try:
                    return method(self, prompt, opts)
                except (InvalidRequestError, ConfigurationError) as exc:
                    raise exc.with_traceback(None) from None

        params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY),
                  inspect.Parameter("prompt", inspect.Parameter.POSITIONAL_ONLY, annotation="Prompt")]
        params += list(_SIGNATURE.parameters.values())
        call.__signature__ = inspect.Signature(
            params, return_annotation=inspect.signature(method).return_annotation)
        call.__doc__ = (method.__doc__ or "").rstrip() + "\n\n" + _OPTIONS_DOC
        return call


def make_options(options: dict[str, Any]) -> CallOptions:
    try:
        return CallOptions(**options)
    except TypeError:
        import difflib

        unknown = sorted(set(options) - set(_FIELDS))
        hints = [f"{u} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(u, _FIELDS, 1, 0.5)) else u
                 for u in unknown]
        raise InvalidRequestError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; a call takes {', '.join(_FIELDS)}"
        ) from None
    except (InvalidRequestError, ConfigurationError) as exc:
        raise exc.with_traceback(None) from None


_SIGNATURE = inspect.signature(CallOptions)
_FIELDS = tuple(_SIGNATURE.parameters)
_OPTIONS_DOC = "Options (keyword-only, all optional):\n" + "\n".join(
    "    " + line.strip() if not line.startswith("        ") else "        " + line.strip()
    for line in (CallOptions.__doc__ or "").split("\n\n", 1)[1].splitlines() if line.strip())

takes_options = _TakesOptions(CallOptions)

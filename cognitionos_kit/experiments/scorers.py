"""Scorers: turn (output, dataset row) into a number in [0, 1] (or any float), or NaN.

Built in: ``exact_match``, ``contains``, ``regex``, ``valid_json``, ``numeric`` (tolerance), and
``llm_judge`` (a costed call through the kit, run by the runner). Any callable
``f(output, row) -> float | bool`` works too; in YAML, ``{python: "module:function"}``.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.display import missing
from ..core.errors import InvalidRequestError

__all__ = ["Scorer", "build_scorers", "BUILTIN", "JUDGE_PROMPT", "parse_judge_score", "judge_request"]

_NUMBER = re.compile(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?")
JUDGE_PROMPT = (
    "You are grading an answer. Criteria: {rubric}\n\nTask given to the model:\n{prompt}\n\n"
    "{reference}Answer to grade:\n{output}\n\nReply with only a score between 0 and 1."
)


def _text(v: Any) -> str:
    return "" if missing(v) else str(v)


def _exact(output: str, row: Mapping[str, Any], field: str = "expected", ignore_case: bool = False) -> float:
    a, b = output.strip(), _text(row[field]).strip()
    return float(a.casefold() == b.casefold() if ignore_case else a == b)


def _contains(output: str, row: Mapping[str, Any], field: str = "expected", ignore_case: bool = True) -> float:
    needle = _text(row[field])
    return float(needle.casefold() in output.casefold() if ignore_case else needle in output)


def _regex(output: str, row: Mapping[str, Any], pattern: str = "", flags: str = "") -> float:
    f = re.IGNORECASE if "i" in flags else 0
    return float(re.search(pattern, output, f | (re.DOTALL if "s" in flags else 0)) is not None)


def _valid_json(output: str, row: Mapping[str, Any]) -> float:
    text = output.strip()
    fenced = re.match(r"^```(?:json)?\s*(.*?)\s*```$", text, re.DOTALL)
    try:
        json.loads(fenced.group(1) if fenced else text)
    except ValueError:
        return 0.0
    return 1.0


def _numeric(output: str, row: Mapping[str, Any], field: str = "expected", tolerance: float = 1e-6,
             relative: bool = False) -> float:
    found = _NUMBER.findall(output.replace(",", ""))
    if not found:
        return 0.0
    want = float(row[field])
    got = float(found[0])
    limit = tolerance * abs(want) if relative else tolerance
    return float(abs(got - want) <= limit)


BUILTIN: dict[str, Callable[..., float]] = {
    "exact_match": _exact, "contains": _contains, "regex": _regex, "valid_json": _valid_json, "numeric": _numeric,
}
_FIELD_SCORERS = ("exact_match", "contains", "numeric")


def parse_judge_score(text: str) -> float:
    """The first number in a judge's reply, clamped to [0, 1]; NaN when there is none."""
    found = _NUMBER.findall(text)
    return min(max(float(found[0]), 0.0), 1.0) if found else math.nan


def judge_request(options: Mapping[str, Any], prompt: str, row: Mapping[str, Any], output: str) -> tuple[str, dict[str, Any]]:
    """The judge's prompt and ``kit.complete`` keyword arguments for one answer (model wins over role)."""
    ref = f"Reference answer:\n{row[options['field']]}\n\n" if options.get("field") else ""
    text = JUDGE_PROMPT.format(rubric=options.get("rubric", "correct, complete and concise"), prompt=prompt,
                               reference=ref, output=output)
    target = {"model": options["model"]} if options.get("model") else {"role": options.get("role", "critic")}
    return text, {**target, "max_tokens": options.get("max_tokens", 16), "temperature": 0.0}


@dataclass
class Scorer:
    """One named scorer; ``judge`` scorers are run by the runner through the kit."""

    name: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    fn: Callable[..., Any] | None = None

    @property
    def judge(self) -> bool:
        return self.kind == "llm_judge"

    def score(self, output: str, row: Mapping[str, Any]) -> float:
        """Score one output; a scorer that raises gives NaN (the run goes on)."""
        if output is None:
            return math.nan
        try:
            if self.fn is not None:
                v = self.fn(output, row)
            else:
                v = BUILTIN[self.kind](output, row, **self.options)
            return math.nan if v is None else float(v)
        except Exception:  # noqa: BLE001 - a bad score must not kill a paid-for run
            return math.nan

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "kind": self.kind, "options": self.options}
        if self.fn is not None:
            d["function"] = f"{getattr(self.fn, '__module__', '?')}.{getattr(self.fn, '__qualname__', repr(self.fn))}"
            try:
                d["source_sha256"] = hashlib.sha256(inspect.getsource(self.fn).encode()).hexdigest()[:16]
            except (OSError, TypeError):
                pass
        return d


def _import(ref: str) -> Callable[..., Any]:
    mod, _, attr = ref.partition(":")
    if not attr:
        raise InvalidRequestError(f"python scorer {ref!r}: write 'module:function'")
    try:
        return getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as exc:
        raise InvalidRequestError(f"python scorer {ref!r} cannot be imported: {exc}") from None


def _one(spec: Any, name: str | None, columns: set[str]) -> Scorer:
    if callable(spec):
        return Scorer(name or str(getattr(spec, "__name__", "custom")), "python", {}, spec)
    options: Any
    if isinstance(spec, str):
        kind, options = spec, {}
    elif isinstance(spec, Mapping) and len(spec) == 1:
        kind, options = next(iter(spec.items()))
        if kind == "python":
            fn = _import(str(options))
            return Scorer(name or str(getattr(fn, "__name__", "custom")), "python", {"ref": options}, fn)
        if kind == "regex" and isinstance(options, str):
            options = {"pattern": options}
        options = dict(options or {})
    else:
        raise InvalidRequestError(f"scorer {spec!r}: use a name, {{name: options}}, or a function f(output, row)")
    if kind not in BUILTIN and kind != "llm_judge":
        raise InvalidRequestError(f"unknown scorer {kind!r}: use one of {', '.join([*BUILTIN, 'llm_judge'])} or a function")
    if kind == "llm_judge":
        allowed = {"model", "role", "rubric", "field", "max_tokens"}
        for opt in ("model", "role", "rubric"):
            if opt in options and not (isinstance(options[opt], str) and options[opt].strip()):
                raise InvalidRequestError(f"scorer 'llm_judge': {opt} must be a non-empty string, got {options[opt]!r}")
        # model, role and max_tokens are checked against the Kit (known model, role, price) when the
        # run is planned, before any call is sent
    else:
        allowed = set(inspect.signature(BUILTIN[kind]).parameters) - {"output", "row"}
    bad = sorted(set(options) - allowed)
    if bad:
        raise InvalidRequestError(f"scorer {kind!r}: unknown option(s) {bad}; allowed: {', '.join(sorted(allowed))}")
    if kind == "regex":
        if not options.get("pattern"):
            raise InvalidRequestError("scorer 'regex' needs a pattern: {'regex': '^yes'}")
        try:
            re.compile(options["pattern"])
        except re.error as exc:
            raise InvalidRequestError(f"scorer 'regex': bad pattern {options['pattern']!r}: {exc}") from None
    fld = options.get("field", "expected" if kind in _FIELD_SCORERS else None)
    if fld is not None and fld not in columns:
        raise InvalidRequestError(
            f"scorer {kind!r} reads field {fld!r}, which the dataset lacks (columns: {', '.join(sorted(columns))})")
    return Scorer(name or kind, kind, options)


def build_scorers(specs: Any, columns: set[str]) -> list[Scorer]:
    """Validate scorer specs (a list, or a dict name -> spec) against the dataset's columns."""
    if specs is None:
        return []
    items: list[tuple[str | None, Any]]
    if isinstance(specs, Mapping) and not (len(specs) == 1 and next(iter(specs)) in (*BUILTIN, "llm_judge", "python")):
        items = [(str(k), v) for k, v in specs.items()]
    else:
        items = [(None, s) for s in ([specs] if isinstance(specs, (str, Mapping)) or callable(specs) else specs)]
    out = [_one(spec, name, columns) for name, spec in items]
    names = [s.name for s in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidRequestError(f"scorer names must be unique, got {dupes} twice: give them names with a dict")
    return out

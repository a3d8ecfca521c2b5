"""Scorers: turn (output, dataset row) into a number, or NaN when it cannot be scored.

Built in (each function's docstring says what it returns): ``exact_match``, ``contains``, ``regex``,
``valid_json`` (optionally against a JSON Schema), ``numeric`` (tolerance), ``embedding_similarity``
(local MiniLM), and two judges run by the runner as costed calls through the kit: ``llm_judge`` and
``rubric_judge`` (its rationale goes to ``rationale_<name>``). Any callable
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
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ..core.display import missing
from ..core.errors import InvalidRequestError
from .judges import (
    JUDGE_PROMPT,
    JUDGES,
    check_judge_options,
    judge_request,
    parse_judge_score,
    read_judge_reply,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Scorer", "build_scorers", "BUILTIN", "JUDGE_PROMPT", "parse_judge_score", "judge_request",
           "first_number"]

# a number as people write it: sign, thousands separators in groups of three, decimals, exponent
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+|(?<=\d))(?:[eE][-+]?\d+)?")
_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}
_MODES = ("search", "match", "fullmatch")


def _text(v: Any) -> str:
    return "" if missing(v) else str(v)


def _exact(output: str, row: Mapping[str, Any], field: str = "expected", ignore_case: bool = False) -> float:
    """1.0 when the stripped output equals the ``field`` column's value, else 0.0."""
    a, b = output.strip(), _text(row[field]).strip()
    return float(a.casefold() == b.casefold() if ignore_case else a == b)


def _contains(output: str, row: Mapping[str, Any], field: str = "expected", ignore_case: bool = True) -> float:
    """1.0 when the ``field`` column's value occurs in the output (case-insensitive by default), else 0.0."""
    needle = _text(row[field])
    return float(needle.casefold() in output.casefold() if ignore_case else needle in output)


def _regex(output: str, row: Mapping[str, Any], pattern: str = "", flags: str = "", mode: str = "search",
           field: str | None = None, group: int | str | None = None) -> float:
    """1.0 when ``pattern`` matches the output (``mode``: search anywhere, match at the start,
    fullmatch the whole output; ``flags``: letters of "imsx"), else 0.0. With ``field``, the match's
    ``group`` (default: the first capture group, else the whole match) must also equal that
    column's value (both stripped; case-insensitive with the "i" flag)."""
    compiled = re.compile(pattern, _regex_flags(flags))
    m = getattr(compiled, mode)(output)
    if m is None:
        return 0.0
    if field is None:
        return 1.0
    got = m.group(_regex_group(compiled, group)) or ""
    want = _text(row[field])
    if "i" in flags:
        return float(got.strip().casefold() == want.strip().casefold())
    return float(got.strip() == want.strip())


def _regex_flags(flags: str) -> int:
    value = 0
    for letter in flags:
        value |= _FLAGS[letter]
    return value


def _regex_group(compiled: re.Pattern[str], group: int | str | None) -> int | str:
    return group if group is not None else (1 if compiled.groups else 0)


def _valid_json(output: str, row: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> float:
    """1.0 when the output (bare or in a ```json fence) parses as JSON and, with ``schema`` (a JSON
    Schema, checked when the experiment is built), fits it; else 0.0."""
    text = output.strip()
    fenced = re.match(r"^```(?:json)?\s*(.*?)\s*```$", text, re.DOTALL)
    try:
        value = json.loads(fenced.group(1) if fenced else text)
    except ValueError:
        return 0.0
    if schema is None:
        return 1.0
    return float(_validator(json.dumps(schema, sort_keys=True)).is_valid(value))


@lru_cache(maxsize=64)
def _validator(schema_json: str) -> Any:
    import jsonschema

    schema = json.loads(schema_json)
    return jsonschema.validators.validator_for(schema)(schema)


def first_number(text: str) -> float | None:
    """The first number written in ``text``: an optional sign, digits with optional thousands
    separators in groups of three ("1,234"), an optional decimal part (".5", "3.25") and exponent
    ("1e-3"); not part of a word ("x2", "v1.2" are skipped). A trailing "%" is ignored (50% -> 50).
    None when there is none."""
    m = _NUMBER.search(text)
    return None if m is None else float(m.group().replace(",", ""))


def _numeric(output: str, row: Mapping[str, Any], field: str = "expected", tolerance: float = 1e-6,
             relative: bool = False, rel_tolerance: float = 0.0) -> float:
    """1.0 when the output's first number (``first_number``) is within tolerance of the ``field``
    column's value: |got - want| <= max(tolerance, rel_tolerance x |want|) (``relative=True`` reads
    ``tolerance`` as relative). 0.0 when it is not, or when the output has no number (a wrong
    answer, not a missing one); NaN when the row's reference is missing."""
    if missing(row[field]):
        return math.nan
    got = first_number(output)
    if got is None:
        return 0.0
    want = float(row[field])
    limit = max(tolerance * abs(want) if relative else tolerance, rel_tolerance * abs(want))
    return float(abs(got - want) <= limit)


@lru_cache(maxsize=4096)
def _vector(text: str) -> Any:
    from ..calls.embeddings import get_local_embedder

    return get_local_embedder().embed([text])[0]


def _embedding_similarity(output: str, row: Mapping[str, Any], field: str = "expected",
                          threshold: float | None = None) -> float:
    """Cosine similarity in [-1, 1] between the output and the ``field`` column, both embedded by
    the bundled all-MiniLM-L6-v2 (offline, free, not ledgered); related texts score about 0.5 and
    up. With ``threshold``: 1.0 at or above it, else 0.0. A blank output scores 0.0; a missing or
    blank reference gives NaN."""
    ref = _text(row[field]).strip()
    if not ref:
        return math.nan
    if not output.strip():
        return 0.0
    sim = min(max(float(_vector(output) @ _vector(ref)), -1.0), 1.0)  # unit vectors: the dot is the cosine
    return sim if threshold is None else float(sim >= threshold)


BUILTIN: dict[str, Callable[..., float]] = {
    "exact_match": _exact, "contains": _contains, "regex": _regex, "valid_json": _valid_json, "numeric": _numeric,
    "embedding_similarity": _embedding_similarity,
}
_FIELD_SCORERS = ("exact_match", "contains", "numeric", "embedding_similarity")


@dataclass
class Scorer:
    """One named scorer; ``judge`` scorers (``llm_judge``, ``rubric_judge``) are run by the runner
    through the kit (``judge_call`` and ``judge_reply``), the others by ``score``."""

    name: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    fn: Callable[..., Any] | None = None

    @property
    def judge(self) -> bool:
        return self.kind in JUDGES

    @property
    def rationale(self) -> bool:
        """Whether the results keep a ``rationale_<name>`` column for this scorer."""
        return self.kind == "rubric_judge"

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

    def judge_call(self, prompt: str, row: Mapping[str, Any], output: str) -> tuple[str, dict[str, Any]]:
        """A judge's prompt and ``kit.complete`` keyword arguments for one answer."""
        return judge_request(self.options, prompt, row, output, self.kind)

    def judge_reply(self, text: str) -> tuple[float, str | None, str | None]:
        """A judge's reply -> (score, rationale, note saying why the score is NaN)."""
        return read_judge_reply(self.kind, self.options, text)

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


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_regex(o: Mapping[str, Any]) -> None:
    pattern = o.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        raise InvalidRequestError("scorer 'regex' needs a pattern: {'regex': '^yes'}")
    flags = o.get("flags", "")
    if not isinstance(flags, str) or set(flags) - set(_FLAGS):
        raise InvalidRequestError(f"scorer 'regex': flags are letters of 'imsx' (ignore case, multiline, dotall, "
                                  f"verbose), got {flags!r}")
    if o.get("mode", "search") not in _MODES:
        raise InvalidRequestError(f"scorer 'regex': mode must be one of {', '.join(_MODES)}, got {o.get('mode')!r}")
    try:
        compiled = re.compile(pattern, _regex_flags(flags))
    except re.error as exc:
        raise InvalidRequestError(f"scorer 'regex': bad pattern {pattern!r}: {exc}") from None
    group = o.get("group")
    if group is not None:
        if o.get("field") is None:
            raise InvalidRequestError("scorer 'regex': group is compared to a reference: give field too")
        ok = (isinstance(group, int) and not isinstance(group, bool) and 0 <= group <= compiled.groups) or (
            isinstance(group, str) and group in compiled.groupindex)
        if not ok:
            named = f", named {', '.join(compiled.groupindex)}" if compiled.groupindex else ""
            raise InvalidRequestError(f"scorer 'regex': pattern {pattern!r} has no group {group!r} "
                                      f"({compiled.groups} group(s){named})")


def _check_numeric(o: Mapping[str, Any], fld: str, data: pd.DataFrame | None) -> None:
    for opt in ("tolerance", "rel_tolerance"):
        if opt in o and not (_number(o[opt]) and o[opt] >= 0):
            raise InvalidRequestError(f"scorer 'numeric': {opt} must be a number >= 0, got {o[opt]!r}")
    if not isinstance(o.get("relative", False), bool):
        raise InvalidRequestError(f"scorer 'numeric': relative must be True or False, got {o['relative']!r}")
    if o.get("relative") and "rel_tolerance" in o:
        raise InvalidRequestError("scorer 'numeric': give rel_tolerance, or relative=True with tolerance, not both")
    if data is None:
        return
    for i, v in enumerate(data[fld].tolist()):
        if missing(v):
            continue
        try:
            ok = math.isfinite(float(v)) and not isinstance(v, bool)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InvalidRequestError(f"scorer 'numeric' compares to column {fld!r}, whose row {i} value {v!r} "
                                      "is not a number")


def _check_options(kind: str, o: Mapping[str, Any], fld: str | None, data: pd.DataFrame | None) -> None:
    if kind == "regex":
        _check_regex(o)
    elif kind == "numeric":
        _check_numeric(o, str(fld), data)
    elif kind == "valid_json" and o.get("schema") is not None:
        import jsonschema

        schema = o["schema"]
        if not isinstance(schema, Mapping):
            raise InvalidRequestError(f"scorer 'valid_json': schema must be a JSON Schema dict, got {schema!r:.80}")
        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
            json.dumps(schema)
        except jsonschema.SchemaError as exc:
            raise InvalidRequestError(f"scorer 'valid_json': invalid JSON Schema: {exc.message}") from None
        except (TypeError, ValueError) as exc:
            raise InvalidRequestError(f"scorer 'valid_json': the schema is not JSON data: {exc}") from None
    elif kind == "embedding_similarity" and o.get("threshold") is not None:
        if not (_number(o["threshold"]) and -1.0 <= o["threshold"] <= 1.0):
            raise InvalidRequestError(f"scorer 'embedding_similarity': threshold must be a number in [-1, 1], "
                                      f"got {o['threshold']!r}")


def _one(spec: Any, name: str | None, columns: set[str], data: pd.DataFrame | None = None) -> Scorer:
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
        if options is not None and not isinstance(options, Mapping):
            raise InvalidRequestError(f"scorer {kind!r}: options must be a dict, got {options!r:.80}")
        options = dict(options or {})
    else:
        raise InvalidRequestError(f"scorer {spec!r}: use a name, {{name: options}}, or a function f(output, row)")
    if kind not in BUILTIN and kind not in JUDGES:
        raise InvalidRequestError(f"unknown scorer {kind!r}: use one of {', '.join([*BUILTIN, *JUDGES])} or a function")
    if kind in JUDGES:
        # model, role and max_tokens are checked against the Kit (known model, role, price) when the
        # run is planned, before any call is sent
        check_judge_options(kind, options)
    else:
        allowed = set(inspect.signature(BUILTIN[kind]).parameters) - {"output", "row"}
        bad = sorted(set(options) - allowed)
        if bad:
            raise InvalidRequestError(f"scorer {kind!r}: unknown option(s) {bad}; allowed: {', '.join(sorted(allowed))}")
    fld = options.get("field", "expected" if kind in _FIELD_SCORERS else None)
    if fld is not None and fld not in columns:
        raise InvalidRequestError(
            f"scorer {kind!r} reads field {fld!r}, which the dataset lacks (columns: {', '.join(sorted(columns))})")
    _check_options(kind, options, fld, data)
    return Scorer(name or kind, kind, options)


def build_scorers(specs: Any, columns: set[str], data: pd.DataFrame | None = None) -> list[Scorer]:
    """Validate scorer specs (a list, or a dict name -> spec) against the dataset's columns (and,
    given ``data``, its values: a ``numeric`` reference column must hold numbers)."""
    if specs is None:
        return []
    items: list[tuple[str | None, Any]]
    if isinstance(specs, Mapping) and not (len(specs) == 1 and next(iter(specs)) in (*BUILTIN, *JUDGES, "python")):
        items = [(str(k), v) for k, v in specs.items()]
    else:
        items = [(None, s) for s in ([specs] if isinstance(specs, (str, Mapping)) or callable(specs) else specs)]
    out = [_one(spec, name, columns, data) for name, spec in items]
    names = [s.name for s in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidRequestError(f"scorer names must be unique, got {dupes} twice: give them names with a dict")
    return out

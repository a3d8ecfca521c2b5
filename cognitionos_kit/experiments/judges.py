"""LLM judges: the request a judge scorer sends through the kit, and how its reply becomes a score.

``llm_judge`` asks for one number in [0, 1]. ``rubric_judge`` sends a rubric (one criterion, or a
list with weights), asks for JSON ``{"rationale": ..., "scores": {"c1": ..., ...}}`` as a
structured output (so the simulated provider answers with a fitting value offline), and gives the
weighted mean of the criteria scores plus the judge's rationale.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from ..core.errors import InvalidRequestError

__all__ = ["JUDGES", "JUDGE_PROMPT", "RUBRIC_PROMPT", "parse_judge_score", "judge_request", "read_judge_reply",
           "rubric_criteria", "check_judge_options"]

JUDGES = ("llm_judge", "rubric_judge")
_NUMBER = re.compile(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?")
JUDGE_PROMPT = (
    "You are grading an answer. Criteria: {rubric}\n\nTask given to the model:\n{prompt}\n\n"
    "{reference}Answer to grade:\n{output}\n\nReply with only a score between 0 and 1."
)
RUBRIC_PROMPT = (
    "You are grading an answer against a rubric. Score each criterion from 0 (not met) to 1 (fully met).\n\n"
    "Rubric:\n{criteria}\n\nTask given to the model:\n{prompt}\n\n{reference}Answer to grade:\n{output}\n\n"
    'Reply with JSON only: {{"rationale": "<why, in one to three sentences>", "scores": {{{keys}}}}}'
)
_OPTIONS = {"llm_judge": {"model", "role", "rubric", "field", "max_tokens"},
            "rubric_judge": {"model", "role", "rubric", "field", "max_tokens"}}
_MAX_TOKENS = {"llm_judge": 16, "rubric_judge": 400}


def parse_judge_score(text: str) -> float:
    """The first number in a judge's reply, clamped to [0, 1]; NaN when there is none."""
    found = _NUMBER.findall(text)
    return min(max(float(found[0]), 0.0), 1.0) if found else math.nan


def _weight(w: Any, where: str) -> float:
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
        raise InvalidRequestError(f"scorer 'rubric_judge': {where} weight must be a positive number, got {w!r}")
    return float(w)


def rubric_criteria(rubric: Any) -> list[tuple[str, str, float]]:
    """``[(key, criterion, weight)]`` from a rubric: a text (one criterion, weight 1), a list of texts
    (equal weights) or of ``{"criterion": text, "weight": w}``, or a dict ``{text: weight}``."""
    items: list[tuple[Any, Any]]
    if isinstance(rubric, str):
        items = [(rubric, 1.0)]
    elif isinstance(rubric, Mapping):
        items = list(rubric.items())
    elif isinstance(rubric, (list, tuple)):
        items = []
        for c in rubric:
            if isinstance(c, Mapping):
                extra = sorted(set(c) - {"criterion", "weight"})
                if extra or "criterion" not in c:
                    raise InvalidRequestError(f"scorer 'rubric_judge': a criterion is a text or {{criterion, weight}}, "
                                              f"got {dict(c)!r:.80}")
                items.append((c["criterion"], c.get("weight", 1.0)))
            else:
                items.append((c, 1.0))
    else:
        raise InvalidRequestError("scorer 'rubric_judge' needs a rubric: a text, a list of criteria, "
                                  f"or a dict {{criterion: weight}}, got {rubric!r:.80}")
    if not items:
        raise InvalidRequestError("scorer 'rubric_judge': the rubric has no criteria")
    out = []
    for i, (text, w) in enumerate(items, 1):
        if not isinstance(text, str) or not text.strip():
            raise InvalidRequestError(f"scorer 'rubric_judge': criterion {i} must be a non-empty text, got {text!r}")
        out.append((f"c{i}", text.strip(), _weight(w, f"criterion {i}'s")))
    texts = [t for _, t, _ in out]
    if len(set(texts)) != len(texts):
        raise InvalidRequestError("scorer 'rubric_judge': the rubric lists a criterion twice")
    return out


def check_judge_options(kind: str, options: Mapping[str, Any]) -> None:
    """What can be checked without the Kit (model, role and max_tokens are checked when the run is planned)."""
    bad = sorted(set(options) - _OPTIONS[kind])
    if bad:
        raise InvalidRequestError(f"scorer {kind!r}: unknown option(s) {bad}; allowed: {', '.join(sorted(_OPTIONS[kind]))}")
    for opt in ("model", "role", "field") + (("rubric",) if kind == "llm_judge" else ()):
        if opt in options and not (isinstance(options[opt], str) and options[opt].strip()):
            raise InvalidRequestError(f"scorer {kind!r}: {opt} must be a non-empty string, got {options[opt]!r}")
    if kind == "rubric_judge":
        if "rubric" not in options:
            raise InvalidRequestError("scorer 'rubric_judge' needs a rubric, e.g. {'rubric_judge': {'rubric': "
                                      "['names the right city', {'criterion': 'one sentence', 'weight': 0.5}]}}")
        rubric_criteria(options["rubric"])


def _schema(keys: list[str]) -> dict[str, Any]:
    score = {"type": "number", "minimum": 0, "maximum": 1}
    return {"type": "object", "additionalProperties": False, "required": ["rationale", "scores"],
            "properties": {"rationale": {"type": "string"},  # first: the judge reasons before it scores
                           "scores": {"type": "object", "additionalProperties": False, "required": keys,
                                      "properties": {k: score for k in keys}}}}


def judge_request(options: Mapping[str, Any], prompt: str, row: Mapping[str, Any], output: str,
                  kind: str = "llm_judge") -> tuple[str, dict[str, Any]]:
    """The judge's prompt and ``kit.complete`` keyword arguments for one answer (model wins over role)."""
    ref = f"Reference answer:\n{row[options['field']]}\n\n" if options.get("field") else ""
    target = {"model": options["model"]} if options.get("model") else {"role": options.get("role", "critic")}
    kwargs = {**target, "max_tokens": options.get("max_tokens", _MAX_TOKENS[kind]), "temperature": 0.0}
    if kind == "llm_judge":
        text = JUDGE_PROMPT.format(rubric=options.get("rubric", "correct, complete and concise"), prompt=prompt,
                                   reference=ref, output=output)
        return text, kwargs
    crit = rubric_criteria(options["rubric"])
    lines = "\n".join(f"- {k} (weight {w:g}): {t}" for k, t, w in crit)
    keys = ", ".join(f'"{k}": <0 to 1>' for k, _, _ in crit)
    text = RUBRIC_PROMPT.format(criteria=lines, prompt=prompt, reference=ref, output=output, keys=keys)
    return text, {**kwargs, "output": _schema([k for k, _, _ in crit])}


def _json(text: str) -> Any:
    t = text.strip()
    fenced = re.match(r"^```(?:json)?\s*(.*?)\s*```$", t, re.DOTALL)
    return json.loads(fenced.group(1) if fenced else t)


def read_judge_reply(kind: str, options: Mapping[str, Any], text: str) -> tuple[float, str | None, str | None]:
    """-> (score, rationale, note): a NaN score comes with a note that says why."""
    if kind == "llm_judge":
        score = parse_judge_score(text)
        return score, None, None if not math.isnan(score) else f"judge reply has no score: {text[:80]!r}"
    try:
        reply = _json(text)
        scores = reply["scores"]
        rationale = reply.get("rationale")
        crit = rubric_criteria(options["rubric"])
        values = [float(scores[k]) for k, _, _ in crit]
    except (ValueError, TypeError, KeyError, AttributeError):
        return math.nan, None, f"judge reply is not the rubric's JSON: {text[:80]!r}"
    if any(math.isnan(v) for v in values):
        return math.nan, None, f"judge reply has a NaN score: {text[:80]!r}"
    total = sum(w for _, _, w in crit)
    score = sum(min(max(v, 0.0), 1.0) * w for v, (_, _, w) in zip(values, crit)) / total
    return score, None if rationale is None else str(rationale), None

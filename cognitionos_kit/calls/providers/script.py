"""Canned answers for the simulated provider: ``kit.simulated.script({...})``, or a YAML
experiment's ``simulated:`` block, so offline demos and tests show the signal a reader expects
(right and wrong answers that differ by model and prompt) while every call stays costed, timed
and marked as simulated."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from ...core.errors import InvalidRequestError
from ...core.types import ProviderRequest

__all__ = ["Script"]


class Script:
    """Canned answers for the simulated provider (offline, like pydantic-ai's ``FunctionModel``).

    ``answers`` is one of:

    * a dict ``{pattern: answer}``: the first pattern (a regex, case-insensitive) found in the
      last user message gives the answer; an answer may be a dict ``{model: answer, "*": answer}``
      to differ by model, and may use the pattern's groups (``\\1``);
    * a list of rules ``{"prompt": pattern, "answer": text, "model": name}`` (model optional),
      the first that matches answering (a YAML experiment's ``simulated:`` block);
    * a function ``(messages, model) -> str | None`` (messages as dicts; None: the default answer).

    A prompt nothing matches gets the provider's usual composed answer."""

    def __init__(self, answers: Any) -> None:
        self.fn: Any = None
        self.rules: list[tuple[re.Pattern[str], str, str | None]] = []
        if callable(answers):
            self.fn = answers
            import inspect

            try:
                source = inspect.getsource(answers)
            except (OSError, TypeError):
                source = getattr(answers, "__qualname__", repr(answers))
            self.digest = hashlib.sha256(source.encode()).hexdigest()[:16]
            return
        if isinstance(answers, dict):
            items: list[Any] = []
            for pattern, answer in answers.items():
                if isinstance(answer, dict):
                    items += [{"prompt": pattern, "answer": a, "model": None if m == "*" else m}
                              for m, a in sorted(answer.items(), key=lambda kv: kv[0] == "*")]
                else:
                    items.append({"prompt": pattern, "answer": answer})
        elif isinstance(answers, (list, tuple)):
            items = list(answers)
        else:
            raise InvalidRequestError("simulated answers must be a dict {pattern: answer}, a list of "
                                      "{prompt, answer, model} rules or a function (messages, model) -> str")
        for i, rule in enumerate(items):
            if not isinstance(rule, dict) or not isinstance(rule.get("prompt"), str) or not isinstance(rule.get("answer"), str):
                raise InvalidRequestError(f"simulated answer rule {i} needs a 'prompt' pattern and an 'answer' string, "
                                          f"got {rule!r:.80}")
            unknown = set(rule) - {"prompt", "answer", "model"}
            if unknown:
                raise InvalidRequestError(f"simulated answer rule {i}: unknown key(s) {sorted(unknown)}")
            try:
                pattern = re.compile(rule["prompt"], re.IGNORECASE | re.DOTALL)
            except re.error as exc:
                raise InvalidRequestError(f"simulated answer rule {i}: {rule['prompt']!r} is not a valid regex ({exc})") from None
            self.rules.append((pattern, rule["answer"], rule.get("model")))
        blob = json.dumps([[p.pattern, a, m] for p, a, m in self.rules])
        self.digest = hashlib.sha256(blob.encode()).hexdigest()[:16]

    def answer(self, req: ProviderRequest) -> str | None:
        if self.fn is not None:
            out = self.fn([m.as_dict() for m in req.messages], req.model)
            if out is not None and not isinstance(out, str):
                raise InvalidRequestError(f"the simulated answer function returned {type(out).__name__}, not a string")
            return out
        prompt = next((m.content for m in reversed(req.messages) if m.role == "user"), "")
        for pattern, answer, model in self.rules:
            if model is not None and model != req.model:
                continue
            match = pattern.search(prompt)
            if match:
                return match.expand(answer)
        return None

    def __repr__(self) -> str:
        what = f"function {getattr(self.fn, '__name__', '?')}" if self.fn is not None else f"{len(self.rules)} rule(s)"
        return f"Script({what}, {self.digest})"

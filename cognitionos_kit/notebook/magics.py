"""The ``%%llm`` cell magic: ``%load_ext cognitionos_kit``, then

    %%llm [model or role] [--user U] [--max-cost X] [--format markdown|code|text] [--as VAR]
          [--system TEXT] [--max-tokens N] [--temperature T] [--kit NAME]
    Summarise {topic} in two sentences.

``{name}`` is filled from the notebook namespace (``{{`` and ``}}`` for literal braces). The answer
streams into the cell output, then a footer with cost and latency; the Completion is stored in
``VAR`` (default ``_llm``). Bad input is a one-line ``UsageError`` that says what is accepted.
"""

from __future__ import annotations

import html
import keyword
import re
import shlex
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, magics_class

from ..calls.router import provider_for_model
from ..core.errors import KitError, StreamInterruptedError
from ..core.types import ROLES, Completion

if TYPE_CHECKING:
    from ..kit import Kit

FORMATS = ("markdown", "code", "text")
USAGE = (
    "%%llm [model or role] [--user U] [--max-cost X] [--format markdown|code|text] [--as VAR] "
    "[--system TEXT] [--max-tokens N] [--temperature T] [--kit NAME]"
)
_FLAGS = {  # flag -> LlmArgs field
    "--user": "user", "--max-cost": "max_cost", "--format": "format", "--as": "var",
    "--system": "system", "--max-tokens": "max_tokens", "--temperature": "temperature", "--kit": "kit",
}
_UPDATE_EVERY_S = 0.05


@dataclass
class LlmArgs:
    """The parsed ``%%llm`` line."""

    target: str | None = None  # a model name or a role
    user: str | None = None
    max_cost: float | None = None
    format: str = "markdown"
    var: str = "_llm"
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    kit: str | None = None


def _number(flag: str, raw: str, kind: type, positive: bool) -> Any:
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or value != value or (positive and value <= 0):
        what = "a positive " + ("integer" if kind is int else "number") if positive else "a number"
        raise UsageError(f"{flag} needs {what}, got {raw!r}")
    return value


def parse_line(line: str) -> LlmArgs:
    """Parse the magic's line; any problem is a one-line UsageError naming what is accepted."""
    try:
        tokens = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"cannot parse the %%llm line ({exc}); usage: {USAGE}") from None
    args = LlmArgs()
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.startswith("-"):
            flag, eq, value = tok.partition("=")
            if flag not in _FLAGS:
                raise UsageError(f"unknown option {flag!r}; %%llm accepts {', '.join(_FLAGS)} (usage: {USAGE})")
            if not eq:
                if i + 1 >= len(tokens):
                    raise UsageError(f"{flag} needs a value; usage: {USAGE}")
                i += 1
                value = tokens[i]
            _set(args, flag, value)
        elif args.target is None:
            args.target = tok
        else:
            raise UsageError(f"unexpected {tok!r}: %%llm takes one model or role, then options; usage: {USAGE}")
        i += 1
    return args


def _set(args: LlmArgs, flag: str, value: str) -> None:
    field = _FLAGS[flag]
    if field == "max_cost":
        args.max_cost = _number(flag, value, float, positive=True)
    elif field == "max_tokens":
        args.max_tokens = _number(flag, value, int, positive=True)
    elif field == "temperature":
        args.temperature = _number(flag, value, float, positive=False)
    elif field == "format":
        if value not in FORMATS:
            raise UsageError(f"--format {value!r} is not one of {', '.join(FORMATS)}")
        args.format = value
    elif field == "var":
        if not value.isidentifier() or keyword.iskeyword(value):
            raise UsageError(f"--as needs a Python variable name, got {value!r}")
        args.var = value
    else:
        setattr(args, field, value)


def resolve_target(target: str | None, kit: Kit) -> dict[str, str]:
    """A role -> ``{"role": ...}``; a model -> ``{"model": ...}``; anything else is a UsageError."""
    if target is None:
        return {}
    if target in ROLES:
        return {"role": target}
    tables = [(*kit.router.role_models.get(p, {}).values(), *kit.router.ladders.get(p, [])) for p in kit.chain]
    known = [m for models in tables for m in models]
    if target in known or provider_for_model(target):
        return {"model": target}
    raise UsageError(
        f"unknown model or role {target!r}: use a role ({', '.join(ROLES)}), a model the kit has "
        f"({', '.join(dict.fromkeys(known))}), a provider-prefixed name (gpt-*, o1*/o3*, claude-*, sim-*), "
        "or provider:name (e.g. openai:llama3)"
    )


class _Formatter(string.Formatter):
    def get_value(self, key: Any, args: Any, kwargs: Mapping[str, Any]) -> Any:
        if isinstance(key, int):
            raise UsageError("empty {} in the prompt: name a variable, e.g. {topic}, or write {{ }} for literal braces")
        if key not in kwargs:
            raise UsageError(
                f"{{{key}}} is not defined in the notebook: define {key}, or write {{{{{key}}}}} for literal braces"
            )
        return kwargs[key]


def interpolate(template: str, namespace: Mapping[str, Any]) -> str:
    """Fill ``{name}`` (and ``{name.attr}``, ``{name[0]}``, ``{name:.2f}``) from ``namespace``."""
    try:
        return _Formatter().vformat(template, (), namespace)
    except UsageError:
        raise
    except (ValueError, AttributeError, IndexError, KeyError, TypeError) as exc:
        raise UsageError(
            f"cannot fill the prompt's {{...}} fields ({exc}); write {{{{ and }}}} for literal braces"
        ) from None


def _render(text: str, fmt: str) -> dict[str, str]:
    """A MIME bundle for the answer so far: Markdown, a fenced code block, or plain text."""
    if fmt == "text":
        return {"text/plain": text}
    if fmt == "code":
        fence = re.search(r"```([\w+-]*)\n(.*?)(?:```|$)", text, re.S)
        lang, code = (fence.group(1), fence.group(2).rstrip("\n")) if fence else ("", text)
        return {"text/markdown": f"```{lang}\n{code}\n```", "text/plain": code}
    return {"text/markdown": text or "…", "text/plain": text}


class _Footer:
    """Cost and latency line under the answer (HTML in the notebook, text elsewhere)."""

    def __init__(self, c: Completion) -> None:
        self.c = c
        self.text = c.footer() + (f" · fallback: {c.fallback_path}" if len(c.attempts) > 1 else "")

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        color = "#b45309;font-weight:600" if self.c.substituted else "var(--jp-content-font-color2,#666)"
        return f"<div style='color:{color};font-size:85%'>{html.escape(self.text)}</div>"


def run_llm(shell: Any, line: str, cell: str) -> None:
    """Parse, interpolate, stream, show the footer, store the Completion in the named variable."""
    from IPython.display import display

    args = parse_line(line)
    ns = shell.user_ns
    prompt = interpolate(cell, ns).strip()
    if not prompt:
        raise UsageError(f"the cell is empty: write the prompt under the %%llm line ({USAGE})")
    text = ""
    handle = None
    try:
        kit = _get_kit(args.kit, ns)
        stream = kit.stream(prompt, system=args.system, user_id=args.user, max_cost=args.max_cost,
                            max_tokens=args.max_tokens, temperature=args.temperature,
                            **resolve_target(args.target, kit))
        handle = display(_render("", args.format), raw=True, display_id=True)
        last = 0.0
        for chunk in stream:
            text += chunk
            if time.monotonic() - last >= _UPDATE_EVERY_S:
                handle.update(_render(text, args.format), raw=True)
                last = time.monotonic()
    except KitError as exc:  # bad model, cost limit, all providers failed...: one line, no traceback
        if handle is not None:
            handle.update(_render(text, args.format), raw=True)
        if isinstance(exc, StreamInterruptedError) and exc.completion is not None:
            ns[args.var] = exc.completion
            raise UsageError(f"the stream broke (partial answer kept in {args.var}): {_one_line(exc)}") from None
        raise UsageError(f"{type(exc).__name__}: {_one_line(exc)}") from None
    handle.update(_render(text, args.format), raw=True)
    ns[args.var] = stream.completion
    if stream.completion is not None:
        display(_Footer(stream.completion))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _get_kit(name: str | None, ns: Mapping[str, Any]) -> Kit:
    from ..kit import Kit

    if name is None:
        from .. import default_kit

        return default_kit()
    obj = ns.get(name)
    if not isinstance(obj, Kit):
        found = "nothing" if name not in ns else f"a {type(obj).__name__}"
        raise UsageError(f"--kit {name}: expected a Kit named {name!r} in the notebook, found {found}")
    return obj


@magics_class
class LlmMagics(Magics):
    @cell_magic
    def llm(self, line: str, cell: str) -> None:
        """Send the cell as a prompt: ``%%llm [model or role] [--user U] [--max-cost X] ...``."""
        run_llm(self.shell, line, cell)


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%%llm``."""
    ipython.register_magics(LlmMagics)

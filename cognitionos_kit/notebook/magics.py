"""The ``%%llm`` cell magic: ``%load_ext cognitionos_kit``, then

    %%llm [model or role] [--user U] [--max-cost X] [--format markdown|code|text] [--as VAR]
          [--system TEXT] [--max-tokens N] [--temperature T] [--kit NAME]
    Summarise {topic} in two sentences.

``{name}`` is filled from the notebook namespace (``{{`` and ``}}`` for literal braces). The answer
streams into the cell output, then a footer with cost and latency; the Completion is stored in
``VAR`` (default ``_llm``). Bad input is a one-line ``UsageError`` that says what is accepted.
"""

from __future__ import annotations

import keyword
import re
import shlex
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from .. import default_kit
from ..calls.catalogue import provider_for_model
from ..core.display import footer_html
from ..core.errors import InvalidRequestError, KitError, StreamInterruptedError
from ..core.types import ROLES, Completion
from ..kit import Kit

__all__ = ["LlmArgs", "LlmMagics", "MagicError", "MagicUsageError", "parse_line", "resolve_target", "interpolate",
           "run_llm", "load_ipython_extension", "FORMATS", "USAGE"]

FORMATS = ("markdown", "code", "text")
USAGE = (
    "%%llm [model or role] [--user U] [--max-cost X] [--format markdown|code|text] [--as VAR] "
    "[--system TEXT] [--max-tokens N] [--temperature T] [--kit NAME]"
)
FLAGS = ("--user", "--max-cost", "--format", "--as", "--system", "--max-tokens", "--temperature", "--kit")
_UPDATE_EVERY_S = 0.05


class MagicError(KitError, UsageError):
    """A ``%%llm`` cell that could not be answered: one line in the notebook, never a traceback.

    A KitError like every error of the kit, and an IPython ``UsageError`` for code that catches
    those; ``__cause__`` holds the kit's own error (e.g. an ``AllProvidersFailedError``)."""

    def _render_traceback_(self) -> list[str]:  # IPython shows this instead of a traceback
        return [f"UsageError: {self}"]


class MagicUsageError(MagicError, InvalidRequestError):
    """The ``%%llm`` line or cell is malformed (an option, a value, a {name}); nothing was sent."""


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


def _number(flag: str, raw: str, kind: type[int] | type[float], positive: bool) -> Any:
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or value != value or (positive and value <= 0):
        what = "a positive " + ("integer" if kind is int else "number") if positive else "a number"
        raise MagicUsageError(f"{flag} needs {what}, got {raw!r}")
    return value


def parse_line(line: str) -> LlmArgs:
    """Parse the magic's line with its ``magic_arguments`` parser (the options ``%%llm?`` lists);
    any problem is a one-line MagicUsageError naming what is accepted."""
    try:
        argv = shlex.split(line)  # POSIX quoting: --system 'Be brief.' and --system='Be brief.' alike
    except ValueError as exc:
        raise MagicUsageError(f"cannot parse the %%llm line ({exc}); usage: {USAGE}") from None
    try:
        ns, extra = _PARSER.parse_known_args(argv)
    except (UsageError, SystemExit) as exc:  # MagicArgumentParser.error raises UsageError (argparse would exit)
        flag = re.match(r"argument (\S+?)(?:/\S+)?: expected one argument", str(exc))
        if flag:
            raise MagicUsageError(f"{flag.group(1)} needs a value; usage: {USAGE}") from None
        raise MagicUsageError(f"{exc}; usage: {USAGE}") from None
    if extra:
        tok = extra[0]
        if tok.startswith("-"):
            raise MagicUsageError(f"unknown option {tok.partition('=')[0]!r}; %%llm accepts {', '.join(FLAGS)} (usage: {USAGE})")
        raise MagicUsageError(f"unexpected {tok!r}: %%llm takes one model or role, then options; usage: {USAGE}")
    args = LlmArgs(target=ns.target, user=ns.user, system=ns.system, kit=ns.kit)
    if ns.max_cost is not None:
        args.max_cost = _number("--max-cost", ns.max_cost, float, positive=True)
    if ns.max_tokens is not None:
        args.max_tokens = _number("--max-tokens", ns.max_tokens, int, positive=True)
    if ns.temperature is not None:
        args.temperature = _number("--temperature", ns.temperature, float, positive=False)
    if ns.format not in FORMATS:
        raise MagicUsageError(f"--format {ns.format!r} is not one of {', '.join(FORMATS)}")
    args.format = ns.format
    if not ns.var.isidentifier() or keyword.iskeyword(ns.var):
        raise MagicUsageError(f"--as needs a Python variable name, got {ns.var!r}")
    args.var = ns.var
    return args


def resolve_target(target: str | None, kit: Kit) -> dict[str, str]:
    """A role -> ``{"role": ...}``; a model -> ``{"model": ...}``; anything else is a MagicUsageError."""
    if target is None:
        return {}
    if target in ROLES:
        return {"role": target}
    chain = kit.chain
    known = [m for p in chain for m in kit.router.models(p)]  # roles' models, ladders, endpoints' listings
    if target in known or provider_for_model(target) or kit.router.split(target)[0]:
        return {"model": target}
    listed = kit.router.listed_by(target, chain)  # a plain name one of the chain's endpoints lists
    if len(listed) == 1:
        return {"model": target}
    if listed:
        raise MagicUsageError(f"{target!r} is listed by {' and '.join(listed)}: write {listed[0]}:{target}")
    endpoints = [p for p in chain if p in kit.router.endpoints]
    raise MagicUsageError(
        f"unknown model or role {target!r}: use a role ({', '.join(ROLES)}), a model the kit has "
        f"({', '.join(dict.fromkeys(known))}), a provider-prefixed name (gpt-*, o1*/o3*, claude-*, sim-*), "
        + (f"a model name prefixed by {' or '.join(endpoints)}: (kit.models() lists theirs), " if endpoints else "")
        + "or provider:name (e.g. openai:llama3)"
    )


class _Formatter(string.Formatter):
    def get_value(self, key: int | str, args: Any, kwargs: Mapping[str, Any]) -> Any:
        if isinstance(key, int):
            raise MagicUsageError("empty {} in the prompt: name a variable, e.g. {topic}, or write {{ }} for literal braces")
        if key not in kwargs:
            raise MagicUsageError(
                f"{{{key}}} is not defined in the notebook: define {key}, or write {{{{{key}}}}} for literal braces"
            )
        return kwargs[key]


def interpolate(template: str, namespace: Mapping[str, Any]) -> str:
    """Fill ``{name}`` (and ``{name.attr}``, ``{name[0]}``, ``{name:.2f}``) from ``namespace``."""
    try:
        return _Formatter().vformat(template, (), namespace)
    except MagicUsageError:
        raise
    except (ValueError, AttributeError, IndexError, KeyError, TypeError) as exc:
        raise MagicUsageError(
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
    """The cost line under the answer: ``Completion.footer()`` (HTML in the notebook, text elsewhere)."""

    def __init__(self, c: Completion) -> None:
        self.c = c
        self.text = c.footer() + (f" · fallback: {c.fallback_path}" if len(c.attempts) > 1 else "")

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        return footer_html(self.c)


def run_llm(shell: Any, line: str, cell: str) -> None:
    """Parse, interpolate, stream, show the footer, store the Completion in the named variable.

    Every failure is a MagicError (a KitError that IPython shows as one line)."""
    from IPython.display import display

    args = parse_line(line)
    ns = shell.user_ns
    prompt = interpolate(cell, ns).strip()
    if not prompt:
        raise MagicUsageError(f"the cell is empty: write the prompt under the %%llm line ({USAGE})")
    text = ""
    handle = None
    try:
        kit = _get_kit(args.kit, ns)
        target = resolve_target(args.target, kit)
        stream = kit.stream(prompt, role=target.get("role"), model=target.get("model"), system=args.system,
                            user_id=args.user, max_cost=args.max_cost, max_tokens=args.max_tokens,
                            temperature=args.temperature)
        handle = display(_render("", args.format), raw=True, display_id=True)
        last = 0.0
        for chunk in stream:
            text += chunk
            if time.monotonic() - last >= _UPDATE_EVERY_S:
                handle.update(_render(text, args.format), raw=True)
                last = time.monotonic()
    except MagicError:
        raise
    except KitError as exc:  # bad model, cost limit, all providers failed...: one line, no traceback
        if handle is not None:
            handle.update(_render(text, args.format), raw=True)
        if isinstance(exc, StreamInterruptedError) and exc.completion is not None:
            ns[args.var] = exc.completion
            raise MagicError(f"the stream broke (partial answer kept in {args.var}): {_one_line(exc)}") from exc
        error = MagicUsageError if isinstance(exc, InvalidRequestError) else MagicError
        raise error(f"{type(exc).__name__}: {_one_line(exc)}") from exc
    handle.update(_render(text, args.format), raw=True)
    ns[args.var] = stream.completion
    if stream.completion is not None:
        display(_Footer(stream.completion))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _get_kit(name: str | None, ns: Mapping[str, Any]) -> Kit:
    if name is None:
        return default_kit()
    obj = ns.get(name)
    if not isinstance(obj, Kit):
        found = "nothing" if name not in ns else f"a {type(obj).__name__}"
        raise MagicUsageError(f"--kit {name}: expected a Kit named {name!r} in the notebook, found {found}")
    return obj


@magics_class
class LlmMagics(Magics):
    """The ``%%llm`` cell magic (``%load_ext cognitionos_kit`` registers it)."""

    @cell_magic
    @magic_arguments("%llm")  # argparse's usage line then reads "%%llm ..."
    @argument("target", nargs="?", metavar="model_or_role",
              help="a role (planner, executor, critic, summarizer), a model (sim-large, gpt-4o-mini, "
                   "claude-haiku-5-5...) or provider:model; default: the kit's executor")
    @argument("--user", metavar="U", help="user_id recorded in the ledger")
    @argument("--max-cost", metavar="X", help="US dollars: the most capable model whose worst case fits")
    @argument("--format", default="markdown", metavar="FORMAT",
              help="markdown (default), code (only the answer's code block) or text")
    @argument("--as", dest="var", default="_llm", metavar="VAR",
              help="notebook variable that receives the Completion (default: _llm)")
    @argument("--system", metavar="TEXT", help="system prompt (quote it: --system 'Be brief.')")
    @argument("--max-tokens", metavar="N", help="longest answer, in tokens")
    @argument("--temperature", metavar="T", help="sampling temperature")
    @argument("--kit", metavar="NAME", help="a Kit variable in the notebook (default: cognitionos_kit.default_kit())")
    def llm(self, line: str, cell: str) -> None:
        """Send the cell as a prompt; the answer streams in, then a line with cost and latency.

        {name} in the cell is filled from the notebook ({{ and }} for literal braces). Bad input is
        one line (a MagicUsageError, which is a KitError and an IPython UsageError), never a traceback.
        """
        run_llm(self.shell, line, cell)


_PARSER = cast(Any, LlmMagics.llm).parser  # built by @magic_arguments from the options above
_PARSER.allow_abbrev = False  # --max is not --max-cost: a typo is named, not guessed


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%%llm``."""
    ipython.register_magics(LlmMagics)

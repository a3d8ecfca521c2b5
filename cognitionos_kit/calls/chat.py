"""``kit.chat()``: a conversation. Each ``send`` is one call carrying the whole history (costed,
timed, ledgered like any call); the history grows only by turns that were answered."""

from __future__ import annotations

import html
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from ..core.errors import InvalidRequestError
from ..core.validation import check_text

if TYPE_CHECKING:
    from ..core.types import Completion
    from ..kit import Kit  # an annotation only: the Kit hands itself in

__all__ = ["Chat", "transcript_html"]


class Chat:
    """A conversation with one Kit: ``chat.send("...")`` returns the answer's ``Completion``;
    ``chat.history`` holds the turns, ``chat.turns`` each answer, ``chat.cost_usd`` the total.

    The options given to ``kit.chat(...)`` (system prompt, role or model, user_id, ...) apply to
    every turn; ``send(text, **options)`` can add or override some for one turn."""

    def __init__(self, kit: Kit, *, system: str | None = None, continue_from: str | None = None, **options: Any) -> None:
        if system is not None:
            check_text(system, "system")
        self.kit = kit
        self.history: list[dict[str, Any]] = []
        if continue_from is not None:
            logged_system, self.history = _from_log(kit, continue_from)
            system = system if system is not None else logged_system
        self.system = system
        self.options = dict(options)
        kit.plan("check", system=system, **self.options)  # a bad option fails here, not at the first turn
        self.turns: list[Completion] = []
        self.questions: list[str] = []  # what was asked at each turn

    def _messages(self, text: str) -> list[dict[str, Any]]:
        if not isinstance(text, str) or not text.strip():
            raise InvalidRequestError(f"a chat turn needs some text, got {text!r:.60}")
        return [*self.history, {"role": "user", "content": text}]

    def _options(self, overrides: dict[str, Any]) -> dict[str, Any]:
        if "system" in overrides:
            raise InvalidRequestError("a chat's system prompt is set by kit.chat(system=...), not per turn")
        return {"system": self.system, **self.options, **overrides}

    def _add(self, text: str, c: Completion) -> Completion:
        if c.messages:  # a turn with tools: the tool calls and results stay in the history
            self.history = [m for m in c.messages if m["role"] != "system"]
        else:
            self.history += [{"role": "user", "content": text}, {"role": "assistant", "content": c.content}]
        self.turns.append(c)
        self.questions.append(text)
        return c

    def send(self, text: str, **options: Any) -> Completion:
        """Ask the next question; the answer joins the history."""
        return self._add(text, self.kit.complete(self._messages(text), **self._options(options)))

    async def asend(self, text: str, **options: Any) -> Completion:
        """Async ``send``."""
        return self._add(text, await self.kit.acomplete(self._messages(text), **self._options(options)))

    def stream(self, text: str, **options: Any) -> Iterator[str]:
        """Yield the answer's text as it arrives; the turn joins the history when the stream ends."""
        s = self.kit.stream(self._messages(text), **self._options(options))
        yield from s
        if s.completion is not None:
            self._add(text, s.completion)

    async def astream(self, text: str, **options: Any) -> AsyncIterator[str]:
        """Async ``stream``."""
        s = self.kit.astream(self._messages(text), **self._options(options))
        async for chunk in s:
            yield chunk
        if s.completion is not None:
            self._add(text, s.completion)

    @property
    def cost_usd(self) -> float | None:
        """What the turns cost together (None when a turn's price is unknown)."""
        costs = [c.total_cost_usd for c in self.turns]  # a turn's tool-loop steps included
        return None if any(c is None for c in costs) else sum(c for c in costs if c is not None)

    def reset(self) -> None:
        """Forget the history (the ledger keeps every turn)."""
        self.history.clear()
        self.turns.clear()
        self.questions.clear()

    def __len__(self) -> int:
        return len(self.turns)

    def __repr__(self) -> str:
        cost = "n/a" if self.cost_usd is None else f"${self.cost_usd:.6f}"
        lines = [f"Chat({len(self.turns)} turn(s), {cost})"]
        for i, c in enumerate(self.turns):
            q = self.questions[i]
            lines.append(f"  > {q[:70]}\n    {c.content[:70]}  [{c.footer()}]")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return transcript_html(self)


def transcript_html(chat: Chat | None, *, answer_style: str = "margin:2px 0 2px 12px") -> str:
    """The turns as HTML: each question, its answer and its cost line, then the total."""
    from ..core.display import FONT, footer_html

    if chat is None or not chat.turns:
        return f"<div style='{FONT};color:var(--jp-content-font-color3,#999)'>No turns yet: type below and Send.</div>"
    rows = []
    for i, c in enumerate(chat.turns):
        question = html.escape(chat.questions[i])
        rows.append(f"<div style='{FONT};margin:6px 0 2px'><b>You</b> · {question}</div>"
                    f"<div class='cok-answer' style='{answer_style}'>{html.escape(c.content)}</div>{footer_html(c)}")
    cost = "n/a" if chat.cost_usd is None else f"${chat.cost_usd:.6f}"
    rows.append(f"<div style='{FONT};margin-top:6px'>{len(chat.turns)} turn(s) · {cost} in all</div>")
    return "".join(rows)


def _from_log(kit: Kit, request_id: str) -> tuple[str | None, list[dict[str, Any]]]:
    """The system prompt and the history (messages, then the answer) of a logged request."""
    import json

    if not isinstance(request_id, str) or not request_id.strip():
        raise InvalidRequestError(f"continue_from must be a logged request id (kit.log().request_id), got {request_id!r}")
    import pandas as pd

    found = kit.text_log.entries(request_id=request_id)  # any project's or session's: the id names it
    if found.empty or pd.isna(found.messages.iloc[0]):
        raise InvalidRequestError(f"request {request_id!r} is not in the text log of {kit.home} "
                                  "(was it logged? log_text=False keeps text out)")
    entry = found.iloc[0]
    history = [m for m in json.loads(entry.messages) if not m.get("images")]  # images are not kept in the log
    if entry.status != "ok" or pd.isna(entry.answer):
        raise InvalidRequestError(f"request {request_id!r} has no answer to continue from (status {entry.status})")
    calls = [] if pd.isna(entry.tool_calls) else json.loads(entry.tool_calls)
    answer: dict[str, Any] = {"role": "assistant", "content": entry.answer}
    if calls:
        answer["tool_calls"] = [{"id": c["id"], "type": "function", "function": {"name": c["name"],
                                                                                "arguments": c["arguments"]}} for c in calls]
    return (entry.system if isinstance(entry.system, str) else None), history + [answer]

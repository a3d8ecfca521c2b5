"""A prompt playground widget: type a prompt, pick provider/model/role, Run, watch it stream.

``kit.playground()`` (``compare=True`` runs one prompt on several models side by side;
``chat=True`` holds a conversation: the turns above, the input below, each turn's cost line).
Every control is an attribute (``.prompt``, ``.model``, ``.run_button``...) and ``.run()`` is what
the button calls, so the widget can be driven from code and tests without a browser.
"""

from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from ..calls.chat import transcript_html
from ..calls.router import DEFAULT_ROLE
from ..core.display import FONT, error_html, footer_html, plain_text
from ..core.errors import InvalidRequestError, StreamInterruptedError
from ..core.types import ROLES, Completion
from .style import INDENT, LABEL, cell_layout, controls_grid, view_layout

if TYPE_CHECKING:
    from ..calls.chat import Chat
    from ..experiments import Experiment
    from ..kit import Kit

__all__ = ["AUTO", "Playground", "ModelChecklist", "model_choices", "playground"]

AUTO = "auto (fallback chain)"
_UPDATE_EVERY_S = 0.03  # stream repaint interval: fast enough to look live, light on the comm
_ANSWER_BOX = (
    f"{FONT};font-size:14px;line-height:1.5;white-space:pre-wrap;word-break:break-word;"
    "border:1px solid var(--jp-border-color1,#ccc);border-radius:6px;padding:10px 12px;"
    "min-height:3em;background:var(--jp-layout-color0,#fff);color:var(--jp-content-font-color1,#222)"
)


def _answer_html(text: str, placeholder: str = "The answer appears here.") -> str:
    if not text:
        grey = "color:var(--jp-content-font-color3,#999)"
        return f"<div class='cok-answer-empty' style='{_ANSWER_BOX};{grey}'>{placeholder}</div>"
    return f"<div class='cok-answer' style='{_ANSWER_BOX}'>{html.escape(text)}</div>"


def model_choices(kit: Kit, provider: str | None = None) -> list[tuple[str, str]]:
    """(provider, model) pairs the kit can use now: role defaults then the ladder, per provider
    (a named endpoint's: its mapped and listed models)."""
    pairs: list[tuple[str, str]] = []
    for p in kit.chain if provider is None else [provider]:
        pairs += [(p, m) for m in kit.router.models(p)]
    return pairs


class ModelChecklist(w.GridBox):
    """Compare mode's model picker: a checkbox per model (a ticked box reads as chosen, where a
    multi-select list greys its selection when it loses focus and needs ctrl-click).
    ``options`` are (label, value) pairs; ``value`` is the tuple of ticked values."""

    def __init__(self, *, description: str = "Models") -> None:
        self._boxes: list[tuple[Any, w.Checkbox]] = []
        self.hint = w.HTML(f"<div style='{FONT};font-size:12px;color:var(--jp-content-font-color2,#666)'>"
                           "tick the models to compare (up to 3 a row)</div>")
        super().__init__([], layout=w.Layout(grid_template_columns="repeat(2, minmax(0, 1fr))", grid_gap="0 12px"))
        self.description = description
        self.add_class("cok-model-checklist")

    @property
    def options(self) -> list[tuple[str, Any]]:
        return [(b.description, v) for v, b in self._boxes]

    @options.setter
    def options(self, pairs: list[tuple[str, Any]]) -> None:
        self._boxes = [(v, w.Checkbox(value=False, description=label, indent=False,
                                      layout=w.Layout(width="auto", min_width="0"))) for label, v in pairs]
        self.children = [b for _, b in self._boxes]

    @property
    def value(self) -> tuple[Any, ...]:
        return tuple(v for v, b in self._boxes if b.value)

    @value.setter
    def value(self, chosen: tuple[Any, ...]) -> None:
        wanted = set(chosen)
        for v, b in self._boxes:
            b.value = v in wanted

    def observe_value(self, fn: Any) -> None:
        for _, b in self._boxes:
            b.observe(fn, names="value")


class _Card(w.VBox):
    """One model's result in compare mode: title, streamed answer, footer, error."""

    def __init__(self, provider: str, model: str) -> None:
        self.target = (provider, model)
        name = html.escape(f"{provider} / {model}")
        self.title = w.HTML(f"<div style='{FONT};font-weight:600'>{name}</div>")
        self.output = w.HTML(_answer_html("", "Waiting…"))
        self.output.layout.flex = "1 1 auto"  # the answer grows: every card's footer sits on the same line
        self.footer = w.HTML()
        self.error = w.HTML()
        super().__init__([self.title, self.output, self.footer, self.error], layout=w.Layout(min_width="0"))

    @property
    def footer_text(self) -> str:
        """The line under this card's answer as plain text: tokens · cost · latency."""
        return plain_text(self.footer.value)


class Playground(w.VBox):
    """Prompt and system text, provider/model/role pickers, temperature, max_tokens, user_id, Run."""

    def __init__(self, kit: Kit, *, compare: bool = False, chat: bool = False, prompt: str = "") -> None:
        if compare and chat:
            raise InvalidRequestError("a playground compares models or holds a chat, not both: pick compare or chat")
        self.kit = kit
        self.compare = compare
        self.chat_mode = chat
        self.chat: Chat | None = None  # the conversation, started by the first Send
        self.transcript = w.HTML()
        self.completion: Completion | None = None
        self.completions: list[Completion | None] = []
        self.prompt = w.Textarea(value=prompt, placeholder="Type a prompt…", description="Prompt",
                                 style=LABEL, layout=w.Layout(width="100%", height="90px"))
        self.system = w.Textarea(placeholder="Optional system prompt", description="System",
                                 style=LABEL, layout=w.Layout(width="100%", height="48px"))
        self.provider = w.Dropdown(options=[(AUTO, "")] + [(p, p) for p in kit.chain], value="",
                                   description="Provider", style=LABEL, layout=cell_layout())
        self.model: Any = ModelChecklist() if compare else w.Dropdown(description="Model", style=LABEL,
                                                                      layout=cell_layout())
        self.role = w.Dropdown(options=[(f"default ({DEFAULT_ROLE})", "")] + [(r, r) for r in ROLES], value="",
                               description="Role", style=LABEL, layout=cell_layout(),
                               disabled=compare, tooltip="compare mode names its models: the role does not apply"
                               if compare else "picks a model per provider; a chosen model overrides it")
        self.temperature = w.FloatSlider(value=0.7, min=0.0, max=2.0, step=0.1, description="Temperature",
                                         style=LABEL, readout_format=".1f", layout=cell_layout())
        self.max_tokens = w.BoundedIntText(value=kit.default_max_tokens, min=1, max=200_000,
                                           description="Max tokens", style=LABEL, layout=cell_layout())
        self.user_id = w.Text(placeholder="optional", description="User id", style=LABEL, layout=cell_layout())
        self.run_button = w.Button(description="Compare" if compare else "Send" if chat else "Run",
                                   button_style="primary", tooltip="Send the prompt", layout=w.Layout(width="120px"))
        self.new_chat_button = w.Button(description="New chat", tooltip="Forget the conversation (the ledger keeps it)",
                                        layout=w.Layout(width="120px", display="" if chat else "none"))
        self.status = w.HTML()
        self.error = w.HTML()
        self.output = w.HTML(_answer_html(""))
        self.footer = w.HTML()
        self.cards: list[_Card] = []
        self.results = w.GridBox(layout=w.Layout(grid_gap="12px"))

        self.experiment_button = w.Button(description="As experiment", tooltip="The prompt and models as Experiment code",
                                          layout=w.Layout(width="140px", display="" if compare else "none"))
        self.experiment_code = w.Textarea(layout=w.Layout(width="100%", height="150px", display="none"))
        self.experiment_button.on_click(lambda _: self.show_experiment())
        self.provider.observe(lambda _: self._fill_models(), names="value")
        if not compare:
            self.model.observe(lambda _: self._sync_role(), names="value")
        self._fill_models()
        self.run_button.on_click(lambda _: self.run())
        self.new_chat_button.on_click(lambda _: self.new_chat())

        if compare:  # the checklist takes a row of its own, under its label
            label = w.HTML(f"<div style='{FONT};font-size:13px;width:90px;text-align:right;padding-right:8px'>Models</div>")
            picks = w.HBox([label, w.VBox([self.model, self.model.hint])], layout=w.Layout(width="100%"))
            controls = w.VBox([controls_grid([self.provider, self.role, self.temperature, self.max_tokens, self.user_id]),
                               picks])
        else:
            controls = controls_grid([self.provider, self.model, self.role, self.temperature, self.max_tokens,
                                      self.user_id])
        actions = w.HBox([self.run_button, self.new_chat_button, self.experiment_button, self.status],
                         layout=w.Layout(align_items="center", grid_gap="12px", margin=f"4px 0 0 {INDENT}"))
        for box in (self.error, self.output, self.footer, self.results, self.transcript):
            box.layout.margin = f"0 0 0 {INDENT}"
        if chat:  # the turns above, the input below
            self.prompt.description, self.prompt.layout.height = "You", "60px"
            self.transcript.value = _transcript_html(None)
            self.output.value = ""
            children = [self.system, controls, self.transcript, self.output, self.prompt, actions, self.error]
        else:
            body = [self.results, self.experiment_code] if compare else [self.output, self.footer]
            children = [self.prompt, self.system, controls, actions, self.error, *body]
        super().__init__(children, layout=view_layout())
        self.add_class("cok-playground")

    @property
    def footer_text(self) -> str:
        """The line under the answer as plain text (provider · model · tokens · cost · latency)."""
        return plain_text(self.footer.value)

    def __repr__(self) -> str:  # the text fallback where widgets cannot render (GitHub, a terminal)
        mode = "compare mode, " if self.compare else "chat mode, " if self.chat_mode else ""
        return f"Playground({mode}chain={self.kit.chain}): run the cell in Jupyter to use it"

    # --- pickers ------------------------------------------------------------------------
    def _fill_models(self) -> None:
        pairs = model_choices(self.kit, self.provider.value or None)
        if self.compare:
            self.model.options = [(f"{p} / {m}", (p, m)) for p, m in pairs]
            self.model.value = tuple(v for _, v in self.model.options[:3])
        else:
            auto = not self.provider.value
            labels = [(f"{m}  ({p})" if auto else m, m) for p, m in pairs]
            self.model.options = [("from role", "")] + _dedupe(labels)
            self.model.value = ""

    def _sync_role(self) -> None:
        """A chosen model overrides the role: the role picker is greyed out while one is chosen."""
        self.role.disabled = bool(self.model.value)

    # --- running ------------------------------------------------------------------------
    def _kwargs(self) -> dict[str, Any]:
        return dict(
            system=self.system.value or None, role=None if self.role.disabled else self.role.value or None,
            temperature=float(self.temperature.value), max_tokens=int(self.max_tokens.value),
            user_id=self.user_id.value.strip() or None,
        )

    def run(self) -> Completion | list[Completion | None] | None:
        """Send the prompt (each selected model in compare mode); errors show in ``.error``."""
        self.error.value = ""
        self.run_button.disabled = True
        self.status.value = "<span style='color:#888'>running…</span>"
        try:
            if self.compare:
                return self._run_compare()
            if self.chat_mode:
                return self._send_turn()
            self.footer.value = ""
            self.output.value = _answer_html("", "Waiting for the first tokens…")
            provider = self.provider.value
            self.completion = _stream_into(
                self.kit, self.prompt.value, self.output, self.footer, self.error,
                model=self.model.value or None, providers=[provider] if provider else None, **self._kwargs(),
            )
            return self.completion
        finally:
            self.run_button.disabled = False
            self.status.value = ""

    def _run_compare(self) -> list[Completion | None]:
        targets = list(self.model.value)
        if not targets:
            self.error.value = error_html(InvalidRequestError("pick at least one model to compare"))
            return []
        if not self.prompt.value.strip():
            self.error.value = error_html(InvalidRequestError("prompt is empty: type something to send"))
            return []
        self.cards = [_Card(p, m) for p, m in targets]
        n = min(len(self.cards), 3)
        self.results.layout.grid_template_columns = f"repeat({n}, minmax(0, 1fr))"
        self.results.children = self.cards
        kwargs = self._kwargs()

        def one(c: _Card) -> Completion | None:
            return _stream_into(self.kit, self.prompt.value, c.output, c.footer, c.error, shown=c.target,
                                model=c.target[1], providers=[c.target[0]], **kwargs)

        # the models answer at the same time, each card streaming as its answer arrives
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=len(self.cards), thread_name_prefix="cok-compare") as pool:
            self.completions = list(pool.map(one, self.cards))
        return self.completions

    def to_experiment(self, name: str = "playground") -> Experiment:
        """The prompt and the ticked models as an ``Experiment`` (one row, this temperature and max_tokens)."""
        from ..experiments import Experiment

        if not self.prompt.value.strip():
            raise InvalidRequestError("prompt is empty: type something first")
        models = [m for _, m in self.model.value] if self.compare else [self.model.value or self.role.value or DEFAULT_ROLE]
        template = self.prompt.value.replace("{", "{{").replace("}", "}}")
        settings: dict[str, list[Any]] = {"temperature": [float(self.temperature.value)],
                                          "max_tokens": [int(self.max_tokens.value)]}
        if self.system.value:
            settings["system"] = [self.system.value]
        return Experiment(name, [{"row": 1}], {"prompt": template}, models, settings=settings)

    def show_experiment(self) -> str:
        """Show (and return) the code of ``to_experiment()``, to paste into a cell and grow."""
        try:
            exp = self.to_experiment()
        except InvalidRequestError as exc:
            self.error.value = error_html(exc)
            return ""
        code = (
            "from cognitionos_kit import Experiment\n\n"
            f"exp = Experiment(\n    {exp.name!r},\n    dataset=[{{\"row\": 1}}],  # add rows and {{fields}} to the prompt\n"
            f"    prompts={exp.templates!r},\n    models={exp.model_list!r},\n"
            f"    settings={ {k: [v] for k, v in exp.grid[0].items()} !r},\n    repeats=3,\n    scorers=[],\n)\n"
            "run = kit.run(exp)\nrun.summary"
        )
        self.experiment_code.value = code
        self.experiment_code.layout.display = ""
        return code


    # --- chat mode ----------------------------------------------------------------------
    def _send_turn(self) -> Completion | None:
        text = self.prompt.value
        if not text.strip():
            self.error.value = error_html(InvalidRequestError("type something to send"))
            return None
        if self.chat is None:
            self.chat = self.kit.chat(system=self.system.value or None)
            self.system.disabled = True  # a chat keeps its system prompt: New chat to change it
        provider = self.provider.value
        options = {k: v for k, v in self._kwargs().items() if k != "system"}
        self.output.value = _answer_html("", "Waiting for the first tokens…")
        before = len(self.chat.turns)
        answer = ""
        try:
            last = 0.0
            for chunk in self.chat.stream(text, model=self.model.value or None,
                                          providers=[provider] if provider else None, **options):
                answer += chunk
                if time.monotonic() - last >= _UPDATE_EVERY_S:
                    self.output.value = _answer_html(answer)
                    last = time.monotonic()
        except Exception as exc:  # KitErrors and anything else: a widget must never dump a traceback wall
            self.error.value = error_html(exc)
        self.output.value = "" if len(self.chat.turns) > before else _answer_html(answer, "No answer.")
        self.transcript.value = _transcript_html(self.chat)
        if len(self.chat.turns) > before:
            self.prompt.value = ""
            self.completion = self.chat.turns[-1]
            return self.completion
        return None

    def new_chat(self) -> None:
        """Forget the conversation (every turn stays in the ledger)."""
        self.chat = None
        self.system.disabled = False
        self.error.value = ""
        self.transcript.value = _transcript_html(None)
        self.output.value = ""  # the answer box shows only while a turn streams

    @property
    def transcript_text(self) -> str:
        """The conversation as plain text: each turn and its cost line."""
        return plain_text(self.transcript.value)


def _transcript_html(chat: Chat | None) -> str:
    return transcript_html(chat, answer_style=_ANSWER_BOX)


def _dedupe(labels: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The first label of each value, in order."""
    seen: set[str] = set()
    out = []
    for lab, v in labels:
        if v not in seen:
            seen.add(v)
            out.append((lab, v))
    return out


def _stream_into(
    kit: Kit, prompt: str, output: w.HTML, footer: w.HTML, error: w.HTML, shown: tuple[str, str] | None = None,
    **kwargs: Any,
) -> Completion | None:
    """Stream one answer into ``output``; footer on success, a one-line error otherwise."""
    text = ""
    try:
        stream = kit.stream(prompt, **kwargs)
        last = 0.0
        for chunk in stream:
            text += chunk
            if time.monotonic() - last >= _UPDATE_EVERY_S:
                output.value = _answer_html(text)
                last = time.monotonic()
        output.value = _answer_html(text)
        c = stream.completion
        footer.value = footer_html(c, shown=shown) if c else ""
        return c
    except StreamInterruptedError as exc:
        output.value = _answer_html(text)
        error.value = error_html(exc)
        return exc.completion
    except Exception as exc:  # KitErrors and anything else: a widget must never dump a traceback wall
        output.value = _answer_html(text, "No answer.")
        error.value = error_html(exc)
    return None


def playground(kit: Kit, *, compare: bool = False, chat: bool = False, prompt: str = "") -> Playground:
    """Build a playground bound to ``kit``; display it as a cell's last expression."""
    return Playground(kit, compare=compare, chat=chat, prompt=prompt)

"""Tools: ``tools=[python functions or JSON-schema tools]``.

A function becomes a tool with its name, the first paragraph of its docstring as the description
and a JSON schema made by pydantic from its type hints (each parameter's description from the
docstring's Args/Parameters section, read by ``docstring_parser``, which the anthropic SDK also
uses). Its arguments are validated by the same pydantic model before the function runs, so a
model's wrong argument comes back to it as a clear tool error. A JSON-schema tool (a dict in
OpenAI's ``{"type": "function", "function": {...}}`` or Anthropic's ``{"name", "description",
"input_schema"}`` shape) is described to the model but has no function: ``r.tool_calls`` holds
what the model asked, for the caller to run.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..core.errors import InvalidRequestError
from ..core.types import ToolCall, ToolDef, ToolResult

__all__ = ["Tool", "tool", "make_tools", "TOOL_CHOICES"]

TOOL_CHOICES = ("auto", "required", "none")
_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


@dataclass(frozen=True)
class Tool:
    """A tool: what the model sees (``spec``) and, for a Python function, the function and the
    pydantic model that checks its arguments."""

    spec: ToolDef
    fn: Callable[..., Any] | None = None
    args_model: Any = None

    @property
    def name(self) -> str:
        return self.spec.name

    def _prepare(self, call: ToolCall) -> tuple[dict[str, Any] | None, str | None]:
        """(keyword arguments, None) or (None, the error to send back to the model)."""
        import pydantic

        if self.fn is None:
            return None, f"tool {self.name} has no Python function to run"
        try:
            args = json.loads(call.arguments_json or "{}")
        except ValueError as exc:
            return None, f"the arguments are not valid JSON ({exc}); send a JSON object"
        if not isinstance(args, dict):
            return None, "the arguments must be a JSON object"
        try:
            checked = self.args_model.model_validate(args)
        except pydantic.ValidationError as exc:
            return None, f"invalid arguments for {self.name}: {_short(exc)}"
        return {k: getattr(checked, k) for k in type(checked).model_fields}, None

    def run(self, call: ToolCall) -> ToolResult:
        """Run the function (an async one in a private event loop); an exception becomes an error result."""
        t0 = time.perf_counter()
        kwargs, error = self._prepare(call)
        if kwargs is None:
            return ToolResult(call, f"Error: {error}", error, 0.0)
        try:
            value = self.fn(**kwargs)  # type: ignore[misc]
            if inspect.isawaitable(value):
                value = _run_awaitable(value)
        except Exception as exc:  # a tool's own failure goes back to the model, not up the stack
            return _failed(call, exc, t0)
        return ToolResult(call, render(value), None, (time.perf_counter() - t0) * 1000)

    async def arun(self, call: ToolCall) -> ToolResult:
        """``run`` for the event loop: an async function is awaited, a plain one runs in a worker thread."""
        t0 = time.perf_counter()
        kwargs, error = self._prepare(call)
        if kwargs is None:
            return ToolResult(call, f"Error: {error}", error, 0.0)
        try:
            if inspect.iscoroutinefunction(self.fn):
                value = await self.fn(**kwargs)
            else:
                value = await asyncio.to_thread(self.fn, **kwargs)  # type: ignore[arg-type]
                if inspect.isawaitable(value):
                    value = await value
        except Exception as exc:
            return _failed(call, exc, t0)
        return ToolResult(call, render(value), None, (time.perf_counter() - t0) * 1000)


def _failed(call: ToolCall, exc: Exception, t0: float) -> ToolResult:
    error = f"{type(exc).__name__}: {exc}"[:1000]
    return ToolResult(call, f"Error: {error}", error, (time.perf_counter() - t0) * 1000)


def _short(exc: Any) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors())[:600]


def render(value: Any) -> str:
    """A tool's return value as the text sent back: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    try:
        import pydantic

        if isinstance(value, pydantic.BaseModel):
            return value.model_dump_json()
    except ImportError:  # pragma: no cover - pydantic is a dependency
        pass
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def _run_awaitable(value: Any) -> Any:
    """Await from sync code: in a fresh event loop, on a worker thread when a loop is running here
    (a notebook cell)."""
    async def wait() -> Any:
        return await value

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait())
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, wait()).result()


def tool(fn: Callable[..., Any] | None = None, *, name: str | None = None, description: str | None = None,
         strict: bool | None = None) -> Any:
    """Make a Tool from a function (also usable as ``@tool`` or ``@tool(name=...)``)."""
    def make(f: Callable[..., Any]) -> Tool:
        return _from_function(f, name=name, description=description, strict=strict)

    return make(fn) if fn is not None else make


def make_tools(tools: Any) -> tuple[Tool, ...]:
    """Check ``tools=`` (functions, Tools or JSON-schema dicts) before anything is sent."""
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        tools = [tools]
    if not tools:
        raise InvalidRequestError("tools is empty: pass a list of functions or JSON-schema tools, or leave it out")
    out: list[Tool] = []
    for i, t in enumerate(tools):
        if isinstance(t, Tool):
            out.append(t)
        elif isinstance(t, Mapping):
            out.append(_from_schema(t, i))
        elif callable(t):
            out.append(_from_function(t))
        else:
            raise InvalidRequestError(f"tools[{i}] must be a function or a JSON-schema tool dict, got {type(t).__name__}")
    names = [t.name for t in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidRequestError(f"two tools are named {', '.join(dupes)}: give each a different name")
    return tuple(out)


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name or len(name) > 64 or not set(name) <= _NAME_OK:
        raise InvalidRequestError(f"{what}: a tool name must be 1-64 letters, digits, _ or - (got {name!r})")
    return name


def _from_schema(t: Mapping[str, Any], i: int) -> Tool:
    d: Mapping[str, Any] = t["function"] if t.get("type") == "function" and isinstance(t.get("function"), Mapping) else t
    name = _check_name(d.get("name"), f"tools[{i}]")
    params = d.get("parameters", d.get("input_schema", {"type": "object", "properties": {}}))
    if not isinstance(params, Mapping) or params.get("type", "object") != "object":
        raise InvalidRequestError(f"tools[{i}] ({name}): parameters must be a JSON schema of type object")
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(dict(params))
    except jsonschema.SchemaError as exc:
        raise InvalidRequestError(f"tools[{i}] ({name}): parameters is not a valid JSON schema: {exc.message}") from None
    desc = d.get("description") or ""
    if not isinstance(desc, str):
        raise InvalidRequestError(f"tools[{i}] ({name}): description must be a string")
    strict = d.get("strict")
    return Tool(ToolDef(name, desc, json.dumps(dict(params), sort_keys=True), strict if isinstance(strict, bool) else None))


def _from_function(fn: Callable[..., Any], *, name: str | None = None, description: str | None = None,
                   strict: bool | None = None) -> Tool:
    import docstring_parser
    import pydantic

    label = name or getattr(fn, "__name__", None)
    label = _check_name(label, f"the function {fn!r:.60}")
    doc = docstring_parser.parse(inspect.getdoc(fn) or "")
    param_docs = {p.arg_name: p.description for p in doc.params if p.description}
    desc = description if description is not None else "\n\n".join(
        x for x in (doc.short_description, doc.long_description) if x)
    try:
        sig = inspect.signature(fn)
        hints = _hints(fn)
    except (TypeError, ValueError, NameError) as exc:
        raise InvalidRequestError(f"cannot read the signature of tool {label}: {exc}") from None
    fields: dict[str, Any] = {}
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise InvalidRequestError(f"tool {label}: *args and **kwargs cannot be described to a model; name each parameter")
        if p.name in ("self", "cls"):
            continue
        annotation = hints.get(p.name, Any)
        default = ... if p.default is p.empty else p.default
        fields[p.name] = (annotation, pydantic.Field(default, description=param_docs.get(p.name)))
    try:
        model = pydantic.create_model(f"{label}_arguments", __config__=pydantic.ConfigDict(extra="forbid"), **fields)
        schema = model.model_json_schema()
    except Exception as exc:  # pydantic raises several types for types it cannot describe
        raise InvalidRequestError(f"tool {label}: cannot make a JSON schema from its type hints ({exc})") from None
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    schema.setdefault("required", [])
    schema["additionalProperties"] = False
    return Tool(ToolDef(label, desc, json.dumps(schema, sort_keys=True), strict), fn, model)


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(fn)
    except Exception:  # an unresolvable forward reference: fall back to the raw annotations
        return {k: v for k, v in getattr(fn, "__annotations__", {}).items() if not isinstance(v, str)}

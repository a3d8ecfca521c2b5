"""Image tokens, counted before the call with each provider's documented formula, so that
``max_cost``, budgets and the worst-case check see them.

* OpenAI (the "Images and vision" guide, "Calculating costs"):
  - tile models (gpt-4o, gpt-4.1, gpt-5, o1, o3, ...): ``detail="low"`` costs the base tokens;
    otherwise the image is scaled to fit 2048x2048, then its short side to 768 px, and each
    512 px tile costs the tile tokens, plus the base (gpt-4o: 85 + 170 per tile).
  - patch models (gpt-4.1-mini/nano, gpt-5-mini/nano, o4-mini): 32 px patches, at most 1536
    (the image scaled down to fit), times the model's multiplier.
* Anthropic (the "Vision" guide): an image whose long edge passes 1568 px, or that would pass
  about 1,600 tokens, is scaled down; then tokens = width x height / 750.
* A URL's size is unknown before the call: it is counted at the formula's largest result.
* The simulated provider counts as gpt-4o does.
"""

from __future__ import annotations

import math

from ..core.media import Image

__all__ = ["image_tokens"]

# model prefix -> (base tokens, tokens per 512 px tile); longest prefix first
_TILES: tuple[tuple[str, tuple[int, int]], ...] = (
    ("gpt-4o-mini", (2833, 5667)),
    ("gpt-5-chat", (70, 140)), ("gpt-5", (70, 140)),
    ("o1", (75, 150)), ("o3", (75, 150)),
    ("computer-use", (65, 129)),
)
_DEFAULT_TILES = (85, 170)  # gpt-4o, gpt-4.1, gpt-4.5 and anything unknown
_PATCHES = (("gpt-4.1-mini", 1.62), ("gpt-4.1-nano", 2.46), ("gpt-5-mini", 1.62), ("gpt-5-nano", 2.46),
            ("o4-mini", 1.72))
_MAX_PATCHES = 1536
_ANTHROPIC_EDGE, _ANTHROPIC_MAX_TOKENS = 1568, 1600


def image_tokens(image: Image, model: str) -> int:
    """Prompt tokens ``image`` costs with ``model`` (the worst case for a URL)."""
    m = model.lower().removeprefix("openai/")
    if m.startswith(("claude", "anthropic")):
        return _anthropic(image)
    for prefix, mult in _PATCHES:
        if m.startswith(prefix):
            return _patches(image, mult)
    base, tile = next((t for p, t in _TILES if m.startswith(p)), _DEFAULT_TILES)
    return _tiles(image, base, tile)


def _tiles(image: Image, base: int, tile: int) -> int:
    if image.detail == "low":
        return base
    if image.width is None or image.height is None:
        return base + tile * 8  # 768 x 2048 after scaling: 2 x 4 tiles, the most any image takes
    w, h = float(image.width), float(image.height)
    if max(w, h) > 2048:
        s = 2048 / max(w, h)
        w, h = w * s, h * s
    if min(w, h) > 768:
        s = 768 / min(w, h)
        w, h = w * s, h * s
    return base + tile * math.ceil(w / 512) * math.ceil(h / 512)


def _patches(image: Image, mult: float) -> int:
    if image.width is None or image.height is None:
        return math.ceil(_MAX_PATCHES * mult)
    w, h = image.width, image.height
    n = math.ceil(w / 32) * math.ceil(h / 32)
    if n > _MAX_PATCHES:
        s = math.sqrt(32 * 32 * _MAX_PATCHES / (w * h))
        # as the guide says: shrink until the patch grid fits the cap
        s *= min(math.floor(w * s / 32) / (w * s / 32), math.floor(h * s / 32) / (h * s / 32))
        n = min(_MAX_PATCHES, math.ceil(w * s / 32) * math.ceil(h * s / 32))
    return math.ceil(n * mult)


def _anthropic(image: Image) -> int:
    if image.width is None or image.height is None:
        return _ANTHROPIC_MAX_TOKENS
    w, h = float(image.width), float(image.height)
    s = min(1.0, _ANTHROPIC_EDGE / max(w, h), math.sqrt(_ANTHROPIC_MAX_TOKENS * 750 / (w * h)))
    return min(_ANTHROPIC_MAX_TOKENS, math.ceil(w * s * h * s / 750))

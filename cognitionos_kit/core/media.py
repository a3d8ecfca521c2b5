"""Images in prompts: ``Image.of(source)`` takes a file path, bytes, a PIL image or a URL, checks
it before anything is sent and knows its size (for counting its tokens before the call).

Pillow reads the format and size (it is what reads images in Python; a hand-written header
parser would cover fewer formats and less well); it is imported only when an image is used.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import InvalidRequestError

__all__ = ["Image", "MEDIA_TYPES", "MAX_IMAGE_BYTES"]

# the formats both OpenAI and Anthropic take
MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp"}
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # OpenAI's per-image limit (Anthropic's is lower: it answers 400)
Detail = Literal["auto", "low", "high"]


@dataclass(frozen=True)
class Image:
    """An image for a user turn: inline bytes (``media_type``, ``width``, ``height`` known) or a
    URL (size unknown before the call: counted at the provider's worst case). ``detail`` is
    OpenAI's (low: a fixed small cost; high or auto: by size)."""

    media_type: str | None
    data: bytes | None = field(default=None, repr=False)
    url: str | None = None
    width: int | None = None
    height: int | None = None
    detail: Detail = "auto"

    @classmethod
    def of(cls, source: Any, *, detail: str = "auto") -> Image:
        """An image from a path (str or Path), bytes, a PIL image, an ``http(s)://`` URL or a data URL."""
        if detail not in ("auto", "low", "high"):
            raise InvalidRequestError(f"image detail must be 'auto', 'low' or 'high', got {detail!r}")
        if isinstance(source, Image):
            return source if source.detail == detail else cls(source.media_type, source.data, source.url,
                                                              source.width, source.height, detail)  # type: ignore[arg-type]
        if isinstance(source, str) and source.startswith(("http://", "https://")):
            return cls(None, url=source, detail=detail)  # type: ignore[arg-type]
        if isinstance(source, str) and source.startswith("data:"):
            head, _, payload = source.partition(",")
            if ";base64" not in head:
                raise InvalidRequestError("a data URL image must be base64 (data:image/png;base64,...)")
            try:
                return cls._from_bytes(base64.b64decode(payload, validate=True), detail, "the data URL")
            except ValueError:
                raise InvalidRequestError("the data URL's image is not valid base64") from None
        if isinstance(source, (str, os.PathLike)):
            path = Path(source).expanduser()
            if not path.is_file():
                raise InvalidRequestError(f"image file not found: {str(path)!r} (pass a path, bytes, a PIL image or a URL)")
            return cls._from_bytes(path.read_bytes(), detail, repr(str(path)))
        if isinstance(source, (bytes, bytearray, memoryview)):
            return cls._from_bytes(bytes(source), detail, "the bytes")
        if hasattr(source, "save") and hasattr(source, "size") and hasattr(source, "mode"):  # a PIL image
            buf = io.BytesIO()
            fmt = getattr(source, "format", None) if getattr(source, "format", None) in MEDIA_TYPES else "PNG"
            img = source if fmt != "JPEG" or source.mode in ("RGB", "L") else source.convert("RGB")
            img.save(buf, format=fmt)
            return cls._from_bytes(buf.getvalue(), detail, "the PIL image")
        raise InvalidRequestError(
            f"an image must be a file path, bytes, a PIL image or an http(s) URL, got {type(source).__name__}")

    @classmethod
    def _from_bytes(cls, data: bytes, detail: str, what: str) -> Image:
        if not data:
            raise InvalidRequestError(f"{what} holds no image (0 bytes)")
        if len(data) > MAX_IMAGE_BYTES:
            raise InvalidRequestError(f"{what} is {len(data) / 1e6:.1f} MB; images may be at most "
                                      f"{MAX_IMAGE_BYTES / 1e6:.0f} MB (Anthropic takes 5 MB): resize it")
        try:
            from PIL import Image as PILImage
        except ImportError:
            raise InvalidRequestError("images need Pillow: pip install pillow") from None
        try:
            with PILImage.open(io.BytesIO(data)) as im:
                fmt, (w, h) = im.format, im.size
        except Exception as exc:  # Pillow raises several types for unreadable data
            raise InvalidRequestError(f"{what} is not an image Pillow can read ({type(exc).__name__})") from None
        if fmt not in MEDIA_TYPES:
            raise InvalidRequestError(f"{what} is a {fmt} image; send JPEG, PNG, GIF or WebP (convert it with Pillow)")
        return cls(MEDIA_TYPES[fmt], data, None, w, h, detail)  # type: ignore[arg-type]

    @property
    def base64(self) -> str:
        return base64.b64encode(self.data or b"").decode("ascii")

    @property
    def data_url(self) -> str:
        """``data:<type>;base64,...`` (or the URL)."""
        return self.url if self.url is not None else f"data:{self.media_type};base64,{self.base64}"

    @property
    def digest(self) -> str:
        """What identifies the image in cache keys: its URL, or a hash of its bytes."""
        return self.url if self.url is not None else hashlib.sha256(self.data or b"").hexdigest()

    def __repr__(self) -> str:
        if self.url is not None:
            return f"Image({self.url[:80]!r})"
        size = len(self.data or b"")
        return f"Image({self.media_type}, {self.width}x{self.height}, {size / 1024:.1f} kB)"

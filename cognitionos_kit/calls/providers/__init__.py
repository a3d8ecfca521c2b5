"""Providers: one module each behind the small interface in ``base``."""

from .base import Provider, classify_error

__all__ = ["Provider", "classify_error"]

"""Client mode: the Kit API served by a team server (``Kit(server=..., token=...)``); see ``served.py``."""

from .memory import ServedMemory
from .served import ServedKit
from .streams import AsyncServedStream, ServedStream

__all__ = ["ServedKit", "ServedMemory", "ServedStream", "AsyncServedStream"]

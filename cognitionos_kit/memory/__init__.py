"""Semantic memory: store, retrieve, update and delete texts with real embeddings, per user.

``kit.memory`` is a :class:`Memory` on the Kit's data folder. See ``memory.py`` for its parts,
``replica.py`` for how processes share a collection, ``ranking.py`` for the score and
``filters.py`` for the filter language.
"""

from .evaluation import Evaluation
from .filters import OPERATORS
from .hit import HitList, MemoryHit
from .index import MEMORY_TYPES, SCOPES
from .memory import Memory, MemoryNotFoundError, OwnerRequiredError
from .ranking import Weights
from .remember import MemoryEvent, Remembered

__all__ = ["Memory", "MemoryHit", "HitList", "Evaluation", "Remembered", "MemoryEvent",
           "MemoryNotFoundError", "OwnerRequiredError", "Weights", "MEMORY_TYPES",
           "SCOPES", "OPERATORS"]

"""The vectors of a table loaded from a snapshot once rows are added: the snapshot's memory-mapped
rows, then the rows added since, in memory. Growing the map itself would read it whole into a new
array twice its size (one store after loading 10M memories: 15 GB read, 30 GB allocated)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Vectors"]


class Vectors:
    """Rows ``[0, len(mapped))`` from ``mapped`` (the snapshot's copy-on-write map, changed rows
    written into it), rows after that from ``extra``; indexed like the (n, dim) float32 array
    the table otherwise holds: by row, by slice, by an array of rows."""

    def __init__(self, mapped: np.ndarray, extra_rows: int) -> None:
        import numpy as np

        self.mapped = mapped
        self.base_n = len(mapped)
        self.extra = np.zeros((extra_rows, mapped.shape[1]), dtype=np.float32)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.base_n + len(self.extra), int(self.mapped.shape[1]))

    def __len__(self) -> int:
        return self.shape[0]

    def grow(self, rows: int) -> None:
        """Room for ``rows`` more rows."""
        import numpy as np

        self.extra = np.concatenate([self.extra, np.zeros((rows, self.shape[1]), dtype=np.float32)])

    def product(self, q: np.ndarray, n: int) -> np.ndarray:
        """``self[:n] @ q``, each part multiplied where it lies (no copy of the mapped rows)."""
        import numpy as np

        b = min(n, self.base_n)
        head = self.mapped[:b] @ q
        return head if n <= self.base_n else np.concatenate([head, self.extra[: n - b] @ q])

    def _rows(self, key: Any) -> np.ndarray:
        import numpy as np

        if isinstance(key, slice):
            return np.arange(*key.indices(len(self)), dtype=np.int64)
        rows = np.asarray(key)
        return np.flatnonzero(rows) if rows.dtype == np.bool_ else rows.astype(np.int64, copy=False)

    def __getitem__(self, key: Any) -> np.ndarray:
        import numpy as np

        b = self.base_n
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if int(key) < 0 else 0)
            return self.mapped[i] if i < b else self.extra[i - b]
        if isinstance(key, slice) and key.step in (None, 1):
            start, stop, _ = key.indices(len(self))
            if stop <= b:
                return self.mapped[start:stop]
            if start >= b:
                return self.extra[start - b : stop - b]
        rows = self._rows(key)
        out = np.empty((len(rows), self.shape[1]), dtype=np.float32)
        low = rows < b
        out[low] = self.mapped[rows[low]]
        out[~low] = self.extra[rows[~low] - b]
        return out

    def __setitem__(self, key: Any, value: Any) -> None:
        import numpy as np

        b = self.base_n
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if int(key) < 0 else 0)
            if i < b:
                self.mapped[i] = value
            else:
                self.extra[i - b] = value
            return
        rows = self._rows(key)
        values = np.broadcast_to(np.asarray(value, dtype=np.float32), (len(rows), self.shape[1]))
        low = rows < b
        self.mapped[rows[low]] = values[low]
        self.extra[rows[~low] - b] = values[~low]

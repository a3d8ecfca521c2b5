"""``Run``: one experiment run's results, summary and manifest, and its folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Run"]


@dataclass
class Run:
    """One experiment run: its table, summary, manifest and folder ``<home>/runs/<run_id>/``."""

    run_id: str
    results: pd.DataFrame
    summary: pd.DataFrame
    manifest: dict[str, Any]
    path: Any = None
    comparison: Any = field(default=None, repr=False)
    ledger: Any = field(default=None, repr=False, compare=False)  # where ``attempts`` are read from
    _attempts: Any = field(default=None, init=False, repr=False, compare=False)
    # the run's attempts as it kept them (attempts.RunAttempts, complete): no ledger query, no frame until asked
    _known: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def cost_usd(self) -> float | None:
        """New money spent by this run (cache hits cost nothing); None (unknown, never $0) when a call it
        sent has no known price: ``unpriced_calls`` says how many (``kit.set_price`` prices a model)."""
        return None if self.unpriced_calls else float(self.manifest["totals"]["spent_usd"])

    @property
    def unpriced_calls(self) -> int:
        """Calls this run sent and got an answer for whose price is unknown."""
        return int(self.manifest["totals"].get("unpriced_calls", 0))

    @property
    def cache_hits(self) -> int:
        return int(self.manifest["totals"]["cache_hits"])

    @property
    def stopped_reason(self) -> str | None:
        return self.manifest.get("stopped_reason")

    @property
    def attempts(self) -> pd.DataFrame:
        """Every ledger row of this run (one per attempt: each provider tried, each retry with another
        key, each cache hit; judge calls too), read once in one query by run id; ``request_id`` links
        a sample (``results.request_id``) to its own. Empty without a ledger."""
        if self._attempts is None and self._known is not None:
            self._attempts = self._known.frame()
        if self._attempts is None:
            from .attempts import run_attempts

            self._attempts = run_attempts(self.ledger, self.run_id)
        return self._attempts

    def viewer(self, other: Run | None = None) -> Any:
        """Browse every sample in a widget: filter by model, status, score or text, read one in full;
        ``other`` (another run) shows the same sample there beside it."""
        from ..notebook.sample_viewer import SampleViewer

        return SampleViewer(self, other)

    @property
    def report_path(self) -> Any:
        return None if self.path is None else self.path / "report.html"

    def __repr__(self) -> str:
        t = self.manifest["totals"]
        stop = f", stopped: {self.stopped_reason}" if self.stopped_reason else ""
        spent = f"spent ${t['spent_usd']:.6f}" if not self.unpriced_calls else \
            f"spent unknown (unpriced: {self.unpriced_calls} calls; ${t['spent_usd']:.6f} priced)"
        return f"Run({self.run_id!r}, {t['completed']}/{t['cells']} cells, {t['cache_hits']} cached, {spent}{stop})"

    def _repr_html_(self) -> str:
        import html

        return f"<div><code>{html.escape(repr(self))}</code></div>" + self.summary.to_html(index=False)

"""The notebook's names for the shared display helpers in ``cognitionos_kit.core.display``."""

from ..core.display import AttemptList, UsageSummary, html_table, text_table

__all__ = ["AttemptList", "UsageSummary", "html_table", "text_table"]

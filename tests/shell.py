"""A real IPython shell for tests of ``%%llm`` (no history file, its own IPYTHONDIR), with the
kit's extension loaded and ``kit`` in its namespace; cleared afterwards so later tests see no
global shell."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def ipython_shell(kit: Any, tmp_path: Any, monkeypatch: Any) -> Iterator[Any]:
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    cfg = Config()
    cfg.HistoryManager.enabled = False
    sh = InteractiveShell.instance(config=cfg)
    try:
        sh.run_line_magic("load_ext", "cognitionos_kit")
        sh.user_ns["kit"] = kit
        yield sh
    finally:
        InteractiveShell.clear_instance()

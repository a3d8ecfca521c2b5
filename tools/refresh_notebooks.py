"""Re-execute the numbered notebooks in place (offline), so nbval compares against fresh outputs.

Run with `make notebooks` after a change that alters what a notebook prints.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from clean_notebook import clean
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent / "notebooks"


def main(names: list[str]) -> None:
    paths = [ROOT / n for n in names] if names else sorted(ROOT.glob("[0-9][0-9]_*.ipynb"))
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        # store_widget_state=False: saved widget state would embed plotly's 5 MB widget bundle
        NotebookClient(
            nb, timeout=300, kernel_name="python3", store_widget_state=False,
            resources={"metadata": {"path": str(ROOT)}},
        ).execute()
        nbformat.write(clean(nb), path)  # stored without the outputs that change on every run
        print(f"executed {path.name}")


if __name__ == "__main__":
    main(sys.argv[1:])

"""A notebook as it is stored: only the outputs nbval checks, no run-to-run noise.

Drops the outputs of cells marked ``# NBVAL_IGNORE_OUTPUT`` (latencies, ids, charts and widgets
change on every run) and per-run metadata, and numbers the cells as a fresh top-to-bottom run
does. Used three ways:

* ``tools/refresh_notebooks.py`` stores freshly executed notebooks through it;
* as a git "clean" filter (``make setup`` configures it; ``.gitattributes`` names it), so running a
  notebook in JupyterLab and saving it does not dirty the repository;
* ``python tools/clean_notebook.py --check notebooks/*.ipynb`` says which stored ones are not clean.
"""

from __future__ import annotations

import sys

import nbformat

IGNORE = "# NBVAL_IGNORE_OUTPUT"
RUN_METADATA = ("execution", "collapsed", "scrolled")


def clean(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    count = 0
    for cell in nb.cells:
        for key in RUN_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type != "code":
            continue
        # numbered as a fresh top-to-bottom run numbers them (nbval skips a cell without a number)
        count += 1
        cell.execution_count = count
        if cell.source.lstrip().startswith(IGNORE):
            cell.outputs = []
        for out in cell.outputs:
            if "execution_count" in out:
                out.execution_count = count
            out.get("metadata", {}).pop("execution", None)
    nb.metadata.pop("widgets", None)  # widget state: the view models of one run
    nb.metadata.get("language_info", {}).pop("version", None)  # the Python that happened to run it
    return nb


def main(argv: list[str]) -> int:
    if argv[:1] == ["--check"]:
        dirty = []
        for path in argv[1:]:
            text = open(path, encoding="utf-8").read()
            if nbformat.writes(clean(nbformat.reads(text, as_version=4))) + "\n" != text:
                dirty.append(path)
        for path in dirty:
            print(f"{path}: not clean (run `make notebooks`)")
        return 1 if dirty else 0
    nb = nbformat.reads(sys.stdin.read(), as_version=4)
    sys.stdout.write(nbformat.writes(clean(nb)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

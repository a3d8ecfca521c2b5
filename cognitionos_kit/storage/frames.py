"""One missing-value style in every frame the kit returns: pandas' nullable dtypes, where a
missing value reads ``<NA>`` whatever the column holds (not ``None`` in one column, ``NaN`` in
the next and ``<NA>`` in a third, as DuckDB's frames come)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["tidy"]


def tidy(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with nullable dtypes: text ``string``, whole numbers ``Int*``, other numbers
    ``Float64``, flags ``boolean``; times keep their dtype (missing is ``NaT``, pandas' only one).
    A column that is missing everywhere is text: DuckDB gives no dtype for it."""
    import pandas as pd

    out = {}
    for col in df.columns:
        s = df[col]
        kind = s.dtype.kind
        if kind == "f":
            s = s.astype("Float64")
        elif kind in "iu" and not isinstance(s.dtype, pd.api.extensions.ExtensionDtype):
            s = s.astype(s.dtype.name.capitalize())
        elif kind == "b" and not isinstance(s.dtype, pd.api.extensions.ExtensionDtype):
            s = s.astype("boolean")
        elif isinstance(s.dtype, pd.StringDtype) or (
                kind in "OU" and pd.api.types.infer_dtype(s, skipna=True) in ("string", "empty")):
            s = s.astype("string")  # text, or nothing at all (not lists, dicts or times)
        out[col] = s
    return pd.DataFrame(out, index=df.index)

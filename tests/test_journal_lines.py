"""Journal lines (storage/journal.py): orjson writes them, json's slow path takes what it refuses;
either way a row reads back the same, and what DuckDB would refuse never reaches the file."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import duckdb
import numpy as np
import pytest

from cognitionos_kit.core.errors import InvalidRequestError
from cognitionos_kit.storage.journal import encode_rows


def _back(row: dict) -> dict:
    data = encode_rows("t", [row])
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    return json.loads(data)


def test_plain_row_round_trips_compact_utf8() -> None:
    row = {"row_id": "r1", "text": "naïve café ✓", "n": 3, "x": 0.25, "ok": True, "none": None, "tags": ("a", "b")}
    data = encode_rows("t", [row])
    assert "naïve café ✓".encode() in data  # UTF-8, not \\u escapes
    assert b", " not in data and b": " not in data  # compact
    assert json.loads(data) == {**row, "tags": ["a", "b"]}


def test_row_id_is_added_when_missing() -> None:
    back = _back({"a": 1})
    assert len(back["row_id"]) == 32 and int(back["row_id"], 16) >= 0


def test_nan_and_infinity_become_null() -> None:
    back = _back({"row_id": "r", "a": math.nan, "b": [1.0, math.inf], "c": {"d": -math.inf}, "e": np.float64("nan")})
    assert back == {"row_id": "r", "a": None, "b": [1.0, None], "c": {"d": None}, "e": None}


def test_datetimes_are_utc_iso_like_before() -> None:
    naive = datetime(2026, 12, 3, 14, 0, 0)
    aware = datetime(2026, 12, 3, 15, 0, 0, tzinfo=timezone(timedelta(hours=1)))
    back = _back({"row_id": "r", "naive": naive, "aware": aware, "day": naive.date()})
    assert back["naive"] == "2026-12-03T14:00:00+00:00"
    assert back["aware"] == "2026-12-03T14:00:00+00:00"
    assert back["day"] == "2026-12-03"


def test_what_orjson_refuses_takes_the_slow_path() -> None:
    big = 2 ** 70  # past 64 bits
    back = _back({"row_id": "r", "big": big, "dec": Decimal("1.5"), "np": np.int64(7), "keys": {1: "one"}})
    assert back == {"row_id": "r", "big": big, "dec": 1.5, "np": 7, "keys": {"1": "one"}}


def test_a_lone_surrogate_is_replaced_and_duckdb_reads_the_line(tmp_path) -> None:
    data = encode_rows("t", [{"row_id": "r", "msg": "bad \ud800 char"}])
    path = tmp_path / "x.jsonl"
    path.write_bytes(data)
    got = duckdb.connect().execute(f"SELECT msg FROM read_json_auto('{path}')").fetchall()[0][0]
    assert got == "bad \ufffd char"


def test_unserialisable_value_is_a_clear_error() -> None:
    with pytest.raises(InvalidRequestError, match="row for t cannot be stored: .*object"):
        encode_rows("t", [{"row_id": "r", "obj": object()}])

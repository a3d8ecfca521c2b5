"""A table loaded from a snapshot keeps the snapshot's vectors mapped when rows are added
(``memory/vectors.py``): read and written like the array it stands for, searched the same."""

from __future__ import annotations

import numpy as np
import pytest

from cognitionos_kit.memory.vectors import Vectors


@pytest.fixture
def pair(tmp_path):
    """A Vectors over a real file map (copy-on-write, as snapshots are read) and the plain array
    it stands for, both with 40 mapped rows and 25 added ones."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((40, 6)).astype(np.float32)
    base.tofile(tmp_path / "v.f32")
    mapped = np.memmap(tmp_path / "v.f32", dtype="<f4", mode="c", shape=(40, 6))
    v = Vectors(mapped, 10)
    v.grow(15)
    added = rng.standard_normal((25, 6)).astype(np.float32)
    v[40:65] = added
    return v, np.concatenate([base, added]), tmp_path / "v.f32"


def test_reads_match_the_array(pair):
    v, a, _ = pair
    assert v.shape == a.shape and len(v) == 65
    for key in (0, 39, 40, 64, -1, -26, np.int64(41)):
        assert np.array_equal(v[key], a[key])
    for key in (slice(0, 40), slice(3, 17), slice(40, 65), slice(41, 50), slice(30, 60), slice(None), slice(0, 65, 3)):
        assert np.array_equal(v[key], a[key]), key
    rows = np.array([64, 0, 39, 40, 7, 52, 39])
    assert np.array_equal(v[rows], a[rows]) and np.array_equal(v[rows.tolist()], a[rows])
    mask = np.zeros(65, dtype=bool)
    mask[[1, 44, 63]] = True
    assert np.array_equal(v[mask], a[mask])
    q = np.arange(6, dtype=np.float32)
    for n in (0, 10, 40, 41, 65):
        assert np.allclose(v.product(q, n), a[:n] @ q)


def test_writes_land_where_the_row_lives_and_the_file_is_untouched(pair):
    v, a, path = pair
    before = path.read_bytes()
    for key, value in ((3, 1.5), (50, -2.0), (slice(38, 43), 0.25), (np.array([0, 60]), 7.0), (-1, 3.0)):
        v[key] = value
        a[key] = value
    assert np.array_equal(v[:], a)
    assert path.read_bytes() == before  # the snapshot file itself never changes (copy-on-write map)
    v.grow(5)
    assert len(v) == 70 and np.array_equal(v[:65], a) and not v[65:].any()


@pytest.mark.parametrize("preadv", [True, False], ids=["preadv", "lseek-read"])
def test_read_rows_reads_the_rows_asked_for_without_mapping(tmp_path, monkeypatch, preadv):
    from cognitionos_kit.memory import approximate

    if not preadv:
        monkeypatch.delattr(approximate.os, "preadv", raising=False)
    a = np.random.default_rng(1).standard_normal((300, 7)).astype(np.float32)
    path = tmp_path / "v.f32"
    path.write_bytes(b"h" * 28 + a.tobytes())  # rows after a 28-byte header, as at a map's offset
    rows = np.array([299, 0, 17, 17, 150])
    assert np.array_equal(approximate.read_rows(str(path), 28, rows, 7), a[rows])
    assert approximate.read_rows(str(path), 28, np.zeros(0, dtype=np.int64), 7).shape == (0, 7)

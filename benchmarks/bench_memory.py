"""Memory search, side by side: kit.memory vs plain numpy vs DuckDB SQL; and, at 1M, kit.memory
with each approximate index (the scan of 4-bit codes, the default, and IVF with 8-bit codes) vs
exact numpy search, and vs an HNSW index (usearch, if installed: ``pip install usearch``; not a
dependency of the kit).

    python benchmarks/bench_memory.py                       # 100k exact + 1M approximate
    python benchmarks/bench_memory.py --n 0 --ann-n 200000  # a smaller approximate run only

Memory figures are growth of the process's resident set (VmRSS), measured around each step.

Data: synthetic clustered unit vectors (384 dims, 1 cluster per 100 vectors, noise so that
neighbours have cosine ~0.5, like MiniLM neighbours); real embeddings of 1M texts would take
hours on 2 cores. Query embedding is excluded from every timing (``retrieve_by_vector``); the
cost of the MiniLM query embedding is reported on its own. Timings are medians over the same
queries, interleaved, in one run.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from procmem import rss  # benchmarks/procmem.py, beside this script

from cognitionos_kit.memory import Memory


def clustered(n: int, dim: int = 384, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((max(1, n // 100), dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    x = centers[rng.integers(0, len(centers), n)]
    x += 0.06 * rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def queries(x: np.ndarray, n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q = x[rng.integers(0, len(x), n)] + 0.06 * rng.standard_normal((n, x.shape[1]), dtype=np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def numpy_topk(m: np.ndarray, q: np.ndarray, k: int = 10) -> np.ndarray:
    s = m @ q
    i = np.argpartition(-s, k)[:k]
    return i[np.argsort(-s[i])]


def ms(ts: list[float]) -> float:
    return statistics.median(ts) * 1000


def bench_exact(n: int, nq: int, home: Path) -> None:
    print(f"## exact search, {n:,} memories x 384 dims, {nq} queries, k=10")
    x = clustered(n)
    mem = Memory(home)
    t = time.perf_counter()
    mem.store_many("researcher", [f"memory {i}" for i in range(n)], embeddings=x)
    dt = time.perf_counter() - t
    print(f"store_many with precomputed vectors: {dt:.1f} s ({n / dt:,.0f} memories/s, durable on return)")
    qs = queries(x, nq)
    t_np, t_mem, same = [], [], 0
    for q in qs:
        t = time.perf_counter()
        ref = numpy_topk(x, q)
        t_np.append(time.perf_counter() - t)
        t = time.perf_counter()
        hits = mem.retrieve_by_vector("researcher", q, k=10, weights={"decay": 0, "boost": 0})
        t_mem.append(time.perf_counter() - t)
        same += [h.content for h in hits] == [f"memory {i}" for i in ref]
    full = [mem.retrieve_by_vector("researcher", q, k=10) for q in qs[:5]]  # warm
    t_full = []
    for q in qs:
        t = time.perf_counter()
        mem.retrieve_by_vector("researcher", q, k=10)
        t_full.append(time.perf_counter() - t)
    del full
    print(f"numpy brute force (matmul + argpartition):   {ms(t_np):6.2f} ms")
    print(f"kit.memory retrieve, similarity only:        {ms(t_mem):6.2f} ms  "
          f"({ms(t_mem) / ms(t_np):.2f}x numpy; same top-10 as numpy in {same}/{nq})")
    print(f"kit.memory retrieve, similarity+decay+boost: {ms(t_full):6.2f} ms  ({ms(t_full) / ms(t_np):.2f}x numpy)")

    import duckdb

    con = duckdb.connect()
    con.execute("CREATE TABLE v (id INTEGER, e FLOAT[384])")
    import pandas as pd

    con.register("src", pd.DataFrame({"id": np.arange(n), "e": list(x)}))
    con.execute("INSERT INTO v SELECT id, e::FLOAT[384] FROM src")
    t_sql = []
    for q in qs[:20]:
        lit = "[" + ",".join(f"{v:.7g}" for v in q) + "]::FLOAT[384]"  # a literal: binding a list costs more
        t = time.perf_counter()
        con.execute(f"SELECT id FROM v ORDER BY array_cosine_similarity(e, {lit}) DESC LIMIT 10").fetchall()
        t_sql.append(time.perf_counter() - t)
    print(f"DuckDB SQL array_cosine_similarity scan:     {ms(t_sql):6.2f} ms  ({ms(t_sql) / ms(t_np):.1f}x numpy, 20 queries)")
    con.close()

    t = time.perf_counter()
    again = Memory(home)
    n_again = len(again)
    print(f"a new process loading the collection from DuckDB (first call, includes ingesting the bulk import): "
          f"{time.perf_counter() - t:.1f} s for {n_again:,} memories")
    t = time.perf_counter()
    n_again = len(Memory(home))
    print(f"... and once ingested: {time.perf_counter() - t:.1f} s")

    models = ["gpt-4o", "claude", "llama"]
    texts = [f"Experiment {i}: model {models[i % 3]} scored {i % 97} on task {i % 13}" for i in range(2000)]
    emb = Memory(home, collection="real-text")
    t = time.perf_counter()
    emb.store_many("researcher", texts)
    dt = time.perf_counter() - t
    print(f"store_many embedding with local MiniLM: {dt:.1f} s for 2,000 texts ({2000 / dt:,.0f} memories/s)")
    from cognitionos_kit.calls.embeddings import get_local_embedder

    te = []
    for i in range(20):
        t = time.perf_counter()
        get_local_embedder().embed([f"which model scored best on task {i}?"])
        te.append(time.perf_counter() - t)
    print(f"embedding one query with MiniLM (excluded above): {ms(te):.1f} ms")

    mem.use_index("approximate")
    t = time.perf_counter()
    mem.retrieve_by_vector("researcher", qs[0], k=10)
    print(f"approximate index through kit.memory at {n:,}: built in {time.perf_counter() - t:.1f} s")
    t_ann, rec = [], []
    for q in qs:
        t = time.perf_counter()
        hits = mem.retrieve_by_vector("researcher", q, k=10, weights={"decay": 0, "boost": 0})
        t_ann.append(time.perf_counter() - t)
        rec.append(len({h.content for h in hits} & {f"memory {i}" for i in numpy_topk(x, q)}) / 10)
    print(f"kit.memory retrieve, approximate:            {ms(t_ann):6.2f} ms  recall@10 {np.mean(rec):.3f}")


def gib(b: float) -> str:
    return f"{b / 2**30:.2f} GiB"


def bench_approximate(n: int, nq: int, home: Path, hnsw: bool) -> None:
    """kit.memory with each approximate index at ``n`` memories (the scan, the default, and IVF),
    new processes loading them, and (if usearch is installed) an HNSW index of the same vectors."""
    import faiss

    print(f"\n## approximate indexes (exact re-scoring) through kit.memory, {n:,} memories x 384 dims, {nq} queries, k=10")
    x = clustered(n, seed=2)
    qs = queries(x, nq, seed=3)
    t = time.perf_counter()
    exact = [numpy_topk(x, q) for q in qs]
    t_ex = (time.perf_counter() - t) / nq
    mem = Memory(home, collection="large")
    len(mem)  # DuckDB and Arrow imported and opened once, so the growth below is the collection's
    r0 = rss()
    t = time.perf_counter()
    mem.store_many("researcher", [f"memory {i}" for i in range(n)], embeddings=x)
    dt = time.perf_counter() - t
    r1 = rss()
    print(f"store_many: {dt:.0f} s ({n / dt:,.0f} memories/s); RSS +{gib(r1 - r0)} for the collection in kit.memory "
          f"(its vectors alone: {gib(n * 384 * 4)}); exact numpy {t_ex * 1000:.1f} ms per query")
    want = [{f"memory {i}" for i in e} for e in exact]
    for method, settings in (("scan", (100, 200, 400)), ("ivf", (128, 256, 320, 384))):
        r1 = rss()
        mem.use_index("approximate", method=method)
        t = time.perf_counter()
        mem.retrieve_by_vector("researcher", qs[0], k=10)
        build = time.perf_counter() - t
        ann = mem.searcher.approximate
        shape = (f"{len(ann.parts)} part(s) of {ann.m} 4-bit sub-vectors" if method == "scan" else
                 f"nlist={ann.nlist}, trained on {min(n, 64 * ann.nlist):,} vectors")
        print(f"\n### {method}: build (first retrieve) {build:.0f} s ({shape}), RSS +{gib(rss() - r1)}; "
              f"peak RSS of the process {gib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)}")
        for value in settings:
            if method == "scan":
                ann.candidates = value
            else:
                ann.index.nprobe = value
            t_sim, t_full, t_raw, rec, rec_raw = [], [], [], [], []
            for q, w, e in zip(qs, want, exact):
                t = time.perf_counter()
                hits = mem.retrieve_by_vector("researcher", q, k=10, weights={"decay": 0, "boost": 0})
                t_sim.append(time.perf_counter() - t)
                t = time.perf_counter()
                mem.retrieve_by_vector("researcher", q, k=10)
                t_full.append(time.perf_counter() - t)
                t = time.perf_counter()  # faiss alone on the same index: its codes' top-10, no re-scoring
                keys = ann.scan(q[None], 10)[1] if method == "scan" else ann.index.search(q[None], 10)[1][0]
                t_raw.append(time.perf_counter() - t)
                rec.append(len({h.content for h in hits} & w) / 10)
                rec_raw.append(len(set(keys.tolist()) & set(e.tolist())) / 10)
            print(f"{'candidates' if method == 'scan' else 'nprobe'}={value}: kit.memory retrieve recall@10 "
                  f"{np.mean(rec):.3f}, {ms(t_sim):.2f} ms similarity only, {ms(t_full):.2f} ms default score; "
                  f"faiss alone (codes' scores, no re-scoring) recall@10 {np.mean(rec_raw):.3f}, {ms(t_raw):.2f} ms")
        mem.use_index("exact")  # drops the index
    print(f"faiss threads: {faiss.omp_get_max_threads()}")
    mem.close()
    del mem
    bench_fresh_process(home, x, qs, exact)
    if hnsw:
        bench_hnsw(x, qs, exact)


FRESH = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
sys.path.insert(0, sys.argv[4])
from procmem import rss, status
from cognitionos_kit.memory import Memory
home, queries, kind = sys.argv[1], np.load(sys.argv[2]), sys.argv[3]
r0 = rss()
t = time.perf_counter()
mem = Memory(home, collection="large")
if kind == "approximate":
    mem.use_index("approximate")
mem.retrieve_by_vector("researcher", queries[0], k=10)  # loaded, (index built or read), one search done
ready = time.perf_counter() - t
r1 = rss()
anon, file = status("RssAnon"), status("RssFile")
times, found = [], []
for q in queries:
    t = time.perf_counter()
    hits = mem.retrieve_by_vector("researcher", q, k=10, weights={"decay": 0, "boost": 0})
    times.append(time.perf_counter() - t)
    found.append([int(h.content.split()[1]) for h in hits])
t = mem.replica.table
print(json.dumps({"ready_s": ready, "rss_before": r0, "rss_after": r1, "anon": anon, "file": file,
                  "rss_end": rss(), "search_ms": 1000 * float(np.median(times)), "peak": status("VmHWM"), "found": found,
                  "from_snapshot": t.origin is not None, "mapped": type(t.vec).__name__,
                  "index_read": kind == "approximate" and mem.searcher.approximate.loaded}))
"""


def bench_fresh_process(home: Path, x: np.ndarray, qs: np.ndarray, exact: list[np.ndarray]) -> None:
    """New processes opening the collection: the first loads it from DuckDB (after ingesting the
    bulk import) and saves the snapshot; later ones map the snapshot (and the saved index)."""
    import json
    import subprocess
    import sys

    print(f"\n## a new process ready to search {len(x):,} memories (load + first search; RSS of that process)")
    qfile = home / "queries.npy"
    np.save(qfile, qs)
    here = str(Path(__file__).resolve().parent)
    raw = x.nbytes
    for label, kind in (("first reader: ingest the journals, load from DuckDB, save the snapshot", "exact"),
                        ("from the snapshot, exact search", "exact"),
                        ("from the snapshot, approximate: build the index and save it", "approximate"),
                        ("from the snapshot, approximate: read the saved index", "approximate")):
        out = subprocess.run([sys.executable, "-c", FRESH, str(home), str(qfile), kind, here], capture_output=True,
                             text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        recall = np.mean([len(set(f) & set(e.tolist())) / 10 for f, e in zip(r["found"], exact)])
        print(f"{label}: ready in {r['ready_s']:.1f} s; RSS then {gib(r['rss_after'])} = {r['rss_after'] / raw:.2f}x "
              f"the raw vectors ({gib(raw)}; {gib(r['anon'])} anonymous + {gib(r['file'])} mapped files; the process "
              f"held {gib(r['rss_before'])} before opening the memory), {gib(r['rss_end'])} after {len(qs)} searches; "
              f"peak {gib(r['peak'])} = {r['peak'] / raw:.2f}x; top-10 {r['search_ms']:.2f} ms, recall@10 {recall:.3f} "
              f"[snapshot {r['from_snapshot']}, vectors {r['mapped']}, index read {r['index_read']}]")


def bench_hnsw(x: np.ndarray, qs: np.ndarray, exact: list[np.ndarray]) -> None:
    try:
        from usearch.index import Index
    except ImportError:
        print("\n(usearch not installed: pip install usearch to compare an HNSW index)")
        return
    import os

    threads = os.cpu_count() or 1
    print(f"\n## HNSW (usearch, connectivity 16, expansion_add 128, {threads} threads), same {len(x):,} vectors")
    r0 = rss()
    index = Index(ndim=x.shape[1], metric="ip", dtype="f32", connectivity=16, expansion_add=128)
    t = time.perf_counter()
    index.add(np.arange(len(x)), x, threads=threads)
    build = time.perf_counter() - t
    print(f"build: {build:.0f} s, RSS +{gib(rss() - r0)}")
    for ef in (32, 64, 128):
        index.expansion_search = ef
        t_s, rec = [], []
        for q, e in zip(qs, exact):
            t = time.perf_counter()
            keys = index.search(q, 10, threads=1).keys
            t_s.append(time.perf_counter() - t)
            rec.append(len(set(keys.tolist()) & set(e.tolist())) / 10)
        print(f"expansion_search={ef:3d}: recall@10 {np.mean(rec):.3f}, {ms(t_s):.2f} ms/query")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--ann-n", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--no-hnsw", action="store_true", help="skip the usearch HNSW comparison")
    a = p.parse_args()
    for run, size in ((bench_exact, a.n), (bench_approximate, a.ann_n)):
        if not size:
            continue
        home = Path(tempfile.mkdtemp(prefix="bench-memory-"))
        try:
            run(size, a.queries, home, *([] if run is bench_exact else [not a.no_hnsw]))
        finally:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

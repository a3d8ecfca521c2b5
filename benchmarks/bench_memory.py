"""Memory search, side by side: kit.memory vs plain numpy vs DuckDB SQL, and the approximate index
vs exact search and vs faiss called directly.

    python benchmarks/bench_memory.py                       # 100k exact + 1M approximate
    python benchmarks/bench_memory.py --ann-n 200000        # a smaller approximate run

Data: synthetic clustered unit vectors (384 dims, 1 cluster per 100 vectors, noise so that
neighbours have cosine ~0.5, like MiniLM neighbours); real embeddings of 1M texts would take
hours on 2 cores. Query embedding is excluded from every timing (``retrieve_by_vector``); the
cost of the MiniLM query embedding is reported on its own. Timings are medians over the same
queries, interleaved, in one run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from cognitionos_kit.memory import Memory
from cognitionos_kit.memory.index import ApproximateIndex, Table


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
    print(f"kit.memory retrieve, similarity only:        {ms(t_mem):6.2f} ms  ({ms(t_mem) / ms(t_np):.2f}x numpy; same top-10 as numpy in {same}/{nq})")
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

    texts = [f"Experiment {i}: model {['gpt-4o', 'claude', 'llama'][i % 3]} scored {i % 97} on task {i % 13}" for i in range(2000)]
    emb = Memory(home, collection="real-text")
    t = time.perf_counter()
    emb.store_many("researcher", texts)
    dt = time.perf_counter() - t
    print(f"store_many embedding with local MiniLM: {dt:.1f} s for 2,000 texts ({2000 / dt:,.0f} memories/s)")
    from cognitionos_kit.embeddings import get_local_embedder

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


def bench_approximate(n: int, nq: int) -> None:
    import faiss

    print(f"\n## approximate index (faiss IVF-Flat), {n:,} vectors x 384 dims, {nq} queries, k=10")
    x = clustered(n, seed=2)
    table = Table(384, capacity=n)
    rows = [{"memory_id": f"m{i}", "user_id": "u", "scope": "user", "agent_id": None, "memory_type": "semantic",
             "content_hash": str(i), "created_at": 0.0, "updated_at": 0.0, "ts": 0.0} for i in range(n)]
    table.add(rows, x)
    del rows
    t = time.perf_counter()
    ann = ApproximateIndex(table)
    build = time.perf_counter() - t
    print(f"build: {build:.1f} s (nlist={ann.nlist}, trained on {min(n, 64 * ann.nlist):,} vectors), "
          f"index memory ~{ann.memory_bytes / 2**20:,.0f} MiB (vectors {n * 384 * 4 / 2**20:,.0f} MiB)")
    qs = queries(x, nq, seed=3)
    exact = [numpy_topk(x, q) for q in qs[:50]]
    t_ex = []
    for q in qs[:50]:
        t = time.perf_counter()
        numpy_topk(x, q)
        t_ex.append(time.perf_counter() - t)
    for nprobe in (8, 16, 32, 64):
        ann.index.nprobe = nprobe
        t_ours, t_raw, rec = [], [], []
        for i, q in enumerate(qs):
            t = time.perf_counter()
            keys, _ = ann.search(q, 10)
            t_ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            ann.index.search(q[None], 10)
            t_raw.append(time.perf_counter() - t)
            if i < len(exact):
                rec.append(len(set(keys.tolist()) & set(exact[i].tolist())) / 10)
        print(f"nprobe={nprobe:2d}: recall@10 {np.mean(rec):.3f}, {ms(t_ours):.2f} ms/query through the kit's index, "
              f"{ms(t_raw):.2f} ms calling faiss directly; exact numpy {ms(t_ex):.1f} ms")
    print(f"faiss threads: {faiss.omp_get_max_threads()}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--ann-n", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=100)
    a = p.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        if a.n:
            bench_exact(a.n, a.queries, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if a.ann_n:
        bench_approximate(a.ann_n, a.queries)


if __name__ == "__main__":
    main()

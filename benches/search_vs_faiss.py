#!/usr/bin/env python3
"""Issue 11 search speed: one-query ranking of regionfeat's f16 scan vs faiss-cpu IndexFlatIP
on the same embeddings (the f16 rows widened to f32), same queries, same k.

Usage: search_vs_faiss.py gen  DIR N DIM NQ          -> DIR/rows_N.f16, DIR/queries.f32
       search_vs_faiss.py faiss DIR N DIM K OUT.json  -> timings + top-k ids
       search_vs_faiss.py compare REGIONFEAT.json FAISS.json
Embeddings: seeded Gaussian mixtures (clustered like real video embeddings), L2-normalized.
"""
import json
import resource
import sys
import time

import numpy as np


def gen(d, n, dim, nq):
    rng = np.random.default_rng(11)
    centers = rng.standard_normal((256, dim)).astype(np.float32)
    rows = np.empty((n, dim), dtype=np.float16)
    for lo in range(0, n, 100_000):
        hi = min(n, lo + 100_000)
        x = centers[rng.integers(0, 256, hi - lo)] + 0.7 * rng.standard_normal((hi - lo, dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        rows[lo:hi] = x.astype(np.float16)
    rows.tofile(f"{d}/rows_{n}.f16")
    q = centers[rng.integers(0, 256, nq)] + 0.7 * rng.standard_normal((nq, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q.astype("<f4").tofile(f"{d}/queries.f32")


def run_faiss(d, n, dim, k, out):
    import faiss

    faiss.omp_set_num_threads(2)
    t = time.perf_counter()
    rows = np.fromfile(f"{d}/rows_{n}.f16", dtype="<f2").reshape(n, dim).astype(np.float32)
    index = faiss.IndexFlatIP(dim)
    index.add(rows)
    del rows
    load_s = time.perf_counter() - t
    q = np.fromfile(f"{d}/queries.f32", dtype="<f4").reshape(-1, dim)
    index.search(q[:1], k)  # warm-up
    times, tops = [], []
    for i in range(len(q)):
        t = time.perf_counter()
        _, ids = index.search(q[i : i + 1], k)
        times.append((time.perf_counter() - t) * 1e3)
        tops.append(ids[0].tolist())
    med = float(np.median(times))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    json.dump({"rows": n, "load_s": load_s, "rank_ms": times, "rank_ms_median": med,
               "rank_ms_min": min(times), "peak_rss_mib": rss, "top": tops}, open(out, "w"))
    print(f"faiss IndexFlatIP: {n} rows x {dim}: load {load_s*1e3:.0f} ms, rank median {med:.2f} ms (min {min(times):.2f}), peak RSS {rss:.0f} MiB")


def compare(a, b):
    a, b = json.load(open(a)), json.load(open(b))
    same = sum(x == y for x, y in zip(a["top"], b["top"]))
    overlap = np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a["top"], b["top"])])
    ratio = a["rank_ms_median"] / b["rank_ms_median"]
    print(f"{a['rows']} rows: regionfeat/faiss median time {ratio:.2f}x; identical top-k lists "
          f"{same}/{len(a['top'])}, mean top-k overlap {overlap:.3f}")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "gen":
        gen(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    elif cmd == "faiss":
        run_faiss(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    else:
        compare(sys.argv[2], sys.argv[3])

#!/usr/bin/env python3
"""Independent numpy reference for the trainer's losses, similarities and retrieval metrics.

Written from the method description (schemas-free, no torch): explicit loops over pairs,
explicit attended vectors alpha/gamma, padding removed by slicing (not by masking), so it shares
no code path with the Rust implementation.

Usage: reference.py IN.json OUT.json
IN: video [Bv,E], text [Bt,E] (normalized), regions [Bv,N,E], region_mask [Bv,N],
    words [Bt,L,E], word_mask [Bt,L], temperature, local_temperature, scale, renormalize,
    and optionally metrics_sim [Nv,Nt] + text_video [Nt].
OUT: global_sim, global_v2t, global_t2v, r2w, w2r, local_v2t, local_t2v, metrics.
"""
import json
import sys

import numpy as np


def log_softmax(x):
    m = x.max()
    return x - m - np.log(np.exp(x - m).sum())


def info_nce(sim, temp):
    b = sim.shape[0]
    v2t = -np.mean([log_softmax(sim[i] / temp)[i] for i in range(b)])
    t2v = -np.mean([log_softmax(sim[:, j] / temp)[j] for j in range(b)])
    return float(v2t), float(t2v)


def align(queries, keys, scale, renormalize):
    """For each query vector: attention over keys, mean-threshold refinement, attended vector,
    score <q, attended>. Returns the mean score over queries. Only valid rows are passed in."""
    scores = []
    for q in queries:
        logits = scale * (keys @ q)
        w = np.exp(logits - logits.max())
        w = w / w.sum()
        thr = w.mean()
        kept = np.where(w > thr, w, 0.0)
        if renormalize and kept.sum() > 0:
            kept = kept / kept.sum()
        attended = (kept[:, None] * keys).sum(axis=0)
        scores.append(float(q @ attended))
    return float(np.mean(scores))


def ranks_metrics(ranks):
    ranks = np.asarray(ranks, dtype=np.float64)
    return {
        "r1": float(np.mean(ranks <= 1)),
        "r5": float(np.mean(ranks <= 5)),
        "r10": float(np.mean(ranks <= 10)),
        "medr": float(np.median(ranks)),
        "meanr": float(np.mean(ranks)),
    }


def metrics(sim, text_video):
    sim = np.asarray(sim, dtype=np.float64)
    nv, nt = sim.shape
    t2v = []
    for j in range(nt):
        order = sorted(range(nv), key=lambda i: -sim[i, j])
        pos = sim[text_video[j], j]
        # rank = position of the first candidate whose score equals the positive's (ties: best)
        t2v.append(1 + sum(1 for i in order if sim[i, j] > pos))
    v2t = []
    for i in range(nv):
        mine = [j for j in range(nt) if text_video[j] == i]
        if not mine:
            continue
        best = max(sim[i, j] for j in mine)
        v2t.append(1 + int(np.sum(sim[i] > best)))
    return {"t2v": ranks_metrics(t2v), "v2t": ranks_metrics(v2t)}


def main():
    inp = json.load(open(sys.argv[1]))
    out = {}
    if "video" in inp:
        video = np.asarray(inp["video"], dtype=np.float64)
        text = np.asarray(inp["text"], dtype=np.float64)
        regions = np.asarray(inp["regions"], dtype=np.float64)
        rmask = np.asarray(inp["region_mask"]) > 0.5
        words = np.asarray(inp["words"], dtype=np.float64)
        wmask = np.asarray(inp["word_mask"]) > 0.5
        scale = float(inp["scale"])
        renorm = bool(inp["renormalize"])
        g = video @ text.T
        out["global_sim"] = g.tolist()
        out["global_v2t"], out["global_t2v"] = info_nce(g, inp["temperature"])
        bv, bt = video.shape[0], text.shape[0]
        r2w = np.zeros((bv, bt))
        w2r = np.zeros((bv, bt))
        for i in range(bv):
            r = regions[i][rmask[i]]
            for j in range(bt):
                t = words[j][wmask[j]]
                r2w[i, j] = align(r, t, scale, renorm)
                w2r[i, j] = align(t, r, scale, renorm)
        out["r2w"] = r2w.tolist()
        out["w2r"] = w2r.tolist()
        lt = inp["local_temperature"]
        if bv == bt:
            out["local_v2t"] = info_nce(r2w, lt)[0]
            out["local_t2v"] = info_nce(w2r, lt)[1]
    if "metrics_sim" in inp:
        out["metrics"] = metrics(inp["metrics_sim"], inp["text_video"])
    json.dump(out, open(sys.argv[2], "w"))


if __name__ == "__main__":
    main()

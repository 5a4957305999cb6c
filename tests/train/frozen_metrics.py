#!/usr/bin/env python3
"""numpy transcription of the benchmark metrics of Frozen-in-Time / DemoVLP
(`t2v_metrics`, `v2t_metrics`, `cols2metrics` in their model/metric.py), used to check
`regionfeat::train::retrieval::protocol_metrics`.

Their code expects the captions of a video in consecutive rows of a [videos*C, videos]
text-by-video matrix, C the most captions of any video, with a query mask for missing ones.
This script builds exactly that layout from a ragged [Nv, Nt] similarity and a text->video map,
then ranks as they do: distance = -similarity, exact-equality search in the sorted row,
first match for text->video ("optimistic"), mean of matches for video->text ("averaging").

Usage: frozen_metrics.py IN.json OUT.json   (IN: sim [Nv][Nt], text_video [Nt])
"""
import json
import sys

import numpy as np


def summary(cols, n):
    cols = np.asarray(cols, dtype=np.float64)
    out = {
        "R1": 100.0 * np.sum(cols == 0) / n,
        "R5": 100.0 * np.sum(cols < 5) / n,
        "R10": 100.0 * np.sum(cols < 10) / n,
        "R50": 100.0 * np.sum(cols < 50) / n,
        "MedR": float(np.median(cols)) + 1,
        "MeanR": float(np.mean(cols)) + 1,
    }
    out["geometric_mean_R1-R5-R10"] = float(np.prod([out["R1"], out["R5"], out["R10"]]) ** (1 / 3))
    return out


def text_to_video(sims, mask):
    nq, nv = sims.shape
    per = nq // nv
    d = -sims
    srt = np.sort(d, axis=1)
    gt = np.array([d[q, q // per] for q in range(nq)])[:, None]
    rows, cols = np.where(srt - gt == 0)
    _, first = np.unique(rows, return_index=True)  # optimistic: the first tied position
    cols = cols[first]
    cols = cols[mask.astype(bool)]
    return summary(cols, int(mask.sum()))


def video_to_text(sims, mask):
    d = -sims.T  # [nv, nq]
    nv, nq = d.shape
    per = nq // nv
    big = 1e8
    ranks = []
    for i in range(nv):
        row = d[i].copy()
        row[~mask.astype(bool)] = big
        srt = np.sort(row)
        best = np.inf
        for j in range(i * per, (i + 1) * per):
            if row[j] == big:
                continue
            best = min(best, np.where(srt - row[j] == 0)[0].mean())  # averaging ties
        ranks.append(best)
    return summary(ranks, nv)


def main():
    inp = json.load(open(sys.argv[1]))
    sim = np.asarray(inp["sim"], dtype=np.float32)  # [Nv, Nt]
    tv = inp["text_video"]
    nv = sim.shape[0]
    per = max(tv.count(v) for v in range(nv))
    sims = np.zeros((nv * per, nv), dtype=np.float32)
    mask = np.zeros(nv * per)
    slot = [0] * nv
    for j, v in enumerate(tv):
        q = v * per + slot[v]
        slot[v] += 1
        sims[q] = sim[:, j]
        mask[q] = 1
    json.dump({"t2v": text_to_video(sims, mask), "v2t": video_to_text(sims, mask)}, open(sys.argv[2], "w"))


if __name__ == "__main__":
    main()

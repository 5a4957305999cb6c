#!/usr/bin/env python3
"""Independent numpy reference of RegionLearner's quantization, EMA codebook update and
aggregation (src/train/region_learner.rs), written from the paper's equations and the public
quantizer's update rule, not from the Rust code.

Usage: region_learner_reference.py IN.json OUT.json
IN: z [N, C] (tokens of n frames, row-major over (frame, y, x)), grid [n, h, w], embed [K, C],
cluster_size [K], embed_avg [K, C], updates (done so far), decay, decay_max, schedule
("ramp" | "constant"), eps, update (bool), weight [S, C, 3, 3], bias [S].
OUT: indices [N], quantized [N, C], embed, cluster_size, embed_avg (after the update),
decay (the one used), masks [n, S, h, w], regions [n, S, C].
"""

import json
import sys

import numpy as np


def nearest(z, embed):
    # Squared L2 distance of every token to every code.
    d = ((z[:, None, :] - embed[None, :, :]) ** 2).sum(-1)
    return d.argmin(1)


def ema_update(z, idx, embed, cluster_size, embed_avg, gamma, eps):
    k = embed.shape[0]
    counts = np.zeros(k)
    sums = np.zeros_like(embed)
    for t, j in enumerate(idx):
        counts[j] += 1
        sums[j] += z[t]
    n = gamma * cluster_size + (1 - gamma) * counts
    m = gamma * embed_avg + (1 - gamma) * sums
    total = n.sum()
    smoothed = (n + eps) / (total + k * eps) * total
    return m / smoothed[:, None], n, m


def conv3x3(x, w, b):
    # x [C, h, w], w [S, C, 3, 3], zero padding 1.
    c, h, wd = x.shape
    s = w.shape[0]
    xp = np.zeros((c, h + 2, wd + 2))
    xp[:, 1:-1, 1:-1] = x
    out = np.zeros((s, h, wd))
    for o in range(s):
        for y in range(h):
            for xx in range(wd):
                out[o, y, xx] = (xp[:, y : y + 3, xx : xx + 3] * w[o]).sum() + b[o]
    return out


def main():
    inp = json.load(open(sys.argv[1]))
    z = np.array(inp["z"], dtype=np.float64)
    embed = np.array(inp["embed"], dtype=np.float64)
    cluster_size = np.array(inp["cluster_size"], dtype=np.float64)
    embed_avg = np.array(inp["embed_avg"], dtype=np.float64)
    u = inp["updates"] + 1
    if inp["schedule"] == "ramp":
        gamma = min(inp["decay"] * u, inp["decay_max"])
    else:
        gamma = inp["decay"]
    idx = nearest(z, embed)
    if inp["update"]:
        embed, cluster_size, embed_avg = ema_update(
            z, idx, embed, cluster_size, embed_avg, gamma, inp["eps"]
        )
    quantized = embed[idx]
    n, h, w = inp["grid"]
    weight = np.array(inp["weight"], dtype=np.float64)
    bias = np.array(inp["bias"], dtype=np.float64)
    c = z.shape[1]
    masks, regions = [], []
    for f in range(n):
        x = quantized[f * h * w : (f + 1) * h * w].T.reshape(c, h, w)
        m = conv3x3(x, weight, bias)
        # Masked average pooling: mean over the grid of x * mask_s.
        r = np.stack([(x * m[s][None]).mean(axis=(1, 2)) for s in range(m.shape[0])])
        masks.append(m)
        regions.append(r)
    out = {
        "indices": idx.tolist(),
        "quantized": quantized.tolist(),
        "embed": embed.tolist(),
        "cluster_size": cluster_size.tolist(),
        "embed_avg": embed_avg.tolist(),
        "decay": gamma,
        "masks": np.array(masks).tolist(),
        "regions": np.array(regions).tolist(),
    }
    json.dump(out, open(sys.argv[2], "w"))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Reference for `regionfeat search --rerank`: the evaluator's combined similarity for one caption.

Usage: rerank_reference.py EMB.safetensors CONFIG.toml OUT.json

EMB is what `regionfeat eval --export-embeddings` wrote for the whole set (every video, every
caption, encoded in eval's own batches). The safetensors file is parsed by hand (header + raw
little-endian data) and the local score uses `align` of reference.py (explicit loops, padding
removed by slicing), so nothing is shared with the Rust code path of `search --rerank`.
OUT: one entry per caption j (in eval's text order): {"global": [Nv], "local": [Nv],
     "combined": [Nv], "combined_order": [video rows], "global_order": [video rows]}.
Orders: by score descending, then row.
"""
import json
import os
import struct
import sys
import tomllib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference import align  # noqa: E402

DTYPES = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "I64": "<i8", "I32": "<i4", "U8": "u1", "BOOL": "?"}


def read_safetensors(path):
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        arr = np.frombuffer(data[base + lo : base + hi], dtype=DTYPES[info["dtype"]])
        out[name] = arr.reshape(info["shape"]).astype(np.float64)
    return out


def main():
    emb_path, cfg_path, out_path = sys.argv[1], sys.argv[2], sys.argv[3]
    t = read_safetensors(emb_path)
    loss = tomllib.load(open(cfg_path, "rb")).get("loss", {})
    # Defaults of the trainer's LossConfig (src/train/config.rs).
    scale = float(loss.get("rwa_scale", 1.0))
    renorm = bool(loss.get("rwa_renormalize", False))
    video, text = t["video"], t["text"]
    order = lambda s: sorted(range(len(s)), key=lambda i: (-s[i], i))  # noqa: E731
    out = []
    for j in range(text.shape[0]):
        words = t["words"][j][t["word_mask"][j] > 0.5]
        g, local = [], []
        for i in range(video.shape[0]):
            regions = t["regions"][i][t["region_mask"][i] > 0.5]
            g.append(float(video[i] @ text[j]))
            local.append(
                (align(regions, words, scale, renorm) + align(words, regions, scale, renorm)) / 2
            )
        combined = [a + b for a, b in zip(g, local)]
        out.append(
            {
                "global": g,
                "local": local,
                "combined": combined,
                "combined_order": order(combined),
                "global_order": order(g),
            }
        )
    json.dump(out, open(out_path, "w"))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Facts about a regionfeat shard computed with h5py alone, to check `inspect --json` against.

Usage: shard_facts.py SHARD.h5
"""
import collections
import json
import os
import sys

import h5py
import numpy as np


def main():
    path = sys.argv[1]
    with h5py.File(path, "r") as f:
        a = f.attrs
        k = int(a["max_boxes"])
        nb = f["num_boxes"][:]
        cls = f["classes"][:]
        scores = f["scores"][:]
        names = json.loads(a["class_names"])
        valid = np.arange(k)[None, :] < nb[:, None]
        counts = collections.Counter(cls[valid].tolist())
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
        hist = np.bincount(nb, minlength=k + 1).tolist()
        print(json.dumps({
            "items": int(f["item_id"].shape[0]),
            "videos": int((f["kind"][:] == 0).sum()),
            "frames": int(nb.shape[0]),
            "boxes": int(nb.sum()),
            "histogram": hist,
            "top_classes": [[names[c], int(n)] for c, n in top],
            "score_min": float(scores[valid].min()),
            "score_max": float(scores[valid].max()),
            "schema_version": int(a["schema_version"]),
            "detector_name": str(a["detector_name"]),
            "detector_sha256": str(a["detector_sha256"]),
            "config": json.loads(a["config"]),
            "bytes": os.path.getsize(path),
        }))


if __name__ == "__main__":
    main()

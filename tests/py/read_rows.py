#!/usr/bin/env python3
"""Frame rows as h5py/numpy read them, for tests/shard_rows.rs: the reference for the trainer's
chunk reader. Usage: read_rows.py SHARD ROW[,ROW...]  Prints JSON {features, locations,
num_boxes} (features as float, grid shards: grid_features and no locations)."""
import json
import sys

import h5py
import numpy as np

with h5py.File(sys.argv[1], "r") as f:
    rows = [int(r) for r in sys.argv[2].split(",")]
    grid = "grid_features" in f
    feats = f["grid_features" if grid else "features"]
    out = {"features": np.concatenate([feats[r].astype(np.float64).ravel() for r in rows]).tolist()}
    if grid:
        out["locations"] = []
        out["num_boxes"] = [feats.shape[1]] * len(rows)
    else:
        out["locations"] = np.concatenate([f["locations"][r].astype(np.float64).ravel() for r in rows]).tolist()
        out["num_boxes"] = [int(f["num_boxes"][r]) for r in rows]
    print(json.dumps(out))

#!/usr/bin/env python3
"""Reading regionfeat shards with nothing but h5py and numpy (schemas/shard-v1.md, shard-v2.md).

Usage: python examples/read_shards.py PATH [--top N]
PATH is a shard file or an output directory (all its shard-*.h5). Prints every item with its
caption and, for region shards, the most confident classes of its first frame; for grid shards
(model_kind "grid"), the grid shape and the mean cell-feature norm of its first frame.

The layout is frame-major and ragged: item i owns frame rows
frame_start[i] .. frame_start[i] + num_frames[i]. Region shards: in each frame row only the first
num_boxes regions are valid (the rest is zero padding). Grid shards: each frame row of
grid_features holds Hg*Wg cells (row-major over y, x; grid_hw = [Hg, Wg]) of D values.
"""
import argparse
import glob
import json
import os

import h5py
import numpy as np


def shard_paths(path):
    if os.path.isdir(path):
        return sorted(glob.glob(os.path.join(path, "shard-*.h5")))
    return [path]


def item_frames(f, i):
    """Features, 7-d locations and validity mask of item i: [F, K, D], [F, K, 7], [F, K]."""
    start, n = int(f["frame_start"][i]), int(f["num_frames"][i])
    feats = f["features"][start:start + n].astype(np.float32)
    locs = f["locations"][start:start + n]
    k = feats.shape[1]
    mask = np.arange(k)[None, :] < f["num_boxes"][start:start + n][:, None]
    return feats, locs, mask


def item_grid(f, i):
    """Grid of item i as [F, Hg, Wg, D] float32 (grid shards)."""
    start, n = int(f["frame_start"][i]), int(f["num_frames"][i])
    hg, wg = (int(v) for v in f.attrs["grid_hw"])
    g = f["grid_features"][start:start + n].astype(np.float32)
    return g.reshape(n, hg, wg, g.shape[-1])


def model_kind(f):
    """"regions" or "grid"; v1 shards have no model_kind and hold regions."""
    return f.attrs.get("model_kind", "regions")


def print_grid_shard(path, f):
    a = f.attrs
    hg, wg = (int(v) for v in a["grid_hw"])
    print(f"{path}: schema {a['schema']} v{a['schema_version']}, grid model {a['detector_name']}, "
          f"{f['item_id'].shape[0]} items, {f['frame_item'].shape[0]} frames, "
          f"grid {hg}x{wg} D={a['feature_dim']}")
    for i, (ident, caption) in enumerate(zip(f["item_id"].asstr()[:], f["caption"].asstr()[:])):
        g = item_grid(f, i)
        kind = "video" if f["kind"][i] == 0 else "image"
        norm = float(np.linalg.norm(g[0], axis=-1).mean())
        print(f"  {ident} ({kind}, {g.shape[0]} frames, grid {list(g.shape[1:])}): {caption}")
        print(f"    first frame t={f['timestamps'][int(f['frame_start'][i])]:.2f}s: mean cell norm {norm:.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("--top", type=int, default=5, help="classes shown per item")
    args = ap.parse_args()
    for path in shard_paths(args.path):
        with h5py.File(path, "r") as f:
            if model_kind(f) == "grid":
                print_grid_shard(path, f)
                continue
            a = f.attrs
            classes = json.loads(a["class_names"])
            print(f"{path}: schema {a['schema']} v{a['schema_version']}, detector {a['detector_name']}, "
                  f"{f['item_id'].shape[0]} items, {f['num_boxes'].shape[0]} frames, "
                  f"K={a['max_boxes']} D={a['feature_dim']}")
            ids = f["item_id"].asstr()[:]
            captions = f["caption"].asstr()[:]
            kinds = f["kind"][:]
            for i, (ident, caption) in enumerate(zip(ids, captions)):
                feats, locs, mask = item_frames(f, i)
                row = int(f["frame_start"][i])
                m = int(f["num_boxes"][row])
                top = [f"{classes[c]} {s:.2f}" for c, s in
                       zip(f["classes"][row, :m][:args.top], f["scores"][row, :m][:args.top])]
                kind = "video" if kinds[i] == 0 else "image"
                print(f"  {ident} ({kind}, {feats.shape[0]} frames, {int(mask.sum())} regions): {caption}")
                print(f"    first frame t={f['timestamps'][row]:.2f}s: {', '.join(top)}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Reading regionfeat shards with nothing but h5py and numpy (schemas/shard-v1.md).

Usage: python examples/read_shards.py PATH [--top N]
PATH is a shard file or an output directory (all its shard-*.h5). Prints every item with its
caption and the most confident classes of its first frame.

The layout is frame-major and ragged: item i owns frame rows
frame_start[i] .. frame_start[i] + num_frames[i]; in each frame row only the first num_boxes
regions are valid (the rest is zero padding).
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("--top", type=int, default=5, help="classes shown per item")
    args = ap.parse_args()
    for path in shard_paths(args.path):
        with h5py.File(path, "r") as f:
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

#!/usr/bin/env python3
"""Writes regionfeat shards (schemas/shard-v1.md) with h5py from a JSON item list, so the
trainer's shard path is tested against files made by an independent writer.

Usage: make_shards.py ITEMS.json OUT_DIR ITEMS_PER_SHARD
ITEMS.json: {"feature_dim": D, "max_boxes": K, "items": [{"id", "caption", "features" [F*K*D],
             "locations" [F*K*7], "num_boxes" [F]}]}
"""
import json
import sys

import h5py
import numpy as np


def write_shard(path, shard_id, items, d, k):
    s = h5py.string_dtype("utf-8")
    n = len(items)
    nf = [len(it["num_boxes"]) for it in items]
    t = sum(nf)
    starts = np.concatenate([[0], np.cumsum(nf)[:-1]]).astype(np.uint64)
    with h5py.File(path, "w") as f:
        a = f.attrs
        a["schema"] = "regionfeat-shard"
        a["schema_version"] = np.uint32(1)
        a["tool_version"] = "test"
        a["shard_id"] = np.uint64(shard_id)
        a["detector_name"] = "planted"
        a["detector_sha256"] = "0" * 64
        a["class_names"] = json.dumps(["thing"])
        a["attribute_names"] = json.dumps(["plain"])
        a["feature_dim"] = np.uint32(d)
        a["max_boxes"] = np.uint32(k)
        a["config"] = json.dumps({"frames": max(nf)})
        f.create_dataset("item_id", data=[it["id"] for it in items], dtype=s)
        f.create_dataset("caption", data=[it["caption"] for it in items], dtype=s)
        f.create_dataset("source", data=[it["id"] + ".mp4" for it in items], dtype=s)
        f.create_dataset("kind", data=np.array([0 if x > 1 else 1 for x in nf], np.uint8))
        f.create_dataset("manifest_index", data=np.arange(n, dtype=np.uint64))
        f.create_dataset("frame_start", data=starts)
        f.create_dataset("num_frames", data=np.array(nf, np.uint32))
        f.create_dataset("image_hw", data=np.full((n, 2), 480, np.uint32))
        f.create_dataset("duration", data=np.full(n, 8.0, np.float32))
        f.create_dataset("frame_item", data=np.repeat(np.arange(n, dtype=np.uint32), nf))
        f.create_dataset("timestamps", data=np.zeros(t, np.float32))
        f.create_dataset("frame_times", data=np.zeros(t, np.float32))
        nb = np.concatenate([np.array(it["num_boxes"], np.uint32) for it in items])
        f.create_dataset("num_boxes", data=nb)
        loc = np.concatenate([np.array(it["locations"], np.float32).reshape(-1, k, 7) for it in items])
        f.create_dataset("locations", data=loc)
        f.create_dataset("boxes", data=loc[:, :, :4] * 480.0)
        f.create_dataset("scores", data=np.ones((t, k), np.float32))
        f.create_dataset("classes", data=np.zeros((t, k), np.uint32))
        f.create_dataset("attributes", data=np.zeros((t, k), np.uint32))
        f.create_dataset("attr_scores", data=np.ones((t, k), np.float32))
        feats = np.concatenate([np.array(it["features"], np.float32).reshape(-1, k, d) for it in items])
        f.create_dataset("features", data=feats.astype(np.float16), chunks=(1, k, d),
                         shuffle=True, compression="gzip", compression_opts=4)


def main():
    spec = json.load(open(sys.argv[1]))
    out, per = sys.argv[2], int(sys.argv[3])
    items = spec["items"]
    for sid, lo in enumerate(range(0, len(items), per)):
        write_shard(f"{out}/shard-{sid:06d}.h5", sid, items[lo:lo + per], spec["feature_dim"], spec["max_boxes"])


if __name__ == "__main__":
    main()

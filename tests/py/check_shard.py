#!/usr/bin/env python3
"""Independent check of a regionfeat shard with h5py + numpy (schemas/shard-v1.md).

Usage: check_shard.py SHARD.h5 [MANIFEST.jsonl]
Exits non-zero with a message on the first violation; prints a JSON summary otherwise.
"""
import json
import sys

import h5py
import numpy as np


def fail(msg):
    sys.exit(f"check_shard: {msg}")


def main():
    path = sys.argv[1]
    f = h5py.File(path, "r")
    a = f.attrs
    if a["schema"] != "regionfeat-shard" or int(a["schema_version"]) not in (1, 2):
        fail(f"schema attrs {a['schema']!r} {a['schema_version']!r}")
    if int(a["schema_version"]) == 2 and a["model_kind"] != "regions":
        fail(f"model_kind {a['model_kind']!r}: this checks region shards")
    k, d = int(a["max_boxes"]), int(a["feature_dim"])
    json.loads(a["config"])
    classes = json.loads(a["class_names"])
    n = f["item_id"].shape[0]
    t = f["num_boxes"].shape[0]
    want = {
        "item_id": ((n,), "O"), "caption": ((n,), "O"), "source": ((n,), "O"), "kind": ((n,), "u1"),
        "manifest_index": ((n,), "u8"), "frame_start": ((n,), "u8"), "num_frames": ((n,), "u4"),
        "image_hw": ((n, 2), "u4"), "duration": ((n,), "f4"), "frame_item": ((t,), "u4"),
        "timestamps": ((t,), "f4"), "frame_times": ((t,), "f4"), "num_boxes": ((t,), "u4"),
        "boxes": ((t, k, 4), "f4"), "locations": ((t, k, 7), "f4"), "scores": ((t, k), "f4"),
        "classes": ((t, k), "u4"), "attributes": ((t, k), "u4"), "attr_scores": ((t, k), "f4"),
    }
    for name, (shape, dt) in want.items():
        ds = f[name]
        if ds.shape != shape:
            fail(f"{name} shape {ds.shape} != {shape}")
        if dt != "O" and ds.dtype != np.dtype(dt):
            fail(f"{name} dtype {ds.dtype} != {dt}")
    if f["features"].shape != (t, k, d) or f["features"].dtype not in (np.float16, np.float32):
        fail(f"features {f['features'].shape} {f['features'].dtype}")
    start, nf = f["frame_start"][:], f["num_frames"][:]
    if not (np.all(np.diff(start) == nf[:-1]) and start.sum() >= 0 and int(nf.sum()) == t):
        fail("frame ranges are not contiguous")
    hw = f["image_hw"][:].astype(np.float64)
    fitem = f["frame_item"][:]
    boxes, locs = f["boxes"][:].astype(np.float64), f["locations"][:].astype(np.float64)
    nb, scores = f["num_boxes"][:], f["scores"][:]
    feats = f["features"][:].astype(np.float32)
    cls = f["classes"][:]
    for i in range(t):
        h, w = hw[fitem[i]]
        m = nb[i]
        b = boxes[i, :m]
        exp = np.stack([b[:, 0] / w, b[:, 1] / h, b[:, 2] / w, b[:, 3] / h,
                        (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h,
                        ((b[:, 2] - b[:, 0]) / w) * ((b[:, 3] - b[:, 1]) / h)], axis=1)
        if not np.allclose(locs[i, :m], exp, atol=1e-5):
            fail(f"frame {i}: locations disagree with boxes")
        if np.any(b[:, [0, 2]] < 0) or np.any(b[:, [0, 2]] > w) or np.any(b[:, [1, 3]] < 0) or np.any(b[:, [1, 3]] > h):
            fail(f"frame {i}: box outside the image")
        if np.any(np.diff(scores[i, :m]) > 0):
            fail(f"frame {i}: scores not descending")
        if np.any(boxes[i, m:] != 0) or np.any(scores[i, m:] != 0) or np.any(feats[i, m:] != 0):
            fail(f"frame {i}: padding past num_boxes is not zero")
        if np.any(cls[i, :m] >= len(classes)):
            fail(f"frame {i}: class index out of range")
        if not np.all(np.isfinite(feats[i])):
            fail(f"frame {i}: non-finite feature")
    ids = [s.decode() for s in f["item_id"][:]]
    caps = [s.decode() for s in f["caption"][:]]
    if len(sys.argv) > 2:
        rows = {r["id"]: r.get("caption", "") for r in map(json.loads, open(sys.argv[2]))}
        for i, c in zip(ids, caps):
            if rows.get(i) != c:
                fail(f"caption of {i} differs from the manifest")
    print(json.dumps({"items": n, "frames": t, "k": k, "d": d, "ids": ids}))


if __name__ == "__main__":
    main()

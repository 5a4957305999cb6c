#!/usr/bin/env python3
"""Reads a `regionfeat export` back with numpy and compares it with the shard (h5py).

Usage: check_export.py SHARD.h5 OUT_DIR demovlp-npz|bottomup-tsv
Exits non-zero on the first difference; prints a JSON summary otherwise.
"""
import base64
import json
import os
import sys

import h5py
import numpy as np


def fail(msg):
    sys.exit(f"check_export: {msg}")


def frames(f):
    ids = [s.decode() for s in f["item_id"][:]]
    hw = f["image_hw"][:]
    kinds = f["kind"][:]
    for i, ident in enumerate(ids):
        start, n = int(f["frame_start"][i]), int(f["num_frames"][i])
        for j in range(n):
            row = start + j
            m = int(f["num_boxes"][row])
            yield ident, int(kinds[i]), j, row, m, int(hw[i][0]), int(hw[i][1])


def folders(out):
    """Item id -> folder, from the export's ids.jsonl; each folder must stay inside OUT."""
    dirs = {}
    with open(os.path.join(out, "ids.jsonl")) as lines:
        for line in lines:
            entry = json.loads(line)
            path = os.path.realpath(os.path.join(out, entry["dir"]))
            if os.path.commonpath([path, os.path.realpath(out)]) != os.path.realpath(out):
                fail(f"{entry} leaves {out}")
            dirs[entry["id"]] = entry["dir"]
    if len(set(dirs.values())) != len(dirs):
        fail("two ids share a folder")
    return dirs


def check_npz(f, out):
    feats = f["features"]
    dirs = folders(out)
    count = 0
    for ident, kind, j, row, m, h, w in frames(f):
        path = os.path.join(out, dirs[ident], f"{j}.npz")
        if not os.path.exists(path):
            fail(f"missing {path}")
        with np.load(path, allow_pickle=True) as z:
            x, bbox = z["x"], z["bbox"]
            if x.dtype != np.float32 or x.shape != (m, feats.shape[2]):
                fail(f"{path}: x {x.dtype} {x.shape}")
            if not np.array_equal(x, feats[row, :m].astype(np.float32)):
                fail(f"{path}: x differs from the shard")
            if not np.array_equal(bbox, f["boxes"][row, :m]):
                fail(f"{path}: bbox differs")
            if int(z["num_bbox"]) != m or int(z["image_h"]) != h or int(z["image_w"]) != w:
                fail(f"{path}: num_bbox/image_h/image_w")
            info = z["info"].item()
            if not isinstance(info, dict):
                fail(f"{path}: info is {type(info)}")
            if info["image_h"] != h or info["image_w"] != w or info["num_boxes"] != m:
                fail(f"{path}: info sizes")
            if info["image_id"] != (ident if kind == 1 else f"{ident}/{j}"):
                fail(f"{path}: image_id {info['image_id']!r} is not item {ident!r}")
            if not np.array_equal(info["objects_id"], f["classes"][row, :m].astype(np.int64)):
                fail(f"{path}: objects_id differs")
            if not np.array_equal(info["objects_conf"], f["scores"][row, :m]):
                fail(f"{path}: objects_conf differs")
            if not np.array_equal(info["attrs_id"], f["attributes"][row, :m].astype(np.int64)):
                fail(f"{path}: attrs_id differs")
            if not np.array_equal(info["attrs_conf"], f["attr_scores"][row, :m]):
                fail(f"{path}: attrs_conf differs")
            # DemoVLP's spatial features from the exported fields equal the shard's locations.
            b = bbox / np.array([w, h, w, h], dtype=np.float32)
            if not np.allclose(b, f["locations"][row, :m, :4], atol=1e-6):
                fail(f"{path}: normalized boxes differ from locations")
        count += 1
    return count


def check_tsv(f, out):
    name = os.path.splitext(os.path.basename(f.filename))[0] + ".tsv"
    rows = open(os.path.join(out, name)).read().splitlines()
    d = f["features"].shape[2]
    expected = list(frames(f))
    if len(rows) != len(expected):
        fail(f"{len(rows)} rows, expected {len(expected)}")
    for line, (ident, kind, j, row, m, h, w) in zip(rows, expected):
        image_id, iw, ih, n, boxes, feats = line.split("\t")
        want_id = ident if kind == 1 else f"{ident}/{j}"
        if image_id != want_id or int(iw) != w or int(ih) != h or int(n) != m:
            fail(f"row {row}: {image_id} {iw} {ih} {n}")
        boxes = np.frombuffer(base64.b64decode(boxes), dtype=np.float32).reshape(m, 4)
        feats = np.frombuffer(base64.b64decode(feats), dtype=np.float32).reshape(m, d)
        if not np.array_equal(boxes, f["boxes"][row, :m]):
            fail(f"row {row}: boxes differ")
        if not np.array_equal(feats, f["features"][row, :m].astype(np.float32)):
            fail(f"row {row}: features differ")
    return len(rows)


def main():
    shard, out, fmt = sys.argv[1:4]
    with h5py.File(shard, "r") as f:
        n = check_npz(f, out) if fmt == "demovlp-npz" else check_tsv(f, out)
    print(json.dumps({"frames": n}))


if __name__ == "__main__":
    main()

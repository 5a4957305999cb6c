#!/usr/bin/env python3
"""Bytes per video: regionfeat shard vs DemoVLP-style per-frame .npz files (issue 7, item 4).

    python benches/npz_size.py SHARD_F32.h5 OUT_DIR [--json]

For every frame row of the shard, writes what bottom-up-attention's extractor (used by DemoVLP)
saves per frame: np.savez_compressed(x=features f32 [n,D], bbox=[n,4], num_bbox, image_h,
image_w, info={objects_id, objects_conf, attrs_id, attrs_conf, ...}) for the same n selected
regions. Prints the total and per-video bytes (apparent size, and disk usage in 4 KiB blocks).
"""
import json
import os
import sys

import h5py
import numpy as np


def main() -> None:
    shard, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    total = blocks = 0
    with h5py.File(shard, "r") as f:
        ids = [x.decode() if isinstance(x, bytes) else x for x in f["item_id"][()]]
        start, num, hw = f["frame_start"][()], f["num_frames"][()], f["image_hw"][()]
        nb, boxes, feats = f["num_boxes"][()], f["boxes"][()], f["features"][()]
        scores, classes, attrs, attr_sc = f["scores"][()], f["classes"][()], f["attributes"][()], f["attr_scores"][()]
        for i, item in enumerate(ids):
            for j in range(int(num[i])):
                t = int(start[i]) + j
                n = int(nb[t])
                info = {"image_id": f"{item}_{j}", "image_h": int(hw[i][0]), "image_w": int(hw[i][1]),
                        "num_boxes": n, "objects_id": classes[t, :n].astype(np.int64),
                        "objects_conf": scores[t, :n].astype(np.float32), "attrs_id": attrs[t, :n].astype(np.int64),
                        "attrs_conf": attr_sc[t, :n].astype(np.float32)}
                path = os.path.join(out, f"{item.replace('/', '_')}_{j}.npz")
                np.savez_compressed(path, x=feats[t, :n].astype(np.float32), bbox=boxes[t, :n].astype(np.float32),
                                    num_bbox=n, image_h=int(hw[i][0]), image_w=int(hw[i][1]), info=info)
                st = os.stat(path)
                total += st.st_size
                blocks += st.st_blocks * 512
    per = total / len(ids)
    print(f"npz (DemoVLP per-frame savez_compressed, f32): {len(ids)} videos, {total} bytes, {per:.0f} bytes/video "
          f"({blocks / len(ids):.0f} bytes/video on disk)", file=sys.stderr)
    if "--json" in sys.argv:
        print(json.dumps({"videos": len(ids), "bytes": total, "bytes_per_video": per, "disk_bytes_per_video": blocks / len(ids)}))


if __name__ == "__main__":
    main()

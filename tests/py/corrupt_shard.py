#!/usr/bin/env python3
"""Corrupts a regionfeat shard in place (for `inspect --validate` and reader tests).

Usage: corrupt_shard.py SHARD.h5 MODE ITEM_ROW FRAME
MODE, values a reader survives but validation must flag (at ITEM_ROW / FRAME):
      nan-feature (NaN in features of box 2), box-outside (box 0 pushed past the right edge),
      num-boxes (num_boxes set below the real count, so padding rows are not zero),
      unsorted (scores of boxes 0 and 1 swapped);
MODE, damage every reader must refuse:
      max-boxes (the max_boxes attribute one less than the datasets' K),
      drop-NAME (dataset NAME deleted), retype-classes (classes stored as float32),
      huge-num-boxes, huge-class, huge-attribute (2**32-1 in num_boxes, or in classes /
      attributes of box 0, at the frame), bad-kind (kind 7 for the item),
      frame-start (frame_start of the item far past the frame rows),
      frame-item (frame_item of the frame names the next item),
      flip-features (bytes inverted inside the compressed features chunk of the frame).
Prints {"item": id, "frame": FRAME, "row": frame row} as JSON.
"""
import json
import sys

import h5py
import numpy as np


def main():
    path, mode, item, frame = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    with h5py.File(path, "r+") as f:
        row = int(f["frame_start"][item]) + frame
        assert frame < int(f["num_frames"][item]), "frame index past the item"
        flip_at = None
        if mode == "nan-feature":
            feats = f["features"][row]
            feats[2, 5] = np.nan
            f["features"][row] = feats
        elif mode == "box-outside":
            h, w = f["image_hw"][item]
            boxes = f["boxes"][row]
            boxes[0, 2] = w + 50.0
            f["boxes"][row] = boxes
        elif mode == "num-boxes":
            f["num_boxes"][row] = int(f["num_boxes"][row]) - 18
        elif mode == "unsorted":
            s = f["scores"][row]
            s[[0, 1]] = s[[1, 0]]
            f["scores"][row] = s
        elif mode == "max-boxes":
            f.attrs.modify("max_boxes", np.uint32(int(f.attrs["max_boxes"]) - 1))
        elif mode.startswith("drop-"):
            del f[mode[len("drop-"):]]
        elif mode == "retype-classes":
            classes = f["classes"][:]
            del f["classes"]
            f.create_dataset("classes", data=classes.astype(np.float32))
        elif mode in ("huge-num-boxes", "huge-class", "huge-attribute"):
            name = {"huge-num-boxes": "num_boxes", "huge-class": "classes",
                    "huge-attribute": "attributes"}[mode]
            v = f[name][row]
            if v.ndim:
                v[0] = 2**32 - 1
            else:
                v = np.uint32(2**32 - 1)
            f[name][row] = v
        elif mode == "bad-kind":
            f["kind"][item] = 7
        elif mode == "frame-start":
            f["frame_start"][item] = 2**40
        elif mode == "frame-item":
            f["frame_item"][row] = item + 1
        elif mode == "flip-features":
            info = f["features"].id.get_chunk_info_by_coord((row, 0, 0))
            flip_at = (info.byte_offset + info.size // 2, min(16, info.size // 4))
        else:
            sys.exit(f"unknown mode {mode}")
        ident = f["item_id"][item].decode() if "item_id" in f else None
    if mode == "flip-features":
        offset, count = flip_at
        with open(path, "r+b") as raw:
            raw.seek(offset)
            data = bytes(b ^ 0xFF for b in raw.read(count))
            raw.seek(offset)
            raw.write(data)
    print(json.dumps({"item": ident, "frame": frame, "row": row}))


if __name__ == "__main__":
    main()

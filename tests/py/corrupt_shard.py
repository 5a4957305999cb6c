#!/usr/bin/env python3
"""Corrupts one frame of a regionfeat shard in place (for `inspect --validate` tests).

Usage: corrupt_shard.py SHARD.h5 MODE ITEM_ROW FRAME
MODE: nan-feature (NaN in features of box 2), box-outside (box 0 pushed past the right edge),
      num-boxes (num_boxes set below the real count, so padding rows are not zero),
      unsorted (scores of boxes 0 and 1 swapped).
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
        else:
            sys.exit(f"unknown mode {mode}")
        ident = f["item_id"][item].decode()
    print(json.dumps({"item": ident, "frame": frame, "row": row}))


if __name__ == "__main__":
    main()

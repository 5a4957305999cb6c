#!/usr/bin/env python3
"""Checks that the Python baseline did the same work as regionfeat: compare_shards.py A.h5 B.h5.

Prints, per dataset, whether shapes match and the largest absolute difference, and a summary
line `same_work frames=<T> num_boxes_equal=<fraction> frame_times_equal=<fraction>
max_box_diff=<px>`. Small differences are expected from swscale versions (pixels differ by one
step) and float rounding; the frame choice and region counts should agree.
"""
import sys

import h5py
import numpy as np


def main() -> None:
    a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
    for name in ["num_frames", "image_hw", "timestamps", "frame_times", "num_boxes", "boxes", "scores", "classes",
                 "features"]:
        x, y = a[name][()], b[name][()]
        if x.shape != y.shape:
            print(f"  {name}: shape {x.shape} vs {y.shape}")
            continue
        diff = np.abs(x.astype(np.float64) - y.astype(np.float64))
        print(f"  {name}: max |diff| {diff.max() if diff.size else 0:.4g}, equal {np.mean(diff == 0):.3f}")
    nb_a, nb_b = a["num_boxes"][()], b["num_boxes"][()]
    ft_a, ft_b = a["frame_times"][()], b["frame_times"][()]
    same = nb_a.shape == nb_b.shape
    print(f"same_work frames={len(nb_a)} num_boxes_equal={np.mean(nb_a == nb_b) if same else 0:.3f} "
          f"frame_times_equal={np.mean(np.abs(ft_a - ft_b) < 5e-4) if same else 0:.3f}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Independent checks of a grid shard (schemas/shard-v2.md) with h5py, numpy, the ffmpeg CLI and
onnxruntime-in-Python.

Usage:
  check_grid.py shard SHARD.h5
      layout, attributes and values (finite, not constant); prints a JSON summary.
  check_grid.py values SHARD.h5 MODEL.onnx ROOT POOL
      for every image item: decodes its file with the ffmpeg CLI (rgb24), applies the grid
      contract's preprocessing from the model's metadata (center crop at a shorter side already
      equal to `size`, offsets rounded down; (v - mean) / std), runs the model in onnxruntime,
      average-pools to POOL x POOL (0 = none) and compares with the shard's grid.
      Prints the max abs difference as JSON.
  check_grid.py draw OUT.png REPORT.json
      counts the grid-overlay (cyan) pixels inside each reported frame.
"""
import json
import os
import subprocess
import sys

import h5py
import numpy as np


def fail(msg):
    sys.exit(f"check_grid: {msg}")


def check_shard(path):
    with h5py.File(path, "r") as f:
        a = f.attrs
        if a["schema"] != "regionfeat-shard" or int(a["schema_version"]) != 2:
            fail(f"schema {a['schema']!r} v{a['schema_version']}")
        if a["model_kind"] != "grid":
            fail(f"model_kind {a['model_kind']!r}")
        hg, wg = (int(v) for v in a["grid_hw"])
        d = int(a["feature_dim"])
        if int(a["max_boxes"]) != 0 or json.loads(a["class_names"]) != []:
            fail("grid shards declare max_boxes 0 and no classes")
        for name in ["num_boxes", "boxes", "locations", "scores", "classes", "attributes",
                     "attr_scores", "features"]:
            if name in f:
                fail(f"grid shard has the region dataset {name}")
        n, t = f["item_id"].shape[0], f["frame_item"].shape[0]
        g = f["grid_features"]
        if g.shape != (t, hg * wg, d) or g.dtype not in (np.float16, np.float32):
            fail(f"grid_features {g.shape} {g.dtype}, expected ({t}, {hg * wg}, {d})")
        if g.chunks != (1, hg * wg, d):
            fail(f"grid_features chunks {g.chunks}")
        start, nf = f["frame_start"][:], f["num_frames"][:]
        if not (np.all(np.diff(start) == nf[:-1]) and int(nf.sum()) == t):
            fail("frame ranges are not contiguous")
        x = g[:].astype(np.float32)
        if not np.isfinite(x).all():
            fail("non-finite grid values")
        per_frame_std = x.reshape(t, -1).std(axis=1)
        if (per_frame_std < 1e-3).any():
            fail(f"constant grid in frame {int(np.argmin(per_frame_std))}")
        # different cells of a frame differ (the grid is spatial, not one vector repeated)
        if np.abs(x[:, 0] - x[:, -1]).max() < 1e-3:
            fail("first and last cells are equal in every frame")
        print(json.dumps({"items": n, "frames": t, "grid_hw": [hg, wg], "d": d,
                          "dtype": str(g.dtype), "ids": list(f["item_id"].asstr()[:])}))


def decode_rgb(path):
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                            "stream=width,height", "-of", "json", path],
                           check=True, capture_output=True, text=True)
    s = json.loads(probe.stdout)["streams"][0]
    w, h = int(s["width"]), int(s["height"])
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-frames:v", "1", "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(h, w, 3)


def adaptive_pool(x, out):
    """[H, W, D] -> [out, out, D], PyTorch adaptive_avg_pool2d bins."""
    h, w, d = x.shape
    y = np.zeros((out, out, d), np.float64)
    for i in range(out):
        y0, y1 = i * h // out, -(-(i + 1) * h // out)
        for j in range(out):
            x0, x1 = j * w // out, -(-(j + 1) * w // out)
            y[i, j] = x[y0:y1, x0:x1].mean(axis=(0, 1))
    return y


def check_values(shard, model, root, pool):
    import onnx
    import onnxruntime as ort
    meta = {p.key: p.value for p in onnx.load(model).metadata_props}
    pre = json.loads(meta["regionfeat.preprocess"])
    size = pre["size"]
    mean, std = np.array(pre["pixel_mean"]), np.array(pre["pixel_std"])
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    worst, checked = 0.0, 0
    with h5py.File(shard, "r") as f:
        hg, wg = (int(v) for v in f.attrs["grid_hw"])
        for i, src in enumerate(f["source"].asstr()[:]):
            if f["kind"][i] != 1:
                continue
            rgb = decode_rgb(src if os.path.isabs(src) else os.path.join(root, src))
            h, w, _ = rgb.shape
            if min(h, w) != size:
                fail(f"{src}: {w}x{h}; this check needs the shorter side at {size} (no resize)")
            y0, x0 = (h - size) // 2, (w - size) // 2
            crop = rgb[y0:y0 + size, x0:x0 + size].astype(np.float32)
            if pre["channel_order"].upper() == "BGR":
                crop = crop[..., ::-1]
            x = ((crop - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)
            (grid,) = sess.run(["grid_features"], {"images": x})
            want = grid[0].astype(np.float64)
            if pool:
                want = adaptive_pool(want, pool)
            start = int(f["frame_start"][i])
            got = f["grid_features"][start].astype(np.float64).reshape(hg, wg, -1)
            if got.shape != want.shape:
                fail(f"{src}: shard grid {got.shape}, onnxruntime {want.shape}")
            worst = max(worst, float(np.abs(got - want).max()))
            checked += 1
    if checked == 0:
        fail("no image item to check")
    print(json.dumps({"checked": checked, "max_abs_diff": worst}))


def check_draw(png, report):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from check_draw import read_png
    w_img, h_img, rows = read_png(png)
    img = np.array([np.frombuffer(bytes(r), np.uint8).reshape(w_img, 3) for r in rows])
    rep = json.load(open(report))
    counts = []
    for fr in rep["frames"]:
        x, y, w, h = fr["x"], fr["y"], fr["width"], fr["height"]
        cell = img[y:y + h, x:x + w].reshape(-1, 3)
        counts.append(int(np.all(cell == [0, 255, 255], axis=1).sum()))
    print(json.dumps({"cyan_per_frame": counts}))


def main():
    mode = sys.argv[1]
    if mode == "shard":
        check_shard(sys.argv[2])
    elif mode == "values":
        check_values(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    elif mode == "draw":
        check_draw(sys.argv[2], sys.argv[3])
    else:
        fail(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()

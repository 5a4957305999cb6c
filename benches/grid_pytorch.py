#!/usr/bin/env python3
"""Baseline for grid extraction (issue 10): the same ViT in PyTorch eager on CPU, on the same
frames and batches as `regionfeat extract --model vit-*.onnx`: PyAV decode of the same sample
times (segment midpoints, frame on screen; python_pipeline.py's decoder) resized so the shorter
side is 224 (swscale bilinear, longer side capped at 4x), centre crop 224 (offsets rounded
down), the model's mean/std, whole items in manifest order batched by `--batch-size` frames,
`torch.no_grad()` forward of detector/vit.py with the same preset and seed as the ONNX file,
optional adaptive average pooling, and an h5py shard with `grid_features` (f16, chunk one frame,
shuffle+gzip 4). One process, sequential; torch uses all cores (its default).

    python benches/grid_pytorch.py --manifest M.jsonl --preset vit-b16 --seed 0 --out DIR
        [--frames 8] [--batch-size 8] [--grid-pool N] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import h5py
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "detector"))

import vit  # noqa: E402
from python_pipeline import IMAGE_EXT, decode  # noqa: E402


def center_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    h, w, _ = rgb.shape
    ch, cw = min(h, size), min(w, size)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    out = np.zeros((size, size, 3), np.uint8)
    out[:ch, :cw] = rgb[y0:y0 + ch, x0:x0 + cw]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--preset", default="vit-b16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--grid-pool", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    cfg = vit.preset(args.preset)
    model = vit.init_seeded(vit.ViTGrid(cfg), args.seed).eval()
    mean, std = (np.array(v, np.float32) for v in vit.NORMS[cfg.norm])
    size = cfg.image_size
    base = os.path.dirname(os.path.abspath(args.manifest))
    rows = [json.loads(l) for l in open(args.manifest) if l.strip()]
    os.makedirs(args.out, exist_ok=True)
    busy = {"decode": 0.0, "preprocess": 0.0, "model": 0.0, "write": 0.0}
    t_start, cpu_start = time.perf_counter(), time.process_time()

    pending, outputs, frames_done = [], [], 0

    def flush():
        nonlocal pending
        if not pending:
            return
        t0 = time.perf_counter()
        # the group's frames in chunks of batch_size, like the extractor's collate
        for i in range(0, len(pending), args.batch_size):
            x = torch.from_numpy(np.stack(pending[i:i + args.batch_size]))
            with torch.no_grad():
                g = model(x)
                if args.grid_pool:
                    g = torch.nn.functional.adaptive_avg_pool2d(
                        g.permute(0, 3, 1, 2), args.grid_pool).permute(0, 2, 3, 1)
            outputs.extend(g.reshape(g.shape[0], -1, cfg.dim).numpy())
        busy["model"] += time.perf_counter() - t0
        pending = []

    for r in rows:
        path = r["path"] if os.path.isabs(r["path"]) else os.path.join(base, r["path"])
        t0 = time.perf_counter()
        is_image = path.rsplit(".", 1)[-1].lower() in IMAGE_EXT
        frames = decode(path, is_image, args.frames, size, size * 4)[0]
        t1 = time.perf_counter()
        busy["decode"] += t1 - t0
        for f in frames:
            crop = center_crop(f, size).astype(np.float32)
            pending.append(((crop - mean) / std).transpose(2, 0, 1).copy())
        busy["preprocess"] += time.perf_counter() - t1
        frames_done += len(frames)
        # whole items per batch, like the extractor's batcher
        if len(pending) >= args.batch_size:
            flush()
    flush()
    t0 = time.perf_counter()
    data = np.stack(outputs).astype(np.float16)
    with h5py.File(os.path.join(args.out, "grid.h5"), "w") as f:
        f.create_dataset("grid_features", data=data, chunks=(1,) + data.shape[1:], shuffle=True,
                         compression="gzip", compression_opts=4)
    busy["write"] += time.perf_counter() - t0
    wall = time.perf_counter() - t_start
    res = {"items": len(rows), "frames": frames_done, "seconds": wall,
           "items_per_s": len(rows) / wall, "frames_per_s": frames_done / wall,
           "cpu_seconds": time.process_time() - cpu_start, "busy": busy,
           "torch_threads": torch.get_num_threads()}
    print(json.dumps(res) if args.json else res)
    return 0


if __name__ == "__main__":
    sys.exit(main())

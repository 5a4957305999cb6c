#!/usr/bin/env python3
"""Benchmark the detector export and its CPU inference in ONNX Runtime.

Measures, each stage in its own process so peak memory (ru_maxrss) is per stage:
  export  build the preset with seeded weights and trace it to ONNX (seconds, peak RSS);
  infer   open an ONNX Runtime CPU session and run frames of HxW (default 600x1000, the largest
          frame bottom-up attention produces) — ms per frame (mean / median / min), peak RSS.

    python detector/bench_export.py                      # vg-r101, 3 timed runs
    python detector/bench_export.py --preset vg-tiny --height 128 --width 200 --iters 20
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def stage_export(args) -> dict:
    import torch  # noqa: F401 - imports are not part of the measured time
    import torchvision  # noqa: F401

    import checkpoints  # noqa: F401
    import export
    import frcnn  # noqa: F401
    import presets  # noqa: F401
    t0 = time.perf_counter()
    model, source = export.build_model(args.preset, seed=args.seed)
    t1 = time.perf_counter()
    cfg = model.cfg
    export.export(model, args.onnx, export.placeholder_labels("class", cfg.num_classes),
                  export.placeholder_labels("attribute", cfg.num_attributes), source, fp16=args.fp16)
    t2 = time.perf_counter()
    return {"stage": "export", "build_s": t1 - t0, "export_s": t2 - t1, "onnx_mb": os.path.getsize(args.onnx) / 1e6,
            "peak_rss_mb": peak_rss_mb(), "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def stage_infer(args) -> dict:
    import numpy as np
    import onnxruntime as ort
    so = ort.SessionOptions()
    if args.threads:
        so.intra_op_num_threads = args.threads
    t0 = time.perf_counter()
    sess = ort.InferenceSession(args.onnx, so, providers=["CPUExecutionProvider"])
    t1 = time.perf_counter()
    rng = np.random.default_rng(0)
    images = (rng.standard_normal((args.batch, 3, args.height, args.width)) * 60).astype(np.float32)
    sizes = np.tile(np.array([[args.height, args.width]], np.float32), (args.batch, 1))
    feed = {"images": images, "image_sizes": sizes, "image_scales": np.ones(args.batch, np.float32)}
    feed = {k: v for k, v in feed.items() if k in {i.name for i in sess.get_inputs()}}
    tw = time.perf_counter()
    out = sess.run(None, feed)  # warm-up
    warm = time.perf_counter() - tw
    times = []
    for _ in range(args.iters):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t) * 1000.0 / args.batch)
    return {"stage": "infer", "session_s": t1 - t0, "warmup_s": warm, "iters": args.iters, "batch": args.batch,
            "input": [args.batch, 3, args.height, args.width], "regions": int(out[0].shape[1]),
            "ms_per_frame_mean": statistics.mean(times), "ms_per_frame_median": statistics.median(times),
            "ms_per_frame_min": min(times), "peak_rss_mb": peak_rss_mb(), "onnxruntime": ort.__version__,
            "intra_op_threads": args.threads or "default (all cores)"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="vg-r101")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fp16", action="store_true")
    ap.add_argument("--height", type=int, default=600)
    ap.add_argument("--width", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = default)")
    ap.add_argument("--onnx", help="reuse / keep the exported file here (default: a temporary file)")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--_stage", choices=["export", "infer"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.iters < 1 or args.batch < 1 or args.height < 32 or args.width < 32:
        ap.error("--iters/--batch must be >= 1 and --height/--width >= 32")

    if args._stage:
        res = stage_export(args) if args._stage == "export" else stage_infer(args)
        print("RESULT " + json.dumps(res))
        return 0

    tmpdir = None
    if not args.onnx:
        tmpdir = tempfile.TemporaryDirectory()
        args.onnx = os.path.join(tmpdir.name, f"{args.preset}.onnx")
    base = [sys.executable, os.path.abspath(__file__), "--preset", args.preset, "--seed", str(args.seed),
            "--onnx", args.onnx, "--height", str(args.height), "--width", str(args.width),
            "--batch", str(args.batch), "--iters", str(args.iters), "--threads", str(args.threads)]
    if args.fp16:
        base.append("--fp16")
    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
               "preset": args.preset, "fp16": args.fp16}
    for stage in ("export", "infer"):
        p = subprocess.run(base + ["--_stage", stage], capture_output=True, text=True)
        line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
        if p.returncode != 0 or not line:
            sys.stderr.write(p.stdout + p.stderr)
            print(f"error: the {stage} stage failed", file=sys.stderr)
            return 1
        results[stage] = json.loads(line[0][len("RESULT "):])
        print(f"{stage}: " + ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in results[stage].items() if k != "stage"), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    if tmpdir:
        tmpdir.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

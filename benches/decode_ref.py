#!/usr/bin/env python3
"""Reference decoders for the decode benchmark (issue 2): decord and PyAV.

Same work as benches/decode.rs: for every video, N frames (default 8) at the segment midpoints
t_i = (i + 0.5) * D / N, the frame on screen at t_i (last frame with pts <= t_i), RGB24 at the
original size, single-threaded decoders. `--procs P` runs P worker processes (multiprocessing
pool) for the all-cores comparison. One untimed warm-up pass, then R timed passes.

    python benches/decode_ref.py {decord,pyav} [--repeat R] [--procs P] [--frames N]
                                 [--times-out FILE.json] [--json] (--list FILE | VIDEO...)
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np

from pyav_sampling import sample_pyav, sample_times


def decode_decord(path: str, n: int):
    import decord

    vr = decord.VideoReader(path, num_threads=1)
    count = len(vr)
    fps = vr.get_avg_fps()
    duration = count / fps
    targets = sample_times(duration, n)
    # CFR: the frame on screen at t is floor(t * fps) (clamped to the last frame).
    idx = [min(int(math.floor(t * fps + 1e-9)), count - 1) for t in targets]
    frames = vr.get_batch(idx).asnumpy()  # [N, H, W, 3] uint8 RGB
    frame_times = [float(x) for x in vr.get_frame_timestamp(idx)[:, 0]]
    return targets, frame_times, frames


def decode_pyav(path: str, n: int):
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"
        stream.codec_context.thread_count = 1
        _, targets, frame_times, frames, _ = sample_pyav(
            container, stream, n, lambda f: f.to_ndarray(format="rgb24")
        )
        return targets, frame_times, np.stack(frames)


DECODERS = {"decord": decode_decord, "pyav": decode_pyav}


def _work(job):
    tool, path, n = job
    c = time.process_time()  # whole process, all threads (decord decodes on its own threads)
    targets, frame_times, frames = DECODERS[tool](path, n)
    return path, targets, frame_times, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tool", choices=sorted(DECODERS))
    ap.add_argument("videos", nargs="*")
    ap.add_argument("--list")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--procs", type=int, default=1)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--times-out")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_intermixed_args()
    videos = list(a.videos)
    if a.list:
        videos += [l.strip() for l in open(a.list) if l.strip()]
    jobs = [(a.tool, v, a.frames) for v in videos]
    if a.procs > 1:
        import multiprocessing as mp

        pool = mp.get_context("fork").Pool(a.procs)
        run = lambda: pool.map(_work, jobs, chunksize=1)
    else:
        pool = None
        run = lambda: [_work(j) for j in jobs]
    results = run()  # warm-up (page cache, imports, pool start)
    t0 = time.perf_counter()
    cpu = 0.0
    for _ in range(a.repeat):
        cpu += sum(r[3] for r in run())
    secs = time.perf_counter() - t0
    if pool is not None:
        pool.close()
        pool.join()
    n = len(videos) * a.repeat
    vps = n / secs
    print(f"{a.tool} decode: {len(videos)} videos x {a.repeat} repeats, {a.procs} process(es): {secs:.3f}s, {vps:.2f} videos/s, "
          f"{cpu * 1e3 / n:.1f} CPU ms/video",
          file=sys.stderr)
    if a.json:
        print(json.dumps({"tool": a.tool, "videos": len(videos), "repeat": a.repeat, "workers": a.procs,
                          "seconds": secs, "videos_per_s": vps, "cpu_seconds": cpu, "cpu_ms_per_video": cpu * 1e3 / n}))
    if a.times_out:
        with open(a.times_out, "w") as f:
            json.dump({p: {"times": t, "frame_times": ft} for p, t, ft, _ in results}, f)


if __name__ == "__main__":
    main()

"""The Python baselines' frame sampling, shared by decode_ref.py and python_pipeline.py.

Same rule as regionfeat: segment-midpoint sample times, and for each the frame on screen (last
frame with pts <= t), reached by a backward keyframe seek and decoding forward (naive PyAV).
"""
from __future__ import annotations

import math


def sample_times(duration: float, n: int) -> list[float]:
    d = duration if duration > 0 and math.isfinite(duration) else 0.0
    return [(i + 0.5) * d / n for i in range(n)]


def sample_pyav(container, stream, n: int, convert):
    """-> (duration, targets, frame_times, converted frames, (width, height) of the last frame)."""
    tb = float(stream.time_base)
    start = stream.start_time or 0
    duration = stream.duration * tb if stream.duration else (container.duration or 0) / 1e6
    targets = sample_times(duration, n)
    frames, frame_times, size = [], [], (0, 0)
    for t in targets:
        container.seek(int(round(t / tb)) + start, stream=stream, backward=True, any_frame=False)
        chosen = None
        for frame in container.decode(stream):
            ft = (frame.pts - start) * tb
            if ft <= t + 1e-9 or chosen is None:
                chosen = (ft, frame)
                if ft <= t + 1e-9:
                    continue
            break
        ft, frame = chosen
        frames.append(convert(frame))
        frame_times.append(ft)
        size = (frame.width, frame.height)
    return duration, targets, frame_times, frames, size

#!/usr/bin/env python3
"""Counts frame-choice mismatches between decode runs: compare_times.py REF.json OTHER.json...

Each file maps video path -> {"times": [...], "frame_times": [...]} (sample time t_i and the
presentation time of the frame taken). A mismatch is a sample whose frame time differs from the
reference by more than half a millisecond (i.e. a different frame), or a differing frame count.
When both files carry `rgb_fnv1a` (benches/decode.rs writes it), the pixels are compared too.
Prints one line per other file: `<name> mismatches=<k> of <n> samples`.
"""
import json
import os
import sys


def main() -> None:
    ref = json.load(open(sys.argv[1]))
    for other_path in sys.argv[2:]:
        other = json.load(open(other_path))
        bad = total = 0
        pix_bad = pix_total = 0
        examples = []
        for video, r in ref.items():
            o = other.get(video)
            total += len(r["frame_times"])
            if o is None or len(o["frame_times"]) != len(r["frame_times"]):
                bad += len(r["frame_times"])
                examples.append(f"{video}: missing or different count")
                continue
            ha, hb = r.get("rgb_fnv1a") or [], o.get("rgb_fnv1a") or []
            if ha and hb:
                pix_total += len(ha)
                pix_bad += sum(x != y for x, y in zip(ha, hb))
            for i, (a, b) in enumerate(zip(r["frame_times"], o["frame_times"])):
                if abs(a - b) > 5e-4:
                    bad += 1
                    if len(examples) < 5:
                        examples.append(f"{os.path.basename(video)}[{i}] t={r['times'][i]:.4f}: {a:.4f} vs {b:.4f}")
        name = os.path.basename(other_path).rsplit(".", 1)[0]
        pix = f" pixel_mismatches={pix_bad} of {pix_total}" if pix_total else ""
        print(f"{name} mismatches={bad} of {total} samples{pix}" + ("  e.g. " + "; ".join(examples) if examples else ""))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""How many RPN proposals and selected boxes a detector change moves on real frames (issue 14:
the minimum proposal size scaled by each frame's resize factor, checkpoint anchors, ranking by
logit).

Runs two ONNX exports of the same weights (`--before`, `--after`) on the same frames -- the bundled
samples decoded and prepared exactly as benches/python_pipeline.py (and `regionfeat extract`) do,
one frame per run so no batch padding is involved -- and counts, per frame, the proposals
(`boxes` rows that are not padding) of `after` that `before` does not have, and the same for the
boxes the contract's selection keeps (per-class NMS 0.3, confidence 0.2, top-K 30, min 10).
A box counts as shared when the other run has one within 1e-3 px on every side.

    python benches/proposal_rule_change.py --before OLD.onnx --after NEW.onnx
        [--manifest examples/samples.jsonl] [--frames 8] [--max-boxes 30] [--json]

`image_scales` is fed to a model that declares it (the resize factor of the frame), as the
extractor does.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import python_pipeline as pp  # noqa: E402  (decode, prepare, select: the Python twin of the extractor)

TOL = 1e-3


def not_shared(a: np.ndarray, b: np.ndarray) -> int:
    """Boxes of `a` with no box of `b` within TOL px on every side."""
    if len(a) == 0:
        return 0
    if len(b) == 0:
        return len(a)
    d = np.abs(a[:, None, :] - b[None, :, :]).max(-1)
    return int((d.min(1) > TOL).sum())


class Model:
    def __init__(self, path: str):
        self.sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        meta = self.sess.get_modelmeta().custom_metadata_map
        self.pre = json.loads(meta["regionfeat.preprocess"])
        self.feeds_scales = "image_scales" in {i.name for i in self.sess.get_inputs()}

    def run(self, chw: np.ndarray, scale: float):
        images, sizes = pp.make_batch([chw], self.pre.get("size_divisibility", 0))
        inputs = {"images": images, "image_sizes": sizes}
        if self.feeds_scales:
            inputs["image_scales"] = np.array([scale], np.float32)
        boxes, cls, attr = self.sess.run(["boxes", "class_scores", "attr_scores"], inputs)
        return boxes[0], cls[0], attr[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--manifest", default=os.path.join(os.path.dirname(__file__), "..", "examples", "samples.jsonl"))
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--max-boxes", type=int, default=30)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sel = SimpleNamespace(nms_iou=0.3, conf_threshold=0.2, min_boxes=10, max_boxes=args.max_boxes)
    before, after = Model(args.before), Model(args.after)
    if before.pre != after.pre:
        sys.exit("the two models preprocess differently; compare exports of the same preset")
    pre = after.pre
    root = os.path.dirname(os.path.abspath(args.manifest))
    rows = []
    for line in open(args.manifest):
        if not line.strip():
            continue
        item = json.loads(line)
        path = item["path"] if os.path.isabs(item["path"]) else os.path.join(root, item["path"])
        is_image = path.rsplit(".", 1)[-1].lower() in pp.IMAGE_EXT
        rgbs, _, _, w, h, _ = pp.decode(path, is_image, args.frames, pre["shorter_side"], pre["max_side"])
        scale = pp.im_scale(w, h, pre["shorter_side"], pre["max_side"])
        for j, rgb in enumerate(rgbs):
            chw = pp.prepare(rgb, pre)
            out = {}
            for name, m in (("before", before), ("after", after)):
                boxes, cls, attr = m.run(chw, scale)
                real = cls[:, 1:].max(-1) > 0  # padding candidates are one-hot on column 0
                order = pp.select(boxes, cls, attr, sel)[0]
                out[name] = (boxes[real], boxes[order])
            print(f"{item['id']} frame {j}", file=sys.stderr, flush=True)
            rows.append({"item": item["id"], "frame": j, "size": [w, h], "scale": scale,
                         "proposals": len(out["after"][0]),
                         "proposals_changed": not_shared(out["after"][0], out["before"][0]),
                         "selected": len(out["after"][1]),
                         "selected_changed": not_shared(out["after"][1], out["before"][1])})
    n = len(rows)
    summary = {
        "frames": n,
        "proposals_per_frame": float(np.mean([r["proposals"] for r in rows])),
        "proposals_changed_mean": float(np.mean([r["proposals_changed"] for r in rows])),
        "proposals_changed_max": max(r["proposals_changed"] for r in rows),
        "frames_with_changed_proposals": sum(r["proposals_changed"] > 0 for r in rows),
        "selected_per_frame": float(np.mean([r["selected"] for r in rows])),
        "selected_changed_mean": float(np.mean([r["selected_changed"] for r in rows])),
        "selected_changed_max": max(r["selected_changed"] for r in rows),
        "frames_with_changed_selection": sum(r["selected_changed"] > 0 for r in rows),
    }
    if args.json:
        print(json.dumps({"summary": summary, "frames": rows}, indent=1))
        return 0
    print(f"{'item':<16} {'frame':>5} {'size':>10} {'scale':>6} {'proposals changed':>18} {'selected changed':>17}")
    for r in rows:
        print(f"{r['item']:<16} {r['frame']:>5} {r['size'][0]:>5}x{r['size'][1]:<4} {r['scale']:>6.3f} "
              f"{r['proposals_changed']:>8} of {r['proposals']:<6} {r['selected_changed']:>8} of {r['selected']:<5}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

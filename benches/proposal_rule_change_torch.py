#!/usr/bin/env python3
"""proposal_rule_change.py for models too slow to run whole on a CPU (vg-r101): the same count of
changed RPN proposals, in PyTorch, between an older `frcnn.py` (e.g. `git show 86afc9f:detector/frcnn.py`,
the graph before issue 14) and this checkout's, with the same seeded weights and one backbone pass
shared by both. `--select ID ...` also runs the whole model on those items' middle frames and
counts the changed selected boxes (slow: minutes per frame for vg-r101 on 2 cores).

    python benches/proposal_rule_change_torch.py --before-frcnn OLD_frcnn.py [--preset vg-r101]
        [--frames 1] [--select cc3m/000000001 ...]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from types import SimpleNamespace

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "detector"))
import frcnn as new  # noqa: E402
import presets  # noqa: E402
import proposal_rule_change as prc  # noqa: E402
import python_pipeline as pp  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before-frcnn", required=True, help="the older frcnn.py")
    ap.add_argument("--preset", default="vg-r101")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", type=int, default=1)
    ap.add_argument("--select", nargs="*", default=[], metavar="ID")
    ap.add_argument("--manifest", default=os.path.join(HERE, "..", "examples", "samples.jsonl"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    spec = importlib.util.spec_from_file_location("frcnn_before", args.before_frcnn)
    old = importlib.util.module_from_spec(spec)
    sys.modules["frcnn_before"] = old
    spec.loader.exec_module(old)
    cfg = presets.get(args.preset)
    fields = {k: v for k, v in cfg.to_dict().items() if k in old.DetectorConfig.__dataclass_fields__}
    mn = new.init_seeded(new.VGDetector(cfg), args.seed).eval()
    mo = old.init_seeded(old.VGDetector(old.DetectorConfig(**fields)), args.seed).eval()
    so, sn = mo.state_dict(), mn.state_dict()
    assert all(torch.equal(so[k], sn[k]) for k in sn), "the two models must hold the same weights"
    pre = {"channel_order": "BGR", "pixel_mean": list(cfg.pixel_mean), "pixel_std": [1.0] * 3,
           "shorter_side": cfg.shorter_side, "max_side": cfg.max_side}
    sel = SimpleNamespace(nms_iou=0.3, conf_threshold=0.2, min_boxes=10, max_boxes=30)
    root = os.path.dirname(os.path.abspath(args.manifest))
    rows = []
    for line in open(args.manifest):
        if not line.strip():
            continue
        item = json.loads(line)
        path = item["path"] if os.path.isabs(item["path"]) else os.path.join(root, item["path"])
        is_image = path.rsplit(".", 1)[-1].lower() in pp.IMAGE_EXT
        rgbs, _, _, w, h, _ = pp.decode(path, is_image, args.frames, cfg.shorter_side, cfg.max_side)
        scale = pp.im_scale(w, h, cfg.shorter_side, cfg.max_side)
        for j, rgb in enumerate(rgbs):
            x = torch.from_numpy(pp.prepare(rgb, pre))[None]
            s = torch.tensor([[x.shape[2], x.shape[3]]], dtype=torch.float32)
            sc = torch.tensor([scale], dtype=torch.float32)
            with torch.no_grad():
                feat = mn.backbone(x)
                bo, vo, _ = mo.proposals(feat, s)
                bn, vn, _ = mn.proposals(feat, s, sc)
            a, b = bn[0][vn[0]].numpy(), bo[0][vo[0]].numpy()
            row = {"item": item["id"], "frame": j, "size": [w, h], "scale": round(scale, 4),
                   "min_side": round(cfg.min_proposal_size * scale, 1), "proposals": len(a),
                   "proposals_changed": prc.not_shared(a, b)}
            if item["id"] in args.select and j == len(rgbs) // 2:
                with torch.no_grad():
                    o = [t[0].numpy() for t in mo(x, s)]
                    n = [t[0].numpy() for t in mn(x, s, sc)]
                ko, kn = o[0][pp.select(o[0], o[1], o[2], sel)[0]], n[0][pp.select(n[0], n[1], n[2], sel)[0]]
                row.update(selected=len(kn), selected_changed=prc.not_shared(kn, ko))
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(json.dumps({"frames": len(rows),
                      "proposals_changed_mean": float(np.mean([r["proposals_changed"] for r in rows])),
                      "proposals_changed_max": max(r["proposals_changed"] for r in rows)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Export a ViT backbone to ONNX as a grid model (schemas/grid-contract.md).

Real weights (timm `vit_base_patch16_224`, ImageNet-21k: a timm/HF `.safetensors` or a `.pth`):
    python detector/export_grid.py --preset vit-b16 --checkpoint model.safetensors --out vit-b16.onnx
Seeded random weights (tests, demo, benchmarks):
    python detector/export_grid.py --preset vit-tiny --seed 0 --out vit-tiny.onnx

The graph takes `images` f32 [B,3,224,224] (B dynamic) and returns `grid_features`
[B,14,14,D]: the final-normed patch tokens without [CLS].
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import vit  # noqa: E402

CONTRACT_VERSION = "1"
OPSET = 17
INPUT = "images"
OUTPUT = "grid_features"


class UsageError(Exception):
    pass


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_model(preset: str, seed=None, checkpoint=None, norm="imagenet", trust=False):
    """(model in eval mode, provenance string)."""
    cfg = vit.preset(preset, norm)
    model = vit.ViTGrid(cfg)
    if checkpoint is not None:
        ignored = vit.load_timm_state_dict(model, vit.read_state_dict(checkpoint, trust=trust))
        source = (f"checkpoint {os.path.basename(checkpoint)} sha256={sha256_file(checkpoint)[:16]}"
                  f" (ignored: {', '.join(sorted({k.split('.')[0] for k in ignored})) or 'nothing'})")
    else:
        vit.init_seeded(model, seed)
        source = f"seeded random weights, seed={seed}"
    return model.eval(), source


def metadata(cfg: vit.ViTConfig, source: str) -> dict:
    mean, std = vit.NORMS[cfg.norm]
    pre = {"channel_order": "RGB", "pixel_mean": [round(v, 6) for v in mean],
           "pixel_std": [round(v, 6) for v in std], "resize": "shorter_then_center_crop",
           "size": cfg.image_size}
    return {
        "regionfeat.contract_version": CONTRACT_VERSION,
        "regionfeat.name": cfg.name,
        "regionfeat.kind": "grid",
        "regionfeat.preprocess": json.dumps(pre),
        "regionfeat.feature_dim": str(cfg.dim),
        # not part of the contract: provenance and the architecture
        "regionfeat.source": source,
        "regionfeat.vit_config": json.dumps(cfg.to_dict()),
    }


def dummy_images(cfg: vit.ViTConfig, batch=2, seed=0):
    import torch
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, cfg.image_size, cfg.image_size, generator=g)


def export(model, out_path, source, opset=OPSET):
    import onnx
    import torch
    cfg = model.cfg
    out_dir = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(out_dir):
        raise UsageError(f"output directory {out_dir!r} does not exist")
    tmp = out_path + ".tmp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(model.eval(), (dummy_images(cfg),), tmp, dynamo=False, opset_version=opset,
                              input_names=[INPUT], output_names=[OUTPUT],
                              dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                              do_constant_folding=True)
    m = onnx.load(tmp)
    os.remove(tmp)
    for k, v in metadata(cfg, source).items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    m.producer_name = "regionfeat/detector/export_grid.py"
    m.doc_string = f"{cfg.name}: ViT patch-token grid, regionfeat grid contract v{CONTRACT_VERSION}"
    onnx.checker.check_model(m)
    onnx.save(m, out_path)
    return m


def parity(path, model, batch=3, seed=1):
    """Max |ONNX Runtime - PyTorch| on a random batch (also checks the output shape)."""
    import numpy as np
    import onnxruntime as ort
    import torch
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    x = dummy_images(model.cfg, batch, seed)
    (got,) = sess.run([OUTPUT], {INPUT: x.numpy()})
    with torch.no_grad():
        want = model(x).numpy()
    g = model.cfg.grid
    assert got.shape == (batch, g, g, model.cfg.dim), got.shape
    return float(np.abs(got - want).max())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", required=True, help="vit-b16 (timm vit_base_patch16_224) or vit-tiny (tests, demo)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="timm-named .safetensors / .pth / .bin for the preset")
    src.add_argument("--seed", type=int, help="use seeded random weights instead of a checkpoint")
    ap.add_argument("--norm", choices=sorted(vit.NORMS), default="imagenet",
                    help="pixel mean/std in the metadata: imagenet (Frozen-in-Time/DemoVLP, default) "
                         "or inception (0.5/0.5, timm's cfg for the 21k weights)")
    ap.add_argument("--trust-checkpoint", action="store_true",
                    help="unpickle .pth files that hold more than tensors (only files you trust)")
    ap.add_argument("--out", required=True, help="output .onnx path")
    ap.add_argument("--opset", type=int, default=OPSET)
    ap.add_argument("--skip-verify", action="store_true", help="skip the ONNX Runtime parity run")
    args = ap.parse_args(argv)
    try:
        if not args.out.endswith(".onnx"):
            raise UsageError(f"--out {args.out!r} should end in .onnx")
        if args.seed is not None and args.seed < 0:
            raise UsageError("--seed must be >= 0")
        t0 = time.time()
        model, source = build_model(args.preset, seed=args.seed, checkpoint=args.checkpoint,
                                    norm=args.norm, trust=args.trust_checkpoint)
        t1 = time.time()
        export(model, args.out, source, opset=args.opset)
        t2 = time.time()
        msg = (f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB; {source}; "
               f"build {t1 - t0:.1f}s, export {t2 - t1:.1f}s)")
        if not args.skip_verify:
            err = parity(args.out, model)
            if err > 1e-3:
                raise UsageError(f"ONNX Runtime differs from PyTorch by {err:.2e}")
            msg += f"; ONNX Runtime parity ok (max |diff| {err:.1e})"
        print(msg)
        return 0
    except (UsageError, ValueError, vit.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

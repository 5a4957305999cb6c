#!/usr/bin/env python3
"""Export a VG Faster R-CNN (bottom-up attention) to ONNX under schemas/detector-contract.md.

Real weights (MILVLG bua-caffe-frcn-r101_with_attributes.pth or HF frcnn-vg-finetuned
pytorch_model.bin, format detected from the keys):
    python detector/export.py --preset vg-r101 --checkpoint bua-caffe-frcn-r101_with_attributes.pth \\
        --classes objects_vocab.txt --attributes attributes_vocab.txt --out vg-r101.onnx
Seeded random weights (tests, demos, benchmarks):
    python detector/export.py --preset vg-tiny --seed 0 --out vg-tiny.onnx

The graph takes `images` f32 [B,3,H,W], `image_sizes` f32 [B,2] and `image_scales` f32 [B] (B, H, W
dynamic) and returns `boxes`, `class_scores`, `attr_scores`, `features` ([B,R,*]); see
detector/README.md.
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

CONTRACT_VERSION = "1"
OPSET = 17
INPUTS = ["images", "image_sizes", "image_scales"]
OUTPUTS = ["boxes", "class_scores", "attr_scores", "features"]


class UsageError(Exception):
    pass


def read_labels(path: str, expected: int, what: str) -> list:
    """One name per line (bottom-up-attention vocab files: the first comma-separated synonym is
    the name, as their tools use it)."""
    if not os.path.isfile(path):
        raise UsageError(f"{what} file {path!r} does not exist or is not a file")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as e:
        raise UsageError(f"{what} file {path!r} is not UTF-8 text: {e}") from e
    while lines and not lines[-1].strip():
        lines.pop()
    names = []
    for i, line in enumerate(lines, 1):
        name = line.split(",")[0].strip()
        if not name:
            raise UsageError(f"{what} file {path!r}: line {i} is empty")
        names.append(name)
    if len(names) != expected:
        raise UsageError(f"{what} file {path!r} has {len(names)} names but the model has {expected} "
                         f"{what} (without the background / no-attribute slot)")
    return names


def placeholder_labels(prefix: str, n: int) -> list:
    return [f"{prefix}_{i:04d}" for i in range(1, n + 1)]


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_model(preset: str, seed=None, checkpoint=None, fmt=None, trust=False):
    """(model in eval mode, provenance string)."""
    import frcnn
    import presets
    cfg = presets.get(preset)
    if checkpoint is not None:
        import checkpoints
        model, fmt, anchors = checkpoints.build_from_checkpoint(cfg, checkpoint, fmt=fmt, trust=trust)
        source = (f"checkpoint {os.path.basename(checkpoint)} ({fmt}) sha256={sha256_file(checkpoint)[:16]}, "
                  f"{anchors}")
    else:
        model = frcnn.init_seeded(frcnn.VGDetector(cfg), seed).eval()
        source = f"seeded random weights, seed={seed}, anchors generated"
    return model, source


def metadata(cfg, classes, attributes, source) -> dict:
    pre = {"channel_order": "BGR", "pixel_mean": [float(v) for v in cfg.pixel_mean],
           "pixel_std": [1.0, 1.0, 1.0], "shorter_side": cfg.shorter_side, "max_side": cfg.max_side,
           "size_divisibility": 0}
    return {
        "regionfeat.contract_version": CONTRACT_VERSION,
        "regionfeat.name": cfg.name,
        "regionfeat.preprocess": json.dumps(pre),
        "regionfeat.classes": json.dumps(classes),
        "regionfeat.attributes": json.dumps(attributes),
        "regionfeat.feature_dim": str(cfg.feature_dim),
        # not part of the contract: provenance and the settings baked into the graph
        "regionfeat.source": source,
        "regionfeat.detector_config": json.dumps(cfg.to_dict()),
    }


def dummy_inputs(cfg, batch=2):
    """A padded batch for tracing and the smoke run (images, image_sizes, image_scales). The graph
    is size-agnostic, so a small frame keeps the vg-r101 trace quick."""
    import torch
    h, w = min(cfg.shorter_side, 224), min(cfg.max_side, 320)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, h, w, generator=g) * 60.0
    sizes = torch.tensor([[h, w]] + [[max(h - 16 * i, 32), max(w - 24 * i, 32)] for i in range(1, batch)],
                         dtype=torch.float32)
    for i in range(1, batch):
        images[i, :, int(sizes[i, 0]):, :] = 0
        images[i, :, :, int(sizes[i, 1]):] = 0
    scales = torch.tensor([1.0 + 0.25 * i for i in range(batch)], dtype=torch.float32)
    return images, sizes, scales


def export(model, out_path, classes, attributes, source, fp16=False, opset=OPSET):
    """Traces `model` to `out_path` with the contract's names, dynamic axes and metadata."""
    import copy

    import onnx
    import torch

    import fp16 as fp16_mod
    import frcnn
    cfg = model.cfg
    model = model.eval()
    f32_weights = {}
    if fp16:  # see fp16.py: fold BN in f32, trace with a bfloat16 trunk, rewrite to float16
        model = frcnn.fold_batchnorm(copy.deepcopy(model))
        f32_weights = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
        model.set_trunk_dtype(torch.bfloat16)
    inputs = dummy_inputs(cfg)
    dyn = {"images": {0: "batch", 2: "height", 3: "width"}, "image_sizes": {0: "batch"},
           "image_scales": {0: "batch"}}
    for o in OUTPUTS:
        dyn[o] = {0: "batch", 1: "regions"}
    out_dir = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(out_dir):
        raise UsageError(f"output directory {out_dir!r} does not exist")
    tmp = out_path + ".tmp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer / deprecation chatter
        with torch.no_grad():
            torch.onnx.export(model, inputs, tmp, dynamo=False, opset_version=opset,
                              input_names=INPUTS, output_names=OUTPUTS, dynamic_axes=dyn,
                              do_constant_folding=True)
    m = onnx.load(tmp)
    os.remove(tmp)
    if fp16:
        fp16_mod.bf16_graph_to_f16(m, f32_weights)
    for k, v in metadata(cfg, classes, attributes, source).items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    m.producer_name = "regionfeat/detector/export.py"
    m.doc_string = f"{cfg.name}: bottom-up-attention VG Faster R-CNN, regionfeat detector contract v{CONTRACT_VERSION}"
    onnx.checker.check_model(m)
    onnx.save(m, out_path)
    return m


def smoke_run(path, cfg):
    """Runs the exported file once in ONNX Runtime on a padded batch of 2 and checks the outputs."""
    import numpy as np
    import onnxruntime as ort
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    images, sizes, scales = dummy_inputs(cfg)
    feed = {"images": images.numpy(), "image_sizes": sizes.numpy(), "image_scales": scales.numpy()}
    # detectron2-flavour graphs (HF checkpoints) do not use image_scales, so the export drops it
    declared = {i.name for i in sess.get_inputs()}
    boxes, cls, attr, feat = sess.run(OUTPUTS, {k: v for k, v in feed.items() if k in declared})
    b, r = boxes.shape[:2]
    assert cls.shape == (b, r, cfg.num_classes + 1) and attr.shape == (b, r, cfg.num_attributes + 1)
    assert feat.shape == (b, r, cfg.feature_dim)
    assert np.allclose(cls.sum(-1), 1.0, atol=1e-3), "class_scores rows do not sum to 1"
    s = sizes.numpy()
    assert (boxes >= 0).all() and (boxes[..., 2] <= s[:, None, 1]).all() and (boxes[..., 3] <= s[:, None, 0]).all()
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", required=True, help="vg-r101 (the real model) or vg-tiny (tests, demo)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="MILVLG .pth or HF pytorch_model.bin with the preset's architecture")
    src.add_argument("--seed", type=int, help="use seeded random weights instead of a checkpoint")
    ap.add_argument("--checkpoint-format", choices=["auto", "milvlg", "hf"], default="auto")
    ap.add_argument("--trust-checkpoint", action="store_true",
                    help="unpickle checkpoints that hold more than tensors (only for files you trust)")
    ap.add_argument("--classes", help="object names, one per line (bottom-up-attention objects_vocab.txt)")
    ap.add_argument("--attributes", help="attribute names, one per line (attributes_vocab.txt)")
    ap.add_argument("--out", required=True, help="output .onnx path")
    ap.add_argument("--fp16", action="store_true",
                    help="half-precision trunk and float16 `features` (for GPU execution providers)")
    ap.add_argument("--opset", type=int, default=OPSET)
    ap.add_argument("--skip-verify", action="store_true", help="do not run the exported file once in ONNX Runtime")
    args = ap.parse_args(argv)

    import checkpoints
    import presets
    try:
        cfg = presets.get(args.preset)
        if not args.out.endswith(".onnx"):
            raise UsageError(f"--out {args.out!r} should end in .onnx")
        if args.seed is not None and args.seed < 0:
            raise UsageError("--seed must be >= 0")
        if args.checkpoint is not None and not os.path.isfile(args.checkpoint):
            raise UsageError(f"--checkpoint {args.checkpoint!r} does not exist or is not a file")
        classes = (read_labels(args.classes, cfg.num_classes, "classes") if args.classes
                   else placeholder_labels("class", cfg.num_classes))
        attributes = (read_labels(args.attributes, cfg.num_attributes, "attributes") if args.attributes
                      else placeholder_labels("attribute", cfg.num_attributes))
        for flag, given in (("--classes", args.classes), ("--attributes", args.attributes)):
            if not given:
                print(f"warning: {flag} not given: writing placeholder names "
                      f"({'class_0001' if flag == '--classes' else 'attribute_0001'}, ...)", file=sys.stderr)

        fmt = None if args.checkpoint_format == "auto" else args.checkpoint_format
        t0 = time.time()
        model, source = build_model(args.preset, seed=args.seed, checkpoint=args.checkpoint,
                                    fmt=fmt, trust=args.trust_checkpoint)
        t1 = time.time()
        export(model, args.out, classes, attributes, source, fp16=args.fp16, opset=args.opset)
        t2 = time.time()
        msg = f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB; {source}; build {t1 - t0:.1f}s, export {t2 - t1:.1f}s)"
        if not args.skip_verify:
            r = smoke_run(args.out, model.cfg)
            msg += f"; ONNX Runtime check ok (padded batch of 2, R={r})"
        print(msg)
        return 0
    except (UsageError, ValueError, checkpoints.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

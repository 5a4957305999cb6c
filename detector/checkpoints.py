"""Load public VG Faster R-CNN checkpoints into `frcnn.VGDetector`.

Two formats are understood (key/shape tables: `key_tables/*.tsv`):

* ``milvlg`` — MILVLG bottom-up-attention.pytorch ``bua-caffe-frcn-r101_with_attributes.pth``
  (the original Caffe model converted to detectron2 naming). Our module names are theirs, so the
  map is the identity. Box conventions: Caffe ("caffe" flavour). Anchors: the checkpoint's own
  ``proposal_generator.anchor_generator.cell_anchors.0`` buffer when it has one (detectron2
  saves it with some exports), else py-faster-rcnn ``generate_anchors``.
* ``hf`` — HF ``unc-nlp/frcnn-vg-finetuned`` ``pytorch_model.bin`` (transformers
  ``examples/research_projects/lxmert/modeling_frcnn.py``, weights from airsplay's
  py-bottom-up-attention conversion). Differences handled here:
    - class logits have background *last*: rolled so background is column 0;
    - class-specific box regression has no background slot: a zero slot is inserted first;
    - attribute head ``cls_embedding``/``fc_attr``/``attr_score`` -> ``cls_embed``/
      ``attr_linear1``/``attr_linear2``; its embedding rows and "no attribute" slot (last) rolled
      the same way;
    - RPN objectness is one sigmoid logit per anchor: written as the foreground logit of a
      two-way softmax with a zero background logit (softmax([0, l])[1] == sigmoid(l));
    - anchors come from the checkpoint's ``proposal_generator.anchor_generator.cell_anchors.0``;
      box conventions are detectron2's ("detectron2" flavour, no minimum proposal size).

Every tensor the model needs must be present with the right shape; otherwise loading fails with
a message naming each missing or mis-shaped tensor.
"""
from __future__ import annotations

import os
import sys
from dataclasses import replace

import torch

from frcnn import DetectorConfig, VGDetector

FORMATS = ("milvlg", "hf")
_IGNORED_SUFFIXES = ("num_batches_tracked",)
# Where detectron2's DefaultAnchorGenerator keeps the cell anchors of feature level N (one level in
# a C4 model).
CHECKPOINT_ANCHORS = "proposal_generator.anchor_generator.cell_anchors.0"
_ANCHORS = "proposal_generator.cell_anchors"


class CheckpointError(Exception):
    pass


def read_state_dict(path: str, trust: bool = False) -> dict:
    """Reads a .pth/.bin/.pkl file into a flat {key: tensor} dict (unwraps 'model'/'state_dict',
    strips 'module.' prefixes, converts numpy arrays)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist or is not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds
        if not trust and "weights_only" in str(e):
            raise CheckpointError(
                f"checkpoint {path!r} contains Python objects besides tensors; if you trust the file, "
                f"re-run with --trust-checkpoint to unpickle it fully ({str(e).splitlines()[0]})") from e
        if path.endswith(".pkl"):
            import pickle
            try:
                with open(path, "rb") as f:
                    obj = pickle.load(f, encoding="latin1") if trust else None
            except Exception as e2:  # noqa: BLE001
                raise CheckpointError(f"cannot read checkpoint {path!r}: {e2}") from e2
            if obj is None:
                raise CheckpointError(f"{path!r} is a pickle; re-run with --trust-checkpoint to read it")
        else:
            raise CheckpointError(f"cannot read checkpoint {path!r}: {e}") from e
    for wrap in ("model", "state_dict"):
        if isinstance(obj, dict) and wrap in obj and isinstance(obj[wrap], dict):
            obj = obj[wrap]
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path!r} holds a {type(obj).__name__}, not a state dict")
    out = {}
    for k, v in obj.items():
        k = k[len("module."):] if k.startswith("module.") else k
        if not torch.is_tensor(v):
            try:
                import numpy as np
                if isinstance(v, np.ndarray):
                    v = torch.from_numpy(v)
            except ImportError:
                pass
        if torch.is_tensor(v):
            out[k] = v
    if not out:
        raise CheckpointError(f"checkpoint {path!r} contains no tensors")
    return out


def detect_format(sd: dict) -> str:
    if "roi_heads.box_predictor.attr_linear1.weight" in sd or "roi_heads.box_predictor.cls_embed.weight" in sd:
        return "milvlg"
    if "roi_heads.box_predictor.fc_attr.weight" in sd or "roi_heads.box_predictor.cls_embedding.weight" in sd:
        return "hf"
    raise CheckpointError(
        "cannot tell the checkpoint format: expected MILVLG keys (roi_heads.box_predictor.attr_linear1.*, "
        "cls_embed.*) or HF frcnn keys (roi_heads.box_predictor.fc_attr.*, cls_embedding.*); "
        "pass --checkpoint-format if the file is one of them")


def adapt_config(cfg: DetectorConfig, fmt: str) -> DetectorConfig:
    """The box conventions that go with a checkpoint family."""
    if fmt == "milvlg":
        return replace(cfg, flavour="caffe")
    if fmt == "hf":
        # airsplay/HF config: anchor sizes 64..512 px (size-major), PROPOSAL_GENERATOR.MIN_SIZE 0.
        return replace(cfg, flavour="detectron2", anchor_scales=tuple(s * cfg.feature_stride for s in cfg.anchor_scales),
                       min_proposal_size=0.0)
    raise CheckpointError(f"unknown checkpoint format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _roll_first(t: torch.Tensor) -> torch.Tensor:
    """Move the last row (background / no attribute in detectron2 order) to the front."""
    return torch.cat([t[-1:], t[:-1]], dim=0)


def _hf_source(key: str) -> str:
    p = "roi_heads.box_predictor."
    ren = {"cls_embed.": "cls_embedding.", "attr_linear1.": "fc_attr.", "attr_linear2.": "attr_score."}
    if key.startswith(p):
        rest = key[len(p):]
        for a, b in ren.items():
            if rest.startswith(a):
                return p + b + rest[len(a):]
    if key == _ANCHORS:
        return CHECKPOINT_ANCHORS
    return key


def _hf_transform(key: str, src: torch.Tensor, want: tuple):
    """(tensor in our layout, expected source shape)."""
    a2 = "proposal_generator.rpn_head.objectness_logits."
    bp = "roi_heads.box_predictor."
    if key.startswith(a2):
        exp = (want[0] // 2,) + tuple(want[1:])
        return (lambda: torch.cat([torch.zeros_like(src), src], dim=0)), exp
    if key in (bp + "cls_score.weight", bp + "cls_score.bias", bp + "cls_embed.weight",
               bp + "attr_linear2.weight", bp + "attr_linear2.bias"):
        return (lambda: _roll_first(src)), want
    if key.startswith(bp + "bbox_pred."):
        exp = (want[0] - 4,) + tuple(want[1:])
        return (lambda: torch.cat([torch.zeros((4,) + tuple(src.shape[1:]), dtype=src.dtype), src], dim=0)), exp
    return (lambda: src), want


def anchor_source(sd: dict, fmt: str) -> str:
    """Where the model's cell anchors come from, for the export log: the checkpoint's own
    buffer, or (MILVLG files without one) py-faster-rcnn's `generate_anchors`."""
    if CHECKPOINT_ANCHORS in sd or fmt == "hf":
        return f"anchors from the checkpoint ({CHECKPOINT_ANCHORS})"
    return "anchors generated (py-faster-rcnn generate_anchors; the checkpoint has none)"


def load_into(model: VGDetector, sd: dict, fmt: str) -> list:
    """Copies `sd` into `model` (whose config must already be adapted to `fmt`). Returns the list
    of checkpoint keys that were not used. Raises CheckpointError naming every missing or
    mis-shaped tensor."""
    target = model.state_dict()
    new, missing, bad, used = {}, [], [], set()
    levels = sorted(k for k in sd if k.startswith(CHECKPOINT_ANCHORS[:-1]) and k != CHECKPOINT_ANCHORS)
    if levels:
        bad.append(f"{', '.join(levels)}: the checkpoint has anchors for more than one feature level; "
                   f"this C4 model has one ({CHECKPOINT_ANCHORS})")
    for key, t in target.items():
        if key.endswith(_IGNORED_SUFFIXES):
            continue
        src_key = key if fmt == "milvlg" else _hf_source(key)
        if key == _ANCHORS and fmt == "milvlg":
            if CHECKPOINT_ANCHORS not in sd:
                continue  # the model keeps its generated py-faster-rcnn anchors
            src_key = CHECKPOINT_ANCHORS
        if src_key not in sd:
            missing.append(src_key)
            continue
        src = sd[src_key]
        used.add(src_key)
        if fmt == "hf":
            make, exp = _hf_transform(key, src, tuple(t.shape))
        else:
            make, exp = (lambda s=src: s), tuple(t.shape)
        if tuple(src.shape) != tuple(exp):
            bad.append(f"{src_key}: checkpoint has {list(src.shape)}, model needs {list(exp)}")
            continue
        new[key] = make().to(t.dtype)
    if missing or bad:
        lines = []
        if missing:
            lines.append(f"{len(missing)} tensor(s) missing: " + ", ".join(missing[:20])
                         + (f", ... ({len(missing) - 20} more)" if len(missing) > 20 else ""))
        if bad:
            lines.append(f"{len(bad)} tensor(s) with the wrong shape: " + "; ".join(bad[:20])
                         + (f"; ... ({len(bad) - 20} more)" if len(bad) > 20 else ""))
        raise CheckpointError(f"{fmt} checkpoint does not fit preset {model.cfg.name!r}:\n  " + "\n  ".join(lines))
    result = model.load_state_dict(new, strict=False)
    leftover = [k for k in result.missing_keys if not k.endswith(_IGNORED_SUFFIXES)
                and not (k == _ANCHORS and fmt == "milvlg")]
    assert not leftover, leftover
    return sorted(k for k in sd if k not in used and not k.endswith(_IGNORED_SUFFIXES))


def build_from_checkpoint(cfg: DetectorConfig, path: str, fmt: str | None = None, trust: bool = False):
    """Reads `path`, picks the format (auto unless given), adapts the config, builds and loads.
    Returns (model, format, where the anchors came from)."""
    sd = read_state_dict(path, trust=trust)
    fmt = fmt or detect_format(sd)
    cfg = adapt_config(cfg, fmt)
    model = VGDetector(cfg)
    unused = load_into(model, sd, fmt)
    if unused:
        print(f"warning: {len(unused)} checkpoint tensor(s) not used: {', '.join(unused[:10])}"
              + (" ..." if len(unused) > 10 else ""), file=sys.stderr)
    return model.eval(), fmt, anchor_source(sd, fmt)


def read_key_table(path: str) -> list:
    """[(key, shape)] from a key_tables/*.tsv file."""
    rows = []
    with open(path) as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            k, shape = line.rstrip("\n").split("\t")
            rows.append((k, tuple(int(d) for d in shape.split(",")) if shape else ()))
    return rows

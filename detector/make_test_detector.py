#!/usr/bin/env python3
"""Write a small, deterministic ONNX detector that honours schemas/detector-contract.md.

It is not a trained model: candidate boxes come from two fixed grids (6x6 and 3x3 cells, so
boxes overlap and NMS matters), jittered by the cell's colour; class/attribute scores and
features are seeded random projections of each cell's mean colour and position. It runs in
milliseconds on CPU, so tests and the demo exercise the real ONNX Runtime path end to end.

With --image-scales the model also declares the contract's optional `image_scales` input and
writes each frame's value into feature column 0 of every candidate, so tests can see what the
extractor feeds.

Usage: make_test_detector.py OUT.onnx [--feature-dim 64] [--seed 0] [--omit-metadata KEY]
       [--nan-boxes] [--shorter-side N --max-side N] [--image-scales]
"""
import argparse
import json
import sys

import numpy as np

try:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError:
    sys.exit("make_test_detector.py needs the 'onnx' package: run scripts/setup.sh (or pip install onnx numpy)")

CLASSES = ["person", "man", "woman", "car", "tree", "building", "sky", "grass", "road", "dog",
           "cat", "shirt", "window", "table", "cup", "horse", "rabbit", "rocket", "motorcycle", "camera"]
ATTRIBUTES = ["white", "black", "red", "green", "blue", "large", "small", "wooden", "metal", "grey"]
GRIDS = (6, 3)
HIDDEN = 32
PREPROCESS = {"channel_order": "BGR", "pixel_mean": [102.98, 115.95, 122.77],
              "pixel_std": [1.0, 1.0, 1.0], "shorter_side": 96, "max_side": 160, "size_divisibility": 0}


def build(feature_dim: int, seed: int, omit=(), nan_boxes=False, sizes=None,
          image_scales=False) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    r_total = sum(g * g for g in GRIDS)
    c1, a1 = len(CLASSES) + 1, len(ATTRIBUTES) + 1

    unit_boxes, pos = [], []
    for g in GRIDS:
        for y in range(g):
            for x in range(g):
                unit_boxes.append([x / g, y / g, (x + 1) / g, (y + 1) / g])
                pos.append([x / g, y / g, 1.0 / g])
    unit_boxes = np.array(unit_boxes, np.float32)
    pos = np.array(pos, np.float32)

    inits = {
        "w_in": rng.normal(0, 1.0, (3, HIDDEN)).astype(np.float32) / 60.0,
        "pos_emb": (pos @ rng.normal(0, 2.0, (3, HIDDEN))).astype(np.float32),
        "w_cls": rng.normal(0, 1.5, (HIDDEN, c1)).astype(np.float32),
        "w_attr": rng.normal(0, 1.5, (HIDDEN, a1)).astype(np.float32),
        "w_feat": rng.normal(0, 1.0, (HIDDEN, feature_dim)).astype(np.float32),
        "w_box": rng.normal(0, 0.5, (HIDDEN, 4)).astype(np.float32),
        "unit_boxes": unit_boxes,
        "jitter": np.array([0.05], np.float32),
        "zero": np.array([0.0], np.float32),
        "one": np.array([1.0], np.float32),
        "hw_to_whwh": np.array([1, 0, 1, 0], np.int64),
        "perm_axes": np.array([1], np.int64),
        "last_axis": np.array([-1], np.int64),
        "rc": np.array([3, -1], np.int64),
    }
    nodes = []
    shape_concat_inputs = ["batch_ch"]
    cells = []
    for g in GRIDS:
        inits[f"grid{g}"] = np.array([g, g], np.int64)
        nodes += [
            helper.make_node("Concat", ["batch_ch", f"grid{g}"], [f"sizes{g}"], axis=0),
            # Area-like downsampling: linear resize of the whole frame to g x g cells.
            helper.make_node("Resize", ["images", "", "", f"sizes{g}"], [f"pooled{g}"], mode="linear"),
            helper.make_node("Flatten", [f"pooled{g}"], [f"flat{g}"], axis=2),  # [B*3, g*g]? no: axis=2 -> [B*3, g*g]
        ]
        cells.append(g)
    # Shape bookkeeping: batch and channel dims of the input.
    nodes.insert(0, helper.make_node("Shape", ["images"], ["in_shape"], start=0, end=2))
    nodes.insert(1, helper.make_node("Identity", ["in_shape"], ["batch_ch"]))
    inits["bc_shape"] = np.array([-1, 3, 0], np.int64)
    for g in GRIDS:
        nodes.append(helper.make_node("Reshape", [f"pooled{g}", "bc_shape_cells"], [f"cells{g}"]))
    inits["bc_shape_cells"] = np.array([0, 3, -1], np.int64)  # [B, 3, g*g]
    nodes += [
        helper.make_node("Concat", [f"cells{g}" for g in GRIDS], ["cells"], axis=2),      # [B,3,R]
        helper.make_node("Transpose", ["cells"], ["cells_t"], perm=[0, 2, 1]),            # [B,R,3]
        helper.make_node("MatMul", ["cells_t", "w_in"], ["h0"]),
        helper.make_node("Add", ["h0", "pos_emb"], ["h1"]),
        helper.make_node("Tanh", ["h1"], ["hidden"]),                                     # [B,R,H]
        helper.make_node("MatMul", ["hidden", "w_cls"], ["cls_logits"]),
        helper.make_node("Softmax", ["cls_logits"], ["class_scores"], axis=-1),
        helper.make_node("MatMul", ["hidden", "w_attr"], ["attr_logits"]),
        helper.make_node("Softmax", ["attr_logits"], ["attr_scores"], axis=-1),
        helper.make_node("MatMul", ["hidden", "w_feat"], ["feat_lin"]),
        helper.make_node("Relu", ["feat_lin"], ["features" if not image_scales else "feat_relu"]),
        helper.make_node("MatMul", ["hidden", "w_box"], ["box_lin"]),
        helper.make_node("Tanh", ["box_lin"], ["box_t"]),
        helper.make_node("Mul", ["box_t", "jitter"], ["box_j"]),
        helper.make_node("Add", ["unit_boxes", "box_j"], ["box_u"]),
        helper.make_node("Clip", ["box_u", "zero", "one"], ["box_c"]),                   # [B,R,4] in 0..1
        helper.make_node("Gather", ["image_sizes", "hw_to_whwh"], ["whwh"], axis=1),       # [B,4]
        helper.make_node("Unsqueeze", ["whwh", "perm_axes"], ["whwh_u"]),                  # [B,1,4]
        helper.make_node("Mul", ["box_c", "whwh_u"], ["boxes_ok" if nan_boxes else "boxes"]),
    ]
    if nan_boxes:  # tests only: a model gone bad, whose boxes are all NaN
        nodes.append(helper.make_node("Mul", ["boxes_ok", "box_poison"], ["boxes"]))
        inits["box_poison"] = np.array([np.nan], np.float32)
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["B", 3, "H", "W"]),
              helper.make_tensor_value_info("image_sizes", TensorProto.FLOAT, ["B", 2])]
    if image_scales:
        # features[..., 0] = image_scales[b] (col0 * 0 + scale broadcasts the [B,1,1] scale to [B,R,1])
        inits.update({"scale_axes": np.array([1, 2], np.int64), "s0": np.array([0], np.int64),
                      "s1": np.array([1], np.int64), "s_end": np.array([feature_dim], np.int64),
                      "ax2": np.array([2], np.int64)})
        nodes += [
            helper.make_node("Unsqueeze", ["image_scales", "scale_axes"], ["scale_b11"]),
            helper.make_node("Slice", ["feat_relu", "s0", "s1", "ax2"], ["col0"]),
            helper.make_node("Mul", ["col0", "zero"], ["col0_zero"]),
            helper.make_node("Add", ["col0_zero", "scale_b11"], ["scale_col"]),
            helper.make_node("Slice", ["feat_relu", "s1", "s_end", "ax2"], ["rest"]),
            helper.make_node("Concat", ["scale_col", "rest"], ["features"], axis=2),
        ]
        inputs.append(helper.make_tensor_value_info("image_scales", TensorProto.FLOAT, ["B"]))
    # Drop the unused Flatten nodes (kept above only as a reminder would confuse readers).
    nodes = [n for n in nodes if n.op_type != "Flatten"]
    del inits["bc_shape"], inits["rc"], inits["last_axis"]

    graph = helper.make_graph(
        nodes,
        "regionfeat_test_grid_detector",
        inputs,
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["B", r_total, 4]),
         helper.make_tensor_value_info("class_scores", TensorProto.FLOAT, ["B", r_total, c1]),
         helper.make_tensor_value_info("attr_scores", TensorProto.FLOAT, ["B", r_total, a1]),
         helper.make_tensor_value_info("features", TensorProto.FLOAT, ["B", r_total, feature_dim])],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="regionfeat/detector/make_test_detector.py")
    model.ir_version = 8
    meta = {
        "regionfeat.contract_version": "1",
        "regionfeat.name": "test-grid",
        "regionfeat.preprocess": json.dumps({**PREPROCESS, **(sizes or {})}),
        "regionfeat.classes": json.dumps(CLASSES),
        "regionfeat.attributes": json.dumps(ATTRIBUTES),
        "regionfeat.feature_dim": str(feature_dim),
    }
    for k in omit:  # for tests of the contract check only
        meta.pop(k, None)
    for k, v in meta.items():
        onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, k: v})
    onnx.checker.check_model(model)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--feature-dim", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--omit-metadata", action="append", default=[], metavar="KEY",
                    help="leave out a contract metadata key (to test that regionfeat refuses the model)")
    ap.add_argument("--nan-boxes", action="store_true",
                    help="output NaN boxes (to test that regionfeat fails such items)")
    ap.add_argument("--shorter-side", type=int, help="declare another preprocess.shorter_side")
    ap.add_argument("--max-side", type=int, help="declare another preprocess.max_side")
    ap.add_argument("--image-scales", action="store_true",
                    help="declare the optional image_scales input and write it into feature column 0")
    args = ap.parse_args()
    if args.feature_dim <= 0:
        sys.exit("--feature-dim must be positive")
    sizes = {k: v for k, v in (("shorter_side", args.shorter_side), ("max_side", args.max_side)) if v is not None}
    onnx.save(build(args.feature_dim, args.seed, args.omit_metadata, args.nan_boxes, sizes, args.image_scales),
              args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

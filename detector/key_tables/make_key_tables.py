#!/usr/bin/env python3
"""Write the key/shape tables of the two public VG Faster R-CNN checkpoints:

  milvlg_bua_caffe_r101.tsv   MILVLG bottom-up-attention.pytorch `bua-caffe-frcn-r101_with_attributes.pth`
  hf_frcnn_vg_finetuned.tsv   HF `unc-nlp/frcnn-vg-finetuned` `pytorch_model.bin`

The tables are derived from the *source* module trees, independently of our own model code, so
that the loader tests check our key mapping against them:
  - MILVLG: bua/caffe/modeling/{backbone,rpn,roi_heads,fast_rcnn}.py on detectron2 v0.2.1;
    FREEZE_AT=3 turns the stem, res2 and res3 norms into FrozenBatchNorm2d (no
    num_batches_tracked); RPN head: StandardBUARPNHead (512 channels, 2 logits per anchor);
    box predictor: BUACaffeFastRCNNOutputLayers(num_classes=1601, attr_on, 401 attributes).
  - HF: transformers/examples/research_projects/lxmert/modeling_frcnn.py; BatchNorm2d everywhere;
    RPNHead (HIDDEN_CHANNELS 512, 1 logit per anchor); AnchorGenerator keeps its cell anchors as a
    ParameterList (`cell_anchors.0`); FastRCNNOutputLayers(num_classes=1600, use_attr,
    num_attrs=400): cls_score 1601 (background last), bbox_pred 1600*4, cls_embedding,
    fc_attr, attr_score (401, "no attribute" last).
Run from anywhere: python detector/key_tables/make_key_tables.py
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
BLOCKS = (3, 4, 23)
NUM_ANCHORS = 12


def conv_bn(p, cout, cin, k, frozen):
    rows = [(f"{p}.weight", (cout, cin, k, k))]
    for n in ("weight", "bias", "running_mean", "running_var"):
        rows.append((f"{p}.norm.{n}", (cout,)))
    if not frozen:
        rows.append((f"{p}.norm.num_batches_tracked", ()))
    return rows


def bottleneck(p, cin, b, cout, frozen):
    rows = []
    if cin != cout:
        rows += conv_bn(f"{p}.shortcut", cout, cin, 1, frozen)
    rows += conv_bn(f"{p}.conv1", b, cin, 1, frozen)
    rows += conv_bn(f"{p}.conv2", b, b, 3, frozen)
    rows += conv_bn(f"{p}.conv3", cout, b, 1, frozen)
    return rows


def trunk(frozen_upto):
    """stem + res2..res4 under `backbone.` and res5 under `roi_heads.`; frozen_upto = FREEZE_AT."""
    rows = conv_bn("backbone.stem.conv1", 64, 3, 7, frozen_upto >= 1)
    cin, b, c = 64, 64, 256
    for si, n in enumerate(BLOCKS):
        stage = si + 2
        for i in range(n):
            rows += bottleneck(f"backbone.res{stage}.{i}", cin, b, c, frozen_upto >= stage)
            cin = c
        b, c = b * 2, c * 2
    for i in range(3):
        rows += bottleneck(f"roi_heads.res5.{i}", 1024 if i == 0 else 2048, 512, 2048, False)
    return rows


def milvlg():
    rows = trunk(3)
    rows += [
        ("proposal_generator.rpn_head.conv.weight", (512, 1024, 3, 3)),
        ("proposal_generator.rpn_head.conv.bias", (512,)),
        ("proposal_generator.rpn_head.objectness_logits.weight", (2 * NUM_ANCHORS, 512, 1, 1)),
        ("proposal_generator.rpn_head.objectness_logits.bias", (2 * NUM_ANCHORS,)),
        ("proposal_generator.rpn_head.anchor_deltas.weight", (4 * NUM_ANCHORS, 512, 1, 1)),
        ("proposal_generator.rpn_head.anchor_deltas.bias", (4 * NUM_ANCHORS,)),
        ("roi_heads.box_predictor.cls_score.weight", (1601, 2048)),
        ("roi_heads.box_predictor.cls_score.bias", (1601,)),
        ("roi_heads.box_predictor.bbox_pred.weight", (1601 * 4, 2048)),
        ("roi_heads.box_predictor.bbox_pred.bias", (1601 * 4,)),
        ("roi_heads.box_predictor.cls_embed.weight", (1601, 256)),
        ("roi_heads.box_predictor.attr_linear1.weight", (512, 2048 + 256)),
        ("roi_heads.box_predictor.attr_linear1.bias", (512,)),
        ("roi_heads.box_predictor.attr_linear2.weight", (401, 512)),
        ("roi_heads.box_predictor.attr_linear2.bias", (401,)),
    ]
    return rows


def hf():
    rows = trunk(0)
    rows += [
        ("proposal_generator.anchor_generator.cell_anchors.0", (NUM_ANCHORS, 4)),
        ("proposal_generator.rpn_head.conv.weight", (512, 1024, 3, 3)),
        ("proposal_generator.rpn_head.conv.bias", (512,)),
        ("proposal_generator.rpn_head.objectness_logits.weight", (NUM_ANCHORS, 512, 1, 1)),
        ("proposal_generator.rpn_head.objectness_logits.bias", (NUM_ANCHORS,)),
        ("proposal_generator.rpn_head.anchor_deltas.weight", (4 * NUM_ANCHORS, 512, 1, 1)),
        ("proposal_generator.rpn_head.anchor_deltas.bias", (4 * NUM_ANCHORS,)),
        ("roi_heads.box_predictor.cls_score.weight", (1601, 2048)),
        ("roi_heads.box_predictor.cls_score.bias", (1601,)),
        ("roi_heads.box_predictor.bbox_pred.weight", (1600 * 4, 2048)),
        ("roi_heads.box_predictor.bbox_pred.bias", (1600 * 4,)),
        ("roi_heads.box_predictor.cls_embedding.weight", (1601, 256)),
        ("roi_heads.box_predictor.fc_attr.weight", (512, 2048 + 256)),
        ("roi_heads.box_predictor.fc_attr.bias", (512,)),
        ("roi_heads.box_predictor.attr_score.weight", (401, 512)),
        ("roi_heads.box_predictor.attr_score.bias", (401,)),
    ]
    return rows


def write(name, rows, header):
    path = os.path.join(HERE, name)
    with open(path, "w") as f:
        f.write(f"# {header}\n# key\tshape (comma-separated; empty = scalar)\n")
        for k, shape in rows:
            f.write(f"{k}\t{','.join(str(d) for d in shape)}\n")
    print(f"wrote {path} ({len(rows)} tensors)")


if __name__ == "__main__":
    write("milvlg_bua_caffe_r101.tsv", milvlg(),
          "MILVLG bottom-up-attention.pytorch bua-caffe-frcn-r101_with_attributes.pth (state_dict under 'model')")
    write("hf_frcnn_vg_finetuned.tsv", hf(), "HF unc-nlp/frcnn-vg-finetuned pytorch_model.bin")

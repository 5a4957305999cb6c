"""An independent numpy transcription of the proposal rule of py-faster-rcnn's `proposal_layer.py`
with the box conventions of MILVLG's `find_top_bua_rpn_proposals` (the Caffe VG model), one image
at a time, for the tests of frcnn.py's batched graph:

  1. fg probability = softmax over (background, foreground) logits, computed in float64 from the
     network's float32 logits (the exact order of the probabilities; no float32 saturation);
  2. anchors (H, W, A order): cell anchors shifted by (x, y) * feature stride;
  3. decode: widths x2 - x1 + 1, centre x1 + w/2, dw/dh clamped at log(1000/16) (MILVLG);
  4. clip to [0, w-1] x [0, h-1];
  5. drop boxes with x2 <= x1 or y2 <= y1, then boxes whose side (x2 - x1 + 1) is not above
     min_size * im_scale (MILVLG `nonempty(min_size * image_scales[n])`; py-faster-rcnn
     `_filter_boxes(proposals, min_size * im_info[2])`);
  6. sort by probability (descending), keep pre_nms_topk;
  7. greedy NMS with pixel-inclusive IoU (+1), suppressing IoU > thresh;
  8. keep post_nms_topk.
Boxes are computed in float32, as both originals do.
"""
import math

import numpy as np

SCALE_CLAMP = math.log(1000.0 / 16)


def anchors_for(cell_anchors, feat_h, feat_w, stride):
    cell = np.asarray(cell_anchors, np.float32)
    ys, xs = np.meshgrid(np.arange(feat_h) * stride, np.arange(feat_w) * stride, indexing="ij")
    shifts = np.stack([xs.ravel(), ys.ravel(), xs.ravel(), ys.ravel()], 1).astype(np.float32)
    return (shifts[:, None, :] + cell[None, :, :]).reshape(-1, 4)


def nms(boxes, thresh):
    """Greedy NMS over boxes already in score order; returns kept indices."""
    x1, y1, x2, y2 = boxes.T.astype(np.float64)
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.arange(len(boxes))
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1 + 1) * np.maximum(0.0, yy2 - yy1 + 1)
        iou = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[1:][iou <= thresh]
    return np.array(keep, np.int64)


def proposals(logits, deltas, cell_anchors, stride, image_hw, im_scale, min_size, pre_nms_topk,
              post_nms_topk, nms_thresh):
    """logits [2A,Hf,Wf] (A background then A foreground channels), deltas [4A,Hf,Wf] of one
    image; returns (boxes [K,4] float32, fg probabilities [K] float64) in rank order."""
    logits = np.asarray(logits, np.float32)
    deltas = np.asarray(deltas, np.float32)
    a2, fh, fw = logits.shape
    a = a2 // 2
    l64 = logits.astype(np.float64)
    prob = 1.0 / (1.0 + np.exp(l64[:a] - l64[a:]))  # softmax([bg, fg])[fg]
    prob = prob.transpose(1, 2, 0).reshape(-1)  # (H, W, A)
    d = deltas.reshape(a, 4, fh, fw).transpose(2, 3, 0, 1).reshape(-1, 4)
    anc = anchors_for(cell_anchors, fh, fw, stride)

    w = anc[:, 2] - anc[:, 0] + np.float32(1)
    h = anc[:, 3] - anc[:, 1] + np.float32(1)
    cx = anc[:, 0] + np.float32(0.5) * w
    cy = anc[:, 1] + np.float32(0.5) * h
    dw = np.minimum(d[:, 2], np.float32(SCALE_CLAMP))
    dh = np.minimum(d[:, 3], np.float32(SCALE_CLAMP))
    pcx = d[:, 0] * w + cx
    pcy = d[:, 1] * h + cy
    pw = np.exp(dw) * w
    ph = np.exp(dh) * h
    boxes = np.stack([pcx - np.float32(0.5) * pw, pcy - np.float32(0.5) * ph,
                      pcx + np.float32(0.5) * pw, pcy + np.float32(0.5) * ph], 1).astype(np.float32)

    im_h, im_w = image_hw
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, np.float32(im_w - 1))
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, np.float32(im_h - 1))
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    bw = boxes[:, 2] - boxes[:, 0] + np.float32(1)
    bh = boxes[:, 3] - boxes[:, 1] + np.float32(1)
    thr = np.float32(min_size * im_scale)
    keep &= (bw > thr) & (bh > thr)
    boxes, prob = boxes[keep], prob[keep]

    order = np.argsort(-prob, kind="stable")[:pre_nms_topk]
    boxes, prob = boxes[order], prob[order]
    kept = nms(boxes, nms_thresh)[:post_nms_topk]
    return boxes[kept], prob[kept]

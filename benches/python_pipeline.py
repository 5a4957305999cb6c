#!/usr/bin/env python3
"""A straightforward Python extraction pipeline doing the same work as `regionfeat extract`
(issue 7 baseline): PyAV decode of the same frames (segment midpoints, frame on screen, one
seek per sample like decode_ref.py) resized by the same rule with swscale bilinear, the same
normalisation (channel order, mean/std, CHW), the same batches (whole items in manifest order,
`--batch-size` frames per run, zero-padded bottom/right), onnxruntime with the same model, the
same selection (per-class NMS, confidence threshold, min/max boxes) in numpy, and an HDF5
shard with the same datasets, chunks and filters written with h5py. One process, sequential.

    python benches/python_pipeline.py --manifest M.jsonl --detector MODEL.onnx --out DIR
        [--frames 8] [--batch-size 8] [--feature-dtype f16|f32] [--compression gzip|lzf|none]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import av
import h5py
import numpy as np

from pyav_sampling import sample_pyav
import onnxruntime as ort

IMAGE_EXT = {"jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff", "ppm", "pgm"}


def rnd(x: float) -> int:
    return int(math.floor(x + 0.5))


def im_scale(w: int, h: int, short: int, max_side: int) -> float:
    """The resize factor (py-faster-rcnn im_scale; the detector's optional image_scales input)."""
    s, l = min(w, h), max(w, h)
    scale = short / s
    if rnd(l * scale) > max_side:
        scale = max_side / l
    return scale


def resize_rule(w: int, h: int, short: int, max_side: int) -> tuple[int, int]:
    scale = im_scale(w, h, short, max_side)
    return max(1, rnd(w * scale)), max(1, rnd(h * scale))


def decode(path: str, is_image: bool, n: int, short: int, max_side: int):
    """-> (frames [list of HxWx3 uint8 RGB at the resized size], times, frame_times, W, H, duration)."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"
        stream.codec_context.thread_count = 1

        def rgb(frame):
            w, h = resize_rule(frame.width, frame.height, short, max_side)
            return frame.reformat(width=w, height=h, format="rgb24", interpolation="BILINEAR").to_ndarray()

        if is_image:
            frame = next(container.decode(stream))
            return [rgb(frame)], [0.0], [0.0], frame.width, frame.height, 0.0
        duration, targets, frame_times, frames, size = sample_pyav(container, stream, n, rgb)
        return frames, targets, frame_times, size[0], size[1], duration


def prepare(rgb: np.ndarray, pre: dict) -> np.ndarray:
    x = rgb[:, :, ::-1] if pre["channel_order"].upper() == "BGR" else rgb
    x = (x.astype(np.float32) - np.asarray(pre["pixel_mean"], np.float32)) / np.asarray(pre["pixel_std"], np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def make_batch(chws: list[np.ndarray], div: int):
    rd = (lambda v: v) if div in (0, 1) else (lambda v: -(-v // div) * div)
    h = rd(max(c.shape[1] for c in chws))
    w = rd(max(c.shape[2] for c in chws))
    images = np.zeros((len(chws), 3, h, w), np.float32)
    sizes = np.zeros((len(chws), 2), np.float32)
    for i, c in enumerate(chws):
        images[i, :, : c.shape[1], : c.shape[2]] = c
        sizes[i] = (c.shape[1], c.shape[2])
    return images, sizes


def iou_one(b: np.ndarray, others: np.ndarray) -> np.ndarray:
    iw = np.maximum(np.minimum(b[2], others[:, 2]) - np.maximum(b[0], others[:, 0]), 0)
    ih = np.maximum(np.minimum(b[3], others[:, 3]) - np.maximum(b[1], others[:, 1]), 0)
    inter = iw * ih
    area = lambda r: np.maximum(r[..., 2] - r[..., 0], 0) * np.maximum(r[..., 3] - r[..., 1], 0)
    union = area(b) + area(others) - inter
    return np.where(union <= 0, 0, inter / np.where(union <= 0, 1, union))


def nms(order: np.ndarray, boxes: np.ndarray, t: float) -> list[int]:
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        order = rest[iou_one(boxes[i], boxes[rest]) <= t]
    return keep


def confidences(boxes, cls, iou_t, floor):
    r, c1 = cls.shape
    conf = np.zeros(r, np.float32)
    for c in range(1, c1):
        s = cls[:, c]
        idx = np.nonzero(s >= floor)[0]
        if idx.size == 0:
            continue
        order = idx[np.lexsort((idx, -s[idx]))]
        k = np.asarray(nms(order, boxes, iou_t), np.int64)
        conf[k] = np.maximum(conf[k], s[k])
    return conf


def select(boxes, cls, attr, a):
    conf = confidences(boxes, cls, a.nms_iou, a.conf_threshold)
    passing = int(np.count_nonzero((conf >= a.conf_threshold) & (conf > 0)))
    want_min = min(a.min_boxes, a.max_boxes)
    if passing < want_min:
        conf = confidences(boxes, cls, a.nms_iou, np.finfo(np.float32).tiny)
    idx = np.nonzero(conf > 0)[0]
    order = idx[np.lexsort((idx, -conf[idx]))]
    keep = min(passing, a.max_boxes) if passing >= want_min else min(want_min, order.size)
    order = order[:keep]
    classes = np.argmax(cls[order, 1:], axis=1) if order.size else np.zeros(0, np.int64)
    attrs = np.argmax(attr[order, 1:], axis=1) if order.size else np.zeros(0, np.int64)
    attr_sc = np.maximum(attr[order, 1:].max(axis=1), 0) if order.size else np.zeros(0, np.float32)
    return order, conf[order], classes, attrs, attr_sc


class ShardOut:
    """Accumulates rows; writes one shard like src/shard/writer.rs (same names, chunks, filters)."""

    def __init__(self, k, d, dtype):
        self.k, self.d, self.dtype = k, d, dtype
        self.items = {n: [] for n in ["item_id", "caption", "source", "kind", "manifest_index", "frame_start",
                                        "num_frames", "image_hw", "duration"]}
        self.frames = {n: [] for n in ["frame_item", "timestamps", "frame_times", "num_boxes", "boxes", "locations",
                                         "scores", "classes", "attributes", "attr_scores", "features"]}
        self.t = 0

    def add(self, item, w, h, duration, frames):
        n = len(self.items["item_id"])
        it = self.items
        it["item_id"].append(item["id"]); it["caption"].append(item.get("caption", "")); it["source"].append(item["path"])
        it["kind"].append(1 if item["is_image"] else 0); it["manifest_index"].append(item["index"])
        it["frame_start"].append(self.t); it["num_frames"].append(len(frames)); it["image_hw"].append((h, w))
        it["duration"].append(duration)
        k, d = self.k, self.d
        for (ts, ft, bx, sc, cl, at, asc, feat) in frames:
            m = min(len(sc), k)
            boxes = np.zeros((k, 4), np.float32); boxes[:m] = bx[:m]
            W, H = float(max(w, 1)), float(max(h, 1))
            locs = np.zeros((k, 7), np.float32)
            if m:
                x1, y1, x2, y2 = bx[:m, 0] / W, bx[:m, 1] / H, bx[:m, 2] / W, bx[:m, 3] / H
                bw, bh = (bx[:m, 2] - bx[:m, 0]) / W, (bx[:m, 3] - bx[:m, 1]) / H
                locs[:m] = np.stack([x1, y1, x2, y2, bw, bh, bw * bh], 1)
            pad = lambda v, dt: np.concatenate([np.asarray(v[:m], dt), np.zeros(k - m, dt)])
            fe = np.zeros((k, d), np.float32); fe[:m] = feat[:m]
            f = self.frames
            f["frame_item"].append(n); f["timestamps"].append(ts); f["frame_times"].append(ft)
            f["num_boxes"].append(m); f["boxes"].append(boxes); f["locations"].append(locs)
            f["scores"].append(pad(sc, np.float32)); f["classes"].append(pad(cl, np.uint32))
            f["attributes"].append(pad(at, np.uint32)); f["attr_scores"].append(pad(asc, np.float32))
            f["features"].append(fe.astype(self.dtype))
        self.t += len(frames)

    def write(self, path, compression, attrs):
        types = {"kind": np.uint8, "manifest_index": np.uint64, "frame_start": np.uint64, "num_frames": np.uint32,
                 "image_hw": np.uint32, "duration": np.float32, "frame_item": np.uint32, "timestamps": np.float32,
                 "frame_times": np.float32, "num_boxes": np.uint32, "boxes": np.float32, "locations": np.float32,
                 "scores": np.float32, "classes": np.uint32, "attributes": np.uint32, "attr_scores": np.float32,
                 "features": self.dtype}
        if compression.startswith("gzip"):
            filt = dict(shuffle=True, compression="gzip", compression_opts=int(compression.split(":")[1]) if ":" in compression else 4)
        elif compression == "lzf":
            filt = dict(compression="lzf")
        else:
            filt = {}
        with h5py.File(path + ".tmp", "w") as f:
            s = h5py.string_dtype("utf-8")
            for name in ["item_id", "caption", "source"]:
                v = self.items[name]
                f.create_dataset(name, data=np.array(v, dtype=object), dtype=s, chunks=(64,), maxshape=(None,))
            for group in (self.items, self.frames):
                for name, rows in group.items():
                    if name in ("item_id", "caption", "source"):
                        continue
                    arr = np.asarray(rows, dtype=types[name])
                    chunks = ((1,) if name == "features" else (64,)) + arr.shape[1:]
                    f.create_dataset(name, data=arr, chunks=chunks, maxshape=(None,) + arr.shape[1:], **filt)
            for key, v in attrs.items():
                f.attrs[key] = v
            f.flush()
        os.replace(path + ".tmp", path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", required=True, help="JSONL with id, path (relative to its folder), caption")
    ap.add_argument("--detector", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-boxes", type=int, default=30)
    ap.add_argument("--min-boxes", type=int, default=10)
    ap.add_argument("--conf-threshold", type=float, default=0.2)
    ap.add_argument("--nms-iou", type=float, default=0.3)
    ap.add_argument("--feature-dtype", default="f16", choices=["f16", "f32"])
    ap.add_argument("--compression", default="gzip")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    t_start = time.perf_counter()
    cpu_start = time.process_time()
    root = os.path.dirname(os.path.abspath(a.manifest))
    items = []
    for i, line in enumerate(l for l in open(a.manifest) if l.strip()):
        it = json.loads(line)
        it["index"] = i
        it["abspath"] = it["path"] if os.path.isabs(it["path"]) else os.path.join(root, it["path"])
        it["is_image"] = it["path"].rsplit(".", 1)[-1].lower() in IMAGE_EXT
        items.append(it)
    providers = ["CUDAExecutionProvider"] if a.device.startswith("cuda") else ["CPUExecutionProvider"]
    sess = ort.InferenceSession(a.detector, providers=providers)
    meta = sess.get_modelmeta().custom_metadata_map
    pre = json.loads(meta["regionfeat.preprocess"])
    classes, attributes = json.loads(meta["regionfeat.classes"]), json.loads(meta["regionfeat.attributes"])
    d = int(meta["regionfeat.feature_dim"])
    feeds_scales = "image_scales" in {i.name for i in sess.get_inputs()}
    dtype = np.float16 if a.feature_dtype == "f16" else np.float32
    out = ShardOut(a.max_boxes, d, dtype)
    busy = dict(decode=0.0, detect=0.0, select=0.0, write=0.0)

    def process(group):
        """group: list of (item, decoded); runs the detector batch_size frames at a time."""
        t = time.perf_counter()
        chws = [c for _, dec in group for c in dec["chw"]]
        scales = [dec["scale"] for _, dec in group for _ in dec["chw"]]
        res = []
        for s in range(0, len(chws), a.batch_size):
            images, sizes = make_batch(chws[s: s + a.batch_size], pre.get("size_divisibility", 0))
            inputs = {"images": images, "image_sizes": sizes}
            if feeds_scales:
                inputs["image_scales"] = np.asarray(scales[s: s + a.batch_size], np.float32)
            b, c, sc, fe = sess.run(["boxes", "class_scores", "attr_scores", "features"], inputs)
            res += [(b[i], c[i], sc[i], fe[i].astype(np.float32)) for i in range(len(b))]
        t2 = time.perf_counter(); busy["detect"] += t2 - t
        pos = 0
        for item, dec in group:
            frames = []
            for j in range(len(dec["chw"])):
                bx, cl, at, fe = res[pos + j]
                rh, rw = dec["chw"][j].shape[1:]
                sx, sy = dec["w"] / max(rw, 1), dec["h"] / max(rh, 1)
                ob = np.stack([np.clip(bx[:, 0] * sx, 0, dec["w"]), np.clip(bx[:, 1] * sy, 0, dec["h"]),
                               np.clip(bx[:, 2] * sx, 0, dec["w"]), np.clip(bx[:, 3] * sy, 0, dec["h"])], 1).astype(np.float32)
                order, conf, cls_i, att_i, att_s = select(ob, cl, at, a)
                frames.append((dec["times"][j], dec["frame_times"][j], ob[order], conf, cls_i, att_i, att_s, fe[order]))
            pos += len(dec["chw"])
            out.add(item, dec["w"], dec["h"], dec["duration"], frames)
        busy["select"] += time.perf_counter() - t2

    group, nframes, done, failed = [], 0, 0, 0
    for item in items:
        t = time.perf_counter()
        try:
            rgbs, times, fts, w, h, dur = decode(item["abspath"], item["is_image"], a.frames, pre["shorter_side"], pre["max_side"])
            dec = dict(chw=[prepare(x, pre) for x in rgbs], times=times, frame_times=fts, w=w, h=h, duration=dur,
                       scale=im_scale(w, h, pre["shorter_side"], pre["max_side"]))
        except Exception as e:  # noqa: BLE001 - a failed item is skipped like regionfeat does
            print(f"{item['id']}: {e}", file=sys.stderr)
            failed += 1
            continue
        busy["decode"] += time.perf_counter() - t
        group.append((item, dec))
        nframes += len(dec["chw"])
        done += 1
        if nframes >= a.batch_size:
            process(group)
            group, nframes = [], 0
    if group:
        process(group)
    t = time.perf_counter()
    os.makedirs(a.out, exist_ok=True)
    out.write(os.path.join(a.out, "shard-000000.h5"), a.compression, {
        "schema": "regionfeat-shard", "schema_version": np.uint32(1), "shard_id": np.uint64(0),
        "detector_name": meta["regionfeat.name"], "class_names": json.dumps(classes),
        "attribute_names": json.dumps(attributes), "feature_dim": np.uint32(d), "max_boxes": np.uint32(a.max_boxes)})
    busy["write"] += time.perf_counter() - t
    secs = time.perf_counter() - t_start
    cpu = time.process_time() - cpu_start
    total_frames = out.t
    print(f"python pipeline: {done} done, {failed} failed, {total_frames} frames in {secs:.2f}s: "
          f"{done / secs:.2f} items/s, {total_frames / secs:.1f} frames/s; busy "
          + " ".join(f"{k} {v:.2f}s" for k, v in busy.items()), file=sys.stderr)
    if a.json:
        print(json.dumps({"done": done, "failed": failed, "frames": total_frames, "seconds": secs,
                          "items_per_s": done / secs, "frames_per_s": total_frames / secs, "cpu_seconds": cpu, "busy": busy}))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Checks a contact sheet from `regionfeat inspect --item ID --draw OUT.png --json`.

Usage: check_draw.py SHARD.h5 ITEM_ID OUT.png REPORT.json
Decodes the PNG with the standard library only (zlib + the five PNG filters), then checks:
its size is the reported one; in every frame the best box (read from the shard with h5py and
scaled into the frame's reported place) has its left and top edges in its reported colour.
"""
import json
import math
import struct
import sys
import zlib

import h5py


def fail(msg):
    sys.exit(f"check_draw: {msg}")


def read_png(path):
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        fail("not a PNG")
    pos, idat, w = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if zlib.crc32(kind + body) != struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0]:
            fail(f"bad CRC in {kind}")
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if (depth, ctype, interlace) != (8, 2, 0):
                fail(f"expected 8-bit RGB non-interlaced, got {depth} {ctype} {interlace}")
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride, bpp = w * 3, 3
    rows, prev = [], bytearray(stride)
    for y in range(h):
        ft = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if ft == 1:
                line[i] = (line[i] + a) & 255
            elif ft == 2:
                line[i] = (line[i] + b) & 255
            elif ft == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif ft == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pr = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pr) & 255
        rows.append(line)
        prev = line
    return w, h, rows


def main():
    shard, ident, png, report = sys.argv[1:5]
    rep = json.load(open(report))
    w, h, rows = read_png(png)
    if (w, h) != (rep["width"], rep["height"]):
        fail(f"PNG is {w}x{h}, report says {rep['width']}x{rep['height']}")
    px = lambda x, y: tuple(rows[y][3 * x:3 * x + 3])
    with h5py.File(shard, "r") as f:
        ids = [s.decode() for s in f["item_id"][:]]
        i = ids.index(ident)
        ih, iw = (int(v) for v in f["image_hw"][i])
        start = int(f["frame_start"][i])
        if len(rep["frames"]) != int(f["num_frames"][i]):
            fail("frame count")
        checked = 0
        for fr in rep["frames"]:
            row = start + fr["index"]
            if abs(fr["timestamp"] - float(f["timestamps"][row])) > 1e-6:
                fail(f"frame {fr['index']}: timestamp")
            b = [float(v) for v in f["boxes"][row, 0]]
            colour = tuple(fr["boxes"][0]["colour"])
            sx, sy = fr["width"] / iw, fr["height"] / ih
            x1 = fr["x"] + math.floor(b[0] * sx + 0.5)
            y1 = fr["y"] + math.floor(b[1] * sy + 0.5)
            x2 = max(fr["x"] + math.floor(b[2] * sx + 0.5) - 1, x1)
            y2 = max(fr["y"] + math.floor(b[3] * sy + 0.5) - 1, y1)
            # Edges are 2 px thick, drawn inwards: accept either pixel for rounding at .5.
            for y in range(y1, y2 + 1):
                if colour not in (px(x1, y), px(x1 + 1, y)):
                    fail(f"frame {fr['index']}: left edge at ({x1},{y}) is {px(x1, y)}, expected {colour}")
                checked += 1
            for x in range(x1, x2 + 1):
                if colour not in (px(x, y1), px(x, y1 + 1)):
                    fail(f"frame {fr['index']}: top edge at ({x},{y1}) is {px(x, y1)}, expected {colour}")
                checked += 1
            # The frame itself is there: not everything inside the frame has the box colour.
            inside = [px(x, y) for y in range(fr["y"], fr["y"] + fr["height"], 7)
                      for x in range(fr["x"], fr["x"] + fr["width"], 7)]
            if sum(p == colour for p in inside) > 0.5 * len(inside):
                fail(f"frame {fr['index']}: mostly box colour")
    print(json.dumps({"frames": len(rep["frames"]), "pixels": checked}))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Measures the tiles of a `regionfeat search --draw SHEET.png --json` contact sheet.

Usage: sheet_tiles.py SHEET.png REPORT.json
Decodes the PNG with the standard library (check_draw.read_png) and prints, per tile of the
report's `sheet.tiles`: the share of its frame-area pixels that differ from the sheet
background (a blank tile has 0) and the per-channel median of the frame area.
Fails when the PNG's size is not the reported one.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_draw import read_png  # noqa: E402

BACKGROUND = (24, 24, 24)


def main():
    png, report = sys.argv[1:3]
    sheet = json.load(open(report))["sheet"]
    w, h, rows = read_png(png)
    if (w, h) != (sheet["width"], sheet["height"]):
        sys.exit(f"sheet_tiles: PNG is {w}x{h}, report says {sheet['width']}x{sheet['height']}")
    out = []
    for t in sheet["tiles"]:
        pixels = [
            tuple(rows[y][3 * x : 3 * x + 3])
            for y in range(t["y"], t["y"] + t["height"])
            for x in range(t["x"], t["x"] + t["width"])
        ]
        differ = sum(p != BACKGROUND for p in pixels) / len(pixels)
        median = [sorted(p[c] for p in pixels)[len(pixels) // 2] for c in range(3)]
        out.append({"id": t["id"], "differ": differ, "median": median})
    print(json.dumps(out))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Small formatting helpers for the benchmark shell scripts (no jq needed).

    fmt.py decode-best FILE...    -> "<best videos/s> <best CPU ms/video>" over rounds
    fmt.py rss FILE.time          -> "<MiB> MiB (<wall> s)"
    fmt.py busy EXTRACT.json      -> regionfeat stage busy seconds
    fmt.py pybusy PY.json         -> python pipeline busy seconds
    fmt.py rate EXTRACT.json      -> "<items/s> <frames/s> <cpu s>" (cpu from FILE.time next to it)
"""
import json
import os
import sys


def secs(v):
    return v["secs"] + v["nanos"] / 1e9 if isinstance(v, dict) else float(v)


def last_json(path):
    return json.loads(open(path).read().strip().splitlines()[-1])


def main() -> None:
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "decode-best":
        runs = [last_json(f) for f in args]
        print(f'{max(r["videos_per_s"] for r in runs):.2f} {min(r["cpu_ms_per_video"] for r in runs):.1f}')
    elif cmd == "rss":
        t = json.load(open(args[0]))
        print(f'{t["rss_kb"] / 1024:.0f} MiB ({t["wall_s"]:.1f} s)')
    elif cmd == "busy":
        d = json.load(open(args[0]))
        print(", ".join(f"{n} {secs(v):.1f}s" for n, v in d["stage_busy"]))
    elif cmd == "pybusy":
        d = json.load(open(args[0]))["busy"]
        print(", ".join(f"{k} {v:.1f}s" for k, v in d.items()))
    elif cmd == "rate":
        d = json.load(open(args[0]))
        s = secs(d["elapsed"])
        tfile = args[0][: -len(".json")] + ".time"
        cpu = 0.0
        if os.path.exists(tfile):
            t = json.load(open(tfile))
            cpu = t["cpu_s"] + t["sys_s"]
        print(f'{d["done"] / s} {d["frames"] / s} {cpu}')
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()

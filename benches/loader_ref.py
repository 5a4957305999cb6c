#!/usr/bin/env python3
"""Reference loader for benches/loader.sh: h5py + a PyTorch DataLoader with worker processes
reading the same shards as the Rust loader, the same three datasets (features, locations,
num_boxes), the same frame choice (one random frame per segment) and the same tokenizer
(HF `tokenizers`, tokenizer.json, max 32 tokens), batches collated into tensors with features
kept f16 — what a PyTorch user would write.

Usage: loader_ref.py DIR TOKENIZER_JSON --frames 1 --workers 2 --batch 256 --batches 20
Prints `RESULT {json}`.
"""
import argparse
import glob
import json
import os
import time

import h5py
import numpy as np
import torch
from tokenizers import Tokenizer


class Shards(torch.utils.data.Dataset):
    def __init__(self, root, frames, tokenizer):
        self.paths = sorted(glob.glob(os.path.join(root, "shard-*.h5")))
        self.frames = frames
        self.tok_path = tokenizer
        self.index = []  # (shard, frame_start, num_frames, caption)
        for s, p in enumerate(self.paths):
            with h5py.File(p, "r") as f:
                starts = f["frame_start"][:]
                counts = f["num_frames"][:]
                caps = [c.decode() if isinstance(c, bytes) else c for c in f["caption"][:]]
            self.index += [(s, int(a), int(n), c) for a, n, c in zip(starts, counts, caps)]
        self.files = {}

    def __len__(self):
        return len(self.index)

    def _file(self, s):
        # Opened lazily in each worker (h5py handles do not survive fork).
        if s not in self.files:
            f = h5py.File(self.paths[s], "r")
            self.files[s] = (f, f["features"], f["locations"], f["num_boxes"])
        return self.files[s]

    def __getitem__(self, i):
        s, start, nf, cap = self.index[i]
        n = min(self.frames, nf)
        rng = np.random.default_rng(i)
        picks = [lo + rng.integers(0, max(hi - lo, 1)) for lo, hi in
                 ((j * nf // n, (j + 1) * nf // n) for j in range(n))]
        _, feats, locs, nbs = self._file(s)
        lo, hi = start + min(picks), start + max(picks) + 1
        sel = [p - min(picks) for p in picks]
        # One read of the span per dataset (h5py reads only the chunks it touches).
        f = feats[lo:hi][sel]
        l = locs[lo:hi][sel]
        b = nbs[lo:hi][sel]
        return torch.from_numpy(f), torch.from_numpy(l), torch.from_numpy(b.astype(np.int64)), cap


class Collate:
    def __init__(self, tokenizer, frames):
        self.tok_path = tokenizer
        self.tok = None
        self.frames = frames

    def __call__(self, batch):
        if self.tok is None:
            self.tok = Tokenizer.from_file(self.tok_path)
            self.tok.enable_truncation(32)
            self.tok.enable_padding()
        bsz = len(batch)
        k, d = batch[0][0].shape[1:]
        feats = torch.zeros(bsz, self.frames, k, d, dtype=batch[0][0].dtype)
        locs = torch.zeros(bsz, self.frames, k, 7)
        mask = torch.zeros(bsz, self.frames, k)
        for i, (f, l, nb, _) in enumerate(batch):
            for j in range(f.shape[0]):
                n = int(nb[j])
                feats[i, j, :n] = f[j, :n]
                locs[i, j, :n] = l[j, :n]
                mask[i, j, :n] = 1
        enc = self.tok.encode_batch([x[3].lower() for x in batch])
        ids = torch.tensor([e.ids for e in enc])
        att = torch.tensor([e.attention_mask for e in enc])
        return feats, locs, mask, ids, att


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("tokenizer")
    ap.add_argument("--frames", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(1)
    ds = Shards(a.root, a.frames, a.tokenizer)
    g = torch.Generator().manual_seed(7)
    dl = torch.utils.data.DataLoader(
        ds, batch_size=a.batch, shuffle=True, generator=g, num_workers=a.workers,
        collate_fn=Collate(a.tokenizer, a.frames), prefetch_factor=2, persistent_workers=False,
        drop_last=True)
    need = a.warmup + a.batches
    assert need <= len(ds) // a.batch, f"{len(ds)} items hold fewer than {need} batches"
    samples, t0 = 0, time.perf_counter()
    for n, (feats, *_rest) in enumerate(dl):
        if n + 1 == a.warmup:
            t0 = time.perf_counter()
        elif n >= a.warmup:
            samples += feats.shape[0]
        if n + 1 == need:
            break
    secs = time.perf_counter() - t0
    print("RESULT " + json.dumps({
        "path": "h5py+DataLoader", "frames": a.frames, "threads": a.workers, "batch": a.batch,
        "samples": samples, "seconds": secs, "samples_per_s": samples / secs,
        "loadavg": open("/proc/loadavg").read().strip()}))


if __name__ == "__main__":
    main()

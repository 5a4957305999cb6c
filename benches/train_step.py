#!/usr/bin/env python3
"""Training-step time: the regionfeat trainer (Rust, tch) against the same model in PyTorch eager,
same sizes, same batch, same thread count, in the same run.

The PyTorch model mirrors src/train/{video,text/distilbert,model,loss,optim}.rs: region tokens =
Linear(feature) + Linear(location) + temporal embedding, [CLS], pre-norm ViT blocks with a
boolean attention mask (padding, own-frame attention), DistilBERT text tower, shared
projections, global InfoNCE + RWA (both directions, masked), clip_grad_norm, AdamW.

RegionLearner cases (`*-rl`, grid input) add the public RegionLearner module re-implemented
in PyTorch eager (EMA quantizer, conv aggregation, attention interaction) in front of the same
video tower, and print the Rust RegionLearner / DemoVLP-regions step-time ratio of one run.

Usage: benches/train_step.py [--rust-cmd "CMD"] [--cases small,base,small-rl] [--steps N]
  CMD gets the JSON spec list appended as its last argument and must print `RESULT {json}` lines,
  e.g. "cargo bench --features train --bench train_step --" (once the [[bench]] entry exists) or
  "env RF_BENCH_SPEC=... cargo test --release ..." (see src/train/bench.rs).
"""
import argparse
import json
import math
import os
import shlex
import subprocess
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CASES = {
    # Small: overhead-sensitive. Base: DemoVLP sizes (ViT-B video, DistilBERT-base text), 1 frame.
    "small": dict(batch=32, frames=1, regions=30, feature_dim=2048, video_hidden=256, video_layers=4,
                  video_heads=4, text_hidden=256, text_layers=4, text_heads=4, text_len=32, embed_dim=256),
    "base": dict(batch=8, frames=1, regions=30, feature_dim=2048, video_hidden=768, video_layers=12,
                 video_heads=12, text_hidden=768, text_layers=6, text_heads=12, text_len=32, embed_dim=256),
    "base8f": dict(batch=4, frames=8, regions=30, feature_dim=2048, video_hidden=768, video_layers=12,
                   video_heads=12, text_hidden=768, text_layers=6, text_heads=12, text_len=32, embed_dim=256),
}
# RegionLearner over 14x14 ViT-B/16 patch grids (768-d), paper sizes (codebook 2048, 8 regions,
# 1 interaction layer), same towers and batch as the DemoVLP-regions case of the same name.
_RL = dict(region_learner=dict(grid=[14, 14], codebook_size=2048, regions=8, interaction_depth=1))
CASES["small-rl"] = dict(CASES["small"], feature_dim=768, **_RL)
CASES["base-rl"] = dict(CASES["base"], feature_dim=768, **_RL)
CASES["base8f-rl"] = dict(CASES["base8f"], feature_dim=768, **_RL)


class Block(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h = h
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)

    def forward(self, x, mask):
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).chunk(3, -1)
        sp = lambda z: z.view(b, t, self.h, d // self.h).transpose(1, 2)
        a = F.scaled_dot_product_attention(sp(q), sp(k), sp(v), attn_mask=mask)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class Video(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["video_hidden"]
        self.feature_embed = nn.Linear(c["feature_dim"], d)
        self.location_embed = nn.Linear(7, d)
        self.temporal_embed = nn.Embedding(max(c["frames"], 1), d)
        self.cls_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.embed_norm = nn.LayerNorm(d, eps=1e-6)
        self.blocks = nn.ModuleList([Block(d, c["video_heads"]) for _ in range(c["video_layers"])])
        self.norm = nn.LayerNorm(d, eps=1e-6)

    def forward(self, feats, locs, rmask):
        b, f, k, _ = feats.shape
        d = self.cls_token.shape[-1]
        fr = torch.arange(f)
        x = self.feature_embed(feats) + self.location_embed(locs) + self.temporal_embed(fr).view(1, f, 1, d)
        return self.blocks_forward(x, rmask)

    def blocks_forward(self, x, rmask):
        b, f, k, d = x.shape
        fr = torch.arange(f)
        x = torch.cat([self.cls_token.expand(b, 1, d), x.view(b, f * k, d)], 1)
        x = self.embed_norm(x)
        rm = rmask.view(b, f * k) > 0.5
        mask = torch.cat([torch.ones(b, 1, dtype=torch.bool), rm], 1).view(b, 1, 1, 1 + f * k)
        if f > 1:
            fid = torch.cat([torch.tensor([-1]), fr.repeat_interleave(k)])
            cls = fid == -1
            allowed = (fid[:, None] == fid[None, :]) | cls[:, None] | cls[None, :]
            mask = mask & allowed.view(1, 1, 1 + f * k, 1 + f * k)
        for blk in self.blocks:
            x = blk(x, mask)
        x = self.norm(x)
        return x[:, 0], x[:, 1:], rm.float()


class RegionLearner(nn.Module):
    """The public RegionLearner re-implemented (showlab/Region_Learner): EMA vector quantizer
    (L2, buffers, straight-through), 3x3-conv masks with masked average pooling, attention
    interaction over T*S regions (bias-free qkv, no residual)."""

    def __init__(self, d, rl, decay=0.1, eps=1e-5):
        super().__init__()
        k, s = rl["codebook_size"], rl["regions"]
        self.k, self.s, self.decay, self.eps, self.grid = k, s, decay, eps, rl["grid"]
        self.register_buffer("embed", torch.randn(k, d))
        self.register_buffer("cluster_size", torch.zeros(k))
        self.register_buffer("embed_avg", torch.zeros(k, d))
        self.conv = nn.Conv2d(d, s, 3, padding=1)
        self.inter = nn.ModuleList(
            [nn.ModuleDict(dict(qkv=nn.Linear(d, 3 * d, bias=False), proj=nn.Linear(d, d)))
             for _ in range(rl["interaction_depth"])])

    def quantize(self, z):
        with torch.no_grad():
            dist = (z ** 2).sum(1, keepdim=True) + (self.embed ** 2).sum(1) - 2 * z @ self.embed.T
            onehot = F.one_hot(dist.argmin(1), self.k).float()
            if self.training:
                g = self.decay
                self.cluster_size.mul_(g).add_(onehot.sum(0) * (1 - g))
                self.embed_avg.mul_(g).add_(onehot.T @ z * (1 - g))
                n = self.cluster_size.sum()
                size = (self.cluster_size + self.eps) / (n + self.k * self.eps) * n
                self.embed.copy_(self.embed_avg / size[:, None])
            q = onehot @ self.embed
        return z + (q - z).detach()

    def forward(self, z, t):
        bt, p, d = z.shape
        h, w = self.grid
        x = self.quantize(z.reshape(bt * p, d)).view(bt, p, d).transpose(1, 2).reshape(bt, d, h, w)
        m = self.conv(x)
        r = torch.einsum("nshw,nchw->nsc", m, x) / (h * w)
        r = r.reshape(bt // t, t * self.s, d)
        for l in self.inter:
            q, k_, v = l["qkv"](r).chunk(3, -1)
            sp = lambda y: y.view(y.shape[0], y.shape[1], 8, d // 8).transpose(1, 2)
            a = F.scaled_dot_product_attention(sp(q), sp(k_), sp(v))
            r = l["proj"](a.transpose(1, 2).reshape(r.shape))
        return r


class RLVideo(Video):
    """The video tower over learned regions (src/train/video.rs, grid input)."""

    def __init__(self, c):
        super().__init__(c)
        d = c["video_hidden"]
        self.rl = RegionLearner(d, c["region_learner"])
        self.slot = nn.Parameter(torch.randn(c["region_learner"]["regions"], d) * 0.02)

    def forward(self, feats, locs, rmask):
        b, f, p, _ = feats.shape
        d = self.cls_token.shape[-1]
        s = self.slot.shape[0]
        z = self.feature_embed(feats).view(b * f, p, d)
        r = self.rl(z, f).view(b, f, s, d)
        x = r + self.slot.view(1, 1, s, d) + self.temporal_embed(torch.arange(f)).view(1, f, 1, d)
        return super().blocks_forward(x, torch.ones(b, f, s))


class TBlock(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h = h
        self.q_lin, self.k_lin, self.v_lin, self.out_lin = (nn.Linear(d, d) for _ in range(4))
        self.sa_layer_norm = nn.LayerNorm(d, eps=1e-12)
        self.lin1 = nn.Linear(d, 4 * d)
        self.lin2 = nn.Linear(4 * d, d)
        self.output_layer_norm = nn.LayerNorm(d, eps=1e-12)
        self.drop = nn.Dropout(0.1)

    def forward(self, x, mask):
        b, t, d = x.shape
        sp = lambda z: z.view(b, t, self.h, d // self.h).transpose(1, 2)
        a = F.scaled_dot_product_attention(sp(self.q_lin(x)), sp(self.k_lin(x)), sp(self.v_lin(x)), attn_mask=mask,
                                           dropout_p=0.1 if self.training else 0.0)
        x = self.sa_layer_norm(self.out_lin(a.transpose(1, 2).reshape(b, t, d)) + x)
        return self.output_layer_norm(self.drop(self.lin2(F.gelu(self.lin1(x)))) + x)


class Text(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["text_hidden"]
        self.word = nn.Embedding(30522, d)
        self.pos = nn.Embedding(512, d)
        self.ln = nn.LayerNorm(d, eps=1e-12)
        self.drop = nn.Dropout(0.1)
        self.layers = nn.ModuleList([TBlock(d, c["text_heads"]) for _ in range(c["text_layers"])])

    def forward(self, ids, am):
        x = self.drop(self.ln(self.word(ids) + self.pos(torch.arange(ids.shape[1]))[None]))
        mask = (am > 0)[:, None, None, :]
        for l in self.layers:
            x = l(x, mask)
        return x


def refine(logits, mask, dim):
    valid = mask > 0.5
    a = logits.masked_fill(~valid, -1e30).softmax(dim) * mask
    mean = a.sum(dim, keepdim=True) / mask.sum(dim, keepdim=True).clamp_min(1)
    return a * ((a > mean) & valid).float()


def losses(v, r, rm, t, w, wm, temp=0.05):
    g = v @ t.T
    tgt = torch.arange(g.shape[0])
    loss = F.cross_entropy(g / temp, tgt) + F.cross_entropy(g.T / temp, tgt)
    c = torch.einsum("ine,jle->ijnl", r, w)
    rm4, wm4 = rm[:, None, :, None], wm[None, :, None, :]
    a = refine(c, wm4, 3)
    r2w = ((a * c).sum(3) * rm[:, None]).sum(2) / rm[:, None].sum(2).clamp_min(1)
    bb = refine(c, rm4, 2)
    w2r = ((bb * c).sum(2) * wm[None]).sum(2) / wm[None].sum(2).clamp_min(1)
    return loss + F.cross_entropy(r2w / temp, tgt) + F.cross_entropy(w2r.T / temp, tgt)


def torch_case(c, steps):
    torch.manual_seed(0)
    video, text = (RLVideo(c) if c.get("region_learner") else Video(c)), Text(c)
    vp, tp = nn.Linear(c["video_hidden"], c["embed_dim"]), nn.Linear(c["text_hidden"], c["embed_dim"])
    mods = nn.ModuleList([video, text, vp, tp]).train()
    opt = torch.optim.AdamW(mods.parameters(), lr=1e-4, weight_decay=0.01)
    b, f, k, L = c["batch"], c["frames"], c["regions"], c["text_len"]
    if c.get("region_learner"):
        k = c["region_learner"]["grid"][0] * c["region_learner"]["grid"][1]
    nb = torch.randint(k // 2, k + 1, (b, f, 1))
    rmask = (torch.arange(k).view(1, 1, k) < nb).float()
    lens = torch.randint(L // 2, L + 1, (b, 1))
    am = (torch.arange(L).view(1, -1) < lens).long()
    feats = torch.randn(b, f, k, c["feature_dim"]).relu()
    locs = torch.rand(b, f, k, 7)
    ids = torch.randint(1000, 30000, (b, L)) * am
    norm = lambda z: F.normalize(z, dim=-1)

    def step():
        cls, regs, rm = video(feats, locs, rmask)
        h = tp(text(ids, am))
        loss = losses(norm(vp(cls)), norm(vp(regs)), rm, norm(h[:, 0]), norm(h), am.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(mods.parameters(), 1.0)
        opt.step()
        opt.zero_grad()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    s = (time.perf_counter() - t0) / steps
    return {"name": c["name"], "step_s": s, "samples_per_s": b / s}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rust-cmd")
    ap.add_argument("--cases", default="small,base")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    specs = [dict(CASES[n], name=n, steps=a.steps, threads=a.threads) for n in a.cases.split(",")]
    rust = {}
    if a.rust_cmd:
        out = subprocess.run(shlex.split(a.rust_cmd) + [json.dumps(specs)], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"rust side failed:\n{out.stderr[-3000:]}")
        for line in out.stdout.splitlines():
            if line.startswith("RESULT "):
                r = json.loads(line[7:])
                rust[r["name"]] = r
    print(f"torch {torch.__version__}, {a.threads} threads, CPU, {a.steps} timed steps after 1 warm-up")
    print(f"{'case':10} {'batch':>5} {'frames':>6} {'pytorch s/step':>15} {'rust s/step':>12} {'rust/pytorch':>12}")
    for s in specs:
        p = torch_case(s, a.steps)
        r = rust.get(s["name"])
        rs = f"{r['step_s']:12.3f} {r['step_s'] / p['step_s']:12.2f}" if r else f"{'-':>12} {'-':>12}"
        print(f"{s['name']:10} {s['batch']:5d} {s['frames']:6d} {p['step_s']:15.3f} {rs}")
    # RegionLearner against DemoVLP regions at the same batch (Rust side, same run).
    for s in specs:
        base = s["name"].removesuffix("-rl")
        if s["name"].endswith("-rl") and s["name"] in rust and base in rust:
            ratio = rust[s["name"]]["step_s"] / rust[base]["step_s"]
            print(f"rust {s['name']} / {base} (RegionLearner / DemoVLP regions, same batch): {ratio:.2f}")


if __name__ == "__main__":
    main()

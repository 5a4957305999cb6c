"""ViT backbone as a grid model (schemas/grid-contract.md), in plain PyTorch.

The module tree and parameter names are timm's `VisionTransformer` (`patch_embed.proj`,
`cls_token`, `pos_embed`, `blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}`, `norm`),
so a timm `vit_base_patch16_224` state dict (ImageNet-21k init, as DemoVLP, Frozen-in-Time and
Region-Learner use) loads without renaming; the classifier (`head.*`, `pre_logits.*`) is ignored.
The output is the final-normed patch tokens without [CLS], as a `[B, Hg, Wg, D]` grid.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import torch
from torch import nn

# Normalisations on 0..255 pixel values, RGB. "imagenet" is what Frozen-in-Time / DemoVLP /
# Region-Learner feed their ViT (torchvision Normalize with the ImageNet stats); "inception"
# (0.5, 0.5) is timm's pretrained_cfg for the 21k ViT weights.
NORMS = {
    "imagenet": ([0.485 * 255, 0.456 * 255, 0.406 * 255], [0.229 * 255, 0.224 * 255, 0.225 * 255]),
    "inception": ([127.5, 127.5, 127.5], [127.5, 127.5, 127.5]),
}


@dataclass(frozen=True)
class ViTConfig:
    name: str
    image_size: int = 224
    patch_size: int = 16
    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    eps: float = 1e-6
    norm: str = "imagenet"

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    def to_dict(self) -> dict:
        return asdict(self)


def vit_b16(norm: str = "imagenet") -> ViTConfig:
    """timm `vit_base_patch16_224`: 16x16 patches at 224 (14x14 grid), D=768, 12 blocks, 12 heads."""
    return ViTConfig(name="vit-b16", norm=norm)


def vit_tiny(norm: str = "imagenet") -> ViTConfig:
    """Same graph, narrow and shallow (D=64, 2 blocks, 4 heads; still 14x14 at 224): tests and demo."""
    return ViTConfig(name="vit-tiny", dim=64, depth=2, heads=4, norm=norm)


PRESETS = {"vit-b16": vit_b16, "vit-tiny": vit_tiny}


def preset(name: str, norm: str = "imagenet") -> ViTConfig:
    if norm not in NORMS:
        raise ValueError(f"unknown normalisation {norm!r}; choose one of: {', '.join(NORMS)}")
    try:
        return PRESETS[name](norm)
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None


class PatchEmbed(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, N, D]


class Attention(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.heads = cfg.heads
        self.scale = (cfg.dim // cfg.heads) ** -0.5
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)

    def forward(self, x):
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        hidden = int(cfg.dim * cfg.mlp_ratio)
        self.fc1 = nn.Linear(cfg.dim, hidden)
        self.act = nn.GELU()  # exact erf GELU, as timm
        self.fc2 = nn.Linear(hidden, cfg.dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.mlp = Mlp(cfg)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTGrid(nn.Module):
    """`images [B,3,S,S]` (normalised RGB) -> `grid_features [B, S/P, S/P, D]`."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.grid * cfg.grid, cfg.dim))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.eps)

    def forward(self, images):
        x = self.patch_embed(images)
        b = x.shape[0]
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)[:, 1:]
        g = self.cfg.grid
        return x.reshape(b, g, g, self.cfg.dim)


def init_seeded(model: ViTGrid, seed: int) -> ViTGrid:
    """Deterministic random weights (timm-like: trunc-normal 0.02 for linears and tokens)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            elif ".norm" in name or name.startswith("norm"):
                p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.1)
            else:
                fan_in = p[0].numel() if p.dim() > 1 else p.shape[-1]
                std = 0.02 if p.dim() != 2 and p.dim() != 4 else 1.0 / math.sqrt(fan_in)
                p.copy_((torch.randn(p.shape, generator=g) * std).clamp(-2 * std, 2 * std))
    return model.eval()


class CheckpointError(Exception):
    pass


IGNORED_PREFIXES = ("head.", "pre_logits.", "head_drop.")


def read_state_dict(path: str, trust: bool = False) -> dict:
    """Tensors from a timm/HF `.safetensors`, or a `.pth`/`.bin` (optionally nested under
    `model` / `state_dict`, with `module.` prefixes as DataParallel writes them)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist or is not a file")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        sd = load_file(path)
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=not trust)
        except Exception as e:  # noqa: BLE001 - the message says what to do
            raise CheckpointError(
                f"cannot read {path!r} as a tensor-only checkpoint ({e}); "
                "pass --trust-checkpoint for a file you trust that pickles more than tensors") from e
    for key in ("model", "state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path!r} does not hold a state dict")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


def load_timm_state_dict(model: ViTGrid, sd: dict) -> list:
    """Loads timm-named tensors into `model`; returns the ignored keys. Refuses missing,
    unexpected or misshapen tensors with a message that names them."""
    own = model.state_dict()
    ignored = sorted(k for k in sd if k.startswith(IGNORED_PREFIXES))
    given = {k: v for k, v in sd.items() if not k.startswith(IGNORED_PREFIXES)}
    missing = sorted(set(own) - set(given))
    unexpected = sorted(set(given) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint does not match timm's {model.cfg.name} layout: "
            f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")
    bad = [f"{k}: {tuple(given[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
           if tuple(given[k].shape) != tuple(v.shape)]
    if bad:
        raise CheckpointError(f"checkpoint tensors have the wrong shape for {model.cfg.name}: {bad[:6]}")
    model.load_state_dict({k: v.float() for k, v in given.items()})
    return ignored

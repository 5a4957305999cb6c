"""The public DemoVLP model (showlab/DemoVLP, `model/model.py` `ObjectRelation` and
`model/object_transformer.py` `ObjectTransformer`), transcribed in plain PyTorch at any size, as
the independent reference for the checkpoint converter and the Rust towers.

Transcribed as the public code runs, quirks included: region tokens get no LayerNorm, the final
`norm` is built but never applied, [CLS] gets `custom_pos_embed[:, 0]` (the other rows are never
used), `temporal_embed` is tiled over each frame's regions, padded regions are masked by adding
-100 to their attention logits, region tokens attend to [CLS] and their own frame (the `einops`
rearranges are written out as reshapes), `proj` has no bias, the text tower is Hugging Face's
`DistilBertModel` and `txt_proj = Sequential(ReLU, Linear)`. Attribute names are the public ones,
so `state_dict()` has the released checkpoint's keys (`object_model.blocks.0.attn.qkv.weight`,
`text_model.transformer.layer.0.attention.q_lin.weight`, `txt_proj.1.weight`, ...).
Time attention (`time_module = "timeattn"`) is not transcribed: the public configs leave it off.
"""
import torch
from torch import nn


def attn_mask(q, k, v, mask=None):
    sim = torch.einsum("b i d, b j d -> b i j", q, k)
    if mask is not None:
        sim = sim + mask
    return torch.einsum("b i j, b j d -> b i d", sim.softmax(dim=-1), v)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class VarAttention(nn.Module):
    """Space attention of `SpaceTimeBlock`: [CLS] attends to every token, a region token to
    [CLS] and the regions of its own frame ('b (f n) d -> (b f) n d')."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, x_mask, f):
        h = self.num_heads
        b, t, d = x.shape
        dh = d // h

        def heads(z):  # 'b n (h d) -> (b h) n d'
            return z.reshape(b, t, h, dh).permute(0, 2, 1, 3).reshape(b * h, t, dh)

        q, k, v = map(heads, self.qkv(x).chunk(3, dim=-1))
        x_mask = torch.repeat_interleave(x_mask, h, dim=0)
        q = q * self.scale
        (cls_q, q_), (cls_k, k_), (cls_v, v_), (cls_mask, mask) = [
            (z[:, 0:1], z[:, 1:]) for z in (q, k, v, x_mask)
        ]
        cls_out = attn_mask(cls_q, k, v, x_mask.unsqueeze(1))
        n = (t - 1) // f
        q_, k_, v_ = [z.reshape(b * h * f, n, dh) for z in (q_, k_, v_)]
        mask = mask.unsqueeze(-1).reshape(b * h * f, n, 1)
        # 'b () d -> (b r) () d': each (batch, head) repeated over its f frames.
        cls_k, cls_v, cls_mask = [
            z.repeat_interleave(f, dim=0) for z in (cls_k, cls_v, cls_mask.unsqueeze(-1))
        ]
        k_ = torch.cat((cls_k, k_), dim=1)
        v_ = torch.cat((cls_v, v_), dim=1)
        m = torch.cat((cls_mask, mask), dim=1).squeeze(-1)
        out = attn_mask(q_, k_, v_, m.unsqueeze(1))
        out = torch.cat((cls_out, out.reshape(b * h, f * n, dh)), dim=1)
        out = out.reshape(b, h, t, dh).permute(0, 2, 1, 3).reshape(b, t, d)
        return self.proj(out)


class SpaceTimeBlock(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = VarAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        # Built by the public block whatever time_module is; used only by time attention.
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x, x_mask, f):
        x = x + self.attn(self.norm1(x), x_mask, f)
        return x + self.mlp(self.norm2(x))


class ObjectTransformer(nn.Module):
    def __init__(self, feat_dim=2048, loc_dim=6, region_nums=30, num_frames=1, embed_dim=768,
                 depth=12, num_heads=12, output_dim=256):
        super().__init__()
        self.feat_dim = feat_dim
        self.embed_dim = embed_dim
        self.patches_per_frame = region_nums
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.custom_pos_embed = nn.Parameter(torch.zeros(1, region_nums + 1, embed_dim))
        self.temporal_embed = nn.Parameter(torch.zeros(1, num_frames, embed_dim))
        self.blocks = nn.ModuleList([SpaceTimeBlock(embed_dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)  # never applied, as in the public code
        self.object_embedding = nn.Linear(feat_dim, embed_dim)
        self.pos_embedding = nn.Linear(loc_dim, embed_dim)
        self.proj = nn.Linear(embed_dim, output_dim, bias=False)

    def forward(self, x, x_mask):
        """x [b, frames, K, feat_dim + loc_dim], x_mask [b, frames, K] (1 = region)."""
        b, curr_frames, _, _ = x.shape
        pos = self.pos_embedding(x[..., self.feat_dim:])
        x = self.object_embedding(x[..., : self.feat_dim]) + pos
        x = x.reshape(b, -1, self.embed_dim)
        x_mask = x_mask.reshape(b, -1)
        x = torch.cat((self.cls_token.expand(b, -1, -1), x), dim=1)
        x_mask = torch.cat((torch.ones(b, 1).type_as(x_mask), x_mask), dim=1)
        x_mask = (x_mask - 1) * 100
        cls_embed = self.custom_pos_embed[:, 0, :].unsqueeze(1)
        tile = self.temporal_embed.repeat_interleave(self.patches_per_frame, 1)
        total = torch.cat([cls_embed, tile], dim=1)
        x = x + total[:, : x.shape[1]]
        for blk in self.blocks:
            x = blk(x, x_mask, curr_frames)
        return self.proj(x), x_mask


class ObjectRelation(nn.Module):
    def __init__(self, text_config, **video):
        super().__init__()
        import transformers
        self.text_model = transformers.DistilBertModel(transformers.DistilBertConfig(**text_config))
        self.object_model = ObjectTransformer(**video)
        self.txt_proj = nn.Sequential(
            nn.ReLU(), nn.Linear(self.text_model.config.hidden_size, video.get("output_dim", 256))
        )

    def compute_text(self, input_ids, attention_mask):
        h = self.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.txt_proj(h)

    def compute_object(self, objects, object_mask):
        return self.object_model(objects, object_mask)[0]


def randomize(model, seed):
    """Seeded weights far from any init (LayerNorm scales around 1), so a skipped or extra
    LayerNorm, a dropped bias or a transposed matrix changes the outputs."""
    g = torch.Generator().manual_seed(seed)
    norms = {id(m.weight) for m in model.modules() if isinstance(m, nn.LayerNorm)}
    with torch.no_grad():
        for p in model.parameters():
            r = torch.randn(p.shape, generator=g)
            p.copy_(1.0 + 0.3 * r if id(p) in norms else 0.2 * r)
    return model


TINY_TEXT = dict(vocab_size=40, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                 max_position_embeddings=16, dropout=0.0, attention_dropout=0.0)
TINY_VIDEO = dict(feat_dim=16, loc_dim=6, region_nums=3, num_frames=2, embed_dim=32, depth=2,
                  num_heads=4, output_dim=16)


def tiny(seed=7):
    """A DemoVLP of the public architecture at test size, seeded, in eval mode."""
    torch.manual_seed(seed)
    return randomize(ObjectRelation(TINY_TEXT, **TINY_VIDEO), seed).eval()


def save_release(model, path):
    """Saves `model` as the public trainer does (`trainer/trainer_dist.py` `_save_checkpoint`):
    a dict with `state_dict` of the DistributedDataParallel wrapper (keys `module.…`), the
    optimizer, and the trainer's `ConfigParser` object, whose class the converter cannot import
    (it lives in the DemoVLP repository)."""
    import sys
    import types
    mod = types.ModuleType("parse_config_dist_multi")

    class ConfigParser:  # stands in for DemoVLP's parse_config_dist_multi.ConfigParser
        def __init__(self):
            self.config = {"arch": {"type": "ObjectRelation"}}

    ConfigParser.__module__ = mod.__name__
    ConfigParser.__qualname__ = "ConfigParser"
    mod.ConfigParser = ConfigParser
    sys.modules[mod.__name__] = mod
    try:
        state = {
            "arch": "ObjectRelation",
            "epoch": 3,
            "state_dict": {"module." + k: v for k, v in model.state_dict().items()},
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5}]},
            "monitor_best": 0.5,
            "config": ConfigParser(),
        }
        torch.save(state, path)
    finally:
        del sys.modules[mod.__name__]

"""The ViT grid model: timm key names, checkpoint loading, an independent reference
(torchvision's ViT with the same weights), ONNX export parity and metadata."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import export_grid
import vit

SEED = 0


def timm_keys(depth):
    """timm VisionTransformer parameter names (timm/models/vision_transformer.py), head excluded."""
    keys = ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias",
            "norm.weight", "norm.bias"]
    for i in range(depth):
        for part in ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias",
                     "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias",
                     "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"]:
            keys.append(f"blocks.{i}.{part}")
    return set(keys)


@pytest.fixture(scope="module")
def tiny():
    return vit.init_seeded(vit.ViTGrid(vit.vit_tiny()), SEED)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory, tiny):
    out = str(tmp_path_factory.mktemp("onnx") / "vit-tiny.onnx")
    assert export_grid.main(["--preset", "vit-tiny", "--seed", str(SEED), "--out", out]) == 0
    return out


def test_vit_b16_has_timm_names_and_shapes():
    with torch.device("meta"):
        m = vit.ViTGrid(vit.vit_b16())
    sd = m.state_dict()
    assert set(sd) == timm_keys(12)
    assert tuple(sd["pos_embed"].shape) == (1, 197, 768)
    assert tuple(sd["cls_token"].shape) == (1, 1, 768)
    assert tuple(sd["patch_embed.proj.weight"].shape) == (768, 3, 16, 16)
    assert tuple(sd["blocks.11.attn.qkv.weight"].shape) == (2304, 768)
    assert tuple(sd["blocks.0.mlp.fc1.weight"].shape) == (3072, 768)
    assert tuple(sd["blocks.0.mlp.fc2.weight"].shape) == (768, 3072)


def timm_checkpoint(model, seed=5):
    """A state dict as timm writes one: the model's tensors plus a classifier head."""
    g = torch.Generator().manual_seed(seed)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    d = model.cfg.dim
    sd["head.weight"] = torch.randn(21843, d, generator=g)
    sd["head.bias"] = torch.zeros(21843)
    sd["pre_logits.fc.weight"] = torch.randn(d, d, generator=g)
    sd["pre_logits.fc.bias"] = torch.zeros(d)
    return sd


@pytest.mark.parametrize("fmt", ["pth", "pth-nested", "safetensors"])
def test_loader_reads_timm_checkpoints(tmp_path, tiny, fmt):
    sd = timm_checkpoint(tiny)
    if fmt == "safetensors":
        st = pytest.importorskip("safetensors.torch")
        path = tmp_path / "model.safetensors"
        st.save_file(sd, str(path))
    elif fmt == "pth":
        path = tmp_path / "model.pth"
        torch.save(sd, path)
    else:
        path = tmp_path / "model.pth"
        torch.save({"model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, path)
    fresh = vit.ViTGrid(vit.vit_tiny())
    ignored = vit.load_timm_state_dict(fresh, vit.read_state_dict(str(path)))
    assert set(ignored) == {"head.weight", "head.bias", "pre_logits.fc.weight", "pre_logits.fc.bias"}
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(fresh(x), tiny(x))


def test_loader_names_what_is_wrong(tiny):
    sd = timm_checkpoint(tiny)
    del sd["blocks.1.attn.qkv.weight"]
    with pytest.raises(vit.CheckpointError, match="blocks.1.attn.qkv.weight"):
        vit.load_timm_state_dict(vit.ViTGrid(vit.vit_tiny()), sd)
    sd = timm_checkpoint(tiny)
    sd["pos_embed"] = torch.zeros(1, 577, 64)  # a 384-px checkpoint
    with pytest.raises(vit.CheckpointError, match="pos_embed"):
        vit.load_timm_state_dict(vit.ViTGrid(vit.vit_tiny()), sd)


def torchvision_reference(model):
    """The same weights in torchvision's independent ViT implementation; returns a function
    images -> final-normed patch tokens [B, g, g, D]."""
    from torchvision.models.vision_transformer import VisionTransformer
    cfg = model.cfg
    tv = VisionTransformer(image_size=cfg.image_size, patch_size=cfg.patch_size, num_layers=cfg.depth,
                           num_heads=cfg.heads, hidden_dim=cfg.dim, mlp_dim=int(cfg.dim * cfg.mlp_ratio))
    sd = model.state_dict()
    mapped = {"conv_proj.weight": sd["patch_embed.proj.weight"], "conv_proj.bias": sd["patch_embed.proj.bias"],
              "class_token": sd["cls_token"], "encoder.pos_embedding": sd["pos_embed"],
              "encoder.ln.weight": sd["norm.weight"], "encoder.ln.bias": sd["norm.bias"],
              "heads.head.weight": tv.state_dict()["heads.head.weight"],
              "heads.head.bias": tv.state_dict()["heads.head.bias"]}
    for i in range(cfg.depth):
        src, dst = f"blocks.{i}.", f"encoder.layers.encoder_layer_{i}."
        for a, b in [("norm1", "ln_1"), ("norm2", "ln_2"), ("attn.proj", "self_attention.out_proj"),
                     ("mlp.fc1", "mlp.0"), ("mlp.fc2", "mlp.3")]:
            for p in ("weight", "bias"):
                mapped[f"{dst}{b}.{p}"] = sd[f"{src}{a}.{p}"]
        mapped[f"{dst}self_attention.in_proj_weight"] = sd[f"{src}attn.qkv.weight"]
        mapped[f"{dst}self_attention.in_proj_bias"] = sd[f"{src}attn.qkv.bias"]
    tv.load_state_dict(mapped, strict=True)
    tv.eval()

    def run(x):
        t = tv._process_input(x)
        t = torch.cat([tv.class_token.expand(t.shape[0], -1, -1), t], dim=1)
        t = tv.encoder(t)[:, 1:]
        return t.reshape(x.shape[0], cfg.grid, cfg.grid, cfg.dim)
    return run


def test_matches_torchvision_vit(tiny):
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got, want = tiny(x), torchvision_reference(tiny)(x)
    assert got.shape == (2, 14, 14, 64)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    assert got.std() > 0.1  # not constant


def test_onnx_parity_and_metadata(tiny_onnx, tiny):
    meta = {p.key: p.value for p in onnx.load(tiny_onnx).metadata_props}
    assert meta["regionfeat.contract_version"] == "1"
    assert meta["regionfeat.kind"] == "grid"
    assert meta["regionfeat.name"] == "vit-tiny"
    assert meta["regionfeat.feature_dim"] == "64"
    pre = json.loads(meta["regionfeat.preprocess"])
    assert pre["resize"] == "shorter_then_center_crop" and pre["size"] == 224
    assert pre["channel_order"] == "RGB"
    np.testing.assert_allclose(pre["pixel_mean"], [123.675, 116.28, 103.53], atol=1e-4)
    np.testing.assert_allclose(pre["pixel_std"], [58.395, 57.12, 57.375], atol=1e-4)
    sess = ort.InferenceSession(tiny_onnx, providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["images"]
    assert [o.name for o in sess.get_outputs()] == ["grid_features"]
    for batch in (1, 5):  # dynamic batch
        x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(batch))
        (got,) = sess.run(None, {"images": x.numpy()})
        with torch.no_grad():
            want = tiny(x).numpy()
        assert got.shape == (batch, 14, 14, 64)
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_export_refuses_bad_arguments(tmp_path, capsys):
    assert export_grid.main(["--preset", "vit-huge", "--seed", "0", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "unknown preset" in capsys.readouterr().err
    assert export_grid.main(["--preset", "vit-tiny", "--checkpoint", str(tmp_path / "none.pth"),
                             "--out", str(tmp_path / "m.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err

"""detector/convert_demovlp.py on checkpoints with the public DemoVLP key names: the public
architecture transcribed in tests/train/demovlp_public.py (full size on the meta device for the
key set, test size for the values), saved as the public trainer saves it. The numerical check of
the converted towers against the public forward is the Rust test
`train::tests_import::demovlp_release_checkpoint_converts_and_matches_public_forward`."""
import os
import sys
import tomllib

import pytest
import torch
from safetensors.torch import load_file

import convert_demovlp as cv
from detector_testutil import DETECTOR

sys.path.insert(0, os.path.join(os.path.dirname(DETECTOR), "tests", "train"))
import demovlp_public as dp  # noqa: E402

DISTILBERT_BASE = dict(vocab_size=30522, dim=768, n_layers=6, n_heads=12, hidden_dim=3072,
                       max_position_embeddings=512)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """(tiny model, path of its release .pth)."""
    model = dp.tiny(seed=3)
    path = str(tmp_path_factory.mktemp("demovlp") / "model_best.pth")
    dp.save_release(model, path)
    return model, path


def test_full_size_public_key_set_is_understood():
    # ViT-B/16 video tower over 30 regions and 1 frame, DistilBERT-base text tower (the
    # pre-training config), built on the meta device: real key names and shapes, no memory.
    with torch.device("meta"):
        model = dp.ObjectRelation(DISTILBERT_BASE)
    sd = {k: v for k, v in model.state_dict().items()}
    assert "object_model.blocks.11.norm3.weight" in sd and "txt_proj.1.bias" in sd
    out, cfg, arch, report = cv.convert_state_dict(sd)
    assert arch == "distilbert" and report["video_blocks"] == 12 and report["text_layers"] == 6
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    assert shapes["video.blocks.11.attn.qkv.weight"] == (2304, 768)
    assert shapes["video.feature_embed.weight"] == (768, 2048)
    assert shapes["video.location_embed.weight"] == (768, 6)
    assert shapes["video.temporal_embed.weight"] == (1, 768)
    assert shapes["video_proj.weight"] == (256, 768) and shapes["video_proj.bias"] == (256,)
    assert shapes["text.transformer.layer.5.ffn.lin1.weight"] == (3072, 768)
    assert shapes["text_proj.weight"] == (256, 768)
    # cls, temporal, embed_norm x2; feature, location, norm x2; 12 blocks x 12; text 4 + 6 x 16;
    # the two projections.
    assert len(out) == 4 + 2 + 2 + 2 + 144 + 100 + 2 + 2
    assert cfg["video"] == {
        "input": "regions", "feature_dim": 2048, "location_dim": 6, "hidden_size": 768,
        "num_layers": 12, "num_heads": 12, "mlp_ratio": 4.0, "max_frames": 1,
        "frame_attention": True, "layer_norm_eps": 1e-6, "region_token_layernorm": False,
        "final_layernorm": False}
    assert cfg["embed_dim"] == 256 and cfg["text_proj_relu"] is True


def test_release_file_converts(release, tmp_path):
    model, path = release
    rep = cv.convert(path, str(tmp_path / "out"), video_heads=4, text_heads=4)
    assert rep["epoch"] == 3 and rep["arch"] == "ObjectRelation"
    got = load_file(str(tmp_path / "out" / "model.safetensors"))
    sd = model.state_dict()
    assert torch.equal(got["video.cls_token"],
                       sd["object_model.cls_token"] + sd["object_model.custom_pos_embed"][:, :1])
    assert torch.equal(got["video.temporal_embed.weight"], sd["object_model.temporal_embed"][0])
    assert torch.equal(got["video.blocks.1.attn.qkv.weight"],
                       sd["object_model.blocks.1.attn.qkv.weight"])
    assert torch.equal(got["video.norm.bias"], sd["object_model.norm.bias"])
    assert torch.equal(got["video_proj.weight"], sd["object_model.proj.weight"])
    assert not got["video_proj.bias"].any()
    assert torch.equal(got["text.transformer.layer.1.attention.q_lin.weight"],
                       sd["text_model.transformer.layer.1.attention.q_lin.weight"])
    assert torch.equal(got["text_proj.bias"], sd["txt_proj.1.bias"])
    assert not any("norm3" in k or "custom_pos" in k for k in got)
    cfg = tomllib.load(open(tmp_path / "out" / "config.toml", "rb"))
    assert cfg["model"]["text_proj_relu"] is True
    assert cfg["model"]["video"]["region_token_layernorm"] is False
    assert cfg["model"]["video"]["final_layernorm"] is False
    assert cfg["loss"] == {"rwa_scale": 20.0, "rwa_renormalize": True}
    frag = tomllib.load(open(tmp_path / "out" / "demovlp-model.toml", "rb"))
    assert frag["model"] == cfg["model"]


def test_bare_state_dict_without_prefix_gives_the_same_tensors(release, tmp_path):
    model, path = release
    bare = str(tmp_path / "bare.pth")
    torch.save(model.state_dict(), bare)
    cv.convert(bare, str(tmp_path / "a"), video_heads=4, text_heads=4)
    cv.convert(path, str(tmp_path / "b"), video_heads=4, text_heads=4)
    a, b = (load_file(str(tmp_path / n / "model.safetensors")) for n in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _resaved(model, tmp_path, edit):
    sd = {"module." + k: v for k, v in model.state_dict().items()}
    edit(sd)
    path = str(tmp_path / "edited.pth")
    torch.save({"state_dict": sd, "epoch": 1}, path)
    return path


def test_missing_key_is_refused_by_name(release, tmp_path, capsys):
    path = _resaved(release[0], tmp_path, lambda sd: sd.pop("module.txt_proj.1.bias"))
    with pytest.raises(cv.ConversionError, match=r"missing: \['txt_proj.1.bias'\]"):
        cv.convert(path, str(tmp_path / "out"), video_heads=4)
    assert cv.main([path, "--out", str(tmp_path / "out")]) == 2
    assert "txt_proj.1.bias" in capsys.readouterr().err
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_renamed_key_is_refused_naming_both(release, tmp_path):
    def rename(sd):
        sd["module.object_model.blocks.1.attn.in_proj_weight"] = \
            sd.pop("module.object_model.blocks.1.attn.qkv.weight")
    path = _resaved(release[0], tmp_path, rename)
    with pytest.raises(cv.ConversionError) as e:
        cv.convert(path, str(tmp_path / "out"), video_heads=4)
    msg = str(e.value)
    assert "not understood: ['object_model.blocks.1.attn.in_proj_weight']" in msg
    assert "missing: ['object_model.blocks.1.attn.qkv.weight']" in msg


def test_time_attention_and_bad_shapes_are_refused(release, tmp_path):
    def timeattn(sd):
        sd["module.object_model.blocks.0.timeattn.qkv.weight"] = torch.zeros(96, 32)
    with pytest.raises(cv.ConversionError, match="time attention"):
        cv.convert(_resaved(release[0], tmp_path, timeattn), str(tmp_path / "o"), video_heads=4)

    def transposed(sd):
        k = "module.object_model.blocks.0.attn.qkv.weight"
        sd[k] = sd[k].t().contiguous()
    with pytest.raises(cv.ConversionError, match=r"attn.qkv.weight: \(32, 96\), expected \(96, 32\)"):
        cv.convert(_resaved(release[0], tmp_path, transposed), str(tmp_path / "o"), video_heads=4)
    with pytest.raises(cv.ConversionError, match="not a multiple of --video-heads 5"):
        cv.convert(release[1], str(tmp_path / "o"), video_heads=5)


def test_max_frames_zero_fills_as_the_public_loader(release, tmp_path):
    model, path = release
    rep = cv.convert(path, str(tmp_path / "out"), video_heads=4, text_heads=4, max_frames=4)
    got = load_file(str(tmp_path / "out" / "model.safetensors"))["video.temporal_embed.weight"]
    assert got.shape == (4, 32)
    assert torch.equal(got[:2], model.state_dict()["object_model.temporal_embed"][0])
    assert not got[2:].any() and rep["source_frames"] == 2


def test_text_dir_config_must_match_the_weights(release, tmp_path):
    import json
    text = tmp_path / "text"
    text.mkdir()
    (text / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n")
    json.dump(dict(dp.TINY_TEXT, model_type="distilbert", n_layers=3), open(text / "config.json", "w"))
    with pytest.raises(cv.ConversionError, match="'n_layers': 3"):
        cv.convert(release[1], str(tmp_path / "out"), text_dir=str(text), video_heads=4)

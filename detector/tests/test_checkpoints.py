"""Checkpoint loaders, tested on synthetic state dicts that carry the real checkpoints' key names
and shapes (detector/key_tables/*.tsv, written by key_tables/make_key_tables.py)."""
import os

import numpy as np
import onnxruntime as ort
import pytest
import torch

import checkpoints
import export
import frcnn
import presets
from detector_testutil import DETECTOR, feed, padded_batch, scales_for

TABLES = os.path.join(DETECTOR, "key_tables")


def synthetic(table, seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in checkpoints.read_key_table(os.path.join(TABLES, table)):
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(0)
        else:
            sd[key] = torch.randn(shape, generator=g).abs() if key.endswith("running_var") else torch.randn(shape, generator=g)
    return sd


@pytest.fixture(scope="module")
def milvlg_sd():
    return synthetic("milvlg_bua_caffe_r101.tsv", 1)


@pytest.fixture(scope="module")
def hf_sd():
    return synthetic("hf_frcnn_vg_finetuned.tsv", 2)


def r101_for(fmt):
    return frcnn.VGDetector(checkpoints.adapt_config(presets.get("vg-r101"), fmt)).eval()


def test_caffe_anchors_match_py_faster_rcnn():
    # py-faster-rcnn generate_anchors() with its default scales (8, 16, 32)
    want = [[-84, -40, 99, 55], [-176, -88, 191, 103], [-360, -184, 375, 199],
            [-56, -56, 71, 71], [-120, -120, 135, 135], [-248, -248, 263, 263],
            [-36, -80, 51, 95], [-80, -168, 95, 183], [-168, -344, 183, 359]]
    got = frcnn.caffe_cell_anchors(16, (0.5, 1, 2), (8, 16, 32))
    assert got.tolist() == want


def test_key_tables_cover_the_architecture():
    assert checkpoints.detect_format(dict.fromkeys(k for k, _ in checkpoints.read_key_table(
        os.path.join(TABLES, "milvlg_bua_caffe_r101.tsv")))) == "milvlg"
    assert checkpoints.detect_format(dict.fromkeys(k for k, _ in checkpoints.read_key_table(
        os.path.join(TABLES, "hf_frcnn_vg_finetuned.tsv")))) == "hf"


def test_milvlg_checkpoint_loads_one_to_one(milvlg_sd):
    model = r101_for("milvlg")
    unused = checkpoints.load_into(model, milvlg_sd, "milvlg")
    assert unused == []
    sd = model.state_dict()
    for k in ("backbone.stem.conv1.weight", "backbone.res4.22.conv3.norm.running_var",
              "proposal_generator.rpn_head.objectness_logits.weight", "roi_heads.res5.0.shortcut.weight",
              "roi_heads.box_predictor.cls_score.bias", "roi_heads.box_predictor.cls_embed.weight",
              "roi_heads.box_predictor.attr_linear1.weight", "roi_heads.box_predictor.attr_linear2.bias"):
        assert torch.equal(sd[k], milvlg_sd[k]), k
    assert torch.equal(sd["proposal_generator.cell_anchors"],
                       frcnn.caffe_cell_anchors(16, (0.5, 1.0, 2.0), (4, 8, 16, 32)))
    assert model.cfg.flavour == "caffe"


def test_hf_checkpoint_is_converted(hf_sd):
    model = r101_for("hf")
    unused = checkpoints.load_into(model, hf_sd, "hf")
    assert unused == []
    sd = model.state_dict()
    p = "roi_heads.box_predictor."
    assert torch.equal(sd["backbone.res3.3.conv2.weight"], hf_sd["backbone.res3.3.conv2.weight"])
    # background / "no attribute" moved from last to first
    for ours, theirs in (("cls_score.weight", "cls_score.weight"), ("cls_score.bias", "cls_score.bias"),
                         ("cls_embed.weight", "cls_embedding.weight"), ("attr_linear2.weight", "attr_score.weight"),
                         ("attr_linear2.bias", "attr_score.bias")):
        assert torch.equal(sd[p + ours][0], hf_sd[p + theirs][-1]), ours
        assert torch.equal(sd[p + ours][1:], hf_sd[p + theirs][:-1]), ours
    assert torch.equal(sd[p + "attr_linear1.weight"], hf_sd[p + "fc_attr.weight"])
    # a zero background slot in front of the class-specific box deltas
    assert (sd[p + "bbox_pred.weight"][:4] == 0).all()
    assert torch.equal(sd[p + "bbox_pred.weight"][4:], hf_sd[p + "bbox_pred.weight"])
    # one sigmoid logit per anchor -> (zero background, foreground) softmax pair
    w = sd["proposal_generator.rpn_head.objectness_logits.weight"]
    assert (w[:12] == 0).all() and torch.equal(w[12:], hf_sd["proposal_generator.rpn_head.objectness_logits.weight"])
    assert torch.equal(sd["proposal_generator.cell_anchors"], hf_sd["proposal_generator.anchor_generator.cell_anchors.0"])
    assert model.cfg.flavour == "detectron2" and model.cfg.min_proposal_size == 0


@pytest.mark.parametrize("fmt", ["milvlg", "hf"])
def test_missing_and_misshaped_tensors_are_named(fmt, milvlg_sd, hf_sd):
    sd = dict(milvlg_sd if fmt == "milvlg" else hf_sd)
    del sd["backbone.res4.7.conv2.norm.running_mean"]
    del sd["roi_heads.box_predictor.cls_score.bias"]
    key = "roi_heads.box_predictor.attr_linear2.weight" if fmt == "milvlg" else "roi_heads.box_predictor.attr_score.weight"
    sd[key] = torch.zeros(400, 512)
    with pytest.raises(checkpoints.CheckpointError) as e:
        checkpoints.load_into(r101_for(fmt), sd, fmt)
    msg = str(e.value)
    assert "2 tensor(s) missing" in msg and "backbone.res4.7.conv2.norm.running_mean" in msg
    assert "roi_heads.box_predictor.cls_score.bias" in msg
    assert f"{key}: checkpoint has [400, 512], model needs [401, 512]" in msg


def tiny_hf_state_dict(seed=3):
    """An HF-format state dict for the vg-tiny architecture (inverse of the loader's mapping)."""
    cfg = checkpoints.adapt_config(presets.get("vg-tiny"), "hf")
    ref = frcnn.init_seeded(frcnn.VGDetector(cfg), seed).state_dict()
    ren = {"cls_embed.": "cls_embedding.", "attr_linear1.": "fc_attr.", "attr_linear2.": "attr_score."}
    out = {}
    for k, v in ref.items():
        if k == "proposal_generator.cell_anchors":
            out["proposal_generator.anchor_generator.cell_anchors.0"] = v
            continue
        if k.startswith("proposal_generator.rpn_head.objectness_logits."):
            v = v[v.shape[0] // 2:]
        if k.startswith("roi_heads.box_predictor.bbox_pred."):
            v = v[4:]
        for a, b in ren.items():
            k = k.replace("box_predictor." + a, "box_predictor." + b)
        if any(k.endswith(s) for s in ("cls_score.weight", "cls_score.bias", "cls_embedding.weight",
                                        "attr_score.weight", "attr_score.bias")):
            v = torch.cat([v[1:], v[:1]])  # background / no-attribute last, as HF has it
        out[k] = v.clone()
    return out


def test_hf_heads_compute_what_modeling_frcnn_computes():
    """Our converted box predictor and RPN objectness equal HF's own formulas
    (modeling_frcnn.py FastRCNNOutputLayers.forward, RPNHead + sigmoid)."""
    hf = tiny_hf_state_dict()
    cfg = checkpoints.adapt_config(presets.get("vg-tiny"), "hf")
    model = frcnn.VGDetector(cfg).eval()
    assert checkpoints.load_into(model, hf, "hf") == []
    p = "roi_heads.box_predictor."
    x = torch.randn(64, cfg.feature_dim) * 2
    with torch.no_grad():
        cls, attr = model.roi_heads.box_predictor(x)
        # HF: scores = cls_score(x); emb = cls_embedding(argmax); attr = attr_score(relu(fc_attr(cat)))
        s = x @ hf[p + "cls_score.weight"].T + hf[p + "cls_score.bias"]
        emb = hf[p + "cls_embedding.weight"][s.argmax(-1)]
        h = torch.relu(torch.cat([x, emb], 1) @ hf[p + "fc_attr.weight"].T + hf[p + "fc_attr.bias"])
        a = h @ hf[p + "attr_score.weight"].T + hf[p + "attr_score.bias"]
    ps, pa = torch.softmax(s, -1), torch.softmax(a, -1)
    torch.testing.assert_close(torch.softmax(cls, -1)[:, 0], ps[:, -1])
    torch.testing.assert_close(torch.softmax(cls, -1)[:, 1:], ps[:, :-1])
    torch.testing.assert_close(torch.softmax(attr, -1)[:, 0], pa[:, -1])
    torch.testing.assert_close(torch.softmax(attr, -1)[:, 1:], pa[:, :-1])
    # RPN: foreground probability of the converted 2-way softmax == sigmoid(HF logit)
    feat = torch.randn(1, cfg.res4_channels, 5, 7)
    with torch.no_grad():
        logits, _ = model.proposal_generator.rpn_head(feat)
        t = torch.relu(torch.nn.functional.conv2d(feat, hf["proposal_generator.rpn_head.conv.weight"],
                                                  hf["proposal_generator.rpn_head.conv.bias"], padding=1))
        hl = torch.nn.functional.conv2d(t, hf["proposal_generator.rpn_head.objectness_logits.weight"],
                                        hf["proposal_generator.rpn_head.objectness_logits.bias"])
    a_ = cfg.num_anchors
    fg = torch.softmax(logits.reshape(1, 2, a_, 5, 7), dim=1)[:, 1]
    torch.testing.assert_close(fg, torch.sigmoid(hl))


def test_read_state_dict_unwraps_and_detects(tmp_path, tiny_model):
    sd = {"module." + k: v for k, v in tiny_model.state_dict().items() if k != "proposal_generator.cell_anchors"}
    path = tmp_path / "ckpt.pth"
    torch.save({"model": sd, "iteration": 5}, path)
    got = checkpoints.read_state_dict(str(path))
    assert "backbone.stem.conv1.weight" in got and checkpoints.detect_format(got) == "milvlg"
    (tmp_path / "not.pth").write_text("hello")
    with pytest.raises(checkpoints.CheckpointError, match="cannot read checkpoint"):
        checkpoints.read_state_dict(str(tmp_path / "not.pth"))
    with pytest.raises(checkpoints.CheckpointError, match="does not exist"):
        checkpoints.read_state_dict(str(tmp_path / "missing.pth"))
    torch.save({"model": {"foo.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    with pytest.raises(checkpoints.CheckpointError, match="cannot tell the checkpoint format"):
        checkpoints.detect_format(checkpoints.read_state_dict(str(tmp_path / "other.pth")))


def test_export_from_a_checkpoint_matches_the_seeded_export(tmp_path, tiny_model, tiny_onnx):
    """A MILVLG-format file holding the seeded vg-tiny weights exports to the same graph outputs."""
    sd = {k: v for k, v in tiny_model.state_dict().items() if k != "proposal_generator.cell_anchors"}
    ckpt = tmp_path / "tiny.pth"
    torch.save({"model": sd}, ckpt)
    out = str(tmp_path / "from-ckpt.onnx")
    assert export.main(["--preset", "vg-tiny", "--checkpoint", str(ckpt), "--out", out]) == 0
    imgs, s = padded_batch([(128, 200), (110, 160)], seed=7)
    sa, sb = ort.InferenceSession(out), ort.InferenceSession(tiny_onnx)
    a = sa.run(None, feed(sa, imgs, s, scales_for(s)))
    b = sb.run(None, feed(sb, imgs, s, scales_for(s)))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_export_refuses_a_checkpoint_of_another_size(tmp_path, tiny_model, capsys):
    sd = {k: v for k, v in tiny_model.state_dict().items() if k != "proposal_generator.cell_anchors"}
    ckpt = tmp_path / "tiny.pth"
    torch.save(sd, ckpt)
    rc = export.main(["--preset", "vg-r101", "--checkpoint", str(ckpt), "--out", str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "does not fit preset 'vg-r101'" in err
    assert "backbone.stem.conv1.weight: checkpoint has [8, 3, 7, 7], model needs [64, 3, 7, 7]" in err
    assert "tensor(s) missing: " in err and "more)" in err  # missing blocks are counted, the first named
    assert not (tmp_path / "x.onnx").exists()


def test_key_tables_are_up_to_date():
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_key_tables", os.path.join(TABLES, "make_key_tables.py"))
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    for fn, table in ((mk.milvlg, "milvlg_bua_caffe_r101.tsv"), (mk.hf, "hf_frcnn_vg_finetuned.tsv")):
        assert [(k, tuple(s)) for k, s in fn()] == checkpoints.read_key_table(os.path.join(TABLES, table)), table


def test_hf_flavour_graph_matches_pytorch(tmp_path):
    """The detectron2-convention code path (HF checkpoints) exports as faithfully as the Caffe one."""
    ckpt = tmp_path / "hf_tiny.bin"
    torch.save(tiny_hf_state_dict(), ckpt)
    out = str(tmp_path / "hf-tiny.onnx")
    assert export.main(["--preset", "vg-tiny", "--checkpoint", str(ckpt), "--out", out]) == 0
    model, fmt, anchors = checkpoints.build_from_checkpoint(presets.get("vg-tiny"), str(ckpt))
    assert fmt == "hf" and "from the checkpoint" in anchors
    sess = ort.InferenceSession(out)
    for sizes in ([(128, 200), (100, 150)], [(20, 30)]):
        imgs, s = padded_batch(sizes, seed=3)
        sc = scales_for(sizes)
        with torch.no_grad():
            ref = [t.numpy() for t in model(imgs, s, sc)]
        got = sess.run(None, feed(sess, imgs, s, sc))
        np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=1e-3)
        np.testing.assert_allclose(got[1], ref[1], rtol=0, atol=1e-5)
        np.testing.assert_allclose(got[2], ref[2], rtol=0, atol=1e-5)
        np.testing.assert_allclose(got[3], ref[3], rtol=1e-4, atol=1e-4)
        assert (got[0][..., 2] <= s.numpy()[:, None, 1]).all() and (got[0][..., 3] <= s.numpy()[:, None, 0]).all()

"""The RPN proposal rule of the Caffe / MILVLG VG model in its edge cases, against an independent
numpy transcription (pyfrcnn_reference.py), in PyTorch and in the exported ONNX graph:

- the minimum proposal side is min_size x im_scale (the frame's resize factor, `image_scales`);
- a checkpoint's own cell anchors are used, generated ones only when it has none;
- proposals are ranked by the foreground-minus-background logit, so an RPN whose float32
  probabilities saturate at 1.0 still ranks them in the exact order.
"""
import copy

import numpy as np
import onnxruntime as ort
import pytest
import torch

import checkpoints
import export
import frcnn
import presets
import pyfrcnn_reference as ref
from detector_testutil import feed, padded_batch

BOX_ATOL = 1e-3
SIZES = [(128, 200), (128, 171)]


def reference(model, imgs, sizes, scales, cell_anchors=None):
    """Reference proposals of each image from the model's own RPN outputs."""
    cfg = model.cfg
    with torch.no_grad():
        logits, deltas = model.proposal_generator.rpn_head(model.backbone(imgs))
    cell = model.proposal_generator.cell_anchors.numpy() if cell_anchors is None else cell_anchors
    return [ref.proposals(logits[i].numpy(), deltas[i].numpy(), cell, cfg.feature_stride,
                          [int(v) for v in sizes[i].tolist()], float(scales[i]), cfg.min_proposal_size,
                          cfg.pre_nms_topk, cfg.post_nms_topk, cfg.rpn_nms_thresh)[0]
            for i in range(len(sizes))]


def ours_pytorch(model, imgs, sizes, scales):
    with torch.no_grad():
        boxes, valid, _ = model.proposals(model.backbone(imgs), sizes, scales)
    return [boxes[i][valid[i]].numpy() for i in range(len(sizes))]


def ours_onnx(session, imgs, sizes, scales):
    boxes, cls = session.run(["boxes", "class_scores"], feed(session, imgs, sizes, scales))
    real = cls[..., 1:].max(-1) > 0  # padding candidates are one-hot on column 0
    return [boxes[i][real[i]] for i in range(len(sizes))]


def same(a, b):
    return a.shape == b.shape and np.allclose(a, b, rtol=0, atol=BOX_ATOL)


def assert_same(got, want, what):
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, f"{what}, image {i}: {len(g)} proposals, reference {len(w)}"
        np.testing.assert_allclose(g, w, rtol=0, atol=BOX_ATOL, err_msg=f"{what}, image {i}")


def export_session(model, path):
    cfg = model.cfg
    export.export(model, str(path), export.placeholder_labels("class", cfg.num_classes),
                  export.placeholder_labels("attribute", cfg.num_attributes), "test")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# -- 1. minimum proposal size scales with the frame's resize factor --------------------------------

# 0.256: a 500x781 frame resized to vg-tiny's 128x200; 1.25: a 480 px frame scaled to 600 (vg-r101)
@pytest.mark.parametrize("scale", [0.256, 1.25, 2.0])
def test_min_proposal_size_is_min_size_times_im_scale(tiny_model, tiny_onnx, scale):
    imgs, s = padded_batch(SIZES, seed=11)
    sc = torch.full((len(SIZES),), scale)
    want = reference(tiny_model, imgs, s, sc)
    # The case is one where the rule matters: a fixed threshold (scale 1) keeps other proposals.
    fixed = reference(tiny_model, imgs, s, torch.ones(len(SIZES)))
    assert any(not same(w, f) for w, f in zip(want, fixed)), "test case does not exercise the rule"
    assert_same(ours_pytorch(tiny_model, imgs, s, sc), want, f"PyTorch, scale {scale}")
    session = ort.InferenceSession(tiny_onnx, providers=["CPUExecutionProvider"])
    assert_same(ours_onnx(session, imgs, s, sc), want, f"ONNX Runtime, scale {scale}")


def test_each_image_of_a_batch_uses_its_own_scale(tiny_model, tiny_onnx):
    imgs, s = padded_batch(SIZES, seed=12)
    sc = torch.tensor([0.256, 2.0])
    want = reference(tiny_model, imgs, s, sc)
    session = ort.InferenceSession(tiny_onnx, providers=["CPUExecutionProvider"])
    assert_same(ours_onnx(session, imgs, s, sc), want, "ONNX Runtime, mixed scales")


def test_without_image_scales_pytorch_treats_frames_as_unscaled(tiny_model):
    imgs, s = padded_batch(SIZES[:1], seed=13)
    with torch.no_grad():
        a = tiny_model(imgs, s)[0]
        b = tiny_model(imgs, s, torch.ones(1))[0]
    assert torch.equal(a, b)


# -- 2. anchors from the checkpoint ----------------------------------------------------------------

def odd_anchors(cfg):
    """Non-default cell anchors: the Caffe ones widened by 1.5 and moved off-centre."""
    a = frcnn.default_cell_anchors(cfg).clone()
    c = (a[:, :2] + a[:, 2:]) / 2
    half = (a[:, 2:] - a[:, :2]) * 0.75
    return torch.cat([c - half + 3.0, c + half + 3.0], dim=1)


def milvlg_file(tmp_path, model, anchors=None, name="tiny.pth"):
    sd = {k: v for k, v in model.state_dict().items() if k != "proposal_generator.cell_anchors"}
    if anchors is not None:
        sd[checkpoints.CHECKPOINT_ANCHORS] = anchors
    path = tmp_path / name
    torch.save({"model": sd}, path)
    return path


def test_checkpoint_anchors_are_used(tmp_path, tiny_model, capsys):
    anchors = odd_anchors(tiny_model.cfg)
    ckpt = milvlg_file(tmp_path, tiny_model, anchors)
    model, fmt, source = checkpoints.build_from_checkpoint(presets.get("vg-tiny"), str(ckpt))
    assert fmt == "milvlg" and "from the checkpoint" in source
    assert torch.equal(model.proposal_generator.cell_anchors, anchors)
    assert "not used" not in capsys.readouterr().err  # the anchors are no longer an unused tensor

    out = tmp_path / "odd.onnx"
    assert export.main(["--preset", "vg-tiny", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    log = capsys.readouterr().out
    assert f"anchors from the checkpoint ({checkpoints.CHECKPOINT_ANCHORS})" in log
    imgs, s = padded_batch(SIZES, seed=14)
    sc = torch.full((len(SIZES),), 0.256)
    want = reference(tiny_model, imgs, s, sc, cell_anchors=anchors.numpy())
    generated = reference(tiny_model, imgs, s, sc)
    assert any(not same(w, g) for w, g in zip(want, generated)), "the anchors must matter here"
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert_same(ours_onnx(session, imgs, s, sc), want, "ONNX Runtime, checkpoint anchors")


def test_anchors_are_generated_when_the_checkpoint_has_none(tmp_path, tiny_model, capsys):
    ckpt = milvlg_file(tmp_path, tiny_model)
    model, _, source = checkpoints.build_from_checkpoint(presets.get("vg-tiny"), str(ckpt))
    assert "generated" in source
    assert torch.equal(model.proposal_generator.cell_anchors,
                       frcnn.caffe_cell_anchors(16, (0.5, 1.0, 2.0), (1, 2, 4, 8)))
    out = tmp_path / "gen.onnx"
    assert export.main(["--preset", "vg-tiny", "--checkpoint", str(ckpt), "--out", str(out), "--skip-verify"]) == 0
    assert "anchors generated (py-faster-rcnn generate_anchors" in capsys.readouterr().out


def test_checkpoint_anchors_of_the_wrong_shape_or_several_levels_are_refused(tmp_path, tiny_model):
    bad = milvlg_file(tmp_path, tiny_model, torch.zeros(9, 4), "bad.pth")
    with pytest.raises(checkpoints.CheckpointError, match=r"cell_anchors.0: checkpoint has \[9, 4\], model needs \[12, 4\]"):
        checkpoints.build_from_checkpoint(presets.get("vg-tiny"), str(bad))
    sd = torch.load(milvlg_file(tmp_path, tiny_model, odd_anchors(tiny_model.cfg), "two.pth"))["model"]
    sd["proposal_generator.anchor_generator.cell_anchors.1"] = torch.zeros(12, 4)
    torch.save(sd, tmp_path / "two.pth")
    with pytest.raises(checkpoints.CheckpointError, match="more than one feature level"):
        checkpoints.build_from_checkpoint(presets.get("vg-tiny"), str(tmp_path / "two.pth"))


# -- 3. ranking when the foreground probability saturates ------------------------------------------

@pytest.fixture(scope="module")
def saturated_model(tiny_model):
    """vg-tiny whose RPN is confident everywhere: fg - bg logits of ~20..32, so every float32
    foreground probability is exactly 1.0 while the logits (and float64 probabilities) differ."""
    m = copy.deepcopy(tiny_model)
    head = m.proposal_generator.rpn_head.objectness_logits
    a = m.cfg.num_anchors
    with torch.no_grad():
        head.weight.mul_(0.3)
        head.bias[a:] += 26.0
    return m


def test_saturated_rpn_is_ranked_by_logit(saturated_model, tmp_path):
    imgs, s = padded_batch(SIZES, seed=15)
    sc = torch.full((len(SIZES),), 0.256)
    with torch.no_grad():
        logits, _ = saturated_model.proposal_generator.rpn_head(saturated_model.backbone(imgs))
    a = saturated_model.cfg.num_anchors
    p32 = torch.softmax(logits.reshape(len(SIZES), 2, a, -1), dim=1)[:, 1]
    assert (p32 == 1.0).float().mean() > 0.95, "the case must saturate float32 probabilities"
    gap = (logits[:, a:] - logits[:, :a]).double()
    assert gap.max() < 36, "float64 probabilities must stay distinct"
    want = reference(saturated_model, imgs, s, sc)
    got = ours_pytorch(saturated_model, imgs, s, sc)
    assert_same(got, want, "PyTorch, saturated RPN")
    session = export_session(saturated_model, tmp_path / "saturated.onnx")
    assert_same(ours_onnx(session, imgs, s, sc), want, "ONNX Runtime, saturated RPN")


def test_logit_ranking_keeps_the_probability_order_when_not_saturated(tiny_model):
    """Ordinary case: ranking by logit gives what ranking by the float32 probability gives."""
    imgs, s = padded_batch(SIZES, seed=16)
    sc = torch.full((len(SIZES),), 0.256)
    assert_same(ours_pytorch(tiny_model, imgs, s, sc), reference(tiny_model, imgs, s, sc), "PyTorch")

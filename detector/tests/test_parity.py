"""PyTorch vs ONNX Runtime on the seeded vg-tiny export, and the contract's output rules.

Tolerances (float32, CPU): boxes 1e-3 px, class/attribute probabilities 1e-5, features
1e-4 absolute + 1e-4 relative. Measured differences are ~3e-5 px, ~4e-7 and ~5e-6.
"""
import numpy as np
import onnxruntime as ort
import pytest
import torch

from detector_testutil import feed, padded_batch, scales_for

BOX_ATOL, PROB_ATOL, FEAT_ATOL, FEAT_RTOL = 1e-3, 1e-5, 1e-4, 1e-4
CASES = {
    "one frame": [(128, 200)],
    "two sizes, padded": [(128, 200), (128, 171)],
    "portrait + landscape": [(200, 128), (96, 150)],
    "three frames": [(128, 171), (113, 200), (128, 128)],
    "tiny frame (R < 50)": [(20, 30)],
}


@pytest.fixture(scope="module")
def session(tiny_onnx):
    return ort.InferenceSession(tiny_onnx, providers=["CPUExecutionProvider"])


def run_both(model, session, sizes, seed=1):
    imgs, s = padded_batch(sizes, seed)
    sc = scales_for(sizes)
    with torch.no_grad():
        ref = [t.numpy() for t in model(imgs, s, sc)]
    got = session.run(["boxes", "class_scores", "attr_scores", "features"], feed(session, imgs, s, sc))
    return ref, got, s.numpy()


@pytest.mark.parametrize("case", list(CASES))
def test_pytorch_and_onnxruntime_agree(tiny_model, session, case):
    ref, got, _ = run_both(tiny_model, session, CASES[case])
    for name, r, g in zip(["boxes", "class_scores", "attr_scores", "features"], ref, got):
        assert r.shape == g.shape, f"{name}: {r.shape} vs {g.shape}"
    np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=BOX_ATOL, err_msg="boxes")
    np.testing.assert_allclose(got[1], ref[1], rtol=0, atol=PROB_ATOL, err_msg="class_scores")
    np.testing.assert_allclose(got[2], ref[2], rtol=0, atol=PROB_ATOL, err_msg="attr_scores")
    np.testing.assert_allclose(got[3], ref[3], rtol=FEAT_RTOL, atol=FEAT_ATOL, err_msg="features")


@pytest.mark.parametrize("case", list(CASES))
def test_outputs_honour_the_contract(tiny_model, session, case):
    _, (boxes, cls, attr, feat), sizes = run_both(tiny_model, session, CASES[case], seed=2)
    b, r, _ = boxes.shape
    assert b == len(CASES[case]) and 0 < r <= 50
    assert cls.shape == (b, r, 21) and attr.shape == (b, r, 11) and feat.shape == (b, r, 128)
    assert boxes.dtype == cls.dtype == attr.dtype == feat.dtype == np.float32
    # boxes lie inside each image's valid (unpadded) region and are well formed
    h, w = sizes[:, 0][:, None], sizes[:, 1][:, None]
    assert (boxes >= 0).all()
    assert (boxes[..., 2] <= w).all() and (boxes[..., 3] <= h).all()
    assert (boxes[..., 2] >= boxes[..., 0]).all() and (boxes[..., 3] >= boxes[..., 1]).all()
    # probabilities
    np.testing.assert_allclose(cls.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(attr.sum(-1), 1.0, atol=1e-5)
    assert (cls >= 0).all() and (attr >= 0).all()
    # padding candidates (if any) carry zero class scores past column 0 and come last
    pad = cls[..., 1:].max(-1) == 0
    for i in range(b):
        n_real = int((~pad[i]).sum())
        assert n_real > 0
        assert not pad[i, :n_real].any(), "padding candidates must come after the real ones"
        assert (feat[i, pad[i]] == 0).all() and (boxes[i, pad[i]] == 0).all()


def test_fp16_export_runs_and_keeps_the_contract(tmp_path, tiny_model):
    import export
    out = str(tmp_path / "vg-tiny-fp16.onnx")
    assert export.main(["--preset", "vg-tiny", "--seed", "0", "--fp16", "--out", out]) == 0
    sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    assert [o.type for o in sess.get_outputs()] == ["tensor(float)"] * 3 + ["tensor(float16)"]
    imgs, s = padded_batch([(128, 200), (100, 150)], seed=4)
    sc = scales_for(s)
    boxes, cls, attr, feat = sess.run(None, feed(sess, imgs, s, sc))
    assert feat.dtype == np.float16 and np.isfinite(feat).all()
    np.testing.assert_allclose(cls.sum(-1), 1.0, atol=1e-3)
    sn = s.numpy()
    assert (boxes[..., 2] <= sn[:, 1:2]).all() and (boxes[..., 3] <= sn[:, 0:1]).all()
    # Half precision may reorder near-tied proposals but finds nearly the same set.
    with torch.no_grad():
        ref_boxes = tiny_model(imgs, s, sc)[0].numpy()
    for i in range(2):
        d = np.abs(ref_boxes[i][:, None, :] - boxes[i][None, :, :]).max(-1)
        assert (d.min(0) < 1.0).mean() > 0.8

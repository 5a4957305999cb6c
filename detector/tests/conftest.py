"""Shared fixtures: the vg-tiny model (seeded) and its ONNX export, made once per session."""
import sys

import pytest

from detector_testutil import DETECTOR, SEED

if DETECTOR not in sys.path:
    sys.path.insert(0, DETECTOR)


@pytest.fixture(scope="session")
def tiny_model():
    import frcnn
    import presets
    return frcnn.init_seeded(frcnn.VGDetector(presets.get("vg-tiny")), SEED).eval()


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory):
    import export
    out = str(tmp_path_factory.mktemp("onnx") / "vg-tiny.onnx")
    assert export.main(["--preset", "vg-tiny", "--seed", str(SEED), "--out", out]) == 0
    return out

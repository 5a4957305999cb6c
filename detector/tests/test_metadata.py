"""The exported file declares what schemas/detector-contract.md asks for, and export.py's
command line refuses bad arguments with clear messages."""
import json

import onnx
import onnxruntime as ort
import pytest

import export

CONTRACT_KEYS = ["regionfeat.contract_version", "regionfeat.name", "regionfeat.preprocess",
                 "regionfeat.classes", "regionfeat.attributes", "regionfeat.feature_dim"]


def meta_of(path):
    return {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}


def test_metadata_parses_and_matches_outputs(tiny_onnx):
    meta = meta_of(tiny_onnx)
    for k in CONTRACT_KEYS:
        assert k in meta, k
    assert meta["regionfeat.contract_version"] == "1"
    assert meta["regionfeat.name"] == "vg-tiny"
    pre = json.loads(meta["regionfeat.preprocess"])
    assert pre == {"channel_order": "BGR", "pixel_mean": [102.98, 115.95, 122.77], "pixel_std": [1.0, 1.0, 1.0],
                   "shorter_side": 128, "max_side": 200, "size_divisibility": 0}
    classes = json.loads(meta["regionfeat.classes"])
    attributes = json.loads(meta["regionfeat.attributes"])
    assert classes[:2] == ["class_0001", "class_0002"] and all(isinstance(c, str) for c in classes)
    assert attributes[0] == "attribute_0001"
    d = int(meta["regionfeat.feature_dim"])

    sess = ort.InferenceSession(tiny_onnx, providers=["CPUExecutionProvider"])
    ins = {i.name: i for i in sess.get_inputs()}
    outs = {o.name: o for o in sess.get_outputs()}
    assert list(ins) == ["images", "image_sizes", "image_scales"]
    assert list(outs) == ["boxes", "class_scores", "attr_scores", "features"]
    assert ins["images"].type == ins["image_sizes"].type == ins["image_scales"].type == "tensor(float)"
    # batch, height and width are dynamic; the class / attribute / feature widths are fixed
    assert all(isinstance(v, str) for v in (ins["images"].shape[0], ins["images"].shape[2], ins["images"].shape[3]))
    assert ins["images"].shape[1] == 3 and ins["image_sizes"].shape[1] == 2
    assert len(ins["image_scales"].shape) == 1 and isinstance(ins["image_scales"].shape[0], str)
    assert outs["boxes"].shape[2] == 4
    assert outs["class_scores"].shape[2] == len(classes) + 1
    assert outs["attr_scores"].shape[2] == len(attributes) + 1
    assert outs["features"].shape[2] == d
    assert outs["features"].type == "tensor(float)"


def test_label_files_are_written(tmp_path):
    classes = [f"thing{i},synonym" for i in range(20)]
    (tmp_path / "objects.txt").write_text("\n".join(classes) + "\n\n")
    (tmp_path / "attrs.txt").write_text("\n".join(f"attr {i}" for i in range(10)))
    out = str(tmp_path / "m.onnx")
    assert export.main(["--preset", "vg-tiny", "--seed", "1", "--classes", str(tmp_path / "objects.txt"),
                        "--attributes", str(tmp_path / "attrs.txt"), "--out", out, "--skip-verify"]) == 0
    meta = meta_of(out)
    assert json.loads(meta["regionfeat.classes"]) == [f"thing{i}" for i in range(20)]
    assert json.loads(meta["regionfeat.attributes"]) == [f"attr {i}" for i in range(10)]
    assert "seed=1" in meta["regionfeat.source"]


def test_placeholder_names_warn(tmp_path, capsys):
    assert export.main(["--preset", "vg-tiny", "--seed", "0", "--out", str(tmp_path / "m.onnx"), "--skip-verify"]) == 0
    err = capsys.readouterr().err
    assert "--classes not given" in err and "--attributes not given" in err


@pytest.mark.parametrize("args, message", [
    (["--preset", "vg-huge", "--seed", "0"], "unknown preset 'vg-huge'"),
    (["--preset", "vg-tiny", "--checkpoint", "/nonexistent.pth"], "does not exist"),
    (["--preset", "vg-tiny", "--seed", "-1"], "--seed must be >= 0"),
    (["--preset", "vg-tiny", "--seed", "0", "--classes", "{short}"], "has 3 names but the model has 20 classes"),
    (["--preset", "vg-tiny", "--seed", "0", "--classes", "{holes}"], "line 2 is empty"),
    (["--preset", "vg-tiny", "--seed", "0", "--attributes", "/nonexistent.txt"], "attributes file"),
])
def test_bad_arguments_are_refused(tmp_path, capsys, args, message):
    (tmp_path / "short.txt").write_text("a\nb\nc\n")
    (tmp_path / "holes.txt").write_text("a\n\nc\n")
    args = [a.format(short=tmp_path / "short.txt", holes=tmp_path / "holes.txt") for a in args]
    out = tmp_path / "m.onnx"
    assert export.main(args + ["--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_out_must_be_onnx_and_source_is_required(tmp_path, capsys):
    assert export.main(["--preset", "vg-tiny", "--seed", "0", "--out", str(tmp_path / "m.bin")]) == 2
    assert "should end in .onnx" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: one of --checkpoint / --seed is required
        export.main(["--preset", "vg-tiny", "--out", str(tmp_path / "m.onnx")])

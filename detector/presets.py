"""Named detector configurations. Both use the same graph code (`frcnn.VGDetector`)."""
from __future__ import annotations

from frcnn import DetectorConfig


def vg_r101() -> DetectorConfig:
    """Bottom-up attention VG Faster R-CNN, ResNet-101 C4, 1600 classes, 400 attributes, as in
    MILVLG `configs/bua-caffe/extract-bua-caffe-r101.yaml` (the Caffe model converted)."""
    return DetectorConfig(name="vg-r101")


def vg_tiny() -> DetectorConfig:
    """Same architecture, shrunk so it runs in tens of milliseconds on 2 CPU cores: 8-channel stem,
    one bottleneck per stage, D=128, 50 proposals, 20 classes, 10 attributes, small frames."""
    return DetectorConfig(
        name="vg-tiny",
        stem_channels=8,
        res2_out_channels=16,
        res2_bottleneck_channels=4,
        stage_blocks=(1, 1, 1),
        res5_blocks=1,
        rpn_channels=32,
        anchor_scales=(1, 2, 4, 8),  # 16..128 px anchors for 128..200 px frames
        pre_nms_topk=600,
        post_nms_topk=50,
        # 16 original-image pixels like vg-r101 (x image_scale ~0.25 for a 500 px frame: ~4 px)
        min_proposal_size=16.0,
        pooler_resolution=14,
        num_classes=20,
        num_attributes=10,
        attr_embed_dim=16,
        attr_hidden_dim=32,
        shorter_side=128,
        max_side=200,
        init_gain={"linear": 1.0, "objectness": 3.0, "deltas": 0.2},
    )


PRESETS = {"vg-r101": vg_r101, "vg-tiny": vg_tiny}


def get(name: str) -> DetectorConfig:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None

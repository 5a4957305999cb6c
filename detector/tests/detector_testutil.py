"""Helpers shared by the detector tests."""
import os

DETECTOR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 0


def padded_batch(sizes, seed=0):
    """A zero-padded batch of smooth random 'images' (mean-subtracted BGR scale) of the given
    (h, w) sizes, as the extractor would build it, plus image_sizes."""
    import torch
    g = torch.Generator().manual_seed(seed)
    hh, ww = max(h for h, _ in sizes), max(w for _, w in sizes)
    imgs = torch.zeros(len(sizes), 3, hh, ww)
    for i, (h, w) in enumerate(sizes):
        coarse = torch.randn(1, 3, h // 8 + 1, w // 8 + 1, generator=g) * 60
        img = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]
        imgs[i, :, :h, :w] = img + torch.randn(3, h, w, generator=g) * 5
    return imgs, torch.tensor(sizes, dtype=torch.float32)


# vg-tiny frames are ~128 px on the shorter side; a 320x500 original is scaled by 0.4.
TYPICAL_SCALE = 0.4


def scales_for(sizes, scale=TYPICAL_SCALE):
    """image_scales [B] (resize factor original -> resized) for a batch from padded_batch."""
    import torch
    return torch.full((len(sizes),), scale, dtype=torch.float32)


def feed(session, imgs, sizes, scales):
    """The ONNX Runtime input dict of a batch; `image_scales` only if the model declares it (as the
    extractor does: detectron2-flavour graphs do not use it, so their export drops it)."""
    d = {"images": imgs.numpy(), "image_sizes": sizes.numpy(), "image_scales": scales.numpy()}
    declared = {i.name for i in session.get_inputs()}
    return {k: v for k, v in d.items() if k in declared}

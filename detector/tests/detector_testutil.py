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

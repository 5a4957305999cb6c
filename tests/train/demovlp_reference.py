#!/usr/bin/env python3
"""Writes a DemoVLP release checkpoint of the public architecture at test size and its
embeddings for fixed inputs, for the Rust import test. Usage: demovlp_reference.py OUT_DIR
OUT_DIR/demovlp.pth        the checkpoint, saved as the public trainer saves it
OUT_DIR/text/config.json   HF DistilBERT config of its text tower; OUT_DIR/text/vocab.txt
OUT_DIR/reference.json     {"features" [B,F,K,D], "locations" [B,F,K,7], "region_mask" [B,F,K],
                            "ids" [B,L], "attention_mask" [B,L], "video" [B,1+F*K,E] and
                            "text" [B,L,E] (L2-normalized outputs of the public forward)}
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import demovlp_public as dp  # noqa: E402


def main():
    out = sys.argv[1]
    os.makedirs(os.path.join(out, "text"), exist_ok=True)
    model = dp.tiny(seed=7)
    dp.save_release(model, os.path.join(out, "demovlp.pth"))
    cfg = dict(dp.TINY_TEXT, model_type="distilbert", activation="gelu")
    json.dump(cfg, open(os.path.join(out, "text", "config.json"), "w"), indent=1)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += [f"w{i}" for i in range(dp.TINY_TEXT["vocab_size"] - len(vocab))]
    open(os.path.join(out, "text", "vocab.txt"), "w").write("\n".join(vocab) + "\n")

    v = dp.TINY_VIDEO
    b, f, k = 3, v["num_frames"], v["region_nums"]
    g = torch.Generator().manual_seed(11)
    feats = torch.randn(b, f, k, v["feat_dim"], generator=g)
    xy = torch.rand(b, f, k, 2, generator=g) * 0.5
    wh = torch.rand(b, f, k, 2, generator=g) * 0.5
    loc = torch.cat([xy, xy + wh, wh, wh[..., :1] * wh[..., 1:]], dim=-1)  # ours: 7-d, area last
    mask = torch.ones(b, f, k)
    mask[0, 1, 2:] = 0  # padded regions
    mask[2, 0, 1:] = 0
    ids = torch.tensor([[2, 7, 9, 11, 3, 0], [2, 20, 3, 0, 0, 0], [2, 5, 6, 8, 30, 3]])
    am = (torch.arange(ids.shape[1]) < torch.tensor([[5], [3], [6]])).long()
    with torch.no_grad():
        objects = torch.cat([feats, loc[..., :6]], dim=-1)  # public input: 2048 + 6
        video = model.compute_object(objects, mask)
        text = model.compute_text(ids, am)
    norm = torch.nn.functional.normalize
    ref = {
        "features": feats.tolist(), "locations": loc.tolist(), "region_mask": mask.tolist(),
        "ids": ids.tolist(), "attention_mask": am.tolist(),
        "video": norm(video, dim=-1).tolist(), "text": norm(text, dim=-1).tolist(),
    }
    json.dump(ref, open(os.path.join(out, "reference.json"), "w"))


if __name__ == "__main__":
    main()

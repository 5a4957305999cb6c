#!/usr/bin/env python3
"""Last hidden state of a BERT or DistilBERT with Hugging Face transformers, for comparison with
the Rust towers. Usage: hf_reference.py CONFIG.json WEIGHTS.safetensors IN.json OUT.json
IN: {"ids": [[...]], "mask": [[...]], "texts": [...] optional, "tokenizer": path optional}
OUT: {"hidden": [...], "ids": [[...]] (when texts given, tokenized by HF `tokenizers`)}
"""
import json
import sys

import torch
from safetensors.torch import load_file


def main():
    cfg_path, weights, inp, outp = sys.argv[1:5]
    cfg = json.load(open(cfg_path))
    req = json.load(open(inp))
    out = {}
    if req.get("texts"):
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(req["tokenizer"])
        tok.no_padding()
        out["ids"] = [tok.encode(t).ids for t in req["texts"]]
    import transformers
    if cfg.get("model_type") == "distilbert":
        model = transformers.DistilBertModel(transformers.DistilBertConfig(**cfg))
        prefix = "distilbert."
    else:
        model = transformers.BertModel(transformers.BertConfig(**cfg), add_pooling_layer=False)
        prefix = "bert."
    sd = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in load_file(weights).items()}
    missing, _ = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if "position_ids" not in m]
    if missing:
        sys.exit(f"missing weights: {missing[:5]}")
    model.eval()
    with torch.no_grad():
        ids = torch.tensor(req["ids"])
        mask = torch.tensor(req["mask"])
        h = model(input_ids=ids, attention_mask=mask).last_hidden_state
    out["hidden"] = h.float().numpy().tolist()
    json.dump(out, open(outp, "w"))


if __name__ == "__main__":
    main()

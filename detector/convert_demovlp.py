#!/usr/bin/env python3
"""Convert a public DemoVLP checkpoint (showlab/DemoVLP, `ObjectRelation`, `.pth` as its trainer
saves it) into a regionfeat checkpoint directory, so `regionfeat eval --checkpoint OUT` compares
with the released model and `regionfeat train --init OUT` starts from it.

    python detector/convert_demovlp.py demovlp_pretrained.pth --out ckpt/demovlp \\
        --text-dir pretrained/distilbert-base-uncased

Key map (after the `module.` prefix of DistributedDataParallel is stripped; `N` = block/layer):

  DemoVLP                                        regionfeat                      how
  object_model.cls_token [1,1,d]                 video.cls_token [1,1,d]         + custom_pos_embed[:, 0]
  object_model.custom_pos_embed [1,K+1,d]        (row 0 merged above)            rows 1.. unused by the public forward
  object_model.temporal_embed [1,F,d]            video.temporal_embed.weight [F,d]   squeeze (zero-pad/cut to --max-frames)
  object_model.object_embedding.{weight,bias}    video.feature_embed.*           as is
  object_model.pos_embedding.{weight,bias}       video.location_embed.*          as is ([d,6]: location_dim = 6)
  object_model.blocks.N.norm1/norm2.*            video.blocks.N.norm1/norm2.*    as is
  object_model.blocks.N.attn.qkv.* [3d,d]        video.blocks.N.attn.qkv.*       as is (fused q|k|v rows, both sides)
  object_model.blocks.N.attn.proj.*              video.blocks.N.attn.proj.*      as is
  object_model.blocks.N.mlp.fc1/fc2.*            video.blocks.N.mlp.fc1/fc2.*    as is
  object_model.blocks.N.norm3.*                  (dropped)                       used only by time attention, off in the public configs
  object_model.norm.*                            video.norm.*                    as is (not applied: final_layernorm = false)
  object_model.proj.weight [E,d] (no bias)       video_proj.weight, .bias = 0    zero bias
  text_model.<HF name>                           text.<HF name>                  as is (DistilBERT or BERT; position_ids/pooler dropped)
  txt_proj.1.{weight,bias}                       text_proj.*                     as is (txt_proj.0 is the ReLU: text_proj_relu = true)
  (none)                                         video.embed_norm.* = 1, 0       not applied: region_token_layernorm = false

Linear weights are [out, in] on both sides (PyTorch and tch), so nothing is transposed. Every key
of the checkpoint must be understood and every key the public model has must be present;
otherwise the conversion stops with the lists of unknown and missing keys. The `.pth` is read
without importing DemoVLP: tensors and containers are rebuilt, any other pickled object (the
trainer's `ConfigParser`) becomes an inert placeholder and no code from the file runs.

Written to OUT: `model.safetensors` (our variable names, f32), `text_config.json`, the tokenizer
of --text-dir (tokenizer.json or vocab.txt), `config.toml` (a trainer config whose [model] has the
three compatibility switches set and the public RWA settings in [loss]; enough for `regionfeat
eval`), `demovlp-model.toml` (the [model] tables alone, to paste into a training config) and
`import.json` (what was mapped, merged and dropped).
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import shutil
import sys
import types

import torch


class ConversionError(Exception):
    pass


# --------------------------------------------------------------------------- reading the .pth

class _Opaque:
    """Placeholder for a pickled object whose class is not a tensor or container."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state


_SAFE_BUILTINS = {"set", "frozenset", "slice", "complex", "bytearray", "range"}


def _allowed(module: str, name: str) -> bool:
    if module in ("torch._utils", "torch.storage", "torch.nn.parameter", "torch._tensor"):
        return True
    if module == "torch":
        obj = getattr(torch, name, None)
        return name.endswith("Storage") or name in ("Size", "device") or isinstance(obj, torch.dtype)
    if module == "collections":
        return name in ("OrderedDict", "defaultdict")
    if module == "builtins":
        return name in _SAFE_BUILTINS
    if module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray"):
        return name in ("ndarray", "dtype", "_reconstruct", "scalar")
    return module == "_codecs" and name == "encode"


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if _allowed(module, name):
            return super().find_class(module, name)
        return type(name, (_Opaque,), {"__module__": "opaque." + module})


_restricted = types.ModuleType("restricted_pickle")
_restricted.__dict__.update({k: getattr(pickle, k) for k in dir(pickle) if not k.startswith("__")})
_restricted.Unpickler = _Unpickler
_restricted.load = lambda f, **kw: _Unpickler(f, **kw).load()


def read_checkpoint(path: str) -> dict:
    """The flat state dict of a DemoVLP `.pth`: unwraps `state_dict`/`model`, strips `module.`."""
    if not os.path.isfile(path):
        raise ConversionError(f"checkpoint {path!r} does not exist or is not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - objects besides tensors (the trainer's ConfigParser)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False,
                             pickle_module=_restricted)
        except Exception as e:  # noqa: BLE001
            raise ConversionError(f"cannot read checkpoint {path!r}: {e}") from e
    meta = {}
    for wrap in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrap), dict):
            meta = {k: obj[k] for k in ("epoch", "arch") if isinstance(obj.get(k), (int, str))}
            obj = obj[wrap]
            break
    if not isinstance(obj, dict) or not obj:
        raise ConversionError(f"{path!r} holds no state dict (a dict of tensors, or one under "
                              f"'state_dict')")
    sd = {}
    for k, v in obj.items():
        if not torch.is_tensor(v):
            raise ConversionError(f"{path!r}: {k!r} is a {type(v).__name__}, not a tensor")
        sd[k[len("module."):] if k.startswith("module.") else k] = v
    return sd, meta


# --------------------------------------------------------------------------- the key map

_BLOCK = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
          "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
          "mlp.fc2.weight", "mlp.fc2.bias"]
_VIDEO = {"object_embedding.weight": "feature_embed.weight",
          "object_embedding.bias": "feature_embed.bias",
          "pos_embedding.weight": "location_embed.weight", "pos_embedding.bias": "location_embed.bias",
          "norm.weight": "norm.weight", "norm.bias": "norm.bias"}
_DISTIL_EMB = ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
               "embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"]
_DISTIL_LAYER = [f"{m}.{p}" for m in ("attention.q_lin", "attention.k_lin", "attention.v_lin",
                                      "attention.out_lin", "sa_layer_norm", "ffn.lin1", "ffn.lin2",
                                      "output_layer_norm") for p in ("weight", "bias")]
_BERT_EMB = _DISTIL_EMB + ["embeddings.token_type_embeddings.weight"]
_BERT_LAYER = [f"{m}.{p}" for m in ("attention.self.query", "attention.self.key",
                                    "attention.self.value", "attention.output.dense",
                                    "attention.output.LayerNorm", "intermediate.dense",
                                    "output.dense", "output.LayerNorm") for p in ("weight", "bias")]


def _count(sd: dict, pattern: str) -> int:
    idx = {int(m.group(1)) for k in sd for m in [re.match(pattern, k)] if m}
    return max(idx) + 1 if idx else 0


def _text_arch(sd: dict) -> str:
    if any(k.startswith("text_model.transformer.layer.") for k in sd):
        return "distilbert"
    if any(k.startswith("text_model.encoder.layer.") for k in sd):
        return "bert"
    raise ConversionError("no text tower found: expected DistilBERT keys "
                          "'text_model.transformer.layer.N.…' (or BERT 'text_model.encoder.layer.N.…')")


def _rename_old_ln(sd: dict) -> dict:
    """Old HF checkpoints name LayerNorm parameters gamma/beta."""
    out = {}
    for k, v in sd.items():
        if k.startswith("text_model.") and k.endswith(".gamma"):
            k = k[: -len("gamma")] + "weight"
        elif k.startswith("text_model.") and k.endswith(".beta"):
            k = k[: -len("beta")] + "bias"
        out[k] = v
    return out


def convert_state_dict(sd: dict, video_heads: int = 12, max_frames: int | None = None):
    """Maps a DemoVLP state dict (no `module.` prefix) to ours.
    Returns (tensors, model config dict, text arch, report)."""
    sd = _rename_old_ln(sd)
    timeattn = sorted(k for k in sd if re.match(r"object_model\.blocks\.\d+\.timeattn\.", k))
    if timeattn:
        raise ConversionError(
            f"checkpoint has time attention ({timeattn[0]}, …; time_module = 'timeattn'): our video "
            f"tower has none (the paper finds it gives nothing), so it cannot be converted")
    arch = _text_arch(sd)
    n_video = _count(sd, r"object_model\.blocks\.(\d+)\.")
    if arch == "distilbert":
        n_text = _count(sd, r"text_model\.transformer\.layer\.(\d+)\.")
        text_keys = _DISTIL_EMB + [f"transformer.layer.{i}.{s}" for i in range(n_text)
                                   for s in _DISTIL_LAYER]
    else:
        n_text = _count(sd, r"text_model\.encoder\.layer\.(\d+)\.")
        text_keys = _BERT_EMB + [f"encoder.layer.{i}.{s}" for i in range(n_text) for s in _BERT_LAYER]

    # Source key -> our key, for the keys copied as they are.
    direct = {f"object_model.{k}": f"video.{v}" for k, v in _VIDEO.items()}
    for i in range(n_video):
        for s in _BLOCK:
            direct[f"object_model.blocks.{i}.{s}"] = f"video.blocks.{i}.{s}"
    direct.update({f"text_model.{k}": f"text.{k}" for k in text_keys})
    direct.update({"txt_proj.1.weight": "text_proj.weight", "txt_proj.1.bias": "text_proj.bias"})
    special = ["object_model.cls_token", "object_model.custom_pos_embed",
               "object_model.temporal_embed", "object_model.proj.weight"]
    dropped = {f"object_model.blocks.{i}.norm3.{p}": "time-attention LayerNorm (time_module off)"
               for i in range(n_video) for p in ("weight", "bias")}
    for k in sd:
        if k.startswith("text_model.") and k.endswith("position_ids"):
            dropped[k] = "buffer (positions 0..n)"
        elif arch == "bert" and k.startswith("text_model.pooler."):
            dropped[k] = "BERT pooler (the public model uses the last hidden state)"

    expected = set(direct) | set(special)
    missing = sorted(expected - set(sd))
    unknown = sorted(set(sd) - expected - set(dropped))
    if missing or unknown:
        msg = ["not a public DemoVLP ObjectRelation checkpoint (or renamed keys):"]
        if unknown:
            msg.append(f"  {len(unknown)} keys not understood: {unknown}")
        if missing:
            msg.append(f"  {len(missing)} keys of the public model missing: {missing}")
        raise ConversionError("\n".join(msg))

    f32 = {k: v.detach().to(torch.float32).contiguous() for k, v in sd.items()}
    cls, pos, temporal = (f32[f"object_model.{k}"] for k in
                          ("cls_token", "custom_pos_embed", "temporal_embed"))
    d = cls.shape[-1]
    proj = f32["object_model.proj.weight"]
    feat = f32["object_model.object_embedding.weight"]
    loc = f32["object_model.pos_embedding.weight"]
    fc1 = f32["object_model.blocks.0.mlp.fc1.weight"] if n_video else torch.empty(4 * d, d)
    txt = f32["txt_proj.1.weight"]
    e = proj.shape[0]
    want = {"object_model.cls_token": (1, 1, d), "object_model.proj.weight": (e, d),
            "object_model.object_embedding.weight": (d, feat.shape[1]),
            "object_model.pos_embedding.weight": (d, loc.shape[1]),
            "txt_proj.1.weight": (e, txt.shape[1])}
    for i in range(n_video):
        b = f"object_model.blocks.{i}."
        want.update({b + "attn.qkv.weight": (3 * d, d), b + "attn.proj.weight": (d, d),
                     b + "mlp.fc1.weight": tuple(fc1.shape), b + "norm1.weight": (d,)})
    bad = [f"{k}: {tuple(f32[k].shape)}, expected {w}" for k, w in want.items()
           if tuple(f32[k].shape) != w]
    if pos.dim() != 3 or pos.shape[-1] != d or temporal.dim() != 3 or temporal.shape[-1] != d:
        bad.append(f"custom_pos_embed {tuple(pos.shape)} / temporal_embed {tuple(temporal.shape)}: "
                   f"expected [1, K+1, {d}] / [1, F, {d}]")
    if not 1 <= loc.shape[1] <= 7:
        bad.append(f"object_model.pos_embedding.weight: {loc.shape[1]} location entries (1..7)")
    if d % video_heads:
        bad.append(f"hidden size {d} is not a multiple of --video-heads {video_heads}")
    if bad:
        raise ConversionError("unexpected shapes:\n  " + "\n  ".join(bad))

    out = {v: f32[k] for k, v in direct.items()}
    out["video.cls_token"] = cls + pos[:, :1]
    frames = temporal.shape[1] if max_frames is None else max_frames
    dev = cls.device  # meta tensors (shape checks of full-size key sets) stay meta
    rows = torch.zeros(frames, d, device=dev)  # the public loader's load_temporal_fix = 'zeros'
    rows[: min(frames, temporal.shape[1])] = temporal[0, :frames]
    out["video.temporal_embed.weight"] = rows
    out["video.embed_norm.weight"] = torch.ones(d, device=dev)
    out["video.embed_norm.bias"] = torch.zeros(d, device=dev)
    out["video_proj.weight"] = proj
    out["video_proj.bias"] = torch.zeros(e, device=dev)

    model_cfg = {
        "embed_dim": e,
        "text_proj_relu": True,
        "video": {"input": "regions", "feature_dim": feat.shape[1], "location_dim": loc.shape[1],
                  "hidden_size": d, "num_layers": n_video, "num_heads": video_heads,
                  "mlp_ratio": fc1.shape[0] / d, "max_frames": frames, "frame_attention": True,
                  "layer_norm_eps": 1e-6, "region_token_layernorm": False,
                  "final_layernorm": False},
    }
    report = {
        "mapped": len(direct), "video_blocks": n_video, "text_arch": arch, "text_layers": n_text,
        "merged": {"video.cls_token": "object_model.cls_token + object_model.custom_pos_embed[:, 0]"},
        "zero_filled": ["video_proj.bias (public proj has no bias)"]
        + ([f"video.temporal_embed.weight rows {temporal.shape[1]}..{frames - 1}"]
           if frames > temporal.shape[1] else []),
        "identity": ["video.embed_norm (not applied: region_token_layernorm = false)"],
        "dropped": dict(sorted(dropped.items()))
        | {"object_model.custom_pos_embed[:, 1:]": "never used by the public forward"},
        "source_frames": temporal.shape[1],
    }
    return out, model_cfg, arch, report


def text_config(sd: dict, arch: str, text_dir: str | None, text_heads: int | None) -> dict:
    """HF config.json of the text tower: --text-dir's, checked against the weights, else inferred
    from the shapes (heads: --text-heads, else hidden/64 as in every published BERT)."""
    word = sd["text.embeddings.word_embeddings.weight"]
    posn = sd["text.embeddings.position_embeddings.weight"]
    vocab, hidden = word.shape
    if arch == "distilbert":
        layers = _count(sd, r"text\.transformer\.layer\.(\d+)\.")
        ffn = sd["text.transformer.layer.0.ffn.lin1.weight"].shape[0] if layers else 4 * hidden
    else:
        layers = _count(sd, r"text\.encoder\.layer\.(\d+)\.")
        ffn = sd["text.encoder.layer.0.intermediate.dense.weight"].shape[0] if layers else 4 * hidden
    if text_dir:
        path = os.path.join(text_dir, "config.json")
        try:
            cfg = json.load(open(path))
        except (OSError, ValueError) as e:
            raise ConversionError(f"--text-dir: cannot read {path}: {e}") from e
        keys = (("vocab_size", "dim", "n_layers", "hidden_dim") if arch == "distilbert" else
                ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size"))
        got = tuple(cfg.get(k) for k in keys)
        if got != (vocab, hidden, layers, ffn):
            raise ConversionError(f"{path} says {dict(zip(keys, got))}, the checkpoint's text tower "
                                  f"has {dict(zip(keys, (vocab, hidden, layers, ffn)))}")
        return dict(cfg, model_type=cfg.get("model_type", arch))
    heads = text_heads or max(1, hidden // 64)
    if arch == "distilbert":
        return {"model_type": "distilbert", "vocab_size": vocab, "dim": hidden, "n_layers": layers,
                "n_heads": heads, "hidden_dim": ffn, "max_position_embeddings": posn.shape[0],
                "activation": "gelu", "dropout": 0.1, "attention_dropout": 0.1, "pad_token_id": 0}
    return {"model_type": "bert", "vocab_size": vocab, "hidden_size": hidden,
            "num_hidden_layers": layers, "num_attention_heads": heads, "intermediate_size": ffn,
            "max_position_embeddings": posn.shape[0], "hidden_act": "gelu",
            "type_vocab_size": sd["text.embeddings.token_type_embeddings.weight"].shape[0],
            "layer_norm_eps": 1e-12, "pad_token_id": 0}


# --------------------------------------------------------------------------- writing

def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, int):
        return str(v)
    return json.dumps(str(v))


def model_toml(cfg: dict, text: dict) -> str:
    lines = ["# DemoVLP public-code compatibility (written by detector/convert_demovlp.py):",
             "# region_token_layernorm, final_layernorm and text_proj_relu as the released weights",
             "# were trained; sizes as in the checkpoint.", "[model]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in cfg.items() if not isinstance(v, dict)]
    lines.append("")
    lines.append("[model.video]")
    lines += [f"{k} = {_toml_value(v)}" for k, v in cfg["video"].items()]
    lines.append("")
    lines.append("[model.text]")
    lines += [f"{k} = {_toml_value(v)}" for k, v in text.items()]
    return "\n".join(lines) + "\n"


def write(out_dir: str, tensors: dict, model_cfg: dict, text_cfg: dict, tokenizer: str | None,
          report: dict) -> None:
    from safetensors.torch import save_file
    os.makedirs(out_dir, exist_ok=True)
    out_abs = os.path.abspath(out_dir)
    save_file(dict(sorted(tensors.items())), os.path.join(out_dir, "model.safetensors"))
    with open(os.path.join(out_dir, "text_config.json"), "w") as f:
        json.dump(text_cfg, f, indent=2)
    text = {"config": os.path.join(out_abs, "text_config.json"), "load_weights": False}
    if tokenizer:
        dst = os.path.join(out_dir, os.path.basename(tokenizer))
        shutil.copyfile(tokenizer, dst)
        text["tokenizer"] = os.path.join(out_abs, os.path.basename(tokenizer))
    fragment = model_toml(model_cfg, text)
    with open(os.path.join(out_dir, "demovlp-model.toml"), "w") as f:
        f.write(fragment)
    full = ("# Trainer config of a converted DemoVLP checkpoint (enough for `regionfeat eval`).\n"
            f"output_dir = {_toml_value(out_abs)}\n\n[data]\ndatasets = []\n\n"
            "# The public code's RWA: cosines scaled by 20 in the softmax, kept weights renormalized.\n"
            "[loss]\nrwa_scale = 20.0\nrwa_renormalize = true\n\n" + fragment)
    with open(os.path.join(out_dir, "config.toml"), "w") as f:
        f.write(full)
    with open(os.path.join(out_dir, "import.json"), "w") as f:
        json.dump(report, f, indent=2)


def _tokenizer(text_dir: str | None) -> str | None:
    if not text_dir:
        return None
    for name in ("tokenizer.json", "vocab.txt"):
        p = os.path.join(text_dir, name)
        if os.path.isfile(p):
            return p
    raise ConversionError(f"--text-dir {text_dir} holds no tokenizer.json or vocab.txt")


def convert(pth: str, out_dir: str, text_dir: str | None = None, video_heads: int = 12,
            text_heads: int | None = None, max_frames: int | None = None) -> dict:
    sd, meta = read_checkpoint(pth)
    tensors, model_cfg, arch, report = convert_state_dict(sd, video_heads, max_frames)
    tcfg = text_config(tensors, arch, text_dir, text_heads)
    report = {"source": os.path.abspath(pth), **meta, **report}
    write(out_dir, tensors, model_cfg, tcfg, _tokenizer(text_dir), report)
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="DemoVLP .pth (its trainer's save, or a bare state dict)")
    ap.add_argument("--out", required=True, help="checkpoint directory to write")
    ap.add_argument("--text-dir", help="HF directory of the text model the checkpoint was trained "
                    "from (config.json + tokenizer.json/vocab.txt), e.g. distilbert-base-uncased")
    ap.add_argument("--video-heads", type=int, default=12,
                    help="attention heads of the video tower (public code: 12; not in the weights)")
    ap.add_argument("--text-heads", type=int, help="text heads when there is no --text-dir "
                    "(default: hidden size / 64)")
    ap.add_argument("--max-frames", type=int, help="temporal embedding rows to write (the public "
                    "pre-trained model has 1; extra rows are zero, as the public loader fills them)")
    a = ap.parse_args(argv)
    if a.max_frames is not None and a.max_frames < 1:
        ap.error("--max-frames must be ≥ 1")
    try:
        rep = convert(a.checkpoint, a.out, a.text_dir, a.video_heads, a.text_heads, a.max_frames)
    except ConversionError as e:
        print(f"convert_demovlp: {e}", file=sys.stderr)
        return 2
    print(f"converted {rep['mapped']} tensors ({rep['video_blocks']} video blocks, "
          f"{rep['text_layers']} {rep['text_arch']} layers) to {a.out}; "
          f"[model] settings in {os.path.join(a.out, 'demovlp-model.toml')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

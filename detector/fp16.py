"""Half-precision export (`export.py --fp16`).

PyTorch's float16 convolutions on CPU are ~40x slower than float32, which makes tracing the
ResNet-101 trunk in float16 take the better part of an hour. bfloat16 convolutions are fast, and
a graph traced with a bfloat16 trunk has exactly the structure of a float16 one. So:

1. fold the batch norms into the convolutions in float32 (so no normalisation arithmetic happens
   in reduced precision during export) and keep those float32 weights;
2. trace with the trunk in bfloat16;
3. rewrite the graph's bfloat16 element types (initializers, Cast targets, tensor attributes,
   value infos, outputs) to float16, taking trunk weights from the float32 copies.

Only the convolutional trunk (backbone, RPN head, res5) and the `features` output are float16;
box decoding, NMS, RoI pooling, the classifier and attribute heads stay float32.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

BF16, F16 = TensorProto.BFLOAT16, TensorProto.FLOAT16


def _to_f16(t: TensorProto, f32: dict) -> TensorProto:
    if t.name in f32:
        arr = f32[t.name]
    else:
        arr = numpy_helper.to_array(t).astype(np.float32)
    return numpy_helper.from_array(np.asarray(arr, dtype=np.float32).astype(np.float16), t.name)


def _fix_type(tp: onnx.TypeProto) -> None:
    if tp.HasField("tensor_type") and tp.tensor_type.elem_type == BF16:
        tp.tensor_type.elem_type = F16


def _fix_graph(g: onnx.GraphProto, f32: dict) -> int:
    n = 0
    for i, t in enumerate(g.initializer):
        if t.data_type == BF16:
            g.initializer[i].CopyFrom(_to_f16(t, f32))
            n += 1
    for node in g.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.INT and a.name == "to" and a.i == BF16:
                a.i = F16
            elif a.type == onnx.AttributeProto.TENSOR and a.t.data_type == BF16:
                a.t.CopyFrom(_to_f16(a.t, {}))
            elif a.type == onnx.AttributeProto.GRAPH:
                n += _fix_graph(a.g, f32)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for sub in a.graphs:
                    n += _fix_graph(sub, f32)
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        _fix_type(vi.type)
    return n


def bf16_graph_to_f16(model: onnx.ModelProto, f32_weights: dict) -> onnx.ModelProto:
    """In place: every bfloat16 in `model` becomes float16; initializers named like a key of
    `f32_weights` (name -> float32 array) take their values from there."""
    _fix_graph(model.graph, {k: np.asarray(v, dtype=np.float32) for k, v in f32_weights.items()})
    left = [t.name for t in model.graph.initializer if t.data_type == BF16]
    assert not left, f"bfloat16 initializers left: {left[:5]}"
    return model

"""One copy of each weight an export's graphs share: ONNX external data, stored by content.

The segment graphs, the deployed graph and the fused graph (``onnx_fuse.py``) hold the same
layers: stored inside each graph, an fp32 12-layer base model's export is three copies of its
weights (about 1.3 GB instead of 440 MB). Here every initializer of ``MIN_BYTES`` or more goes
into one file, ``WEIGHTS``, once per distinct content (same bytes: one copy, whichever graph
holds it), and each graph refers to its offset there (ONNX's standard external data, which any
ONNX Runtime reads; it also lifts protobuf's 2 GiB limit on one graph file).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

WEIGHTS = "weights.bin"
#: smaller tensors stay inside their graph (shapes, scales, biases of tiny heads)
MIN_BYTES = 1024
#: each tensor starts on a page boundary, so a runtime may map it rather than copy it
ALIGN = 4096


def initializers(graph):
    """Every initializer of ``graph`` and of the graphs nested in its nodes (``If`` branches)."""
    import onnx

    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from initializers(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    yield from initializers(g)


def _raw(tensor) -> bytes:
    """The tensor's bytes as ``raw_data`` holds them (typed fields converted into it)."""
    from onnx import numpy_helper

    if not tensor.HasField("raw_data"):
        tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor), tensor.name))
    return tensor.raw_data


def save_sharing_weights(folder: Path, models: dict) -> int:
    """Write ``models`` (file name -> ModelProto with its weights loaded) into ``folder``, their large
    initializers once each in ``folder/WEIGHTS``; returns the size of WEIGHTS in bytes."""
    import onnx
    from onnx.external_data_helper import set_external_data

    where: dict[bytes, tuple[int, int]] = {}
    with open(folder / WEIGHTS, "wb") as f:
        for name, model in models.items():
            for t in initializers(model.graph):
                if t.data_location == onnx.TensorProto.EXTERNAL:
                    raise ValueError(f"{name}: initializer {t.name} is still external; load the model's weights first")
                raw = _raw(t)
                if len(raw) < MIN_BYTES:
                    continue
                key = hashlib.sha256(raw).digest()
                if key not in where:
                    f.write(b"\0" * (-f.tell() % ALIGN))
                    where[key] = (f.tell(), len(raw))
                    f.write(raw)
                set_external_data(t, WEIGHTS, *where[key])  # marks it external
                t.ClearField("raw_data")
        f.flush()
        os.fsync(f.fileno())
        size = f.tell()
    for name, model in models.items():
        onnx.save(model, str(folder / name))
    return size

"""One ONNX graph for the whole early-exit forward: the segments nested in ``If`` nodes.

Driving segment graphs from Python costs a session call per segment (tens of
microseconds each, plus host copies between them): at batch 1 on int8, where a
layer takes a few hundred microseconds, that is a tenth of early exit's saving
(docs/inference.md). Here the exit decision happens inside the graph: after each
exit, the rows whose score is at or under the threshold keep that exit's logits;
the others are gathered (padding trimmed to their longest row, as the Python
loop does) and go on in the ``else`` branch, whose answers are scattered back in
input order. A batch that leaves whole ends there. One session call per batch,
any batch size, the same arithmetic: each segment's nodes are copied unchanged
from its (possibly quantized) graph.

Only for stateless criteria whose score is traced into the segments (the
manifest's ``score`` output); others keep the Python loop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..model.calibration import thresholds_from_json


class _Names:
    """Unique value names for the glue nodes."""

    def __init__(self):
        self.n = 0

    def __call__(self, stem: str) -> str:
        self.n += 1
        return f"ee/{stem}_{self.n}"


def _inline(graph, prefix: str, bind: dict[str, str]):
    """``graph``'s nodes and initializers with every name prefixed, its inputs renamed by ``bind``.

    Returns (nodes, initializers, outputs: graph output name -> its new name)."""
    import onnx

    def name(v: str) -> str:
        return bind.get(v, f"{prefix}{v}") if v else v

    nodes = []
    for n in graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute):
            raise ValueError(f"segment node {n.name} holds a subgraph; fusing handles flat segment graphs only")
        m = onnx.NodeProto()
        m.CopyFrom(n)
        m.name = prefix + n.name
        m.input[:] = [name(v) for v in n.input]
        m.output[:] = [name(v) for v in n.output]
        nodes.append(m)
    inits = []
    for t in graph.initializer:
        u = onnx.TensorProto()
        u.CopyFrom(t)
        u.name = prefix + t.name
        inits.append(u)
    return nodes, inits, {o.name: name(o.name) for o in graph.output}


def _renamed(info, name: str, level: int):
    """``info`` under ``name``, its symbolic dimensions made the level's own: after a gather the rows and
    the trimmed width differ from the outer level's, so no "batch" or "seq" may be read as the same size."""
    import onnx

    v = onnx.ValueInfoProto()
    v.CopyFrom(info)
    v.name = name
    if level:
        for d in v.type.tensor_type.shape.dim:
            if d.HasField("dim_param"):
                d.dim_param = f"{d.dim_param}@{level}"
    return v


def _branch(name, nodes, inits, infos, pair, out_l, out_e):
    """An ``If`` branch: ``nodes`` then ``pair`` (logits, exits) as its two outputs."""
    from onnx import TensorProto, helper

    ident = [helper.make_node("Identity", [pair[0]], [out_l + "_" + name]),
             helper.make_node("Identity", [pair[1]], [out_e + "_" + name])]
    return helper.make_graph(nodes + ident, name, [],
                             [helper.make_tensor_value_info(out_l + "_" + name, TensorProto.FLOAT, [None, None]),
                              helper.make_tensor_value_info(out_e + "_" + name, TensorProto.INT64, [None])],
                             initializer=inits, value_info=infos)


def fuse(folder: str | Path, manifest: dict):
    """The fused graph (an onnx ModelProto) of the segment graphs in ``folder`` that ``manifest`` lists."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder = Path(folder)
    segments = manifest["segments"]
    if any("score" not in s["outputs"] for s in segments[:-1]):
        raise ValueError("fusing needs the exit score in every segment graph (a stateless criterion)")
    graphs = [onnx.load(str(folder / s["file"])) for s in segments]
    carry = list(manifest.get("carry", []))
    new = _Names()

    def const(stem: str, value) -> tuple[str, object]:
        nm = new(stem)
        return nm, numpy_helper.from_array(np.asarray(value), nm)

    def level(i: int, bind: dict[str, str]):
        """Nodes, initializers and value infos computing (logits, exit) for segment ``i`` onwards on the rows
        ``bind`` names."""
        g = graphs[i]
        nodes, inits, out = _inline(g.graph, f"s{i}/", bind)
        # the gathered rows get the types (symbolic shapes) the segment's inputs declare: without them ORT
        # cannot fold the segment's shape arithmetic or fuse its Add+LayerNorm as it does the segment alone
        infos = [_renamed(v, bind[v.name], i) for v in g.graph.input if i > 0 and v.name in bind]
        infos += [_renamed(v, f"s{i}/{v.name}", i) for v in g.graph.value_info]  # the exporter's shapes inside
        seg = segments[i]
        exit_k = np.array(seg["exit"], dtype=np.int64)
        if i == len(segments) - 1:
            logits = out["logits"]
            shape, exits = new("shape"), new("exit")
            k_name, k_init = const("exit_k", exit_k)
            nodes += [helper.make_node("Shape", [logits], [shape], end=1),
                      helper.make_node("Expand", [k_name, shape], [exits])]
            return nodes, inits + [k_init], infos, logits, exits
        logits, score = out["logits"], out["score"]
        # float32, as the Python loop compares (NumPy casts a Python float to the score's float32)
        t_name, t_init = const("threshold", np.float32(thresholds_from_json([seg["threshold"]])[0]))
        k_name, k_init = const("exit_k", exit_k)
        zero, zero_init = const("zero", np.array(0, dtype=np.int64))
        inits += [t_init, k_init, zero_init]
        leave, stay, idx2, count_shape, count, done = (new(s) for s in ("leave", "stay", "idx2", "count_shape",
                                                                           "count", "done"))
        n_shape, here_exit = new("n_shape"), new("here_exit")
        nodes += [helper.make_node("LessOrEqual", [score, t_name], [leave]),
                  helper.make_node("Not", [leave], [stay]),
                  helper.make_node("NonZero", [stay], [idx2]),               # [1, K]
                  helper.make_node("Shape", [idx2], [count_shape], start=1),  # [K]
                  helper.make_node("Squeeze", [count_shape], [count]),
                  helper.make_node("Equal", [count, zero], [done]),
                  helper.make_node("Shape", [logits], [n_shape], end=1),
                  helper.make_node("Expand", [k_name, n_shape], [here_exit])]

        # else branch: gather the rows that stay, trim their padding, run the rest, scatter back
        b_nodes, b_inits = [], []
        idx, idx_col, mask_g, lens, width = (new(s) for s in ("idx", "idx_col", "mask_g", "lens", "width"))
        zero1, zero1_init = const("zero1", np.array([0], dtype=np.int64))
        ax1, ax1_init = const("axis1", np.array([1], dtype=np.int64))
        axl, axl_init = const("axis_last", np.array([-1], dtype=np.int64))
        b_inits += [zero1_init, ax1_init, axl_init]
        mask_in = bind["attention_mask"]
        b_nodes += [helper.make_node("Squeeze", [idx2, zero1], [idx]),      # [K]
                    helper.make_node("Transpose", [idx2], [idx_col], perm=[1, 0]),  # [K, 1]
                    helper.make_node("Gather", [mask_in, idx], [mask_g], axis=0),
                    helper.make_node("ReduceSum", [mask_g, ax1], [lens], keepdims=0),
                    helper.make_node("ReduceMax", [lens], [width], keepdims=1)]

        def take(src: str, axis: str, stem: str) -> str:
            g_, s_ = new(stem + "_g"), new(stem)
            b_nodes.extend([helper.make_node("Gather", [src, idx], [g_], axis=0),
                            helper.make_node("Slice", [g_, zero1, width, axis], [s_])])
            return s_

        carried = {c: (out[c] if i == 0 else bind[c]) for c in carry}
        child = {"hidden_in": take(out["hidden"], ax1, "hidden"), "attention_mask": take(mask_in, ax1, "mask")}
        child.update({c: take(carried[c], axl, c) for c in carry})
        c_nodes, c_inits, c_infos, c_logits, c_exits = level(i + 1, child)
        b_nodes += c_nodes
        b_inits += c_inits
        merged, merged_exit = new("logits_merged"), new("exit_merged")
        b_nodes += [helper.make_node("ScatterND", [logits, idx_col, c_logits], [merged]),
                    helper.make_node("ScatterND", [here_exit, idx_col, c_exits], [merged_exit])]
        out_l, out_e = new("logits_out"), new("exit_out")

        nodes.append(helper.make_node("If", [done], [out_l, out_e],
                                      then_branch=_branch(f"exit{seg['exit']}_leave", [], [], [],
                                                          (logits, here_exit), out_l, out_e),
                                      else_branch=_branch(f"exit{seg['exit']}_stay", b_nodes, b_inits, c_infos,
                                                          (merged, merged_exit), out_l, out_e)))
        return nodes, inits, infos, out_l, out_e

    first = graphs[0].graph
    inputs = list(first.input)
    if "attention_mask" not in {v.name for v in inputs}:  # the tracer dropped it; the row trimming reads it
        inputs.append(helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]))
    nodes, inits, infos, logits, exits = level(0, {v.name: v.name for v in inputs})
    nodes += [helper.make_node("Identity", [logits], ["logits"]), helper.make_node("Identity", [exits], ["exit"])]
    graph = helper.make_graph(nodes, "eebert_early_exit", inputs,
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", manifest["num_labels"]]),
                               helper.make_tensor_value_info("exit", TensorProto.INT64, ["batch"])],
                              initializer=inits, value_info=infos)
    opsets = {o.domain: o.version for g in graphs for o in g.opset_import}
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())])
    model.ir_version = max(g.ir_version for g in graphs)
    return model

"""The ONNX export drives the same exits as the PyTorch runtime (needs onnx + onnxruntime)."""

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from conftest import StepsSeen, make_model  # noqa: E402
from eebert_cli.model.artifact import load_artifact  # noqa: E402
from eebert_cli.scoring.config import CalibrationConfig  # noqa: E402
from eebert_cli.train.config import AttachConfig  # noqa: E402
from eebert_cli.data import DataConfig, load_data  # noqa: E402
from eebert_cli.model.features import encode  # noqa: E402
from eebert_cli.deploy.onnx_export import export  # noqa: E402
from eebert_cli.deploy.onnx_runtime import OnnxEarlyExit  # noqa: E402
from eebert_cli.core.errors import EebertError  # noqa: E402
from eebert_cli.train.attach import attach  # noqa: E402
from eebert_cli.steps import calibrate  # noqa: E402
from eebert_cli.model.runtime import EarlyExitModel, pad_batch  # noqa: E402
from eebert_cli.train.config import TrainConfig  # noqa: E402


@pytest.fixture(scope="module")
def exported(tiny_ckpt, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "art"
    dcfg = DataConfig(spec=str(tiny_data))
    attach(str(tiny_ckpt), dcfg, AttachConfig(train=TrainConfig(epochs=40, lr=3e-3, patience=40)), out)
    data = load_data(dcfg)
    calibrate(load_artifact(out), data, CalibrationConfig(criterion="entropy", target_speedup=1.5, bootstrap=10))
    info = export(out)
    return out, data, info


def _encoded(model, data):
    return encode(model.artifact.deployed.tokenizer, data.split("test"), 128)


def test_onnx_exits_and_predictions_equal_pytorch(exported):
    out, data, info = exported
    model = EarlyExitModel.from_artifact(out)
    onnx = OnnxEarlyExit(info["out"])
    enc = _encoded(model, data)
    exits = []
    for ids, t in zip(enc.input_ids, enc.token_type_ids):
        lt, kt = model.forward_one(torch.tensor([ids]), torch.tensor([t]))
        lo, ko = onnx.forward_one(np.array([ids]), np.array([t]))  # the fused graph
        ll, kl = onnx.forward_one(np.array([ids]), np.array([t]), loop=True)  # the segments from Python
        assert ko == kt == kl and np.array_equal(lo, ll)
        assert np.abs(lo - lt.numpy()).max() < 1e-4
        exits.append(kt)
    assert len(set(exits)) > 1  # a real mix of exits
    # batches: per-sample exits equal batch size 1; the deployed graph equals the HF model
    ids, mask, types = pad_batch(enc.input_ids[:16], enc.token_type_ids[:16], 0)
    lo, wo = onnx.forward_batch(ids.numpy(), mask.numpy(), types.numpy())
    assert wo.tolist() == exits[:16]
    lt, _ = model.forward_batch(ids, mask, types)
    assert np.abs(lo - lt.numpy()).max() < 1e-4
    dep = onnx.forward_deployed(ids.numpy(), mask.numpy(), types.numpy())
    with torch.no_grad():
        ref = model.artifact.deployed.model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    assert np.abs(dep - ref.numpy()).max() < 1e-4


def test_whole_batch_mode_leaves_together(exported):
    out, data, info = exported
    model = EarlyExitModel.from_artifact(out)
    onnx = OnnxEarlyExit(info["out"], deployed=False)
    enc = _encoded(model, data)
    ids, mask, types = pad_batch(enc.input_ids[:16], enc.token_type_ids[:16], 0)
    _, wt = model.forward_batch(ids, mask, types, mode="whole-batch")
    _, wo = onnx.forward_batch(ids.numpy(), mask.numpy(), types.numpy(), mode="whole-batch")
    _, ws = model.forward_batch(ids, mask, types)
    assert len(set(wt.tolist())) == 1 and wt.tolist() == wo.tolist()
    assert int(wt[0]) >= int(ws.max())  # the batch waits for its slowest row


def test_int8_export_runs_and_mostly_agrees(exported, tmp_path):
    out, data, _ = exported
    info = export(out, tmp_path / "q", quantize="int8")
    onnx = OnnxEarlyExit(info["out"])
    model = EarlyExitModel.from_artifact(out)
    enc = _encoded(model, data)
    ids, mask, types = pad_batch(enc.input_ids, enc.token_type_ids, 0)
    dep_q = onnx.forward_deployed(ids.numpy(), mask.numpy(), types.numpy()).argmax(-1)
    with torch.no_grad():
        ref = model.artifact.deployed.model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    assert (dep_q == ref.argmax(-1).numpy()).mean() >= 0.8
    logits, where = onnx.forward_batch(ids.numpy(), mask.numpy(), types.numpy())
    assert logits.shape == (len(enc), 2) and np.isfinite(logits).all()


def test_int8_export_quantizes_layers_and_exit_heads_and_keeps_each_score_fp32(exported, tmp_path):
    """One call per segment yields hidden state, logits and score; in int8 the layers and the exit heads'
    Linears are quantized, the exit score's nodes stay fp32, and no Cast is traced into the exit (the
    criteria take fp32 logits as they are)."""
    import json

    import onnx

    from eebert_cli.deploy.onnx_export import exit_nodes

    out, _, _ = exported
    folder = Path(export(out, tmp_path / "q", quantize="int8")["out"])
    manifest = json.loads((folder / "manifest.json").read_text())
    segments = manifest["segments"]
    assert manifest["exit_heads_quantize"] == "int8"
    assert len(segments) > 1 and manifest["carry"] == ["mask_state", "pool"]  # BERT's layer state is its mask
    quantized = lambda n: "quant" in (n.op_type + n.name).lower() or n.op_type == "MatMulInteger"  # noqa: E731
    for i, seg in enumerate(segments[:-1]):
        g = onnx.load(str(folder / seg["file"])).graph
        # entropy: the score is traced in; segment 0 builds the state the others are handed
        assert [o.name for o in g.output] == ["hidden", "logits", "score"] + (manifest["carry"] if i == 0 else [])
        if i:  # nothing reads the 0/1 mask: neither the layers' state nor the mean is rebuilt
            assert {"mask_state", "pool"} <= {x.name for x in g.input}
            assert not [n.name for n in g.node if "attention_mask" in n.input]
        head, score = exit_nodes(g)
        assert head and score
        assert any(quantized(n) for n in g.node if n.name in head)
        assert not [n.name for n in g.node if n.name in score and quantized(n)]
        assert any(n.op_type == "MatMulInteger" for n in g.node if n.name not in head | score)
    last = onnx.load(str(folder / segments[-1]["file"])).graph
    assert [o.name for o in last.output] == ["logits"] and exit_nodes(last) == (set(), set())
    fp32 = Path(export(out, tmp_path / "f")["out"])
    for seg in segments[:-1]:
        g = onnx.shape_inference.infer_shapes(onnx.load(str(fp32 / seg["file"]))).graph
        elem = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.value_info, *g.output]}
        assert not [n.name for n in g.node if n.op_type == "Cast" and elem.get(n.input[0]) == n.attribute[0].i]


def test_int8_export_silences_the_quantizers_advice_in_its_own_thread_only(caplog):
    """The quantizer logs its advice on the root logger once per graph; eebert drops it in the exporting thread,
    leaving other threads' records, other loggers and the root's level as they were, and installs no handler
    on a root logger that had none (``logging.warning`` would call ``basicConfig`` for good)."""
    import logging
    import threading

    from eebert_cli.deploy.onnx_export import _root_quiet_in_this_thread

    root = logging.getLogger()
    caplog.set_level(logging.INFO)
    with _root_quiet_in_this_thread():
        logging.warning("advice from the quantizer")
        logging.error("a real failure")
        logging.getLogger("eebert.other").info("another logger")
        t = threading.Thread(target=lambda: logging.warning("another thread"))
        t.start()
        t.join()
    logging.warning("after")
    said = [r.getMessage() for r in caplog.records]
    assert "advice from the quantizer" not in said
    assert {"a real failure", "another logger", "another thread", "after"} <= set(said)
    assert root.level == logging.INFO and not root.filters
    saved = root.handlers[:]
    for h in saved:
        root.removeHandler(h)
    try:
        with _root_quiet_in_this_thread():
            logging.warning("advice from the quantizer")
        assert root.handlers == []
    finally:
        for h in saved:
            root.addHandler(h)


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_the_fused_graph_decides_in_one_call_bit_for_bit_as_the_segment_loop(exported, tmp_path, quantize):
    """early-exit.onnx, run by plain onnxruntime (no eebert loop), gives the segment loop's logits and exits
    exactly, padding and mixed exits included (its segments' nodes and shapes copied unchanged)."""
    import json

    import onnxruntime as ort

    out, data, _ = exported
    folder = Path(export(out, tmp_path / "x", quantize=quantize)["out"])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["fused"] == "early-exit.onnx"
    model = EarlyExitModel.from_artifact(out)
    enc = _encoded(model, data)
    loop = OnnxEarlyExit(folder, fused=False, deployed=False)
    sess = ort.InferenceSession(str(folder / "early-exit.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    seen = set()
    for lo in range(0, len(enc), 16):
        ids, mask, types = (x.numpy() for x in pad_batch(enc.input_ids[lo:lo + 16], enc.token_type_ids[lo:lo + 16], 0))
        want_logits, want_exits = loop.forward_batch(ids, mask, types)
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        logits, exits = sess.run(None, {n: feed[n] for n in names})
        assert np.array_equal(logits, want_logits) and np.array_equal(exits, want_exits)
        seen |= set(exits.tolist())
    assert len(seen) > 1  # rows left at different exits within the batches
    fused = OnnxEarlyExit(folder, deployed=False)  # the runtime takes it for batches
    assert fused.fused is not None and "sessions" not in vars(fused)  # segments load on first use only
    got = fused.forward_batch(ids, mask, types)
    assert np.array_equal(got[0], want_logits) and np.array_equal(got[1], want_exits)
    first = ids[:1, :int(mask[0].sum())], types[:1, :int(mask[0].sum())]
    one = fused.forward_one(*first)  # one example through the fused graph too: the segments stay unloaded
    assert one[1] == want_exits[0] and "sessions" not in vars(fused)
    by_loop = fused.forward_one(*first, loop=True)
    assert by_loop[1] == one[1] and np.array_equal(by_loop[0], one[0]) and "sessions" in vars(fused)


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_the_graphs_keep_one_copy_of_each_weight(exported, tmp_path, quantize):
    """Segments, deployed graph and fused graph hold their large weights in weights.bin, each distinct
    tensor once: besides the deployed model's weights, the early-exit graphs add only their exit heads.
    Exporting again into the same folder replaces it (weights.bin is the export's own file)."""
    import json

    import onnx

    from eebert_cli.deploy.onnx_weights import MIN_BYTES, WEIGHTS, initializers

    out, _, _ = exported
    ui = StepsSeen()
    folder = Path(export(out, tmp_path / "x", quantize=quantize, ui=ui)["out"])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["weights"] == WEIGHTS and manifest["format_version"] >= 4
    # one progress bar, run to its end: a step per graph traced, per graph quantized, and the fused graph
    graphs = len(manifest["segments"]) + 1
    assert [(total, done) for _, total, done in ui.bars] == [(graphs * (2 if quantize else 1) + 1,) * 2]

    def stored(name):  # (offset, length) of each tensor the graph keeps in weights.bin; none large kept inline
        spans = set()
        for t in initializers(onnx.load(str(folder / name), load_external_data=False).graph):
            if t.data_location == onnx.TensorProto.EXTERNAL:
                info = {e.key: e.value for e in t.external_data}
                assert info["location"] == WEIGHTS
                spans.add((int(info["offset"]), int(info["length"])))
            else:
                assert len(t.raw_data) < MIN_BYTES, (name, t.name)
        return spans

    segments = set().union(*(stored(s["file"]) for s in manifest["segments"]))
    deployed, fused = stored(manifest["deployed"]), stored(manifest["fused"])
    assert fused == segments  # the fused graph is the segments' nodes: their very weights
    size = lambda spans: sum(n for _, n in spans)  # noqa: E731
    heads = segments - deployed  # what early exit adds: its exit heads
    art = load_artifact(out)
    head_bytes = sum(p.numel() * 4 for h in art.exits.heads for p in h.parameters())
    assert size(heads) <= head_bytes + MIN_BYTES * len(heads)
    assert (folder / WEIGHTS).stat().st_size < size(deployed | segments) + 4096 * len(deployed | segments)
    again = export(out, folder, quantize=quantize)  # the folder is an export: replaced whole
    assert Path(again["out"]) == folder and (folder / WEIGHTS).is_file()
    (folder / WEIGHTS).rename(tmp_path / WEIGHTS)  # graphs copied without their weights: one line, not ORT's error
    with pytest.raises(EebertError, match="copy the export folder whole"):
        OnnxEarlyExit(folder)


def test_a_stateful_criterion_exports_no_fused_graph(exported, tmp_path):
    """patience counts across exits: its decision stays in the Python loop."""
    import json
    import shutil

    out, data, _ = exported
    art = tmp_path / "art"
    shutil.copytree(out, art, ignore=shutil.ignore_patterns("onnx*"))
    calibrate(load_artifact(art), data, CalibrationConfig(criterion="patience", target_speedup=1.5, bootstrap=10))
    folder = Path(export(art)["out"])
    assert "fused" not in json.loads((folder / "manifest.json").read_text())
    onnx = OnnxEarlyExit(folder, deployed=False)
    assert not (folder / "early-exit.onnx").exists() and onnx.fused is None
    model = EarlyExitModel.from_artifact(art)  # batches then run the segments from Python
    ids, mask, types = pad_batch(_encoded(model, data).input_ids[:16], _encoded(model, data).token_type_ids[:16], 0)
    assert onnx.forward_batch(ids.numpy(), mask.numpy(), types.numpy())[1].tolist() == \
        model.forward_batch(ids, mask, types)[1].tolist()


#: families whose layer state is more than the padding mask (their own ``export_state``; ModernBERT's mean-pooled
#: variant, whose masks are the cls one's); the others trace the default like BERT above (they pass too; left out
#: for time)
OWN_STATE = ("modernbert-mean", "mpnet", "deberta-v2")


@pytest.mark.parametrize("family", OWN_STATE)
def test_each_family_exports_and_the_graphs_decide_as_pytorch(family, tiny_data, tmp_path):
    """Each adapter's export_state is traced into the graphs (ModernBERT: both masks and rotary tables)."""
    out = tmp_path / "art"
    dcfg = DataConfig(spec=str(tiny_data))
    attach(str(make_model(tmp_path / family, family, seed=1)), dcfg,
           AttachConfig(train=TrainConfig(epochs=2, lr=3e-3)), out)
    data = load_data(dcfg)
    calibrate(load_artifact(out), data, CalibrationConfig(criterion="entropy", target_speedup=1.5, bootstrap=10))
    onnx = OnnxEarlyExit(export(out)["out"])
    model = EarlyExitModel.from_artifact(out)
    enc = _encoded(model, data)
    types = enc.token_type_ids  # None for families without segment embeddings
    ids, mask, t = pad_batch(enc.input_ids[:16], types[:16] if types else None, 0)
    np_t = None if t is None else t.numpy()
    lt, wt = model.forward_batch(ids, mask, t)
    lo, wo = onnx.forward_batch(ids.numpy(), mask.numpy(), np_t)
    assert wo.tolist() == wt.tolist() and np.abs(lo - lt.numpy()).max() < 1e-4
    for i in range(8):
        one = torch.tensor(enc.input_ids[i:i + 1])
        t1 = torch.tensor(types[i:i + 1]) if types else None
        lt, kt = model.forward_one(one, t1)
        lo, ko = onnx.forward_one(one.numpy(), None if t1 is None else t1.numpy())
        assert ko == kt and np.abs(lo - lt.numpy()).max() < 1e-4
    with torch.no_grad():
        ref = model.artifact.deployed.model(input_ids=ids, attention_mask=mask,
                                            **({} if t is None else {"token_type_ids": t})).logits
    assert np.abs(onnx.forward_deployed(ids.numpy(), mask.numpy(), np_t) - ref.numpy()).max() < 1e-4



SHARED_POOL_RUN = """
import sys, numpy as np
from eebert_cli.core.errors import EebertError
from eebert_cli.deploy.onnx_runtime import OnnxEarlyExit
a = np.load(sys.argv[2])
o = OnnxEarlyExit(sys.argv[1], threads=1, shared_pool=True)
logits, where = o.forward_batch(a["ids"], a["mask"], a["types"])
try:  # ORT makes the shared pool once: another size is refused, in one line
    OnnxEarlyExit(sys.argv[1], threads=2)
except EebertError as e:
    refused = str(e)
np.savez(sys.argv[3], logits=logits, where=where, refused=refused)
"""


def test_a_shared_thread_pool_decides_the_same_and_keeps_its_size(exported, tmp_path):
    """--ort-shared-pool: every session on one process-wide pool (in a child process: ORT then refuses
    sessions with their own pools, so it would leak into the other tests)."""
    import os
    import subprocess
    import sys

    out, data, info = exported
    enc = _encoded(EarlyExitModel.from_artifact(out), data)
    ids, mask, types = (x.numpy() for x in pad_batch(enc.input_ids[:16], enc.token_type_ids[:16], 0))
    np.savez(tmp_path / "in.npz", ids=ids, mask=mask, types=types)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run([sys.executable, "-c", SHARED_POOL_RUN, info["out"], tmp_path / "in.npz", tmp_path / "out.npz"],
                   check=True, env=env)
    got = np.load(tmp_path / "out.npz")
    lo, wo = OnnxEarlyExit(info["out"], threads=1).forward_batch(ids, mask, types)
    assert got["where"].tolist() == wo.tolist() and np.abs(got["logits"] - lo).max() < 1e-5
    assert "shared ONNX Runtime thread pool has 1 threads" in str(got["refused"])

"""Drive exported segment graphs with onnxruntime and the calibrated criterion.

The exit decision reuses the criterion's own ``step``: traced into the segment
graphs for stateless criteria, else run in torch on zero-copy views of
onnxruntime's outputs, so ONNX and PyTorch decide with the same arithmetic.
Batches use per-sample exits exactly like the PyTorch runtime: rows that leave
are dropped (hidden states and mask rows), padding is trimmed, input order kept.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from ..model.artifact import CALIBRATION, check_derivation, file_sha256, read_json
from ..model.calibration import INF
from ..criteria import build_criterion
from ..core.errors import EebertError
from ..model.runtime import BATCH_MODES, thresholds_from_json

MANIFEST = "manifest.json"


#: intra-op threads of this process's shared ONNX Runtime pool, once made (ORT cannot replace it)
_SHARED_POOL: list[int] = []
#: how ONNX Runtime sessions get their threads (`--ort-pool`): "per-session", pools that do not spin
#: (the default: safe where other processes share the cores); "shared", one spinning pool for the
#: process, ORT's own default behaviour (1.35-1.7x faster at batch 1 on cores nothing else uses;
#: docs/inference.md, "Fifth pass")
ORT_POOLS = ("per-session", "shared")


def use_shared_pool(threads: int) -> None:
    """Every ONNX Runtime session this process makes from now on runs on one shared, spinning pool of
    ``threads`` intra-op threads. Process-wide by ORT's rule: it makes the pool once and then refuses
    sessions with their own pools; another size later is refused in one line."""
    import onnxruntime as ort

    if not _SHARED_POOL:
        ort.set_global_thread_pool_sizes(threads, 1)
        _SHARED_POOL.append(threads)
    elif _SHARED_POOL[0] != threads:
        raise EebertError(f"this process's shared ONNX Runtime thread pool has {_SHARED_POOL[0]} threads, "
                          f"not {threads} (ONNX Runtime makes it once)",
                          f"use --threads {_SHARED_POOL[0]}, or per-session pools, in this process")


def check_pool(pool: str, runtime: str, onnx_dir: str = "") -> None:
    """The ONNX Runtime flags of a command that may run another runtime: ``--ort-pool`` one of ORT_POOLS, and
    it and ``--onnx`` only with the onnxruntime runtime (refused in one line, not ignored)."""
    if onnx_dir and runtime != "onnxruntime":
        raise EebertError(f"--onnx names the export --runtime onnxruntime runs, not --runtime {runtime}",
                          "add --runtime onnxruntime, or drop --onnx")
    if pool not in ORT_POOLS:
        raise EebertError(f"unknown --ort-pool {pool!r}", f"choose one of {', '.join(ORT_POOLS)}")
    if pool != ORT_POOLS[0] and runtime != "onnxruntime":
        raise EebertError(f"--ort-pool {pool} sets ONNX Runtime's threads, not --runtime {runtime}'s",
                          "add --runtime onnxruntime, or drop --ort-pool")


def session(path: Path, threads: int = 0, profile_prefix: str | None = None, shared_pool: bool = False):
    """An InferenceSession with the one configuration every graph gets, deployed and segments alike
    (so their comparison is fair); ``profile_prefix``: write ORT's profile there (benchmarks/onnx_profile.py).

    All graph optimisations; ``threads`` intra-op threads (0: ORT's default), one inter-op thread
    (the graphs are sequential); the CPU arena and memory patterns on (ORT's defaults: a pattern
    per input shape is planned once, then reused). Spinning off: one session per segment means
    several intra-op pools, and idle threads of one pool spinning would steal the cores another
    pool computes on; measured under load, spinning made every call ~10x slower (docs/inference.md).

    ``shared_pool``: every such session runs on one process-wide pool of ``threads`` threads
    instead (``use_per_session_threads = False``), so a segment call finds the threads the
    previous one used. ORT's Python binding sets only its size: the shared pool spins, which
    pays on an idle machine and costs under load (docs/inference.md). Opt-in, and process-wide:
    once ORT has the shared pool it refuses sessions with their own, so every later session runs
    on it too, and its size is fixed.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise EebertError("the ONNX runtime needs onnxruntime", "pip install 'eebert[onnx]'") from None
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if shared_pool or _SHARED_POOL:
        use_shared_pool(threads)
        opts.use_per_session_threads = False
    else:
        if threads:
            opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix:
        opts.enable_profiling, opts.profile_file_prefix = True, profile_prefix
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def require_export(folder: Path) -> None:
    """Refuse a folder with no export in it, in one line."""
    if not (folder / MANIFEST).is_file():
        raise EebertError(f"no ONNX export in {folder} (no {MANIFEST})", "create one with `eebert export ARTIFACT`")


def check_export(folder: str | Path, artifact_path: str | Path) -> None:
    """Refuse, before any backbone work, a missing export or one made from another calibration than the
    artifact's current one."""
    folder, artifact_path = Path(folder), Path(artifact_path)
    require_export(folder)
    if not (artifact_path / CALIBRATION).is_file():
        return  # nothing to compare; the runtime says the artifact is not calibrated
    m = read_json(folder / MANIFEST)
    if not m.get("derived_from") and not m.get("calibration_sha256"):
        return  # exported by an older eebert: it recorded nothing to compare
    record = m if m.get("derived_from") else {"derived_from": {CALIBRATION: m.get("calibration_sha256")}}
    check_derivation(record, {CALIBRATION: file_sha256(artifact_path / CALIBRATION)},
                     f"the ONNX export in {folder} (graphs of an older calibration)", f"eebert export {artifact_path}")


class OnnxEarlyExit:
    """An export's graphs under onnxruntime. One example and batches run the fused graph (one call: exits
    decided in the graph, onnx_fuse.py) where the export has one and ``fused``; whole-batch exits and
    exports without it run the segments from Python (loaded on first use, so a server answering per
    sample holds one copy of the weights)."""

    def __init__(self, folder: str | Path, threads: int = 0, deployed: bool = True, shared_pool: bool = False,
                 fused: bool = True):
        self.folder = Path(folder)
        require_export(self.folder)
        m = self.manifest = read_json(self.folder / MANIFEST)
        if m.get("weights") and not (self.folder / m["weights"]).is_file():
            raise EebertError(f"the ONNX export in {folder} lacks {m['weights']}, which holds its graphs' weights",
                              "copy the export folder whole, or re-run `eebert export`")
        self.criterion = build_criterion(m["criterion"], m.get("criterion_params"))
        self.segments = m["segments"]
        self._threads, self._shared_pool = threads, shared_pool
        self.fused = session(self.folder / m["fused"], threads, shared_pool=shared_pool) \
            if fused and m.get("fused") else None
        self._fused_inputs = [i.name for i in self.fused.get_inputs()] if self.fused else []
        self.exit_of = [s["exit"] for s in self.segments]
        self.thresholds = thresholds_from_json([s["threshold"] for s in self.segments])
        self.num_exits = m["num_exits"]
        self.num_labels = m["num_labels"]
        #: what segment 0 outputs for the later segments (older exports: nothing, each rebuilt its state)
        self.carry = m.get("carry", [])
        #: position of the exit score in each segment's outputs (stateless criteria), else None
        self.score_at = [seg["outputs"].index("score") if "score" in seg["outputs"] else None for seg in self.segments]
        first = self.segments[0]["outputs"]
        self._carry_at = [first.index(c) for c in self.carry]
        self.deployed = session(self.folder / m["deployed"], threads, shared_pool=shared_pool) if deployed else None
        self._deployed_inputs = [i.name for i in self.deployed.get_inputs()] if deployed else []

    @cached_property
    def sessions(self) -> list:
        return [session(self.folder / s["file"], self._threads, shared_pool=self._shared_pool) for s in self.segments]

    @cached_property
    def _inputs(self) -> list[list[str]]:
        # looked up once: asking a session for its inputs builds Python objects on every call; an input the
        # tracer dropped (unused token types, a mask only the carried state needed) is not fed
        return [[i.name for i in sess.get_inputs()] for sess in self.sessions]

    @staticmethod
    def _run(sess, names, feed):
        return sess.run(None, {n: feed[n] for n in names})

    def run_segment(self, i: int, feed: dict) -> list:
        """Segment ``i``'s outputs, fed the inputs its graph declares (what other loops, the tagger's, call)."""
        return self._run(self.sessions[i], self._inputs[i], feed)

    def forward_deployed(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray | None) -> np.ndarray:
        if self.deployed is None:  # not loaded up front (a server of the early exit never asks): now, once
            self.deployed = session(self.folder / self.manifest["deployed"], self._threads,
                                    shared_pool=self._shared_pool)
            self._deployed_inputs = [i.name for i in self.deployed.get_inputs()]
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return self._run(self.deployed, self._deployed_inputs, feed)[0]

    def forward_one(self, ids: np.ndarray, types: np.ndarray, loop: bool = False):
        """One unpadded example [1, T] (int64) -> (logits [1, C], exit index). Through the fused graph where
        the export has one (bit for bit the segment loop's answer; at batch size 1 as fast or faster on
        fp32 and within noise on int8 in every run so far: docs/inference.md, "Thirteenth pass"), unless
        ``loop``: the segments from Python, with the thresholds in ``self.thresholds`` (which the latency
        profile sets per path)."""
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": types}
        if self.fused is not None and not loop:
            logits, where = self._run(self.fused, self._fused_inputs, feed)
            return logits, int(where[0])
        cstate = self.criterion.init_state(1)
        last = len(self.sessions) - 1
        for i, sess in enumerate(self.sessions):
            outs = self._run(sess, self._inputs[i], feed)
            if i == last:
                return outs[0], self.exit_of[i]
            if i == 0:  # the carried state, zero-copy views of segment 0's outputs
                feed.update(zip(self.carry, (outs[j] for j in self._carry_at)))
            feed["hidden_in"] = outs[0]
            logits, t = outs[1], self.thresholds[i]
            if t == INF:
                return logits, self.exit_of[i]
            if self.score_at[i] is not None:
                score = float(outs[self.score_at[i]][0])
            else:
                score, cstate = self.criterion.step(torch.from_numpy(logits), cstate)
                score = score.item()
            if score <= t:
                return logits, self.exit_of[i]
        raise AssertionError("unreachable: the last segment always answers")

    def every_exit(self, ids: np.ndarray, types: np.ndarray) -> np.ndarray:
        """One unpadded example [1, T] -> the logits of every exported exit and of the deployed head,
        [segments, C] (a tagger's export: [segments, T, C]), no exit taken (the segment loop's arithmetic)."""
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": types}
        got = []
        for i, sess in enumerate(self.sessions):
            outs = self._run(sess, self._inputs[i], feed)
            if i == 0:
                feed.update(zip(self.carry, (outs[j] for j in self._carry_at)))
            got.append(outs[0] if i == len(self.sessions) - 1 else outs[1])
            feed["hidden_in"] = outs[0]
        return np.concatenate(got)

    def forward_batch(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray, trim: bool = True,
                      mode: str = "per-sample", loop: bool = False):
        """A right-padded batch -> (logits [B, C], exit index [B]) in input order (see runtime.forward_batch).
        ``loop``: run the segments from Python even where the fused graph could (benchmarks compare them)."""
        if mode not in BATCH_MODES:
            raise EebertError(f"unknown batch mode {mode!r}", f"choose one of {', '.join(BATCH_MODES)}")
        if self.fused is not None and mode == "per-sample" and trim and not loop:  # the same loop, in the graph
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            return tuple(self._run(self.fused, self._fused_inputs, feed))
        n = ids.shape[0]
        out = np.empty((n, self.num_labels), dtype=np.float32)
        where = np.full(n, self.num_exits, dtype=np.int64)
        rows = np.arange(n)
        cstate = self.criterion.init_state(n)
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        last = len(self.sessions) - 1
        for i, sess in enumerate(self.sessions):
            outs = self._run(sess, self._inputs[i], feed)
            if i == last:
                out[rows] = outs[0]
                where[rows] = self.exit_of[i]
                return out, where
            if i == 0:
                feed.update(zip(self.carry, (outs[j] for j in self._carry_at)))
            feed["hidden_in"], logits = outs[0], outs[1]
            if self.score_at[i] is not None:
                leave = outs[self.score_at[i]] <= self.thresholds[i]
            else:
                score, cstate = self.criterion.step(torch.from_numpy(logits), cstate)
                leave = (score <= self.thresholds[i]).numpy()
            if mode == "whole-batch":
                if leave.all():
                    out[rows] = logits
                    where[rows] = self.exit_of[i]
                    return out, where
                continue
            if not leave.any():
                continue
            out[rows[leave]] = logits[leave]
            where[rows[leave]] = self.exit_of[i]
            keep = np.flatnonzero(~leave)
            if keep.size == 0:
                return out, where
            rows, mask = rows[keep], feed["attention_mask"][keep]
            cstate = self.criterion.select(cstate, torch.from_numpy(keep))
            width = int(mask.sum(1).max()) if trim else mask.shape[1]
            # one copy of each remaining row, already trimmed (take on a view makes it contiguous); the
            # hidden states have the sequence on axis 1, the carried state on its last axis
            feed["attention_mask"] = np.ascontiguousarray(mask[:, :width])
            feed["hidden_in"] = np.take(feed["hidden_in"][:, :width], keep, axis=0)
            for c in self.carry:
                feed[c] = np.take(feed[c][..., :width], keep, axis=0)
        raise AssertionError("unreachable: the last segment always answers")

"""Batch size 1 as CUDA graphs: one graph per segment between evaluated exits, per length bucket (opt-in).

At batch 1 a BERT layer on a GPU is launch-bound: each of its dozen kernels
costs a launch, whatever its size. ``SegmentGraphs`` captures each segment
(the layers up to an exit, the exit's logits and its score) once per length
bucket, with the input padded to the bucket and masked, and replays it; the
exit decision reads the score on the host (the one sync an exit needs) before
the next segment is replayed. Off CUDA the same padded segments run eagerly,
which is what the tests compare with ``forward_one`` on the CPU.

Supported: stateless criteria (a score per exit from that exit alone), no
bypasses, no skipping gates; anything else is refused with one line. Padding
changes rounding slightly (masked, as in batches), so a score on its
threshold may leave one exit earlier or later than ``forward_one``
(``parity.runtime_parity`` bounds the same effect for batches).
"""

from __future__ import annotations

import torch

from .calibration import INF
from ..core.errors import EebertError


class SegmentGraphs:
    """``model.forward_one`` replayed from CUDA graphs: ``(input_ids [1, T], token_type_ids) -> (logits, exit)``."""

    def __init__(self, model, bucket: int = 16):
        if model.gates is not None or model.taps or not model.criterion.stateless:
            raise EebertError("segment graphs need a stateless criterion, no bypasses and no skipping gates",
                              "run without segment graphs")
        self.model, self.bucket = model, bucket
        self.cuda = model.device.type == "cuda"
        self.plan = model._plan()
        self.buckets: dict[tuple[int, bool], tuple] = {}

    def _bucket(self, width: int, types: bool):
        """Static inputs and, per segment, (run, graph or None, outputs) for one length bucket."""
        m, dev = self.model, self.model.device
        ad = m.adapter
        static = {"ids": torch.zeros(1, width, dtype=torch.long, device=dev),
                  "mask": torch.zeros(1, width, dtype=torch.long, device=dev),
                  "types": torch.zeros(1, width, dtype=torch.long, device=dev) if types else None}
        box: dict = {}  # what one segment hands the next: the hidden states and the prepared mask
        stops = [layer for _, layer, _ in self.plan] + [m.num_layers]

        def segment(j: int):
            def run():
                if j == 0:
                    hidden = ad.embed(static["ids"], static["mask"], static["types"])
                    box["state"] = ad.prepare(hidden, static["mask"])
                    done = 0
                else:
                    hidden, done = box["hidden"], stops[j - 1]
                for i in range(done, stops[j]):
                    hidden = ad.layer(i, hidden, box["state"])
                box["hidden"] = hidden
                if j == len(self.plan):
                    return ad.head(hidden, static["mask"]), None
                k, layer, threshold = self.plan[j]
                get = m._getter(layer, hidden, static["mask"], {})
                logits = m.exits.logits(k, get)
                if threshold == INF:  # "always": no score needed
                    return logits, None
                wants = m.criterion.needs_features
                score, _ = m.criterion.observe(logits, {}, get(m.feature_reduction, layer) if wants else None)
                return logits, score

            return run

        runs = [segment(j) for j in range(len(stops))]
        if not self.cuda:
            return static, [(run, None, None) for run in runs]
        with torch.inference_mode():
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):  # warm-up off the capture, segments in order
                    for run in runs:
                        run()
            torch.cuda.current_stream().wait_stream(side)
            segs = []
            for run in runs:  # captured in order: each reads the previous one's output buffers
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    outputs = run()
                segs.append((run, graph, outputs))
        return static, segs

    @torch.inference_mode()
    def __call__(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None):
        t = input_ids.shape[1]
        width = max(t, -(-t // self.bucket) * self.bucket)
        key = (width, token_type_ids is not None)
        if key not in self.buckets:
            self.buckets[key] = self._bucket(width, token_type_ids is not None)
        static, segs = self.buckets[key]
        static["ids"].zero_()
        static["ids"][:, :t] = input_ids
        static["mask"].zero_()
        static["mask"][:, :t] = 1
        if token_type_ids is not None:
            static["types"].zero_()
            static["types"][:, :t] = token_type_ids
        for j, (run, graph, outputs) in enumerate(segs):
            if graph is None:
                outputs = run()
            else:
                graph.replay()
            logits, score = outputs
            if j == len(self.plan):
                return logits.clone(), len(self.model.layers)
            k, _, threshold = self.plan[j]
            if threshold == INF or score.item() <= threshold:  # the exit's one host sync
                return logits.clone(), k
        raise AssertionError("unreachable: the last segment ends in the deployed head")

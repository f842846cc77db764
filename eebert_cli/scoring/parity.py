"""Does the runtime answer as calibration assumed? The runtime against the simulation, on one placement.

Calibration and the benchmark's accuracy and FLOPs figures come from a
simulation (``outputs.split_outputs``: padded, length-sorted batches, every
exit scored); inference runs the runtime (batch 1 unpadded, or per-sample
batches whose rows leave as they exit). In fp32 on the CPU the two agree to
rounding. In bf16 or fp16, or on a GPU, padded and unpadded kernels round
differently, so a row whose score sits on its threshold may leave one exit
earlier or later: that is expected; any other difference is a bug.
"""

from __future__ import annotations

import torch

from .threshold_search import INF, decide
from ..data import TaskData
from ..model.device import placement_of
from ..model.features import encode
from .outputs import problem_for, split_outputs


def runtime_parity(model, data: TaskData, split: str, batch_size: int = 16, margin: float = 0.05,
                   limit: int = 0) -> dict:
    """Exit and logits of every row (the first ``limit`` rows when set), runtime vs simulation.

    ``margin``: how close (in score units) a simulated score must be to its threshold for a
    different exit to count as a borderline decision rather than a mismatch.
    Returns counts and the largest logit difference where the exits agree.
    """
    if limit:
        s = data.split(split)
        data = TaskData(data.name, {split: s.subset(list(range(min(limit, len(s)))))})
    art = model.artifact
    out = split_outputs(art, data, split)
    scores = problem_for(out, model.criterion).scores
    thresholds = torch.tensor(model.thresholds, dtype=torch.float64)
    sim = decide(scores, thresholds)
    enc = encode(art.deployed.tokenizer, data.split(split), art.config["max_length"])
    dev, n = model.device, len(enc)
    runs = {}
    one_logits, one_exit = [], []
    for i in range(n):
        types = enc.token_type_ids
        logits, k = model.forward_one(torch.tensor([enc.input_ids[i]], device=dev),
                                      torch.tensor([types[i]], device=dev) if types else None)
        one_logits.append(logits.float().cpu()[0])
        one_exit.append(k)
    runs["batch1"] = (torch.stack(one_logits), torch.tensor(one_exit))
    b_logits = torch.empty_like(runs["batch1"][0])
    b_exit = torch.empty(n, dtype=torch.long)
    for idx, batch in enc.batches(batch_size):
        t = {k: None if v is None else v.to(dev) for k, v in batch.items()}
        logits, where = model.forward_batch(t["input_ids"], t["attention_mask"], t["token_type_ids"])
        b_logits[idx], b_exit[idx] = logits.float().cpu(), where.cpu()
    runs["batched"] = (b_logits, b_exit)
    sim_logits = out.logits[torch.arange(n), sim].float()
    result = {"rows": n, "placement": placement_of(model.adapter.model).describe(), "margin": margin}
    for name, (logits, exits) in runs.items():
        same = exits == sim
        first = torch.minimum(exits, sim).clamp(max=scores.shape[1] - 1)  # the earlier decision of the two
        t = thresholds[first]
        near = (scores[torch.arange(n), first] - t).abs() <= margin
        near &= t.abs() != INF
        result[name] = {"same_exit": int(same.sum()), "borderline": int((~same & near).sum()),
                        "mismatched": int((~same & ~near).sum()),
                        "max_logit_diff": float((logits - sim_logits)[same].abs().max()) if same.any() else 0.0}
    return result

"""SmartBERT's cross-layer contrastive term, usable with any objective (``--contrastive WEIGHT``).

InfoNCE between adjacent exits: a sample's representation at exit k and at
exit k+1 form the positive pair; the other samples of the batch are the
negatives (both directions, averaged). With the backbone frozen, the
representations are the exits' own hidden activations (``ExitHead.encode``:
the MLP's hidden layer, the attention head's tanh output, ...), which are what
training can move. Adjacent exits whose representations differ in width (a
LECO mix) are skipped; heads with no hidden layer (``linear``) pass their
frozen input, so the term does not train them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_layer_infonce(reps: list[torch.Tensor], temperature: float = 0.5) -> torch.Tensor:
    terms = []
    for a, b in zip(reps, reps[1:]):
        if a.shape != b.shape or a.shape[0] < 2:
            continue
        za, zb = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
        sim = za @ zb.T / temperature
        target = torch.arange(len(sim), device=sim.device)
        terms.append((F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target)) / 2)
    if not terms:
        return torch.zeros((), requires_grad=False)
    return torch.stack(terms).mean()

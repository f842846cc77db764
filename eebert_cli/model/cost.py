"""FLOPs cost model: what a sample costs when it leaves at each exit.

Counts (2 x multiply-adds) the embeddings, every encoder layer run, every exit
head evaluated on the way (including ones that did not fire) and the deployed
head when the sample goes all the way. An exit the runtime skips (``skip_exits``
with ``exit_charges``) costs nothing. With skipping gates, a layer a sample
skipped costs nothing and every gate evaluated on the way costs its own FLOPs. Costs depend on each sample's own
length: at batch size 1 nothing is padded. Attention scores and the weighted sum
count the query-key pairs a layer attends: T x T for full attention, and for
sliding-window layers (``Dims.attention_spans``, e.g. ModernBERT's local layers)
only the keys within the window, so long inputs cost what the window lets them.
"""

from __future__ import annotations

import torch

from ..backbones import Dims


def attended_pairs(seq: torch.Tensor, span: int | None) -> torch.Tensor:
    """Query-key pairs of a length-``seq`` input where |query - key| <= ``span`` (None: all, seq x seq)."""
    if span is None:
        return seq * seq
    w = torch.clamp(seq - 1, max=span)  # keys either side of a query away from the edges
    return seq + w * (2 * seq - w - 1)  # seq + 2 * sum_q min(q, w); = seq * seq when w = seq - 1


def layer_flops(d: Dims, seq: torch.Tensor, index: int) -> torch.Tensor:
    """FLOPs of encoder layer ``index`` (0-based) on inputs of length ``seq``."""
    h, f = d.hidden_size, d.intermediate_size
    # Q, K, V, O projections + the FFN matrices + scores and weighted sum over the attended pairs
    return 2 * seq * (4 * h * h + d.ffn_matrices * h * f) + 4 * h * attended_pairs(seq, d.attention_span(index))


def layer_costs(d: Dims, seq: torch.Tensor) -> torch.Tensor:
    """[N, L]: FLOPs of every encoder layer for each input length."""
    return torch.stack([layer_flops(d, seq, i) for i in range(d.num_layers)], -1)


def embed_flops(d: Dims, seq: torch.Tensor) -> torch.Tensor:
    return 10 * seq * d.hidden_size  # three embedding sums + LayerNorm


def head_flops(d: Dims) -> int:
    return 2 * d.hidden_size * d.hidden_size + 2 * d.hidden_size * d.num_labels  # pooler + classifier


def encoder_flops(d: Dims, seq: torch.Tensor, skipped: torch.Tensor | None = None, gates=None) -> torch.Tensor:
    """[N, L+1]: column l is what reaching layer l's output costs (embeddings, layers run, gates).

    ``skipped`` [N, L] marks the layers each sample skipped; ``gates`` (with
    ``layers``, ``active`` and ``flops(seq)``) is charged once per gated layer reached.
    """
    ran = torch.ones(len(seq), d.num_layers, dtype=torch.float64) if skipped is None else (~skipped).double()
    per_layer = ran * layer_costs(d, seq)
    if gates is not None and gates.active:
        gate = torch.as_tensor(gates.flops(seq), dtype=torch.float64).expand(len(seq))
        for l in gates.layers:
            per_layer[:, l - 1] += gate
    zero = torch.zeros(len(seq), 1, dtype=torch.float64)
    return embed_flops(d, seq)[:, None] + torch.cat([zero, per_layer.cumsum(1)], 1)


def exit_costs(d: Dims, lengths: torch.Tensor, exit_layers: list[int], exit_flops,
               skipped: torch.Tensor | None = None, gates=None) -> torch.Tensor:
    """Cost [N, K] of leaving at each exit, the deployed head being exit K-1.

    ``exit_layers`` are the 1-based layers of the K-1 trainable exits, in order;
    ``exit_flops(k, seq)`` gives the cost of evaluating trainable exit k;
    ``skipped`` and ``gates`` as in :func:`encoder_flops`.
    """
    seq = lengths.double()
    reach = encoder_flops(d, seq, skipped, gates)
    spent = exit_charges(exit_flops, len(exit_layers), seq).cumsum(1)
    cols = [reach[:, layer] + spent[:, k] for k, layer in enumerate(exit_layers)]
    cols.append(reach[:, d.num_layers] + (spent[:, -1] if exit_layers else 0.0) + head_flops(d))
    return torch.stack(cols, 1)


def exit_charges(exit_flops, num_exits: int, seq: torch.Tensor) -> torch.Tensor:
    """[N, K-1]: what evaluating each trainable exit (head and bypass) adds to every path that passes it."""
    seq = seq.double()
    if not num_exits:
        return torch.zeros(len(seq), 0, dtype=torch.float64)
    return torch.stack([torch.as_tensor(exit_flops(k, seq), dtype=torch.float64).expand(len(seq))
                        for k in range(num_exits)], 1)


def skip_exits(cost: torch.Tensor, charges: torch.Tensor, off) -> torch.Tensor:
    """``cost`` [N, K] with exits ``off`` never evaluated: each stops charging the paths that pass it
    (whatever the cost counts, FLOPs or seconds, ``charges`` [N, K-1] in the same unit)."""
    cost = cost.clone()
    for j in off:
        cost[:, j + 1:] -= charges[:, j:j + 1]
    return cost


def full_cost(d: Dims, lengths: torch.Tensor) -> torch.Tensor:
    seq = lengths.double()
    return embed_flops(d, seq) + layer_costs(d, seq).sum(-1) + head_flops(d)

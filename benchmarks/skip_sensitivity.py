"""How a frozen backbone copes with a skipped layer: skip one layer for every example, measure.

    PYTHONPATH=$PWD python benchmarks/skip_sensitivity.py [--checkpoint DIR] [--split validation] [--limit N]

SmartBERT's gates make layer l+1 read layer l-1's output. A frozen backbone
never saw such inputs, so this prints, for each layer skipped alone (and for
pairs of adjacent layers), the deployed head's accuracy and its agreement with
the unskipped deployed model, side by side with no skipping, on the same
examples in one run. It bounds what frozen gates can save before accuracy
falls; `docs/methods/smartbert.md` quotes the demo's figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eebert_cli.model.checkpoint import load_deployed  # noqa: E402
from eebert_cli.data import DataConfig, load_data  # noqa: E402
from eebert_cli.model.features import encode  # noqa: E402
from eebert_cli.model.checkpoint import gold_labels  # noqa: E402


@torch.inference_mode()
def final_logits(adapter, enc, skip: set[int], batch_size: int = 64) -> torch.Tensor:
    """Deployed head logits with the 1-based layers in ``skip`` skipped for every example."""
    out = torch.empty(len(enc), adapter.dims.num_labels)
    for idx, b in enc.batches(batch_size):
        mask = b["attention_mask"]
        hidden = adapter.embed(b["input_ids"], mask, b["token_type_ids"])
        state = adapter.prepare(hidden, mask)
        for i in range(adapter.dims.num_layers):
            if i + 1 not in skip:
                hidden = adapter.layer(i, hidden, state)
        out[torch.tensor(idx)] = adapter.head(hidden, mask).float()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=".cache/demo/minilm-rotten-tomatoes")
    ap.add_argument("--data", default="rotten-tomatoes")
    ap.add_argument("--split", default="validation")
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N examples of the split (smoke runs)")
    args = ap.parse_args()
    dep = load_deployed(args.checkpoint)
    data = load_data(DataConfig(spec=args.data))
    split = data.split(args.split)
    n = min(len(split), args.limit) if args.limit else len(split)
    enc = encode(dep.tokenizer, split.subset(list(range(n))), args.max_length)
    labels = gold_labels(dep, data, args.split)
    labels = None if labels is None else labels[:n]
    num_layers = dep.adapter.dims.num_layers
    base = final_logits(dep.adapter, enc, set()).argmax(-1)

    def row(skip: set[int]) -> str:
        pred = final_logits(dep.adapter, enc, skip).argmax(-1)
        acc = "-" if labels is None else f"{100 * (pred == labels).double().mean():.2f}"
        return f"| {','.join(map(str, sorted(skip))) or 'none'} | {acc} | {100 * (pred == base).double().mean():.2f} |"

    print(f"{args.checkpoint} on {args.split} ({len(enc)} examples), backbone frozen, deployed head:\n")
    print("| layers skipped | accuracy % | agreement with deployed % |\n|---|---|---|")
    print(row(set()))
    for l in range(1, num_layers + 1):
        print(row({l}))
    for l in range(2, num_layers):
        print(row({l, l + 1}))


if __name__ == "__main__":
    main()

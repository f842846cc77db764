"""Per-token exit (TOKEE-like) against per-sentence exit and the deployed tagger, on the clock.

    PYTHONPATH=$PWD python benchmarks/token_exit.py --artifact .cache/demo/tagging-wnut-artifact \
        [--split test] [--limit N] [--thresholds 0.5,0.8,0.9,0.95] [--repeats 3] [--threads 2] [--out r.json]

For each token threshold (a word halts when its top tag probability reaches it; see
``eebert_cli/model/token_halt.py``), this runs the real halting pass sentence by sentence
(batch size 1) on the split and prints entity F1, the FLOPs speedup the pass counted and the
measured wall-clock speedup, next to the artifact's calibrated per-sentence exit and the
deployed tagger, timed in the same rounds (each mode once per round, median of ``repeats``
rounds). Thresholds here are a sweep; `eebert calibrate ART --token-exit` chooses one on validation
with the same scoring (``scoring/token_calibrate.py``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eebert_cli.model.artifact import load_artifact  # noqa: E402
from eebert_cli.data import load_data  # noqa: E402
from eebert_cli.scoring.outputs import data_config_of  # noqa: E402
from eebert_cli.tasks.entities import entity_scores  # noqa: E402
from eebert_cli.model.tagger_runtime import Tagger  # noqa: E402
from eebert_cli.scoring.tagging import split_tags  # noqa: E402
from eebert_cli.model.token_halt import TokenHaltTagger  # noqa: E402
from eebert_cli.scoring.token_calibrate import tag_names as names, token_scores  # noqa: E402


def timed(fn, repeats: int):
    """Median seconds of ``repeats`` calls, and what the last call returned."""
    runs, out = [], None
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        out = fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--thresholds", default="0.5,0.8,0.9,0.95,0.99")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    art = load_artifact(args.artifact)
    data = load_data(data_config_of(art.config, None))
    split = data.split(args.split)
    words, gold = split.texts, split.labels
    if args.limit:
        words, gold = words[:args.limit], gold[:args.limit]
    id2label = art.deployed.id2label
    st = split_tags(art, data, args.split)  # FLOPs of the deployed tagger per sentence
    full = st.full[:len(words)].sum().item()
    sentence = Tagger(art)
    model = art.deployed.model
    tok = art.deployed.tokenizer
    inputs = [torch.tensor([x]) for x in tok(words, is_split_into_words=True, truncation=True,
                                             max_length=art.config["max_length"])["input_ids"]]

    def deployed() -> None:
        with torch.inference_mode():
            for x in inputs:
                model(input_ids=x)

    halts = {thr: TokenHaltTagger(art, thr) for thr in [float(x) for x in args.thresholds.split(",")]}
    modes = {"deployed": deployed, "sentence": lambda: sentence.tag_words(words, batch_size=1),
             **{thr: (lambda h=h: [h.tag_one(w) for w in words]) for thr, h in halts.items()}}
    seconds = {m: [] for m in modes}
    outs = {}
    for _ in range(max(args.repeats, 1)):  # every mode once per round: drifting load hits all alike
        for m, fn in modes.items():
            t, outs[m] = timed(fn, 1)
            seconds[m].append(t)
    sec = {m: statistics.median(v) for m, v in seconds.items()}
    base = sec["deployed"]
    dep_tags = [names(t, len(w), id2label) for (t, _, _), w in zip(sentence.tag_words(words, exit_at=len(art.exits.layers)),
                                                                       words)]
    rows = [{"mode": "deployed", "entity_f1": entity_scores(gold, dep_tags)["f1"], "flops_x": 1.0, "wall_x": 1.0,
             "ms": 1000 * base / len(words)}]
    got = outs["sentence"]
    e = torch.tensor([art.calibration.exit_layers.index(layer) for _, _, layer in got])
    rows.append({"mode": f"per-sentence ({art.calibration.criterion})",
                 "entity_f1": entity_scores(gold, [names(g[0], len(w), id2label) for g, w in zip(got, words)])["f1"],
                 "flops_x": full / st.cost[torch.arange(len(words)), e].sum().item(), "wall_x": base / sec["sentence"],
                 "ms": 1000 * sec["sentence"] / len(words)})
    for thr in halts:
        rows.append({"mode": f"per-token (p >= {thr})", **token_scores(outs[thr], words, gold, id2label, full),
                     "wall_x": base / sec[thr], "ms": 1000 * sec[thr] / len(words)})
    print(f"{len(words)} sentences of {args.split}, batch size 1, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} runs")
    print(f"{'mode':<28} {'entity F1 %':>11} {'FLOPs x':>8} {'wall x':>7} {'ms/sent':>8}")
    for r in rows:
        print(f"{r['mode']:<28} {100 * r['entity_f1']:>11.2f} {r['flops_x']:>8.2f} {r['wall_x']:>7.2f} {r['ms']:>8.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"split": args.split, "sentences": len(words), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

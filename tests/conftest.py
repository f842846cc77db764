"""Tiny random checkpoints built from a config in code, and small data files."""

from __future__ import annotations

import atexit
import contextlib
import csv
import io
import os
import random
import runpy
import shutil
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

# `datasets` caches Arrow copies of data files; keep the tests' out of the user's cache (read at import)
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="eebert-test-datasets-")
atexit.register(shutil.rmtree, os.environ["HF_DATASETS_CACHE"], True)

# Under pytest-xdist every worker is a process with torch's default of one thread per core: N workers then
# run N x cores spinning OpenMP threads on the cores, which wait on each other (the suite took about twice
# as long on 2 cores). Each worker gets its share of the cores, as do the processes the tests start.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _THREADS = max(1, (os.cpu_count() or 1) // _WORKERS)
    os.environ["OMP_NUM_THREADS"] = str(_THREADS)
    torch.set_num_threads(_THREADS)

from eebert_cli.core.ui import UI  # noqa: E402  (after the cache's variable: nothing here may read it first)


@dataclass
class ScriptRun:
    """What ``run_script`` returns: the fields of a ``subprocess.CompletedProcess`` the tests read."""

    returncode: int
    stdout: str
    stderr: str


def run_script(path: Path, argv: list) -> ScriptRun:
    """``python PATH ARGV`` in this process, its exit code and output as a subprocess's would be: the tests of
    the example and benchmark scripts pay torch's and transformers' imports once, not once a run (seconds
    each). ``SystemExit("message")`` prints the message and exits 1, as Python does; torch's thread count
    and its global random state, which the scripts set for their own process, are restored after."""
    out, err = io.StringIO(), io.StringIO()
    threads, rng, old_argv = torch.get_num_threads(), torch.get_rng_state(), sys.argv
    sys.argv = [str(path), *map(str, argv)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(str(path), run_name="__main__")
            except SystemExit as e:
                if isinstance(e.code, str):
                    print(e.code, file=sys.stderr)
                code = 1 if isinstance(e.code, str) else e.code or 0
            except Exception:  # noqa: BLE001  (a crash is the run's result, as in a child process)
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = old_argv
        torch.set_num_threads(threads)
        torch.set_rng_state(rng)
    return ScriptRun(code, out.getvalue(), err.getvalue())


WORDS = ["good", "great", "fine", "love", "nice", "bad", "awful", "poor", "hate", "dull",
         "the", "a", "movie", "film", "plot", "acting", "was", "is", "very", "not"]


def make_tokenizer(folder: Path, token_types: bool = True):
    """The tiny word-level tokenizer every family's test model uses (vocab ids are what matter).

    Families without segment embeddings (DistilBERT, MPNet, ModernBERT) get a tokenizer that
    emits no token_type_ids, as their own tokenizers do.
    """
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    kw = {} if token_types else {"model_input_names": ["input_ids", "attention_mask"]}
    return BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True, **kw)


TINY = dict(hidden_size=32, num_attention_heads=4, intermediate_size=64, hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.1)


def tiny_config(family: str, vocab: int, layers: int, labels: dict):
    """A tiny config of each supported family, with each family's distinctive features switched on."""
    import transformers as t

    if family == "bert":
        return t.BertConfig(vocab_size=vocab, num_hidden_layers=layers, max_position_embeddings=64, **TINY, **labels)
    if family in ("roberta", "xlm-roberta"):
        cls = t.RobertaConfig if family == "roberta" else t.XLMRobertaConfig
        return cls(vocab_size=vocab, num_hidden_layers=layers, max_position_embeddings=66, pad_token_id=0,
                   type_vocab_size=2, **TINY, **labels)
    if family == "distilbert":
        return t.DistilBertConfig(vocab_size=vocab, n_layers=layers, dim=32, n_heads=4, hidden_dim=64,
                                  max_position_embeddings=64, pad_token_id=0, **labels)
    if family == "electra":  # embedding_size < hidden_size exercises embeddings_project
        return t.ElectraConfig(vocab_size=vocab, num_hidden_layers=layers, embedding_size=16,
                               max_position_embeddings=64, **TINY, **labels)
    if family == "albert":  # two groups over four steps exercises the shared-group mapping
        return t.AlbertConfig(vocab_size=vocab, num_hidden_layers=layers, embedding_size=16, num_hidden_groups=2,
                              max_position_embeddings=64, pad_token_id=0, classifier_dropout_prob=0.1,
                              **TINY, **labels)
    if family == "mpnet":
        return t.MPNetConfig(vocab_size=vocab, num_hidden_layers=layers, max_position_embeddings=66,
                             relative_attention_num_buckets=32, **TINY, **labels)
    if family == "deberta-v2":  # v3 settings (buckets, layer-normed rel embeddings) plus the v2 conv
        return t.DebertaV2Config(vocab_size=vocab, num_hidden_layers=layers, max_position_embeddings=64,
                                 relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=16,
                                 max_relative_positions=-1, position_biased_input=False, norm_rel_ebd="layer_norm",
                                 share_att_key=True, conv_kernel_size=3, type_vocab_size=2, pooler_hidden_size=32,
                                 pad_token_id=0, **TINY, **labels)
    if family in ("modernbert", "modernbert-mean"):  # a 4-token window (2 either side) shorter than the
        # test inputs; layers full, local, local, full; distinct global / local rope theta; both poolings
        return t.ModernBertConfig(vocab_size=vocab, num_hidden_layers=layers, hidden_size=32, num_attention_heads=4,
                                  intermediate_size=48, max_position_embeddings=64, local_attention=4,
                                  global_attn_every_n_layers=3, global_rope_theta=1000.0, local_rope_theta=100.0,
                                  pad_token_id=0, bos_token_id=2, cls_token_id=2, eos_token_id=3, sep_token_id=3,
                                  embedding_dropout=0.1, attention_dropout=0.1, mlp_dropout=0.1,
                                  classifier_dropout=0.1,
                                  classifier_pooling="mean" if family.endswith("-mean") else "cls", **labels)
    raise ValueError(family)


FAMILIES = ("bert", "roberta", "xlm-roberta", "distilbert", "electra", "albert", "mpnet", "deberta-v2",
            "modernbert", "modernbert-mean")
NO_TOKEN_TYPES = ("distilbert", "mpnet", "modernbert", "modernbert-mean")
#: test variants of a family (another head setting) -> the config.model_type they load as
MODEL_TYPE = {"modernbert-mean": "modernbert"}


def make_model(folder: Path, family: str = "bert", num_labels: int = 2, layers: int = 4, seed: int = 0,
               names: list[str] | None = None) -> Path:
    """A random *ForSequenceClassification of ``family`` saved like a deployed checkpoint.

    ``num_labels=1`` makes a regression model (problem_type "regression").
    """
    from transformers import AutoModelForSequenceClassification

    folder.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(folder, token_types=family not in NO_TOKEN_TYPES)
    torch.manual_seed(seed)
    if num_labels == 1:
        labels = dict(num_labels=1, problem_type="regression")
    else:
        names = names or ["negative", "positive", "neutral", "mixed"][:num_labels]
        labels = dict(num_labels=num_labels, id2label=dict(enumerate(names)),
                      label2id={n: i for i, n in enumerate(names)})
    model = AutoModelForSequenceClassification.from_config(tiny_config(family, tok.vocab_size, layers, labels)).eval()
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def make_bert(folder: Path, num_labels: int = 2, layers: int = 4, seed: int = 0) -> Path:
    """A random BertForSequenceClassification saved like a deployed checkpoint."""
    return make_model(folder, "bert", num_labels, layers, seed)


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


def middle_thresholds(scores: torch.Tensor) -> list[float]:
    """Per exit, a threshold halfway between the two middle scores: about half the rows leave there.

    A threshold equal to some row's score (a plain median) leaves that row's exit to
    float noise between the batched simulation and the runtime's per-row pass.
    """
    s = scores.sort(0).values
    i = s.shape[0] // 2
    return ((s[i - 1] + s[i]) / 2).tolist()


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
def tiny_modernbert(tmp_path_factory) -> Path:
    """A random ModernBertForSequenceClassification (sliding window shorter than the toy texts)."""
    return make_model(tmp_path_factory.mktemp("ckpt") / "tiny-modernbert", "modernbert")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    rows = make_rows(360)
    for name, part in (("train", rows[:200]), ("validation", rows[200:280]), ("test", rows[280:])):
        write_csv(d / f"{name}.csv", part)
    return d


def hub_layout(cache: Path, repo_id: str, source: Path, repo_type: str = "model",
               revision: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """A Hugging Face hub cache entry as huggingface_hub writes it: refs/main -> snapshots/<commit>/files."""
    kind = {"model": "models", "dataset": "datasets"}[repo_type]
    root = cache / f"{kind}--{repo_id.replace('/', '--')}"
    snap = root / "snapshots" / revision
    shutil.copytree(source, snap)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(revision)
    return snap


def ml_rows(n: int, seed: int) -> list[dict]:
    """Label "positive" when a positive word occurs, "negative" when a negative one does: 0, 1 or 2 labels."""
    rng = random.Random(seed)
    pos, neg, filler = WORDS[:5], WORDS[5:10], WORDS[10:]
    rows = []
    for _ in range(n):
        has = {"positive": rng.random() < 0.5, "negative": rng.random() < 0.5}
        words = [rng.choice(filler) for _ in range(rng.randint(2, 8))]
        words += [rng.choice(pos)] * has["positive"] + [rng.choice(neg)] * has["negative"]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": "|".join(k for k, v in has.items() if v) or "[]"})
    return rows


def make_multilabel_case(root: Path) -> tuple[Path, Path]:
    """A tiny multi-label checkpoint (problem_type multi_label_classification) and label-set data."""
    import json

    ckpt = make_bert(root / "model")
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["problem_type"] = "multi_label_classification"
    (ckpt / "config.json").write_text(json.dumps(cfg))
    data = root / "data"
    data.mkdir()
    rows = ml_rows(360, 3)
    for name, part in (("train", rows[:200]), ("validation", rows[200:280]), ("test", rows[280:])):
        write_csv(data / f"{name}.csv", part)
    return ckpt, data


TAGS = ["O", "B-POS", "I-POS", "B-NEG", "I-NEG"]


def make_tagger(folder: Path, layers: int = 4, seed: int = 0) -> Path:
    """A random BertForTokenClassification (BIO tags over two types) saved like a deployed tagger."""
    from transformers import AutoModelForTokenClassification

    folder.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(folder)
    torch.manual_seed(seed)
    labels = dict(num_labels=len(TAGS), id2label=dict(enumerate(TAGS)), label2id={n: i for i, n in enumerate(TAGS)})
    model = AutoModelForTokenClassification.from_config(tiny_config("bert", tok.vocab_size, layers, labels)).eval()
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def make_tag_rows(n: int, seed: int = 0) -> list[dict]:
    """Sentences whose tags follow from the words: runs of positive words are POS entities, of negative NEG."""
    rng = random.Random(seed)
    pos, neg = WORDS[:5], WORDS[5:10]
    rows = []
    for _ in range(n):
        tokens, tags = [], []
        for _ in range(rng.randint(1, 4)):
            tokens += [rng.choice(WORDS[10:]) for _ in range(rng.randint(1, 3))]
            tags += ["O"] * (len(tokens) - len(tags))
            kind, vocab = rng.choice([("POS", pos), ("NEG", neg)])
            span = rng.randint(1, 2)
            tokens += [rng.choice(vocab) for _ in range(span)]
            tags += [f"B-{kind}"] + [f"I-{kind}"] * (span - 1)
        rows.append({"tokens": tokens, "ner_tags": tags})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_tagging_case(root: Path) -> tuple[Path, Path]:
    """(tiny tagger, a folder of train/validation/test JSONL in the `datasets` convention)."""
    ckpt = make_tagger(root / "tagger")
    data = root / "tag-data"
    data.mkdir(parents=True, exist_ok=True)
    rows = make_tag_rows(300, seed=5)
    for name, part in (("train", rows[:200]), ("validation", rows[200:250]), ("test", rows[250:])):
        write_jsonl(data / f"{name}.jsonl", part)
    return ckpt, data


class StepsSeen(UI):
    """A UI that shows nothing and records each progress bar as [what, total, steps advanced]: a long step's
    bar can be checked to run to its end."""

    def __init__(self):
        super().__init__(quiet=True)
        self.bars = []

    @contextlib.contextmanager
    def progress(self, what, total, unit=None):
        bar = [what, total, 0]
        self.bars.append(bar)

        def advance(n):
            bar[2] += n
        yield advance

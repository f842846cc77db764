"""Token classification (issue 22): data as users have it, alignment, entity scoring, and the
tagger pipeline attach -> calibrate -> benchmark -> predict on a tiny random tagger."""

import importlib.util
from dataclasses import replace
import json

import pytest
import torch
from typer.testing import CliRunner

from eebert_cli import steps
from eebert_cli.scoring.threshold_search import decide
from eebert_cli.scoring.config import CalibrationConfig
from eebert_cli.cli import app
from eebert_cli.scoring.config import BenchmarkConfig
from eebert_cli.train.config import AttachConfig
from eebert_cli.criteria import build_criterion
from eebert_cli.data import DataConfig, load_data
from eebert_cli.core.errors import EebertError
from eebert_cli.data.tagging import IGNORE, encode
from eebert_cli.tasks.entities import entity_scores, spans
from eebert_cli.model.tagger_runtime import Tagger
from eebert_cli.scoring.tagging import split_tags
from eebert_cli.train.config import TrainConfig

from conftest import middle_thresholds, make_bert, make_rows, make_tag_rows, make_tagging_case, write_csv, write_jsonl

FAST = TrainConfig(epochs=15, lr=3e-3)


# -- entity scoring: conlleval's semantics on hand-worked cases -------------------------------------------

@pytest.mark.parametrize("tags,expected", [
    ("B-PER I-PER O B-LOC", [("PER", 0, 2), ("LOC", 3, 4)]),
    ("O I-PER I-PER O", [("PER", 1, 3)]),                      # I- without B- opens a chunk (IOB1)
    ("B-PER I-LOC", [("PER", 0, 1), ("LOC", 1, 2)]),           # a type change ends the chunk
    ("B-PER B-PER", [("PER", 0, 1), ("PER", 1, 2)]),           # B- after B- starts a new one
    ("B-ORG I-ORG I-ORG", [("ORG", 0, 3)]),                    # a chunk running to the end
    ("O O", []),
    # BIOES / BILOU taggers: E- (L-) ends a chunk, S- (U-) is one word alone
    ("B-PER E-PER S-LOC O", [("PER", 0, 2), ("LOC", 2, 3)]),
    ("B-ORG I-ORG E-ORG B-ORG E-ORG", [("ORG", 0, 3), ("ORG", 3, 5)]),
    ("S-PER S-PER", [("PER", 0, 1), ("PER", 1, 2)]),
    ("B-PER L-PER U-LOC", [("PER", 0, 2), ("LOC", 2, 3)]),
    ("O E-PER O", [("PER", 1, 2)]),                             # E- without B- is a chunk of its own
    ("B-PER E-LOC", [("PER", 0, 1), ("LOC", 1, 2)]),
])
def test_spans(tags, expected):
    assert spans(tags.split()) == expected


@pytest.mark.parametrize("gold,pred,counts", [
    ("B-PER I-PER O B-LOC", "B-PER I-PER O B-LOC", (2, 2, 2)),  # exact match
    ("B-PER I-PER", "B-ORG I-ORG", (0, 1, 1)),                  # type mismatch: no credit
    ("B-PER I-PER O", "B-PER O O", (0, 1, 1)),                  # boundary error: no credit
    ("O B-PER I-PER", "O I-PER I-PER", (1, 1, 1)),              # I- without B- is the same span
    ("B-PER I-PER O B-LOC O B-ORG", "B-PER I-PER O B-ORG O O", (1, 2, 3)),
])
def test_entity_scores_on_known_cases(gold, pred, counts):
    s = entity_scores([gold.split()], [pred.split()])
    assert (s["correct"], s["predicted"], s["gold"]) == counts
    p = counts[0] / counts[1]
    r = counts[0] / counts[2]
    assert s["precision"] == pytest.approx(p) and s["recall"] == pytest.approx(r)
    assert s["f1"] == pytest.approx(0.0 if p + r == 0 else 2 * p * r / (p + r))


def test_entity_scores_sum_over_sentences():
    # sentence 1: 1 of 2 right; sentence 2: 1 predicted, 0 gold -> P 1/3, R 1/2, F1 0.4
    s = entity_scores([["B-A", "O", "B-B"], ["O"]], [["B-A", "O", "O"], ["B-A"]])
    assert s["precision"] == pytest.approx(1 / 2) and s["recall"] == pytest.approx(1 / 2)
    s = entity_scores([["B-A", "O", "B-B"], ["O", "O"]], [["B-A", "O", "O"], ["B-A", "B-B"]])
    assert (s["correct"], s["predicted"], s["gold"]) == (1, 3, 2) and s["f1"] == pytest.approx(0.4)


# -- data as users have it --------------------------------------------------------------------------------

def test_conll_files_read_as_words_and_tags(tmp_path):
    f = tmp_path / "ner.conll"
    f.write_text("-DOCSTART- O\n\nEU\tB-ORG\nrejects\tO\n\t\nPeter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n\n\n")
    split = load_data(DataConfig(spec=str(f), seed=1)).splits
    rows = sorted((s.texts + [None])[0] and list(zip(s.texts, s.labels)) for s in split.values() if len(s))
    got = sorted(pair for part in rows for pair in part)
    assert got == [(["EU", "rejects"], ["B-ORG", "O"]), (["Peter", "Blackburn"], ["B-PER", "I-PER"])]
    assert all(s.words for s in split.values())


def test_a_conll_file_of_words_alone_is_untagged(tmp_path):
    f = tmp_path / "plain.txt"
    f.write_text("hello\nworld\n\nagain\n")
    data = load_data(DataConfig(spec=str(f)))
    assert all(s.label_column is None for s in data.splits.values())


def test_tags_as_ids_and_named_columns(tmp_path):
    rows = [{"words": r["tokens"], "tags": [["O", "B-POS", "I-POS", "B-NEG", "I-NEG"].index(t) for t in r["ner_tags"]]}
            for r in make_tag_rows(30, seed=1)]
    write_jsonl(tmp_path / "d.jsonl", rows)
    data = load_data(DataConfig(spec=str(tmp_path / "d.jsonl"), tokens_column="words", tags_column="tags"))
    s = data.split("train")
    assert s.words and isinstance(s.labels[0][0], int)


def test_first_subword_alignment(tmp_path):
    from transformers import BertTokenizerFast

    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "film", "##s", "good"]) + "\n")
    tok = BertTokenizerFast(vocab=str(tmp_path / "vocab.txt"))
    e = encode(tok, [["films", "good"]], 16, [[3, 1]])
    assert tok.convert_ids_to_tokens(e["input_ids"][0]) == ["[CLS]", "film", "##s", "good", "[SEP]"]
    assert e["word_index"][0] == [-1, 0, -1, 1, -1]
    assert e["labels"][0] == [IGNORE, 3, IGNORE, 1, IGNORE]


# -- bad input: one line, before any backbone work --------------------------------------------------------

@pytest.fixture(scope="module")
def case(tmp_path_factory):
    return make_tagging_case(tmp_path_factory.mktemp("tagging"))


def _bad_rows(kind: str) -> list[dict]:
    rows = make_tag_rows(40, seed=2)
    if kind == "unknown tag":
        rows[7]["ner_tags"][0] = "B-MISC"
    if kind == "misaligned":
        rows[3]["ner_tags"] = rows[3]["ner_tags"][:-1]
    if kind == "empty sentence":
        rows[5] = {"tokens": [], "ner_tags": []}
    return rows


@pytest.mark.parametrize("kind,needle", [
    ("unknown tag", "tag 'B-MISC'"),
    ("misaligned", "row 4 has"),
    ("empty sentence", "row 6 is an empty sentence"),
    ("sentence data for a tagger", "holds sentences"),
    ("word data for a classifier", "holds words and tags"),
])
def test_bad_tagging_input_is_one_line(kind, needle, case, tmp_path):
    ckpt, _ = case
    if kind == "sentence data for a tagger":
        data = write_csv(tmp_path / "s.csv", make_rows(30))
    else:
        data = write_jsonl(tmp_path / "d.jsonl", _bad_rows(kind))
    if kind == "word data for a classifier":
        ckpt = make_bert(tmp_path / "clf")
    result = CliRunner().invoke(app, ["attach", str(ckpt), "--data", str(data), "--out", str(tmp_path / "art")])
    assert result.exit_code == 1, result.output
    errors = [l for l in result.output.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and needle in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "art" / "exits.safetensors").exists()


# -- the pipeline on a tiny tagger ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def calibrated(case, tmp_path_factory):
    ckpt, data = case
    art = tmp_path_factory.mktemp("tag-art") / "art"
    steps.attach(str(ckpt), DataConfig(spec=str(data)), AttachConfig(layers=[1, 2, 3], train=FAST), art)
    # tolerance 0: the best validation F1 (this tiny split's noise is several points wide, and the tests below read
    # a model whose every exit is live and whose tags are the best the exits give)
    steps.calibrate(art, None, CalibrationConfig(target_speedup=1.5, bootstrap=20, tolerance=0.0))
    return art


def test_exits_learn_the_tags_with_the_backbone_frozen(calibrated, case):
    config = json.loads((calibrated / "eebert_config.json").read_text())
    assert config["task"] == "token-classification" and config["exits"]["type"] == "token-mlp"
    assert config["targets"] == "labels"
    tagger = Tagger.from_artifact(calibrated)
    st = split_tags(tagger.artifact, load_data(DataConfig(spec=str(case[1]))), "validation")
    f1 = [st.reference_f1(torch.full((len(st.words),), k, dtype=torch.long)) for k in range(4)]
    assert min(f1[:3]) > f1[3] + 0.2, f1  # the random deployed tagger knows nothing; its exits learned the tags


def test_the_runtime_exits_where_the_scored_path_does(calibrated, case):
    tagger = Tagger.from_artifact(calibrated)
    data = load_data(DataConfig(spec=str(case[1])))
    st = split_tags(tagger.artifact, data, "test")
    crit = build_criterion(tagger.artifact.calibration.criterion, tagger.artifact.calibration.criterion_params)
    scores = crit.scores(st.logits)[:, :-1].double()
    tagger.thresholds = middle_thresholds(scores)  # thresholds that send sentences to different exits
    e = decide(scores, torch.tensor(tagger.thresholds, dtype=torch.float64))
    layers = tagger.artifact.calibration.exit_layers
    for bs in (1, 7):
        got = tagger.tag_words(data.split("test").texts, batch_size=bs)
        assert [g[2] for g in got] == [layers[k] for k in e.tolist()]
        assert [g[0] for g in got] == [st.tags[i, k][st.tags[i, k] >= 0].tolist() for i, k in enumerate(e.tolist())]
    assert len(set(e.tolist())) > 1  # sentences leave at different exits


def test_an_exit_at_never_is_not_evaluated_and_a_forced_exit_evaluates_only_its_own(calibrated, case):
    """As the sentence runtime and the ONNX export: an exit calibrated "never" runs no head, no score and no
    host sync, and the sentences leave where they would have; ``exit_at`` (static truncation) runs one head."""
    tagger = Tagger.from_artifact(calibrated)
    data = load_data(DataConfig(spec=str(case[1])))
    words = data.split("test").texts
    st = split_tags(tagger.artifact, data, "test")
    crit = build_criterion(tagger.artifact.calibration.criterion, tagger.artifact.calibration.criterion_params)
    scores = crit.scores(st.logits)[:, :-1].double()
    thresholds = middle_thresholds(scores)
    thresholds[1] = float("-inf")  # "never"
    tagger.thresholds = thresholds
    called = []
    hooks = [h.register_forward_hook(lambda *_, k=k: called.append(k)) for k, h in enumerate(tagger.exits.heads)]
    try:
        got = tagger.tag_words(words, batch_size=3)
        e = decide(scores, torch.tensor(thresholds, dtype=torch.float64))
        layers = tagger.artifact.calibration.exit_layers
        assert [g[2] for g in got] == [layers[k] for k in e.tolist()] and 1 not in e.tolist()
        assert 1 not in called and {0, 2} <= set(called)
        called.clear()
        forced = tagger.tag_words(words, batch_size=3, exit_at=2)
        assert set(called) == {2} and {g[2] for g in forced} == {layers[2]}
    finally:
        for h in hooks:
            h.remove()


def test_the_calibrate_command_prints_a_taggers_result_and_records_where_it_ran(case, tmp_path, monkeypatch):
    """`eebert calibrate` without --json on a tagger's artifact printed through a KeyError (its record had no
    speedup interval, its deployed figure another name); the record now holds the interval and placement."""
    ckpt, data = case
    art = tmp_path / "art"
    steps.attach(str(ckpt), DataConfig(spec=str(data)), AttachConfig(layers=[1, 2, 3], train=FAST), art)
    for flags, needle in ((["--target-speedup", "1.5"], "95% CI"), (["--max-drop", "5"], "bootstrap over sentences")):
        r = CliRunner().invoke(app, ["calibrate", str(art), *flags])
        assert r.exit_code == 0 and "Traceback" not in r.output, r.output
        assert needle in " ".join(r.output.split()) and "vs deployed" in r.output, r.output
    v = json.loads((art / "calibration.json").read_text())
    assert v["placement"] == {"device": "cpu", "dtype": "float32"}
    val = v["validation"]
    assert val["speedup_ci95"][0] <= val["speedup_flops"] <= val["speedup_ci95"][1]
    assert val["entity_f1_ci95"][0] <= val["entity_f1"] <= val["entity_f1_ci95"][1]
    rep = steps.benchmark(art, None, BenchmarkConfig(repeats=0), write=False)
    assert rep["placement"]["device"] == "cpu" and rep["calibration_placement"] == v["placement"]
    # what the tagger's search or report has no use for is refused in one line, before the weights load, not ignored
    monkeypatch.setattr(steps, "load_artifact", lambda *a, **k: pytest.fail("the artifact loaded first"))
    for flags, needle in ((["calibrate", "--max-drop", "5", "--unlabeled", str(data / "test.jsonl")], "drop --unlabeled"),
                          (["calibrate", "--target-speedup", "1.5", "--metric", "macro-f1"], "entity-f1"),
                          (["calibrate", "--target-speedup", "1.5", "--cost", "latency"], "calibrated on FLOPs"),
                          (["benchmark", "--metric", "accuracy"], "not reported for token-classification"),
                          (["benchmark", "--metric", "token-accuracy"], "drop --metric")):
        r = CliRunner().invoke(app, [flags[0], str(art), *flags[1:]])
        assert r.exit_code == 1 and r.output.count("error:") == 1 and needle in r.output, r.output
    assert json.loads((art / "calibration.json").read_text()) == v  # the calibration stays as it was


def test_exit_logits_chunk_by_chunk_equal_one_pass(calibrated, case):
    """calibrate and benchmark hold one chunk of sentences' word states at a time, not the split's."""
    from eebert_cli.model.token_features import words_of
    from eebert_cli.scoring.tagging import exit_logits

    art = Tagger.from_artifact(calibrated).artifact
    s = load_data(DataConfig(spec=str(case[1]))).split("test")
    words = words_of(art.deployed.tokenizer, s, art.config["max_length"])
    whole, chunked = exit_logits(art, words, chunk=len(words)), exit_logits(art, words, chunk=7)
    assert whole.shape == (int(words.offsets()[-1]), 4, len(art.deployed.id2label))
    torch.testing.assert_close(chunked, whole)


def test_calibration_meets_its_target_and_budget(calibrated, case):
    cal = json.loads((calibrated / "calibration.json").read_text())
    assert cal["task"] == "token-classification" and cal["validation"]["speedup_flops"] >= 1.5
    cal2 = steps.calibrate(calibrated, None, CalibrationConfig(max_drop=2.0, bootstrap=50))
    v = cal2.validation
    assert 100 * (v["reference_entity_f1"] - v["entity_f1"]) <= 2.0
    steps.calibrate(calibrated, None, CalibrationConfig(target_speedup=1.5, bootstrap=20, tolerance=0.0))  # as the others expect


def test_an_exit_at_never_charges_no_flops_where_one_that_never_fires_does(calibrated, case, tmp_path):
    """FLOPs as the runtime spends them: "never" (skipped, as the tagger runtime and the export skip it) against a
    threshold under every score (evaluated, firing for no one): the same exits, fewer FLOPs, in the benchmark's
    figure and in calibration's sweep, where "never" everywhere costs exactly the deployed tagger."""
    import shutil

    from eebert_cli.model.calibration import Calibration, thresholds_to_json
    from eebert_cli.scoring.tagging_calibrate import sweep

    art = tmp_path / "art"
    shutil.copytree(calibrated, art)
    cal = Calibration.load(art)
    reports = {}
    for first in (float("-inf"), -1e30):
        cal.thresholds = thresholds_to_json([first] + [float("inf")] * (len(cal.thresholds) - 1))
        cal.save(art)
        reports[first] = steps.benchmark(art, None, BenchmarkConfig(repeats=0))["early_exit"]
    never, idle = reports[float("-inf")], reports[-1e30]
    assert never["exit_histogram"] == idle["exit_histogram"] and never["entity_f1"] == idle["entity_f1"]
    assert never["speedup_flops"] > idle["speedup_flops"] > 1.0  # every sentence leaves at exit 1 in both

    st = split_tags(Tagger.from_artifact(calibrated).artifact, load_data(DataConfig(spec=str(case[1]))), "validation")
    scores = build_criterion("sentence-min").scores(st.logits)[:, :-1].double()
    cfg = CalibrationConfig(target_speedup=1.5)
    skipped, charged = sweep(st, scores, cfg, stateless=True)[0], sweep(st, scores, cfg, stateless=False)[0]
    assert skipped["threshold"] == charged["threshold"] == float("-inf")
    assert skipped["speedup"] == pytest.approx(1.0) and charged["speedup"] < 1.0


def test_benchmark_reports_entities_tokens_flops_truncation_and_oracle(calibrated):
    r = steps.benchmark(calibrated, None, BenchmarkConfig(repeats=0))
    for key in ("deployed", "early_exit", "static_truncation", "oracle"):
        assert {"entity_precision", "entity_recall", "entity_f1", "token_accuracy", "agreement",
                "speedup_flops"} <= set(r[key])
    assert r["deployed"]["speedup_flops"] == 1.0 and r["deployed"]["agreement"] == 1.0
    assert r["early_exit"]["speedup_flops"] > 1.0 and len(r["static_all"]) == 4
    assert (calibrated / "report.md").read_text().count("entity F1 %") == 1
    # the record says what the runtime skips and how many exits a sentence evaluates, as the sentence path's does
    v, layers = r["tagging_validation"], [1, 2, 3]
    thresholds = json.loads((calibrated / "calibration.json").read_text())["thresholds"]
    assert v["switched_off"] == [layers[j] for j, t in enumerate(thresholds) if t == "never"]
    assert 0 < v["exits_evaluated"] <= len(layers) - len(v["switched_off"])
    from eebert_cli.scoring.report import markdown

    r["tagging_validation"] = {**v, "switched_off": [2], "exits_evaluated": 1.25}
    assert ("Exit after layer 2 switched off (the runtime never evaluates it); 1.25 exits evaluated per sentence "
            "on validation.") in markdown(r)


@pytest.mark.parametrize("warmup", [0, 2])
def test_a_tagger_timing_warms_up_on_warmup_sentences(calibrated, warmup, monkeypatch):
    """[benchmark] warmup counts untimed sentences, as it counts examples for sentences (it counted rounds over
    the whole sample, capped at 3)."""
    from eebert_cli.core.ui import SILENT
    from eebert_cli.model.artifact import load_artifact
    from eebert_cli.scoring.tagging_benchmark import time_taggers

    tagger = Tagger(load_artifact(calibrated))
    sizes, call = [], Tagger.early_call
    monkeypatch.setattr(Tagger, "early_call", lambda self, ids, *a: sizes.append(len(ids)) or call(self, ids, *a))
    words = [["a", "good", "film"]] * 5
    cfg = BenchmarkConfig(timing_samples=0, repeats=1, warmup=warmup)
    time_taggers(tagger, words, cfg, [0] * 5, SILENT)
    assert sizes == [5] + ([warmup] if warmup else [])  # the timed call, then the warm-up one


def test_predict_returns_spans_with_character_offsets(calibrated):
    text = "the movie was very good , the plot awful"
    rows = steps.predict(calibrated, [text, "a  film"])["rows"]
    assert [t["word"] for t in rows[0]["tokens"]] == text.split()
    for row in rows:
        for t in row["tokens"]:
            assert row["text"][t["start"]:t["end"]] == t["word"]
        for e in row["entities"]:
            assert row["text"][e["start"]:e["end"]] == e["text"] and 0 <= e["score"] <= 1
    assert any(e["entity"] == "POS" and e["text"] == "good" for e in rows[0]["entities"])


TEXTS = ["the movie was very good , the plot awful", "a  film", "bad acting but a great cast", "ok", "good good bad"]


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "parquet"])
def test_predict_input_streams_spans_and_tags_row_for_row(calibrated, tmp_path, suffix):
    import csv

    import pyarrow.parquet as pq

    from eebert_cli.deploy.predict_file import predict_to_file

    src = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in TEXTS])
    out = tmp_path / f"out.{suffix}"
    tagger = Tagger.from_artifact(calibrated)
    assert predict_to_file(tagger, src, out, batch_size=2, chunk_rows=2)["rows"] == len(TEXTS)  # 3 chunks
    if suffix == "jsonl":
        got = [json.loads(l) for l in out.read_text().splitlines()]
    elif suffix == "csv":
        got = [{"row": int(r["row"]), "exit_layer": int(r["exit_layer"]), "entities": json.loads(r["entities"]),
                "tokens": json.loads(r["tokens"])} for r in csv.DictReader(out.open())]
    else:
        got = pq.read_table(out).to_pylist()
    want = tagger.predict(TEXTS, batch_size=2)
    assert [g["row"] for g in got] == list(range(len(TEXTS)))
    for g, w in zip(got, want):
        assert g["exit_layer"] == w["exit_layer"] and g["tokens"] == w["tokens"] and g["entities"] == w["entities"]
    # printed whole through the step (and the CLI): the same rows, with their texts
    rows = steps.predict(calibrated, input_file=src, batch_size=2)["rows"]
    assert [r["entities"] for r in rows] == [w["entities"] for w in want] and rows[1]["text"] == TEXTS[1]


def test_cli_predict_input_output_on_a_tagger(calibrated, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in TEXTS])
    out = tmp_path / "o.jsonl"
    r = CliRunner().invoke(app, ["predict", str(calibrated), "--input", str(src), "--output", str(out)])
    assert r.exit_code == 0, r.output
    assert [json.loads(l)["row"] for l in out.read_text().splitlines()] == list(range(len(TEXTS)))
    r = CliRunner().invoke(app, ["predict", str(calibrated), "--input", str(src), "--pair-column", "text"])
    assert r.exit_code == 1 and r.output.count("error:") == 1 and "drop --pair-column" in r.output, r.output
    r = CliRunner().invoke(app, ["predict", str(calibrated), "--input", str(src), "--output", str(tmp_path / "d"),
                                 "--executor", "ray", "--pair-column", "text"])  # refused before Ray starts
    assert r.exit_code == 1 and r.output.count("error:") == 1 and "drop --pair-column" in r.output, r.output


def test_sentence_only_paths_refuse_a_tagger_in_one_line(calibrated):
    from eebert_cli.model.runtime import EarlyExitModel

    with pytest.raises(EebertError, match="tagger's artifact"):  # compare and Ray load through it
        EarlyExitModel.from_artifact(calibrated)


def test_gold_rows_chunk_by_chunk_equal_the_whole_split_and_name_a_bad_tags_sentence(case, tmp_path):
    from eebert_cli.model.checkpoint import load_deployed
    from eebert_cli.model.token_features import gold_rows, words_of

    ckpt, data = case
    dep = load_deployed(ckpt)
    split = load_data(DataConfig(spec=str(data))).split("train")
    args = (dep.tokenizer, split, 64, dep.label2id, len(dep.id2label), "train")
    whole = words_of(*args)
    rows, n = gold_rows(*args, chunk=7)
    assert torch.equal(rows, whole.gold_rows()) and n == int(whole.offsets()[-1])
    bad = [json.loads(l) for l in (data / "train.jsonl").read_text().splitlines()][:12]
    bad[9]["ner_tags"][0] = "B-NOPE"
    (tmp_path / "bad").mkdir()
    write_jsonl(tmp_path / "bad" / "train.jsonl", bad)
    for name in ("validation", "test"):
        (tmp_path / "bad" / f"{name}.jsonl").write_text((data / f"{name}.jsonl").read_text())
    split = load_data(DataConfig(spec=str(tmp_path / "bad"))).split("train")
    with pytest.raises(EebertError, match=r"'B-NOPE' in train \(sentence 10\)"):
        gold_rows(dep.tokenizer, split, 64, dep.label2id, len(dep.id2label), "train", chunk=4)


def test_tagger_attach_caches_word_states_on_disk_and_reuses_a_kept_cache(case, tmp_path, monkeypatch):
    """The default cache beside the artifact is removed once it is written; a --feature-cache folder is kept,
    and a second attach over it (another seed) runs no backbone pass."""
    import eebert_cli.model.feature_cache as fc

    ckpt, data = case
    cfg = AttachConfig(layers=[1, 2], train=FAST)
    steps.attach(str(ckpt), DataConfig(spec=str(data)), cfg, tmp_path / "a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    kept = tmp_path / "words"
    steps.attach(str(ckpt), DataConfig(spec=str(data)), replace(cfg, feature_cache=str(kept)), tmp_path / "b")
    assert json.loads((kept / "manifest.json").read_text())["plan"]["needs"] == {"1": ["word"], "2": ["word"]}
    computed, real = [], fc.compute_chunk
    monkeypatch.setattr(fc, "compute_chunk", lambda *a, **k: computed.append(1) or real(*a, **k))
    steps.attach(str(ckpt), DataConfig(spec=str(data)), replace(cfg, feature_cache=str(kept),
                 train=replace(FAST, seed=1)), tmp_path / "c")
    assert computed == []
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "a" / "exits.safetensors"), load_file(tmp_path / "b" / "exits.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same features, in RAM or on disk: the same exits


# -- ONNX: the per-sentence exit from segment graphs -------------------------------------------------------

@pytest.fixture(scope="module")
def tag_onnx(calibrated, tmp_path_factory):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    out = tmp_path_factory.mktemp("tag-onnx") / "onnx"
    info = steps.export(calibrated, out)
    return out, info


def test_onnx_tagger_takes_the_pytorch_taggers_exits_and_tags(calibrated, case, tag_onnx):
    from eebert_cli.deploy.onnx_tagger import OnnxTagger

    out, info = tag_onnx
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["task"] == "token-classification" and manifest["logits"] == "per-token"
    assert all("score" not in s["outputs"] for s in manifest["segments"])  # the host scores sentences
    torch_tagger = Tagger.from_artifact(calibrated)
    onnx_tagger = OnnxTagger(torch_tagger.artifact, out)
    data = load_data(DataConfig(spec=str(case[1])))
    words = data.split("test").texts
    st = split_tags(torch_tagger.artifact, data, "test")
    crit = build_criterion(torch_tagger.artifact.calibration.criterion)
    # thresholds that send sentences to different exits, in both runtimes (each exit is a segment here)
    torch_tagger.thresholds = middle_thresholds(crit.scores(st.logits)[:, :-1].double())
    assert onnx_tagger.ox.exit_of == [0, 1, 2, 3]
    onnx_tagger.ox.thresholds = torch_tagger.thresholds + [float("inf")]
    for bs in (1, 5):
        want = torch_tagger.tag_words(words, batch_size=bs)
        got = onnx_tagger.tag_words(words, batch_size=bs)
        assert [g[2] for g in got] == [w[2] for w in want]
        assert [g[0] for g in got] == [w[0] for w in want]
        assert max(abs(a - b) for g, w in zip(got, want) for a, b in zip(g[1], w[1])) < 1e-4
    assert len({w[2] for w in want}) > 2
    texts = ["the movie was very good , the plot awful", "a  film"]
    rows, ref = onnx_tagger.predict(texts, 2), torch_tagger.predict(texts, 2)
    # the same rows, tokens, entities and offsets; scores to the runtimes' rounding
    parts = ("tokens", "entities")
    strip = lambda rs: [{**r, **{p: [{**x, "score": None} for x in r[p]] for p in parts}} for r in rs]  # noqa: E731
    scores = lambda rs: [x["score"] for r in rs for p in parts for x in r[p]]  # noqa: E731
    assert len(rows) == len(texts) and strip(rows) == strip(ref)
    assert max(abs(a - b) for a, b in zip(scores(rows), scores(ref))) < 1e-4


def test_onnx_tagger_deployed_graph_is_the_deployed_tagger(calibrated, case, tag_onnx):
    import numpy as np

    from eebert_cli.deploy.onnx_runtime import OnnxEarlyExit

    out, _ = tag_onnx
    art = Tagger.from_artifact(calibrated).artifact
    enc = encode(art.deployed.tokenizer, [["good", "film"], ["the", "plot", "was", "awful", "!"]], 32)
    width = max(map(len, enc["input_ids"]))
    ids = torch.tensor([x + [0] * (width - len(x)) for x in enc["input_ids"]])
    mask = (ids != 0).long()
    with torch.no_grad():
        ref = art.deployed.model(input_ids=ids, attention_mask=mask).logits.numpy()
    got = OnnxEarlyExit(out).forward_deployed(ids.numpy(), mask.numpy(), np.zeros_like(ids.numpy()))
    assert got.shape == ref.shape and np.abs((got - ref) * mask.numpy()[..., None]).max() < 1e-4


def test_int8_tagger_export_runs_and_mostly_agrees(calibrated, case, tag_onnx, tmp_path):
    from eebert_cli.deploy.onnx_tagger import OnnxTagger

    info = steps.export(calibrated, tmp_path / "int8", quantize="int8")
    assert info["quantize"] == "int8"
    words = load_data(DataConfig(spec=str(case[1]))).split("test").texts
    got = OnnxTagger.from_artifact(calibrated, folder=tmp_path / "int8").tag_words(words, 8)
    want = Tagger.from_artifact(calibrated).tag_words(words, 8)
    assert sum(g[0] == w[0] for g, w in zip(got, want)) >= 0.8 * len(words)
    # timed, the int8 graphs of an fp32 calibration: the rows are the fp32 tagger's, and the report says so
    r = steps.benchmark(calibrated, None, BenchmarkConfig(runtime="onnxruntime", onnx_dir=str(tmp_path / "int8"),
                                                          repeats=1, timing_samples=4), write=False)
    assert r["scored_by"] == "pytorch" and "is int8 and the calibration was made on the fp32" in r["timing"]["differs"]


def test_a_stale_tagger_export_is_refused(calibrated, tag_onnx, tmp_path):
    import shutil

    from eebert_cli.deploy.onnx_tagger import OnnxTagger

    out, _ = tag_onnx
    stale = tmp_path / "onnx"
    shutil.copytree(out, stale)
    m = json.loads((stale / "manifest.json").read_text())
    m["derived_from"] = {"calibration.json": "0" * 64}
    (stale / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(EebertError, match="older calibration"):
        OnnxTagger.from_artifact(calibrated, folder=stale)


def test_the_cli_reads_named_word_and_tag_columns(case, tmp_path):
    rows = [{"words": r["tokens"], "tags": [["O", "B-POS", "I-POS", "B-NEG", "I-NEG"].index(t) for t in r["ner_tags"]]}
            for r in make_tag_rows(60, seed=3)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    result = CliRunner().invoke(app, ["attach", str(case[0]), "--data", str(data), "--tokens-column", "words",
                                      "--tags-column", "tags", "--out", str(tmp_path / "art"), "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "art" / "eebert_config.json").read_text())["data"]["tokens_column"] == "words"


def test_word_and_tag_column_flags_apply_to_the_data_an_artifact_records(calibrated):
    """Without --data, --tokens-column and --tags-column go on top of the attach data, as --text-column does
    (they were dropped, and the command ran on the recorded columns)."""
    for command in (["benchmark", str(calibrated)], ["calibrate", str(calibrated), "--target-speedup", "1.5"]):
        for flag in ("--tags-column", "--tokens-column"):
            result = CliRunner().invoke(app, [*command, flag, "nope"])
            assert result.exit_code == 1, result.output
            what = "tags column 'nope'" if flag == "--tags-column" else "no tokens column 'nope' and no text column"
            assert what in result.output, result.output


# -- per-token exit (TOKEE-like) --------------------------------------------------------------------------

def test_a_partial_layer_updates_only_the_running_tokens(calibrated):
    from eebert_cli.model.artifact import load_artifact
    from eebert_cli.model.token_halt import partial_layer

    ad = load_artifact(calibrated).deployed.adapter
    torch.manual_seed(0)
    h = torch.randn(9, 32)
    full = ad.layer(1, h[None], None)[0]
    assert torch.allclose(partial_layer(ad._layers[1], h, torch.arange(9)), full, atol=1e-5)
    part = partial_layer(ad._layers[1], h, torch.tensor([1, 3]))
    # running tokens see every token as key and value, so they match the full layer's rows exactly here
    assert torch.allclose(part[[1, 3]], full[[1, 3]], atol=1e-5)
    assert torch.equal(part[[0, 2, 4]], h[[0, 2, 4]])  # halted ones keep their state


def test_token_halting_spans_the_deployed_tagger_and_the_first_exit(calibrated, case):
    from eebert_cli.model.artifact import load_artifact
    from eebert_cli.model.token_halt import TokenHaltTagger

    art = load_artifact(calibrated)
    sentences = load_data(DataConfig(spec=str(case[1]))).split("test").texts[:6]
    sentence = Tagger(art)
    never, always = TokenHaltTagger(art, 2.0), TokenHaltTagger(art, 0.0)
    for words in sentences:
        tags, _, layers, flops_never = never.tag_one(words)
        assert tags == sentence.tag_words([words], exit_at=3)[0][0] and set(layers) == {4}
        tags, _, layers, flops_first = always.tag_one(words)
        assert tags == sentence.tag_words([words], exit_at=0)[0][0] and set(layers) == {1}
        assert flops_first < flops_never / 3


def test_token_exit_benchmark_smoke(calibrated, tmp_path, capsys):
    import runpy
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "token_exit.py"
    argv = sys.argv
    sys.argv = [str(script), "--artifact", str(calibrated), "--limit", "8", "--thresholds", "0.5,0.9",
                "--repeats", "1", "--out", str(tmp_path / "r.json")]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv
    out = capsys.readouterr().out
    assert "per-sentence (sentence-min)" in out and "per-token (p >= 0.9)" in out and "deployed" in out
    assert len(json.loads((tmp_path / "r.json").read_text())["rows"]) == 4


@pytest.mark.parametrize("form", ["parquet", "saved"])
def test_words_and_tags_from_parquet_and_saved_datasets(form, tmp_path):
    import datasets

    rows = make_tag_rows(20, seed=4)
    ds = datasets.Dataset.from_dict({"tokens": [r["tokens"] for r in rows], "ner_tags": [r["ner_tags"] for r in rows]})
    if form == "parquet":
        ds.to_parquet(str(tmp_path / "d.parquet"))
        spec = tmp_path / "d.parquet"
    else:
        datasets.DatasetDict({"train": ds, "validation": ds, "test": ds}).save_to_disk(str(tmp_path / "saved"))
        spec = tmp_path / "saved"
    s = load_data(DataConfig(spec=str(spec))).split("train")
    assert s.words and all(len(w) == len(t) for w, t in zip(s.texts, s.labels))
    every = {(tuple(r["tokens"]), tuple(r["ner_tags"])) for r in rows}
    got = {(tuple(w), tuple(t)) for w, t in zip(s.texts, s.labels)}
    assert got <= every and len(s) == (20 if form == "saved" else 16)  # a file without splits: seeded 80/10/10


# -- serve ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("runtime", ["pytorch", "onnxruntime"])
def test_serve_answers_a_tagger_with_the_rows_predict_gives(calibrated, tag_onnx, runtime):
    import asyncio

    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from eebert_cli.deploy.serve.app import create_app
    from eebert_cli.deploy.serve.config import ServeConfig
    from eebert_cli.deploy.serve.engine import load_engine

    want = steps.predict(calibrated, TEXTS)["rows"]
    for deployed in (False, True):
        cfg = ServeConfig(artifact=str(calibrated), runtime=runtime, deployed=deployed,
                          onnx_dir=str(tag_onnx[0]) if runtime == "onnxruntime" else "",
                          max_wait_ms=30)
        engine = load_engine(cfg)
        app = create_app(cfg, engine)
        weights = {p.device.type for p in engine.tagger.artifact.deployed.model.parameters()}
        assert weights == ({"meta"} if runtime == "onnxruntime" else {"cpu"})  # ORT: the graphs answer, freed

        async def go():
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                one = await asyncio.gather(*(c.post("/v1/predict", json={"text": t}) for t in TEXTS))
                many = await c.post("/v1/predict", json={"texts": TEXTS})
                pair = await c.post("/v1/predict", json={"text": "a", "pair": "b"})
                return one, many, pair

        one, many, pair = asyncio.run(go())
        assert pair.status_code == 422 and "tags one text" in pair.json()["error"]
        assert all(r.status_code == 200 for r in one) and many.status_code == 200
        got = [r.json()["predictions"][0] for r in one]
        assert [g["tokens"] for g in got] == [g["tokens"] for g in many.json()["predictions"]]
        if deployed:
            assert {g["exit_layer"] for g in got} == {4}
            continue
        for g, w in zip(got, want):
            assert g["exit_layer"] == w["exit_layer"] and [t["tag"] for t in g["tokens"]] == \
                [t["tag"] for t in w["tokens"]] and [(e["start"], e["end"]) for e in g["entities"]] == \
                [(e["start"], e["end"]) for e in w["entities"]]


def test_a_tagger_calibrated_on_an_int8_backbone_runs_int8_against_the_shipped_tagger(calibrated, case, tmp_path):
    """calibrate --quantize int8 on a tagger: thresholds chosen on the int8 backbone, recorded; the tagger,
    predict and the benchmark then run int8, and every figure is against the tagger as shipped (fp32),
    with the int8 deployed tagger a row of its own (as for sentence exits)."""
    import shutil

    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    art = tmp_path / "q"
    shutil.copytree(calibrated, art, ignore=shutil.ignore_patterns("onnx*"))
    cal = steps.calibrate(art, None, CalibrationConfig(target_speedup=1.5, bootstrap=20), quantize="int8")
    assert cal.quantize == "int8" and json.loads((art / "calibration.json").read_text())["quantize"] == "int8"
    tagger = Tagger.from_artifact(art)
    assert any(isinstance(m, QLinear) for m in tagger.deployed.model.modules())
    data = load_data(DataConfig(spec=str(case[1])))
    st = split_tags(tagger.artifact, data, "validation")
    assert st.shipped is not None and st.reference_names == st.gold  # labelled: gold is the reference
    shipped = st.shipped_figures()
    fp32 = split_tags(Tagger.from_artifact(calibrated).artifact, data, "validation")
    last = torch.full((len(fp32.words),), fp32.counts.shape[1] - 1, dtype=torch.long)
    assert shipped == fp32.figures(last, static=True)  # the shipped tagger's figures, whatever the backbone
    assert shipped["agreement"] == 1.0
    r = steps.benchmark(art, None, BenchmarkConfig(repeats=1, timing_samples=4))
    assert r["quantize"] == "int8" and r["deployed"]["agreement"] == 1.0 and "deployed_int8" in r
    assert r["deployed_int8"]["speedup_flops"] == 1.0 and r["early_exit"]["speedup_flops"] > 1.0
    assert r["timing"]["exit_mismatches"] == 0  # the timed int8 tagger leaves where the scored int8 path does
    assert "deployed int8" in (art / "report.md").read_text()
    rows = steps.predict(art, TEXTS)["rows"]  # predict loads it int8 too
    assert len(rows) == len(TEXTS) and "entities" in rows[0]
    if importlib.util.find_spec("fastapi") and importlib.util.find_spec("httpx"):  # and so does serve
        import asyncio

        import httpx

        from eebert_cli.deploy.serve.app import create_app
        from eebert_cli.deploy.serve.config import ServeConfig
        from eebert_cli.deploy.serve.engine import load_engine

        cfg = ServeConfig(artifact=str(art), max_wait_ms=30)
        engine = load_engine(cfg)
        assert any(isinstance(m, QLinear) for m in engine.tagger.deployed.model.modules())

        async def go():
            transport = httpx.ASGITransport(app=create_app(cfg, engine))
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                return await c.post("/v1/predict", json={"texts": TEXTS})

        got = asyncio.run(go()).json()["predictions"]
        assert [(g["exit_layer"], [t["tag"] for t in g["tokens"]]) for g in got] == \
            [(w["exit_layer"], [t["tag"] for t in w["tokens"]]) for w in rows]


# -- what taggers do not run yet: one line each ----------------------------------------------------------

def test_a_quantized_per_token_exit_is_refused_in_one_line(calibrated):
    r = CliRunner().invoke(app, ["calibrate", str(calibrated), "--token-exit", "--target-speedup", "1.5", "--quantize",
                                 "int8"])
    assert r.exit_code == 1 and r.output.count("error:") == 1, r.output
    assert "the per-token exit runs on the fp32 backbone" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("flags,line", [
    (["--gate-threshold", "0.5"], "--gate-threshold (calibrate.gate_thresholds) has no effect"),
    (["--global-threshold"], "--global-threshold (calibrate.per_layer) has no effect"),
    (["--keep-exits"], "--keep-exits (calibrate.prune_exits) has no effect"),
    (["--criterion-param", "normalized=true"], "--criterion-param (calibrate.criterion_params) has no effect"),
    (["--cost", "latency"], "--cost (calibrate.cost) has no effect"),
    (["--criterion", "pcee"], "--criterion pcee scores a sentence"),
    (["--metric", "token-accuracy"], "chosen on entity-f1 and its report leads with it; --metric token-accuracy"),
])
def test_settings_the_per_token_search_does_not_read_are_refused(calibrated, flags, line, monkeypatch):
    """`calibrate --token-exit` reads the budget, a per-token rule, bootstrap and drop_confidence: every other
    setting is refused before anything loads (they were ignored, and --criterion pcee became token-maxprob)."""
    import eebert_cli.steps as steps

    monkeypatch.setattr(steps, "load_artifact", lambda *a, **k: pytest.fail("the artifact loaded first"))
    r = CliRunner().invoke(app, ["calibrate", str(calibrated), "--token-exit", "--target-speedup", "1.5", *flags])
    assert r.exit_code == 1 and r.output.count("error:") == 1 and line in r.output, r.output


@pytest.mark.parametrize("metric,line", [("token-accuracy", "benchmark.metric token-accuracy cannot take its place"),
                                         ("macro-f1", "metric 'macro-f1' is not reported")])
def test_a_tagger_recipe_whose_headline_metric_cannot_lead_is_refused_before_attach(case, metric, line, tmp_path):
    """calibrate and benchmark refuse it (the report leads with entity F1): `run` refused after attach."""
    ckpt, data = case
    f = tmp_path / "r.toml"
    f.write_text(f'version = 1\ncheckpoint = "{ckpt}"\nartifact = "{tmp_path / "a"}"\n[data]\nspec = "{data}"\n'
                 f'[calibrate]\ntarget_speedup = 1.5\n[benchmark]\nmetric = "{metric}"\n')
    for command in ("validate", "run"):
        r = CliRunner().invoke(app, [command, str(f)])
        assert r.exit_code == 1 and r.output.count("error:") == 1 and line in r.output, r.output
    assert not (tmp_path / "a").exists()


def _tag_compare_recipe(case, out, extra: str = "") -> str:
    ckpt, data = case
    return (f'version = 1\nkind = "compare"\ncheckpoint = "{ckpt}"\nout = "{out}"\nspeedups = [1.5]\n'
            f'max_length = 32\nseeds = [0, 1]\ncriteria = ["sentence-mean"]\n{extra}[data]\nspec = "{data}"\n'
            '[[methods]]\nname = "mlp"\n[methods.attach]\nlayers = [1, 2, 3]\ntrain = {epochs = 15, lr = 3e-3}\n'
            '[[methods]]\nname = "linear"\n[methods.attach]\nexits = "token-linear"\nlayers = [1, 2, 3]\n'
            'train = {epochs = 15, lr = 3e-3}\n')


def test_compare_runs_a_taggers_methods_and_ranks_them_by_entity_f1(case, tmp_path, monkeypatch):
    """Each cell is attach + calibrate + benchmark on the method's artifact, as for sentence classifiers; the
    figure is entity F1 against gold tags, the best criterion and method chosen on validation. One backbone
    pass over train serves every method and seed."""
    import eebert_cli.model.feature_cache as fc
    from eebert_cli.recipe.compare import load_compare_recipe, run_compare

    path = tmp_path / "c.toml"
    path.write_text(_tag_compare_recipe(case, tmp_path / "out"))
    passes, real = [], fc.compute_chunk
    monkeypatch.setattr(fc, "compute_chunk", lambda *a, **k: passes.append(a[2]) or real(*a, **k))
    report = run_compare(*load_compare_recipe(path))
    assert len(passes) == 1 and passes[0].words  # 2 methods x 2 seeds, one chunk of 200 sentences
    assert report["metric"] == "entity_f1" and [m["name"] for m in report["methods"]] == ["mlp", "linear"]
    for m in report["methods"]:
        cell = m["at"]["1.5"]
        assert m["exits"]["type"] == ("token-mlp" if m["name"] == "mlp" else "token-linear")
        assert cell["seeds"] == 2 and cell["speedup_flops"] >= 1.5 - 0.3
        assert m["criterion"] == "sentence-min"  # the recipe's default (entropy) names the task's own
        assert set(cell["criteria_tried"]) == {"sentence-min", "sentence-mean"}
        # each seed keeps the criterion best on its own validation split; the cell names the first seed's
        # (criteria_tried holds the means over seeds, which may favour another; test_compare_recipes.py checks
        # the choice on validation)
        assert cell["criterion"] == cell["per_seed"][0]["criterion"]
        assert {p["criterion"] for p in cell["per_seed"]} <= set(cell["criteria_tried"])
        assert set(m["per_exit_accuracy"]) == {"1", "2", "3"} and 0 <= cell["static"]["accuracy"] <= 1
    # the artifact of the last seed holds the chosen calibration; the same F1 as its own benchmark gives
    seed1 = tmp_path / "out" / "artifacts" / "linear" / "seed-1"
    rep = steps.benchmark(seed1, None, BenchmarkConfig(repeats=0), write=False)
    assert rep["metric"] == "entity_f1" and rep["early_exit"]["entity_f1"] == report["methods"][1]["at"]["1.5"][
        "per_seed"][1]["accuracy"]
    assert report["deployed_accuracy"] == rep["deployed"]["entity_f1"]
    from rich.console import Console

    from eebert_cli.recipe.compare_report import markdown, summarise, table

    assert summarise(report)["1.5"]["chosen_by"] == "validation entity F1"
    assert "| F1 @1.5x |" in markdown(report) and "test entity F1" in markdown(report)
    console = Console(record=True, width=300)
    console.print(table(report))
    assert "entity F1 % (test FLOPs speedup)" in console.export_text()


def test_compare_refuses_a_tagger_without_gold_tags_or_with_a_sentence_criterion(case, tmp_path):
    ckpt, data = case
    untagged = tmp_path / "untagged"
    untagged.mkdir()
    for split in ("train", "validation", "test"):
        rows = [json.loads(l) for l in (data / f"{split}.jsonl").read_text().splitlines()]
        write_jsonl(untagged / f"{split}.jsonl", [{"tokens": r["tokens"]} for r in rows])
    for recipe, needle in ((_tag_compare_recipe((ckpt, untagged), tmp_path / "o1"), "against gold tags"),
                           (_tag_compare_recipe(case, tmp_path / "o2").replace('"sentence-mean"', '"patience"'),
                            "patience")):
        path = tmp_path / "c.toml"
        path.write_text(recipe)
        r = CliRunner().invoke(app, ["compare", str(path)])
        assert r.exit_code == 1 and r.output.count("error:") == 1 and needle in r.output, r.output
        assert "Traceback" not in r.output
    assert not (tmp_path / "o1" / "artifacts").exists() and not (tmp_path / "o2" / "artifacts").exists()


def test_benchmark_times_the_onnx_tagger_against_the_exported_deployed_graph(calibrated, tag_onnx, tmp_path):
    out, _ = tag_onnx
    r = CliRunner().invoke(app, ["benchmark", str(calibrated), "--runtime", "onnxruntime", "--repeats", "2",
                                 "--onnx", str(tmp_path / "none")])  # no export there: one line, before the pass
    assert r.exit_code == 1 and r.output.count("error:") == 1 and "no ONNX export" in r.output, r.output
    report = steps.benchmark(calibrated, None, BenchmarkConfig(runtime="onnxruntime", onnx_dir=str(out), repeats=2,
                                                               timing_samples=20), write=False)
    tm = report["timing"]
    assert tm["runtime"] == "onnxruntime" and tm["ort_pool"] == "per-session" and tm["examples"] == 20
    assert tm["exit_mismatches"] == 0  # fp32 graphs take the scored exits
    assert tm["deployed_ms_per_sentence"] > 0 and tm["early_exit_ms_per_sentence"] > 0
    assert report["early_exit"]["speedup_measured"] == tm["speedup_measured"]


def test_a_taggers_calibration_warns_when_entity_f1_is_known_only_roughly(calibrated, tmp_path):
    """As the sentence path does for accuracy: a validation split too small for a +/- precision interval on
    entity F1 says so in the record (the tiny split's interval is many points wide), and a looser precision
    does not."""
    import shutil

    cal = json.loads((calibrated / "calibration.json").read_text())
    lo, hi = cal["validation"]["entity_f1_ci95"]
    assert 100 * (hi - lo) / 2 > 2.0
    assert any("entity F1 is only known to about" in w for w in cal["warnings"])
    art = tmp_path / "loose"
    shutil.copytree(calibrated, art, ignore=shutil.ignore_patterns("onnx*"))
    loose = steps.calibrate(art, None, CalibrationConfig(target_speedup=1.5, bootstrap=20, tolerance=0.0,
                                                         precision=100.0))
    assert not any("entity F1" in w for w in loose.warnings)


def test_a_tagger_calibrated_on_onnxruntime_int8_leaves_where_its_export_does(calibrated, case, tag_onnx, tmp_path):
    """calibrate --runtime onnxruntime on a tagger: each word's logits come from ONNX Runtime's scratch export, one
    sentence at a time (fp32: PyTorch's to rounding); the int8 export of that calibration leaves where its scored
    path says, and a benchmark of it scores ONNX Runtime's own outputs (PyTorch int8's there say they differ)."""
    import shutil

    from eebert_cli.model.artifact import load_artifact

    art = tmp_path / "o"
    shutil.copytree(calibrated, art, ignore=shutil.ignore_patterns("onnx*"))
    data = load_data(DataConfig(spec=str(case[1])))
    fp32 = load_artifact(art)
    ort, pt = split_tags(fp32, data, "validation", runtime="onnxruntime"), split_tags(fp32, data, "validation")
    assert ort.logits.shape == pt.logits.shape and torch.allclose(ort.logits, pt.logits, atol=1e-4, equal_nan=True)
    cal = steps.calibrate(art, None, CalibrationConfig(target_speedup=1.5, bootstrap=20, runtime="onnxruntime"),
                          quantize="int8")
    assert cal.runtime == "onnxruntime" and cal.quantize == "int8" and cal.placement["device"] == "cpu"
    steps.export(art, art / "onnx-int8", "int8")
    cfg = BenchmarkConfig(runtime="onnxruntime", onnx_dir=str(art / "onnx-int8"), repeats=1, timing_samples=0)
    timed = steps.benchmark(art, None, cfg, write=False)
    assert timed["scored_by"] == timed["calibration_runtime"] == "onnxruntime" and "differs" not in timed["timing"]
    assert timed["timing"]["exit_mismatches"] == 0  # every test sentence leaves where it was scored to
    untimed = steps.benchmark(art, None, replace(cfg, repeats=0), write=False)  # figures only: still the runtime's
    assert untimed["scored_by"] == "onnxruntime" and "timing" not in untimed
    assert untimed["early_exit"] == {k: v for k, v in timed["early_exit"].items() if k != "speedup_measured"}
    r = steps.benchmark(art, None, BenchmarkConfig(repeats=1, timing_samples=4), write=False)
    assert r["scored_by"] == "pytorch" and "chosen on onnxruntime's int8 outputs" in r["timing"]["differs"]


@pytest.mark.parametrize("runtime", ["pytorch", "onnxruntime"])
def test_benchmark_times_a_tagger_in_batches(calibrated, tag_onnx, runtime):
    """--batch-size times padded batches of sentences, each leaving at its own exit, against the deployed
    tagger in the same batches (it was ignored: batch 1 was timed)."""
    out, _ = tag_onnx
    onnx_dir = str(out) if runtime == "onnxruntime" else ""  # --onnx is refused with another runtime
    rep = steps.benchmark(calibrated, None, BenchmarkConfig(runtime=runtime, onnx_dir=onnx_dir, repeats=2,
                                                            timing_samples=24, timing_batch_size=8), write=False)
    t = rep["timing"]
    assert t["batch_size"] == 8 and t["examples"] == 24 and t["exit_mismatches"] == 0 and t["device"] == "cpu"
    assert t["machine"]["cpu"] and t["machine"]["cpus"] >= 1  # what the clock was read on
    assert t["early_exit_ms_per_sentence"] > 0 and t["deployed_ms_per_sentence"] > 0


def test_predict_with_the_per_token_exit(calibrated, tmp_path):
    tagger = Tagger.from_artifact(calibrated)
    for threshold, exit_at, layer in ((0.0, 0, 1), (1.0, 3, 4)):  # every word at the first exit / none halts
        rows = steps.predict(calibrated, TEXTS, token_threshold=threshold)["rows"]
        want = tagger.predict(TEXTS, exit_at=exit_at)
        for r, w in zip(rows, want):
            assert [t["tag"] for t in r["tokens"]] == [t["tag"] for t in w["tokens"]]
            assert r["entities"] == w["entities"] and r["exit_layer"] == layer
            assert {t["exit_layer"] for t in r["tokens"]} == {layer}
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in TEXTS])
    r = CliRunner().invoke(app, ["predict", str(calibrated), "--input", str(src), "--token-threshold", "0.9", "--json"])
    assert r.exit_code == 0 and len(json.loads(r.stdout)) == len(TEXTS), r.output


@pytest.mark.parametrize("args,needle", [
    (["--token-threshold", "1.5"], "within [0, 1]"),
    (["--token-threshold", "0.9", "--input", "IN", "--output", "OUT"], "per-token exit prints its rows"),
])
def test_per_token_settings_are_refused_in_one_line(calibrated, tmp_path, args, needle):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in TEXTS])
    args = [str(src) if a == "IN" else str(tmp_path / "o.jsonl") if a == "OUT" else a for a in args]
    r = CliRunner().invoke(app, ["predict", str(calibrated), *([] if "--input" in args else ["good film"]), *args])
    assert r.exit_code == 1 and r.output.count("error:") == 1 and needle in r.output, r.output


# -- per-token calibration: the threshold chosen by running the per-token pass on validation ---------------

@pytest.fixture(scope="module")
def token_calibrated(calibrated, tmp_path_factory):
    import shutil

    art = tmp_path_factory.mktemp("token-cal") / "art"
    shutil.copytree(calibrated, art)
    r = CliRunner().invoke(app, ["calibrate", str(art), "--token-exit", "--max-drop", "100", "--json"])
    assert r.exit_code == 0, r.output
    return art, json.loads(r.stdout)


def test_token_calibration_matches_a_direct_per_token_pass(token_calibrated, case):
    from eebert_cli.model.artifact import load_artifact
    from eebert_cli.model.token_halt import TokenHaltTagger
    from eebert_cli.scoring.token_calibrate import TOKEN_GRID, token_scores

    art_path, shown = token_calibrated
    record = json.loads((art_path / "calibration.json").read_text())
    te = record["token_exit"]
    assert te["mode"] == "per-token" and shown["threshold"] == te["threshold"] and record["criterion"] == "sentence-min"
    assert [p["threshold"] for p in te["curve"]] == list(TOKEN_GRID)
    # --max-drop 100 allows any loss: the fastest candidate
    assert te["validation"]["speedup_flops"] == max(p["flops_x"] for p in te["curve"])
    art = load_artifact(art_path)
    data = load_data(DataConfig(spec=str(case[1])))
    st = split_tags(art, data, "validation")
    words = data.split("validation").texts
    halt = TokenHaltTagger(art, te["threshold"])
    direct = token_scores([halt.tag_one(w) for w in words], words, st.gold, art.deployed.id2label, st.full.sum().item())
    assert direct["entity_f1"] == pytest.approx(te["validation"]["entity_f1"])
    assert direct["flops_x"] == pytest.approx(te["validation"]["speedup_flops"])
    # a target several candidates reach: the most accurate of them
    target = min(p["flops_x"] for p in te["curve"] if p["flops_x"] > 1.0)
    steps.calibrate(art_path, None, CalibrationConfig(target_speedup=target), token_exit=True)
    te = json.loads((art_path / "calibration.json").read_text())["token_exit"]
    assert te["budget"] == "target_speedup" and te["validation"]["speedup_flops"] >= target
    assert te["validation"]["entity_f1"] == max(p["entity_f1"] for p in te["curve"] if p["flops_x"] >= target)


def test_predict_uses_the_calibrated_token_threshold(token_calibrated, calibrated):
    art, _ = token_calibrated
    thr = json.loads((art / "calibration.json").read_text())["token_exit"]["threshold"]
    assert steps.predict(art, TEXTS, token_exit=True)["rows"] == steps.predict(art, TEXTS, token_threshold=thr)["rows"]
    r = CliRunner().invoke(app, ["predict", str(art), "good film", "--token-exit", "--json"])
    assert r.exit_code == 0 and len(json.loads(r.stdout)) == 1, r.output
    r = CliRunner().invoke(app, ["predict", str(calibrated), "good film", "--token-exit"])  # never token-calibrated
    assert r.exit_code == 1 and r.output.count("error:") == 1 and "no per-token calibration" in r.output, r.output


def test_a_per_token_budget_no_threshold_meets_is_refused_in_one_line(token_calibrated):
    from eebert_cli.scoring.token_calibrate import choose_token

    art, _ = token_calibrated
    before = (art / "calibration.json").read_bytes()
    r = CliRunner().invoke(app, ["calibrate", str(art), "--token-exit", "--target-speedup", "1000"])
    assert r.exit_code == 1 and r.output.count("error:") == 1 and "no per-token threshold reaches 1000" in r.output
    assert "Traceback" not in r.output and (art / "calibration.json").read_bytes() == before
    points = [{"threshold": 0.5, "entity_f1": 0.40, "flops_x": 3.0}, {"threshold": 0.9, "entity_f1": 0.45, "flops_x": 2.0}]
    assert choose_token(points, CalibrationConfig(max_drop=6.0), 0.50)["threshold"] == 0.9
    assert choose_token(points, CalibrationConfig(max_drop=10.0), 0.50)["threshold"] == 0.5
    with pytest.raises(EebertError, match="the least: 5.00"):
        choose_token(points, CalibrationConfig(max_drop=4.0), 0.50)


def test_per_token_max_drop_is_kept_on_a_bootstrap_bound(token_calibrated):
    """--max-drop for the per-token exit bounds the entity-F1 drop over sentence resamples, as the
    per-sentence calibration does, and the record says so (the curve holds each bound, not the counts)."""
    from eebert_cli.scoring.token_calibrate import choose_token, drop_bounds

    art, _ = token_calibrated
    steps.calibrate(art, None, CalibrationConfig(max_drop=100.0), token_exit=True)  # other tests re-calibrate it
    te = json.loads((art / "calibration.json").read_text())["token_exit"]
    assert "bootstrap over sentences (200 resamples), 0.9 quantile" in te["margin"]
    assert all("drop_bound" in p and "counts" not in p for p in te["curve"])
    # ten sentences with one entity each; the candidate misses three: F1 0.82, a drop of 17.6 points
    ref = torch.tensor([[1.0, 1, 1]] * 10, dtype=torch.float64)
    cand = torch.tensor([[1.0, 1, 1]] * 7 + [[0.0, 0, 1]] * 3, dtype=torch.float64)
    points = [{"threshold": 0.5, "entity_f1": 14 / 17, "flops_x": 3.0, "counts": cand},
              {"threshold": 0.9, "entity_f1": 1.0, "flops_x": 2.0, "counts": ref.clone()}]
    drop_bounds(points, ref, 200, 0.9)
    assert points[1]["drop_bound"] == 0.0 and points[0]["drop_bound"] > 1 - 14 / 17  # the bound lies above the point
    # 20 points allow the point estimate (17.6) but not its bound: the slower, exact threshold is chosen
    assert 100 * points[0]["drop_bound"] > 20
    assert choose_token(points, CalibrationConfig(max_drop=20.0), 1.0)["threshold"] == 0.9
    with pytest.raises(EebertError, match="on its bootstrap bound"):
        choose_token(points[:1], CalibrationConfig(max_drop=20.0), 1.0)


# -- per-exit thresholds -----------------------------------------------------------------------------------

@pytest.mark.parametrize("stateless", [False, True])
@pytest.mark.parametrize("budget", [{"target_speedup": 1.5}, {"max_drop": 2.0, "bootstrap": 30}])
def test_moving_one_exits_threshold_is_scored_exactly(calibrated, case, budget, stateless):
    """The one-exit sweep against a full evaluation of each candidate; ``stateless``: an exit at "never" is not
    evaluated (exit 1 starts there, and every exit's candidates include it), so it charges nothing."""
    from eebert_cli.scoring.tagging_calibrate import TagProblem, candidates

    art = Tagger.from_artifact(calibrated).artifact
    st = split_tags(art, load_data(DataConfig(spec=str(case[1]))), "validation")
    scores = build_criterion("sentence-min").scores(st.logits)[:, :-1].double()
    ref_f1 = st.reference_f1(torch.full((len(st.words),), 3, dtype=torch.long))
    problem = TagProblem(st, scores, CalibrationConfig(**budget), ref_f1, stateless=stateless)
    cands = candidates(scores)[::7].contiguous()
    assert cands[0] == float("-inf")
    start = torch.tensor(middle_thresholds(scores), dtype=torch.float64)
    if stateless:
        start[1] = float("-inf")
        assert problem.skipped(start) == {1}
    for k in range(3):
        fig, spd = problem.sweep_exit(start, k, cands)
        for j, c in enumerate(cands.tolist()):  # each candidate against a full evaluation
            t = start.clone()
            t[k] = c
            o = problem.outcome(t)
            assert fig[j].item() == pytest.approx(o.accuracy, abs=1e-9) and spd[j].item() == pytest.approx(o.speedup)
            if "target_speedup" in budget:
                assert o.accuracy == pytest.approx(st.reference_f1(o.exits))


def _synthetic_split(s=120, k=4, seed=0, good=(0.6, 0.1, 0.9, 1.0)):
    """Span counts, costs and scores of a made-up validation split, where exits differ by sentence (``good``: how
    often each exit gets a span right)."""
    from eebert_cli.scoring.tagging import SplitTags

    g = torch.Generator().manual_seed(seed)
    gold = torch.randint(0, 4, (s, 1, 1), generator=g).expand(s, k, 1)
    pred = torch.randint(0, 4, (s, k, 1), generator=g)
    good = torch.tensor(good)[None, :, None]  # by default exit 1 is poor: the others should keep it idle
    correct = torch.minimum(pred, gold) * (torch.rand(s, k, 1, generator=g) < good)
    counts = torch.cat([correct, pred, gold], -1).long()
    cost = torch.linspace(1, 4, k)[None].expand(s, k).clone()
    z = torch.zeros(s, k)
    st = SplitTags(logits=None, tags=None, counts=counts, right=z, agree=z, words=torch.ones(s), cost=cost, static=cost,
                   full=torch.full((s,), 4.0), labelled=True, gold=None, names=[])
    return st, torch.rand(s, k - 1, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("budget", [{"target_speedup": 1.6}, {"max_drop": 15.0, "bootstrap": 40}])
def test_refined_thresholds_beat_the_global_one_and_no_single_move_beats_them(budget):
    from eebert_cli.scoring.tagging_calibrate import TagProblem, candidates, choose, refine, sweep
    from eebert_cli.scoring.threshold_search import Goal

    st, scores = _synthetic_split()
    cfg = CalibrationConfig(**budget)
    ref_f1 = st.reference_f1(torch.full((len(st.words),), 3, dtype=torch.long))
    glob, warnings = choose(sweep(st, scores, cfg), cfg, ref_f1)
    assert not warnings
    point = refine(st, scores, cfg, ref_f1, glob, candidates(scores))
    assert "thresholds" in point and len(set(point["thresholds"])) > 1  # a different threshold per exit
    problem = TagProblem(st, scores, cfg, ref_f1)
    goal = Goal(min_speedup=1.6) if "target_speedup" in budget else Goal(min_accuracy=-0.15, maximise="speedup")
    best = problem.outcome(torch.tensor(point["thresholds"], dtype=torch.float64))
    assert goal.feasible(best.accuracy, best.speedup)
    assert goal.better((best.accuracy, best.speedup), (glob["f1"] if "target_speedup" in budget else
                                                       -max(glob["drop_bound"], ref_f1 - glob["f1"]), glob["speedup"]))
    cands = torch.cat([candidates(scores), torch.tensor([float("inf")], dtype=torch.float64)])
    for k in range(3):  # a local optimum: no one exit's move improves it
        fig, spd = problem.sweep_exit(torch.tensor(point["thresholds"], dtype=torch.float64), k, cands)
        assert not any(goal.better((f, v), (best.accuracy, best.speedup)) for f, v in zip(fig.tolist(), spd.tolist()))
    if "max_drop" in budget:
        assert 100 * max(point["drop_bound"], ref_f1 - point["f1"]) <= 15.0


def test_a_target_keeps_the_slowest_point_within_noise_of_the_best_f1():
    """The sentence path's tie rule on a tagger: entity-F1 gaps under half a bootstrap standard error are noise,
    so the point kept is the slowest reaching the target among those within it of the best; no one exit's move
    finds a slower such point; a tolerance of 0 keeps the best F1, and a wide one the slowest point that reaches
    the target."""
    from eebert_cli.scoring.tagging_calibrate import (TagProblem, candidates, choose, f1_tolerance, refine, solve,
                                                      sweep)
    from eebert_cli.scoring.threshold_search import near_equal

    st, scores = _synthetic_split(good=(0.6, 0.1, 1.0, 0.95))  # exit 2 beats the last: F1 peaks above the target
    cfg = CalibrationConfig(target_speedup=1.1, bootstrap=50)
    ref_f1 = st.reference_f1(torch.full((len(st.words),), 3, dtype=torch.long))
    points = sweep(st, scores, cfg)
    best = refine(st, scores, cfg, ref_f1, choose(points, cfg, ref_f1)[0], candidates(scores))
    tol = f1_tolerance(st, best["exits"], 50)
    assert 0 < tol < 0.05 and best["speedup"] > 1.15
    point, warnings, _ = solve(st, scores, cfg, ref_f1, False)
    assert not warnings
    assert 1.1 <= point["speedup"] < best["speedup"] and best["f1"] - tol - 1e-12 <= point["f1"] < best["f1"]
    goal = near_equal(best["f1"], tol, 1.1)
    problem = TagProblem(st, scores, cfg, ref_f1)
    cands = torch.cat([candidates(scores), torch.tensor([float("inf")], dtype=torch.float64)])
    for k in range(3):
        fig, spd = problem.sweep_exit(torch.tensor(point["thresholds"], dtype=torch.float64), k, cands)
        assert not any(goal.better((f, v), (point["f1"], point["speedup"])) for f, v in zip(fig.tolist(), spd.tolist()))
    exact, _, _ = solve(st, scores, replace(cfg, tolerance=0.0), ref_f1, False)
    assert exact["f1"] >= best["f1"] - 1e-12 and exact["speedup"] <= best["speedup"] + 1e-12
    wide, _, _ = solve(st, scores, replace(cfg, tolerance=1.0), ref_f1, False)
    slowest = min(p["speedup"] for p in points if p["speedup"] >= 1.1)
    assert 1.1 <= wide["speedup"] <= slowest


@pytest.mark.parametrize("budget", [{"target_speedup": 1.6}, {"max_drop": 15.0, "bootstrap": 40}])
def test_switching_exits_off_keeps_what_ranks_higher_at_the_flops_the_runtime_spends(budget):
    """The sentence path's greedy (``switching_off``) on a tagger's problem, where each exit's head charges the
    sentences that pass it: the result ranks at least as high as every exit kept (entity F1, or the speedup
    within the budget, then fewer exits evaluated), its figures are the FLOPs as run, and it switches nothing off
    for a stateful criterion or with --keep-exits."""
    from eebert_cli.scoring.tagging_calibrate import TagProblem, solve, solve_switching_off, thresholds_of
    from eebert_cli.scoring.threshold_search import Problem

    st, scores = _synthetic_split()
    s, k = st.counts.shape[:2]
    charges = torch.full((s, k - 1), 0.3, dtype=torch.float64)
    st.cost = torch.arange(1, k + 1, dtype=torch.float64)[None].expand(s, k) + torch.cat(
        [charges.cumsum(1), charges.sum(1, keepdim=True)], 1)  # layers 1..4, every earlier head charged
    st.charges = charges
    cfg = CalibrationConfig(**budget)
    ref_f1 = st.reference_f1(torch.full((s,), k - 1, dtype=torch.long))
    kept, _, _ = solve(st, scores, cfg, ref_f1, True)
    point, warnings, _ = solve_switching_off(st, scores, cfg, ref_f1, True)
    assert not warnings
    p = Problem(scores, torch.zeros(s, k), st.cost, st.full, charges, stateless=True)
    t_kept, t = (torch.tensor(thresholds_of(x, k - 1), dtype=torch.float64) for x in (kept, point))
    figure = "f1" if "target_speedup" in budget else "speedup"
    assert (point[figure], -p.evaluated(t)) >= (kept[figure], -p.evaluated(t_kept))
    o = TagProblem(st, scores, cfg, ref_f1, stateless=True).outcome(t)  # the point's figures are the FLOPs as run
    assert point["speedup"] == pytest.approx(o.speedup) and torch.equal(point["exits"], o.exits)
    if "target_speedup" in budget:
        assert point["speedup"] >= 1.6
    for stateless, prune in ((False, True), (True, False)):
        alone, _, _ = solve(st, scores, replace(cfg, prune_exits=prune), ref_f1, stateless)
        got, _, _ = solve_switching_off(st, scores, replace(cfg, prune_exits=prune), ref_f1, stateless)
        assert thresholds_of(got, k - 1) == thresholds_of(alone, k - 1)


def test_within_noise_a_taggers_exits_go_while_f1_stays_within_the_tolerance_of_every_exit_on():
    """``--prune-within-noise`` on a tagger: anchored to the search with every exit on, exits go while entity F1 stays
    within the tie rule's tolerance of it, fewest exits evaluated first; here that evaluates fewer exits than every
    exit on, no more than the default rule (which gives up no F1), and a wider tolerance no more again."""
    from eebert_cli.scoring.tagging_calibrate import solve, solve_switching_off, thresholds_of
    from eebert_cli.scoring.threshold_search import Problem

    st, scores = _synthetic_split(good=(0.9, 0.85, 0.95, 1.0))  # every exit fair: what one adds is small
    s, k = st.counts.shape[:2]
    charges = torch.full((s, k - 1), 0.3, dtype=torch.float64)
    st.cost = torch.arange(1, k + 1, dtype=torch.float64)[None].expand(s, k) + torch.cat(
        [charges.cumsum(1), charges.sum(1, keepdim=True)], 1)
    st.charges = charges
    ref_f1 = st.reference_f1(torch.full((s,), k - 1, dtype=torch.long))
    p = Problem(scores, torch.zeros(s, k), st.cost, st.full, charges, stateless=True)

    def evaluated(point):
        return p.evaluated(torch.tensor(thresholds_of(point, k - 1), dtype=torch.float64))

    cfg = CalibrationConfig(target_speedup=1.3, bootstrap=50, tolerance=0.03)
    every, _, _ = solve(st, scores, cfg, ref_f1, True)
    plain, _, _ = solve_switching_off(st, scores, cfg, ref_f1, True)
    noisy, warnings, _ = solve_switching_off(st, scores, replace(cfg, prune_within_noise=True), ref_f1, True)
    assert not warnings and noisy["speedup"] >= 1.3
    assert noisy["f1"] >= every["f1"] - 0.03 - 1e-12
    assert evaluated(noisy) <= evaluated(plain) + 1e-12 and evaluated(noisy) < evaluated(every)
    wide, _, _ = solve_switching_off(st, scores, replace(cfg, prune_within_noise=True, tolerance=0.2), ref_f1, True)
    assert evaluated(wide) <= evaluated(noisy) + 1e-12


def test_per_exit_calibration_refines_the_global_threshold(calibrated):
    # tolerance 0: the tie rule keeps the best F1, so the ascent's start bounds it from below
    glob = steps.calibrate(calibrated, None, CalibrationConfig(target_speedup=1.5, bootstrap=20, per_layer=False,
                                                                tolerance=0.0))
    per = steps.calibrate(calibrated, None, CalibrationConfig(target_speedup=1.5, bootstrap=20, tolerance=0.0))
    assert glob.per_layer is False and len(set(glob.thresholds) - {"never"}) == 1  # "never": switched off
    assert per.validation["speedup_flops"] >= 1.5
    assert per.validation["entity_f1"] >= glob.validation["entity_f1"] - 1e-12  # the ascent starts at the global point
    assert per.per_layer == (per.thresholds != glob.thresholds)
    drop = steps.calibrate(calibrated, None, CalibrationConfig(max_drop=2.0, bootstrap=30))
    v = drop.validation
    # the drop's bootstrap bound (the drop plus its margin) is what stays within the budget, not the drop alone
    assert 100 * (v["reference_entity_f1"] - v["entity_f1"]) + drop.margin["points"] <= 2.0 + 1e-9
    assert "bootstrap over sentences (30 resamples)" in drop.margin["method"]
    steps.calibrate(calibrated, None, CalibrationConfig(target_speedup=1.5, bootstrap=20, tolerance=0.0))  # as the others expect


def test_the_criterion_setting_kept_follows_the_tie_rule_and_prefers_settings_that_reach_the_target():
    from eebert_cli.scoring.tagging_calibrate import pick_setting

    st, _ = _synthetic_split()
    exits = torch.full((len(st.words),), 3, dtype=torch.long)

    def setting(q, f1, speedup, missed=False):
        return ({"q": q}, {"f1": f1, "speedup": speedup, "exits": exits}, ["missed"] if missed else [], [], True)

    cfg = CalibrationConfig(target_speedup=2.0, tolerance=0.01)
    found = [setting(0.1, 0.500, 2.6), setting(0.25, 0.495, 2.1), setting(0.5, 0.480, 2.0), setting(0.9, 0.9, 1.5, True)]
    assert pick_setting(st, found, cfg)[0] == {"q": 0.25}  # within 0.01 of the best that reaches 2.0x, and slower
    assert pick_setting(st, found, replace(cfg, tolerance=0.0))[0] == {"q": 0.1}
    assert pick_setting(st, [found[3], setting(0.95, 0.2, 1.8, True)], cfg)[0] == {"q": 0.95}  # none: the fastest
    budget = CalibrationConfig(max_drop=5.0)
    assert pick_setting(st, found[:3], budget)[0] == {"q": 0.1}

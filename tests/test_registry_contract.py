"""The registry contract, for every registered component (new ones are picked up by name).

Each family builds through ``Registry.build``: unknown names, unknown keys, wrong
types, out-of-range values and the wrong task fail with one line; and each exit
head, objective, gate and criterion goes attach -> artifact on disk -> load ->
runtime, whose exits must equal the scored path's (the one calibration and the
benchmark use).
"""

import random
import sys
import textwrap

import pytest
import torch

from eebert_cli.model.artifact import load_artifact
from eebert_cli.backbones import BACKBONES, Dims
from eebert_cli.scoring.threshold_search import decide
from eebert_cli.scoring.config import CalibrationConfig
from eebert_cli.train.config import AttachConfig
from eebert_cli.criteria import CRITERIA
from eebert_cli.data import DataConfig, load_data
from eebert_cli.core.errors import EebertError
from eebert_cli.exits import EXITS
from eebert_cli.gates import GATES
from eebert_cli.gates.config import GateConfig
from eebert_cli.objectives import OBJECTIVES
from eebert_cli.train.attach import attach
from eebert_cli.steps import calibrate
from eebert_cli.scoring.outputs import problem_for, split_outputs
from eebert_cli.core.registry import Registry, discover
from eebert_cli.tasks import CLASSIFICATION, MULTI_LABEL, REGRESSION, TASKS, TOKEN_CLASSIFICATION
from eebert_cli.model.runtime import EarlyExitModel
from eebert_cli.train.config import TrainConfig

from conftest import make_model, make_multilabel_case, make_rows, make_tagging_case, write_csv

#: (registry, leading positional arguments its classes take before their parameters)
FAMILIES = {"exits": (EXITS, 1), "criteria": (CRITERIA, 0), "objectives": (OBJECTIVES, 0), "gates": (GATES, 2)}
EVERY = [(fam, name) for fam, (reg, _) in FAMILIES.items() for name in reg.names()]
DIMS = Dims(num_layers=4, hidden_size=32, intermediate_size=64, num_heads=4, num_labels=2)


@pytest.mark.parametrize("family,name", EVERY)
def test_an_unknown_key_names_the_closest_known_one(family, name):
    reg, positional = FAMILIES[family]
    declared = list(reg.declared(name, positional))
    key = (declared[0] + "x") if declared else "bogus"
    with pytest.raises(EebertError) as e:
        reg.check(name, {key: 1}, positional)
    assert repr(key) in e.value.message and repr(name) in e.value.message
    if declared:
        assert f"did you mean {declared[0]!r}" in e.value.hint


@pytest.mark.parametrize("family,name", EVERY)
def test_a_wrong_type_is_one_line(family, name):
    reg, positional = FAMILIES[family]
    typed = [k for k, p in reg.declared(name, positional).items() if isinstance(p.default, (int, float, bool))]
    if not typed:
        pytest.skip(f"{name} has no scalar parameter")
    with pytest.raises(EebertError) as e:
        reg.check(name, {typed[0]: "not-a-number"}, positional)
    assert typed[0] in e.value.message and "\n" not in e.value.message


@pytest.mark.parametrize("family,name", EVERY)
def test_tasks_are_declared_and_checked(family, name):
    reg, positional = FAMILIES[family]
    tasks = reg.get(name).tasks
    assert tasks and set(tasks) <= set(TASKS)
    for task in set(TASKS) - set(tasks):
        with pytest.raises(EebertError) as e:
            reg.check(name, {}, positional, task)
        assert f"this model does {task}" in e.value.message


def test_backbones_declare_tasks_too():
    assert all(BACKBONES.get(n).tasks for n in BACKBONES.names())


@pytest.mark.parametrize("registry,name,params,needle", [
    (EXITS, "mean-mlp", {"dropout": 1.5}, "within [0.0, 1.0)"),
    (EXITS, "conv", {"kernel": 4}, "kernel must be odd"),
    (EXITS, "attention", {"heads": 0}, ">= 1"),
    (CRITERIA, "pcee", {"confidence": 0.0}, "within (0.0, 1.0]"),
    (CRITERIA, "dge", {"patience": 0}, ">= 1"),
    (CRITERIA, "entropy", {"normalized": float("nan")}, "expected bool"),
    (OBJECTIVES, "ce-distil", {"temperature": float("nan")}, "finite"),
    (OBJECTIVES, "distil", {"temperature": -1.0}, "above 0.0"),
    (OBJECTIVES, "leebert", {"outer_share": 1.0}, "parameter 'outer_share' must be within (0.0, 1.0), got 1.0"),
    (OBJECTIVES, "leebert", {"floor": 1.0}, "parameter 'floor' must be within [0.0, 1.0), got 1.0"),
    (OBJECTIVES, "leebert", {"weight_lr": -0.1}, "parameter 'weight_lr' must be >= 0.0"),
])
def test_out_of_range_values_are_one_line(registry, name, params, needle):
    args = (DIMS,) if registry is EXITS else ()
    with pytest.raises(EebertError) as e:
        registry.build(name, params, *args)
    assert needle in e.value.message and "\n" not in e.value.message


def test_a_parameters_refusal_gives_its_default_as_the_example():
    with pytest.raises(EebertError) as e:
        OBJECTIVES.build("leebert", {"mix": 1.5})
    assert e.value.hint == "for example 0.3 (the default)"
    with pytest.raises(EebertError) as e:
        EXITS.check("attention", {"heads": 0}, 1)
    assert e.value.hint == "for example 2 (the default)"
    with pytest.raises(EebertError) as e:  # no numeric default (None: the hidden size's share): the list to read
        EXITS.check("mean-mlp", {"width": -1}, 1)
    assert e.value.hint == "see `eebert list` for its parameters"


def test_unknown_names_suggest_the_closest():
    with pytest.raises(EebertError) as e:
        EXITS.get("mean-mpl")
    assert "did you mean 'mean-mlp'" in e.value.hint


def test_a_module_dropped_into_a_package_registers_itself(tmp_path, monkeypatch):
    """Discovery: no import list to keep; a new module is found by walking the package."""
    pkg = tmp_path / "plugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "extra.py").write_text(textwrap.dedent('''
        from tests_registry_probe import PROBE

        @PROBE.register("extra")
        class Extra:
            def __init__(self, size: int = 1):
                self.size = size
    '''))
    probe = Registry("probe")
    monkeypatch.setitem(sys.modules, "tests_registry_probe", type(sys)("tests_registry_probe"))
    sys.modules["tests_registry_probe"].PROBE = probe
    monkeypatch.syspath_prepend(str(tmp_path))
    discover("plugins")
    assert probe.names() == ["extra"] and probe.build("extra", {"size": 3}).size == 3


def test_leco_is_a_registered_head_with_declared_search_parameters():
    assert "leco" in EXITS and "search_epochs" in EXITS.declared("leco", 1)
    with pytest.raises(EebertError) as e:
        EXITS.check("leco", {"search_epoch": 1}, 1)
    assert "did you mean 'search_epochs'" in e.value.hint
    with pytest.raises(EebertError):
        EXITS.check("leco", {"candidates": ["linear", "nope"]}, 1) and EXITS.get("leco").candidates_of(
            {"candidates": ["linear", "nope"]})


# --- every component through attach -> save -> load -> runtime, against the scored path ------------------

@pytest.fixture(scope="module")
def regression_case(tmp_path_factory):
    root = tmp_path_factory.mktemp("reg-contract")
    ckpt = make_model(root / "model", "bert", num_labels=1)
    rng = random.Random(0)
    pos = {"good", "great", "fine", "love", "nice"}
    rows = [{"text": r["text"], "label": round(sum(w in pos for w in r["text"].split()) + rng.gauss(0, 0.1), 3)}
            for r in make_rows(200, seed=3)]
    data = root / "data"
    data.mkdir()
    for name, part in (("train", rows[:100]), ("validation", rows[100:150]), ("test", rows[150:])):
        write_csv(data / f"{name}.csv", part)
    return ckpt, data


def roundtrip(ckpt, data_dir, cfg: AttachConfig, out, criterion="entropy", params=None, attach_it=True):
    """Attach (unless done), calibrate, load from disk; the runtime's exits must equal the scored path's."""
    dcfg = DataConfig(spec=str(data_dir), max_samples=40)
    if attach_it:
        attach(str(ckpt), dcfg, cfg, out)
    data = load_data(dcfg)
    if CRITERIA.get(criterion).per_token:
        return token_roundtrip(out, data, criterion)
    calibrate(load_artifact(out), data, CalibrationConfig(criterion=criterion, criterion_params=params or {},
                                                          target_speedup=1.3, bootstrap=5))
    if load_artifact(out).config["task"] == TOKEN_CLASSIFICATION:
        return tag_roundtrip(out, data)
    model = EarlyExitModel.from_artifact(out)  # everything from disk
    outputs = split_outputs(model.artifact, data, "test")
    scored = decide(problem_for(outputs, model.criterion).scores, torch.tensor(model.thresholds, dtype=torch.float64))
    got = [p.exit_layer for p in model.predict(data.split("test").texts, batch_size=1)]
    assert got == [model.exit_layers[k] for k in scored.tolist()]
    return model


def token_roundtrip(out, data, criterion):
    """A per-token criterion: calibrated by its name, predict then halts each word at the recorded threshold
    exactly as the per-token pass with that criterion does."""
    from eebert_cli.deploy.predict_file import load_predictor
    from eebert_cli.model.token_halt import TokenHaltTagger

    calibrate(load_artifact(out), data, CalibrationConfig(target_speedup=1.01))  # the per-sentence record first
    calibrate(load_artifact(out), data, CalibrationConfig(criterion=criterion, max_drop=100.0))
    record = load_artifact(out).calibration.token_exit
    assert record["criterion"] == criterion and record["mode"] == "per-token"
    texts = [" ".join(w) for w in data.split("test").texts[:5]]
    predictor = load_predictor(out, None, None, token_exit=True)
    got = predictor.predict(texts, batch_size=1)
    direct = TokenHaltTagger(load_artifact(out), record["threshold"], criterion).predict(texts, batch_size=1)
    assert got == direct and all("exit_layer" in w for r in got for w in r["tokens"])
    return predictor


def tag_roundtrip(out, data):
    """A tagger: the runtime's per-sentence exits (from disk) equal the scored path's."""
    from eebert_cli.model.tagger_runtime import Tagger
    from eebert_cli.scoring.tagging import split_tags

    tagger = Tagger.from_artifact(out)
    st = split_tags(tagger.artifact, data, "test")
    scored = decide(tagger.criterion.scores(st.logits)[:, :-1].double(),
                    torch.tensor(tagger.thresholds, dtype=torch.float64))
    got = [layer for _, _, layer in tagger.tag_words(data.split("test").texts, batch_size=1)]
    assert got == [tagger.artifact.calibration.exit_layers[k] for k in scored.tolist()]
    return tagger


@pytest.fixture(scope="module")
def multilabel_case(tmp_path_factory):
    return make_multilabel_case(tmp_path_factory.mktemp("ml-contract"))


@pytest.fixture(scope="module")
def cases(tiny_ckpt, tiny_data, regression_case, multilabel_case, tmp_path_factory):
    """(checkpoint, data) of each task."""
    return {CLASSIFICATION: (tiny_ckpt, tiny_data), REGRESSION: regression_case, MULTI_LABEL: multilabel_case,
            TOKEN_CLASSIFICATION: make_tagging_case(tmp_path_factory.mktemp("tag-contract"))}


def _task_case(component_cls, cases):
    """A case of the component's first task (classification when it serves it)."""
    tasks = component_cls.tasks
    return cases[CLASSIFICATION if CLASSIFICATION in tasks else tasks[0]]


FAST = TrainConfig(epochs=1, lr=3e-3)


@pytest.mark.parametrize("name", EXITS.names())
def test_every_exit_head_round_trips(name, cases, tmp_path):
    ckpt, data = _task_case(EXITS.get(name), cases)
    params = {"search_epochs": 1, "search_samples": 60} if name == "leco" else {}
    model = roundtrip(ckpt, data, AttachConfig(exits=name, exit_params=params, layers=[1, 2], train=FAST),
                      tmp_path / "art")
    assert model.artifact.config["exits"]["type"] == name


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_every_objective_round_trips(name, cases, tmp_path):
    ckpt, data = _task_case(OBJECTIVES.get(name), cases)
    model = roundtrip(ckpt, data, AttachConfig(objective=name, layers=[1, 2], train=FAST), tmp_path / "art")
    assert model.artifact.config["objective"]["name"] == name


@pytest.mark.parametrize("name", GATES.names())
def test_every_gate_round_trips(name, tiny_ckpt, tiny_data, tmp_path):
    gates = GateConfig(type=name, epochs=1, warmup_epochs=0, max_examples=40)
    model = roundtrip(tiny_ckpt, tiny_data, AttachConfig(layers=[1, 2], gates=gates, train=FAST), tmp_path / "art")
    assert model.artifact.exits.gates is not None


@pytest.fixture(scope="module")
def attached(cases, tmp_path_factory):
    """One attached artifact per task; criteria are calibrated on them in turn."""
    root = tmp_path_factory.mktemp("contract-criteria")
    out = {}
    for task, (ckpt, data) in cases.items():
        attach(str(ckpt), DataConfig(spec=str(data), max_samples=40),
               AttachConfig(layers=[1, 2, 3], train=TrainConfig(epochs=10, lr=3e-3)), root / task)
        out[task] = (ckpt, data, root / task)
    return out


@pytest.mark.parametrize("name", CRITERIA.names())
def test_every_criterion_round_trips(name, attached):
    tasks = CRITERIA.get(name).tasks
    ckpt, data, art = attached[CLASSIFICATION if CLASSIFICATION in tasks else tasks[0]]
    model = roundtrip(ckpt, data, None, art, criterion=name, attach_it=False)
    assert model.criterion.registry_name == name


def test_every_task_has_a_contract_case(cases):
    assert set(cases) == set(TASKS.names())


# -- tasks: every registered task keeps the contract the pipeline relies on ------------------------------

@pytest.mark.parametrize("name", TASKS.names())
def test_task_contract(name):
    from eebert_cli.criteria import CRITERIA
    from eebert_cli.tasks.metrics import METRICS
    from eebert_cli.objectives import OBJECTIVES
    from eebert_cli.tasks import get

    task = get(name)
    assert task.name == name
    # its defaults exist and declare the task, and its metrics are registered
    assert name in OBJECTIVES.get(task.objective).tasks and name in CRITERIA.get(task.criterion).tasks
    assert task.metrics and all(m in METRICS for m in task.metrics)
    assert task.choose_metric() == task.metrics[0]
    with pytest.raises(EebertError):
        task.choose_metric(next(m for m in METRICS.names() if m not in task.metrics))
    for m in task.metrics[1:]:  # the others lead where the task lets --metric pick, else refused, named
        if task.fixed_headline:
            with pytest.raises(EebertError, match=f"--metric {m} cannot take its place"):
                task.choose_metric(m)
        else:
            assert task.choose_metric(m) == m
    # outputs [N, K, C]: answers agree with themselves, the reference's own answers score best
    torch.manual_seed(0)
    c = task.outputs(3)
    logits = torch.randn(20, 4, c)
    answers = task.answers(logits)
    assert answers.shape[:2] == (20, 4)
    ref = answers[:, -1]
    assert task.same(ref, ref).all()
    correct, scale = task.correctness(logits, ref)
    assert correct.shape == (20, 4) and scale > 0
    assert torch.allclose(correct[:, -1], correct.max(1).values)  # the reference's own exit is never beaten
    assert task.right(logits, ref)[:, -1].all()
    # a report row carries every column the task's table shows
    row = task.row(answers[:, 0], ref, ref)
    assert all(key in row for _, key, _ in task.columns)
    # predict / serve rows: one per example, exit layers kept
    preds = task.predictions(logits[:5, -1], [1, 2, 3, 4, 5], {i: f"l{i}" for i in range(c)})
    assert [p.exit_layer for p in preds] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("typed,meant", [("entrpy", "entropy"), ("Entropy", "entropy"), ("onnx", "onnxruntime"),
                                         ("max-prob", "maxprob"), ("nope", None), ("zzz", None)])
def test_a_hint_names_what_a_typo_meant_and_nothing_for_a_word_unlike_every_name(typed, meant):
    from eebert_cli.core.checks import closest

    hint = closest(typed, ["cobee", "dge", "entropy", "learned", "maxprob", "onnxruntime", "patience", "pcee"])
    assert hint.startswith(f"did you mean {meant!r}?") if meant else hint.startswith("known: ")

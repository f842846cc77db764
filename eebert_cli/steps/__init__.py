"""The pipeline's steps, one function each: attach, calibrate, benchmark, export, predict.

Each takes its typed config and returns its result; the CLI commands, ``eebert run`` and
``eebert compare`` call these and nothing else, so a recipe run equals the same commands
run by hand, figure for figure. Each step checks what it can before long work (bad
settings, a missing device), takes the artifact's writer lock where it writes, and
loads what it is given by path; a caller that already holds a loaded artifact, model or
data set may pass that instead (the tests and benchmarks do, to share one pass).
"""

from __future__ import annotations

from pathlib import Path
from ..model.artifact import WEIGHTS, Artifact, artifact_lock, derivation, load_artifact, read_config
from ..scoring.config import CalibrationConfig
from ..model.calibration import Calibration
from ..train.config import AttachConfig
from ..scoring.config import BenchmarkConfig
from ..data import DataConfig, TaskData, check_spec, load_data
from ..model.device import place_artifact, resolve
from ..model.device_config import DeviceConfig
from ..core.errors import EebertError
from ..deploy.runtimes import RUNTIMES
from ..scoring.outputs import OutputsCache, SplitOutputs, data_config_of, split_outputs
from ..model.runtime import EarlyExitModel
from ..core.ui import SILENT, UI


def _tagger(artifact: str | Path | Artifact):
    """The artifact's task when it tags tokens (its steps: train/tagging_attach.py, scoring/tagging_*.py), else None."""
    from ..model.tagger_runtime import tagger_task

    return tagger_task(artifact)


def _given_data(data: DataConfig | TaskData | None, artifact: str | Path | Artifact | EarlyExitModel,
                flags: dict | None = None) -> TaskData:
    """The rows, read before the artifact's weights load: data that is not there, a column it lacks or a
    bad row fails first, not after the model (the rows are read once either way). ``data`` as given, else
    the data the artifact records, with the data ``flags`` given without --data (--max-samples,
    --split-map, columns) on top of it."""
    if isinstance(data, TaskData):
        return data
    if isinstance(artifact, EarlyExitModel):
        artifact = artifact.artifact
    config = artifact.config if isinstance(artifact, Artifact) else read_config(artifact)  # not an artifact: first
    cfg = data_config_of(config, data, flags)
    check_spec(cfg)  # the row-free part first: a spec that is not there is named as such
    return load_data(cfg)


# -- attach ----------------------------------------------------------------------------------------------

def attach(checkpoint: str, data: DataConfig, cfg: AttachConfig, out: str | Path, ui: UI = SILENT, *,
           device: DeviceConfig | None = None, overwrite: bool = False) -> dict:
    """`eebert attach`: exits (and gates, trained criteria) trained on the frozen checkpoint -> an artifact."""
    from ..train.attach import attach as attach_exits

    return attach_exits(checkpoint, data, cfg, out, ui, overwrite=overwrite, device=device)


# -- calibrate -------------------------------------------------------------------------------------------

def check_calibration(cfg: CalibrationConfig) -> None:
    """Bad settings fail before any backbone work."""
    from ..criteria import CRITERIA
    from ..scoring.operating_point import check_config

    check_config(cfg)
    CRITERIA.check(cfg.criterion, cfg.criterion_params)


def calibrate(artifact: str | Path | Artifact, data: DataConfig | TaskData | None, cfg: CalibrationConfig,
              ui: UI = SILENT, *, device: DeviceConfig | None = None, backbone: str | None = None,
              quantize: str | None = None, metric: str | None = None, criterion_params: dict | None = None,
              cache: OutputsCache | None = None, data_flags: dict | None = None,
              token_exit: bool = False) -> Calibration:
    """`eebert calibrate`: choose the operating point on validation and write calibration.json.

    ``token_exit``: a tagger's per-token threshold instead (``scoring/token_calibrate.py``), recorded
    as the calibration's ``token_exit`` beside the per-sentence thresholds it leaves alone.

    Holds the artifact's writer lock from loading the exits to writing their thresholds (re-entrant),
    so the thresholds written belong to the exits that were scored. A loaded ``artifact`` is used as
    it is placed; a path is loaded, quantized if asked and placed on ``device``.
    """
    from ..model.quantize import check_scheme, quantize_artifact

    check_calibration(cfg)
    from ..criteria import CRITERIA

    by_name = not token_exit and CRITERIA.get(cfg.criterion).per_token  # a per-token criterion (criteria/token.py)
    token_exit = token_exit or by_name
    quantize = check_scheme(quantize)
    if token_exit and (quantize or getattr(artifact, "quantize", None)):  # before any loading
        raise EebertError("the per-token exit runs on the fp32 backbone; --quantize serves the per-sentence exit",
                          "drop --quantize, or calibrate the per-sentence exit with it")
    if token_exit:
        from ..deploy.predict_file import check_token_exit
        from ..scoring.token_calibrate import check_token_settings

        by = f"--criterion {cfg.criterion}" if by_name else "--token-exit"
        check_token_settings(cfg, metric, by)
        check_token_exit(artifact, device, by)
    where = resolve(device)  # a device that is not there fails before anything loads
    if not token_exit:
        _check_calibrate_settings(artifact, cfg, metric)
    data = _given_data(data, artifact, data_flags)
    # the unlabeled rows too, read with the validation split's columns: a file that is not there fails now
    extra = unlabeled_data(cfg.unlabeled, data) if cfg.max_drop is not None and cfg.unlabeled and not token_exit \
        else None
    path = artifact.path if isinstance(artifact, Artifact) else Path(artifact)
    with artifact_lock(path, "calibrate"):
        if not isinstance(artifact, Artifact):
            artifact = quantize_artifact(load_artifact(path, backbone), quantize)  # recorded in calibration.json
            place_artifact(artifact, where)
        if cfg.runtime != "pytorch":  # what the runtime cannot score, refused before its pass
            from ..deploy.onnx_scratch import check_exportable

            if token_exit:
                raise EebertError(f"--runtime {cfg.runtime} scores the per-sentence exit; the per-token exit is "
                                  "calibrated on PyTorch's outputs", "drop --runtime")
            check_exportable(artifact, _criterion(artifact, cfg), f"--runtime {cfg.runtime}",
                             "calibrate with --runtime pytorch")
        if cfg.cost == "latency":  # what the timed loop cannot export, refused before the backbone pass
            from ..scoring.latency import check_latency

            check_latency(artifact, _criterion(artifact, cfg), cfg.latency_runtime or cfg.runtime)
        if token_exit:
            from ..scoring.token_calibrate import calibrate_token_exit

            calibrate_token_exit(artifact, data, cfg)
            return artifact.calibration
        return _calibrate(artifact, data, cfg, ui, criterion_params, cache, metric, extra)


def _check_calibrate_settings(artifact, cfg: CalibrationConfig, metric: str | None) -> None:
    """What the artifact cannot be calibrated by, read from its config before anything loads: a target its
    first exit cannot reach, a --metric its task does not report; a tagger's --unlabeled, or a --metric other
    than the one its thresholds are chosen on."""
    from ..tasks import get as get_task

    config = artifact.config if isinstance(artifact, Artifact) else read_config(artifact)  # not an artifact: first
    gated = bool(config["exits"].get("gates"))  # as the exits load: gates where the spec has them
    cfg.check_reach(config["backbone"]["num_layers"], config["exits"]["layers"], gated)
    if not gated and list(cfg.gate_thresholds) != CalibrationConfig().gate_thresholds:
        raise EebertError("gate thresholds are tried on artifacts with skipping gates; this one has none",
                          "drop --gate-threshold (calibrate.gate_thresholds), or attach with --gates smartbert")
    task = get_task(config.get("task"))  # the artifact's task, as ``tagger_runtime.artifact_task`` reads it
    task.choose_metric(metric)  # one the task does not report, or cannot lead: one line
    if cfg.cost == "latency":  # what the latency model cannot time (its loop, criterion, exits)
        from ..criteria import CRITERIA
        from ..scoring.latency import check_latency_spec
        from ..tasks import criterion_for

        if task.level == "token":
            raise EebertError("--cost latency times a sentence classifier's loop; a tagger's exits are "
                              "calibrated on FLOPs", "drop --cost latency")
        criterion = CRITERIA.build(criterion_for(task, cfg.criterion), dict(cfg.criterion_params), task=task.name)
        check_latency_spec(config["exits"], criterion, cfg.latency_runtime or cfg.runtime)
    if task.level == "token" and cfg.unlabeled:
        raise EebertError("--unlabeled bounds a sentence classifier's drop by its disagreement with the deployed "
                          "model; a tagger's --max-drop is bounded by a bootstrap over labelled validation "
                          "sentences", "drop --unlabeled")


def _criterion(artifact: Artifact, cfg: CalibrationConfig):
    """The criterion ``cfg`` names for this artifact's task, built with its given parameters (for checks)."""
    from ..criteria import build_criterion
    from ..tasks import criterion_for, task_of

    name = criterion_for(task_of(artifact.deployed.model.config), cfg.criterion)
    return build_criterion(name, dict(cfg.criterion_params), artifact)


def _calibrate(artifact: Artifact, data: TaskData, cfg: CalibrationConfig, ui: UI,
               criterion_params: dict | None, cache: OutputsCache | None, metric: str | None,
               extra: TaskData | None = None) -> Calibration:
    """``extra``: the ``--unlabeled`` rows (``unlabeled_data``), read by the caller before the weights loaded."""
    from ..core.checks import check_validation_size
    from ..scoring.curves import criteria_for_curves, split_curves
    from ..scoring.operating_point import budget_note, choose_operating_point
    from ..scoring.report import mark_stale

    size_warning = check_validation_size(len(data.split("validation")))  # too few refused before any pass
    tagger = _tagger(artifact)
    if tagger is not None:  # per-sentence exit on a token classifier (its settings checked in calibrate())
        from ..scoring.tagging_calibrate import calibrate_tagger

        cal = calibrate_tagger(artifact, data, cfg, tagger, ui=ui)
        if size_warning:
            cal.warnings.append(size_warning)
            cal.save(artifact.path)
        mark_stale(artifact.path)
        return cal
    gates = artifact.exits.gates
    if gates is not None and not cfg.gate_thresholds:
        raise EebertError("no gate thresholds to try", "set calibrate.gate_thresholds, e.g. [0.5, 0.75, 0.9, 1.0]")
    shipped = None

    def outputs_at(gt: float | None) -> SplitOutputs:
        nonlocal shipped
        if gt is not None:
            try:
                gates.threshold = gt
            except ValueError as e:
                raise EebertError(str(e), "gate thresholds are skip probabilities, e.g. [0.5, 0.75, 0.9, 1.0]") from None
        o = split_outputs(artifact, data, "validation", ui=ui, deployed_logits=shipped, cache=cache,
                          runtime=cfg.runtime)
        shipped = o.deployed_logits  # one pass of the shipped model serves every gate threshold
        return o

    unlabeled_at, note = None, None
    if cfg.max_drop is not None and cfg.unlabeled:
        extra = extra or unlabeled_data(cfg.unlabeled, data)
        scored: dict = {}

        def unlabeled_at(gt: float | None) -> SplitOutputs:  # one pass per gate threshold, not per grid point
            if gt not in scored:
                scored[gt] = split_outputs(artifact, extra, "unlabeled", ui=ui, cache=cache, runtime=cfg.runtime)
            return scored[gt]
        note = budget_note(cfg.max_drop, cfg.drop_confidence, len(data.split("validation")),
                           len(extra.split("unlabeled")))
    elif cfg.max_drop is not None:
        note = budget_note(cfg.max_drop, cfg.drop_confidence, len(data.split("validation")))
    if note:
        ui.log(note)
    outputs, cal = choose_operating_point(outputs_at, [None] if gates is None else list(cfg.gate_thresholds),
                                          cfg, criterion_params, artifact, unlabeled_at, ui)
    if gates is not None:
        gates.threshold = cal.gate_threshold
    if cal.margin is not None and note:
        cal.margin["certifiable"] = note
    if unlabeled_at is not None:
        seen = training_overlap(data, extra)
        if seen >= 0.1 * len(extra.split("unlabeled")):
            cal.warnings.append(f"{seen:,} of the {len(extra.split('unlabeled')):,} --unlabeled rows are texts of the "
                                "training split: the exits agree with the deployed model more often on texts they "
                                "were trained on, so the bound is optimistic; give traffic the exits have not seen")
    cal.quantize = artifact.quantize
    cal.runtime = None if cfg.runtime == "pytorch" else cfg.runtime
    cal.placement = RUNTIMES.get(cfg.runtime).scored_placement(artifact.deployed.model)  # where it was scored
    if size_warning:
        cal.warnings.append(size_warning)
    cal.headline_metric = outputs.task.choose_metric(metric).replace("-", "_")
    if outputs.task.curves:
        try:
            crits = criteria_for_curves(cal.criterion, cal.criterion_params, artifact)
            cal.curves = {"validation": split_curves(outputs, artifact, crits)}
            cal.curves["validation"]["chosen"] = {"speedup": cal.validation["speedup_flops"],
                                                  "accuracy": cal.validation[cal.metric]}
        except EebertError:  # curves are a picture; never fail a calibration over them
            pass
    # the exits these thresholds belong to: loading refuses them once the artifact is re-attached
    cal.derived_from = derivation(artifact.path, WEIGHTS, known={WEIGHTS: artifact.exits_sha256})["derived_from"]
    cal.save(artifact.path)
    artifact.calibration = cal  # this loaded artifact now answers with the record just written
    mark_stale(artifact.path)  # a report of the previous calibration says it is stale
    return cal


def unlabeled_data(spec: str, data: TaskData) -> TaskData:
    """Every row of the file ``spec`` as one split "unlabeled", read with the validation split's text columns."""
    from ..data import files
    from ..data.spec import columns

    path = Path(spec).expanduser()
    if not path.is_file():
        raise EebertError(f"--unlabeled {spec}: file not found", f"give a data file ({', '.join(files.READERS)}) "
                          "with a text column")
    val = data.split("validation")
    ds = files.load_file(path, text_columns=(val.text_column, val.pair_column))
    if len(ds) == 0:
        raise EebertError(f"--unlabeled {spec} is empty", "give a file with a header and rows")
    split = columns(ds, DataConfig(text_column=val.text_column, pair_column=val.pair_column, label_column=None),
                    str(path))
    return TaskData(str(path), {"unlabeled": split})


def training_overlap(data: TaskData, extra: TaskData) -> int:
    """How many unlabeled rows are texts of the training split (hashes, a batch at a time)."""
    train = data.splits.get("train")
    if train is None or not len(train):
        return 0
    seen = {hash(t) for batch in train.iter_values(train.text_column) for t in batch}
    rows = extra.split("unlabeled")
    return sum(hash(t) in seen for batch in rows.iter_values(rows.text_column) for t in batch)


# -- benchmark -------------------------------------------------------------------------------------------

def benchmark(artifact: str | Path | EarlyExitModel, data: DataConfig | TaskData | None, cfg: BenchmarkConfig,
              ui: UI = SILENT, *, device: DeviceConfig | None = None, backbone: str | None = None,
              cache: OutputsCache | None = None, write: bool = True, data_flags: dict | None = None,
              curves: bool = True) -> dict:
    """`eebert benchmark`: the early-exit model against the deployed model, static truncation and the
    oracle on ``cfg.split``; report.json / report.md written into the artifact unless ``write`` is off.
    ``curves`` off: no accuracy/speedup curves in the report (a caller that reads only its figures)."""
    from ..scoring.benchmark import run_benchmark, warn_on_a_seen_split
    from ..scoring.report import write_report

    from ..deploy.onnx_runtime import check_pool

    resolve(device)  # a device that is not there fails before anything loads
    check_pool(cfg.ort_pool, cfg.runtime, cfg.onnx_dir)
    path = artifact.artifact.path if isinstance(artifact, EarlyExitModel) else Path(artifact)
    if not isinstance(artifact, EarlyExitModel):  # a missing or stale export, a metric the task does not report:
        read_config(path)  # (not an artifact: said first) before the rows and the weights
        RUNTIMES.get(cfg.runtime).check(path, cfg.onnx_dir)
        if cfg.metric:
            from ..model.tagger_runtime import artifact_task

            artifact_task(path).choose_metric(cfg.metric)
    data = _given_data(data, artifact, data_flags)
    with artifact_lock(path, "benchmark"):  # the calibration the report describes cannot change meanwhile
        tagger = None if isinstance(artifact, EarlyExitModel) else _tagger(path)
        if tagger is not None:
            from ..scoring.tagging_benchmark import run_tag_benchmark

            from ..model.quantize import as_calibrated

            art = as_calibrated(load_artifact(path, backbone))
            place_artifact(art, resolve(device))
            report = run_tag_benchmark(art, data, cfg, tagger, ui)
        else:
            model = artifact if isinstance(artifact, EarlyExitModel) else EarlyExitModel.from_artifact(path, backbone, device)
            report = run_benchmark(model, data, cfg, ui, cache=cache, curves=curves)
        warn_on_a_seen_split(report, ui)
        if write:
            write_report(path, report)
    return report


# -- export ----------------------------------------------------------------------------------------------

def export(artifact: str | Path, out: str | Path | None = None, quantize: str | None = None,
           backbone: str | None = None, ui: UI = SILENT) -> dict:
    """`eebert export`: ONNX segment graphs (+ the deployed model) for onnxruntime (a tagger's too:
    per-token logits, the per-sentence exit)."""
    from ..deploy.onnx_export import export as export_onnx

    return export_onnx(artifact, out, quantize, backbone, ui)


# -- predict ---------------------------------------------------------------------------------------------

def predict(artifact: str | Path, texts: list[str] | None = None, *, input_file: Path | None = None,
            output: Path | None = None, overwrite: bool = False, text_column: str = "text",
            pair_column: str | None = None, batch_size: int = 1, backbone: str | None = None,
            device: DeviceConfig | None = None, ui: UI = SILENT, token_threshold: float | None = None,
            token_exit: bool = False) -> dict:
    """`eebert predict`: texts, a file printed whole, or a file streamed to ``output``.

    Returns ``{"rows": [...]}`` (texts, or an input file without output) or the streaming summary
    (``output``; with the ray executor, a folder of parquet parts). ``token_threshold``: a tagger's
    per-token exit instead of its calibrated per-sentence one (rows printed, not streamed);
    ``token_exit`` alone: the per-token exit at its calibrated threshold.
    """
    from ..core.checks import check_batch_size
    from ..deploy.executors import executor_of
    from ..deploy.predict_file import answer_rows, check_paths, check_rows, load_predictor, predict_rows

    check_batch_size(batch_size)
    executor = executor_of(device)
    executor.check(device)  # a Ray cluster that does not answer fails before the artifact loads
    texts = list(texts or [])
    if output is not None and (input_file is None or texts):
        raise EebertError("--output writes the predictions of an --input file", "give --input FILE, not texts")
    if (token_threshold is not None or token_exit) and (output is not None or not executor.in_process):
        raise EebertError("the per-token exit prints its rows; --output and --executor ray stream the "
                          "per-sentence exit", "drop --output / --executor, or drop --token-threshold")
    if output is not None or not executor.in_process:  # streamed through the executor (ray: parquet parts)
        return executor.predict_file(artifact, input_file, output, device, text_column, pair_column, batch_size,
                                     backbone, overwrite, ui)
    resolve(device)  # a device that is not there fails before anything loads
    if input_file is not None:
        check_paths(input_file, None, overwrite)
        check_rows(input_file, text_column, pair_column, ui)  # a bad row anywhere: before the model loads
    elif not texts:
        raise EebertError("nothing to classify", "pass texts as arguments or --input FILE")
    model = load_predictor(artifact, backbone, device, pair_column, token_threshold, token_exit)  # a tagger's: its tagger
    rows = answer_rows(model, 0, texts, None, batch_size, keep_text=True) if texts else []
    if input_file is not None:
        for chunk in predict_rows(model, input_file, text_column, pair_column, batch_size, ui, keep_text=True):
            rows += chunk
    return {"rows": rows, "num_layers": model.num_layers}

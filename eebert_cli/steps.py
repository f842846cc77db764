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
from .artifact import WEIGHTS, Artifact, artifact_lock, derivation, load_artifact
from .calibrate import CalibrationConfig
from .calibration import Calibration
from .config import AttachConfig, BenchmarkConfig
from .data import DataConfig, TaskData, load_data
from .device import DeviceConfig, place_artifact, resolve
from .errors import EebertError
from .outputs import OutputsCache, SplitOutputs, data_config_of, split_outputs
from .runtime import EarlyExitModel
from .ui import SILENT, UI


def _tagger(artifact: str | Path | Artifact):
    """The artifact's task when it tags tokens (its steps live in tagging/), else None."""
    from .artifact import CONFIG
    from .atomic import read_json
    from .tasks import get as get_task

    config = artifact.config if isinstance(artifact, Artifact) else (
        read_json(Path(artifact) / CONFIG) if (Path(artifact) / CONFIG).is_file() else {})
    task = get_task(config.get("task"))
    return task if task.level == "token" else None


def _data(artifact: Artifact, data: DataConfig | TaskData | None) -> TaskData:
    """Loaded data: as given, else the data the artifact was attached with (flags on top of it)."""
    return data if isinstance(data, TaskData) else load_data(data_config_of(artifact, data))


# -- attach ----------------------------------------------------------------------------------------------

def attach(checkpoint: str, data: DataConfig, cfg: AttachConfig, out: str | Path, ui: UI = SILENT, *,
           device: DeviceConfig | None = None, overwrite: bool = False) -> dict:
    """`eebert attach`: exits (and gates, trained criteria) trained on the frozen checkpoint -> an artifact."""
    from .attach import attach as attach_exits

    return attach_exits(checkpoint, data, cfg, out, ui, overwrite=overwrite, device=device)


# -- calibrate -------------------------------------------------------------------------------------------

def check_calibration(cfg: CalibrationConfig) -> None:
    """Bad settings fail before any backbone work."""
    from .criteria import CRITERIA
    from .operating_point import check_config

    check_config(cfg)
    CRITERIA.check(cfg.criterion, cfg.criterion_params)


def calibrate(artifact: str | Path | Artifact, data: DataConfig | TaskData | None, cfg: CalibrationConfig,
              ui: UI = SILENT, *, device: DeviceConfig | None = None, backbone: str | None = None,
              quantize: str | None = None, metric: str | None = None, criterion_params: dict | None = None,
              cache: OutputsCache | None = None) -> Calibration:
    """`eebert calibrate`: choose the operating point on validation and write calibration.json.

    Holds the artifact's writer lock from loading the exits to writing their thresholds (re-entrant),
    so the thresholds written belong to the exits that were scored. A loaded ``artifact`` is used as
    it is placed; a path is loaded, quantized if asked and placed on ``device``.
    """
    from .quantize import check_scheme, quantize_artifact

    check_calibration(cfg)
    quantize = check_scheme(quantize)
    where = resolve(device)  # a device that is not there fails before anything loads
    path = artifact.path if isinstance(artifact, Artifact) else Path(artifact)
    with artifact_lock(path, "calibrate"):
        if not isinstance(artifact, Artifact):
            artifact = quantize_artifact(load_artifact(path, backbone), quantize)  # recorded in calibration.json
            place_artifact(artifact, where, bool(quantize))
        return _calibrate(artifact, _data(artifact, data), cfg, ui, criterion_params, cache, metric)


def _calibrate(artifact: Artifact, data: TaskData, cfg: CalibrationConfig, ui: UI,
               criterion_params: dict | None, cache: OutputsCache | None, metric: str | None) -> Calibration:
    from .checks import check_validation_size
    from .curves import criteria_for_curves, split_curves
    from .operating_point import choose_operating_point
    from .report import mark_stale

    size_warning = check_validation_size(len(data.split("validation")))  # too few refused before any pass
    tagger = _tagger(artifact)
    if tagger is not None:  # per-sentence exit on a token classifier
        from .tagging.calibrate import calibrate_tagger

        if artifact.quantize:
            raise EebertError("quantized calibration serves sentence exits only", "drop --quantize for this tagger")
        cal = calibrate_tagger(artifact, data, cfg, tagger)
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
        o = split_outputs(artifact, data, "validation", ui=ui, deployed_logits=shipped, cache=cache)
        shipped = o.deployed_logits  # one pass of the shipped model serves every gate threshold
        return o

    outputs, cal = choose_operating_point(outputs_at, [None] if gates is None else list(cfg.gate_thresholds),
                                          cfg, criterion_params, artifact)
    if gates is not None:
        gates.threshold = cal.gate_threshold
    cal.quantize = artifact.quantize
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


# -- benchmark -------------------------------------------------------------------------------------------

def benchmark(artifact: str | Path | EarlyExitModel, data: DataConfig | TaskData | None, cfg: BenchmarkConfig,
              ui: UI = SILENT, *, device: DeviceConfig | None = None, backbone: str | None = None,
              cache: OutputsCache | None = None, write: bool = True) -> dict:
    """`eebert benchmark`: the early-exit model against the deployed model, static truncation and the
    oracle on ``cfg.split``; report.json / report.md written into the artifact unless ``write`` is off."""
    from .benchmark import run_benchmark
    from .report import write_report

    resolve(device)  # a device that is not there fails before anything loads
    path = artifact.artifact.path if isinstance(artifact, EarlyExitModel) else Path(artifact)
    with artifact_lock(path, "benchmark"):  # the calibration the report describes cannot change meanwhile
        tagger = None if isinstance(artifact, EarlyExitModel) else _tagger(path)
        if tagger is not None:
            from .tagging.benchmark import run_tag_benchmark

            art = load_artifact(path, backbone)
            place_artifact(art, resolve(device), False)
            report = run_tag_benchmark(art, _data(art, data), cfg, tagger, ui)
            if write:
                write_report(path, report)
            return report
        model = artifact if isinstance(artifact, EarlyExitModel) else EarlyExitModel.from_artifact(path, backbone, device)
        report = run_benchmark(model, _data(model.artifact, data), cfg, ui, cache=cache)
        if write:
            write_report(path, report)
    return report


# -- export ----------------------------------------------------------------------------------------------

def export(artifact: str | Path, out: str | Path | None = None, quantize: str | None = None,
           backbone: str | None = None) -> dict:
    """`eebert export`: ONNX segment graphs (+ the deployed model) for onnxruntime."""
    from .onnx_export import export as export_onnx

    if _tagger(artifact) is not None:
        raise EebertError("ONNX export serves sentence classifiers so far, not taggers",
                          f"tag texts with `eebert predict {artifact} TEXT ...`")

    return export_onnx(artifact, out, quantize, backbone)


# -- predict ---------------------------------------------------------------------------------------------

def predict(artifact: str | Path, texts: list[str] | None = None, *, input_file: Path | None = None,
            output: Path | None = None, overwrite: bool = False, text_column: str = "text",
            pair_column: str | None = None, batch_size: int = 1, backbone: str | None = None,
            device: DeviceConfig | None = None, ui: UI = SILENT) -> dict:
    """`eebert predict`: texts, a file printed whole, or a file streamed to ``output``.

    Returns ``{"rows": [...]}`` (texts, or an input file without output) or the streaming summary
    (``output``; with the ray executor, a folder of parquet parts).
    """
    from .predict_file import check_paths, predict_rows, predict_to_file, rows_of

    if batch_size < 1:
        raise EebertError(f"--batch-size must be at least 1, got {batch_size}", "for example --batch-size 32")
    if device is not None and device.engine == "ray":  # an actor pool over a parquet file or folder
        from .ray_engine import predict_ray

        return predict_ray(artifact, input_file, output, device, text_column, pair_column, batch_size, backbone, ui)
    resolve(device)  # a device that is not there fails before anything loads
    texts = list(texts or [])
    if output is not None and (input_file is None or texts):
        raise EebertError("--output writes the predictions of an --input file", "give --input FILE, not texts")
    if input_file is not None:
        check_paths(input_file, output, overwrite)
    elif not texts:
        raise EebertError("nothing to classify", "pass texts as arguments or --input FILE")
    if _tagger(artifact) is not None:
        from .tagging.runtime import Tagger

        if input_file is not None:
            raise EebertError("predict --input serves sentence classifiers so far",
                              "pass the texts to tag as arguments")
        tagger = Tagger.from_artifact(artifact, backbone)
        place_artifact(tagger.artifact, resolve(device), False)
        return {"rows": tagger.predict(texts, batch_size), "num_layers": tagger.num_layers}
    model = EarlyExitModel.from_artifact(artifact, backbone, device)
    if output is not None:
        return predict_to_file(model, input_file, output, text_column, pair_column, batch_size, ui)
    rows = rows_of(0, model.predict(texts, None, batch_size), texts) if texts else []
    if input_file is not None:
        for chunk in predict_rows(model, input_file, text_column, pair_column, batch_size, ui, keep_text=True):
            rows += chunk
    return {"rows": rows, "num_layers": model.num_layers}


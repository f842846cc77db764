"""Ray as an executor for the heavy passes (optional extra ``ray``: ``pip install 'eebert[ray]'``).

- ``eebert attach ... --executor ray``: the backbone pass over the training split
  is sharded by feature-cache chunk over a pool of Ray actors, each holding the
  backbone; the driver writes what they send back into the feature cache
  (resumable as ever) and exit training reads it on one device as usual.
- ``eebert predict ART --input PARQUET --output DIR --executor ray``: Ray Data
  ``map_batches`` over an actor pool of early-exit models (or taggers); the driver writes the
  ordered stream as ``DIR/part-NNNNNN.parquet`` (input order): the prediction columns under the
  names the local executor writes (``label``, ``exit_layer``, ``probs``; a tagger's
  ``exit_layer``, ``entities``, ``tokens``), then the input's columns as ``input_<name>``
  (an evaluation file's own ``label`` never collides with the prediction's).

Workers load the checkpoint from the path the driver uses and check its sha256,
so on a cluster that path must be on a shared file system (or the same image).
One GPU per actor where the cluster has GPUs, one CPU otherwise.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from ..model.device import resolve

from ..model.device_config import DeviceConfig
from ..core.errors import EebertError


#: seconds a cluster address gets to accept a connection
CONNECT_TIMEOUT = 5.0


def _probe(address: str, source: str = "--ray-address") -> None:
    """A cluster address that does not answer fails in seconds, not after Ray's retries (or never)."""
    if address in ("auto", "local"):
        return
    other = "unset RAY_ADDRESS" if source == "RAY_ADDRESS" else "leave --ray-address empty"
    host_port = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise EebertError(f"{source} {address!r} is not HOST:PORT",
                          f"for example ray://head:10001 or head:6379, or {other} for a local Ray")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as e:
        raise EebertError(f"no Ray cluster answers at {address} (from {source}: {e.strerror or e})",
                          f"check the address (`ray status` on the head node), or {other} for a local Ray") from None


def _address(cfg: DeviceConfig) -> tuple[str, str]:
    """(address, where it came from): ray.init reads RAY_ADDRESS itself when none is given, and waits on it
    without end, so eebert reads and probes it too."""
    if cfg.ray_address:
        return cfg.ray_address, "--ray-address"
    return os.environ.get("RAY_ADDRESS", ""), "RAY_ADDRESS"


def check_cluster(cfg: DeviceConfig) -> None:
    """Ray installed and the cluster asked for answering: checked before the data and the model load
    (a socket connect, not Ray's import, which takes seconds)."""
    import importlib.util

    running = sys.modules.get("ray")
    if running is not None and running.is_initialized():  # connect() uses the running Ray as it is
        return
    if importlib.util.find_spec("ray") is None:
        raise EebertError("--executor ray needs Ray", "pip install 'eebert[ray]'")
    address, source = _address(cfg)
    if address:
        _probe(address, source)


def connect(cfg: DeviceConfig):
    """The ``ray`` module, initialised: the running Ray if there is one, the cluster asked for, else a local one."""
    try:
        import ray
    except ImportError:
        raise EebertError("--executor ray needs Ray", "pip install 'eebert[ray]'") from None
    if ray.is_initialized():
        return ray
    address, source = _address(cfg)
    if address:
        _probe(address, source)  # again: a library caller may not have run check_cluster
    try:
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        raise EebertError(f"cannot join Ray at {address or 'a new local instance'}: {str(e).splitlines()[0]}",
                          f"check {source}, or leave it empty for a local Ray") from None
    return ray


def _pool_shape(ray, cfg: DeviceConfig) -> tuple[int, float]:
    """(actors, GPUs per actor): one per GPU when the cluster has GPUs and the device allows, else one per
    CPU but one."""
    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    if gpus and cfg.device != "cpu":
        return gpus, 1.0
    # one CPU stays free for Ray Data's read and write tasks: a pool holding every CPU starves them
    return max(1, int(res.get("CPU", 1)) - 1), 0.0


def _worker_device(cfg: DeviceConfig, gpus: float) -> DeviceConfig:
    """What each actor resolves on its own machine: its GPU if it was given one, else the CPU.

    Ray shows an actor holding one GPU only that GPU (CUDA_VISIBLE_DEVICES), as index 0:
    ``cuda:N`` on the driver therefore means "a GPU" on a worker, and becomes ``cuda``.
    """
    if gpus:
        return DeviceConfig(device="cuda", dtype=cfg.dtype)
    if cfg.device not in ("auto", "cpu"):
        raise EebertError(f"--device {cfg.device} with --executor ray: the Ray cluster has no GPUs",
                          "use --device cpu (or auto), or join a cluster with GPUs (--ray-address)")
    return DeviceConfig(device="cpu", dtype=cfg.dtype)


def worker_placement(ray, dcfg: DeviceConfig, gpus: float) -> str:
    """Device and dtype as a worker resolves them (``Placement.describe``), asked of a worker itself:
    a GPU worker's ``auto`` dtype depends on its GPU, which the driver may not have."""

    @ray.remote(num_cpus=0 if gpus else 1, num_gpus=gpus)
    def placement(cfg: DeviceConfig) -> str:
        return resolve(cfg).describe()

    try:
        return ray.get(placement.remote(dcfg))
    except ray.exceptions.RayTaskError as e:  # e.g. a dtype the workers' GPUs lack
        raise EebertError(f"a Ray worker cannot run {dcfg.device} {dcfg.dtype}: {str(e).splitlines()[-1]}",
                          "choose another --dtype, or --device cpu") from None


def attach_runner(cfg: DeviceConfig):
    """A feature-cache runner (see ``feature_cache.cached_pass``) that computes chunks on Ray actors.

    ``run.placement`` is what the workers compute in (the feature cache's key records it)."""
    ray = connect(cfg)
    actors_n, gpus = _pool_shape(ray, cfg)
    worker_cfg = _worker_device(cfg, gpus)
    placement = worker_placement(ray, worker_cfg, gpus)

    @ray.remote(num_cpus=0 if gpus else 1, num_gpus=gpus)
    class BackbonePass:
        def __init__(self, path: str, sha256: str, dcfg: DeviceConfig):
            from ..model.checkpoint import load_deployed
            from ..model.device import place_model

            self.deployed = load_deployed(path)
            if self.deployed.sha256 != sha256:
                raise EebertError(f"the checkpoint at {path} on a Ray worker differs from the driver's",
                                  "give every node the same checkpoint (a shared file system)")
            place_model(self.deployed.model, resolve(dcfg))

        def compute(self, texts, pairs, plan):
            from ..data import Split
            from ..model.feature_cache import compute_chunk

            return compute_chunk(self.deployed, Split.from_lists(texts, pairs), plan)

    def run(deployed, split, plan, chunks, indices):
        from ray.util import ActorPool

        if not indices:
            return
        n = min(actors_n, len(indices))
        pool = ActorPool([BackbonePass.remote(str(deployed.path), deployed.sha256, worker_cfg) for _ in range(n)])

        def submit(actor, i):
            a, b = chunks[i]
            rows = split.dataset[a:b]  # this chunk's rows only: the driver never holds every text
            return actor.compute.remote(rows[split.text_column], rows[split.pair_column] if split.pair_column else None,
                                        plan)

        # results stream back as workers finish; each is written to the cache at once
        try:
            yield from zip(indices, pool.map(submit, indices))
        except ray.exceptions.RayActorError as e:
            raise EebertError(f"a Ray worker failed: {str(e).splitlines()[0]}", "see the Ray logs") from None

    run.placement = placement
    return run


class _Predictor:
    """One actor's early-exit model (a tagger's artifact: its tagger); a batch of input rows -> the rows
    plus their predictions."""

    def __init__(self, artifact: str, backbone: str | None, dcfg: DeviceConfig, text_column: str,
                 pair_column: str | None, batch_size: int):
        from ..model.tagger_runtime import Tagger
        from .predict_file import load_predictor

        self.model = load_predictor(artifact, backbone, dcfg, pair_column)
        self.tags = isinstance(self.model, Tagger)
        self.text, self.pair, self.batch_size = text_column, pair_column, batch_size

    def __call__(self, batch):
        """A pyarrow Table in; the prediction columns (a classifier's ``prediction_row``, a tagger's
        ``exit_layer``, ``entities``, ``tokens``), then the input's as ``input_<name>``, out."""
        import pyarrow as pa

        from ..model.runtime import prediction_row
        from .predict_file import answer_rows, tag_schema

        texts = batch.column(self.text).to_pylist()  # checked by the driver: every value is a string
        if self.tags:
            schema = tag_schema(row=False)
            rows = answer_rows(self.model, 0, texts, None, self.batch_size)
            cols = {k: pa.array([r[k] for r in rows], type=schema.field(k).type) for k in schema.names}
        else:
            pairs = batch.column(self.pair).to_pylist() if self.pair else None
            rows = [prediction_row(p) for p in self.model.predict(texts, pairs, self.batch_size)]
            cols = {k: pa.array([r[k] for r in rows]) for k in (list(rows[0]) if rows else [])}
        return pa.table({**cols, **{INPUT_PREFIX + name: batch.column(name) for name in batch.column_names}})


#: what the input's columns are called in Ray's output, so that they never collide with the predictions
INPUT_PREFIX = "input_"


def input_files(input_path: Path) -> list[Path]:
    """The parquet files a local ``--input`` names (a file, or a folder of them), checked readable."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = Path(input_path)
    if p.is_file() and p.suffix.lower() != ".parquet":
        raise EebertError(f"--executor ray reads parquet, and {p} is a {p.suffix.lstrip('.').upper() or 'suffix-less'} "
                          "file", "convert it to parquet, or drop --executor ray (the local executor streams "
                          "CSV/TSV/JSONL/parquet)")
    found = [p] if p.is_file() else sorted(p.glob("*.parquet"))
    if not found:
        raise EebertError(f"{p} holds no .parquet files", "give a parquet file or a folder of them")
    for f in found:
        try:
            pq.read_schema(f)
        except (pa.ArrowInvalid, OSError) as e:
            raise EebertError(f"{f} is not a readable parquet file ({str(e).splitlines()[0]})",
                              "re-write it as parquet (e.g. pandas.DataFrame.to_parquet)") from None
    return found


def check_input(files: list[Path], text_column: str, pair_column: str | None) -> None:
    """Columns present and every text a string, before any worker starts (a batch of rows at a time)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..data.rows import check_text

    start = 0
    for f in files:
        pf = pq.ParquetFile(f)
        cols = [c for c in (text_column, pair_column) if c]
        missing = [c for c in cols if c not in pf.schema_arrow.names]
        if missing:
            raise EebertError(f"{f} has no {missing[0]!r} column (columns: {', '.join(pf.schema_arrow.names)})",
                              "name it with --text-column/--pair-column")
        for batch in pf.iter_batches(batch_size=65536, columns=cols):
            table = pa.Table.from_batches([batch])
            for col, what in ((text_column, "text"), (pair_column, "pair")):
                if col:
                    check_text(table, col, what, str(f), offset=start)
            start += batch.num_rows


def predict_ray(artifact: Path, input_path: Path | None, output: Path | None, cfg: DeviceConfig, text_column: str,
                pair_column: str | None, batch_size: int, backbone: str | None, ui) -> dict:
    """Predict a parquet file or folder into ``output`` on a Ray actor pool; the folder appears only when complete."""
    if input_path is None or output is None:
        raise EebertError("--executor ray reads --input PARQUET and writes --output DIR",
                          "for example --input rows.parquet --output predictions/")
    if not Path(input_path).exists() and "://" not in str(input_path):
        raise EebertError(f"input not found: {input_path}", "give a parquet file or a folder of them")
    if Path(output).exists():
        raise EebertError(f"{output} already exists", "choose a new --output folder (eebert never overwrites it)")
    if Path(output).suffix.lower() in (".jsonl", ".json", ".csv", ".tsv"):
        raise EebertError(f"--executor ray writes a folder of parquet parts, not a {Path(output).suffix} file: {output}",
                          "name a folder, e.g. --output predictions/, or drop --executor ray to write one file")
    from ..core.atomic import check_writable

    if "://" not in str(input_path):
        check_input(input_files(Path(input_path)), text_column, pair_column)
    check_writable(Path(output).parent, f"--output {output}")
    ray = connect(cfg)
    from ray.data import DataContext

    # Ray keeps block order through the pipeline; which write task gets which block it does not
    # (a part named by task index came out of order on CI), so the driver writes the ordered stream.
    DataContext.get_current().execution_options.preserve_order = True
    actors, gpus = _pool_shape(ray, cfg)
    ds = ray.data.read_parquet(str(input_path))
    out = ds.map_batches(_Predictor, fn_constructor_args=(str(artifact), backbone, _worker_device(cfg, gpus),
                                                          text_column, pair_column, batch_size),
                         batch_size=256, batch_format="pyarrow", concurrency=actors, num_gpus=gpus,
                         num_cpus=0 if gpus else 1)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.tmp-"))
    try:
        ui.log(f"predicting {input_path} on {actors} Ray actors ({'GPU' if gpus else 'CPU'})")
        rows = write_parts(out.iter_batches(batch_size=None, batch_format="pyarrow"), tmp)
        os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"output": str(output), "rows": rows, "workers": actors, "gpus_per_worker": gpus}


#: rows per output part file (a part is one parquet file of many row groups)
ROWS_PER_PART = 1_000_000


def write_parts(tables, folder: Path, rows_per_part: int = ROWS_PER_PART) -> int:
    """Write pyarrow tables, in the order given, as ``folder/part-NNNNNN.parquet``; returns the row count.

    Every part has the first table's schema (a block whose input column is all null casts to it)."""
    import pyarrow.parquet as pq

    writer, schema, part, in_part, rows = None, None, 0, 0, 0
    try:
        for table in tables:
            if schema is None:
                schema = table.schema
            table = table.cast(schema)
            while table.num_rows:
                if writer is None:
                    writer = pq.ParquetWriter(folder / f"part-{part:06}.parquet", schema)
                piece = table.slice(0, rows_per_part - in_part)
                writer.write_table(piece)
                in_part += piece.num_rows
                rows += piece.num_rows
                table = table.slice(piece.num_rows)
                if in_part == rows_per_part:
                    writer.close()
                    writer, part, in_part = None, part + 1, 0
    finally:
        if writer is not None:
            writer.close()
    return rows


def read_predictions(folder: str | Path):
    """The rows ``predict_ray`` wrote, in input order (a pyarrow Table)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted(Path(folder).glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in parts]) if parts else pa.table({})

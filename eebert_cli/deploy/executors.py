"""Executors: where the heavy passes run, registered by name (``--executor``, recipes' ``[device] executor``).

An executor runs the attach step's backbone pass over the training split and
``predict --input FILE --output OUT`` over a file of any size. ``local`` does both in
this process (streamed, memory flat); ``ray`` shards them over Ray workers
(``deploy/ray_executor.py``). The model itself runs through a runtime
(``runtimes.py``) wherever the executor puts it. A new executor is a class here
with ``@EXECUTORS.register("name")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from ..model.device_config import DeviceConfig
from ..core.errors import EebertError
from ..core.registry import Registry
from ..core.ui import SILENT, UI


class Executor:
    """This process (the default): attach's backbone pass and a file's predictions run here.

    Other executors subclass it and override what they run elsewhere."""

    #: whether texts given on the command line (and files printed whole) can be answered by it
    in_process: ClassVar[bool] = True
    #: whether it joins the cluster ``--ray-address`` names (else that flag is refused, not ignored)
    joins_cluster: ClassVar[bool] = False

    def check(self, device: DeviceConfig) -> None:
        """Refuse, in milliseconds and before any data or weights load, what this executor cannot run on."""

    def attach_runner(self, device: DeviceConfig):
        """What computes the attach pass's features (None: this process, see ``feature_cache.attach_pass``)."""
        return None

    def predict_file(self, artifact: str | Path, input_file: Path | None, output: Path | None,
                     device: DeviceConfig | None, text_column: str, pair_column: str | None, batch_size: int,
                     backbone: str | None, overwrite: bool, ui: UI = SILENT) -> dict:
        """``input_file`` streamed through the early-exit model into ``output``; a summary."""
        from ..model.device import resolve
        from .predict_file import check_paths, check_rows, load_predictor, predict_to_file

        resolve(device)  # a device that is not there fails before anything loads
        check_paths(input_file, output, overwrite)
        check_rows(input_file, text_column, pair_column, ui)  # a bad row anywhere: before the model loads
        model = load_predictor(artifact, backbone, device, pair_column)  # a tagger's artifact: its tagger
        return predict_to_file(model, input_file, output, text_column, pair_column, batch_size, ui)


EXECUTORS: Registry[type[Executor]] = Registry("executor")
EXECUTORS.register("local")(Executor)


@EXECUTORS.register("ray")
class RayExecutor(Executor):
    """Ray Data actor pools, on a local Ray or a cluster (``--ray-address``); optional extra ``ray``."""

    in_process = False
    joins_cluster = True

    def check(self, device: DeviceConfig) -> None:
        from .ray_executor import check_cluster

        check_cluster(device)

    def attach_runner(self, device: DeviceConfig):
        from .ray_executor import attach_runner

        return attach_runner(device)

    def predict_file(self, artifact, input_file, output, device, text_column, pair_column, batch_size, backbone,
                     overwrite, ui=SILENT) -> dict:
        from ..model.tagger_runtime import tagger_task
        from .predict_file import check_tagger_columns
        from .ray_executor import predict_ray

        if tagger_task(artifact) is not None:
            check_tagger_columns(pair_column)  # on the driver: a worker's error would come back as a traceback
        return predict_ray(artifact, input_file, output, device, text_column, pair_column, batch_size, backbone, ui)


def executor_of(device: DeviceConfig | None) -> Executor:
    """The executor a device config names (an unknown name: one line with the closest); its ``check``
    is the caller's to run before the long work."""
    device = device or DeviceConfig()
    cls = EXECUTORS.get(device.executor)
    if device.ray_address and not cls.joins_cluster:
        raise EebertError(f"--ray-address names a cluster, which --executor {device.executor} does not use",
                          "add --executor ray, or drop --ray-address")
    return cls()

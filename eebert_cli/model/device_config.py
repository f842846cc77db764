"""`DeviceConfig`: where and in which precision the backbone runs, as flags and recipes give it.

Kept apart from ``device.py`` (which resolves it with torch) so the CLI parses its flags without
loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
DTYPE_NAMES = ("float32", "float16", "bfloat16")


@dataclass
class DeviceConfig:
    """Device and precision of the backbone pass (attach, calibrate, benchmark, predict)."""

    device: str = field(default="auto", metadata={"help": "auto (CUDA if present, else CPU), cpu, cuda, cuda:N or mps."})
    dtype: str = field(default="auto", metadata={"help": "Backbone precision: auto (float32 on CPU, bfloat16 or float16 on GPU), float32, float16, bfloat16. Exits stay float32."})
    executor: str = field(default="local", metadata={"help": "Where the heavy passes run: local, or ray (attach shards its backbone pass and predict --output its rows over Ray workers); see `eebert list`."})
    ray_address: str = field(default="", metadata={"help": "Ray cluster to join with --executor ray (e.g. ray://head:10001 or auto); empty = start a local Ray."})

    #: keys recipes used before the rename, read as the new ones (``engine`` meant the executor here)
    RENAMED: ClassVar[dict[str, str]] = {"engine": "executor"}

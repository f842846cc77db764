"""`eebert serve` settings: one small dataclass, its help feeding the CLI."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import ClassVar

from ...core.checks import MAX_THREADS, validate
from ...core.errors import EebertError
#: how a multi-worker server hands its settings to the worker processes uvicorn spawns
ENV = "EEBERT_SERVE_CONFIG"


@dataclass
class ServeConfig:
    """How `eebert serve` runs: what it serves, how it batches, what it refuses."""

    artifact: str = field(default="", metadata={"help": "Calibrated artifact directory."})
    host: str = field(default="127.0.0.1", metadata={"help": "Address to bind (loopback unless told otherwise)."})
    port: int = field(default=8000, metadata={"help": "TCP port (0 = any free port).", "min": 0, "max": 65535,
                                              "range_hint": "for example --port 8000"})
    runtime: str = field(default="pytorch", metadata={"help": "What runs the model: pytorch, or onnxruntime (needs `eebert export` first); see runtimes.py."})
    onnx_dir: str = field(default="", metadata={"help": "ONNX export for --runtime onnxruntime (default ARTIFACT/onnx)."})
    ort_pool: str = field(default="per-session", metadata={"help": "ONNX Runtime's threads in each worker: per-session (pools that do not spin; safe on shared cores) or shared (one spinning pool, ORT's own default; faster at batch 1 on cores nothing else uses)."})
    device: str = field(default="auto", metadata={"help": "Where the model runs: auto (CUDA if present, else CPU), cpu, cuda, cuda:N or mps."})
    dtype: str = field(default="auto", metadata={"help": "Backbone precision: auto (float32 on CPU, bfloat16 or float16 on GPU), float32, float16, bfloat16."})
    threads: int = field(default=0, metadata={"help": "torch/onnxruntime threads per worker (0 = cores / workers, less one for the event loop).", "min": 0, "max": MAX_THREADS, "range_hint": "0 (the default) shares the cores among the workers"})
    deployed: bool = field(default=False, metadata={"help": "Serve the deployed model (full backbone and head) instead of the early-exit one."})
    backbone: str = field(default="", metadata={"help": "Backbone checkpoint, if it moved since attach (hash-checked)."})
    max_batch: int = field(default=32, metadata={"help": "Most texts run through the model in one batch.", "min": 1})
    max_wait_ms: float = field(default=5.0, metadata={"help": "Longest a text waits for others to join its batch.", "min": 0})
    max_queue: int = field(default=256, metadata={"help": "Texts that may wait for the model; beyond that requests get 429.", "min": 1})
    max_request_texts: int = field(default=64, metadata={"help": "Most texts in one request (more: 413).", "min": 1})
    max_text_chars: int = field(default=10_000, metadata={"help": "Longest text or pair member in characters (longer: 422).", "min": 1})
    max_body_bytes: int = field(default=1 << 20, metadata={"help": "Largest request body in bytes (larger: 413).", "min": 1})
    api_key_env: str = field(default="", metadata={"help": "Environment variable holding a bearer token that requests must send (empty = no auth)."})
    workers: int = field(default=1, metadata={"help": "Server processes, each loading its own copy of the model (see docs/serving.md).", "min": 1})
    shutdown_timeout_s: float = field(default=30.0, metadata={"help": "On SIGTERM/SIGINT, how long in-flight requests get to finish.", "min": 0})

    #: keys from before the rename, read as the new ones
    RENAMED: ClassVar[dict[str, str]] = {"engine": "runtime"}

    def check(self) -> "ServeConfig":
        """Reject bad values with one line each, before anything is loaded."""
        # numbers first, by the ranges declared above (types, NaN and infinity too: inf would hold every
        # request): they need no torch, so a bad one is refused at once
        validate(self, "", flag_style=True)
        if self.max_queue < self.max_request_texts:
            raise EebertError(f"--max-queue ({self.max_queue}) is below --max-request-texts "
                              f"({self.max_request_texts}): a full-size request could never be queued",
                              "raise --max-queue or lower --max-request-texts")
        from ..runtimes import RUNTIMES

        if RUNTIMES.get(self.runtime).host_inputs and self.device not in ("auto", "cpu"):  # unknown: one line
            raise EebertError(f"--runtime {self.runtime} serves on the CPU, not --device {self.device}",
                              "drop --device, or serve with --runtime pytorch on the GPU")
        if RUNTIMES.get(self.runtime).host_inputs and self.dtype not in ("auto", "float32"):  # it was ignored
            raise EebertError(f"--runtime {self.runtime} runs the exported graphs at their own precision (float32, "
                              f"or int8 from `eebert export --quantize int8`), not --dtype {self.dtype}",
                              "drop --dtype, or serve with --runtime pytorch")
        self.placement()  # a device or dtype that is not there fails before anything loads
        from ..onnx_runtime import check_pool

        check_pool(self.ort_pool, self.runtime, self.onnx_dir)
        self.api_key()
        return self

    def placement(self):
        """Where the model runs (device.py); a runtime that reads host arrays (onnxruntime) runs on the CPU."""
        from ...model.device import resolve
        from ...model.device_config import DeviceConfig
        from ..runtimes import RUNTIMES

        return resolve(DeviceConfig("cpu" if RUNTIMES.get(self.runtime).host_inputs else self.device, self.dtype))

    def api_key(self) -> str | None:
        """The bearer token from ``api_key_env``, or None when auth is off."""
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env, "")
        if not key:
            raise EebertError(f"--api-key-env names {self.api_key_env}, which is unset or empty",
                              f"export {self.api_key_env}=<token> before starting the server")
        return key

    def torch_threads(self) -> int:
        """Threads per worker unless set: its share of the cores, less one for the event loop.

        The loop parses HTTP while the model runs; an intra-op thread it preempts stalls the whole
        operator at its barrier, which on a small or shared machine costs more than the thread gains.
        """
        share = max(1, (os.cpu_count() or 1) // self.workers)
        return self.threads or max(1, share - 1)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> "ServeConfig":
        raw = os.environ.get(ENV)
        if not raw:
            raise EebertError(f"{ENV} is not set", "start workers through `eebert serve`")
        return cls(**json.loads(raw))

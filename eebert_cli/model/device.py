"""Where the backbone runs and in which precision: one DeviceConfig used by every command.

The artifact stays device-neutral: exits are trained and saved in float32 and
moved to the chosen device when loaded. Only the frozen backbone pass runs in
``dtype``; exits always compute in float32 (``exits.reduce`` hands them fp32).
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..core.errors import EebertError
from .device_config import DEVICES, DTYPE_NAMES, DeviceConfig

DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}


def resolve_device(name: str) -> torch.device:
    """``--device`` -> a torch.device that exists here, or one line saying why not."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise EebertError("--device mps: this machine has no usable Apple GPU (MPS)", "use --device cpu or auto")
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        index = name.partition(":")[2]
        if index and not index.isdigit():
            raise EebertError(f"--device {name}: the CUDA index must be a number", "for example --device cuda:0")
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise EebertError(f"--device {name}: no CUDA device is available (torch {torch.__version__}, {build})",
                              "use --device cpu (or auto, which falls back to the CPU)")
        if index and int(index) >= torch.cuda.device_count():
            raise EebertError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)",
                              f"choose cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        return torch.device(name)
    raise EebertError(f"unknown device {name!r}", f"choose one of {', '.join(DEVICES)}")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``--dtype`` -> a dtype the device can run the backbone in (probed, not assumed)."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.type == "mps" else torch.float32
    if name not in DTYPES:
        raise EebertError(f"unknown dtype {name!r}", f"choose one of auto, {', '.join(DTYPES)}")
    dtype = DTYPES[name]
    if dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise EebertError(f"--dtype bfloat16: {torch.cuda.get_device_name(device)} has no bfloat16 support",
                          "use --dtype float16 (or auto)")
    if dtype is not torch.float32:
        try:  # the ops a transformer layer needs, in this dtype on this device
            x = torch.ones(2, 4, dtype=dtype, device=device)
            torch.nn.functional.layer_norm(torch.softmax(x @ x.T, -1) @ x, (4,))
        except (RuntimeError, TypeError) as e:
            raise EebertError(f"--dtype {name} is not supported on {device} ({str(e).splitlines()[0]})",
                              "use --dtype float32 (or auto)") from None
    return dtype


@dataclass(frozen=True)
class Placement:
    """A resolved DeviceConfig."""

    device: torch.device
    dtype: torch.dtype

    def describe(self) -> str:
        return f"{self.device} {self.dtype_name}"

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def record(self) -> dict:
        """What a recorded result (report, calibration, cache key) says it was computed in."""
        return {"device": str(self.device), "dtype": self.dtype_name}


def placement_of(module: torch.nn.Module) -> Placement:
    """Where a (placed) model computes: its parameters' device and floating dtype."""
    params = list(module.parameters())
    floats = [p.dtype for p in params if p.is_floating_point()]
    return Placement(params[0].device if params else torch.device("cpu"), floats[0] if floats else torch.float32)


def resolve(cfg: DeviceConfig | None) -> Placement:
    """Check a DeviceConfig before any long work starts."""
    cfg = cfg or DeviceConfig()
    device = resolve_device(cfg.device)
    return Placement(device, resolve_dtype(cfg.dtype, device))


def place_model(model: torch.nn.Module, where: Placement) -> None:
    """Move a frozen backbone (in place) to the device and precision."""
    model.to(device=where.device, dtype=where.dtype)


def module_device(module: torch.nn.Module) -> torch.device:
    return next(iter(module.parameters()), torch.empty(0)).device


def check_gates(where: Placement, has_gates: bool, training: bool = False) -> None:
    """SmartBERT gates read the hidden states in float32; training them (backbone in the loop) is CPU-only."""
    if not has_gates:
        return
    if where.dtype is not torch.float32:
        raise EebertError(f"skipping gates run in float32, not {where.describe()}", "pass --dtype float32")
    if training and where.device.type != "cpu":
        raise EebertError(f"skipping gates are trained on the CPU only, not {where.device}",
                          "attach with --device cpu; calibrate, benchmark and predict can then use the GPU")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _caches() -> dict[str, str]:
    """Cache sizes of CPU 0 by level, as Linux reports them (shared levels once); {} elsewhere."""
    out = {}
    for d in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            kind, level, size = ((d / f).read_text().strip() for f in ("type", "level", "size"))
        except OSError:
            continue
        if kind != "Instruction":
            out[f"L{level}"] = size
    return out


def machine(device: torch.device | None = None) -> dict:
    """What a wall-clock figure was measured on: the same code keeps a different share of its FLOPs speedup
    on another CPU (docs/inference.md, "Sixth pass"), so every timing records this beside its numbers."""
    out = {"cpu": _cpu_name(), "cpus": os.cpu_count(), "caches": _caches(), "torch": torch.__version__}
    try:
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    if device is not None and device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    return out


def stopwatch(device: torch.device) -> Callable[[Callable[[], object]], tuple[object, float]]:
    """``measure(fn) -> (result, seconds)``: wall clock on CPU; CUDA events around the work on CUDA.

    On CUDA kernels run asynchronously, so the clock must wait for them: events
    are recorded before and after ``fn`` and the end event synchronised, which
    times the GPU work itself and adds one sync per measurement (not per layer).
    """
    if device.type == "cuda":
        def measure(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            result = fn()
            end.record()
            end.synchronize()
            return result, start.elapsed_time(end) / 1000.0

        return measure
    sync = torch.mps.synchronize if device.type == "mps" else (lambda: None)

    def measure(fn):
        t0 = time.perf_counter()
        result = fn()
        sync()
        return result, time.perf_counter() - t0

    return measure


def place_artifact(artifact, where: Placement) -> None:
    """An artifact's backbone(s) to the device and precision, its exits to the device (float32). A backbone
    quantized at load (``artifact.quantize``) stays as it is, on the CPU."""
    check_gates(where, artifact.exits.gates is not None)
    quantized = bool(getattr(artifact, "quantize", None))
    if quantized and where.device.type != "cpu":
        raise EebertError("this artifact was calibrated on an int8-quantized backbone, which runs on the CPU only",
                          "pass --device cpu, or re-calibrate without --quantize")
    for deployed in {id(d): d for d in (artifact.deployed, artifact.reference)}.values():
        if not quantized:
            place_model(deployed.model, where)
    artifact.exits.to(where.device)


@contextlib.contextmanager
def cpu_threads(n: int, device: torch.device | None = None):
    """Run a block on ``n`` torch threads when on the CPU (0 = leave torch's setting).

    Fitting small modules (exits, the learned scorer) is a stream of small matrix
    products, where threads mostly wait on each other; restored afterwards.
    """
    before = torch.get_num_threads()
    if n > 0 and (device is None or device.type == "cpu"):
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def adamw(params, **kwargs) -> torch.optim.AdamW:
    """AdamW with torch's fused kernel where it exists (CPU, CUDA): one vectorised pass per step.

    The heads here are small, so the update is a large share of each step: for the
    demo's five exits on a 2-core CPU one fused update took 0.59 ms against 2.40 ms
    with ``foreach`` and 3.12 ms per tensor, with the same arithmetic
    (benchmarks/attach_cost.py, docs/scale.md).
    """
    params = list(params)
    tensors = [t for g in params for t in (g["params"] if isinstance(g, dict) else [g])]
    fused = bool(tensors) and all(t.device.type in ("cpu", "cuda") and t.is_floating_point() for t in tensors)
    return torch.optim.AdamW(params, fused=fused or None, **kwargs)

"""`eebert serve`: the HTTP server (docs/serving.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..core.configs import help_for
from ..deploy.serve.config import ServeConfig
from .shared import command


@command
def serve(
    artifact: Path = typer.Argument(..., help=help_for(ServeConfig, "artifact")),
    host: str = typer.Option(ServeConfig.host, help=help_for(ServeConfig, "host")),
    port: int = typer.Option(ServeConfig.port, help=help_for(ServeConfig, "port")),
    runtime: str = typer.Option(ServeConfig.runtime, "--runtime", "--engine",
                                help=help_for(ServeConfig, "runtime") + " (--engine is its old name)"),
    onnx_dir: Optional[str] = typer.Option(None, "--onnx", help=help_for(ServeConfig, "onnx_dir")),
    ort_pool: str = typer.Option(ServeConfig.ort_pool, "--ort-pool", help=help_for(ServeConfig, "ort_pool")),
    device: str = typer.Option(ServeConfig.device, help=help_for(ServeConfig, "device")),
    dtype: str = typer.Option(ServeConfig.dtype, help=help_for(ServeConfig, "dtype")),
    threads: int = typer.Option(ServeConfig.threads, help=help_for(ServeConfig, "threads")),
    deployed: bool = typer.Option(False, "--deployed", help=help_for(ServeConfig, "deployed")),
    max_batch: int = typer.Option(ServeConfig.max_batch, help=help_for(ServeConfig, "max_batch")),
    max_wait_ms: float = typer.Option(ServeConfig.max_wait_ms, help=help_for(ServeConfig, "max_wait_ms")),
    max_queue: int = typer.Option(ServeConfig.max_queue, help=help_for(ServeConfig, "max_queue")),
    max_request_texts: int = typer.Option(ServeConfig.max_request_texts, help=help_for(ServeConfig, "max_request_texts")),
    max_text_chars: int = typer.Option(ServeConfig.max_text_chars, help=help_for(ServeConfig, "max_text_chars")),
    max_body_bytes: int = typer.Option(ServeConfig.max_body_bytes, help=help_for(ServeConfig, "max_body_bytes")),
    api_key_env: Optional[str] = typer.Option(None, help=help_for(ServeConfig, "api_key_env")),
    workers: int = typer.Option(ServeConfig.workers, help=help_for(ServeConfig, "workers")),
    shutdown_timeout_s: float = typer.Option(ServeConfig.shutdown_timeout_s, help=help_for(ServeConfig, "shutdown_timeout_s")),
    backbone: Optional[str] = typer.Option(None, help=help_for(ServeConfig, "backbone")),
):
    """Serve the early-exit model over HTTP with dynamic batching (POST /v1/predict); see docs/serving.md."""
    from ..deploy.serve import serve as run_server

    run_server(ServeConfig(artifact=str(artifact), host=host, port=port, runtime=runtime, onnx_dir=onnx_dir or "",
                           ort_pool=ort_pool,
                           device=device, dtype=dtype, threads=threads, deployed=deployed, backbone=backbone or "",
                           max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue,
                           max_request_texts=max_request_texts, max_text_chars=max_text_chars,
                           max_body_bytes=max_body_bytes, api_key_env=api_key_env or "", workers=workers,
                           shutdown_timeout_s=shutdown_timeout_s))

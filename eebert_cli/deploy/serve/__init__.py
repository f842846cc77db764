"""`eebert serve`: an early-exit (or the deployed) model behind HTTP, with dynamic batching.

``config`` holds the settings, ``engine`` what runs a batch, ``batcher`` the
queue that forms batches, ``metrics`` the Prometheus side and ``app`` the
routes. :func:`serve` loads and hash-checks the model before binding, so a
bad artifact fails with one line, then hands the app to uvicorn.
"""

from __future__ import annotations

import ipaddress
import os

from ...core.errors import EebertError
from ...core.ui import err
from .config import ENV, ServeConfig


def serve(cfg: ServeConfig) -> None:
    cfg.check()
    try:
        import uvicorn

        from .app import create_app
    except ImportError:
        raise EebertError("`eebert serve` needs FastAPI, uvicorn and prometheus-client",
                          "pip install 'eebert[serve]'") from None
    from .engine import load_engine

    engine = load_engine(cfg)  # also the check for --workers N: each worker then loads its own copy
    if not _loopback(cfg.host) and not cfg.api_key_env:
        err.print(f"[yellow]warning:[/] binding {cfg.host} without --api-key-env: anyone who reaches it can use it")
    if engine.info.get("warning"):
        err.print(f"[yellow]warning:[/] {engine.info['warning']}", highlight=False)
    err.print(f"serving the {engine.kind} model {engine.model_id} ({cfg.runtime}, exits at layers "
              f"{engine.exit_layers}) on http://{cfg.host}:{cfg.port} with {cfg.workers} worker(s), "
              f"{cfg.torch_threads()} thread(s) each; max batch {cfg.max_batch}, max wait {cfg.max_wait_ms} ms",
              highlight=False)
    common = dict(host=cfg.host, port=cfg.port, log_level="info", access_log=False,
                  timeout_graceful_shutdown=cfg.shutdown_timeout_s, lifespan="on")
    if cfg.workers == 1:
        uvicorn.Server(uvicorn.Config(create_app(cfg, engine), **common)).run()
        return
    del engine
    os.environ[ENV] = cfg.to_env()
    uvicorn.run("eebert_cli.deploy.serve.app:app_from_env", factory=True, workers=cfg.workers, **common)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

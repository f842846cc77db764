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

    check_listen(cfg.host, cfg.port)  # before the model loads: a taken port or a foreign address is one line
    from ...model.artifact import read_config
    from ..runtimes import RUNTIMES

    read_config(cfg.artifact)  # not an artifact, then a missing or stale export: before the weights load
    RUNTIMES.get(cfg.runtime).check(cfg.artifact, cfg.onnx_dir, deployed=cfg.deployed)
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


def check_listen(host: str, port: int) -> None:
    """Refuse, in one line, an address this machine cannot listen on: a port something else holds, a host
    name that does not resolve or an address that is not this machine's. Binds and closes at once (uvicorn
    binds again, with the same SO_REUSEADDR, so a port left in TIME_WAIT by a restart is not refused)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise EebertError(f"--host {host}: {e.strerror}", "give an address or name of this machine, "
                                                           "for example --host 127.0.0.1 or --host 0.0.0.0") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            raise EebertError(f"cannot listen on {host}:{port}: {e.strerror}",
                              "choose another --port (or stop what holds it), or a --host of this machine") from None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

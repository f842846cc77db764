"""The HTTP surface of `eebert serve` (FastAPI): predict, health, readiness, metrics, a status page.

Every refusal is one line of JSON, ``{"error": ..., "kind": ...}``, with the
status saying why (401, 404, 413, 422, 429, 500, 503); no traceback ever leaves
the process (uvicorn logs it instead).
"""

from __future__ import annotations

import asyncio
import hmac
import html
import json
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from .batcher import Batcher, QueueFull
from .config import ServeConfig
from .engine import Engine, Row, load_engine
from .metrics import ERROR_KINDS, Metrics

REQUEST_KEYS = {"text", "pair", "texts", "pairs"}


class ApiError(Exception):
    def __init__(self, status: int, kind: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers


def parse_rows(body: bytes, cfg: ServeConfig) -> list[Row]:
    """``{"text": T[, "pair": P]}`` or ``{"texts": [...][, "pairs": [...]]}`` -> rows, or a one-line 413/422."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(422, "invalid", "the body is not JSON") from None
    if not isinstance(obj, dict):
        raise ApiError(422, "invalid", 'the body must be a JSON object with "text" or "texts"')
    unknown = sorted(set(obj) - REQUEST_KEYS)
    if unknown:
        raise ApiError(422, "invalid", f"unknown field {unknown[0]!r}; known: {', '.join(sorted(REQUEST_KEYS))}")
    if ("text" in obj) == ("texts" in obj):
        raise ApiError(422, "invalid", 'give exactly one of "text" and "texts"')
    if "text" in obj:
        if "pairs" in obj:
            raise ApiError(422, "invalid", '"pairs" goes with "texts"; with "text" use "pair"')
        texts, pairs, name = [obj["text"]], [obj.get("pair")], "text"
    else:
        if "pair" in obj:
            raise ApiError(422, "invalid", '"pair" goes with "text"; with "texts" use "pairs"')
        texts, pairs, name = obj["texts"], obj.get("pairs"), "texts"
        if not isinstance(texts, list) or not texts:
            raise ApiError(422, "invalid", '"texts" must be a non-empty list of strings')
        if len(texts) > cfg.max_request_texts:
            raise ApiError(413, "too_large", f"{len(texts)} texts in one request; the limit is {cfg.max_request_texts}")
        if pairs is None:
            pairs = [None] * len(texts)
        elif not isinstance(pairs, list) or len(pairs) != len(texts):
            raise ApiError(422, "invalid", '"pairs" must be a list as long as "texts"')
    for field_, values in ((name, texts), ("pair" if name == "text" else "pairs", pairs)):
        for i, v in enumerate(values):
            where = field_ if name == "text" else f"{field_}[{i}]"
            if v is None and field_ in ("pair", "pairs"):
                continue
            if not isinstance(v, str):
                raise ApiError(422, "invalid", f"{where} must be a string")
            if len(v) > cfg.max_text_chars:
                raise ApiError(422, "invalid", f"{where} has {len(v)} characters; the limit is {cfg.max_text_chars}")
    return list(zip(texts, pairs))


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    try:
        declared = int(request.headers.get("content-length") or 0)
    except ValueError:
        raise ApiError(422, "invalid", "Content-Length is not a number") from None
    if declared > limit:
        raise ApiError(413, "too_large", f"the body has {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "too_large", f"the body exceeds {limit} bytes")
    return bytes(body)


class Server:
    """One process's state: the engine, its batcher and its metrics."""

    def __init__(self, cfg: ServeConfig, engine: Engine):
        self.cfg, self.engine = cfg, engine
        self.key = cfg.api_key()
        self.metrics = Metrics(cfg.max_batch, engine.exit_layers)
        self.batcher = Batcher(engine.run, cfg.max_batch, cfg.max_wait_ms, cfg.max_queue,
                               on_batch=self.metrics.batch, on_depth=self.metrics.queue_depth.set)
        self.started = time.time()
        self.closing = False

    def check_auth(self, request: Request) -> None:
        if self.key is None:
            return
        got = request.headers.get("authorization", "")
        if not hmac.compare_digest(got.encode(), f"Bearer {self.key}".encode()):
            raise ApiError(401, "unauthorized", "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})

    async def predict(self, request: Request) -> Response:
        t0 = time.perf_counter()
        self.check_auth(request)
        rows = parse_rows(await read_body(request, self.cfg.max_body_bytes), self.cfg)
        if not self.engine.pairs and any(pair is not None for _, pair in rows):
            raise ApiError(422, "invalid", 'this model tags one text per row: drop "pair" / "pairs"')
        try:
            preds = await self.batcher.submit(rows)
        except QueueFull as e:
            raise ApiError(429, "queue_full", f"server busy: {e}", {"Retry-After": "1"}) from None
        e = self.engine
        self.metrics.answered(time.perf_counter() - t0, [e.exit_layer(p) for p in preds])
        body = {"model_id": e.model_id, "calibration_id": e.calibration_id, "model": e.kind,
                "labels": [e.id2label[i] for i in sorted(e.id2label)],
                "predictions": [e.answer(p) for p in preds]}
        return Response(json.dumps(body), media_type="application/json")

    def status_page(self) -> str:
        m, e, cfg = self.metrics, self.engine, self.cfg
        rows = m.value("eebert_rows_total")
        batches = m.value("eebert_batch_size_count")
        exits = "".join(f"<tr><td>{layer}</td><td>{int(m.value('eebert_exit_layer_total', {'layer': str(layer)}))}"
                        f"</td></tr>" for layer in e.exit_layers)
        facts = {"model": f"{e.kind} ({e.runtime})", "model id": e.model_id, "calibration id": e.calibration_id,
                 "artifact": e.info["artifact"], "backbone sha256": e.info["backbone_sha256"][:16] + "…",
                 "max batch / max wait": f"{cfg.max_batch} / {cfg.max_wait_ms} ms",
                 "uptime": f"{time.time() - self.started:.0f} s", "texts answered": int(rows),
                 "mean batch size": f"{rows / batches:.2f}" if batches else "-",
                 "queued now": self.batcher.depth,
                 "errors": int(sum(m.value("eebert_errors_total", {"kind": k}) for k in ERROR_KINDS)),
                 **({"warning": e.info["warning"]} if e.info.get("warning") else {})}
        facts_html = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items())
        return ("<!doctype html><html><head><meta charset='utf-8'><title>eebert serve</title>"
                "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 12px;text-align:left}</style>"
                f"</head><body><h1>eebert serve</h1><table>{facts_html}</table>"
                f"<h2>texts per exit layer</h2><table><tr><th>layer</th><th>texts</th></tr>{exits}</table>"
                "<p>POST /v1/predict · GET /healthz · /readyz · /metrics</p></body></html>")


def error(status: int, kind: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "kind": kind}, status_code=status, headers=headers)


def create_app(cfg: ServeConfig, engine: Engine | None = None) -> FastAPI:
    """The app for one process. Without ``engine`` (worker processes) it loads its own copy at startup."""
    holder: dict[str, Server] = {}
    if engine is not None:
        holder["s"] = Server(cfg, engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if "s" not in holder:
            holder["s"] = Server(cfg, await asyncio.to_thread(load_engine, cfg))
        yield
        # uvicorn calls this once in-flight requests are done (or --shutdown-timeout-s passed)
        s = holder["s"]
        s.closing = True
        await s.batcher.close()

    app = FastAPI(title="eebert serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    def server() -> Server:
        if "s" not in holder:
            raise ApiError(503, "not_ready", "the model is still loading")
        return holder["s"]

    def count(kind: str) -> None:
        if "s" in holder:
            holder["s"].metrics.errors.labels(kind).inc()

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        count(exc.kind)
        return error(exc.status, exc.kind, exc.message, exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        kind = "not_found" if exc.status_code in (404, 405) else "invalid"
        count(kind)
        return error(exc.status_code, kind, str(exc.detail).splitlines()[0] if exc.detail else "error")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        count("internal")
        return error(500, "internal", "internal error (see the server log)")

    @app.post("/v1/predict")
    async def predict(request: Request):
        return await server().predict(request)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        s = holder.get("s")
        if s is None or s.closing:
            return error(503, "not_ready", "shutting down" if s else "the model is still loading")
        return {"ready": True, "model": s.engine.kind, "runtime": s.engine.runtime, **s.engine.info}

    @app.get("/metrics")
    async def metrics(request: Request):
        s = server()
        s.check_auth(request)
        return Response(s.metrics.render(), media_type=s.metrics.content_type)

    @app.get("/", response_class=HTMLResponse)
    async def status(request: Request):
        s = server()
        s.check_auth(request)
        return HTMLResponse(s.status_page())

    return app


def app_from_env() -> FastAPI:
    """uvicorn factory for ``--workers N``: each worker process builds its app (and loads its model)."""
    return create_app(ServeConfig.from_env())

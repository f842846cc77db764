"""`eebert serve` under load: the early-exit server vs the deployed one, side by side.

    PYTHONPATH=. python benchmarks/serve.py ARTIFACT [--concurrency 1,4,16] [--requests 600] [--duration 60]
        [--device cuda --dtype bfloat16]

Starts two servers on free localhost ports (subprocesses of this checkout):
`eebert serve ARTIFACT` and `eebert serve ARTIFACT --deployed`, same batching
settings and threads. At each concurrency level C, C closed-loop clients each
send one review per request (keep-alive HTTP/1.1, reviews from the split the
artifact was attached with, cycled) until ``--requests`` are answered or
``--duration`` seconds pass, whichever comes first; the early-exit and the
deployed server take turns (the order alternates between levels), so load from
other processes hits both alike. Only one server is loaded at a time; the idle
one waits. The client is a minimal asyncio HTTP client, so it takes little of
the CPU the servers share with it. Prints throughput, p50/p99 latency, the mean
batch size each server formed (from its /metrics) and the throughput ratio at
each level as a rich table; ``--out FILE`` writes the same as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # the load never leaves this machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start(artifact: str, port: int, extra: list[str]) -> subprocess.Popen:
    # this checkout first, then whatever the caller's path held (a --target install, as on a GPU host)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    cmd = [sys.executable, "-c", "from eebert_cli.cli import main; main()", "serve", artifact,
           "--host", HOST, "--port", str(port), *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().strip()[-500:]}")
        try:
            get(url + "/readyz")
            return
        except OSError:
            time.sleep(0.25)
    raise SystemExit(f"server at {url} not ready after {timeout:.0f} s")


def metric(url: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in get(url + "/metrics").splitlines() if line.startswith(name + " "))


async def post(reader, writer, body: bytes) -> int:
    writer.write(b"POST /v1/predict HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (HOST.encode(), len(body), body))
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


async def load(port: int, bodies: list[bytes], concurrency: int, requests: int, duration: float) -> dict:
    """``concurrency`` closed-loop clients until ``requests`` are answered or ``duration`` passes."""
    latencies: list[float] = []
    failures = 0
    sent = 0
    t_end = time.perf_counter() + duration

    async def client():
        nonlocal sent, failures
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while sent < requests and time.perf_counter() < t_end:
                body = bodies[sent % len(bodies)]
                sent += 1
                t0 = time.perf_counter()
                status = await post(reader, writer, body)
                if status == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    failures += 1
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    ms = sorted(1000 * x for x in latencies)
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return {"answered": len(ms), "failed": failures, "seconds": elapsed, "throughput": len(ms) / elapsed,
            "p50_ms": q[49], "p99_ms": q[98]}


def review_bodies(artifact: str, split: str, limit: int) -> list[bytes]:
    from eebert_cli.model.artifact import read_config
    from eebert_cli.data import load_data
    from eebert_cli.scoring.outputs import data_config_of

    s = load_data(data_config_of(read_config(artifact), None)).split(split)
    pairs = s.pairs or [None] * len(s.texts)
    return [json.dumps({"text": t, **({"pair": p} if p is not None else {})}).encode()
            for t, p in list(zip(s.texts, pairs))[:limit]]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact")
    ap.add_argument("--concurrency", default="1,4,16", help="comma-separated client counts")
    ap.add_argument("--requests", type=int, default=600, help="requests per level and server (at most)")
    ap.add_argument("--duration", type=float, default=60, help="seconds per level and server (at most)")
    ap.add_argument("--warmup", type=int, default=30, help="untimed requests per server first")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5)
    ap.add_argument("--threads", type=int, default=0, help="threads per server (0 = eebert serve's default)")
    ap.add_argument("--device", default="", help="both servers' --device (empty = eebert serve's default)")
    ap.add_argument("--dtype", default="", help="both servers' --dtype (empty = eebert serve's default)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--startup-timeout", type=float, default=300)
    ap.add_argument("--out", help="also write the results as JSON here")
    args = ap.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    bodies = review_bodies(args.artifact, args.split, 2000)
    common = ["--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms),
              "--threads", str(args.threads), "--max-queue", str(max(256, 2 * max(levels)))]
    common += [x for flag in ("device", "dtype") if getattr(args, flag) for x in (f"--{flag}", getattr(args, flag))]
    servers = {}
    for name, extra in (("early exit", []), ("deployed", ["--deployed"])):
        port = free_port()
        servers[name] = (port, start(args.artifact, port, common + extra))
    con = Console(width=max(Console().width, 140))
    try:
        for name, (port, proc) in servers.items():
            wait_ready(f"http://{HOST}:{port}", proc, args.startup_timeout)
            asyncio.run(load(port, bodies, 1, args.warmup, args.duration))
        results = []
        for n, c in enumerate(levels):
            row = {"concurrency": c}
            order = list(servers) if n % 2 == 0 else list(reversed(servers))
            for name in order:
                port = servers[name][0]
                url = f"http://{HOST}:{port}"
                rows0, batches0 = metric(url, "eebert_batch_size_sum"), metric(url, "eebert_batch_size_count")
                r = asyncio.run(load(port, bodies, c, args.requests, args.duration))
                rows, batches = metric(url, "eebert_batch_size_sum") - rows0, metric(url, "eebert_batch_size_count") - batches0
                r["mean_batch"] = rows / batches if batches else 0.0
                row[name] = r
            row["throughput_ratio"] = row["early exit"]["throughput"] / row["deployed"]["throughput"]
            results.append(row)
    finally:
        for port, proc in servers.values():
            proc.send_signal(signal.SIGTERM)
        for port, proc in servers.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    report = {"artifact": args.artifact, "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg(),
              "settings": {k: v for k, v in vars(args).items() if k != "out"}, "levels": results}
    t = Table(title=f"eebert serve: early exit vs deployed ({os.cpu_count()} CPUs, load average "
                    f"{report['load_average_at_start'][0]:.1f} at start)")
    for col in ("clients", "early exit req/s", "deployed req/s", "ratio", "early exit p50 / p99 ms",
                "deployed p50 / p99 ms", "mean batch ee / dep", "failed"):
        t.add_column(col, justify="right")
    for row in results:
        e, d = row["early exit"], row["deployed"]
        t.add_row(str(row["concurrency"]), f"{e['throughput']:.1f}", f"{d['throughput']:.1f}",
                  f"{row['throughput_ratio']:.2f}x", f"{e['p50_ms']:.1f} / {e['p99_ms']:.1f}",
                  f"{d['p50_ms']:.1f} / {d['p99_ms']:.1f}", f"{e['mean_batch']:.1f} / {d['mean_batch']:.1f}",
                  str(e["failed"] + d["failed"]))
    con.print(t)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()

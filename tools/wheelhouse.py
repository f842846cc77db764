"""A folder of the wheels eebert needs on a GPU host that already has PyTorch (often air-gapped).

    python tools/wheelhouse.py --out wheelhouse --python-version 3.11 --platform manylinux_2_28_x86_64 \
        --extras serve [--exclude "torch numpy ..."]

then, on the GPU host (no index):

    pip install --no-index --find-links wheelhouse 'eebert[serve]'

1. eebert's own wheel is built from this checkout into the folder.
2. pip resolves ``eebert[EXTRAS]`` for the named Python and platform without installing
   anything (``pip install --dry-run --report``; pip reads each wheel's metadata, not the
   wheel: torch's CUDA build is never downloaded).
3. From that report, the packages eebert needs are walked from eebert down, stopping at the
   ``--exclude`` names (torch by default, with everything only torch needs), and downloaded
   with ``pip download --no-deps --only-binary=:all:`` for that Python and platform.

pip evaluates environment markers other than the Python version on this machine: build the
wheelhouse on the same OS and architecture as the GPU host (Linux x86_64 for a Linux x86_64 host).
Prints one JSON line: the wheels, their total size and what was excluded.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def python_version(text: str) -> str:
    """'3.11', '311' or 'cp311' -> '3.11'."""
    digits = text.lower().removeprefix("cp").replace(".", "")
    if not digits.isdigit() or len(digits) < 2:
        raise SystemExit(f"--python-version {text!r}: give it as 3.11 or cp311")
    return f"{digits[0]}.{digits[1:]}"


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


LEGACY = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}


def platforms(tag: str) -> list[str]:
    """A manylinux tag and every older glibc it implies (pip takes a wheel only for a tag named exactly:
    ``manylinux_2_28_x86_64`` alone misses the many wheels tagged ``manylinux_2_17``)."""
    m = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", tag)
    if not m:
        return [tag]
    glibc, arch = int(m.group(1)), m.group(2)
    tags = [f"manylinux_2_{g}_{arch}" for g in range(glibc, 4, -1)]
    return tags + [f"{LEGACY[g]}_{arch}" for g in LEGACY if g <= glibc]


def target_args(py: str, platform: str) -> list[str]:
    return ["--only-binary=:all:", *(a for t in platforms(platform) for a in ("--platform", t)),
            "--python-version", py, "--implementation", "cp", "--abi", "cp" + py.replace(".", "")]


def needed(report: dict, root: str, extras: set[str], exclude: set[str], py: str) -> dict[str, str]:
    """name -> version of every package reached from ``root[extras]`` without passing an excluded one."""
    items = {canonicalize_name(i["metadata"]["name"]): i["metadata"] for i in report["install"]}
    env = default_environment()
    env.update(python_version=py, python_full_version=py + ".0")
    out: dict[str, str] = {}
    todo = [(canonicalize_name(root), frozenset(extras))]
    seen = set()
    while todo:
        name, want = todo.pop()
        if (name, want) in seen or name in exclude:
            continue
        seen.add((name, want))
        meta = items[name]
        out[name] = meta["version"]
        for line in meta.get("requires_dist") or []:
            req = Requirement(line)
            if req.marker is not None and not any(req.marker.evaluate({**env, "extra": e})
                                                  for e in (want or {""})):
                continue
            child = canonicalize_name(req.name)
            if child not in exclude and child in items:
                todo.append((child, frozenset(req.extras)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="wheelhouse")
    ap.add_argument("--python-version", default="3.11", help="3.11 or cp311")
    ap.add_argument("--platform", default="manylinux_2_28_x86_64", help="a pip platform tag")
    ap.add_argument("--extras", default="serve", help="eebert extras, comma-separated (serve, ray, onnx)")
    ap.add_argument("--exclude", default="torch",
                    help="packages the host already has (space- or comma-separated), with what only they need")
    args = ap.parse_args()
    py = python_version(args.python_version)
    extras = {e for e in args.extras.replace(" ", ",").split(",") if e}
    exclude = {canonicalize_name(x) for x in args.exclude.replace(",", " ").split()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # eebert itself: a pure-Python wheel, built from this checkout with the build tools at hand
        # with setuptools at hand no build environment is made (nothing fetched); else pip makes one
        local = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
        pip("wheel", "-q", "--no-deps", *local, "-w", tmp, str(ROOT))
        wheel = next(Path(tmp).glob("eebert-*.whl"))
        report = Path(tmp) / "report.json"
        spec = f"eebert[{','.join(sorted(extras))}] @ {wheel.as_uri()}" if extras else str(wheel)
        pip("install", "-q", "--dry-run", "--ignore-installed", "--report", str(report), "--target",
            str(Path(tmp) / "t"), *target_args(py, args.platform), spec)
        packages = needed(json.loads(report.read_text()), "eebert", extras, exclude, py)
        packages.pop("eebert")
        pip("download", "-q", "--no-deps", "-d", str(out), *target_args(py, args.platform),
            *(f"{n}=={v}" for n, v in sorted(packages.items())))
        for old in out.glob("eebert-*.whl"):  # one eebert wheel: this checkout's
            old.unlink()
        shutil.copy2(wheel, out / wheel.name)
    wheels = sorted(out.glob("*.whl"))
    size = sum(w.stat().st_size for w in wheels)
    print(json.dumps({"wheelhouse": str(out), "python": py, "platform": args.platform, "extras": sorted(extras),
                      "excluded": sorted(exclude), "wheels": len(wheels), "mib": round(size / 2**20, 1),
                      "files": [w.name for w in wheels]}))


if __name__ == "__main__":
    main()

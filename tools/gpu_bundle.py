"""Pack what the GPU check needs on a machine with no network into one folder (under 64 MiB).

    PYTHONPATH=. python tools/gpu_bundle.py [--out gpu-bundle] [--deployed .cache/demo/minilm-rotten-tomatoes]

    gpu-bundle/
      deployed/   the demo's deployed MiniLM-L6 saved in bfloat16 (about 45 MB), tokenizer beside it
      data/       train/validation/test CSV (text,label): the demo corpus (Rotten Tomatoes) as the demo splits it
      wheels/     what eebert[serve] needs beyond the GPU image (tools/wheelhouse.py, --exclude what it has)
      run.sh      the commands to run there, from the repository root: `bash gpu-bundle/run.sh tests|check`
      manifest.json  sizes and what made them

The deployed model is built first if it is missing (examples/make_deployed_model.py,
minutes on a CPU). The folder is ignored by git; the device tool carries it (``carry``).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: what the GPU machine's image already holds (its package list); the wheels skip these and what only they need
IMAGE_HAS = "torch numpy transformers tokenizers safetensors typer rich onnxruntime pyarrow pandas prometheus-client"
LIMIT_MIB = 64  #: the device tool carries at most this much per call, working tree included

RUN_SH = r"""#!/usr/bin/env bash
# On the GPU machine, from the repository root:  bash gpu-bundle/run.sh tests   then   bash gpu-bundle/run.sh check
# Results go to $OUT (the device tool's folder that comes back), else ./gpu-check-out.
set -uo pipefail
B="$(cd "$(dirname "$0")" && pwd)"
R="${OUT:-gpu-check-out}"; mkdir -p "$R"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
# EEBERT_PYTHON: an interpreter that already has eebert's needs (a CPU dry run of this script); else
# a venv that sees the image's packages, pip adding only what is missing or too old, from the bundle, no index
PY="${EEBERT_PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x /tmp/eebert-venv/bin/python ]; then PY=/tmp/eebert-venv/bin/python
  elif [ -d /tmp/eebert-site ]; then PY=python3; export PYTHONPATH="$PWD:/tmp/eebert-site"
  else
    python3 -c 'import torch, transformers, pyarrow; print("image: torch", torch.__version__, "transformers",
      transformers.__version__, "pyarrow", pyarrow.__version__, "cuda", torch.cuda.is_available())' | tee "$R/image.txt"
    if python3 -m venv --system-site-packages /tmp/eebert-venv 2>/dev/null; then
      /tmp/eebert-venv/bin/python -m pip install -q --no-index --find-links "$B/wheels" "eebert[serve]" \
        || { echo "install from $B/wheels failed (see above)"; exit 2; }
      PY=/tmp/eebert-venv/bin/python
    else  # no venv module in the image: the bundle's wheels in a folder of their own, on the path
      rm -rf /tmp/eebert-venv
      python3 -m pip install -q --no-index --no-deps --target /tmp/eebert-site "$B"/wheels/*.whl \
        || { echo "install from $B/wheels failed (see above)"; exit 2; }
      PY=python3; export PYTHONPATH="$PWD:/tmp/eebert-site"
    fi
  fi
fi
case "${1:-check}" in
  tests)  # the cuda-marked tests: attach -> calibrate -> benchmark -> predict -> serve -> export, bf16 and fp16
    timeout 540 $PY -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda.py tests/test_device.py 2>&1 \
      | tee "$R/cuda-tests.txt" ;;
  check)  # the measured run: < 8 minutes on one H200 (no stage starts after --budget-s)
    # artifacts (hundreds of MB) stay on the machine; the JSON and the markdown table come back
    timeout 570 $PY benchmarks/gpu_check.py --bundle "$B" --out /tmp/gpu-check --budget-s 330 "${@:2}" 2>&1 \
      | tee "$R/gpu-check.txt"
    cp /tmp/gpu-check/gpu_check.json /tmp/gpu-check/gpu_check.md "$R"/
    ;;
  *) echo "usage: run.sh tests|check [gpu_check options]"; exit 2 ;;
esac
"""


def size_mib(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def tree_mib(root: Path = ROOT) -> float:
    """What the device tool carries of the repository besides ``carry``: tracked files and untracked ones git
    does not ignore."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                           check=True, capture_output=True).stdout.split(b"\0")
    return sum((root / n.decode()).stat().st_size for n in names if n and (root / n.decode()).is_file()) / 2**20


def over_limit(bundle_mib: float, tree_mib: float, limit: float = LIMIT_MIB) -> str | None:
    """Why a device call could not carry the bundle with the working tree (None: it can)."""
    if bundle_mib + tree_mib < limit:
        return None
    return (f"the bundle ({bundle_mib:.1f} MiB) and the working tree ({tree_mib:.1f} MiB) make "
            f"{bundle_mib + tree_mib:.1f} MiB: over the {limit} MiB a device call carries")


def save_bf16(src: Path, dst: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(src, local_files_only=True)
    model.to(torch.bfloat16).save_pretrained(dst)
    AutoTokenizer.from_pretrained(src, local_files_only=True).save_pretrained(dst)


def write_splits(spec: str, folder: Path) -> dict:
    from eebert_cli.data import DataConfig, load_data

    data = load_data(DataConfig(spec=spec))
    folder.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name in ("train", "validation", "test"):
        s = data.split(name)
        with open(folder / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows(zip(s.texts, s.labels))
        rows[name] = len(s)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu-bundle")
    ap.add_argument("--deployed", default=".cache/demo/minilm-rotten-tomatoes")
    ap.add_argument("--data", default="rotten-tomatoes", help="the demo corpus (its built-in split)")
    ap.add_argument("--python-version", default="3.12", help="the GPU image's Python")
    ap.add_argument("--platform", default="manylinux_2_28_x86_64")
    ap.add_argument("--image-has", default=IMAGE_HAS)
    args = ap.parse_args()
    out, deployed = Path(args.out), Path(args.deployed)
    if not (deployed / "config.json").is_file():
        print(f"building the demo's deployed model in {deployed} (minutes)", flush=True)
        subprocess.run([sys.executable, str(ROOT / "examples" / "make_deployed_model.py"), "--out", str(deployed)],
                       check=True)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_bf16(deployed, tmp / "deployed")
    rows = write_splits(args.data, tmp / "data")
    subprocess.run([sys.executable, str(ROOT / "tools" / "wheelhouse.py"), "--out", str(tmp / "wheels"),
                    "--python-version", args.python_version, "--platform", args.platform, "--extras", "serve",
                    "--exclude", args.image_has], check=True, stdout=subprocess.DEVNULL)
    (tmp / "run.sh").write_text(RUN_SH)
    parts = {p.name: round(size_mib(p), 1) for p in tmp.iterdir() if p.is_dir()}
    manifest = {"deployed_from": str(deployed.resolve()), "data": args.data, "rows": rows,
                "python": args.python_version, "platform": args.platform, "image_has": args.image_has.split(),
                "mib": parts, "total_mib": round(size_mib(tmp), 1), "tree_mib": round(tree_mib(), 1),
                "limit_mib": LIMIT_MIB}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if out.exists():  # replace only a bundle this script made (it has the manifest)
        if not (out / "manifest.json").is_file():
            raise SystemExit(f"{out} exists and is not a GPU bundle: choose another --out")
        shutil.rmtree(out)
    tmp.rename(out)
    print(json.dumps(manifest))
    why = over_limit(manifest["total_mib"], manifest["tree_mib"])
    if why:  # the device tool counts the working tree with the carried bundle
        raise SystemExit(f"{out}: {why}")


if __name__ == "__main__":
    main()

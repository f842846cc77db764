"""tools/gpu_bundle.py: what it checks before a device call (no bundle is built here: that takes minutes)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import gpu_bundle  # noqa: E402


def test_the_limit_counts_the_working_tree_with_the_bundle():
    assert gpu_bundle.over_limit(57.3, 3.2) is None
    why = gpu_bundle.over_limit(57.3, 7.0)
    assert why is not None and "64.3 MiB" in why and "working tree (7.0 MiB)" in why


def test_the_tree_is_what_git_carries(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("big/\n")
    (tmp_path / "kept.txt").write_bytes(b"x" * 2**20)  # untracked, not ignored: carried
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "ignored.bin").write_bytes(b"x" * 3 * 2**20)  # ignored: only a carry would take it
    assert abs(gpu_bundle.tree_mib(tmp_path) - (2**20 + len("big/\n")) / 2**20) < 1e-9

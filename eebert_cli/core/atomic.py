"""Atomic file writes: a temporary sibling, flushed, then renamed in, so a crash leaves the old file.

Every file eebert writes goes through here (artifacts, calibration records, reports,
caches); temporary names carry ``TMP_TAG`` so leftovers are recognisably eebert's own.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from .errors import EebertError

TMP_TAG = ".eebert-tmp-"  #: in every temporary name eebert creates, so that leftovers are recognisably its own


def _umask() -> int:
    try:  # Linux: read it without changing it (setting it, even briefly, races other threads)
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode(base: int = 0o666) -> int:
    """``base`` under the process umask: what a plain ``open()`` would have created."""
    return base & ~_umask()


def _stage(path: Path, write: Callable[[Path], None]) -> Path:
    """Write a temporary sibling of ``path`` (flushed to disk, umask mode); the caller renames it in."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TMP_TAG}")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())  # mkstemp makes 0600; the user's umask decides, as for any file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = _stage(path, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def write_text(path: Path, text: str) -> None:
    _atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


#: the suffix of a folder moved aside while a complete new one takes its place (``replace_folder``)
ASIDE = TMP_TAG + "old"


def replace_folder(new: Path, dest: Path) -> None:
    """``dest`` replaced by the complete folder ``new``: the old one moved aside, the new one renamed in, the old
    one deleted. A crash between the two renames leaves the old folder aside, where ``restore_aside`` (run by
    the next writer, see ``artifact_lock``) puts it back."""
    if not dest.exists():
        new.rename(dest)
        return
    old = dest.with_name(f".{dest.name}{ASIDE}")
    dest.rename(old)
    new.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def restore_aside(entry: Path) -> bool:
    """Put back a folder a crashed :func:`replace_folder` left aside, when nothing took its place; True if so."""
    name = entry.name
    if not (entry.is_dir() and name.startswith(".") and name.endswith(ASIDE)):
        return False
    original = entry.with_name(name[1:-len(ASIDE)])
    if original.exists():
        return False  # the new folder is in: the old one is a leftover
    entry.rename(original)
    return True


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise EebertError(f"missing {path.name} in {path.parent}", "is this an eebert artifact?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EebertError(f"{path} is not valid JSON ({getattr(e, 'msg', e)})", "re-create the artifact") from None


def check_writable(folder: Path, what: str) -> None:
    """Create ``folder`` if needed and write a probe file there: a read-only place fails before any work."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".eebert-probe-"):
            pass
    except OSError as e:
        raise EebertError(f"cannot write {what}: {folder} is not writable ({e.strerror or e})",
                          "choose a folder you can write to (read-only mounts and folders without write "
                          "permission cannot hold the output)") from None

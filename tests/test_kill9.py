"""kill -9 at random points of `attach` and `calibrate`: the previous artifact must survive whole.

Each round copies a calibrated artifact, starts the command on it in a separate process, SIGKILLs
it after a seeded random delay (within the time a full run takes) and checks that the artifact
still loads and predicts exactly as before, or, when the command finished first, that the new
state is whole (a re-attached artifact refuses its old calibration and names `eebert calibrate`).
The commands are forked from one helper process that imported eebert once, so a round costs the
command's own work, not Python's start-up. EEBERT_KILL9_ROUNDS (default 3) sets the rounds.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eebert_cli.model.artifact import CALIBRATION, load_artifact, read_json
from eebert_cli.cli import app
from eebert_cli.core.errors import EebertError
from eebert_cli.model.runtime import EarlyExitModel

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["good great movie", "awful dull plot", "the film was not very nice", "poor acting", "love it"]
ROUNDS = int(os.environ.get("EEBERT_KILL9_ROUNDS", "3"))

# Reads one JSON argument list per line, forks a child running `eebert ARGS` (output discarded),
# answers the child's pid, then its wait status. Nothing here runs torch before forking.
HELPER = r"""
import json, os, sys
import torch, transformers  # noqa: F401
from transformers.models.bert import modeling_bert  # noqa: F401
from eebert_cli.cli import main
import eebert_cli.train.attach, eebert_cli.scoring.operating_point, eebert_cli.model.runtime  # noqa: F401
print("ready", flush=True)
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        sys.argv = ["eebert", *json.loads(line)]
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        os._exit(code)
    print(pid, flush=True)
    print(os.waitpid(pid, 0)[1], flush=True)
"""


@pytest.fixture(scope="module")
def forker():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "EEBERT_LOCK_WAIT": "10"}
    proc = subprocess.Popen([sys.executable, "-c", HELPER], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"

    def start(args) -> tuple[int, callable]:
        proc.stdin.write(json.dumps([str(a) for a in args]) + "\n")
        proc.stdin.flush()
        pid = int(proc.stdout.readline())
        return pid, lambda: int(proc.stdout.readline())

    yield start
    proc.stdin.close()
    proc.wait(timeout=30)


def predictions(path: Path) -> list[tuple]:
    return [(p.label, p.exit_layer, p.probs) for p in EarlyExitModel.from_artifact(path).predict(TEXTS)]


@pytest.fixture(scope="module")
def baseline(tiny_ckpt, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("kill9") / "art"
    runner = CliRunner()
    r = runner.invoke(app, ["attach", str(tiny_ckpt), "--data", str(tiny_data), "--out", str(out), "--epochs", "3"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["calibrate", str(out), "--target-speedup", "1.3"])
    assert r.exit_code == 0, r.output
    return out, predictions(out)


def timed_run(start, args) -> float:
    t0 = time.monotonic()
    _, status = start(args)
    assert status() == 0, args
    return time.monotonic() - t0


def check_whole(art: Path, art0: Path, before: list[tuple], command: str) -> None:
    """Either the old state, predicting exactly as before, or the command's complete new state."""
    load_artifact(art)  # never half an artifact, whatever the moment of the kill
    name = "eebert_config.json" if command == "attach" else CALIBRATION
    if (art / name).read_bytes() == (art0 / name).read_bytes():
        assert predictions(art) == before
    elif command == "attach":  # new exits: the old thresholds must be refused, naming the fix
        with pytest.raises(EebertError) as e:
            EarlyExitModel.from_artifact(art)
        assert "eebert calibrate" in e.value.hint
    else:  # calibrate finished: the new thresholds, complete
        assert read_json(art / CALIBRATION)["target_speedup"] == 1.6
        assert len(predictions(art)) == len(TEXTS)


@pytest.mark.parametrize("command", ["attach", "calibrate"])
def test_kill9_leaves_the_previous_artifact_whole(command, baseline, forker, tiny_ckpt, tiny_data, tmp_path):
    art0, before = baseline
    args = {"attach": lambda a: ["attach", tiny_ckpt, "--data", tiny_data, "--out", a, "--epochs", 3, "--seed", 5],
            "calibrate": lambda a: ["calibrate", a, "--target-speedup", 1.6]}[command]
    full = tmp_path / "full"
    shutil.copytree(art0, full)
    duration = timed_run(forker, args(full))  # how long a whole run takes here
    check_whole(full, art0, before, command)
    rng = random.Random(f"{command}-11")
    for i in range(ROUNDS):
        art = tmp_path / f"round{i}"
        shutil.copytree(art0, art)
        pid, status = forker(args(art))
        time.sleep(rng.uniform(0.0, 1.0) * duration)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # it finished first (and was reaped): the new state is checked
            pass
        status()
        check_whole(art, art0, before, command)
        # the lock died with the process: the next writer is not blocked
        r = CliRunner().invoke(app, ["calibrate", str(art), "--target-speedup", "1.3"])
        assert r.exit_code == 0, r.output
        assert not [p for p in art.iterdir() if ".eebert-tmp-" in p.name]  # the dead writer's temporaries

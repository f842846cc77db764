"""The package's shape, checked: no import cycles, imports only downward, task names only in tasks/.

Imports are read from the source (every ``import`` anywhere in a module, function-level
ones included), so a cycle dodged by a lazy import still counts. The layer order is
written once, in ``LAYERS`` below; docs/design.md explains it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "eebert_cli"
PACKAGE = "eebert_cli"


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The eebert_cli modules ``name`` imports (a package's ``from . import sub`` names the submodule)."""
    is_pkg = path.name == "__init__.py"
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
            deps.update(m for m in subs or [target] if m in MODULES and m != name)
        elif isinstance(node, ast.Import):
            deps.update(a.name for a in node.names if a.name in MODULES and a.name != name)
    return deps


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_is_read():
    # guards the checks below against reading nothing
    assert len(MODULES) > 50 and "eebert_cli.tasks" in GRAPH["eebert_cli.scoring.outputs"] | GRAPH["eebert_cli.train.attach"]


def test_no_import_cycles():
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


TASK_NAMES = r'(CLASSIFICATION|REGRESSION|MULTI_LABEL|"classification"|"regression"|"multi-label")'
COMPARISON = re.compile(rf'(==|!=)\s*{TASK_NAMES}|{TASK_NAMES}\s*(==|!=|\bin\b|\bnot in\b)|\btask\s*(==|!=)')


def test_only_the_task_registry_compares_task_names():
    """Every module asks the checkpoint's Task; components only declare the names they serve."""
    offenders = []
    for name, path in MODULES.items():
        if name.startswith(f"{PACKAGE}.tasks"):
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if COMPARISON.search(code):
                offenders.append(f"{path.relative_to(ROOT.parent)}:{i}: {line.strip()}")
    assert offenders == []


@pytest.mark.parametrize("line", ['if task == REGRESSION:', 'x = out.task != "classification"',
                                  'if "multi-label" in tasks:', 'if task == "regression"'])
def test_the_task_name_check_catches(line):
    assert COMPARISON.search(line)


#: the layers, lowest first; a module may import its own layer and the ones before it, never a later one.
#: docs/design.md explains each. Component folders sit in the layer of what they are.
LAYERS = [
    ("core", ["eebert_cli", "eebert_cli.core"]),
    ("data", ["eebert_cli.data"]),
    ("tasks", ["eebert_cli.tasks"]),
    ("model", ["eebert_cli.model", "eebert_cli.backbones", "eebert_cli.exits", "eebert_cli.gates",
               "eebert_cli.criteria"]),
    ("deploy", ["eebert_cli.deploy"]),
    ("train", ["eebert_cli.train", "eebert_cli.objectives", "eebert_cli.gates.train"]),
    ("scoring", ["eebert_cli.scoring"]),
    ("steps", ["eebert_cli.steps"]),
    ("recipe", ["eebert_cli.recipe"]),
    ("cli", ["eebert_cli.cli"]),
]


def layer_of(module: str) -> int:
    """Index of the layer whose longest listed prefix matches ``module``."""
    best, index = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, index = len(p), i
    assert index is not None, f"{module} is in no layer: add its package to LAYERS (and docs/design.md)"
    return index


def test_every_module_has_a_layer():
    for m in MODULES:
        layer_of(m)


def test_imports_only_go_down():
    climbs = [f"{m} ({LAYERS[layer_of(m)][0]}) imports {d} ({LAYERS[layer_of(d)][0]})"
              for m, deps in GRAPH.items() for d in deps if layer_of(d) > layer_of(m)]
    assert climbs == []


def test_a_climb_is_caught():
    assert layer_of("eebert_cli.scoring.outputs") > layer_of("eebert_cli.model.features")
    assert layer_of("eebert_cli.gates.train") > layer_of("eebert_cli.gates.smartbert")


def _fresh_python(code: str) -> str:
    import subprocess
    import sys

    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT.parent, timeout=120)
    assert got.returncode == 0, got.stderr[-2000:]
    return got.stdout.strip()


HEAVY = "('torch', 'transformers', 'numpy', 'datasets')"


def test_the_cli_starts_without_torch():
    """`eebert --help` waits for the CLI's imports only: the config dataclasses its flags come from live in
    light modules (``*/config.py``, ``model/device_config.py``) and registries are read when a value is checked."""
    assert _fresh_python(f"import sys, eebert_cli.cli; print([m for m in {HEAVY} if m in sys.modules])") == "[]"


@pytest.mark.parametrize("argv", [["calibrate", "ART", "--target-speedup", "0.5"],
                                  ["benchmark", "ART", "--timing-samples", "-1"],
                                  ["attach", "ckpt", "--out", "ART", "--data", "rotten-tomatoes", "--epochs", "0"],
                                  ["calibrate", "ART", "--max-drop", "101"],
                                  ["serve", "ART", "--port", "70000"],
                                  ["export", "ART", "--quantize", "int4"],
                                  ["calibrate", "ART", "--quantize", "int4"],
                                  ["predict", "ART", "good", "--batch-size", "0"]])
def test_bad_flags_are_refused_before_torch_loads(argv):
    """A flag a config dataclass declares is range-checked before anything heavy loads (`serve`: its numbers): the
    refusal answers in a fraction of a second. (A registry's choices load that registry, and with it torch.)"""
    code = ("import sys; from typer.testing import CliRunner; from eebert_cli.cli import app; "
            f"r = CliRunner().invoke(app, {argv!r}); "
            f"print(r.exit_code, [m for m in {HEAVY} if m in sys.modules], r.output.splitlines()[0])")
    out = _fresh_python(code)
    assert out.startswith("1 [] error:"), out

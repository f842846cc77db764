"""What README.md and docs/ show still matches the code: every `eebert` command line names a real
command and real flags, and every Python snippet's eebert imports resolve."""

from __future__ import annotations

import ast
import importlib
import re
import shlex
from pathlib import Path

import pytest
import typer

from eebert_cli.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "examples").rglob("*.md"))]
FENCE = re.compile(r"```([a-z]*)\n(.*?)```", re.S)
GLOBAL_FLAGS = {"--trust-remote-code", "--version", "--help"}


def _blocks(kind: str) -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        for lang, body in FENCE.findall(doc.read_text()):
            if (kind == "python") == (lang == "python"):
                out.append((str(doc.relative_to(ROOT)), body))
    return out


def _command_lines() -> list[tuple[str, str]]:
    """Each `eebert ...` line of a shell block (continuations joined, comments dropped)."""
    lines = []
    for where, body in _blocks("shell"):
        text = re.sub(r"\\\n\s*", " ", body)
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip().removeprefix("$ ")
            if line.startswith("eebert ") or " && eebert " in line:
                lines.append((where, line[line.index("eebert "):].split(" && ")[0]))
    return lines


COMMANDS = _command_lines()
CLICK = typer.main.get_command(app)


def test_the_docs_show_commands():
    assert len(COMMANDS) > 20 and any(c.startswith("eebert calibrate") for _, c in COMMANDS)


def problem(line: str) -> str | None:
    """What is wrong with a documented `eebert ...` line, or None."""
    tokens = [t for t in shlex.split(line.replace("|", " ").replace("[", " ").replace("]", " ")) if t]
    tokens = [t for t in tokens[1:] if t not in GLOBAL_FLAGS]
    name = tokens[0]
    if name not in CLICK.commands:
        return f"`eebert {name}` is not a command"
    known = {o for p in CLICK.commands[name].params for o in (*p.opts, *p.secondary_opts)}
    unknown = [f for f in (t.split("=", 1)[0] for t in tokens[1:] if t.startswith("--")) if f not in known]
    return f"`{line}` uses {unknown}, which `eebert {name}` does not take" if unknown else None


@pytest.mark.parametrize("where,line", COMMANDS, ids=[f"{w}:{c[:40]}" for w, c in COMMANDS])
def test_a_documented_command_names_real_flags(where, line):
    assert problem(line) is None, where


def test_the_command_check_catches_mistakes():
    assert "--target-spedup" in problem("eebert calibrate ART --target-spedup 2")
    assert "not a command" in problem("eebert calibrat ART")
    assert problem("eebert --trust-remote-code attach CKPT --data D --out A --executor ray") is None


def _imports(body: str) -> list[ast.stmt]:
    try:
        tree = ast.parse(body)
    except SyntaxError:
        return []
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
            and (getattr(n, "module", None) or "").startswith("eebert_cli")
            or isinstance(n, ast.Import) and any(a.name.startswith("eebert_cli") for a in n.names)]


SNIPPETS = [(w, b) for w, b in _blocks("python") if _imports(b)]


def test_the_docs_show_python():
    assert SNIPPETS, "README's Python example is gone"


@pytest.mark.parametrize("where,body", SNIPPETS, ids=[w for w, _ in SNIPPETS])
def test_a_documented_snippet_imports(where, body):
    for node in _imports(body):
        if isinstance(node, ast.ImportFrom):
            mod = importlib.import_module(node.module)
            missing = [a.name for a in node.names if not hasattr(mod, a.name)]
            assert not missing, f"{where}: {node.module} has no {missing}"
        else:
            for a in node.names:
                importlib.import_module(a.name)

"""The `eebert` command line, one module per command (each parses its flags, calls a step, prints).

Known errors print one line and a hint; EEBERT_DEBUG=1 shows tracebacks. To add a command, write
``cli/<name>.py`` with one function wrapped in ``shared.command`` and list it in ``COMMANDS``.
"""

from __future__ import annotations

import os

import typer

from .. import __version__
from . import attach, benchmark, calibrate, compare, components, export, predict, run, serve, validate
from ..core.ui import out

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Make a deployed transformer classifier faster by early exiting (backbone frozen).")

#: command name -> its function, in the order `eebert --help` lists them
COMMANDS = {
    "attach": attach.attach, "calibrate": calibrate.calibrate, "benchmark": benchmark.benchmark,
    "export": export.export, "predict": predict.predict, "serve": serve.serve, "run": run.run,
    "validate": validate.validate_recipe, "compare": compare.compare, "list": components.list_components,
}
for _name, _fn in COMMANDS.items():
    app.command(_name)(_fn)


@app.callback(invoke_without_command=True)
def main_callback(version: bool = typer.Option(False, "--version", help="Print the version and exit."),
                  trust_remote_code: bool = typer.Option(
                      False, "--trust-remote-code",
                      help="Allow checkpoints that ship their own modelling code to run it (off by default).")):
    if trust_remote_code:
        from ..model.checkpoint import TRUST_REMOTE_CODE_ENV

        os.environ[TRUST_REMOTE_CODE_ENV] = "1"
    if version:
        out.print(f"eebert {__version__}")
        raise typer.Exit()


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    app()


"""The `edgebert` command line: thin Typer commands over the library, one module per command group.

Errors the user can fix (`EdgebertError`, bad options) become one line on stderr and exit
code 1, or 2 for usage errors: a malformed command line or an option's value that fails its
validation (`OptionError`); set EDGEBERT_DEBUG=1 to see the full traceback instead.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from edgebert import __version__
from edgebert.cli import augment as augment_commands
from edgebert.cli import bench as bench_commands
from edgebert.cli import evaluate as eval_commands
from edgebert.cli import export as export_commands
from edgebert.cli import pick as pick_commands
from edgebert.cli import profiles as profiles_commands
from edgebert.cli import slice as slice_commands
from edgebert.cli import train as train_commands
from edgebert.cli.options import HELP_OPTIONS, Group, Interrupted, use_edgebert_classes
from edgebert.cli.output import print_error, print_warning
from edgebert.errors import EdgebertError

DEBUG_ENV = "EDGEBERT_DEBUG"
# Import-time chatter of optional dependencies that says nothing about the user's model.
NOISY_LOGGERS = ("torchao", "torch.utils._pytree", "absl", "tensorflow", "jax._src.xla_bridge")

app = typer.Typer(
    name="edgebert",
    help="Cut exact DynaBERT sub-networks into small dense models, export and benchmark them for edge devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=Group,
    context_settings={"help_option_names": HELP_OPTIONS},  # subcommands inherit it
)


def _print_version(value: bool) -> None:
    if value:
        print(f"edgebert {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Options of edgebert itself; Typer(help=...) above is what help shows."""


slice_commands.register(app)
export_commands.register(app)
pick_commands.register(app)
bench_commands.register(app)
eval_commands.register(app)
profiles_commands.register(app)
train_commands.register(app)
augment_commands.register(app)
use_edgebert_classes(app)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print_warning(str(message))


def os_error_line(exc: OSError) -> str:
    """`PATH: reason`, as the shell would say it, for errors the OS raises on the user's files."""
    reason = exc.strerror or str(exc)
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {reason}" if paths else reason


NOTHING_WRITTEN = "interrupted: nothing was written"  # every output is staged and renamed into place at the end


def _train_interrupted(params: dict[str, Any], argv: list[str]) -> str:
    """A run that saved a state is kept beside --out for `--resume` (else train removes it: nothing was written)."""
    from edgebert.train import RunFiles

    files = RunFiles(Path(params["out"]))
    if not files.state.is_file():
        return NOTHING_WRITTEN
    resume = shlex.join(["edgebert", *argv, *([] if "--resume" in argv else ["--resume"])])
    return f"interrupted: the run is kept in {files.home}; `{resume}` continues it"


def _eval_interrupted(params: dict[str, Any], argv: list[str]) -> str:
    return "interrupted: the sub-networks evaluated so far are cached; the same command continues from there"


# What is true after Ctrl-C, for the commands that keep something (the others: NOTHING_WRITTEN).
INTERRUPT_NOTES: dict[str, Callable[[dict[str, Any], list[str]], str]] = {
    "train": _train_interrupted,
    "eval": _eval_interrupted,
}


def interrupt_note(interrupted: Interrupted, argv: list[str]) -> str:
    note = INTERRUPT_NOTES.get(interrupted.command)
    return NOTHING_WRITTEN if note is None else note(interrupted.params, argv)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app and turn known failures into one-line errors."""
    argv = sys.argv[1:] if argv is None else argv
    debug = bool(os.environ.get(DEBUG_ENV))
    if not debug:
        warnings.showwarning = _one_line_warning
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        code = app(args=argv, prog_name="edgebert", standalone_mode=False)
    except EdgebertError as exc:
        if debug:
            raise
        print_error(str(exc))
        sys.exit(exc.exit_code)  # 2 for an option's bad value (OptionError), 1 for the rest
    except Interrupted as interrupted:
        print_error(interrupt_note(interrupted, argv))
        sys.exit(130)
    except (typer.Abort, KeyboardInterrupt):  # outside a command (while reading the command line)
        print_error(NOTHING_WRITTEN)
        sys.exit(130)
    except OSError as exc:  # a read-only or full disk, a missing directory: name the path
        if debug:
            raise
        print_error(os_error_line(exc))
        sys.exit(1)
    except RecursionError:  # json and yaml readers on input nested thousands deep
        if debug:
            raise
        print_error("an input file is nested too deeply to read: check the JSON or YAML files given")
        sys.exit(1)
    except typer.TyperException as exc:  # bad options or arguments
        if type(exc).__name__ == "NoArgsIsHelpError":  # the help is printed: what there is was asked (Typer's test)
            sys.exit(0)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        print_error(message.splitlines()[0] if message else type(exc).__name__)
        sys.exit(getattr(exc, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)

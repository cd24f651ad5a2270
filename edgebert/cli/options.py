"""Arguments and options several commands share, with help texts built from what the registries hold.

A new exporter, precision or shipped profile shows up in `--help` without touching a command.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup, TyperOption

from edgebert.data import Columns, parse_label_column, parse_text_columns
from edgebert.errors import EdgebertError, OptionError
from edgebert.manifests import shown
from edgebert.precisions import EMBEDDINGS, EMBEDDINGS_PRECISION, PRECISIONS
from edgebert.profiles import check_profile_name, shipped_names
from edgebert.runtimes import FORMATS
from edgebert.subnet import check_fractions

T, V = TypeVar("T"), TypeVar("V")


def either(names: Iterable[str]) -> str:
    """('onnx', 'tflite') -> 'onnx or tflite'; three or more -> 'a, b or c'."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def default_is(text: str) -> str:
    """'[default: TEXT]' for a help text, escaped: rich reads unescaped brackets as markup and drops them."""
    return escape(f"[default: {text}]")


def lowercase(value: str | None) -> str | None:
    """Names of choices are lower case, and `ONNX` or `INT8` means the same thing."""
    return None if value is None else value.lower()


def check_choice(what: str, value: str, allowed: Iterable[str]) -> None:
    """One line naming the allowed values, which come from the type the library declares (a Literal's args).

    An option's value that is not among them is a usage error (OptionError, exit 2)."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise OptionError(f"unknown {what} {shown(value)}: choose {either(allowed)}")


def option_value(option: str, parse: Callable[[V], T], value: V) -> T:
    """`parse(value)`, and a value it refuses is a usage error naming the option: the one place an option's
    value becomes exit code 2 (OptionError) while the library's parsers stay plain EdgebertErrors."""
    try:
        return parse(value)
    except OptionError:
        raise
    except EdgebertError as exc:
        raise OptionError(f"{option}: {exc}") from exc


def checked(parse: Callable[[Any], Any]) -> Callable[..., Any]:
    """A Typer option callback reading the value through `parse` (see `option_value`), before any slow work;
    None (the option not given) passes, so the default applies."""

    def callback(ctx, param, value):  # noqa: ANN001, ANN202 (Typer passes context, parameter, value by position)
        return None if value is None else option_value(param.opts[0], parse, value)

    return callback


def choice_of(allowed: Iterable[str]) -> Callable[..., Any]:
    """A Typer option callback for a choice: lower case (`ONNX` is `onnx`), and one of `allowed` (exit 2)."""
    allowed = tuple(allowed)

    def callback(ctx, param, value):  # noqa: ANN001, ANN202 (Typer passes context, parameter, value by position)
        if value is not None:
            check_choice(param.opts[0], value.lower(), allowed)
        return lowercase(value)

    return callback


# --width, --depth: in (0, 1], by the library's own rule, refused as the command line is read.
check_width = checked(lambda width: check_fractions(width, 1.0)[0])
check_depth = checked(lambda depth: check_fractions(1.0, depth)[1])


def untyped_flags(params: list) -> list:
    """A flag takes no value, so its help shows no type (Typer labels every flag `<bool>`)."""
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    return params


class Interrupted(Exception):
    """Ctrl-C in a command, with the command's name and parameters: `edgebert.cli.main` says what is true then.

    Typer turns a KeyboardInterrupt into a bare exit code 130, so the command catches it first.
    """

    def __init__(self, command: str, params: dict[str, Any]) -> None:
        super().__init__(command)
        self.command, self.params = command, params


class Command(TyperCommand):
    """Every edgebert command: flags without a `<bool>` type in help; Ctrl-C raises `Interrupted`."""

    def get_params(self, ctx):  # noqa: ANN001, ANN201 (click's signature)
        return untyped_flags(super().get_params(ctx))

    def invoke(self, ctx):  # noqa: ANN001, ANN201 (click's signature)
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise Interrupted(ctx.info_name or self.name or "", dict(ctx.params)) from exc


class Group(TyperGroup):
    """Every edgebert command group: flags without a `<bool>` type in help."""

    def get_params(self, ctx):  # noqa: ANN001, ANN201 (click's signature)
        return untyped_flags(super().get_params(ctx))


def use_edgebert_classes(app: typer.Typer) -> None:
    """Give every command of `app` and of its groups `Command` in one place (groups are made with cls=Group)."""
    for command in app.registered_commands:
        command.cls = Command
    for group in app.registered_groups:
        use_edgebert_classes(group.typer_instance)


PROFILE_HELP = f"A shipped profile ({either(shipped_names())}) or a YAML file."

ModelArg = Annotated[
    Path | None,
    typer.Argument(
        help="A (Dyna)BERT, RoBERTa, XLM-R, ELECTRA, DistilBERT or ModernBERT directory; omit it for the demo model."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ProfileOpt = Annotated[str, typer.Option(help=PROFILE_HELP, callback=checked(check_profile_name))]
ProfileArg = Annotated[str, typer.Argument(help=PROFILE_HELP)]
FormatOpt = Annotated[str, typer.Option("--format", help=f"{either(FORMATS)}.", callback=choice_of(FORMATS))]
PrecisionOpt = Annotated[str, typer.Option(help=f"{either(PRECISIONS)}.", callback=choice_of(PRECISIONS))]
EmbeddingsOpt = Annotated[
    str | None,
    typer.Option(
        help=f"Store the word-embedding table in {either(EMBEDDINGS)} (blockwise; --precision {EMBEDDINGS_PRECISION} "
        f"only, through the same gate) {default_is('as the precision')}.",
        callback=choice_of(EMBEDDINGS),
    ),
]
TextColumnOpt = Annotated[
    str | None,
    typer.Option(
        help="The data's text column, or two for sentence pairs (question,answer) "
        + default_is("sentence or sentence1 (+ sentence2), else text")
    ),
]
LabelColumnOpt = Annotated[str | None, typer.Option(help="The data's target column " + default_is("label, else score"))]
VocabFromOpt = Annotated[
    list[Path] | None,
    typer.Option(
        help="Keep only the word embeddings of the tokens the model's tokenizer produces on this file's texts "
        "(a GLUE-style TSV/CSV, or plain text, one text per line), and the special tokens; repeatable."
    ),
]
VocabMinCountOpt = Annotated[
    int, typer.Option(min=1, help="With --vocab-from: keep only the tokens seen at least this many times.")
]


def data_columns(text_column: str | None, label_column: str | None) -> Columns:
    """--text-column and --label-column as the data reader takes them (a bad value: exit 2, before any work)."""
    return Columns(
        option_value("--text-column", parse_text_columns, text_column) if text_column is not None else None,
        option_value("--label-column", parse_label_column, label_column) if label_column is not None else None,
    )


HELP_OPTIONS = ["-h", "--help"]

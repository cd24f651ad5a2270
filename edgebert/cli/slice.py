"""`edgebert slice` and `edgebert info`: cut one sub-network, or list what each would cost."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from edgebert.cli.options import (
    JsonOpt,
    ModelArg,
    VocabFromOpt,
    VocabMinCountOpt,
    check_depth,
    check_width,
    default_is,
)
from edgebert.cli.output import console, megabytes, millions, print_notes, show
from edgebert.manifests import WARNING_FIELDS, manifest_warnings


def slice_command(
    model: ModelArg = None,
    width: Annotated[
        float, typer.Option(help="Share of attention heads and FFN neurons kept, in (0, 1].", callback=check_width)
    ] = 1.0,
    depth: Annotated[float, typer.Option(help="Share of layers kept, in (0, 1].", callback=check_depth)] = 1.0,
    out: Annotated[Path | None, typer.Option(help=f"Output directory {default_is('<model>-w<W>-d<D>')}.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output directory.")] = False,
    vocab_from: VocabFromOpt = None,
    vocab_min_count: VocabMinCountOpt = 1,
    json: JsonOpt = False,
) -> None:
    """Write the (width, depth) sub-network as a dense, smaller model directory."""
    from edgebert.slicing import slice_model

    out_dir, manifest = slice_model(
        model, width, depth, out=out, force=force, vocab_from=vocab_from or (), vocab_min_count=vocab_min_count
    )
    show({"output": str(out_dir), **manifest}, json, lambda _: print_slice(out_dir, manifest))


def print_slice(out_dir: Path, manifest: dict[str, Any]) -> None:
    """What was kept of the original, and what the slice costs."""
    table = Table(title=f"Wrote {out_dir}", show_header=False, title_justify="left")
    table.add_row("source", manifest["source"]["path"])
    table.add_row("width x depth", f"{manifest['width']:g} x {manifest['depth']:g}")
    original = manifest["original"]
    table.add_row("layers kept", f"{len(manifest['layers_kept'])} of {original['layers']}: {manifest['layers_kept']}")
    table.add_row("heads kept", f"{manifest['heads_kept']} of {original['heads']} (size {original['head_size']})")
    table.add_row("FFN neurons kept", f"{manifest['ffn_neurons_kept']} of {original['ffn_neurons']}")
    if "vocabulary" in manifest:
        table.add_row("vocabulary kept", vocabulary_line(manifest["vocabulary"]))
    table.add_row("parameters", millions(manifest["parameters"]))
    table.add_row("model.safetensors", megabytes(manifest["size_bytes"]))
    table.add_row("encoder GFLOPs (seq 128)", f"{manifest['encoder_flops_seq128'] / 1e9:.2f}")
    console.print(table)
    print_notes(*manifest_warnings(manifest))


def info_command(model: ModelArg = None, json: JsonOpt = False) -> None:
    """Show what every (width, depth) of the trained grid keeps and costs."""
    from edgebert.info import grid_info

    show(grid_info(model), json, print_info)


def print_info(info: dict[str, Any]) -> None:
    """One row per trained (width, depth): what it keeps and what it costs."""
    arch = info["architecture"]
    of = f", a slice of {info['slice_of']}" if "slice_of" in info else ""
    table = Table(
        title=f"{info['model']} ({info['model_type']}, {info['task']}{of}: {arch['layers']} layers, "
        f"{arch['heads']} heads of {arch['head_size']}, FFN {arch['ffn_neurons']}, vocabulary {arch['vocab_size']})",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for column in ("width", "depth", "layers kept", "heads", "FFN", "params", "fp32", "int8*", "GFLOP"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in info["grid"]:
        table.add_row(
            f"{row['width']:g}",
            f"{row['depth']:g}",
            index_ranges(row["layers_kept"]),
            str(row["heads_kept"]),
            str(row["ffn_neurons_kept"]),
            f"{row['parameters'] / 1e6:.1f}",
            f"{row['size_fp32_bytes'] / 1e6:.1f}",
            f"{row['size_int8_estimate_bytes'] / 1e6:.1f}",
            f"{row['encoder_flops_seq128'] / 1e9:.2f}",
        )
    console.print(table)
    console.print("params in M, sizes in MB (*int8: estimate, one byte per weight), GFLOPs: encoder at seq 128")
    console.print(embeddings_line(info["grid"]), markup=False)
    if "vocabulary" in info:
        console.print(f"vocabulary kept: {vocabulary_line(info['vocabulary'])}", markup=False)
    print_notes(*(info.get(field) for field in WARNING_FIELDS))


def embeddings_line(rows: list[dict[str, Any]]) -> str:
    """The embeddings' parameters (the same in every row) and their share of the smallest row: the floor no width
    or depth gets under."""
    smallest = min(rows, key=lambda row: row["parameters"])
    embeddings, share = smallest["embedding_parameters"], smallest["embedding_parameters"] / smallest["parameters"]
    of = "" if len(rows) == 1 else " of the smallest sub-network"
    return f"embeddings: {embeddings / 1e6:.1f} M parameters, {share:.0%}{of}"


def vocabulary_line(vocabulary: dict[str, Any]) -> str:
    """What `--vocab-from` kept: how many tokens of how many, from which files."""
    seen = f"seen {vocabulary['min_count']}+ times" if vocabulary["min_count"] > 1 else "seen"
    files = ", ".join(Path(source["path"]).name for source in vocabulary["sources"])
    return f"{vocabulary['kept']:,} of {vocabulary['original_size']:,} tokens (special, and {seen} in {files})"


def index_ranges(indices: list[int]) -> str:
    """[0, 1, 2, 4, 5, 6] -> "0-2,4-6": kept layers in a narrow column."""
    runs: list[list[int]] = []
    for index in indices:
        if runs and index == runs[-1][-1] + 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    return ",".join(f"{run[0]}-{run[-1]}" if len(run) > 2 else ",".join(map(str, run)) for run in runs)


def register(app: typer.Typer) -> None:
    app.command("slice")(slice_command)
    app.command("info")(info_command)

"""`edgebert export`: an ONNX or TFLite artifact of a slice, with its parity report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from edgebert.cli.options import (
    EmbeddingsOpt,
    FormatOpt,
    JsonOpt,
    ModelArg,
    PrecisionOpt,
    check_depth,
    check_width,
    default_is,
)
from edgebert.cli.output import console, megabytes, print_notes, show
from edgebert.cli.progress import Progress
from edgebert.manifests import manifest_warnings
from edgebert.sidecar import DEFAULT_SEQ_LEN, MAX_SEQ_LEN, gate_relation


def export_command(
    model: ModelArg = None,
    format: FormatOpt = "onnx",
    precision: PrecisionOpt = "fp32",
    embeddings: EmbeddingsOpt = None,
    width: Annotated[
        float | None, typer.Option(help="Slice a full checkpoint at this width first.", callback=check_width)
    ] = None,
    depth: Annotated[
        float | None, typer.Option(help="Slice a full checkpoint at this depth first.", callback=check_depth)
    ] = None,
    seq_len: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=MAX_SEQ_LEN,
            help=f"TFLite's fixed sequence length {default_is(str(DEFAULT_SEQ_LEN))}; ONNX axes are dynamic, "
            "and it is verified.",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="A bundle folder (config, tokenizer, labels; onnx/<file>, <file>.tflite or <file>.pte) "
            f"{default_is('<model>-w<W>-d<D>-<format>')}, or one file when it ends in .onnx, .tflite or .pte."
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing artifact (in a bundle: that precision).")
    ] = False,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Skip the parity gate (not recommended).")] = False,
    json: JsonOpt = False,
) -> None:
    """Export a slice (or a checkpoint sliced in memory) and prove it against PyTorch."""
    from edgebert.export import export_model

    with Progress() as progress:
        progress.stage(f"exporting {format} {precision}" + ("" if no_verify else " and checking parity"))
        sidecar = export_model(
            model,
            format,
            precision,
            width=width,
            depth=depth,
            seq_len=seq_len,
            out=out,
            force=force,
            verify=not no_verify,
            embeddings=embeddings,
        )
    show(sidecar, json, print_sidecar)


def print_sidecar(sidecar: dict[str, Any]) -> None:
    """What was written, the artifact's signature, and the parity gate it passed."""
    manifest = sidecar["manifest"]
    written = f"{sidecar['path']} (+ .json sidecar)"
    if "bundle" in sidecar:
        written = f"bundle {sidecar['bundle']}: {written}, config and tokenizer"
    table = Table(title=f"Wrote {written}", show_header=False, title_justify="left")
    table.add_row("sub-network", f"width {manifest['width']:g} x depth {manifest['depth']:g}")
    table.add_row("format / precision", f"{sidecar['format']} {sidecar['precision']}")
    if len(sidecar["quantization_choice"]["order"]) > 1:  # the gate chose among schemes: which and why
        table.add_row("scheme", f"{sidecar['quantization']} ({sidecar['quantization_choice']['reason']})")
    table.add_row("size", megabytes(sidecar["size_bytes"]))
    if sidecar["embeddings"] is not None:
        embeddings = sidecar["embeddings"]
        table.add_row(
            "word embeddings",
            f"{embeddings['storage']}, blocks of {embeddings['block_size']}: {megabytes(embeddings['bytes_saved'])} "
            f"smaller than with {sidecar['precision']}'s",
        )
    table.add_row("runtime", f"{sidecar['runtime']['name']} {sidecar['runtime']['version']}")
    for kind in ("inputs", "outputs"):
        table.add_row(kind, ", ".join(describe_tensor(t, sidecar["output_meaning"]) for t in sidecar[kind]))
    table.add_row("max sequence length", str(sidecar["max_seq_len"]))
    table.add_row("export time", f"{sidecar['export_seconds']:.1f} s")
    parity = sidecar["parity"]
    if parity is None:
        table.add_row("parity", "[yellow]not verified (--no-verify)[/]")
    else:
        gate = parity["gate"]
        relation = gate_relation(gate["metric"])
        table.add_row("max abs diff", f"{parity['max_abs_diff']:.2e}")
        table.add_row("cosine", f"{parity['cosine']:.6f}")
        if parity["top1"] is not None:
            top1 = parity["top1"]
            table.add_row(
                "top-1 agreement",
                f"{parity['top1_agreement']:.0%}; required on the {top1['decided_rows']} of {top1['rows']} rows "
                f"with {top1['margin_rule']}",
            )
        table.add_row("checked on", describe_checked(parity["inputs"]))
        table.add_row("gate", f"[green]passed[/] ({gate['metric']} {relation} {gate['bound']})")
    console.print(table)
    print_notes(*manifest_warnings(manifest))


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)


def describe_tensor(spec: dict, meaning: dict[str, str]) -> str:
    """ "output_0 (logits) float32[1, 2]": TFLite numbers its outputs, the sidecar says what they are."""
    alias = meaning.get(spec["name"], spec["name"])
    name = spec["name"] if alias == spec["name"] else f"{spec['name']} ({alias})"
    return f"{name} {spec['dtype']}{spec['shape']}"


def describe_checked(inputs: dict) -> str:
    """ "4 batches of [1, 16]: 3 of 4 rows padded, 24 % padding": what the gate ran, as the sidecar records it."""
    shapes = sorted({tuple(shape) for shape in inputs["shapes"]})
    shown = ", ".join(str(list(shape)) for shape in shapes)
    return (
        f"{inputs['batches']} batch{'es' if inputs['batches'] > 1 else ''} of {shown}: {inputs['padded_rows']} of "
        f"{inputs['rows']} rows padded, {inputs['padding_share']:.0%} padding"
    )

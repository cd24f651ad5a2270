"""metrics.jsonl: one line per evaluation of a run, appended as it trains and cut back to the checkpoint it resumes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgebert.atomic import replace_file
from edgebert.errors import EdgebertError
from edgebert.manifests import MAX_JSON_BYTES, MetricsRecord, validation_line
from edgebert.reading import read_regular, text_lines


def append_metrics(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(MetricsRecord.model_validate(record).model_dump_json() + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(path: Path) -> list[MetricsRecord]:
    data = read_regular(path, MAX_JSON_BYTES)
    if len(data) > MAX_JSON_BYTES:
        raise EdgebertError(f"{path} is larger than {MAX_JSON_BYTES} bytes: not the metrics edgebert train writes")
    records = []
    for number, line in enumerate(text_lines(data.decode("utf-8", errors="replace")), 1):
        try:
            records.append(MetricsRecord.model_validate_json(line))
        except ValidationError as exc:
            raise EdgebertError(f"{path}: line {number} is not a valid MetricsRecord: {validation_line(exc)}") from exc
    return records


def truncate_metrics(path: Path, resume_state: dict | None) -> None:
    """Drop records written after the checkpoint being resumed (all of them on a fresh start)."""
    if not path.is_file():
        return
    if resume_state is None:
        path.unlink()
        return
    last = (resume_state["phase_index"], resume_state.get("step", 0) if "model" in resume_state else -1)
    kept = [record for record in read_metrics(path) if (record.phase_index, record.step) <= last]
    lines = "".join(f"{record.model_dump_json()}\n" for record in kept)
    replace_file(path, lambda tmp: tmp.write_text(lines, encoding="utf-8"))

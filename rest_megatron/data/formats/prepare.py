"""Convert one file, validate every record, write the good and the rejected ones atomically.

`prepare` never stops on a bad record: each rejection keeps its line and reason, goes to
`DIR/rejected.jsonl`, and is counted by reason in the summary. A source record that produces several
records (a ToolACE dialog: one per assistant turn) is rejected whole if any of them fails validation.
Output files are written to a temporary name in DIR and renamed, so a crash never leaves half a file
where a good one was, and each run replaces all three files:

    DIR/data.jsonl       the records, one per line (what `data.train_path` / `eval_path` point at)
    DIR/rejected.jsonl   {"line", "reason", "detail"} per rejected source record
    DIR/summary.json     format, input, counts
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rest_megatron.data.formats import ConvertOptions, get_format
from rest_megatron.data.formats.base import InputError, RecordError, Rejected
from rest_megatron.data.formats.validate import validate_record

DATA_FILE, REJECTED_FILE, SUMMARY_FILE = "data.jsonl", "rejected.jsonl", "summary.json"


@dataclass(frozen=True)
class Summary:
    """What one `prepare` run read, wrote and rejected."""

    format: str
    input: Path
    out_dir: Path
    num_read: int
    """Source records seen (lines of a JSONL file, elements of an array; API turns of an API-Bank dialog)."""
    num_written: int
    """Records written; more than the accepted source records where one yields several."""
    rejections: list[Rejected] = field(default_factory=list)

    @property
    def rejected_by_reason(self) -> dict[str, int]:
        return dict(Counter(r.reason for r in self.rejections).most_common())

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "input": str(self.input),
            "records_read": self.num_read,
            "records_written": self.num_written,
            "records_rejected": len(self.rejections),
            "rejected_by_reason": self.rejected_by_reason,
        }


def _checked(line: int, records: list[dict[str, Any]], fmt: str) -> list[dict[str, Any]] | Rejected:
    """The records with ids filled in, or the Rejected of the first one that fails validation."""
    out = []
    for index, record in enumerate(records):
        try:
            validate_record(record)
        except RecordError as err:
            where = f"output record {index} of {len(records)}: " if len(records) > 1 else ""
            return Rejected(line, err.reason, where + err.detail)
        default_id = f"{fmt}-{line}" if len(records) == 1 else f"{fmt}-{line}-{index}"
        out.append({"id": record.get("id") or default_id, **{k: v for k, v in record.items() if k != "id"}})
    return out


def _write_atomic(path: Path, lines: list[str]) -> None:
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.writelines(line + "\n" for line in lines)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def prepare(fmt: str, source: Path, out_dir: Path, options: ConvertOptions | None = None) -> Summary:
    """Convert `source` in format `fmt` into `out_dir`; InputError when the input cannot be read."""
    converter = get_format(fmt).converter()
    options = options or ConvertOptions()
    records: list[dict[str, Any]] = []
    rejections: list[Rejected] = []
    num_read = 0
    for outcome in converter(source, options):
        num_read += 1
        checked = outcome if isinstance(outcome, Rejected) else _checked(outcome.line, outcome.records, fmt)
        if isinstance(checked, Rejected):
            rejections.append(checked)
        else:
            records.extend(checked)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} exists and is not a directory; pass a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = Summary(fmt, source, out_dir, num_read, len(records), rejections)
    _write_atomic(out_dir / DATA_FILE, [json.dumps(r, ensure_ascii=False) for r in records])
    _write_atomic(
        out_dir / REJECTED_FILE,
        [json.dumps({"line": r.line, "reason": r.reason, "detail": r.detail}, ensure_ascii=False) for r in rejections],
    )
    _write_atomic(out_dir / SUMMARY_FILE, [json.dumps(summary.as_dict(), indent=2)])
    return summary

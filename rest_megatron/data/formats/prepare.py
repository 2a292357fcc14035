"""Convert one file, validate every record, write the good and the rejected ones atomically.

`prepare` never stops on a bad record: each rejection keeps its line and reason, goes to
`DIR/rejected.jsonl`, and is counted by reason in the summary. A source record that produces several
records (a ToolACE dialog: one per assistant turn) is rejected whole if any of them fails validation.
Output files are written to a temporary name in DIR and renamed, so a crash never leaves half a file
where a good one was, and each run replaces all three files:

    DIR/data.jsonl       the records, one per line (what `data.train_path` / `eval_path` point at)
    DIR/rejected.jsonl   {"line", "reason", "detail"} per rejected source record
    DIR/summary.json     format, input, counts

With a held-out split (`--split test=0.02 --seed N`) the records go to DIR/train.jsonl and
DIR/test.jsonl instead of data.jsonl. The split is a seeded shuffle of *groups*, so it is deterministic
and nothing leaks across it: the records of one source record (a ToolACE dialog's turns) stay together,
and so do records with the same prompt messages (public sets repeat prompts).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rest_megatron.data.formats import ConvertOptions, get_format
from rest_megatron.data.formats.base import InputError, RecordError, Rejected
from rest_megatron.data.formats.validate import validate_record

DATA_FILE, REJECTED_FILE, SUMMARY_FILE = "data.jsonl", "rejected.jsonl", "summary.json"
TRAIN_SPLIT = "train"


@dataclass(frozen=True)
class Split:
    """Hold out `fraction` of the records (at least one) as DIR/{name}.jsonl, shuffled with `seed`."""

    name: str
    fraction: float
    seed: int

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or self.name == TRAIN_SPLIT:
            raise InputError(
                f"--split {self.name}={self.fraction}: name the held-out split (e.g. test), not {self.name!r}"
            )
        if not 0.0 < self.fraction < 1.0:
            raise InputError(
                f"--split {self.name}={self.fraction}: the fraction must be in (0, 1), e.g. test=0.02"
            )

    @classmethod
    def parse(cls, spec: str, seed: int) -> Split:
        """From the command line's NAME=FRACTION."""
        name, sep, fraction = spec.partition("=")
        try:
            value = float(fraction)
        except ValueError:
            value = float("nan")
        if not sep or value != value:
            raise InputError(f"--split {spec!r}: write NAME=FRACTION, e.g. --split test=0.02")
        return cls(name.strip(), value, seed)


def split_groups(
    groups: list[list[dict[str, Any]]], split: Split
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train records, held-out records): whole groups, the held-out ones drawn by a seeded shuffle."""
    by_prompt: dict[str, int] = {}
    merged: list[list[dict[str, Any]]] = []
    for group in groups:  # groups whose prompts repeat an earlier group's join it
        keys = [json.dumps(r["messages"], sort_keys=True, ensure_ascii=False) for r in group]
        target = next((by_prompt[k] for k in keys if k in by_prompt), len(merged))
        if target == len(merged):
            merged.append([])
        merged[target].extend(group)
        by_prompt.update((k, target) for k in keys)
    if len(merged) < 2:
        raise InputError(
            f"--split {split.name}={split.fraction}: {len(merged)} distinct prompt(s) cannot be split; "
            "prepare without --split"
        )
    order = list(range(len(merged)))
    random.Random(split.seed).shuffle(order)
    num_held = min(len(merged) - 1, max(1, round(split.fraction * len(merged))))
    held = set(order[:num_held])
    train = [r for i, g in enumerate(merged) if i not in held for r in g]
    held_out = [r for i, g in enumerate(merged) if i in held for r in g]
    return train, held_out


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
    files: dict[str, int] = field(default_factory=dict)
    """Records written per output file name (data.jsonl, or train.jsonl and the held-out split's)."""

    @property
    def rejected_by_reason(self) -> dict[str, int]:
        return dict(Counter(r.reason for r in self.rejections).most_common())

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "input": str(self.input),
            "records_read": self.num_read,
            "records_written": self.num_written,
            "files": self.files,
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


def _previous_files(out_dir: Path) -> set[str]:
    """The record files an earlier run wrote into `out_dir` (its summary lists them)."""
    names = {DATA_FILE, f"{TRAIN_SPLIT}.jsonl"}
    try:
        names |= set(json.loads((out_dir / SUMMARY_FILE).read_text()).get("files", {}))
    except (OSError, ValueError, AttributeError):
        pass
    return {n for n in names if Path(n).name == n and n.endswith(".jsonl") and n != REJECTED_FILE}


def prepare(
    fmt: str, source: Path, out_dir: Path, options: ConvertOptions | None = None, split: Split | None = None
) -> Summary:
    """Convert `source` in format `fmt` into `out_dir` (split in two with `split`); InputError when the
    input cannot be read."""
    converter = get_format(fmt).converter()
    options = options or ConvertOptions()
    groups: list[list[dict[str, Any]]] = []
    rejections: list[Rejected] = []
    num_read = 0
    for outcome in converter(source, options):
        num_read += 1
        checked = outcome if isinstance(outcome, Rejected) else _checked(outcome.line, outcome.records, fmt)
        if isinstance(checked, Rejected):
            rejections.append(checked)
        else:
            groups.append(checked)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} exists and is not a directory; pass a directory")
    records = [r for g in groups for r in g]
    outputs = {DATA_FILE: records}
    if split is not None and records:
        train, held_out = split_groups(groups, split)
        outputs = {f"{TRAIN_SPLIT}.jsonl": train, f"{split.name}.jsonl": held_out}
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = Summary(
        fmt,
        source,
        out_dir,
        num_read,
        len(records),
        rejections,
        {name: len(rows) for name, rows in outputs.items()},
    )
    for name, rows in outputs.items():
        _write_atomic(out_dir / name, [json.dumps(r, ensure_ascii=False) for r in rows])
    for stale in _previous_files(out_dir) - set(outputs):  # a recipe must not read an earlier run's split
        (out_dir / stale).unlink(missing_ok=True)
    _write_atomic(
        out_dir / REJECTED_FILE,
        [
            json.dumps({"line": r.line, "reason": r.reason, "detail": r.detail}, ensure_ascii=False)
            for r in rejections
        ],
    )
    _write_atomic(out_dir / SUMMARY_FILE, [json.dumps(summary.as_dict(), indent=2)])
    return summary

"""Progress lines while a benchmark runs, and its report: an accuracy table and a JSON file.

The JSON report:

    {"benchmark": "bfcl", "meta": {model, server, engine, sampling, versions, duration_s, ...},
     "categories": {"simple": {"total": 400, "correct": 301, "accuracy": 0.7525,
                               "entries": [{"id", "correct", "reason", "output"}, ...]}, ...},
     "overall": {"total", "correct", "accuracy", "category_mean"}}

`overall.accuracy` counts entries (large categories weigh more); `overall.category_mean` is the
unweighted mean of the category accuracies. Neither is BFCL's leaderboard score: `eval bfcl` adds that
as `bfcl_scores` (`bfcl_aggregate.py`).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from rest_megatron.eval.bfcl_score import EntryResult, summarize


class Progress:
    """Prints "label: done/total, correct, rate, time left" at most every `every_s` seconds, and at the
    end."""

    def __init__(self, label: str, total: int, *, every_s: float = 5.0, stream: TextIO | None = None) -> None:
        self.label, self.total, self.every_s = label, total, every_s
        self.stream = stream or sys.stderr
        self.done = self.correct = 0
        self.started = self._last = time.monotonic()

    def update(self, correct: bool) -> None:
        """Count one finished entry."""
        self.done += 1
        self.correct += bool(correct)
        now = time.monotonic()
        if self.done == self.total or now - self._last >= self.every_s:
            self._last = now
            elapsed = max(now - self.started, 1e-9)
            left = (self.total - self.done) * elapsed / self.done
            print(
                f"{self.label}: {self.done}/{self.total} done, {self.correct} correct "
                f"({100 * self.correct / self.done:.1f}%), {self.done / elapsed:.2f} entries/s, "
                f"{_duration(left)} left",
                file=self.stream,
                flush=True,
            )


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def build_report(
    benchmark: str, results: Mapping[str, Sequence[EntryResult]], meta: Mapping[str, Any]
) -> dict[str, Any]:
    """The report dict (layout in the module docstring), categories in the order given."""
    categories = {
        name: {**summarize(entries), "entries": [dataclasses.asdict(e) for e in entries]}
        for name, entries in results.items()
    }
    total = sum(c["total"] for c in categories.values())
    correct = sum(c["correct"] for c in categories.values())
    accuracies = [c["accuracy"] for c in categories.values()]
    overall = {
        "total": total,
        "correct": correct,
        "accuracy": correct / total if total else 0.0,
        "category_mean": sum(accuracies) / len(accuracies) if accuracies else 0.0,
    }
    return {"benchmark": benchmark, "meta": dict(meta), "categories": categories, "overall": overall}


def format_table(report: Mapping[str, Any]) -> str:
    """The per-category accuracy table of a report, with the two overall rows."""
    rows = [(name, c["total"], c["correct"], c["accuracy"]) for name, c in report["categories"].items()]
    overall = report["overall"]
    width = max([len(r[0]) for r in rows] + [len("mean over categories")])
    lines = [f"{'category':<{width}}  {'total':>6}  {'correct':>7}  {'accuracy':>8}"]
    lines += [
        f"{name:<{width}}  {total:>6}  {correct:>7}  {100 * acc:>7.1f}%" for name, total, correct, acc in rows
    ]
    lines.append("-" * len(lines[0]))
    lines.append(
        f"{'all entries':<{width}}  {overall['total']:>6}  {overall['correct']:>7}  "
        f"{100 * overall['accuracy']:>7.1f}%"
    )
    lines.append(
        f"{'mean over categories':<{width}}  {'':>6}  {'':>7}  {100 * overall['category_mean']:>7.1f}%"
    )
    return "\n".join(lines)


def write_report(report: Mapping[str, Any], path: str | Path) -> Path:
    """Write the report as indented JSON (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return path

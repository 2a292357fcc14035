"""BFCL test entries and answer keys, loaded by the installed `bfcl-eval` package's own loaders.

`bfcl-eval` is installed without its dependency tree (the `bfcl` extra); `load_category` goes through
`bfcl_checker.bfcl()`, which imports only the parts of it that need nothing else. The entries are what
BFCL's runner builds: the function docs of multi-turn classes filled in, held-out functions moved to the
turn that adds them, and the language hints BFCL's handlers show the model (for Java and JavaScript the
parameters become strings). The checker reads the docs without those hints (`checker_functions`).

Our category names are BFCL's, except `simple`, which is BFCL's `simple_python`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CATEGORY_FILES: dict[str, str] = {
    "simple": "simple_python",
    "simple_java": "simple_java",
    "simple_javascript": "simple_javascript",
    "multiple": "multiple",
    "parallel": "parallel",
    "parallel_multiple": "parallel_multiple",
    "irrelevance": "irrelevance",
    "live_simple": "live_simple",
    "live_multiple": "live_multiple",
    "live_parallel": "live_parallel",
    "live_parallel_multiple": "live_parallel_multiple",
    "live_irrelevance": "live_irrelevance",
    "live_relevance": "live_relevance",
    "multi_turn_base": "multi_turn_base",
    "multi_turn_miss_func": "multi_turn_miss_func",
    "multi_turn_miss_param": "multi_turn_miss_param",
    "multi_turn_long_context": "multi_turn_long_context",
}
"""Our category name -> BFCL's, in report order: every scoring category of bfcl-eval 2026.3.23 whose data
ships in the package and whose checker runs offline. Left out: `web_search_*` (the model's searches go
to the live web through SerpAPI), `memory_*` (its backends need prerequisite conversations run first and,
for `memory_vector`, an embedding model download), and `format_sensitivity` (not scored)."""

IRRELEVANCE = frozenset({"irrelevance", "live_irrelevance"})
"""No function fits: correct means no call."""
RELEVANCE = frozenset({"live_relevance"})
"""Some function fits, with no answer key: correct means at least one call."""
MULTI_TURN = frozenset(
    {"multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param", "multi_turn_long_context"}
)
"""Conversations run against BFCL's environment classes; scored by state and execution results."""
SINGLE_TURN = tuple(c for c in CATEGORY_FILES if c not in MULTI_TURN)


class BfclUnavailable(RuntimeError):
    """bfcl-eval (or a data file of it) is not installed; the message says how to install it."""


@dataclass(frozen=True)
class BfclEntry:
    """One test entry with its answer key."""

    id: str
    category: str
    turns: list[list[dict[str, Any]]]
    """User turns, each a list of chat messages (single-turn categories have one)."""
    functions: list[dict[str, Any]]
    """The function docs BFCL's handlers send the model: BFCL types, with BFCL's language hints (Java and
    JavaScript parameters become strings); multi-turn: without the docs held out until a later turn."""
    answer: list[Any] | None
    """Single-turn: `[{name: {argument: [allowed values]}}]`; multi-turn: per turn, call strings like
    "cd(folder='docs')"; None where the category has no answer key (irrelevance, relevance)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Multi-turn only: `initial_config`, `involved_classes` and `missed_function` (turn index as a string
    -> the docs BFCL adds at that turn, with its "I have updated some more functions" user message)."""
    checker_functions: list[dict[str, Any]] = field(default_factory=list)
    """The docs as BFCL's checker reads them: no hints, Java/JavaScript types kept."""


def package_dir() -> Path:
    """Where bfcl-eval is installed (found without importing it)."""
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise BfclUnavailable(
            "bfcl-eval is not installed; install the `bfcl` extra (`pip install --no-deps bfcl-eval`)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def package_version() -> str | None:
    """bfcl-eval's version, for the report (None if unknown)."""
    try:
        return importlib.metadata.version("bfcl-eval")
    except importlib.metadata.PackageNotFoundError:
        return None


def parse_categories(text: str) -> list[str]:
    """ "simple,irrelevance" -> ["simple", "irrelevance"]; "all", "single_turn" and "live" expand."""
    groups = {
        "all": list(CATEGORY_FILES),
        "single_turn": list(SINGLE_TURN),
        "multi_turn": [c for c in CATEGORY_FILES if c in MULTI_TURN],
        "live": [c for c in CATEGORY_FILES if c.startswith("live_")],
        "non_live": [c for c in SINGLE_TURN if not c.startswith("live_")],
    }
    out: list[str] = []
    for name in (part.strip() for part in text.split(",")):
        if not name:
            continue
        if name not in CATEGORY_FILES and name not in groups:
            raise ValueError(
                f"unknown BFCL category {name!r}; use any of {', '.join(CATEGORY_FILES)} "
                f"or a group ({', '.join(groups)}), comma-separated"
            )
        out += [c for c in groups.get(name, [name]) if c not in out]
    if not out:
        raise ValueError("no BFCL category given; e.g. --categories simple,irrelevance")
    return out


def _newest(directory: Path, stem: str) -> Path:
    """BFCL_v<N>_<stem>.json with the highest N (v4 files today, v3 in older releases)."""
    found = [
        (int(m.group(1)), p)
        for p in directory.glob(f"BFCL_v*_{stem}.json")
        if (m := re.fullmatch(rf"BFCL_v(\d+)_{re.escape(stem)}\.json", p.name))
    ]
    if not found:
        raise BfclUnavailable(
            f"no BFCL_v*_{stem}.json in {directory}; this bfcl-eval release lacks the category "
            "(upgrade bfcl-eval or drop it from --categories)"
        )
    return max(found)[1]


def load_category(category: str, limit: int | None = None) -> list[BfclEntry]:
    """The first `limit` entries (all if None) of a category, in file order, loaded by bfcl-eval's own
    `load_dataset_entry` (function docs of multi-turn classes, held-out functions, language hints) and
    `load_ground_truth_entry`."""
    from rest_megatron.eval.bfcl_checker import bfcl

    if category not in CATEGORY_FILES:
        parse_categories(category)  # raises with the list of names
    bfcl()  # registers the model-config stand-in before bfcl_eval.utils is imported
    from bfcl_eval import utils as bfcl_utils

    stem = CATEGORY_FILES[category]
    _newest(package_dir() / "data", stem)  # a missing file: BfclUnavailable naming the fix
    records = bfcl_utils.load_dataset_entry(stem, include_prereq=False)[:limit]
    raw = {
        r["id"]: r
        for r in bfcl_utils.load_dataset_entry(
            stem, include_prereq=False, include_language_specific_hint=False
        )
    }
    answers: dict[str, Any] = {}
    if category not in IRRELEVANCE | RELEVANCE:
        answers = {a["id"]: a["ground_truth"] for a in bfcl_utils.load_ground_truth_entry(stem)}
    entries = []
    for record in records:
        if answers and record["id"] not in answers:
            raise BfclUnavailable(
                f"BFCL entry {record['id']} has no possible answer; the bfcl-eval data is "
                "inconsistent (reinstall bfcl-eval)"
            )
        extra = {
            k: record[k] for k in ("initial_config", "involved_classes", "missed_function") if k in record
        }
        entries.append(
            BfclEntry(
                record["id"],
                category,
                record["question"],
                record["function"],
                answers.get(record["id"]),
                extra,
                raw[record["id"]]["function"],
            )
        )
    return entries

"""BFCL's overall and group scores, computed as bfcl-eval 2026.3.23's `generate_leaderboard_csv` does.

The arithmetic is BFCL's own `calculate_unweighted_accuracy`, `calculate_weighted_accuracy` and
`calculate_percentage_weighted_accuracy` (compiled from `eval_checker/eval_runner_helper.py` by
`bfcl_checker`); this module only wires the categories into groups as that function does:

    Non-Live = mean(Simple AST = mean(Python, Java, JavaScript simple), multiple, parallel, parallel_multiple)
    Live     = entry-weighted mean of live simple, multiple, parallel, parallel_multiple
    Multi Turn = mean(base, miss_func, miss_param, long_context)
    Agentic  = mean(web search, memory)                       (not run here: counted 0, as BFCL counts it)
    Irrelevance = mean(irrelevance, live_irrelevance);  Relevance = live_relevance
    Overall  = 10% Non-Live + 10% Live + 10% Irrelevance + 30% Multi Turn + 40% Agentic

A category not run counts 0 and shows "N/A" where BFCL shows it so; the overall score is never "N/A"
(BFCL computes it with `display_na_if_category_missing=False`), so a run without the agentic sets is
capped at 60%, exactly as the leaderboard would score it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_megatron.eval.bfcl_checker import bfcl
from rest_megatron.eval.bfcl_data import CATEGORY_FILES

ROWS = [
    ("Overall Acc", "overall"),
    ("Non-Live AST Acc", "non_live"),
    ("Non-Live Simple AST", "simple_ast"),
    ("Non-Live Multiple AST", "multiple"),
    ("Non-Live Parallel AST", "parallel"),
    ("Non-Live Parallel Multiple AST", "parallel_multiple"),
    ("Live Acc", "live"),
    ("Live Simple AST", "live_simple"),
    ("Live Multiple AST", "live_multiple"),
    ("Live Parallel AST", "live_parallel"),
    ("Live Parallel Multiple AST", "live_parallel_multiple"),
    ("Multi Turn Acc", "multi_turn"),
    ("Multi Turn Base", "multi_turn_base"),
    ("Multi Turn Miss Func", "multi_turn_miss_func"),
    ("Multi Turn Miss Param", "multi_turn_miss_param"),
    ("Multi Turn Long Context", "multi_turn_long_context"),
    ("Agentic Acc", "agentic"),
    ("Relevance Detection", "relevance"),
    ("Irrelevance Detection", "irrelevance"),
]
"""The leaderboard's overall-table columns we can fill, in its order (`COLUMNS_OVERALL`), -> our keys."""

_AGENTIC = ("web_search_base", "web_search_no_snippet", "memory_kv", "memory_vector", "memory_rec_sum")


def bfcl_scores(categories: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """{key: {"accuracy", "total_count", "display_accuracy"}} for every row of `ROWS` and each category.

    `categories` maps our category names to `{"accuracy", "total"}` of the ones that ran.
    """
    h = bfcl()
    score: dict[str, dict[str, Any]] = {}
    for ours, theirs in CATEGORY_FILES.items():
        if ours in categories:
            c = categories[ours]
            score[theirs] = {
                "accuracy": c["accuracy"],
                "total_count": c["total"],
                "display_accuracy": c["accuracy"],
            }
        else:
            score[theirs] = {"accuracy": 0, "total_count": 1, "display_accuracy": "N/A"}
    for name in _AGENTIC:
        score[name] = {"accuracy": 0, "total_count": 1, "display_accuracy": "N/A"}
    unweighted, weighted = h.calculate_unweighted_accuracy, h.calculate_weighted_accuracy
    simple = unweighted([score["simple_python"], score["simple_java"], score["simple_javascript"]])
    non_live_parts = [simple, score["multiple"], score["parallel"], score["parallel_multiple"]]
    live_parts = [
        score[c] for c in ("live_simple", "live_multiple", "live_parallel", "live_parallel_multiple")
    ]
    multi_turn_parts = [
        score[c]
        for c in (
            "multi_turn_base",
            "multi_turn_miss_func",
            "multi_turn_miss_param",
            "multi_turn_long_context",
        )
    ]
    groups = {
        "simple_ast": simple,
        "non_live": unweighted(non_live_parts, display_na_if_category_missing=False),
        "live": weighted(live_parts, display_na_if_category_missing=False),
        "multi_turn": unweighted(multi_turn_parts, display_na_if_category_missing=False),
        "agentic": unweighted(
            [
                unweighted([score["web_search_base"], score["web_search_no_snippet"]]),
                unweighted([score["memory_kv"], score["memory_vector"], score["memory_rec_sum"]]),
            ],
            display_na_if_category_missing=False,
        ),
        "irrelevance": unweighted([score["irrelevance"], score["live_irrelevance"]]),
        "relevance": score["live_relevance"],
    }
    groups["overall"] = h.calculate_percentage_weighted_accuracy(
        [groups["non_live"], groups["live"], groups["irrelevance"], groups["multi_turn"], groups["agentic"]],
        [10, 10, 10, 30, 40],
        display_na_if_category_missing=False,
    )
    by_key = {**{ours: score[theirs] for ours, theirs in CATEGORY_FILES.items()}, **groups}
    return {key: by_key[key] for _, key in ROWS}


def format_leaderboard(scores: Mapping[str, Mapping[str, Any]]) -> str:
    """The rows as the leaderboard prints them (`write_score_csv_file`: "12.34%" or "N/A")."""
    width = max(len(label) for label, _ in ROWS)
    lines = []
    for label, key in ROWS:
        shown = scores[key]["display_accuracy"]
        lines.append(f"{label:<{width}}  {shown if isinstance(shown, str) else f'{shown * 100:.2f}%'}")
    return "\n".join(lines)

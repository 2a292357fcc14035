"""Evaluation of tool-calling models: `rest-megatron eval bfcl|apibank|toolrl`.

cli.py        the command line: arguments, server lifecycle, table and report
serving.py    start the embedded engine or SGLang for --model, or use --server; where the tokenizer comes from
bfcl_data.py  BFCL categories, entries and answer keys, through the installed bfcl-eval's loaders
bfcl_run.py   generation: single-turn prompts, multi-turn conversations with executed calls
bfcl_env.py   BFCL's environment classes run in-process (the model's and the ground truth's)
bfcl_checker.py BFCL's own checker, decoders and aggregation functions, imported without its model handlers
bfcl_score.py verdicts per entry (BFCL's checker; algo/function_match.py scores training rewards)
bfcl_aggregate.py BFCL's overall and group scores, as its leaderboard computes and prints them
single_turn.py one prompt, one reply, one verdict (API-Bank, ToolRL)
apibank.py    API-Bank's processed level files and the ResT authors' scoring
toolrl_eval.py a prepared ToolRL split scored with the toolrl reward
report.py     progress lines, the accuracy table, the JSON report
"""

from __future__ import annotations


def main(argv: list[str]) -> int:
    """`rest-megatron eval ...` (imported lazily so `rest-megatron --help` stays fast)."""
    from rest_megatron.eval.cli import main as cli_main

    return cli_main(argv)


__all__ = ["main"]

"""`rest-megatron data`: prepare published data sets as our prompt JSONL, and inspect files.

    rest-megatron data prepare --format xlam --in xlam_function_calling_60k.json --out data/xlam
    rest-megatron data prepare --format toolrl --in rlla_4k/rlla_rl.json --out data/toolrl_4k
                               --split test=0.02 --seed 1234
    rest-megatron data prepare --format bfcl --in .../bfcl_eval/data/BFCL_v4_simple_python.json
                               --out data/bfcl-simple
    rest-megatron data inspect data/xlam/data.jsonl

Exit codes of `prepare`: 0 when at least one record was written, rejections or not (they are listed in
DIR/rejected.jsonl and counted in the summary); 1 when no valid record came out; 2 when the command line
is wrong or the input cannot be read. A partly bad data set is the normal case for public data, so it
is reported but does not fail the command; an empty result always does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rest_megatron.data.formats import ConvertOptions, format_names, get_format
from rest_megatron.data.formats.base import InputError, Rejected, iter_json_records
from rest_megatron.data.formats.prepare import REJECTED_FILE, Split, Summary, prepare

EXIT_OK, EXIT_NOTHING_VALID, EXIT_INPUT = 0, 1, 2
NUM_REJECTIONS_SHOWN = 20

_PREPARE_EPILOG = """\
formats:
{formats}

output (each run replaces them, written to a temporary name and renamed):
  DIR/data.jsonl      one record per line: messages, tools (OpenAI-style JSON schema), ground_truth
                      {{"calls": [{{"name", "arguments"}}], "ordered", "answer"?}}; point data.train_path \
at it
  DIR/train.jsonl     with --split test=F: the records, less the held-out ones (instead of data.jsonl)
  DIR/test.jsonl      with --split test=F: a fraction F of the prompts (at least one), drawn with --seed;
                      records with the same prompt, or from the same source record, stay on one side
  DIR/rejected.jsonl  {{"line", "reason", "detail"}} for every source record that was dropped
  DIR/summary.json    records read / written / rejected per reason

exit status:
  0  at least one record written (bad records are reported, not fatal: public data is rarely clean)
  1  no valid record came out of the input
  2  bad command line, or the input (or the --answers file) cannot be read
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rest-megatron data", description="Prepare and inspect data sets.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    formats = "\n".join(f"  {name:<9} {get_format(name).summary}" for name in format_names())
    prepare_parser = commands.add_parser(
        "prepare",
        help="convert a published data set to our prompt JSONL",
        description="Convert a published tool-use data set to our prompt JSONL, validating every record.",
        epilog=_PREPARE_EPILOG.format(formats=formats),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prepare_parser.add_argument("--format", required=True, choices=format_names(), help="the input's format")
    prepare_parser.add_argument(
        "--in",
        dest="source",
        required=True,
        type=Path,
        metavar="PATH",
        help="input file (JSONL or a JSON array)",
    )
    prepare_parser.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="output directory (created if missing)"
    )
    prepare_parser.add_argument(
        "--answers",
        type=Path,
        metavar="PATH",
        help="bfcl only: the possible_answer file (default: possible_answer/<input name> beside the input)",
    )
    prepare_parser.add_argument(
        "--split",
        metavar="NAME=FRACTION",
        help="hold out this fraction of the prompts as DIR/NAME.jsonl and write the rest to DIR/train.jsonl "
        "(e.g. test=0.02, as the ResT authors hold out 2%% of ToolRL's rlla_4k)",
    )
    prepare_parser.add_argument("--seed", type=int, help="seed of the --split shuffle (default 0)")
    inspect_parser = commands.add_parser(
        "inspect", help="count the records of a JSON/JSONL file and show the first"
    )
    inspect_parser.add_argument("path", type=Path, help="a JSONL file or a JSON array")
    return parser


def _print_summary(summary: Summary) -> None:
    print(f"data prepare: {summary.format} {summary.input} -> {summary.out_dir}")
    print(f"  records read      {summary.num_read}")
    print(f"  records written   {summary.num_written}")
    for name, count in summary.files.items():
        print(f"    {name:<24}{count}")
    print(f"  records rejected  {len(summary.rejections)}")
    for reason, count in summary.rejected_by_reason.items():
        print(f"    {reason:<24}{count}")
    if summary.rejections:
        print(f"  every rejection, with its line and reason: {summary.out_dir / REJECTED_FILE}")
    for rejected in summary.rejections[:NUM_REJECTIONS_SHOWN]:
        print(f"{summary.input}:{rejected.line}: {rejected.reason}: {rejected.detail}", file=sys.stderr)
    if len(summary.rejections) > NUM_REJECTIONS_SHOWN:
        print(
            f"... and {len(summary.rejections) - NUM_REJECTIONS_SHOWN} more in "
            f"{summary.out_dir / REJECTED_FILE}",
            file=sys.stderr,
        )


def prepare_main(args: argparse.Namespace) -> int:
    """`data prepare`: convert, print the summary, choose the exit code."""
    if args.answers is not None and args.format != "bfcl":
        print("rest-megatron data prepare: --answers is only for --format bfcl", file=sys.stderr)
        return EXIT_INPUT
    if args.seed is not None and not args.split:
        print(
            "rest-megatron data prepare: --seed only seeds --split; add --split test=0.02 or drop --seed",
            file=sys.stderr,
        )
        return EXIT_INPUT
    try:
        split = Split.parse(args.split, args.seed or 0) if args.split else None
        summary = prepare(args.format, args.source, args.out, ConvertOptions(answers=args.answers), split)
    except InputError as err:
        print(f"rest-megatron data prepare: {err}", file=sys.stderr)
        return EXIT_INPUT
    _print_summary(summary)
    if summary.num_written == 0:
        print(
            f"rest-megatron data prepare: no valid record in {args.source} "
            f"(is --format {args.format} right?)",
            file=sys.stderr,
        )
        return EXIT_NOTHING_VALID
    return EXIT_OK


def inspect_main(args: argparse.Namespace) -> int:
    """`data inspect`: record count, undecodable records, and the first record."""
    try:
        items = list(iter_json_records(args.path))
    except InputError as err:
        print(f"rest-megatron data inspect: {err}", file=sys.stderr)
        return EXIT_INPUT
    bad = [item for item in items if isinstance(item, Rejected)]
    good = [item for item in items if not isinstance(item, Rejected)]
    print(
        f"{args.path}: {len(good)} records"
        + (f", {len(bad)} not valid JSON (first at line {bad[0].line})" if bad else "")
    )
    if good:
        line, first = good[0]
        print(f"first record (line {line}):")
        print(json.dumps(first, indent=2, ensure_ascii=False))
    return EXIT_OK if good else EXIT_NOTHING_VALID


def main(argv: list[str]) -> int:
    """Entry point of `rest-megatron data`; returns the exit code."""
    args = _parser().parse_args(argv)
    return prepare_main(args) if args.command == "prepare" else inspect_main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

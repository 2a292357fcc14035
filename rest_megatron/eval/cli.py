"""`rest-megatron eval bfcl`: run BFCL on a model and write the report.

    rest-megatron eval bfcl --model HF_DIR --categories simple,irrelevance --limit 50 --out bfcl.json
    rest-megatron eval bfcl --server http://10.0.0.5:30000 --engine sglang --categories all --out bfcl.json

With `--model` alone the embedded CPU engine (or SGLang, `--engine sglang`) is started for the run and
stopped at its end; with `--server` an existing SGLang, vLLM or embedded server is used. Exit codes:
0 the run finished (whatever the score), 1 the server failed, 2 a usage or installation problem.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from rest_megatron.eval.bfcl_data import BfclUnavailable, load_category, package_version, parse_categories
from rest_megatron.eval.serving import ENGINES

EXIT_SERVER = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """`rest-megatron eval BENCHMARK ...`; BFCL is the one benchmark so far."""
    parser = argparse.ArgumentParser(prog="rest-megatron eval", description="Evaluate a model on a tool-use benchmark.")
    benchmarks = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    p = benchmarks.add_parser("bfcl", help="Berkeley Function Calling Leaderboard (bfcl-eval's data)",
                              description=__doc__.split("\n\n")[0])
    source = p.add_argument_group("model and server (give --model, --server or both)")
    source.add_argument("--model", help="Hugging Face folder (or tiny model name): served unless --server, and the "
                                        "tokenizer and chat template in any case")
    source.add_argument("--server", help="base URL of a running server (default: start one for --model)")
    source.add_argument("--engine", choices=ENGINES,
                        help="server kind: started for --model (embedded, sglang; default embedded); with --server "
                             "it is detected from the server, and a different --engine is an error")
    source.add_argument("--tp", type=int, default=1, help="tensor parallelism of a started SGLang server")
    source.add_argument("--server-timeout-s", type=float, default=600.0, help="how long a started server may take")
    source.add_argument("--log-dir", help="where a started server logs (default: a temporary folder)")
    p.add_argument("--categories", default="all", help="comma-separated BFCL categories, or all, single_turn, live")
    p.add_argument("--limit", type=int, help="first N entries of each category (default: all)")
    p.add_argument("--out", help="write the JSON report here")
    p.add_argument("--max-new-tokens", type=int, default=1024, help="tokens per model reply")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0: greedy)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--concurrency", type=int, default=8, help="entries in flight at once")
    p.add_argument("--max-steps", type=int, default=20, help="model rounds per multi-turn user turn (BFCL: 20)")
    p.add_argument("--mode", choices=("auto", "fc", "prompting"), default="auto",
                   help="fc: tools through the chat template (BFCL's Qwen FC handler); prompting: BFCL's system "
                        "prompt; auto: fc where the template renders tools, else prompting (default)")
    return parser


def main(argv: list[str]) -> int:
    """Entry point of `rest-megatron eval`; returns the exit code."""
    args = build_parser().parse_args(argv)
    if not args.model and not args.server:
        print("rest-megatron eval bfcl: give --model HF_DIR (start a server for it) or --server URL", file=sys.stderr)
        return EXIT_USAGE
    if args.limit is not None and args.limit < 1 or args.concurrency < 1 or args.max_steps < 1:
        print("rest-megatron eval bfcl: --limit, --concurrency and --max-steps must be >= 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        return run_bfcl(args)
    except (ValueError, BfclUnavailable) as exc:
        print(f"rest-megatron eval bfcl: {exc}", file=sys.stderr)
        return EXIT_USAGE


def run_bfcl(args: argparse.Namespace) -> int:
    """Load the entries, serve, generate and score, then print the table and write the report."""
    from rest_megatron.eval.bfcl_aggregate import bfcl_scores, format_leaderboard
    from rest_megatron.eval.report import build_report, format_table, write_report
    from rest_megatron.eval.serving import check_engine, resolve_mode, tokenizer_folder
    from rest_megatron.rollout.launch import ServerStartError
    from rest_megatron.rollout.types import InferenceError, SamplingParams, ServerUnavailable

    categories = parse_categories(args.categories)
    entries = {category: load_category(category, args.limit) for category in categories}
    sampling = SamplingParams(temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed)
    if args.server:
        try:
            args.engine = check_engine(args.server, args.engine)
        except ServerUnavailable as exc:
            print(f"rest-megatron eval bfcl: {exc}", file=sys.stderr)
            return EXIT_SERVER
    args.engine = args.engine or "embedded"
    model = tokenizer_folder(args.model, args.server)
    args.mode = resolve_mode(args.mode, model)
    started = time.time()
    try:
        results, url = asyncio.run(_generate_all(args, model, entries, sampling))
    except InferenceError as exc:
        print(f"rest-megatron eval bfcl: inference failed: {exc}", file=sys.stderr)
        return EXIT_SERVER
    except ServerStartError as exc:  # the message ends with the server's log tail
        print(f"rest-megatron eval bfcl: {exc}", file=sys.stderr)
        return EXIT_SERVER
    meta = {"model": str(model), "server": args.server or url, "engine": args.engine, "categories": categories,
            "limit": args.limit, "sampling": vars(sampling), "max_steps": args.max_steps, "mode": args.mode,
            "bfcl_eval_version": package_version(), "multi_turn_environment": "in-process",
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "duration_s": round(time.time() - started, 3)}
    report = build_report("bfcl", results, meta)
    report["bfcl_scores"] = bfcl_scores(report["categories"])
    print(format_table(report))
    print(f"\nBFCL leaderboard scores (bfcl-eval {meta['bfcl_eval_version']}; categories not run count 0, as in BFCL):")
    print(format_leaderboard(report["bfcl_scores"]))
    if args.out:
        print(f"report written to {write_report(report, args.out)}", file=sys.stderr)
    return 0


async def _generate_all(args: argparse.Namespace, model: Any, entries: dict, sampling: Any) -> tuple[dict, str]:
    import transformers

    from rest_megatron.eval.bfcl_run import BfclRunner, RunSettings
    from rest_megatron.eval.serving import inference_server
    from rest_megatron.rollout.clients import make_client

    tokenizer = transformers.AutoTokenizer.from_pretrained(model)
    settings = RunSettings(sampling=sampling, concurrency=args.concurrency, max_steps=args.max_steps, mode=args.mode)
    with inference_server(model=model, server=args.server, engine=args.engine, log_dir=args.log_dir,
                          timeout_s=args.server_timeout_s, tp=args.tp, seed=args.seed) as url:
        client = make_client(args.engine, url)
        try:
            runner = BfclRunner(client, tokenizer, settings)
            results = {category: await runner.run_category(category, items) for category, items in entries.items()}
        finally:
            await client.aclose()
    return results, url

"""`rest-megatron eval bfcl|apibank|toolrl`: run a benchmark on a model and write the report.

    rest-megatron eval bfcl --model HF_DIR --categories simple,irrelevance --limit 50 --out bfcl.json
    rest-megatron eval bfcl --server http://10.0.0.5:30000 --categories all --out bfcl.json
    rest-megatron eval apibank --model HF_DIR --data apibank/ --levels 1,2,3 --out apibank.json
    rest-megatron eval toolrl --model runs/x/hf --data data/toolrl_4k/test.jsonl --out toolrl.json

With `--model` alone the embedded CPU engine (or SGLang, `--engine sglang`) is started for the run and
stopped at its end; with `--server` an existing SGLang, vLLM or embedded server is used and its engine
is detected. Exit codes: 0 the run finished (whatever the score), 1 the server failed or refused a
request (nothing is scored then), 2 a usage, data or installation problem.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from rest_megatron.eval.serving import ENGINES

EXIT_SERVER = 1
EXIT_USAGE = 2


def _add_common(p: argparse.ArgumentParser, *, max_new_tokens: int) -> None:
    source = p.add_argument_group("model and server (give --model, --server or both)")
    source.add_argument(
        "--model",
        help="Hugging Face folder (or tiny model name): served unless --server, and the "
        "tokenizer and chat template in any case",
    )
    source.add_argument("--server", help="base URL of a running server (default: start one for --model)")
    source.add_argument(
        "--engine",
        choices=ENGINES,
        help="server kind: started for --model (embedded, sglang; default embedded); with --server "
        "it is detected from the server, and a different --engine is an error",
    )
    source.add_argument("--tp", type=int, default=1, help="tensor parallelism of a started SGLang server")
    source.add_argument(
        "--server-timeout-s", type=float, default=600.0, help="how long a started server may take"
    )
    source.add_argument("--log-dir", help="where a started server logs (default: a temporary folder)")
    p.add_argument("--limit", type=int, help="first N entries of each category or level (default: all)")
    p.add_argument("--out", help="write the JSON report here")
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens, help="tokens per model reply")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0: greedy)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--concurrency", type=int, default=8, help="entries in flight at once")


def build_parser() -> argparse.ArgumentParser:
    """`rest-megatron eval BENCHMARK ...`."""
    parser = argparse.ArgumentParser(
        prog="rest-megatron eval", description="Evaluate a model on a tool-use benchmark."
    )
    benchmarks = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    p = benchmarks.add_parser(
        "bfcl", help="Berkeley Function Calling Leaderboard, by bfcl-eval's own checker"
    )
    _add_common(p, max_new_tokens=1024)
    p.add_argument(
        "--categories",
        default="all",
        help="comma-separated BFCL categories, or all, single_turn, non_live, live, multi_turn",
    )
    p.add_argument(
        "--max-steps", type=int, default=20, help="model rounds per multi-turn user turn (BFCL: 20)"
    )
    p.add_argument(
        "--mode",
        choices=("auto", "fc", "prompting"),
        default="auto",
        help="fc: tools through the chat template (BFCL's Qwen FC handler); prompting: BFCL's system "
        "prompt; auto: fc where the template renders tools, else prompting (default)",
    )
    p = benchmarks.add_parser("apibank", help="API-Bank levels 1-3 under the ResT authors' protocol")
    _add_common(p, max_new_tokens=1024)
    p.add_argument(
        "--data", required=True, help="folder holding level-{1,2,3}-api_processed.json (ToolRL's release)"
    )
    p.add_argument("--levels", default="1,2,3", help="comma-separated levels (default 1,2,3)")
    p = benchmarks.add_parser(
        "toolrl", help="a prepared ToolRL split, scored with the authors' toolrl reward"
    )
    _add_common(p, max_new_tokens=1024)
    p.add_argument(
        "--data",
        required=True,
        help="JSONL from `rest-megatron data prepare --format toolrl` (e.g. its held-out test.jsonl)",
    )
    p.add_argument(
        "--reward-step", type=int, default=0, help="training step whose reward ranges apply (default 0)"
    )
    return parser


def main(argv: list[str]) -> int:
    """Entry point of `rest-megatron eval`; returns the exit code."""
    from rest_megatron.eval.apibank import ApiBankDataError
    from rest_megatron.eval.bfcl_data import BfclUnavailable
    from rest_megatron.eval.toolrl_eval import ToolRLDataError

    args = build_parser().parse_args(argv)
    name = f"rest-megatron eval {args.benchmark}"
    if not args.model and not args.server:
        print(f"{name}: give --model HF_DIR (start a server for it) or --server URL", file=sys.stderr)
        return EXIT_USAGE
    if args.limit is not None and args.limit < 1 or args.concurrency < 1 or getattr(args, "max_steps", 1) < 1:
        print(f"{name}: --limit, --concurrency and --max-steps must be >= 1", file=sys.stderr)
        return EXIT_USAGE
    run = {"bfcl": run_bfcl, "apibank": run_apibank, "toolrl": run_toolrl}[args.benchmark]
    try:
        return run(args)
    except (ValueError, BfclUnavailable, ApiBankDataError, ToolRLDataError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _prepare_server(args: argparse.Namespace) -> Any:
    """Check --server and --engine, and find the tokenizer folder, before anything is scored.

    Raises:
        ServerUnavailable: nothing answers at --server.
        ValueError: --engine contradicts the server, or no tokenizer folder.
    """
    from rest_megatron.eval.serving import check_engine, tokenizer_folder

    if args.server:
        args.engine = check_engine(args.server, args.engine)
    args.engine = args.engine or "embedded"
    return tokenizer_folder(args.model, args.server)


@contextlib.asynccontextmanager
async def _client(args: argparse.Namespace, model: Any) -> AsyncIterator[tuple[Any, str]]:
    """The inference client (a server started for --model, stopped on exit) and the URL it talks to."""
    from rest_megatron.eval.serving import inference_server
    from rest_megatron.rollout.clients import make_client

    with inference_server(
        model=model,
        server=args.server,
        engine=args.engine,
        log_dir=args.log_dir,
        timeout_s=args.server_timeout_s,
        tp=args.tp,
        seed=args.seed,
    ) as url:
        client = make_client(args.engine, url)
        try:
            yield client, url
        finally:
            await client.aclose()


def _execute(
    args: argparse.Namespace,
    generate: Callable[[Any, Any, Any], Any],
    finish: Callable[[dict, dict], dict],
    before: Callable[[Any, Any], None] | None = None,
) -> int:
    """Check the server, run `before(model, tokenizer)` (may raise ValueError), serve, run
    `generate(client, tokenizer, sampling)` -> {category: results}, then report."""
    import transformers

    from rest_megatron.eval.report import build_report, format_table, write_report
    from rest_megatron.rollout.launch import ServerStartError
    from rest_megatron.rollout.types import InferenceError, SamplingParams

    name = f"rest-megatron eval {args.benchmark}"
    try:
        model = _prepare_server(args)
    except InferenceError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return EXIT_SERVER
    tokenizer = transformers.AutoTokenizer.from_pretrained(model)
    if before is not None:
        before(model, tokenizer)
    sampling = SamplingParams(
        temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed
    )
    started = time.time()

    async def go() -> tuple[dict, str]:
        async with _client(args, model) as (client, url):
            return await generate(client, tokenizer, sampling), url

    try:
        results, url = asyncio.run(go())
    except (InferenceError, ServerStartError) as exc:  # a ServerStartError ends with the server's log tail
        print(f"{name}: inference failed, nothing scored: {exc}", file=sys.stderr)
        return EXIT_SERVER
    meta = {
        "model": str(model),
        "server": args.server or url,
        "engine": args.engine,
        "limit": args.limit,
        "sampling": vars(sampling),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 3),
    }
    report = finish(build_report(args.benchmark, results, meta), results)
    print(format_table(report))
    if args.out:
        print(f"report written to {write_report(report, args.out)}", file=sys.stderr)
    return 0


def run_bfcl(args: argparse.Namespace) -> int:
    """BFCL: load the entries (errors before serving), generate, judge by BFCL's checker, BFCL's scores."""
    from rest_megatron.eval.bfcl_aggregate import bfcl_scores, format_leaderboard
    from rest_megatron.eval.bfcl_data import load_category, package_version, parse_categories
    from rest_megatron.eval.bfcl_run import BfclRunner, RunSettings
    from rest_megatron.eval.serving import resolve_mode

    categories = parse_categories(args.categories)
    entries = {category: load_category(category, args.limit) for category in categories}

    async def generate(client: Any, tokenizer: Any, sampling: Any) -> dict:
        settings = RunSettings(
            sampling=sampling, concurrency=args.concurrency, max_steps=args.max_steps, mode=args.mode
        )
        runner = BfclRunner(client, tokenizer, settings)
        return {category: await runner.run_category(category, items) for category, items in entries.items()}

    def finish(report: dict, results: dict) -> dict:
        report["meta"].update(
            categories=categories,
            max_steps=args.max_steps,
            mode=args.mode,
            bfcl_eval_version=package_version(),
            multi_turn_environment="in-process",
        )
        report["bfcl_scores"] = bfcl_scores(report["categories"])
        print(
            f"BFCL leaderboard scores (bfcl-eval {package_version()}; "
            "categories not run count 0, as in BFCL):\n"
            f"{format_leaderboard(report['bfcl_scores'])}\n"
        )
        return report

    def check_template(model: Any, tokenizer: Any) -> None:
        args.mode = resolve_mode(args.mode, tokenizer, str(model))

    return _execute(args, generate, finish, before=check_template)


def run_apibank(args: argparse.Namespace) -> int:
    """API-Bank: load the levels (errors before serving), generate, the authors' soft match."""
    from rest_megatron.eval import apibank
    from rest_megatron.eval.single_turn import run_prompts

    levels = {
        f"level_{level}": apibank.load_level(args.data, level, args.limit)
        for level in apibank.parse_levels(args.levels)
    }

    by_id = {entry.id: entry for entries in levels.values() for entry in entries}

    async def generate(client: Any, tokenizer: Any, sampling: Any) -> dict:
        out = {}
        for name, entries in levels.items():
            out[name] = await run_prompts(
                client,
                tokenizer,
                [apibank.prompt_of(e) for e in entries],
                sampling,
                lambda prompt, text: apibank.judge(by_id[prompt.id], text),
                label=f"apibank {name}",
                concurrency=args.concurrency,
            )
        return out

    def finish(report: dict, results: dict) -> dict:
        report["meta"].update(
            data=str(args.data), levels=list(levels), protocol="ResT authors' API-Bank evaluate.py"
        )
        report["apibank"] = apibank.level_summary(results)
        print(
            "API-Bank (authors' leaderboard): " + ", ".join(f"{k} {v}%" for k, v in report["apibank"].items())
        )
        return report

    return _execute(args, generate, finish)


def run_toolrl(args: argparse.Namespace) -> int:
    """ToolRL held-out split: generate, the authors' toolrl reward."""
    from rest_megatron.eval import toolrl_eval
    from rest_megatron.eval.single_turn import run_prompts

    records = toolrl_eval.load_records(args.data, args.limit)
    truth = {prompt.id: ground_truth for prompt, ground_truth in records}
    if len(truth) != len(records):
        raise ValueError(f"{args.data}: record ids repeat; each record needs a distinct id")

    async def generate(client: Any, tokenizer: Any, sampling: Any) -> dict:
        return {
            "toolrl": await run_prompts(
                client,
                tokenizer,
                [prompt for prompt, _ in records],
                sampling,
                lambda prompt, text: toolrl_eval.judge(prompt, text, truth[prompt.id], args.reward_step),
                label="toolrl",
                concurrency=args.concurrency,
            )
        }

    def finish(report: dict, results: dict) -> dict:
        report["meta"].update(data=str(args.data), reward="toolrl", reward_step=args.reward_step)
        report["toolrl"] = toolrl_eval.reward_summary(results["toolrl"])
        print("ToolRL reward: " + ", ".join(f"{k} {v:.4f}" for k, v in report["toolrl"].items()))
        return report

    return _execute(args, generate, finish)

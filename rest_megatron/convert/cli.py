"""`rest-megatron convert from-hf` and `rest-megatron convert to-hf`.

Both also run as `python -m rest_megatron.convert.cli {from-hf,to-hf} ...`, which is the form
torchrun launches. Input errors (a missing shard, a config that disagrees with the weights, an
unknown architecture, a non-empty output directory) print one message naming the file or key and
the fix, and exit with code 2.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

EXIT_INPUT = 2

FROM_HF_LAUNCH = """\
launching:
  torchrun --nproc-per-node TP*PP -m rest_megatron.convert.cli from-hf ...
      one process per rank (several nodes: see slurm/convert.sbatch); on GPUs with NCCL.
  rest-megatron convert from-hf ... --tp 2 --pp 2
      without torchrun, this process spawns TP*PP CPU ranks itself (gloo, via
      rest_megatron.testing.gloo.GlooPool); TP*PP = 1 converts in this process.
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def _world() -> Iterator[None]:
    """Use the process group torchrun (or a caller) set up, else a one-rank gloo group for this call."""
    import torch.distributed as dist

    from rest_megatron.distributed import init_distributed

    if dist.is_initialized():
        yield
        return
    if "WORLD_SIZE" in os.environ:  # torchrun
        init_distributed()
        yield
        return
    init_distributed(
        backend="gloo", device="cpu", rank=0, world_size=1, init_method=f"tcp://127.0.0.1:{_free_port()}"
    )
    try:
        yield
    finally:
        dist.destroy_process_group()


def _report_errors(run: Callable[[], Any]) -> int:
    from rest_megatron.trainer.checkpoint import CheckpointError

    try:
        run()
    except (ValueError, CheckpointError) as err:
        if _is_rank_zero():  # under torchrun every rank finds the same problem; say it once
            print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT
    return 0


def _is_rank_zero() -> bool:
    import torch.distributed as dist

    if dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0  # torchrun, before the process group exists


# ------------------------------------------------------------------------------------------ from-hf
def from_hf_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rest-megatron convert from-hf",
        description="Hugging Face folder -> Megatron distributed checkpoint (step 0) that training starts "
        "from and that loads at any TP/PP with the same padded vocabulary.",
        epilog=FROM_HF_LAUNCH,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--hf", required=True, help="Hugging Face model folder (config.json + safetensors)")
    parser.add_argument("--out", required=True, help="checkpoint root to create (must not exist or be empty)")
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel size (default 1)")
    parser.add_argument("--pp", type=int, default=1, help="pipeline-parallel size (default 1)")
    parser.add_argument(
        "--dtype", default="auto", help="auto (the config's dtype), float32, bfloat16 or float16"
    )
    parser.add_argument(
        "--padded-vocab-multiple",
        type=int,
        default=128,
        help="pad the vocabulary to a multiple of this × TP, as the trainer does (default 128)",
    )
    return parser


def from_hf_main(argv: Sequence[str]) -> int:
    """Entry point of `convert from-hf`; returns the exit code."""
    args = from_hf_parser().parse_args(list(argv))
    if args.tp < 1 or args.pp < 1:
        print(f"error: --tp and --pp must be >= 1, got --tp {args.tp} --pp {args.pp}", file=sys.stderr)
        return EXIT_INPUT
    import torch.distributed as dist

    from rest_megatron.convert.from_hf import convert_from_hf

    options = dict(tp=args.tp, pp=args.pp, dtype=args.dtype, padded_vocab_multiple=args.padded_vocab_multiple)
    result: list[str] = []
    in_this_process = dist.is_initialized() or "WORLD_SIZE" in os.environ or args.tp * args.pp == 1

    def run() -> None:
        _precheck(
            args.hf, args.out, args.dtype, tp=args.tp, pp=args.pp
        )  # input errors: before any rank starts
        if in_this_process:
            with _world():
                result.append(convert_from_hf(args.hf, args.out, **options))
        else:
            result.append(_spawn(args.tp * args.pp, convert_from_hf, args.hf, args.out, **options)[0])

    code = _report_errors(run)
    if code == 0 and _is_rank_zero():
        print(f"wrote {result[0]}")
    return code


def _precheck(hf: str, out: str, dtype: str, *, tp: int, pp: int) -> None:
    from rest_megatron.config.validation import layout_errors
    from rest_megatron.convert.from_hf import resolve_dtype
    from rest_megatron.convert.hf_files import HFWeights, check_empty_output, read_config

    config, spec, adapter = read_config(hf)
    errors = layout_errors(config, tp=tp, pp=pp, tp_key="--tp", pp_key="--pp")
    if errors:
        raise ValueError("; ".join(errors))
    HFWeights.open(hf, spec=spec, adapter=adapter)
    resolve_dtype(dtype, config)
    check_empty_output(out, "--out")


def _spawn(world_size: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> list[Any]:
    """Run `fn` on `world_size` CPU gloo ranks started here (a GPU, if any, is hidden from them).

    A rank's input error (ValueError, CheckpointError) comes back as that error with its own message,
    so the caller prints one line and exits 2 instead of a page of per-rank tracebacks.
    """
    from rest_megatron.testing.gloo import DistributedRunError, GlooPool

    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # spawned children inherit it: gloo ranks stay on the CPU
    try:
        with GlooPool(world_size, timeout_s=24 * 3600.0, collective_timeout_s=3600.0) as pool:
            return pool.run(fn, *args, **kwargs)
    except DistributedRunError as err:
        input_error = re.search(r"raised:\n(?:ValueError|CheckpointError): (.*)", str(err))
        if input_error:
            raise ValueError(input_error.group(1)) from None
        raise
    finally:
        if hidden is None:
            del os.environ["CUDA_VISIBLE_DEVICES"]
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = hidden


# -------------------------------------------------------------------------------------------- to-hf
def to_hf_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rest-megatron convert to-hf",
        description="Megatron distributed checkpoint (saved at any TP/PP, optimizer state or not) -> "
        "Hugging Face folder: safetensors shards + index, config.json, generation_config.json, tokenizer. "
        "Runs in one process and streams one layer at a time.",
    )
    parser.add_argument(
        "--ckpt", required=True, help="checkpoint root (uses `latest`) or a step_XXXXXXXX directory"
    )
    parser.add_argument("--out", required=True, help="folder to create (must not exist or be empty)")
    parser.add_argument(
        "--hf-source",
        default=None,
        help="Hugging Face folder the run started from (config + tokenizer); "
        "default: the checkpoint's record",
    )
    parser.add_argument(
        "--dtype", default="auto", help="auto (the checkpoint's), float32, bfloat16 or float16"
    )
    parser.add_argument(
        "--max-shard-size", default="5GB", help="largest safetensors shard, e.g. 5GB, 500MB (default 5GB)"
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: when stderr is a terminal)",
    )
    return parser


def to_hf_main(argv: Sequence[str]) -> int:
    """Entry point of `convert to-hf`; returns the exit code."""
    args = to_hf_parser().parse_args(list(argv))
    from rest_megatron.convert.to_hf import plan_export, write_export

    result: list[Any] = []

    def run() -> None:
        plan = plan_export(
            args.ckpt,
            args.out,
            hf_source=args.hf_source,
            dtype=args.dtype,
            max_shard_size=args.max_shard_size,
        )
        with _world():
            result.append(write_export(plan, progress=args.progress))

    code = _report_errors(run)
    if code == 0 and _is_rank_zero():
        print(f"wrote {result[0]}")
    return code


COMMANDS = {"from-hf": from_hf_main, "to-hf": to_hf_main}


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m rest_megatron.convert.cli {from-hf,to-hf} ...`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m rest_megatron.convert.cli {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        return EXIT_INPUT
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())

"""`rest-megatron plan RECIPE [key=value ...] --gpus N --gpu-mem GB`: will this recipe fit, and how?

An `argv` command (not a `recipe` one) because it needs options of its own and must load a recipe whose
model and data are not downloaded yet: it validates everything `train` does except that files exist,
and takes the model's shape from its config.json, or from the built-in table when it is not local.
Exit codes: 0 a layout fits, 1 nothing fits (the message says by how much and what to change), 2 a bad
command line or config.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rest_megatron.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    read_recipe,
    resolve,
    validate,
)
from rest_megatron.plan.architectures import find_model_config
from rest_megatron.plan.memory import Architecture
from rest_megatron.plan.planner import PlanRefused, make_plan, rollout_gpus
from rest_megatron.plan.report import format_plan

EXIT_REFUSED = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rest-megatron plan",
        description="Estimate per-GPU memory of a recipe and recommend a TP/PP/DP layout for N GPUs.",
    )
    parser.add_argument("recipe", help="path of a YAML recipe (see recipes/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. parallel.micro_batch_size=2")
    parser.add_argument(
        "--gpus",
        type=int,
        default=None,
        help="GPUs of the whole job, rollout servers included (default: what the recipe launches)",
    )
    parser.add_argument(
        "--gpu-mem", type=float, default=80.0, help="memory of one GPU in GiB; an 80 GB H100 has 80 [80]"
    )
    parser.add_argument(
        "--headroom",
        type=float,
        default=0.1,
        help="fraction of each GPU kept free for CUDA context, NCCL buffers, fragmentation [0.1]",
    )
    parser.add_argument(
        "--head-chunk", type=int, default=1024, help="rows per chunk of the fused output head [1024]"
    )
    parser.add_argument(
        "--no-flash-attention",
        action="store_true",
        help="count the materialized attention scores (Megatron's local spec, no Transformer Engine)",
    )
    return parser


def load_for_plan(recipe: str, overrides: Sequence[str]) -> tuple[Config, dict[str, Any], str, Architecture]:
    """The validated config (no file-existence checks), the model's HF config, its source and shape.

    Raises:
        ConfigError: a bad recipe or override, or a model that is neither local nor known.
    """
    # The one reader of HF configs (it imports torch); the planning modules themselves stay pure Python.
    from rest_megatron.model.builder import model_spec_from_hf

    config = resolve(
        config_from_dict(apply_overrides(read_recipe(recipe), overrides)), recipe_name=Path(recipe).stem
    )
    hf, source = find_model_config(config.model.path)
    validate(config, model_config=hf, require_paths=False)
    try:
        spec = model_spec_from_hf(hf)
    except KeyError as err:
        raise ConfigError(f"model.path '{config.model.path}': its config.json lacks {err}") from None
    except ValueError as err:
        raise ConfigError(f"model.path '{config.model.path}': {err}") from None
    return config, hf, source, Architecture.from_spec(spec)


def plan_main(argv: Sequence[str]) -> int:
    """Entry point of `rest-megatron plan`; returns the exit code."""
    args = build_parser().parse_intermixed_args(list(argv))
    try:
        config, hf, source, arch = load_for_plan(args.recipe, args.overrides)
    except ConfigError as err:
        print(f"rest-megatron plan: config error: {err}", file=sys.stderr)
        return EXIT_USAGE
    num_gpus = args.gpus if args.gpus is not None else config.world_size + rollout_gpus(config)
    try:
        plan = make_plan(
            config,
            arch,
            num_gpus=num_gpus,
            gpu_gib=args.gpu_mem,
            headroom=args.headroom,
            head_chunk=args.head_chunk,
            flash_attention=not args.no_flash_attention,
        )
    except PlanRefused as err:
        print(f"rest-megatron plan: does not fit: {err}", file=sys.stderr)
        return EXIT_REFUSED
    name = (hf.get("architectures") or [hf.get("model_type", "?")])[0]
    print(format_plan(plan, recipe_path=args.recipe, model_source=source, model_name=name))
    return 0

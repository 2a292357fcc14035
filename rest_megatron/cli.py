"""The `rest-megatron` command: argument parsing and dispatch, nothing else.

Each subcommand is one row of `COMMANDS`, naming the function that implements it as
"module:function". Modules are imported only when their subcommand runs, so `--help` and `doctor`
stay fast and a build without, say, the trainer still runs the rest. Two kinds of rows:

- recipe commands (`train`) take `RECIPE [key=value ...]`; the CLI loads and validates the
  config first, so config errors print as one message with exit code 2, and calls `fn(config) -> int`.
- pass-through commands hand their remaining arguments to `fn(argv: list[str]) -> int`, which owns
  its own argparse (and its own `--help`). `plan` is one: it has options of its own and loads recipes
  whose model and data are not downloaded yet.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from rest_megatron.config import Config

EXIT_USAGE = 2
"""Exit code for a bad command line, a bad config, or a subcommand missing from this build."""


@dataclass(frozen=True)
class Command:
    """One subcommand: where it lives and how it takes its arguments."""

    target: str
    """"package.module:function" implementing it."""

    kind: Literal["recipe", "argv"]
    """`recipe`: fn(config) after load + validate; `argv`: fn(remaining arguments)."""

    help: str
    """One line for `rest-megatron --help`."""


COMMANDS: dict[str, Command] = {
    "train": Command(
        "rest_megatron.trainer.loop:train_main", "recipe", "train a policy with ResT from a recipe"
    ),
    "plan": Command(
        "rest_megatron.plan.main:plan_main",
        "argv",
        "per-GPU memory of a recipe and a TP/PP/DP layout for N GPUs",
    ),
    "convert to-hf": Command(
        "rest_megatron.convert.cli:to_hf_main", "argv", "Megatron checkpoint -> Hugging Face folder"
    ),
    "convert from-hf": Command(
        "rest_megatron.convert.cli:from_hf_main", "argv", "Hugging Face folder -> Megatron checkpoint"
    ),
    "rollout-server": Command(
        "rest_megatron.rollout.embedded_server:main", "argv", "run the embedded CPU inference server"
    ),
    "serve-command": Command(
        "rest_megatron.rollout.server_commands:serve_command_main",
        "argv",
        "print the inference-server command line of a recipe (what slurm/train.sbatch runs)",
    ),
    "sandbox-server": Command("tools_sandbox.server:main", "argv", "run the tool-execution sandbox service"),
    "eval": Command(
        "rest_megatron.eval:main",
        "argv",
        "evaluate a model on a tool-use benchmark (BFCL, API-Bank, a ToolRL split)",
    ),
    "data": Command("rest_megatron.data.cli:main", "argv", "inspect and prepare data sets"),
    "doctor": Command("rest_megatron.doctor:main", "argv", "report what this machine can run"),
}
"""Subcommand ("convert to-hf" is nested) -> implementation."""


class Unavailable(Exception):
    """The module or function behind a subcommand is not in this build."""


def resolve_target(target: str) -> Callable[..., int]:
    """Import "module:function" and return the function, or raise `Unavailable` saying what is missing."""
    module_name, _, function_name = target.partition(":")
    try:
        found = importlib.util.find_spec(module_name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        found = False
    if not found:
        raise Unavailable(f"module {module_name} missing")
    # Import errors inside an existing module are real bugs: let them raise with their traceback.
    module = importlib.import_module(module_name)
    function = getattr(module, function_name, None)
    if not callable(function):
        raise Unavailable(f"{module_name} has no function {function_name}")
    return function


def build_parser() -> argparse.ArgumentParser:
    """The parser; pass-through subcommands swallow every remaining argument, `--help` included."""
    parser = argparse.ArgumentParser(
        prog="rest-megatron",
        description="ResT reinforcement learning for tool-using LLMs on Megatron-core.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for name, command in COMMANDS.items():
        group, _, leaf = name.rpartition(" ")
        if group and group not in groups:
            group_parser = subparsers.add_parser(group, help=f"{group} ({', '.join(_leaves(group))})")
            groups[group] = group_parser.add_subparsers(
                dest="subcommand", metavar="SUBCOMMAND", required=True
            )
        target = groups[group] if group else subparsers
        if command.kind == "recipe":
            sub = target.add_parser(leaf, help=command.help, description=command.help)
            sub.add_argument("recipe", nargs="?", help="path of a YAML recipe (see recipes/)")
            sub.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. parallel.tp=2")
            sub.add_argument(
                "--resume",
                metavar="RUN_DIR",
                help="continue that run from its latest checkpoint, "
                "with the config it saved (key=value overrides still apply)",
            )
        else:
            # No option prefix: everything after the subcommand, `--help` too, goes to its own parser.
            sub = target.add_parser(leaf, help=command.help, add_help=False, prefix_chars="\0")
            sub.add_argument("args", nargs=argparse.REMAINDER)
        sub.set_defaults(command_name=name)
    return parser


def _leaves(group: str) -> list[str]:
    return [name.split(" ", 1)[1] for name in COMMANDS if name.startswith(group + " ")]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rest-megatron` console script; returns the exit code."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    name = args.command_name
    command = COMMANDS[name]
    config = None
    if command.kind == "recipe":
        # The config comes first, so its errors surface even where the subcommand is not built yet.
        config = _load_recipe(name, args.recipe, args.overrides, resume=args.resume)
        if config is None:
            return EXIT_USAGE
    try:
        function = resolve_target(command.target)
    except Unavailable as err:
        print(f"`rest-megatron {name}` is not available in this build yet ({err})", file=sys.stderr)
        return EXIT_USAGE
    return int(function(config if command.kind == "recipe" else list(args.args)) or 0)


def _load_recipe(
    name: str, recipe: str | None, overrides: Sequence[str], *, resume: str | None = None
) -> Config | None:
    """The validated config, or None after printing the config error (no traceback: it is user input).

    With `resume`, the recipe is the run directory's saved config, pinned to that directory and to
    resuming from its newest checkpoint.
    """
    from rest_megatron.config import RESOLVED_CONFIG_NAME, ConfigError, load_config

    if resume is not None:
        if recipe is not None and "=" in recipe:  # argparse took the first override for the recipe
            overrides, recipe = [recipe, *overrides], None
        saved = Path(resume) / RESOLVED_CONFIG_NAME
        if recipe is not None or not saved.is_file():
            problem = (
                f"give either a recipe or --resume, not both (got {recipe})"
                if recipe is not None
                else f"{saved} does not exist: --resume takes the run directory of an earlier `rest-megatron "
                f"{name}` (the folder holding {RESOLVED_CONFIG_NAME} and checkpoints/)"
            )
            print(f"rest-megatron {name}: {problem}", file=sys.stderr)
            return None
        recipe, overrides = str(saved), [f"logging.run_dir={resume}", "checkpoint.resume=auto", *overrides]
    elif recipe is None:
        print(f"rest-megatron {name}: give a recipe (see recipes/) or --resume RUN_DIR", file=sys.stderr)
        return None

    # Under torchrun the real world size is known; validate against it rather than launch.*.
    world_size = int(os.environ["WORLD_SIZE"]) if "WORLD_SIZE" in os.environ else None
    try:
        return load_config(recipe, overrides, world_size=world_size)
    except ConfigError as err:
        print(f"rest-megatron {name}: config error: {err}", file=sys.stderr)
        return None


if __name__ == "__main__":
    sys.exit(main())

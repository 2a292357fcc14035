"""The `rest-megatron` CLI: help, dispatch by table, missing modules, config errors through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rest_megatron import cli
from rest_megatron.cli import COMMANDS, Command, Unavailable, main, resolve_target
from rest_megatron.config import Config
from tests.config.conftest import write_model_dir

REPO = Path(__file__).resolve().parents[1]
CONSOLE_SCRIPT = Path(sys.executable).parent / "rest-megatron"
TINY_CPU = str(REPO / "recipes" / "tiny-cpu.yaml")
TINY_CPU_TP2 = str(REPO / "recipes" / "tiny-cpu-tp2.yaml")

received: list[Config] = []


def record_config(config: Config) -> int:
    """A `train` implementation for these tests: keeps the config the CLI hands over."""
    received.append(config)
    return 0


@pytest.fixture
def model_override(tmp_path: Path) -> str:
    """Point the tiny recipes at a tiny-shaped model dir, so the tests do not depend on assets."""
    return (
        f"model.path={write_model_dir(tmp_path / 'tiny', heads=4, kv_heads=2, layers=4, max_positions=4096)}"
    )


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for name in ("train", "convert", "rollout-server", "sandbox-server", "eval", "doctor", "plan", "data"):
        assert f"    {name}" in out
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    assert "to-hf" in (out := capsys.readouterr().out) and "from-hf" in out


def test_console_script_is_installed_and_shows_help() -> None:
    proc = subprocess.run([str(CONSOLE_SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "sandbox-server" in proc.stdout and "doctor" in proc.stdout


def test_every_table_entry_is_missing_or_resolves() -> None:
    # A row whose module exists must name a real function: this catches a renamed entry point.
    for name, command in COMMANDS.items():
        try:
            assert callable(resolve_target(command.target)), name
        except Unavailable as err:
            assert str(err) == f"module {command.target.split(':')[0]} missing", name


def test_missing_module_prints_a_clear_message_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(COMMANDS, "frobnicate", Command("rest_megatron.no_such_module:main", "argv", "x"))
    assert main(["frobnicate", "--flag"]) == 2
    assert capsys.readouterr().err.strip() == (
        "`rest-megatron frobnicate` is not available in this build yet "
        "(module rest_megatron.no_such_module missing)"
    )
    monkeypatch.setitem(COMMANDS, "frobnicate", Command("rest_megatron.doctor:no_such_function", "argv", "x"))
    assert main(["frobnicate"]) == 2
    assert "(rest_megatron.doctor has no function no_such_function)" in capsys.readouterr().err


def test_pass_through_commands_get_all_remaining_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--json"]) == 0  # --json reaches the doctor's own parser
    names = [check["name"] for check in json.loads(capsys.readouterr().out)]
    assert "megatron-core" in names
    with pytest.raises(SystemExit) as exit_:
        main(["doctor", "--help"])  # and so does --help
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("usage: rest-megatron doctor")


def test_train_hands_a_validated_config_with_overrides(
    monkeypatch: pytest.MonkeyPatch, model_override: str
) -> None:
    monkeypatch.setitem(COMMANDS, "train", Command(f"{__name__}:record_config", "recipe", "x"))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    received.clear()
    assert (
        main(["train", TINY_CPU, model_override, "algorithm.weights=entropy", "optimizer.num_steps=2"]) == 0
    )
    (config,) = received
    assert (config.algorithm.weights, config.optimizer.num_steps) == ("entropy", 2)
    assert config.logging.run_dir.startswith("runs/tiny-cpu-")


def test_train_config_errors_exit_2_with_the_message(
    model_override: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main(["train", TINY_CPU, model_override, "algorithm.weigths=entropy"]) == 2
    assert capsys.readouterr().err.strip() == (
        "rest-megatron train: config error: unknown key 'algorithm.weigths'; "
        "did you mean 'algorithm.weights'?"
    )
    # torchrun's WORLD_SIZE is what the layout is checked against
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert main(["train", TINY_CPU_TP2, model_override]) == 2
    assert "world size 3 is not divisible by parallel.tp × parallel.pp = 2" in capsys.readouterr().err


def test_config_error_through_the_console_script_has_no_traceback(model_override: str) -> None:
    proc = subprocess.run(
        [str(CONSOLE_SCRIPT), "train", TINY_CPU, model_override, "parallel.tp=two"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "config error: parallel.tp must be int, got str 'two'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["bogus"])
    assert exit_.value.code == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err


def test_cli_module_has_no_heavy_imports() -> None:
    # `--help` must stay fast: the table is strings, nothing behind it is imported up front.
    code = (
        "import sys, rest_megatron.cli; print(sorted(m for m in ('torch', 'megatron') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.stdout.strip() == "[]", proc.stderr
    assert cli.EXIT_USAGE == 2

"""BFCL multi-turn environments (file system, math, messaging, posting, ticket, trading, travel,
vehicle), from the `bfcl-eval` package installed without its dependency tree (the `bfcl` extra).

The service reads only the function-doc JSON files that ship with the package, for the schemas; the
classes themselves are imported and run inside the sandbox worker, one instance per session, loaded
with the dataset entry's `initial_config` (pass it as the session's `config`, keyed by class name).
MathAPI additionally needs `mpmath`.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from tools_sandbox.tools.registry import EnvSpec
from tools_sandbox.tools.schema import from_bfcl_doc

MODULE_PREFIX = "bfcl_eval.eval_checker.multi_turn_eval.func_source_code"
# class name -> (module, function-doc file); the eight multi-turn environments of BFCL v3/v4.
CLASSES = {
    "GorillaFileSystem": ("gorilla_file_system", "gorilla_file_system.json"),
    "MathAPI": ("math_api", "math_api.json"),
    "MessageAPI": ("message_api", "message_api.json"),
    "TwitterAPI": ("posting_api", "posting_api.json"),
    "TicketAPI": ("ticket_api", "ticket_api.json"),
    "TradingBot": ("trading_bot", "trading_bot.json"),
    "TravelAPI": ("travel_booking", "travel_booking.json"),
    "VehicleControlAPI": ("vehicle_control", "vehicle_control.json"),
}


def package_dir() -> Path | None:
    """Where `bfcl_eval` is installed, found without importing it; None if absent."""
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def status() -> tuple[bool, str]:
    """(installed, detail or fix) for `doctor` and the service log."""
    root = package_dir()
    if root is None:
        return False, "bfcl-eval is not installed; `pip install --no-deps bfcl-eval` (the `bfcl` extra)"
    return True, f"bfcl-eval at {root}: {', '.join(CLASSES)}"


def environments() -> list[EnvSpec]:
    """One EnvSpec per BFCL class; empty when bfcl-eval is not installed."""
    root = package_dir()
    if root is None:
        return []
    docs_dir = root / "data" / "multi_turn_func_doc"
    envs = []
    for class_name, (module, doc_file) in CLASSES.items():
        lines = (docs_dir / doc_file).read_text(encoding="utf-8").splitlines()
        schemas = tuple(from_bfcl_doc(json.loads(line)) for line in lines if line.strip())
        envs.append(EnvSpec(class_name, "bfcl", schemas, module=f"{MODULE_PREFIX}.{module}", attr=class_name))
    return envs


def preload_modules() -> list[str]:
    """Modules a warm worker imports ahead of time so a BFCL session starts fast."""
    return [f"{MODULE_PREFIX}.{module}" for module, _ in CLASSES.values()] if package_dir() else []

"""`rest-megatron doctor`: what this machine can run, and what to install for the rest.

One line per check: status (`ok` / `warn` / `missing`), what was found, and the fix when it is not ok.
The exit code is 0 when the CPU training path is usable (torch and megatron-core import), 1 otherwise;
GPU pieces (CUDA, NCCL, Transformer Engine, SGLang, vLLM), sandbox backends and Slurm are reported
but never fail the command.

Nothing here imports Transformer Engine on a machine without CUDA: installed there, it breaks
`import megatron.core` itself (libcuda.so.1), so on CPU we only look for it with `find_spec`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import sys
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

Status = Literal["ok", "warn", "missing"]


@dataclass(frozen=True)
class Check:
    """The result of one check."""

    name: str
    """Short name of the thing checked (`torch`, `bubblewrap`, ...)."""

    status: Status
    """`ok`, `warn` (present but degraded, or not applicable here) or `missing`."""

    detail: str
    """What was found."""

    fix: str = ""
    """What to do about a `warn` / `missing` status; empty when there is nothing to do."""


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown version"


def _cuda_available() -> bool:
    try:
        import torch
    except Exception:  # a broken torch is reported by check_torch
        return False
    return torch.cuda.is_available()


def check_python() -> Check:
    version = platform.python_version()
    if (3, 10) <= sys.version_info[:2] < (3, 13):
        return Check("python", "ok", f"{version} ({sys.executable})")
    return Check(
        "python", "warn", f"{version} is outside the supported 3.10-3.12", "use Python 3.10, 3.11 or 3.12"
    )


def check_torch() -> Check:
    try:
        import torch
    except Exception as err:
        return Check(
            "torch",
            "missing",
            f"import failed: {err}",
            "run scripts/setup.sh (installs the CPU build torch==2.13.0), "
            "or pip install a CUDA build on GPU nodes",
        )
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU build"
    return Check("torch", "ok", f"{torch.__version__} ({build})")


def check_megatron() -> Check:
    fix = "pip install 'megatron-core>=0.16,<0.17'"
    if importlib.util.find_spec("transformer_engine") is not None and not _cuda_available():
        fix += "; transformer-engine without CUDA breaks this import: pip uninstall transformer-engine"
    try:
        # megatron-core warns at import that TE/Apex are absent; transformer-engine has its own line.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import megatron.core
    except Exception as err:  # not only ImportError: a CPU-installed transformer-engine raises OSError
        return Check("megatron-core", "missing", f"import failed: {type(err).__name__}: {err}", fix)
    version = getattr(megatron.core, "__version__", _version("megatron-core"))
    if not version.startswith("0.16."):
        return Check(
            "megatron-core",
            "warn",
            f"{version} imports, but rest-megatron is tested with 0.16.x",
            "pip install 'megatron-core>=0.16,<0.17' (model/cpu_shims.py patches 0.16 internals)",
        )
    return Check("megatron-core", "ok", f"{version} (imports)")


def check_psutil() -> Check:
    if importlib.util.find_spec("psutil") is None:
        return Check(
            "psutil", "missing", "not installed", "pip install psutil (megatron-core checkpointing needs it)"
        )
    return Check("psutil", "ok", _version("psutil"))


def check_cuda() -> Check:
    try:
        import torch
    except Exception:
        return Check("cuda", "missing", "torch does not import", "fix torch first")
    if not torch.cuda.is_available():
        fix = "GPU training needs a visible GPU (nvidia-smi, CUDA_VISIBLE_DEVICES)"
        if not torch.version.cuda:
            fix = "GPU training needs a CUDA build of torch and a visible GPU"
        return Check("cuda", "warn", "not available: CPU only", fix)
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return Check("cuda", "ok", f"{len(names)} GPU(s): {', '.join(names)}")


def check_nccl() -> Check:
    if not _cuda_available():
        return Check("nccl", "warn", "not checked without CUDA (CPU runs use gloo)")
    import torch

    try:
        version = torch.cuda.nccl.version()
    except Exception as err:
        return Check("nccl", "missing", f"unavailable: {err}", "install a torch build with NCCL")
    text = ".".join(str(v) for v in version) if isinstance(version, tuple) else str(version)
    return Check("nccl", "ok", text)


def check_transformer_engine() -> Check:
    present = importlib.util.find_spec("transformer_engine") is not None
    if not _cuda_available():
        if present:
            return Check(
                "transformer-engine",
                "warn",
                "installed on a machine without CUDA (not imported): it breaks `import megatron.core`",
                "pip uninstall transformer-engine; keep it to GPU nodes (the [gpu] extra)",
            )
        return Check(
            "transformer-engine", "ok", "not installed (right for CPU: the local layer spec is used)"
        )
    if not present:
        return Check(
            "transformer-engine",
            "missing",
            "not installed",
            "pip install 'rest-megatron[gpu]' for the Transformer Engine layer spec",
        )
    try:
        importlib.import_module("transformer_engine.pytorch")
    except Exception as err:
        return Check(
            "transformer-engine", "warn", f"import failed: {err}", "reinstall it against this torch/CUDA"
        )
    return Check("transformer-engine", "ok", _version("transformer-engine"))


def check_optional_package(module: str, extra: str) -> Check:
    """An inference engine we only look for (importing SGLang or vLLM costs seconds and may need a GPU)."""
    if importlib.util.find_spec(module) is None:
        return Check(
            module,
            "missing",
            "not installed",
            f"pip install 'rest-megatron[{extra}]' on GPU nodes; CPU runs use rollout.engine=embedded",
        )
    return Check(module, "ok", f"{_version(module)} (found, not imported)")


def check_sandbox_backends() -> list[Check]:
    """The sandbox's own probes (`tools_sandbox.backends.detect_backends`), one line per backend.

    The sandbox package words each detail so that it already says how to fix a missing backend.
    """
    from tools_sandbox.backends import detect_backends

    checks = []
    for backend in detect_backends():
        if backend.available:
            checks.append(Check(backend.name, "warn" if backend.weak else "ok", backend.detail))
        else:
            checks.append(Check(backend.name, "missing", backend.detail, ""))
    return checks


def check_bfcl() -> Check:
    from tools_sandbox.tools.bfcl import status

    installed, detail = status()
    return Check(
        "bfcl-eval",
        "ok" if installed else "missing",
        detail,
        "" if installed else "bash scripts/setup.sh installs it (without its dependency tree)",
    )


def check_slurm() -> Check:
    tools = {name: shutil.which(name) for name in ("sinfo", "srun")}
    job = os.environ.get("SLURM_JOB_ID")
    in_job = f"; inside job {job}" if job else "; not inside a job"
    found = [name for name, path in tools.items() if path]
    if len(found) == len(tools):
        return Check("slurm", "ok", f"sinfo and srun on PATH{in_job}")
    missing = ", ".join(name for name in tools if name not in found)
    return Check(
        "slurm",
        "warn" if job else "missing",
        f"{missing} not on PATH{in_job}",
        "only needed for cluster launch (slurm/train.sbatch): install the Slurm client tools",
    )


def run_checks() -> list[Check]:
    """All checks, in report order."""
    return [
        check_python(),
        check_torch(),
        check_megatron(),
        check_psutil(),
        check_cuda(),
        check_nccl(),
        check_transformer_engine(),
        check_optional_package("sglang", "gpu"),
        check_optional_package("vllm", "vllm"),
        *check_sandbox_backends(),
        check_bfcl(),
        check_slurm(),
    ]


def cpu_path_usable(checks: Sequence[Check]) -> bool:
    """Whether the CPU training path can run: torch and megatron-core import."""
    return all(c.status != "missing" for c in checks if c.name in ("torch", "megatron-core"))


def format_line(check: Check) -> str:
    """The report line of one check (also what the tests read)."""
    line = f"{check.status:<7} {check.name:<18} {check.detail}"
    return f"{line}  [fix: {check.fix}]" if check.fix and check.status != "ok" else line


def _print_report(checks: Sequence[Check], usable: bool) -> None:
    verdict = "CPU path: usable" if usable else "CPU path: NOT usable (torch and megatron-core must import)"
    try:
        from rich.console import Console
        from rich.text import Text
    except ImportError:
        print("rest-megatron doctor")
        for check in checks:
            print(format_line(check))
        print(verdict)
        return
    # Text objects, not markup: details contain brackets ("[gpu]") that rich would eat as tags.
    console = Console(soft_wrap=True, highlight=False)
    colors = {"ok": "green", "warn": "yellow", "missing": "red"}
    console.print(Text("rest-megatron doctor", style="bold"))
    for check in checks:
        line = format_line(check)
        console.print(Text.assemble((line[:7], colors[check.status]), line[7:]))
    console.print(Text(verdict, style="bold green" if usable else "bold red"))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the checks and print the report; 0 when the CPU path is usable, 1 otherwise."""
    parser = argparse.ArgumentParser(prog="rest-megatron doctor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the checks as a JSON list")
    args = parser.parse_args(argv)
    checks = run_checks()
    usable = cpu_path_usable(checks)
    if args.json:
        print(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        _print_report(checks, usable)
    return 0 if usable else 1


if __name__ == "__main__":
    sys.exit(main())

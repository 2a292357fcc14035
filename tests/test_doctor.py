"""`rest-megatron doctor`, run for real: in process, as the installed console script, and with a
PATH that lacks or breaks the sandbox and Slurm tools."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import megatron.core
import pytest
import torch

from rest_megatron import doctor
from rest_megatron.cli import main

CONSOLE_SCRIPT = Path(sys.executable).parent / "rest-megatron"
NAMES = (
    "python", "torch", "megatron-core", "psutil", "cuda", "nccl", "transformer-engine", "sglang", "vllm",
    "bubblewrap", "nsjail", "rlimit", "bfcl-eval", "slurm",
)  # fmt: skip


def _lines(text: str) -> dict[str, str]:
    """Report lines keyed by check name."""
    lines = {}
    for line in text.splitlines():
        match = re.match(r"^(ok|warn|missing)\s+(\S+)\s", line)
        if match:
            lines[match.group(2)] = line
    return lines


def _check_report(text: str) -> None:
    lines = _lines(text)
    assert set(lines) == set(NAMES)
    assert re.match(
        rf"^ok\s+torch\s+{re.escape(torch.__version__)} \((CPU|CUDA \S+) build\)$", lines["torch"]
    )
    assert re.match(
        rf"^ok\s+megatron-core\s+{re.escape(megatron.core.__version__)} \(imports\)$", lines["megatron-core"]
    )
    # The fallback needs an interpreter that unprivileged uids can read; where it cannot (a venv
    # under /root), the line says how to point it at one.
    assert lines["rlimit"].startswith("ok") or "--sandbox-python" in lines["rlimit"]
    cuda = "ok" if torch.cuda.is_available() else "warn"
    assert lines["cuda"].startswith(cuda)
    assert "CPU path: usable" in text


def test_doctor_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    _check_report(capsys.readouterr().out)


def test_doctor_console_script() -> None:
    proc = subprocess.run([str(CONSOLE_SCRIPT), "doctor"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    _check_report(proc.stdout)


def test_missing_tools_say_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no bwrap, nsjail, sinfo, srun
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    backends = {check.name: check for check in doctor.check_sandbox_backends()}
    assert backends["bubblewrap"].status == "missing"
    assert "apt-get install bubblewrap" in doctor.format_line(backends["bubblewrap"])
    assert backends["nsjail"].status == "missing" and "nsjail" in backends["nsjail"].detail
    slurm = doctor.check_slurm()
    assert (slurm.status, slurm.detail) == ("missing", "sinfo, srun not on PATH; not inside a job")
    assert "slurm/train.sbatch" in slurm.fix


def _executable(path: Path, script: str) -> None:
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


def test_slurm_job_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for tool in ("sinfo", "srun"):
        _executable(tmp_path / tool, "exit 0\n")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    check = doctor.check_slurm()
    assert (check.status, check.detail) == ("ok", "sinfo and srun on PATH; inside job 4242")


def test_exit_code_1_when_megatron_core_does_not_import() -> None:
    # Blocking the import is how a broken install looks to Python (an ImportError at `import megatron.core`).
    code = (
        "import sys; sys.modules['megatron'] = None; "
        "from rest_megatron.doctor import main; sys.exit(main([]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = _lines(proc.stdout)
    assert lines["megatron-core"].startswith("missing megatron-core      import failed: ")
    assert "[fix: pip install 'megatron-core>=0.16,<0.17'" in lines["megatron-core"]
    assert "CPU path: NOT usable" in proc.stdout

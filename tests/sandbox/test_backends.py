"""Backend detection, command lines and the uid pool (with a real sweep of a real process)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from tools_sandbox.backends import BACKEND_NAMES, detect_backends, select_backend
from tools_sandbox.backends.bubblewrap import BubblewrapBackend
from tools_sandbox.backends.common import Launch
from tools_sandbox.backends.nsjail import NsjailBackend
from tools_sandbox.backends.rlimit import RlimitBackend
from tools_sandbox.backends.uids import UidPool
from tools_sandbox.limits import Limits

pytestmark = pytest.mark.timeout(60)


def _launch(tmp_path: Path, uid: int | None = 1_900_000_123) -> Launch:
    return Launch(scratch=tmp_path, limits=Limits(), run={"mode": "python", "path": "main.py"}, uid=uid)


def test_detect_reports_every_backend_with_a_reason() -> None:
    statuses = detect_backends()
    assert [s.name for s in statuses] == list(BACKEND_NAMES)
    for status in statuses:
        assert status.detail, status
        if not status.available:  # an unavailable backend says how to fix it
            assert any(word in status.detail for word in ("install", "build", "enable", "pass", "run"))
    assert [s.weak for s in statuses] == [False, False, True]


def test_select_backend_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown sandbox backend 'docker'; choose one of auto"):
        select_backend("docker")


def test_bubblewrap_command_isolates_and_mounts_the_system_read_only(tmp_path: Path) -> None:
    argv, env = BubblewrapBackend("/usr/bin/bwrap").command(_launch(tmp_path))
    assert {"--unshare-net", "--unshare-pid", "--die-with-parent", "--clearenv"} <= set(argv)
    pairs = list(zip(argv, argv[1:]))
    assert ("--ro-bind", "/usr") in pairs and ("--ro-bind", "/etc") in pairs
    assert ("--bind", str(tmp_path)) in pairs  # the only writable bind is the scratch directory
    assert [a for a, b in pairs if a == "--bind"] == ["--bind"]
    config = json.loads(argv[-1])
    assert config["workdir"] == "/sandbox" and config["seccomp"] is True
    assert config["rlimits"]["nproc"] == Limits().max_processes
    assert "SECRET" not in " ".join(env)  # the sandbox gets a fixed environment, not the service's


def test_nsjail_command_disables_its_rlimits_and_binds_scratch(tmp_path: Path) -> None:
    argv, _ = NsjailBackend("/usr/local/bin/nsjail").command(_launch(tmp_path))
    assert argv[:3] == ["/usr/local/bin/nsjail", "--mode", "o"]
    assert "--disable_rlimits" in argv and f"{tmp_path}:/sandbox" in argv
    assert json.loads(argv[-1])["uid"] is None  # nsjail itself maps the pool uid


def test_rlimit_fallback_confines_with_landlock_and_says_it_is_weaker(tmp_path: Path) -> None:
    backend = RlimitBackend()
    argv, env = backend.command(_launch(tmp_path))
    config = json.loads(argv[-1])
    assert config["workdir"] == str(tmp_path) and env["HOME"] == str(tmp_path)
    if backend.landlock_abi:
        assert config["landlock"] == [str(tmp_path)]
    assert backend.describe().startswith("WEAKER isolation")


@pytest.mark.skipif(os.geteuid() != 0, reason="the uid pool needs root")
def test_uid_pool_release_kills_every_process_of_the_uid() -> None:
    pool = UidPool(size=4)
    uid = pool.acquire()
    assert pool.free == 3
    # A process of that uid in its own session, as a leftover of a call would be.
    proc = subprocess.Popen(["sleep", "300"], user=uid, group=uid, extra_groups=[], start_new_session=True)
    try:
        asyncio.run(pool.release(uid))
        assert proc.wait(timeout=10) == -9
    finally:
        if proc.poll() is None:
            proc.kill()
    assert pool.free == 4


def test_uid_pool_validates_its_range() -> None:
    if os.geteuid() != 0:
        with pytest.raises(ValueError, match="needs root"):
            UidPool()
        return
    with pytest.raises(ValueError, match="out of range"):
        UidPool(base=10)
    pool = UidPool(size=1)
    pool.acquire()
    with pytest.raises(RuntimeError, match="in use"):
        pool.acquire()
    other = UidPool(size=1)  # a second service on this machine gets a disjoint block
    assert abs(other.base - pool.base) >= 65_536


def test_the_whole_file_system_is_never_bound() -> None:
    from tools_sandbox.backends.common import readonly_binds

    with pytest.raises(ValueError, match="refusing to expose the whole file system"):
        readonly_binds(("/",))
    assert all(path != "/" and not path.startswith("/usr/") for path in readonly_binds())


def test_a_missing_sandbox_interpreter_is_refused_up_front() -> None:
    with pytest.raises(ValueError, match="is not an executable file"):
        select_backend("auto", python="/nonexistent/python3")

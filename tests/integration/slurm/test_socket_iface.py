"""slurm/common.sh `iface_to`: the NCCL/gloo socket interface on non-loopback addresses.

Two network namespaces created here, joined by a veth pair (10.213.7.1 = the head node, .2 = a
second node), stand in for two hosts; `ip netns exec` also bind-mounts /etc/netns/<ns>/hosts over
/etc/hosts, so node names resolve as a cluster's would. Nothing outside the namespaces changes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.slurm.conftest import REPO

COMMON = REPO / "slurm" / "common.sh"
HEAD, PEER = "10.213.7.1", "10.213.7.2"


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


def _hosts(ns: str, text: str) -> None:
    folder = Path("/etc/netns") / ns
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hosts").write_text(text)


@pytest.fixture
def two_hosts() -> Iterator[tuple[str, str]]:
    """Namespaces (head, peer); head's veth is `rmh<pid>`, peer's `rmp<pid>`."""
    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("needs root and iproute2 to create network namespaces")
    tag = str(os.getpid())
    head, peer = f"rmt{tag}h", f"rmt{tag}p"
    try:
        steps = [
            ("netns", "add", head),
            ("netns", "add", peer),
            (
                "link",
                "add",
                f"rmh{tag}",
                "netns",
                head,
                "type",
                "veth",
                "peer",
                "name",
                f"rmp{tag}",
                "netns",
                peer,
            ),
            ("-n", head, "addr", "add", f"{HEAD}/24", "dev", f"rmh{tag}"),
            ("-n", peer, "addr", "add", f"{PEER}/24", "dev", f"rmp{tag}"),
        ]
        steps += [
            ("-n", ns, "link", "set", dev, "up") for ns in (head, peer) for dev in ("lo", f"rm{ns[-1]}{tag}")
        ]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                print(f"skip: the kernel refused `ip {' '.join(step)}`: {done.stderr.strip()}")
                pytest.skip(f"cannot build the test network (`ip {' '.join(step)}`: {done.stderr.strip()})")
        yield head, peer
    finally:
        for ns in (head, peer):  # deleting a namespace deletes its end of the veth pair, and so the pair
            _ip("netns", "del", ns)
            shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)
        with contextlib.suppress(OSError):  # only when empty: other users' namespaces keep theirs
            Path("/etc/netns").rmdir()


def _iface(ns: str, *args: str) -> str:
    script = f'source "{COMMON}"; iface_to "$@"'
    done = subprocess.run(
        ["ip", "netns", "exec", ns, "bash", "-c", script, "iface_to", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_head_node_binds_the_interface_of_its_address_not_lo(two_hosts: tuple[str, str]) -> None:
    head, peer = two_hosts
    tag = str(os.getpid())
    # From the head, the route to its own address is `lo`; the peer could not connect to that.
    assert _ip("-n", head, "-o", "route", "get", HEAD).stdout.split(" dev ")[1].split()[0] == "lo"
    assert _iface(head, HEAD, PEER) == f"rmh{tag}"
    # Elsewhere the route to the head decides.
    assert _iface(peer, HEAD, PEER) == f"rmp{tag}"


def test_names_and_a_loopback_head_name(two_hosts: tuple[str, str]) -> None:
    head, peer = two_hosts
    tag = str(os.getpid())
    # The names as Slurm gives them, resolved through each namespace's own /etc/hosts.
    _hosts(peer, f"{HEAD} rmhead\n{PEER} rmpeer\n")
    assert _iface(peer, "rmhead", "rmpeer") == f"rmp{tag}"
    # Debian's installer maps a host's own name to 127.0.1.1: then the route to another node decides.
    _hosts(head, f"127.0.1.1 rmhead\n{PEER} rmpeer\n")
    assert _iface(head, "rmhead", "rmpeer") == f"rmh{tag}"
    _hosts(head, f"{HEAD} rmhead\n{PEER} rmpeer\n")
    assert _iface(head, "rmhead", "rmpeer") == f"rmh{tag}"


def test_loopback_only_when_every_node_is_on_this_host(two_hosts: tuple[str, str]) -> None:
    head, _ = two_hosts
    # A single node, or an emulated cluster whose names all resolve to 127.0.0.1: `lo` is right.
    assert _iface(head, "127.0.0.1") == "lo"
    assert _iface(head, "127.0.0.1", "127.0.0.1") == "lo"
    # Names that do not resolve: no guess (NCCL then excludes lo itself).
    assert _iface(head, "rm-no-such-node.invalid") == ""

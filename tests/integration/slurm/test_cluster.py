"""The cluster harness's own pieces that need no daemons: the /etc/hosts edit and port picking."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.integration.slurm.cluster import HOSTS_MARK, ensure_hosts, free_ports


def test_hosts_line_is_added_once_and_merged(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n10.0.0.5 other\n")
    ensure_hosts(["rmnode1", "rmnode2"], hosts)
    ensure_hosts(["rmnode2", "rmnode1"], hosts)  # idempotent
    ensure_hosts(["rmnode3"], hosts)  # merged into the same marked line
    lines = hosts.read_text().splitlines()
    assert lines[:2] == ["127.0.0.1 localhost", "10.0.0.5 other"]
    assert lines[2:] == [f"127.0.0.1 rmnode1 rmnode2 rmnode3 {HOSTS_MARK}"]


def test_free_ports_are_consecutive_and_bindable() -> None:
    base = free_ports(3)
    sockets = [socket.socket() for _ in range(3)]
    try:
        for offset, s in enumerate(sockets):
            s.bind(("127.0.0.1", base + offset))
    finally:
        for s in sockets:
            s.close()

"""`rest-megatron sandbox-server` / `python -m tools_sandbox.server`: start the sandbox service.

Binds 127.0.0.1 by default. On a cluster, other nodes must reach it: bind the node's address with
`--host` and set `--secret-env VAR` (the service then wants `Authorization: Bearer $VAR`); it warns
loudly when it listens beyond loopback without a secret. `--port 0` picks a free port; with
`--port-file` the chosen port is written there once the socket is bound (used by
`client.local_sandbox_server`).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
import sys

from tools_sandbox.backends import BACKEND_NAMES, select_backend
from tools_sandbox.limits import Limits
from tools_sandbox.netguard import guarded_protocol
from tools_sandbox.service import ServiceConfig, create_app

log = logging.getLogger("tools_sandbox.server")


def build_parser() -> argparse.ArgumentParser:
    """The command line (also used by the CLI's `sandbox-server --help`)."""
    defaults, limits = ServiceConfig(), Limits()
    p = argparse.ArgumentParser(prog="rest-megatron sandbox-server", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=8080, help="port; 0 picks a free one (default 8080)")
    p.add_argument("--port-file", help="write the bound port to this file once listening")
    p.add_argument(
        "--backend",
        default="auto",
        choices=("auto", *BACKEND_NAMES),
        help="isolation backend (default: best available)",
    )
    p.add_argument(
        "--max-concurrency",
        type=int,
        default=defaults.max_concurrency,
        help="executions at once (default: CPU count)",
    )
    p.add_argument(
        "--queue-size",
        type=int,
        default=defaults.queue_size,
        help="requests that may wait for a slot before 429 (default %(default)s)",
    )
    p.add_argument("--secret-env", metavar="VAR", help="environment variable holding the shared secret")
    p.add_argument("--max-sessions", type=int, default=defaults.max_sessions)
    p.add_argument(
        "--session-idle-s",
        type=float,
        default=defaults.session_idle_s,
        help="reap sessions idle this long (default %(default)s)",
    )
    p.add_argument(
        "--session-lifetime-s",
        type=float,
        default=defaults.session_lifetime_s,
        help="end sessions this old (default %(default)s)",
    )
    p.add_argument(
        "--session-cpu-s",
        type=int,
        default=defaults.session_cpu_s,
        help="CPU seconds one session may use in all (default %(default)s)",
    )
    p.add_argument(
        "--warm-workers",
        type=int,
        default=defaults.warm_workers,
        help="pre-started sandbox workers for fast sessions (default %(default)s)",
    )
    p.add_argument(
        "--prestart",
        type=int,
        default=None,
        help="pre-started one-shot sandboxes kept ready (default: 2 x --max-concurrency)",
    )
    p.add_argument(
        "--tools-module",
        action="append",
        default=[],
        metavar="MODULE",
        help="user tool module (dotted name or .py path); repeatable",
    )
    p.add_argument("--no-bfcl", action="store_true", help="do not register the BFCL environments")
    p.add_argument("--cpu-s", type=float, default=limits.cpu_s, help="CPU seconds per call")
    p.add_argument("--wall-s", type=float, default=limits.wall_s, help="wall seconds per call (max)")
    p.add_argument("--memory-mb", type=int, default=limits.memory_mb, help="address space per process, MiB")
    p.add_argument("--max-processes", type=int, default=limits.max_processes, help="processes per call")
    p.add_argument(
        "--file-size-mb", type=int, default=limits.file_size_mb, help="largest file a call may write"
    )
    p.add_argument("--open-files", type=int, default=limits.open_files, help="open files per process")
    p.add_argument(
        "--scratch-mb",
        type=int,
        default=limits.scratch_mb,
        help="scratch space per call and per session in all, MiB (enforced as root)",
    )
    p.add_argument("--output-bytes", type=int, default=limits.output_bytes, help="stdout/stderr bytes kept")
    p.add_argument(
        "--max-body-mb",
        type=float,
        default=defaults.max_body_bytes / (1 << 20),
        help="largest request body, MiB (default %(default)s)",
    )
    p.add_argument(
        "--read-timeout-s",
        type=float,
        default=defaults.read_timeout_s,
        help="seconds a client has to send a request's headers, and again its body (default %(default)s)",
    )
    p.add_argument(
        "--max-connections-per-client",
        type=int,
        default=defaults.max_connections_per_client,
        help="open connections one client address may hold; more are dropped (default %(default)s)",
    )
    p.add_argument(
        "--idle-sessions-mb",
        type=int,
        default=defaults.idle_sessions_mb,
        help="memory (RSS + scratch) all idle sessions may hold together; the least recently used "
        "are ended beyond it (default %(default)s)",
    )
    p.add_argument(
        "--scratch-root",
        help="where to make this service's scratch directory (default: the system temp dir); "
        "with the rlimit backend, pool uids must be able to traverse it",
    )
    p.add_argument(
        "--uid-base",
        type=int,
        default=defaults.uid_base,
        help="first of the per-call uids a root service uses (default %(default)s)",
    )
    p.add_argument("--sandbox-python", help="interpreter inside the sandbox (default: this one)")
    p.add_argument(
        "--disable-seccomp",
        action="store_true",
        help="TESTING ONLY: run without the seccomp filter, to check the other layers alone",
    )
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return p


def config_from_args(args: argparse.Namespace) -> ServiceConfig:
    """Turn parsed arguments into a ServiceConfig; ValueError names any bad value."""
    secret = None
    if args.secret_env:
        secret = os.environ.get(args.secret_env, "")
        if not secret:
            raise ValueError(
                f"--secret-env {args.secret_env}: that environment variable is empty or unset; "
                f"export {args.secret_env}=<a long random string> first"
            )
    limits = Limits(
        cpu_s=args.cpu_s,
        wall_s=args.wall_s,
        memory_mb=args.memory_mb,
        max_processes=args.max_processes,
        file_size_mb=args.file_size_mb,
        open_files=args.open_files,
        output_bytes=args.output_bytes,
        scratch_mb=args.scratch_mb,
    )
    return ServiceConfig(
        limits=limits,
        backend=args.backend,
        max_concurrency=args.max_concurrency,
        queue_size=args.queue_size,
        max_sessions=args.max_sessions,
        session_idle_s=args.session_idle_s,
        session_lifetime_s=args.session_lifetime_s,
        session_cpu_s=args.session_cpu_s,
        warm_workers=args.warm_workers,
        secret=secret,
        prestart=args.prestart if args.prestart is not None else 2 * args.max_concurrency,
        max_body_bytes=int(args.max_body_mb * (1 << 20)),
        tool_modules=tuple(args.tools_module),
        bfcl=not args.no_bfcl,
        scratch_root=args.scratch_root,
        uid_base=args.uid_base,
        sandbox_python=args.sandbox_python,
        seccomp=not args.disable_seccomp,
        read_timeout_s=args.read_timeout_s,
        max_connections_per_client=args.max_connections_per_client,
        idle_sessions_mb=args.idle_sessions_mb,
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def main(argv: list[str] | None = None) -> int:
    """Run the service until SIGINT/SIGTERM. Returns the process exit status."""
    import uvicorn

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = config_from_args(args)
        # Selected here, not at app start-up, so a missing backend is one clear line, not a traceback.
        backend = select_backend(config.backend, seccomp=config.seccomp, python=config.sandbox_python)
        protocol = guarded_protocol(config.read_timeout_s, config.max_connections_per_client)
    except ValueError as exc:
        print(f"sandbox-server: {exc}", file=sys.stderr)
        return 2
    if not _is_loopback(args.host) and config.secret is None:
        log.warning(
            "!!! listening on %s WITHOUT a shared secret: anyone who reaches this port can run code. "
            "Set --secret-env. !!!",
            args.host,
        )
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio only disables Nagle on accepted sockets whose proto says TCP,
    # and without it every keep-alive response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((args.host, args.port))
    sock.listen(1024)
    sock.set_inheritable(False)  # never leak the listening socket into sandboxes
    port = sock.getsockname()[1]
    if args.port_file:
        tmp = f"{args.port_file}.tmp"
        with open(tmp, "w") as f:
            f.write(str(port))
        os.replace(tmp, args.port_file)
    log.info("sandbox service listening on http://%s:%d", args.host, port)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config, backend),
            log_level=args.log_level,
            access_log=False,
            timeout_graceful_shutdown=5,
            http=protocol,
        )
    )
    try:
        server.run(sockets=[sock])
    except ValueError as exc:  # configuration problems found at startup (backend, tool modules)
        print(f"sandbox-server: {exc}", file=sys.stderr)
        return 2
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())

"""Landlock: unprivileged file-system, TCP and signal restrictions (Linux 5.13+), via ctypes.

The rlimit fallback has no mount or network namespace, so this is what makes its "read-only
system, writable scratch only" claim true: every write-type access is denied except beneath the
scratch directory (and to a few character devices like /dev/null). Reads stay allowed. On ABI 4+
TCP bind/connect are denied too, and on ABI 6+ signals and abstract UNIX sockets cannot cross the
sandbox boundary. A kernel without Landlock gives `abi() == 0`; the caller decides what to do.
"""

from __future__ import annotations

import ctypes
import os
import struct

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # same on every arch
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# LANDLOCK_ACCESS_FS_* bits and the ABI that introduced them.
WRITE_FILE = 1 << 1
_WRITE_ACCESS_BY_ABI = {
    1: WRITE_FILE | sum(1 << bit for bit in range(4, 13)),  # remove/make dir, reg, sym, sock, ...
    2: 1 << 13,  # REFER
    3: 1 << 14,  # TRUNCATE
    5: 1 << 15,  # IOCTL_DEV
}
_FILE_ONLY_ACCESS = WRITE_FILE | (1 << 14) | (1 << 15)  # rights that a rule on a single file may hold
_NET_TCP_BIND_CONNECT = 0b11  # ABI 4
_SCOPE_ABSTRACT_UNIX_AND_SIGNAL = 0b11  # ABI 6


def _syscall() -> ctypes._CFuncPtr:
    fn = ctypes.CDLL(None, use_errno=True).syscall
    fn.restype = ctypes.c_long
    return fn


def abi() -> int:
    """The kernel's Landlock ABI version, or 0 when Landlock is missing or disabled."""
    syscall = _syscall()
    version = syscall(
        ctypes.c_long(_SYS_CREATE_RULESET), None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION)
    )
    return max(0, int(version))


def restrict(
    write_paths: list[str], device_paths: tuple[str, ...] = ("/dev/null", "/dev/zero", "/dev/full")
) -> int:
    """Deny writes outside `write_paths` (and TCP, signals out of the domain where the ABI has them).

    Args:
        write_paths: directories that stay fully writable (the scratch directory).
        device_paths: files that may still be opened for writing.

    Returns:
        the ABI version that was applied.

    Raises:
        OSError: Landlock is unavailable or a syscall failed.
    """
    version = abi()
    if version < 1:
        raise OSError("Landlock is not available on this kernel")
    syscall = _syscall()
    fs_write = sum(bits for since, bits in _WRITE_ACCESS_BY_ABI.items() if version >= since)
    net = _NET_TCP_BIND_CONNECT if version >= 4 else 0
    scoped = _SCOPE_ABSTRACT_UNIX_AND_SIGNAL if version >= 6 else 0
    attr = struct.pack("=QQQ", fs_write, net, scoped)
    attr_size = 8 if version < 4 else 16 if version < 6 else 24
    buf = ctypes.create_string_buffer(attr[:attr_size], attr_size)
    ruleset = syscall(ctypes.c_long(_SYS_CREATE_RULESET), buf, ctypes.c_size_t(attr_size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        for path, access in [(p, fs_write) for p in write_paths] + [
            (p, fs_write & _FILE_ONLY_ACCESS) for p in device_paths if os.path.exists(p)
        ]:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rule = ctypes.create_string_buffer(struct.pack("=Qi", access, fd), 12)
                if (
                    syscall(
                        ctypes.c_long(_SYS_ADD_RULE),
                        ctypes.c_int(ruleset),
                        ctypes.c_int(_RULE_PATH_BENEATH),
                        rule,
                        ctypes.c_uint32(0),
                    )
                    != 0
                ):
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule({path}) failed")
            finally:
                os.close(fd)
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
        if prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if syscall(ctypes.c_long(_SYS_RESTRICT_SELF), ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)
    return version

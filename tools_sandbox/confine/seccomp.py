"""A small seccomp-BPF filter, assembled by hand, installed inside every sandbox.

Stdlib only (ctypes), because the launcher imports it before site-packages exist. We avoid a
libseccomp binding so the package has no new dependency; the price is a syscall table per
architecture (x86_64 and aarch64 here; others run without the filter and say so).

What the filter does, and why:
- `socket()` fails with EPERM. The rlimit fallback has no network namespace; this is its network
  ban. (`socketpair()` stays allowed: asyncio and multiprocessing use it and it reaches nobody.)
- `kill()` with a pid below 0 fails (`kill -1`, or a process group), so sandboxed code cannot
  signal everything its uid owns; `setsid`/`setpgid` fail, so no process can leave the call's
  process group and survive the group kill at the end of the call.
- namespace creation (`unshare`, `setns`, `clone` with CLONE_NEW*), `clone3` (ENOSYS, so libc
  falls back to `clone`, whose flags we can inspect), `ptrace`, `mount`, `bpf`, `io_uring`
  (its own socket opcodes would bypass the `socket` rule), keyrings, modules, `reboot` fail.
- a foreign architecture (x32 or 32-bit calls) kills the process: their numbers differ.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct

# BPF opcodes (linux/filter.h) and seccomp return values (linux/seccomp.h).
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_RET_KILL_PROCESS = 0x80000000
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
# offsetof(struct seccomp_data, ...): nr at 0, arch at 4, args[i] at 16 + 8i (low word first).
_OFF_NR, _OFF_ARCH, _OFF_ARG0 = 0, 4, 16
_CLONE_NS_FLAGS = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET

_DENIED = (
    "socket",
    "setsid",
    "setpgid",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "mount",
    "umount2",
    "unshare",
    "setns",
    "pivot_root",
    "chroot",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "bpf",
    "perf_event_open",
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "kexec_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "open_by_handle_at",
    "pidfd_send_signal",
    "fanotify_init",
    "quotactl",
)

_X86_64 = {
    "socket": 41,
    "setsid": 112,
    "setpgid": 109,
    "ptrace": 101,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "mount": 165,
    "umount2": 166,
    "unshare": 272,
    "setns": 308,
    "pivot_root": 155,
    "chroot": 161,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "bpf": 321,
    "perf_event_open": 298,
    "keyctl": 250,
    "add_key": 248,
    "request_key": 249,
    "userfaultfd": 323,
    "kexec_load": 246,
    "init_module": 175,
    "finit_module": 313,
    "delete_module": 176,
    "reboot": 169,
    "swapon": 167,
    "swapoff": 168,
    "acct": 163,
    "open_by_handle_at": 304,
    "pidfd_send_signal": 424,
    "fanotify_init": 300,
    "quotactl": 179,
    "kill": 62,
    "clone": 56,
    "clone3": 435,
}
_AARCH64 = {
    "socket": 198,
    "setsid": 157,
    "setpgid": 154,
    "ptrace": 117,
    "process_vm_readv": 270,
    "process_vm_writev": 271,
    "mount": 40,
    "umount2": 39,
    "unshare": 97,
    "setns": 268,
    "pivot_root": 41,
    "chroot": 51,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "bpf": 280,
    "perf_event_open": 241,
    "keyctl": 219,
    "add_key": 217,
    "request_key": 218,
    "userfaultfd": 282,
    "kexec_load": 104,
    "init_module": 105,
    "finit_module": 273,
    "delete_module": 106,
    "reboot": 142,
    "swapon": 224,
    "swapoff": 225,
    "acct": 89,
    "open_by_handle_at": 265,
    "pidfd_send_signal": 424,
    "fanotify_init": 262,
    "quotactl": 60,
    "kill": 129,
    "clone": 220,
    "clone3": 435,
}
# machine name -> (AUDIT_ARCH_*, syscall table, first number of a foreign ABI sharing this arch)
_ARCHES = {
    "x86_64": (0xC000003E, _X86_64, 0x40000000),  # x32 calls carry bit 30
    "aarch64": (0xC00000B7, _AARCH64, None),
}


def supported() -> bool:
    """True when this machine's architecture has a syscall table here."""
    return platform.machine() in _ARCHES


def build_filter(machine: str | None = None) -> bytes:
    """Assemble the filter for `machine` (default: this one) as packed `struct sock_filter`s."""
    machine = machine or platform.machine()
    if machine not in _ARCHES:
        raise ValueError(f"no seccomp syscall table for {machine!r}; supported: {sorted(_ARCHES)}")
    audit_arch, table, foreign_base = _ARCHES[machine]
    prog: list[tuple[int, object, object, int]] = []  # (code, jt label, jf label, k)

    def op(code: int, k: int, jt: object = 0, jf: object = 0) -> None:
        prog.append((code, jt, jf, k))

    op(_LD_W_ABS, _OFF_ARCH)
    op(_JEQ_K, audit_arch, 0, "kill")
    op(_LD_W_ABS, _OFF_NR)
    if foreign_base is not None:
        op(_JGE_K, foreign_base, "kill", 0)
    for name in _DENIED:
        op(_JEQ_K, table[name], "eperm", 0)
    op(_JEQ_K, table["clone3"], "enosys", 0)
    op(_JEQ_K, table["kill"], "kill_check", 0)
    op(_JEQ_K, table["clone"], "clone_check", 0)
    labels: dict[str, int] = {}
    op(_RET_K, _RET_ALLOW)
    labels["kill_check"] = len(prog)
    op(_LD_W_ABS, _OFF_ARG0)
    op(_JGE_K, 0x80000000, "eperm", 0)  # pid_t below zero: -1 or a process group
    op(_RET_K, _RET_ALLOW)
    labels["clone_check"] = len(prog)
    op(_LD_W_ABS, _OFF_ARG0)  # clone's flags are its first argument on both arches
    op(_JSET_K, _CLONE_NS_FLAGS, "eperm", 0)
    op(_RET_K, _RET_ALLOW)
    labels["eperm"] = len(prog)
    op(_RET_K, _RET_ERRNO | errno.EPERM)
    labels["enosys"] = len(prog)
    op(_RET_K, _RET_ERRNO | errno.ENOSYS)
    labels["kill"] = len(prog)
    op(_RET_K, _RET_KILL_PROCESS)

    out = bytearray()
    for index, (code, jt, jf, k) in enumerate(prog):
        offsets = []
        for target in (jt, jf):
            # Jumps are relative to the next instruction and must fit in a byte.
            offset = target if isinstance(target, int) else labels[target] - index - 1
            assert 0 <= offset < 256, (index, target, offset)
            offsets.append(offset)
        out += struct.pack("=HBBI", code, offsets[0], offsets[1], k)
    return bytes(out)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install() -> None:
    """Set no_new_privs and install the filter on the calling thread (call it single-threaded).

    Raises:
        OSError: the kernel refused the filter.
        ValueError: this architecture has no table.
    """
    program = build_filter()
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    # prctl is variadic: declare every argument as unsigned long so no register carries junk bits.
    prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    if prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    if prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")

"""Scratch directories and the files a request puts in or takes out of them.

A root service mounts a size-capped tmpfs on every scratch directory (one per call, one per
session): the sandbox cannot grow its scratch past `scratch_mb` while it runs (writes fail with
ENOSPC), and cleanup is one lazy unmount, whatever depth or count of entries the code created.
A non-root service cannot mount; it uses a plain directory, removed by an iterative walk that no
depth can overflow, and the scratch budget is then only the per-file RLIMIT_FSIZE.

A request's files are checked against `FileLimits` before any sandbox is taken or any byte is
written, so a bad request costs the service nothing but the check. The file work itself runs in
a thread, never on the event loop.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
_MNT_DETACH = 2
_NAME_MAX = 255


@dataclass(frozen=True)
class FileLimits:
    """What one request may put into (or ask back from) its scratch directory."""

    max_files: int = 256
    """Files in `files`, and names in `fetch_files`."""
    max_depth: int = 16
    """Path components of one name."""
    max_path_bytes: int = 1024
    """UTF-8 bytes of one name."""
    fetch_bytes: int = 16 << 20
    """All fetched files together; files past this are left out, as if missing."""


def check_name(name: str, limits: FileLimits) -> tuple[str, ...]:
    """Validate one request file name; return its components. ValueError names the problem and the fix."""
    try:
        encoded = name.encode()
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"file name {name!r} is not valid UTF-8 text ({exc.reason}); use plain names"
        ) from None
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if not parts or name.startswith("/") or ".." in parts or "\0" in name:
        raise ValueError(
            f"file name {name!r} must be a relative path inside the scratch directory, "
            "without '..'; e.g. 'data/input.txt'."
        )
    if len(encoded) > limits.max_path_bytes:
        raise ValueError(
            f"file name of {len(encoded)} bytes is over the {limits.max_path_bytes}-byte limit; "
            "use shorter paths"
        )
    if len(parts) > limits.max_depth:
        raise ValueError(
            f"file name {name[:80]!r}... is {len(parts)} directories deep, over the limit of "
            f"{limits.max_depth}; use a flatter layout"
        )
    long = next((p for p in parts if len(p.encode()) > _NAME_MAX), None)
    if long is not None:
        raise ValueError(
            f"a path component of {len(long.encode())} bytes is over the {_NAME_MAX}-byte limit of "
            "a file name; use shorter names"
        )
    return parts


def check_files(names: list[str], fetch: list[str], limits: FileLimits) -> list[tuple[str, ...]]:
    """Check a request's `files` names and `fetch_files` before any work; return the files' components.

    Raises ValueError for too many names, a bad name, or two files where one is the other's directory.
    """
    for what, given in (("files", names), ("fetch_files", fetch)):
        if len(given) > limits.max_files:
            raise ValueError(
                f"{what} has {len(given)} entries, over the limit of {limits.max_files}; send fewer"
            )
    for name in fetch:
        check_name(name, limits)
    components = [check_name(name, limits) for name in names]
    files = set(components)
    if len(files) < len(components):
        raise ValueError(
            "two entries of files name the same path (e.g. 'a' and './a'); give each file one name"
        )
    for parts in components:
        for depth in range(1, len(parts)):
            if parts[:depth] in files:
                raise ValueError(
                    f"{'/'.join(parts[:depth])!r} is given as a file and as a directory of "
                    f"{'/'.join(parts)!r}; give each file a distinct path"
                )
    return components


def write_files(scratch: Path, files: list[tuple[tuple[str, ...], bytes]], uid: int | None) -> None:
    """Create checked files in `scratch`, owned by `uid` when given (blocking: call it in a thread)."""
    made: set[tuple[str, ...]] = set()
    for parts, content in files:
        for depth in range(1, len(parts)):
            if parts[:depth] not in made:
                made.add(parts[:depth])
                directory = scratch.joinpath(*parts[:depth])
                directory.mkdir(exist_ok=True)
                if uid is not None:
                    os.chown(directory, uid, uid)
        target = scratch.joinpath(*parts)
        target.write_bytes(content)
        if uid is not None:
            os.chown(target, uid, uid)


def fetch_files(scratch: Path, names: list[str], budget: int, file_cap: int) -> dict[str, bytes]:
    """Read regular files inside `scratch` (never through a symlink) until `budget` bytes in all.

    A missing file, a symlink, a directory or anything not regular is left out, as is a file that
    would go over the budget. Each name is read once. Blocking: call it in a thread.
    """
    root = os.path.realpath(scratch) + os.sep
    files: dict[str, bytes] = {}
    for name in dict.fromkeys(names):
        target = scratch / name
        if not os.path.realpath(target).startswith(root):
            continue
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size > min(budget, file_cap):
                continue
            content = _read_up_to(fd, info.st_size)
        finally:
            os.close(fd)
        budget -= len(content)
        files[name] = content
    return files


def _read_up_to(fd: int, size: int) -> bytes:
    chunks, left = [], size
    while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class ScratchSpace:
    """Creates and removes scratch directories under `root`; tmpfs-backed and size-capped as root."""

    def __init__(self, root: Path, *, mount: bool | None = None) -> None:
        self.root = root
        self._libc = (
            ctypes.CDLL(None, use_errno=True) if (os.geteuid() == 0 if mount is None else mount) else None
        )
        if self._libc is not None and mount is None:
            probe = Path(tempfile.mkdtemp(prefix="probe-", dir=root))
            try:
                self.prepare(probe, None, 1)
            except OSError as exc:  # e.g. a container without CAP_SYS_ADMIN
                log.warning(
                    "scratch directories are not size-capped (%s); only RLIMIT_FSIZE bounds one file", exc
                )
                self._libc = None
            finally:
                self.remove(probe)

    @property
    def capped(self) -> bool:
        """Whether scratch directories are size-capped tmpfs mounts."""
        return self._libc is not None

    def prepare(self, path: Path, uid: int | None, size_mb: int) -> None:
        """Make the empty directory `path` a scratch of at most `size_mb` MiB, owned by `uid`."""
        if self._libc is not None:
            owner = f",uid={uid},gid={uid}" if uid is not None else ""
            options = f"size={int(size_mb)}m,nr_inodes={max(4096, int(size_mb) * 256)},mode=0700{owner}"
            if self._libc.mount(b"tmpfs", os.fsencode(path), b"tmpfs", 0, options.encode()) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"mounting the scratch tmpfs on {path} failed: {os.strerror(err)}")
        elif uid is not None:
            os.chown(path, uid, uid)
            os.chmod(path, 0o700)

    def remove(self, path: Path) -> None:
        """Delete a scratch directory and everything in it; never fails on depth or entry count."""
        if self._libc is not None and os.path.ismount(path):
            self._libc.umount2(os.fsencode(path), _MNT_DETACH)
        remove_tree(path)

    def remove_all(self) -> None:
        """At shutdown: unmount every scratch mount still under the root (one whose directory was
        moved or lost, say), then delete the root."""
        if self._libc is not None:
            prefix = os.fsencode(os.path.realpath(self.root)) + b"/"
            with open("/proc/self/mounts", "rb") as f:
                points = [line.split()[1] for line in f if line.split()[1].startswith(prefix)]
            for point in sorted(points, key=len, reverse=True):
                self._libc.umount2(point.replace(b"\\040", b" "), _MNT_DETACH)
        remove_tree(self.root)


def remove_tree(path: Path) -> None:
    """Delete `path` with an explicit stack (no recursion limit) and fd-relative calls that never follow
    a symlink out of it. Missing entries are fine; whatever cannot be deleted is left."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        stack = [(os.open(path, flags), "")]  # (directory fd, its name in the directory below it)
    except OSError:
        return
    stuck: set[int] = set()  # inodes of directories that could not be emptied: never entered again
    while stack:
        fd = stack[-1][0]
        descended = False
        with os.scandir(fd) as entries:
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.name, dir_fd=fd)
                elif entry.inode() not in stuck:
                    with contextlib.suppress(OSError):
                        stack.append((os.open(entry.name, flags, dir_fd=fd), entry.name))
                        descended = True
                        break
        if descended:
            continue
        _, name = stack.pop()
        os.close(fd)
        if stack:
            try:
                os.rmdir(name, dir_fd=stack[-1][0])
            except OSError:
                stuck.add(os.stat(name, dir_fd=stack[-1][0], follow_symlinks=False).st_ino)
    with contextlib.suppress(OSError):
        os.rmdir(path)

"""Files written safely: atomic writes, and a lock that keeps two writers out of one output folder.

Atomic writes: every file cpm_lab writes (checkpoints, tables, figures, manifests) appears whole or
not at all. Each writer goes to a temporary file in the destination folder, is flushed to disk,
given normal permissions (``mkstemp`` makes owner-only files) and moved onto the destination with
``os.replace``; a failure removes the temporary file and leaves any previous file untouched. A full
disk raises ``DiskFull`` naming the file. Temporary names carry the writer's PID and host
(``.tmp-PID@HOST-XXXXXXXX``), so the next write into a folder removes those left behind by a
writer that was killed (a PID that no longer runs on this host).

Output lock: ``output_lock(folder)`` holds ``folder/.cpm-lab.lock`` (an OS lock on the file, which
records the owner's PID, host, start time and command) while a command writes there; a second
writer is refused with ``FolderLocked`` naming the owner. The OS releases the lock when its owner
dies, so a lock file left by a killed process is taken over (with a warning). POSIX only
(``fcntl.flock``); elsewhere the folder is not locked.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import tempfile
import time
import warnings
from typing import Callable, Iterator

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

#: Prefix of every temporary file ``atomic_write`` creates.
TMP_PREFIX = ".tmp-"
#: Name of the lock file ``output_lock`` keeps in an output folder.
LOCK_NAME = ".cpm-lab.lock"
#: errno values that mean the disk (or the user's quota) is full.
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class DiskFull(OSError):
    """No space left on the device while writing a file; the previous version of the file (if any) is
    intact and no temporary file is left behind."""


class FolderLocked(RuntimeError):
    """Another running cpm_lab process holds the output folder's lock."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()
_HOST = socket.gethostname()


def pid_alive(pid: int) -> bool:
    """True when a process with this PID exists on this machine (a zombie counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def _stale_temp(name: str, folder: str) -> bool:
    """True for a temporary file of ``atomic_write`` whose writer no longer runs on this host; files
    of older versions (no PID in the name) count as stale after an hour untouched."""
    rest = name[len(TMP_PREFIX):]
    pid, at, tail = rest.partition("@")
    if at and pid.isdigit():
        host = tail.rpartition("-")[0]
        return host == _HOST and not pid_alive(int(pid))
    try:
        return time.time() - os.stat(os.path.join(folder, name)).st_mtime > 3600
    except OSError:
        return False


def remove_stale_temps(folder: str | os.PathLike) -> list[str]:
    """Delete the temporary files that killed writers left in ``folder`` (see the module docstring);
    returns their names. A warning says how many were removed."""
    folder = os.fspath(folder)
    try:
        names = [n for n in os.listdir(folder) if n.startswith(TMP_PREFIX)]
    except OSError:
        return []
    removed = []
    for name in names:
        if _stale_temp(name, folder):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, name))
                removed.append(name)
    if removed:
        warnings.warn(f"removed {len(removed)} temporary file(s) left in {folder} by an interrupted write "
                      f"({', '.join(removed[:3])}{', ...' if len(removed) > 3 else ''})", stacklevel=3)
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], what: str = "file") -> str:
    """Call ``write(tmp_path)``, then move the temporary file onto ``path`` (same folder, created if
    needed); returns ``path``. ``what`` names the file in the ``DiskFull`` message (e.g.
    "checkpoint")."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    remove_stale_temps(folder)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{os.getpid()}@{_HOST}-", suffix=os.path.splitext(path)[1],
                               dir=folder)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in _FULL:
            kept = f"the previous {what} is intact" if os.path.exists(path) else "nothing was written"
            full = DiskFull(f"no space left on device writing {path}; {kept}")
            full.errno = exc.errno
            raise full from None
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> str:
    """Atomically write ``text`` (UTF-8)."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return atomic_write(path, write)


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    return str(o)


def write_json(path: str | os.PathLike, obj) -> str:
    """Atomically write ``obj`` as indented JSON (numpy/torch scalars as numbers)."""
    return write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def write_csv(path: str | os.PathLike, frame, float_format: str | None = "%.6g") -> str:
    """Atomically write a DataFrame as CSV without its index."""
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False, float_format=float_format))


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> str:
    """Atomically save a matplotlib figure as PNG and close it."""
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    plt.close(fig)
    return os.fspath(path)


# ------------------------------------------------------------------------------------------------
# The output-folder lock
# ------------------------------------------------------------------------------------------------
def _read_owner(fd: int) -> dict:
    """The owner record of an open lock file ({} when empty or unreadable)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 4096)
        owner = json.loads(data.decode("utf-8")) if data.strip() else {}
        return owner if isinstance(owner, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(owner: dict) -> str:
    text = f"PID {owner.get('pid', '?')} on {owner.get('host', '?')}"
    if owner.get("command"):
        text += f", `{owner['command']}`"
    return text + (f", since {owner['started']}" if owner.get("started") else "")


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike, command: str = "") -> Iterator[str]:
    """Hold the lock of output folder ``folder`` for the ``with`` block; yields the lock file's
    path and removes it at the end (and the folder, when this call created it and it is empty).

    Raises ``FolderLocked`` naming the owner (PID, host, command, start time) when another live
    process holds it. A lock file whose owner is gone is taken over with a warning.
    """
    folder = os.fspath(folder)
    created = not os.path.isdir(folder)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK_NAME)
    if fcntl is None:
        yield path
        return
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = _read_owner(fd)
            os.close(fd)
            raise FolderLocked(f"{folder} is in use by another cpm-lab process ({_describe(owner)}); wait "
                               f"for it to finish or choose another output folder") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous owner removed the file while we waited for it: lock the new one
    previous = _read_owner(fd)
    if previous:
        warnings.warn(f"{folder}: taking over the lock left by {_describe(previous)}, which is no longer "
                      f"running", stacklevel=3)
    record = {"pid": os.getpid(), "host": _HOST, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": command}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(record).encode("utf-8"))
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
        if created:  # a command that failed before writing anything leaves no empty folder behind
            with contextlib.suppress(OSError):
                os.rmdir(folder)

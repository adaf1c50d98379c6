"""Filesystem transactions: staged writes that publish only when complete, one writer per store,
and outputs that cannot be written reported as one line.

Every command that writes a new output (import, convert, export, pull, saved runs, predictions)
writes it under a hidden name beside its destination with :func:`staged` and moves it into
place only when the block succeeds, so a failure leaves the destination as it was. Writers of a
store hold :func:`writer_lock` on it: an OS file lock, so a second writer is refused with the
holder's pid, and a lock whose holder died is free again.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from .errors import StoreError, WriteError

try:  # POSIX; on Windows locks are taken with msvcrt
    import fcntl
except ImportError:  # pragma: no cover - not reached on Linux or macOS
    fcntl = None  # type: ignore[assignment]


def remove(path: Path) -> None:
    """Delete a file or a directory tree."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def hidden_sibling(path: Path, tag: str) -> Path:
    """``.NAME.TAG`` beside ``path`` (the suffix kept last, so backends still recognise it)."""
    return path.with_name(f".{path.stem}.{tag}{path.suffix}")


def write_error(path: Path, exc: OSError) -> WriteError:
    """The one-line error for an output that cannot be written, naming the OS reason."""
    reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
    if exc.errno in (errno.ENOTDIR, errno.EEXIST) or isinstance(exc, NotADirectoryError | FileExistsError):
        reason = f"{reason}: a file stands where a folder must be"
    return WriteError(f"{path}: cannot write here ({reason}); choose a writable output path")


def ensure_writable(path: str | os.PathLike) -> Path:
    """Create the folder ``path`` goes into and check that files can be created there; the cheap
    check commands make before any long work. Raises :class:`WriteError`."""
    path = Path(path)
    probe = hidden_sibling(path, f"probe-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise write_error(path, exc) from None
    return path


@contextlib.contextmanager
def staged(
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    merge: Callable[[Path], Iterable[Path]] | None = None,
    last: Sequence[str] = (),
) -> Iterator[Path]:
    """Yield a hidden path beside ``path`` to write a new output into (a file or a folder).

    When the block succeeds the staged output replaces ``path``. With ``merge`` (a folder of files
    such as an export or a saved run) the folder at ``path`` is kept: the files ``merge(path)``
    lists are removed and the staged files moved in one by one, those named in ``last`` (say, the
    file that vouches for the others) after the rest. On any failure the staged output is
    removed and ``path`` is left as it was. An existing ``path`` is refused unless ``overwrite``.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise StoreError(f"{path}: already exists; choose another path or pass overwrite=True (--overwrite)")
    tmp = hidden_sibling(ensure_writable(path), "partial")
    try:
        if tmp.exists():
            remove(tmp)
        if merge is not None:
            tmp.mkdir()
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        yield tmp
        _publish(tmp, path, merge, last)
    except BaseException:
        if tmp.exists():
            remove(tmp)
        raise


def _publish(tmp: Path, path: Path, merge: Callable[[Path], Iterable[Path]] | None, last: Sequence[str]) -> None:
    """Move a finished staged output into place."""
    try:
        if merge is None:
            if path.exists():
                remove(path)
            os.replace(tmp, path)
            return
        path.mkdir(parents=True, exist_ok=True)
        for old in merge(path):
            old.unlink(missing_ok=True)
        for file in sorted(tmp.iterdir(), key=lambda f: f.name in last):
            os.replace(file, path / file.name)
        tmp.rmdir()
    except OSError as exc:
        raise write_error(path, exc) from None


# --------------------------------------------------------------------------- one writer per store

_held: dict[Path, list] = {}  # lock file -> [open file, depth]: a process may re-enter its own lock
_held_guard = threading.Lock()


def lock_path(store: Path) -> Path:
    """The lock file of a store: ``.NAME.lock`` beside it (a store may be a single HDF5 file,
    and a new one does not exist yet)."""
    return store.with_name(f".{store.name}.lock")


@contextlib.contextmanager
def writer_lock(store: str | os.PathLike) -> Iterator[None]:
    """Hold the OS lock that makes this process the only writer of ``store``.

    A second process is refused with a :class:`StoreError` naming the holder's pid. The kernel
    drops the lock when its holder exits, so a lock left by a killed process never blocks the
    next run. The lock file exists only while it is held (or after its holder was killed).
    """
    key = lock_path(Path(store).absolute())
    with _held_guard:
        if key in _held:
            _held[key][1] += 1
        else:
            _held[key] = [_acquire(key, Path(store)), 1]
    try:
        yield
    finally:
        with _held_guard:
            _held[key][1] -= 1
            if _held[key][1] == 0:
                _release(key, _held.pop(key)[0])


def _acquire(key: Path, store: Path):
    """Lock ``key`` without waiting and record this process's pid in it.

    The file a lock is taken on must still be the one at ``key`` afterwards: a holder removes it
    before unlocking, so a process that opened it just before then locks a removed file and tries
    again with a fresh one."""
    while True:
        try:
            key.parent.mkdir(parents=True, exist_ok=True)
            handle = open(key, "a+")  # noqa: SIM115 - held open for as long as the lock
        except OSError as exc:
            raise write_error(store, exc) from None
        try:
            _lock(handle)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise StoreError(
                f"{store}: another weightzoo process (pid {holder}) is writing this store; "
                "wait for it to finish, or stop it and run the command again"
            ) from None
        if _same_file(handle, key):
            break
        handle.close()
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _same_file(handle, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


def _lock(handle) -> None:
    if fcntl is not None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    else:  # pragma: no cover
        import msvcrt

        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)


def _release(key: Path, handle) -> None:
    """Remove the lock file, then unlock (see :func:`_acquire`)."""
    key.unlink(missing_ok=True)
    if fcntl is not None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    handle.close()

"""The span spool's files: whole or absent across a crash, in order, one process at a time.

Each batch is one file holding an encoded OTLP request, named by sequence number and span count
(`0000000000000042-12.otlp`). It is written to a temporary name, fsynced, renamed and the
directory fsynced, so a file under its final name is always whole, even after a power cut.
"""

from __future__ import annotations

import fcntl
import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DirectoryInUseError", "SpoolDirectory", "SpooledBatch"]

_BATCH_NAME = re.compile(r"(\d{16})-(\d+)\.otlp")
_TEMP_PREFIX = ".tmp-"
_LOCK_NAME = ".lock"


@dataclass(frozen=True)
class SpooledBatch:
    """One spooled request: its file name, place in the order, size in bytes and span count."""

    name: str
    sequence: int
    size: int
    spans: int


class DirectoryInUseError(OSError):
    """Another process holds the directory's lock."""

    def __init__(self, holder: str) -> None:
        super().__init__(f"in use by another process (pid {holder})")


class SpoolDirectory:
    """A directory of batch files under an exclusive advisory lock (released on close or exit)."""

    def __init__(self, path: Path) -> None:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._path = path
        self._lock_fd = _lock(path / _LOCK_NAME)
        self._dir_fd = os.open(path, os.O_RDONLY)

    @property
    def closed(self) -> bool:
        return self._lock_fd < 0

    def recover(self) -> list[SpooledBatch]:
        """What a previous process left, oldest first; half-written files are deleted."""
        found: list[tuple[int, SpooledBatch]] = []
        for entry in os.scandir(self._path):
            if entry.name.startswith(_TEMP_PREFIX):
                Path(entry.path).unlink(missing_ok=True)
            elif match := _BATCH_NAME.fullmatch(entry.name):
                batch = SpooledBatch(
                    entry.name, int(match[1]), entry.stat().st_size, int(match[2])
                )
                found.append((batch.sequence, batch))
        return [batch for _, batch in sorted(found)]

    def write(self, sequence: int, data: bytes, *, spans: int) -> SpooledBatch:
        """Write one batch durably; OSError when the disk refuses."""
        name = f"{sequence:016d}-{spans}.otlp"
        temporary = self._path / f"{_TEMP_PREFIX}{name}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self._path / name)
        # The rename itself must survive a power cut, not only the file's bytes.
        os.fsync(self._dir_fd)
        return SpooledBatch(name, sequence, len(data), spans)

    def read(self, batch: SpooledBatch) -> bytes:
        return (self._path / batch.name).read_bytes()

    def delete(self, batch: SpooledBatch) -> None:
        (self._path / batch.name).unlink(missing_ok=True)

    def close(self) -> None:
        """Release the lock; the files stay."""
        if self._lock_fd >= 0:
            os.close(self._dir_fd)
            os.close(self._lock_fd)
            self._lock_fd = -1


def _lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise DirectoryInUseError(holder) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd

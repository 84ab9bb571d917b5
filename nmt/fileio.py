"""Atomic file writes and content hashing shared by every stage that writes or caches files.

A file is written to a temporary name in the same directory, flushed, fsynced and renamed
over the destination, so a process killed at any instant leaves either the old file or the
new one, never a half-written file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w",
                 encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success rename it to ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched. A ``path``
    that exists and is neither a regular file nor a directory (``/dev/null``, ``/dev/stdout``,
    a named pipe) is written in place: renaming over it would replace the device with a file.
    """
    path = Path(path)
    binary = "b" in mode
    if path.exists() and not path.is_file() and not path.is_dir():
        with open(path, mode, encoding=None if binary else encoding) as handle:
            yield handle
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path, "w") as handle:
        handle.write(text)


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable by syncing its directory (a no-op where unsupported)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def split_lines(data: bytes, name: str, errors: str = "strict") -> list[str]:
    """Lines of UTF-8 text split on ``\\n`` only (``\\r\\n`` accepted), without endings.

    Invalid UTF-8 raises :class:`~nmt.errors.DataError` naming ``name`` and the line number,
    unless ``errors="replace"``.
    """
    from nmt.errors import DataError

    raw = data.split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    lines = []
    for number, line in enumerate(raw, start=1):
        try:
            lines.append(line.decode("utf-8", errors=errors).rstrip("\r"))
        except UnicodeDecodeError as exc:
            raise DataError(f"{name}: line {number} is not valid UTF-8 ({exc.reason}); fix the "
                            "input or re-encode it as UTF-8") from None
    return lines


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(*parts: str) -> str:
    """Hex SHA-256 of several strings joined unambiguously."""
    digest = hashlib.sha256()
    for part in parts:
        encoded = part.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
    return digest.hexdigest()

"""Documents through the server: LibreTranslate's ``POST /translate_file`` and
``GET /download_file/NAME``.

``/translate_file`` takes a multipart form (``file``, ``source``, ``target``, ``api_key``)
whose body is at most ``--file-limit`` bytes, translates the file with the document formats of
:mod:`nmt.documents` (the extension chooses: :data:`EXTENSIONS`) and answers
``{"translatedFileUrl": ".../download_file/<uuid>.<name>"}`` as LibreTranslate does. The
translated files are held in memory (:class:`TranslatedFiles`: at most :data:`KEEP_BYTES` in
all, each for :data:`KEEP_SECONDS`, the oldest dropped first) and downloaded as an attachment
under the uploaded name. A name is looked up in that table, never joined to a path, so no
request can reach a file of the machine.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import PurePosixPath, PureWindowsPath

from nmt.documents import SUFFIXES

#: The extensions ``/translate_file`` takes (``/frontend/settings``' ``supportedFilesFormat``).
EXTENSIONS = tuple(sorted(SUFFIXES))
KEEP_SECONDS = 30 * 60
KEEP_BYTES = 256 << 20
SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(filename: str) -> str:
    """An uploaded file's name without folders and with only ``A-Za-z0-9._-`` (others
    become ``_``), as werkzeug's ``secure_filename`` makes it for LibreTranslate."""
    base = PureWindowsPath(PurePosixPath(filename).name).name
    return SAFE.sub("_", base).strip("._") or "file"


class TranslatedFiles:
    """Translated files by random name, in memory, dropped after ``keep_seconds`` or when
    ``keep_bytes`` would be passed (the oldest first). Thread-safe."""

    def __init__(self, keep_seconds: float = KEEP_SECONDS, keep_bytes: int = KEEP_BYTES) -> None:
        self.keep_seconds, self.keep_bytes = keep_seconds, keep_bytes
        self._files: OrderedDict[str, tuple[float, str, bytes]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def _expire(self, now: float, room: int = 0) -> None:
        while self._files:
            name, (added, _, data) = next(iter(self._files.items()))
            if now - added < self.keep_seconds and self._size + room <= self.keep_bytes:
                break
            del self._files[name]
            self._size -= len(data)

    def add(self, filename: str, data: bytes) -> str:
        """Keep ``data``; returns its download name ``<uuid>.<filename>``."""
        name = f"{uuid.uuid4()}.{safe_name(filename)}"
        with self._lock:
            self._expire(time.monotonic(), len(data))
            self._files[name] = (time.monotonic(), safe_name(filename), data)
            self._size += len(data)
        return name

    def get(self, name: str) -> tuple[str, bytes] | None:
        """(download filename, bytes) of a kept file; None when unknown or expired."""
        with self._lock:
            self._expire(time.monotonic())
            found = self._files.get(name)
        return None if found is None else found[1:]

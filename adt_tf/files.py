"""Writing a file so that a reader never sees half of it: the project's one atomic writer.

The text goes to `<path>.tmp-<pid>` beside the target (same folder, so the rename stays on one
file system), is flushed to disk, and is renamed over the target with `os.replace`, which
POSIX makes atomic. A kill at any moment leaves either the old file or the new one (and at
worst a `.tmp-` file, which no reader opens); two processes writing the same path never
share a temporary file (the pid is in its name).

    >>> import os, tempfile
    >>> path = write_json(os.path.join(tempfile.mkdtemp(), "report.json"), {"clean": 0.5})
    >>> json.load(open(path))
    {'clean': 0.5}
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any


def write_text(path: str, text: str) -> str:
    """Writes `text` (UTF-8) to `path` atomically; returns `path`."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)  # a full disk or an interrupt leaves nothing half-written
        raise
    return path


def write_json(path: str, payload: Any, *, indent: int | None = 2,
               default: Callable[[Any], Any] | None = None) -> str:
    """Writes `payload` as JSON to `path` atomically; returns `path`. The payload is encoded
    before anything is written, so one that cannot be encoded leaves the old file as it was."""
    return write_text(path, json.dumps(payload, indent=indent, default=default))

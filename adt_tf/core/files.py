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

import contextlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

#: What names a temporary file of `atomic_path` (readers skip such files, cleaners remove).
TMP_MARK = ".tmp-"


def write_text(path: str, text: str) -> str:
    """Writes `text` (UTF-8) to `path` atomically; returns `path`."""
    tmp = f"{path}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
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


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary path beside `path` for a writer that takes a file name (NumPy's savez,
    Keras's save and save_weights): the block writes it, and when the block ends without
    an error it is renamed over `path` (atomically); otherwise it is removed. The temporary
    name keeps `path`'s extensions (Keras checks them) and is unique per process and call
    (two processes writing one path never share it):
    `<dir>/.tmp-<pid>-<random>-<name>`.

        >>> import numpy as np, tempfile
        >>> target = os.path.join(tempfile.mkdtemp(), "cache.npz")
        >>> with atomic_path(target) as tmp:
        ...     np.savez(tmp, a=np.zeros(2))
        >>> sorted(np.load(target).files)
        ['a']
    """
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f"{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}-{name}")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def remove_leftovers(folder: str, min_age_seconds: float = 0.0) -> list[str]:
    """Removes the temporary files of `atomic_path` and `write_text` that a killed writer
    left in `folder` (those older than `min_age_seconds`: a live writer's are young);
    returns their names."""
    import time

    removed = []
    if not os.path.isdir(folder):
        return removed
    now = time.time()
    for name in os.listdir(folder):
        full = os.path.join(folder, name)
        if (name.startswith(TMP_MARK) or f"{TMP_MARK}" in name) and os.path.isfile(full):
            with contextlib.suppress(OSError):
                if now - os.path.getmtime(full) >= min_age_seconds:
                    os.remove(full)
                    removed.append(name)
    return removed


def write_json(path: str, payload: Any, *, indent: int | None = 2,
               default: Callable[[Any], Any] | None = None) -> str:
    """Writes `payload` as JSON to `path` atomically; returns `path`. The payload is encoded
    before anything is written, so one that cannot be encoded leaves the old file as it was."""
    return write_text(path, json.dumps(payload, indent=indent, default=default))

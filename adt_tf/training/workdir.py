"""A training workdir's files, named once, and the lock a run holds on it.

    <workdir>/config.json        the run's record (`adt_tf.training.record`)
    <workdir>/classifier.keras   the classifier at the end of training
    <workdir>/best.keras         the best epoch's classifier (with a validation split)
    <workdir>/best.json          its epoch and validation numbers
    <workdir>/report.json        the final report (`adt_tf.training.report`)
    <workdir>/history.csv        one row per epoch
    <workdir>/backup/            the per-epoch backup a killed run resumes from
    <workdir>/logs/              TensorBoard
    <workdir>/workers/<task>/    a multi-worker run's non-chief copies
    <workdir>/.lock              held (flock) by the run in progress

Imports no TensorFlow (the commands read these names before it starts).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket

RECORD_FILE = "config.json"
CLASSIFIER_FILE = "classifier.keras"
BEST_FILE = "best.keras"
BEST_RECORD = "best.json"
REPORT_FILE = "report.json"
HISTORY_FILE = "history.csv"
BACKUP_DIR = "backup"
LOGS_DIR = "logs"
WORKERS_DIR = "workers"
LOCK_FILE = ".lock"


@contextlib.contextmanager
def workdir_lock(workdir: str):
    """Holds `<workdir>/.lock` (an exclusive `flock`) for the run: a second run into the same
    workdir is refused. The kernel drops the lock when the process ends, however it ends, so
    a killed run never leaves it stuck and the rerun resumes."""
    path = os.path.join(workdir, LOCK_FILE)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise ValueError(f"--workdir={workdir} is in use by another adt-train run ({owner}); "
                         "wait for it to finish, or use another --workdir.") from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


__all__ = ["BACKUP_DIR", "BEST_FILE", "BEST_RECORD", "CLASSIFIER_FILE", "HISTORY_FILE",
           "LOCK_FILE", "LOGS_DIR", "RECORD_FILE", "REPORT_FILE", "WORKERS_DIR",
           "workdir_lock"]

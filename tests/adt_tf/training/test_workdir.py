"""A workdir's lock (adt_tf.training.workdir.workdir_lock): one run at a time, the owner named,
released however the holder ends. The CLI's use of it: tests/test_reliability.py."""

from __future__ import annotations

import os
import subprocess

import pytest

from adt_tf.training.workdir import LOCK_FILE, workdir_lock
from tests.helpers import start_python


def test_a_second_holder_is_refused_naming_the_first_and_the_lock_is_released(tmp_path):
    workdir = str(tmp_path)
    with workdir_lock(workdir):
        owner = open(os.path.join(workdir, LOCK_FILE)).read()
        assert f"pid {os.getpid()}" in owner
        # Another open file description (as another process has) cannot take it.
        with pytest.raises(ValueError, match=rf"--workdir={workdir} is in use .*pid {os.getpid()}"):
            with workdir_lock(workdir):
                pass
    with workdir_lock(workdir):  # released on exit
        pass


def test_a_killed_holder_leaves_the_lock_free(tmp_path):
    script = ("import sys, time; from adt_tf.training.workdir import workdir_lock\n"
              "with workdir_lock(sys.argv[1]):\n"
              "    print('held', flush=True); time.sleep(600)\n")
    proc = start_python(script, tmp_path, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(ValueError, match="in use"):
            with workdir_lock(str(tmp_path)):
                pass
    finally:
        proc.kill()
        proc.wait()
    with workdir_lock(str(tmp_path)):  # the kernel dropped the killed holder's lock
        pass

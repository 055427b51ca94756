"""`export.verify`: the export's checks, in process and in a fresh one."""


import os

import numpy as np
import pytest

from export import verify
from export.verify import VerificationError
from tests.export.helpers import keras_probabilities
from tests.helpers import run_command, start_command


def test_verification_checks_pass_and_catch_a_mismatch(exported, normalised_model):
    classifier, images = normalised_model
    path = exported[1]
    probabilities = keras_probabilities(classifier, images)
    result = verify.check_saved_model(path, images, probabilities, has_class_names=True)
    assert result["ok"], result["problems"]
    assert result["max_abs_diff"] <= 1e-5 and result["bytes_max_abs_diff"] <= 1e-5
    wrong = verify.check_saved_model(path, images, probabilities + 1e-3, has_class_names=True)
    assert not wrong["ok"] and "differ from Keras's by 0.001" in wrong["problems"][0]
    no_names = verify.check_saved_model(path, images, probabilities, has_class_names=False)
    assert not no_names["ok"] and "signature serving_default" in no_names["problems"][0]


def test_verify_export_in_a_fresh_process_and_saved_model_cli(exported, normalised_model):
    classifier, images = normalised_model
    result = verify.verify_export(exported[1], images, keras_probabilities(classifier, images),
                                  has_class_names=True)
    assert result["ok"] and result["saved_model_cli"] == "ok"
    assert 0 <= result["max_abs_diff"] <= 1e-5 and result["num_images"] == len(images)
    assert sorted(result["signatures"]) == ["predict", "serving_bytes", "serving_default"]


@pytest.mark.slow
def test_verify_export_reports_a_broken_export(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"garbage")
    images = np.zeros((1, 16, 16, 3), np.float32)
    with pytest.raises(VerificationError, match="fresh process failed"):
        verify.verify_export(str(tmp_path), images, np.full((1, 10), 0.1), True)


@pytest.mark.slow
def test_a_killed_export_leaves_no_verification_running_and_the_next_cleans_up(tmp_path):
    """kill -9 of adt-export during its fresh-process verification: the child ends with it,
    and the next export removes the temporary SavedModel and scratch folders."""
    import glob
    import signal
    import subprocess
    import tempfile
    import time

    from tests.helpers import tiny_classifier

    model = tmp_path / "m.keras"
    tiny_classifier((16, 16, 3)).save(model)
    exports = tmp_path / "exports"
    command = ["adt-export", f"--model={model}", f"--export_dir={exports}"]
    proc = start_command(*command, stderr=subprocess.PIPE)
    pattern = os.path.join(tempfile.gettempdir(), f"adt_export_verify_{proc.pid}-*")
    deadline = time.time() + 300
    while not glob.glob(pattern) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert glob.glob(pattern), "the verification never started"
    time.sleep(1.0)  # the child is running
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    tmp_model = glob.glob(str(exports / "m" / ".tmp-*"))
    assert tmp_model  # what the kill left

    def verifying():
        found = []
        for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
            try:
                with open(cmdline, "rb") as f:
                    if tmp_model[0].encode() in f.read():
                        found.append(cmdline)
            except OSError:
                pass
        return found

    deadline = time.time() + 3  # ended with its parent, not when its work is done
    while verifying() and time.time() < deadline:
        time.sleep(0.5)
    assert not verifying(), "the verification outlived its parent"
    again = run_command(*command)
    assert again.returncode == 0, again.stderr
    assert not glob.glob(str(exports / "m" / ".tmp-*")) and not glob.glob(pattern)

"""`export.verify`: the export's checks, in process and in a fresh one."""


import numpy as np
import pytest

from export import verify
from export.verify import VerificationError
from tests.export.helpers import keras_probabilities


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

"""`adt_tf.evaluation.report`: the JSON, Markdown and per-example files of a result."""

import json

import numpy as np
import pytest
import tensorflow as tf

from adt_tf.evaluation import evaluate
from adt_tf.evaluation.report import EvaluationResult
from tests.adt_tf.evaluation.helpers import EPS
from tests.helpers import make_tiny_images, tiny_classifier

#: The images of the `trained` fixture (conftest.py) these tests attack.
TRAINED_EXAMPLES = 48


def test_result_writes_json_markdown_and_per_example(trained, tmp_path):
    model, x, y = trained
    result = evaluate(model, x[:16], y[:16], threat=EPS, suite="quick", verbose=0,
                      model_name="tiny", dataset="tiny_cifar", sanity_inputs=16)
    paths = result.save(str(tmp_path))
    data = json.loads(open(paths["json"]).read())
    assert data["num_examples"] == 16 and data["epsilon"] == pytest.approx(EPS)
    assert data["attacks"][0]["params"] == {"steps": 20, "restarts": 1, "random_start": True,
                                            "epsilon": EPS, "seed": 0}
    assert "per_example" not in data and data["environment"]["tensorflow"] == tf.__version__
    assert EvaluationResult.from_dict(data).robust_accuracy == result.robust_accuracy
    text = open(paths["md"]).read()
    assert "| PGD-20 | white-box |" in text and "16 inputs" in text and "8/255" in text
    assert np.load(paths["npz"])["robust"].shape == (16,)


def test_a_report_without_sanity_checks_says_they_were_skipped():
    """--sanity_checks=false wrote "No warning: logits (not probabilities), ..." while the
    JSON had an empty record: it must say they were not run."""
    x, y = make_tiny_images(8)
    result = evaluate(tiny_classifier(), x, y, 8 / 255, suite="fgsm", sanity_checks=False,
                      verbose=0)
    text = result.to_markdown()
    assert "Not run (`--sanity_checks=false`)" in text and "No warning" not in text
    assert json.loads(result.to_json())["sanity"] == {"skipped": True}

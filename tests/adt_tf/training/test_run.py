"""One run, one threat model: adt-train and adt-evaluate make the ball once and read an npz:
source once, and hand both down."""

import json

import numpy as np
import pytest

from adt_tf import threat as threat_lib
from adt_tf.data import datasets
from adt_tf.training.config import RunConfig
from adt_tf.training.run import run_training
from tests.helpers import slow_cases, write_npz_dataset


@pytest.fixture
def npz_source(tmp_path):
    """A tiny npz: dataset (16 x 16 RGB, 4 classes), so that its default budget comes from
    its files."""
    rng = np.random.default_rng(0)

    def split(n):
        y = np.arange(n) % 4
        x = (rng.uniform(0, 1, (n, 16, 16, 3)) * 60 + y[:, None, None, None] * 40)
        return x.round().astype(np.uint8), y

    return f"npz:{write_npz_dataset(tmp_path / 'data', split(48), split(16))}"


@pytest.fixture
def counts(monkeypatch):
    """How many balls are made and how many .npz files are read while a test runs."""
    seen = {"balls": [], "reads": []}
    make, read = threat_lib.Ball.__init__, datasets._read_npz

    def counting_init(self, *args, **kwargs):
        seen["balls"].append(type(self).__name__)
        make(self, *args, **kwargs)

    def counting_read(path):
        seen["reads"].append(path)
        return read(path)

    monkeypatch.setattr(threat_lib.Ball, "__init__", counting_init)
    monkeypatch.setattr(datasets, "_read_npz", counting_read)
    return seen


@pytest.mark.parametrize("method", slow_cases(["pgd_at", "adt_exp"], {"adt_exp"}))
def test_a_training_run_makes_its_threat_once_and_reads_its_data_once(tmp_path, npz_source,
                                                                      counts, method):
    params = {"attack_steps": 1} if method == "pgd_at" else {"inner_steps": 1,
                                                             "mc_samples": 1}
    if method == "pgd_at":
        params["attack_step_size"] = None  # as adt-train's flags leave it: set from the ball
    config = RunConfig.from_flags(workdir=str(tmp_path / "run"), method=method,
                                  dataset=npz_source, model="small_cnn",
                                  model_params={"width": 4}, epochs=1, batch_size=16,
                                  method_params=params, eval_batch_size=16, verbose=0,
                                  validation_examples=8)
    report = run_training(config)
    assert counts["balls"] == ["LinfBall"], counts["balls"]
    assert sorted(p.rsplit("/", 1)[1] for p in counts["reads"]) == ["test.npz", "train.npz"]
    assert report["epsilon"] == pytest.approx(8 / 255)
    if method == "pgd_at":  # the threat-dependent default was set from the one ball
        recorded = json.loads((tmp_path / "run" / "config.json").read_text())
        assert recorded["method"]["params"]["attack_step_size"] == pytest.approx(2 / 255)


def test_an_evaluation_makes_its_threat_once_and_reads_its_data_once(tmp_path, npz_source,
                                                                     counts):
    import keras

    from tests.helpers import tiny_classifier
    from trainers.evaluate import run_evaluation

    path = str(tmp_path / "model.keras")
    tiny_classifier(num_classes=4).save(path)
    counts["balls"].clear()
    result, _ = run_evaluation(path, npz_source, out=str(tmp_path / "eval"), verbose=0,
                               attack_params="pgd20.steps=2", sanity_checks=False)
    assert counts["balls"] == ["LinfBall"], counts["balls"]
    assert sorted(p.rsplit("/", 1)[1] for p in counts["reads"]) == ["test.npz", "train.npz"]
    assert result.epsilon == pytest.approx(8 / 255)
    assert isinstance(keras.saving.load_model(path), keras.Model)

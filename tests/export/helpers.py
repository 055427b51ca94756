"""What the export tests share: the export name, Keras probabilities, hidden folders,
signature specs, the adt-export command."""

import json
import os
import subprocess
import sys

import tensorflow as tf

from adt_tf.data import load as load_dataset
from tests.helpers import ROOT

NAME = "tiny"


def keras_probabilities(classifier, images):
    return tf.nn.softmax(classifier(images, training=False)).numpy()


def hidden_dirs(model_dir):
    return [d for d in os.listdir(model_dir) if d.startswith(".")]


def specs(function):
    def spec(s):
        return (s.dtype, None if s.shape.rank is None else tuple(s.shape.as_list()))

    return ({k: spec(s) for k, s in function.structured_input_signature[1].items()},
            {k: spec(s) for k, s in function.structured_outputs.items()})


def cifar_uint8(n):
    """Real CIFAR-10 test images from the sample the package ships."""
    return load_dataset("cifar10_sample", max_test_examples=n).x_test


def run_record(workdir, **flags):
    """The record adt-train writes for a short ADT_EXP run on the bundled sample (20 training
    images held out for validation), resolved as adt-train resolves it; `flags` change it."""
    from adt_tf.training.config import RunConfig
    from adt_tf.training.resolve import resolve

    settings = dict(workdir=str(workdir), method="adt_exp", dataset="cifar10_sample",
                    epochs=1, method_params={"entropy_weight": 0.01},
                    max_train_examples=200, validation_examples=20, verbose=0)
    return resolve(RunConfig.from_flags(**dict(settings, **flags)))


def card_training_config(record) -> dict:
    """What a model card keeps of a run's record: its dict, with the number of held-out
    validation images instead of their indices."""
    data = json.loads(json.dumps(record.to_dict()))
    data["resolved"]["validation_examples"] = len(data["resolved"].pop("validation_indices"))
    return data


def make_workdir(tmp_path, classifier):
    """A training workdir as adt-train leaves it: classifier.keras, config.json (the run's
    record) and report.json. Returns (workdir, the card's training_config)."""
    from adt_tf.training.record import write_record

    workdir = tmp_path / "adt_run"
    workdir.mkdir()
    classifier.save(str(workdir / "classifier.keras"))
    record = run_record(workdir)
    report = {"dataset": "cifar10_sample", "epsilon": 8 / 255, "clean_accuracy": 0.25,
              "pgd20_accuracy": 0.125, "method": "adt_exp", "attack": "PGD-20"}
    write_record(record, str(workdir))
    (workdir / "report.json").write_text(json.dumps(report))
    return str(workdir), card_training_config(record)


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "export.export_saved_model", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)

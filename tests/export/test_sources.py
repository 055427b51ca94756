"""`export.sources`: the model card of a training workdir, the sample images."""

import json
import os

import pytest
import tensorflow as tf

from adt_tf.data import CIFAR10_CLASSES
from export import sources
from export.exporter import export_classifier
from tests.export.helpers import make_workdir, run_record
from tests.helpers import flat_record


def test_model_card_from_a_training_workdir(normalised_model, tmp_path):
    workdir, config = make_workdir(tmp_path, normalised_model[0])
    source = sources.load_source(workdir)
    assert source.dataset == "cifar10_sample" and source.report["pgd20_accuracy"] == 0.125
    images, origin = sources.real_images((16, 16, 3), 4, source.dataset)
    assert images.shape == (4, 16, 16, 3) and origin == "cifar10_sample test split"
    assert 0 <= images.min() and images.max() <= 1 and images.std() > 0.05
    path = export_classifier(source.classifier, str(tmp_path / "exports"), "adt_run",
                             class_names=sources.class_names_of(source.dataset),
                             model_card=sources.workdir_card(source), images=images,
                             images_source=origin, verify_export=False)
    card = json.load(open(os.path.join(path, "model_card.json")))
    assert card["dataset"] == "cifar10_sample" and card["method"] == "adt_exp"
    assert card["epsilon"] == pytest.approx(8 / 255)
    assert card["norm"] == "linf"
    assert card["clean_accuracy"] == 0.25 and card["robust_accuracy"] == 0.125
    assert card["training_config"] == config and card["class_names"] == list(CIFAR10_CLASSES)
    # the record's settings, with the number of held-out images instead of their indices
    assert config["resolved"]["validation_examples"] == 20
    assert "validation_indices" not in card["training_config"]["resolved"]
    assert card["training_config"]["method"]["params"]["entropy_weight"] == 0.01
    assert card["software"]["tensorflow"] == tf.__version__
    # an L2 run: the card names the norm, and the dataset's L2 budget the run resolved
    source.record, source.report = run_record(workdir, norm="l2"), {}
    l2_card = sources.workdir_card(source)
    assert l2_card["norm"] == "l2" and l2_card["epsilon"] == 0.5


def test_model_card_of_a_workdir_written_before_the_run_schema(normalised_model, tmp_path):
    """A workdir of an earlier release: a flat config.json (version 1) without `norm` and
    with `epsilon: null` (the dataset's default), read through the record."""
    workdir, _ = make_workdir(tmp_path, normalised_model[0])
    path = os.path.join(workdir, "config.json")
    flat = flat_record(json.load(open(path)), drop=("norm",))
    flat["epsilon"] = None
    json.dump(flat, open(path, "w"))
    source = sources.load_source(workdir)
    assert source.dataset == "cifar10_sample" and source.record.schema_version == 1
    card = sources.workdir_card(source)
    assert card["norm"] == "linf"  # a run written before norm existed is L-infinity
    assert card["epsilon"] == pytest.approx(8 / 255)
    assert card["training_config"]["method"]["params"]["entropy_weight"] == 0.01
    # an L2 run: the card names the norm, and the dataset's L2 budget when none is recorded
    json.dump(dict(flat, norm="l2"), open(path, "w"))
    source.record, source.report = sources.load_source(workdir).record, {}
    l2_card = sources.workdir_card(source)
    assert l2_card["norm"] == "l2" and l2_card["epsilon"] == 0.5


def test_real_images_fall_back_to_the_bundled_sample():
    images, origin = sources.real_images((28, 28, 1), 3, "npz:/nonexistent/folder")
    assert images.shape == (3, 28, 28, 1) and origin.startswith("cifar10_sample")

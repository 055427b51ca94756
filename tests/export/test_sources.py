"""`export.sources`: the model card of a training workdir, the sample images."""

import json
import os

import pytest
import tensorflow as tf

from adt_tf.data import CIFAR10_CLASSES
from export import sources
from export.exporter import export_classifier
from tests.export.helpers import make_workdir


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
    assert card["norm"] == "linf"  # a run written before norm existed is L-infinity
    assert card["clean_accuracy"] == 0.25 and card["robust_accuracy"] == 0.125
    assert card["training_config"] == config and card["class_names"] == list(CIFAR10_CLASSES)
    assert card["software"]["tensorflow"] == tf.__version__
    # an L2 run: the card names the norm, and the dataset's L2 budget when none is recorded
    source.config, source.report = dict(config, norm="l2", epsilon=None), {}
    l2_card = sources.workdir_card(source)
    assert l2_card["norm"] == "l2" and l2_card["epsilon"] == 0.5


def test_real_images_fall_back_to_the_bundled_sample():
    images, origin = sources.real_images((28, 28, 1), 3, "npz:/nonexistent/folder")
    assert images.shape == (3, 28, 28, 1) and origin.startswith("cifar10_sample")

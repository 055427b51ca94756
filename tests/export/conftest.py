"""The export tests' fixtures: one briefly trained classifier and one export of it, shared by
the session (the tests read them; the ones that change an export make their own)."""


import keras
import pytest
import tensorflow as tf

from adt_tf.data import CIFAR10_CLASSES
from export.exporter import export_classifier
from tests.export.helpers import NAME
from tests.helpers import ce_loss, make_tiny_images, tiny_classifier


@pytest.fixture(scope="session")
def normalised_model():
    """A briefly trained 16x16 classifier (with normalisation inside) and real images."""
    keras.utils.set_random_seed(1)
    x, y = make_tiny_images(64)
    classifier = tiny_classifier(mean=x.mean(axis=(0, 1, 2)), std=x.std(axis=(0, 1, 2)))
    classifier.compile(keras.optimizers.Adam(1e-2), ce_loss())
    classifier.fit(x, y, epochs=4, batch_size=32, verbose=0)
    return classifier, x[:8]


@pytest.fixture(scope="session")
def exported(normalised_model, tmp_path_factory):
    classifier, images = normalised_model
    base = str(tmp_path_factory.mktemp("exports"))
    path = export_classifier(classifier, base, NAME, class_names=CIFAR10_CLASSES,
                             model_card={"dataset": "cifar10_sample"}, images=images,
                             verify_export=False)
    return base, path, tf.saved_model.load(path)

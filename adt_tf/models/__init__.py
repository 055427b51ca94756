"""Classifier architectures and a name -> builder registry.

Every builder takes (input_shape, num_classes, *, mean=None, std=None, ...) and returns a
functional Keras model mapping images in [0, 1] to logits, with the penultimate features
available as the layer named `PENULTIMATE`.
"""

from __future__ import annotations

import functools

import keras

from adt_tf.core.registry import Registry
from adt_tf.models.common import PENULTIMATE
from adt_tf.models.small_cnn import small_cnn
from adt_tf.models.wide_resnet import preact_resnet18, wide_resnet

MODELS: Registry = Registry("model")
MODELS.add("small_cnn", small_cnn)
MODELS.add("wide_resnet", wide_resnet)
for _depth, _width in ((28, 10), (34, 10), (16, 4), (10, 1)):
    MODELS.add(f"wrn_{_depth}_{_width}", functools.partial(wide_resnet, depth=_depth,
                                                           width=_width))
MODELS.add("preact_resnet18", preact_resnet18)


def build_model(name: str, input_shape, num_classes: int, **kwargs) -> keras.Model:
    """Builds the classifier registered under `name` (ValueError listing the known ones)."""
    return MODELS.lookup(name)(input_shape, num_classes, **kwargs)


def feature_extractor(classifier: keras.Model) -> keras.Model:
    """A model mapping images to the classifier's penultimate features."""
    try:
        layer = classifier.get_layer(PENULTIMATE)
    except ValueError:
        raise ValueError(
            f"classifier {classifier.name!r} has no layer named {PENULTIMATE!r}; build it with "
            "adt_tf.models.build_model or name its penultimate layer so."
        ) from None
    return keras.Model(classifier.input, layer.output, name=f"{classifier.name}_features")


__all__ = ["MODELS", "PENULTIMATE", "build_model", "feature_extractor", "preact_resnet18",
           "small_cnn", "wide_resnet"]

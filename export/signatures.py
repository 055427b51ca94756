"""The serving module: the bare classifier behind three TF Serving signatures.

`ServingModule(classifier, class_names)` is a `tf.Module` holding only the classifier's
variables and three `tf.function`s with fixed input signatures; `tf.saved_model.save` turns
them into the SavedModel signatures that TensorFlow Serving exposes:

- `serving_default`: `images`, float32 [N, H, W, C] with pixels in [0, 1].
- `serving_bytes`: `image_bytes`, string [N] of encoded PNG/JPEG (also GIF/BMP) files, decoded
  in the graph, converted to C channels and resized to H x W (bilinear, antialiased) when their
  size differs; the name ends in `_bytes` so that TF Serving's REST API accepts
  `{"b64": "..."}` values for it.
- `predict`: `images`, float32 of any shape; every shape reaches the in-graph checks, so a
  wrongly shaped request is answered with the message below rather than a runtime error from
  deep inside the network.

All three return `probabilities` [N, classes] (softmax of the logits), `logits` [N, classes],
`classes` int64 [N] (the arg-max) and, when the class names are known, `class_names` string [N]
(the name of the predicted class; every output has the batch dimension first, which TF
Serving's row format needs).

Validation: `serving_default` and `predict` both check, inside the graph with
`tf.debugging.Assert`, that the images have shape [N, H, W, C], are finite and lie in [0, 1];
a failed check is an `InvalidArgumentError` (HTTP 400 / gRPC INVALID_ARGUMENT from TF Serving)
whose message names what was expected and what was received. The price is two reductions over
the batch, negligible next to the network. The check catches the most common production
mistake, 8-bit pixels sent as 0..255, which would otherwise yield confident garbage. The shape
check is needed in `serving_default` too: neither a signature loaded with
`tf.saved_model.load` nor TF Serving enforces the declared input shape, so without it a wrong
shape would fail somewhere inside the network with an obscure message. The one difference
between the two: `serving_default` declares its shape [-1, H, W, C] in the model's metadata
(what `saved_model_cli` and TF Serving's metadata endpoint show clients), `predict` declares
an unknown shape, for clients that check requests against the metadata before sending them
and would otherwise never see the server's explanation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras
import tensorflow as tf

from adt_tf.artifacts.serving_contract import (
    BYTES_INPUT,
    BYTES_SIGNATURE,
    DEFAULT_SIGNATURE,
    IMAGES_INPUT,
    PREDICT_SIGNATURE,
    SIGNATURES,
)


def classifier_input_shape(classifier: keras.Model) -> tuple[int, int, int]:
    """(H, W, C) of a classifier taking one image batch, or a ValueError saying why not."""
    inputs = classifier.inputs
    if not isinstance(classifier, keras.Model) or inputs is None or len(inputs) != 1:
        raise ValueError(f"Expected a Keras classifier with one input [N, H, W, C], got "
                         f"{type(classifier).__name__} with inputs {inputs!r}.")
    shape = tuple(inputs[0].shape)
    if len(shape) != 4 or any(d is None for d in shape[1:]):
        raise ValueError(f"The classifier's input must have a fixed shape [N, H, W, C], got "
                         f"{shape}.")
    out = tuple(classifier.outputs[0].shape) if classifier.outputs else ()
    if len(out) != 2 or out[1] is None:
        raise ValueError(f"The classifier must return logits [N, classes], got output shape "
                         f"{out}.")
    return tuple(int(d) for d in shape[1:])  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class ServingSpec:
    """What a client needs to know: the image shape (H, W, C), the classes and their names."""

    input_shape: tuple[int, int, int]
    num_classes: int
    class_names: tuple[str, ...] | None = None


def spec_of(classifier: keras.Model, class_names: Sequence[str] | None = None) -> ServingSpec:
    """The `ServingSpec` of a classifier (ValueError for a bad classifier or names)."""
    input_shape = classifier_input_shape(classifier)
    num_classes = int(classifier.outputs[0].shape[-1])
    if num_classes < 2:
        raise ValueError(f"The classifier returns {num_classes} logit; a classifier needs at "
                         "least two (with one, `classes` would always be 0).")
    if class_names is not None:
        class_names = tuple(str(n) for n in class_names)
        if len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names but the classifier "
                             f"returns {num_classes} logits.")
    return ServingSpec(input_shape, num_classes, class_names)


def checked_images(images: tf.Tensor, input_shape: tuple[int, int, int]) -> tf.Tensor:
    """`images` behind in-graph checks of shape, finiteness and range, in that order.

    The checks are chained by control dependencies, so the first failing one is the one
    reported (a NaN is reported as such, not as out of range).
    """
    height, width, channels = input_shape
    expected = f"[N, {height}, {width}, {channels}]"
    # `serving_default` declares [None, H, W, C], and graph optimisation trusts that shape,
    # but neither TF Serving nor a loaded signature enforces it, so the check must not rely
    # on it (a `tf.cond` on the rank is folded away, and comparing shape[1:] with [H, W, C]
    # then fails as "Incompatible shapes" for an image sent without its batch dimension).
    # The runtime shape is padded with -1 to five entries: entries 1..3 must be H, W, C and
    # the fifth must stay -1 (no fifth dimension).
    padded = tf.concat([tf.shape(images), tf.fill([5], -1)], axis=0)[:5]
    shape_ok = tf.logical_and(tf.reduce_all(tf.equal(padded[1:4], [height, width, channels])),
                              tf.equal(padded[4], -1))
    check_shape = tf.debugging.Assert(shape_ok, [
        f"images must be a float32 tensor of shape {expected} with pixels in [0, 1]; got shape",
        tf.shape(images)], summarize=8)
    with tf.control_dependencies([check_shape]):
        finite = tf.reduce_all(tf.math.is_finite(images))
        check_finite = tf.debugging.Assert(finite, [
            "images must be finite, got NaN or Inf values"])
    with tf.control_dependencies([check_finite]):
        low, high = tf.reduce_min(images), tf.reduce_max(images)
        in_range = tf.logical_or(tf.equal(tf.size(images), 0),
                                 tf.logical_and(low >= 0.0, high <= 1.0))
        check_range = tf.debugging.Assert(in_range, [
            "images must lie in [0, 1] (divide 8-bit pixels by 255); got min", low, "max", high])
    with tf.control_dependencies([check_range]):
        return tf.identity(images)


def decode_images(image_bytes: tf.Tensor, input_shape: tuple[int, int, int]) -> tf.Tensor:
    """Encoded images string [N] -> float32 [N, H, W, C] in [0, 1].

    Each file is decoded to C channels (grey <-> RGB as needed; 8-bit values divided by 255)
    and, only when its size differs from H x W, resized with antialiased bilinear filtering.
    """
    height, width, channels = input_shape

    def decode_one(data):
        image = tf.io.decode_image(data, channels=channels, dtype=tf.float32,
                                   expand_animations=False)
        size = tf.shape(image)[:2]
        # Same size: no resampling, so the pixels are exactly those of the file.
        image = tf.cond(
            tf.reduce_all(tf.equal(size, [height, width])),
            lambda: image,
            lambda: tf.image.resize(image, [height, width], antialias=True))
        return tf.clip_by_value(tf.ensure_shape(image, [height, width, channels]), 0.0, 1.0)

    return tf.map_fn(decode_one, image_bytes,
                     fn_output_signature=tf.TensorSpec([height, width, channels], tf.float32))


class ServingModule(tf.Module):
    """A classifier's variables and its serving functions, ready for `tf.saved_model.save`.

    Only the variables are tracked (as Keras's `ExportArchive` does): the classifier itself is
    held in the functions' closures, so the SavedModel holds the weights and the traced
    graphs, not the Keras object, and no training or attack code.

    Args:
        classifier: a Keras model mapping float32 images [N, H, W, C] in [0, 1] to logits.
        class_names: names of the classes (as many as logits), or None.

    Mathematical details:
        probabilities = softmax(logits); classes = argmax(logits) (ties: the lowest index).

    Example:
        module = ServingModule(classifier, CIFAR10_CLASSES)
        tf.saved_model.save(module, path, signatures=module.signatures())
    """

    def __init__(self, classifier: keras.Model, class_names: Sequence[str] | None = None):
        super().__init__(name="adt_tf_serving")
        spec = spec_of(classifier, class_names)
        self.classifier_variables = list(classifier.variables)
        self.__dict__["spec"] = spec  # plain data, kept out of the saved object graph
        height, width, channels = spec.input_shape
        names = None if spec.class_names is None else tf.constant(spec.class_names)

        def outputs(images):
            # An empty batch is answered with empty outputs (some convolution kernels
            # reject a batch of 0 with an unrelated message).
            logits = tf.cond(
                tf.shape(images)[0] > 0,
                lambda: tf.cast(classifier(images, training=False), tf.float32),
                lambda: tf.zeros([0, spec.num_classes], tf.float32))
            classes = tf.argmax(logits, axis=-1, output_type=tf.int64)
            result = {"probabilities": tf.nn.softmax(logits, axis=-1), "logits": logits,
                      "classes": classes}
            if names is not None:
                result["class_names"] = tf.gather(names, classes)
            return result

        def serve_images(images):
            return outputs(checked_images(images, spec.input_shape))

        def serve_any_shape(images):
            checked = checked_images(images, spec.input_shape)
            return outputs(tf.ensure_shape(checked, [None, height, width, channels]))

        def serve_bytes(image_bytes):
            return outputs(decode_images(image_bytes, spec.input_shape))

        self.serve_images = tf.function(serve_images, input_signature=[
            tf.TensorSpec([None, height, width, channels], tf.float32, name=IMAGES_INPUT)])
        self.serve_bytes = tf.function(serve_bytes, input_signature=[
            tf.TensorSpec([None], tf.string, name=BYTES_INPUT)])
        self.serve_any_shape = tf.function(serve_any_shape, input_signature=[
            tf.TensorSpec(None, tf.float32, name=IMAGES_INPUT)])

    def signatures(self) -> dict:
        """The signature map for `tf.saved_model.save`."""
        return {DEFAULT_SIGNATURE: self.serve_images.get_concrete_function(),
                BYTES_SIGNATURE: self.serve_bytes.get_concrete_function(),
                PREDICT_SIGNATURE: self.serve_any_shape.get_concrete_function()}


__all__ = ["BYTES_INPUT", "BYTES_SIGNATURE", "DEFAULT_SIGNATURE", "IMAGES_INPUT",
           "PREDICT_SIGNATURE", "SIGNATURES", "ServingModule", "ServingSpec", "checked_images",
           "classifier_input_shape", "decode_images", "spec_of"]

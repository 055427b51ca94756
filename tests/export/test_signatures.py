"""`export.signatures`: names, dtypes and shapes, equality with Keras, bytes decoding, input
validation."""


import numpy as np
import pytest
import tensorflow as tf

from adt_tf.data import CIFAR10_CLASSES
from export.exporter import export_classifier
from tests.export.helpers import NAME, cifar_uint8, keras_probabilities, specs


def test_signatures_names_dtypes_shapes(exported):
    loaded = exported[2]
    assert sorted(loaded.signatures) == ["predict", "serving_bytes", "serving_default"]
    outputs = {"probabilities": (tf.float32, (None, 10)), "logits": (tf.float32, (None, 10)),
               "classes": (tf.int64, (None,)), "class_names": (tf.string, (None,))}
    assert specs(loaded.signatures["serving_default"]) == (
        {"images": (tf.float32, (None, 16, 16, 3))}, outputs)
    assert specs(loaded.signatures["serving_bytes"]) == (
        {"image_bytes": (tf.string, (None,))}, outputs)
    assert specs(loaded.signatures["predict"]) == ({"images": (tf.float32, None)}, outputs)


def test_no_class_names_output_without_names(normalised_model, tmp_path):
    classifier, images = normalised_model
    path = export_classifier(classifier, str(tmp_path), NAME, images=images,
                             verify_export=False)
    outputs = tf.saved_model.load(path).signatures["serving_default"].structured_outputs
    assert sorted(outputs) == ["classes", "logits", "probabilities"]


def test_serving_default_equals_keras_with_dynamic_batch(exported, normalised_model):
    classifier, images = normalised_model
    serve = exported[2].signatures["serving_default"]
    for batch in (images[:1], images[:5], images):
        out = serve(images=tf.constant(batch))
        expected = keras_probabilities(classifier, batch)
        assert out["probabilities"].shape == (len(batch), 10)
        assert np.max(np.abs(out["probabilities"].numpy() - expected)) <= 1e-5
        np.testing.assert_allclose(out["logits"].numpy(),
                                   classifier(batch, training=False).numpy(), atol=1e-5)
        classes = out["classes"].numpy()
        assert classes.dtype == np.int64
        np.testing.assert_array_equal(classes, expected.argmax(axis=-1))
        assert [n.decode() for n in out["class_names"].numpy()] == [
            CIFAR10_CLASSES[c] for c in classes]
    assert len(set(serve(images=tf.constant(images))["classes"].numpy())) > 1  # not constant
    predicted = exported[2].signatures["predict"](images=tf.constant(images))
    assert np.max(np.abs(predicted["probabilities"].numpy()
                         - keras_probabilities(classifier, images))) <= 1e-5


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_bytes_signature_matches_float_signature_on_decoded_images(exported, fmt):
    loaded = exported[2]
    full = cifar_uint8(6)  # real 32x32 CIFAR-10 test images
    small = np.rint(tf.image.resize(full / 255.0, (16, 16), antialias=True).numpy() * 255
                    ).clip(0, 255).astype(np.uint8)
    encode = tf.io.encode_png if fmt == "png" else (lambda p: tf.io.encode_jpeg(p, quality=75))
    decode = tf.io.decode_png if fmt == "png" else tf.io.decode_jpeg
    for pixels, resize in ((small, False), (full, True)):
        files = [encode(p).numpy() for p in pixels]
        decoded = np.stack([decode(f, channels=3).numpy() for f in files]) / np.float32(255)
        if fmt == "jpeg":
            assert np.abs(decoded - pixels / 255.0).max() > 0.01  # lossy: compare the decoded
        if resize:  # 32x32 files into a 16x16 model: resized in the graph
            decoded = tf.image.resize(decoded, (16, 16), antialias=True).numpy()
        expected = loaded.signatures["serving_default"](
            images=tf.constant(decoded.astype(np.float32)))
        got = loaded.signatures["serving_bytes"](image_bytes=tf.constant(files))
        assert np.max(np.abs(got["probabilities"].numpy()
                             - expected["probabilities"].numpy())) <= 1e-5
        np.testing.assert_array_equal(got["classes"].numpy(), expected["classes"].numpy())


def test_bytes_signature_converts_grey_files_to_rgb(exported):
    loaded = exported[2]
    grey = np.rint(tf.image.rgb_to_grayscale(cifar_uint8(2)[:, :16, :16] / 255.0).numpy()
                   * 255).astype(np.uint8)
    files = [tf.io.encode_png(p).numpy() for p in grey]
    expected = loaded.signatures["serving_default"](
        images=tf.constant(np.repeat(grey, 3, axis=-1) / np.float32(255)))
    got = loaded.signatures["serving_bytes"](image_bytes=tf.constant(files))
    assert np.max(np.abs(got["probabilities"].numpy()
                         - expected["probabilities"].numpy())) <= 1e-5


@pytest.mark.parametrize("images, message", [
    (np.full((2, 16, 16), 0.5, np.float32), r"shape \[N, 16, 16, 3\].*got shape.*2 16 16"),
    (np.full((2, 16, 16, 1), 0.5, np.float32), r"shape \[N, 16, 16, 3\].*got shape.*2 16 16 1"),
    (np.full((1, 32, 32, 3), 0.5, np.float32), r"shape \[N, 16, 16, 3\].*got shape.*1 32 32 3"),
    (np.full((2, 16, 16, 3), 255.0, np.float32), r"must lie in \[0, 1\].*max.*255"),
    (np.full((2, 16, 16, 3), -0.5, np.float32), r"must lie in \[0, 1\].*min.*-0.5"),
    (np.where(np.arange(2 * 16 * 16 * 3).reshape(2, 16, 16, 3) == 5, np.nan, 0.5
              ).astype(np.float32), r"must be finite, got NaN or Inf"),
])
def test_predict_rejects_bad_images_with_clear_message(exported, images, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        exported[2].signatures["predict"](images=tf.constant(images))


def test_serving_default_validates_values_and_shape(exported):
    serve = exported[2].signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"must lie in \[0, 1\]"):
        serve(images=tf.fill([1, 16, 16, 3], 2.0))
    with pytest.raises(tf.errors.InvalidArgumentError, match="must be finite"):
        serve(images=tf.fill([1, 16, 16, 3], np.inf))
    # A loaded signature does not enforce its declared shape: the in-graph check answers.
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"shape \[N, 16, 16, 3\].*got shape.*1 16 16 1"):
        serve(images=tf.zeros([1, 16, 16, 1]))
    # ... also for a rank the declaration rules out (graph optimisation trusts the declared
    # rank, so a check built on it failed as "Incompatible shapes: [3] vs. [2]").
    for shape in ([16, 16, 3], [1, 16, 16, 3, 1], [16, 16]):
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=r"shape \[N, 16, 16, 3\].*got shape\] \[" +
                           " ".join(map(str, shape)) + r"\]"):
            serve(images=tf.fill(shape, 0.5))


@pytest.mark.parametrize("signature", ["serving_default", "predict", "serving_bytes"])
def test_an_empty_batch_gets_empty_outputs(exported, signature):
    """docs/serving.md: the batch size is free, 0 included."""
    function = exported[2].signatures[signature]
    out = (function(image_bytes=tf.constant([], tf.string)) if signature == "serving_bytes"
           else function(images=tf.zeros([0, 16, 16, 3])))
    assert out["probabilities"].shape == (0, 10) and out["logits"].shape == (0, 10)
    assert out["classes"].shape == (0,) and out["class_names"].shape == (0,)


def test_bytes_signature_rejects_garbage(exported):
    with pytest.raises(tf.errors.InvalidArgumentError, match="(?i)unknown image|decode"):
        exported[2].signatures["serving_bytes"](image_bytes=tf.constant([b"not an image"]))

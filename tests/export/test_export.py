"""SavedModel export: layout, atomicity, signatures, equality with Keras, bytes decoding,
warm-up, models.config, validation, bad input models, verification, the adt-export CLI."""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format

from adt_tf.data import CIFAR10_CLASSES
from adt_tf.data import load as load_dataset
from export import exporter, serving_config, sources, verify, warmup
from export.exporter import export_classifier
from export.verify import VerificationError
from tests.helpers import ROOT, ce_loss, make_tiny_images, tiny_classifier

NAME = "tiny"


@pytest.fixture(scope="module")
def normalised_model():
    """A briefly trained 16x16 classifier (with normalisation inside) and real images."""
    keras.utils.set_random_seed(1)
    x, y = make_tiny_images(64)
    classifier = tiny_classifier(mean=x.mean(axis=(0, 1, 2)), std=x.std(axis=(0, 1, 2)))
    classifier.compile(keras.optimizers.Adam(1e-2), ce_loss())
    classifier.fit(x, y, epochs=4, batch_size=32, verbose=0)
    return classifier, x[:8]


@pytest.fixture(scope="module")
def exported(normalised_model, tmp_path_factory):
    classifier, images = normalised_model
    base = str(tmp_path_factory.mktemp("exports"))
    path = export_classifier(classifier, base, NAME, class_names=CIFAR10_CLASSES,
                             model_card={"dataset": "cifar10_sample"}, images=images,
                             verify_export=False)
    return base, path, tf.saved_model.load(path)


def keras_probabilities(classifier, images):
    return tf.nn.softmax(classifier(images, training=False)).numpy()


def hidden_dirs(model_dir):
    return [d for d in os.listdir(model_dir) if d.startswith(".")]


# -- layout, versions, atomicity ----------------------------------------------------------


def test_version_folder_layout(exported):
    base, path, _ = exported
    assert path == os.path.join(base, NAME, "1")
    for name in ("saved_model.pb", "variables", "model_card.json",
                 os.path.join("assets.extra", "tf_serving_warmup_requests")):
        assert os.path.exists(os.path.join(path, name)), name
    assert sorted(os.listdir(base)) == ["models.config", NAME]
    assert hidden_dirs(os.path.join(base, NAME)) == []
    card = json.load(open(os.path.join(path, "model_card.json")))
    assert card["dataset"] == "cifar10_sample" and card["version"] == 1
    assert card["input"]["shape"] == [16, 16, 3] and card["class_names"] == list(CIFAR10_CLASSES)


def test_next_version_and_refusal_to_overwrite(normalised_model, tmp_path):
    classifier, images = normalised_model
    base = str(tmp_path)
    first = export_classifier(classifier, base, NAME, images=images, verify_export=False)
    second = export_classifier(classifier, base, NAME, images=images, verify_export=False)
    assert [os.path.basename(first), os.path.basename(second)] == ["1", "2"]
    before = open(os.path.join(first, "saved_model.pb"), "rb").read()
    with pytest.raises(FileExistsError, match=r"1 already exists; versions are never "
                                              r"overwritten.*next free: 3"):
        export_classifier(classifier, base, NAME, version=1, images=images,
                          verify_export=False)
    assert open(os.path.join(first, "saved_model.pb"), "rb").read() == before
    assert exporter.existing_versions(os.path.join(base, NAME)) == [1, 2]
    path = export_classifier(classifier, base, NAME, version=7, images=images,
                             verify_export=False)
    assert os.path.basename(path) == "7" and exporter.next_version(os.path.dirname(path)) == 8
    assert hidden_dirs(os.path.join(base, NAME)) == []


@pytest.mark.parametrize("where", ["warmup", "verification"])
def test_failure_midway_leaves_no_version_folder(normalised_model, tmp_path, monkeypatch, where):
    classifier, images = normalised_model

    def boom(*args, **kwargs):
        raise (RuntimeError("disk full") if where == "warmup" else
               VerificationError("probabilities differ"))

    if where == "warmup":
        monkeypatch.setattr(exporter.warmup, "write_warmup", boom)
    else:
        monkeypatch.setattr(exporter.verify, "verify_export", boom)
    with pytest.raises((RuntimeError, VerificationError)):
        export_classifier(classifier, str(tmp_path), NAME, images=images)
    model_dir = os.path.join(tmp_path, NAME)
    assert os.listdir(model_dir) == []  # neither a version folder nor the temporary one
    assert not os.path.exists(os.path.join(tmp_path, "models.config"))


# -- signatures and outputs --------------------------------------------------------------


def specs(function):
    def spec(s):
        return (s.dtype, None if s.shape.rank is None else tuple(s.shape.as_list()))

    return ({k: spec(s) for k, s in function.structured_input_signature[1].items()},
            {k: spec(s) for k, s in function.structured_outputs.items()})


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


def _cifar_uint8(n):
    """Real CIFAR-10 test images from the sample the package ships."""
    return load_dataset("cifar10_sample", max_test_examples=n).x_test


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_bytes_signature_matches_float_signature_on_decoded_images(exported, fmt):
    loaded = exported[2]
    full = _cifar_uint8(6)  # real 32x32 CIFAR-10 test images
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
    grey = np.rint(tf.image.rgb_to_grayscale(_cifar_uint8(2)[:, :16, :16] / 255.0).numpy()
                   * 255).astype(np.uint8)
    files = [tf.io.encode_png(p).numpy() for p in grey]
    expected = loaded.signatures["serving_default"](
        images=tf.constant(np.repeat(grey, 3, axis=-1) / np.float32(255)))
    got = loaded.signatures["serving_bytes"](image_bytes=tf.constant(files))
    assert np.max(np.abs(got["probabilities"].numpy()
                         - expected["probabilities"].numpy())) <= 1e-5


# -- validation of requests --------------------------------------------------------------


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


# -- TF Serving extras -------------------------------------------------------------------


def test_warmup_records_parse_and_run_against_the_model(exported):
    _, path, loaded = exported
    records = warmup.read_warmup(path)
    assert len(records) == 4
    used = set()
    for record in records:
        request = record.predict_log.request
        assert record.WhichOneof("log_type") == "predict_log"
        assert request.model_spec.name == NAME
        signature = request.model_spec.signature_name
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        out = loaded.signatures[signature](**inputs)
        batch = next(iter(inputs.values())).shape[0]
        assert out["probabilities"].shape == (batch, 10)
        np.testing.assert_allclose(out["probabilities"].numpy().sum(axis=-1), 1.0, atol=1e-5)
        used.add(signature)
    assert used == {"serving_default", "serving_bytes", "predict"}


def test_models_config_parses_and_lists_every_model(exported, normalised_model, tmp_path):
    from tensorflow_serving.config import model_server_config_pb2

    def parse(path):
        config = model_server_config_pb2.ModelServerConfig()
        text_format.Parse(open(path).read(), config)
        return [(c.name, c.base_path, c.model_platform) for c in config.model_config_list.config]

    assert parse(os.path.join(exported[0], "models.config")) == [
        (NAME, f"/models/{NAME}", "tensorflow")]
    base = str(tmp_path)
    serving_config.update_models_config(base, "a")
    serving_config.update_models_config(base, "b", serving_root="/srv/exports/")
    serving_config.update_models_config(base, "a", serving_root="/data")
    assert parse(os.path.join(base, "models.config")) == [
        ("a", "/data/a", "tensorflow"), ("b", "/srv/exports/b", "tensorflow")]
    with open(os.path.join(base, "models.config"), "w") as f:
        f.write("this is { not a config")
    with pytest.raises(ValueError, match="not a ModelServerConfig.*not overwritten"):
        serving_config.update_models_config(base, "c")
    assert open(os.path.join(base, "models.config")).read() == "this is { not a config"


def test_an_export_is_published_whole_or_not_at_all(normalised_model, tmp_path):
    """A malformed (or unwritable) models.config fails the export before any version is in
    place, and a retry after the fix publishes version 1, not 2."""
    classifier, images = normalised_model
    base = str(tmp_path)
    with open(os.path.join(base, "models.config"), "w") as f:
        f.write("this is { not a config")
    with pytest.raises(ValueError, match="not a ModelServerConfig"):
        export_classifier(classifier, base, NAME, images=images, verify_export=False)
    assert os.listdir(os.path.join(base, NAME)) == []  # no version, no temporary folder
    assert sorted(os.listdir(base)) == ["models.config", NAME]
    os.remove(os.path.join(base, "models.config"))
    path = export_classifier(classifier, base, NAME, images=images, verify_export=False)
    assert os.path.basename(path) == "1"


def test_published_versions_are_readable_by_other_users(exported):
    """Made like any folder under the user's umask (mkdtemp's 0700 would hide it from a
    server running as another user)."""
    import stat

    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(exported[1]).st_mode) == 0o777 & ~umask


# -- bad arguments and input models ------------------------------------------------------


def test_bad_export_arguments(normalised_model, tmp_path):
    classifier, images = normalised_model
    base = str(tmp_path)
    with pytest.raises(ValueError, match="model_name must be.*got '../evil'"):
        export_classifier(classifier, base, "../evil", images=images, verify_export=False)
    with pytest.raises(ValueError, match="version must be a positive integer, got 0"):
        export_classifier(classifier, base, NAME, version=0, images=images)
    with pytest.raises(ValueError, match="class_names has 3 names but the classifier returns 10"):
        export_classifier(classifier, base, NAME, class_names=["a", "b", "c"], images=images)
    with pytest.raises(ValueError, match=r"images must be .*\[n, 16, 16, 3\], got \(2, 8, 8, 3\)"):
        export_classifier(classifier, base, NAME, images=np.zeros((2, 8, 8, 3)))
    inputs = keras.Input((8,))
    with pytest.raises(ValueError, match=r"fixed shape \[N, H, W, C\], got \(None, 8\)"):
        export_classifier(keras.Model(inputs, keras.layers.Dense(3)(inputs)), base, NAME)
    assert not os.path.exists(os.path.join(base, NAME)) or os.listdir(
        os.path.join(base, NAME)) == []


def test_missing_or_corrupt_input_model(tmp_path, normalised_model):
    with pytest.raises(ValueError, match="does not exist"):
        sources.load_source(str(tmp_path / "nope.keras"))
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 this is not a complete zip file")
    for damaged in (corrupt, tmp_path / "truncated.keras"):
        if damaged != corrupt:
            normalised_model[0].save(str(tmp_path / "good.keras"))
            damaged.write_bytes((tmp_path / "good.keras").read_bytes()[:2000])
        with pytest.raises(ValueError, match=r"corrupt|truncated") as info:
            sources.load_source(str(damaged))
        message = str(info.value)
        assert str(damaged) in message and "is the file complete" in message
        assert "not found" not in message.lower()  # it was found: it is damaged
    (tmp_path / "empty_workdir").mkdir()
    with pytest.raises(ValueError, match="folder without classifier.keras or saved_model.pb"):
        sources.load_source(str(tmp_path / "empty_workdir"))
    (tmp_path / "model.txt").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a .keras file"):
        sources.load_source(str(tmp_path / "model.txt"))


def test_adt_tf_never_imports_export():
    pattern = re.compile(r"^\s*(from\s+export[\s.]|import\s+export\b)", re.M)
    for folder, _, files in os.walk(os.path.join(ROOT, "adt_tf")):
        for name in files:
            if name.endswith(".py"):
                text = open(os.path.join(folder, name)).read()
                assert not pattern.search(text), os.path.join(folder, name)


# -- verification ------------------------------------------------------------------------


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


def _workdir(tmp_path, classifier):
    workdir = tmp_path / "adt_run"
    workdir.mkdir()
    classifier.save(str(workdir / "classifier.keras"))
    config = {"workdir": str(workdir), "method": "adt_exp", "dataset": "cifar10_sample",
              "epsilon": None, "epochs": 1, "method_params": {"entropy_weight": 0.01}}
    report = {"dataset": "cifar10_sample", "epsilon": 8 / 255, "clean_accuracy": 0.25,
              "pgd20_accuracy": 0.125, "method": "adt_exp", "attack": "PGD-20"}
    (workdir / "config.json").write_text(json.dumps(config))
    (workdir / "report.json").write_text(json.dumps(report))
    return str(workdir), config


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "export.export_saved_model", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)


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


def test_model_card_from_a_training_workdir(normalised_model, tmp_path):
    workdir, config = _workdir(tmp_path, normalised_model[0])
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


@pytest.mark.parametrize("verified", [
    False, pytest.param(True, marks=pytest.mark.slow)])
def test_cli_exports_a_workdir(normalised_model, tmp_path, verified):
    """End to end; verified: three fresh interpreters (CLI, verification, saved_model_cli)."""
    workdir, config = _workdir(tmp_path, normalised_model[0])
    base = str(tmp_path / "exports")
    proc = run_cli(f"--model={workdir}", f"--export_dir={base}", "--version=3",
                   *([] if verified else ["--noverify"]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Exported adt_run version 3" in proc.stdout
    assert ("verified in a fresh process" in proc.stdout) == verified
    card = json.load(open(os.path.join(base, "adt_run", "3", "model_card.json")))
    assert card["dataset"] == "cifar10_sample" and card["method"] == "adt_exp"
    assert card["epsilon"] == pytest.approx(8 / 255)
    assert card["clean_accuracy"] == 0.25 and card["robust_accuracy"] == 0.125
    assert card["training_config"] == config
    assert card["class_names"] == list(CIFAR10_CLASSES)
    assert card["warmup_and_verification_images"] == "cifar10_sample test split"
    assert os.path.exists(os.path.join(base, "models.config"))
    if verified:
        check = card["verification"]
        assert check["max_abs_diff"] <= 1e-5 and check["saved_model_cli"] == "ok"
        assert sorted(check["signatures"]) == ["predict", "serving_bytes", "serving_default"]
    else:
        assert "verification" not in card


def test_cli_errors_are_clear(tmp_path):
    proc = run_cli(f"--model={tmp_path / 'missing'}", f"--export_dir={tmp_path}")
    assert proc.returncode == 2
    assert "adt-export: error:" in proc.stderr and "missing does not exist" in proc.stderr
    proc = run_cli(f"--export_dir={tmp_path}")
    assert proc.returncode == 2 and "--model is required" in proc.stderr


def test_export_of_a_classifier_built_under_mirrored_strategy(two_device_strategy, tmp_path):
    x, _ = make_tiny_images(4)
    with two_device_strategy.scope():
        classifier = tiny_classifier()
    path = export_classifier(classifier, str(tmp_path), NAME, images=x, verify_export=False)
    out = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(x))
    assert np.max(np.abs(out["probabilities"].numpy()
                         - keras_probabilities(classifier, x))) <= 1e-5


def test_two_concurrent_exports_to_one_name_publish_one_version_whole(normalised_model, tmp_path):
    """Two adt-export processes racing for the same model name and version: one publishes
    it, the other exits 2 saying the version appeared meanwhile and overwrites nothing; the
    published version is complete and models.config lists the model once."""
    workdir, _ = _workdir(tmp_path, normalised_model[0])
    base = str(tmp_path / "exports")
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    procs = [subprocess.Popen([sys.executable, "-m", "export.export_saved_model",
                               f"--model={workdir}", f"--export_dir={base}", "--noverify"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outcomes = [(p.wait(timeout=600), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _, _ in outcomes)
    versions = sorted(os.listdir(os.path.join(base, "adt_run")))
    if codes == [0, 0]:  # no overlap after all: two versions, one after the other
        assert versions == ["1", "2"]
    else:
        assert codes == [0, 2], outcomes
        loser = next(err for code, _, err in outcomes if code == 2)
        assert "appeared during the export; nothing was overwritten" in loser
        assert versions == ["1"]
    for version in versions:
        folder = os.path.join(base, "adt_run", version)
        assert os.path.exists(os.path.join(folder, "saved_model.pb"))
        assert os.path.exists(os.path.join(folder, "model_card.json"))
    config = open(os.path.join(base, "models.config")).read()
    assert config.count('name: "adt_run"') == 1

"""`export.exporter`: the version-folder layout, atomic publication, bad arguments and input
models, concurrent exports."""

import json
import os
import re
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf

from adt_tf.data import CIFAR10_CLASSES
from export import exporter, sources
from export.exporter import export_classifier
from export.verify import VerificationError
from tests.export.helpers import NAME, hidden_dirs, keras_probabilities, make_workdir
from tests.helpers import ROOT, make_tiny_images, start_command, tiny_classifier


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


@pytest.mark.slow
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


def test_export_of_a_classifier_built_under_mirrored_strategy(two_device_strategy, tmp_path):
    x, _ = make_tiny_images(4)
    with two_device_strategy.scope():
        classifier = tiny_classifier()
    path = export_classifier(classifier, str(tmp_path), NAME, images=x, verify_export=False)
    out = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(x))
    assert np.max(np.abs(out["probabilities"].numpy()
                         - keras_probabilities(classifier, x))) <= 1e-5


@pytest.mark.slow
def test_two_concurrent_exports_to_one_name_publish_one_version_whole(normalised_model, tmp_path):
    """Two adt-export processes racing for the same model name and version: one publishes
    it, the other exits 2 saying the version appeared meanwhile and overwrites nothing; the
    published version is complete and models.config lists the model once."""
    workdir, _ = make_workdir(tmp_path, normalised_model[0])
    base = str(tmp_path / "exports")
    procs = [start_command("adt-export", f"--model={workdir}", f"--export_dir={base}",
                           "--noverify", stderr=subprocess.PIPE) for _ in range(2)]
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

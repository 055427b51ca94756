import os

import numpy as np
import pytest

from adt_tf import data as data_lib
from tests.helpers import SAMPLE


def test_bundled_sample_is_real_balanced_cifar10():
    splits = data_lib.load("cifar10_sample")
    assert splits.x_train.shape == (2000, 32, 32, 3) and splits.x_train.dtype == np.uint8
    assert splits.x_test.shape == (500, 32, 32, 3)
    assert np.bincount(splits.y_train, minlength=10).tolist() == [200] * 10
    assert splits.info.epsilon == pytest.approx(8 / 255)
    size = os.path.getsize(SAMPLE)
    assert size <= 8e6




def write_npz(directory, x_train, y_train, x_test=None, y_test=None):
    os.makedirs(directory, exist_ok=True)
    np.savez(os.path.join(directory, "train.npz"), x=x_train, y=y_train)
    np.savez(os.path.join(directory, "test.npz"), x=x_train if x_test is None else x_test,
             y=y_train if y_test is None else y_test)


def test_npz_source_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 28, 28, 1), dtype=np.uint8)
    y = rng.integers(0, 5, 20)
    y[0] = 4
    write_npz(str(tmp_path), x, y)
    splits = data_lib.load(f"npz:{tmp_path}", max_train_examples=7)
    assert splits.x_train.shape == (7, 28, 28, 1) and splits.info.num_classes == 5
    assert splits.info.augment == "none"
    np.testing.assert_array_equal(splits.x_test, x)


@pytest.mark.parametrize("mutate,match", [
    (lambda x, y: (x.astype(np.float32), y), "must be uint8"),
    (lambda x, y: (np.where(x > 250, np.nan, x).astype(np.float32), y), "must be uint8"),
    (lambda x, y: (x[..., 0], y), r"shape \[N, H, W, C\]"),
    (lambda x, y: (x, y[:-1]), "labels must have shape"),
    (lambda x, y: (x, y - 1), r"labels must lie in \[0, 10\)"),
    (lambda x, y: (x, y.astype(np.float32)), "labels must be integers"),
])
def test_npz_bad_arrays(tmp_path, mutate, match):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    y = np.arange(10)
    bad_x, bad_y = mutate(x, y)
    write_npz(str(tmp_path), x, y, bad_x, bad_y)
    with pytest.raises(ValueError, match=match):
        data_lib.load(f"npz:{tmp_path}")


def test_npz_missing_arrays_and_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        data_lib.load(f"npz:{tmp_path}")
    np.savez(os.path.join(tmp_path, "train.npz"), images=np.zeros((2, 4, 4, 1), np.uint8))
    np.savez(os.path.join(tmp_path, "test.npz"), images=np.zeros((2, 4, 4, 1), np.uint8))
    with pytest.raises(ValueError, match=r"lacks the arrays \['x', 'y'\]"):
        data_lib.load(f"npz:{tmp_path}")


def test_npz_class_count_is_never_guessed_from_a_stray_label(tmp_path):
    x = np.zeros((10, 8, 8, 3), np.uint8)
    y = np.arange(10) % 5
    stray = y.copy()
    stray[3] = 99
    write_npz(str(tmp_path / "a"), x, y, x, stray)
    with pytest.raises(ValueError, match=r"test labels \[99\] never occur in training.*"
                                         "num_classes"):
        data_lib.load(f"npz:{tmp_path / 'a'}")
    gap = np.where(y == 2, 4, y)  # class 2 never appears in training
    write_npz(str(tmp_path / "b"), x, gap)
    with pytest.raises(ValueError, match=r"training labels skip \[2\]"):
        data_lib.load(f"npz:{tmp_path / 'b'}")
    # Stated explicitly, the count is taken as given (a class may be absent from the data).
    np.savez(os.path.join(tmp_path, "b", "train.npz"), x=x, y=gap, num_classes=100)
    assert data_lib.load(f"npz:{tmp_path / 'b'}").info.num_classes == 100


def test_broken_npz_files_are_errors_naming_the_file(tmp_path):
    x, y = np.zeros((4, 8, 8, 3), np.uint8), np.arange(4) % 2
    good = tmp_path / "good"
    write_npz(str(good), x, y)
    data = (good / "train.npz").read_bytes()
    cases = {"truncated": data[: len(data) // 2], "empty": b""}
    for name, content in cases.items():
        write_npz(str(tmp_path / name), x, y)
        (tmp_path / name / "train.npz").write_bytes(content)
        with pytest.raises(ValueError, match=f"{name}/train.npz is not a readable .npz"):
            data_lib.load(f"npz:{tmp_path / name}")
    folder = tmp_path / "folder"
    write_npz(str(folder), x, y)
    os.remove(folder / "train.npz")
    os.makedirs(folder / "train.npz")
    with pytest.raises(ValueError, match="train.npz is not a file"):
        data_lib.load(f"npz:{folder}")
    write_npz(str(tmp_path / "none"), x[:0], y[:0], x, y)
    with pytest.raises(ValueError, match="holds no training images"):
        data_lib.load(f"npz:{tmp_path / 'none'}")


def test_unknown_dataset_lists_known():
    with pytest.raises(ValueError, match="Unknown dataset 'cifar11'; known: .*cifar10_sample"):
        data_lib.load("cifar11")


def test_tfds_failure_names_the_npz_alternative(monkeypatch):
    import tensorflow_datasets as tfds

    def fail(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(tfds, "load", fail)
    with pytest.raises(RuntimeError, match="--dataset=npz:DIR"):
        data_lib.load("mnist")










@pytest.mark.parametrize("num_classes, message", [
    (np.array(1), "between 2"), (np.array(10.7), "must be an integer, got 10.7"),
    (np.array("ten"), "must be an integer, got 'ten'"), (np.array([10, 10]), "one integer"),
    (np.array(10**12), "between 2"),
])
def test_a_bad_declared_class_count_names_the_file(tmp_path, num_classes, message):
    x = np.zeros((8, 16, 16, 3), np.uint8)
    np.savez(tmp_path / "train.npz", x=x, y=np.arange(8) % 2, num_classes=num_classes)
    np.savez(tmp_path / "test.npz", x=x, y=np.arange(8) % 2)
    with pytest.raises(ValueError, match=message) as info:
        data_lib.load(f"npz:{tmp_path}")
    assert "train.npz" in str(info.value)


def test_one_class_and_an_empty_test_split_are_refused_at_once(tmp_path):
    x = np.zeros((8, 16, 16, 3), np.uint8)
    np.savez(tmp_path / "train.npz", x=x, y=np.zeros(8, np.int64))
    np.savez(tmp_path / "test.npz", x=x, y=np.zeros(8, np.int64))
    with pytest.raises(ValueError, match="at least two classes"):
        data_lib.load(f"npz:{tmp_path}")
    np.savez(tmp_path / "train.npz", x=x, y=np.arange(8) % 2)
    np.savez(tmp_path / "test.npz", x=x[:0], y=np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="test.npz holds no test images"):
        data_lib.load(f"npz:{tmp_path}")

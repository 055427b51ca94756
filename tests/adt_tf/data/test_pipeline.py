"""`adt_tf.data.pipeline`: batches in [0, 1], the augmentation, epochs a function of the seed."""

import numpy as np
import pytest
import tensorflow as tf

from adt_tf import data as data_lib


def test_pipeline_scales_augments_and_is_seeded():
    splits = data_lib.load("cifar10_sample", max_train_examples=64)
    make = lambda seed: data_lib.make_dataset(  # noqa: E731
        splits.x_train, splits.y_train, 16, training=True, augment="crop_flip", seed=seed)
    a = [b[0].numpy() for b in make(1)]
    b = [b[0].numpy() for b in make(1)]
    c = [b[0].numpy() for b in make(2)]
    assert len(a) == 4 and a[0].shape == (16, 32, 32, 3) and a[0].dtype == np.float32
    assert 0.0 <= min(x.min() for x in a) and max(x.max() for x in a) <= 1.0
    np.testing.assert_array_equal(np.concatenate(a), np.concatenate(b))
    assert not np.array_equal(np.concatenate(a), np.concatenate(c))
    # the multiset of labels is the data's (shuffled, nothing lost or repeated)
    ds = make(1)
    labels = np.concatenate([yb.numpy() for _, yb in ds])
    assert sorted(labels.tolist()) == sorted(splits.y_train.tolist())
    # crops are zero-padded shifts of the originals: some augmented image has a black border
    assert any((x[:, :4].max(axis=(1, 2, 3)) == 0).any() or (x[:, -4:].max(axis=(1, 2, 3))
               == 0).any() for x in a)


def test_evaluation_pipeline_is_ordered_and_unaugmented():
    splits = data_lib.load("cifar10_sample", max_train_examples=8)
    ds = data_lib.make_dataset(splits.x_train, splits.y_train, 3, training=False,
                               augment="crop_flip")
    got = np.concatenate([xb.numpy() for xb, _ in ds])
    np.testing.assert_allclose(got, splits.x_train.astype(np.float32) / 255.0)
    assert isinstance(ds, tf.data.Dataset)


def test_an_epoch_is_the_same_wherever_the_training_stream_starts():
    """What makes a resumed run the uninterrupted one: epoch k's batches (order and
    augmentation) depend on the seed and k alone, not on where the stream began."""
    splits = data_lib.load("cifar10_sample", max_train_examples=40)

    def batches(first_epoch, num_epochs, seed=1):
        return [(xb.numpy(), yb.numpy()) for xb, yb in data_lib.make_dataset(
            splits.x_train, splits.y_train, 16, training=True, augment="crop_flip",
            seed=seed, first_epoch=first_epoch, num_epochs=num_epochs)]

    whole = batches(0, 3)
    assert [len(yb) for _, yb in whole] == [16, 16, 8] * 3  # batched within each epoch
    for k in range(3):
        alone = batches(k, 1)
        for (xa, ya), (xb, yb) in zip(alone, whole[3 * k:3 * k + 3], strict=True):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    epoch_labels = [np.concatenate([yb for _, yb in whole[3 * k:3 * k + 3]]) for k in range(3)]
    for labels in epoch_labels:  # every epoch is a permutation of the data
        assert sorted(labels.tolist()) == sorted(splits.y_train.tolist())
    assert not np.array_equal(whole[0][0], whole[3][0])  # epochs differ from one another
    assert not np.array_equal(whole[0][0], batches(0, 1, seed=2)[0][0])
    with pytest.raises(ValueError, match="num_epochs"):
        data_lib.make_dataset(splits.x_train, splits.y_train, 16, training=True, num_epochs=0)


def test_each_pass_over_a_default_training_pipeline_is_a_new_seeded_epoch():
    """fit(ds, epochs=k) passes over the dataset k times: each pass another order and another
    augmentation, and the same sequence of passes from the same seed."""
    splits = data_lib.load("cifar10_sample", max_train_examples=48)

    def passes(seed, count=3):
        ds = data_lib.make_dataset(splits.x_train, splits.y_train, 16, training=True,
                                   augment="crop_flip", seed=seed)
        return [[(xb.numpy(), yb.numpy()) for xb, yb in ds] for _ in range(count)]

    first, again, other = passes(1), passes(1), passes(2)
    for a, b in zip(first, again):
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    labels = [np.concatenate([yb for _, yb in p]) for p in first]
    assert all(sorted(lab.tolist()) == sorted(splits.y_train.tolist()) for lab in labels)
    assert not np.array_equal(labels[0], labels[1])  # another order on the second pass
    assert not np.array_equal(first[0][0][0], other[0][0][0])
    with pytest.raises(ValueError, match="num_epochs"):
        data_lib.make_dataset(splits.x_train, splits.y_train, 16, training=True,
                              first_epoch=2)

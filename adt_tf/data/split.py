"""The one validation split: a stratified, seeded hold-out of the training set (what
`--validation_examples` holds out, recorded by index in the run's record)."""

from __future__ import annotations

import numpy as np


def stratified_split(y: np.ndarray, n: int, seed: int, flag: str = "--validation_examples"
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Holds out n examples, each class in its share of the labels, by a seeded draw.

    Args:
        y: the training labels [N].
        n: examples to hold out (>= the number of classes, so each is represented; at most
            N minus the number of classes, so each keeps one to train on).
        seed: the draw's seed (the same seed and labels give the same split).
        flag: how error messages name n.

    Mathematical details:
        Class c with N_c examples gets q_c = floor(n N_c / N) places, and the n - sum q_c
        left go to the classes with the largest remainders n N_c / N - q_c (ties to the
        smaller class index); at least one place each, none a whole class. Within a class
        the q_c examples are a uniform draw (numpy's default_rng(seed) permutation).

    Returns:
        (train_indices, validation_indices), both sorted, disjoint, covering range(N).

    Raises:
        ValueError: naming `flag` and the value when n is out of range or the labels cannot
            be stratified so (a class with a single example).
    """
    y = np.asarray(y).reshape(-1)
    total = len(y)
    classes, counts = np.unique(y, return_counts=True)
    n = int(n)
    single = classes[counts < 2]
    if len(single):
        raise ValueError(f"{flag}={n}: the training set is too small to stratify: class "
                         f"{single[0]} has a single example (it cannot be both trained on and "
                         "held out).")
    if n < len(classes) or n > total - len(classes):
        raise ValueError(f"{flag} must be between {len(classes)} (one per class) and "
                         f"{total - len(classes)} (a training example left in each class) "
                         f"for these {total} training examples, got {n}.")
    exact = n * counts / total
    quota = np.floor(exact).astype(int)
    order = np.lexsort((np.arange(len(classes)), -(exact - quota)))
    quota[order[:n - quota.sum()]] += 1
    quota = np.clip(quota, 1, counts - 1)
    while quota.sum() > n:  # the clipping above can only have added places
        quota[np.argmax(np.where(quota > 1, quota - exact, -np.inf))] -= 1
    while quota.sum() < n:
        room = np.where(quota < counts - 1, exact - quota, -np.inf)
        quota[np.argmax(room)] += 1
    rng = np.random.default_rng(seed)
    held = [rng.permutation(np.flatnonzero(y == c))[:q] for c, q in zip(classes, quota)]
    val = np.sort(np.concatenate(held))
    train = np.setdiff1d(np.arange(total), val)
    return train, val

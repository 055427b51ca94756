"""FeaAttack: push an input's penultimate features towards those of an image of another class."""

from __future__ import annotations

import weakref

import keras
import tensorflow as tf

from adt_tf.attacks.common import misclassified, select
from adt_tf.attacks.registry import register_attack
from adt_tf.core import checks
from adt_tf.core.noise import as_seed, fold
from adt_tf.models.common import PENULTIMATE
from adt_tf.threat import Ball

_FEATURE_MODELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def features_and_logits(classifier) -> keras.Model:
    """A model mapping images to (penultimate features, logits), built once per classifier.

    ValueError if the classifier has no layer named "penultimate" (models from
    `adt_tf.models.build_model` have one).
    """
    if classifier in _FEATURE_MODELS:
        return _FEATURE_MODELS[classifier]
    try:
        layer = classifier.get_layer(PENULTIMATE)
    except (AttributeError, ValueError):
        raise ValueError(
            f"FeaAttack needs a Keras classifier with a layer named {PENULTIMATE!r} (its "
            f"penultimate features), got {getattr(classifier, 'name', type(classifier))!r}."
        ) from None
    model = keras.Model(classifier.inputs, [layer.output, classifier.outputs[0]])
    _FEATURE_MODELS[classifier] = model
    return model


def _cosine_distance(a, b):
    a = tf.math.l2_normalize(tf.cast(a, tf.float32), axis=-1)
    b = tf.math.l2_normalize(tf.cast(b, tf.float32), axis=-1)
    return 1.0 - tf.reduce_sum(a * b, axis=-1)


#: Pool images whose features are computed in one forward pass (memory only).
POOL_CHUNK = 256


def _pool_features(model, pool):
    """The penultimate features of the target pool, computed `POOL_CHUNK` images at a time
    (a whole CIFAR test set through a WRN-28-10 at once would not fit in memory)."""
    n = tf.shape(pool)[0]
    chunks = (n + POOL_CHUNK - 1) // POOL_CHUNK
    parts = tf.TensorArray(tf.float32, size=chunks, infer_shape=False)

    def body(i, parts):
        feats, _ = model(pool[i * POOL_CHUNK:(i + 1) * POOL_CHUNK], training=False)
        return i + 1, parts.write(i, tf.cast(feats, tf.float32))

    _, parts = tf.while_loop(lambda i, _: i < chunks, body, (tf.constant(0), parts))
    return parts.concat()


def target_order(y, pool_y, seed):
    """Each input's other-class pool images in a random order (same-class ones sort last).

    Returns:
        (order, available): order [B, P] pool indices; available [B] the number of
        other-class images (the valid prefix of each row).
    """
    y = tf.cast(tf.reshape(y, [-1]), tf.int32)
    pool_y = tf.cast(tf.reshape(pool_y, [-1]), tf.int32)
    other = tf.not_equal(y[:, tf.newaxis], pool_y[tf.newaxis, :])  # [B, P]
    keys = tf.random.stateless_uniform(tf.shape(other), seed)
    order = tf.argsort(tf.where(other, keys, 2.0 + keys), axis=-1)
    return order, tf.reduce_sum(tf.cast(other, tf.int32), axis=-1)


def round_target(order, available, t, with_replacement: bool, seed):
    """The pool index [B] of each input's target in round t.

    With replacement (the reference): an independent uniform draw among the input's
    other-class images, u ~ U{0, ..., available - 1} from a seed folded with t (so the first
    rounds are the same whatever the number of targets). Without: the t-th of the order,
    distinct targets.
    """
    if not with_replacement:
        return tf.gather(order, tf.minimum(t, tf.shape(order)[1] - 1), axis=1)
    u = tf.random.stateless_uniform(tf.shape(available), fold(seed, t))
    pick = tf.minimum(tf.cast(u * tf.cast(available, tf.float32), tf.int32),
                      tf.maximum(available - 1, 0))
    return tf.gather(order, pick, batch_dims=1)


@register_attack("fea", title="FeaAttack")
def fea_attack(classifier, x, y, threat: Ball, *, steps: int = 50,
               step_size: float = 1 / 255, num_targets: int = 200, target_images=None,
               target_labels=None, early_stop: bool = True, random_start: bool = True,
               with_replacement: bool = True, seed=0) -> tf.Tensor:
    """FeaAttack with up to `num_targets` target images per input.

    The defaults are the ADT authors' evaluation (`feature_attack.py`, after Line290's
    FeatureAttack): 200 targets drawn with replacement from the pool's images of other
    classes (the evaluation passes the whole test split), each attacked from its own uniform
    random start, 50 signed steps of 1/255 on the cosine distance of the penultimate
    features, stopped at the first misclassified iterate. `with_replacement=False,
    random_start=False` is the evaluation's stronger variant (`fea_distinct` in the `full`
    suite): distinct targets, each from the clean input.

    Args:
        classifier: a Keras logits model with a layer named "penultimate".
        x: clean inputs in [0, 1]; y: integer labels.
        threat: the L-infinity ball (`LinfBall`; the only one it takes).
        steps: signed-gradient steps per target (50).
        step_size: 1/255.
        num_targets: targets tried per input, each of a class other than the input's (200 in
            the ADT paper). An input counts as robust only if every target fails.
        target_images, target_labels: the pool targets are drawn from (the evaluation passes
            the test split); None uses the batch itself. Without replacement, fewer than
            `num_targets` images of other classes in the pool means fewer targets.
        early_stop: stop a target's steps (and skip the next targets) for an input once it is
            misclassified.
        random_start: start each target's steps at clip(x + U(-eps, eps)) (the reference's
            `random_start: True`; that start is checked too), else at x.
        with_replacement: draw each target uniformly from the pool's other-class images,
            independently (the reference's `random_(0, num_other_label_img)`), else a random
            order of distinct ones.
        seed: int or stateless seed tensor; it draws the targets and the starts.

    Mathematical details:
        For a target image x_t (label != y) with features phi(x_t), from x_0 (x, or a
        uniform point of the ball):
            x_{k+1} = Proj_{B(x, eps)}(x_k - a sign(grad_x (1 - cos(phi(x_k), phi(x_t))))),
        phi the penultimate features. An input is broken by the first iterate (x_0 of a
        random start, then x_1, ..., x_steps) that is misclassified. The reference scores
        x_0 ... x_{steps - 1} (its loop tests the prediction before each step), so the last
        iterate checked here can only add broken inputs.

    Example:
        >>> x_adv = fea_attack(model, x, y, 8 / 255, num_targets=20)

    Reference:
        The feature-space attack ("FeaAttack") of the ADT paper's evaluation (Dong, Deng,
        Pang, Zhu, Su, NeurIPS 2020, Sec. 5), with the settings of the authors' script.

    Returns:
        x_adv, same shape and dtype as x.
    """
    steps = checks.check_positive_int(steps, "steps")
    step_size = checks.check_positive(step_size, "step_size")
    num_targets = checks.check_positive_int(num_targets, "num_targets")
    model = features_and_logits(classifier)
    x = tf.convert_to_tensor(x)
    y = tf.cast(tf.reshape(y, [-1]), tf.int32)
    if (target_images is None) != (target_labels is None):
        raise ValueError("Give both target_images and target_labels, or neither.")
    pool = x if target_images is None else tf.cast(tf.convert_to_tensor(target_images), x.dtype)
    pool_y = y if target_labels is None else tf.cast(tf.reshape(target_labels, [-1]), tf.int32)
    pool_features = _pool_features(model, pool)
    base = as_seed(seed)

    order, available = target_order(y, pool_y, fold(base, 0))
    # With replacement every round is usable when the pool holds another class.
    usable = tf.where(available > 0, num_targets, 0) if with_replacement else available
    rounds = tf.minimum(num_targets, tf.reduce_max(usable))

    def attack_target(t, x_found, found):
        index = round_target(order, available, t, with_replacement, fold(base, 2))
        target = tf.gather(pool_features, index)
        active = tf.logical_and(t < usable, tf.logical_not(found))
        x_start = threat.random_start(x, fold(base, 1, t)) if random_start else x

        def check(x_adv, x_found, found):
            _, logits = model(x_adv, training=False)
            hit = tf.logical_and(active, misclassified(logits, y))
            x_found = select(tf.logical_and(hit, tf.logical_not(found)), x_adv, x_found)
            return x_found, tf.logical_or(found, hit)

        if random_start:
            x_found, found = check(x_start, x_found, found)

        def step(k, x_adv, x_found, found):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(x_adv)
                feats, _ = model(x_adv, training=False)
                distance = _cosine_distance(feats, target)
            grad = tape.gradient(distance, x_adv,
                                 unconnected_gradients=tf.UnconnectedGradients.ZERO)
            x_adv = threat.project(x_adv - step_size * tf.sign(grad), x)
            return (k + 1, x_adv) + check(x_adv, x_found, found)

        def cond(k, _x, _f, found):
            if not early_stop:
                return k < steps
            pending = tf.logical_and(active, tf.logical_not(found))
            return tf.logical_and(k < steps, tf.reduce_any(pending))

        _, _, x_found, found = tf.while_loop(cond, step, (tf.constant(0), x_start, x_found,
                                                          found), maximum_iterations=steps)
        return t + 1, x_found, found

    def outer_cond(t, _x, found):
        return tf.logical_and(t < rounds, tf.logical_not(tf.reduce_all(found)))

    _, x_found, _ = tf.while_loop(outer_cond, attack_target,
                                  (tf.constant(0), x, tf.zeros(tf.shape(y), tf.bool)),
                                  maximum_iterations=num_targets)
    return x_found

"""FeaAttack: push an input's penultimate features towards those of an image of another class."""

from __future__ import annotations

import weakref

import keras
import tensorflow as tf

from adt_tf import validation
from adt_tf.attacks.common import as_seed, fold, misclassified, select
from adt_tf.models.common import PENULTIMATE
from adt_tf.threat import as_threat, require_linf

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


def fea_attack(classifier, x, y, epsilon: float, *, steps: int = 50,
               step_size: float = 1 / 255, num_targets: int = 200, target_images=None,
               target_labels=None, early_stop: bool = True, seed=0) -> tf.Tensor:
    """FeaAttack with up to `num_targets` target images per input.

    Args:
        classifier: a Keras logits model with a layer named "penultimate".
        x: clean inputs in [0, 1]; y: integer labels.
        epsilon: L-infinity budget.
        steps: signed-gradient steps per target (50).
        step_size: 1/255.
        num_targets: targets tried per input, each of a class other than the input's (200 in
            the ADT paper). An input counts as robust only if every target fails.
        target_images, target_labels: the pool targets are drawn from (the evaluation passes
            the test inputs); None uses the batch itself. Fewer than `num_targets` images of
            other classes in the pool means fewer targets.
        early_stop: stop a target's steps (and skip the next targets) for an input once it is
            misclassified.
        seed: int or stateless seed tensor; it orders each input's targets.

    Mathematical details:
        For a target image x_t (label != y) with features phi(x_t), from x_0 = x:
            x_{k+1} = Proj_{B(x, eps)}(x_k - a sign(grad_x (1 - cos(phi(x_k), phi(x_t))))),
        phi the penultimate features. Each input's targets are a random order of the pool's
        images of other classes; the first misclassified iterate is returned.

    Example:
        >>> x_adv = fea_attack(model, x, y, 8 / 255, num_targets=20)

    Reference:
        The feature-space attack ("FeaAttack") of the ADT paper's evaluation, with its settings
        (Dong, Deng, Pang, Zhu, Su, NeurIPS 2020, Sec. 5), written from that description.

    Returns:
        x_adv, same shape and dtype as x.
    """
    ball = require_linf(as_threat(epsilon), "FeaAttack")
    steps = validation.check_positive_int(steps, "steps")
    step_size = validation.check_positive(step_size, "step_size")
    num_targets = validation.check_positive_int(num_targets, "num_targets")
    model = features_and_logits(classifier)
    x = tf.convert_to_tensor(x)
    y = tf.cast(tf.reshape(y, [-1]), tf.int32)
    if (target_images is None) != (target_labels is None):
        raise ValueError("Give both target_images and target_labels, or neither.")
    pool = x if target_images is None else tf.cast(tf.convert_to_tensor(target_images), x.dtype)
    pool_y = y if target_labels is None else tf.cast(tf.reshape(target_labels, [-1]), tf.int32)
    pool_features, _ = model(pool, training=False)

    # Each input's targets: the pool's other-class images in a random order (same-class
    # images sort last and are never used).
    other = tf.not_equal(y[:, tf.newaxis], pool_y[tf.newaxis, :])  # [B, P]
    keys = tf.random.stateless_uniform(tf.shape(other), fold(as_seed(seed), 0))
    order = tf.argsort(tf.where(other, keys, 2.0 + keys), axis=-1)
    available = tf.reduce_sum(tf.cast(other, tf.int32), axis=-1)
    rounds = tf.minimum(num_targets, tf.reduce_max(available))

    def attack_target(t, x_found, found):
        index = tf.gather(order, tf.minimum(t, tf.shape(order)[1] - 1), axis=1)
        target = tf.gather(pool_features, index)
        active = tf.logical_and(t < available, tf.logical_not(found))

        def step(k, x_adv, x_found, found):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(x_adv)
                feats, _ = model(x_adv, training=False)
                distance = _cosine_distance(feats, target)
            grad = tape.gradient(distance, x_adv,
                                 unconnected_gradients=tf.UnconnectedGradients.ZERO)
            x_adv = ball.project(x_adv - step_size * tf.sign(grad), x)
            _, logits = model(x_adv, training=False)
            hit = tf.logical_and(active, misclassified(logits, y))
            x_found = select(tf.logical_and(hit, tf.logical_not(found)), x_adv, x_found)
            return k + 1, x_adv, x_found, tf.logical_or(found, hit)

        def cond(k, _x, _f, found):
            if not early_stop:
                return k < steps
            pending = tf.logical_and(active, tf.logical_not(found))
            return tf.logical_and(k < steps, tf.reduce_any(pending))

        _, _, x_found, found = tf.while_loop(cond, step, (tf.constant(0), x, x_found, found),
                                             maximum_iterations=steps)
        return t + 1, x_found, found

    def outer_cond(t, _x, found):
        return tf.logical_and(t < rounds, tf.logical_not(tf.reduce_all(found)))

    _, x_found, _ = tf.while_loop(outer_cond, attack_target,
                                  (tf.constant(0), x, tf.zeros(tf.shape(y), tf.bool)),
                                  maximum_iterations=num_targets)
    return x_found

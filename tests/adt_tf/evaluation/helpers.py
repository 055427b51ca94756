"""What the evaluation's tests share: small attack settings and wrappers that break a model's
gradients or add noise (the models the sanity checks must flag)."""

import keras
import tensorflow as tf

EPS = 8 / 255
SMALL = {"square": {"num_queries": 100}, "spsa": {"steps": 8, "samples": 32},
         "pgd20": {"steps": 10}}


def small(suite):
    """The SMALL settings of the attacks in `suite` (overriding others is an error)."""
    return {k: v for k, v in SMALL.items() if k in suite.split(",")}


class StopGradient(keras.layers.Layer):
    def call(self, x):
        return tf.stop_gradient(x)


class Noise(keras.layers.Layer):
    def call(self, x):
        return x + tf.random.normal(tf.shape(x), stddev=0.05)


def wrap(model, before=None, after=None):
    inputs = keras.Input(model.input_shape[1:])
    h = before(inputs) if before is not None else inputs
    out = model(h)
    return keras.Model(inputs, after(out) if after is not None else out)

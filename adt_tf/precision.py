"""Mixed precision: the Keras dtype policy that suits the device, set for one run.

Under a mixed policy the classifier computes in float16 (GPU) or bfloat16 (CPU, TPU) and
keeps float32 variables; its logits layer is float32. The numerically delicate parts stay
in float32 whatever the policy: the adversarial distribution (mu, v, the TFP distribution,
the tanh Jacobian and the entropy, see `adt_tf.distributions`), the perturbed inputs
x + delta (a bfloat16 pixel has a resolution of 1/256 near 0.5, a quarter of epsilon = 8/255
lies within two steps of it), and every loss (logits are cast to float32 first). The outer
update scales its loss through the optimizer (`optimizer.scale_loss`), which Keras wraps in a
`LossScaleOptimizer` under mixed_float16; inner maximisations, which take input gradients
only, scale their objective by the number of examples under float16 (see
`adt_tf.inner_maximization`).
"""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf

LOW_PRECISION = (tf.float16, tf.bfloat16)


def mixed_policy_name(strategy: tf.distribute.Strategy | None = None) -> str:
    """"mixed_float16" when GPUs are present, else "mixed_bfloat16" (CPU, TPU)."""
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "mixed_bfloat16"
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


@contextlib.contextmanager
def precision_policy(mixed: bool, strategy: tf.distribute.Strategy | None = None):
    """Sets the global Keras dtype policy for the models built inside, then restores it.

    Args:
        mixed: use `mixed_policy_name(strategy)`; False keeps float32.
        strategy: the run's strategy (a TPU strategy selects bfloat16).

    Yields:
        The name of the policy in force.
    """
    previous = keras.config.dtype_policy()
    name = mixed_policy_name(strategy) if mixed else "float32"
    keras.config.set_dtype_policy(name)
    try:
        yield name
    finally:
        keras.config.set_dtype_policy(previous)


def as_float32(x: tf.Tensor) -> tf.Tensor:
    """Casts a float16/bfloat16 tensor to float32 (float32 and float64 pass unchanged)."""
    x = tf.convert_to_tensor(x)
    return tf.cast(x, tf.float32) if x.dtype in LOW_PRECISION else x


__all__ = ["as_float32", "mixed_policy_name", "precision_policy"]

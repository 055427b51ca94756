"""Mixed precision: the Keras dtype policy that suits the device, set for one run.

Under a mixed policy the classifier computes in float16 (GPU) or bfloat16 (CPU, TPU) and
keeps float32 variables; its logits layer is float32. The numerically delicate parts stay
in float32 whatever the policy: the adversarial distribution (mu, v, the TFP distribution,
the tanh Jacobian and the entropy, see `adt_tf.adt.distributions`), the perturbed inputs
x + delta (a bfloat16 pixel has a resolution of 1/256 near 0.5, a quarter of epsilon = 8/255
lies within two steps of it), and every loss (logits are cast to float32 first). The outer
update scales its loss through the optimizer (`optimizer.scale_loss`), which Keras wraps in a
`LossScaleOptimizer` under mixed_float16; inner maximisations, which take input gradients
only, scale their objective by the number of examples under float16 (see
`adt_tf.adt.inner_maximization`).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

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


def native_reduced_precision(cpuinfo: str = "/proc/cpuinfo") -> tuple[bool, str]:
    """Whether this machine computes the mixed policy's low-precision type in hardware.

    Returns:
        (native, reason). GPU: float16 is native from compute capability 7.0 on (tensor
        cores); below it, float16 matmuls run at or under float32 speed. CPU: bfloat16 is
        native with the AVX512-BF16 or AMX-BF16 instructions (read from `cpuinfo`, Linux);
        elsewhere oneDNN emulates it, slower than float32, so mixed precision is not
        recommended there (it is never switched on by this function; it only answers).
    """
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capabilities = [tf.config.experimental.get_device_details(g).get("compute_capability")
                        for g in gpus]
        known = [c for c in capabilities if c is not None]
        if known and all(tuple(c) >= (7, 0) for c in known):
            return True, f"GPU compute capability {', '.join(f'{a}.{b}' for a, b in known)}"
        return False, ("GPU compute capability below 7.0 (no float16 tensor cores) or unknown: "
                       f"{capabilities}")
    flags = _cpu_flags(cpuinfo)
    if flags is None:
        return False, f"CPU flags unknown ({cpuinfo} unreadable); bfloat16 may be emulated"
    native = sorted(flags & {"avx512_bf16", "amx_bf16"})
    if native:
        return True, f"CPU has {' and '.join(native)}"
    return False, "CPU lacks AVX512-BF16 and AMX-BF16: bfloat16 would be emulated (slower)"


def emulation_warning(mixed: bool) -> str | None:
    """A warning for a run asked to train under the mixed policy on hardware that emulates
    the low precision (slower than float32); None otherwise. Mixed precision is never
    switched on or off behind the user's back."""
    if not mixed:
        return None
    native, reason = native_reduced_precision()
    if native:
        return None
    return (f"--mixed_precision on hardware without native support ({reason}): the low "
            "precision is emulated, so expect training slower than float32.")


def _cpu_flags(cpuinfo: str) -> set[str] | None:
    if not os.path.exists(cpuinfo):
        return None
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return set()


def float32_copy(model: keras.Model) -> keras.Model:
    """The same classifier computing in float32: its config with every mixed policy replaced
    by float32, rebuilt, given the model's weights. A model trained under a mixed policy is
    saved with it; evaluating it in float32 measures the function its weights define, without
    the rounding of low-precision activations (which can blunt gradient attacks)."""
    original = model.get_config()
    config = _float32_config(original)
    if config == original:  # no layer computes in low precision
        return model
    # (A loaded model's own policy may read float32 while its layers keep their saved
    # mixed policies: only the layers' configs tell.)
    copy = model.__class__.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


#: How an evaluation computes: "float32" (the function the weights define; the default) or
#: "policy" (the dtype policy the model was saved with, e.g. the deployed bfloat16 model).
COMPUTE_DTYPES = ("float32", "policy")


def compute_dtype_of(model) -> str:
    """What a classifier computes in: "float32", "bfloat16" or "float16" (a mixed policy:
    the low precision of its layers; the logits stay float32), or "as exported" for a
    SavedModel signature (whose dtypes were fixed when it was exported)."""
    if not isinstance(model, keras.Model):
        return "as exported"
    low = {str(layer.dtype_policy.compute_dtype) for layer in model._flatten_layers()
           if getattr(layer, "dtype_policy", None) is not None} & {"float16", "bfloat16"}
    return sorted(low)[0] if low else "float32"


def for_evaluation(model, compute_dtype: str = "float32"):
    """The classifier an evaluation attacks, and what it computes in.

    Args:
        model: a Keras classifier, or a SavedModel classifier (left as it is: a signature's
            dtypes cannot be changed).
        compute_dtype: "float32" (default: `float32_copy` of a mixed-precision model, so a
            low-precision forward cannot blunt the gradient attacks) or "policy" (the model
            as saved, e.g. to measure the deployed bfloat16 model).

    Returns:
        (classifier, dtype): dtype as `compute_dtype_of` names it.
    """
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, got "
                         f"{compute_dtype!r}.")
    if compute_dtype == "float32" and isinstance(model, keras.Model):
        model = float32_copy(model)
    return model, compute_dtype_of(model)


def _float32_config(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get("class_name") == "DTypePolicy" and "config" in value:
            return dict(value, config=dict(value["config"], name="float32"))
        return {k: ("float32" if k == "dtype" and v in ("float16", "bfloat16")
                    else _float32_config(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_float32_config(v) for v in value]
    return value


__all__ = ["COMPUTE_DTYPES", "as_float32", "compute_dtype_of", "emulation_warning",
           "float32_copy", "for_evaluation", "mixed_policy_name",
           "native_reduced_precision", "precision_policy"]

"""The classifier's optimiser, as the reference code runs it (its learning-rate and momentum
schedules: `adt_tf.numerics.schedules`).

`make_optimizer` is the one place that builds the outer optimiser: `adt-train`, `adt-tune`
and the benchmarks all go through `adt_tf.training.run.build_trainer`, which calls it.

Reference facts (the authors' PyTorch code, ../shared/DESIGN.md Sec. 4):
- SGD with momentum 0.9 and weight decay 2e-4 in PyTorch's form: the L2 term wd * w is added
  to the gradient *before* momentum, and the momentum buffer is kept in gradient units,

      g <- g + wd * w,   buf <- momentum * buf + g,   w <- w - lr * buf.

  Keras's `SGD(weight_decay=...)` is decoupled (w <- w - lr * wd * w outside the momentum),
  about 10x weaker at momentum 0.9 for the same number, and Keras keeps its velocity in
  parameter units (v <- momentum * v - lr * g), which differs from PyTorch's buffer right
  after a learning-rate decay. `CoupledSGD` is PyTorch's update; the decoupled form stays
  available as `weight_decay_form="decoupled"`.
- The amortised methods' generator and encoder use `torch.optim.Adam`, whose epsilon is added
  to the bias-corrected root of the second moment: w <- w - lr * m_hat / (sqrt(v_hat) + eps).
  Keras's `Adam` adds it before the bias correction, which amounts to PyTorch's with
  eps / sqrt(1 - beta2^t) (31.6 eps at the first step with beta2 = 0.999) and moves
  parameters whose gradient is small differently. `TorchAdam` is PyTorch's update.
- The schedule counts epochs from 1 and multiplies the rate by 0.1 from epoch 75 on (and
  again from 90 and from 100), so a 76-epoch run has 74 epochs at 0.1 and 2 at 0.01.
- Fast AT's cyclic schedule (locuslab/fast_adversarial `CIFAR10/train_fgsm.py`) is PyTorch's
  `CyclicLR` with its defaults, which cycle the momentum too, inversely to the rate
  (`cycle_momentum=True`, `base_momentum=0.8`, `max_momentum=0.9`): 0.9 at the rate 0 and
  0.8 at the peak (`TriangularCyclicMomentum`, read by `CoupledSGD` at every step).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import keras
import tensorflow as tf

from adt_tf.core import checks
from adt_tf.numerics.schedules import (
    CYCLIC_MOMENTUM_LOW,
    LR_SCHEDULES,
    EpochStepDecay,
    TriangularCyclic,
    TriangularCyclicMomentum,
)

WEIGHT_DECAY_FORMS = ("coupled", "decoupled")


class WarmupEMA:
    """Keras's optimiser weight average (`use_ema`), with TensorFlow 1's warm-up.

    Keras averages with a fixed decay tau from the second step on, so the average keeps
    tau^t of the first step's weights after t steps (8% after 2,520 steps at tau = 0.999):
    on a short run it lags far behind the weights. With `ema_warmup=True` the decay at the
    update that follows t earlier updates is min(tau, (1 + t) / (10 + t)), as
    `tf.compat.v1.train.ExponentialMovingAverage(decay, num_updates=t)` computes it: 0.5 at
    t = 8, 0.9 at t = 81, tau = 0.999 from t = 8,991 on.

    Mathematical details:
        avg_1 = w_1 (the first update sets the average, as Keras's does);
        avg_{t+1} = d_t avg_t + (1 - d_t) w_{t+1},  d_t = min(tau, (1 + t) / (10 + t)),
        with t = the optimiser's `iterations` before the update (1, 2, ...).
    """

    ema_warmup: bool = False

    def ema_decay_at(self, t):
        """The decay d_t of the update that follows t earlier ones (0 for t = 0)."""
        t = tf.cast(t, tf.float32)
        tau = tf.cast(self.ema_momentum, tf.float32)
        decay = tf.minimum(tau, (1.0 + t) / (10.0 + t)) if self.ema_warmup else tau
        return tf.where(t > 0, decay, 0.0)

    def _update_model_variables_moving_average(self, trainable_variables):
        if not self.use_ema:
            return
        decay = self.ema_decay_at(self.iterations)
        for var, average in zip(trainable_variables, self._model_variables_moving_average):
            if average is not None:
                d = tf.cast(decay, var.dtype)
                average.assign(d * average + (1 - d) * var)


class ScheduledMomentum:
    """SGD's momentum as a float or as a schedule of the step counter.

    With a schedule (a `keras.optimizers.schedules.LearningRateSchedule` of the momentum,
    e.g. `TriangularCyclicMomentum`), `momentum` is that schedule and the update that
    follows s earlier ones uses momentum(s), read from the same counter as the learning
    rate (as PyTorch's `CyclicLR` sets the rate and the momentum of a step together).
    A float momentum takes the unchanged path of the float.
    """

    def _use_momentum_schedule(self, schedule) -> None:
        if schedule is not None:
            self.momentum = schedule

    @property
    def momentum_schedule(self):
        """The momentum's schedule, or None when the momentum is a float."""
        return self.momentum if callable(self.momentum) else None

    def momentum_now(self):
        """The momentum of the coming update: momentum(iterations) for a schedule."""
        schedule = self.momentum_schedule
        return self.momentum if schedule is None else schedule(self.iterations)

    def get_config(self):
        config = super().get_config()
        if self.momentum_schedule is not None:
            config["momentum"] = keras.saving.serialize_keras_object(self.momentum_schedule)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        if isinstance(config.get("momentum"), dict):
            config = dict(config, momentum=keras.saving.deserialize_keras_object(
                config["momentum"], custom_objects=custom_objects))
        return super().from_config(config, custom_objects=custom_objects)


def _split_momentum(momentum, what: str):
    """(the float Keras's SGD is built with, the momentum's schedule or None). A schedule
    builds the momentum buffers (Keras builds them for a non-zero float)."""
    if isinstance(momentum, keras.optimizers.schedules.LearningRateSchedule):
        return 1.0, momentum
    try:
        return float(momentum), None
    except (TypeError, ValueError):
        raise ValueError(f"{what} momentum must be a number in [0, 1] or a schedule, got "
                         f"{momentum!r}.") from None


@keras.saving.register_keras_serializable(package="adt_tf")
class CoupledSGD(ScheduledMomentum, WarmupEMA, keras.optimizers.SGD):
    """SGD with momentum and L2 weight decay exactly as PyTorch's `torch.optim.SGD`.

    Args:
        learning_rate: a float or a `keras.optimizers.schedules.LearningRateSchedule`.
        momentum: in [0, 1] (0.9 in the reference), or a schedule of the step counter
            (`ScheduledMomentum`; Fast AT's cyclic one, `TriangularCyclicMomentum`).
        coupled_weight_decay: wd >= 0, the L2 coefficient added to the gradient (2e-4 in the
            reference). It applies to every trainable variable the optimiser updates (BatchNorm
            scales and biases included), as `SGD(model.parameters(), weight_decay=wd)` does.
        **kwargs: other `keras.optimizers.SGD` arguments (not `weight_decay` or `nesterov`).

    Mathematical details:
        g <- g + wd * w;  buf <- momentum * buf + g;  w <- w - lr * buf
        (without momentum: w <- w - lr * g); with schedules, the rate and the momentum
        are those of the step counter s before the update (lr(s), momentum(s)). The
        gradient g reaching `update_step` is the one Keras has already summed over replicas
        and unscaled for mixed precision, so the decay term is added once per variable,
        after the all-reduce, under any strategy.

    Example:
        >>> opt = CoupledSGD(0.1, momentum=0.9, coupled_weight_decay=2e-4)
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, coupled_weight_decay=0.0,
                 name="coupled_sgd", ema_warmup=False, **kwargs):
        for key in ("weight_decay", "nesterov"):
            if kwargs.get(key):
                raise ValueError(f"CoupledSGD does not take {key}={kwargs[key]!r}; use "
                                 "keras.optimizers.SGD for the decoupled (Keras) form.")
            kwargs.pop(key, None)
        momentum, schedule = _split_momentum(momentum, "CoupledSGD")
        super().__init__(learning_rate=learning_rate, momentum=momentum, name=name, **kwargs)
        self._use_momentum_schedule(schedule)
        self.coupled_weight_decay = checks.check_non_negative(
            coupled_weight_decay, "weight_decay")
        self.ema_warmup = bool(ema_warmup)

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = tf.cast(learning_rate, variable.dtype)
        gradient = tf.cast(gradient, variable.dtype)
        if self.coupled_weight_decay:
            gradient = gradient + tf.cast(self.coupled_weight_decay, variable.dtype) * variable
        if self.momentum_schedule is None and self.momentum == 0:
            self.assign_sub(variable, gradient * learning_rate)
            return
        buf = self.momentums[self._get_variable_index(variable)]
        self.assign(buf, buf * tf.cast(self.momentum_now(), variable.dtype) + gradient)
        self.assign_sub(variable, buf * learning_rate)

    def get_config(self):
        config = super().get_config()
        config.pop("nesterov", None)
        config.pop("weight_decay", None)
        config["coupled_weight_decay"] = self.coupled_weight_decay
        config["ema_warmup"] = self.ema_warmup
        return config


@keras.saving.register_keras_serializable(package="adt_tf")
class DecoupledSGD(ScheduledMomentum, WarmupEMA, keras.optimizers.SGD):
    """Keras's SGD (decoupled weight decay: w <- w - lr * wd * w outside the momentum), with
    the weight average's warm-up of `WarmupEMA` available (`ema_warmup`) and the momentum a
    float or a schedule (`ScheduledMomentum`: Keras's update v <- m(s) v - lr(s) g,
    w <- w + v, with the momentum of the step)."""

    def __init__(self, learning_rate=0.01, momentum=0.0, *, ema_warmup=False, **kwargs):
        momentum, schedule = _split_momentum(momentum, "DecoupledSGD")
        super().__init__(learning_rate=learning_rate, momentum=momentum, **kwargs)
        self._use_momentum_schedule(schedule)
        self.ema_warmup = bool(ema_warmup)

    def update_step(self, gradient, variable, learning_rate):
        if self.momentum_schedule is None:
            super().update_step(gradient, variable, learning_rate)
            return
        learning_rate = tf.cast(learning_rate, variable.dtype)
        gradient = tf.cast(gradient, variable.dtype)
        velocity = self.momentums[self._get_variable_index(variable)]
        momentum = tf.cast(self.momentum_now(), variable.dtype)
        self.assign(velocity, velocity * momentum - gradient * learning_rate)
        if self.nesterov:
            self.assign_add(variable, velocity * momentum - gradient * learning_rate)
        else:
            self.assign_add(variable, velocity)

    def get_config(self):
        return {**super().get_config(), "ema_warmup": self.ema_warmup}


@keras.saving.register_keras_serializable(package="adt_tf")
class TorchAdam(keras.optimizers.Adam):
    """Adam with PyTorch's epsilon placement (`torch.optim.Adam`, amsgrad off).

    Args: those of `keras.optimizers.Adam` (epsilon defaults to PyTorch's 1e-8; amsgrad is
    not supported).

    Mathematical details:
        m <- b1 m + (1 - b1) g,  v <- b2 v + (1 - b2) g^2,
        w <- w - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
        Keras's Adam divides by sqrt(v) + eps *before* the bias correction, i.e. uses
        eps / sqrt(1 - b2^t) in this formula.

    Example:
        >>> opt = TorchAdam(2e-4, beta_1=0.5, beta_2=0.999)   # the reference's generator
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 name="torch_adam", **kwargs):
        if kwargs.pop("amsgrad", False):
            raise ValueError("TorchAdam does not support amsgrad=True.")
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, name=name, **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = tf.cast(learning_rate, dtype)
        gradient = tf.cast(gradient, dtype)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, (gradient - m) * (1 - beta_1))
        self.assign_add(v, (tf.square(gradient) - v) * (1 - beta_2))
        m_hat = m / (1 - tf.pow(beta_1, step))
        v_hat = v / (1 - tf.pow(beta_2, step))
        self.assign_sub(variable, lr * m_hat / (tf.sqrt(v_hat) + tf.cast(self.epsilon, dtype)))

    def get_config(self):
        config = super().get_config()
        config.pop("amsgrad", None)
        return config


def check_weight_decay_form(value: str) -> str:
    return checks.check_choice(value, "weight_decay_form", WEIGHT_DECAY_FORMS)


def make_optimizer(lr: float, *, momentum: float, weight_decay: float,
                   weight_decay_form: str = "coupled", decay_epochs: Sequence[int] = (),
                   decay_factor: float = 0.1, steps_per_epoch: int = 1,
                   schedule: str = "step", epochs: int = 1,
                   ema_decay: float | None = None,
                   ema_warmup: bool = False) -> keras.optimizers.Optimizer:
    """The classifier's SGD: the reference's `CoupledSGD` with an `EpochStepDecay` schedule
    (or Fast AT's `TriangularCyclic` one).

    Args:
        lr: the initial learning rate. momentum: SGD momentum.
        weight_decay: its coefficient (2e-4 in the reference; 0 for none).
        weight_decay_form: "coupled" (PyTorch's L2-in-the-gradient, the default and the
            reference) or "decoupled" (Keras's `SGD(weight_decay=...)`, w -= lr * wd * w; a
            named, non-default option).
        decay_epochs, decay_factor, steps_per_epoch: the step schedule (`EpochStepDecay`).
            Decay epochs beyond the run never take effect. The rate is a schedule even
            without decay epochs: the optimiser's saved state then has the same variables
            whatever the run's length, so a run resumed with a larger --epochs restores its
            momentum and step count (with a plain float rate Keras adds a learning-rate
            variable, and a resume that turned the float into a schedule silently skipped
            the whole optimiser state).
        schedule: "step" (the above) or "cyclic" (`TriangularCyclic` over `epochs` epochs
            of `steps_per_epoch` steps, peaking at `lr`; the decay epochs are not used).
            The cyclic schedule cycles the momentum too, as PyTorch's `CyclicLR` does by
            default (`TriangularCyclicMomentum`): `momentum` where the rate is 0, down to
            `CYCLIC_MOMENTUM_LOW` * `momentum` at its peak (0.9 -> 0.8 -> 0.9 at the
            default 0.9: `CyclicLR`'s max_momentum 0.9 and base_momentum 0.8; Fast AT's
            `train_fgsm.py` passes its --momentum 0.9 to SGD, which `CyclicLR` then
            overrides with those defaults, so `momentum` is read as max_momentum and a
            momentum other than 0.9 keeps their ratio). The step schedule keeps the
            momentum constant.
        epochs: the run's length (for "cyclic").
        ema_decay: if set, the optimiser also keeps an exponential moving average of the
            weights it trains (Keras's `use_ema`, `ema_momentum=ema_decay`: after each step
            avg <- d avg + (1 - d) w, avg = w after the first), saved with its state (so a
            resumed run keeps it) and written into the model when `fit` ends.
        ema_warmup: with `ema_decay`, the decay of TensorFlow 1's warm-up,
            min(ema_decay, (1 + t) / (10 + t)) at the update after t earlier ones
            (`WarmupEMA`).
    """
    form = check_weight_decay_form(weight_decay_form)
    checks.check_choice(schedule, "lr_schedule", LR_SCHEDULES)
    if schedule == "step":
        rate = EpochStepDecay(lr, decay_epochs, decay_factor, steps_per_epoch)
    else:
        rate = TriangularCyclic(lr, epochs * steps_per_epoch)
        if momentum:
            momentum = TriangularCyclicMomentum(momentum, CYCLIC_MOMENTUM_LOW * momentum,
                                                epochs * steps_per_epoch)
    if ema_warmup and ema_decay is None:
        raise ValueError("--ema_warmup applies to a weight average: give --ema_decay too.")
    ema = {} if ema_decay is None else {"use_ema": True, "ema_momentum": float(ema_decay),
                                        "ema_warmup": bool(ema_warmup)}
    if form == "coupled":
        return CoupledSGD(rate, momentum=momentum, coupled_weight_decay=weight_decay, **ema)
    return DecoupledSGD(rate, momentum=momentum, weight_decay=weight_decay or None, **ema)


@contextlib.contextmanager
def averaged_weights(model):
    """Within the block, `model`'s trainable weights are its optimiser's moving averages
    (when the optimiser keeps them: `use_ema=True`; otherwise nothing changes); after it,
    the weights being trained again. BatchNorm's running statistics are not averaged (Keras
    averages trainable variables only), see docs/methods.md."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not getattr(optimizer, "use_ema", False) or not getattr(
            optimizer, "built", False):
        yield
        return
    # The classifier's: what the optimiser trains (an amortised method's generator and
    # encoder have optimisers of their own, without an average).
    variables = list(getattr(model, "classifier", model).trainable_variables)
    saved = [v.numpy() for v in variables]
    optimizer.finalize_variable_values(variables)
    try:
        yield
    finally:
        for variable, value in zip(variables, saved, strict=True):
            variable.assign(value)


__all__ = ["WEIGHT_DECAY_FORMS", "CoupledSGD", "DecoupledSGD", "ScheduledMomentum",
           "TorchAdam", "WarmupEMA", "averaged_weights", "check_weight_decay_form",
           "make_optimizer"]

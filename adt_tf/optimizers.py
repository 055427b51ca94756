"""The classifier's optimiser and learning-rate schedule, as the reference code runs them.

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
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from adt_tf import checks

WEIGHT_DECAY_FORMS = ("coupled", "decoupled")
#: The learning-rate schedules: the reference's epoch steps, or Fast AT's triangle.
LR_SCHEDULES = ("step", "cyclic")


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


@keras.saving.register_keras_serializable(package="adt_tf")
class CoupledSGD(WarmupEMA, keras.optimizers.SGD):
    """SGD with momentum and L2 weight decay exactly as PyTorch's `torch.optim.SGD`.

    Args:
        learning_rate: a float or a `keras.optimizers.schedules.LearningRateSchedule`.
        momentum: in [0, 1] (0.9 in the reference).
        coupled_weight_decay: wd >= 0, the L2 coefficient added to the gradient (2e-4 in the
            reference). It applies to every trainable variable the optimiser updates (BatchNorm
            scales and biases included), as `SGD(model.parameters(), weight_decay=wd)` does.
        **kwargs: other `keras.optimizers.SGD` arguments (not `weight_decay` or `nesterov`).

    Mathematical details:
        g <- g + wd * w;  buf <- momentum * buf + g;  w <- w - lr * buf
        (without momentum: w <- w - lr * g). The gradient g reaching `update_step` is the
        one Keras has already summed over replicas and unscaled for mixed precision, so the
        decay term is added once per variable, after the all-reduce, under any strategy.

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
        super().__init__(learning_rate=learning_rate, momentum=float(momentum), name=name,
                         **kwargs)
        self.coupled_weight_decay = checks.check_non_negative(
            coupled_weight_decay, "weight_decay")
        self.ema_warmup = bool(ema_warmup)

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = tf.cast(learning_rate, variable.dtype)
        gradient = tf.cast(gradient, variable.dtype)
        if self.coupled_weight_decay:
            gradient = gradient + tf.cast(self.coupled_weight_decay, variable.dtype) * variable
        if self.momentum == 0:
            self.assign_sub(variable, gradient * learning_rate)
            return
        buf = self.momentums[self._get_variable_index(variable)]
        self.assign(buf, buf * tf.cast(self.momentum, variable.dtype) + gradient)
        self.assign_sub(variable, buf * learning_rate)

    def get_config(self):
        config = super().get_config()
        config.pop("nesterov", None)
        config.pop("weight_decay", None)
        config["coupled_weight_decay"] = self.coupled_weight_decay
        config["ema_warmup"] = self.ema_warmup
        return config


@keras.saving.register_keras_serializable(package="adt_tf")
class DecoupledSGD(WarmupEMA, keras.optimizers.SGD):
    """Keras's SGD (decoupled weight decay: w <- w - lr * wd * w outside the momentum), with
    the weight average's warm-up of `WarmupEMA` available (`ema_warmup`)."""

    def __init__(self, *args, ema_warmup=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.ema_warmup = bool(ema_warmup)

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


@keras.saving.register_keras_serializable(package="adt_tf")
class EpochStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """The reference's step schedule: epochs counted from 1, the rate times `factor` from each
    decay epoch on.

    Args:
        initial_learning_rate: the rate of epoch 1.
        decay_epochs: epochs (counted from 1) from which the rate is multiplied by `factor`
            once more (75, 90, 100 in the reference).
        factor: the multiplier (0.1).
        steps_per_epoch: optimizer steps in one epoch.

    Mathematical details:
        With the optimizer's step counter s (0 at the first step), the epoch is
        e = floor(s / steps_per_epoch) + 1 and lr(s) = lr0 * factor^#{d in decay_epochs: e >= d}.
        With decay_epochs = (75,) and 76 epochs: 74 epochs at lr0, 2 at 0.1 lr0.

    Example:
        >>> schedule = EpochStepDecay(0.1, (75, 90, 100), 0.1, steps_per_epoch=782)
        >>> round(float(schedule(74 * 782 - 1)), 6), round(float(schedule(74 * 782)), 6)
        (0.1, 0.01)
    """

    def __init__(self, initial_learning_rate: float, decay_epochs: Sequence[int],
                 factor: float, steps_per_epoch: int):
        self.initial_learning_rate = checks.check_positive(initial_learning_rate, "lr")
        self.decay_epochs = tuple(sorted(checks.check_positive_int(e, "lr_decay_epochs")
                                         for e in decay_epochs))
        self.factor = checks.check_positive(factor, "lr_decay_factor")
        self.steps_per_epoch = checks.check_positive_int(steps_per_epoch, "steps_per_epoch")

    def __call__(self, step):
        step = tf.cast(step, tf.int64)
        epoch = step // self.steps_per_epoch + 1
        decays = tf.zeros([], tf.float32)
        for boundary in self.decay_epochs:
            decays += tf.cast(epoch >= boundary, tf.float32)
        return self.initial_learning_rate * tf.pow(tf.constant(self.factor, tf.float32), decays)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_epochs": list(self.decay_epochs), "factor": self.factor,
                "steps_per_epoch": self.steps_per_epoch}


@keras.saving.register_keras_serializable(package="adt_tf")
class TriangularCyclic(keras.optimizers.schedules.LearningRateSchedule):
    """Fast AT's cyclic rate: up linearly from 0 to the peak over the first half of the run,
    back down to 0 over the second, one value per step (PyTorch's `CyclicLR(base_lr=0,
    max_lr=peak, step_size_up=total / 2, step_size_down=total / 2)` stepped after every
    batch, as locuslab/fast_adversarial's `train_fgsm.py`).

    Args:
        peak_learning_rate: the rate at the middle of the run (0.2 in Fast AT).
        total_steps: optimizer steps of the whole run (epochs x steps per epoch).

    Mathematical details:
        lr(s) = peak * (1 - |s / (total / 2) - 1|) for the step counter s = 0, 1, ...: the
        first step is taken at rate 0, as with PyTorch's scheduler.

    Example:
        >>> schedule = TriangularCyclic(0.2, total_steps=15 * 391)
        >>> float(schedule(0)), round(float(schedule(15 * 391 / 2)), 3)
        (0.0, 0.2)
    """

    def __init__(self, peak_learning_rate: float, total_steps: int):
        self.peak_learning_rate = checks.check_positive(peak_learning_rate, "lr")
        self.total_steps = checks.check_positive_int(total_steps, "total_steps")

    def __call__(self, step):
        half = tf.constant(self.total_steps / 2, tf.float32)
        position = tf.cast(step, tf.float32) / half
        return self.peak_learning_rate * tf.maximum(1.0 - tf.abs(position - 1.0), 0.0)

    def get_config(self):
        return {"peak_learning_rate": self.peak_learning_rate, "total_steps": self.total_steps}


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
    rate = (EpochStepDecay(lr, decay_epochs, decay_factor, steps_per_epoch) if schedule == "step"
            else TriangularCyclic(lr, epochs * steps_per_epoch))
    if ema_warmup and ema_decay is None:
        raise ValueError("--ema_warmup applies to a weight average: give --ema_decay too.")
    ema = {} if ema_decay is None else {"use_ema": True, "ema_momentum": float(ema_decay),
                                        "ema_warmup": bool(ema_warmup)}
    if form == "coupled":
        return CoupledSGD(rate, momentum=momentum, coupled_weight_decay=weight_decay, **ema)
    return DecoupledSGD(rate, momentum=momentum, weight_decay=weight_decay or None, **ema)


__all__ = ["LR_SCHEDULES", "WEIGHT_DECAY_FORMS", "CoupledSGD", "DecoupledSGD", "EpochStepDecay",
           "TorchAdam", "WarmupEMA",
           "TriangularCyclic",
           "check_weight_decay_form", "make_optimizer"]

"""AWP: adversarial weight perturbation (Wu, Xia, Wang, NeurIPS 2020), as its authors ran it.

Each training step first makes the inputs' adversarial examples (the method's own inner
maximisation, unperturbed weights), then moves the classifier's weights to a nearby point of
higher adversarial loss, takes the outer step there and moves the weights back. Three
methods: `AWPAT` (AT-AWP: PGD adversarial training), `AWPTRADES` (TRADES-AWP) and
`AWPADTExp` (ADT_EXP's inner maximisation with AWP's weight step: an extension, not in either
paper).

The weight step, from the authors' code (csdongxian/AWP, `utils_awp.py`; docs/methods.md
lists every detail):
- a proxy copy of the classifier (its BatchNorm statistics included) takes one plain SGD
  step (no momentum, no weight decay; lr 0.01 for AT, 0.1 for TRADES) *up* the adversarial
  loss, in training mode (BatchNorm normalises with the batch's statistics; the proxy's
  running statistics are thrown away with it);
- for every weight tensor of more than one dimension (convolution kernels and dense
  kernels; not BatchNorm's scale and offset nor any bias), the difference d = w_proxy - w
  is rescaled to the tensor's own norm: v = gamma * ||w|| / (||d|| + 1e-20) * d (Frobenius
  norms of the whole tensor);
- v is added to the weights, the outer loss's gradient is taken and the optimiser steps at
  w + v (momentum and PyTorch's coupled weight decay see w + v), then v is subtracted;
- AT-AWP perturbs from the first epoch (gamma 0.01); TRADES-AWP from epoch 10 (gamma 0.005;
  epochs 1 to 9 train without it).

Mathematical details:
    min_w max_{||v_l|| <= gamma ||w_l||} E[ L_adv(w + v) ], one ascent step for v:
    v_l = gamma ||w_l|| (w'_l - w_l) / ||w'_l - w_l||, w' = w + eta grad_w L_adv(w),
    then w <- w + v - lr * step(grad_w L_adv(w + v), w + v) - v.

Reference:
    Wu, Xia, Wang, "Adversarial Weight Perturbation Helps Robust Generalization", NeurIPS
    2020; code: github.com/csdongxian/AWP (MIT licence).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from adt_tf.core import checks
from adt_tf.methods.adt_exp import ADTExp
from adt_tf.methods.base import FloorPass, unscale_loss
from adt_tf.methods.pgd_at import PGDAT
from adt_tf.methods.trades import TRADES
from adt_tf.numerics.losses import trades_loss

#: The authors' guard against a zero difference (utils_awp.py's EPS).
AWP_EPS = 1e-20


def check_awp_gamma(value) -> float:
    """gamma >= 0 and finite (0 turns the weight step off, as the authors' gamma <= 0)."""
    try:
        gamma = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"awp_gamma must be a finite number >= 0, got {value!r}.") from None
    if isinstance(value, bool) or not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f"awp_gamma must be a finite number >= 0, got {value!r}.")
    return gamma


def perturbed_weights(classifier: keras.Model) -> list:
    """The weights AWP perturbs: every trainable tensor of more than one dimension (the
    authors keep state-dict entries named 'weight' of more than one dimension: convolution
    and linear kernels)."""
    return [v for v in classifier.trainable_variables if len(v.shape) > 1]


def awp_direction(weights: list[tf.Tensor], grads: list[tf.Tensor], proxy_lr: float,
                  gamma: float) -> list[tf.Tensor]:
    """The perturbation v of each weight tensor from the ascent gradient g (of the loss, at
    w): the proxy's step w' = w + proxy_lr * g computed and subtracted in float as the
    authors' state dicts do, d = w' - w, v = gamma * ||w|| / (||d|| + 1e-20) * d."""
    out = []
    for w, g in zip(weights, grads, strict=True):
        w = tf.convert_to_tensor(w)
        g = tf.cast(g, w.dtype)
        diff = (w + tf.cast(proxy_lr, w.dtype) * g) - w
        scale = tf.norm(w) / (tf.norm(diff) + tf.cast(AWP_EPS, w.dtype))
        out.append(tf.cast(gamma, w.dtype) * scale * diff)
    return out


def _assign(variables: list, values: list[tf.Tensor]) -> None:
    """variable <- value for each pair, from a replica context (every replica holds the same
    values): through the strategy's update, as an optimiser assigns mirrored variables."""
    context = tf.distribute.get_replica_context()

    def merge(strategy, values):
        for variable, value in zip(variables, values, strict=True):
            strategy.extended.update(variable.value, lambda var, t: var.assign(t),
                                     args=(value,))

    context.merge_call(merge, args=(values,))


class AWPEpochs(keras.callbacks.Callback):
    """Turns a method's weight step on from epoch `awp_warmup + 1` (epochs counted from 1)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.model.awp_active.assign(epoch >= self.model.awp_warmup)


class AdversarialWeightPerturbation:
    """Mixin of the AWP methods: the weight step around the outer update of the method it
    is mixed into (`awp_loss` is the loss its proxy ascends)."""

    #: The proxy's SGD learning rate in the authors' script of the recipe.
    AWP_PROXY_LR = 0.01

    def _init_awp(self, awp_gamma, awp_warmup) -> None:
        self.awp_gamma = check_awp_gamma(awp_gamma)
        self.awp_warmup = checks.check_positive_int(awp_warmup, "awp_warmup", minimum=0)
        #: Whether this epoch perturbs (set by `AWPEpochs` at each epoch's start).
        self.awp_active = tf.Variable(self.awp_warmup == 0, trainable=False,
                                      name="awp_active")

    def training_callbacks(self) -> list[keras.callbacks.Callback]:
        return [AWPEpochs()] + super().training_callbacks()

    def awp_loss(self, logits_fn, x, x_train, y) -> tf.Tensor:
        """The loss the proxy ascends (batch mean), from logits_fn(inputs) in training
        mode: the subclass's."""
        raise NotImplementedError

    def weight_perturbation(self, x, x_train, y) -> list[tf.Tensor]:
        """v for each of `perturbed_weights`: one ascent step of a proxy (the classifier's
        weights and BatchNorm statistics, training mode, statistics discarded), rescaled
        layer by layer (`awp_direction`); zero while the warm-up lasts."""
        classifier = self.classifier
        weights = perturbed_weights(classifier)
        chosen = {id(v) for v in weights}
        trainable = [v.value for v in classifier.trainable_variables]
        frozen = [v.value for v in classifier.non_trainable_variables]
        watched = [t for v, t in zip(classifier.trainable_variables, trainable, strict=True)
                   if id(v) in chosen]
        with tf.GradientTape() as tape:
            tape.watch(watched)

            def logits_fn(inputs):
                logits, _ = classifier.stateless_call(trainable, frozen, inputs, training=True)
                return logits

            loss = self.awp_loss(logits_fn, x, x_train, y)
            if self.optimizer is not None:  # mixed precision: scaled (the norm removes it)
                loss = self.optimizer.scale_loss(loss)
        grads = tape.gradient(loss, watched)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            grads = context.all_reduce("SUM", grads)  # the whole batch's direction
        deltas = awp_direction(watched, grads, self.AWP_PROXY_LR, self.awp_gamma)
        on = tf.cast(self.awp_active, deltas[0].dtype) if deltas else None
        return [d * tf.cast(on, d.dtype) for d in deltas]

    def train_step(self, data):
        if self.awp_gamma == 0:
            return super().train_step(data)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x_train, aux = self.perturb(x, y)  # at the unperturbed weights
        x_train = tf.stop_gradient(x_train)
        weights = perturbed_weights(self.classifier)
        deltas = self.weight_perturbation(x, x_train, y)
        saved = [tf.identity(w.value) for w in weights]
        shifted = [w + d for w, d in zip(saved, deltas, strict=True)]
        _assign(weights, shifted)
        with tf.GradientTape() as tape:
            loss, y_pred = self.outer_loss(x, x_train, y, sample_weight)
            self._loss_tracker.update_state(unscale_loss(loss), sample_weight=tf.shape(x)[0])
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        # Back by v: the update made at w + v is kept (exactly w again if it moved nothing).
        _assign(weights, [s + (w.value - p) for s, w, p in zip(saved, weights, shifted,
                                                               strict=True)])
        self._correct_average(weights, deltas)
        self.update_aux_trackers(aux)
        return self._reducible(self.compute_metrics(x_train, y, y_pred,
                                                    sample_weight=sample_weight))

    def _correct_average(self, weights: list, deltas: list[tf.Tensor]) -> None:
        """The optimiser's weight average (`use_ema`) took in w + v - step: take (1 - d) v
        back out, so that it averages the weights without their perturbation."""
        optimizer = self.optimizer
        if not getattr(optimizer, "use_ema", False):
            return
        decay = optimizer.ema_decay_at(optimizer.iterations - 1)  # the step's (WarmupEMA)
        index = {id(v): i for i, v in enumerate(optimizer._trainable_variables)}
        averages = [optimizer._model_variables_moving_average[index[id(w)]] for w in weights]
        d = tf.cast(decay, tf.float32)
        _assign(averages, [a.value - tf.cast(1 - d, a.dtype) * v
                           for a, v in zip(averages, deltas, strict=True)])

    def floor_passes(self):
        passes = super().floor_passes()
        # the proxy's forward and weight gradient: one more training pass
        return None if passes is None else passes + [FloorPass("train", 1, 1)]

    def _awp_config(self) -> dict:
        return {"awp_gamma": self.awp_gamma, "awp_warmup": self.awp_warmup}


def _batch_ce(logits, y) -> tf.Tensor:
    return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
        y, tf.cast(logits, tf.float32), from_logits=True))


@keras.saving.register_keras_serializable(package="adt_tf")
class AWPAT(AdversarialWeightPerturbation, PGDAT):
    """AT-AWP: AT_PGD with adversarial weight perturbation (the authors' `train_cifar10.py`).

    Inner: AT_PGD's PGD (10 steps of 2/255 from a uniform start; `PGDAT`). Weight step: the
    proxy ascends CE(f(x_adv), y) (one SGD step of lr 0.01), gamma 0.01, from the first
    epoch. Outer: CE(f(x_adv), y) at the perturbed weights. See the module's docstring.

    Mathematical details:
        min_w E[ CE(f_{w + v}(x_adv), y) ], x_adv = PGD at w; v_l = gamma ||w_l|| d_l /
        ||d_l|| with d = one SGD ascent step (lr 0.01) of CE(f_w(x_adv), y), training mode.

    Args:
        classifier, epsilon, attack_steps, attack_step_size, seed: as `PGDAT`.
        awp_gamma: gamma >= 0, the perturbation's size relative to each weight's norm
            (0.01; 0 turns AWP off).
        awp_warmup: epochs trained without the weight step first (0).

    Example:
        >>> trainer = AWPAT(build_model("preact_resnet18", (32, 32, 3), 10))

    Reference:
        Wu, Xia, Wang, "Adversarial Weight Perturbation Helps Robust Generalization",
        NeurIPS 2020 (code: csdongxian/AWP).
    """

    AWP_PROXY_LR = 0.01

    def __init__(self, classifier, epsilon=8 / 255, attack_steps=10, attack_step_size=None,
                 awp_gamma=0.01, awp_warmup=0, seed=None, **kwargs):
        super().__init__(classifier, epsilon=epsilon, attack_steps=attack_steps,
                         attack_step_size=attack_step_size, seed=seed, **kwargs)
        self._init_awp(awp_gamma, awp_warmup)

    def awp_loss(self, logits_fn, x, x_train, y):
        return _batch_ce(logits_fn(x_train), y)

    def get_config(self):
        return {**super().get_config(), **self._awp_config()}


@keras.saving.register_keras_serializable(package="adt_tf")
class AWPTRADES(AdversarialWeightPerturbation, TRADES):
    """TRADES-AWP: TRADES with adversarial weight perturbation (the authors'
    `train_trades_cifar.py`).

    Inner: TRADES's KL ascent (`TRADES`). Weight step: the proxy ascends
    CE(f(x), y) + beta * KL(f(x) || f(x_adv)) (batch mean; one SGD step of lr 0.1),
    gamma 0.005, from epoch 10 (9 epochs without). Outer: TRADES's loss at the perturbed
    weights.

    Mathematical details:
        min_w E[ CE(f_{w+v}(x), y) + beta KL(f_{w+v}(x) || f_{w+v}(x_adv)) ], x_adv the KL
        ascent at w; v_l = gamma ||w_l|| d_l / ||d_l||, d = one SGD ascent step (lr 0.1)
        of the same loss at w, training mode.

    Args:
        classifier, epsilon, attack_steps, attack_step_size, trades_beta, init_std, seed:
            as `TRADES`.
        awp_gamma: gamma >= 0 (0.005; 0 turns AWP off).
        awp_warmup: epochs trained without the weight step first (9: the authors' check
            `epoch >= 10` with epochs counted from 1).

    Example:
        >>> trainer = AWPTRADES(build_model("wrn_34_10", (32, 32, 3), 10), epsilon=0.031)

    Reference:
        Wu, Xia, Wang, "Adversarial Weight Perturbation Helps Robust Generalization",
        NeurIPS 2020 (code: csdongxian/AWP).
    """

    AWP_PROXY_LR = 0.1

    def __init__(self, classifier, epsilon=8 / 255, attack_steps=10, attack_step_size=None,
                 trades_beta=6.0, init_std=0.001, awp_gamma=0.005, awp_warmup=9, seed=None,
                 **kwargs):
        super().__init__(classifier, epsilon=epsilon, attack_steps=attack_steps,
                         attack_step_size=attack_step_size, trades_beta=trades_beta,
                         init_std=init_std, seed=seed, **kwargs)
        self._init_awp(awp_gamma, awp_warmup)

    def awp_loss(self, logits_fn, x, x_train, y):
        # The authors call the proxy on x twice (the CE's and the KL target's); in training
        # mode both calls give the same logits, so one forward gives the same gradient.
        clean = logits_fn(x)
        return tf.reduce_mean(trades_loss(clean, logits_fn(x_train), y, self.trades_beta))

    def get_config(self):
        return {**super().get_config(), **self._awp_config()}


@keras.saving.register_keras_serializable(package="adt_tf")
class AWPADTExp(AdversarialWeightPerturbation, ADTExp):
    """ADT_EXP with AWP's weight step (an extension: neither paper trains it).

    Inner: ADT_EXP's distribution (`ADTExp`); the classifier's update uses one fresh
    sample per input as ADT_EXP's does. Weight step: the proxy ascends ADT_EXP's outer loss
    on that sample (CE(f(x + delta), y), or the TRADES form with `outer_loss='trades'`),
    as AT-AWP's does on its PGD example: one SGD step of lr 0.01, gamma 0.01, from the first
    epoch.

    Mathematical details:
        min_w E[ L(f_{w+v}(x + delta), y) ], delta a fresh sample of ADT_EXP's fitted
        distribution at w; v_l = gamma ||w_l|| d_l / ||d_l||, d = one SGD ascent step
        (lr 0.01) of L(f_w(x + delta), y), training mode.

    Args:
        classifier, epsilon and ADT_EXP's arguments: as `ADTExp`.
        awp_gamma: gamma >= 0 (0.01; 0 turns AWP off).
        awp_warmup: epochs trained without the weight step first (0).

    Example:
        >>> trainer = AWPADTExp(build_model("small_cnn", (32, 32, 3), 10), awp_gamma=0.01)

    Reference:
        Dong et al., NeurIPS 2020 (ADT_EXP); Wu, Xia, Wang, NeurIPS 2020 (AWP).
    """

    AWP_PROXY_LR = 0.01

    def __init__(self, classifier, epsilon=8 / 255, entropy_weight=0.01, inner_steps=7,
                 mc_samples=5, inner_lr=0.3, inner_beta1=0.0, inner_beta2=0.0,
                 outer_loss="ce", trades_beta=6.0, inner_branches=1,
                 inner_gradients="accumulate", family="diag", rank=8, rows=0,
                 factor_lr=None, factor_init=0.0, awp_gamma=0.01, awp_warmup=0,
                 seed=None, **kwargs):
        super().__init__(classifier, epsilon=epsilon, entropy_weight=entropy_weight,
                         inner_steps=inner_steps, mc_samples=mc_samples, inner_lr=inner_lr,
                         inner_beta1=inner_beta1, inner_beta2=inner_beta2,
                         outer_loss=outer_loss, trades_beta=trades_beta,
                         inner_branches=inner_branches, inner_gradients=inner_gradients,
                         family=family, rank=rank, rows=rows, factor_lr=factor_lr,
                         factor_init=factor_init, seed=seed, **kwargs)
        self._init_awp(awp_gamma, awp_warmup)

    def awp_loss(self, logits_fn, x, x_train, y):
        if self.outer_loss_name == "trades":
            return tf.reduce_mean(trades_loss(logits_fn(x), logits_fn(x_train), y,
                                              self.trades_beta))
        return _batch_ce(logits_fn(x_train), y)

    def get_config(self):
        return {**super().get_config(), **self._awp_config()}


__all__ = ["AWPADTExp", "AWPAT", "AWPEpochs", "AWPTRADES", "AWP_EPS",
           "AdversarialWeightPerturbation", "awp_direction", "check_awp_gamma",
           "perturbed_weights"]


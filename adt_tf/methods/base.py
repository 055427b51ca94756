"""The base class of every training method: a keras.Model that wraps a classifier."""

from __future__ import annotations

import random
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from adt_tf.core.noise import DEFAULT_NOISE, NoiseSource
from adt_tf.threat import Ball, LinfBall, make_threat, require_norm


class FloorPass(NamedTuple):
    """Passes over the classifier that a training step cannot avoid (`floor_passes`).

    Attributes:
        kind: "input_gradient" (a forward in inference mode and the backward to the input,
            no weight gradient: one attack or inner-maximisation step) or "train" (a forward
            in training mode, the backward to the weights and the update: a plain training
            step).
        batch_multiple: the pass's batch, in batches (k for ADT_EXP's k samples per input;
            2 for an outer loss that differentiates f(x) and f(x_adv)).
        count: how many such passes one step makes.
    """

    kind: str
    batch_multiple: int
    count: int


def replicas_in_sync() -> int:
    """Number of replicas the current distribution strategy trains on (1 without one)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def unscale_loss(loss: tf.Tensor) -> tf.Tensor:
    """Undoes Keras's per-replica loss scaling, so trackers show the global mean loss."""
    n = replicas_in_sync()
    return loss * tf.cast(n, loss.dtype) if n > 1 else loss


@keras.saving.register_keras_serializable(package="adt_tf")
class AdversarialTrainer(keras.Model):
    """A training method: wraps a classifier and trains it on perturbed inputs.

    Subclasses override `perturb(x, y)` (the inner maximisation, run with the classifier in
    inference mode) and, where the outer objective is not cross-entropy on the perturbed
    inputs, `outer_loss`. The template `train_step` follows Keras's own TensorFlow trainer:
    unpack (x, y, sample_weight), compute the loss under a tape, scale it through the
    optimizer (mixed precision), apply the gradients, update the trackers and return
    `compute_metrics(...)`. `test_step` evaluates the classifier on clean inputs.

    What is exported and evaluated is `trainer.classifier`, never the wrapper.

    Args:
        classifier: a Keras model mapping images in [0, 1] to logits.
        epsilon: the budget in the [0, 1] pixel scale: the radius of the ball of `norm`, or
            the ball itself (`adt_tf.threat.LinfBall`, `L2Ball`; what the commands hand
            down once they have resolved it). `self.threat` is the ball.
        norm: "linf" (the paper's threat model, the default) or "l2" (for the methods whose
            `NORMS` hold it; the others refuse it); with a ball, None or the ball's norm.
        seed: integer seed of the method's own randomness (noise, random starts); a fixed
            seed gives a fixed result. None draws one.
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Metrics: `loss` and the compiled metrics (e.g. `accuracy`) are computed on the inputs the
    classifier is trained on (the adversarial ones for adversarial methods) during `fit`, and
    on clean inputs during `evaluate`; each subclass adds trackers named in `aux_metrics`.
    """

    aux_metrics: tuple[str, ...] = ()
    #: The threat models the method is defined for.
    NORMS: tuple[str, ...] = (LinfBall.norm,)
    _SEED_KEY = "seed_generator_state"

    def __init__(self, classifier: keras.Model, epsilon: float | Ball = 8 / 255,
                 seed: int | None = None, norm: str | None = None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(classifier, keras.Model):
            raise TypeError(
                f"classifier must be a keras.Model, got {type(classifier).__name__}."
            )
        self._classifier = classifier
        if isinstance(epsilon, Ball):  # a command's resolved threat model, handed down
            if norm not in (None, epsilon.norm):
                raise ValueError(f"norm={norm!r} contradicts the threat model {epsilon!r}.")
            threat = epsilon
        else:
            threat = make_threat(LinfBall.norm if norm is None else norm, epsilon)
        #: The threat model (`adt_tf.threat`); `epsilon` and `norm` are its radius and norm.
        self.threat = require_norm(threat, self.NORMS, type(self).__name__)
        self.seed = seed if seed is None else int(seed)
        self.seed_generator = keras.random.SeedGenerator(
            self.seed if self.seed is not None else random.randint(1, 2**30)
        )
        self._aux_tracker_list = [keras.metrics.Mean(name=name) for name in self.aux_metrics]
        #: Where the adversarial distributions' draws come from (`adt_tf.core.noise`): stateless
        #: draws from `next_seed()` by default; tests set a `RecordedNoise` to replay the
        #: reference code's draws. Set it before the first step (a traced step keeps it).
        self.noise_source: NoiseSource = DEFAULT_NOISE

    @property
    def epsilon(self) -> float:
        """The threat model's radius."""
        return self.threat.epsilon

    @property
    def norm(self) -> str:
        """The threat model's norm ("linf", "l2"), as `get_config` records it."""
        return self.threat.norm

    @property
    def classifier(self) -> keras.Model:
        """The wrapped classifier (what is exported and evaluated)."""
        return self._classifier

    def call(self, inputs, training=False):
        return self._classifier(inputs, training=training)

    def build(self, input_shape):
        if not self._classifier.built:
            self._classifier.build(input_shape)
        super().build(input_shape)

    # ------------------------------------------------------------------ randomness
    def next_seed(self) -> tf.Tensor:
        """A fresh stateless seed (int32 [2]); different on each replica of a strategy."""
        seed = tf.cast(self.seed_generator.next(), tf.int32)
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            replica = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
            seed = tf.random.experimental.stateless_fold_in(seed, replica)
        return seed

    @classmethod
    def argument_defaults(cls, threat: Ball, arguments: dict) -> dict:
        """Defaults of the constructor arguments left None that depend on the threat model
        or on other arguments (`norm_defaults`, and the method's own); what `resolve`
        records for them."""
        return cls.norm_defaults(threat)

    @classmethod
    def inert_arguments(cls, arguments: dict) -> tuple[str, ...]:
        """The constructor arguments that cannot change a run given the others in
        `arguments` (e.g. a distribution family's factor settings when it has no factors):
        the "same run?" comparison (`adt_tf.training.record.differences`) leaves them out,
        so that a changed default of a setting the run never read does not make it another
        run. None by default."""
        return ()

    @classmethod
    def norm_defaults(cls, threat: Ball) -> dict:
        """Defaults of constructor arguments that depend on the threat model (e.g. a step
        size of 2/255 for L-infinity, epsilon / 4 for L2); what a None argument becomes."""
        return {}

    def check_input_shape(self, shape: tuple[int, ...]) -> None:
        """Raises ValueError (naming the setting) if the method's settings do not fit inputs
        of `shape` (H, W, C); every shape fits by default."""

    def training_callbacks(self) -> list[keras.callbacks.Callback]:
        """Callbacks the method needs during `fit` (e.g. AWP's warm-up epochs); whoever
        trains it adds them (`adt_tf.training.run`, the tuner). None by default."""
        return []

    # ------------------------------------------------------------------ cost
    def floor_passes(self) -> list[FloorPass] | None:
        """The classifier passes one training step cannot avoid (None: not declared).

        bench/speed.py times them on their own and divides the step's time by theirs:
        near 1, the method's own bookkeeping (sampling, entropy, its optimiser, projection)
        costs nothing. Forward-only passes (e.g. clean logits) are not counted.
        """
        return None

    def forward_backward_passes(self) -> int | None:
        """Forward+backward passes over a batch that one training step must make, from
        `floor_passes`: every pass counts its batch multiple (an input-gradient pass counts
        as much as a plain training step, an upper bound of its cost). None when the method
        does not declare its passes.
        """
        passes = self.floor_passes()
        return None if passes is None else sum(p.batch_multiple * p.count for p in passes)

    # ------------------------------------------------------------------ hooks
    def perturb(self, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """The inner maximisation: the inputs the classifier is trained on.

        Returns:
            (x_train, aux): x_train has the shape of x (gradients are stopped), aux maps the
            names in `aux_metrics` to scalar values to track.
        """
        return x, {}

    def outer_loss(self, x, x_train, y, sample_weight):
        """The loss the classifier descends. Default: the compiled loss on f(x_train).

        Returns:
            (loss, y_pred): the scalar loss (already scaled for distribution by Keras) and
            the logits on which the compiled metrics are computed.
        """
        y_pred = self(x_train, training=True)
        loss = self.compute_loss(x=x_train, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                 training=True)
        return loss, y_pred

    # ------------------------------------------------------------------ steps
    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x_train, aux = self.perturb(x, y)
        x_train = tf.stop_gradient(x_train)
        with tf.GradientTape() as tape:
            loss, y_pred = self.outer_loss(x, x_train, y, sample_weight)
            self._loss_tracker.update_state(unscale_loss(loss), sample_weight=tf.shape(x)[0])
            scaled = self.optimizer.scale_loss(loss) if self.optimizer is not None else loss
        variables = self.trainable_variables
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        self.update_aux_trackers(aux)
        return self._reducible(self.compute_metrics(x_train, y, y_pred,
                                                    sample_weight=sample_weight))

    def update_aux_trackers(self, aux: dict) -> None:
        """Adds this step's `aux` values (one per name of `aux_metrics`) to their trackers.

        Each update runs only once its value exists: when a dataset of unknown length runs
        out, the step that fails to read a batch must not count (a Mean's count increment
        depends on nothing else, and TensorFlow would run it, logging n / (n + 1) of the
        epoch's mean)."""
        for tracker in self._aux_tracker_list:
            value = aux[tracker.name]
            with tf.control_dependencies([value]):
                tracker.update_state(value)

    def test_step(self, data):
        """Clean-input evaluation: loss and compiled metrics (the aux trackers are omitted)."""
        logs = super().test_step(data)
        return self._reducible({k: v for k, v in logs.items() if k not in self.aux_metrics})

    # ------------------------------------------------------------------ distribution
    def _reducible(self, logs):
        # Under MultiWorkerMirroredStrategy Keras 3 averages every log value over the
        # replicas with strategy.reduce("MEAN", v, axis=0), which fails on the scalars a step
        # returns (keras-team/keras#20585): give them a length-1 axis (the mean of one
        # synchronised value is that value, a scalar again).
        if not isinstance(self.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return logs
        return {k: tf.reshape(v, [1]) if v.shape.rank == 0 else v for k, v in logs.items()}

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3 (through 3.15) builds the metrics from a first batch that it averages over
        # the replicas with strategy.reduce("MEAN", (x, y)); MultiWorkerMirroredStrategy
        # rejects a tuple there (keras-team/keras#20585). The build needs shapes and dtypes
        # only, so under that strategy this worker's own part of the batch is used instead.
        strategy = self.distribute_strategy
        if iterator is not None and isinstance(strategy,
                                               tf.distribute.MultiWorkerMirroredStrategy):
            for _, _, it in iterator:
                data_batch = keras.tree.map_structure(
                    lambda v: (strategy.experimental_local_results(v)[0]
                               if isinstance(v, tf.distribute.DistributedValues) else v),
                    next(it))
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    # ------------------------------------------------------------------ state
    # Keras does not save a SeedGenerator's state with the weights; keeping every one of them
    # in the checkpoint (the method's noise seed and the classifier's own, e.g. dropout's)
    # makes a resumed run draw what an uninterrupted one draws.
    def _seed_states(self) -> list:
        """The state variables of every SeedGenerator of the trainer and its classifier,
        in the (fixed) order of `self.variables`."""
        return [v for v in self.variables if v.name == "seed_generator_state"]

    def save_own_variables(self, store):
        super().save_own_variables(store)
        store[self._SEED_KEY] = np.stack([v.numpy() for v in self._seed_states()])

    def load_own_variables(self, store):
        own = {key: store[key] for key in store.keys() if key != self._SEED_KEY}
        super().load_own_variables(own)
        if self._SEED_KEY not in store.keys():
            return
        saved = np.asarray(store[self._SEED_KEY])
        if saved.ndim == 1:  # a checkpoint that stores the method's seed alone
            self.seed_generator.state.assign(saved)
            return
        states = self._seed_states()
        if len(states) != len(saved):
            raise ValueError(f"the checkpoint holds {len(saved)} random-seed states, this "
                             f"model has {len(states)}: it is not this model's checkpoint.")
        for variable, value in zip(states, saved, strict=True):
            variable.assign(value)

    # ------------------------------------------------------------------ config
    def get_config(self):
        config = super().get_config()
        config.update({
            "classifier": keras.saving.serialize_keras_object(self._classifier),
            "epsilon": self.epsilon,
            "seed": self.seed,
            "norm": self.norm,
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["classifier"] = keras.saving.deserialize_keras_object(config["classifier"])
        return cls(**config)

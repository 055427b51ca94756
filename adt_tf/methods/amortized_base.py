"""The joint step shared by the amortised ADT methods (ADT_EXP-AM and ADT_IMP-AM).

A generator network replaces ADT's per-example inner loop: one forward pass gives every
example's perturbation, and one backward pass updates the classifier (descending the loss)
and the generator (ascending it, plus an entropy term) at the same time.
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import tensorflow as tf

from adt_tf.adt.generators import classifier_image_shape
from adt_tf.core import checks
from adt_tf.methods.base import (
    AdversarialTrainer,
    FloorPass,
    replicas_in_sync,
    unscale_loss,
)
from adt_tf.numerics.losses import (
    check_outer_loss,
    loss_and_grad,
    per_example_ce,
    trades_outer_loss,
)
from adt_tf.numerics.optimizers import TorchAdam


class AdversarySample(NamedTuple):
    """What an amortised adversary produces for a batch.

    Attributes:
        x_adv: clip(x + delta, 0, 1), differentiable w.r.t. the adversary's weights.
        regularizer: the scalar the adversary adds to the classifier's loss in its objective
            (lambda * H for EXP-AM, -lambda * relu(-E[log q] - tau) for IMP-AM).
        entropy: the scalar entropy estimate tracked as the `entropy` metric.
    """

    x_adv: tf.Tensor
    regularizer: tf.Tensor
    entropy: tf.Tensor


class JointStepResult(NamedTuple):
    """What `joint_step` returns (all computed before the update, with the old weights).

    Attributes:
        x_adv: the adversarial batch (gradients stopped).
        loss: the classifier's loss on x_adv (the compiled loss, per-replica scaling undone).
        y_pred: the classifier's logits on x_adv.
        objective: the generator's objective, loss + regularizer.
        entropy: the entropy estimate of the batch.
    """

    x_adv: tf.Tensor
    loss: tf.Tensor
    y_pred: tf.Tensor
    objective: tf.Tensor
    entropy: tf.Tensor


class AmortizedAdversarialTrainer(AdversarialTrainer):
    """Base class of the amortised ADT methods: a generator trained jointly with the classifier.

    Subclasses build the adversary (`build_adversary`), say how it samples x_adv
    (`sample_adversary`) and list its networks and optimizers (`adversary_parts`); this class
    computes the generator's inputs and runs the joint step.

    Args:
        classifier: a functional Keras model returning logits, input (H, W, C).
        epsilon: the budget, the radius of the ball of `norm` ("linf" or "l2"; a subclass
            lists the norms it takes in `NORMS`).
        entropy_weight: lambda >= 0.
        generator_width: base channels w of the full-resolution generator (>= 1; 256 as the
            reference, about 10M parameters; CPU runs need fewer, state the width used).
        generator_blocks: residual blocks of the generator (>= 0).
        generator_lr: the generator Adam's initial learning rate (2e-4; betas (0.5, 0.999) and
            epsilon 1e-8, PyTorch's, as the reference).
        generator_decay_steps: if > 0, the learning rate decays linearly to 0 over that many
            steps (set it to epochs * steps_per_epoch); 0 keeps it constant.
        outer_loss: 'ce' or 'trades' (ADT with the TRADES loss, paper Sec. 5.4): L becomes
            CE(f(x), y) + trades_beta * KL(f(x) || f(x_adv)), which the classifier descends and
            whose x_adv-gradient (the beta * KL part) the generator ascends with its entropy.
        trades_beta: beta >= 0 of the TRADES loss (6.0).
        seed: integer seed of the method's randomness.

    Mathematical details:
        Generator inputs (classifier in inference mode, not differentiated through):
            g1 = grad_x CE(f(x), y),  x_fgsm = clip(x + epsilon sign(g1), 0, 1) (under L2
            the L2 FGSM step epsilon g1 / ||g1||),
            g2 = grad_x CE(f(x_fgsm), y),  features = [x, g1, g2]  (3C channels),
        with CE the *batch-mean* cross-entropy, as in the reference code: each example's
        gradient is 1/B of its own loss's gradient (B the global batch size, so a replica
        of a MirroredStrategy feeds its generator what one device would).

        Joint step: with x_adv = clip(x + delta_phi, 0, 1) and L the compiled loss,
            theta <- opt_theta(grad_theta L(f_theta(x_adv), y)),
            phi   <- opt_phi(-grad_phi [L(f_theta(x_adv), y) + R(phi)]),
        a gradient reversal at x_adv. It is computed with one backward pass through the
        classifier: the tape of the classifier gives grad_theta L and G = dL/dx_adv at once;
        the generator then descends the surrogate -(sum(stop_gradient(G) * x_adv) + R), whose
        phi-gradient is exactly -J^T G - grad_phi R (J = dx_adv/dphi). Each optimizer scales
        its own loss (mixed precision): G is computed from the classifier's scaled loss and
        divided by that scale before it enters the generator's surrogate.

    Metrics: `loss` and the compiled metrics on x_adv; `entropy` (the subclass's entropy
    estimate) and `generator_objective` (L + R, what the generator ascends).
    """

    aux_metrics = ("entropy", "generator_objective")
    #: Adam's beta_1 for the generator (the reference's image-to-image GAN setting).
    generator_beta1 = 0.5
    #: Adam's epsilon for the adversary's networks: PyTorch's default, as the reference.
    adam_epsilon = 1e-8

    def __init__(self, classifier, epsilon=8 / 255, entropy_weight=0.01, generator_width=256,
                 generator_blocks=3, generator_lr=2e-4, generator_decay_steps=0,
                 outer_loss="ce", trades_beta=6.0, seed=None, **kwargs):
        super().__init__(classifier, epsilon=epsilon, seed=seed, **kwargs)
        # Stored under another name: `outer_loss` is the trainer's hook method.
        self.outer_loss_name = check_outer_loss(outer_loss)
        self.trades_beta = checks.check_non_negative(trades_beta, "trades_beta")
        self.entropy_weight = checks.check_non_negative(entropy_weight, "entropy_weight")
        self.generator_width = checks.check_positive_int(generator_width, "generator_width")
        self.generator_blocks = checks.check_positive_int(
            generator_blocks, "generator_blocks", minimum=0)
        self.generator_lr = checks.check_positive(generator_lr, "generator_lr")
        self.generator_decay_steps = checks.check_positive_int(
            generator_decay_steps, "generator_decay_steps", minimum=0)
        self.image_shape = classifier_image_shape(classifier)
        self.build_adversary()
        self.generator_optimizer = None

    # ------------------------------------------------------------------ subclass hooks
    def build_adversary(self) -> None:
        """Creates `self.generator` (and any other network of the adversary)."""
        raise NotImplementedError

    def sample_adversary(self, x, features, seed, training: bool) -> AdversarySample:
        """Draws x_adv for the batch x from the generator given its input features."""
        raise NotImplementedError

    def adversary_parts(self) -> list[tuple[keras.optimizers.Optimizer, list]]:
        """(optimizer, trainable variables) of each network that ascends the objective."""
        return [(self.generator_optimizer, self.generator.trainable_variables)]

    def adversary_networks(self) -> dict[str, keras.Model]:
        """The adversary's networks by name ("generator", and "encoder" for IMP-AM); each can
        be saved on its own with `network.save(path)`."""
        return {"generator": self.generator}

    # ------------------------------------------------------------------ optimizers
    def generator_learning_rate(self):
        """The generator's learning rate: a float, or a linear decay to 0 (a schedule)."""
        if self.generator_decay_steps == 0:
            return self.generator_lr
        return keras.optimizers.schedules.PolynomialDecay(
            self.generator_lr, self.generator_decay_steps, end_learning_rate=0.0, power=1.0)

    def compile(self, *args, generator_optimizer=None, **kwargs):
        """Keras's compile, plus the generator's optimizer.

        Args:
            *args, **kwargs: passed to `keras.Model.compile` (the classifier's optimizer,
                loss, metrics, jit_compile, ...).
            generator_optimizer: overrides the default `TorchAdam(generator_lr, beta_1=0.5)`
                (PyTorch's Adam, as the reference; with linear decay when
                generator_decay_steps > 0). Tests use SGD to read gradients off the updates.
        """
        super().compile(*args, **kwargs)
        if not self.built:  # the input shape is known: build now, so load_weights can follow
            self.build((None,) + self.image_shape)
        if generator_optimizer is None:
            generator_optimizer = TorchAdam(
                self.generator_learning_rate(), beta_1=self.generator_beta1,
                epsilon=self.adam_epsilon, name="generator_optimizer")
        self.generator_optimizer = self._prepare_optimizer(generator_optimizer, self.generator)

    #: The attributes holding the adversary's optimizers (each a keyword of `compile`).
    adversary_optimizer_names: tuple[str, ...] = ("generator_optimizer",)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None:
            for name in self.adversary_optimizer_names:
                config[name] = keras.saving.serialize_keras_object(getattr(self, name))
        return config

    def compile_from_config(self, config):
        """Compiles from `get_compile_config()` (so that `keras.saving.load_model` restores
        the adversary's optimizers too)."""
        self.compile(**keras.saving.deserialize_keras_object(config))

    def _prepare_optimizer(self, optimizer, network: keras.Model):
        """Loss-scales `optimizer` like the classifier's and creates its variables now.

        Building the optimizers in compile (the classifier's on the classifier's variables
        only: Keras would otherwise build it on every trainable variable of the trainer,
        generator included) makes `load_weights` restore their state into a fresh trainer.
        """
        optimizer = keras.optimizers.get(optimizer)
        if (isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)
                and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)):
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer, name=optimizer.name)
        if self.optimizer is not None and not self.optimizer.built:
            self.optimizer.build(self.classifier.trainable_variables)
        optimizer.build(network.trainable_variables)
        return optimizer

    # ------------------------------------------------------------------ the adversary
    def generator_inputs(self, x, y) -> tf.Tensor:
        """[x, grad_x CE(f(x)), grad_x CE(f(x_fgsm))] (3C channels), gradients stopped; CE is
        the batch-mean cross-entropy over the global batch (see the class docstring)."""
        x = tf.convert_to_tensor(x)
        # per_example_ce's input gradient is each example's own; the batch mean's is 1/B of it.
        global_batch = tf.cast(tf.shape(x)[0] * replicas_in_sync(), tf.float32)
        _, grad, _ = loss_and_grad(self.classifier, x, y, per_example_ce)
        x_fgsm = self.threat.project(self.threat.step(x, grad, self.epsilon), x)
        _, grad_fgsm, _ = loss_and_grad(self.classifier, x_fgsm, y, per_example_ce)
        grads = [tf.cast(tf.cast(g, tf.float32) / global_batch, x.dtype)
                 for g in (grad, grad_fgsm)]
        features = tf.concat([x] + grads, axis=-1)
        return tf.stop_gradient(features)

    def perturb(self, x, y, seed=None):
        """x_adv from the generator in inference mode (the amortised attack)."""
        seed = self.next_seed() if seed is None else seed
        sample = self.sample_adversary(x, self.generator_inputs(x, y), seed, training=False)
        return tf.stop_gradient(sample.x_adv), {"entropy": sample.entropy}

    def outer_loss(self, x, x_train, y, sample_weight):
        if self.outer_loss_name == "trades":
            return trades_outer_loss(self, x, x_train, y, sample_weight, self.trades_beta)
        return super().outer_loss(x, x_train, y, sample_weight)

    # ------------------------------------------------------------------ the joint step
    def _classifier_pass(self, x, x_adv, y, sample_weight, update_classifier):
        """Loss, logits, classifier gradients and dL/dx_adv in one backward pass."""
        variables = self.classifier.trainable_variables if update_classifier else []
        # Only the classifier's variables are read under this tape (trainable ones are watched
        # when they are to be updated); x_adv is watched for the generator's gradient.
        with tf.GradientTape(watch_accessed_variables=update_classifier) as tape:
            tape.watch(x_adv)
            if update_classifier:
                loss, y_pred = self.outer_loss(x, x_adv, y, sample_weight)
            else:
                y_pred = self.classifier(x_adv, training=False)
                loss = self.compute_loss(x=x_adv, y=y, y_pred=y_pred,
                                         sample_weight=sample_weight, training=False)
            scale = self.optimizer.scale_loss(tf.ones((), loss.dtype))
            scaled = loss * scale
        grads = tape.gradient(scaled, variables + [x_adv])
        x_grad = grads[-1] / tf.cast(scale, grads[-1].dtype)
        return loss, y_pred, grads[:-1], x_grad

    def joint_step(self, x, y, sample_weight=None, *, seed, update_classifier: bool = True
                   ) -> JointStepResult:
        """One joint update of the classifier and the adversary (see the class docstring).

        Args:
            x, y, sample_weight: a batch.
            seed: stateless seed [2] of the adversary's noise.
            update_classifier: False keeps the classifier fixed (called in inference mode) and
                trains the adversary alone, e.g. a generator attack against a trained model.
        """
        x = tf.convert_to_tensor(x)
        features = self.generator_inputs(x, y)
        parts = self.adversary_parts()
        # This tape sees the adversary's networks only: the classifier runs while it is paused.
        with tf.GradientTape(persistent=len(parts) > 1) as tape:
            sample = self.sample_adversary(x, features, seed, training=True)
            with tape.stop_recording():
                loss, y_pred, classifier_grads, x_grad = self._classifier_pass(
                    x, sample.x_adv, y, sample_weight, update_classifier)
            # Gradient reversal at x_adv: the generator receives -dL/dx_adv. The loss from
            # compute_loss is already divided by the number of replicas; divide R likewise so
            # that the sum of the replicas' gradients is the gradient of the global mean.
            regularizer = sample.regularizer / tf.cast(replicas_in_sync(), tf.float32)
            surrogate = (tf.reduce_sum(tf.stop_gradient(x_grad) * sample.x_adv)
                         + tf.cast(regularizer, sample.x_adv.dtype))
            scaled = [optimizer.scale_loss(-surrogate) for optimizer, _ in parts]
        for (optimizer, variables), objective in zip(parts, scaled):
            grads = tape.gradient(objective, variables)
            optimizer.apply_gradients(zip(grads, variables))
        if update_classifier:
            variables = self.classifier.trainable_variables
            self.optimizer.apply_gradients(zip(classifier_grads, variables))
        loss = unscale_loss(loss)
        return JointStepResult(
            x_adv=tf.stop_gradient(sample.x_adv), loss=loss, y_pred=y_pred,
            objective=tf.cast(loss, tf.float32) + tf.cast(sample.regularizer, tf.float32),
            entropy=sample.entropy)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        result = self.joint_step(x, y, sample_weight, seed=self.next_seed())
        self._loss_tracker.update_state(result.loss, sample_weight=tf.shape(x)[0])
        values = {"entropy": result.entropy, "generator_objective": result.objective}
        self.update_aux_trackers(values)
        return self._reducible(self.compute_metrics(result.x_adv, y, result.y_pred,
                                                    sample_weight=sample_weight))

    def floor_passes(self):
        # Two input gradients for the generator's inputs (at x and at x_fgsm), then the joint
        # step's classifier pass (over 3B with the TRADES loss); the generator's own passes
        # are not classifier passes and are not counted.
        return [FloorPass("input_gradient", 1, 2),
                FloorPass("train", 3 if self.outer_loss_name == "trades" else 1, 1)]

    # ------------------------------------------------------------------ config
    def get_config(self):
        config = super().get_config()
        config.update({
            "entropy_weight": self.entropy_weight,
            "generator_width": self.generator_width,
            "generator_blocks": self.generator_blocks,
            "generator_lr": self.generator_lr,
            "generator_decay_steps": self.generator_decay_steps,
            "outer_loss": self.outer_loss_name,
            "trades_beta": self.trades_beta,
        })
        return config

"""Adversarial Distributional Training itself: the paper's explicit adversarial distribution
(`distributions`: TFP's tanh-Gaussian under the ball's bijector, its exact -log p; `families`:
the diagonal base and the richer ones beyond the paper), the inner maximisation that fits it
per example (`inner_maximization`), and the generators of the amortised variants
(`generators`). Imports `adt_tf.core`, `adt_tf.numerics` and `adt_tf.threat`; attacks and
training methods build on it."""

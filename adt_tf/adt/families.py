"""The Gaussian base of ADT's explicit distribution: diagonal (the paper's), low-rank, or
matrix-normal (beyond the paper: Sec. 3.1 leaves "more expressive distributions, such as
matrix-variate Gaussians" to future work).

Each family is a TFP distribution over the flattened perturbation u in R^D (D = H W C) of
each example, with a reparameterised sample drawn from the same standard-normal noise n as
the diagonal one (`adt_tf.core.noise`), so that at its initial factors every family *is* the
diagonal distribution on the same draws. The ball's bijector (Tanh o Scale, or the L2
ball's RadialTanh) acts after the base, so -log p(delta) = -log q(u) + log|det J_ball(u)|
stays exact for every base, computed from u.

- `diag`: u ~ N(mu, diag(sigma^2)) (`tfd.MultivariateNormalDiag`); u = mu + sigma n.
- `lowrank`: u ~ N(mu, diag(sigma^2) + U U^T), U [D, R] per example
  (`tfd.MultivariateNormalDiagPlusLowRankCovariance`); u = mu + sigma n + U z with
  z ~ N(0, I_R) a second draw. At U = 0 it is `diag`.
- `matrix_normal`: the image reshaped to an r x c matrix, r = H rows and c = W C columns (a
  row of the image is one row of the matrix: the row factor couples the image's rows, the
  column factor the positions and colour channels within a row); u = mu + sigma (.)
  vec(A N B^T), N = n reshaped, A [r, r] and B [c, c] lower-triangular with positive
  diagonals (`tfd.MatrixNormalLinearOperator(0, A, B)` pushed through Scale(sigma) and
  Shift(mu)). At A = I, B = I it is `diag`. Why H x WC: the factors of (HW) x C would need an
  [HW, HW] row factor (a million entries per example for CIFAR); H x WC needs 32 x 32 and
  96 x 96, and couples both image directions (rows through A, columns and channels through B).

Mathematical details:
    -log q(u) per family, from the pre-tanh u (r = (u - mu) / sigma):
    diag: sum_j r_j^2 / 2 + log sigma_j + log(2 pi) / 2.
    lowrank: (u - mu)^T S^{-1} (u - mu) / 2 + log det S / 2 + D log(2 pi) / 2 with
    S = diag(sigma^2) + U U^T: Woodbury, S^{-1} = D^{-1} - D^{-1} U C^{-1} U^T D^{-1} with
    the R x R capacitance C = I + U^T D^{-1} U, and the matrix-determinant lemma,
    log det S = sum_j log sigma_j^2 + log det C (C = L L^T, Cholesky: an R x R problem).
    matrix_normal: with Z = reshape(r) [r x c], -log q = ||A^{-1} Z B^{-T}||_F^2 / 2
    + c log det A + r log det B + sum_j log sigma_j + D log(2 pi) / 2 (the Kronecker
    log-determinant: log det (B B^T (x) A A^T) / 2 = c log det A + r log det B; triangular
    solves, no D x D matrix).

Example:
    >>> family = GaussianFamily("lowrank", rank=4)
    >>> [f.shape for f in family.init_factors(tf.zeros([2, 8, 8, 3]), seed=tf.constant([0, 1]))]
    [TensorShape([2, 192, 4])]
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from adt_tf.core import checks
from adt_tf.core.noise import DEFAULT_NOISE, NoiseSource

tfd = tfp.distributions
tfb = tfp.bijectors

FAMILIES = ("diag", "lowrank", "matrix_normal", "coupling")
#: The coupling flow's layers (two: each half of the image is transformed once).
COUPLING_LAYERS = 2
#: The inner Adam's default step for each family's extra factors, chosen by the sweeps of
#: bench/results/family_sweep_cpu.md and family_sweep_coupling_cpu.md (docs/methods.md).
FACTOR_LRS = {"diag": 0.003, "lowrank": 0.003, "matrix_normal": 0.003, "coupling": 0.01}
FACTOR_LR = FACTOR_LRS["lowrank"]


def default_factor_lr(family: str) -> float:
    """A family's default factor step (`FACTOR_LRS`)."""
    return FACTOR_LRS.get(family, FACTOR_LR)


#: The settings each family does not read: the diagonal one has no factors; the low-rank and
#: coupling ones do not reshape (rows); the matrix-normal one has no rank.
UNUSED_SETTINGS = {"diag": ("rank", "rows", "factor_lr", "factor_init"), "lowrank": ("rows",),
                   "matrix_normal": ("rank",), "coupling": ("rows",)}


def unused_settings(family: str) -> tuple[str, ...]:
    """The `GaussianFamily` settings that cannot change a run with this family
    (`UNUSED_SETTINGS`)."""
    return UNUSED_SETTINGS.get(family, ())


@dataclasses.dataclass(frozen=True)
class GaussianFamily:
    """Which Gaussian base, with its settings (see the module's docstring).

    Attributes:
        name: "diag", "lowrank" or "matrix_normal".
        rank: R, the low-rank factor's columns (`lowrank`), 1 <= R <= D; the coupling
            flow's hidden units per layer (`coupling`).
        rows: r, the matrix-normal reshaping's rows (`matrix_normal`; 0: the image height
            H, so c = W C); r must divide D.
        factor_lr: the inner Adam's step size for the extra factors (U; A and B's entries
            and log-diagonals; the flow's weights). In units of the factor's entries: with
            beta = 0 each step moves an entry by about factor_lr. None: the family's own
            default (`FACTOR_LRS`).
        factor_init: the standard deviation of the factors' initial off-diagonal entries
            (0: U = 0, A = B = I, the diagonal distribution).
    """

    name: str = "diag"
    rank: int = 8
    rows: int = 0
    factor_lr: float | None = None
    factor_init: float = 0.0

    def __post_init__(self):
        checks.check_choice(self.name, "family", FAMILIES)
        if self.factor_lr is None:  # the family's own default (the sweep's choice)
            object.__setattr__(self, "factor_lr", default_factor_lr(self.name))
        checks.check_positive_int(self.rank, "rank")
        checks.check_positive_int(self.rows, "rows", minimum=0)
        checks.check_positive(self.factor_lr, "factor_lr")
        checks.check_non_negative(self.factor_init, "factor_init")

    # ---------------------------------------------------------------- shapes
    def matrix_shape(self, event_shape) -> tuple[int, int]:
        """(r, c) of the matrix-normal reshaping of an event of `event_shape` (H, W, C)."""
        dims = [int(d) for d in event_shape]
        total = 1
        for d in dims:
            total *= d
        rows = self.rows or dims[0]
        if total % rows:
            raise ValueError(f"rows={self.rows}: the matrix-normal reshaping needs a number "
                             f"of rows dividing the image's {total} values "
                             f"({' x '.join(map(str, dims))}).")
        return rows, total // rows

    def _halves(self, event_shape) -> tuple[int, int]:
        total = 1
        for d in event_shape:
            total *= int(d)
        return total // 2, total - total // 2

    def check(self, event_shape) -> GaussianFamily:
        """Raises ValueError (naming the setting) if the family does not fit the event."""
        total = 1
        for d in event_shape:
            total *= int(d)
        if self.name == "lowrank" and self.rank > total:
            raise ValueError(f"rank={self.rank} exceeds the event size {total} (the "
                             "low-rank factor U is D x R with R <= D).")
        if self.name == "matrix_normal":
            self.matrix_shape(event_shape)
        return self

    # ---------------------------------------------------------------- factors
    def init_factors(self, x: tf.Tensor, seed: tf.Tensor) -> list[tf.Tensor]:
        """The extra parameters' initial values for a batch x [B, *event_shape]: [] for
        `diag`; [U] for `lowrank`; [A's strict lower entries, A's log-diagonal, B's, B's]
        for `matrix_normal` (A = B = I at factor_init = 0)."""
        if self.name == "diag":
            return []
        event = x.shape[1:]
        self.check(event)
        batch = tf.shape(x)[0]
        dtype = x.dtype

        def draw(shape, index):
            if not self.factor_init:
                return tf.zeros(tf.concat([[batch], shape], 0), dtype)
            return self.factor_init * tf.random.stateless_normal(
                tf.concat([[batch], shape], 0), tf.random.experimental.stateless_fold_in(
                    seed, index), dtype=dtype)

        if self.name == "lowrank":
            total = 1
            for d in event:
                total *= int(d)
            return [draw([total, self.rank], 0)]
        if self.name == "coupling":
            first, second = self._halves(event)
            factors = []
            for layer in range(COUPLING_LAYERS):  # conditioned half -> transformed half
                given, moved = (first, second) if layer % 2 == 0 else (second, first)
                scale = 1.0 / float(given) ** 0.5  # tanh's input of unit scale at the start
                factors += [scale * tf.random.stateless_normal(
                                tf.concat([[batch], [given, self.rank]], 0),
                                tf.random.experimental.stateless_fold_in(seed, 10 + layer),
                                dtype=dtype),
                            draw([self.rank, 2 * moved], 20 + layer)]
            return factors
        r, c = self.matrix_shape(event)
        return [draw([r, r], 1), tf.zeros(tf.stack([batch, r]), dtype),
                draw([c, c], 2), tf.zeros(tf.stack([batch, c]), dtype)]

    def _flow(self, factors, event_shape) -> tfb.Bijector:
        """The coupling flow: `COUPLING_LAYERS` affine couplings (RealNVP), each moving one
        half of u by a shift and a bounded log-scale computed from the other half through a
        per-example one-hidden-layer network (W_in [B, half, H], tanh, W_out [B, H, 2 half'];
        W_out = 0 at the start: the identity), the halves swapped after each layer."""
        first, second = self._halves(event_shape)
        layers = []
        for layer in range(COUPLING_LAYERS):
            w_in, w_out = factors[2 * layer], factors[2 * layer + 1]

            def shift_and_log_scale(x, output_units, w_in=w_in, w_out=w_out):
                hidden = tf.tanh(tf.einsum("...bd,bdh->...bh", x, w_in))
                shift, raw = tf.split(tf.einsum("...bh,bho->...bo", hidden, w_out), 2, -1)
                return shift, 2.0 * tf.tanh(raw / 2.0)  # |log scale| < 2: exp stays finite

            given = first if layer % 2 == 0 else second
            layers.append(tfb.RealNVP(num_masked=given,
                                      shift_and_log_scale_fn=shift_and_log_scale))
            # Swap the halves (the next layer moves the other one; after an even number of
            # layers the coordinates are in their own order again).
            layers.append(tfb.Permute(permutation=self._swap(given, first + second - given)))
        return tfb.Chain(list(reversed(layers)))

    @staticmethod
    def _swap(front: int, back: int) -> list[int]:
        """The permutation of [a (front values) | b (back values)] into [b | a]."""
        return list(range(front, front + back)) + list(range(front))

    def _triangular(self, strict, log_diag) -> tf.Tensor:
        """tril(strict, -1) + diag(exp(log_diag)): lower-triangular, positive diagonal."""
        lower = tf.linalg.band_part(strict, -1, 0) - tf.linalg.band_part(strict, 0, 0)
        return lower + tf.linalg.diag(tf.exp(log_diag))

    # ---------------------------------------------------------------- distribution
    def base(self, loc: tf.Tensor, scale: tf.Tensor, factors, event_shape) -> tfd.Distribution:
        """The Gaussian q(u) over the flattened event: loc and scale [B, D] (mu, sigma)."""
        if self.name == "diag":
            return tfd.MultivariateNormalDiag(loc=loc, scale_diag=scale)
        if self.name == "lowrank":
            (u_factor,) = factors
            return tfd.MultivariateNormalDiagPlusLowRankCovariance(
                loc=loc, cov_diag_factor=tf.square(scale), cov_perturb_factor=u_factor)
        if self.name == "coupling":
            return tfd.TransformedDistribution(
                tfd.MultivariateNormalDiag(loc=loc, scale_diag=scale),
                self._flow(factors, event_shape))
        r, c = self.matrix_shape(event_shape)
        row = self._triangular(factors[0], factors[1])
        column = self._triangular(factors[2], factors[3])
        matrix = tfd.MatrixNormalLinearOperator(
            loc=tf.zeros(tf.concat([tf.shape(loc)[:1], [r, c]], 0), loc.dtype),
            scale_row=tf.linalg.LinearOperatorLowerTriangular(row),
            scale_column=tf.linalg.LinearOperatorLowerTriangular(column))
        flat = tfb.Chain([tfb.Shift(loc), tfb.Scale(scale),
                          tfb.Reshape(event_shape_out=[r * c], event_shape_in=[r, c])])
        return tfd.TransformedDistribution(matrix, flat)

    def log_prob(self, base: tfd.Distribution, u: tf.Tensor, loc, scale, factors,
                 event_shape) -> tf.Tensor:
        """log q(u) of the base at u [..., B, D]: TFP's, except for `lowrank` (below, in
        `_lowrank_log_prob`) and `matrix_normal`, whose closed form is evaluated here with
        two triangular solves,

            log q(u) = -||A^-1 Z B^-T||_F^2 / 2 - c log det A - r log det B - sum_j log sigma_j
                       - D log(2 pi) / 2,   Z = reshape((u - mu) / sigma) [r, c],

        because TensorFlow's `LinearOperatorKronecker` solve (under TFP's matrix-normal
        density) fails when the batch size is not static (`UnboundLocalError` in
        `_solve`, TensorFlow 2.21), as in a training step whose last batch is smaller. The
        tests hold it to a dense brute force and to TFP's density where the shapes are known."""
        if self.name == "lowrank":
            return self._lowrank_log_prob(u, loc, scale, factors[0])
        if self.name != "matrix_normal":
            return base.log_prob(u)
        r, c = self.matrix_shape(event_shape)
        row = self._triangular(factors[0], factors[1])  # [B, r, r]
        column = self._triangular(factors[2], factors[3])  # [B, c, c]
        z = tf.reshape((u - loc) / scale, tf.concat([tf.shape(u)[:-1], [r, c]], 0))
        # The solves broadcast A [B, r, r] and B [B, c, c] over the k samples of z.
        w = tf.linalg.triangular_solve(row, z, lower=True)  # A^-1 Z
        v = tf.linalg.triangular_solve(  # B^-1 (A^-1 Z)^T = (A^-1 Z B^-T)^T
            column, tf.linalg.matrix_transpose(w), lower=True)
        dims = tf.cast(r * c, u.dtype)
        log_det = (c * tf.reduce_sum(factors[1], -1) + r * tf.reduce_sum(factors[3], -1)
                   + tf.reduce_sum(tf.math.log(scale), -1))  # [B]
        return (-0.5 * tf.reduce_sum(tf.square(v), axis=[-2, -1]) - log_det
                - 0.5 * dims * tf.cast(np.log(2 * np.pi), u.dtype))

    @staticmethod
    def _lowrank_log_prob(u: tf.Tensor, loc, scale, u_factor) -> tf.Tensor:
        """log q(u) [..., B] of N(mu, diag(sigma^2) + U U^T) at u [..., B, D] by Woodbury and the
        matrix-determinant lemma, with V = U / sigma [B, D, R], the capacitance
        C = I + V^T V = L L^T [B, R, R] and z = (u - mu) / sigma:

            log q(u) = -(z^T z - |L^-1 V^T z|^2) / 2 - sum_i log L_ii - sum_j log sigma_j
                       - D log(2 pi) / 2.

        The same mathematics as TFP's `MultivariateNormalDiagPlusLowRankCovariance` (the
        tests hold them equal) in a dozen operations instead of its linear-operator
        machinery, at about half its time with the gradient the inner loop takes
        (`docs/methods.md`, the families' cost)."""
        rank = tf.shape(u_factor)[-1]
        z = (u - loc) / scale  # [..., B, D]
        v = u_factor / scale[..., None]  # [B, D, R]
        capacitance = tf.linalg.matmul(v, v, transpose_a=True) + tf.eye(rank, dtype=u.dtype)
        chol = tf.linalg.cholesky(capacitance)  # [B, R, R]
        # The samples (every leading index) as the columns of one solve per example: a
        # solve per sample (L broadcast over them) costs twice the whole density.
        shape = tf.shape(u)
        columns = tf.reshape(z, tf.stack([-1, shape[-2], shape[-1]]))  # [n, B, D]
        projected = tf.einsum("nbd,bdr->brn", columns, v)  # V^T z
        solved = tf.linalg.triangular_solve(chol, projected, lower=True)  # [B, R, n]
        correction = tf.reshape(tf.transpose(tf.reduce_sum(tf.square(solved), -2)),
                                shape[:-1])  # [..., B]
        quadratic = tf.reduce_sum(tf.square(z), -1) - correction
        log_det = (tf.reduce_sum(tf.math.log(tf.linalg.diag_part(chol)), -1)
                   + tf.reduce_sum(tf.math.log(scale), -1))  # log det S / 2, [B]
        dims = tf.cast(tf.shape(u)[-1], u.dtype)
        return (-0.5 * quadratic - log_det
                - 0.5 * dims * tf.cast(np.log(2 * np.pi), u.dtype))

    def sample(self, base: tfd.Distribution, loc, scale, factors, num_samples: int,
               seed: tf.Tensor, noise: NoiseSource = DEFAULT_NOISE, event_shape=None
               ) -> tf.Tensor:
        """k reparameterised samples u [k, B, D] of `base`, from the standard-normal draw
        n [k, B, D] of `noise` (and, for `lowrank`, z [k, B, R] from the seed folded with
        1): the diagonal family's u = mu + sigma n is TFP's own reparameterisation (the
        base's bijector); the others add their factors' part to the same n."""
        batch, dims = tf.shape(loc)[0], tf.shape(loc)[1]
        n = noise.normal(tf.stack([num_samples, batch, dims]), seed, dtype=loc.dtype)
        if self.name == "diag":
            return base.bijector.forward(n)  # [k, B, D]: mu + sigma n, reparameterised
        if self.name == "coupling":
            return base.bijector.forward(loc + scale * n)  # the flow of the diagonal sample
        if self.name == "lowrank":
            (u_factor,) = factors
            z = noise.normal(tf.stack([num_samples, batch, self.rank]),
                             tf.random.experimental.stateless_fold_in(seed, 1),
                             dtype=loc.dtype)
            return loc + scale * n + tf.einsum("bdr,kbr->kbd", u_factor, z)
        r, c = self.matrix_shape(event_shape)
        row = self._triangular(factors[0], factors[1])
        column = self._triangular(factors[2], factors[3])
        noise_matrix = tf.reshape(n, tf.stack([num_samples, batch, r, c]))
        # A N B^T per sample. As einsums: TensorFlow's broadcasting batch matmul (the factors
        # [B, ., .] against the noise [k, B, r, c]) crashed in oneDNN (segmentation fault,
        # illegal instruction) for 40,000 samples of one example on an AMD EPYC with AVX-512.
        correlated = tf.einsum("kbic,bdc->kbid",
                               tf.einsum("bij,kbjc->kbic", row, noise_matrix), column)
        return loc + scale * tf.reshape(correlated, tf.stack([num_samples, batch, dims]))

    def dense_covariance(self, scale: tf.Tensor, factors, event_shape) -> tf.Tensor:
        """The full covariance [B, D, D] of a Gaussian base (for tests: a brute-force
        reference; the coupling flow's base is not Gaussian)."""
        if self.name == "coupling":
            raise ValueError("The coupling flow's base is not Gaussian: no covariance.")
        variance = tf.linalg.diag(tf.square(scale))
        if self.name == "diag":
            return variance
        if self.name == "lowrank":
            (u_factor,) = factors
            return variance + tf.matmul(u_factor, u_factor, transpose_b=True)
        row = self._triangular(factors[0], factors[1])
        column = self._triangular(factors[2], factors[3])
        # vec row-major of A N B^T is (A (x) B) vec(N): covariance (A A^T) (x) (B B^T).
        kron = tf.linalg.LinearOperatorKronecker([
            tf.linalg.LinearOperatorFullMatrix(tf.matmul(row, row, transpose_b=True)),
            tf.linalg.LinearOperatorFullMatrix(tf.matmul(column, column, transpose_b=True)),
        ]).to_dense()
        return scale[..., :, None] * kron * scale[..., None, :]

    def parameter_count(self, event_shape) -> int:
        """Per-example parameters: mu and v (2 D) plus the factors."""
        total = 1
        for d in event_shape:
            total *= int(d)
        if self.name == "diag":
            return 2 * total
        if self.name == "lowrank":
            return 2 * total + total * self.rank
        if self.name == "coupling":
            first, second = self._halves(event_shape)
            return 2 * total + sum(
                given * self.rank + self.rank * 2 * moved
                for given, moved in ((first, second), (second, first))[:COUPLING_LAYERS])
        r, c = self.matrix_shape(event_shape)
        return 2 * total + r * r + r + c * c + c

    def describe(self) -> str:
        if self.name == "diag":
            return "diagonal Gaussian (the paper's)"
        if self.name == "lowrank":
            return f"low-rank Gaussian, rank {self.rank}"
        if self.name == "coupling":
            return f"diagonal Gaussian through a coupling flow ({self.rank} hidden units)"
        return ("matrix-normal Gaussian (rows x columns = "
                + (f"{self.rows} rows" if self.rows else "H x WC") + ")")


DIAG = GaussianFamily()


__all__ = ["COUPLING_LAYERS", "DIAG", "FACTOR_LR", "FACTOR_LRS", "FAMILIES", "GaussianFamily",
           "UNUSED_SETTINGS", "default_factor_lr", "unused_settings"]

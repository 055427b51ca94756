"""Probe: is the amortised methods' weakness at the CPU robustness recipe the generator's
small step budget or its width?

The CPU recipe (bench/robustness.py) trains for 6 epochs of 157 steps, so the generator of
ADT_EXP-AM / ADT_IMP-AM takes about 940 Adam steps at the reference learning rate 2e-4 (the
paper's run takes about 59,000). This trains one variant with the same recipe and seed 0 and
prints its training report (clean and PGD-20 accuracy on the first 500 test images):

    python -m bench.am_probe --variant=exp_lr1e3     # ADT_EXP-AM, generator lr 1e-3
    python -m bench.am_probe --variant=exp_w64       # ADT_EXP-AM, generator width 64
    python -m bench.am_probe --variant=imp_lr1e3     # ADT_IMP-AM, generator and encoder lr 1e-3

Runs live in bench/runs/am_probe/<variant>-seed0/ (resumable like the benchmark's). Results
measured so far: bench/results/am_probe_cpu.md.
"""

from __future__ import annotations

import os

from absl import app, flags

VARIANTS = {
    "exp_lr1e3": ("adt_exp_am", {"generator_lr": 1e-3}),
    "exp_w64": ("adt_exp_am", {"generator_width": 64}),
    "imp_lr1e3": ("adt_imp_am", {"generator_lr": 1e-3, "encoder_lr": 1e-3}),
}

flags.DEFINE_enum("variant", "exp_lr1e3", list(VARIANTS), "Which variant to train.")
flags.DEFINE_integer("seed", 0, "Training seed.")
flags.DEFINE_integer("threads", 1, "TensorFlow intra- and inter-op threads.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import tensorflow as tf

    from bench import robustness as rb

    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    method, params = VARIANTS[FLAGS.variant]
    rb.METHODS.append((FLAGS.variant, f"{method} {params}", method, params))
    workdir = os.path.join(rb.ROOT, "bench", "runs", "am_probe")
    rb.train(rb.RECIPES["cpu"], FLAGS.variant, FLAGS.seed, rb.DEFAULT_DATA, workdir, 2)


if __name__ == "__main__":
    app.run(main)

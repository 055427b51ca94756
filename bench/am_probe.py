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

from bench.kit.recipes import RECIPES, train
from bench.kit.runs import DEFAULT_DATA, ROOT, set_threads

#: --variant: its key in `bench.kit.variants`.
PROBES = {"exp_lr1e3": "adt_exp_am_lr1e3", "exp_w64": "adt_exp_am_w64",
          "imp_lr1e3": "adt_imp_am_lr1e3"}

flags.DEFINE_enum("variant", "exp_lr1e3", list(PROBES), "Which variant to train.")
flags.DEFINE_integer("seed", 0, "Training seed.")
flags.DEFINE_integer("threads", 1, "TensorFlow intra- and inter-op threads.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    set_threads(FLAGS.threads)
    workdir = os.path.join(ROOT, "bench", "runs", "am_probe")
    train(RECIPES["cpu"], PROBES[FLAGS.variant], FLAGS.seed, DEFAULT_DATA, workdir, 2,
          benchmark="bench.am_probe")


if __name__ == "__main__":
    app.run(main)

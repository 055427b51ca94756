"""Profile training steps of a method and print where the time goes, by op type and by layer.

    python -m bench.profile --method=adt_exp --model=small_cnn --batch_size=64 --steps=3

Runs `--warmup` untimed steps, then `--steps` steps under `tf.profiler.experimental` (the
trace goes to `--logdir`, viewable with TensorBoard's profile plugin), and sums the duration
of every TensorFlow op event of the trace (XSpace protobuf) per op type and per layer of the
classifier, per training step. Op events on the two threads of a 2-core CPU overlap, so the
sums can exceed the wall time; the shares are what matters.
"""

from __future__ import annotations

import collections
import glob
import os
import re
import shutil
import time

import tensorflow as tf
from absl import app, flags

from adt_tf.methods import METHODS
from adt_tf.models import build_model
from bench.speed import apply_runtime_flags, batch_of, compiled_step, model_preset

FLAGS = flags.FLAGS
flags.DEFINE_string("method", "adt_exp", "Method to profile.")
flags.DEFINE_string("model", "small_cnn", "Model preset (see bench.speed).")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_integer("top", 25, "Rows of each table.")
flags.DEFINE_string("logdir", "/tmp/adt_profile", "Where the trace is written (replaced).")
# bench.speed's flags apply too: --warmup, --steps (profiled steps), --jit_compile,
# --mixed_precision, --intra_op_threads, --inter_op_threads.


def op_times(logdir: str) -> tuple[collections.Counter, collections.Counter]:
    """Total duration (s) of the op events of a trace, by op type and by (layer, op type)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    by_type, by_layer = collections.Counter(), collections.Counter()
    for path in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            for line in plane.lines:
                for event in line.events:
                    name = plane.event_metadata[event.metadata_id].name
                    if ":" not in name or name.startswith(" "):
                        continue  # not a TensorFlow op ("scope/name:OpType")
                    scope, op_type = name.rsplit(":", 1)
                    seconds = event.duration_ps * 1e-12
                    by_type[op_type] += seconds
                    layer = re.search(r"/((?:conv|fc|pool|block|stage|penultimate|logits|"
                                      r"normalize|dense|bn)[^/]*)/", scope + "/")
                    where = "inner loop" if "/while/" in scope else "outer"
                    by_layer[(where, layer.group(1) if layer else "-", op_type)] += seconds
    return by_type, by_layer


def main(argv):
    del argv
    apply_runtime_flags()
    builder, shape, kwargs, epsilon, description = model_preset(FLAGS.model)
    x, y = batch_of(FLAGS.batch_size, shape)
    trainer = METHODS[FLAGS.method](build_model(builder, shape, 10, **kwargs),
                                    epsilon=epsilon, seed=0)
    step = compiled_step(trainer, x, y)
    for _ in range(FLAGS.warmup):
        step()
    shutil.rmtree(FLAGS.logdir, ignore_errors=True)
    tf.profiler.experimental.start(FLAGS.logdir)
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
        step()
    wall = (time.perf_counter() - start) / FLAGS.steps
    tf.profiler.experimental.stop()

    by_type, by_layer = op_times(FLAGS.logdir)
    ignore = {"Run", "Process", "RunGraph", "ExecutorState::Process"}
    by_type = collections.Counter({k: v for k, v in by_type.items()
                                   if k not in ignore and not k.startswith("__inference")})
    total = sum(by_type.values())
    print(f"{FLAGS.method} on {description}, batch {FLAGS.batch_size}: {1e3 * wall:.1f} ms "
          f"per step (wall, under the profiler); op time {1e3 * total / FLAGS.steps:.1f} ms "
          f"per step; load average {os.getloadavg()[0]:.2f}")
    print("\nBy op type (ms per step, share of op time):")
    for op_type, seconds in by_type.most_common(FLAGS.top):
        print(f"  {op_type:45s} {1e3 * seconds / FLAGS.steps:9.2f}  {seconds / total:6.1%}")
    print("\nBy place, layer and op type (ms per step):")
    for (where, layer, op_type), seconds in by_layer.most_common(FLAGS.top):
        if op_type in ignore or op_type.startswith("__inference"):
            continue
        print(f"  {where:10s} {layer:14s} {op_type:40s} {1e3 * seconds / FLAGS.steps:9.2f}")
    print(f"\nTrace: {FLAGS.logdir} (tensorboard --logdir {FLAGS.logdir}, Profile tab)")


if __name__ == "__main__":
    app.run(main)

"""What the speed work relies on: the unrolled inner loop, declared pass counts, the benchmark."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from adt_tf.adt.inner_maximization import MAX_UNROLLED_STEPS, explicit_inner_maximization
from adt_tf.methods import METHODS, ADTExp
from tests.helpers import make_tiny_images, run_command, tiny_classifier

EPS = 8 / 255


def inner(classifier, x, y, unroll, steps=3, branches=1, samples=2):
    return explicit_inner_maximization(
        classifier, x, y, threat=EPS, entropy_weight=0.01, steps=steps, samples=samples,
        lr=0.3, beta1=0.5, beta2=0.9, seed=tf.constant([4, 2]), unroll=unroll,
        branches=branches)


def assert_same_inner(a, b):
    """Two InnerResults of one computation rounded differently (other fusions or slices):
    objective and entropy to 1e-4; mu and v to 1e-5 but for at most 0.1% of the elements,
    those whose running gradient sum is within rounding of zero, where the accumulated
    gradient's rounding decides a step's length (each within 1e-3; a step is 0.3)."""
    for x, y in ((a.objective, b.objective), (a.entropy, b.entropy)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    for x, y in ((a.loc, b.loc), (a.raw_scale, b.raw_scale)):
        diff = np.abs(x.numpy() - y.numpy())
        assert diff.max() < 1e-3 and np.mean(diff > 1e-5) <= 1e-3, (diff.max(),
                                                                     np.sum(diff > 1e-5))


@pytest.mark.parametrize("graph", [False, True])
def test_unrolled_inner_loop_equals_the_while_loop(graph):
    x, y = make_tiny_images(8)
    classifier = tiny_classifier()
    run = tf.function(inner, reduce_retracing=True) if graph else inner
    unrolled = run(classifier, tf.constant(x), tf.constant(y), True)
    looped = run(classifier, tf.constant(x), tf.constant(y), False)
    assert float(tf.reduce_max(tf.abs(unrolled.loc))) > 0.1  # the steps really moved mu
    assert_same_inner(unrolled, looped)  # fusions round differently


@pytest.mark.parametrize("branches", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_parallel_branches_give_the_same_inner_result(branches):
    # 3 examples x 5 samples = 15 rows: the branches get unequal slices (8 + 7, 4 + 4 + 4 + 3).
    x, y = make_tiny_images(3)
    classifier = tiny_classifier()
    def traced(b):
        return tf.function(lambda a, c: inner(classifier, a, c, True, 3, b, 5))

    one = traced(1)(tf.constant(x), tf.constant(y))
    run = traced(branches)
    split = run(tf.constant(x), tf.constant(y))
    assert float(tf.reduce_max(tf.abs(one.loc))) > 0.1
    assert_same_inner(one, split)
    graph = run.get_concrete_function(tf.constant(x), tf.constant(y)).graph
    splits = [op for op in graph.get_operations() if op.type == "SplitV"]
    assert splits and all(len(op.outputs) == branches for op in splits)


def test_adt_exp_inner_branches_round_trip_and_train():
    x, y = make_tiny_images(8)
    trainer = ADTExp(tiny_classifier(), inner_steps=2, mc_samples=3, inner_branches=2, seed=1)
    assert ADTExp.from_config(trainer.get_config()).inner_branches == 2
    trainer.compile(optimizer=keras.optimizers.SGD(0.05),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = trainer.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    with pytest.raises(ValueError, match="inner_branches"):
        ADTExp(tiny_classifier(), inner_branches=0)


def test_default_unrolls_short_loops_only():
    x, y = make_tiny_images(4)
    classifier = tiny_classifier()

    def ops(steps):
        graph = tf.function(lambda a, b: inner(classifier, a, b, None, steps)
                            ).get_concrete_function(tf.constant(x), tf.constant(y)).graph
        return {op.type for op in graph.get_operations()}

    assert "While" not in ops(2) and "StatelessWhile" not in ops(2)
    assert {"While", "StatelessWhile"} & ops(MAX_UNROLLED_STEPS + 1)


def test_every_method_declares_its_passes():
    for name, cls in METHODS.items():
        trainer = cls(tiny_classifier(), epsilon=EPS, seed=0)
        passes = trainer.forward_backward_passes()
        assert isinstance(passes, int) and passes >= 1, name
        floor = trainer.floor_passes()
        assert [p.kind for p in floor][-1] == "train", name  # the update comes last
        assert {p.kind for p in floor} <= {"input_gradient", "train"}, name
        assert passes == sum(p.batch_multiple * p.count for p in floor), name
    assert ADTExp(tiny_classifier()).forward_backward_passes() == 7 * 5 + 1
    assert ADTExp(tiny_classifier(), inner_steps=2, mc_samples=3,
                  outer_loss="trades").forward_backward_passes() == 2 * 3 + 3  # f(x) twice
    keras.backend.clear_session()


@pytest.mark.slow
def test_speed_benchmark_writes_its_table(tmp_path):
    proc = run_command(
        "bench.speed", "--methods=standard,adt_exp", "--models=small_cnn", "--batch_sizes=8",
        "--warmup=1", "--steps=2", f"--output_dir={tmp_path}", "--machine=test",
        "--method_params=adt_exp.inner_branches=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (tmp_path / "speed_test.md").read_text()
    assert "Load average (1, 5, 15 min) before:" in table
    assert "beyond the defaults: adt_exp.inner_branches=2." in table
    main, families = table.split("ADT_EXP's distribution families")
    rows = [line.split("|")[1:-1] for line in main.splitlines()
            if line.startswith("| small_cnn")]
    assert [r[2].strip() for r in rows] == ["standard", "adt_exp"]
    family = [c.strip() for c in next(line for line in families.splitlines()
                                      if line.startswith("| small_cnn")).split("|")[1:-1]]
    # the diagonal ADT_EXP relative to itself; mu and v: 2 x 28 x 28 parameters per example
    assert family[2] == "adt_exp" and family[4] == family[5] == "1.00" and family[6] == "1,568"
    adt = [c.strip() for c in rows[1]]
    assert adt[3] == "36" and float(adt[4]) > 0 and float(adt[7]) > 0  # passes, ms, floor
    assert float(adt[9]) > 0 and float(adt[10]) > 0  # measured floor ms, step / floor
    assert float(adt[11]) > 100  # MiB: the peak RSS of a process running TensorFlow
    assert "small_cnn b8 adt_exp: 7 x input-gradient(5B)" in table

"""The distribution strategies (adt_tf.training.strategies): worker roles and their write
folders, the strategies a run may name, sharding by element."""

from __future__ import annotations

import os

import pytest
import tensorflow as tf

from adt_tf.training.strategies import WorkerRole, make_strategy, shard_by_data, worker_role


def test_worker_roles_and_write_dirs():
    assert WorkerRole().is_chief and WorkerRole().write_dir("w") == "w"
    assert WorkerRole("worker", 0, 2).is_chief
    one = WorkerRole("worker", 1, 2)
    assert not one.is_chief and one.write_dir("w") == os.path.join("w", "workers", "worker-1")
    # With a "chief" task, worker 0 is not the chief.
    assert not WorkerRole("worker", 0, 3, has_chief_task=True).is_chief
    assert WorkerRole("chief", 0, 3, has_chief_task=True).is_chief
    assert worker_role(tf.distribute.get_strategy()) == WorkerRole()


def test_bad_strategies_are_rejected_with_a_message(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs the TF_CONFIG environment variable"):
        make_strategy("multiworker")
    with pytest.raises(ValueError, match="strategy 'tpu' found no TPU"):
        make_strategy("tpu")
    with pytest.raises(ValueError, match="Unknown strategy .horovod.; known: .*multiworker"):
        make_strategy("horovod")
    assert make_strategy("default") is tf.distribute.get_strategy()


def test_shard_by_data_sets_the_auto_shard_policy():
    ds = shard_by_data(tf.data.Dataset.range(4))
    assert (ds.options().experimental_distribute.auto_shard_policy
            == tf.data.experimental.AutoShardPolicy.DATA)

"""Multi-worker training for real: worker processes on 127.0.0.1 under MultiWorkerMirroredStrategy.

The two end-to-end tests start `adt-train --strategy=multiworker` twice with TF_CONFIG naming
two local ports (free ones, chosen at test time); they take one to two minutes on two
shared cores and are marked slow. The fast suite runs a shortened kill-and-resume run
(`test_multiworker_short_kill_and_resume`) and the pieces: strategy names, worker roles,
write folders, the shared backup callback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from adt_tf.training.callbacks import SharedBackupAndRestore, restored_epoch
from adt_tf.training.strategies import WorkerRole, make_strategy, shard_by_data, worker_role
from tests.helpers import start_command

EXAMPLES, BATCH = 64, 8
STEPS_PER_EPOCH = EXAMPLES // BATCH
TINY = [f"--max_train_examples={EXAMPLES}", f"--batch_size={BATCH}",
        "--model_params=width=4", "--eval_examples=16",
        "--method_params=inner_steps=2,mc_samples=2", "--lr=0.02", "--verbose=2",
        "--method=adt_exp", "--strategy=multiworker"]


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class Cluster:
    """Worker processes of one multi-worker run; logs in <tmp>/logs/worker<i>_<n>.log."""

    def __init__(self, tmp_path, args, num_workers=2):
        self.args = args
        self.logs = tmp_path / "logs"
        self.logs.mkdir()
        self.spec = {"worker": [f"127.0.0.1:{p}" for p in free_ports(num_workers)]}
        self.starts = [0] * num_workers
        self.procs = [self.start(i) for i in range(num_workers)]

    def start(self, index):
        self.starts[index] += 1
        env = dict(TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=json.dumps(
            {"cluster": self.spec, "task": {"type": "worker", "index": index}}))
        log = open(self.logs / f"worker{index}_{self.starts[index]}.log", "w")
        return start_command("adt-train", *self.args, env=env, stdout=log)

    def log(self, index, start=None):
        return (self.logs / f"worker{index}_{start or self.starts[index]}.log").read_text()

    def supervise(self, timeout=480, max_restarts=3):
        """Restarts any worker that fails (as a cluster manager would) until all succeed."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            codes = [p.poll() for p in self.procs]
            if all(c == 0 for c in codes):
                return
            for i, code in enumerate(codes):
                if code not in (None, 0):
                    if self.starts[i] > max_restarts:
                        self.kill()
                        raise AssertionError(f"worker {i} failed {self.starts[i]} times:\n"
                                             + self.log(i)[-3000:])
                    self.procs[i] = self.start(i)
            time.sleep(0.5)
        self.kill()
        raise AssertionError("the run did not finish in time:\n"
                             + "\n".join(self.log(i)[-2000:] for i in range(len(self.procs))))

    def kill(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def optimizer_steps(backup_dir):
    """The optimizer's iteration counter in the weights file the backup's metadata names."""
    with open(os.path.join(backup_dir, "training_metadata.json")) as f:
        name = json.load(f)["weights"]
    with h5py.File(os.path.join(backup_dir, name), "r") as f:
        return int(f["optimizer/vars/0"][()])


def classifier_weights(path):
    return keras.saving.load_model(path).get_weights()


@pytest.mark.slow
def test_two_workers_train_in_lockstep_and_end_with_identical_weights(tmp_path):
    workdir = str(tmp_path / "run")
    epochs = 2
    cluster = Cluster(tmp_path, [f"--workdir={workdir}", f"--epochs={epochs}", *TINY])
    cluster.supervise(max_restarts=1)
    chief_out, worker_out = cluster.log(0), cluster.log(1)
    assert "Report: adt_exp on cifar10_sample" in chief_out
    assert "Worker worker-1 finished adt_exp; the chief writes the report" in worker_out
    # Only the chief writes the run's files; the other worker writes under workers/.
    other = os.path.join(workdir, "workers", "worker-1")
    for name in ("config.json", "classifier.keras", "report.json", "history.csv", "backup"):
        assert os.path.exists(os.path.join(workdir, name)), name
    assert not os.path.exists(os.path.join(other, "report.json"))
    # Synchronous data-parallel training: identical weights, identical (all-reduced) logs.
    chief = classifier_weights(os.path.join(workdir, "classifier.keras"))
    worker = classifier_weights(os.path.join(other, "classifier.keras"))
    for a, b in zip(chief, worker):
        np.testing.assert_array_equal(a, b)
    chief_history = (tmp_path / "run" / "history.csv").read_text()
    assert chief_history == open(os.path.join(other, "history.csv")).read()
    # Each global batch of 8 is split between the workers: an epoch is still 8 steps.
    assert optimizer_steps(os.path.join(workdir, "backup")) == epochs * STEPS_PER_EPOCH
    fresh = keras.saving.load_model(os.path.join(workdir, "classifier.keras"))
    assert fresh.output_shape == (None, 10)


def kill_a_worker_and_resume(tmp_path, epochs: int, kill_after: int, args=()):
    """Two workers; worker 1 is killed once `kill_after` epochs are backed up, restarted;
    checks the chief's exit 3 and restart, the resume, and identical final weights."""
    workdir = str(tmp_path / "run")
    cluster = Cluster(tmp_path, [f"--workdir={workdir}", f"--epochs={epochs}", *TINY, *args])
    backup = os.path.join(workdir, "backup")
    deadline = time.time() + 300
    while restored_epoch(backup) < kill_after and time.time() < deadline:
        assert all(p.poll() is None for p in cluster.procs), cluster.log(0)[-3000:]
        time.sleep(0.1)
    cluster.procs[1].send_signal(signal.SIGKILL)  # worker 1 dies mid-training
    cluster.procs[1].wait()
    killed_after = restored_epoch(backup)
    assert kill_after <= killed_after < epochs
    cluster.procs[1] = cluster.start(1)  # ... and is restarted
    cluster.supervise()  # the chief fails on the lost peer (exit 3) and is restarted too

    assert cluster.starts[0] >= 2
    assert "a peer worker of the run stopped" in cluster.log(0, start=1)
    resumed = [int(line.split(": ")[1].split(" of ")[0]) for line in cluster.log(1).splitlines()
               if line.startswith("Resuming")]
    assert resumed and killed_after <= resumed[0] < epochs
    # The same number of optimizer steps as an uninterrupted run, every epoch logged once.
    assert optimizer_steps(backup) == epochs * STEPS_PER_EPOCH
    with open(os.path.join(workdir, "history.csv")) as f:
        logged = [int(line.split(",")[0]) for line in f.readlines()[1:]]
    assert sorted(logged) == list(range(epochs))
    chief = classifier_weights(os.path.join(workdir, "classifier.keras"))
    worker = classifier_weights(os.path.join(workdir, "workers", "worker-1", "classifier.keras"))
    for a, b in zip(chief, worker):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_killed_worker_restarts_and_the_run_resumes_the_same_epoch(tmp_path):
    kill_a_worker_and_resume(tmp_path, epochs=6, kill_after=2)


def test_multiworker_short_kill_and_resume(tmp_path):
    """The fast suite's multi-worker run (the Keras workarounds for
    MultiWorkerMirroredStrategy, a lost worker's exit 3, the restart that resumes): the
    slow test above, shortened to 3 epochs of one inner step."""
    kill_a_worker_and_resume(tmp_path, epochs=3, kill_after=1,
                             args=("--method_params=inner_steps=1,mc_samples=1",))


# ---------------------------------------------------------------------- fast tests
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


def tiny_model():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(keras.optimizers.SGD(0.1), "mse")
    return model


def test_shared_backup_restores_from_the_shared_dir_and_writes_to_its_own(tmp_path):
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    y = np.zeros((8, 2), "float32")
    shared, own = str(tmp_path / "shared"), str(tmp_path / "own")
    chief = tiny_model()
    chief.fit(x, y, epochs=2, verbose=0, callbacks=[SharedBackupAndRestore(
        shared, shared, delete_checkpoint=False)])
    assert restored_epoch(shared) == 2

    other = tiny_model()
    history = other.fit(x, y, epochs=3, verbose=0, callbacks=[SharedBackupAndRestore(
        shared, own, delete_checkpoint=False)])
    assert len(history.epoch) == 1 and history.epoch[0] == 2  # resumed the chief's epoch 2
    assert restored_epoch(own) == 3 and restored_epoch(shared) == 2  # wrote its own copy only

"""Multi-worker training for real: worker processes on 127.0.0.1 under MultiWorkerMirroredStrategy.

The two end-to-end tests start `adt-train --strategy=multiworker` twice with TF_CONFIG naming
two local ports (free ones, chosen at test time); they take one to two minutes on two
shared cores and are marked slow. The fast suite runs a shortened kill-and-resume run
(`test_multiworker_short_kill_and_resume`). The pieces are tested beside their modules:
strategy names, worker roles and write folders in tests/adt_tf/training/test_strategies.py,
the shared backup callback in tests/adt_tf/training/callbacks/test_backup.py.
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

from adt_tf.training.callbacks import restored_epoch
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











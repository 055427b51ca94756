"""A distributed lambda search: keras-tuner's chief/worker mode driven by adt-tune's
flags, on 127.0.0.1. A chief and two workers run a 4-point grid: both workers train trials,
every trial runs exactly once, and the chief's table equals a single-process search over the
same grid (the same lambdas, the same scores: every trial starts from the same seed). With a
worker killed (kill -9) in the middle of a trial and restarted with its ID, the search
completes and no trial is lost or counted twice. The role flags' errors exit 2."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

import pytest

from adt_tf import tuning
from adt_tf.training.config import RunConfig
from tests.adt_tf.tuning.helpers import toy_images
from tests.helpers import run_command, start_command, write_npz_dataset

LAMBDAS = (0.0, 0.01, 0.1, 1.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_data(folder, n=176):
    x, y = toy_images(n)
    write_npz_dataset(folder, (x[:n - 16], y[:n - 16]), (x[n - 16:], y[n - 16:]))
    return folder


def search_args(data_dir, directory, epochs=1, tuner="grid"):
    return [f"--dataset=npz:{data_dir}", "--method=adt_exp", f"--tuner={tuner}",
            f"--lambda_values={','.join(map(str, LAMBDAS))}", f"--max_trials={len(LAMBDAS)}",
            f"--epochs={epochs}", "--validation_examples=64", "--validation_attack=pgd2",
            "--epsilon=0.03", "--model_params=width=4", "--batch_size=8", "--lr=0.05",
            "--method_params=inner_steps=2,mc_samples=1", "--verbose=0",
            f"--directory={directory}", "--project_name=lam"]


def start(args, log):
    # The test's own keras-tuner settings (a worker's id, the oracle's address) are the
    # arguments', never inherited.
    blank = {name: None for name in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP",
                                   "KERASTUNER_ORACLE_PORT")}
    return start_command("adt-tune", *args, env=blank, stdout=log)


def finish(procs, logs, timeout=900):
    deadline = time.time() + timeout
    for name, proc in procs.items():
        try:
            proc.wait(max(1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            for p in procs.values():
                p.kill()
            raise AssertionError(f"{name} did not finish:\n" + read_logs(logs)) from None
        assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n" + read_logs(logs)


def read_logs(logs):
    return "\n".join(f"--- {name}\n{open(path).read()[-3000:]}" for name, path in logs.items())


def launch(tmp_path, role, port, data_dir, epochs=1, tuner_id=None, suffix="", tuner="grid",
           extra=()):
    name = role if tuner_id is None else tuner_id
    path = tmp_path / f"{name}{suffix}.log"
    args = search_args(data_dir, tmp_path / "dist", epochs, tuner) + [
        f"--tuning_role={role}", f"--oracle_address=127.0.0.1:{port}", *extra]
    if tuner_id:
        args.append(f"--tuner_id={tuner_id}")
    return start(args, open(path, "w")), path


def scores(rows):
    return {r["entropy_weight"]: r["val_robust_accuracy"] for r in rows}


@pytest.mark.slow
def test_chief_and_two_workers_run_each_trial_once_and_match_one_process(tmp_path):
    data_dir = write_data(tmp_path / "data")
    port = free_port()
    procs, logs = {}, {}
    for role, tuner_id in (("chief", None), ("worker", "worker-a"), ("worker", "worker-b")):
        name = tuner_id or role
        procs[name], logs[name] = launch(tmp_path, role, port, data_dir, tuner_id=tuner_id)
    finish(procs, logs)
    project = tmp_path / "dist" / "lam"
    rows = json.load(open(project / "trials.json"))
    assert [r["status"] for r in rows] == ["COMPLETED"] * len(LAMBDAS)
    assert sorted(r["entropy_weight"] for r in rows) == sorted(LAMBDAS)
    started = tuning.distributed.trials_started(str(project))
    assert set(started) == {"worker-a", "worker-b"} and all(started.values())  # both worked
    every = started["worker-a"] + started["worker-b"]
    assert sorted(every) == sorted(r["trial_id"] for r in rows)  # each trial exactly once
    assert os.path.exists(project / "search.png") and os.path.exists(
        project / "best_hyperparameters.json")
    assert "the chief writes the table" in open(logs["worker-a"]).read()
    # The same grid in one process: the same lambdas, each with the same score.
    config = RunConfig.from_flags(workdir="", method="adt_exp", dataset=f"npz:{data_dir}",
                                  epochs=1, batch_size=8, lr=0.05, epsilon=0.03,
                                  model_params={"width": 4},
                                  method_params={"inner_steps": 2, "mc_samples": 1}, verbose=0,
                                  validation_examples=64, validation_attack="pgd2")
    single = tuning.tune(config, tuner_kind="grid", max_trials=len(LAMBDAS),
                         executions_per_trial=1,
                         directory=str(tmp_path / "single"), project_name="lam",
                         overwrite=False, space=tuning.SearchSpace(values=LAMBDAS),
                         tune_knobs=())
    assert scores(single["rows"]) == scores(rows)


@pytest.mark.slow
@pytest.mark.parametrize("tuner", ["random", "bayesian", "hyperband"])
def test_the_other_tuners_run_distributed(tmp_path, tuner):
    """Random, Bayesian and Hyperband searches run as a chief and two workers too: both
    workers train, every trial the chief records is complete and was started once (a
    Hyperband trial continued in a later round is started again, by design)."""
    data_dir = write_data(tmp_path / "data")
    port = free_port()
    procs, logs = {}, {}
    epochs = 2 if tuner == "hyperband" else 1
    for role, tuner_id in (("chief", None), ("worker", "worker-a"), ("worker", "worker-b")):
        name = tuner_id or role
        procs[name], logs[name] = launch(tmp_path, role, port, data_dir, epochs=epochs,
                                         tuner_id=tuner_id, tuner=tuner)
    finish(procs, logs)
    project = tmp_path / "dist" / "lam"
    rows = json.load(open(project / "trials.json"))
    assert rows and all(r["status"] == "COMPLETED" for r in rows)
    assert all(r["val_robust_accuracy"] is not None for r in rows)
    started = tuning.distributed.trials_started(str(project))
    assert set(started) == {"worker-a", "worker-b"}
    every = started["worker-a"] + started["worker-b"]
    assert set(every) == {r["trial_id"] for r in rows}
    if tuner != "hyperband":
        assert len(every) == len(rows)
    assert os.path.exists(project / "best_hyperparameters.json")


@pytest.mark.slow
def test_a_worker_trains_its_trials_under_a_mirrored_strategy(tmp_path):
    """--strategy=mirrored on a worker (a MirroredStrategy over its own devices; one CPU
    here): it trains every trial of the grid and reports each one's score."""
    data_dir = write_data(tmp_path / "data")
    port = free_port()
    procs, logs = {}, {}
    procs["chief"], logs["chief"] = launch(tmp_path, "chief", port, data_dir)
    procs["worker-m"], logs["worker-m"] = launch(tmp_path, "worker", port, data_dir,
                                                 tuner_id="worker-m",
                                                 extra=["--strategy=mirrored"])
    finish(procs, logs)
    rows = json.load(open(tmp_path / "dist" / "lam" / "trials.json"))
    assert [r["status"] for r in rows] == ["COMPLETED"] * len(LAMBDAS)
    assert all(r["val_robust_accuracy"] is not None and 0 <= r["val_robust_accuracy"] <= 1
               for r in rows)
    assert sorted(tuning.distributed.trials_started(str(tmp_path / "dist" / "lam"))
                  ["worker-m"]) == sorted(r["trial_id"] for r in rows)


@pytest.mark.slow
def test_a_worker_killed_mid_trial_and_restarted_loses_no_trial(tmp_path):
    data_dir = write_data(tmp_path / "data", n=336)
    port = free_port()
    procs, logs = {}, {}
    procs["chief"], logs["chief"] = launch(tmp_path, "chief", port, data_dir, epochs=4)
    procs["worker-b"], logs["worker-b"] = launch(tmp_path, "worker", port, data_dir, epochs=4,
                                                 tuner_id="worker-b")
    victim, logs["worker-a"] = launch(tmp_path, "worker", port, data_dir, epochs=4,
                                      tuner_id="worker-a")
    project = tmp_path / "dist" / "lam"
    deadline = time.time() + 600
    while not tuning.distributed.trials_started(str(project)).get("worker-a"):
        assert time.time() < deadline and victim.poll() is None, read_logs(logs)
        time.sleep(0.1)
    killed_trial = tuning.distributed.trials_started(str(project))["worker-a"][0]
    time.sleep(1.0)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    status = json.load(open(project / f"trial_{killed_trial}" / "trial.json"))["status"]
    assert status == "RUNNING", "the trial ended before the kill; the test proves nothing"
    procs["worker-a"], logs["worker-a2"] = launch(tmp_path, "worker", port, data_dir,
                                                  epochs=4, tuner_id="worker-a", suffix="2")
    finish(procs, logs)
    rows = json.load(open(project / "trials.json"))
    assert [r["status"] for r in rows] == ["COMPLETED"] * len(LAMBDAS)
    assert sorted(r["entropy_weight"] for r in rows) == sorted(LAMBDAS)  # none lost, none twice
    started = tuning.distributed.trials_started(str(project))
    # The restarted worker was given its unfinished trial again (keras-tuner keeps it with
    # the worker's ID); every other trial ran once.
    assert started["worker-a"][:2] == [killed_trial, killed_trial]
    others = started["worker-a"][2:] + started["worker-b"]
    assert sorted(others + [killed_trial]) == sorted(r["trial_id"] for r in rows)


@pytest.mark.slow
def test_a_chief_killed_and_restarted_redoes_no_trial(tmp_path):
    """The chief dies (kill -9) while the worker trains its second trial; restarted with the
    same command it reloads the search, the finished trial is kept, the running one stays
    with its worker (no second copy of it is trained), and the search completes."""
    data_dir = write_data(tmp_path / "data", n=336)
    port = free_port()
    procs, logs = {}, {}
    chief, logs["chief"] = launch(tmp_path, "chief", port, data_dir, epochs=3)
    procs["worker-a"], logs["worker-a"] = launch(tmp_path, "worker", port, data_dir, epochs=3,
                                                 tuner_id="worker-a")
    project = tmp_path / "dist" / "lam"
    deadline = time.time() + 600
    while len(tuning.distributed.trials_started(str(project)).get("worker-a", [])) < 2:
        assert time.time() < deadline and chief.poll() is None, read_logs(logs)
        time.sleep(0.1)
    time.sleep(1.0)
    os.kill(chief.pid, signal.SIGKILL)
    chief.wait()
    first, running = tuning.distributed.trials_started(str(project))["worker-a"]
    assert json.load(open(project / f"trial_{first}" / "trial.json"))["status"] == "COMPLETED"
    assert json.load(open(project / f"trial_{running}" / "trial.json"))["status"] == "RUNNING"
    time.sleep(3.0)  # the worker keeps training, its next report waits for the chief
    procs["chief"], logs["chief2"] = launch(tmp_path, "chief", port, data_dir, epochs=3,
                                            suffix="2")
    finish(procs, logs)
    rows = json.load(open(project / "trials.json"))
    assert [r["status"] for r in rows] == ["COMPLETED"] * len(LAMBDAS)
    assert sorted(r["entropy_weight"] for r in rows) == sorted(LAMBDAS)
    started = tuning.distributed.trials_started(str(project))["worker-a"]
    assert sorted(started) == sorted(r["trial_id"] for r in rows)  # none trained twice
    assert f"trial(s) {running} stay with the workers" in open(logs["chief2"]).read()


@pytest.mark.slow
def test_role_flags_are_checked(tmp_path, monkeypatch):
    # configure() writes os.environ: give it a copy, so nothing leaks into later tests.
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items()
                                        if not k.startswith("KERASTUNER_")})
    configure = tuning.distributed.configure
    with pytest.raises(ValueError, match="--tuning_role=worker needs --oracle_address"):
        configure("worker")
    with pytest.raises(ValueError, match="--oracle_address must be HOST:PORT"):
        configure("chief", "localhost")
    with pytest.raises(ValueError, match="must not contain 'chief'"):
        configure("worker", "127.0.0.1:1", "chief2")
    assert configure("single").kind == "single" and "KERASTUNER_ORACLE_IP" not in os.environ
    with pytest.raises(ValueError, match="KERASTUNER_ORACLE_PORT and KERASTUNER_TUNER_ID"):
        tuning.distributed.current_role({"KERASTUNER_ORACLE_IP": "1.2.3.4"})
    role = configure("worker", "127.0.0.1:9", "worker-7")
    assert (role.kind, role.tuner_id, role.address) == ("worker", "worker-7", "127.0.0.1:9")
    assert tuning.distributed.current_role() == role and not role.writes_results
    assert tuning.distributed.current_role({"KERASTUNER_ORACLE_IP": "h",
                                            "KERASTUNER_ORACLE_PORT": "1",
                                            "KERASTUNER_TUNER_ID": "chief"}).kind == "chief"
    config = RunConfig.from_flags(workdir="", method="adt_exp", epochs=1,
                                  validation_examples=8, validation_attack="pgd1")
    with pytest.raises(ValueError, match="--overwrite on a worker would delete the search"):
        tuning.tune(config, tuner_kind="grid", max_trials=1, executions_per_trial=1,
                    directory=str(tmp_path), project_name="p",
                    overwrite=True, space=tuning.SearchSpace(), tune_knobs=())
    # ... and the CLI says so with exit 2 (no traceback).
    proc = run_command("adt-tune", "--tuning_role=chief", "--oracle_address=localhost")
    assert proc.returncode == 2 and "--oracle_address must be HOST:PORT" in proc.stderr


def test_no_keras_tuner_variable_leaks_out_of_the_role_test():
    assert not [k for k in os.environ if k.startswith("KERASTUNER_")]


class _FakeTrial:
    def __init__(self, trial_id):
        self.trial_id = trial_id


class _FakeOracle:
    """The oracle methods the chief's servicer calls, and its running trials."""

    def __init__(self):
        self.ongoing_trials = {}

    def create_trial(self, tuner_id):
        trial = _FakeTrial(f"t-{tuner_id}")
        self.ongoing_trials[tuner_id] = trial
        return trial

    def update_trial(self, trial_id, metrics, step=0):
        return None

    def end_trial(self, trial):
        self.ongoing_trials = {w: t for w, t in self.ongoing_trials.items()
                               if t.trial_id != trial.trial_id}

    def get_space(self):
        return None

    update_space = get_trial = get_best_trials = get_space


def test_the_chiefs_watch_ends_it_when_a_worker_with_a_trial_falls_silent():
    """Per worker: a worker that holds a running trial and has not called for longer than
    the timeout is lost, even while another worker keeps polling the chief; then the chief
    prints which trial is held by whom and exits 3. Total silence is lost too."""
    now = [0.0]
    exits = []
    oracle = _FakeOracle()
    watch = tuning.distributed.WorkerWatch(oracle, timeout=10, exit=exits.append,
                                           clock=lambda: now[0])
    oracle.create_trial("worker-a")
    oracle.create_trial("worker-b")
    for t in range(1, 30):  # worker-b reports every second; worker-a never again
        now[0] = float(t)
        oracle.update_trial("t-worker-b", {}, step=t)
        if t <= 10:
            assert not watch.check() and exits == []
    assert watch.lost() == {"worker-a": "t-worker-a"}
    assert watch.check() and exits == [3]
    assert "trial t-worker-a assigned to worker-a" in watch.message(watch.lost())
    oracle.end_trial(_FakeTrial("t-worker-a"))  # had it ended, nothing would be held
    assert watch.lost() == {}
    now[0] += 11  # nobody calls at all
    assert watch.lost() == {"worker-b": "t-worker-b"}


def _wait_until(condition, procs, logs, seconds):
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, read_logs(logs)
        assert all(p.poll() is None for p in procs.values()), read_logs(logs)
        time.sleep(0.1)


@pytest.mark.slow
def test_a_worker_started_before_its_chief_waits_for_it(tmp_path):
    """The worker waits (up to --oracle_timeout) for a chief that starts 15 s later; the
    search completes with every trial run once."""
    data_dir = write_data(tmp_path / "data")
    port = free_port()
    procs, logs = {}, {}
    timeout = ["--oracle_timeout=240"]
    procs["worker-a"], logs["worker-a"] = launch(tmp_path, "worker", port, data_dir,
                                                 tuner_id="worker-a", extra=timeout)
    time.sleep(15)
    assert procs["worker-a"].poll() is None, read_logs(logs)
    procs["chief"], logs["chief"] = launch(tmp_path, "chief", port, data_dir, extra=timeout)
    finish(procs, logs)
    rows = json.load(open(tmp_path / "dist" / "lam" / "trials.json"))
    assert [r["status"] for r in rows] == ["COMPLETED"] * len(LAMBDAS)
    started = tuning.distributed.trials_started(str(tmp_path / "dist" / "lam"))
    assert sorted(started["worker-a"]) == sorted(r["trial_id"] for r in rows)


def _chief_and_worker_mid_trial(tmp_path):
    """A chief and one worker (--oracle_timeout=20, 4 epochs a trial), returned once the
    worker has started its first trial: (procs, logs, project folder, that trial's ID)."""
    data_dir = write_data(tmp_path / "data", n=336)
    port = free_port()
    procs, logs = {}, {}
    for role, tuner_id in (("chief", None), ("worker", "worker-a")):
        procs[tuner_id or role], logs[tuner_id or role] = launch(
            tmp_path, role, port, data_dir, epochs=4, tuner_id=tuner_id,
            extra=["--oracle_timeout=20"])
    project = str(tmp_path / "dist" / "lam")
    _wait_until(lambda: tuning.distributed.trials_started(project).get("worker-a"), procs,
                logs, 600)
    return procs, logs, project, tuning.distributed.trials_started(project)["worker-a"][0]


@pytest.mark.slow
def test_a_chief_killed_mid_search_ends_its_workers_within_the_timeout(tmp_path):
    """kill -9 of the chief while a worker trains: the worker's next call waits at most
    --oracle_timeout, then it ends with exit 3 and says what to restart (no hang)."""
    procs, logs, _, _ = _chief_and_worker_mid_trial(tmp_path)
    os.kill(procs["chief"].pid, signal.SIGKILL)
    procs["chief"].wait()
    killed_at = time.time()
    procs["worker-a"].wait(timeout=300)
    assert procs["worker-a"].returncode == 3, read_logs(logs)
    lines = [line for line in open(logs["worker-a"]).read().splitlines() if line.strip()]
    # The last word is adt-tune's (keras-tuner prints the interrupted trial's traceback
    # before it, as it does for any failed trial).
    assert lines[-1].startswith("adt-tune: worker-a: the chief at 127.0.0.1"), lines[-5:]
    assert "--tuner_id=worker-a" in lines[-1]
    # bounded: the call under way (an epoch's report) and at most two more calls
    assert time.time() - killed_at < 3 * 20 + 120


@pytest.mark.slow
def test_a_worker_killed_mid_trial_ends_the_chief_within_the_timeout(tmp_path):
    """kill -9 of the only worker mid-trial (its connection gone): the chief, which would
    wait forever, ends within --oracle_timeout with exit 3 naming the worker and its trial;
    the trial stays RUNNING on disk for a restart."""
    procs, logs, project, trial = _chief_and_worker_mid_trial(tmp_path)
    victim = procs.pop("worker-a")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    killed_at = time.time()
    procs["chief"].wait(timeout=300)
    assert procs["chief"].returncode == 3, read_logs(logs)
    assert time.time() - killed_at < 20 + 60
    assert f"trial {trial} assigned to worker-a" in open(logs["chief"]).read()
    status = json.load(open(os.path.join(project, f"trial_{trial}", "trial.json")))["status"]
    assert status == "RUNNING"

"""Nothing lost, nothing silently wrong: one run per workdir, a workdir that takes
its own fix, resume under another spelling of its path, no ignored flags, no shrinking run."""

import json
import os
import shutil

import pytest

from adt_tf.training.config import RunConfig
from adt_tf.training.record import RunRecord
from adt_tf.training.run import run_training
from adt_tf.training.workdir import workdir_lock
from tests.helpers import run_command, start_command, tiny_run

TINY = tiny_run()


def test_a_workdir_is_owned_by_one_run_at_a_time(tmp_path):
    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    with workdir_lock(workdir):
        with pytest.raises(ValueError, match=r"is in use by another adt-train run \(pid "):
            run_training(RunConfig.from_flags(workdir=workdir, epochs=1, **TINY))
        # The command line says so and exits 2, writing nothing.
        proc = run_command("adt-train", f"--workdir={workdir}", "--method=standard", "--epochs=1",
                           "--max_train_examples=32")
        assert proc.returncode == 2 and "is in use by another adt-train run" in proc.stderr
        assert not os.path.exists(os.path.join(workdir, "config.json"))
    # Released (as when the holder dies, however): the run goes ahead.
    assert run_training(RunConfig.from_flags(workdir=workdir, epochs=1, **TINY))["epochs"] == 1


def test_a_run_that_failed_at_once_leaves_a_workdir_that_takes_the_fix(tmp_path):
    workdir = str(tmp_path / "run")
    with pytest.raises(ValueError, match="width"):
        run_training(RunConfig.from_flags(workdir=workdir, epochs=1, **dict(
            TINY, model_params={"width": 0})))
    assert not os.path.exists(os.path.join(workdir, "config.json"))
    # config.json of a run that stopped before its first epoch (a NaN loss) binds nothing.
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(RunRecord(RunConfig.from_flags(**dict(TINY, workdir=workdir, epochs=1,
                                                        lr=10.0))).to_dict(), f)
    report = run_training(RunConfig.from_flags(workdir=workdir, epochs=1, **TINY))
    assert report["epochs"] == 1
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["optim"]["lr"] == TINY["lr"]


@pytest.mark.slow
def test_resume_survives_another_spelling_or_a_move_of_the_workdir(tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    run_training(RunConfig.from_flags(workdir=str(workdir), epochs=1, **TINY))
    monkeypatch.chdir(tmp_path)
    # Relative, with a trailing slash: the same run, resumed (one more epoch).
    report = run_training(RunConfig.from_flags(workdir="run/", epochs=2, **TINY))
    assert report["epochs"] == 2
    moved = tmp_path / "moved"
    shutil.move(str(workdir), str(moved))
    assert run_training(RunConfig.from_flags(workdir=str(moved), epochs=2, **TINY))["epochs"] == 2


def test_fewer_epochs_than_trained_is_refused(tmp_path):
    workdir = str(tmp_path / "run")
    run_training(RunConfig.from_flags(workdir=workdir, epochs=2, **TINY))
    with pytest.raises(ValueError, match="already trained for 2 epochs; --epochs=1 is fewer"):
        run_training(RunConfig.from_flags(workdir=workdir, epochs=1, **TINY))
    with open(os.path.join(workdir, "report.json")) as f:
        assert json.load(f)["epochs"] == 2


def test_bad_lr_decay_factor_and_a_file_as_workdir_are_errors(tmp_path):
    with pytest.raises(ValueError, match="lr_decay_factor"):
        run_training(RunConfig.from_flags(workdir=str(tmp_path / "a"), epochs=1,
                                 **dict(TINY, lr_decay_factor=float("nan"))))
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        run_training(RunConfig.from_flags(workdir=str(afile), epochs=1, **TINY))


@pytest.mark.slow
def test_a_flag_the_method_does_not_take_is_an_error(tmp_path):
    proc = run_command("adt-train", f"--workdir={tmp_path}/w", "--method=pgd_at",
                       "--method_params=entropy_weight=0.1,mc_samples=3,stepz=2")
    assert proc.returncode == 2, proc.stderr
    assert ("adt-train: error: --method_params: --method=pgd_at does not take "
            "'entropy_weight'") in proc.stderr
    assert "it takes attack_steps, attack_step_size" in proc.stderr
    assert not os.path.exists(os.path.join(tmp_path, "w"))
    # A misspelt argument: the closest ones are named.
    with pytest.raises(ValueError, match=r"--method=pgd_at does not take 'attack_step' \(did "
                                         r"you mean attack_steps, attack_step_size\?\)"):
        run_training(RunConfig.from_flags(workdir=f"{tmp_path}/w", method="pgd_at",
                                          method_params={"attack_step": 2}))
    assert not os.path.exists(os.path.join(tmp_path, "w"))


def test_an_output_folder_that_cannot_be_made_is_an_error_naming_its_flag(tmp_path):
    """Checked before the work starts (not after hours of attacks), by one helper."""
    from adt_tf.analysis.runner import AnalysisConfig, run_analyses
    from adt_tf.core.checks import check_writable_dir
    from trainers.evaluate import run_evaluation

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    under = str(blocker / "sub")
    assert check_writable_dir(str(tmp_path / "new" / "dir"), "--out") and os.path.isdir(
        tmp_path / "new" / "dir")
    with pytest.raises(ValueError, match=r"--out=.*a_file is a file, not a folder"):
        check_writable_dir(str(blocker), "--out")
    with pytest.raises(ValueError, match=r"Cannot create --workdir=.*a_file/sub: Not a dir"):
        run_training(RunConfig.from_flags(workdir=under, epochs=1, **TINY))
    # adt-evaluate: the output folder is checked before the model is even loaded
    with pytest.raises(ValueError, match=r"Cannot create --out=.*a_file/sub"):
        run_evaluation(str(tmp_path / "not_loaded_yet.keras"), out=under, verbose=0)
    with pytest.raises(ValueError, match=r"Cannot create --out=.*a_file/sub"):
        (tmp_path / "not_loaded_yet.keras").write_text("the model would be loaded next")
        run_analyses(AnalysisConfig(models=[str(tmp_path / "not_loaded_yet.keras")],
                                    analyses=["landscape"], out=under))


@pytest.mark.slow
def test_an_unwritable_export_dir_exits_2_naming_it(tmp_path):

    workdir = tmp_path / "run"
    run_training(RunConfig.from_flags(workdir=str(workdir), epochs=1, **TINY))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    proc = run_command("adt-export", f"--model={workdir}", f"--export_dir={blocker}/exports",
                       "--noverify")
    assert proc.returncode == 2, proc.stderr
    assert f"Cannot create --export_dir (its model folder)={blocker}/exports/run" in proc.stderr
    assert "Traceback" not in proc.stderr


def _default_sigint():
    import signal

    # A process started in the background by a non-interactive shell (`cmd &`, nohup) inherits
    # SIGINT ignored, and so would adt-train here (Unix's convention, which Python keeps):
    # the test's run gets Ctrl-C's default disposition whatever launched pytest.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_cli(workdir, *args):
    import subprocess

    return start_command("adt-train", f"--workdir={workdir}", "--method=standard",
                         "--max_train_examples=256", "--batch_size=16", "--model_params=width=4",
                         "--verbose=2", *args, stderr=subprocess.PIPE,
                         preexec_fn=_default_sigint)


def _wait_for(condition, proc, timeout=300):
    import time

    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, "the run ended before the signal"
        assert time.time() < deadline, "timed out waiting"
        time.sleep(0.05)


@pytest.mark.parametrize("signame", ["SIGINT", pytest.param("SIGTERM", marks=pytest.mark.slow)])
def test_an_interrupt_mid_epoch_says_what_is_kept_and_the_rerun_resumes(tmp_path, signame):
    import signal

    from tests.trainers.test_train_cli import history_epochs

    workdir = str(tmp_path / "run")
    proc = _start_cli(workdir, "--epochs=40")
    _wait_for(lambda: os.path.exists(os.path.join(workdir, "history.csv"))
              and len(history_epochs(workdir)) >= 1, proc)
    proc.send_signal(getattr(signal, signame))
    _, err = proc.communicate(timeout=600)  # a bound against a hang, not a timing check
    assert proc.returncode == 130, err[-2000:]
    assert f"adt-train: interrupted ({signame})." in err and "Traceback" not in err
    assert "rerun the same command to resume" in err
    assert not os.path.exists(os.path.join(workdir, "classifier.keras"))
    done = len(history_epochs(workdir))
    out = run_command("adt-train", f"--workdir={workdir}", "--method=standard",
                      "--max_train_examples=256",
                      "--batch_size=16", "--model_params=width=4", "--verbose=2",
                      f"--epochs={done + 1}", check=True).stdout
    assert f"{done} of {done + 1} epochs already done" in out


@pytest.mark.slow
def test_an_interrupt_during_the_final_evaluation_then_the_rerun_only_evaluates(tmp_path):
    import signal

    from tests.trainers.test_train_cli import history_epochs

    workdir = str(tmp_path / "run")
    proc = _start_cli(workdir, "--epochs=1")
    _wait_for(lambda: os.path.exists(os.path.join(workdir, "classifier.keras")), proc)
    proc.send_signal(signal.SIGINT)  # the classifier is saved; PGD-20 on 500 inputs runs
    _, err = proc.communicate(timeout=600)  # a bound against a hang, not a timing check
    assert proc.returncode == 130, err[-2000:]
    assert not os.path.exists(os.path.join(workdir, "report.json"))
    assert not [f for f in os.listdir(workdir) if ".tmp" in f]  # nothing half-written
    out = run_command("adt-train", f"--workdir={workdir}", "--method=standard",
                      "--max_train_examples=256", "--batch_size=16", "--model_params=width=4",
                      "--verbose=2", "--epochs=1", check=True).stdout
    assert "Report: standard" in out and history_epochs(workdir) == [0]  # not trained again


@pytest.mark.slow
def test_a_full_disk_during_checkpointing_exits_2_naming_the_file_and_the_rerun_resumes(
        tmp_path):
    """A real full disk: a 3.5 MB tmpfs holds the first epoch's checkpoint of a width-32
    SmallCNN but not the second's. The run exits 2 naming the backup file; with room again
    the same command resumes from epoch 1 (the checkpoint of epoch 1 was left whole)."""
    import subprocess

    from tests.trainers.test_train_cli import history_epochs

    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3500k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({made.stderr.strip()}): needs root")
    try:
        workdir = str(mount / "run")
        args = ("--method=standard", "--max_train_examples=256", "--batch_size=32",
                "--model_params=width=32", "--epochs=5", "--verbose=2")
        proc = run_command("adt-train", f"--workdir={workdir}", *args)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "No space left on device" in proc.stderr and "backup" in proc.stderr
        assert "adt-train: error:" in proc.stderr
        subprocess.run(["mount", "-o", "remount,size=200m", str(mount)], check=True)
        out = run_command("adt-train", f"--workdir={workdir}", *args, check=True).stdout
        assert "1 of 5 epochs already done" in out and "Report: standard" in out
        assert history_epochs(workdir) == [0, 1, 2, 3, 4]
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_sigterm_is_handled_as_an_interrupt_with_one_line_and_exit_130(capsys):
    """adt_tf.core.interrupts.interruptible: SIGTERM (what kill, a scheduler or a container stop
    sends) ends the block like Ctrl-C, with the line saying what is kept, exit 130, and the
    previous SIGTERM handler back afterwards."""
    import signal

    from adt_tf.core.interrupts import EXIT_INTERRUPTED, interruptible

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stop:
        with interruptible("adt-test", "Nothing is lost: rerun."):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs between bytecodes
                pass
            raise AssertionError("SIGTERM did not interrupt the block")
    assert stop.value.code == EXIT_INTERRUPTED == 130
    assert "adt-test: interrupted (SIGTERM). Nothing is lost: rerun." in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before

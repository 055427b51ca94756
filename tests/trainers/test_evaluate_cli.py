"""adt-evaluate: end to end on the bundled CIFAR-10 sample, resume, bad input."""

import json
import os

import keras
import pytest

from adt_tf import data as data_lib
from tests.helpers import ce_loss, run_command, tiny_classifier
from trainers.evaluate import run_evaluation


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    keras.utils.set_random_seed(2)
    splits = data_lib.load(data_lib.SAMPLE, max_train_examples=1000)
    model = tiny_classifier(input_shape=(32, 32, 3))
    model.compile(keras.optimizers.Adam(3e-3), ce_loss())
    model.fit(splits.x_train / 255.0, splits.y_train, epochs=3, batch_size=64, verbose=0)
    path = str(tmp_path_factory.mktemp("model") / "classifier.keras")
    model.save(path)
    return path


def test_end_to_end_and_resume(saved_model, tmp_path, capsys):
    out = str(tmp_path / "eval")
    kwargs = dict(suite="pgd20,fgsm", attack_params=["pgd20.steps=3"], num_examples=24,
                  batch_size=8, out=out, verbose=1)
    result, paths = run_evaluation(saved_model, "cifar10_sample", **kwargs)
    printed = capsys.readouterr().out
    assert "clean_accuracy" in printed
    assert "pgd20_survived" in printed  # a progress bar per attack
    data = json.load(open(paths["json"]))
    assert data["attacks"][0]["num_attacked"] > 0  # some inputs are classified correctly
    assert data["num_examples"] == 24 and data["dataset"] == "cifar10_sample"
    assert data["epsilon"] == pytest.approx(8 / 255)  # the dataset's default
    assert data["attacks"][0]["params"]["steps"] == 3
    assert os.path.exists(paths["md"]) and len(os.listdir(os.path.join(out, "cache"))) == 2
    again, _ = run_evaluation(saved_model, "cifar10_sample", **dict(kwargs, verbose=0))
    assert all(a.cached for a in again.attacks)
    assert again.robust_accuracy == result.robust_accuracy


@pytest.mark.slow
def test_a_workdir_evaluation_resumes_from_its_cache_with_out_inside_it(saved_model):
    """The cache is keyed on the model file a workdir resolves to, not on the workdir's
    contents (logs, backups, and --out itself when it lies inside)."""
    workdir = os.path.dirname(saved_model)  # holds classifier.keras, as a training workdir
    kwargs = dict(suite="fgsm", num_examples=8, batch_size=8, verbose=0,
                  out=os.path.join(workdir, "eval"))
    first, _ = run_evaluation(workdir, "cifar10_sample", **kwargs)
    with open(os.path.join(workdir, "history.csv"), "a") as f:  # the run's logs move on
        f.write("epoch,loss\n0,1.0\n")
    again, _ = run_evaluation(workdir, "cifar10_sample", **kwargs)
    assert not first.attacks[0].cached and again.attacks[0].cached
    assert again.robust_accuracy == first.robust_accuracy


@pytest.mark.slow
def test_a_workdir_model_is_evaluated_on_its_runs_dataset_and_threat_model(saved_model,
                                                                           tmp_path):
    """Without --dataset, --norm and --epsilon, a training workdir's model is evaluated as its
    record (config.json) says it was trained."""
    import shutil

    from adt_tf.training.config import RunConfig
    from adt_tf.training.record import RunRecord, write_record

    workdir = tmp_path / "run"
    workdir.mkdir()
    shutil.copy(saved_model, workdir / "classifier.keras")
    write_record(RunRecord(RunConfig.from_flags(workdir=str(workdir), epsilon=4 / 255)),
                 str(workdir))
    result, paths = run_evaluation(str(workdir), suite="fgsm", num_examples=8, batch_size=8,
                                   verbose=0, out=str(tmp_path / "eval"))
    data = json.load(open(paths["json"]))
    assert data["dataset"] == "cifar10_sample" and data["norm"] == "linf"
    assert result.epsilon == pytest.approx(4 / 255)
    # Given on the command line, they win over the record.
    result, _ = run_evaluation(str(workdir), suite="fgsm", num_examples=8, batch_size=8,
                               verbose=0, epsilon=2 / 255, out=str(tmp_path / "eval2"))
    assert result.epsilon == pytest.approx(2 / 255)


def test_bad_settings_fail_before_loading(saved_model, tmp_path):
    with pytest.raises(ValueError, match="Unknown suite or attack 'fast'"):
        run_evaluation("/nonexistent.keras", suite="fast", out=str(tmp_path))
    with pytest.raises(ValueError, match="did you mean 8/255"):
        run_evaluation(saved_model, epsilon=8, out=str(tmp_path))
    with pytest.raises(ValueError, match="num_examples"):
        run_evaluation(saved_model, num_examples=0, out=str(tmp_path))
    with pytest.raises(ValueError, match="does not exist"):
        run_evaluation(str(tmp_path / "nope.keras"), out=str(tmp_path))
    small = str(tmp_path / "small.keras")
    tiny_classifier().save(small)  # 16x16 inputs
    with pytest.raises(ValueError, match=r"\(32, 32, 3\) but the model expects \(16, 16, 3\)"):
        run_evaluation(small, "cifar10_sample", num_examples=4, out=str(tmp_path))


def test_importing_both_command_lines_does_not_clash():
    import trainers.evaluate as evaluate_cli
    import trainers.train  # noqa: F401  (defines flags named like adt-evaluate's)

    assert "suite" not in evaluate_cli.FLAGS  # adt-evaluate defines its flags only in run()


def test_command_line_reports_errors_with_exit_code_2(tmp_path):
    proc = run_command("adt-evaluate", f"--model={tmp_path}/missing.keras",
                       f"--out={tmp_path}/eval", timeout=120, env={"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "adt-evaluate: error: Model path" in proc.stderr
